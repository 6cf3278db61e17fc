"""``alibi``: attention plus ALiBi's -slope_h·|j − i| (slopes 2^(-8(h+1)/H), the paper's),
added inside jitattn's kernel (``AlibiBias`` / ``LowerTriangularMask.add_alibi``): no bias tensor
is built. Needs the head count: from a [B, H, S, hd] input, or ``num_heads`` for [B*H, S, hd]."""
import torch

from ..ops.fmha import attn_bias as ab
from ..ops.fmha._functions import memory_efficient_attention
from . import base
from .configs import AlibiConfig
from .registry import register_attention


def alibi_slopes(num_heads: int):
    return [2.0 ** (-8.0 * (h + 1) / num_heads) for h in range(num_heads)]


@register_attention("alibi", AlibiConfig)
class AlibiAttention(base.Attention):
    supports_attention_mask = False

    def __init__(self, dropout: float = 0.0, causal: bool = False, *args, **kwargs):
        super().__init__(dropout, *args, **kwargs)
        self.causal = bool(causal)

    def forward(self, q, k, v, att_mask=None, *args, **kwargs):
        if att_mask is not None:
            raise ValueError("alibi: att_mask is not supported")
        if q.dim() == 3 and not self.num_heads:
            raise ValueError("alibi: a [B*H, S, hd] input needs num_heads in the config (or give [B, H, S, hd])")
        qb, kb, vb = (base.to_bmhk(x, self.num_heads) for x in (q, k, v))
        slopes = alibi_slopes(qb.shape[2])
        bias = ab.LowerTriangularMask().add_alibi(slopes) if self.causal else ab.AlibiBias(slopes)
        return base.from_bmhk(memory_efficient_attention(qb, kb, vb, bias, p=self._p()), q)

    def reference(self, q, k, v, att_mask=None):
        H = base.heads_of(q, self.num_heads)
        Mq, Mkv = q.shape[-2], k.shape[-2]
        i = torch.arange(Mq, device=q.device, dtype=torch.float64)[:, None]
        j = torch.arange(Mkv, device=q.device, dtype=torch.float64)[None, :]
        slopes = torch.tensor(alibi_slopes(H), dtype=torch.float64, device=q.device)[:, None, None]
        bias = -slopes * (j - i).abs()                         # [H, Mq, Mkv]
        if self.causal:
            bias = bias + torch.full((Mq, Mkv), float("-inf"), dtype=torch.float64, device=q.device).triu(1)
        qh, kh, vh = (x.reshape(-1, H, x.shape[-2], x.shape[-1]) for x in (q, k, v))
        return base.softmax_attention(qh, kh, vh, bias).reshape(q.shape[:-1] + (v.shape[-1],))
