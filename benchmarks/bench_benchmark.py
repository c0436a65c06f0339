"""The optimizer benchmark's harness: its overhead per run and its parallel throughput.

overhead: N digits-MLP runs through run_tasks on one in-process worker, each timed inside
(the problem's own run: model, training, validation) and around (store rows, dispatch):
(wall - sum of run times) / sum of run times. Target: below 5%.
throughput: the same M runs on 1 and on 2 local worker processes (one BLAS thread each,
process start-up included): runs per second on 2 / runs per second on 1. Target: >= 1.7x on
a 2-core machine. A machine shared with other work cannot show it; the script prints the
load average beside the ratio.
"""
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(__file__))
import common  # noqa: E402

common.pin_threads(1)

from tinygrad_opt.benchmark import LocalExecutor, Task  # noqa: E402
from tinygrad_opt.benchmark.runner import run_tasks  # noqa: E402
from tinygrad_opt.benchmark.store import Store  # noqa: E402


def tasks(n, epochs, tag):
    return [Task("digits", "adam", {"lr": 0.005 + 1e-6 * i + tag}, i, epochs) for i in range(n)]


def timed(executor, ts):
    totals = []
    with tempfile.TemporaryDirectory() as d, Store(os.path.join(d, "b.sqlite")) as store:
        real_map = executor.map

        def spy(fn, items):
            for t, r in real_map(fn, items):
                totals.append(r["total_seconds"])
                yield t, r
        executor.map = spy
        t0 = time.perf_counter()
        run_tasks(store, executor, ts)
        return time.perf_counter() - t0, totals


def main():
    quick = "--quick" in sys.argv
    n, m, epochs = (3, 4, 1) if quick else (8, 16, 10)
    timed(LocalExecutor(1), tasks(1, 1, 0.5))             # load the data set, warm imports
    wall, runs = timed(LocalExecutor(1), tasks(n, epochs, 0.0))
    overhead = (wall - sum(runs)) / sum(runs)
    print(f"overhead: {n} digits runs of {epochs} epochs, one in-process worker: "
          f"{1e3 * (wall - sum(runs)) / n:.1f} ms per run on {sum(runs) / n:.2f} s of run time "
          f"= {100 * overhead:.2f}% (target < 5%)")
    w1, _ = timed(LocalExecutor(1), tasks(m, epochs, 0.1))
    w2, _ = timed(LocalExecutor(2), tasks(m, epochs, 0.2))
    print(f"throughput: {m} runs in {w1:.1f} s on 1 worker, {w2:.1f} s on 2 workers: "
          f"{w1 / w2:.2f}x (target >= 1.7x on 2 free cores); load average {os.getloadavg()[0]:.1f} "
          f"on {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
