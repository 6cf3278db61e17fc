"""jitattn.Variant on the GPU against a float64 torch reference: mask_mod and score_mod (with
score_grad, and additive), captured tensors and scalars, over built-in masks, forward and
backward in f16/bf16/f32; torch.compile(fullgraph=True) with a variant; errors. Outputs the
layer allocates are poisoned first."""
import pytest

from conftest import requires_gpu, requires_torch

pytestmark = [requires_torch, requires_gpu, pytest.mark.usefixtures("poisoned_outputs")]

torch = pytest.importorskip("torch")

import jitattn  # noqa: E402
from jitattn import ops  # noqa: E402
from jitattn.ops.fmha import attn_bias as ab  # noqa: E402

FWD_TOL = {torch.float32: 2e-5, torch.float16: 2e-3, torch.bfloat16: 1.6e-2}
BWD_TOL = {torch.float32: 1e-4, torch.float16: 1e-2, torch.bfloat16: 5e-2}
DEV = "cuda"
DTYPES = [torch.float16, torch.bfloat16, torch.float32]


def rel(a, b):
    a, b = a.double(), b.double()
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


def ref(q, k, v, allowed, score_fn=None):
    """float64 softmax(score_fn(q·kᵀ·scale)) · v where `allowed` [B, H, Mq, Mkv] (bool)."""
    q64, k64, v64 = (x.double().transpose(1, 2) for x in (q, k, v))
    s = q64 @ k64.transpose(-1, -2) * q.shape[-1] ** -0.5
    if score_fn is not None:
        s = score_fn(s)
    s = s.masked_fill(~allowed, float("-inf"))
    p = torch.softmax(s, -1).nan_to_num(0.0)
    return (p @ v64).transpose(1, 2)


def check(dtype, q, k, v, allowed, score_fn, **kw):
    qs, ks, vs = (x.detach().clone().requires_grad_(True) for x in (q, k, v))
    out = ops.memory_efficient_attention(qs, ks, vs, **kw)
    q64, k64, v64 = (x.detach().double().requires_grad_(True) for x in (q, k, v))
    want = ref(q64, k64, v64, allowed, score_fn)
    assert rel(out, want) < FWD_TOL[dtype]
    g = torch.randn_like(out)
    out.backward(g)
    want.backward(g.double())
    for name, a, b in (("dq", qs.grad, q64.grad), ("dk", ks.grad, k64.grad), ("dv", vs.grad, v64.grad)):
        assert rel(a, b) < BWD_TOL[dtype], name


