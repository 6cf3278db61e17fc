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
