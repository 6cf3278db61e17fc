"""Context-parallel (ring) attention over torch.distributed with jitattn's ops (docs/ring.md).

A sequence of N tokens is split over R ranks, each holding its M = N / R rows of q, k, v in a
*layout* (which global positions a rank holds): ``"contiguous"``, ``"zigzag"`` (chunks r and
2R-1-r of 2R, Megatron CP; equal causal work per rank) or ``"striped"`` (r, r+R, ...; also
balanced). Key/value blocks travel the ring (rank r sends to r+1, receives from r-1) while each
rank runs ``memory_efficient_attention_partial`` of its queries against the block in hand, the
transfer of the next block overlapping the computation; partial results are merged in fp32
(``merge_attentions``). The backward sends the blocks around again, calling
``memory_efficient_attention_backward`` per block with the merged out and lse (so P is the
global softmax's), summing dQ in a local fp32 accumulator and dK/dV in fp32 accumulators that
travel with their block and arrive home after the last step.

- ``ring_attention(q, k, v, attn_bias, layout=..., group=None)``: this rank's slice, over an NCCL
  process group (``DistributedRing``); autograd included.
- ``ring_attention_local(qs, ks, vs, ...)``: R ranks simulated in one process (``LocalRing``,
  "send" is a copy), lists of R tensors: tests the algebra on one GPU.
- ``shard(x, world, layout)`` / ``unshard(parts, layout)``: a global [B, N, ...] tensor to the
  ranks' slices and back; ``global_positions`` says which rows a rank holds.

The mask is global: no mask, ``LowerTriangularMask`` / ``LowerTriangularFromBottomRightMask``
(causal), ``LowerTriangularFromBottomRightLocalAttentionMask(w)``,
``LocalAttentionFromBottomRightMask(wl, wr)`` over the whole sequence, or documents
(``BlockDiagonalMask`` / ``BlockDiagonalCausalMask`` over it, B = 1, contiguous or zigzag); the per-block biases are
derived here (as the C++ ``jitattn::ring_step_calls``). Dropout is not supported.
"""
import bisect
import math
from typing import List, Optional, Sequence

from . import _capi

LAYOUTS = ("contiguous", "zigzag", "striped")
UNBOUNDED = 1 << 60


def _invalid(reasons):
    return _capi.Error(_capi.ERROR_INVALID_ARGUMENT, list(reasons), "JITATTN_ERROR_INVALID_ARGUMENT")


def _check_layout(layout):
    if layout not in LAYOUTS:
        raise _invalid([f"layout={layout!r} must be one of {', '.join(LAYOUTS)}"])


# ---- the schedule (no torch, no GPU) ------------------------------------------------------------

def _chunks(layout, world, rank, local_len):
    """(first local row, first global position, length) of each run of a rank's rows."""
    if layout == "zigzag":
        c = local_len // 2
        return [(0, rank * c, c), (c, (2 * world - 1 - rank) * c, c)]
    if layout == "striped":
        return [(0, rank, local_len)]
    return [(0, rank * local_len, local_len)]


def global_positions(layout: str, world: int, rank: int, local_len: int) -> List[int]:
    """The global position of each of rank ``rank``'s ``local_len`` rows."""
    _check_layout(layout)
    if layout == "striped":
        return [rank + world * i for i in range(local_len)]
    pos = []
    for _, g, n in _chunks(layout, world, rank, local_len):
        pos.extend(range(g, g + n))
    return pos


class Mask:
    """The global mask: query i sees key j iff lo <= j - i <= hi and, with documents
    (``doc_start``: the documents' first positions and N), both lie in one document."""

    def __init__(self, lo=-UNBOUNDED, hi=UNBOUNDED, doc_start=None):
        self.lo, self.hi, self.doc_start = lo, hi, doc_start

    def document(self, i):
        return bisect.bisect_right(self.doc_start, i) - 1

    def visible(self, i, j):
        if not self.lo <= j - i <= self.hi:
            return False
        return self.doc_start is None or self.document(i) == self.document(j)


