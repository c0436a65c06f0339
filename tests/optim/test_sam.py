"""SAM and ASAM: the perturbed-gradient step worked by hand, restoration, checkpoints."""
import numpy as np
import pytest

from tinygrad_opt import Tensor
from tinygrad_opt.optim import SGD, SAM, Adam, AdaHessian

from resume import assert_resume_bit_identical, trajectory
from conftest import CUDA


def test_sam_by_hand():
    # f = x^2, x0 = 1, rho = 0.05, SGD lr = 0.1: e = rho*sign(x); g' = 2(x + e)
    # x1 = 1 - 0.1*2*1.05 = 0.79; x2 = 0.79 - 0.1*2*0.84 = 0.622; x3 = 0.622 - 0.1*2*0.672 = 0.4876
    x = Tensor(np.array([1.0]), requires_grad=True)
    opt = SAM(SGD([x], lr=0.1), rho=0.05)
    losses = [opt.step(lambda: (x * x).sum()).item() for _ in range(3)]
    np.testing.assert_allclose(x.numpy(), [0.4876], rtol=1e-12)
    np.testing.assert_allclose(losses, [1.0, 0.79 ** 2, 0.622 ** 2], rtol=1e-12)  # loss at w
    np.testing.assert_allclose(x.grad.numpy(), [2 * 0.672], rtol=1e-12)          # g at w + e


@pytest.mark.parametrize("adaptive", [False, True])
def test_sam_matches_formula_on_a_coupled_quadratic(adaptive):
    A = np.array([[3.0, 1.0, 0.0], [1.0, 2.0, 0.5], [0.0, 0.5, 1.0]])
    w = np.array([1.0, -2.0, 0.5])
    x = Tensor(w.copy(), requires_grad=True)
    At = Tensor(A)
    opt = SAM(SGD([x], lr=0.1, momentum=0.9), rho=0.2, adaptive=adaptive)
    buf = None
    for _ in range(3):
        opt.step(lambda: 0.5 * (x * (At * x).sum(axis=1)).sum())
        g = A @ w
        T = np.abs(w) if adaptive else np.ones(3)
        e = 0.2 * T * T * g / (np.linalg.norm(T * g) + 1e-12)
        gp = A @ (w + e)
        buf = gp if buf is None else 0.9 * buf + gp
        w = w - 0.1 * buf
        np.testing.assert_allclose(x.numpy(), w, rtol=1e-13)


def test_sam_with_rho_zero_is_the_base_optimizer():
    x, y = (Tensor(np.array([1.0, -3.0]), requires_grad=True) for _ in range(2))
    sam, adam = SAM(Adam([x], lr=0.1), rho=0.0), Adam([y], lr=0.1)
    for _ in range(4):
        sam.step(lambda: (x ** 4).sum())
        adam.zero_grad()
        (y ** 4).sum().backward()
        adam.step()
    np.testing.assert_array_equal(x.numpy(), y.numpy())


def test_sam_resume_is_bit_identical():
    assert_resume_bit_identical(lambda p: SAM(Adam(p, lr=0.01), rho=0.1, adaptive=True))


def test_sam_errors():
    x = Tensor(np.zeros(2), requires_grad=True)
    with pytest.raises(TypeError, match="closure"):
        SAM(SGD([x], lr=0.1)).step()
    with pytest.raises(TypeError, match="first-order"):
        SAM(AdaHessian([x]))
    with pytest.raises(ValueError, match="rho"):
        SAM(SGD([x], lr=0.1), rho=-1)
    with pytest.raises(TypeError, match="loss Tensor"):
        SAM(SGD([x], lr=0.1)).step(lambda: 1.0)


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="CuPy with a CUDA GPU is not available")
def test_sam_on_gpu_follows_the_cpu_rule_without_host_transfers(monkeypatch):
    from test_no_host_transfer import no_host_transfers
    make = lambda p: SAM(SGD(p, lr=0.1), adaptive=True)     # noqa: E731
    for a, b in zip(trajectory(make, 3), trajectory(make, 3, device="cuda")):
        for x, y in zip(a, b):
            np.testing.assert_allclose(y, x, rtol=1e-12, atol=1e-12)
    from resume import mlp_problem
    model, closure = mlp_problem(device="cuda")
    opt = make(model.parameters())
    opt.step(closure)
    with no_host_transfers(monkeypatch):
        opt.step(closure)
