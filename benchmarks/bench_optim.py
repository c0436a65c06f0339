"""Cost of one Adam step on the 784-128-64-10 MLP's parameters against hand-written NumPy.

The hand-written baseline is the best in-place NumPy update we know: preallocated scratch
buffers, ufuncs with out=, bias corrections folded into two Python scalars. The ratio
(tinygrad_opt / baseline, medians over many interleaved repeats) is the overhead of the
Optimizer machinery: the loop, state lookups and the one temporary per parameter.

    OPENBLAS_NUM_THREADS=1 python benchmarks/bench_optim.py [--repeats N]
"""
import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")       # before NumPy is imported

import argparse
import math
import time

import numpy as np

from tinygrad_opt import Tensor
from tinygrad_opt.optim import Adam

SHAPES = [(128, 784), (128,), (64, 128), (64,), (10, 64), (10,)]


def numpy_adam(params, grads, lr=1e-3, b1=0.9, b2=0.999, eps=1e-8):
    """A hand-written in-place Adam; returns step() for the given arrays."""
    ms = [np.zeros_like(p) for p in params]
    vs = [np.zeros_like(p) for p in params]
    tmps = [np.empty_like(p) for p in params]
    t = 0

    def step():
        nonlocal t
        t += 1
        c2 = math.sqrt(1 - b2 ** t)
        step_size, eps_t = lr * c2 / (1 - b1 ** t), eps * c2
        for p, g, m, v, tmp in zip(params, grads, ms, vs, tmps):
            m *= b1
            np.multiply(g, 1 - b1, out=tmp)
            m += tmp
            v *= b2
            np.multiply(g, g, out=tmp)
            tmp *= 1 - b2
            v += tmp
            np.sqrt(v, out=tmp)
            tmp += eps_t
            np.divide(m, tmp, out=tmp)
            tmp *= step_size
            p -= tmp
    return step


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2000)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    init = [rng.standard_normal(s).astype(np.float32) * 0.1 for s in SHAPES]
    grads = [rng.standard_normal(s).astype(np.float32) * 0.01 for s in SHAPES]

    params = [Tensor(a, requires_grad=True) for a in init]
    for p, g in zip(params, grads):
        p.grad = Tensor(g)
    opt = Adam(params, lr=1e-3)
    baseline = numpy_adam([a.copy() for a in init], grads)

    for _ in range(50):                                   # warm up caches and allocator
        opt.step()
        baseline()
    ours, theirs = [], []
    for _ in range(args.repeats):                         # interleaved, so load affects both
        t0 = time.perf_counter()
        opt.step()
        t1 = time.perf_counter()
        baseline()
        t2 = time.perf_counter()
        ours.append(t1 - t0)
        theirs.append(t2 - t1)
    a, b = float(np.median(ours)), float(np.median(theirs))
    n = sum(int(np.prod(s)) for s in SHAPES)
    print(f"Adam step, {n} float32 parameters in {len(SHAPES)} arrays, "
          f"median of {args.repeats} repeats")
    print(f"  tinygrad_opt.optim.Adam : {a * 1e6:8.1f} us")
    print(f"  hand-written NumPy      : {b * 1e6:8.1f} us")
    print(f"  ratio                   : {a / b:8.3f}")


if __name__ == "__main__":
    main()
