"""AdaHessian and its Hutchinson diagonal: exact on diagonal Hessians, unbiased otherwise."""
import math

import numpy as np
import pytest

import tinygrad_opt as tg
from tinygrad_opt import Tensor
from tinygrad_opt.optim import AdaHessian
from tinygrad_opt.optim.adahessian import gradient_and_hutchinson_diagonal, rademacher_like

from resume import assert_resume_bit_identical, trajectory
from conftest import CUDA

A = np.array([1.0, 4.0, 0.25])
X0 = np.array([1.0, -2.0, 0.5])


def diagonal_quadratic(x0=X0, a=A):
    x = Tensor(x0.copy(), requires_grad=True)
    at = Tensor(a)
    return x, lambda: (0.5 * at * x * x).sum()


def test_adahessian_by_hand_on_a_diagonal_quadratic():
    # H = diag(a), so z*(Hz) = a for every probe z. lr = 0.5, eps = 0:
    # step 1: m = 0.1 a x0, v = 0.001 a^2, denom = sqrt(v)/sqrt(0.001) = a, x1 = x0 - 5*m/a = x0/2
    # step 2: m = 0.09 a x0 + 0.1 a x1 = 0.14 a x0, denom = a, x2 = x1 - 0.5/0.19 * 0.14 x0 = 5/38 x0
    x, closure = diagonal_quadratic()
    opt = AdaHessian([x], lr=0.5, eps=0.0)
    opt.step(closure)
    np.testing.assert_allclose(x.numpy(), X0 / 2, rtol=1e-14)
    opt.step(closure)
    np.testing.assert_allclose(x.numpy(), X0 * 5 / 38, rtol=1e-13)
    np.testing.assert_allclose(opt.state[x]["exp_hessian_diag_sq"], (1 - 0.999 ** 2) * A * A,
                               rtol=1e-13)
    # the factor on m_hat: lr / (sqrt(v_hat) + eps) = 0.5 / a
    np.testing.assert_allclose(opt.effective_step_size()[0], 0.5 / A, rtol=1e-13)


def reference(lr, b1, b2, eps, wd, k, steps):
    """The reference code's rule per coordinate (D = a exactly) in Python floats."""
    xs, out = list(X0), []
    ms, vs = [0.0] * 3, [0.0] * 3
    for t in range(1, steps + 1):
        for i, a in enumerate(A):
            g = a * xs[i]
            ms[i] = b1 * ms[i] + (1 - b1) * g
            vs[i] = b2 * vs[i] + (1 - b2) * a * a
            denom = (math.sqrt(vs[i]) / math.sqrt(1 - b2 ** t)) ** k + eps
            xs[i] -= lr / (1 - b1 ** t) * (ms[i] / denom + wd * xs[i])
        out.append(list(xs))
    return np.array(out)


@pytest.mark.parametrize("wd,k", [(0.0, 1.0), (0.1, 1.0), (0.0, 0.5)])
def test_adahessian_matches_the_reference_rule(wd, k):
    x, closure = diagonal_quadratic()
    opt = AdaHessian([x], lr=0.2, betas=(0.8, 0.9), eps=1e-3, weight_decay=wd, hessian_power=k)
    traj = []
    for _ in range(6):
        opt.step(closure)
        traj.append(x.numpy())
    np.testing.assert_allclose(traj, reference(0.2, 0.8, 0.9, 1e-3, wd, k, 6), rtol=1e-12)


def test_hutchinson_diagonal_uses_the_probe_and_is_unbiased():
    H = np.array([[2.0, 1.0, -0.5], [1.0, 3.0, 0.2], [-0.5, 0.2, 1.0]])
    x = Tensor(np.array([0.3, -0.1, 0.7]), requires_grad=True)
    Ht = Tensor(H)
    closure = lambda: 0.5 * (x * (Ht * x).sum(axis=1)).sum() + x.sum()     # noqa: E731
    tg.manual_seed(3)
    gs, ds = gradient_and_hutchinson_diagonal(closure(), [x])
    tg.manual_seed(3)
    z = rademacher_like(x.data)
    assert set(np.unique(z)) <= {-1.0, 1.0}
    np.testing.assert_allclose(gs[0], H @ x.data + 1, rtol=1e-14)
    np.testing.assert_allclose(ds[0], z * (H @ z), rtol=1e-14)
    np.testing.assert_allclose(x.grad.numpy(), gs[0], rtol=0)
    # z*(Hz) = diag(H) + sum_{j != i} H_ij z_i z_j: the mean over probes tends to diag(H)
    est = np.mean([gradient_and_hutchinson_diagonal(closure(), [x])[1][0] for _ in range(600)],
                  axis=0)
    np.testing.assert_allclose(est, np.diag(H), atol=0.15)     # 3 standard errors


def test_hutchinson_diagonal_of_a_linear_loss_is_zero():
    x = Tensor(np.array([1.0, 2.0]), requires_grad=True)
    gs, ds = gradient_and_hutchinson_diagonal((x * 3.0).sum(), [x])
    np.testing.assert_array_equal(ds[0], [0.0, 0.0])
    np.testing.assert_array_equal(gs[0], [3.0, 3.0])


def test_adahessian_trains_a_small_mlp_and_resumes_bit_identically():
    traj = trajectory(lambda p: AdaHessian(p, lr=0.05), 25)
    assert all(np.isfinite(w).all() for w in traj[-1])
    assert_resume_bit_identical(lambda p: AdaHessian(p, lr=0.05, weight_decay=1e-3))


def test_adahessian_errors():
    x = Tensor(np.zeros(2), requires_grad=True)
    with pytest.raises(TypeError, match="closure"):
        AdaHessian([x]).step()
    with pytest.raises(ValueError, match="learning rate"):
        AdaHessian([x], lr=-1)
    with pytest.raises(ValueError, match="hessian_power"):
        AdaHessian([x], hessian_power=2)
    with pytest.raises(ValueError, match="one-element"):
        AdaHessian([x]).step(lambda: x * 2)


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="CuPy with a CUDA GPU is not available")
def test_adahessian_on_gpu_stays_on_the_device(monkeypatch):
    from test_no_host_transfer import no_host_transfers
    from resume import mlp_problem
    x, closure = diagonal_quadratic()                  # probe-independent: CPU and GPU agree
    xg = Tensor(X0.copy(), requires_grad=True, device="cuda")
    ag = Tensor(A, device="cuda")
    opt, optg = AdaHessian([x], lr=0.3), AdaHessian([xg], lr=0.3)
    for _ in range(4):
        opt.step(closure)
        optg.step(lambda: (0.5 * ag * xg * xg).sum())
    np.testing.assert_allclose(xg.numpy(), x.numpy(), rtol=1e-12)
    model, closure = mlp_problem(device="cuda")
    opt = AdaHessian(model.parameters(), lr=0.05)
    opt.step(closure)
    with no_host_transfers(monkeypatch):
        opt.step(closure)
