"""jitattn.ops.SwiGLU on the GPU: the fused gate's forward and backward against float64 torch,
f16/bf16/f32, under autocast, through torch.compile(fullgraph=True); outputs poisoned first."""
import pytest

from conftest import requires_gpu, requires_torch

pytestmark = [requires_torch, requires_gpu, pytest.mark.usefixtures("poisoned_outputs")]
torch = pytest.importorskip("torch")

from jitattn import ops  # noqa: E402

TOL = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1.6e-2}
GTOL = {torch.float32: 1e-5, torch.float16: 5e-3, torch.bfloat16: 3e-2}


def rel(a, b):
    return float((a.double() - b.double()).norm() / b.double().norm())


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
@pytest.mark.parametrize("shape", [(4, 37, 96), (1, 1, 13)])
def test_gate_forward_and_backward_against_float64(dtype, shape):
    x12 = (torch.randn(*shape[:-1], 2 * shape[-1], device="cuda") * 2).to(dtype).requires_grad_(True)
    h = ops.swiglu_gate(x12)
    x64 = x12.detach().double().requires_grad_(True)
    a, b = x64.chunk(2, dim=-1)
    want = torch.nn.functional.silu(a) * b
    assert rel(h, want) < TOL[dtype]
    g = torch.randn_like(h)
    h.backward(g)
    want.backward(g.double())
    assert rel(x12.grad, x64.grad) < GTOL[dtype]


def test_module_under_autocast_matches_float64():
    torch.manual_seed(0)
    m = ops.SwiGLU(64, 160).cuda()
    x = torch.randn(8, 33, 64, device="cuda", requires_grad=True)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        y = m(x)
    assert y.dtype == torch.bfloat16
    y.float().square().sum().backward()
    m64 = ops.SwiGLU(64, 160).cuda().double()
    m64.load_state_dict(m.state_dict())
    x64 = x.detach().double().requires_grad_(True)
    w1, b1, w2, b2, w3, b3 = m64._ordered_params()
    f = torch.nn.functional
    want = f.linear(f.silu(f.linear(x64, w1, b1)) * f.linear(x64, w2, b2), w3, b3)
    assert rel(y, want) < 3e-2
    want.square().sum().backward()
    assert rel(x.grad, x64.grad) < 5e-2
    for name in ("w12.weight", "w12.bias", "w3.weight"):
        got, ref = m.get_parameter(name).grad, m64.get_parameter(name).grad
        assert rel(got, ref) < 5e-2, name


def test_torch_compile_fullgraph():
    torch.manual_seed(0)
    m = ops.SwiGLU(32, 48).cuda()
    x = torch.randn(5, 32, device="cuda", requires_grad=True)
    eager = m(x)
    eager.sum().backward()
    g = x.grad.clone()
    x.grad = None
    out = torch.compile(m, fullgraph=True)(x)
    assert rel(out, eager) < 1e-5
    out.sum().backward()
    assert rel(x.grad, g) < 1e-5
