"""Sophia: the clipped step worked by hand, the refresh schedule, the GNB estimator's mean."""
import numpy as np
import pytest

import tinygrad_opt as tg
from tinygrad_opt import Tensor
from tinygrad_opt.nn import functional as F
from tinygrad_opt.optim import Sophia

from resume import assert_resume_bit_identical, mlp_problem, trajectory
from conftest import CUDA


def run(x, closure, steps, **kwargs):
    opt = Sophia([x], **kwargs)
    out = []
    for _ in range(steps):
        opt.step(closure)
        out.append(x.numpy())
    return np.array(out), opt


def test_sophia_by_hand_with_refresh_every_two_steps():
    # f = x^2 (H = 2, so the Hutchinson estimate is exactly 2), x0 = 1, lr = 0.1,
    # b1 = 0.9, b2 = 0.5, rho = 1, k = 2:
    # t=1 refresh h = 0.5*2 = 1; m = 0.2;            x1 = 1 - 0.1*0.2/1 = 0.98
    # t=2 (h kept);       m = 0.18 + 0.196 = 0.376;  x2 = 0.98 - 0.0376 = 0.9424
    # t=3 refresh h = 0.5 + 1 = 1.5; m = 0.3384 + 0.18848 = 0.52688; x3 = 0.9424 - 0.1*0.52688/1.5
    x = Tensor(np.array([1.0]), requires_grad=True)
    traj, opt = run(x, lambda: (x * x).sum(), 3, lr=0.1, betas=(0.9, 0.5), rho=1.0,
                    update_period=2)
    np.testing.assert_allclose(traj[:, 0], [0.98, 0.9424, 0.9424 - 0.1 * 0.52688 / 1.5],
                               rtol=1e-14)
    np.testing.assert_allclose(opt.state[x]["hessian"], [1.5], rtol=1e-14)
    np.testing.assert_allclose(opt.effective_step_size()[0], [0.1 / 1.5], rtol=1e-14)  # unclipped


def test_sophia_clips_each_coordinate_to_lr_and_decays_first():
    # coordinate 0: f = 50 x^2 with tiny rho: m/(rho h) is huge, the step is exactly lr.
    # coordinate 1: f = -x^2 (negative curvature): max(rho*h, eps) = eps, a sign step of lr.
    # coordinate 2: f = x^2, h = 0.01*2, |m| = 0.035*0.02 = 7e-4, rho*h = 2e-5: ratio 35 -> lr
    # weight decay 0.5 first: x <- x*(1 - 0.1*0.5) = 0.95 x
    x = Tensor(np.array([1.0, 0.5, 0.01]), requires_grad=True)
    w = Tensor(np.array([50.0, -1.0, 1.0]))
    traj, opt = run(x, lambda: (w * x * x).sum(), 1, lr=0.1, rho=1e-3, weight_decay=0.5)
    np.testing.assert_allclose(traj[0], [0.95 - 0.1, 0.475 + 0.1, 0.0095 - 0.1], rtol=1e-14)
    # every coordinate was clipped: the factor on m is lr / |m|
    m = (1 - 0.965) * np.array([100.0, -1.0, 0.02])         # the default beta1 = 0.965
    np.testing.assert_allclose(opt.effective_step_size()[0], 0.1 / np.abs(m), rtol=1e-12)


def reference(x0, a, lr, b1, b2, rho, k, steps):
    """Sophia-H on sum(a x^2 / 2) (Hutchinson exact: hhat = a) in Python floats."""
    xs, ms, hs, out = list(x0), [0.0] * len(x0), [0.0] * len(x0), []
    for t in range(steps):
        for i, ai in enumerate(a):
            if t % k == 0:
                hs[i] = b2 * hs[i] + (1 - b2) * ai
            ms[i] = b1 * ms[i] + (1 - b1) * ai * xs[i]
            r = ms[i] / max(rho * hs[i], 1e-12)
            xs[i] -= lr * min(max(r, -1.0), 1.0)
        out.append(list(xs))
    return np.array(out)


