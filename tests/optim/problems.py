"""Test problems shared by the second-order optimizer tests (float64)."""
import numpy as np

from tinygrad_opt import testfunctions
from tinygrad_opt.tensor import Tensor


def rosenbrock(start=(-1.5, 2.0), dtype=np.float64, device=None):
    """x and the closure of (1 - x1)^2 + 100 (x2 - x1^2)^2; minimum 0 at (1, 1)."""
    x = Tensor(np.array(start, dtype=dtype), requires_grad=True, device=device)
    return x, lambda: testfunctions.rosenbrock(x[0], x[1])


def conditioned_quadratic(n=10, seed=0, cond=100.0):
    """x = 0, the closure of 0.5 x^T A x - b^T x (A SPD with condition number cond), A, b."""
    rng = np.random.default_rng(seed)
    Q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    A = Q @ np.diag(np.geomspace(1.0, cond, n)) @ Q.T
    b = rng.standard_normal(n)
    x = Tensor(np.zeros(n), requires_grad=True)
    At, bt = Tensor(A), Tensor(b)
    return x, lambda: 0.5 * (x * (At * x).sum(axis=1)).sum() - (bt * x).sum(), A, b


def tiny_mlp(seed=0):
    """Parameters and closure of a 2-4-1 tanh MLP regression."""
    rng = np.random.default_rng(seed)
    X = Tensor(rng.standard_normal((16, 2)))
    y = Tensor(np.sin(X.data[:, :1]) + 0.5 * X.data[:, 1:] ** 2)
    W1 = Tensor(0.5 * rng.standard_normal((4, 2)), requires_grad=True)
    b1 = Tensor(np.zeros(4), requires_grad=True)
    W2 = Tensor(0.5 * rng.standard_normal((1, 4)), requires_grad=True)
    b2 = Tensor(np.zeros(1), requires_grad=True)

    def closure():
        h = (X @ W1.T + b1).tanh()
        return ((h @ W2.T + b2 - y) ** 2).mean()
    return [W1, b1, W2, b2], closure
