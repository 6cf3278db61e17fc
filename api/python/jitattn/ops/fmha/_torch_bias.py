"""How a bias object crosses the torch.library custom ops, and the C handle a call uses.

A custom op takes tensors, ints, floats and bools; a bias object is none of them. Each bias
therefore travels as ``(bias_tensor, bias_key, kind, a, b)`` (``op_args``), in one of four forms
chosen so that torch.compile(fullgraph=True) traces the caller without a graph break and
without recompiling when a new bias object comes each step:

- no bias: ``kind`` 0.
- a dense tensor (a torch.Tensor, ``TensorBias``, ``LowerTriangularMaskWithTensorBias``): the
  tensor itself is an op input, so autograd and the compiler see it (it may require grad).
- masks with nothing but ints (``LowerTriangularMask``, ``...FromBottomRight``, the local
  windows): ``kind`` and the window ints. Nothing else is read, so such a mask may be built
  inside the compiled function, as xFormers code often does.
- masks with device arrays (block-diagonal, padded, gappy, paged, ALiBi): ``bias_key``, a 0-dim
  int64 CPU tensor made with the object's C handle (``_bias_base``), naming the object in a
  weak registry. Why a tensor and not an int: dynamo guards an int read from an object's
  attribute on its value, so every new bias object (new packed lengths each batch) would
  recompile; a tensor input is guarded on dtype and shape only. The op's real implementation
  (never traced) reads the key on the host (no device sync) and takes the object's handle for
  the call's device.

A bias's device arrays are torch tensors made once per object and device (``device_handle``)
and handed to the library as its ``*_device`` pointers, so they come from torch's allocator and
are never uploaded again; the first use on a device must happen outside CUDA-graph capture.
"""
import ctypes
import weakref

import torch

from ... import _capi
from . import _bias_base
from ._seqinfo import _KeySeqInfo
from .attn_bias import AttentionBias

TENSOR_KINDS = (1, 3)       # TensorBias, LowerTriangularMaskWithTensorBias
PLAIN_KINDS = (2, 4, 5, 6)  # ints only
PAGED_KINDS = (18, 19, 20, 21, 22)


def op_args(attn_bias):
    """``(bias_tensor, bias_key, kind, a, b)`` for ``attn_bias`` (None, a tensor or a bias)."""
    if attn_bias is None:
        return None, None, 0, 0, 0
    if isinstance(attn_bias, torch.Tensor):
        return attn_bias, None, 1, 0, 0
    if not isinstance(attn_bias, AttentionBias):
        raise TypeError(f"attn_bias: expected None, a torch.Tensor or a jitattn.ops.fmha.attn_bias class, "
                        f"not {type(attn_bias).__name__}")
    kind = attn_bias._KIND
    if kind in TENSOR_KINDS:
        return attn_bias._bias, None, kind, 0, 0
    if kind == 5:
        return None, None, kind, attn_bias._window_size, 0
    if kind == 6:
        return None, None, kind, attn_bias.window_left, attn_bias.window_right
    if kind in PLAIN_KINDS:
        return None, None, kind, 0, 0
    key = attn_bias.__dict__.get("_jitattn_key")
    if key is None:  # built without its constructor's check (e.g. BlockDiagonalMask(q, k)): check it now
        attn_bias._c_handle()
        key = attn_bias.__dict__["_jitattn_key"]
    return None, key, kind, 0, 0


# ---- handles ------------------------------------------------------------------------------------
_plain_handles = {}  # (kind, a, b) -> handle; a handful, kept for the process


def _create(desc):
    h = ctypes.POINTER(_capi.BiasHandle)()
    _capi.check(_capi.lib().jitattn_bias_create(ctypes.byref(desc), ctypes.byref(h)))
    return h


def plain_handle(kind, a, b):
    """The handle of a mask with ints only (no device arrays): made once per distinct value."""
    h = _plain_handles.get((kind, a, b))
    if h is None:
        desc = _capi.Bias(kind=kind)
        if kind == 5:
            desc.window_size = _capi.int32(a, "window_size")
        elif kind == 6:
            desc.window_left, desc.window_right = _capi.int32(a, "window_left"), _capi.int32(b, "window_right")
        h = _plain_handles[(kind, a, b)] = _create(desc)
    return h


class TensorHandle:
    """A handle over one call's dense bias tensor (its pointer is part of the handle), destroyed
    with this object; nothing is uploaded."""

    def __init__(self, kind, tensor):
        from ._torch_launch import c_tensor  # (which imports this module)

        desc = _capi.Bias(kind=kind)
        self._t = c_tensor(tensor)
        desc.tensor = ctypes.pointer(self._t)
        self.h = _create(desc)

    def __del__(self):
        h, self.h = getattr(self, "h", None), None
        if h:
            _capi.lib().jitattn_bias_destroy(h)


