"""The ctypes declarations against the header, and the C API's ABI rules from Python."""
import ctypes
import os
import shutil
import subprocess

import pytest

import jitattn
from jitattn import _capi
from conftest import ROOT

STRUCTS = {"jitattn_tensor": _capi.Tensor, "jitattn_bias": _capi.Bias,
           "jitattn_attention_options": _capi.AttentionOptions, "jitattn_backward_options": _capi.BackwardOptions,
           "jitattn_jit_stats": _capi.JitStats, "jitattn_capture_decl": _capi.CaptureDecl,
           "jitattn_variant_desc": _capi.VariantDesc, "jitattn_capture_value": _capi.CaptureValue}


def _c_layout(tmp_path):
    """sizeof and every field's offset as the C compiler lays out c_api.h."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler")
    lines = ['#include <stddef.h>', '#include <stdio.h>', '#include "jitattn/c_api.h"', "int main(void) {"]
    for cname, py in STRUCTS.items():
        lines.append(f'printf("{cname} sizeof %zu\\n", sizeof({cname}));')
        for field, _ in py._fields_:
            lines.append(f'printf("{cname} {field} %zu\\n", offsetof({cname}, {field}));')
    lines.append("return 0; }")
    src = tmp_path / "layout.c"
    src.write_text("\n".join(lines))
    exe = tmp_path / "layout"
    subprocess.run([cc, "-std=c11", "-I", os.path.join(ROOT, "api", "include"), str(src), "-o", str(exe)], check=True)
    out = subprocess.run([str(exe)], check=True, capture_output=True, text=True).stdout
    return {(s, f): int(n) for s, f, n in (line.split() for line in out.splitlines())}


def test_struct_layouts_match_the_header(tmp_path):
    layout = _c_layout(tmp_path)
    for cname, py in STRUCTS.items():
        assert ctypes.sizeof(py) == layout[(cname, "sizeof")], cname
        for field, _ in py._fields_:
            assert getattr(py, field).offset == layout[(cname, field)], f"{cname}.{field}"


def test_struct_size_is_set_to_sizeof():
    for py in STRUCTS.values():
        assert py().struct_size == ctypes.sizeof(py)


def _materialize(desc, mq, mkv):
    out = (ctypes.c_double * (mq * mkv))()
    status = _capi.lib().jitattn_materialize(ctypes.byref(desc), 1, 1, mq, mkv, out, mq * mkv)
    return status, list(out)


def test_an_older_smaller_bias_struct_is_accepted():
    seqlens = _capi.int32_array([1, 2], "q_seqlen")
    desc = _capi.Bias(kind=8, num_seqs=2, q_seqlen=seqlens)  # BlockDiagonalCausalMask
    desc.struct_size = _capi.Bias.kv_seqlen.offset  # a caller whose struct ends before kv_seqlen
    status, values = _materialize(desc, 3, 3)
    assert status == _capi.OK, _capi.last_error().reasons
    assert [v == 0 for v in values] == [True, False, False, False, True, False, False, True, True]


def test_a_newer_struct_with_unknown_fields_set_is_refused():
    seqlens = _capi.int32_array([2], "q_seqlen")
    buf = (ctypes.c_char * (ctypes.sizeof(_capi.Bias) + 8))()
    desc = _capi.Bias.from_buffer(buf)
    desc.kind, desc.num_seqs, desc.q_seqlen = 7, 1, seqlens
    desc.struct_size = len(buf)
    buf[ctypes.sizeof(_capi.Bias)] = b"\x01"
    status, _ = _materialize(desc, 2, 2)
    assert status == _capi.ERROR_INVALID_ARGUMENT
    assert any("struct_size" in r and "not zero" in r for r in _capi.last_error().reasons)
    buf[ctypes.sizeof(_capi.Bias)] = b"\x00"  # zero tail: accepted
    assert _materialize(desc, 2, 2)[0] == _capi.OK


def test_struct_size_zero_is_invalid():
    desc = _capi.Bias(kind=2)
    desc.struct_size = 0
    status, _ = _materialize(desc, 1, 1)
    assert status == _capi.ERROR_INVALID_ARGUMENT
    assert "struct_size" in _capi.last_error().reasons[0]


def test_check_raises_the_threads_reasons_and_success_clears_them():
    lib = _capi.lib()
    with pytest.raises(jitattn.Error) as e:
        _capi.check(lib.jitattn_bias_create(None, ctypes.byref(ctypes.POINTER(_capi.BiasHandle)())))
    assert e.value.status == _capi.ERROR_INVALID_ARGUMENT
    assert e.value.status_name == "JITATTN_ERROR_INVALID_ARGUMENT"
    assert any("desc" in r for r in e.value.reasons)
    _capi.check(lib.jitattn_get_jit_stats(ctypes.byref(_capi.JitStats())))
    assert lib.jitattn_last_error_count() == 0 and lib.jitattn_last_error_message() == b""


def test_status_names():
    lib = _capi.lib()
    assert lib.jitattn_status_name(_capi.OK) == b"JITATTN_OK"
    assert lib.jitattn_status_name(_capi.ERROR_CUDA) == b"JITATTN_ERROR_CUDA"
    assert lib.jitattn_status_name(99) == b"unknown"


def test_int32_fields_out_of_range_name_the_argument():
    with pytest.raises(jitattn.Error) as e:
        _capi.int32_array([1, 2**31], "q_seqlen")
    assert e.value.reasons == ["q_seqlen[1]=2147483648 does not fit in int32"]


def test_cache_path_and_stats():
    path = ctypes.c_char_p()
    _capi.check(_capi.lib().jitattn_cache_path(ctypes.byref(path)))
    assert path.value.endswith(b".sqlite")
    stats = _capi.JitStats()
    _capi.check(_capi.lib().jitattn_get_jit_stats(ctypes.byref(stats)))
    assert stats.compiles >= 0
