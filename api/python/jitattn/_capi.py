"""ctypes declarations of the C API (api/include/jitattn/c_api.h) and its error handling.

One module owns the ABI: the structs as the header lays them out (each created with
``struct_size`` set to its ``ctypes.sizeof``), every function's argument and result types, and
``check()``, which turns a failed status into ``jitattn.Error`` carrying the library's reasons.
Nothing here knows about torch.

The library is looked for, in order: the copy bundled in the package (``jitattn/lib/``, put there
by ``pip install .``), the file named by ``JITATTN_LIBRARY``, then the system's ``libjitattn``
(``cmake --install``).
"""
import ctypes
import ctypes.util
import os
import threading

# ---- statuses (c_api.h) ---------------------------------------------------------------------
OK = 0
ERROR_INVALID_ARGUMENT = 1
ERROR_UNSUPPORTED = 2
ERROR_COMPILE = 3
ERROR_CUDA = 4
ERROR_OUT_OF_MEMORY = 5
ERROR_INTERNAL = 6
ERROR_CACHE_MISS = 7  # C API version 2

DTYPE_UNSET, DTYPE_F16, DTYPE_BF16, DTYPE_F32, DTYPE_U8, DTYPE_I32 = 0, 1, 2, 3, 4, 5
DEVICE_HOST = -1
MAX_DIMS = 6


class Error(RuntimeError):
    """A failed C API call: ``status`` (a JITATTN_* code), ``status_name`` and ``reasons``, each
    naming the argument and the rule it breaks, as the C++ ``jitattn::Error::reasons()``."""

    def __init__(self, status, reasons, status_name=None):
        self.status = status
        self.status_name = status_name or str(status)
        self.reasons = list(reasons)
        super().__init__("; ".join(self.reasons) or self.status_name)


