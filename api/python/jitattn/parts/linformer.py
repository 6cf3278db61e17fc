"""``linformer``: keys and values projected along the sequence by learned [k, seq_len] maps (E
and F, k = seq_len // 4 by default) to k keys, then jitattn's kernel over the k projected keys,
as xFormers' LinformerAttention. The input length must be ``seq_len``."""
import torch
from torch import nn

from ..ops.fmha._functions import memory_efficient_attention
from . import base
from .configs import LinformerConfig
from .registry import register_attention


@register_attention("linformer", LinformerConfig)
class LinformerAttention(base.Attention):
    supports_attention_mask = False

    def __init__(self, dropout: float = 0.0, seq_len: int = None, k=None, *args, **kwargs):
        super().__init__(dropout, *args, **kwargs)
        if not seq_len or seq_len < 1:
            raise ValueError(f"linformer: seq_len={seq_len} must be a positive int")
        self.seq_len = int(seq_len)
        self.k = int(k) if k else max(1, self.seq_len // 4)
        self.E = nn.Linear(self.seq_len, self.k, bias=False)
        self.F = nn.Linear(self.seq_len, self.k, bias=False)

    def _project(self, k, v):
        if k.shape[-2] != self.seq_len:
            raise ValueError(f"linformer: key length {k.shape[-2]} != seq_len {self.seq_len}")
        # [.., hd, seq_len] -> [.., hd, k], back to [.., k, hd] made contiguous (the kernel wants a last stride 1)
        project = lambda x, proj: proj(x.transpose(-2, -1)).transpose(-2, -1).contiguous()  # noqa: E731
        return project(k, self.E), project(v, self.F)

    def forward(self, q, k, v, att_mask=None, *args, **kwargs):
        if att_mask is not None:
            raise ValueError("linformer: att_mask is not supported (keys are mixed along the sequence)")
        kp, vp = self._project(k, v)
        qb, kb, vb = (base.to_bmhk(x, None) for x in (q, kp, vp))
        return base.from_bmhk(memory_efficient_attention(qb, kb, vb, p=self._p()), q)

    def reference(self, q, k, v, att_mask=None):
        E, F = self.E.weight.double(), self.F.weight.double()
        kp = (k.double().transpose(-2, -1) @ E.t()).transpose(-2, -1)
        vp = (v.double().transpose(-2, -1) @ F.t()).transpose(-2, -1)
        return base.softmax_attention(q, kp, vp)
