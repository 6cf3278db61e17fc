"""The torch.library custom ops (``torch.ops.jitattn.*``): the forward (plain, with LSE, partial),
the backward and the merge, each with a fake (shapes only, for torch.compile and FakeTensor
tracing) and the forward with its autograd formula. The real implementations are
_torch_launch's; biases arrive as ``(bias_tensor, bias_key, kind, a, b)`` (_torch_bias says why).

Dropout's Philox seed is a CPU int64 tensor input (``rng``, drawn from torch's CPU generator by
the caller), so the op reads it without a device sync and the backward regenerates the same mask.
"""
from typing import List, Optional, Tuple

import torch
from torch import Tensor

from . import _torch_launch
from ... import variant as _variant
from ._torch_launch import DTYPE_OF_CODE, out_shapes


def _seed(rng):
    return (int(rng[0]), 0) if rng is not None else (0, 0)


def _variant_of(variant_key):
    return _variant.lookup(variant_key) if variant_key is not None else None


# A user variant crosses as (variant_key, variant_tensors): a 0-dim int64 CPU tensor naming the
# jitattn.Variant (its code and scalars; jitattn/variant.py) and its captured tensors as inputs,
# so the compiler sees them and a new tensor of the same shape reuses the graph.
@torch.library.custom_op("jitattn::fwd", mutates_args=())
def fwd(query: Tensor, key: Tensor, value: Tensor, bias_tensor: Optional[Tensor], bias_key: Optional[Tensor],
        bias_kind: int, bias_a: int, bias_b: int, p: float, scale: Optional[float], rng: Optional[Tensor],
        output_dtype: int, need_lse: bool, partial: bool, variant_key: Optional[Tensor],
        variant_tensors: List[Tensor]) -> Tuple[Tensor, Tensor]:
    seed, offset = _seed(rng)
    return _torch_launch.forward(query, key, value, (bias_tensor, bias_key, bias_kind, bias_a, bias_b), p, scale,
                                 seed, offset, output_dtype, need_lse or partial, partial,
                                 variant=_variant_of(variant_key),
                                 variant_tensors=variant_tensors if variant_key is not None else None)


@fwd.register_fake
def _fwd_fake(query, key, value, bias_tensor, bias_key, bias_kind, bias_a, bias_b, p, scale, rng, output_dtype,
              need_lse, partial, variant_key, variant_tensors):
    out_shape, lse_shape = out_shapes(query, value)
    dtype = DTYPE_OF_CODE[output_dtype] if output_dtype else query.dtype
    lse = query.new_empty(lse_shape if (need_lse or partial) else (0,), dtype=torch.float32)
    return query.new_empty(out_shape, dtype=dtype), lse


@torch.library.custom_op("jitattn::bwd", mutates_args=())
def bwd(grad: Tensor, query: Tensor, key: Tensor, value: Tensor, out: Tensor, lse: Tensor,
        bias_tensor: Optional[Tensor], bias_key: Optional[Tensor], bias_kind: int, bias_a: int, bias_b: int,
        p: float, scale: Optional[float], rng: Optional[Tensor], bias_grad: bool, variant_key: Optional[Tensor],
        variant_tensors: List[Tensor]) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    seed, offset = _seed(rng)
    return _torch_launch.backward(grad, query, key, value, out, lse, (bias_tensor, bias_key, bias_kind, bias_a, bias_b),
                                  p, scale, seed, offset, bias_grad, variant=_variant_of(variant_key),
                                  variant_tensors=variant_tensors if variant_key is not None else None)


@bwd.register_fake
def _bwd_fake(grad, query, key, value, out, lse, bias_tensor, bias_key, bias_kind, bias_a, bias_b, p, scale, rng,
              bias_grad, variant_key, variant_tensors):
    db = query.new_empty(bias_tensor.shape if bias_grad else (0,))
    return query.new_empty(query.shape), key.new_empty(key.shape), value.new_empty(value.shape), db


def _fwd_setup_context(ctx, inputs, output):
    (query, key, value, bias_tensor, bias_key, bias_kind, bias_a, bias_b, p, scale, rng, output_dtype, need_lse,
     partial, variant_key, variant_tensors) = inputs
    out, lse = output
    ctx.save_for_backward(query, key, value, out, lse, bias_tensor, bias_key, rng, variant_key, *variant_tensors)
    ctx.meta = (bias_kind, bias_a, bias_b, p, scale, partial)
    ctx.bias_grad = bool(ctx.needs_input_grad[3])


def _fwd_backward(ctx, grad_out, grad_lse):
    query, key, value, out, lse, bias_tensor, bias_key, rng, variant_key, *variant_tensors = ctx.saved_tensors
    bias_kind, bias_a, bias_b, p, scale, partial = ctx.meta
    if partial:
        raise NotImplementedError("jitattn: memory_efficient_attention_partial has no backward (the gradient through "
                                  "its lse is not computed); use memory_efficient_attention for training")
    if grad_out.stride(-1) != 1:
        grad_out = grad_out.contiguous()
    dq, dk, dv, db = bwd(grad_out, query, key, value, out, lse, bias_tensor, bias_key, bias_kind, bias_a, bias_b, p,
                         scale, rng, ctx.bias_grad, variant_key, list(variant_tensors))
    # No gradient for the other inputs, nor for the captured tensors (a list: one None each).
    return (dq, dk, dv, db if ctx.bias_grad else None) + (None,) * 11 + ([None] * len(variant_tensors),)


fwd.register_autograd(_fwd_backward, setup_context=_fwd_setup_context)


@torch.library.custom_op("jitattn::merge", mutates_args=())
def merge(attn_split: List[Tensor], lse_split: List[Tensor], stacked: bool, write_lse: bool,
          output_dtype: int) -> Tuple[Tensor, Tensor]:
    if stacked:
        return _torch_launch.merge(attn_split[0], lse_split[0], write_lse, output_dtype)
    return _torch_launch.merge(attn_split, lse_split, write_lse, output_dtype)


@merge.register_fake
def _merge_fake(attn_split, lse_split, stacked, write_lse, output_dtype):
    first = attn_split[0][0] if stacked else attn_split[0]
    first_lse = lse_split[0][0] if stacked else lse_split[0]
    dtype = DTYPE_OF_CODE[output_dtype] if output_dtype else first.dtype
    lse = first.new_empty(first_lse.shape if write_lse else (0,), dtype=torch.float32)
    return first.new_empty(first.shape, dtype=dtype), lse
