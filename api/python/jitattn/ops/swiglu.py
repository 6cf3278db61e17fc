"""xFormers' SwiGLU (``xformers.ops.SwiGLU`` and ``xformers.ops.swiglu``, same names and arguments):

    out = W3 · (silu(W1 · x + b1) ⊙ (W2 · x + b2)) + b3

The three GEMMs run in torch (cuBLAS, autocast-aware: under ``torch.autocast`` they produce the
autocast dtype); the gate between them — silu, the product, and their gradient — is one
JIT-compiled kernel each way (``jitattn::swiglu_gate_forward/backward``, kernel_src/swiglu.cuh),
over x12 = x · [W1; W2]ᵀ + [b1; b2] packed side by side (``_pack_weights=True`` keeps W1 and W2
as one Linear, as xFormers does). CPU tensors take the same formula in torch. The gate is a
``torch.ops.jitattn.swiglu_gate`` custom op under torch.compile and a plain autograd.Function
eagerly (as attention: docs/python.md).
"""
import ctypes
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from .. import _capi
from .fmha import _torch_launch


def _gate_forward(x12: Tensor) -> Tensor:
    device = x12.device
    n, two_h = x12.shape
    h = _torch_launch.new_output((n, two_h // 2), x12.dtype, device)
    with _torch_launch._OnDevice(device):
        _capi.check(_capi.lib().jitattn_swiglu_forward(ctypes.byref(_torch_launch.c_tensor(x12)),
                                                       ctypes.byref(_torch_launch.c_tensor(h)),
                                                       _torch_launch.stream_of(device)))
    return h


def _gate_backward(x12: Tensor, dh: Tensor) -> Tensor:
    device = x12.device
    if dh.stride(-1) != 1 or dh.dtype != x12.dtype:
        dh = dh.to(x12.dtype).contiguous()
    dx = _torch_launch.new_output(tuple(x12.shape), x12.dtype, device)
    with _torch_launch._OnDevice(device):
        _capi.check(_capi.lib().jitattn_swiglu_backward(ctypes.byref(_torch_launch.c_tensor(x12)),
                                                        ctypes.byref(_torch_launch.c_tensor(dh)),
                                                        ctypes.byref(_torch_launch.c_tensor(dx)),
                                                        _torch_launch.stream_of(device)))
    return dx


@torch.library.custom_op("jitattn::swiglu_gate", mutates_args=())
def swiglu_gate_op(x12: Tensor) -> Tensor:
    return _gate_forward(x12)


@swiglu_gate_op.register_fake
def _(x12):
    return x12.new_empty((x12.shape[0], x12.shape[1] // 2))


@torch.library.custom_op("jitattn::swiglu_gate_backward", mutates_args=())
def swiglu_gate_backward_op(x12: Tensor, dh: Tensor) -> Tensor:
    return _gate_backward(x12, dh)


@swiglu_gate_backward_op.register_fake
def _(x12, dh):
    return x12.new_empty(x12.shape)


def _op_setup(ctx, inputs, output):
    ctx.save_for_backward(inputs[0])


def _op_backward(ctx, dh):
    (x12,) = ctx.saved_tensors
    return swiglu_gate_backward_op(x12, dh)


swiglu_gate_op.register_autograd(_op_backward, setup_context=_op_setup)


class _Gate(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x12):
        ctx.save_for_backward(x12)
        return _gate_forward(x12)

    @staticmethod
    def backward(ctx, dh):
        (x12,) = ctx.saved_tensors
        return _gate_backward(x12, dh)


def swiglu_gate(x12: Tensor) -> Tensor:
    """silu(x12[..., :H]) * x12[..., H:] for x12 [..., 2H] (the JIT kernel on CUDA tensors)."""
    two_h = x12.shape[-1]
    if two_h % 2:
        raise _torch_launch.invalid(f"x12.shape[-1]={two_h} must be even (x1 and x2 side by side)")
    if not x12.is_cuda:
        x1, x2 = x12.chunk(2, dim=-1)
        return F.silu(x1) * x2
    lead = x12.shape[:-1]
    flat = x12.reshape(-1, two_h)
    if flat.stride(-1) != 1:
        flat = flat.contiguous()
    h = swiglu_gate_op(flat) if torch.compiler.is_compiling() else _Gate.apply(flat)
    return h.reshape(*lead, two_h // 2)


def _swiglu_packed(x, w12, b12, w3, b3):
    return F.linear(swiglu_gate(F.linear(x, w12, b12)), w3, b3)


def swiglu(x: Tensor, w1: Tensor, b1: Optional[Tensor], w2: Tensor, b2: Optional[Tensor], w3: Tensor,
           b3: Optional[Tensor], *, op=None) -> Tensor:
    """xFormers' functional SwiGLU: W3·(silu(W1·x + b1) ⊙ (W2·x + b2)) + b3. ``op`` is accepted and
    ignored (one implementation). W1 and W2 are packed for one GEMM (a copy per call: the
    SwiGLU module keeps them packed)."""
    if (b1 is None) != (b2 is None):
        raise _torch_launch.invalid("b1 and b2 must both be tensors or both None")
    w12 = torch.cat([w1, w2], dim=0)
    b12 = torch.cat([b1, b2], dim=0) if b1 is not None else None
    return _swiglu_packed(x, w12, b12, w3, b3)


class SwiGLU(nn.Module):
    """xFormers' ``SwiGLU`` module: ``SwiGLU(in_features, hidden_features, out_features=None,
    bias=True, *, _pack_weights=True)``; with ``_pack_weights`` W1 and W2 are one Linear ``w12``,
    else ``w1`` and ``w2``; ``w3`` maps back to ``out_features`` (default ``in_features``)."""

    def __init__(self, in_features: int, hidden_features: int, out_features: Optional[int] = None, bias: bool = True,
                 *, _pack_weights: bool = True):
        super().__init__()
        out_features = out_features or in_features
        self.hidden_features = hidden_features
        if _pack_weights:
            self.w12 = nn.Linear(in_features, 2 * hidden_features, bias=bias)
        else:
            self.w12 = None
            self.w1 = nn.Linear(in_features, hidden_features, bias=bias)
            self.w2 = nn.Linear(in_features, hidden_features, bias=bias)
        self.w3 = nn.Linear(hidden_features, out_features, bias=bias)

    def _ordered_params(self):
        """(w1, b1, w2, b2, w3, b3), as xFormers' module returns them."""
        if self.w12 is not None:
            h = self.hidden_features
            w1, w2 = self.w12.weight[:h], self.w12.weight[h:]
            b1, b2 = (self.w12.bias[:h], self.w12.bias[h:]) if self.w12.bias is not None else (None, None)
        else:
            w1, b1, w2, b2 = self.w1.weight, self.w1.bias, self.w2.weight, self.w2.bias
        return w1, b1, w2, b2, self.w3.weight, self.w3.bias

    def forward(self, x: Tensor) -> Tensor:
        if self.w12 is not None:
            return _swiglu_packed(x, self.w12.weight, self.w12.bias, self.w3.weight, self.w3.bias)
        return swiglu(x, *self._ordered_params())
