"""Hessian-vector products, and Newton's method built on them, on a small logistic regression.

    python examples/newton_hvp.py [--quick] [--out DIR]

autograd.hvp(f, w, v) returns H v from two backward passes (the gradient of g . v) without
forming H. On a model with 10 weights we can afford the dense Hessian too and check that
hvp equals hessian @ v. Then three ways to minimise the same convex loss:
  gradient descent       w <- w - lr g                       (linear convergence)
  Newton, dense          w <- w - H^{-1} g                   (quadratic convergence)
  Newton-CG (optim)      solves H d = -g by conjugate gradients on H v products only
Writes newton_hvp.png (gradient norm per iteration, log scale).
"""
import argparse
import os

import numpy as np

import tinygrad_opt as tg
from tinygrad_opt import autograd, data
from tinygrad_opt.nn import functional as F
from tinygrad_opt.optim import NewtonCG


def features(X):
    """Cubic polynomial features of 2-D points: 10 columns including the constant."""
    x1, x2 = X[:, 0], X[:, 1]
    return np.stack([np.ones_like(x1), x1, x2, x1 * x1, x1 * x2, x2 * x2,
                     x1 ** 3, x1 * x1 * x2, x1 * x2 * x2, x2 ** 3], axis=1)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer samples, for tests")
    parser.add_argument("--out", default="out", help="folder for the figure (default: out)")
    args = parser.parse_args(argv)

    # settings: float64 throughout, as second-order checks need it
    n, iters, gd_lr, l2 = (200 if args.quick else 1000), 12, 0.5, 1e-2

    # data: two moons, which a cubic decision boundary separates well
    X, y = data.two_moons(n, noise=0.15, seed=0, dtype=np.float64)
    Phi, t = tg.Tensor(features(X)), tg.Tensor(y)

    def loss(w):
        """Mean logistic loss plus an L2 penalty: convex, so H is positive definite."""
        return F.binary_cross_entropy_with_logits(Phi @ w, t) + 0.5 * l2 * (w * w).sum()

    # 1. hvp against the dense Hessian at a random point and direction
    rng = np.random.default_rng(0)
    w = tg.Tensor(rng.standard_normal(10), requires_grad=True)
    v = rng.standard_normal(10)
    _, Hv = autograd.hvp(loss, w, v)
    H = autograd.hessian(loss, w).numpy()
    hvp_error = float(np.abs(Hv.numpy() - H @ v).max())
    eig = np.linalg.eigvalsh(H)
    print(f"|hvp - hessian @ v|_max = {hvp_error:.2e}; eigenvalues of H in "
          f"[{eig[0]:.3g}, {eig[-1]:.3g}] (condition number {eig[-1] / eig[0]:.3g})")

    def grad_norm(w):
        (g,) = autograd.grad(loss(w), w)
        return float(np.linalg.norm(g.numpy()))

    # 2. the three methods from w = 0
    history = {}
    w = tg.Tensor(np.zeros(10), requires_grad=True)
    history["gradient descent"] = [grad_norm(w)]
    for _ in range(iters * 10):
        (g,) = autograd.grad(loss(w), w)
        w = tg.Tensor(w.numpy() - gd_lr * g.numpy(), requires_grad=True)
        history["gradient descent"].append(grad_norm(w))

    w = tg.Tensor(np.zeros(10), requires_grad=True)
    history["Newton (dense H)"] = [grad_norm(w)]
    for _ in range(iters):
        (g,) = autograd.grad(loss(w), w)
        H = autograd.hessian(loss, w).numpy()
        w = tg.Tensor(w.numpy() - np.linalg.solve(H, g.numpy()), requires_grad=True)
        history["Newton (dense H)"].append(grad_norm(w))
    w_newton = w.numpy()

    w = tg.Tensor(np.zeros(10), requires_grad=True)
    opt = NewtonCG([w], lr=1.0, cg_max_iter=10)
    history["Newton-CG (hvp only)"] = [grad_norm(w)]
    for _ in range(iters):
        opt.step(lambda: loss(w))
        history["Newton-CG (hvp only)"].append(grad_norm(w))

    # result
    for name, norms in history.items():
        print(f"{name:22s} |g| after 1, 3, {len(norms) - 1} iterations: "
              + ", ".join(f"{norms[i]:.1e}" for i in (1, 3, -1)))
    acc = float((((features(X) @ w_newton) > 0) == (y == 1)).mean())
    print(f"training accuracy of the Newton solution: {100 * acc:.1f}%")
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "newton_hvp.png")
    from matplotlib.figure import Figure
    fig = Figure(figsize=(6.5, 4), layout="constrained")
    ax = fig.subplots()
    for name, norms in history.items():
        ax.semilogy(np.maximum(norms, 1e-17), "o-" if len(norms) < 30 else "-", ms=3, label=name)
    ax.set(xlabel="iteration", ylabel="gradient norm", xlim=(-0.5, 3 * iters),
           title="Logistic regression, 10 weights: first vs second order")
    ax.legend()
    fig.savefig(path, dpi=100)
    print(f"wrote {path}")
    return {"hvp_error": hvp_error, "newton_grad_norm": history["Newton (dense H)"][-1],
            "newton_cg_grad_norm": history["Newton-CG (hvp only)"][-1],
            "gd_grad_norm": history["gradient descent"][-1], "train_acc": acc}


if __name__ == "__main__":
    main()
