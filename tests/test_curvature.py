"""Curvature tools against dense Hessians and hand-computed quadratics."""
import math
import warnings

import numpy as np
import pytest

from tinygrad_opt import autograd, backend, curvature
from tinygrad_opt.tensor import Tensor


# tests taking `device` run on the CPU and, with CuPy and a GPU, on CUDA (tests/conftest.py)


# ---------------------------------------------------------------- problems

def quadratic(A, x0, device="cpu"):
    """f(x) = 1/2 x^T A x as (closure, [x]); its Hessian is A (symmetrised)."""
    A = np.asarray(A, dtype=np.float64)
    At = Tensor(A, device=device)
    x = Tensor(np.asarray(x0, dtype=np.float64), requires_grad=True, device=device)

    def closure():
        return 0.5 * (x * (At @ x)).sum()
    return closure, [x]


def random_symmetric(n, eigenvalues, seed):
    """Q diag(eigenvalues) Q^T with a random orthogonal Q."""
    rng = np.random.default_rng(seed)
    Q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    return (Q * np.asarray(eigenvalues, dtype=np.float64)) @ Q.T


SHAPES = [(5, 2), (5,), (3, 5), (3,)]       # a 2-5-3 tanh network: 33 parameters


def mlp_values(seed=0, scale=1.0):
    rng = np.random.default_rng(seed)
    return [scale * rng.standard_normal(s) for s in SHAPES]


def mlp_data(seed=1):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((8, 2)), rng.standard_normal((8, 3))


def mlp_loss(W1, b1, W2, b2, X, Y):
    h = (X @ W1.T + b1).tanh()
    r = h @ W2.T + b2 - Y
    return (r * r).mean()


def mlp_problem(seed=0, scale=1.0, device="cpu"):
    """(closure, params) of a float64 2-5-3 tanh MSE network."""
    X, Y = mlp_data()
    X, Y = Tensor(X, device=device), Tensor(Y, device=device)
    params = [Tensor(v, requires_grad=True, device=device) for v in mlp_values(seed, scale)]
    return (lambda: mlp_loss(*params, X, Y)), params


def mlp_dense_hessian(seed=0, scale=1.0):
    """The dense Hessian of the same network, as a function of one flat parameter vector."""
    X, Y = (Tensor(a) for a in mlp_data())
    theta = Tensor(np.concatenate([v.ravel() for v in mlp_values(seed, scale)]))
    sizes = np.cumsum([0] + [int(np.prod(s)) for s in SHAPES])

    def f(t):
        parts = [t[sizes[i]:sizes[i + 1]].reshape(*SHAPES[i]) for i in range(len(SHAPES))]
        return mlp_loss(*parts, X, Y)
    H = autograd.hessian(f, theta)
    H = H.numpy() if isinstance(H, Tensor) else np.asarray(H)
    return H.reshape(theta.size, theta.size), f, theta


def _host(a):
    return backend.to_numpy(a)


# ---------------------------------------------------------------- the reference itself

def test_dense_reference_hessian_matches_finite_differences():
    H, f, theta = mlp_dense_hessian()
    th = theta.numpy()

    def grad_at(v):
        t = Tensor(v, requires_grad=True)
        return autograd.grad(f(t), [t])[0].numpy()
    eps = 1e-5
    fd = np.stack([(grad_at(th + eps * e) - grad_at(th - eps * e)) / (2 * eps)
                   for e in np.eye(th.size)])
    np.testing.assert_allclose(H, fd, atol=1e-7, rtol=1e-5)
    np.testing.assert_allclose(H, H.T, atol=1e-12)


# ---------------------------------------------------------------- the operator

def test_hvp_operator_matches_dense_products_and_counts(device):
    H, _, _ = mlp_dense_hessian()
    closure, params = mlp_problem(device=device)
    op = curvature.HVPOperator(closure, params)
    assert op.n == 33 and op.dtype == np.float64 and op.device == device
    rng = np.random.default_rng(3)
    for i in range(3):
        v = rng.standard_normal(op.n)
        hv = op.matvec(op.xp.asarray(v))
        assert backend.device_of(hv) == device
        np.testing.assert_allclose(_host(hv), H @ v, rtol=1e-10, atol=1e-12)
    assert op.n_products == 3
    assert all(p.grad is None for p in params)      # never touches .grad


