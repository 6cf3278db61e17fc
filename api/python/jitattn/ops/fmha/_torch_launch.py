"""One library call over torch tensors: checks that name the argument (device, dtype, the last
stride), outputs and workspace from torch's allocator, the call on torch's current stream.

These functions run eagerly (they are the custom ops' real implementations, and the no-grad fast
path); nothing here is traced. Shapes follow the library: q [B, Mq, (G,) H, K] or [B, Mq, K],
out [..., Kv], lse [B, (G,) H, Mq] float32 ([B, 1, Mq] for 3-D inputs).
"""
import ctypes

import torch

from ... import _capi
from ... import variant as _variant
from . import _torch_bias

DTYPES = {torch.float16: _capi.DTYPE_F16, torch.bfloat16: _capi.DTYPE_BF16, torch.float32: _capi.DTYPE_F32}
DTYPE_OF_CODE = {v: k for k, v in DTYPES.items()}
_T = ctypes.POINTER(_capi.Tensor)


def invalid(reason):
    return _capi.Error(_capi.ERROR_INVALID_ARGUMENT, [reason], "JITATTN_ERROR_INVALID_ARGUMENT")


def new_output(shape, dtype, device):
    """Every output and workspace comes from here (torch's caching allocator, stream-ordered on
    the current stream). Tests replace it to poison outputs."""
    return torch.empty(shape, dtype=dtype, device=device)