class _Struct(ctypes.Structure):
    """A C API struct whose first field is ``size_t struct_size``, set at construction."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.struct_size = ctypes.sizeof(self)


class Tensor(_Struct):
    _fields_ = [
        ("struct_size", ctypes.c_size_t),
        ("data", ctypes.c_void_p),
        ("dtype", ctypes.c_int32),
        ("ndim", ctypes.c_int32),
        ("shape", ctypes.c_int64 * MAX_DIMS),
        ("stride", ctypes.c_int64 * MAX_DIMS),
        ("device", ctypes.c_int32),
    ]


_i32p = ctypes.POINTER(ctypes.c_int32)
_f32p = ctypes.POINTER(ctypes.c_float)


class Bias(_Struct):
    _fields_ = [
        ("struct_size", ctypes.c_size_t),
        ("kind", ctypes.c_int32),
        ("num_seqs", ctypes.c_int32),
        ("q_seqlen", _i32p),
        ("kv_seqlen", _i32p),
        ("kv_seqstarts", _i32p),
        ("kv_padding", ctypes.c_int32),
        ("window_size", ctypes.c_int32),
        ("window_left", ctypes.c_int32),
        ("window_right", ctypes.c_int32),
        ("tensor", ctypes.POINTER(Tensor)),
        ("block_tables", _i32p),
        ("max_pages", ctypes.c_int32),
        ("page_size", ctypes.c_int32),
        ("alibi_slopes", _f32p),
        ("alibi_num_slopes", ctypes.c_int32),
        ("reserved0", ctypes.c_int32),
        ("q_seqstart_device", _i32p),
        ("kv_seqstart_device", _i32p),
        ("kv_seqlen_device", _i32p),
        ("block_tables_device", _i32p),
        ("alibi_slopes_device", _f32p),
        ("block_size", ctypes.c_int32),
        ("block_sparse_causal", ctypes.c_int32),
    ]


class CaptureDecl(_Struct):
    _fields_ = [
        ("struct_size", ctypes.c_size_t),
        ("name", ctypes.c_char_p),
        ("kind", ctypes.c_int32),
        ("type", ctypes.c_int32),
        ("rank", ctypes.c_int32),
    ]


class VariantDesc(_Struct):
    _fields_ = [
        ("struct_size", ctypes.c_size_t),
        ("mask_mod", ctypes.c_char_p),
        ("score_mod", ctypes.c_char_p),
        ("score_grad", ctypes.c_char_p),
        ("additive", ctypes.c_int32),
        ("num_captures", ctypes.c_int32),
        ("captures", ctypes.POINTER(CaptureDecl)),
    ]


class CaptureValue(_Struct):
    _fields_ = [
        ("struct_size", ctypes.c_size_t),
        ("data", ctypes.c_void_p),
        ("shape", ctypes.c_int64 * 4),
        ("stride", ctypes.c_int64 * 4),
        ("value", ctypes.c_double),
    ]


class VariantHandle(ctypes.Structure):
    """Opaque jitattn_variant."""


class BlockMap(_Struct):
    _fields_ = [
        ("struct_size", ctypes.c_size_t),
        ("cells", Tensor),
        ("cell_size", ctypes.c_int32),
        ("reserved0", ctypes.c_int32),
        ("mq", ctypes.c_int64),
        ("mkv", ctypes.c_int64),
        ("variant_id", ctypes.c_uint64),
        ("spans", Tensor),
    ]


class AttentionOptions(_Struct):
    _fields_ = [
        ("struct_size", ctypes.c_size_t),
        ("scale", ctypes.c_double),
        ("has_scale", ctypes.c_int32),
        ("output_dtype", ctypes.c_int32),
        ("p", ctypes.c_double),
        ("seed", ctypes.c_uint64),
        ("offset", ctypes.c_uint64),
        ("variant", ctypes.POINTER(VariantHandle)),
        ("num_capture_values", ctypes.c_int32),
        ("capture_values", ctypes.POINTER(CaptureValue)),
        ("block_map", ctypes.POINTER(BlockMap)),
    ]


class BackwardOptions(_Struct):
    _fields_ = [
        ("struct_size", ctypes.c_size_t),
        ("scale", ctypes.c_double),
        ("has_scale", ctypes.c_int32),
        ("deterministic", ctypes.c_int32),
        ("p", ctypes.c_double),
        ("seed", ctypes.c_uint64),
        ("offset", ctypes.c_uint64),
        ("workspace", ctypes.c_void_p),
        ("variant", ctypes.POINTER(VariantHandle)),
        ("num_capture_values", ctypes.c_int32),
        ("capture_values", ctypes.POINTER(CaptureValue)),
        ("block_map", ctypes.POINTER(BlockMap)),
    ]


class JitStats(_Struct):
    _fields_ = [
        ("struct_size", ctypes.c_size_t),
        ("compiles", ctypes.c_int64),
        ("memory_hits", ctypes.c_int64),
        ("db_hits", ctypes.c_int64),
        ("loads", ctypes.c_int64),
        ("claim_hits", ctypes.c_int64),
    ]


class BiasHandle(ctypes.Structure):
    """Opaque jitattn_bias_handle."""


_T = ctypes.POINTER(Tensor)
_B = ctypes.POINTER(Bias)
_H = ctypes.POINTER(BiasHandle)
_FO = ctypes.POINTER(AttentionOptions)
_BO = ctypes.POINTER(BackwardOptions)
_S = ctypes.c_int32  # jitattn_status
_c = ctypes.c_void_p  # stream
_i64 = ctypes.c_int64
_dp = ctypes.POINTER(ctypes.c_double)
_TL = ctypes.POINTER(_T)  # const jitattn_tensor* const*

# name: (restype, argtypes). Every function of c_api.h.
_SIGNATURES = {
    "jitattn_status_name": (ctypes.c_char_p, [_S]),
    "jitattn_last_error_count": (ctypes.c_size_t, []),
    "jitattn_last_error_reason": (ctypes.c_char_p, [ctypes.c_size_t]),
    "jitattn_last_error_message": (ctypes.c_char_p, []),
    "jitattn_last_error_status": (_S, []),
    "jitattn_version": (ctypes.c_char_p, []),
    "jitattn_version_numbers": (None, [_i32p, _i32p, _i32p]),
    "jitattn_c_api_version": (ctypes.c_int32, []),
    "jitattn_bias_kind_name": (ctypes.c_char_p, [ctypes.c_int32]),
    "jitattn_bias_create": (_S, [_B, ctypes.POINTER(_H)]),
    "jitattn_bias_destroy": (None, [_H]),
    "jitattn_variant_create": (_S, [ctypes.POINTER(VariantDesc), ctypes.POINTER(ctypes.POINTER(VariantHandle))]),
    "jitattn_variant_destroy": (None, [ctypes.POINTER(VariantHandle)]),
    "jitattn_variant_id": (ctypes.c_uint64, [ctypes.POINTER(VariantHandle)]),
    "jitattn_block_map_build": (_S, [ctypes.POINTER(VariantHandle), ctypes.c_int32, ctypes.POINTER(CaptureValue), _i64, _i64,
                                     ctypes.c_int32, _T, ctypes.POINTER(BlockMap), _c]),
    "jitattn_block_map_build_spans": (_S, [ctypes.POINTER(VariantHandle), ctypes.c_int32, ctypes.POINTER(CaptureValue), _i64,
                                           _i64, ctypes.c_int32, _T, _T, ctypes.POINTER(BlockMap), _c]),
    "jitattn_variant_materialize": (_S, [ctypes.POINTER(VariantHandle), ctypes.c_int32, ctypes.POINTER(CaptureValue), _T, _c]),
    "jitattn_materialize": (_S, [_B, _i64, _i64, _i64, _i64, _dp, ctypes.c_size_t]),
    "jitattn_materialize_h": (_S, [_H, _i64, _i64, _i64, _i64, _dp, ctypes.c_size_t]),
    "jitattn_forward": (_S, [_T, _T, _T, _B, _T, _FO, _c]),
    "jitattn_forward_h": (_S, [_T, _T, _T, _H, _T, _FO, _c]),
    "jitattn_forward_requires_grad": (_S, [_T, _T, _T, _B, _T, _T, _FO, _c]),
    "jitattn_forward_requires_grad_h": (_S, [_T, _T, _T, _H, _T, _T, _FO, _c]),
    "jitattn_not_supported_reasons": (_S, [_T, _T, _T, _B, _T, _T, _FO]),
    "jitattn_not_supported_reasons_h": (_S, [_T, _T, _T, _H, _T, _T, _FO]),
    "jitattn_backward": (_S, [_T, _T, _T, _T, _T, _T, _B, _T, _T, _T, _T, _BO, _c]),
    "jitattn_backward_h": (_S, [_T, _T, _T, _T, _T, _T, _H, _T, _T, _T, _T, _BO, _c]),
    "jitattn_backward_not_supported_reasons": (_S, [_T, _T, _T, _T, _T, _T, _B, _T, _T, _T, _T, _BO]),
    "jitattn_backward_not_supported_reasons_h": (_S, [_T, _T, _T, _T, _T, _T, _H, _T, _T, _T, _T, _BO]),
    "jitattn_backward_workspace_bytes": (_S, [_T, _T, _T, _B, _BO, ctypes.POINTER(ctypes.c_size_t)]),
    "jitattn_backward_workspace_bytes_h": (_S, [_T, _T, _T, _H, _BO, ctypes.POINTER(ctypes.c_size_t)]),
    "jitattn_partial": (_S, [_T, _T, _T, _B, _T, _T, _FO, _c]),
    "jitattn_partial_h": (_S, [_T, _T, _T, _H, _T, _T, _FO, _c]),
    "jitattn_merge_attentions": (_S, [_T, _T, _T, _T, _c]),
    "jitattn_swiglu_forward": (_S, [_T, _T, _c]),
    "jitattn_swiglu_backward": (_S, [_T, _T, _T, _c]),
    "jitattn_merge_attentions_list": (_S, [_TL, _TL, ctypes.c_size_t, _T, _T, _c]),
    "jitattn_merge_not_supported_reasons": (_S, [_T, _T, _T, _T]),
    "jitattn_merge_list_not_supported_reasons": (_S, [_TL, _TL, ctypes.c_size_t, _T, _T]),
    "jitattn_cache_path": (_S, [ctypes.POINTER(ctypes.c_char_p)]),
    "jitattn_get_jit_stats": (_S, [ctypes.POINTER(JitStats)]),
    "jitattn_prewarm": (_S, [ctypes.c_char_p, ctypes.c_char_p, _i32p]),
}

LIBRARY_ENV = "JITATTN_LIBRARY"
_BUNDLED = os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib", "libjitattn.so")


def library_candidates():
    """Where the library is looked for, in order (paths or names for ctypes.CDLL)."""
    found = [_BUNDLED] if os.path.exists(_BUNDLED) else []
    if os.environ.get(LIBRARY_ENV):
        found.append(os.environ[LIBRARY_ENV])
    system = ctypes.util.find_library("jitattn")
    if system:
        found.append(system)
    return found


_lib = None
_lock = threading.Lock()


def lib():
    """The loaded library with every function declared (loaded on first use)."""
    global _lib
    if _lib is None:
        with _lock:
            if _lib is None:
                _lib = _load()
    return _lib


def _load():
    candidates = library_candidates()
    if not candidates:
        raise ImportError(
            "jitattn: libjitattn.so not found: not bundled in the package (pip install .), "
            f"{LIBRARY_ENV} unset, and no system libjitattn")
    errors = []
    for path in candidates:
        try:
            loaded = ctypes.CDLL(path)
        except OSError as e:
            errors.append(f"{path}: {e}")
            continue
        for name, (restype, argtypes) in _SIGNATURES.items():
            fn = getattr(loaded, name)
            fn.restype, fn.argtypes = restype, argtypes
        loaded.jitattn_path = path
        return loaded
    raise ImportError("jitattn: cannot load libjitattn.so: " + "; ".join(errors))


def last_error():
    """The calling thread's last failure as an Error (reasons may be empty after success)."""
    l = lib()
    status = l.jitattn_last_error_status()
    reasons = [l.jitattn_last_error_reason(i).decode() for i in range(l.jitattn_last_error_count())]
    return Error(status, reasons, l.jitattn_status_name(status).decode())


def check(status):
    """Raises the thread's last error unless ``status`` is OK. Call right after the C call, on
    the same thread (the reasons are per thread)."""
    if status != OK:
        err = last_error()
        if err.status != status:  # cannot happen per the ABI rules; keep the caller's status
            err = Error(status, err.reasons, lib().jitattn_status_name(status).decode())
        raise err


_INT32_MIN, _INT32_MAX = -(2**31), 2**31 - 1


def int32(value, name):
    """``value`` as an int the C side takes as int32_t, or Error naming ``name``."""
    value = int(value)
    if not _INT32_MIN <= value <= _INT32_MAX:
        raise Error(ERROR_INVALID_ARGUMENT, [f"{name}={value} does not fit in int32"], "JITATTN_ERROR_INVALID_ARGUMENT")
    return value


def int32_array(values, name):
    """A ctypes int32 array of a Python sequence (None stays None)."""
    if values is None:
        return None
    values = [int32(v, f"{name}[{i}]") for i, v in enumerate(values)]
    return (ctypes.c_int32 * len(values))(*values)