def test_hvp_operator_rejects_bad_input():
    closure, params = mlp_problem()
    with pytest.raises(ValueError, match="requires_grad"):
        curvature.HVPOperator(closure, [Tensor(np.zeros(3))])
    with pytest.raises(ValueError, match="one-element"):
        curvature.HVPOperator(lambda: params[0] * 2, params)
    op = curvature.HVPOperator(closure, params)
    with pytest.raises(ValueError, match="expected \\(33,\\)"):
        op.matvec(np.zeros(5))


def test_unused_parameter_has_zero_hessian_rows():
    x = Tensor(np.array([1.0, 2.0]), requires_grad=True)
    unused = Tensor(np.array([3.0]), requires_grad=True)
    op = curvature.HVPOperator(lambda: (x * x * x).sum(), [x, unused])
    np.testing.assert_allclose(op.matvec(np.array([1.0, 1.0, 1.0])), [6.0, 12.0, 0.0])


def test_linear_loss_has_zero_hessian():
    x = Tensor(np.array([1.0, -2.0, 0.5]), requires_grad=True)
    c = Tensor(np.array([2.0, 1.0, 3.0]))
    closure = lambda: (c * x).sum()
    np.testing.assert_array_equal(curvature.HVPOperator(closure, [x]).matvec(np.ones(3)), 0.0)
    top = curvature.top_eigenvalues(closure, [x], k=1)
    assert top.eigenvalues[0] == 0.0


# ---------------------------------------------------------------- Lanczos

def test_top_eigenvalues_of_mlp_match_dense(device):
    H, _, _ = mlp_dense_hessian()
    dense = np.linalg.eigvalsh(H)[::-1]
    closure, params = mlp_problem(device=device)
    res = curvature.top_eigenvalues(closure, params, k=3, seed=0)
    vals, vecs = res                                  # unpacks as (values, vectors)
    assert res.converged
    np.testing.assert_allclose(vals, dense[:3], rtol=1e-6)
    V = _host(vecs)
    assert V.shape == (3, 33)
    np.testing.assert_allclose(V @ V.T, np.eye(3), atol=1e-8)
    for lam, y in zip(vals, V):
        np.testing.assert_allclose(H @ y, lam * y, atol=1e-6 * abs(dense[0]))
    per_param = curvature.unflatten(vecs[0], params)
    assert [a.shape for a in per_param] == SHAPES


def test_float32_mlp_top_eigenvalue_to_single_precision():
    H, _, _ = mlp_dense_hessian()
    closure, params = mlp_problem()
    params32 = [Tensor(p.numpy().astype(np.float32), requires_grad=True) for p in params]
    X, Y = (Tensor(a.astype(np.float32)) for a in mlp_data())
    res = curvature.top_eigenvalues(lambda: mlp_loss(*params32, X, Y), params32, k=1, seed=0)
    assert res.eigenvectors.dtype == np.float32
    np.testing.assert_allclose(res.eigenvalues[0], np.linalg.eigvalsh(H)[-1], rtol=1e-4)


def test_lambda_min_of_indefinite_mlp_matches_dense():
    H, _, _ = mlp_dense_hessian(scale=1.5)
    dense = np.linalg.eigvalsh(H)
    assert dense[0] < -1e-3                           # the case really is indefinite
    closure, params = mlp_problem(scale=1.5)
    lmin = curvature.lambda_min(closure, params, seed=1)
    np.testing.assert_allclose(lmin, dense[0], rtol=1e-6)
    bottom = curvature.bottom_eigenvalues(closure, params, k=2, seed=1)
    np.testing.assert_allclose(bottom.eigenvalues, dense[:2], rtol=1e-6)
    np.testing.assert_allclose(curvature.lambda_max(closure, params, seed=1), dense[-1],
                               rtol=1e-6)


