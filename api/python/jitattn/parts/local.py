"""``local``: each query sees the keys within ``window_size // 2`` positions of it (to its left
only when ``causal``), as xFormers' LocalAttention; jitattn's local-attention mask
(``LocalAttentionFromBottomRightMask``), whose hidden key tiles the kernel never loads."""
import torch

from ..ops.fmha import attn_bias as ab
from ..ops.fmha._functions import memory_efficient_attention
from . import base
from .configs import LocalConfig
from .registry import register_attention


@register_attention("local", LocalConfig)
class LocalAttention(base.Attention):
    supports_attention_mask = False

    def __init__(self, dropout: float = 0.0, causal: bool = False, window_size: int = 5, *args, **kwargs):
        super().__init__(dropout, *args, **kwargs)
        if window_size < 1:
            raise ValueError(f"local: window_size={window_size} must be >= 1")
        self.causal, self.window_size = bool(causal), int(window_size)
        self.window_left = self.window_size // 2
        self.window_right = 0 if self.causal else self.window_size // 2

    def forward(self, q, k, v, att_mask=None, *args, **kwargs):
        if att_mask is not None:
            raise ValueError("local: att_mask is not supported (the window is the mask)")
        qb, kb, vb = (base.to_bmhk(x, None) for x in (q, k, v))
        bias = ab.LocalAttentionFromBottomRightMask(self.window_left, self.window_right)
        return base.from_bmhk(memory_efficient_attention(qb, kb, vb, bias, p=self._p()), q)

    def reference(self, q, k, v, att_mask=None):
        Mq, Mkv = q.shape[-2], k.shape[-2]
        i = torch.arange(Mq, device=q.device)[:, None] + (Mkv - Mq)
        j = torch.arange(Mkv, device=q.device)[None, :]
        visible = (j >= i - self.window_left) & (j <= i + self.window_right)
        return base.softmax_attention(q, k, v, base.additive(visible, torch.float64))
