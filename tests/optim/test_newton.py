import numpy as np
import pytest

from tinygrad_opt.optim.newton import Newton, NewtonCG, _truncated_cg
from tinygrad_opt.tensor import Tensor

from problems import rosenbrock, tiny_mlp


def quadratic(n=5, seed=0, dtype=np.float64):
    """x, closure of 0.5 x^T A x - b^T x with SPD A, A, b and the minimizer."""
    rng = np.random.default_rng(seed)
    M = rng.standard_normal((n, n))
    A = M @ M.T + n * np.eye(n)
    b = rng.standard_normal(n)
    x = Tensor(rng.standard_normal(n).astype(dtype), requires_grad=True)
    At, bt = Tensor(A.astype(dtype)), Tensor(b.astype(dtype))
    closure = lambda: 0.5 * (x * (At * x).sum(axis=1)).sum() - (bt * x).sum()
    return x, closure, A, b, np.linalg.solve(A, b)


# ------------------------------------------------------------------ Newton
def test_newton_solves_a_quadratic_in_one_step():
    x, closure, A, b, xstar = quadratic()
    opt = Newton([x])
    data = x.data
    f0 = opt.step(closure)
    assert isinstance(f0, float)
    np.testing.assert_allclose(x.data, xstar, atol=1e-10)
    assert f0 > float(closure().item())
    assert x.data is data                                 # updated in place


def test_newton_damping_and_lr_follow_the_formula():
    x, closure, A, b, _ = quadratic(n=3, seed=1)
    x0 = x.data.copy()
    Newton([x], lr=0.5, damping=2.0).step(closure)
    g = A @ x0 - b
    np.testing.assert_allclose(x.data, x0 - 0.5 * np.linalg.solve(A + 2 * np.eye(3), g), rtol=1e-12)


def test_newton_reaches_the_rosenbrock_minimum():
    x, closure = rosenbrock()
    opt = Newton([x])
    for _ in range(30):
        opt.step(closure)
    np.testing.assert_allclose(x.data, [1.0, 1.0], atol=1e-6)


def saddle():
    x = Tensor(np.array([1.0, 1e-3]), requires_grad=True)
    return x, lambda: x[0] ** 2 - x[1] ** 2


def test_plain_newton_is_drawn_onto_a_saddle():
    x, closure = saddle()
    opt = Newton([x], adaptive=False)
    for _ in range(3):
        opt.step(closure)
    np.testing.assert_allclose(x.data, [0.0, 0.0], atol=1e-12)


def test_adaptive_newton_is_repelled_by_the_saddle():
    # H = diag(2, -2): lam is raised past 2, so the x2 direction becomes one of descent
    x, closure = saddle()
    opt = Newton([x])
    fs = [float(closure().item())]
    for _ in range(4):
        opt.step(closure)
        fs.append(float(closure().item()))
    assert all(b < a for a, b in zip(fs, fs[1:]))
    assert abs(x.data[1]) > 1e-2 and abs(x.data[0]) < 0.5


def test_levenberg_marquardt_first_step_by_hand():
    # f = x^4/4 at x = 3 with damping 1: d = -27 / (27 + 1); the quadratic model predicts
    # m = g d + 1/2 H d^2 and rho = (f(x + d) - f(x)) / m sets the next lam
    x = Tensor(np.array([3.0]), requires_grad=True)
    closure = lambda: (x ** 4).sum() / 4
    opt = Newton([x], damping=1.0)
    opt.step(closure)
    d = -27.0 / 28.0
    np.testing.assert_allclose(x.data, [3.0 + d], rtol=1e-14)
    m = 27.0 * d + 0.5 * 27.0 * d * d
    rho = ((3.0 + d) ** 4 / 4 - 81.0 / 4) / m
    assert opt.state[x]["damping"] == pytest.approx(max(1 / 5, 1 - (2 * rho - 1) ** 3), rel=1e-12)


def test_rejected_steps_raise_the_damping_until_the_loss_decreases():
    # f = sqrt(1 + x^2) at x = 3: g = 3/sqrt(10), H = 10^(-3/2); the Newton step -g/H = -30
    # lands at x = -27 where f is larger, so it is rejected and lam grows (floor 1e-3 H,
    # then times 2, 4, 8, ...) until |x + d| < 3, i.e. lam > g/6 - H
    x = Tensor(np.array([3.0]), requires_grad=True)
    calls = []

    def closure():
        calls.append(1)
        return (1 + x * x).sqrt().sum()
    opt = Newton([x])
    f0 = float(closure().item())
    opt.step(closure)
    assert float(closure().item()) < f0
    g, H = 3 / np.sqrt(10), 10 ** -1.5
    assert opt.state[x]["damping"] >= (g / 6 - H) / 3
    assert 4 <= len(calls) - 2 <= 10                     # start, rejected trials, the accepted one


def test_newton_refuses_big_models():
    x = Tensor(np.zeros(5001), requires_grad=True)
    with pytest.raises(ValueError, match="5001 parameters.*use NewtonCG"):
        Newton([x])


def test_newton_errors():
    x, closure = saddle()
    with pytest.raises(ValueError, match="Invalid damping: -1"):
        Newton([x], damping=-1)
    with pytest.raises(TypeError, match="needs a closure"):
        Newton([x]).step(None)
    y = Tensor(np.array([1.0, 2.0]), requires_grad=True)
    with pytest.raises(ValueError, match="singular; pass damping > 0"):
        Newton([y], adaptive=False).step(lambda: (y[0] - 1) ** 2)          # H = diag(2, 0)
    with pytest.raises(ValueError, match="per-parameter options"):
        Newton([{"params": [x]}, {"params": [y]}])


