"""xFormers' attention functions over torch tensors, same names and arguments as
``xformers.ops``: ``memory_efficient_attention`` (autograd: dq, dk, dv and a dense bias's
gradient), ``memory_efficient_attention_forward``, ``..._forward_requires_grad`` (out, lse),
``..._backward`` (dq, dk, dv), ``..._partial`` (out, lse) and ``merge_attentions``.

Each goes through a ``torch.ops.jitattn`` custom op while torch.compile is tracing, and calls the
library directly otherwise: eager autograd through a plain ``torch.autograd.Function`` (the
dispatcher and the custom op's autograd wrapper cost ~250 µs a call), eager no-grad with no
autograd node at all. Both reach the same _torch_launch functions the custom ops run.
``op=`` is accepted and ignored: jitattn has one implementation, picked by the library.

Autocast: as xFormers' op, the inputs are used in the dtypes they come in; nothing is cast
(xFormers issues #742 and #1046: its op neither casts under torch.autocast nor accepts mixed
dtypes). Inside an autocast region, q/k/v from nn.Linear are already the autocast dtype; float32
inputs run the exact fp32 path; mixed dtypes raise the library's reason.
"""
from typing import Optional, Sequence, Tuple, Union

import torch

from ... import variant as _variant
from . import _torch_bias, _torch_launch, _torch_ops  # noqa: F401  (_torch_ops registers the ops)
from ._torch_launch import DTYPES


def _compiling():
    return torch.compiler.is_compiling()


def _dtype_code(output_dtype):
    if output_dtype is None:
        return 0
    if output_dtype not in DTYPES:
        raise _torch_launch.invalid(f"output_dtype={output_dtype} is not torch.float16, torch.bfloat16 or torch.float32")
    return DTYPES[output_dtype]


def _rng(p):
    """Dropout's seed, from torch's CPU generator (so torch.manual_seed makes runs repeat)."""
    return torch.randint(0, 2**62, (1,), dtype=torch.int64) if p > 0.0 else None


def _unexpand_one(x):
    if x.dim() == 5 and x.shape[3] > 1 and x.stride(3) == 0:
        return x[:, :, :, :1]
    if x.dim() == 4 and x.shape[2] > 1 and x.stride(2) == 0:
        return x[:, :, :1]
    return x


def _unexpand(key, value):
    """Key and value expanded over their heads by stride 0 (xFormers' BMGHK [B, M, G, H, K] with
    stride[3] = 0, or BMHK with a head stride 0), as their memory: [..., 1, K] over the head dim.
    The library reads both the same way (each query head sees its group's head), and the
    gradient is then that memory's, summed over the heads by the library, exact; autograd's
    slice and expand route it back to the tensor the caller expanded. (Given expanded, the
    library would want dk expanded too, whose stride-0 values autograd would sum again.)
    Both or neither: the library needs one head count for the two, so a key expanded beside a
    value that is not stays as given (the library then reads its stride-0 heads as they are)."""
    k, v = _unexpand_one(key), _unexpand_one(value)
    if (k is key) != (v is value):
        return key, value
    return k, v


def _bias_obj(attn_bias, bias_args):
    """The bias object itself for the direct path (skips the registry lookup)."""
    return attn_bias if bias_args[1] is not None else None


class _EagerAttention(torch.autograd.Function):
    """memory_efficient_attention's eager autograd node: the forward keeps (out, lse), the
    backward is one library call (the custom op ``jitattn::fwd``'s formula, without the dispatcher)."""

    @staticmethod
    def forward(ctx, query, key, value, bias_tensor, args, bias_obj, p, scale, seed, code, variant):
        out, lse = _torch_launch.forward(query, key, value, args, p, scale, seed, 0, code, True, bias_obj=bias_obj,
                                         variant=variant)
        ctx.save_for_backward(query, key, value, out, lse)
        ctx.call = (args, bias_obj, p, scale, seed, variant, None)  # the caller's snapshot: fixed code and values
        ctx.mark_non_differentiable(lse)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        query, key, value, out, lse = ctx.saved_tensors
        args, bias_obj, p, scale, seed, variant, variant_tensors = ctx.call
        bias_grad = bool(ctx.needs_input_grad[3])
        if grad_out.stride(-1) != 1:
            grad_out = grad_out.contiguous()
        dq, dk, dv, db = _torch_launch.backward(grad_out, query, key, value, out, lse, args, p, scale, seed, 0,
                                                bias_grad, bias_obj=bias_obj, variant=variant,
                                                variant_tensors=variant_tensors)
        return dq, dk, dv, (db if bias_grad else None), None, None, None, None, None, None, None


