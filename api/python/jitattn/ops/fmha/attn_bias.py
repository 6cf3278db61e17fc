"""The attention biases of ``xformers.ops.fmha.attn_bias``: the same class names, constructors
and argument names, each a thin description of a C++ bias (api/include/jitattn/bias.h), plus
jitattn's ALiBi biases. Every check is the library's: a bad argument raises ``jitattn.Error``
with its reasons when the constructor (``from_seqlens``, ``make_causal``, ...) creates the bias's
C handle. The handle lives as long as the object, so its device arrays (seqstarts, lengths,
block tables, slopes) are uploaded once, by the first call that uses it.

Differences from xFormers: ``device=`` arguments are accepted and ignored (the library uploads
to the device of the call); ``make_paged``'s ``paged_type`` may be omitted (each mask has one
paged form); ``PagedBlockDiagonalGappyKeysMask.from_seqlens`` takes the sequences' starts
within their block-table rows, as xFormers' paged k_seqinfo holds them.
"""
import ctypes
from typing import Optional, Sequence

from ... import _capi, _tensor
from ._bias_base import AttentionBias, live_handles  # noqa: F401  (live_handles: for tests)
from ._seqinfo import _GappySeqInfo, _PaddedSeqLenInfo, _SeqLenInfo


def _invalid(reason):
    return _capi.Error(_capi.ERROR_INVALID_ARGUMENT, [reason], "JITATTN_ERROR_INVALID_ARGUMENT")


# ---- dense masks -------------------------------------------------------------------------------
class LowerTriangularMask(AttentionBias):
    """Query i sees key j iff j <= i (top-left causal)."""

    _KIND = 2

    def add_bias(self, bias) -> "LowerTriangularMaskWithTensorBias":
        return LowerTriangularMaskWithTensorBias(bias)._checked()

    def add_alibi(self, slopes) -> "LowerTriangularMaskWithAlibi":
        """jitattn: plus ALiBi (``slopes``: one float per query head, or an int H for 2^(-8(h+1)/H))."""
        return LowerTriangularMaskWithAlibi(slopes)._checked()


class LowerTriangularMaskWithTensorBias(LowerTriangularMask):
    """A dense bias (broadcastable to [B, H, Mq, Mkv]) added under the causal mask."""

    _KIND = 3

    def __init__(self, bias):
        self._bias = bias


class LowerTriangularFromBottomRightMask(AttentionBias):
    """Query i sees key j iff j <= i + Mkv - Mq (the last query sees every key)."""

    _KIND = 4

    def make_local_attention(self, window_size: int) -> "LowerTriangularFromBottomRightLocalAttentionMask":
        return LowerTriangularFromBottomRightLocalAttentionMask(window_size)._checked()


class LowerTriangularFromBottomRightLocalAttentionMask(LowerTriangularFromBottomRightMask):
    """... and j > i + Mkv - Mq - window_size."""

    _KIND = 5

    def __init__(self, _window_size: int):
        self._window_size = _window_size


class LocalAttentionFromBottomRightMask(AttentionBias):
    """-window_left <= j - i - (Mkv - Mq) <= window_right."""

    _KIND = 6

    def __init__(self, window_left: int, window_right: int):
        self.window_left, self.window_right = window_left, window_right
        self._checked()


class TensorBias(AttentionBias):
    """jitattn: a dense bias tensor as a bias object (xFormers passes the tensor itself)."""

    _KIND = 1

    def __init__(self, bias):
        self._bias = bias


