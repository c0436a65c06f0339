"""The optimizer benchmark: budgets, problems, the SQLite store, both executors, resume, report."""
import json
import math
import multiprocessing
import os
import sqlite3

import numpy as np
import pytest

from tinygrad_opt.benchmark import (LocalExecutor, Store, Task, get_problem, performance_profile,
                                    run_benchmark, settings, write_report)
from tinygrad_opt.benchmark.executors import execute
from tinygrad_opt.benchmark.report import cell_stats
from tinygrad_opt.benchmark.runner import BenchmarkResult, Cell, quantiles, run_tasks
from tinygrad_opt.optim.registry import get_spec

TINY = dict(problems=["quadratic", "spirals"], optimizers=["sgd", "adam"], budget="grid",
            budget_size=2, seeds=2, epochs=2)


# ---------------------------------------------------------------- budgets
def test_oneshot_is_the_registry_default():
    assert settings("oneshot", "adam") == [{"lr": get_spec("adam").lr}]


@pytest.mark.parametrize("opt", ["sgd", "adam", "rmsprop"])
def test_grid_is_log_spaced_over_the_same_range_for_every_optimizer(opt):
    lrs = [s["lr"] for s in settings("grid", opt, 4)]
    d = get_spec(opt).lr
    np.testing.assert_allclose(lrs, [d / 100, d / 10, d, d * 10], rtol=1e-3)
    assert settings("grid", opt, 1) == [{"lr": d}]


def test_random_budget_is_seeded_ranged_and_per_optimizer():
    a = settings("random", "adamw", 20, seed=3)
    assert a == settings("random", "adamw", 20, seed=3)
    assert a != settings("random", "adamw", 20, seed=4)
    d = get_spec("adamw").lr
    for s in a:
        assert d / 100 * 0.999 <= s["lr"] <= d * 10 * 1.001
        assert 0.8 <= s["betas"][0] <= 0.99 and s["betas"][1] in (0.99, 0.999)
        assert 1e-4 * 0.999 <= s["weight_decay"] <= 0.1 * 1.001
    m = settings("random", "momentum", 5)
    assert all(0.5 <= s["momentum"] <= 0.99 and set(s) == {"lr", "momentum"} for s in m)
    assert all(set(s) == {"lr", "alpha", "momentum"} for s in settings("random", "rmsprop", 3))


@pytest.mark.parametrize("args, match", [(("nope", "sgd"), "unknown budget"),
                                         (("grid", "sgd", 0), "positive integer"),
                                         (("grid", "nosuch", 2), "unknown optimizer")])
def test_budget_errors(args, match):
    with pytest.raises(ValueError, match=match):
        settings(*args)


# ---------------------------------------------------------------- problems
def test_problem_direction_and_target():
    acc, loss = get_problem("digits"), get_problem("quadratic")
    assert acc.reached(0.95) and not acc.reached(0.9) and not acc.reached(float("nan"))
    assert loss.reached(0.01) and not loss.reached(0.5)
    assert acc.best([0.5, None, 0.9, float("nan"), 0.7]) == 0.9
    assert loss.best([0.5, float("inf"), 0.2, 0.3]) == 0.2
    with pytest.raises(ValueError, match="unknown problem 'x'"):
        get_problem("x")


def test_runs_are_seeded_and_independent():
    p = get_problem("quadratic")
    a = p.run("sgd", {"lr": 0.5}, seed=1, epochs=2)
    b = p.run("sgd", {"lr": 0.5}, seed=1, epochs=2)
    c = p.run("sgd", {"lr": 0.5}, seed=2, epochs=2)
    assert a["status"] == "ok" and a["metric"] == b["metric"] and a["metric"] != c["metric"]
    assert a["steps"] == [50, 100] and a["metric"][-1] < 2.6       # it learned something


def test_divergence_and_failures_are_results():
    r = get_problem("rosenbrock").run("sgd", {"lr": 1.0}, seed=0, epochs=1)
    assert r["status"] == "diverged" and "loss" in r["error"]
    r = get_problem("quadratic").run("adam", {"lr": 0.1, "gamma": 3}, seed=0, epochs=1)
    assert r["status"].startswith("failed") and "no hyperparameter 'gamma'" in r["error"]


