import numpy as np
import pytest

from tinygrad_opt.optim.cg import ConjugateGradient
from tinygrad_opt.tensor import Tensor

from problems import conditioned_quadratic as quadratic, rosenbrock, tiny_mlp


@pytest.mark.parametrize("beta", ["polak-ribiere", "fletcher-reeves"])
def test_exact_line_search_ends_in_n_steps_on_a_quadratic(beta):
    n = 10
    x, closure, A, b = quadratic(n, cond=10.0)
    opt = ConjugateGradient([x], beta=beta, line_search="exact")
    residuals = []
    for _ in range(n):
        opt.step(closure)
        residuals.append(np.linalg.norm(A @ x.data - b))
    assert residuals[-1] < 1e-8
    assert residuals[n // 2] > 1e-4                     # not earlier: it takes about n steps
    # with exact steps the directions are A-conjugate: this is linear CG (N&W Alg. 5.2)
    np.testing.assert_allclose(x.data, np.linalg.solve(A, b), atol=1e-8)


def test_exact_line_search_equals_linear_cg():
    n = 6
    x, closure, A, b = quadratic(n, seed=3)
    opt = ConjugateGradient([x], beta="fletcher-reeves", line_search="exact")
    z, r = np.zeros(n), b.copy()
    p = r.copy()
    for _ in range(4):
        opt.step(closure)
        a = (r @ r) / (p @ A @ p)
        z = z + a * p
        r_new = r - a * (A @ p)
        p = r_new + (r_new @ r_new) / (r @ r) * p
        r = r_new
        np.testing.assert_allclose(x.data, z, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("beta", ["polak-ribiere", "fletcher-reeves"])
def test_reaches_the_rosenbrock_minimum(beta):
    x, closure = rosenbrock()
    opt = ConjugateGradient([x], beta=beta)
    for _ in range(200):
        opt.step(closure)
        if np.abs(x.data - 1).max() < 1e-7:
            break
    np.testing.assert_allclose(x.data, [1.0, 1.0], atol=1e-6)


def test_armijo_line_search_decreases_monotonically():
    x, closure, A, b = quadratic(5, cond=10.0)
    opt = ConjugateGradient([x], line_search="armijo")
    fs = [opt.step(closure) for _ in range(50)]
    assert all(b2 <= a for a, b2 in zip(fs, fs[1:]))
    assert np.linalg.norm(A @ x.data - b) < 1e-6


def test_restart_every_step_is_steepest_descent():
    x, closure, A, b = quadratic(4, seed=2)
    opt = ConjugateGradient([x], restart=1, line_search="exact")
    for _ in range(3):
        g = A @ x.data - b
        opt.step(closure)
        np.testing.assert_allclose(opt.state[x]["d"], -g, rtol=1e-12)


def test_polak_ribiere_plus_clips_negative_beta():
    x = Tensor(np.array([3.0, 0.1]), requires_grad=True)
    closure = lambda: (x[0] ** 4) / 4 + 5 * x[1] ** 2 + x[0] * x[1]
    grad = lambda: np.array([x.data[0] ** 3 + x.data[1], 10 * x.data[1] + x.data[0]])
    opt = ConjugateGradient([x], c2=0.1)        # a trajectory whose restarts fall on beta < 0
    opt.step(closure)
    betas = []
    for _ in range(4):
        st = opt.state[x]
        g_prev, d_prev, g = st["g"].copy(), st["d"].copy(), grad()
        beta = g @ (g - g_prev) / (g_prev @ g_prev)
        betas.append(beta)
        opt.step(closure)
        np.testing.assert_allclose(opt.state[x]["d"], -g + max(beta, 0.0) * d_prev, rtol=1e-10)
    assert min(betas) < 0 < max(betas)                 # both branches of max(beta, 0) ran


def test_multi_tensor_mlp_decreases_the_loss():
    params, closure = tiny_mlp()
    opt = ConjugateGradient(params)
    fs = [opt.step(closure) for _ in range(30)]
    assert all(b <= a for a, b in zip(fs, fs[1:]))
    assert fs[-1] < 0.3 * fs[0]


def run(opt, x, closure, steps):
    fs = [opt.step(closure) for _ in range(steps)]
    return fs, x.data.copy()


@pytest.mark.parametrize("beta,line_search", [("polak-ribiere", "strong_wolfe"),
                                               ("fletcher-reeves", "armijo")])
def test_state_dict_round_trip_is_bit_identical(beta, line_search):
    x, closure = rosenbrock()
    opt = ConjugateGradient([x], beta=beta, line_search=line_search)
    run(opt, x, closure, 4)
    sd = opt.state_dict()
    saved = x.data.copy()
    ref = run(opt, x, closure, 5)

    x.data[...] = saved
    opt2 = ConjugateGradient([x], beta=beta, line_search=line_search)
    opt2.load_state_dict(sd)
    out = run(opt2, x, closure, 5)
    assert out[0] == ref[0]
    np.testing.assert_array_equal(out[1], ref[1])


def test_errors():
    x, closure = rosenbrock()
    with pytest.raises(ValueError, match="unknown beta 'hestenes'"):
        ConjugateGradient([x], beta="hestenes")
    with pytest.raises(ValueError, match="unknown line_search 'wolfe'"):
        ConjugateGradient([x], line_search="wolfe")
    with pytest.raises(ValueError, match="Invalid restart: 0"):
        ConjugateGradient([x], restart=0)
    with pytest.raises(TypeError, match="needs a closure"):
        ConjugateGradient([x]).step()
    y = Tensor(np.array([0.5, 0.5]), requires_grad=True)
    with pytest.raises(ValueError, match=r"d\^T H d = -.* <= 0"):
        ConjugateGradient([y], line_search="exact").step(lambda: y[0] ** 2 - 3 * y[1] ** 2)


@pytest.mark.parametrize("line_search", ["strong_wolfe", "exact"])
def test_on_device(device, line_search):
    x = Tensor(np.array([3.0, -1.0]), requires_grad=True, device=device)
    closure = lambda: (x[0] - 1) ** 2 + 10 * (x[1] + 2) ** 2 + x[0] * x[1]
    opt = ConjugateGradient([x], line_search=line_search)
    for _ in range(2 if line_search == "exact" else 30):
        opt.step(closure)
    assert x.device == device
    np.testing.assert_allclose(x.numpy(), np.linalg.solve([[2, 1], [1, 20]], [2, -40]), atol=1e-8)



def test_strong_wolfe_search_asks_for_a_sufficient_descent_next_direction():
    # SciPy's extra condition: a point ends the search only if the PR+ direction from it,
    # d1 = -g1 + beta d with beta = max((g1 - g0).g1 / |g0|^2, 0), has g1.d1 <= -0.01 |g1|^2.
    # From d = -g0 and g1 = |g0| (-t u + s v) (u = g0/|g0|, v orthogonal, s = 1):
    # beta = t^2 + t + 1 and g1.d1 / |g0|^2 = -(t^2 + 1) + t beta
    def first_search(**kw):             # the options of the first step's line search
        x, closure, _, _ = quadratic(n=2)
        opt = ConjugateGradient([x], **kw)
        captured, real = [], opt.line_search

        def spy(name, phi, f0, df0, **options):
            captured.append(options)
            return real(name, phi, f0, df0, **options)
        opt.line_search = spy
        opt.step(closure)
        return captured[0]

    def g1(g0, t):
        u = g0 / np.linalg.norm(g0)
        return np.linalg.norm(g0) * (-t * u + np.array([-u[1], u[0]]))
    options = first_search()
    accept, g0 = options["accept"], options["grad0"]
    assert accept(1.0, g1(g0, 0.6))         # g1.d1 = -0.184 |g0|^2: ratio 0.135
    assert not accept(1.0, g1(g0, 0.68))    # descent, but ratio 0.0038 < 0.01
    assert not accept(1.0, g1(g0, 1.0))     # not descent at all
    # Fletcher-Reeves: Powell's test restarts at -g1 there, which is always sufficient
    options = first_search(beta="fletcher-reeves")
    assert options["accept"](1.0, g1(options["grad0"], 1.0))
    # no condition where the next step restarts anyway (restart=1: every step is -g)
    assert "accept" not in first_search(restart=1)
