"""Ring attention's Python layer without a GPU (jitattn.ring): the schedule against a brute-force
global mask, the layouts, validation, and the whole algorithm — forward and autograd backward,
every layout, R = 1..8 — with float64 stand-ins for the three kernels it calls, against full
attention by torch autograd in float64. tests/python/test_ring_gpu.py runs the real kernels."""
import math

import pytest

import jitattn
from jitattn import ring
from jitattn.ops.fmha import attn_bias as ab

from conftest import requires_torch

BIASES = {
    "none": None,
    "causal": ab.LowerTriangularMask(),
    "causal_br": ab.LowerTriangularFromBottomRightMask(),
    "window1": ab.LowerTriangularFromBottomRightLocalAttentionMask(1),
    "window5": ab.LowerTriangularFromBottomRightLocalAttentionMask(5),
    "window13": ab.LowerTriangularFromBottomRightLocalAttentionMask(13),
    "local3_6": ab.LocalAttentionFromBottomRightMask(3, 6),
    "local0_4": ab.LocalAttentionFromBottomRightMask(0, 4),
    "local9_0": ab.LocalAttentionFromBottomRightMask(9, 0),
}


def _dense(bias, mq, mk):
    if bias is None:
        return [[0.0] * mk for _ in range(mq)]
    m = bias.materialize((mq, mk))
    return m.tolist() if hasattr(m, "tolist") else m


@pytest.mark.parametrize("name", sorted(BIASES))
@pytest.mark.parametrize("layout", ring.LAYOUTS)
def test_calls_draw_the_global_mask(name, layout):
    band = ring.mask_of(BIASES[name])
    for world in (1, 2, 3, 4):
        for m in (2, 4, 6):
            for rank in range(world):
                gq = ring.global_positions(layout, world, rank, m)
                for src in range(world):
                    gk = ring.global_positions(layout, world, src, m)
                    seen = [[0] * m for _ in range(m)]
                    covered = [[0] * m for _ in range(m)]
                    for qa, qb, ka, kb, kind in ring.step_calls(layout, band, world, rank, src, m):
                        assert 0 <= qa < qb <= m and 0 <= ka < kb <= m
                        mask = _dense(ring.bias_of_kind(kind), qb - qa, kb - ka)
                        assert any(x == 0.0 for row in mask for x in row), "a call that sees nothing"
                        for i in range(qa, qb):
                            for j in range(ka, kb):
                                covered[i][j] += 1
                                seen[i][j] += mask[i - qa][j - ka] == 0.0
                    for i in range(m):
                        for j in range(m):
                            want = band.visible(gq[i], gk[j])
                            assert covered[i][j] <= 1
                            assert seen[i][j] == int(want), (layout, world, m, rank, src, i, j)


def _doc_lengths(n):
    pattern, lens, used, i = [5, 1, 0, 9, 3, 17, 2, 0, 7, 1, 11, 4], [], 0, 0
    while used < n:
        lens.append(min(pattern[i % 12], n - used))
        used, i = used + lens[-1], i + 1
    return lens


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("layout", ["contiguous", "zigzag"])
def test_documents_are_sliced_per_chunk_pair(layout, causal):
    for world in (1, 2, 3, 4):
        for m in (2, 6, 10):
            bias = ab.BlockDiagonalMask.from_seqlens(_doc_lengths(world * m))
            mask = ring.mask_of(bias.make_causal() if causal else bias)
            for rank in range(world):
                gq = ring.global_positions(layout, world, rank, m)
                for src in range(world):
                    gk = ring.global_positions(layout, world, src, m)
                    seen = [[0] * m for _ in range(m)]
                    for qa, qb, ka, kb, kind in ring.step_calls(layout, mask, world, rank, src, m):
                        dense = _dense(ring.bias_of_kind(kind), qb - qa, kb - ka)
                        for i in range(qa, qb):
                            for j in range(ka, kb):
                                seen[i][j] += dense[i - qa][j - ka] == 0.0
                    assert seen == [[int(mask.visible(gq[i], gk[j])) for j in range(m)] for i in range(m)]


def test_layout_positions():
    assert ring.global_positions("zigzag", 4, 1, 4) == [2, 3, 12, 13]
    assert ring.global_positions("striped", 4, 1, 3) == [1, 5, 9]
    assert ring.global_positions("contiguous", 4, 2, 3) == [6, 7, 8]
    for layout in ring.LAYOUTS:
        allpos = sorted(p for r in range(5) for p in ring.global_positions(layout, 5, r, 6))
        assert allpos == list(range(30))


def test_zigzag_balances_causal_work():
    band = ring.mask_of(ab.LowerTriangularMask())
    for world in (2, 4, 8):
        m = 16
        area = {}
        for layout in ring.LAYOUTS:
            area[layout] = [sum((qb - qa) * (kb - ka) for t in range(world)
                                for qa, qb, ka, kb, _ in ring.step_calls(layout, band, world, r, (r - t) % world, m))
                            for r in range(world)]
        assert len(set(area["zigzag"])) == 1
        assert max(area["striped"]) - min(area["striped"]) <= world * m
        assert max(area["contiguous"]) - min(area["contiguous"]) >= (world - 1) * m * m // 2