def test_extra_hyperparameters_reach_the_optimizer():
    a = get_problem("quadratic").run("adam", {"lr": 0.05, "betas": [0.5, 0.99]}, seed=0, epochs=1)
    b = get_problem("quadratic").run("adam", {"lr": 0.05}, seed=0, epochs=1)
    assert a["status"] == b["status"] == "ok" and a["metric"] != b["metric"]


# ---------------------------------------------------------------- store
def _task(i, seed=0):
    return Task("quadratic", "sgd", {"lr": 0.1 * (i + 1)}, seed, 1)


def _result(x):
    return {"status": "ok", "metric": [x], "steps": [50], "seconds": [0.1], "error": None,
            "total_seconds": 0.1}


def test_store_round_trip_and_wal(tmp_path):
    with Store(tmp_path / "sub" / "b.sqlite") as s:
        assert s.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        t = _task(0)
        s.start(t)
        assert s.done() == set() and s.get(t.key) is None and s.count("running") == 1
        s.finish(t, _result(0.25))
        row = s.get(t.key)
        assert s.done() == {t.key} and row["status"] == "ok" and row["metric"] == [0.25]
        assert row["hparams"] == {"lr": 0.1} and row["started"] <= row["finished"]
        import tinygrad_opt
        assert row["version"] == tinygrad_opt.__version__


def _writer(path, start, n):
    with Store(path) as s:
        for i in range(start, start + n):
            s.start(_task(i))
            s.finish(_task(i), _result(float(i)))


def test_two_processes_write_one_database(tmp_path):
    path = str(tmp_path / "b.sqlite")
    Store(path).close()
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(path, k * 100, 100)) for k in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0]
    con = sqlite3.connect(path)
    assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    rows = con.execute("SELECT hparams, metric FROM runs WHERE status = 'ok'").fetchall()
    assert len(rows) == 200
    assert sorted(json.loads(m)[0] for _, m in rows) == [float(i) for i in range(200)]


# ---------------------------------------------------------------- end to end
def _numbers(result):
    """Everything a run measured except its timings, per cell and seed."""
    return [(c.problem.name, c.optimizer, json.dumps(c.best_hparams, sort_keys=True),
             [(r["status"], r["metric"], r["steps"]) for r in c.tuning + c.seed_runs])
            for c in result.cells]


@pytest.fixture(scope="module")
def local_run(tmp_path_factory):
    db = tmp_path_factory.mktemp("bench") / "local.sqlite"
    with LocalExecutor(2) as executor:
        return run_benchmark(**TINY, db=db, executor=executor), db


@pytest.mark.slow
def test_tiny_benchmark_on_local_processes(local_run):
    result, db = local_run
    assert len(result.cells) == 4
    for c in result.cells:
        assert len(c.tuning) == 2 and len(c.seed_runs) == 2
        assert c.seed_runs[0] is not None and c.seed_runs[0]["key"] == \
            [r for r in c.tuning if r["hparams"] == c.best_hparams][0]["key"]   # seed 0 reused
        assert all(r["status"] == "ok" and len(r["metric"]) == 2 for r in c.seed_runs)
    with Store(db) as s:                         # 8 tuning runs + 4 new seed runs, no repeats
        assert s.count() == 12 and s.count("ok") == 12
    adam_spirals = [c for c in result.cells if c.problem.name == "spirals" and c.optimizer == "adam"][0]
    assert adam_spirals.best_hparams == {"lr": 0.05}   # lr 5e-5 barely moves in 2 epochs
    assert "spirals" in result.table() and "ok/diverged/failed" in result.table()


@pytest.mark.slow
def test_dask_cluster_gives_the_same_numbers(local_run, tmp_path):
    distributed = pytest.importorskip("distributed")
    from tinygrad_opt.benchmark import DaskExecutor
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster:
        with distributed.Client(cluster) as client:
            result = run_benchmark(**TINY, db=tmp_path / "dask.sqlite", executor=DaskExecutor(client))
    assert _numbers(result) == _numbers(local_run[0])


def _worker_state(task):
    """What a worker holds when a task reaches it (runs in the worker process)."""
    import os
    import sys
    from tinygrad_opt.benchmark import problems
    return (os.getpid(), os.environ.get("OPENBLAS_NUM_THREADS"), sorted(problems._DATA),
            "sklearn" in sys.modules, "tinygrad_opt.train" in sys.modules)


