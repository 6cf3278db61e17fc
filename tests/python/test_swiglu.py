"""jitattn.ops.SwiGLU / swiglu without a GPU: xFormers' constructor and parameter layout, the
functional form equal to the module, and the formula (CPU tensors take torch's path)."""
import pytest

from conftest import requires_torch

pytestmark = requires_torch
torch = pytest.importorskip("torch")

from jitattn import ops  # noqa: E402


def test_module_layout_as_xformers():
    m = ops.SwiGLU(16, 24)
    assert tuple(m.w12.weight.shape) == (48, 16) and tuple(m.w3.weight.shape) == (16, 24)
    u = ops.SwiGLU(16, 24, 8, bias=False, _pack_weights=False)
    assert u.w12 is None and u.w1.bias is None and tuple(u.w3.weight.shape) == (8, 24)
    w1, b1, w2, b2, w3, b3 = m._ordered_params()
    assert tuple(w1.shape) == (24, 16) and tuple(b2.shape) == (24,)


def test_formula_module_and_functional_agree_on_cpu():
    torch.manual_seed(0)
    m = ops.SwiGLU(16, 24).double()
    x = torch.randn(3, 5, 16, dtype=torch.float64)
    w1, b1, w2, b2, w3, b3 = m._ordered_params()
    want = torch.nn.functional.linear(torch.nn.functional.silu(x @ w1.T + b1) * (x @ w2.T + b2), w3, b3)
    assert torch.allclose(m(x), want)
    assert torch.allclose(ops.swiglu(x, w1, b1, w2, b2, w3, b3), want)


def test_odd_x12_is_refused():
    import jitattn

    with pytest.raises(jitattn.Error, match="must be even"):
        ops.swiglu_gate(torch.zeros(2, 5))
