"""``variant``: a user ``jitattn.Variant`` (``mask_mod`` / ``score_mod`` / ``score_grad`` CUDA C++
snippets with ``captures``) as a registered part, over the built-in causal mask when ``causal``.

The snippets are compiled into jitattn's kernel, so there is no torch code to compare with; the
config's ``reference`` is a Python callable that does the same in torch for the tests:

    reference(score, b, h, q_idx, kv_idx, captures) -> score

over float64 tensors that broadcast to ``[B, H, Mq, Mkv]`` (``score`` the full tensor, the indices
int64 of shapes ``[B,1,1,1]``, ``[1,H,1,1]``, ``[1,1,Mq,1]``, ``[1,1,1,Mkv]``), ``captures`` the
config's dict (tensors on the reference's device); it returns the modified score, ``-inf`` where
``mask_mod`` hides. As in the kernel, the built-in (causal) mask applies first: the reference
never sees the positions it hides. ``b`` and ``h`` follow the layout as the alibi part does:
``[B, H, S, hd]`` inputs, or ``[B*H, S, hd]`` with ``num_heads`` (else ``b`` runs over B*H, h = 0).

Without a ``reference`` the part still runs; its ``reference`` method raises.
"""
import math

import torch

from ..ops.fmha import attn_bias as ab
from ..ops.fmha._functions import memory_efficient_attention
from ..variant import Variant
from . import base
from .configs import VariantConfig
from .registry import register_attention


def _alibi_like_reference(score, b, h, q_idx, kv_idx, captures):
    slopes = torch.exp2(-8.0 * (h + 1).double() / captures["nh"])
    return score - slopes * (q_idx - kv_idx).abs().double()


# The registry-wide tests' example of the built-in part: an ALiBi-like per-head linear bias as a
# score_mod (additive: its gradient in score is 1), with the head count as an int capture.
ALIBI_LIKE = dict(
    score_mod="return score - exp2f(-8.f * (float)(h + 1) / (float)nh) * fabsf((float)(q_idx - kv_idx));",
    additive=True,
)


def score_indices(B, H, Mq, Mkv, device):
    """The broadcastable int64 index tensors (b, h, q_idx, kv_idx) a reference takes."""
    ar = lambda n: torch.arange(n, device=device, dtype=torch.int64)  # noqa: E731
    return ar(B).view(B, 1, 1, 1), ar(H).view(1, H, 1, 1), ar(Mq).view(1, 1, Mq, 1), ar(Mkv).view(1, 1, 1, Mkv)


def apply_reference(fn, captures, score, hidden=None):
    """``fn`` over a [B, H, Mq, Mkv] float64 score, positions ``hidden`` by the built-in mask
    (bool, broadcastable) kept at -inf and never shown to ``fn`` as -inf (it sees 0 there)."""
    B, H, Mq, Mkv = score.shape
    if hidden is not None:
        score = score.masked_fill(hidden, 0.0)
    out = fn(score, *score_indices(B, H, Mq, Mkv, score.device), _on(captures, score.device))
    out = out.expand(B, H, Mq, Mkv).double()
    return out if hidden is None else out.masked_fill(hidden, -math.inf)


def _on(captures, device):
    return {n: (v.to(device) if isinstance(v, torch.Tensor) and v.device != device else v)
            for n, v in (captures or {}).items()}


@register_attention("variant", VariantConfig)
class VariantAttention(base.Attention):
    supports_attention_mask = False

    def __init__(self, dropout: float = 0.0, mask_mod=None, score_mod=None, score_grad=None, additive=False,
                 captures=None, causal=False, reference=None, *args, **kwargs):
        super().__init__(dropout, *args, **kwargs)
        if reference is not None and not callable(reference):
            raise ValueError(f"variant: reference must be a callable (score, b, h, q_idx, kv_idx, captures) -> score, "
                             f"not {type(reference).__name__}")
        if captures is not None and not isinstance(captures, dict):
            raise ValueError(f"variant: captures must be a dict of name -> tensor/float/int, not {type(captures).__name__}")
        self.mask_mod, self.score_mod, self.score_grad = mask_mod, score_mod, score_grad
        self.additive, self.causal = bool(additive), bool(causal)
        self.captures = dict(captures or {})
        self.score_reference = reference
        self._variants = {}   # device -> jitattn.Variant with the captures on that device

    @classmethod
    def example_config(cls, seq_len: int, num_heads: int) -> dict:
        config = super().example_config(seq_len, num_heads)
        if cls is VariantAttention:   # the bare built-in: an ALiBi-like score_mod (subclasses keep their defaults)
            config.update(ALIBI_LIKE, captures={"nh": int(num_heads)}, reference=_alibi_like_reference)
        return config

    def variant(self, device):
        """The ``jitattn.Variant`` of this part with its captures on ``device`` (one per device)."""
        device = torch.device(device)
        v = self._variants.get(device)
        if v is None:
            v = Variant(mask_mod=self.mask_mod, score_mod=self.score_mod, score_grad=self.score_grad,
                        additive=self.additive, captures=_on(self.captures, device))
            if self.score_reference is not None:   # read by the tests' CPU stand-in for the kernel
                fn, caps = self.score_reference, self.captures
                v.torch_reference = lambda score, hidden=None: apply_reference(fn, caps, score, hidden)
            self._variants[device] = v
        return v

    def forward(self, q, k, v, att_mask=None, *args, **kwargs):
        if att_mask is not None:
            raise ValueError("variant: att_mask is not supported (put the mask in mask_mod)")
        qb, kb, vb = (base.to_bmhk(x, self.num_heads) for x in (q, k, v))
        bias = ab.LowerTriangularMask() if self.causal else None
        out = memory_efficient_attention(qb, kb, vb, bias, p=self._p(), variant=self.variant(q.device))
        return base.from_bmhk(out, q)

    def reference(self, q, k, v, att_mask=None):
        if self.score_reference is None:
            raise NotImplementedError("variant: this part has no reference (give the config a torch reference callable)")
        H = base.heads_of(q, self.num_heads)
        qh, kh, vh = (x.double().reshape(-1, H, x.shape[-2], x.shape[-1]) for x in (q, k, v))
        s = qh @ kh.transpose(-2, -1) * q.shape[-1] ** -0.5
        hidden = None
        if self.causal:
            hidden = torch.ones(s.shape[-2:], dtype=torch.bool, device=q.device).triu(1)
        s = apply_reference(self.score_reference, self.captures, s, hidden)
        p = torch.nan_to_num(torch.softmax(s, dim=-1))   # a fully masked row gives 0, as the kernel
        return (p @ vh).reshape(q.shape[:-1] + (v.shape[-1],))