def test_explicit_matrix_both_ends(device):
    lams = np.concatenate([[-7.0, -3.0], np.linspace(-1, 2, 36), [9.0, 20.0]])
    A = random_symmetric(40, lams, seed=4)
    closure, params = quadratic(A, np.ones(40), device)
    top = curvature.top_eigenvalues(closure, params, k=2, seed=2)
    np.testing.assert_allclose(top.eigenvalues, [20.0, 9.0], rtol=1e-8)
    bottom = curvature.bottom_eigenvalues(closure, params, k=2, seed=2)
    np.testing.assert_allclose(bottom.eigenvalues, [-7.0, -3.0], rtol=1e-8)
    # Ritz vectors are eigenvectors of A
    y = _host(top.eigenvectors[0])
    np.testing.assert_allclose(A @ y, 20.0 * y, atol=1e-6)


def test_lanczos_stops_early_on_a_well_separated_top():
    lams = np.concatenate([[100.0], np.linspace(0.0, 1.0, 199)])
    closure, params = quadratic(random_symmetric(200, lams, seed=5), np.ones(200))
    res = curvature.top_eigenvalues(closure, params, k=1, seed=0)
    assert res.converged and res.iterations < 40 and res.n_products == res.iterations
    np.testing.assert_allclose(res.eigenvalues[0], 100.0, rtol=1e-10)


def test_long_run_has_no_ghost_eigenvalues():
    # Without reorthogonalization, Lanczos run long past convergence repeats the converged
    # top eigenvalue (a "ghost" copy) instead of finding the next one.
    lams = np.concatenate([[100.0], np.linspace(0.0, 1.0, 199)])
    closure, params = quadratic(random_symmetric(200, lams, seed=5), np.ones(200))
    res = curvature.top_eigenvalues(closure, params, k=2, max_iter=150, tol=0.0, seed=0)
    assert res.iterations > 100                    # ran long after the top one converged
    np.testing.assert_allclose(res.eigenvalues, [100.0, 1.0], rtol=1e-8)
    V = backend.to_numpy(res.eigenvectors)
    np.testing.assert_allclose(V @ V.T, np.eye(2), atol=1e-8)


def test_repeated_eigenvalue_found_through_restart():
    closure, params = quadratic(np.diag([5.0, 5.0, 1.0]), np.ones(3))
    res = curvature.top_eigenvalues(closure, params, k=2, seed=0)
    np.testing.assert_allclose(res.eigenvalues, [5.0, 5.0], rtol=1e-12)


def test_seed_makes_lanczos_repeatable_and_leaves_global_stream_alone():
    closure, params = mlp_problem()
    state = backend.get_rng_state()
    a = curvature.top_eigenvalues(closure, params, k=1, seed=7, max_iter=4, tol=0.0)
    b = curvature.top_eigenvalues(closure, params, k=1, seed=7, max_iter=4, tol=0.0)
    assert a.eigenvalues[0] == b.eigenvalues[0]
    assert backend.get_rng_state() == state


# ---------------------------------------------------------------- condition number

def test_condition_number_of_spd_quadratic():
    A = random_symmetric(6, [0.5, 1.0, 2.0, 3.0, 4.0, 50.0], seed=6)
    closure, params = quadratic(A, np.ones(6))
    c = curvature.condition_number(closure, params, seed=0)
    assert c.positive_definite and c.converged
    np.testing.assert_allclose([c.value, c.lambda_max, c.lambda_min], [100.0, 50.0, 0.5],
                               rtol=1e-10)


def test_condition_number_of_indefinite_quadratic_is_flagged():
    closure, params = quadratic(np.diag([3.0, -1.0, 2.0]), np.ones(3))
    c = curvature.condition_number(closure, params, seed=0)
    assert not c.positive_definite and c.value == math.inf
    np.testing.assert_allclose([c.lambda_max, c.lambda_min], [3.0, -1.0], rtol=1e-12)


# ---------------------------------------------------------------- Hutchinson

def test_hutchinson_is_exact_for_a_diagonal_hessian(device):
    d = np.array([1.0, -2.0, 3.5, 10.0, 0.25])
    closure, params = quadratic(np.diag(d), np.ones(5), device)
    t = curvature.hutchinson_trace(closure, params, n_samples=7, seed=0)
    np.testing.assert_allclose(t.samples, d.sum(), rtol=1e-14)
    assert t.mean == pytest.approx(d.sum(), rel=1e-14) and t.stderr == pytest.approx(0, abs=1e-12)


