"""The registry-wide GPU test: every registered part, forward and backward through jitattn's
kernel against the part's own plain-torch reference (float64), in bf16, f16 and f32. A part
registered anywhere the tests import (the built-ins, tests/python/parts/*.py) is tested here
with nothing else written: ``pytest -k NAME`` runs it.

Tolerance (as llm.c's checks): |got − ref| <= atol·max(1, max|ref|) + rtol·|ref|, per dtype,
times the part's ``test_tolerance`` (a part that compounds rounding, as Nyström's pinv, widens
it); the first mismatches are printed with their indices."""
import pytest
from conftest import requires_gpu, requires_torch

pytestmark = [requires_torch, requires_gpu]

torch = pytest.importorskip("torch")

import parts_support as ps  # noqa: E402

TOLERANCE = {torch.float32: (2e-4, 2e-4), torch.float16: (4e-3, 4e-3), torch.bfloat16: (3e-2, 3e-2)}
DTYPES = {"f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16}


def check(what, got, ref, dtype, widen):
    atol, rtol = TOLERANCE[dtype]
    got, ref = got.double(), ref.double()
    assert torch.isfinite(got).all(), f"{what}: non-finite values"
    bound = widen * (atol * max(1.0, ref.abs().max().item()) + rtol * ref.abs())
    bad = ((got - ref).abs() > bound).nonzero()
    if len(bad):
        rows = [f"  {tuple(i.tolist())}: got {got[tuple(i)].item():.6g} ref {ref[tuple(i)].item():.6g}" for i in bad[:5]]
        pytest.fail(f"{what}: {len(bad)} of {ref.numel()} values off (max |diff| {(got - ref).abs().max().item():.3g})\n"
                    + "\n".join(rows))


@pytest.mark.parametrize("dtype", list(DTYPES), ids=list(DTYPES))
@pytest.mark.parametrize("name", ps.names())
def test_part_gpu_matches_reference(name, dtype):
    dtype = DTYPES[dtype]
    torch.manual_seed(0)
    part = ps.build(name).to("cuda", dtype)
    widen = getattr(part, "test_tolerance", 1.0)
    q, k, v = ps.inputs(part, dtype, "cuda", requires_grad=True)
    out = part(q, k, v)
    assert out.dtype == dtype and out.shape == q.shape
    grad = torch.randn_like(out)
    out.backward(grad)
    got = [q.grad, k.grad, v.grad] + [p.grad.clone() for p in part.parameters()]
    for p in part.parameters():
        p.grad = None

    q64, k64, v64 = (x.detach().double().requires_grad_() for x in (q, k, v))
    ref = part.reference(q64, k64, v64)
    ref.backward(grad.double())
    want = [q64.grad, k64.grad, v64.grad] + [p.grad for p in part.parameters()]

    check(f"{name} out", out, ref, dtype, widen)
    for label, g, w in zip(["dq", "dk", "dv"] + [f"d{n}" for n, _ in part.named_parameters()], got, want):
        check(f"{name} {label}", g, w, dtype, widen)
