"""jitattn.ops on the GPU against a float64 torch reference: every bias kind forward and backward,
GQA, BMK/BMGHK, output_dtype, partial + merge, dropout, autograd through a small model,
torch.compile(fullgraph=True), CUDA-graph capture and replay, autocast, and the errors.

Inputs are random (never zeros); every output the layer allocates is poisoned with NaN first
(``new_output`` patched), so an element a kernel forgets fails the comparison. The tolerance
is a relative norm per dtype, ‖x − ref‖ / ‖ref‖, never widened to pass."""
import random

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


def rel(x, ref):
    x, ref = x.double(), ref.double()
    assert torch.isfinite(x).all(), "non-finite values (a poisoned element was never written?)"
    return ((x - ref).norm() / ref.norm().clamp_min(1e-30)).item()


def rnd(*shape, dtype=torch.bfloat16, grad=False):
    return torch.randn(*shape, device=DEV, dtype=dtype).requires_grad_(grad)


# ---- the fp64 reference ---------------------------------------------------------------------
def ref_attention(q, k, v, bias=None, scale=None, p_keep=None):
    """q [B, Mq, H, K], k/v [B, Mkv, Hkv, *] (Hkv divides H), bias broadcastable to [B, H, Mq, Mkv]
    (float64, -inf hides); a fully hidden row gives 0."""
    q, k, v = q.double(), k.double(), v.double()
    h, hkv = q.shape[2], k.shape[2]
    if hkv != h:
        k, v = k.repeat_interleave(h // hkv, dim=2), v.repeat_interleave(h // hkv, dim=2)
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    s = torch.einsum("bmhk,bnhk->bhmn", q, k) * scale
    if bias is not None:
        s = s + bias.double()
    visible = torch.isfinite(s.amax(-1, keepdim=True))
    prob = torch.softmax(torch.where(visible, s, torch.zeros_like(s)), -1) * visible
    if p_keep is not None:
        prob = prob * p_keep
    return torch.einsum("bhmn,bnhk->bmhk", prob, v)


def check_fwd_bwd(q, k, v, bias, dense, scale=None, backward=True, ref_inputs=None):
    """Runs jitattn forward (+ backward through autograd) and compares with the reference."""
    dtype = q.dtype
    out = ops.memory_efficient_attention(q, k, v, bias, scale=scale)
    qr, kr, vr = (x.detach().double().requires_grad_(True) for x in (ref_inputs or (q, k, v)))
    ref = ref_attention(qr, kr, vr, dense, scale)
    assert out.shape == ref.shape and out.dtype == dtype
    assert rel(out, ref) < FWD_TOL[dtype]
    if not backward:
        return
    g = torch.randn_like(out)
    out.backward(g)
    ref.backward(g.double())
    for name, x, xr in (("dq", q, qr), ("dk", k, kr), ("dv", v, vr)):
        assert rel(x.grad, xr.grad) < BWD_TOL[dtype], name


# ---- every bias kind --------------------------------------------------------------------------
H, K = 2, 64


def seqlens(n, lo, hi):
    return [random.randint(lo, hi) for _ in range(n)]


def dense_cases():
    """(name, bias maker given (Mq, Mkv), B, Mq, Mkv)."""
    return [
        ("none", lambda mq, mkv: None, 2, 70, 90),
        ("LowerTriangularMask", lambda mq, mkv: ab.LowerTriangularMask(), 2, 70, 90),
        ("LowerTriangularFromBottomRightMask", lambda mq, mkv: ab.LowerTriangularFromBottomRightMask(), 2, 70, 90),
        ("...LocalAttentionMask", lambda mq, mkv: ab.LowerTriangularFromBottomRightMask().make_local_attention(17),
         2, 70, 90),
        ("LocalAttentionFromBottomRightMask", lambda mq, mkv: ab.LocalAttentionFromBottomRightMask(9, 4), 2, 70, 90),
        ("AlibiBias", lambda mq, mkv: ab.AlibiBias(H), 2, 70, 90),
        ("LowerTriangularMaskWithAlibi", lambda mq, mkv: ab.LowerTriangularMask().add_alibi([0.5, 0.125]), 2, 70, 90),
    ]


def varlen_cases():
    """(name, bias maker given a seed-free RNG, Mq total, Mkv total); B = 1."""
    random.seed(7)
    q = seqlens(4, 1, 40)
    kv = [n + random.randint(0, 20) for n in q]
    pad = max(kv) + 3
    starts = sorted(random.sample(range(0, 200), 4))
    gappy_len = [random.randint(1, 30) for _ in q]
    gappy_starts = [s + i * 30 for i, s in enumerate(starts)] + [max(starts) + 4 * 30 + 30]
    return [
        ("BlockDiagonalMask", ab.BlockDiagonalMask.from_seqlens(q, kv), sum(q), sum(kv)),
        ("BlockDiagonalCausalMask", ab.BlockDiagonalCausalMask.from_seqlens(q), sum(q), sum(q)),
        ("BlockDiagonalCausalFromBottomRightMask", ab.BlockDiagonalMask.from_seqlens(q, kv).make_causal_from_bottomright(),
         sum(q), sum(kv)),
        ("BlockDiagonalCausalLocalAttentionMask", ab.BlockDiagonalMask.from_seqlens(q, kv).make_local_attention(5),
         sum(q), sum(kv)),
        ("BlockDiagonalCausalLocalAttentionFromBottomRightMask",
         ab.BlockDiagonalMask.from_seqlens(q, kv).make_local_attention_from_bottomright(6), sum(q), sum(kv)),
        ("BlockDiagonalMaskWithAlibi", ab.BlockDiagonalMask.from_seqlens(q, kv).add_alibi(H), sum(q), sum(kv)),
        ("BlockDiagonalCausalMaskWithAlibi", ab.BlockDiagonalCausalMask.from_seqlens(q).add_alibi(H), sum(q), sum(q)),
        ("BlockDiagonalPaddedKeysMask", ab.BlockDiagonalPaddedKeysMask.from_seqlens(q, pad, kv), sum(q), 4 * pad),
        ("BlockDiagonalCausalWithOffsetPaddedKeysMask",
         ab.BlockDiagonalCausalWithOffsetPaddedKeysMask.from_seqlens(q, pad, kv), sum(q), 4 * pad),
        ("BlockDiagonalLocalAttentionPaddedKeysMask",
         ab.BlockDiagonalLocalAttentionPaddedKeysMask.from_seqlens_local(q, pad, kv, 7, 3), sum(q), 4 * pad),
        ("BlockDiagonalCausalLocalAttentionPaddedKeysMask",
         ab.BlockDiagonalCausalLocalAttentionPaddedKeysMask.from_seqlens_local(q, pad, kv, 8), sum(q), 4 * pad),
        ("BlockDiagonalGappyKeysMask", ab.BlockDiagonalGappyKeysMask.from_seqlens(q, gappy_starts, gappy_len), sum(q),
         gappy_starts[-1]),
        ("BlockDiagonalCausalWithOffsetGappyKeysMask",
         ab.BlockDiagonalCausalWithOffsetGappyKeysMask.from_seqlens(q, gappy_starts, gappy_len), sum(q),
         gappy_starts[-1]),
    ]


# Every kind in bf16; f16 and f32 on two kinds (each dtype x kind is its own kernel: the C++ GPU
# tests cover the product, these the torch layer's handling of each dtype).
DTYPE_CASES = [(c, torch.bfloat16) for c in dense_cases()] + \
    [(c, d) for c in dense_cases()[:2] for d in (torch.float16, torch.float32)]


@pytest.mark.parametrize("case,dtype", DTYPE_CASES, ids=lambda x: x[0] if isinstance(x, tuple) else str(x)[6:])
def test_dense_masks_forward_and_backward(case, dtype):
    name, make, b, mq, mkv = case
    bias = make(mq, mkv)
    q, k, v = rnd(b, mq, H, K, dtype=dtype, grad=True), rnd(b, mkv, H, K, dtype=dtype, grad=True), \
        rnd(b, mkv, H, K, dtype=dtype, grad=True)
    dense = None if bias is None else bias.materialize((b, H, mq, mkv), dtype=torch.float64, device=DEV)
    check_fwd_bwd(q, k, v, bias, dense)


@pytest.mark.parametrize("dtype", [torch.bfloat16])
@pytest.mark.parametrize("case", varlen_cases(), ids=lambda c: c[0])
def test_varlen_masks_forward_and_backward(case, dtype):
    name, bias, mq, mkv = case
    q, k, v = rnd(1, mq, H, K, dtype=dtype, grad=True), rnd(1, mkv, H, K, dtype=dtype, grad=True), \
        rnd(1, mkv, H, K, dtype=dtype, grad=True)
    dense = bias.materialize((1, H, mq, mkv), dtype=torch.float64, device=DEV)
    check_fwd_bwd(q, k, v, bias, dense)


@pytest.mark.parametrize("kind", ["padded", "causal", "local", "gappy", "gappy_causal"])
def test_paged_masks_forward(kind):
    random.seed(3)
    q, kv = [5, 9, 3], [20, 31, 12]
    page, pages = 16, 3
    table = torch.randperm(3 * pages, dtype=torch.int32).reshape(3, pages).to(DEV)
    if kind.startswith("gappy"):
        base = (ab.BlockDiagonalGappyKeysMask if kind == "gappy" else ab.BlockDiagonalCausalWithOffsetGappyKeysMask)
        bias = base.from_seqlens(q, [b * pages * page + 2 for b in range(3)] + [3 * pages * page], kv).make_paged(
            table, page)
    else:
        base = {"padded": ab.BlockDiagonalPaddedKeysMask, "causal": ab.BlockDiagonalCausalWithOffsetPaddedKeysMask,
                "local": ab.BlockDiagonalCausalLocalAttentionPaddedKeysMask}[kind]
        if kind == "local":
            bias = base.from_seqlens_local(q, pages * page, kv, 7).make_paged(table, page)
        else:
            bias = base.from_seqlens(q, pages * page, kv).make_paged(table, page)
    pool = 3 * pages * page
    qq, k, v = rnd(1, sum(q), H, K), rnd(1, pool, H, K), rnd(1, pool, H, K)
    dense = bias.materialize((1, H, sum(q), pool), dtype=torch.float64, device=DEV)
    check_fwd_bwd(qq, k, v, bias, dense, backward=False)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_tensor_bias_and_its_gradient(dtype):
    b, mq, mkv = 2, 50, 70
    q, k, v = rnd(b, mq, H, K, dtype=dtype, grad=True), rnd(b, mkv, H, K, dtype=dtype, grad=True), \
        rnd(b, mkv, H, K, dtype=dtype, grad=True)
    for bias_shape in [(b, H, mq, mkv), (1, H, mq, mkv), (mq, mkv)]:
        tb = rnd(*bias_shape, dtype=dtype, grad=True)
        for make in (lambda t: t, ab.TensorBias, lambda t: ab.LowerTriangularMask().add_bias(t)):
            for x in (q, k, v, tb):
                x.grad = None
            bias = make(tb)
            out = ops.memory_efficient_attention(q, k, v, bias)
            tbr = tb.detach().double().requires_grad_(True)
            dense = tbr
            if isinstance(bias, ab.LowerTriangularMaskWithTensorBias):
                dense = tbr + ab.LowerTriangularMask().materialize((mq, mkv), dtype=torch.float64, device=DEV)
            qr, kr, vr = (x.detach().double().requires_grad_(True) for x in (q, k, v))
            ref = ref_attention(qr, kr, vr, dense)
            assert rel(out, ref) < FWD_TOL[dtype]
            g = torch.randn_like(out)
            out.backward(g)
            ref.backward(g.double())
            assert tb.grad.shape == tb.shape
            assert rel(tb.grad, tbr.grad) < BWD_TOL[dtype]
            assert rel(q.grad, qr.grad) < BWD_TOL[dtype]


# ---- layouts and options --------------------------------------------------------------------
def test_gqa_4d():
    q, k, v = rnd(2, 40, 8, K, grad=True), rnd(2, 60, 2, K, grad=True), rnd(2, 60, 2, 32, grad=True)
    check_fwd_bwd(q, k, v, ab.LowerTriangularFromBottomRightMask(),
                  ab.LowerTriangularFromBottomRightMask().materialize((40, 60), dtype=torch.float64, device=DEV))


def test_bmghk_with_keys_expanded_over_heads():
    b, m, g, h = 2, 40, 2, 3
    q = rnd(b, m, g, h, K, grad=True)
    k0, v0 = rnd(b, m, g, 1, K, grad=True), rnd(b, m, g, 1, K, grad=True)
    k, v = k0.expand(b, m, g, h, K), v0.expand(b, m, g, h, K)
    out = ops.memory_efficient_attention(q, k, v, ab.LowerTriangularMask())
    assert out.shape == (b, m, g, h, K)
    qr, kr, vr = (x.detach().double().requires_grad_(True) for x in (q, k0, v0))
    flat = lambda x: x.expand(b, m, g, h, K).reshape(b, m, g * h, K)  # noqa: E731
    causal = ab.LowerTriangularMask().materialize((m, m), dtype=torch.float64, device=DEV)
    ref = ref_attention(qr.reshape(b, m, g * h, K), flat(kr), flat(vr), causal).reshape(b, m, g, h, K)
    assert rel(out, ref) < FWD_TOL[torch.bfloat16]
    gr = torch.randn_like(out)
    out.backward(gr)
    ref.backward(gr.double())
    for x, xr in ((q, qr), (k0, kr), (v0, vr)):
        assert rel(x.grad, xr.grad) < BWD_TOL[torch.bfloat16]


def test_key_expanded_beside_a_value_that_is_not():
    """A key expanded over its heads by stride 0 next to a per-head value: the layer must not
    un-expand one without the other (the library needs one head count for both)."""
    b, m, n, h = 2, 40, 56, 4
    q = rnd(b, m, h, K, grad=True)
    k0, v = rnd(b, n, 1, K, grad=True), rnd(b, n, h, K, grad=True)
    k = k0.expand(b, n, h, K)
    out = ops.memory_efficient_attention(q, k, v)
    qr, kr, vr = (x.detach().double().requires_grad_(True) for x in (q, k0, v))
    ref = ref_attention(qr, kr.expand(b, n, h, K), vr)
    assert rel(out, ref) < FWD_TOL[torch.bfloat16]
    g = torch.randn_like(out)
    out.backward(g)
    ref.backward(g.double())
    for x, xr in ((q, qr), (k0, kr), (v, vr)):
        assert rel(x.grad, xr.grad) < BWD_TOL[torch.bfloat16]


def test_bmghk_bias_broadcast_over_groups_only():
    """A 5-D bias [B, 1, H, Mq, Mkv] with G > 1: broadcast over G alone has no single head stride
    for the G·H heads; the layer copies it."""
    b, m, g, h = 2, 24, 2, 3
    q, k, v = (rnd(b, m, g, h, K, grad=True) for _ in range(3))
    tb = rnd(b, 1, h, m, m)
    out = ops.memory_efficient_attention(q, k, v, tb.expand(b, g, h, m, m))
    qr, kr, vr = (x.detach().double().reshape(b, m, g * h, K) for x in (q, k, v))
    ref = ref_attention(qr, kr, vr, tb.double().expand(b, g, h, m, m).reshape(b, g * h, m, m)).reshape(b, m, g, h, K)
    assert rel(out, ref) < FWD_TOL[torch.bfloat16]


def test_empty_queries_and_keys():
    """Empty sequences are valid calls (torch gives an empty tensor data_ptr 0)."""
    q, k, v = rnd(2, 0, H, K, grad=True), rnd(2, 30, H, K), rnd(2, 30, H, K)
    out = ops.memory_efficient_attention(q, k, v)
    assert out.shape == (2, 0, H, K)
    q, k, v = rnd(2, 7, H, K), rnd(2, 0, H, K), rnd(2, 0, H, K)
    out = ops.memory_efficient_attention(q, k, v)
    assert out.shape == (2, 7, H, K) and torch.equal(out, torch.zeros_like(out))


def test_bmk_scale_and_output_dtype():
    q, k, v = rnd(3, 33, K, grad=True), rnd(3, 47, K, grad=True), rnd(3, 47, K, grad=True)
    out = ops.memory_efficient_attention(q, k, v, scale=0.3, output_dtype=torch.float32)
    assert out.dtype == torch.float32 and out.shape == (3, 33, K)
    ref = ref_attention(*(x.detach().unsqueeze(2) for x in (q, k, v)), scale=0.3).squeeze(2)
    assert rel(out, ref) < FWD_TOL[torch.bfloat16]
    out.sum().backward()
    assert torch.isfinite(q.grad).all() and q.grad.shape == q.shape


def test_non_autograd_api_matches_autograd():
    q, k, v = rnd(2, 64, H, K), rnd(2, 80, H, K), rnd(2, 80, H, K)
    bias = ab.LowerTriangularFromBottomRightMask()
    out, lse = ops.memory_efficient_attention_forward_requires_grad(q, k, v, bias)
    assert lse.shape == (2, H, 64) and lse.dtype == torch.float32
    assert torch.equal(out, ops.memory_efficient_attention_forward(q, k, v, bias))
    g = rnd(2, 64, H, K)
    dq, dk, dv = ops.memory_efficient_attention_backward(g, out, lse, q, k, v, bias)
    qa, ka, va = (x.clone().requires_grad_(True) for x in (q, k, v))
    ops.memory_efficient_attention(qa, ka, va, bias).backward(g)
    for a, b in ((dq, qa.grad), (dk, ka.grad), (dv, va.grad)):
        assert rel(a, b) < BWD_TOL[torch.bfloat16]


@pytest.mark.parametrize("listed", [False, True])
def test_partial_and_merge_equal_the_whole(listed):
    q, k, v = rnd(2, 50, H, K), rnd(2, 300, H, K), rnd(2, 300, H, K)
    cuts = [0, 100, 170, 300]
    parts = [ops.memory_efficient_attention_partial(q, k[:, a:b], v[:, a:b], output_dtype=torch.float32)
             for a, b in zip(cuts, cuts[1:])]
    outs, lses = [p[0] for p in parts], [p[1] for p in parts]
    if not listed:
        outs, lses = torch.stack(outs), torch.stack(lses)
    out, lse = ops.merge_attentions(outs, lses, output_dtype=torch.bfloat16)
    assert out.dtype == torch.bfloat16
    assert rel(out, ref_attention(q, k, v)) < FWD_TOL[torch.bfloat16]
    _, whole_lse = ops.memory_efficient_attention_forward_requires_grad(q, k, v)
    assert rel(lse, whole_lse) < 1e-5


def test_dropout_repeats_under_the_same_seed_and_keeps_the_mean():
    q, k, v = rnd(2, 128, H, K, dtype=torch.float32), rnd(2, 128, H, K, dtype=torch.float32), \
        torch.ones(2, 128, H, K, device=DEV)
    torch.manual_seed(1)
    a = ops.memory_efficient_attention(q, k, v, p=0.3)
    torch.manual_seed(1)
    b = ops.memory_efficient_attention(q, k, v, p=0.3)
    assert torch.equal(a, b)
    assert abs(a.mean().item() - 1.0) < 0.05  # E[dropout(P)/(1-p) @ 1] = 1
    qg = q.clone().requires_grad_(True)
    ops.memory_efficient_attention(qg, k, v, p=0.3).sum().backward()
    assert torch.isfinite(qg.grad).all()


# ---- a small model: autograd, compile, graphs, autocast ---------------------------------------
class Block(torch.nn.Module):
    def __init__(self, dim=128, heads=2, use_jitattn=True):
        super().__init__()
        self.heads, self.use = heads, use_jitattn
        self.qkv = torch.nn.Linear(dim, 3 * dim)
        self.proj = torch.nn.Linear(dim, dim)

    def forward(self, x, bias=None):
        b, m, d = x.shape
        q, k, v = self.qkv(x).reshape(b, m, 3, self.heads, d // self.heads).unbind(2)
        if self.use:
            y = ops.memory_efficient_attention(q, k, v, bias if bias is not None else ab.LowerTriangularMask())
        else:
            y = torch.nn.functional.scaled_dot_product_attention(
                q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=True).transpose(1, 2)
        return self.proj(y.reshape(b, m, d))


def twin_blocks():
    torch.manual_seed(0)
    a = Block().to(DEV)
    b = Block(use_jitattn=False).to(DEV)
    b.load_state_dict(a.state_dict())
    return a, b


def test_autograd_through_a_small_model_matches_sdpa():
    a, b = twin_blocks()
    x = torch.randn(2, 96, 128, device=DEV)
    ya, yb = a(x), b(x)
    assert rel(ya, yb) < 1e-4  # f32: jitattn's exact path against SDPA's
    ya.square().mean().backward()
    yb.square().mean().backward()
    for (n, pa), pb in zip(a.named_parameters(), b.parameters()):
        assert rel(pa.grad, pb.grad) < 1e-3, n


def test_torch_compile_fullgraph_matches_eager():
    a, _ = twin_blocks()
    x = torch.randn(1, 96, 128, device=DEV)
    bias = ab.BlockDiagonalCausalMask.from_seqlens([30, 66])
    eager = a(x, bias)  # eager autograd runs _EagerAttention; the compiled graph runs torch.ops.jitattn.fwd/bwd
    eager.square().sum().backward()
    eager_grads = [p.grad.clone() for p in a.parameters()]
    a.zero_grad(set_to_none=True)
    compiled = torch.compile(a, fullgraph=True)
    out = compiled(x, bias)
    assert rel(out, eager) < 1e-4  # inductor may fuse the f32 Linear epilogues differently
    out.square().sum().backward()
    for (n, p), g in zip(a.named_parameters(), eager_grads):
        assert rel(p.grad, g) < 1e-4, n
    with torch._dynamo.config.patch(error_on_recompile=True):  # a new packed batch: the same graph
        compiled(x, ab.BlockDiagonalCausalMask.from_seqlens([50, 46]))


def test_cuda_graph_capture_and_replay():
    q, k, v = rnd(1, 96, H, K), rnd(1, 96, H, K), rnd(1, 96, H, K)
    bias = ops.prepare_bias(ab.BlockDiagonalCausalMask.from_seqlens([40, 56]), DEV)
    g = rnd(1, 96, H, K)
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):  # warm: kernels compiled and loaded before capture
        for _ in range(2):
            out, lse = ops.memory_efficient_attention_forward_requires_grad(q, k, v, bias)
            ops.memory_efficient_attention_backward(g, out, lse, q, k, v, bias)
    torch.cuda.current_stream().wait_stream(s)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out, lse = ops.memory_efficient_attention_forward_requires_grad(q, k, v, bias)
        dq, dk, dv = ops.memory_efficient_attention_backward(g, out, lse, q, k, v, bias)
    for _ in range(2):
        for x in (q, k, v, g):
            x.copy_(torch.randn_like(x))
        graph.replay()
        torch.cuda.synchronize()
        want = ops.memory_efficient_attention_forward(q, k, v, bias)
        assert torch.equal(out, want)
        wq, _, _ = ops.memory_efficient_attention_backward(g, want, lse, q, k, v, bias)
        assert rel(dq, wq) < 1e-2  # dQ's fp32 atomics may add in another order


def test_cuda_graph_capture_of_autograd():
    a, _ = twin_blocks()
    x = torch.randn(2, 64, 128, device=DEV)
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for _ in range(2):
            a(x).sum().backward()
    torch.cuda.current_stream().wait_stream(s)
    graph = torch.cuda.CUDAGraph()
    for p in a.parameters():
        p.grad = None
    with torch.cuda.graph(graph):
        y = a(x)
        y.sum().backward()
    x.copy_(torch.randn_like(x))
    graph.replay()
    torch.cuda.synchronize()
    assert rel(y, a(x)) < 1e-5


def test_first_use_of_a_bias_during_capture_says_what_to_do():
    q = rnd(1, 16, H, K)
    bias = ab.BlockDiagonalCausalMask.from_seqlens([8, 8])
    ops.memory_efficient_attention_forward(q, q, q)  # the kernel itself is warm
    graph = torch.cuda.CUDAGraph()
    with pytest.raises(jitattn.Error, match="prepare_bias"):
        with torch.cuda.graph(graph):
            ops.memory_efficient_attention_forward(q, q, q, bias)


def test_bias_device_arrays_are_made_once():
    bias = ab.BlockDiagonalCausalMask.from_seqlens([10, 20])
    q = rnd(1, 30, H, K)
    ops.memory_efficient_attention(q, q, q, bias)
    arrays = bias._jitattn_device[q.device.index][1]
    ptrs = {n: t.data_ptr() for n, t in arrays.items()}
    assert set(ptrs) == {"q_seqstart_device", "kv_seqstart_device"}
    ops.memory_efficient_attention(q, q, q, bias)
    assert {n: t.data_ptr() for n, t in bias._jitattn_device[q.device.index][1].items()} == ptrs


def test_autocast_keeps_the_dtypes_as_xformers():
    a, _ = twin_blocks()
    x = torch.randn(2, 64, 128, device=DEV)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        y = a(x)  # q, k, v come out of nn.Linear as bf16
        assert y.dtype == torch.bfloat16
        q32 = rnd(2, 64, H, K, dtype=torch.float32)
        assert ops.memory_efficient_attention(q32, q32, q32).dtype == torch.float32  # not cast
        with pytest.raises(jitattn.Error):
            ops.memory_efficient_attention(q32, q32.bfloat16(), q32)  # mixed dtypes: the library's reason
    y.float().sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in a.parameters())


