"""A fair optimizer benchmark: problems x optimizers x tuning budget x seeds, stored in SQLite,
run on local processes or a Dask cluster. See docs/benchmark.md.

    from tinygrad_opt.benchmark import run_benchmark, write_report
    result = run_benchmark(["quadratic", "digits"], ["sgd", "adam"], budget="grid", budget_size=4)
    print(result.table()); write_report(result, "out/benchmark")
"""
from .budgets import BUDGETS, settings
from .executors import DaskExecutor, LocalExecutor
from .problems import PROBLEMS, Problem, get_problem
from .report import performance_profile, summary_table, write_report
from .runner import BenchmarkResult, Task, run_benchmark
from .store import Store

__all__ = ["BUDGETS", "settings", "DaskExecutor", "LocalExecutor", "PROBLEMS", "Problem",
           "get_problem", "performance_profile", "summary_table", "write_report",
           "BenchmarkResult", "Task", "run_benchmark", "Store"]