def _no_dropout(p, name):
    if p != 0.0:
        raise NotImplementedError(f"{name}: dropout is not supported by the non-autograd API (as xFormers); "
                                  "call memory_efficient_attention for dropout")


def _variant_args(variant):
    """The custom op's (variant_key, variant_tensors) for a jitattn.Variant or None."""
    if variant is None:
        return None, []
    if not isinstance(variant, _variant.Variant):
        raise TypeError(f"variant: expected a jitattn.Variant or None, not {type(variant).__name__}")
    return variant.key(), variant.tensors()


def memory_efficient_attention(query, key, value, attn_bias=None, p: float = 0.0, scale: Optional[float] = None, *,
                               op=None, output_dtype: Optional[torch.dtype] = None, variant=None):
    """softmax(query @ key^T * scale + attn_bias) @ value, with dropout ``p``; q [B, Mq, (G,) H, K]
    (or [B, Mq, K]), k [B, Mkv, (G,) Hkv, K], v [B, Mkv, (G,) Hkv, Kv] -> [B, Mq, (G,) H, Kv].
    Differentiable in query, key, value and a dense attn_bias tensor. ``variant``: a
    jitattn.Variant (user mask_mod/score_mod) over attn_bias."""
    key, value = _unexpand(key, value)
    args = _torch_bias.op_args(attn_bias)
    code = _dtype_code(output_dtype)
    rng = _rng(p)
    grad = torch.is_grad_enabled() and (query.requires_grad or key.requires_grad or value.requires_grad or
                                        (args[0] is not None and args[0].requires_grad))
    vkey, vtensors = _variant_args(variant)
    if not grad and not _compiling():
        seed = int(rng[0]) if rng is not None else 0
        return _torch_launch.forward(query, key, value, args, p, scale, seed, 0, code, False,
                                     bias_obj=_bias_obj(attn_bias, args), variant=variant)[0]
    if not _compiling():
        seed = int(rng[0]) if rng is not None else 0
        return _EagerAttention.apply(query, key, value, args[0], args, _bias_obj(attn_bias, args), float(p), scale,
                                     seed, code, variant.snapshot() if variant is not None else None)
    out, _ = _torch_ops.fwd(query, key, value, *args, float(p), scale, rng, code, grad, False, vkey, vtensors)
    return out


def memory_efficient_attention_forward(query, key, value, attn_bias=None, p: float = 0.0,
                                       scale: Optional[float] = None, *, op=None,
                                       output_dtype: Optional[torch.dtype] = None, variant=None):
    """The forward alone (no autograd): the output."""
    key, value = _unexpand(key, value)
    args = _torch_bias.op_args(attn_bias)
    code = _dtype_code(output_dtype)
    rng = _rng(p)
    vkey, vtensors = _variant_args(variant)
    if not _compiling():
        seed = int(rng[0]) if rng is not None else 0
        return _torch_launch.forward(query, key, value, args, p, scale, seed, 0, code, False,
                                     bias_obj=_bias_obj(attn_bias, args), variant=variant)[0]
    with torch.no_grad():
        return _torch_ops.fwd(query, key, value, *args, float(p), scale, rng, code, False, False, vkey, vtensors)[0]


def memory_efficient_attention_forward_requires_grad(query, key, value, attn_bias=None, p: float = 0.0,
                                                     scale: Optional[float] = None, *, op=None,
                                                     output_dtype: Optional[torch.dtype] = None, variant=None):
    """(out, lse): lse [B, H, Mq] float32 ([B, G, H, Mq] for 5-D inputs), for ..._backward."""
    _no_dropout(p, "memory_efficient_attention_forward_requires_grad")
    key, value = _unexpand(key, value)
    args = _torch_bias.op_args(attn_bias)
    code = _dtype_code(output_dtype)
    vkey, vtensors = _variant_args(variant)
    if not _compiling():
        return _torch_launch.forward(query, key, value, args, 0.0, scale, 0, 0, code, True,
                                     bias_obj=_bias_obj(attn_bias, args), variant=variant)
    with torch.no_grad():
        return _torch_ops.fwd(query, key, value, *args, 0.0, scale, None, code, True, False, vkey, vtensors)