@pytest.mark.slow
def test_local_workers_start_once_with_the_data_and_one_blas_thread():
    pytest.importorskip("sklearn")                                 # digits is scikit-learn's file
    tasks = [Task(p, "sgd", {"lr": 0.1}, s, 1) for p in ("digits", "spirals") for s in range(3)]
    with LocalExecutor(2) as ex:
        first = [r for _, r in ex.map(_worker_state, tasks)]
        second = [r for _, r in ex.map(_worker_state, tasks[:2])]
    pids = {r[0] for r in first}
    assert 1 <= len(pids) <= 2 and {r[0] for r in second} <= pids    # the same processes serve both
    for pid in pids:                                               # close() stopped them
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    for pid, blas, data, sklearn, train in first + second:
        assert blas == "1" and train                               # one BLAS thread, imports done
        assert data == [("digits", None), ("spirals", None)]       # loaded at start-up
        assert not sklearn                                         # digits came from its file
    one = LocalExecutor(1, processes=True)
    assert one.processes and not LocalExecutor(1).processes and LocalExecutor(2).processes
    with one:
        assert {r[0] for _, r in one.map(_worker_state, tasks[:2])} != {multiprocessing.current_process().pid}


class _Recording(LocalExecutor):
    """In-process executor that records the order tasks reach it and whether it was closed."""
    def __init__(self, run=True):
        super().__init__(1)
        self.run, self.order, self.closed = run, [], 0

    def map(self, fn, tasks):
        tasks = list(tasks)
        self.order += [(t.problem, t.epochs) for t in tasks]
        return super().map(fn, tasks) if self.run else iter([])

    def close(self):
        self.closed += 1


def test_run_tasks_hands_out_the_longest_runs_first(tmp_path):
    ex = _Recording(run=False)
    ts = [Task("quadratic", "sgd", {"lr": 0.1}, 0, 10), Task("beale", "sgd", {"lr": 0.1}, 0, 10),
          Task("digits", "sgd", {"lr": 0.1}, 0, 10), Task("quadratic", "sgd", {"lr": 0.1}, 0, 40),
          Task("spirals", "sgd", {"lr": 0.1}, 0, 10), Task("digits", "adam", {"lr": 0.1}, 0, 10)]
    with Store(tmp_path / "b.sqlite") as store:
        assert run_tasks(store, ex, ts) == 6
    # seconds per epoch x epochs: quadratic 0.6, beale 0.45, digits 0.4 (twice, in the
    # given order), quadratic 0.15, spirals 0.15 (a tie: the given order)
    assert ex.order == [("quadratic", 40), ("beale", 10), ("digits", 10), ("digits", 10),
                        ("quadratic", 10), ("spirals", 10)]


def test_run_benchmark_closes_only_the_executor_it_made(tmp_path, monkeypatch):
    from tinygrad_opt.benchmark import runner
    made = []
    monkeypatch.setattr(runner, "LocalExecutor", lambda: made.append(_Recording()) or made[-1])
    mine = _Recording()
    for executor in (mine, None):
        run_benchmark(["quadratic"], ["sgd"], seeds=1, epochs=1, db=tmp_path / f"{executor}.sqlite",
                      executor=executor)
    assert mine.order == made[0].order == [("quadratic", 1)]     # each ran the benchmark
    assert mine.closed == 0 and len(made) == 1 and made[0].closed == 1


class _Killed(KeyboardInterrupt):
    pass


class _CountingExecutor(LocalExecutor):
    """In-process executor that counts runs and can be 'killed' after `kill_after` results."""
    def __init__(self, kill_after=None):
        super().__init__(1)
        self.kill_after, self.ran = kill_after, []

    def map(self, fn, tasks):
        for t, r in super().map(fn, tasks):
            self.ran.append(t.key)
            if self.kill_after is not None and len(self.ran) > self.kill_after:
                raise _Killed
            yield t, r


