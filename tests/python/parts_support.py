"""Shared by the parts tests (needs torch): the registry's names, a small config per part, the
inputs in the layout a part takes, and a CPU stand-in for jitattn's kernel so the CPU tests run
each part's forward wiring (layouts, biases, projections) against its reference."""
import sys

import torch

import jitattn
from jitattn.ops.fmha import _functions
from jitattn.ops.fmha import attn_bias as ab

B, H, S, D = 2, 4, 128, 64


def names():
    return jitattn.registered_attentions()


def build(name, seq_len=S, heads=H):
    cls = jitattn.parts.attention_class(name)
    return jitattn.build_attention(cls.example_config(seq_len, heads))


def inputs(part, dtype=torch.float32, device="cpu", seq_len=S, requires_grad=False, seed=0):
    g = torch.Generator(device=device).manual_seed(seed)
    shape = (B, H, seq_len, D) if part.requires_head_dimension else (B * H, seq_len, D)
    return [torch.randn(shape, generator=g, device=device, dtype=torch.float32).to(dtype).requires_grad_(requires_grad)
            for _ in range(3)]


def _dense(bias, B_, H_, Mq, Mkv, device):
    if bias is None:
        return None
    if isinstance(bias, torch.Tensor):
        return bias.double().expand(B_, H_, Mq, Mkv)
    tensor = getattr(bias, "_bias", None)
    if tensor is not None:   # TensorBias, LowerTriangularMaskWithTensorBias
        dense = tensor.double().expand(B_, H_, Mq, Mkv)
        if isinstance(bias, ab.LowerTriangularMask):
            dense = dense + torch.full((Mq, Mkv), float("-inf"), dtype=torch.float64, device=device).triu(1)
        return dense
    return bias.materialize((B_, H_, Mq, Mkv), dtype=torch.float64, device=device)


def cpu_kernel(query, key, value, attn_bias=None, p=0.0, scale=None, variant=None, **kwargs):
    """memory_efficient_attention over BMHK in float64 on the CPU, the bias as the library
    materializes it (the CPU tests' stand-in for the GPU kernel). A ``variant`` needs the torch
    reference the ``variant`` part attaches to it (its snippets are CUDA C++)."""
    assert query.dim() == 4 and p == 0.0
    for name, x in (("query", query), ("key", key), ("value", value)):   # what the library would refuse
        assert x.stride(-1) == 1, f"{name}: last stride {x.stride(-1)} (the kernel wants 1)"
        assert x.dtype == query.dtype, f"{name}.dtype={x.dtype} != query.dtype={query.dtype}"
    B_, Mq, H_, K = query.shape
    q, k, v = (x.double().transpose(1, 2) for x in (query, key, value))
    s = q @ k.transpose(-2, -1) * (K ** -0.5 if scale is None else scale)
    bias = _dense(attn_bias, B_, H_, Mq, key.shape[1], query.device)
    if bias is not None:
        s = s + bias
    if variant is not None:
        assert hasattr(variant, "torch_reference"), "a jitattn.Variant without a torch reference: no CPU stand-in"
        hidden = torch.isneginf(s) if bias is not None else None   # the built-in mask applies first
        s = variant.torch_reference(s, hidden)
    out = torch.nan_to_num(torch.softmax(s, dim=-1)) @ v
    return out.transpose(1, 2).to(query.dtype)


TOLERANCE = {torch.float32: (2e-4, 2e-4), torch.float16: (1e-2, 1e-2), torch.bfloat16: (5e-2, 5e-2),
             torch.float64: (1e-9, 1e-9)}


def check(what, got, ref, dtype, widen=1.0):
    """|got − ref| <= widen·(atol·max(1, max|ref|) + rtol·|ref|) (llm.c's rule), the first
    mismatches listed with their indices."""
    atol, rtol = TOLERANCE[dtype]
    got, ref = got.double(), ref.double()
    assert torch.isfinite(got).all(), f"{what}: non-finite values"
    bound = widen * (atol * max(1.0, ref.abs().max().item()) + rtol * ref.abs())
    bad = ((got - ref).abs() > bound).nonzero()
    if len(bad):
        rows = [f"  {tuple(i.tolist())}: got {got[tuple(i)].item():.6g} ref {ref[tuple(i)].item():.6g}" for i in bad[:5]]
        raise AssertionError(f"{what}: {len(bad)} of {ref.numel()} values off (max |diff| "
                             f"{(got - ref).abs().max().item():.3g})\n" + "\n".join(rows))


def forward_backward_check(name, dtype, device):
    """The part's forward and backward (inputs and parameters) against its reference in float64."""
    torch.manual_seed(0)
    part = build(name).to(device, dtype)
    widen = getattr(part, "test_tolerance", 1.0)
    q, k, v = inputs(part, dtype, device, requires_grad=True)
    out = part(q, k, v)
    assert out.dtype == dtype and out.shape == q.shape
    grad = torch.randn_like(out)
    out.backward(grad)
    got = [q.grad, k.grad, v.grad] + [p.grad.clone() for p in part.parameters()]
    for p in part.parameters():
        p.grad = None

    q64, k64, v64 = (x.detach().double().requires_grad_() for x in (q, k, v))
    ref = part.reference(q64, k64, v64)
    ref.backward(grad.double())
    want = [q64.grad, k64.grad, v64.grad] + [p.grad for p in part.parameters()]

    check(f"{name} out", out, ref, dtype, widen)
    for label, g, w in zip(["dq", "dk", "dv"] + [f"d{n}" for n, _ in part.named_parameters()], got, want):
        check(f"{name} {label}", g, w, dtype, widen)


def patch_kernel(monkeypatch):
    """Every loaded module that calls jitattn's memory_efficient_attention calls cpu_kernel instead."""
    real = _functions.memory_efficient_attention
    for module in list(sys.modules.values()):
        if getattr(module, "memory_efficient_attention", None) is real:
            monkeypatch.setattr(module, "memory_efficient_attention", cpu_kernel)
