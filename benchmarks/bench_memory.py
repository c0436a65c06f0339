"""Peak memory added by one large-MLP SGD step, tinygrad_opt vs the hand-written NumPy floor.

    python benchmarks/bench_memory.py

MLP 1024-1024-1024-10, batch 512, float32 (the model and floor of bench_mlp.py). The
step starts with no gradients held (zero_grad sets them to None; the floor's gradients
are temporaries), so the peak counts activations, saved arrays, gradients and every
temporary. tracemalloc sees NumPy's allocations (PyTorch's are invisible to it).
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import machine_line, parse_args, pin_threads, print_table, verdict  # noqa: E402

if __name__ == "__main__":
    pin_threads()

import gc  # noqa: E402
import tracemalloc  # noqa: E402

import tinygrad_opt as tg  # noqa: E402

from bench_mlp import LARGE, NumpyMLP, OursMLP, init_params, make_batch  # noqa: E402

TARGET = 1.15


def peak_added(step, repeats):
    """Smallest over repeats of (traced peak during step) - (traced memory before it), bytes."""
    best = None
    for _ in range(repeats):
        gc.collect()
        tracemalloc.start()
        before, _ = tracemalloc.get_traced_memory()
        step()
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        added = peak - before
        best = added if best is None else min(best, added)
    return best


def main():
    args = parse_args(__doc__.splitlines()[0])
    repeats = 2 if args.quick else 5
    params = init_params(LARGE)
    x, y = make_batch(LARGE, 512)
    xt = tg.Tensor(x)
    ref, ours = NumpyMLP(params), OursMLP(params)
    ref.sgd_step(x, y)
    ours.sgd_step(xt, y)
    ours.zero_grad()

    def ours_step():
        ours.sgd_step(xt, y)
        ours.zero_grad()            # the next step starts without gradients, as the floor does
    mb = 1 / 2 ** 20
    p_np = peak_added(lambda: ref.sgd_step(x, y), repeats)
    p_ours = peak_added(ours_step, repeats)
    param_mb = sum(p.nbytes for p in params) * mb
    r = p_ours / p_np
    print_table(f"peak memory added by one large-MLP SGD step (parameters: {param_mb:.1f} MiB) "
                f"[{machine_line()}]",
                [("large MLP sgd step (b=512)", f"{p_ours * mb:.1f} MiB", f"{p_np * mb:.1f} MiB",
                  f"{r:.3f}x", f"<= {TARGET} {verdict(r, TARGET)}")],
                header=("workload", "ours", "NumPy floor", "ours/NumPy", "target"))


if __name__ == "__main__":
    main()
