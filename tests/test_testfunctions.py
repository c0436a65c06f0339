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
