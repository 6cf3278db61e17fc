"""``Attention``, the base of every part (a torch module), and the layout helpers the parts share.

A part's ``forward(q, k, v, att_mask=None)`` takes xFormers' layouts: ``[B*H, S, hd]`` (heads
folded into the batch, FairSeq's default) or ``[B, H, S, hd]`` (``requires_head_dimension``),
and returns the output in the same layout. jitattn's kernel takes BMHK ``[B, S, H, hd]``: the
parts hand it a transposed view (no copy; any strides with the last one 1).

Each part has ``reference(q, k, v, att_mask=None)``: the same computation in plain torch (float64
softmax attention, the part's own parameters), for the registry-wide test."""
import dataclasses
import math

import torch
from torch import nn


class Attention(nn.Module):
    """A registered attention mechanism. Subclasses take their config's fields as keyword
    arguments and accept extra ``*args, **kwargs`` (FairSeq adds ``num_heads``)."""

    requires_head_dimension = False   # wants [B, H, S, hd] rather than [B*H, S, hd]
    supports_attention_mask = True    # takes att_mask (a bool or additive tensor)
    supports_key_padding_mask = False
    requires_separate_masks = False
    requires_same_k_q_dimensions = False
    config_class = None               # set by register_attention
    part_name = None

    def __init__(self, dropout: float = 0.0, num_heads=None, *args, **kwargs):
        super().__init__()
        self.dropout = float(dropout)
        self.num_heads = num_heads

    @classmethod
    def from_config(cls, config):
        fields = {f.name: getattr(config, f.name) for f in dataclasses.fields(config) if f.name != "name"}
        part = cls(**fields)
        part.config = config
        return part

    @classmethod
    def example_config(cls, seq_len: int, num_heads: int) -> dict:
        """A small config for the registry-wide test at this length: the config's defaults, with
        ``seq_len``/``num_heads`` filled where the config has them and no dropout. A part whose
        config needs more (a layout) overrides this."""
        names = {f.name for f in dataclasses.fields(cls.config_class)}
        config = {"name": cls.part_name, "dropout": 0.0}
        if "seq_len" in names:
            config["seq_len"] = seq_len
        if "num_heads" in names:
            config["num_heads"] = num_heads
        return config

    def _p(self):
        return self.dropout if self.training else 0.0

    def forward(self, q, k, v, att_mask=None, *args, **kwargs):
        raise NotImplementedError

    def reference(self, q, k, v, att_mask=None):
        raise NotImplementedError


def to_bmhk(x, num_heads=None):
    """[B*H, S, hd] (num_heads H, or 1 when unknown) or [B, H, S, hd] as a BMHK view [B, S, H, hd]."""
    if x.dim() == 4:
        return x.transpose(1, 2)
    if x.dim() != 3:
        raise ValueError(f"attention input of shape {tuple(x.shape)}: expected [B*H, S, hd] or [B, H, S, hd]")
    heads = num_heads or 1
    if x.shape[0] % heads:
        raise ValueError(f"attention input of shape {tuple(x.shape)}: dim 0 is not a multiple of num_heads={heads}")
    return x.reshape(x.shape[0] // heads, heads, x.shape[1], x.shape[2]).transpose(1, 2)


def from_bmhk(out, like):
    """The kernel's [B, S, H, hd] output in the layout of the input ``like``."""
    out = out.transpose(1, 2)
    return out if like.dim() == 4 else out.reshape(like.shape[0], out.shape[2], out.shape[3])


def heads_of(x, num_heads=None):
    return x.shape[1] if x.dim() == 4 else (num_heads or 1)


def additive(att_mask, dtype):
    """A bool mask (True = visible, as xFormers' AttentionMask) or an additive float mask, as additive."""
    if att_mask is None:
        return None
    if att_mask.dtype == torch.bool:
        return torch.zeros(att_mask.shape, dtype=dtype, device=att_mask.device).masked_fill(~att_mask, -math.inf)
    return att_mask.to(dtype)


def full_bias(bias, q_bmhk, k_bmhk):
    """An additive bias for the inputs as given ([B*H, Mq, Mkv], [B, H, Mq, Mkv] or broadcastable)
    as the [B, H, Mq, Mkv] tensor the kernel takes for BMHK inputs (an expanded view, no copy)."""
    B, Mq, H, _ = q_bmhk.shape
    Mkv = k_bmhk.shape[1]
    if bias.dim() == 3 and bias.shape[0] == B * H and B * H > 1:
        bias = bias.reshape(B, H, Mq, Mkv)
    while bias.dim() < 4:
        bias = bias.unsqueeze(0)
    return bias.expand(B, H, Mq, Mkv)


def softmax_attention(q, k, v, bias=None, scale=None):
    """Plain-torch softmax(q·kᵀ·scale + bias)·v in float64 over [..., S, hd] (the references)."""
    q, k, v = q.double(), k.double(), v.double()
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    s = q @ k.transpose(-2, -1) * scale
    if bias is not None:
        s = s + bias.double()
    p = torch.softmax(s, dim=-1)
    p = torch.nan_to_num(p)   # a fully masked row gives 0, as the kernel
    return p @ v


def reference_bias(att_mask, q, k, num_heads=None):
    """The additive mask in the reference's [..., Mq, Mkv] layout of q as given."""
    bias = additive(att_mask, torch.float64)
    if bias is None:
        return None
    if q.dim() == 3 and bias.dim() == 4:
        bias = bias.reshape(-1, bias.shape[-2], bias.shape[-1])
    return bias
