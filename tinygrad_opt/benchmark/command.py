"""`tinygrad-opt benchmark`: the subcommand's flags and its body; cli.py registers it with
`add_command(sub, _command)`, the way it builds every other subcommand."""
import os

from .. import cliargs
from .budgets import BUDGETS
from .problems import PROBLEMS, get_problem


def cmd_benchmark(args):
    """Problems x optimizers x tuning budget x seeds: every optimizer is tuned within the
    same budget (seed 0), its best setting re-run with --seeds seeds, and the table reports
    medians and quartiles of the final and best validation metric and the steps and seconds
    to each problem's target. Each run is a row of the SQLite database --db: re-running the
    same command resumes a killed benchmark. Runs go to --workers local processes, or to a
    Dask cluster with --scheduler. Writes summary.csv, performance_profile.png and
    lr_sensitivity_<problem>.png into --out."""
    from .._optional import require
    from ..cli import UsageError
    from .executors import DaskExecutor, LocalExecutor
    from .report import write_report
    from .runner import run_benchmark
    need = [p for p in args.problems if get_problem(p).needs_data_dir]
    if need and not args.data_dir:      # the command's own mistake first, then what is missing
        raise UsageError(f"problem {need[0]} needs --data-dir DIR (the folder with the MNIST files)")
    require("matplotlib", "the benchmark's pictures")
    try:
        executor = DaskExecutor(args.scheduler) if args.scheduler else LocalExecutor(args.workers)
    except (OSError, TimeoutError, ValueError) as e:
        raise UsageError(f"--scheduler {args.scheduler}: cannot connect ({e})") from None
    log = None if args.progress == "none" else (lambda line: print(line, flush=True))
    try:
        result = run_benchmark(args.problems, [n for n, _ in args.optimizers], budget=args.budget,
                               budget_size=args.budget_size, budget_seed=args.seed,
                               seeds=args.seeds, epochs=args.epochs,
                               db=args.db or os.path.join(args.out, "benchmark.sqlite"),
                               executor=executor, data_dir=args.data_dir, log=log)
    finally:
        executor.close()                # the local worker processes, or the Dask client
    print()
    print(result.table())
    print("\nwrote " + ", ".join(write_report(result, args.out)))
    return 0


def add_command(sub, command):
    """Register the subcommand with cli.py's `_command(sub, func, summary, examples, ...)`."""
    p = command(sub, cmd_benchmark, "problems x optimizers x tuning budget x seeds, stored in "
                "SQLite, on local processes or a Dask cluster",
                ["--problems quadratic,digits --optimizers sgd,momentum,adam --budget grid",
                 "--budget random --budget-size 16 --seeds 10 --workers 8",
                 "--scheduler tcp://10.0.0.5:8786 --db results/bench.sqlite"],
                sizes=(dict(seeds=5, budget_size=4), dict(seeds=2, budget_size=2, epochs=2)))
    p.add_argument("--problems", type=cliargs.name_list(list(PROBLEMS), "problem(s)"),
                   metavar="P,...",
                   default=["quadratic", "digits", "spirals", "rosenbrock", "beale"],
                   help=f"any of {', '.join(PROBLEMS)} (default: all but the MNIST ones)")
    p.add_argument("--optimizers", type=cliargs.training_list, metavar="NAME,...",
                   default=cliargs.training_list("sgd,momentum,adam"),
                   help=f"any of {', '.join(cliargs.TRAIN_OPTIMIZERS)} (default: sgd,momentum,adam)")
    p.add_argument("--budget", choices=BUDGETS, default="oneshot",
                   help="oneshot: the defaults; grid: N lrs log-spaced over [lr/100, 10 lr]; "
                        "random: N seeded draws of lr and the other hyperparameters")
    p.add_argument("--budget-size", type=cliargs.positive_int, default=None, metavar="N",
                   help="settings per optimizer for grid and random (default: 4)")
    p.add_argument("--seeds", type=cliargs.positive_int, default=None, metavar="K",
                   help="seeds of each optimizer's best setting (default: 5)")
    p.add_argument("--epochs", type=cliargs.positive_int, default=None, metavar="N",
                   help="epochs of every run (default: each problem's own)")
    p.add_argument("--data-dir", metavar="DIR", help="folder with the MNIST files")
    p.add_argument("--db", metavar="PATH", help="SQLite result store (default: OUT/benchmark.sqlite)")
    p.add_argument("--workers", type=cliargs.positive_int, default=None, metavar="N",
                   help="local worker processes (default: the number of cores)")
    p.add_argument("--scheduler", metavar="ADDRESS",
                   help="run on a Dask cluster, e.g. tcp://10.0.0.5:8786 (see docs/benchmark.md)")
    cliargs.add_progress(p)
    cliargs.add_common(p, "2 epochs, 2 seeds, 2 settings per budget")
    return p
