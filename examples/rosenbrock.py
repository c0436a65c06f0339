"""Optimizers on the Rosenbrock function: a long, curved, narrow valley.

    python examples/rosenbrock.py [--quick] [--out DIR]

f(x, y) = (1 - x)^2 + 100 (y - x^2)^2 has its minimum f = 0 at (1, 1) at the end of a
parabolic valley whose walls are about 1000 times steeper than its floor. Gradient descent
must take steps small enough for the walls (lr < 2 / lambda_max) and then crawls along the
floor; momentum and Adam build up speed along it; L-BFGS and Newton model the curvature and
need a handful of steps. Writes rosenbrock.png (paths over contours, f per step).
"""
import argparse
import os

import numpy as np

import tinygrad_opt as tg
from tinygrad_opt import optim
from tinygrad_opt.testfunctions import PROBLEMS

problem = PROBLEMS["rosenbrock"]       # f, start (-1.5, 2), plot window, minimum (1, 1)


def rosenbrock(p):
    return problem.f(p[0], p[1])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer steps, for tests")
    parser.add_argument("--out", default="out", help="folder for the figure (default: out)")
    args = parser.parse_args(argv)

    # settings: each optimizer with a learning rate that is stable from the start point
    steps, start = (300 if args.quick else 3000), list(problem.start)
    optimizers = {
        "SGD (lr 1e-3)": lambda p: optim.SGD(p, lr=1e-3),
        "momentum (lr 2e-4, 0.9)": lambda p: optim.SGD(p, lr=2e-4, momentum=0.9),
        "Adam (lr 0.05)": lambda p: optim.Adam(p, lr=0.05),
        "L-BFGS": lambda p: optim.LBFGS(p, max_iter=1),
        "Newton": lambda p: optim.Newton(p),
    }

    # loop: one parameter tensor of shape (2,) per optimizer
    paths, values = {}, {}
    for name, make in optimizers.items():
        p = tg.Tensor(np.array(start), requires_grad=True, dtype=np.float64)
        opt = make([p])
        path = [p.numpy()]
        for _ in range(steps):
            if isinstance(opt, (optim.LBFGS, optim.Newton)):
                opt.step(lambda: rosenbrock(p))         # closure: recomputes f, no backward
            else:
                opt.zero_grad()
                rosenbrock(p).backward()
                opt.step()
            path.append(p.numpy())
            if rosenbrock(path[-1]) < 1e-12 or np.array_equal(path[-1], path[-2]):
                break                                   # converged, or no further progress
        paths[name] = np.array(path)
        values[name] = np.array([rosenbrock(q) for q in path])

    # result
    print(f"{'optimizer':26s} {'steps':>6s} {'final f':>10s}  steps to f < 1e-3")
    reached = {}
    for name, f in values.items():
        hit = np.flatnonzero(f < 1e-3)
        reached[name] = int(hit[0]) if hit.size else None
        print(f"{name:26s} {len(f) - 1:6d} {f[-1]:10.2e}  {reached[name] or '-'}")
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "rosenbrock.png")
    plot(paths, values, path)
    print(f"wrote {path}")
    return {"final": {k: float(v[-1]) for k, v in values.items()}, "steps_to_1e-3": reached}


def plot(paths, values, path):
    from matplotlib.figure import Figure
    fig = Figure(figsize=(11, 4.2), layout="constrained")
    ax1, ax2 = fig.subplots(1, 2)
    X, Y = np.meshgrid(np.linspace(*problem.xlim, 300), np.linspace(*problem.ylim, 300))
    ax1.contour(X, Y, rosenbrock([X, Y]), levels=np.logspace(-1, 3.5, 18), colors="0.6",
                linewidths=0.6)
    for name, xy in paths.items():
        ax1.plot(xy[:, 0], xy[:, 1], "-", lw=1.5, label=name)
    ax1.plot(*problem.minima[0], "*", color="gold", mec="k", ms=14)
    ax1.set(xlim=problem.xlim, ylim=problem.ylim, xlabel="x", ylabel="y",
            title=f"Paths from {problem.start}")
    for name, f in values.items():
        ax2.loglog(np.arange(1, len(f) + 1), np.maximum(f, 1e-16), label=name)
    ax2.set(xlabel="step + 1", ylabel="f", title="Rosenbrock value per step")
    ax2.legend(fontsize=8)
    fig.savefig(path, dpi=100)


if __name__ == "__main__":
    main()
