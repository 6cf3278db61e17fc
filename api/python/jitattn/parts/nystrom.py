"""``nystrom``: Nyströmformer's approximation of softmax attention with ``num_landmarks``
landmarks (segment means of queries and keys, L = num_landmarks):

    out = softmax(q·k̃ᵀ/√d) · pinv(softmax(q̃·k̃ᵀ/√d)) · softmax(q̃·kᵀ/√d)·v

Both softmax-times-values products run in jitattn's kernel: ``a = attention(q̃, k, v)`` (the
landmarks over every key) and ``out = attention(q, k̃, w)`` with ``w = pinv(kernel_2)·a`` as the
values. Only kernel_2 ([L, L]) is materialized, in float32 at least, with the iterative (Razavi et al.)
pseudo-inverse of ``inv_iterations`` steps, as the paper. A sequence no longer than
num_landmarks runs exact attention. The length must be a multiple of num_landmarks."""
import torch

from ..ops.fmha._functions import memory_efficient_attention
from . import base
from .configs import NystromConfig
from .registry import register_attention


def iterative_pinv(a, iterations: int):
    """Razavi et al.'s iteration for the Moore-Penrose inverse of softmax matrices [..., L, L]."""
    eye = torch.eye(a.shape[-1], dtype=a.dtype, device=a.device)
    z = a.transpose(-2, -1) / (a.abs().sum(-1).amax(-1) * a.abs().sum(-2).amax(-1))[..., None, None]
    for _ in range(iterations):
        az = a @ z
        z = 0.25 * z @ (13 * eye - az @ (15 * eye - az @ (7 * eye - az)))
    return z


@register_attention("nystrom", NystromConfig)
class NystromAttention(base.Attention):
    supports_attention_mask = False
    test_tolerance = 2.0   # two kernel passes, and w rounded to the input dtype between them

    def __init__(self, dropout: float = 0.0, num_landmarks: int = 64, inv_iterations: int = 6, *args, **kwargs):
        super().__init__(dropout, *args, **kwargs)
        if num_landmarks < 1 or inv_iterations < 1:
            raise ValueError(f"nystrom: num_landmarks={num_landmarks} and inv_iterations={inv_iterations} must be >= 1")
        self.num_landmarks, self.inv_iterations = int(num_landmarks), int(inv_iterations)

    @classmethod
    def example_config(cls, seq_len: int, num_heads: int) -> dict:
        return {"name": cls.part_name, "dropout": 0.0, "num_landmarks": max(1, seq_len // 8)}

    def _landmarks(self, x):
        S, L = x.shape[-2], self.num_landmarks
        if S % L:
            raise ValueError(f"nystrom: sequence length {S} is not a multiple of num_landmarks={L}")
        return x.reshape(x.shape[:-2] + (L, S // L, x.shape[-1])).mean(-2)

    def _kernel_2(self, q_l, k_l):
        dtype = torch.promote_types(q_l.dtype, torch.float32)   # at least fp32: the pinv iteration amplifies rounding
        return torch.softmax(q_l.to(dtype) @ k_l.to(dtype).transpose(-2, -1) * q_l.shape[-1] ** -0.5, dim=-1)

    def forward(self, q, k, v, att_mask=None, *args, **kwargs):
        if att_mask is not None:
            raise ValueError("nystrom: att_mask is not supported")
        p = self._p()
        if q.shape[-2] <= self.num_landmarks:
            qb, kb, vb = (base.to_bmhk(x, None) for x in (q, k, v))
            return base.from_bmhk(memory_efficient_attention(qb, kb, vb, p=p), q)
        q_l, k_l = self._landmarks(q), self._landmarks(k)
        bm = lambda x: base.to_bmhk(x, None)  # noqa: E731
        a = base.from_bmhk(memory_efficient_attention(bm(q_l), bm(k), bm(v), p=p), q_l)      # softmax(q̃kᵀ)v
        w = (iterative_pinv(self._kernel_2(q_l, k_l), self.inv_iterations) @ a.to(torch.promote_types(a.dtype, torch.float32))).to(v.dtype)
        return base.from_bmhk(memory_efficient_attention(bm(q), bm(k_l), bm(w), p=p), q)    # softmax(qk̃ᵀ)w

    def reference(self, q, k, v, att_mask=None):
        q, k, v = q.double(), k.double(), v.double()
        if q.shape[-2] <= self.num_landmarks:
            return base.softmax_attention(q, k, v)
        q_l, k_l = self._landmarks(q), self._landmarks(k)
        scale = q.shape[-1] ** -0.5
        kernel_2 = torch.softmax(q_l @ k_l.transpose(-2, -1) * scale, dim=-1)
        a = base.softmax_attention(q_l, k, v)
        return base.softmax_attention(q, k_l, iterative_pinv(kernel_2, self.inv_iterations) @ a)
