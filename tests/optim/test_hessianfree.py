"""HessianFree: the Gauss-Newton product against a dense J^T H_L J, a step worked by hand,
Martens' CG stopping and backtracking schedules, the damping rule, checkpoints."""
import math

import numpy as np
import pytest

from tinygrad_opt import Tensor, autograd
from tinygrad_opt.nn import functional as F
from tinygrad_opt.optim import HessianFree
from tinygrad_opt.optim.hessianfree import _martens_cg, gauss_newton_product, loss_output

from resume import assert_resume_bit_identical, mlp_problem, trajectory
from conftest import CUDA


def dense_ggn(loss_kind):
    """The problem's parameters, closure, and G = J^T H_L J built from Jacobian rows."""
    model, closure = mlp_problem(loss=loss_kind)
    params = list(model.parameters())
    loss = closure()
    z, kind = loss_output(loss, "test")
    assert kind == loss_kind
    zf = z.data.reshape(-1)
    rows = []
    for k in range(zf.size):
        e = np.zeros(zf.size)
        e[k] = 1.0
        gs = autograd.grad(z, params, grad_outputs=e.reshape(z.shape), retain_graph=True)
        rows.append(np.concatenate([g.numpy().reshape(-1) for g in gs]))
    J = np.array(rows)
    n, c = z.shape
    if loss_kind == "mse":
        HL = 2.0 / (n * c) * np.eye(n * c)
    else:
        logits = z.numpy()
        p = np.exp(logits - logits.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        HL = np.zeros((n * c, n * c))
        for i in range(n):
            HL[i * c:(i + 1) * c, i * c:(i + 1) * c] = (np.diag(p[i]) - np.outer(p[i], p[i])) / n
    return params, loss, z, J.T @ HL @ J


@pytest.mark.parametrize("loss_kind", ["cross_entropy", "mse"])
def test_gauss_newton_product_equals_dense_jt_hl_j(loss_kind):
    params, loss, z, G = dense_ggn(loss_kind)
    product = gauss_newton_product(loss, z, params)
    rng = np.random.default_rng(0)
    for _ in range(3):
        v = rng.standard_normal(G.shape[0])
        parts, off = [], 0
        for p in params:
            parts.append(v[off:off + p.size].reshape(p.shape))
            off += p.size
        gv = np.concatenate([a.reshape(-1) for a in product(parts)])
        np.testing.assert_allclose(gv, G @ v, rtol=1e-10, atol=1e-12)
    assert np.linalg.eigvalsh(G).min() > -1e-12          # positive semi-definite


def one_weight_problem():
    # z = w x, f(w) = mean((w x - t)^2) with x = (1, 2), t = (1, 3): g = -7 at w = 0, G = 5
    w = Tensor(np.zeros((1, 1)), requires_grad=True)
    X = Tensor(np.array([[1.0], [2.0]]))
    T = Tensor(np.array([[1.0], [3.0]]))
    return w, lambda: F.mse_loss(X @ w.T, T)


def test_two_steps_by_hand_on_a_quadratic():
    # f is quadratic, so G = f'' = 5 and one CG iteration solves (G + lambda) d = -g exactly.
    # step 1 (lambda = 1): d = 7/6; rho = 1 > 3/4, so lambda <- 2/3; Armijo takes alpha = 1.
    # step 2: g = -7/6; the warm start 0.95*7/6 has q > 0 and is dropped;
    #         d = (7/6) / (5 + 2/3) = 7/34, w = 7/6 + 7/34 = 70/51; lambda <- 4/9.
    w, closure = one_weight_problem()
    opt = HessianFree([w], damping=1.0, precondition=False)
    assert opt.step(closure) == 5.0
    np.testing.assert_allclose(w.numpy(), [[7 / 6]], rtol=1e-14)
    opt.step(closure)
    np.testing.assert_allclose(w.numpy(), [[70 / 51]], rtol=1e-14)
    a, b = opt.log
    assert (a["cg_iters"], a["iterate"], a["alpha"], b["cg_iters"]) == (1, 1, 1.0, 1)
    assert (a["products"], b["products"]) == (1, 2)     # step 2 also prices the warm start
    assert opt.flat_state["func_evals"] == 4        # per step: f and g, then f at the iterate
    np.testing.assert_allclose([a["rho"], b["rho"]], [1.0, 1.0], rtol=1e-12)
    np.testing.assert_allclose([a["damping"], b["damping"]], [1.0, 2 / 3], rtol=1e-15)
    np.testing.assert_allclose(opt.param_groups[0]["damping"], 4 / 9, rtol=1e-15)
    np.testing.assert_allclose(a["new_loss"], 5 - 7 * 7 / 6 + 2.5 * (7 / 6) ** 2, rtol=1e-14)


def test_curvature_closure_takes_g_on_its_minibatch_and_f_g_on_the_closure():
    # f = ((w - 1)^2 + (2w - 3)^2) / 2 on both rows: f(0) = 5, g = -7. The curvature
    # mini-batch is row 2 alone, f_c = (2w - 3)^2, so G = 8 (not the full batch's 5).
    # lambda = 1: d = 7 / (8 + 1) = 7/9; f(7/9) = 173/162;
    # rho = (173/162 - 5) / (g d + G d^2 / 2) = (-637/162) / (-245/81) = 1.3 > 3/4.
    w, closure = one_weight_problem()
    x2, t2 = Tensor(np.array([[2.0]])), Tensor(np.array([[3.0]]))
    opt = HessianFree([w], damping=1.0, precondition=False)
    assert opt.step(closure, curvature_closure=lambda: F.mse_loss(x2 @ w.T, t2)) == 5.0
    np.testing.assert_allclose(w.numpy(), [[7 / 9]], rtol=1e-14)
    e = opt.log[0]
    np.testing.assert_allclose([e["rho"], e["new_loss"]], [1.3, 173 / 162], rtol=1e-13)
    assert (e["cg_iters"], e["products"], e["alpha"]) == (1, 1, 1.0)
    np.testing.assert_allclose(opt.param_groups[0]["damping"], 2 / 3, rtol=1e-15)
    assert opt.flat_state["func_evals"] == 2        # f and g, then f at the iterate
    # the whole batch as the curvature closure is the default, step for step
    model, closure = mlp_problem()
    a = HessianFree(model.parameters(), damping=0.5)
    for _ in range(3):
        a.step(closure, curvature_closure=closure)
    model2, closure2 = mlp_problem()
    b = HessianFree(model2.parameters(), damping=0.5)
    for _ in range(3):
        b.step(closure2)
    for p, q in zip(model.parameters(), model2.parameters()):
        np.testing.assert_array_equal(p.numpy(), q.numpy())
    with pytest.raises(ValueError, match="model output"):
        opt.step(closure, curvature_closure=lambda: (w * w).sum())


def cg_group(**kw):
    g = dict(cg_max_iter=250, cg_min_iter=10, cg_tol=5e-4, backtrack_gamma=1.3)
    g.update(kw)
    return g


def test_martens_cg_stops_by_relative_progress_and_saves_at_ceil_gamma_powers():
    rng = np.random.default_rng(0)
    Q, _ = np.linalg.qr(rng.standard_normal((60, 60)))
    A = Q @ np.diag(np.geomspace(1e-3, 1.0, 60)) @ Q.T
    g = rng.standard_normal(60)
    d, qs, saved, iters = _martens_cg(np, lambda v: A @ v, g, 0.0, None, None, cg_group())
    k = max(10, int(0.1 * iters))
    assert iters > k and qs[iters] < 0
    assert (qs[iters] - qs[iters - k]) / qs[iters] < k * 5e-4          # stopped by the rule ...
    for i in range(11, iters):                                         # ... and not before
        ki = max(10, int(0.1 * i))
        assert not (i > ki and (qs[i] - qs[i - ki]) / qs[i] < ki * 5e-4)
    for i, di in saved:                                                # q(d) = g.d + d.A d / 2
        np.testing.assert_allclose(qs[i], g @ di + 0.5 * di @ A @ di, rtol=1e-9)
    idx = [i for i, _ in saved]
    expect = sorted({math.ceil(1.3 ** j) for j in range(40)} & set(range(1, iters + 1)))
    assert idx[:len(expect)] == expect and idx[-1] == iters
    # more iterations only if the tolerance is tightened; then the solve is (nearly) exact
    d2, _, _, iters2 = _martens_cg(np, lambda v: A @ v, g, 0.0, None, None, cg_group(cg_tol=0))
    assert iters2 > iters
    np.testing.assert_allclose(A @ d2, -g, atol=1e-6)


def test_martens_cg_with_damping_preconditioner_and_warm_start_solves_the_damped_system():
    rng = np.random.default_rng(1)
    B = rng.standard_normal((8, 8))
    A = B @ B.T
    g = rng.standard_normal(8)
    m = (np.abs(rng.standard_normal(8)) + 0.5) ** 0.75
    exact = -np.linalg.solve(A + 0.3 * np.eye(8), g)
    d, _, _, iters = _martens_cg(np, lambda v: A @ v, g, 0.3, m, 0.9 * exact,
                                 cg_group(cg_tol=0, cg_max_iter=40))
    np.testing.assert_allclose(d, exact, rtol=1e-8)


def test_martens_cg_stops_at_a_direction_without_curvature(monkeypatch):
    # A = diag(2, -1): the first direction p = -g = (-1, -1/2) has p.A p = 2 - 1/4 > 0, so
    # d_1 = -(p.p / p.A p) g = -(5/4)/(7/4) (1, 1/2); the next direction has p.A p <= 0 and
    # CG stops there with d_1, after one host read before the loop and one per iteration.
    from test_no_host_transfer import no_host_transfers
    A = np.diag([2.0, -1.0])
    g = np.array([1.0, 0.5])
    with no_host_transfers(monkeypatch, allow=("backend.to_numpy",)) as reads:
        d, qs, saved, iters = _martens_cg(np, lambda v: A @ v, g, 0.0, None, None, cg_group())
    assert iters == 1 and reads["backend.to_numpy"] == 3
    np.testing.assert_allclose(d, -(5 / 7) * g, rtol=1e-15)
    assert [i for i, _ in saved] == [1]
    np.testing.assert_allclose(qs[1], g @ d + 0.5 * d @ A @ d, rtol=1e-15)


def test_damping_follows_the_reduction_ratio_and_the_loss_never_rises():
    model, closure = mlp_problem()
    opt = HessianFree(model.parameters(), damping=1e-4, precondition=False)
    for _ in range(12):
        opt.step(closure)
    seen = set()
    for a, b in zip(opt.log, opt.log[1:]):
        if a["rho"] < 0.25:
            factor, seen = 1.5, seen | {"up"}
        elif a["rho"] > 0.75:
            factor, seen = 2 / 3, seen | {"down"}
        else:
            factor = 1.0
        np.testing.assert_allclose(b["damping"], a["damping"] * factor, rtol=1e-14)
    assert seen == {"up", "down"}
    for e in opt.log:
        assert e["new_loss"] <= e["loss"] and 1 <= e["cg_iters"] <= 250
    assert opt.log[-1]["new_loss"] < 0.5 * opt.log[0]["loss"]


def test_hessianfree_resume_is_bit_identical():
    assert_resume_bit_identical(lambda p: HessianFree(p, damping=0.5, precondition=False),
                                before=2, after=2, loss="mse")


def test_a_nonfinite_loss_leaves_the_parameters_unchanged():
    w, _ = one_weight_problem()
    X = Tensor(np.array([[np.inf], [1.0]]))
    opt = HessianFree([w], damping=1.0, precondition=False)
    with np.errstate(invalid="ignore"):                 # inf * 0 in the forward
        assert math.isnan(opt.step(lambda: F.mse_loss(X @ w.T * 0.0, np.zeros((2, 1)))))
    np.testing.assert_array_equal(w.numpy(), [[0.0]])
    assert opt.log == []


def test_hessianfree_errors():
    w = Tensor(np.ones(2), requires_grad=True)
    with pytest.raises(ValueError, match="model output.*Sum"):
        HessianFree([w]).step(lambda: (w * w).sum())
    with pytest.raises(TypeError, match="closure"):
        HessianFree([w], precondition=False).step()
    with pytest.raises(ValueError, match="damping"):
        HessianFree([w], damping=0)

    with pytest.raises(ValueError, match="parameter groups"):
        HessianFree([{"params": [w]}, {"params": [Tensor(np.ones(1), requires_grad=True)]}])


@pytest.mark.filterwarnings("ignore:cupyx.allow_synchronize:UserWarning")
def test_hessianfree_reads_the_host_once_per_cg_iteration(device, monkeypatch):
    """The bound on host reads, per update: backend.to_numpy cg_iters + 2 times (one copy of
    (p.A p, r.M^-1 r, q_i) per CG iteration, one before CG, one of (d.d, g.d) for rho and
    Armijo) and Tensor.item once per loss evaluation; nothing else. On CuPy every other way
    to the host raises (the helper shuts them); on NumPy the count through the doors holds."""
    from test_no_host_transfer import no_host_transfers
    model, closure = mlp_problem(device=device)
    opt = HessianFree(model.parameters(), damping=0.5)        # preconditioned: extensions too
    opt.step(closure)
    for _ in range(2):                                         # with a warm start from step 1
        evals = opt.flat_state["func_evals"]
        with no_host_transfers(monkeypatch, allow=("backend.to_numpy", "Tensor.item")) as reads:
            opt.step(closure)
        e = opt.log[-1]
        assert e["cg_iters"] >= 10 and e["products"] == e["cg_iters"] + 1
        assert reads["backend.to_numpy"] == e["cg_iters"] + 2
        assert reads["Tensor.item"] == opt.flat_state["func_evals"] - evals >= 2
        assert set(reads) == {"backend.to_numpy", "Tensor.item"}


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="CuPy with a CUDA GPU is not available")
def test_hessianfree_on_gpu_follows_the_cpu_run():
    make = lambda p: HessianFree(p, damping=0.5, precondition=False)    # noqa: E731
    for a, b in zip(trajectory(make, 3), trajectory(make, 3, device="cuda")):
        for x, y in zip(a, b):
            np.testing.assert_allclose(y, x, rtol=1e-9, atol=1e-10)