def mask_of(attn_bias) -> Mask:
    """The global mask of ``attn_bias`` over the whole sequence, for the biases a ring slices."""
    from .ops.fmha import attn_bias as ab

    if attn_bias is None:
        return Mask()
    # Subclasses first: the local masks derive from the causal ones.
    if type(attn_bias) is ab.LowerTriangularFromBottomRightLocalAttentionMask:
        return Mask(1 - attn_bias._window_size, 0)
    if type(attn_bias) is ab.LocalAttentionFromBottomRightMask:
        return Mask(-attn_bias.window_left, attn_bias.window_right)
    if type(attn_bias) in (ab.LowerTriangularMask, ab.LowerTriangularFromBottomRightMask):
        return Mask(-UNBOUNDED, 0)
    if type(attn_bias) in (ab.BlockDiagonalMask, ab.BlockDiagonalCausalMask):
        if attn_bias.q_seqinfo.seqstart_py != attn_bias.k_seqinfo.seqstart_py:
            raise _invalid([f"attn_bias={type(attn_bias).__name__}: q_seqlen must equal kv_seqlen "
                            "(documents of the one sequence)"])
        return Mask(-UNBOUNDED, 0 if type(attn_bias) is ab.BlockDiagonalCausalMask else UNBOUNDED,
                    list(attn_bias.q_seqinfo.seqstart_py))
    raise _invalid([f"attn_bias={type(attn_bias).__name__}: ring attention takes None, LowerTriangularMask, "
                    "LowerTriangularFromBottomRightMask, LowerTriangularFromBottomRightLocalAttentionMask, "
                    "LocalAttentionFromBottomRightMask (a band over the whole sequence, sliced per key block), "
                    "BlockDiagonalMask or BlockDiagonalCausalMask (documents)"])


def _documents_call(mask, qg, kg, c):
    """Documents on a pair of c-row chunks at global qg, kg: (q rows, k rows, kind) or None."""
    causal = mask.hi == 0
    if causal and kg > qg:
        return None
    first = min(mask.document(qg), mask.document(kg))
    last = max(mask.document(qg + c - 1), mask.document(kg + c - 1))
    ql, kl = [], []
    for d in range(first, last + 1):
        a, b = mask.doc_start[d], mask.doc_start[d + 1]
        nq = max(0, min(b, qg + c) - max(a, qg))
        nk = max(0, min(b, kg + c) - max(a, kg))
        if nq or nk:
            ql.append(nq)
            kl.append(nk)
    if not any(nq and nk for nq, nk in zip(ql, kl)):
        return None
    diagonal = kg == qg
    if len(ql) == 1:
        return 0, c, 0, c, ("causal",) if causal and diagonal else ("none",)
    return 0, c, 0, c, ("documents", causal and diagonal, tuple(ql), tuple(kl))


def _band_call(lo, hi, c):
    """A band lo <= j' - i' <= hi on a c x c block as (q rows, k rows, bias kind, windows), or None."""
    if c <= 0:
        return None
    lo, hi = max(lo, -(c - 1)), min(hi, c - 1)
    if lo > hi:
        return None
    if lo == -(c - 1) and hi == c - 1:
        return 0, c, 0, c, ("none",)
    if lo <= 0 <= hi:
        if hi == 0 and lo == -(c - 1):
            return 0, c, 0, c, ("causal",)
        return 0, c, 0, c, ("local", -lo, hi)
    if hi < 0:  # below the diagonal: drop the last -hi keys; the band is [lo - hi, 0] at the bottom right
        if lo == -(c - 1):
            return 0, c, 0, c + hi, ("causal_br",)
        return 0, c, 0, c + hi, ("local", hi - lo, 0)
    return 0, c - lo, lo, c, ("local", 0, hi - lo)  # above: rows [0, c - lo) against keys [lo, c)


