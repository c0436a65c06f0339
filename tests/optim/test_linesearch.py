import math

import numpy as np
import pytest

from tinygrad_opt.optim.linesearch import (LINE_SEARCHES, backtracking_armijo, strong_wolfe,
                                           _cubic_min, _interpolate)


def scalar_phi(f, df):
    """phi(alpha) -> (value, slope, grad) for a 1-D test function; grad is the slope itself."""
    calls = []

    def phi(a):
        calls.append(a)
        return f(a), df(a), df(a)
    phi.calls = calls
    return phi


# 1-D test functions of More and Thuente (1994), minimizers at alpha > 0, phi'(0) < 0
def mt1(beta=2.0):
    return (lambda a: -a / (a * a + beta),
            lambda a: (a * a - beta) / (a * a + beta) ** 2)


def mt2(beta=0.1):
    return (lambda a: (a + beta) ** 5 - 2 * (a + beta) ** 4,
            lambda a: 5 * (a + beta) ** 4 - 8 * (a + beta) ** 3)


def rosen_along(x0, d):
    """Rosenbrock restricted to x0 + alpha d (NumPy, for checking conditions)."""
    def f(x):
        return (1 - x[0]) ** 2 + 100 * (x[1] - x[0] ** 2) ** 2

    def g(x):
        return np.array([-2 * (1 - x[0]) - 400 * x[0] * (x[1] - x[0] ** 2),
                         200 * (x[1] - x[0] ** 2)])
    return (lambda a: f(x0 + a * d)), (lambda a: float(g(x0 + a * d) @ d)), g(x0)


def quartic():
    return (lambda a: (a - 3.0) ** 4 - 2 * a), (lambda a: 4 * (a - 3.0) ** 3 - 2)


def cases():
    x0 = np.array([-1.5, 2.0])
    _, _, g = rosen_along(x0, np.zeros(2))
    f, df, _ = rosen_along(x0, -g)                  # steepest descent from (-1.5, 2)
    return [("mt1", *mt1()), ("mt2", *mt2()), ("quartic", *quartic()), ("rosenbrock", f, df)]


CASES = cases()


@pytest.mark.parametrize("name,f,df", CASES, ids=[c[0] for c in CASES])
@pytest.mark.parametrize("alpha0", [1e-3, 1e-1, 1.0, 10.0, 1e3])
def test_strong_wolfe_conditions(name, f, df, alpha0):
    c1, c2 = 1e-4, 0.1
    phi = scalar_phi(f, df)
    f0, df0 = f(0.0), df(0.0)
    res = strong_wolfe(phi, f0, df0, alpha=alpha0, c1=c1, c2=c2, max_evals=40)
    assert res.success
    assert res.alpha > 0
    assert res.value <= f0 + c1 * res.alpha * df0
    assert abs(res.derivative) <= c2 * abs(df0)
    assert res.value == f(res.alpha) and res.derivative == df(res.alpha) == res.grad
    assert res.evals == len(phi.calls) <= 40


@pytest.mark.parametrize("name,f,df", CASES, ids=[c[0] for c in CASES])
@pytest.mark.parametrize("alpha0", [1e-2, 1.0, 1e3])
def test_armijo_sufficient_decrease(name, f, df, alpha0):
    c1 = 1e-4
    phi = scalar_phi(f, df)
    f0, df0 = f(0.0), df(0.0)
    res = backtracking_armijo(phi, f0, df0, alpha=alpha0, c1=c1, rho=0.5)
    assert res.success and res.alpha > 0
    assert res.value <= f0 + c1 * res.alpha * df0
    # backtracking: the previous (twice as long) trial failed, unless the first one was taken
    if res.alpha != alpha0:
        assert not f(2 * res.alpha) <= f0 + c1 * 2 * res.alpha * df0
    assert res.evals == len(phi.calls)


def test_armijo_takes_first_trial_when_it_decreases_enough():
    f, df = (lambda a: (a - 1) ** 2), (lambda a: 2 * (a - 1))
    res = backtracking_armijo(scalar_phi(f, df), 1.0, -2.0, alpha=1.0)
    assert res.alpha == 1.0 and res.evals == 1 and res.value == 0.0


