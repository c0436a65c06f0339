"""The optimizer benchmark's harness: its overhead per run and its parallel throughput.

overhead: N digits-MLP runs through run_tasks on one in-process worker, each timed inside
(the problem's own run: model, training, validation) and around (store rows, dispatch):
(wall - sum of run times) / sum of run times. Target: below 5%.

throughput: the benchmark a user runs first, `tinygrad-opt benchmark --budget grid` (quadratic,
digits, spirals, rosenbrock, beale x sgd, momentum, adam; 4 lrs, 5 seeds: 120 runs), timed
end to end through run_benchmark (data loading, worker start-up, both phases, the store) in
a fresh Python process per configuration, so none inherits another's imports or data:

    in-process      LocalExecutor(1): the runs in the client process
    1 worker        LocalExecutor(1, processes=True): the process pool with one worker
    2 workers       LocalExecutor(2): the same pool with two (`--workers 2`)

Every process has one BLAS thread. The configurations alternate round by round and the
ratios are medians over rounds. Target: 2 workers >= 1.7x one worker on a 2-core machine.
A machine shared with other work cannot show it; the load average is printed beside it,
and so is the share of the workers' time spent inside runs (sum of run times / (workers x
wall)), which other work on the machine disturbs far less than the wall time.

    python benchmarks/bench_benchmark.py [--rounds 2] [--quick]
"""
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(__file__))
import common  # noqa: E402

common.pin_threads(1)

from tinygrad_opt.benchmark import LocalExecutor, Task, run_benchmark  # noqa: E402
from tinygrad_opt.benchmark.runner import run_tasks  # noqa: E402
from tinygrad_opt.benchmark.store import Store  # noqa: E402

MIX = dict(problems=["quadratic", "digits", "spirals", "rosenbrock", "beale"],
           optimizers=["sgd", "momentum", "adam"], budget="grid", budget_size=4, seeds=5)
QUICK_MIX = dict(MIX, problems=["quadratic", "digits", "beale"], seeds=2, epochs=3)
CONFIGS = {"in-process": dict(workers=1, processes=False),
           "1 worker": dict(workers=1, processes=True),
           "2 workers": dict(workers=2, processes=True)}


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


def overhead(quick):
    n, epochs = (3, 1) if quick else (8, 10)
    timed(LocalExecutor(1), tasks(1, 1, 0.5))             # load the data set, warm imports
    wall, runs = timed(LocalExecutor(1), tasks(n, epochs, 0.0))
    over = (wall - sum(runs)) / sum(runs)
    print(f"overhead: {n} digits runs of {epochs} epochs, one in-process worker: "
          f"{1e3 * (wall - sum(runs)) / n:.1f} ms per run on {sum(runs) / n:.2f} s of run time "
          f"= {100 * over:.2f}% (target < 5%)")


def child(config, quick):
    """One configuration in this (fresh) process: print wall seconds, runs and their sum."""
    mix = QUICK_MIX if quick else MIX
    with tempfile.TemporaryDirectory() as d:
        db = os.path.join(d, "b.sqlite")
        t0 = time.perf_counter()
        with LocalExecutor(**CONFIGS[config]) as executor:
            run_benchmark(**mix, db=db, executor=executor)
        wall = time.perf_counter() - t0
        with Store(db) as s:
            runs = [t for (t,) in s.conn.execute("SELECT total_seconds FROM runs")]
    print(json.dumps({"wall": wall, "runs": len(runs), "run_seconds": sum(runs)}))


def throughput(quick, rounds):
    mix = QUICK_MIX if quick else MIX
    print(f"throughput: run_benchmark({', '.join(f'{k}={v}' for k, v in mix.items())}), "
          f"{rounds} rounds, each configuration in a fresh process")
    walls, busy = {c: [] for c in CONFIGS}, {c: [] for c in CONFIGS}
    for r in range(rounds):
        load = os.getloadavg()[0]
        line = []
        for c in CONFIGS:
            out = subprocess.run([sys.executable, __file__, "--child", c] + ["--quick"] * quick,
                                 check=True, capture_output=True, text=True).stdout
            m = json.loads(out.strip().splitlines()[-1])
            walls[c].append(m["wall"])
            # the share of the workers' wall time spent inside runs: what the harness loses
            # (start-up, dispatch, the store, a worker idle at a phase's end) is the rest
            busy[c].append(m["run_seconds"] / (m["wall"] * CONFIGS[c]["workers"]))
            line.append(f"{c} {m['wall']:.1f} s ({m['run_seconds']:.1f} s in runs, "
                        f"busy {100 * busy[c][-1]:.0f}%)")
        print(f"  round {r + 1}, {m['runs']} runs: " + "; ".join(line)
              + f"; load average {load:.1f} before, {os.getloadavg()[0]:.1f} after")
    ratio = lambda a, b: statistics.median(x / y for x, y in zip(walls[a], walls[b]))
    print(f"2 workers vs 1 worker (both the process pool): {ratio('1 worker', '2 workers'):.2f}x "
          f"(target >= 1.7x on 2 free cores)")
    print(f"2 workers vs in-process: {ratio('in-process', '2 workers'):.2f}x; "
          f"1 worker vs in-process: {ratio('in-process', '1 worker'):.2f}x; "
          f"workers busy in runs (median): " + ", ".join(
              f"{c} {100 * statistics.median(b):.0f}%" for c, b in busy.items())
          + f"; {os.cpu_count()} cores")


def main():
    quick = "--quick" in sys.argv
    if "--child" in sys.argv:
        return child(sys.argv[sys.argv.index("--child") + 1], quick)
    rounds = int(sys.argv[sys.argv.index("--rounds") + 1]) if "--rounds" in sys.argv else 2
    print(common.machine_line())
    overhead(quick)
    throughput(quick, 1 if quick else rounds)


if __name__ == "__main__":
    main()
