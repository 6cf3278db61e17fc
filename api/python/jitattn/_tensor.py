"""Tensor-likes as the C API's ``jitattn_tensor``: a view (pointer, dtype, shape, strides in
elements, device) of memory the caller owns and keeps alive.

Three kinds convert: torch tensors (when torch is importable), ``TensorDesc`` (a bare
description: the validation calls take fake device pointers, as tests/c_api_test.c does) and a
writable ``memoryview`` of float32 (format ``f``) or float16 (``e``) host memory, e.g.
``memoryview(array.array("f", values)).cast("B").cast("f", shape)``, so that dense biases work
on the CPU without torch.
"""
import ctypes
from dataclasses import dataclass
from typing import Optional, Sequence, Union

from . import _capi

_DTYPE_NAMES = {"f16": _capi.DTYPE_F16, "float16": _capi.DTYPE_F16, "bf16": _capi.DTYPE_BF16,
                "bfloat16": _capi.DTYPE_BF16, "f32": _capi.DTYPE_F32, "float32": _capi.DTYPE_F32,
                # masks only (BlockSparseMask's layout, a block map's cells): the library refuses them elsewhere
                "u8": _capi.DTYPE_U8, "uint8": _capi.DTYPE_U8, "bool": _capi.DTYPE_U8,
                # a block map's row spans only
                "i32": _capi.DTYPE_I32, "int32": _capi.DTYPE_I32}
_MEMORYVIEW_FORMATS = {"f": _capi.DTYPE_F32, "e": _capi.DTYPE_F16, "B": _capi.DTYPE_U8}


@dataclass(frozen=True)
class TensorDesc:
    """A tensor by description: ``data_ptr`` (an int address), ``dtype`` ("f16", "bf16", "f32"),
    ``shape``, ``stride`` in elements (None: contiguous), ``device`` (CUDA ordinal, or -1 for
    host memory)."""

    data_ptr: int
    dtype: Union[str, int]
    shape: Sequence[int]
    stride: Optional[Sequence[int]] = None
    device: int = 0


def contiguous_strides(shape):
    strides, s = [], 1
    for n in reversed(list(shape)):
        strides.append(s)
        s *= int(n)
    return list(reversed(strides))


def _dtype_code(dtype, name):
    if isinstance(dtype, int):
        return dtype
    key = str(dtype).replace("torch.", "")
    if key not in _DTYPE_NAMES:
        raise _capi.Error(_capi.ERROR_INVALID_ARGUMENT,
                          [f"{name}.dtype={dtype} is not float16, bfloat16 or float32"], "JITATTN_ERROR_INVALID_ARGUMENT")
    return _DTYPE_NAMES[key]


def _fill(t, name, data_ptr, dtype, shape, stride, device):
    shape = [int(n) for n in shape]
    stride = contiguous_strides(shape) if stride is None else [int(s) for s in stride]
    if len(shape) > _capi.MAX_DIMS or len(stride) != len(shape):
        raise _capi.Error(_capi.ERROR_INVALID_ARGUMENT,
                          [f"{name} has {len(shape)} dims and {len(stride)} strides (at most {_capi.MAX_DIMS})"],
                          "JITATTN_ERROR_INVALID_ARGUMENT")
    t.data = data_ptr
    t.dtype = _dtype_code(dtype, name)
    t.ndim = len(shape)
    for i, (n, s) in enumerate(zip(shape, stride)):
        t.shape[i], t.stride[i] = n, s
    t.device = int(device)
    return t


def is_torch_tensor(x):
    mod = type(x).__module__
    return mod.startswith("torch") and hasattr(x, "data_ptr") and hasattr(x, "stride")


def to_c(x, name):
    """``x`` as a ``_capi.Tensor`` (None: None). The caller keeps ``x`` alive while it is used."""
    if x is None:
        return None
    t = _capi.Tensor()
    if isinstance(x, TensorDesc):
        return _fill(t, name, x.data_ptr, x.dtype, x.shape, x.stride, x.device)
    if isinstance(x, memoryview):
        if x.format not in _MEMORYVIEW_FORMATS or x.readonly:
            raise _capi.Error(_capi.ERROR_INVALID_ARGUMENT,
                              [f"{name}: a memoryview must be writable float32 ('f'), float16 ('e') or uint8 ('B', masks), not "
                               f"format {x.format!r}{' (read-only)' if x.readonly else ''}"],
                              "JITATTN_ERROR_INVALID_ARGUMENT")
        base = ctypes.addressof(ctypes.c_char.from_buffer(x)) if x.nbytes else 0
        stride = [s // x.itemsize for s in x.strides]
        return _fill(t, name, base, _MEMORYVIEW_FORMATS[x.format], x.shape, stride, _capi.DEVICE_HOST)
    if is_torch_tensor(x):
        device = _capi.DEVICE_HOST if x.device.type == "cpu" else (x.device.index or 0)
        return _fill(t, name, x.data_ptr(), x.dtype, x.shape, x.stride(), device)
    raise TypeError(f"{name}: expected a torch.Tensor, a jitattn.TensorDesc or a float memoryview, not {type(x).__name__}")
