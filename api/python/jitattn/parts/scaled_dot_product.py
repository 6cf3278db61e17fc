"""``scaled_dot_product``: softmax(q·kᵀ/√hd + bias)·v through jitattn's kernel, with a causal
flag, any ``attn_bias`` (a jitattn bias object, or an additive/bool ``att_mask`` tensor) and
dropout on the attention weights while training."""
import torch

from ..ops.fmha import attn_bias as ab
from ..ops.fmha._functions import memory_efficient_attention
from . import base
from .configs import ScaledDotProductConfig
from .registry import register_attention


@register_attention("scaled_dot_product", ScaledDotProductConfig)
class ScaledDotProduct(base.Attention):
    def __init__(self, dropout: float = 0.0, causal: bool = False, *args, **kwargs):
        super().__init__(dropout, *args, **kwargs)
        self.causal = bool(causal)

    def _bias(self, att_mask, attn_bias, q, k):
        if attn_bias is not None and att_mask is not None:
            raise ValueError("scaled_dot_product: give att_mask (a tensor) or attn_bias (a jitattn bias), not both")
        if attn_bias is not None:
            if self.causal:
                raise ValueError("scaled_dot_product(causal=True) with an attn_bias object: give the causal form of the bias")
            return attn_bias
        tensor = base.additive(att_mask, q.dtype)
        if tensor is not None:
            tensor = base.full_bias(tensor, q, k)
            return ab.LowerTriangularMask().add_bias(tensor) if self.causal else tensor
        return ab.LowerTriangularMask() if self.causal else None

    def forward(self, q, k, v, att_mask=None, *args, attn_bias=None, **kwargs):
        qb, kb, vb = (base.to_bmhk(x, None) for x in (q, k, v))
        out = memory_efficient_attention(qb, kb, vb, self._bias(att_mask, attn_bias, qb, kb), p=self._p())
        return base.from_bmhk(out, q)

    def reference(self, q, k, v, att_mask=None):
        bias = base.reference_bias(att_mask, q, k)
        if self.causal:
            causal = torch.full((q.shape[-2], k.shape[-2]), float("-inf"), dtype=torch.float64, device=q.device).triu(1)
            bias = causal if bias is None else bias + causal
        return base.softmax_attention(q, k, v, bias)