def rnd(*shape, dtype):
    return torch.randn(*shape, device=DEV, dtype=dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_document_mask_over_causal(dtype):
    B, M, H, K = 2, 130, 2, 64
    doc = (torch.rand(B, M, device=DEV) < 0.08).int().cumsum(1).int()
    var = jitattn.Variant(mask_mod="doc(b, q_idx) == doc(b, kv_idx)", captures={"doc": doc})
    q, k, v = rnd(B, M, H, K, dtype=dtype), rnd(B, M, H, K, dtype=dtype), rnd(B, M, H, K, dtype=dtype)
    causal = torch.ones(M, M, dtype=torch.bool, device=DEV).tril()
    allowed = (doc[:, :, None] == doc[:, None, :])[:, None] & causal
    check(dtype, q, k, v, allowed, None, attn_bias=ab.LowerTriangularMask(), variant=var)


@pytest.mark.parametrize("dtype", DTYPES)
def test_softcap_with_its_derivative_and_a_scalar(dtype):
    B, M, H, K = 1, 100, 3, 64
    cap = 0.7
    var = jitattn.Variant(score_mod="cap * tanhf(score / cap)",
                          score_grad="const float t = tanhf(score / cap); return 1.f - t * t;", captures={"cap": cap})
    q, k, v = rnd(B, M, H, K, dtype=dtype), rnd(B, M, H, K, dtype=dtype), rnd(B, M, H, K, dtype=dtype)
    allowed = torch.ones(B, H, M, M, dtype=torch.bool, device=DEV)
    check(dtype, q, k, v, allowed, lambda s: cap * torch.tanh(s / cap), variant=var)


@pytest.mark.parametrize("dtype", DTYPES)
def test_relative_bias_table_additive(dtype):
    B, M, H, K = 2, 90, 2, 64
    table = torch.randn(H, 2 * M - 1, device=DEV)
    var = jitattn.Variant(score_mod="score + rel(h, kv_idx - q_idx + off)", additive=True,
                          captures={"rel": table, "off": M - 1})
    q, k, v = rnd(B, M, H, K, dtype=dtype), rnd(B, M, H, K, dtype=dtype), rnd(B, M, H, K, dtype=dtype)
    i = torch.arange(M, device=DEV)
    bias = table[:, (i[None, :] - i[:, None]) + M - 1].double()  # [H, Mq, Mkv]
    allowed = torch.ones(B, H, M, M, dtype=torch.bool, device=DEV)
    check(dtype, q, k, v, allowed, lambda s: s + bias, variant=var)


def test_new_capture_values_reuse_the_kernel():
    from jitattn import _capi

    M = 64
    q = rnd(1, M, 1, 64, dtype=torch.float16)
    var = jitattn.Variant(mask_mod="kv_idx <= q_idx - shift", captures={"shift": 0})
    ops.memory_efficient_attention(q, q, q, variant=var)
    stats = _capi.JitStats()
    _capi.check(_capi.lib().jitattn_get_jit_stats(stats))
    before = stats.compiles
    for shift in (1, 5):
        var.captures["shift"] = shift
        out = ops.memory_efficient_attention(q, q, q, variant=var)
        i = torch.arange(M, device=DEV)
        allowed = (i[None, :] <= i[:, None] - shift)[None, None]
        assert rel(out.nan_to_num(0), ref(q, q, q, allowed)) < FWD_TOL[torch.float16]
    _capi.check(_capi.lib().jitattn_get_jit_stats(stats))
    assert stats.compiles == before


def test_torch_compile_fullgraph_with_a_variant():
    B, M, H, K = 1, 80, 2, 64
    doc = (torch.arange(M, device=DEV) // 20).int()
    var = jitattn.Variant(mask_mod="doc[q_idx] == doc[kv_idx]", captures={"doc": doc})

    def f(q, k, v):
        return ops.memory_efficient_attention(q, k, v, ab.LowerTriangularMask(), variant=var)

    q = rnd(B, M, H, K, dtype=torch.bfloat16).requires_grad_(True)
    eager = f(q, q, q)
    eager.sum().backward()
    g_eager, q.grad = q.grad.clone(), None
    out = torch.compile(f, fullgraph=True)(q, q, q)
    assert rel(out, eager) < 1e-3
    out.sum().backward()
    assert rel(q.grad, g_eager) < 1e-2


def test_a_snippet_that_does_not_compile_names_its_line():
    q = rnd(1, 16, 1, 64, dtype=torch.float16)
    var = jitattn.Variant(mask_mod="bool ok = true;\nreturn ok && nope[kv_idx];")
    with pytest.raises(jitattn.Error) as e:
        ops.memory_efficient_attention(q, q, q, variant=var)
    msg = str(e.value)
    assert "mask_mod(2)" in msg and "nope" in msg, msg


def test_a_capture_on_the_cpu_is_refused():
    q = rnd(1, 16, 1, 64, dtype=torch.float16)
    var = jitattn.Variant(mask_mod="t[kv_idx] > 0", captures={"t": torch.ones(16)})
    with pytest.raises(jitattn.Error, match="variant capture 't' is on cpu"):
        ops.memory_efficient_attention(q, q, q, variant=var)


def test_the_backward_without_score_grad_is_refused():
    q = rnd(1, 16, 1, 64, dtype=torch.float16).requires_grad_(True)
    var = jitattn.Variant(score_mod="score * 2.f")
    out = ops.memory_efficient_attention(q, q, q, variant=var)
    with pytest.raises(jitattn.Error, match="score_grad"):
        out.sum().backward()


def test_changing_the_variant_between_forward_and_backward_keeps_the_gradient():
    torch.manual_seed(3)
    q = rnd(1, 64, 2, 64, dtype=torch.float16)
    var = jitattn.Variant(score_mod="score * s", score_grad="return s;", captures={"s": 0.5})
    grads = []
    for change in (False, True):
        qs = q.detach().clone().requires_grad_(True)
        var.captures["s"] = 0.5
        out = ops.memory_efficient_attention(qs, qs, qs, variant=var)
        if change:
            var.captures["s"] = 3.0  # after the forward: the backward still differentiates s = 0.5
        out.sum().backward()
        grads.append(qs.grad)
    assert torch.equal(grads[0], grads[1])
