"""The 2-D test problems: known minima and saddles, the same formula on floats, grids, Tensors."""
import numpy as np
import pytest

from tinygrad_opt import autograd, testfunctions
from tinygrad_opt.tensor import Tensor

PROBLEMS = testfunctions.PROBLEMS


@pytest.mark.parametrize("name", list(PROBLEMS))
def test_minima_and_saddles_are_stationary(name):
    p = PROBLEMS[name]
    for point in p.minima + p.saddles:
        x = Tensor(np.array(point, dtype=np.float64), requires_grad=True)
        (g,) = autograd.grad(p.f(x[0], x[1]), [x])
        np.testing.assert_allclose(g.numpy(), 0.0, atol=1e-12)
    for m in p.minima:
        assert p.f(*m) == pytest.approx(0.0, abs=1e-12)
    for s in p.saddles:          # a saddle: the Hessian has eigenvalues of both signs
        H = autograd.hessian(lambda x: p.f(x[0], x[1]), Tensor(np.array(s, dtype=np.float64)))
        ev = np.linalg.eigvalsh(H.numpy())
        assert ev[0] < 0 < ev[-1]
    X, Y = np.meshgrid(np.linspace(*p.xlim, 4), np.linspace(*p.ylim, 3))
    Z = p.f(X, Y)
    assert Z.shape == (3, 4) and Z[1, 2] == pytest.approx(p.f(X[1, 2], Y[1, 2]))


def test_rosenbrock_value_and_gradient():
    x = Tensor(np.array([-1.5, 2.0]), requires_grad=True)
    f = testfunctions.rosenbrock(x[0], x[1])
    f.backward()
    # f = 2.5^2 + 100 (2 - 2.25)^2; df/dx = -2(1 - x) - 400 x (y - x^2); df/dy = 200 (y - x^2)
    assert f.item() == pytest.approx(6.25 + 6.25)
    np.testing.assert_allclose(x.grad.numpy(), [-5.0 - 400 * -1.5 * -0.25, 200 * -0.25])


def test_run_path_newton_solves_the_quadratic_in_one_step():
    p = PROBLEMS["quadratic"]
    path = testfunctions.run_path(p, "newton", 10)
    assert path.shape == (3, 2)                 # one step; the second does not move: stop
    np.testing.assert_allclose(path[0], p.start)
    np.testing.assert_allclose(path[1:], 0.0, atol=1e-12)
    assert testfunctions.problem_lr(p, "sgd") == 0.09
    assert testfunctions.problem_lr(p, "cg") == 1.0 and testfunctions.problem_lr(p, "sgd", 0.5) == 0.5


ND = {p.name: p for p in testfunctions.mgh_problems()}


def test_nd_problems_have_their_minimum_where_stated():
    # the gradient vanishes at the known minimizers (Moré, Garbow & Hillstrom's tables)
    for name, x_star in [("rosenbrock2", np.ones(2)), ("rosenbrock100", np.ones(100)),
                         ("beale", np.array([3.0, 0.5])), ("powell_singular", np.zeros(4)),
                         ("wood", np.ones(4))]:
        f, g = ND[name].value_and_grad(x_star)
        assert f == 0.0 and np.all(g == 0.0)
    p = ND["quadratic50"]
    f, g = p.value_and_grad(np.zeros(50))
    assert f == 0.0 and p.f_star < 0
    # logistic: f(0) = log 2 (every margin 0, no penalty), and f_star lies below it
    p = ND["logistic"]
    assert p.f_star < p.value_and_grad(p.x0)[0] == pytest.approx(np.log(2))


def test_nd_values_at_the_standard_starts():
    # MGH's tables: f(x0) = 24.2 (Rosenbrock, per pair), 215 (Powell), 19192 (Wood);
    # Beale at (1, 1): 1.5^2 + 2.25^2 + 2.625^2
    assert ND["rosenbrock10"].value_and_grad(ND["rosenbrock10"].x0)[0] == pytest.approx(5 * 24.2)
    assert ND["powell_singular"].value_and_grad(ND["powell_singular"].x0)[0] == pytest.approx(215)
    assert ND["wood"].value_and_grad(ND["wood"].x0)[0] == pytest.approx(19192)
    assert ND["beale"].value_and_grad([1.0, 1.0])[0] == pytest.approx(1.5**2 + 2.25**2 + 2.625**2)


def test_nd_rosenbrock_and_beale_are_the_2d_functions():
    rng = np.random.default_rng(0)
    x = rng.standard_normal(10)
    f, _ = ND["rosenbrock10"].value_and_grad(x)
    assert f == pytest.approx(sum(testfunctions.rosenbrock(x[i], x[i + 1]) for i in (0, 2, 4, 6, 8)))
    assert ND["beale"].value_and_grad(x[:2])[0] == pytest.approx(testfunctions.beale(*x[:2]))


@pytest.mark.parametrize("name", ["powell_singular", "trigonometric10", "logistic"])
def test_nd_gradient_and_hessp_match_finite_differences(name):
    p, rng = ND[name], np.random.default_rng(1)
    x, v = p.x0 + 0.1 * rng.standard_normal(p.n), rng.standard_normal(p.n)
    f, g = p.value_and_grad(x)
    h = 1e-6
    fd = (p.value_and_grad(x + h * v)[0] - p.value_and_grad(x - h * v)[0]) / (2 * h)
    assert g @ v == pytest.approx(fd, rel=1e-6, abs=1e-9)
    hv = (p.value_and_grad(x + h * v)[1] - p.value_and_grad(x - h * v)[1]) / (2 * h)
    np.testing.assert_allclose(p.hessp(x, v), hv, rtol=1e-5, atol=1e-6)


def test_nd_problem_bad_sizes():
    with pytest.raises(ValueError, match="extended_rosenbrock: n must be even"):
        testfunctions.extended_rosenbrock(3)
    with pytest.raises(ValueError, match="extended_trigonometric: f_star is known for n = 10"):
        testfunctions.extended_trigonometric(5)


def test_nd_problems_run_on_every_device(device):
    # the same values and gradients on the device as on the host (constants follow x)
    for p in ND.values():
        x = p.x0 + 0.01
        f, g = p.value_and_grad(x)
        fd, gd = p.value_and_grad(x, device=device)
        assert fd == pytest.approx(f, rel=1e-12)
        np.testing.assert_allclose(gd, g, rtol=1e-10, atol=1e-12)