@pytest.mark.slow
def test_killed_benchmark_resumes_without_redoing_finished_runs(local_run, tmp_path):
    db = tmp_path / "resume.sqlite"
    first = _CountingExecutor(kill_after=5)
    with pytest.raises(_Killed):
        run_benchmark(**TINY, db=db, executor=first)
    with Store(db) as s:
        assert s.count("ok") == 5 and s.count("running") == 3    # 8 tuning runs were started
    second = _CountingExecutor()
    result = run_benchmark(**TINY, db=db, executor=second)
    assert len(second.ran) == 3 + 4 and not set(second.ran) & set(first.ran[:5])
    assert _numbers(result) == _numbers(local_run[0])
    third = _CountingExecutor()
    run_benchmark(**TINY, db=db, executor=third)
    assert third.ran == []                                       # all done: nothing reruns


@pytest.mark.slow
def test_report_files_are_valid_pngs_and_csv(local_run, tmp_path):
    pytest.importorskip("matplotlib")
    from matplotlib.image import imread
    paths = write_report(local_run[0], tmp_path)
    names = sorted(p.rsplit("/", 1)[-1] for p in paths)
    assert names == ["lr_sensitivity_quadratic.png", "lr_sensitivity_spirals.png",
                     "performance_profile.png", "summary.csv"]
    for p in paths:
        if p.endswith(".png"):
            with open(p, "rb") as f:
                assert f.read(8) == b"\x89PNG\r\n\x1a\n"
            img = imread(p)
            assert img.ndim == 3 and img.shape[0] > 100 and img.std() > 0
    lines = open(paths[0]).read().splitlines()
    assert lines[0].startswith("problem,optimizer,budget") and len(lines) == 5


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="needs data_dir"):
        run_benchmark(["mnist_mlp"], ["sgd"], db=tmp_path / "b.sqlite")
    with pytest.raises(ValueError, match="seeds must be a positive integer"):
        run_benchmark(["quadratic"], ["sgd"], seeds=0, db=tmp_path / "b.sqlite")
    with pytest.raises(ValueError, match="workers must be a positive integer"):
        LocalExecutor(0)


# ---------------------------------------------------------------- statistics
def test_quantiles_by_hand():
    assert quantiles([3.0, 1.0, 2.0, 4.0, 5.0]) == (2.0, 3.0, 4.0)
    assert quantiles([1.0, 2.0]) == (1.25, 1.5, 1.75)
    assert quantiles([1.0, math.inf, math.inf]) == (math.inf, math.inf, math.inf)
    assert quantiles([1.0, 2.0, math.inf])[1] == 2.0
    assert quantiles([]) is None


def _row(metric, status="ok"):
    return {"status": status, "metric": metric, "steps": [10 * (i + 1) for i in range(len(metric))],
            "seconds": [1.0 * (i + 1) for i in range(len(metric))], "hparams": {"lr": 0.1}}


def test_cell_stats_and_performance_profile_by_hand():
    acc = get_problem("digits")                          # target 0.95
    def cell(opt, runs, problem=acc):
        return Cell(problem, opt, "oneshot", runs[:1], {"lr": 0.1}, runs)
    a = cell("a", [_row([0.9, 0.96]), _row([0.96, 0.97]), _row([0.5], "diverged")])
    s = cell_stats(a)
    assert s["final"][1] == 0.96 and s["final"][0] == -math.inf     # diverged scores worst
    assert s["steps"] == (15.0, 20.0, math.inf) and (s["ok"], s["diverged"]) == (2, 1)
    # two problems: on p1 a needs 20 steps and b 40; on p2 only b reaches the target
    loss = get_problem("quadratic")                      # target 0.05, lower is better
    b = cell("b", [_row([0.9, 0.92, 0.96])] * 3)
    result = BenchmarkResult([a, b, cell("a", [_row([1.0, 0.5])] * 3, loss),
                              cell("b", [_row([1.0, 0.04])] * 3, loss)], "oneshot", 3)
    taus, rho = performance_profile(result)
    at = lambda o, tau: rho[o][np.searchsorted(taus, tau, side="right") - 1]
    assert at("a", 1.0) == 0.5 and at("b", 1.0) == 0.5        # each is fastest once
    assert at("b", 1.4) == 0.5 and at("b", 1.5) == 1.0        # b needs 30 steps vs a's 20 on p1
    assert at("a", taus[-1]) == 0.5                           # a never solves p2