# ---- errors -----------------------------------------------------------------------------------
def test_library_reasons_reach_python():
    q = rnd(1, 16, H, 100)
    with pytest.raises(jitattn.Error) as e:
        ops.memory_efficient_attention(q, q, q)
    assert any("query.shape[-1]=100" in r for r in e.value.reasons), e.value.reasons


def test_clear_messages_for_cpu_last_stride_and_devices():
    q = rnd(1, 16, H, K)
    with pytest.raises(jitattn.Error, match="key is on cpu"):
        ops.memory_efficient_attention(q, q.cpu(), q)
    t = rnd(1, 16, K, H).transpose(-1, -2)
    with pytest.raises(jitattn.Error, match=r"value.stride\(-1\)=2 must be 1"):
        ops.memory_efficient_attention(q, q, t)
    if torch.cuda.device_count() > 1:
        with pytest.raises(jitattn.Error, match="but query is on"):
            ops.memory_efficient_attention(q, q.to("cuda:1"), q)


def test_a_bias_that_does_not_fit_raises_the_library_reason():
    q = rnd(1, 16, H, K)
    with pytest.raises(jitattn.Error) as e:
        ops.memory_efficient_attention(q, q, q, ab.BlockDiagonalCausalMask.from_seqlens([4, 4]))
    assert e.value.reasons


