"""Why the library would refuse a call, without running it: the C API's ``*_not_supported_reasons``
over tensor-likes (torch tensors, or ``TensorDesc`` with fake device pointers: validation never
reads the memory). Each returns [] when the call would run, else every reason."""
import ctypes

from . import _capi, _tensor


def _refs(**tensors):
    """{name: byref(jitattn_tensor) or None}, with the structs kept alive in the result."""
    structs = {n: _tensor.to_c(x, n) for n, x in tensors.items()}
    return structs, {n: (ctypes.byref(t) if t is not None else None) for n, t in structs.items()}


def _reasons(status):
    if status == _capi.ERROR_UNSUPPORTED:
        return _capi.last_error().reasons
    _capi.check(status)
    return []


def _bias(attn_bias):
    """(the bias object, its handle); a bare tensor is a TensorBias."""
    from .ops.fmha import attn_bias as ab

    if attn_bias is None:
        return None, None
    bias = attn_bias if isinstance(attn_bias, ab.AttentionBias) else ab.TensorBias(attn_bias)
    return bias, bias._c_handle()


def _scale(o, scale):
    if scale is not None:
        o.scale, o.has_scale = float(scale), 1


def not_supported_reasons(query, key, value, out, attn_bias=None, lse=None, *, scale=None, p=0.0, seed=0, offset=0,
                          output_dtype=None):
    """The forward's reasons (with ``lse``: the forward that keeps the log-sum-exp). Biases that
    break their own rules raise jitattn.Error (they are refused when built)."""
    o = _capi.AttentionOptions(p=float(p), seed=int(seed), offset=int(offset))
    _scale(o, scale)
    if output_dtype is not None:
        o.output_dtype = _tensor._dtype_code(output_dtype, "output_dtype")
    _, t = _refs(query=query, key=key, value=value, out=out, lse=lse)
    bias, handle = _bias(attn_bias)
    return _reasons(_capi.lib().jitattn_not_supported_reasons_h(
        t["query"], t["key"], t["value"], handle, t["out"], t["lse"], ctypes.byref(o)))


def backward_not_supported_reasons(grad, out, lse, query, key, value, dq, dk, dv, attn_bias=None, dbias=None, *,
                                   scale=None, p=0.0, seed=0, offset=0, deterministic=False):
    """The backward's reasons (arguments as memory_efficient_attention_backward's)."""
    o = _capi.BackwardOptions(p=float(p), seed=int(seed), offset=int(offset), deterministic=int(bool(deterministic)))
    _scale(o, scale)
    _, t = _refs(grad=grad, out=out, lse=lse, query=query, key=key, value=value, dq=dq, dk=dk, dv=dv, dbias=dbias)
    bias, handle = _bias(attn_bias)
    return _reasons(_capi.lib().jitattn_backward_not_supported_reasons_h(
        t["grad"], t["out"], t["lse"], t["query"], t["key"], t["value"], handle, t["dq"], t["dk"], t["dv"],
        t["dbias"], ctypes.byref(o)))


def merge_not_supported_reasons(outputs, lses, out, lse=None):
    """merge_attentions' reasons: ``outputs``/``lses`` stacked tensors, or lists of them."""
    lib = _capi.lib()
    _, t = _refs(out=out, lse=lse)
    if isinstance(outputs, (list, tuple)):
        n = len(outputs)
        parts = [_tensor.to_c(x, f"outputs[{i}]") for i, x in enumerate(outputs)]
        parts_lse = [_tensor.to_c(x, f"lses[{i}]") for i, x in enumerate(lses)]
        if len(parts_lse) != n:
            raise _capi.Error(_capi.ERROR_INVALID_ARGUMENT, [f"len(lses)={len(parts_lse)} must be len(outputs)={n}"],
                              "JITATTN_ERROR_INVALID_ARGUMENT")
        ptrs = (ctypes.POINTER(_capi.Tensor) * n)(*[ctypes.pointer(x) for x in parts])
        ptrs_lse = (ctypes.POINTER(_capi.Tensor) * n)(*[ctypes.pointer(x) for x in parts_lse])
        return _reasons(lib.jitattn_merge_list_not_supported_reasons(ptrs, ptrs_lse, n, t["out"], t["lse"]))
    _, s = _refs(outputs=outputs, lses=lses)
    return _reasons(lib.jitattn_merge_not_supported_reasons(s["outputs"], s["lses"], t["out"], t["lse"]))
