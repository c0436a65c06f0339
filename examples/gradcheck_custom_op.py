"""Define a new differentiable op, check it numerically, and watch the checks catch mistakes.

    python examples/gradcheck_custom_op.py [--quick] [--out DIR]

An op is a Function with forward beside backward. Here y = exp(-x^2 / 2), whose
derivative is dy/dx = -x y. Because backward is written with operators only, the engine
can run it on arrays (plain gradients) or on Tensors (create_graph=True), so the op is
differentiable twice for free. gradcheck compares the first derivative with central
differences; gradgradcheck does the same for the backward pass itself. Two broken versions
show what each check catches. Writes gradcheck_custom_op.png (y, y', y'' by autograd).
"""
import argparse
import os

import numpy as np

import tinygrad_opt as tg
from tinygrad_opt import GradcheckError, autograd, gradcheck, gradgradcheck


class Gaussian(tg.Function):
    """y = exp(-x^2 / 2); dy/dx = -x y."""
    @staticmethod
    def forward(ctx, x):
        return ctx.xp.exp(-0.5 * x * x)

    @staticmethod
    def backward(ctx, g):
        x, y = ctx.inputs[0], ctx.out       # arrays, or Tensors under create_graph
        return g * (-x * y)


class GaussianWrongSign(tg.Function):
    """A typo in the derivative: +x y instead of -x y. gradcheck catches it."""
    @staticmethod
    def forward(ctx, x):
        return ctx.xp.exp(-0.5 * x * x)

    @staticmethod
    def backward(ctx, g):
        return g * (ctx.inputs[0] * ctx.out)


class GaussianFrozenSlope(tg.Function):
    """The right first derivative, but saved as an array in forward: a constant to the engine,
    so the second derivative comes out as zero. gradcheck passes; gradgradcheck catches it."""
    @staticmethod
    def forward(ctx, x):
        y = ctx.xp.exp(-0.5 * x * x)
        ctx.slope = -x * y
        return y

    @staticmethod
    def backward(ctx, g):
        return g * ctx.slope


def check(name, op, x):
    """(gradcheck passed, gradgradcheck passed), printing what a failure says."""
    results = []
    for checker in (gradcheck, gradgradcheck):
        try:
            ok = checker(op.apply, x)
        except GradcheckError as e:
            ok = False
            print(f"  {checker.__name__} caught {name}:")
            print("    " + "\n    ".join(str(e).splitlines()[1:]))
        results.append(ok)
    print(f"{name:20s} gradcheck {'ok' if results[0] else 'FAILED'}, "
          f"gradgradcheck {'ok' if results[1] else 'FAILED'}")
    return tuple(results)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer points, for tests")
    parser.add_argument("--out", default="out", help="folder for the figure (default: out)")
    args = parser.parse_args(argv)

    # float64 inputs: central differences need the precision
    x = tg.Tensor(np.linspace(-2.5, 2.5, 5 if args.quick else 11), requires_grad=True,
                  dtype=np.float64)
    results = {"correct": check("Gaussian", Gaussian, x),
               "wrong_sign": check("GaussianWrongSign", GaussianWrongSign, x),
               "frozen_slope": check("GaussianFrozenSlope", GaussianFrozenSlope, x)}

    # first and second derivatives of the new op by autograd, on a fine grid
    t = tg.Tensor(np.linspace(-4, 4, 201), requires_grad=True, dtype=np.float64)
    y = Gaussian.apply(t)
    (dy,) = autograd.grad(y.sum(), t, create_graph=True)    # elementwise op: sum gives y'
    (d2y,) = autograd.grad(dy.sum(), t)
    xs = t.numpy()
    assert np.allclose(d2y.numpy(), (xs * xs - 1) * np.exp(-xs * xs / 2))  # (x^2 - 1) y
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "gradcheck_custom_op.png")
    from matplotlib.figure import Figure
    fig = Figure(figsize=(6, 3.8), layout="constrained")
    ax = fig.subplots()
    for curve, label in ((y, "y = exp(-x²/2)"), (dy, "y' by backward"),
                         (d2y, "y'' by double backward")):
        ax.plot(xs, curve.numpy(), label=label)
    ax.axhline(0, color="0.6", lw=0.8)
    ax.set(xlabel="x", title="A custom op and its derivatives")
    ax.legend()
    fig.savefig(path, dpi=100)
    print(f"wrote {path}")
    return results


if __name__ == "__main__":
    main()