def test_opcheck_the_custom_ops():
    """torch.library.opcheck: schema, fake against real (shapes, strides, dtypes), autograd registration."""
    q, k, v = rnd(2, 32, H, K, grad=True), rnd(2, 48, H, K, grad=True), rnd(2, 48, H, K, grad=True)
    docs = ab.BlockDiagonalCausalMask.from_seqlens([10, 22], [20, 28])
    qd, kd = rnd(1, 32, H, K, grad=True), rnd(1, 48, H, K, grad=True)
    from jitattn.ops.fmha import _torch_bias

    cases = [(q, k, v, None, None, 4, 0, 0), (qd, kd, kd, *_torch_bias.op_args(docs)[:2], 8, 0, 0),
             (q, k, v, rnd(2, H, 32, 48, grad=True), None, 1, 0, 0)]
    for qq, kk, vv, bt, bk, kind, a, b in cases:
        torch.library.opcheck(torch.ops.jitattn.fwd.default, (qq, kk, vv, bt, bk, kind, a, b, 0.0, None, None, 0, True,
                                                              False, None, []))
    # With a user variant: its key and its captured tensors are inputs.
    doc = (torch.arange(32, device=DEV) // 8).int()
    var = jitattn.Variant(mask_mod="doc[q_idx] == doc[kv_idx % 32]", captures={"doc": doc})
    torch.library.opcheck(torch.ops.jitattn.fwd.default, (q, k, v, None, None, 0, 0, 0, 0.0, None, None, 0, True,
                                                          False, var.key(), var.tensors()))


def test_a_bias_dropped_before_the_backward_still_serves_it():
    q = rnd(1, 30, H, K, grad=True)
    out = ops.memory_efficient_attention(q, q, q, ab.BlockDiagonalCausalMask.from_seqlens([12, 18]))
    import gc

    gc.collect()
    out.sum().backward()
    assert torch.isfinite(q.grad).all()
