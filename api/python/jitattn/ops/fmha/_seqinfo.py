"""Sequence layouts of the block-diagonal biases, as xFormers' ``_SeqLenInfo``,
``_PaddedSeqLenInfo`` and ``_GappySeqInfo``: plain host lists. The library checks them (negative
lengths, lengths past the padding, ...) when a bias's handle is created, so nothing is checked
twice."""
from typing import List, Sequence


def _ints(values) -> List[int]:
    if hasattr(values, "tolist"):  # a torch tensor
        values = values.tolist()
    return [int(v) for v in values]


def _torch_int32(values):
    import torch

    return torch.tensor(values, dtype=torch.int32)


class _SeqLenInfo:
    """Sequence b spans ``[seqstart_py[b], seqstart_py[b+1])`` of the concatenated M."""

    def __init__(self, seqstart_py: Sequence[int]):
        self.seqstart_py = _ints(seqstart_py)
        lens = self.seqlen_py
        self.max_seqlen = max(lens, default=0)
        self.min_seqlen = min(lens, default=0)

    @classmethod
    def from_seqlens(cls, seqlens: Sequence[int]) -> "_SeqLenInfo":
        starts = [0]
        for n in _ints(seqlens):
            starts.append(starts[-1] + n)
        return cls(starts)

    @property
    def seqlen_py(self) -> List[int]:
        return [e - s for s, e in zip(self.seqstart_py, self.seqstart_py[1:])]

    @property
    def seqstart(self):
        """The seqstarts as a torch int32 tensor (needs torch)."""
        return _torch_int32(self.seqstart_py)

    def intervals(self):
        return list(zip(self.seqstart_py, self.seqstart_py[1:]))

    def __repr__(self):
        return f"{type(self).__name__}(seqstart_py={self.seqstart_py})"


class _KeySeqInfo:
    """Keys of sequence b are rows ``[seqstart_py[b], seqstart_py[b] + seqlen_py[b])``."""

    def __init__(self, seqstart_py: Sequence[int], seqlen_py: Sequence[int]):
        self.seqstart_py = _ints(seqstart_py)
        self.seqlen_py = _ints(seqlen_py)
        self.max_seqlen = max(self.seqlen_py, default=0)
        self.min_seqlen = min(self.seqlen_py, default=0)

    @property
    def seqlen(self):
        """The lengths as a torch int32 tensor (needs torch)."""
        return _torch_int32(self.seqlen_py)

    def intervals(self):
        return [(s, s + n) for s, n in zip(self.seqstart_py, self.seqlen_py)]

    def __repr__(self):
        return f"{type(self).__name__}(seqstart_py={self.seqstart_py}, seqlen_py={self.seqlen_py})"


class _PaddedSeqLenInfo(_KeySeqInfo):
    """Keys of sequence b are rows ``[b * padding, b * padding + seqlen_py[b])``."""

    def __init__(self, seqlen_py: Sequence[int], padding: int):
        self.padding = int(padding)
        super().__init__([b * self.padding for b in range(len(seqlen_py) + 1)], seqlen_py)

    @classmethod
    def from_seqlens_padded(cls, seqlens: Sequence[int], padding: int) -> "_PaddedSeqLenInfo":
        return cls(seqlens, padding)


class _GappySeqInfo(_KeySeqInfo):
    """Gappy keys: ``seqstart_py`` has one entry more than ``seqlen_py`` (the last: the key count)."""

    @classmethod
    def from_seqlens_gappy(cls, seqstarts: Sequence[int], seqlens: Sequence[int], paged: bool = False) -> "_GappySeqInfo":
        return cls(seqstarts, seqlens)
