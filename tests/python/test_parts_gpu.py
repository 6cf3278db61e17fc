"""The registry-wide GPU test: every registered part, forward and backward through jitattn's
kernel against the part's own plain-torch reference (float64), in bf16, f16 and f32. A part
registered anywhere the tests import (the built-ins, tests/python/parts/*.py) is tested here
with nothing else written: ``pytest -k NAME`` runs it.

Tolerance (parts_support.check, as llm.c's checks): |got − ref| <= atol·max(1, max|ref|) +
rtol·|ref|, per dtype, times the part's ``test_tolerance`` (a part that compounds rounding, as
Nyström's pinv, widens it); the first mismatches are printed with their indices."""
import pytest
from conftest import requires_gpu, requires_torch

pytestmark = [requires_torch, requires_gpu]

torch = pytest.importorskip("torch")

import parts_support as ps  # noqa: E402

DTYPES = {"f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16}


@pytest.mark.parametrize("dtype", list(DTYPES), ids=list(DTYPES))
@pytest.mark.parametrize("name", ps.names())
def test_part_gpu_matches_reference(name, dtype):
    ps.forward_backward_check(name, DTYPES[dtype], "cuda")
