"""Unconstrained test problems of Moré, Garbow & Hillstrom (1981) and two convex ones, written
with Tensor ops, with their standard starting points and optimal values (float64).

Each `Problem` has `f(x)` mapping a 1-D Tensor to the scalar loss, `x0` and `f_star`.
`value_and_grad(x)` evaluates f and its gradient on a NumPy vector through the library, so
SciPy and the library's optimizers count evaluations of the very same function.
"""
from dataclasses import dataclass

import numpy as np

from tinygrad_opt import autograd
from tinygrad_opt.tensor import Tensor


@dataclass
class Problem:
    name: str
    f: object            # Tensor x -> scalar Tensor
    x0: np.ndarray
    f_star: float

    @property
    def n(self):
        return self.x0.size

    def value_and_grad(self, x):
        t = Tensor(np.asarray(x, dtype=np.float64), requires_grad=True)
        loss = self.f(t)
        (g,) = autograd.grad(loss, [t])
        return float(loss.item()), g.data.copy()

    def hessp(self, x, v):
        t = Tensor(np.asarray(x, dtype=np.float64), requires_grad=True)
        return autograd.hvp(self.f, t, np.asarray(v, dtype=np.float64))[1].data.copy()


def _sumsq(terms):
    return sum((t * t).sum() for t in terms)


def extended_rosenbrock(n):
    """MGH 21: sum over pairs of 100 (x_2i - x_2i-1^2)^2 + (1 - x_2i-1)^2; f* = 0 at ones."""
    def f(x):
        odd, even = x[0::2], x[1::2]
        return _sumsq([10 * (even - odd * odd), 1 - odd])
    return Problem(f"rosenbrock{n}", f, np.tile([-1.2, 1.0], n // 2), 0.0)


def beale():
    """MGH 5: sum_i (y_i - x1 (1 - x2^i))^2 with y = 1.5, 2.25, 2.625; f* = 0 at (3, 0.5)."""
    def f(x):
        return _sumsq([y - x[0] * (1 - x[1] ** i) for i, y in ((1, 1.5), (2, 2.25), (3, 2.625))])
    return Problem("beale", f, np.array([1.0, 1.0]), 0.0)


def powell_singular():
    """MGH 13: f* = 0 at the origin, where the Hessian is singular (convergence is linear)."""
    def f(x):
        return _sumsq([x[0] + 10 * x[1], np.sqrt(5) * (x[2] - x[3]), (x[1] - 2 * x[2]) ** 2,
                       np.sqrt(10) * (x[0] - x[3]) ** 2])
    return Problem("powell_singular", f, np.array([3.0, -1.0, 0.0, 1.0]), 0.0)


def wood():
    """MGH 14: f* = 0 at (1, 1, 1, 1); a saddle region lies on the way from the start."""
    def f(x):
        return _sumsq([10 * (x[1] - x[0] ** 2), 1 - x[0], np.sqrt(90) * (x[3] - x[2] ** 2),
                       1 - x[2], np.sqrt(10) * (x[1] + x[3] - 2), (x[1] - x[3]) / np.sqrt(10)])
    return Problem("wood", f, np.array([-3.0, -1.0, -3.0, -1.0]), 0.0)


def extended_trigonometric(n=10):
    """MGH 26: f_i = n - sum_j cos x_j + i (1 - cos x_i) - sin x_i from x0 = 1/n.

    f* = 0 is the global minimum, but from x0 every method we tried (SciPy's included) ends in
    the local minimum f = 2.79506e-5 for n = 10 (MGH list both); that is the target here.
    """
    i = Tensor(np.arange(1.0, n + 1))

    def f(x):
        c = x.cos()
        return _sumsq([n - c.sum() + i * (1 - c) - x.sin()])
    return Problem(f"trigonometric{n}", f, np.full(n, 1.0 / n), 2.795058e-5)


def quadratic(n=50, cond=1e4, seed=0):
    """0.5 x^T A x - b^T x with A SPD of condition number cond; f* = -0.5 b^T A^-1 b."""
    rng = np.random.default_rng(seed)
    Q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    A = Q @ np.diag(np.geomspace(1.0, cond, n)) @ Q.T
    A = 0.5 * (A + A.T)
    b = rng.standard_normal(n)
    At, bt = Tensor(A), Tensor(b)
    return Problem(f"quadratic{n}", lambda x: 0.5 * (x * (At @ x)).sum() - (bt * x).sum(),
                   np.zeros(n), float(-0.5 * b @ np.linalg.solve(A, b)))


def logistic_regression(m=200, d=10, reg=1e-2, seed=0):
    """Mean logistic loss of a linear model with bias and L2 penalty reg/2 |w|^2 (strictly
    convex: a unique minimizer even on separable data); f* by Newton to machine precision."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((m, d))
    w_true = rng.standard_normal(d)
    y = (X @ w_true + 0.5 * rng.standard_normal(m) > 0).astype(float)
    Xb = np.hstack([X, np.ones((m, 1))])
    s = 2 * y - 1                                   # labels as +-1
    Xs = Tensor(Xb * s[:, None])

    def f(x):
        # log(1 + exp(-s z)) = softplus(-s z), written stably as max(u, 0) + log(1 + exp(-|u|))
        u = -(Xs @ x)
        return ((u.maximum(Tensor(np.zeros(m))) + (1 + (-(u.abs())).exp()).log()).mean()
                + 0.5 * reg * (x[:d] * x[:d]).sum())

    w = np.zeros(d + 1)
    for _ in range(50):                             # Newton on the host, for f*
        p = 1 / (1 + np.exp(-(Xb @ w) * s))
        g = -(Xb * (s * (1 - p))[:, None]).mean(0) + reg * np.r_[w[:d], 0]
        H = (Xb * (p * (1 - p))[:, None]).T @ Xb / m + reg * np.diag(np.r_[np.ones(d), 0])
        w = w - np.linalg.solve(H, g)
    prob = Problem("logistic", f, np.zeros(d + 1), 0.0)
    prob.f_star = prob.value_and_grad(w)[0]
    return prob


def all_problems():
    return [extended_rosenbrock(2), extended_rosenbrock(10), extended_rosenbrock(100), beale(),
            powell_singular(), wood(), extended_trigonometric(10), quadratic(),
            logistic_regression()]