def test_newton_float32_parameters_stay_float32():
    x, closure, A, b, xstar = quadratic(dtype=np.float32)
    Newton([x]).step(closure)
    assert x.data.dtype == np.float32
    np.testing.assert_allclose(x.data, xstar, atol=1e-4)


# ------------------------------------------------------------------ NewtonCG
def test_newton_cg_solves_a_quadratic_in_one_step():
    x, closure, A, b, xstar = quadratic(n=6)
    opt = NewtonCG([x], cg_tol=1e-14, cg_max_iter=50)
    opt.step(closure)
    np.testing.assert_allclose(x.data, xstar, atol=1e-10)
    assert opt.state[x]["cg_iters"] <= 6


@pytest.mark.parametrize("line_search", [None, "armijo", "strong_wolfe"])
@pytest.mark.parametrize("cg_tol,steps", [(None, 250), (1e-3, 30)])
def test_newton_cg_reaches_the_rosenbrock_minimum(line_search, cg_tol, steps):
    # the default forcing term min(0.5, sqrt|g|) solves loosely while |g| is large: slower
    x, closure = rosenbrock()
    opt = NewtonCG([x], line_search=line_search, cg_tol=cg_tol)
    for _ in range(steps):
        opt.step(closure)
    np.testing.assert_allclose(x.data, [1.0, 1.0], atol=1e-6)


def test_newton_cg_builds_the_gradient_once_per_step():
    x, closure, *_ = quadratic(n=8)
    calls = []

    def counting():
        calls.append(1)
        return closure()
    opt = NewtonCG([x], cg_tol=1e-12, adaptive=False)
    opt.step(counting)
    assert len(calls) == 1 and opt.state[x]["cg_iters"] >= 8


def test_newton_cg_reuses_the_accepted_trial_point():
    # the trial point's loss, gradient and operator start the next step: one call per step
    x, closure = rosenbrock()
    calls = []

    def counting():
        calls.append(1)
        return closure()
    opt = NewtonCG([x])
    expected = 1                                           # the first step's start point
    for _ in range(8):
        opt.step(counting)
        expected += 1 + opt.state[x]["rejected"]           # trial points, the last accepted
        assert len(calls) == expected
    # a different closure object (a new minibatch) is never served from the cache
    n = len(calls)
    opt.step(lambda: counting())
    assert len(calls) >= n + 2


def test_truncated_cg_negative_curvature():
    H = np.diag([2.0, -1.0, 3.0])
    g = np.array([1.0, 1.0, 1.0])
    hvp = lambda v: H @ v
    # p0 = -g has p^T H p = 4 > 0: one CG step is taken, then negative curvature stops it
    d, iters, neg = _truncated_cg(np, hvp, g, 0.0, 1e-12, 10)
    assert iters == 2 and neg < 0
    np.testing.assert_allclose(d, -g * (g @ g) / (g @ H @ g))
    # negative curvature along the very first direction: steepest descent
    d, iters, neg = _truncated_cg(np, lambda v: -v, g, 0.0, 1e-12, 10)
    assert iters == 1 and neg == -1.0
    np.testing.assert_array_equal(d, -g)
    # damping makes the damped system positive definite: exact solve
    d, _, neg = _truncated_cg(np, hvp, g, 2.0, 1e-14, 10)
    assert neg is None
    np.testing.assert_allclose(d, -np.linalg.solve(H + 2 * np.eye(3), g), rtol=1e-12)


def test_newton_cg_multi_tensor_mlp_decreases_the_loss():
    params, closure = tiny_mlp()
    opt = NewtonCG(params, damping=1e-3, line_search="armijo")
    f0 = float(closure().item())
    for _ in range(10):
        assert opt.step(closure) <= f0
    assert float(closure().item()) < 0.5 * f0


def test_newton_cg_state_dict_round_trip():
    x, closure = rosenbrock()
    opt = NewtonCG([x], line_search="strong_wolfe")
    for _ in range(3):
        opt.step(closure)
    sd = opt.state_dict()
    saved = x.data.copy()
    ref = [opt.step(closure) for _ in range(3)] + [x.data.copy()]
    x.data[...] = saved
    opt2 = NewtonCG([x], lr=0.1)
    opt2.load_state_dict(sd)
    assert opt2.param_groups[0]["lr"] == 1.0
    out = [opt2.step(closure) for _ in range(3)] + [x.data.copy()]
    assert out[:3] == ref[:3]
    np.testing.assert_array_equal(out[3], ref[3])
    assert opt2.state[x]["step"] == 6


def test_newton_cg_errors():
    x, _ = saddle()
    with pytest.raises(ValueError, match="unknown line_search 'wolfe'"):
        NewtonCG([x], line_search="wolfe")
    with pytest.raises(ValueError, match="Invalid cg_max_iter: 0"):
        NewtonCG([x], cg_max_iter=0)
    with pytest.raises(TypeError, match="closure must return the loss Tensor"):
        NewtonCG([x]).step(lambda: 3.0)


def test_newton_and_newton_cg_on_device(device):
    for make in (lambda ps: Newton(ps), lambda ps: NewtonCG(ps, cg_tol=1e-3)):
        x, closure = rosenbrock(device=device)
        opt = make([x])
        for _ in range(30):
            opt.step(closure)
        assert x.device == device
        np.testing.assert_allclose(x.numpy(), [1.0, 1.0], atol=1e-6)
