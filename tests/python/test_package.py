"""The package imports, reports the library's version, and finds its library in the documented order."""
import os
import re

import jitattn
from jitattn import _capi
from conftest import ROOT


def test_version_is_the_cmake_project_version():
    with open(os.path.join(ROOT, "CMakeLists.txt")) as f:
        want = re.search(r"project\(jitattn VERSION ([0-9.]+)", f.read()).group(1)
    assert jitattn.version() == want
    assert jitattn.__version__ == want


def test_c_api_version_is_at_least_the_bindings():
    assert jitattn.c_api_version() >= 1


def test_library_is_one_of_the_candidates_bundled_first():
    candidates = jitattn.library_candidates()
    assert jitattn.library_path() in candidates
    bundled = os.path.join(os.path.dirname(_capi.__file__), "lib", "libjitattn.so")
    if os.path.exists(bundled):
        assert candidates[0] == bundled
    elif os.environ.get(_capi.LIBRARY_ENV):
        assert candidates[0] == os.environ[_capi.LIBRARY_ENV]


def test_every_declared_function_exists():
    lib = _capi.lib()
    for name in _capi._SIGNATURES:
        assert getattr(lib, name).argtypes is not None, name


def test_error_carries_status_and_reasons():
    e = jitattn.Error(_capi.ERROR_UNSUPPORTED, ["a", "b"], "JITATTN_ERROR_UNSUPPORTED")
    assert isinstance(e, RuntimeError)
    assert (e.status, e.status_name, e.reasons, str(e)) == (2, "JITATTN_ERROR_UNSUPPORTED", ["a", "b"], "a; b")


def test_ops_mirrors_xformers_names():
    from jitattn import ops
    from jitattn.ops import fmha

    assert ops.fmha is fmha
    assert ops.LowerTriangularMask is fmha.attn_bias.LowerTriangularMask
    assert ops.BlockDiagonalMask is fmha.attn_bias.BlockDiagonalMask


def test_the_torch_functions_exist_exactly_when_torch_does():
    from jitattn import ops
    from conftest import HAS_TORCH

    names = ["memory_efficient_attention", "memory_efficient_attention_forward",
             "memory_efficient_attention_forward_requires_grad", "memory_efficient_attention_backward",
             "memory_efficient_attention_partial", "merge_attentions"]
    assert [hasattr(ops, n) for n in names] == [HAS_TORCH] * len(names)
    assert [hasattr(ops.fmha, n) for n in names] == [HAS_TORCH] * len(names)
