"""pytest setup for the Python package: the package under test is the installed one (tools/setup.sh
installs it into .venv), or api/python with JITATTN_LIBRARY when run from a checkout."""
import importlib.util
import math
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if importlib.util.find_spec("jitattn") is None:
    sys.path.insert(0, os.path.join(ROOT, "api", "python"))

HAS_TORCH = importlib.util.find_spec("torch") is not None
requires_torch = pytest.mark.skipif(not HAS_TORCH, reason="torch is not installed")


def _import_test_parts():
    """Every file in tests/python/parts registers an attention part, as a user would; imported
    before the tests are collected so the registry-wide tests parametrize over it too."""
    folder = os.path.join(os.path.dirname(os.path.abspath(__file__)), "parts")
    for file in sorted(os.listdir(folder)):
        if file.endswith(".py"):
            spec = importlib.util.spec_from_file_location(f"jitattn_test_parts.{file[:-3]}", os.path.join(folder, file))
            module = sys.modules[spec.name] = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)


if HAS_TORCH:
    _import_test_parts()


def has_cuda():
    if not HAS_TORCH:
        return False
    import torch

    return torch.cuda.is_available()


requires_gpu = pytest.mark.skipif(not has_cuda(), reason="no CUDA GPU (torch.cuda.is_available() is False)")

INF = -math.inf


def mask(picture):
    """A hand-drawn mask: one line per query row, 'x' for a visible key (0), '.' for a hidden one (-inf)."""
    rows = [line.strip() for line in picture.strip().splitlines()]
    return [[0.0 if c == "x" else INF for c in row] for row in rows]


@pytest.fixture
def poisoned_outputs(monkeypatch):
    """Fills every output the layer allocates (``_torch_launch.new_output``) with NaN (0xFF for
    integer tensors) before a kernel writes it, so an element a kernel forgets fails the
    comparison. GPU test files take it through ``pytest.mark.usefixtures``."""
    from jitattn.ops.fmha import _torch_launch

    real = _torch_launch.new_output

    def poisoned(shape, dtype, device):
        t = real(shape, dtype, device)
        if t.is_floating_point():
            t.fill_(float("nan"))
        else:
            t.fill_(0xFF)
        return t

    monkeypatch.setattr(_torch_launch, "new_output", poisoned)