# ---- block-diagonal masks (B = 1, sequences concatenated along M) ------------------------------
class BlockDiagonalMask(AttentionBias):
    """Query block b sees all of key block b."""

    _KIND = 7

    def __init__(self, q_seqinfo: _SeqLenInfo, k_seqinfo: _SeqLenInfo, _batch_sizes: Optional[Sequence[int]] = None):
        self.q_seqinfo, self.k_seqinfo, self._batch_sizes = q_seqinfo, k_seqinfo, _batch_sizes

    @classmethod
    def from_seqlens(cls, q_seqlen: Sequence[int], kv_seqlen: Optional[Sequence[int]] = None, *, device=None):
        q = _SeqLenInfo.from_seqlens(q_seqlen)
        k = q if kv_seqlen is None else _SeqLenInfo.from_seqlens(kv_seqlen)
        return cls(q, k)._checked()

    @classmethod
    def from_tensor_list(cls, tensors):
        """(mask, the tensors concatenated to [1, sum(B_i * M_i), ...]) for tensors [B_i, M_i, ...]."""
        batch_sizes = [int(x.shape[0]) for x in tensors]
        seqlens = [int(x.shape[1]) for x in tensors for _ in range(int(x.shape[0]))]
        q = _SeqLenInfo.from_seqlens(seqlens)
        mask = cls(q, q, _batch_sizes=batch_sizes)._checked()
        return mask, _concat(tensors)

    @classmethod
    def from_tensor_lists_qkv(cls, tensors_q, tensors_k, tensors_v=None):
        batch_sizes = [int(x.shape[0]) for x in tensors_q]
        q = _SeqLenInfo.from_seqlens([int(x.shape[1]) for x in tensors_q for _ in range(int(x.shape[0]))])
        k = _SeqLenInfo.from_seqlens([int(x.shape[1]) for x in tensors_k for _ in range(int(x.shape[0]))])
        mask = cls(q, k, _batch_sizes=batch_sizes)._checked()
        return (mask, _concat(tensors_q), _concat(tensors_k), None if tensors_v is None else _concat(tensors_v))

    def split_queries(self, tensor):
        return _split(tensor, self.q_seqinfo, self._batch_sizes)

    def split_kv(self, tensor):
        return _split(tensor, self.k_seqinfo, self._batch_sizes)

    def split(self, tensor, batch_sizes=None):
        """Views of each block of a [1, M, ...] tensor (M the query length), regrouped as
        ``from_tensor_list`` made them (or by ``batch_sizes``)."""
        return _split(tensor, self.q_seqinfo, batch_sizes or self._batch_sizes)

    def _derived(self, cls, **fields):
        b = cls(self.q_seqinfo, self.k_seqinfo, _batch_sizes=self._batch_sizes)
        for k, v in fields.items():
            setattr(b, k, v)
        return b._checked()

    def make_causal(self) -> "BlockDiagonalCausalMask":
        return self._derived(BlockDiagonalCausalMask)

    def make_causal_from_bottomright(self) -> "BlockDiagonalCausalFromBottomRightMask":
        return self._derived(BlockDiagonalCausalFromBottomRightMask)

    def make_local_attention(self, window_size: int) -> "BlockDiagonalCausalLocalAttentionMask":
        return self._derived(BlockDiagonalCausalLocalAttentionMask, _window_size=window_size)

    def make_local_attention_from_bottomright(self, window_size: int):
        return self._derived(BlockDiagonalCausalLocalAttentionFromBottomRightMask, _window_size=window_size)

    def add_alibi(self, slopes) -> "BlockDiagonalMaskWithAlibi":
        """jitattn: plus ALiBi within each block (see LowerTriangularMask.add_alibi)."""
        return self._derived(BlockDiagonalMaskWithAlibi, **_alibi_fields(slopes))


class BlockDiagonalCausalMask(BlockDiagonalMask):
    """Within block b: top-left causal."""

    _KIND = 8

    def add_alibi(self, slopes) -> "BlockDiagonalCausalMaskWithAlibi":
        return self._derived(BlockDiagonalCausalMaskWithAlibi, **_alibi_fields(slopes))


class BlockDiagonalCausalFromBottomRightMask(BlockDiagonalMask):
    """Within block b: bottom-right causal (kv_seqlen[b] >= q_seqlen[b])."""

    _KIND = 9


class BlockDiagonalCausalLocalAttentionMask(BlockDiagonalCausalMask):
    """Within block b: top-left causal, each query seeing at most _window_size keys."""

    _KIND = 10
    _window_size = 0


class BlockDiagonalCausalLocalAttentionFromBottomRightMask(BlockDiagonalCausalFromBottomRightMask):
    """Within block b: bottom-right causal with a window of _window_size keys."""

    _KIND = 11
    _window_size = 0