def step_calls(layout: str, mask: Mask, world: int, rank: int, src: int, local_len: int):
    """The partial-attention calls of rank ``rank`` holding rank ``src``'s key/value block:
    a list of (q_begin, q_end, k_begin, k_end, kind) in local rows, ``kind`` as
    ``bias_of_kind`` reads it."""
    lo_g, hi_g = mask.lo, mask.hi
    c = local_len // 2 if layout == "zigzag" else local_len
    calls = []
    for qrow, qg, _ in _chunks(layout, world, rank, local_len):
        for krow, kg, _ in _chunks(layout, world, src, local_len):
            if mask.doc_start is not None:
                call = _documents_call(mask, qg, kg, c)
            elif layout == "striped":  # i = rank + R i', j = src + R j'
                lo = -((-(lo_g - (src - rank))) // world)
                hi = (hi_g - (src - rank)) // world
                call = _band_call(lo, hi, c)
            else:
                call = _band_call(lo_g - (kg - qg), hi_g - (kg - qg), c)
            if call is not None:
                qa, qb, ka, kb, kind = call
                calls.append((qa + qrow, qb + qrow, ka + krow, kb + krow, kind))
    return calls


def bias_of_kind(kind):
    """The jitattn.ops.fmha.attn_bias object of a step_calls kind."""
    from .ops.fmha import attn_bias as ab

    if kind[0] == "none":
        return None
    if kind[0] == "causal":
        return ab.LowerTriangularMask()
    if kind[0] == "causal_br":
        return ab.LowerTriangularFromBottomRightMask()
    if kind[0] == "documents":
        mask = ab.BlockDiagonalMask.from_seqlens(list(kind[2]), list(kind[3]))
        return mask.make_causal() if kind[1] else mask
    return ab.LocalAttentionFromBottomRightMask(kind[1], kind[2])


# ---- transports -------------------------------------------------------------------------------------

class _Pending:
    def __init__(self, works, received):
        self._works, self._received = works, received

    def wait(self):
        """The received tensors, per local rank; the current stream waits for them."""
        for w in self._works:
            w.wait()
        return self._received


class LocalRing:
    """R ranks simulated in this process: a shift hands each rank a copy of its previous rank's tensors."""

    def __init__(self, world: int):
        if world < 1:
            raise _invalid([f"LocalRing: world={world} must be >= 1"])
        self.world_size = world
        self.local_ranks = list(range(world))

    def shift(self, per_rank):
        if len(per_rank) != self.world_size:
            raise _invalid([f"shift: tensors for {len(per_rank)} ranks, the ring has {self.world_size}"])
        return _Pending([], [[t.clone() for t in per_rank[(r - 1) % self.world_size]] for r in range(self.world_size)])


class DistributedRing:
    """This process's rank of a torch.distributed process group (NCCL): a shift is one
    ``batch_isend_irecv`` (send to rank + 1, receive from rank - 1), queued on NCCL's stream so the
    computation that follows overlaps it; ``wait`` orders the current stream after it."""

    def __init__(self, group=None):
        import torch.distributed as dist

        if not dist.is_initialized():
            raise _invalid(["DistributedRing: torch.distributed is not initialized (init_process_group first)"])
        self.group = group
        self.world_size = dist.get_world_size(group)
        rank = dist.get_rank(group)
        self.local_ranks = [rank]
        glob = (lambda r: dist.get_global_rank(group, r)) if group is not None else (lambda r: r)
        self._next, self._prev = glob((rank + 1) % self.world_size), glob((rank - 1) % self.world_size)

    def shift(self, per_rank):
        import torch
        import torch.distributed as dist

        (tensors,) = per_rank
        if self.world_size == 1:
            return _Pending([], [list(tensors)])
        recv = [torch.empty_like(t) for t in tensors]
        ops = []
        for t, r in zip(tensors, recv):
            ops.append(dist.P2POp(dist.isend, t, self._next, self.group))
            ops.append(dist.P2POp(dist.irecv, r, self._prev, self.group))
        return _Pending(dist.batch_isend_irecv(ops), [recv])


# ---- the algorithm ----------------------------------------------------------------------------------

class _Kernels:
    """The three jitattn ops the ring calls (tests swap in a float64 stand-in to check the
    algebra on the CPU)."""

    @staticmethod
    def partial(q, k, v, attn_bias, scale):
        from .ops import memory_efficient_attention_partial
        import torch

        return memory_efficient_attention_partial(q, k, v, attn_bias=attn_bias, scale=scale, output_dtype=torch.float32)

    @staticmethod
    def merge(outs, lses):
        from .ops import merge_attentions
        import torch

        return merge_attentions(outs, lses, write_lse=True, output_dtype=torch.float32)

    @staticmethod
    def backward(grad, out, lse, q, k, v, attn_bias, scale):
        from .ops import memory_efficient_attention_backward

        return memory_efficient_attention_backward(grad, out, lse, q, k, v, attn_bias=attn_bias, scale=scale)


KERNELS = _Kernels


def _validate(ring, qs, ks, vs, layout, attn_bias):
    _check_layout(layout)
    band = mask_of(attn_bias)
    reasons = []
    n = len(ring.local_ranks)
    if not (len(qs) == len(ks) == len(vs) == n):
        reasons.append(f"ranks: {len(qs)} queries, {len(ks)} keys, {len(vs)} values given, but the ring drives "
                       f"{n} local rank(s)")
        raise _invalid(reasons)
    for i, (q, k, v) in enumerate(zip(qs, ks, vs)):
        for name, t in (("q", q), ("k", k), ("v", v)):
            if t.dim() != 4:
                reasons.append(f"ranks[{i}].{name} must be 4-D [B, M, H, K], got {t.dim()}-D")
        if reasons:
            continue
        if k.shape[1] != q.shape[1] or v.shape[1] != q.shape[1]:
            reasons.append(f"ranks[{i}]: k.shape[1]={k.shape[1]}, v.shape[1]={v.shape[1]} must equal "
                           f"q.shape[1]={q.shape[1]}: every rank holds as many keys as queries")
        if i and (q.shape != qs[0].shape or k.shape != ks[0].shape or v.shape != vs[0].shape):
            reasons.append(f"ranks[{i}]: q/k/v shapes {tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)} must equal "
                           f"ranks[0]'s {tuple(qs[0].shape)}, {tuple(ks[0].shape)}, {tuple(vs[0].shape)} "
                           "(every rank holds an equal slice)")
    if not reasons and layout == "zigzag" and qs[0].shape[1] % 2:
        reasons.append(f"q.shape[1]={qs[0].shape[1]} must be even for the zigzag layout (two chunks of M/2 per rank)")
    if not reasons and band.doc_start is not None:
        name, n = type(attn_bias).__name__, qs[0].shape[1] * ring.world_size
        if layout == "striped":
            reasons.append(f"attn_bias={name}: documents need the contiguous or zigzag layout "
                           "(a striped rank holds every document's rows)")
        if qs[0].shape[0] != 1:
            reasons.append(f"q.shape[0]={qs[0].shape[0]} must be 1 with documents (block-diagonal masks concatenate them)")
        if band.doc_start[-1] != n:
            reasons.append(f"attn_bias={name}: the documents cover {band.doc_start[-1]} positions but the sequence has "
                           f"{n} ({ring.world_size} ranks of {qs[0].shape[1]})")
    if reasons:
        raise _invalid(reasons)
    return band


def _acc_dtype(x):
    """fp32 accumulators (fp64 for fp64 inputs: the tests' stand-in kernels)."""
    import torch

    return torch.float64 if x.dtype == torch.float64 else torch.float32


def _forward(ring, qs, ks, vs, band, layout, scale):
    import torch

    R, M = ring.world_size, qs[0].shape[1]
    held = [(k.contiguous(), v.contiguous()) for k, v in zip(ks, vs)]
    acc = []
    for q, v in zip(qs, vs):
        B, _, H, _ = q.shape
        acc.append((torch.empty(B, M, H, v.shape[3], dtype=_acc_dtype(q), device=q.device),
                    torch.full((B, H, M), -math.inf, dtype=_acc_dtype(q), device=q.device)))
    for t in range(R):
        pending = ring.shift([list(kv) for kv in held]) if t + 1 < R else None
        for i, rank in enumerate(ring.local_ranks):
            q, (k, v), (ao, al) = qs[i], held[i], acc[i]
            for qa, qb, ka, kb, kind in step_calls(layout, band, R, rank, (rank - t) % R, M):
                o, l = KERNELS.partial(q[:, qa:qb], k[:, ka:kb], v[:, ka:kb], bias_of_kind(kind), scale)
                mo, ml = KERNELS.merge([ao[:, qa:qb], o], [al[:, :, qa:qb], l])
                ao[:, qa:qb], al[:, :, qa:qb] = mo, ml
        if pending is not None:
            held = [tuple(x) for x in pending.wait()]
    return [ao.to(q.dtype) for (ao, _), q in zip(acc, qs)], [al for _, al in acc]


def _backward(ring, grads, outs, lses, qs, ks, vs, band, layout, scale):
    import torch

    R, M = ring.world_size, qs[0].shape[1]
    grads = [g.contiguous() for g in grads]
    held = [(k.contiguous(), v.contiguous()) for k, v in zip(ks, vs)]
    dq = [torch.zeros(q.shape, dtype=_acc_dtype(q), device=q.device) for q in qs]
    dkv = [(torch.zeros(k.shape, dtype=_acc_dtype(k), device=k.device),
            torch.zeros(v.shape, dtype=_acc_dtype(v), device=v.device)) for k, v in zip(ks, vs)]
    for t in range(R):
        pending = ring.shift([list(kv) for kv in held]) if t + 1 < R else None
        for i, rank in enumerate(ring.local_ranks):
            g, o, l, q, (k, v), (dk, dv) = grads[i], outs[i], lses[i], qs[i], held[i], dkv[i]
            for qa, qb, ka, kb, kind in step_calls(layout, band, R, rank, (rank - t) % R, M):
                gq, gk, gv = KERNELS.backward(g[:, qa:qb], o[:, qa:qb], l[:, :, qa:qb], q[:, qa:qb], k[:, ka:kb],
                                              v[:, ka:kb], bias_of_kind(kind), scale)
                dq[i][:, qa:qb] += gq
                dk[:, ka:kb] += gk
                dv[:, ka:kb] += gv
        # The accumulators travel with their block: to the next rank, or home after the last step.
        dkv = [tuple(x) for x in ring.shift([list(x) for x in dkv]).wait()]
        if pending is not None:
            held = [tuple(x) for x in pending.wait()]
    return ([d.to(q.dtype) for d, q in zip(dq, qs)], [d.to(k.dtype) for (d, _), k in zip(dkv, ks)],
            [d.to(v.dtype) for (_, d), v in zip(dkv, vs)])


def _function():
    import torch

    class _RingAttention(torch.autograd.Function):
        @staticmethod
        def forward(ctx, ring, band, layout, scale, n, *tensors):
            qs, ks, vs = tensors[:n], tensors[n:2 * n], tensors[2 * n:]
            outs, lses = _forward(ring, qs, ks, vs, band, layout, scale)
            ctx.save_for_backward(*qs, *ks, *vs, *outs, *lses)
            ctx.call = (ring, band, layout, scale, n)
            return tuple(outs)

        @staticmethod
        def backward(ctx, *grads):
            ring, band, layout, scale, n = ctx.call
            saved = ctx.saved_tensors
            qs, ks, vs, outs, lses = (saved[j * n:(j + 1) * n] for j in range(5))
            grads = [g if g is not None else torch.zeros_like(o) for g, o in zip(grads, outs)]
            dq, dk, dv = _backward(ring, grads, outs, lses, qs, ks, vs, band, layout, scale)
            return (None, None, None, None, None, *dq, *dk, *dv)

    return _RingAttention


_FUNCTION = None


def _apply(ring, qs, ks, vs, attn_bias, layout, scale):
    global _FUNCTION
    band = _validate(ring, qs, ks, vs, layout, attn_bias)
    if _FUNCTION is None:
        _FUNCTION = _function()
    return list(_FUNCTION.apply(ring, band, layout, scale, len(qs), *qs, *ks, *vs))


def ring_attention(query, key, value, attn_bias=None, *, layout: str = "zigzag", scale: Optional[float] = None,
                   group=None, ring=None):
    """This rank's attention output over the whole sequence: ``query``/``key``/``value`` are its
    [B, M, H, K] slices in ``layout`` (``shard``), the mask global. Over ``ring`` (default
    ``DistributedRing(group)``); differentiable in query, key and value."""
    ring = ring if ring is not None else DistributedRing(group)
    return _apply(ring, [query], [key], [value], attn_bias, layout, scale)[0]


def ring_attention_local(queries: Sequence, keys: Sequence, values: Sequence, attn_bias=None, *,
                         layout: str = "zigzag", scale: Optional[float] = None, ring=None):
    """Every rank's output, the R ranks simulated in this process (``LocalRing(R)`` unless
    ``ring`` is given): lists of R slices in, R outputs out; differentiable."""
    ring = ring if ring is not None else LocalRing(len(queries))
    return _apply(ring, list(queries), list(keys), list(values), attn_bias, layout, scale)


def shard(x, world: int, layout: str = "zigzag", dim: int = 1):
    """The R slices of a global tensor (``dim`` of length N = R·M) in ``layout``."""
    import torch

    _check_layout(layout)
    n = x.shape[dim]
    if n % world or (layout == "zigzag" and (n // world) % 2):
        raise _invalid([f"shard: x.shape[{dim}]={n} must be a multiple of {world if layout != 'zigzag' else 2 * world} "
                        f"for {world} ranks in the {layout} layout"])
    m = n // world
    return [x.index_select(dim, torch.tensor(global_positions(layout, world, r, m), device=x.device))
            for r in range(world)]


def unshard(parts: Sequence, layout: str = "zigzag", dim: int = 1):
    """The global tensor of the R slices ``shard`` made."""
    import torch

    _check_layout(layout)
    world, m = len(parts), parts[0].shape[dim]
    pos = torch.tensor([p for r in range(world) for p in global_positions(layout, world, r, m)], device=parts[0].device)
    inverse = torch.empty_like(pos)
    inverse[pos] = torch.arange(pos.numel(), device=pos.device)
    return torch.cat(list(parts), dim=dim).index_select(dim, inverse)


__all__ = ["LAYOUTS", "global_positions", "Mask", "mask_of", "step_calls", "bias_of_kind", "LocalRing", "DistributedRing",
           "ring_attention", "ring_attention_local", "shard", "unshard"]