# ---------------------------------------------------------------- command line
@pytest.mark.slow
def test_cli_benchmark_runs_reports_and_resumes(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    from tinygrad_opt import cli
    argv = ["benchmark", "--quick", "--problems", "quadratic,beale", "--optimizers", "sgd,adam",
            "--budget", "grid", "--workers", "1", "--out", str(tmp_path)]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert out.count(" seed ") == 8 + 4 and "quadratic  adam" in out
    names = {p.name for p in tmp_path.iterdir()}
    assert {"benchmark.sqlite", "lr_sensitivity_beale.png", "lr_sensitivity_quadratic.png",
            "performance_profile.png", "summary.csv"} <= names
    assert cli.main(argv) == 0                      # the same command again: nothing reruns
    again = capsys.readouterr().out
    table = lambda text: text[text.index("problem "):text.index("\nwrote")]
    assert " seed " not in again and table(again) == table(out)


@pytest.mark.parametrize("argv, message", [
    (["--problems", "nope"], "unknown problem(s) nope"),
    (["--optimizers", "newton"], "newton"),
    (["--budget", "best"], "invalid choice"),
    (["--seeds", "0"], "positive integer"),
    (["--problems", "mnist_mlp"], "needs --data-dir"),
])
def test_cli_benchmark_usage_errors(tmp_path, capsys, argv, message):
    from tinygrad_opt import cli
    try:
        code = cli.main(["benchmark", "--out", str(tmp_path), *argv])
    except SystemExit as e:
        code = e.code
    assert code == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_defaults_vs_tuned_by_hand():
    from tinygrad_opt.benchmark.report import defaults_vs_tuned
    acc, loss = get_problem("digits"), get_problem("quadratic")
    def cell(problem, opt, best, budget="oneshot", n=1):
        runs = [_row([best - 0.01, best])] * 3
        return Cell(problem, opt, budget, runs[:1] * n, {"lr": 0.1}, runs)
    defaults = BenchmarkResult([cell(acc, "sgd", 0.90), cell(acc, "adam", 0.93),
                                cell(loss, "sgd", 0.2), cell(loss, "adam", 0.4)], "oneshot", 3)
    tuned = BenchmarkResult([cell(acc, "adam", 0.96, "grid", 2), cell(loss, "adam", 0.1, "grid", 2)],
                            "grid", 3)
    headers, rows = defaults_vs_tuned(defaults, tuned)
    assert headers == ["problem", "metric", "best of 2 at defaults", "adam tuned (2 settings)"]
    assert rows == [["digits", "val_acc", "0.93 (adam)", "0.96"],
                    ["quadratic", "loss", "0.19 (sgd)", "0.09"]]   # lower is better there


@pytest.mark.parametrize("name", ["mnist_logreg", "mnist_mlp"])
def test_mnist_problems_read_data_dir(tmp_path, name):
    # a stand-in mnist.npz: class c lights the c-th band of rows, plus noise
    rng = np.random.default_rng(0)
    def images(y):
        x = rng.integers(0, 60, (len(y), 28, 28))
        for i, c in enumerate(y):
            x[i, 2 * c:2 * c + 3] += 180
        return x.astype(np.uint8)
    y_train, y_test = rng.integers(0, 10, 300), rng.integers(0, 10, 100)
    np.savez(tmp_path / "mnist.npz", x_train=images(y_train), y_train=y_train,
             x_test=images(y_test), y_test=y_test)
    r = get_problem(name).run("adam", {"lr": 0.01}, seed=0, epochs=3, data_dir=str(tmp_path))
    assert r["status"] == "ok" and len(r["metric"]) == 3 and r["metric"][-1] > 0.9
    assert r["steps"] == [10, 20, 30]                   # 300 samples in batches of 32


@pytest.mark.slow
def test_missing_data_fails_the_runs_not_the_workers(tmp_path):
    tasks = [Task("mnist_logreg", "sgd", {"lr": 0.1}, s, 1, str(tmp_path)) for s in range(2)]
    with LocalExecutor(2) as ex:
        results = [r for _, r in ex.map(execute, tasks)]
    assert [r["status"] for r in results] == ["failed: FileNotFoundError"] * 2