# ---- padded keys -------------------------------------------------------------------------------
class BlockDiagonalPaddedKeysMask(AttentionBias):
    """Block b's keys are rows [b * kv_padding, b * kv_padding + kv_seqlen[b])."""

    _KIND = 12

    def __init__(self, q_seqinfo: _SeqLenInfo, k_seqinfo: _PaddedSeqLenInfo):
        self.q_seqinfo, self.k_seqinfo = q_seqinfo, k_seqinfo

    @classmethod
    def from_seqlens(cls, q_seqlen, kv_padding: int, kv_seqlen, causal_diagonal=None, *, device=None):
        if causal_diagonal is not None:
            raise _invalid("causal_diagonal is not supported (xFormers deprecated it): pass None")
        return cls(_SeqLenInfo.from_seqlens(q_seqlen), _PaddedSeqLenInfo.from_seqlens_padded(kv_seqlen, kv_padding))._checked()

    def make_paged(self, block_tables, page_size: int, paged_type=None):
        """The paged form: keys read through ``block_tables`` ([B, max_pages] int32, a torch
        tensor or nested lists) from a pool of pages of ``page_size`` rows."""
        paged = _paged_type(self, paged_type)
        b = paged(self.q_seqinfo, self._paged_k_seqinfo(block_tables, page_size), block_tables, page_size)
        if hasattr(self, "_window_size"):
            b._window_size = self._window_size
        return b._checked()

    def _paged_k_seqinfo(self, block_tables, page_size):
        return _PaddedSeqLenInfo(self.k_seqinfo.seqlen_py, _row_len(block_tables, page_size))


class BlockDiagonalCausalWithOffsetPaddedKeysMask(BlockDiagonalPaddedKeysMask):
    """... bottom-right causal within each block."""

    _KIND = 13


class BlockDiagonalLocalAttentionPaddedKeysMask(BlockDiagonalPaddedKeysMask):
    """... -window_left <= j - i - (kv_len - q_len) <= window_right within each block."""

    _KIND = 14
    window_left = 0
    window_right = 0

    @classmethod
    def from_seqlens_local(cls, q_seqlen, kv_padding: int, kv_seqlen, window_left: int, window_right: int):
        b = cls(_SeqLenInfo.from_seqlens(q_seqlen), _PaddedSeqLenInfo.from_seqlens_padded(kv_seqlen, kv_padding))
        b.window_left, b.window_right = window_left, window_right
        return b._checked()


class BlockDiagonalCausalLocalAttentionPaddedKeysMask(BlockDiagonalPaddedKeysMask):
    """... bottom-right causal with a window of _window_size keys within each block."""

    _KIND = 15
    _window_size = 0

    @classmethod
    def from_seqlens_local(cls, q_seqlen, kv_padding: int, kv_seqlen, window_size: int):
        b = cls(_SeqLenInfo.from_seqlens(q_seqlen), _PaddedSeqLenInfo.from_seqlens_padded(kv_seqlen, kv_padding))
        b._window_size = window_size
        return b._checked()


# ---- gappy keys --------------------------------------------------------------------------------
class BlockDiagonalGappyKeysMask(AttentionBias):
    """Block b's keys are rows [kv_seqstarts[b], kv_seqstarts[b] + kv_seqlen[b])."""

    _KIND = 16

    def __init__(self, q_seqinfo: _SeqLenInfo, k_seqinfo: _GappySeqInfo):
        self.q_seqinfo, self.k_seqinfo = q_seqinfo, k_seqinfo

    @classmethod
    def from_seqlens(cls, q_seqlen, kv_seqstarts, kv_seqlen, *, device=None):
        return cls(_SeqLenInfo.from_seqlens(q_seqlen), _GappySeqInfo.from_seqlens_gappy(kv_seqstarts, kv_seqlen))._checked()

    def make_paged(self, block_tables, page_size: int, notional_padding: Optional[int] = None, paged_type=None):
        """The paged form, reading the keys of block b as if its row started at
        b * notional_padding (default: one block-table row, max_pages * page_size)."""
        paged = _paged_type(self, paged_type)
        pad = _row_len(block_tables, page_size) if notional_padding is None else int(notional_padding)
        starts = [s - b * pad for b, s in enumerate(self.k_seqinfo.seqstart_py[:-1])]
        k = _GappySeqInfo(starts + [_row_len(block_tables, page_size)], self.k_seqinfo.seqlen_py)
        return paged(self.q_seqinfo, k, block_tables, page_size)._checked()


