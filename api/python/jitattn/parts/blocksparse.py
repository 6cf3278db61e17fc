"""``blocksparse``: a block layout ([H, S/bs, S/bs], or [S/bs, S/bs] for every head; nonzero =
the query block sees the key block) and a block size, as xFormers' BlockSparseAttention.

Block sizes that are powers of two in [16, 256] run as ``BlockSparseMask`` (the kernels never load
a hidden block's tiles); any other block size is materialized as an additive [H, S, S] mask (0 or
−inf) passed as a dense bias: correct, but every key tile is loaded and the mask read."""
import math

import torch

from ..ops.fmha import attn_bias as ab
from ..ops.fmha._functions import memory_efficient_attention
from . import base
from .configs import BlockSparseConfig
from .registry import register_attention


@register_attention("blocksparse", BlockSparseConfig)
class BlockSparseAttention(base.Attention):
    supports_attention_mask = False

    def __init__(self, layout=None, block_size: int = 16, dropout: float = 0.0, causal: bool = False,
                 num_heads=None, *args, **kwargs):
        super().__init__(dropout, num_heads, *args, **kwargs)
        if layout is None:
            raise ValueError("blocksparse: a layout is required ([H, S/block_size, S/block_size] or [S/bs, S/bs])")
        layout = torch.as_tensor(layout)
        if layout.dim() == 2:
            layout = layout.unsqueeze(0)   # one layout for every head
        if layout.dim() != 3 or layout.shape[1] != layout.shape[2]:
            raise ValueError(f"blocksparse: layout of shape {tuple(layout.shape)} is not [H, n, n] or [n, n]")
        if block_size < 1:
            raise ValueError(f"blocksparse: block_size={block_size} must be >= 1")
        self.block_size, self.causal = int(block_size), bool(causal)
        self.register_buffer("layout", layout.ne(0), persistent=False)

    @classmethod
    def example_config(cls, seq_len: int, num_heads: int) -> dict:
        blocks = max(1, seq_len // 16)
        g = torch.Generator().manual_seed(0)
        layout = torch.rand(num_heads, blocks, blocks, generator=g) < 0.5
        layout |= torch.eye(blocks, dtype=torch.bool)   # every query block sees a key block
        return {"name": cls.part_name, "dropout": 0.0, "num_heads": num_heads, "layout": layout, "block_size": 16}

    def mask(self, seq_len, dtype, device):
        """The additive [H, S, S] mask the layout stands for (−inf where hidden; causal too)."""
        bs, n = self.block_size, self.layout.shape[-1]
        if seq_len != n * bs:
            raise ValueError(f"blocksparse: sequence length {seq_len} != layout blocks {n} x block_size {bs}")
        visible = self.layout.to(device).repeat_interleave(bs, dim=1).repeat_interleave(bs, dim=2)
        if self.causal:
            visible = visible & torch.ones(seq_len, seq_len, dtype=torch.bool, device=device).tril()
        return torch.zeros(visible.shape, dtype=dtype, device=device).masked_fill(~visible, -math.inf)

    def _heads(self, q):
        layout_heads = self.layout.shape[0]
        return q.shape[1] if q.dim() == 4 else (self.num_heads or layout_heads)

    def forward(self, q, k, v, att_mask=None, *args, **kwargs):
        if att_mask is not None:
            raise ValueError("blocksparse: att_mask is not supported (the layout is the mask)")
        H = self._heads(q)
        qb, kb, vb = (base.to_bmhk(x, H) for x in (q, k, v))
        bs, n = self.block_size, self.layout.shape[-1]
        if qb.shape[1] != n * bs:
            raise ValueError(f"blocksparse: sequence length {qb.shape[1]} != layout blocks {n} x block_size {bs}")
        if self.layout.shape[0] not in (1, H):
            raise ValueError(f"blocksparse: layout has {self.layout.shape[0]} heads, the input {H}")
        if 16 <= bs <= 256 and bs & (bs - 1) == 0:
            bias = self._block_sparse(qb.device)
        else:
            mask = self.mask(qb.shape[1], qb.dtype, qb.device)
            bias = ab.TensorBias(base.full_bias(mask.unsqueeze(0), qb, kb))
        return base.from_bmhk(memory_efficient_attention(qb, kb, vb, bias, p=self._p()), q)

    def _block_sparse(self, device):
        """The layout as a BlockSparseMask on ``device``, made once per device."""
        made = self.__dict__.setdefault("_bias_by_device", {})
        if device not in made:
            made[device] = ab.BlockSparseMask(self.layout.to(device).contiguous(), self.block_size, causal=self.causal)
        return made[device]

    def reference(self, q, k, v, att_mask=None):
        H = self._heads(q)
        mask = self.mask(q.shape[-2], torch.float64, q.device).expand(H, -1, -1)
        qh, kh, vh = (x.reshape(-1, H, x.shape[-2], x.shape[-1]) for x in (q, k, v))
        return base.softmax_attention(qh, kh, vh, mask).reshape(q.shape[:-1] + (v.shape[-1],))
