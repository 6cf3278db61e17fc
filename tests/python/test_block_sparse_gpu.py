"""Block maps (jitattn.Variant.build_block_map) and BlockSparseMask on the GPU against a float64
torch reference, forward and backward in f16/bf16/f32; the map's cells against the mask
evaluated in torch; materialize() of a variant and of a BlockSparseMask; torch.compile with a
block map; errors that name the argument. Outputs the layer allocates are poisoned first."""
import pytest

from conftest import requires_gpu, requires_torch

pytestmark = [requires_torch, requires_gpu, pytest.mark.usefixtures("poisoned_outputs")]

torch = pytest.importorskip("torch")

import jitattn  # noqa: E402
from jitattn.ops.fmha import attn_bias as ab  # noqa: E402
from test_variant_gpu import DEV, DTYPES, check, rnd  # noqa: E402


def cell_states(allowed, cell):
    """[B, H, rows, cols] 0/1/2 of a bool [B, H, Mq, Mkv] mask, cells of `cell` (the last ones cut)."""
    B, H, mq, mkv = allowed.shape
    rows, cols = -(-mq // cell), -(-mkv // cell)
    padded_any = torch.zeros(B, H, rows * cell, cols * cell, dtype=torch.bool, device=allowed.device)
    padded_all = torch.ones_like(padded_any)
    padded_any[..., :mq, :mkv] = allowed
    padded_all[..., :mq, :mkv] = allowed
    any_ = padded_any.reshape(B, H, rows, cell, cols, cell).any(5).any(3)
    all_ = padded_all.reshape(B, H, rows, cell, cols, cell).all(5).all(3)
    return torch.where(all_, 2, torch.where(any_, 1, 0)).to(torch.uint8)


def row_spans(allowed):
    """[B, H, Mq, 2] int32 of a bool [B, H, Mq, Mkv] mask: (lo, hi) where a row's keys are exactly
    [lo, hi), (0, 0) where it has none, (0, -1) where they are not one interval."""
    mkv = allowed.shape[-1]
    j = torch.arange(mkv, device=allowed.device)
    count = allowed.sum(-1)
    lo = torch.where(allowed, j, mkv).amin(-1)
    hi = torch.where(allowed, j + 1, 0).amax(-1)
    one = count == hi - lo
    lo = torch.where((count > 0) & one, lo, 0)
    hi = torch.where(count == 0, 0, torch.where(one, hi, -1))
    return torch.stack([lo, hi], -1).to(torch.int32)


def documents(B, M, lo, hi):
    """[B, M] int32 document ids, lengths drawn from [lo, hi]."""
    doc = torch.zeros(B, M, dtype=torch.int32)
    for b in range(B):
        i, d = 0, 0
        while i < M:
            n = int(torch.randint(lo, hi + 1, ()))
            doc[b, i:i + n] = d
            i, d = i + n, d + 1
    return doc.to(DEV)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cell", [32, 128])
def test_block_map_of_documents_over_causal(dtype, cell):
    B, M, H, K = 2, 600, 2, 64
    doc = documents(B, M, 260, 400)
    var = jitattn.Variant(mask_mod="doc(b, q_idx) == doc(b, kv_idx)", captures={"doc": doc})
    bm = var.build_block_map(M, M, batch=B, cell_size=cell)
    same = (doc[:, :, None] == doc[:, None, :])[:, None]
    want_cells = cell_states(same, cell)
    assert torch.equal(bm.cells, want_cells)
    assert {0, 1, 2} <= set(bm.cells.unique().tolist())  # every kind of tile is exercised
    assert torch.equal(bm.spans, row_spans(same))  # documents: every row one interval
    causal = torch.ones(M, M, dtype=torch.bool, device=DEV).tril()
    q, k, v = rnd(B, M, H, K, dtype=dtype), rnd(B, M, H, K, dtype=dtype), rnd(B, M, H, K, dtype=dtype)
    check(dtype, q, k, v, same & causal, None, attn_bias=ab.LowerTriangularMask(), variant=var)


@pytest.mark.parametrize("dtype", DTYPES)
def test_block_map_with_a_score_mod_and_per_head_mask(dtype):
    B, M, H, K = 1, 400, 2, 64
    var = jitattn.Variant(mask_mod="h == 0 ? (q_idx / 64 + kv_idx / 64) % 2 == 0 : kv_idx < 48 + q_idx / 2",
                          score_mod="score * scale_by", score_grad="return scale_by;", captures={"scale_by": 0.6})
    bm = var.build_block_map(M, M, heads=H, cell_size=32)
    i = torch.arange(M, device=DEV)
    allowed = torch.stack([((i[:, None] // 64 + i[None, :] // 64) % 2 == 0), i[None, :] < 48 + i[:, None] // 2])[None]
    # head 0's rows are no interval (its tiles call mask_mod), head 1's are (masked by their spans)
    assert torch.equal(bm.spans, row_spans(allowed))
    assert (bm.spans[0, 0, :, 1] == -1).all() and (bm.spans[0, 1, :, 1] >= 0).all()
    q, k, v = rnd(B, M, H, K, dtype=dtype), rnd(B, M, H, K, dtype=dtype), rnd(B, M, H, K, dtype=dtype)
    check(dtype, q, k, v, allowed, lambda s: s * 0.6, variant=var)


def test_a_stale_or_foreign_block_map_is_refused():
    M = 256
    var = jitattn.Variant(mask_mod="kv_idx <= q_idx + 10")
    var.build_block_map(M, M)
    q = rnd(1, M, 1, 64, dtype=torch.float16)
    other = jitattn.Variant(mask_mod="kv_idx <= q_idx + 11", block_map=var.block_map)
    with pytest.raises(jitattn.Error, match="built from variant"):
        jitattn.ops.memory_efficient_attention(q, q, q, variant=other)
    longer = rnd(1, M + 1, 1, 64, dtype=torch.float16)
    with pytest.raises(jitattn.Error, match="covers 256 queries"):
        jitattn.ops.memory_efficient_attention(longer, longer, longer, variant=var)
    with pytest.raises(jitattn.Error, match="cell_size=100"):
        var.build_block_map(M, M, cell_size=100)
    with pytest.raises(jitattn.Error, match="needs a mask_mod"):
        jitattn.Variant(score_mod="score * 2.f", score_grad="return 2.f;").build_block_map(M, M)


def test_materialize_a_variant():
    var = jitattn.Variant(mask_mod="(q_idx + 2 * kv_idx) % 3 != 0", score_mod="score + 0.25f * float(h)", additive=True)
    got = var.materialize((2, 3, 17, 29))
    i, j = torch.arange(17, device=DEV)[:, None], torch.arange(29, device=DEV)[None]
    h = torch.arange(3, device=DEV).float()[:, None, None] * 0.25
    want = torch.where((i + 2 * j) % 3 != 0, h, float("-inf")).expand(2, 3, 17, 29)
    assert torch.equal(got, want)


def layout_of(heads, mq, mkv, block, density):
    rows, cols = -(-mq // block), -(-mkv // block)
    return torch.rand(heads, rows, cols, device=DEV) < density


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("density", [0.1, 0.5, 0.9])
def test_block_sparse_mask(dtype, density):
    B, Mq, Mkv, H, K = 2, 333, 290, 2, 64
    for block, causal, heads in ((16, False, H), (64, True, 1), (128, False, H)):
        layout = layout_of(heads, Mq, Mkv, block, density)
        bias = ab.BlockSparseMask(layout, block, causal=causal)
        dense = bias.materialize((B, H, Mq, Mkv), device=DEV)
        expanded = layout.repeat_interleave(block, 1).repeat_interleave(block, 2)[:, :Mq, :Mkv].expand(H, Mq, Mkv)
        if causal:
            expanded = expanded & torch.ones(Mq, Mkv, dtype=torch.bool, device=DEV).tril()
        assert torch.equal(dense == 0, expanded[None].expand(B, H, Mq, Mkv))
        q, k, v = rnd(B, Mq, H, K, dtype=dtype), rnd(B, Mkv, H, K, dtype=dtype), rnd(B, Mkv, H, K, dtype=dtype)
        check(dtype, q, k, v, expanded[None].expand(B, H, Mq, Mkv), None, attn_bias=bias)


def test_block_sparse_errors_name_the_argument():
    q = rnd(1, 100, 2, 64, dtype=torch.float16)
    with pytest.raises(jitattn.Error, match="block_size=24"):
        jitattn.ops.memory_efficient_attention(q, q, q, attn_bias=ab.BlockSparseMask(layout_of(1, 100, 100, 24, 0.5), 24))
    with pytest.raises(jitattn.Error, match=r"layout.shape\[1\]=3"):
        jitattn.ops.memory_efficient_attention(q, q, q, attn_bias=ab.BlockSparseMask(layout_of(1, 96, 100, 32, 0.5), 32))
    with pytest.raises(jitattn.Error, match=r"layout.shape\[0\]=3"):
        jitattn.ops.memory_efficient_attention(q, q, q, attn_bias=ab.BlockSparseMask(layout_of(3, 100, 100, 32, 0.5), 32))


def test_compiled_with_a_block_map():
    B, M, H, K = 1, 300, 2, 64
    doc = documents(B, M, 100, 200)
    var = jitattn.Variant(mask_mod="doc(b, q_idx) == doc(b, kv_idx)", captures={"doc": doc})
    var.build_block_map(M, M, cell_size=64)
    q, k, v = (rnd(B, M, H, K, dtype=torch.bfloat16).requires_grad_(True) for _ in range(3))

    def f(q, k, v):
        return jitattn.ops.memory_efficient_attention(q, k, v, variant=var).float().square().sum()

    eager = f(q, k, v)
    ge = torch.autograd.grad(eager, (q, k, v))
    compiled = torch.compile(f, fullgraph=True)(q, k, v)
    gc = torch.autograd.grad(compiled, (q, k, v))
    assert torch.allclose(eager, compiled, rtol=1e-3)
    for a, b in zip(ge, gc):
        assert torch.allclose(a.float(), b.float(), rtol=1e-2, atol=1e-2)