def _geometric(n):
    return [2.0 ** (-8.0 * (h + 1) / n) for h in range(n)]


def _on(values, dtype, device):
    return torch.tensor(values, dtype=dtype).to(device)


def _device_arrays(bias, device):
    """{desc field: tensor on ``device``} for the arrays the kernels read (c_api.h's *_device)."""
    arrays = {}
    q, k = getattr(bias, "q_seqinfo", None), getattr(bias, "k_seqinfo", None)
    paged = bias._KIND in PAGED_KINDS
    if q is not None:
        arrays["q_seqstart_device"] = _on(q.seqstart_py, torch.int32, device)
    if k is not None:
        if not paged:  # make_paged recomputes the key starts: the library keeps (and uploads) those
            arrays["kv_seqstart_device"] = _on(bias._c_kv_seqstarts(), torch.int32, device)
        if isinstance(k, _KeySeqInfo):  # padded, gappy, paged: the key lengths
            arrays["kv_seqlen_device"] = _on(k.seqlen_py, torch.int32, device)
    tables = getattr(bias, "block_tables", None)
    if tables is not None:
        if isinstance(tables, torch.Tensor) and tables.device == device and tables.dtype == torch.int32 \
                and tables.is_contiguous():
            arrays["block_tables_device"] = tables  # the caller's: updates between graph replays are seen
        else:
            rows = tables.tolist() if hasattr(tables, "tolist") else [list(r) for r in tables]
            arrays["block_tables_device"] = _on([x for r in rows for x in r], torch.int32, device)
    if hasattr(bias, "_alibi_heads"):
        slopes = bias._alibi_slopes if bias._alibi_slopes is not None else _geometric(bias._alibi_heads)
        arrays["alibi_slopes_device"] = _on(slopes, torch.float32, device)
    return arrays


def _destroy(h):
    _capi.lib().jitattn_bias_destroy(h)


def device_handle(bias, device):
    """``bias``'s handle for ``device``: made on first use there, its arrays torch tensors kept
    with the object (``bias._jitattn_device[index]``), so later calls (and CUDA-graph replays)
    read the same memory."""
    per_device = bias.__dict__.setdefault("_jitattn_device", {})
    entry = per_device.get(device.index)
    if entry is None:
        if device.type == "cuda" and torch.cuda.is_current_stream_capturing():
            raise _capi.Error(_capi.ERROR_INVALID_ARGUMENT, [
                f"{type(bias).__name__} is used for the first time on {device} during CUDA-graph capture, where its "
                f"device arrays cannot be uploaded: call it once before the capture, or jitattn.ops.prepare_bias(bias, '{device}')"],
                "JITATTN_ERROR_INVALID_ARGUMENT")
        desc, keep = bias._c_desc()
        arrays = _device_arrays(bias, device)
        for field, t in arrays.items():
            setattr(desc, field, ctypes.cast(t.data_ptr(), _capi._f32p if field == "alibi_slopes_device" else _capi._i32p))
        h = _create(desc)
        entry = per_device[device.index] = (h, arrays, weakref.finalize(bias, _destroy, h))
    return entry[0]


def prepare(bias, device):
    """Makes ``bias``'s device arrays on ``device`` now (e.g. before capturing a CUDA graph)."""
    device = torch.device(device)
    if device.index is None:
        device = torch.device(device.type, torch.cuda.current_device())
    if isinstance(bias, AttentionBias) and bias._KIND not in TENSOR_KINDS + PLAIN_KINDS:
        device_handle(bias, device)
    return bias


def handle_for_call(bias_tensor, bias_key, kind, a, b, device, bias_obj=None):
    """(the C handle, what must stay alive until the call returns) for one call."""
    if kind == 0:
        return None, None
    if kind in TENSOR_KINDS:
        th = TensorHandle(kind, bias_tensor)
        return th.h, th
    if kind in PLAIN_KINDS:
        return plain_handle(kind, a, b), None
    if bias_obj is None:
        bias_obj = _bias_base.registered(int(bias_key))
        if bias_obj is None:
            raise _capi.Error(_capi.ERROR_INVALID_ARGUMENT, [f"attn_bias: no live bias object has key {int(bias_key)}"],
                              "JITATTN_ERROR_INVALID_ARGUMENT")
    return device_handle(bias_obj, device), None