def memory_efficient_attention_backward(grad, output, lse, query, key, value, attn_bias=None, p: float = 0.0,
                                        scale: Optional[float] = None, *, op=None, variant=None):
    """(dq, dk, dv) from the forward's output and lse. A key/value expanded over its heads by
    stride 0 gets the gradient of its memory (summed over the heads), expanded the same way."""
    _no_dropout(p, "memory_efficient_attention_backward")
    args = _torch_bias.op_args(attn_bias)
    k, v = _unexpand(key, value)
    vkey, vtensors = _variant_args(variant)
    if not _compiling():
        dq, dk, dv, _ = _torch_launch.backward(grad, query, k, v, output, lse, args, 0.0, scale, 0, 0, False,
                                               bias_obj=_bias_obj(attn_bias, args), variant=variant)
    else:
        with torch.no_grad():
            dq, dk, dv, _ = _torch_ops.bwd(grad, query, k, v, output, lse, *args, 0.0, scale, None, False, vkey,
                                           vtensors)
    # An expanded key's gradient is its memory's (the sum over the heads sharing it), expanded as it was.
    return dq, (dk.expand(key.shape) if k is not key else dk), (dv.expand(value.shape) if v is not value else dv)


def memory_efficient_attention_partial(query, key, value, attn_bias=None, p: float = 0.0,
                                       scale: Optional[float] = None, *, op=None,
                                       output_dtype: Optional[torch.dtype] = None, variant=None):
    """(out, lse) over one slice of the keys (a view of K/V, the bias sliced to match), for
    merge_attentions. No backward."""
    key, value = _unexpand(key, value)
    args = _torch_bias.op_args(attn_bias)
    code = _dtype_code(output_dtype)
    rng = _rng(p)
    vkey, vtensors = _variant_args(variant)
    if not _compiling():
        seed = int(rng[0]) if rng is not None else 0
        return _torch_launch.forward(query, key, value, args, p, scale, seed, 0, code, True, partial=True,
                                     bias_obj=_bias_obj(attn_bias, args), variant=variant)
    return _torch_ops.fwd(query, key, value, *args, float(p), scale, rng, code, True, True, vkey, vtensors)


def merge_attentions(attn_split: Union[torch.Tensor, Sequence[torch.Tensor]],
                     lse_split: Union[torch.Tensor, Sequence[torch.Tensor]], write_lse: bool = True,
                     output_dtype: Optional[torch.dtype] = None) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """Combines S partial attentions, stacked ([S, B, M, (G,) H, K] and [S, B, (G,) H, M]) or as
    lists, into the attention over all their keys: (out, lse or None)."""
    code = _dtype_code(output_dtype)
    stacked = isinstance(attn_split, torch.Tensor)
    if stacked != isinstance(lse_split, torch.Tensor):
        raise _torch_launch.invalid("merge_attentions: attn_split and lse_split must both be tensors or both lists")
    if not _compiling():
        out, lse = _torch_launch.merge(attn_split, lse_split, write_lse, code)
    else:
        parts = [attn_split] if stacked else list(attn_split)
        parts_lse = [lse_split] if stacked else list(lse_split)
        with torch.no_grad():  # no backward (as the partial's)
            out, lse = _torch_ops.merge(parts, parts_lse, stacked, write_lse, code)
    return out, (lse if write_lse else None)


def prepare_bias(attn_bias, device):
    """Makes ``attn_bias``'s device arrays on ``device`` now (before a CUDA-graph capture, where
    they cannot be uploaded); returns the bias. A call does it by itself otherwise."""
    return _torch_bias.prepare(attn_bias, device)


__all__ = ["memory_efficient_attention", "memory_efficient_attention_forward",
           "memory_efficient_attention_forward_requires_grad", "memory_efficient_attention_backward",
           "memory_efficient_attention_partial", "merge_attentions", "prepare_bias"]
