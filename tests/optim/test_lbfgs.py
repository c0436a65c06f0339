import numpy as np
import pytest

from tinygrad_opt.optim.lbfgs import LBFGS, _two_loop
from tinygrad_opt.tensor import Tensor

from problems import rosenbrock, tiny_mlp
from problems import conditioned_quadratic as _cq


def quadratic(n=8, seed=0, cond=50.0):
    return _cq(n, seed, cond)


def test_reaches_the_rosenbrock_minimum():
    x, closure = rosenbrock()
    opt = LBFGS([x])
    for _ in range(10):
        opt.step(closure)
    np.testing.assert_allclose(x.data, [1.0, 1.0], atol=1e-6)
    st = opt.state[x]
    assert st["n_iter"] <= 200 and st["func_evals"] <= 250


@pytest.mark.parametrize("line_search", ["armijo", None])
def test_other_line_searches_on_a_quadratic(line_search):
    x, closure, A, b = quadratic()
    opt = LBFGS([x], line_search=line_search, max_iter=50, tolerance_change=1e-14)
    for _ in range(4):
        opt.step(closure)
    np.testing.assert_allclose(A @ x.data, b, atol=1e-6)


def test_one_step_runs_max_iter_iterations_and_returns_the_first_loss():
    x, closure = rosenbrock()
    opt = LBFGS([x], max_iter=5, max_eval=20)
    f0 = float(closure().item())
    assert opt.step(closure) == f0
    assert opt.state[x]["n_iter"] == 5
    assert len(opt.state[x]["old_s"]) == 5
    assert opt.state[x]["func_evals"] <= 20
    # no new iteration starts after max_eval (default max_iter * 5 // 4 = 6) closure calls
    opt = LBFGS([x], max_iter=5)
    opt.step(closure)
    assert opt.state[x]["n_iter"] < 5 and opt.state[x]["func_evals"] >= 6


def test_history_is_bounded():
    x, closure, A, b = quadratic(n=12, cond=1e3)
    opt = LBFGS([x], history_size=3, max_iter=8)
    opt.step(closure)
    st = opt.state[x]
    assert st["old_s"].shape == (3, 12) and st["old_y"].shape == (3, 12)
    # on a quadratic the gradient change is exactly A s: each kept pair is a real (s, y)
    np.testing.assert_allclose(st["old_y"], st["old_s"] @ A.T, rtol=1e-9, atol=1e-12)
    assert np.all(np.einsum("ij,ij->i", st["old_s"], st["old_y"]) > 0)


def test_history_holds_the_newest_steps_in_order():
    x, closure, A, b = quadratic(n=12, cond=1e3)
    opt = LBFGS([x], history_size=3, max_iter=1)
    xs = [x.data.copy()]
    for _ in range(6):
        opt.step(closure)
        xs.append(x.data.copy())
    steps = np.diff(np.array(xs), axis=0)
    np.testing.assert_allclose(opt.state[x]["old_s"], steps[-3:], rtol=1e-12, atol=1e-16)  # oldest first
    np.testing.assert_allclose(opt.state[x]["old_y"], steps[-3:] @ A.T, rtol=1e-9, atol=1e-12)


def test_two_loop_matches_the_dense_bfgs_inverse_update():
    rng = np.random.default_rng(1)
    n, m = 5, 3
    M = rng.standard_normal((n, n))
    A = M @ M.T + np.eye(n)                            # y = A s gives y^T s > 0
    S = rng.standard_normal((m, n))
    Y = S @ A
    g = rng.standard_normal(n)
    gamma = S[-1] @ Y[-1] / (Y[-1] @ Y[-1])
    Hk = gamma * np.eye(n)
    for s, y in zip(S, Y):                             # N&W eq. 6.17
        rho = 1.0 / (y @ s)
        V = np.eye(n) - rho * np.outer(y, s)
        Hk = V.T @ Hk @ V + rho * np.outer(s, s)
    np.testing.assert_allclose(_two_loop(np, g, S, Y), -Hk @ g, rtol=1e-10)
    np.testing.assert_array_equal(_two_loop(np, g, S[:0], Y[:0]), -g)