def test_hutchinson_trace_of_mlp_within_standard_errors():
    H, _, _ = mlp_dense_hessian()
    closure, params = mlp_problem()
    t = curvature.hutchinson_trace(closure, params, n_samples=300, seed=3)
    # the variance of z^T H z for Rademacher z is 2 * sum_{i != j} H_ij^2
    off = H - np.diag(np.diag(H))
    expected_se = math.sqrt(2.0 * (off ** 2).sum() / 300)
    assert t.stderr == pytest.approx(expected_se, rel=0.25)
    assert abs(t.mean - np.trace(H)) < 4 * t.stderr


# ---------------------------------------------------------------- g^T H g and the step test

# f(x) = 1/2 x^T A x with A = diag(2, 10) at x = (1, 1): g = (2, 10), g^T g = 104,
# g^T A g = 2*4 + 10*100 = 1008.
A2 = np.diag([2.0, 10.0])


def test_gradient_curvature_of_quadratic():
    closure, params = quadratic(A2, [1.0, 1.0])
    assert curvature.gradient_curvature(closure, params) == pytest.approx(1008 / 104, rel=1e-14)


def test_gradient_curvature_at_a_stationary_point_is_nan():
    closure, params = quadratic(A2, [0.0, 0.0])
    assert math.isnan(curvature.gradient_curvature(closure, params))


def test_step_test_predicts_decrease_for_small_lr():
    closure, params = quadratic(A2, [1.0, 1.0])
    s = curvature.step_test(closure, params, lr=0.1, measure=True)
    assert s.loss == pytest.approx(6.0)                       # 1/2 (2 + 10)
    assert s.grad_norm_sq == pytest.approx(104.0) and s.gHg == pytest.approx(1008.0)
    assert s.first_order == pytest.approx(10.4)               # 0.1 * 104
    assert s.second_order == pytest.approx(5.04)              # 0.5 * 0.01 * 1008
    assert s.predicted_change == pytest.approx(-5.36)
    assert s.predicted_decrease
    assert s.optimal_lr == pytest.approx(104 / 1008)
    # a quadratic is its own second-order model
    assert s.actual_change == pytest.approx(s.predicted_change, rel=1e-12)
    np.testing.assert_array_equal(params[0].numpy(), [1.0, 1.0])     # restored


def test_step_test_predicts_increase_for_large_lr():
    closure, params = quadratic(A2, [1.0, 1.0])
    s = curvature.step_test(closure, params, lr=0.25, measure=True)
    assert s.first_order == pytest.approx(26.0)
    assert s.second_order == pytest.approx(31.5)              # 0.5 * 0.0625 * 1008
    assert s.predicted_change == pytest.approx(5.5) and not s.predicted_decrease
    assert s.actual_change == pytest.approx(5.5, rel=1e-12)


def test_step_test_with_negative_curvature_along_gradient():
    closure, params = quadratic(np.diag([-1.0, -4.0]), [1.0, 1.0])
    s = curvature.step_test(closure, params, lr=0.5)
    assert s.gHg == pytest.approx(-65.0)                      # g = (-1, -4)
    assert s.optimal_lr == math.inf and s.predicted_decrease


def test_operator_shared_between_calls():
    closure, params = quadratic(A2, [1.0, 1.0])
    op = curvature.HVPOperator(closure, params)
    assert curvature.lambda_max(op, seed=0) == pytest.approx(10.0)
    assert curvature.gradient_curvature(op) == pytest.approx(1008 / 104)
    assert curvature.hutchinson_trace(op, n_samples=3, seed=0).mean == pytest.approx(12.0)
    assert op.n_products == 2 + 1 + 3      # Lanczos on n = 2, one g^T H g, three probes


# ---------------------------------------------------------------- CurvatureMonitor

