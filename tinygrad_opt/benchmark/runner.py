"""The benchmark protocol: tune each optimizer within a budget, then re-run the best setting
with several seeds; every run goes through the store, so a re-run resumes.

    from tinygrad_opt.benchmark import run_benchmark
    result = run_benchmark(["quadratic", "digits"], ["sgd", "adam"], budget="grid",
                           budget_size=4, seeds=5, db="out/bench.sqlite")
    print(result.table())

Phase 1 runs every setting of the budget with seed 0 and picks, per problem and optimizer,
the setting with the best validation metric (its best epoch; a diverged run ranks last).
Phase 2 runs that setting with seeds 0 .. seeds-1 (seed 0 is the tuning run itself).
"""
import contextlib
import math
from dataclasses import dataclass, field

from . import budgets as _budgets
from .executors import LocalExecutor, execute
from .problems import get_problem
from .store import Store, run_key


@dataclass(frozen=True)
class Task:
    """One run: problem, optimizer (registry name), hyperparameters, seed, epochs."""
    problem: str
    optimizer: str
    hparams: dict = field(hash=False)
    seed: int
    epochs: int
    data_dir: str = None

    @property
    def key(self):
        return run_key(self.problem, self.optimizer, self.hparams, self.seed, self.epochs)


def run_tasks(store, executor, tasks, log=None):
    """Run the tasks the store has not finished, the longest first; returns how many ran.

    Longest first (by the problem's seconds per epoch x epochs): the workers end together
    instead of one finishing a long run while the others wait."""
    done = store.done()
    pending, seen = [], set()
    for t in tasks:
        if t.key not in done and t.key not in seen:
            seen.add(t.key)
            pending.append(t)
    pending.sort(key=lambda t: -get_problem(t.problem).epoch_seconds * t.epochs)   # stable
    for t in pending:               # a kill from here on leaves them 'running': redone later
        store.start(t)
    for i, (t, result) in enumerate(executor.map(execute, pending)):
        store.finish(t, result)
        if log:
            last = result["metric"][-1] if result["metric"] else None
            log(f"[{i + 1}/{len(pending)}] {t.problem} {t.optimizer} {_fmt_hparams(t.hparams)} "
                f"seed {t.seed}: {result['status']}"
                + ("" if last is None else f", final {last:.4g}")
                + f" ({result['total_seconds']:.1f} s)")
    return len(pending)


def _fmt_hparams(h):
    return " ".join(f"{k}={v}" for k, v in sorted(h.items()))


@dataclass
class Cell:
    """One problem x optimizer of a benchmark: the tuning runs, the chosen setting and the
    runs of that setting over seeds (store rows)."""
    problem: object
    optimizer: str
    budget: str
    tuning: list
    best_hparams: dict
    seed_runs: list


@dataclass
class BenchmarkResult:
    cells: list
    budget: str
    seeds: int

    def table(self):
        from .report import summary_table
        from ..experiment import format_table
        headers, rows, _ = summary_table(self)
        return format_table(headers, rows)


def run_benchmark(problems, optimizers, *, budget="oneshot", budget_size=4, budget_seed=0,
                  seeds=5, epochs=None, db="benchmark.sqlite", executor=None, data_dir=None,
                  log=None):
    """Run (or resume) the benchmark and return a BenchmarkResult read back from the store.

    problems, optimizers: names; epochs None: each problem's own; executor: LocalExecutor
    (default, one worker per core, closed at the end) or DaskExecutor (one passed in stays
    open for the caller to close); log: a callable taking one line.
    """
    problems = [get_problem(p) for p in problems]
    for p in problems:
        if p.needs_data_dir and not data_dir:
            raise ValueError(f"problem {p.name} needs data_dir (a folder holding the MNIST files)")
    grid = {o: _budgets.settings(budget, o, budget_size, budget_seed) for o in optimizers}
    if not isinstance(seeds, int) or seeds < 1:
        raise ValueError(f"seeds must be a positive integer, got {seeds!r}")
    own = executor is None
    executor = executor or LocalExecutor()
    ep = {p.name: p.epochs if epochs is None else epochs for p in problems}

    def task(p, o, h, seed):
        return Task(p.name, o, h, seed, ep[p.name], data_dir)

    with Store(db) as store, (executor if own else contextlib.nullcontext()):
        tuning = [task(p, o, h, 0) for p in problems for o in optimizers for h in grid[o]]
        run_tasks(store, executor, tuning, log)
        cells = []
        for p in problems:
            for o in optimizers:
                rows = [store.get(task(p, o, h, 0).key) for h in grid[o]]
                best = _pick(p, rows)
                cells.append(Cell(p, o, budget, rows, best["hparams"], []))
        run_tasks(store, executor,
                  [task(c.problem, c.optimizer, c.best_hparams, s) for c in cells
                   for s in range(seeds)], log)
        for c in cells:
            c.seed_runs = [store.get(task(c.problem, c.optimizer, c.best_hparams, s).key)
                           for s in range(seeds)]
    return BenchmarkResult(cells, budget, seeds)


def _pick(problem, rows):
    """The tuning row with the best best-epoch metric (the first on ties; failures last)."""
    best, best_value = rows[0], None
    for r in rows:
        v = problem.best(r["metric"]) if r["status"] == "ok" else None
        if problem.better(v, best_value):
            best, best_value = r, v
    return best


def quantiles(values):
    """(q1, median, q3), linearly interpolated; +-inf marks a failed run (never reached, diverged)
    and an interpolation next to one gives that inf. None for no values."""
    v = sorted(values)
    if not v:
        return None
    def q(f):
        x = f * (len(v) - 1)
        lo, hi = math.floor(x), math.ceil(x)
        if v[lo] == v[hi]:
            return v[lo]
        if math.isinf(v[lo]) or math.isinf(v[hi]):     # next to a failed run: count it failed
            return v[lo] if math.isinf(v[lo]) else v[hi]
        return v[lo] + (v[hi] - v[lo]) * (x - lo)
    return q(0.25), q(0.5), q(0.75)