class BlockDiagonalCausalWithOffsetGappyKeysMask(BlockDiagonalGappyKeysMask):
    """... bottom-right causal within each block."""

    _KIND = 17


# ---- paged keys --------------------------------------------------------------------------------
class _PagedKeys(AttentionBias):
    """Keys read through block_tables: sequence b's logical key x lives in row
    block_tables[b][x // page_size] * page_size + x % page_size of the pool."""

    def __init__(self, q_seqinfo, k_seqinfo, block_tables, page_size: int):
        self.q_seqinfo, self.k_seqinfo, self.block_tables, self.page_size = q_seqinfo, k_seqinfo, block_tables, page_size


class PagedBlockDiagonalPaddedKeysMask(_PagedKeys):
    """Padded keys, paged."""

    _KIND = 18

    @classmethod
    def from_seqlens(cls, q_seqlen, kv_seqlen, block_tables, page_size: int, *, device=None):
        k = _PaddedSeqLenInfo(kv_seqlen, _row_len(block_tables, page_size))
        return cls(_SeqLenInfo.from_seqlens(q_seqlen), k, block_tables, page_size)._checked()


class PagedBlockDiagonalCausalWithOffsetPaddedKeysMask(PagedBlockDiagonalPaddedKeysMask):
    _KIND = 19


class PagedBlockDiagonalCausalLocalPaddedKeysMask(PagedBlockDiagonalPaddedKeysMask):
    _KIND = 20
    _window_size = 0


class PagedBlockDiagonalGappyKeysMask(_PagedKeys):
    """Gappy keys, paged; k_seqinfo's starts are within each row."""

    _KIND = 21

    @classmethod
    def from_seqlens(cls, q_seqlen, kv_seqstarts, kv_seqlen, block_tables, page_size: int, *, device=None):
        k = _GappySeqInfo(kv_seqstarts, kv_seqlen)
        return cls(_SeqLenInfo.from_seqlens(q_seqlen), k, block_tables, page_size)._checked()

    def _c_kv_seqstarts(self):
        # The C API takes the unpaged starts, each sequence in a row of max_pages * page_size
        # keys (the last: the key count), and subtracts b * row.
        row = _row_len(self.block_tables, self.page_size)
        starts = self.k_seqinfo.seqstart_py[:-1]
        return [s + b * row for b, s in enumerate(starts)] + [len(starts) * row]


class PagedBlockDiagonalCausalWithOffsetGappyKeysMask(PagedBlockDiagonalGappyKeysMask):
    _KIND = 22


_PAGED = {
    BlockDiagonalPaddedKeysMask: PagedBlockDiagonalPaddedKeysMask,
    BlockDiagonalCausalWithOffsetPaddedKeysMask: PagedBlockDiagonalCausalWithOffsetPaddedKeysMask,
    BlockDiagonalCausalLocalAttentionPaddedKeysMask: PagedBlockDiagonalCausalLocalPaddedKeysMask,
    BlockDiagonalGappyKeysMask: PagedBlockDiagonalGappyKeysMask,
    BlockDiagonalCausalWithOffsetGappyKeysMask: PagedBlockDiagonalCausalWithOffsetGappyKeysMask,
}


# ---- ALiBi (jitattn; not in xFormers) ----------------------------------------------------------
def _alibi_fields(slopes):
    if isinstance(slopes, int):
        return {"_alibi_heads": slopes, "_alibi_slopes": None}
    values = [float(s) for s in (slopes.tolist() if hasattr(slopes, "tolist") else slopes)]
    return {"_alibi_heads": len(values), "_alibi_slopes": values}


class AlibiBias(AttentionBias):
    """Adds -slopes[h] * |j - i|; ``slopes``: one float per query head, or an int H for the
    paper's 2^(-8(h+1)/H)."""

    _KIND = 23

    def __init__(self, slopes):
        for k, v in _alibi_fields(slopes).items():
            setattr(self, k, v)