def test_pairs_without_positive_curvature_are_skipped():
    # a linear loss: its gradient never changes, so y = 0 and no pair is stored
    a = Tensor(np.array([2.0]), requires_grad=True)
    closure = lambda: (a * a).sum()
    opt = LBFGS([a], max_iter=3)
    opt.step(closure)
    assert len(opt.state[a]["old_s"]) >= 1
    w = Tensor(np.array([1.0, 2.0]), requires_grad=True)
    lin = lambda: (w * Tensor(np.array([1.0, -1.0]))).sum()
    opt = LBFGS([w], line_search=None, lr=0.1, max_iter=3, max_eval=10)
    opt.step(lin)
    assert len(opt.state[w]["old_s"]) == 0
    np.testing.assert_allclose(w.data, [1.0 - 0.3 / np.sqrt(2), 2.0 + 0.3 / np.sqrt(2)])


def test_converged_step_does_nothing():
    x = Tensor(np.array([1.0, 1.0]), requires_grad=True)
    opt = LBFGS([x])
    assert opt.step(lambda: ((x - 1) ** 2).sum()) == 0.0
    np.testing.assert_array_equal(x.data, [1.0, 1.0])
    assert opt.state[x]["n_iter"] == 0 and opt.state[x]["func_evals"] == 1


def test_multi_tensor_mlp_decreases_the_loss():
    params, closure = tiny_mlp()
    opt = LBFGS(params, max_iter=10)
    fs = [opt.step(closure) for _ in range(5)] + [float(closure().item())]
    assert all(b <= a for a, b in zip(fs, fs[1:]))
    assert fs[-1] < 0.1 * fs[0]


def test_float32_parameters():
    x, closure = rosenbrock(dtype=np.float32)
    opt = LBFGS([x])
    for _ in range(10):
        opt.step(closure)
    assert x.data.dtype == np.float32 and opt.state[x]["old_s"].dtype == np.float32
    np.testing.assert_allclose(x.data, [1.0, 1.0], atol=1e-2)


@pytest.mark.parametrize("line_search", ["strong_wolfe", "armijo"])
def test_state_dict_round_trip_is_bit_identical(line_search):
    params, closure = tiny_mlp()
    opt = LBFGS(params, max_iter=3, line_search=line_search)
    for _ in range(3):
        opt.step(closure)
    sd = opt.state_dict()
    saved = [p.data.copy() for p in params]
    ref = [opt.step(closure) for _ in range(4)], [p.data.copy() for p in params]

    for p, s in zip(params, saved):
        p.data[...] = s
    opt2 = LBFGS(params, max_iter=3, line_search=line_search)
    opt2.load_state_dict(sd)
    out = [opt2.step(closure) for _ in range(4)], [p.data.copy() for p in params]
    assert out[0] == ref[0]
    for a, b in zip(out[1], ref[1]):
        np.testing.assert_array_equal(a, b)


def test_errors():
    x, closure = rosenbrock()
    with pytest.raises(ValueError, match="Invalid history_size: 0"):
        LBFGS([x], history_size=0)
    with pytest.raises(ValueError, match="unknown line_search 'wolfe'"):
        LBFGS([x], line_search="wolfe")
    with pytest.raises(TypeError, match="needs a closure"):
        LBFGS([x]).step()
    with pytest.raises(TypeError, match="closure must return the loss Tensor"):
        LBFGS([x]).step(lambda: closure().item())


def test_max_iter_one_still_moves():
    x, closure = rosenbrock()
    opt = LBFGS([x], max_iter=1)                       # max_eval = 1
    f0 = opt.step(closure)
    assert float(closure().item()) < f0 and opt.state[x]["n_iter"] == 1


def test_on_device(device):
    x, closure = rosenbrock(device=device)
    opt = LBFGS([x])
    for _ in range(10):
        opt.step(closure)
    assert x.device == device
    np.testing.assert_allclose(x.numpy(), [1.0, 1.0], atol=1e-6)