def test_strong_wolfe_exact_on_a_quadratic_first_trial():
    # phi(a) = (a - 1)^2: alpha = 1 is the minimizer and satisfies both conditions at once
    f, df = (lambda a: (a - 1) ** 2), (lambda a: 2 * (a - 1))
    res = strong_wolfe(scalar_phi(f, df), 1.0, -2.0, alpha=1.0)
    assert res.alpha == 1.0 and res.evals == 1


def test_strong_wolfe_survives_overflow():
    # trial steps where the loss is inf or nan are treated as too long
    f = lambda a: (a - 1) ** 2 if a < 5 else math.inf
    df = lambda a: 2 * (a - 1) if a < 5 else math.nan
    res = strong_wolfe(scalar_phi(f, df), 1.0, -2.0, alpha=100.0, c2=0.5)
    assert res.success and abs(res.alpha - 1) <= 0.5


def test_line_search_failure_returns_zero_step():
    # the loss only increases along d, although phi'(0) claims descent (a wrong gradient)
    f, df = (lambda a: a), (lambda a: 1.0)
    res = backtracking_armijo(scalar_phi(f, df), 0.0, -1.0, grad0="g0", max_evals=5)
    assert not res.success and res.alpha == 0.0 and res.value == 0.0 and res.grad == "g0"
    res = strong_wolfe(scalar_phi(f, df), 0.0, -1.0, grad0="g0", max_evals=5)
    assert not res.success and res.alpha == 0.0 and res.grad == "g0"


@pytest.mark.parametrize("search", [backtracking_armijo, strong_wolfe])
def test_non_descent_direction_is_an_error(search):
    f, df = mt1()
    with pytest.raises(ValueError, match="not a descent direction.*g.d = 0.5"):
        search(scalar_phi(f, df), 0.0, 0.5)
    with pytest.raises(ValueError, match="not a descent direction"):
        search(scalar_phi(f, df), 0.0, math.nan)


def test_bad_constants_are_errors():
    f, df = mt1()
    with pytest.raises(ValueError, match="0 < c1 < c2 < 1.*c2=0.9"):
        strong_wolfe(scalar_phi(f, df), 0.0, -0.5, c1=0.95, c2=0.9)
    with pytest.raises(ValueError, match="rho=1.5"):
        backtracking_armijo(scalar_phi(f, df), 0.0, -0.5, rho=1.5)


def test_cubic_interpolation_is_exact_for_a_cubic():
    f = lambda a: a ** 3 - 3 * a          # local minimizer at a = 1
    df = lambda a: 3 * a ** 2 - 3
    p1, p2 = (0.0, f(0.0), df(0.0), None), (3.0, f(3.0), df(3.0), None)
    assert _cubic_min(p1, p2) == pytest.approx(1.0, abs=1e-12)
    assert _cubic_min(p2, p1) == pytest.approx(1.0, abs=1e-12)
    # the safeguard keeps a trial point a tenth of the interval inside it
    q1, q2 = (0.0, 0.0, -1.0, None), (1.0, -0.999, -0.999, None)
    assert 0.1 <= _interpolate(q1, q2) <= 0.9


def test_line_searches_by_name():
    assert LINE_SEARCHES == {"strong_wolfe": strong_wolfe, "armijo": backtracking_armijo}


def test_strong_wolfe_accept_is_one_more_condition():
    # phi = (a - 1)^2 from alpha = 0.2: strong Wolfe (c2 = 0.9) already holds there; with
    # accept asking for alpha >= 0.5 the search extrapolates to the cubic's (here the
    # parabola's) minimizer 1 instead, and accept sees each candidate's alpha and gradient
    f, df = (lambda a: (a - 1) ** 2), (lambda a: 2 * (a - 1))
    res = strong_wolfe(scalar_phi(f, df), 1.0, -2.0, alpha=0.2)
    assert res.alpha == 0.2 and res.evals == 1 and res.success
    seen = []

    def accept(a, g):
        seen.append((a, g))
        return a >= 0.5
    res = strong_wolfe(scalar_phi(f, df), 1.0, -2.0, alpha=0.2, accept=accept)
    assert res.alpha == pytest.approx(1.0) and res.evals == 2 and res.success
    assert seen[0] == (0.2, pytest.approx(-1.6)) and seen[1][1] == pytest.approx(0.0, abs=1e-12)
