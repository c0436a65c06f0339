"""Per-op overhead: microseconds per recorded elementwise op on a tiny array, fwd and bwd.

    python benchmarks/bench_overhead.py
    python benchmarks/bench_overhead.py --threads 2

A chain of N ops `x = x * 1.0001 + 0.0001` on a float32 array of 4 elements, then
`.sum().backward()`. The arrays are so small that the time is the framework's own cost
per op. The NumPy floor runs the same arithmetic eagerly: the chain forward, and for the
backward the one multiply per Mul that the chain rule needs (Add passes g through).
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import (compare, import_torch, machine_line, median, parse_args,  # noqa: E402
                    pin_threads, print_table, verdict)

if __name__ == "__main__":
    pin_threads()

import numpy as np  # noqa: E402

import tinygrad_opt as tg  # noqa: E402

N_OPS = 1000              # recorded ops per chain: N_OPS / 2 rounds of (mul, add)
A, B = 1.0001, 0.0001
TARGET_US = 4.0


def ours_chain(x0):
    x = x0
    for _ in range(N_OPS // 2):
        x = x * A + B
    return x


def ours_forward(x0):
    return ours_chain(x0).sum()


def ours_fwd_bwd(x0):
    x0.grad = None
    ours_chain(x0).sum().backward()


def numpy_forward(x0):
    x = x0
    for _ in range(N_OPS // 2):
        x = x * A + B
    return x.sum()


def numpy_fwd_bwd(x0):
    numpy_forward(x0)
    g = np.ones_like(x0)
    for _ in range(N_OPS // 2):
        g = g * A                   # d(x*A + B)/dx = A; the Add passes g on unchanged
    return g


def torch_forward(torch, x0):
    x = x0
    for _ in range(N_OPS // 2):
        x = x * A + B
    return x.sum()


def torch_fwd_bwd(torch, x0):
    x0.grad = None
    torch_forward(torch, x0).backward()


def main():
    args = parse_args(__doc__.splitlines()[0])
    torch = import_torch(args.threads, args.no_torch)
    rounds = args.rounds or (5 if args.quick else 40)
    xn = np.ones(4, np.float32)
    xt = tg.Tensor(xn, requires_grad=True)
    ours_fwd_bwd(xt)
    np.testing.assert_allclose(xt.grad.numpy(), numpy_fwd_bwd(xn), rtol=1e-5)
    cands = {"numpy_fwd": lambda: numpy_forward(xn), "numpy_fb": lambda: numpy_fwd_bwd(xn),
             "ours_fwd": lambda: ours_forward(xt), "ours_fb": lambda: ours_fwd_bwd(xt)}
    if torch is not None:
        tx = torch.ones(4, requires_grad=True)
        cands["torch_fwd"] = lambda: torch_forward(torch, tx)
        cands["torch_fb"] = lambda: torch_fwd_bwd(torch, tx)
    times = compare(cands, rounds=rounds, inner=3)
    us = {k: median(v) / N_OPS * 1e6 for k, v in times.items()}
    rows = []
    for name, fw, fb in (("ours", "ours_fwd", "ours_fb"), ("PyTorch", "torch_fwd", "torch_fb"),
                         ("NumPy floor", "numpy_fwd", "numpy_fb")):
        if fw not in us:
            continue
        total = us[fb]
        target = f"<= {TARGET_US} {verdict(total, TARGET_US)}" if name == "ours" else ""
        rows.append((name, f"{us[fw]:.2f}", f"{total - us[fw]:.2f}", f"{total:.2f}",
                     f"{total - us['numpy_fb']:.2f}", target))
    print_table(f"us per recorded op on a (4,) float32 array, chain of {N_OPS} [{machine_line()}]",
                rows, header=("framework", "forward", "backward", "fwd+bwd", "above NumPy",
                              "target (fwd+bwd)"))


if __name__ == "__main__":
    main()