def test_bad_arguments_are_named():
    with pytest.raises(jitattn.Error) as e:
        ring.mask_of(ab.BlockDiagonalMask.from_seqlens([3, 4]).make_causal_from_bottomright())
    assert "attn_bias=BlockDiagonalCausalFromBottomRightMask: ring attention takes" in e.value.reasons[0]
    with pytest.raises(jitattn.Error) as e:
        ring.mask_of(ab.BlockDiagonalMask.from_seqlens([3, 4], [4, 3]))
    assert "q_seqlen must equal kv_seqlen" in e.value.reasons[0]
    with pytest.raises(jitattn.Error) as e:
        ring.global_positions("spiral", 2, 0, 4)
    assert "layout='spiral' must be one of contiguous, zigzag, striped" in e.value.reasons[0]
    with pytest.raises(jitattn.Error) as e:
        ring.LocalRing(0)
    assert "LocalRing: world=0 must be >= 1" in e.value.reasons[0]


# ---- the algorithm on the CPU, with float64 stand-ins for the kernels ---------------------------

def _mask(bias, mq, mk, torch):
    if bias is None:
        return torch.zeros(mq, mk, dtype=torch.float64)
    return bias.materialize((mq, mk), dtype=torch.float64)


class Float64Kernels:
    """partial / merge / backward as the library defines them, in float64 torch on the CPU."""

    calls = 0

    @staticmethod
    def _scores(q, k, bias, scale, torch):
        h, hk = q.shape[2], k.shape[2]
        k = k.repeat_interleave(h // hk, dim=2)
        s = torch.einsum("bmhk,bnhk->bhmn", q, k) * scale
        return s + _mask(bias, q.shape[1], k.shape[1], torch)

    @classmethod
    def partial(cls, q, k, v, bias, scale):
        import torch

        cls.calls += 1
        scale = scale if scale is not None else q.shape[-1] ** -0.5
        s = cls._scores(q, k, bias, scale, torch)
        lse = torch.logsumexp(s, dim=-1)
        p = torch.where(torch.isinf(lse)[..., None], torch.zeros_like(s), torch.exp(s - lse[..., None]))
        v = v.repeat_interleave(q.shape[2] // v.shape[2], dim=2)
        return torch.einsum("bhmn,bnhk->bmhk", p, v), lse

    @staticmethod
    def merge(outs, lses):
        import torch

        lse = torch.stack(lses)
        mx = lse.max(dim=0).values
        safe = torch.where(torch.isinf(mx), torch.zeros_like(mx), mx)
        w = torch.exp(lse - safe)  # 0 where lse is -inf
        out = sum(torch.where(w[s].transpose(1, 2)[..., None] > 0, outs[s] * w[s].transpose(1, 2)[..., None],
                              torch.zeros_like(outs[s])) for s in range(len(outs)))
        tot = w.sum(dim=0)
        out = torch.where(tot.transpose(1, 2)[..., None] > 0, out / tot.transpose(1, 2)[..., None], torch.zeros_like(out))
        return out, torch.where(tot > 0, safe + torch.log(tot), torch.full_like(tot, -math.inf))

    @classmethod
    def backward(cls, g, out, lse, q, k, v, bias, scale):
        import torch

        cls.calls += 1
        scale = scale if scale is not None else q.shape[-1] ** -0.5
        group = q.shape[2] // k.shape[2]
        s = cls._scores(q, k, bias, scale, torch)
        p = torch.exp(s - lse[..., None])  # the global softmax's P on this block
        vv = v.repeat_interleave(group, dim=2)
        kk = k.repeat_interleave(group, dim=2)
        dv = torch.einsum("bhmn,bmhk->bnhk", p, g)
        dp = torch.einsum("bmhk,bnhk->bhmn", g, vv)
        delta = (g * out).sum(-1).transpose(1, 2)
        ds = p * (dp - delta[..., None])
        dq = torch.einsum("bhmn,bnhk->bmhk", ds, kk) * scale
        dk = torch.einsum("bhmn,bmhk->bnhk", ds, q) * scale
        fold = lambda x: x.reshape(x.shape[0], x.shape[1], k.shape[2], group, x.shape[3]).sum(3)
        return dq, fold(dk), fold(dv)


def full_attention(q, k, v, band, torch):
    n = q.shape[1]
    mask = torch.tensor([[0.0 if band.visible(i, j) else -math.inf for j in range(n)] for i in range(n)],
                        dtype=torch.float64)
    group = q.shape[2] // k.shape[2]
    s = torch.einsum("bmhk,bnhk->bhmn", q, k.repeat_interleave(group, dim=2)) * q.shape[-1] ** -0.5 + mask
    return torch.einsum("bhmn,bnhk->bmhk", torch.softmax(s, dim=-1), v.repeat_interleave(group, dim=2))


ALGEBRA_CASES = [(name, world, layout) for name in ["none", "causal", "window13", "local3_6", "documents",
                                                   "causal_documents"]
                 for world in (1, 2, 3, 4, 8) for layout in ring.LAYOUTS
                 if not ("documents" in name and layout == "striped")]  # documents: contiguous or zigzag


@requires_torch
@pytest.mark.parametrize("name,world,layout", ALGEBRA_CASES)
def test_ring_algebra_matches_full_attention(monkeypatch, layout, world, name):
    import torch

    monkeypatch.setattr(ring, "KERNELS", Float64Kernels)
    Float64Kernels.calls = 0
    g = torch.Generator().manual_seed(world * 100 + len(name))
    B, M, H, Hkv, K = 2, 6, 4, 2, 8
    N = M * world
    if "documents" in name:
        B = 1
        bias = ab.BlockDiagonalMask.from_seqlens(_doc_lengths(N))
        bias = bias.make_causal() if name.startswith("causal") else bias
    else:
        bias = BIASES[name]
    q, k, v, do = (torch.randn(B, N, h, K, dtype=torch.float64, generator=g) for h in (H, Hkv, Hkv, H))
    qs, ks, vs = (ring.shard(x, world, layout) for x in (q, k, v))
    for x in (*qs, *ks, *vs):
        x.requires_grad_(True)
    outs = ring.ring_attention_local(qs, ks, vs, bias, layout=layout)
    assert Float64Kernels.calls > 0
    ref_q, ref_k, ref_v = (x.clone().requires_grad_(True) for x in (q, k, v))
    ref = full_attention(ref_q, ref_k, ref_v, ring.mask_of(bias), torch)
    out = ring.unshard(outs, layout)
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)
    torch.autograd.backward(outs, ring.shard(do, world, layout))
    ref.backward(do)
    for got, want in ((qs, ref_q), (ks, ref_k), (vs, ref_v)):
        torch.testing.assert_close(ring.unshard([x.grad for x in got], layout), want.grad, rtol=1e-9, atol=1e-9)


@requires_torch
def test_shard_roundtrip_and_validation():
    import torch

    x = torch.arange(2 * 16 * 3, dtype=torch.float64).reshape(2, 16, 3)
    for layout in ring.LAYOUTS:
        parts = ring.shard(x, 4, layout)
        assert [p.shape[1] for p in parts] == [4] * 4
        assert torch.equal(ring.unshard(parts, layout), x)
    with pytest.raises(jitattn.Error) as e:
        ring.shard(torch.zeros(1, 12, 2), 4, "zigzag")
    assert "x.shape[1]=12 must be a multiple of 8 for 4 ranks in the zigzag layout" in e.value.reasons[0]
    q = [torch.zeros(1, 6, 2, 8) for _ in range(2)]
    with pytest.raises(jitattn.Error) as e:
        ring.ring_attention_local(q, q[:1], q)
    assert "ranks: 2 queries, 1 keys, 2 values given, but the ring drives 2 local rank(s)" in e.value.reasons[0]
    odd = [torch.zeros(1, 5, 2, 8) for _ in range(2)]
    with pytest.raises(jitattn.Error) as e:
        ring.ring_attention_local(odd, odd, odd, layout="zigzag")
    assert "q.shape[1]=5 must be even for the zigzag layout" in e.value.reasons[0]
    with pytest.raises(jitattn.Error) as e:
        ring.ring_attention_local([torch.zeros(1, 6, 2, 8), torch.zeros(1, 8, 2, 8)], q, q, layout="contiguous")
    assert any("every rank holds an equal slice" in r or "as many keys as queries" in r for r in e.value.reasons)
    with pytest.raises(jitattn.Error) as e:
        ring.ring_attention_local(q, q, q, ab.BlockDiagonalMask.from_seqlens([10, 3]), layout="striped")
    for want in ("documents need the contiguous or zigzag layout",
                 "the documents cover 13 positions but the sequence has 12 (2 ranks of 6)"):
        assert any(want in r for r in e.value.reasons), e.value.reasons
    with pytest.raises(jitattn.Error) as e:
        ring.ring_attention_local([torch.zeros(6, 2, 8)] * 2, q, q)
    assert "ranks[0].q must be 4-D [B, M, H, K], got 3-D" in e.value.reasons[0]


@requires_torch
def test_local_ring_shift_rotates_copies():
    import torch

    r = ring.LocalRing(3)
    xs = [[torch.full((2,), float(i))] for i in range(3)]
    got = r.shift(xs).wait()
    assert [float(g[0][0]) for g in got] == [2.0, 0.0, 1.0]
    got[1][0].add_(5)  # a copy: the sender's tensor is unchanged
    assert float(xs[0][0][0]) == 0.0
