"""Why the library would refuse a forward call, without running it: the C API's
``jitattn_not_supported_reasons`` over tensor-likes (torch tensors, or ``TensorDesc`` with fake
device pointers: validation never reads the memory)."""
import ctypes

from . import _capi, _tensor


def _options(scale, p, seed, offset, output_dtype):
    o = _capi.AttentionOptions()
    if scale is not None:
        o.scale, o.has_scale = float(scale), 1
    if output_dtype is not None:
        o.output_dtype = _tensor._dtype_code(output_dtype, "output_dtype")
    o.p, o.seed, o.offset = float(p), int(seed), int(offset)
    return o


def _bias_handle(attn_bias):
    from .ops.fmha import attn_bias as ab

    if attn_bias is None:
        return None, None
    bias = attn_bias if isinstance(attn_bias, ab.AttentionBias) else ab.TensorBias(attn_bias)
    return bias, bias._c_handle()


def not_supported_reasons(query, key, value, out, attn_bias=None, lse=None, *, scale=None, p=0.0, seed=0, offset=0,
                          output_dtype=None):
    """Every reason the forward (with ``lse``: the forward that keeps the log-sum-exp) would
    refuse these inputs; [] when it would run. Biases that break their own rules raise
    jitattn.Error (they are refused when built)."""
    tensors = [_tensor.to_c(x, n) for x, n in ((query, "query"), (key, "key"), (value, "value"), (out, "out"),
                                               (lse, "lse"))]
    bias, handle = _bias_handle(attn_bias)
    refs = [ctypes.byref(t) if t is not None else None for t in tensors]
    status = _capi.lib().jitattn_not_supported_reasons_h(refs[0], refs[1], refs[2], handle, refs[3], refs[4],
                                                         ctypes.byref(_options(scale, p, seed, offset, output_dtype)))
    if status == _capi.ERROR_UNSUPPORTED:
        return _capi.last_error().reasons
    _capi.check(status)
    del bias  # kept alive through the call
    return []
