"""Per-op overhead: microseconds per recorded elementwise op on a tiny array, fwd and bwd.

    python benchmarks/bench_overhead.py
    python benchmarks/bench_overhead.py --threads 2

A chain of N ops `x = x * 1.0001 + 0.0001` on a float32 array of 4 elements, then
`.sum().backward()`. The arrays are so small that the time is the framework's own cost
per op. The NumPy floor runs the same arithmetic eagerly: the chain forward, and for the
backward the one multiply per Mul that the chain rule needs (Add passes g through).
A second table runs the chain on Tensor operands, `y = y + b; y = y * c` on (4, 4) float32,
with b and c constants (no grad) and with b and c trained (their gradients accumulate:
the floor adds g into b's and g * y into c's at every step).
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import (compare, import_torch, machine_line, median, parse_args,  # noqa: E402
                    pin_threads, print_table, ratio, verdict)

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


def tensor_chain(y0, b, c):
    y = y0
    for _ in range(N_OPS // 2):
        y = y + b
        y = y * c
    return y


def ours_tensor_fwd_bwd(y0, b, c):
    y0.grad = b.grad = c.grad = None
    tensor_chain(y0, b, c).sum().backward()


def numpy_tensor_fwd_bwd(y0, b, c, trained):
    ys = [y0]
    y = y0
    for _ in range(N_OPS // 2):
        y = y + b
        ys.append(y)
        y = y * c
        ys.append(y)
    g = np.ones_like(y0)
    gb = gc = None
    for k in range(N_OPS // 2 - 1, -1, -1):
        if trained:                     # d(y*c)/dc = y before the multiply
            t = g * ys[2 * k + 1]
            gc = t if gc is None else gc + t
        g = g * c
        if trained:
            gb = g if gb is None else gb + g
    return g, gb, gc


def run_tensor_operands(rounds):
    """us per op of `y = y + b; y = y * c` on (4, 4) float32 Tensors, fwd+bwd, vs the floor."""
    b = np.full((4, 4), 0.0001, np.float32)
    c = np.full((4, 4), 1.0001, np.float32)
    y0 = np.ones((4, 4), np.float32)
    rows = []
    for trained in (False, True):
        yt = tg.Tensor(y0, requires_grad=True)
        bt, ct = tg.Tensor(b, requires_grad=trained), tg.Tensor(c, requires_grad=trained)
        ours_tensor_fwd_bwd(yt, bt, ct)
        g, gb, gcc = numpy_tensor_fwd_bwd(y0, b, c, trained)
        np.testing.assert_allclose(yt.grad.numpy(), g, rtol=1e-4)
        if trained:
            np.testing.assert_allclose(bt.grad.numpy(), gb, rtol=1e-4)
            np.testing.assert_allclose(ct.grad.numpy(), gcc, rtol=1e-4)
        times = compare({"numpy": lambda: numpy_tensor_fwd_bwd(y0, b, c, trained),
                         "ours": lambda: ours_tensor_fwd_bwd(yt, bt, ct)}, rounds=rounds, inner=3)
        us = {k: median(v) / N_OPS * 1e6 for k, v in times.items()}
        r = ratio(times, "ours", "numpy")
        rows.append(("trained b, c" if trained else "constant b, c", f"{us['ours']:.2f}",
                     f"{us['numpy']:.2f}", f"{r:.2f}x", f"<= 4x {verdict(r, 4.0)}"))
    print_table(f"us per recorded op on (4, 4) float32 Tensor operands, fwd+bwd, chain of {N_OPS}",
                rows, header=("operands", "ours", "NumPy floor", "ours / floor", "target"))


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
    run_tensor_operands(rounds)


if __name__ == "__main__":
    main()