class LowerTriangularMaskWithAlibi(LowerTriangularMask):
    _KIND = 24
    __init__ = AlibiBias.__init__


class BlockDiagonalMaskWithAlibi(BlockDiagonalMask):
    _KIND = 25


class BlockDiagonalCausalMaskWithAlibi(BlockDiagonalCausalMask):
    _KIND = 26


# ---- block-sparse ------------------------------------------------------------------------------
class BlockSparseMask(AttentionBias):
    """jitattn: query i of head h sees key j iff ``layout[h, i // block_size, j // block_size]``
    (and j <= i with ``causal``): FairSeq's ``xformers_blocksparse_layout`` and
    ``xformers_blocksparse_blocksize``. ``layout``: a bool or uint8 tensor [H or 1,
    ceil(Mq / block_size), ceil(Mkv / block_size)] on the call's device (a CPU tensor for
    ``materialize``), last stride 1; ``block_size`` a power of two in [16, 256]. Tiles of unset
    blocks are never loaded."""

    _KIND = 27

    def __init__(self, layout, block_size: int, causal: bool = False):
        if getattr(layout, "dtype", None) is not None and str(layout.dtype) == "torch.bool":
            layout = layout.view(__import__("torch").uint8)  # the same bytes
        self.layout, self.block_size, self.causal = layout, int(block_size), bool(causal)
        self._checked()

    def _c_fields(self, desc, keep):
        super()._c_fields(desc, keep)
        keep.append(self.layout)
        keep.append(_tensor.to_c(self.layout, "layout"))
        desc.tensor = ctypes.pointer(keep[-1])
        desc.block_size = _capi.int32(self.block_size, "block_size")
        desc.block_sparse_causal = int(self.causal)

    def _materialize_bh(self, batch, heads):
        return 1, heads

    def _host_copy(self):
        t = self.layout
        if not _tensor.is_torch_tensor(t) or t.device.type == "cpu":
            return self
        return BlockSparseMask(t.cpu(), self.block_size, self.causal)


# ---- helpers -----------------------------------------------------------------------------------
def _paged_type(bias, paged_type):
    """The paged class of ``bias``'s make_paged; ``paged_type`` (xFormers' argument) must be it."""
    paged = _PAGED[type(bias)]
    if paged_type is not None and paged_type is not paged:
        raise _invalid(f"paged_type={paged_type.__name__}: {type(bias).__name__}.make_paged gives {paged.__name__}")
    return paged


def _row_len(block_tables, page_size):
    rows = block_tables.shape[1] if hasattr(block_tables, "shape") else (len(block_tables[0]) if len(block_tables) else 0)
    return int(rows) * int(page_size)


def _concat(tensors):
    import torch  # from_tensor_list concatenates torch tensors

    return torch.cat([x.reshape([1, -1, *x.shape[2:]]) for x in tensors], dim=1)


def _split(tensor, seqinfo, batch_sizes):
    if tensor.shape[0] != 1:
        raise _invalid(f"tensor.shape[0]={tensor.shape[0]} must be 1 (sequences concatenated along dim 1)")
    if tensor.shape[1] != seqinfo.seqstart_py[-1]:
        raise _invalid(f"tensor.shape[1]={tensor.shape[1]} is not the blocks' total length {seqinfo.seqstart_py[-1]}")
    parts = [tensor[:, s:e] for s, e in seqinfo.intervals()]
    if not batch_sizes:
        return parts
    grouped, i = [], 0
    for n in batch_sizes:
        group = parts[i: i + n]
        i += n
        import torch

        grouped.append(torch.cat(group, dim=0) if group else tensor[:, :0])
    return grouped


# Every bias class, by the library's kind number (jitattn_bias_kind_name gives the same names;
# tests/python/test_attn_bias.py checks that all 27 are here).
BIAS_CLASSES = {c._KIND: c for c in list(globals().values())
                if isinstance(c, type) and issubclass(c, AttentionBias) and c._KIND}

VARLEN_BIASES = tuple(c for k, c in BIAS_CLASSES.items() if 7 <= k <= 22 or k in (25, 26))