def test_curvature_monitor_warns_only_when_lr_exceeds_two_over_sharpness():
    closure, params = quadratic(np.diag([10.0, 1.0, 0.5]), np.ones(3))
    with pytest.warns(RuntimeWarning, match="lr \\* lambda_max"):
        rec = curvature.CurvatureMonitor(closure, params, lr=0.25).record(0)
    assert rec.lr_sharpness == pytest.approx(2.5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        mon = curvature.CurvatureMonitor(closure, params, lr=0.1)
        rec = mon.record(0)
    assert rec.lambda_max == pytest.approx(10.0) and rec.lambda_min == pytest.approx(0.5)
    assert rec.trace == pytest.approx(11.5) and rec.trace_stderr == pytest.approx(0.0, abs=1e-12)
    assert rec.condition_number == pytest.approx(20.0) and rec.positive_definite
    assert not rec.negative_curvature
    # g = (10, 1, 0.5): g^T H g / g^T g = (1000 + 1 + 0.125) / 101.25
    assert rec.grad_curvature == pytest.approx(1001.125 / 101.25)
    assert mon.column("lambda_max").tolist() == [pytest.approx(10.0)]


def test_curvature_monitor_flags_negative_curvature_and_records_every_n():
    closure, params = quadratic(np.diag([2.0, -3.0]), np.ones(2))
    mon = curvature.CurvatureMonitor(closure, params, every=5, n_probes=4)
    for step in range(1, 12):
        mon.on_step_end({"global_step": step})
    assert [r.step for r in mon.history] == [5, 10]
    r = mon.history[0]
    assert r.negative_curvature and not r.positive_definite
    assert r.condition_number == math.inf and r.lambda_min == pytest.approx(-3.0)
    assert r.lr is None and r.lr_sharpness is None


def test_curvature_monitor_with_batch_fn_and_optimizer_lr():
    A = Tensor(np.diag([4.0, 1.0]))
    x = Tensor(np.ones(2), requires_grad=True)
    seen = []

    def batch_fn(info):
        seen.append(info["step"])
        return 0.5 * info["scale"] * (x * (A @ x)).sum()

    class Opt:
        param_groups = [{"lr": 1.0}]
    mon = curvature.CurvatureMonitor(batch_fn, [x], every=1, n_probes=0)
    with pytest.warns(RuntimeWarning):
        rec = mon.record(3, {"step": 3, "scale": 2.0, "optimizer": Opt()})
    assert seen == [3] and rec.lambda_max == pytest.approx(8.0) and rec.lr == 1.0
    assert rec.trace is None


# ---------------------------------------------------------------- OptimizerMonitor

def _set_grad(p, g):
    p.grad = Tensor(np.asarray(g, dtype=np.float64))


def test_optimizer_monitor_sgd_update_ratio_and_momentum():
    from tinygrad_opt.optim import SGD
    p = Tensor(np.array([3.0, 4.0]), requires_grad=True)
    opt = SGD([p], lr=0.1, momentum=0.9)
    mon = curvature.OptimizerMonitor(opt)
    g1, g2 = np.array([1.0, 2.0]), np.array([-2.0, 1.0])
    _set_grad(p, g1)
    mon.snapshot()
    opt.step()
    r1 = mon.record(1)
    assert r1.update_norm == pytest.approx(0.1 * math.sqrt(5.0))
    assert r1.param_norm == pytest.approx(5.0)
    assert r1.update_ratio == pytest.approx(0.1 * math.sqrt(5.0) / 5.0)
    assert r1.step_size_kind == "lr" and r1.step_size_median == 0.1 and r1.step_size_max == 0.1
    _set_grad(p, g2)
    mon.snapshot()
    theta1 = p.numpy()
    opt.step()
    r2 = mon.record(2, {"grad_norm": 4.0, "max_norm": 1.0})
    b2 = 0.9 * g1 + g2                                        # momentum buffer after 2 steps
    assert r2.momentum_norm == pytest.approx(np.linalg.norm(b2))
    assert r2.update_ratio == pytest.approx(0.1 * np.linalg.norm(b2) / np.linalg.norm(theta1))
    assert r2.clip_coef == pytest.approx(0.25)


def test_optimizer_monitor_plain_sgd_ratio():
    from tinygrad_opt.optim import SGD
    p = Tensor(np.array([1.0, -2.0, 2.0]), requires_grad=True)
    opt = SGD([p], lr=0.5)
    mon = curvature.OptimizerMonitor(opt)
    _set_grad(p, [2.0, 0.0, 1.0])
    mon.snapshot()
    opt.step()
    r = mon.record(1)
    assert r.update_ratio == pytest.approx(0.5 * math.sqrt(5.0) / 3.0)
    assert r.momentum_norm is None and r.clip_coef is None


def test_optimizer_monitor_adam_effective_step_size_after_two_steps():
    from tinygrad_opt import optim
    lr, b1, b2, eps = 0.01, 0.9, 0.999, 1e-8
    p = Tensor(np.array([0.5, -1.0, 2.0]), requires_grad=True)
    opt = optim.Adam([p], lr=lr, betas=(b1, b2), eps=eps)
    mon = curvature.OptimizerMonitor(opt)
    g1, g2 = np.array([0.1, -2.0, 3.0]), np.array([0.3, 1.0, -0.5])
    for g in (g1, g2):
        _set_grad(p, g)
        opt.step()
    r = mon.record(2)
    v = (1 - b2) * (b2 * g1 ** 2 + g2 ** 2)                  # v_2
    eff = lr / (np.sqrt(v / (1 - b2 ** 2)) + eps)
    assert r.step_size_kind == "adam"
    assert r.step_size_mean == pytest.approx(eff.mean(), rel=1e-12)
    assert r.step_size_median == pytest.approx(np.median(eff), rel=1e-12)
    assert r.step_size_min == pytest.approx(eff.min(), rel=1e-12)
    assert r.step_size_max == pytest.approx(eff.max(), rel=1e-12)
    m = (1 - b1) * (b1 * g1 + g2)
    assert r.momentum_norm == pytest.approx(np.linalg.norm(m), rel=1e-12)
    assert r.update_ratio is None                             # no snapshot was taken


def test_optimizer_monitor_rmsprop_and_adagrad_step_sizes():
    from tinygrad_opt.optim import Adagrad, RMSprop
    g1, g2 = np.array([0.5, -1.0]), np.array([2.0, 0.25])
    p = Tensor(np.array([1.0, 1.0]), requires_grad=True)
    opt = RMSprop([p], lr=0.01, alpha=0.9, eps=1e-8, centered=True)
    mon = curvature.OptimizerMonitor(opt)
    for g in (g1, g2):
        _set_grad(p, g)
        opt.step()
    r = mon.record(2)
    sq = 0.1 * (0.9 * g1 ** 2 + g2 ** 2)                     # E[g^2] after 2 steps
    avg = 0.1 * (0.9 * g1 + g2)                               # E[g]
    eff = 0.01 / (np.sqrt(sq - avg ** 2) + 1e-8)
    assert r.step_size_kind == "rmsprop"
    assert [r.step_size_min, r.step_size_max] == pytest.approx(sorted(eff), rel=1e-12)

    q = Tensor(np.array([1.0, 1.0]), requires_grad=True)
    opt = Adagrad([q], lr=0.1, eps=1e-10, lr_decay=0.5)
    mon = curvature.OptimizerMonitor(opt)
    for g in (g1, g2):
        _set_grad(q, g)
        opt.step()
    r = mon.record(2)
    eff = 0.1 / (1 + 0.5) / (np.sqrt(g1 ** 2 + g2 ** 2) + 1e-10)
    assert r.step_size_kind == "adagrad"
    assert r.step_size_mean == pytest.approx(eff.mean(), rel=1e-12)


def test_monitors_inside_fit():
    from tinygrad_opt import nn, train
    from tinygrad_opt.data import DataLoader
    from tinygrad_opt.nn import functional as F
    from tinygrad_opt.optim import SGD
    rng = np.random.default_rng(0)
    X = rng.standard_normal((32, 2))
    y = rng.integers(0, 3, 32)
    model = nn.MLP([2, 5, 3], activation="tanh", dtype=np.float64)
    opt = SGD(model.parameters(), lr=0.1, momentum=0.9)
    cm = curvature.CurvatureMonitor(every=2, n_probes=3)       # the step's own minibatch
    om = curvature.OptimizerMonitor(opt, every=2, max_norm=1.0)
    state = backend.get_rng_state()
    train.fit(model, opt, DataLoader(X, y, batch_size=8, seed=0), F.cross_entropy, epochs=2,
              clip=1.0, callbacks=[cm, om], progress=False)
    assert backend.get_rng_state() == state                   # monitoring drew no numbers
    assert [r.step for r in cm.history] == [2, 4, 6, 8]
    assert [r.step for r in om.history] == [2, 4, 6, 8]
    assert all(r.lr == 0.1 and r.lr_sharpness == pytest.approx(0.1 * r.lambda_max)
               for r in cm.history)
    assert all(r.lambda_min <= r.grad_curvature <= r.lambda_max for r in cm.history)
    assert all(r.update_ratio > 0 and 0 < r.clip_coef <= 1 and r.momentum_norm > 0
               for r in om.history)

    # the last record agrees with a dense Hessian of the last minibatch at the final weights
    params = list(model.parameters())
    xb, yb = train_last_batch(X, y)
    closure = lambda: F.cross_entropy(model(Tensor(xb)), Tensor(yb))
    H = dense_hessian_of(closure, params)
    assert cm.history[-1].lambda_max == pytest.approx(np.linalg.eigvalsh(H)[-1], rel=1e-6)


def train_last_batch(X, y):
    """The last minibatch of the second epoch of DataLoader(X, y, batch_size=8, seed=0)."""
    from tinygrad_opt.data import DataLoader
    loader = DataLoader(X, y, batch_size=8, seed=0)
    for _ in range(2):
        for xb, yb in loader:
            pass
    return xb.numpy(), yb.numpy()


def dense_hessian_of(closure, params):
    """The n x n Hessian, column by column from unit vectors (small problems only)."""
    op = curvature.HVPOperator(closure, params)
    return np.stack([op.matvec(e) for e in np.eye(op.n)], axis=1)


def test_optimizer_monitor_textbook_adam_and_rmsprop():
    from tinygrad_opt.optim import textbook
    g1, g2 = np.array([0.5, -1.0]), np.array([2.0, 0.25])
    p = Tensor(np.array([1.0, 1.0]), requires_grad=True)
    opt = textbook.Adam([p], lr=0.001, rho1=0.9, rho2=0.999, delta=1e-8)
    mon = curvature.OptimizerMonitor(opt)
    for g in (g1, g2):
        _set_grad(p, g)
        opt.step()
    r = mon.record(2)
    eff = 0.001 / (np.sqrt(0.001 * (0.999 * g1 ** 2 + g2 ** 2) / (1 - 0.999 ** 2)) + 1e-8)
    assert r.step_size_kind == "adam"
    assert r.step_size_mean == pytest.approx(eff.mean(), rel=1e-12)
    assert r.momentum_norm == pytest.approx(np.linalg.norm(0.1 * (0.9 * g1 + g2)), rel=1e-12)

    q = Tensor(np.array([1.0, 1.0]), requires_grad=True)
    opt = textbook.RMSProp([q], lr=0.01, rho=0.9, delta=1e-6)
    mon = curvature.OptimizerMonitor(opt)
    _set_grad(q, g1)
    opt.step()
    r = mon.record(1)
    eff = 0.01 / np.sqrt(1e-6 + 0.1 * g1 ** 2)                # delta inside the root
    assert r.step_size_kind == "rmsprop"
    assert [r.step_size_min, r.step_size_max] == pytest.approx(sorted(eff), rel=1e-12)


def test_functions_accept_a_generator_of_parameters_once():
    # model.parameters() is a generator: each function reads it once
    closure, params = mlp_problem()
    H, _, _ = mlp_dense_hessian()
    top = curvature.top_eigenvalues(closure, (p for p in params), k=1)
    assert top.eigenvalues[0] == pytest.approx(np.linalg.eigvalsh(H)[-1], rel=1e-8)
    tr = curvature.hutchinson_trace(closure, iter(params), n_samples=3, seed=0)
    assert np.isfinite(tr.mean)
    st = curvature.step_test(closure, (p for p in params), lr=0.1, measure=True)
    assert st.actual_change is not None


def test_optimizer_monitor_lives_next_to_the_optimizers():
    from tinygrad_opt.optim import monitor
    assert curvature.OptimizerMonitor is monitor.OptimizerMonitor
    assert curvature.OptimizerRecord is monitor.OptimizerRecord