def check_tensor(x, name, device):
    """The device, dtype and last-stride rules, with a message saying what to do."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, not {type(x).__name__}")
    if x.device.type != "cuda":
        raise invalid(f"{name} is on {x.device}: jitattn runs on CUDA tensors (move it with {name}.cuda())")
    if device is not None and x.device != device:
        raise invalid(f"{name} is on {x.device} but query is on {device}: every tensor of a call must be on one GPU")
    if x.dtype not in DTYPES:
        raise invalid(f"{name}.dtype={x.dtype} is not torch.float16, torch.bfloat16 or torch.float32")
    if x.dim() and x.stride(-1) != 1 and x.shape[-1] > 1:
        raise invalid(f"{name}.stride(-1)={x.stride(-1)} must be 1 (the last dimension contiguous; "
                      f"{name}.contiguous() makes it so)")


_TENSOR_SIZE = ctypes.sizeof(_capi.Tensor)


def c_tensor(x):
    """``x`` as a jitattn_tensor (x must outlive the call). Built without _Struct.__init__: this
    runs for every tensor of every call."""
    t = _capi.Tensor.__new__(_capi.Tensor)  # zeroed by ctypes
    t.struct_size = _TENSOR_SIZE
    n = x.dim()
    t.data, t.dtype, t.ndim, t.device = x.data_ptr(), DTYPES[x.dtype], n, x.device.index or 0
    if n:
        t.shape[:n], t.stride[:n] = x.shape, x.stride()
    return t


def _ref(t):
    return ctypes.byref(t) if t is not None else None


def stream_of(device):
    return torch.cuda.current_stream(device).cuda_stream


def out_shapes(query, value):
    out = tuple(query.shape[:-1]) + (value.shape[-1],)
    if query.dim() == 3:
        lse = (query.shape[0], 1, query.shape[1])
    elif query.dim() == 5:
        lse = (query.shape[0], query.shape[2], query.shape[3], query.shape[1])
    else:
        lse = (query.shape[0], query.shape[2], query.shape[1])
    return out, lse


def _check_qkv(query, key, value):
    check_tensor(query, "query", None)
    device = query.device
    check_tensor(key, "key", device)
    check_tensor(value, "value", device)
    return device


def _fwd_options(p, scale, seed, offset, output_dtype):
    o = _capi.AttentionOptions(p=float(p), seed=int(seed), offset=int(offset))
    if scale is not None:
        o.scale, o.has_scale = float(scale), 1
    if output_dtype:
        o.output_dtype = output_dtype
    return o


class _OnDevice:
    """Makes ``device`` current for the call when it is not (the library launches in the current context)."""

    __slots__ = ("guard",)

    def __init__(self, device):
        self.guard = torch.cuda.device(device) if device.index != torch.cuda.current_device() else None

    def __enter__(self):
        if self.guard is not None:
            self.guard.__enter__()

    def __exit__(self, *exc):
        if self.guard is not None:
            self.guard.__exit__(*exc)


def forward(query, key, value, bias_args, p, scale, seed, offset, output_dtype, need_lse, partial=False,
            bias_obj=None, variant=None, variant_tensors=None):
    """(out, lse) of the forward (lse empty unless need_lse). ``bias_args`` from _torch_bias.op_args;
    ``variant`` a jitattn.Variant (its captured tensors replaced by ``variant_tensors`` if given)."""
    device = _check_qkv(query, key, value)
    bias_tensor, bias_key, kind, a, b = bias_args
    if bias_tensor is not None:
        check_tensor(bias_tensor, "attn_bias", device)
        bias_tensor = _bias_view(bias_tensor, query, key)
    out_shape, lse_shape = out_shapes(query, value)
    out_dtype = DTYPE_OF_CODE[output_dtype] if output_dtype else query.dtype
    out = new_output(out_shape, out_dtype, device)
    lse = new_output(lse_shape if need_lse else (0,), torch.float32, device)
    opts = _fwd_options(p, scale, seed, offset, output_dtype)
    keep_variant = _variant.apply(opts, variant, device, variant_tensors)
    handle, keep = _torch_bias.handle_for_call(bias_tensor, bias_key, kind, a, b, device, bias_obj)
    q, k, v, o = c_tensor(query), c_tensor(key), c_tensor(value), c_tensor(out)
    lib = _capi.lib()
    with _OnDevice(device):
        stream = stream_of(device)
        if partial:
            status = lib.jitattn_partial_h(_ref(q), _ref(k), _ref(v), handle, _ref(o), _ref(c_tensor(lse)),
                                           ctypes.byref(opts), stream)
        elif need_lse:
            status = lib.jitattn_forward_requires_grad_h(_ref(q), _ref(k), _ref(v), handle, _ref(o),
                                                         _ref(c_tensor(lse)), ctypes.byref(opts), stream)
        else:
            status = lib.jitattn_forward_h(_ref(q), _ref(k), _ref(v), handle, _ref(o), ctypes.byref(opts), stream)
    _capi.check(status)
    del keep, keep_variant
    return out, lse


def _full_bias_shape(query, key):
    """The [B, (G,) H, Mq, Mkv] shape a dense bias has without broadcast (a 3-D call: [B, 1, Mq, Mkv])."""
    if query.dim() == 3:
        return (query.shape[0], 1, query.shape[1], key.shape[1])
    return (query.shape[0],) + tuple(query.shape[2:-1]) + (query.shape[1], key.shape[1])


def _bias_view(bias, query, key):
    """The bias as the library takes it (4-D or 5-D): a 3-D call's [B, Mq, Mkv] gets its head
    dim, fewer dims broadcast to the full shape (stride 0, no copy)."""
    if query.dim() == 3 and bias.dim() == 3:
        bias = bias.unsqueeze(1)
    full = _full_bias_shape(query, key)
    bias = bias.expand(full) if bias.dim() < len(full) else bias
    # The library reads a 5-D bias's G·H heads through one head stride (stride[1] = H·stride[2]);
    # one broadcast over G alone or H alone has none: copy it.
    if bias.dim() == 5 and bias.shape[1] > 1 and bias.shape[2] > 1 and bias.stride(1) != bias.shape[2] * bias.stride(2):
        bias = bias.contiguous()
    return bias


def _sum_to(x, shape):
    """Sums a broadcast gradient back to ``shape`` (the bias as the caller gave it)."""
    lead = x.dim() - len(shape)
    if lead:
        x = x.sum(dim=tuple(range(lead)))
    dims = tuple(i for i, n in enumerate(shape) if n == 1 and x.shape[i] != 1)
    return x.sum(dim=dims, keepdim=True) if dims else x


def backward(grad, query, key, value, out, lse, bias_args, p, scale, seed, offset, bias_grad, deterministic=False,
             bias_obj=None, variant=None, variant_tensors=None):
    """(dq, dk, dv, dbias or an empty tensor): gradients shaped as the inputs, per head (a key
    expanded over its heads by stride 0 gets each head's own gradient; autograd's expand sums
    them), dbias as the bias tensor when ``bias_grad``."""
    device = _check_qkv(query, key, value)
    for x, name in ((grad, "grad"), (out, "output")):
        check_tensor(x, name, device)
    if grad.dtype != query.dtype:  # an output_dtype forward: the library takes grad in the query's dtype
        grad = grad.to(query.dtype)
    if lse.device != device or lse.dtype != torch.float32:
        raise invalid(f"lse must be float32 on {device} (got {lse.dtype} on {lse.device})")
    if lse.numel() == 0 and query.numel():
        raise invalid("lse is empty: the forward did not keep it (memory_efficient_attention_forward_requires_grad)")
    bias_tensor, bias_key, kind, a, b = bias_args
    user_bias_shape, squeeze_head = None, False
    if bias_tensor is not None:
        check_tensor(bias_tensor, "attn_bias", device)
        full = _full_bias_shape(query, key)
        view = _bias_view(bias_tensor, query, key)
        if bias_grad and (tuple(view.shape) != full or not view.is_contiguous() or view.dim() != bias_tensor.dim()):
            # The library's dbias mirrors a full, unbroadcast bias: give it one, then sum back.
            user_bias_shape = tuple(bias_tensor.shape)
            squeeze_head = query.dim() == 3 and bias_tensor.dim() == 3  # _bias_view added its head dim
            view = view.expand(full).contiguous()
        bias_tensor = view
        bias_args = (bias_tensor, bias_key, kind, a, b)
    dq = new_output(query.shape, query.dtype, device)
    dk = new_output(key.shape, key.dtype, device)
    dv = new_output(value.shape, value.dtype, device)
    db = new_output(bias_tensor.shape if bias_grad else (0,), query.dtype, device)
    opts = _capi.BackwardOptions(p=float(p), seed=int(seed), offset=int(offset), deterministic=int(bool(deterministic)))
    if scale is not None:
        opts.scale, opts.has_scale = float(scale), 1
    keep_variant = _variant.apply(opts, variant, device, variant_tensors)
    handle, keep = _torch_bias.handle_for_call(*bias_args, device, bias_obj)
    ts = [c_tensor(x) for x in (grad, out, lse, query, key, value, dq, dk, dv)]
    tdb = c_tensor(db) if bias_grad else None
    lib = _capi.lib()
    size = ctypes.c_size_t(0)
    _capi.check(lib.jitattn_backward_workspace_bytes_h(_ref(ts[3]), _ref(ts[4]), _ref(ts[5]), handle,
                                                       ctypes.byref(opts), ctypes.byref(size)))
    workspace = new_output((size.value,), torch.uint8, device) if size.value else None
    if workspace is not None:
        opts.workspace = workspace.data_ptr()
    with _OnDevice(device):
        status = lib.jitattn_backward_h(*[_ref(t) for t in ts[:6]], handle, *[_ref(t) for t in ts[6:]], _ref(tdb),
                                        ctypes.byref(opts), stream_of(device))
    _capi.check(status)
    del keep, keep_variant, workspace  # the allocator reuses it only after the queued work on this stream
    if user_bias_shape is not None:
        db = _sum_to(db.squeeze(1) if squeeze_head else db, user_bias_shape)
    return dq, dk, dv, db


def merge(outputs, lses, write_lse, output_dtype):
    """merge_attentions: ``outputs``/``lses`` stacked tensors or lists; (out, lse or empty)."""
    stacked = isinstance(outputs, torch.Tensor)
    parts = [outputs] if stacked else list(outputs)
    parts_lse = [lses] if stacked else list(lses)
    if not parts or (stacked and (outputs.dim() == 0 or outputs.shape[0] == 0)):
        raise invalid("merge_attentions: no attention to merge (attn_split has no splits)")
    if stacked and (not isinstance(lses, torch.Tensor) or lses.dim() == 0 or lses.shape[0] == 0):
        raise invalid("merge_attentions: lse_split must be a tensor stacked as attn_split, with at least one split")
    device = parts[0].device
    for i, x in enumerate(parts):
        check_tensor(x, f"attn_split[{i}]" if not stacked else "attn_split", device)
    for i, x in enumerate(parts_lse):
        if x.device != device:
            raise invalid(f"lse_split[{i}] is on {x.device} but attn_split is on {device}")
    first = parts[0][0] if stacked else parts[0]
    first_lse = parts_lse[0][0] if stacked else parts_lse[0]
    dtype = DTYPE_OF_CODE[output_dtype] if output_dtype else first.dtype
    out = new_output(first.shape, dtype, device)
    lse = new_output(first_lse.shape if write_lse else (0,), torch.float32, device)
    to, tl = c_tensor(out), (c_tensor(lse) if write_lse else None)
    lib = _capi.lib()
    with _OnDevice(device):
        stream = stream_of(device)
        if stacked:
            a, b = c_tensor(outputs), c_tensor(lses)
            status = lib.jitattn_merge_attentions(_ref(a), _ref(b), _ref(to), _ref(tl), stream)
        else:
            if len(parts_lse) != len(parts):
                raise invalid(f"len(lse_split)={len(parts_lse)} must be len(attn_split)={len(parts)}")
            a = [c_tensor(x) for x in parts]
            b = [c_tensor(x) for x in parts_lse]
            pa = (_T * len(a))(*[ctypes.pointer(x) for x in a])
            pb = (_T * len(b))(*[ctypes.pointer(x) for x in b])
            status = lib.jitattn_merge_attentions_list(pa, pb, len(a), _ref(to), _ref(tl), stream)
    _capi.check(status)
    return out, lse