def test_sophia_matches_the_paper_rule_over_several_refreshes():
    x0, a = [1.0, -2.0, 0.5, 3.0], [1.0, 4.0, 0.25, -0.5]
    x = Tensor(np.array(x0), requires_grad=True)
    at = Tensor(np.array(a))
    traj, _ = run(x, lambda: (0.5 * at * x * x).sum(), 9, lr=0.3, betas=(0.9, 0.8), rho=0.5,
                  update_period=3)
    np.testing.assert_allclose(traj, reference(x0, a, 0.3, 0.9, 0.8, 0.5, 3, 9), rtol=1e-12)


def test_sophia_moves_no_coordinate_more_than_lr_on_an_mlp():
    model, _ = mlp_problem()
    start = [p.numpy() for p in model.parameters()]
    for est in ("hutchinson", "gnb"):
        traj = trajectory(lambda p: Sophia(p, lr=0.02, rho=1e-4, estimator=est), 6)
        prev = start
        for now in traj:
            for a, b in zip(prev, now):
                assert np.abs(b - a).max() <= 0.02 * (1 + 1e-12)
            prev = now
        assert max(np.abs(b - a).max() for a, b in zip(start, traj[-1])) > 0.02


def test_gnb_estimate_averages_to_the_gauss_newton_diagonal():
    # softmax regression z = X W^T: E[B ghat^2] = (1/B) sum_n x_nd^2 p_nc (1 - p_nc) = diag(GGN)
    from tinygrad_opt.optim.sophia import _gauss_newton_bartlett
    rng = np.random.default_rng(1)
    X = rng.standard_normal((6, 2))
    W = Tensor(rng.standard_normal((3, 2)), requires_grad=True)
    y = rng.integers(0, 3, 6)
    logits = X @ W.data.T
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    ggn = (p * (1 - p)).T @ (X * X) / 6
    tg.manual_seed(0)
    est = np.mean([_gauss_newton_bartlett(F.cross_entropy(Tensor(X) @ W.T, y), [W])[0]
                   for _ in range(1000)], axis=0)
    np.testing.assert_allclose(est, ggn, rtol=0.15)


def test_sophia_resume_is_bit_identical():
    # k = 2 with 3 steps before the checkpoint: refreshes fall on both sides (probes included)
    assert_resume_bit_identical(lambda p: Sophia(p, lr=0.01, weight_decay=0.1, update_period=2))
    assert_resume_bit_identical(lambda p: Sophia(p, lr=0.01, update_period=2, estimator="gnb"))


def test_sophia_errors():
    x = Tensor(np.zeros(2), requires_grad=True)
    with pytest.raises(ValueError, match="estimator"):
        Sophia([x], estimator="exact")
    with pytest.raises(ValueError, match="update_period"):
        Sophia([x], update_period=0)
    with pytest.raises(ValueError, match="gnb"):
        Sophia([x], estimator="gnb").step(lambda: (x * x).sum())
    model, closure = mlp_problem(loss="mse")
    with pytest.raises(ValueError, match="cross-entropy"):
        Sophia(model.parameters(), estimator="gnb").step(closure)
    y = Tensor(np.zeros(1), requires_grad=True)
    with pytest.raises(ValueError, match="update_period"):
        Sophia([{"params": [x]}, {"params": [y], "update_period": 3}]).step(
            lambda: (x * x).sum() + (y * y).sum())


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="CuPy with a CUDA GPU is not available")
def test_sophia_on_gpu_stays_on_the_device(monkeypatch):
    from test_no_host_transfer import no_host_transfers
    x0, a = [1.0, -2.0, 0.5], [1.0, 4.0, -0.5]
    x = Tensor(np.array(x0), requires_grad=True, device="cuda")
    at = Tensor(np.array(a), device="cuda")
    traj, _ = run(x, lambda: (0.5 * at * x * x).sum(), 5, lr=0.3, rho=0.5, update_period=2)
    np.testing.assert_allclose(traj, reference(x0, a, 0.3, 0.965, 0.99, 0.5, 2, 5), rtol=1e-12)
    for est in ("hutchinson", "gnb"):
        model, closure = mlp_problem(device="cuda")
        opt = Sophia(model.parameters(), lr=0.01, update_period=1, estimator=est)
        opt.step(closure)
        with no_host_transfers(monkeypatch):
            opt.step(closure)
