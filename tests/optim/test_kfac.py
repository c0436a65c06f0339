"""K-FAC: the applied step equals the damped Kronecker solve, the factors' moving averages, the
inverse schedule, the quadratic-model rescaling and the damping rule, checkpoints."""
import math

import numpy as np
import pytest

import tinygrad_opt as tg
from tinygrad_opt import Tensor, nn
from tinygrad_opt.nn import functional as F

from tinygrad_opt.optim import KFAC
from tinygrad_opt.optim.hessianfree import gauss_newton_product, loss_output

from resume import assert_resume_bit_identical, trajectory
from conftest import CUDA


def tiny(seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((10, 3))
    y = rng.integers(0, 2, 10)
    tg.manual_seed(seed)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))
    for p in model.parameters():
        p.data = p.data.astype(np.float64)
    return model, X, lambda: F.cross_entropy(model(Tensor(X)), y)


def damped_kronecker_solve(A, G, grad, lam):
    """-[(A + pi sqrt(lam) I) (x) (G + sqrt(lam)/pi I)]^-1 vec(grad), as an (out, in) array.

    With column-major vec, vec(G X A) = (A^T (x) G) vec(X), so the Kronecker matrix acting on
    vec(Delta) is (A + ...) (x) (G + ...) for symmetric factors."""
    pi = math.sqrt((np.trace(A) / A.shape[0]) / (np.trace(G) / G.shape[0]))
    g = math.sqrt(lam)
    K = np.kron(A + pi * g * np.eye(A.shape[0]), G + g / pi * np.eye(G.shape[0]))
    return -np.linalg.solve(K, grad.reshape(-1, order="F")).reshape(grad.shape, order="F")


def test_applied_step_is_the_damped_kronecker_solve():
    model, X, closure = tiny()
    before = [p.numpy() for p in model.parameters()]
    opt = KFAC(model.parameters(), lr=1.0, damping=0.05, rescale=False, inverse_period=1)
    opt.step(closure)
    W1, b1, W2, b2 = model.parameters()
    # the first layer's A is x^T x / N over the data, with no sampling involved
    np.testing.assert_allclose(opt.state[W1]["A"], X.T @ X / 10, rtol=1e-13)
    for p, p0 in zip(model.parameters(), before):
        st = opt.state[p]
        if "A" in st:
            expect = damped_kronecker_solve(st["A"], st["G"], p.grad.numpy(), 0.05)
        else:                                   # bias block: (G + lam I)^-1 exactly
            expect = -np.linalg.solve(st["G"] + 0.05 * np.eye(len(p0)), p.grad.numpy())
        np.testing.assert_allclose(p.numpy() - p0, expect, rtol=1e-9, atol=1e-13)
        assert np.linalg.eigvalsh(st["G"]).min() > -1e-12


def test_factors_are_moving_averages_and_inverses_follow_the_schedule():
    model, X, closure = tiny()
    opt = KFAC(model.parameters(), lr=0.5, damping=0.05, rescale=False, inverse_period=3)
    W1, b1, W2, b2 = model.parameters()
    opt.step(closure)
    A2_first = opt.state[W2]["A"].copy()
    inv_first = opt.state[W2]["A_inv"].copy()
    h = np.tanh(X @ W1.numpy().T + b1.numpy())                 # layer 2's inputs at theta_1
    opt.step(closure)
    # step 2: eps = min(1 - 1/2, 0.95) = 0.5
    np.testing.assert_allclose(opt.state[W2]["A"], 0.5 * A2_first + 0.5 * h.T @ h / 10,
                               rtol=1e-12)
    np.testing.assert_array_equal(opt.state[W2]["A_inv"], inv_first)      # not refreshed yet
    opt.step(closure)
    np.testing.assert_array_equal(opt.state[W2]["A_inv"], inv_first)
    opt.step(closure)                                                     # step 4 = 1 + T
    assert not np.allclose(opt.state[W2]["A_inv"], inv_first)
    assert [opt.state[p]["step"] for p in model.parameters()] == [4] * 4


def test_rescaling_minimizes_the_quadratic_model_along_the_direction():
    model, _, closure = tiny()
    plain = KFAC(model.parameters(), lr=1.0, damping=0.05, rescale=False)
    theta0 = [p.numpy() for p in model.parameters()]
    tg.manual_seed(7)
    plain.step(closure)
    delta = [p.numpy() - t for p, t in zip(model.parameters(), theta0)]
    for p, t in zip(model.parameters(), theta0):
        p.data[...] = t
    loss = closure()
    g = [gr.numpy() for gr in
         tg.autograd.grad(loss, list(model.parameters()), retain_graph=True)]
    fd = gauss_newton_product(loss, loss_output(loss, "t")[0], list(model.parameters()))(delta)
    gd = sum((a * b).sum() for a, b in zip(g, delta))
    alpha = -gd / (sum((a * b).sum() for a, b in zip(delta, fd))
                   + 0.05 * sum((d * d).sum() for d in delta))
    scaled = KFAC(model.parameters(), lr=1.0, damping=0.05)
    tg.manual_seed(7)
    scaled.step(closure)
    for p, t, d in zip(model.parameters(), theta0, delta):
        np.testing.assert_allclose(p.numpy() - t, alpha * d, rtol=1e-9, atol=1e-14)


def test_damping_follows_the_reduction_ratio_every_t1_steps():
    model, _, closure = tiny()
    opt = KFAC(model.parameters(), lr=1.0, damping=1.0, damping_period=2)
    losses = [opt.step(closure).item() for _ in range(8)]
    w = (19 / 20) ** 2
    for k, (a, b) in enumerate(zip(opt.log, opt.log[1:]), 1):
        if k % 2:
            assert "rho" not in a and b["damping"] == a["damping"]
        else:
            factor = w if a["rho"] > 0.75 else 1 / w if a["rho"] < 0.25 else 1
            np.testing.assert_allclose(b["damping"], a["damping"] * factor, rtol=1e-14)
    assert {"rho" in e for e in opt.log} == {True, False} and closure().item() < losses[0]


def test_kfac_trains_and_resumes_bit_identically():
    traj = trajectory(lambda p: KFAC(p, lr=1.0, damping=0.05, inverse_period=2), 6)
    assert all(np.isfinite(w).all() for w in traj[-1])
    assert_resume_bit_identical(lambda p: KFAC(p, damping=0.05, inverse_period=2,
                                               damping_period=2))


def test_kfac_errors():
    w = Tensor(np.ones((2, 3)), requires_grad=True)
    x = Tensor(np.ones((4, 3)))
    with pytest.raises(ValueError, match="damping"):
        KFAC([w], damping=0)
    with pytest.raises(ValueError, match="inverse_period"):
        KFAC([w], inverse_period=0)
    with pytest.raises(ValueError, match="model output"):
        KFAC([w]).step(lambda: (w * w).sum())
    with pytest.raises(Exception, match="Linear|Kronecker"):
        KFAC([w]).step(lambda: F.cross_entropy((x @ w.T) * (x @ w.T), np.zeros(4, int)))


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="CuPy with a CUDA GPU is not available")
def test_kfac_on_gpu_stays_on_the_device(monkeypatch):
    from test_no_host_transfer import no_host_transfers
    from resume import mlp_problem
    model, closure = mlp_problem(device="cuda")
    opt = KFAC(model.parameters(), damping=0.05, adapt_damping=False, inverse_period=1)
    opt.step(closure)
    with no_host_transfers(monkeypatch):
        opt.step(closure)
