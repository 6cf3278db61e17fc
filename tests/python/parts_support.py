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


def cpu_kernel(query, key, value, attn_bias=None, p=0.0, scale=None, **kwargs):
    """memory_efficient_attention over BMHK in float64 on the CPU, the bias as the library
    materializes it (the CPU tests' stand-in for the GPU kernel)."""
    assert query.dim() == 4 and p == 0.0
    B_, Mq, H_, K = query.shape
    q, k, v = (x.double().transpose(1, 2) for x in (query, key, value))
    s = q @ k.transpose(-2, -1) * (K ** -0.5 if scale is None else scale)
    bias = _dense(attn_bias, B_, H_, Mq, key.shape[1], query.device)
    if bias is not None:
        s = s + bias
    out = torch.nan_to_num(torch.softmax(s, dim=-1)) @ v
    return out.transpose(1, 2).to(query.dtype)


def patch_kernel(monkeypatch):
    """Every loaded module that calls jitattn's memory_efficient_attention calls cpu_kernel instead."""
    real = _functions.memory_efficient_attention
    for module in list(sys.modules.values()):
        if getattr(module, "memory_efficient_attention", None) is real:
            monkeypatch.setattr(module, "memory_efficient_attention", cpu_kernel)
