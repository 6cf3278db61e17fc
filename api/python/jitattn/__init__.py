"""jitattn: xFormers' memory_efficient_attention with kernels JIT-compiled by NVRTC.

Pure Python over the library's C API (ctypes; no compiled extension, no torch ABI):
``jitattn.Error`` carries the library's reasons; ``jitattn.ops`` mirrors ``xformers.ops``.
"""
from . import _capi
from ._capi import Error, library_candidates  # noqa: F401
from ._tensor import TensorDesc  # noqa: F401
from .parts import (  # noqa: F401  (no torch needed: a part is built, and torch imported, by build_attention)
    AttentionConfig,
    ConfigError,
    build_attention,
    register_attention,
    registered_attentions,
)
from .variant import Variant  # noqa: F401
from .validation import backward_not_supported_reasons, merge_not_supported_reasons, not_supported_reasons  # noqa: F401


def version() -> str:
    """The loaded library's version, e.g. "0.1.0"."""
    return _capi.lib().jitattn_version().decode()


def c_api_version() -> int:
    """The JITATTN_C_API_VERSION the library was built with."""
    return _capi.lib().jitattn_c_api_version()


def library_path() -> str:
    """The file the library was loaded from."""
    return _capi.lib().jitattn_path


__version__ = version()


def __getattr__(name):
    """``jitattn.Attention`` (a part's base, a torch module) and ``jitattn.nn``, imported on first use."""
    if name == "Attention":
        from .parts.base import Attention

        return Attention
    if name == "nn":
        import importlib

        return importlib.import_module(".nn", __name__)
    raise AttributeError(f"module 'jitattn' has no attribute {name!r}")
