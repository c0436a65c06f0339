"""The chapter's second-order methods against scipy.optimize on the Moré-Garbow-Hillstrom set.

Each method runs with its DEFAULTS from the standard starting point. Evaluations are counted
as calls of the loss (with its gradient) until the first evaluated point that satisfies
|f - f*| <= 1e-8 (1 + |f*|) and ||g|| <= 1e-5, for SciPy (same function, jac=True) and
for the library alike. CG, Newton-CG and L-BFGS must converge within 1.2x the evaluations of
SciPy's CG, Newton-CG (Hessian products not counted on either side) and L-BFGS-B.
"""
import numpy as np
import pytest

from tinygrad_opt.optim import LBFGS, ConjugateGradient, Newton, NewtonCG
from tinygrad_opt.tensor import Tensor
from tinygrad_opt.testfunctions import mgh_problems

scipy_optimize = pytest.importorskip("scipy.optimize")

PROBLEMS = {p.name: p for p in mgh_problems()}
METHODS = {                     # name: (constructor with defaults, SciPy's method or None)
    "cg": (ConjugateGradient, "CG"),
    "cg-fletcher-reeves": (lambda ps: ConjugateGradient(ps, beta="fletcher-reeves"), None),
    "newton-cg": (NewtonCG, "Newton-CG"),
    "lbfgs": (LBFGS, "L-BFGS-B"),
    "newton": (Newton, None),
}
RATIO = 1.2
MAX_STEPS = 3000


class _Converged(Exception):
    pass


def converged(p, f, g):
    return abs(f - p.f_star) <= 1e-8 * (1 + abs(p.f_star)) and np.linalg.norm(g) <= 1e-5


def scipy_evaluations(p, method):
    calls = []

    def fun(x):
        calls.append(1)
        f, g = p.value_and_grad(x)
        if converged(p, f, g):
            raise _Converged
        return f, g
    options = {"maxiter": 20000, "gtol": 0.0} if method != "Newton-CG" else {"maxiter": 20000,
                                                                              "xtol": 1e-14}
    if method == "L-BFGS-B":
        options.update(maxfun=50000, ftol=0.0)
    extra = {"hessp": p.hessp} if method == "Newton-CG" else {}
    try:
        scipy_optimize.minimize(fun, p.x0.copy(), jac=True, method=method, options=options,
                                **extra)
    except _Converged:
        return len(calls)
    pytest.fail(f"SciPy's {method} did not converge on {p.name}")


def our_evaluations(p, make):
    x = Tensor(p.x0.copy(), requires_grad=True)
    calls, first = [], []

    def closure():
        calls.append(1)
        loss = p.f(x)
        # the gradient is checked only once the value is close enough (cheap until then)
        f = float(loss.item())
        if not first and abs(f - p.f_star) <= 1e-8 * (1 + abs(p.f_star)):
            if converged(p, *p.value_and_grad(x.data)):
                first.append(len(calls))
        return loss
    opt = make([x])
    for _ in range(MAX_STEPS):
        opt.step(closure)
        if first:
            break
    return first[0] if first else None


@pytest.mark.slow
@pytest.mark.parametrize("problem", list(PROBLEMS))
@pytest.mark.parametrize("method", list(METHODS))
def test_converges_with_defaults_within_scipys_evaluations(method, problem):
    p = PROBLEMS[problem]
    make, scipy_method = METHODS[method]
    ours = our_evaluations(p, make)
    assert ours is not None, f"{method} did not converge on {problem} in {MAX_STEPS} steps"
    if scipy_method is not None:
        theirs = scipy_evaluations(p, scipy_method)
        assert ours <= RATIO * theirs, f"{method} on {problem}: {ours} evaluations, SciPy {theirs}"

