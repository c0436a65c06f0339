"""Command line: tinygrad-opt train | compare | landscape | curvature | instruments | spectrum |
surface | benchmark (or python -m tinygrad_opt).

Each subcommand but benchmark runs with no flags on the embedded digits set in well under a
minute (benchmark's full protocol takes minutes; --quick runs it in seconds) and writes
its files into --out (default ./out). `--quick` shrinks every size for tests. Optional
dependencies (scikit-learn for digits, matplotlib for pictures, tqdm for a progress bar) are
checked before any work starts; a missing one ends the run with one line naming the extra.

This file holds the parser, the help and one thin `cmd_*` per subcommand; the work is done by
experiment.py (data, model, optimizer, schedule), optim/registry.py (optimizers by name),
testfunctions.py (2-D problems), plots.py (pictures) and train.py (fit, Progress); cliargs.py
holds the shared flags and argument types. A new subcommand is a `cmd_*` function, whose
docstring is its help, and a block in build_parser.
"""
import inspect
import math
import os
import sys
import textwrap
import time

from . import backend, cliargs, experiment
from .cliargs import TRAIN_OPTIMIZERS, UsageError
from .experiment import format_table, num, pct, write_csv
from ._optional import MissingDependency, require
from .optim.registry import OPTIMIZERS
from .instruments import PRESETS, QUANTITIES
from .testfunctions import PROBLEMS, problem_lr, run_path
from .train import Progress, TrainingDiverged


# ---------------------------------------------------------------- shared by the commands
def dataset(args):
    """load_dataset with the data flags of `args`; unreadable data files are a UsageError."""
    try:
        return experiment.load_dataset(args.data, dtype=args.dtype, device=args.device,
                                       seed=args.seed, val_fraction=args.val_fraction,
                                       data_dir=args.data_dir, quick=args.quick)
    except (OSError, ValueError) as e:
        raise UsageError(f"--data {args.data}: {e}") from None


def setup(args, optimizer, data=None, lr=None):
    """experiment.Setup for `optimizer` with the training flags of `args`."""
    options = {k: getattr(args, k) for k in experiment.Setup.OPTIONS}
    options["lr"] = lr or args.lr
    return experiment.Setup(optimizer, dataset(args) if data is None else data, **options)


def progress(args, label="", leave=True):
    """The Progress callback for --progress."""
    return Progress(args.progress, label, leave)


def report(args, filename, headers, rows, raw):
    """Print the table `rows` under `headers`; write `raw` (rows, or (headers, rows)) as the
    CSV file `filename` into --out and return its path."""
    print()
    print(format_table(headers, rows))
    path = os.path.join(args.out, filename)
    write_csv(path, *(raw if isinstance(raw, tuple) else (headers, raw)))
    return path


# ---------------------------------------------------------------- train
def cmd_train(args):
    """Train an MLP classifier with one optimizer, print one line per epoch and a final
    table, and write train_history.csv into --out."""
    from .train import History, restore_state
    train_state = cliargs.resume(args) if args.resume else None
    args.save = args.save or args.resume
    if args.save:
        try:                                        # fail now, not after the first epoch
            os.makedirs(os.path.dirname(os.path.abspath(args.save)), exist_ok=True)
        except OSError as e:
            raise UsageError(f"--save {args.save}: cannot create its folder ({e})") from None
    callbacks = [progress(args)]
    s = setup(args, args.optimizer)
    history, start = History(), 0
    if train_state is not None:
        try:
            start = restore_state(train_state, s.model, s.optimizer, s.loader, s.scheduler,
                                  history)
        except (KeyError, ValueError, TypeError) as e:
            raise UsageError(f"--resume: {args.resume} does not fit its own settings "
                             f"({type(e).__name__}: {e})") from None
        print(f"resumed {args.resume} at epoch {start} of {args.epochs}")
    if args.save:
        callbacks.append(experiment.save_run(args.save, {
            k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(args).items()
            if k not in ("func", "resume", "save", "given")}))
    n_params = sum(p.size for p in s.model.parameters())
    print(f"{args.optimizer} (lr {s.lr:g}) on {args.data}: MLP {s.model.sizes}, {n_params} "
          f"parameters, {s.train[0].shape[0]} train / {s.val[0].shape[0]} val samples, "
          f"batch {s.loader.batch_size}, {args.dtype}")
    t0 = time.perf_counter()
    history = s.fit(callbacks, start_epoch=start, history=history)
    path = report(args, "train_history.csv",
                  *experiment.train_table(args.optimizer, history, time.perf_counter() - t0))
    print(f"\nwrote {path}" + (f" and checkpoint {args.save}" if args.save else ""))
    return 0


# ---------------------------------------------------------------- compare
def cmd_compare(args):
    """Train the same MLP from the same initial weights on the same batches with each
    optimizer. Prints a table (final training loss, best validation accuracy, epochs to
    --target, wall time) and writes compare.png (loss and accuracy curves) and compare.csv
    into --out."""
    from .plots import plot_compare
    require("matplotlib", "compare.png")
    mode = progress(args).mode
    data = dataset(args)
    n = len(args.optimizers)

    def bars(i, name):
        return [Progress("bar" if mode == "bar" else "none", f"[{i + 1}/{n}] {name}: ", False)]

    options = {k: getattr(args, k) for k in experiment.Setup.OPTIONS if k != "epochs"}
    results = []
    for i, r in enumerate(experiment.compare(args.optimizers, data, epochs=args.epochs,
                                             callbacks=bars, **options)):
        results.append(r)
        if r.status.startswith("failed"):
            print(f"tinygrad-opt compare: {r.name} {r.status}", file=sys.stderr)
        if mode != "none":
            best = f"best val_acc {pct(max(r.history.val_acc))}" if r.ok else r.status
            print(f"[{i + 1}/{n}] {r.name}: {best}, {r.seconds:.1f}s", flush=True)

    csv_path = report(args, "compare.csv", *experiment.compare_table(results, args.target))
    png = os.path.join(args.out, "compare.png")
    plot_compare(results, png, target=args.target,
                 title=f"{n} optimizers from the same init on the same {args.data} batches: "
                       f"MLP {[*args.hidden]} hidden, {args.epochs} epochs")
    print(f"\nwrote {png} and {csv_path}")
    return 0


# ---------------------------------------------------------------- landscape
def cmd_landscape(args):
    """Run optimizers from the same start on 2-D test functions and draw their paths over
    the contour lines, one colour per optimizer, in one grid (landscape.png in --out); prints
    where each one ended."""
    from .plots import plot_landscape
    require("matplotlib", "landscape.png")
    names = [n for n, _ in args.optimizers]
    lrs = dict(args.optimizers)
    rows, paths = [], {}
    for fname in args.functions:
        problem = PROBLEMS[fname]
        for name in names:
            steps = args.steps or (max(20, problem.steps // 5) if args.quick else problem.steps)
            path = run_path(problem, name, steps, lrs[name])
            paths[fname, name] = path
            end = path[-1]
            value = float(problem.f(*end)) if all(map(math.isfinite, end)) else math.nan
            rows.append([fname, name, f"{problem_lr(problem, name, lrs[name]):g}",
                         len(path) - 1, f"({end[0]:.3g}, {end[1]:.3g})", num(value, ".3g")])
    print(format_table(["function", "optimizer", "lr", "steps", "final_point", "final_value"],
                       rows))
    png = os.path.join(args.out, "landscape.png")
    plot_landscape([PROBLEMS[f] for f in args.functions], names, paths, png,
                   60 if args.quick else 300)
    print(f"\nwrote {png}")
    return 0


# ---------------------------------------------------------------- curvature
def cmd_curvature(args):
    """Train an MLP and, before training and after every epoch, measure the Hessian of the
    loss on a fixed set of training samples from Hessian-vector products only: the --k
    largest eigenvalues and lambda_min (Lanczos), the condition number lambda_max /
    lambda_min (inf while the Hessian is indefinite), the spread lambda_max / |lambda_min|,
    the curvature along the gradient g^T H g / g^T g, and lr * lambda_max (gradient descent
    is stable only below 2). Prints a table and writes curvature.png and curvature.csv into
    --out."""
    from .plots import plot_curvature
    require("matplotlib", "curvature.png")
    s = setup(args, args.optimizer)
    monitor = experiment.epoch_curvature(s, args.samples, args.k, args.lanczos_iter, args.seed)
    print(f"{args.optimizer} (lr {s.lr:g}) on {args.data}: MLP {s.model.sizes}; Hessian of the "
          f"loss on {monitor.samples} fixed training samples, by Lanczos on Hessian-vector "
          "products")
    h = s.fit([monitor, progress(args)])
    csv_path = report(args, "curvature.csv",
                      *experiment.curvature_table(monitor.history, [None, *h.val_acc]))
    print("\ncondition: lambda_max / lambda_min, inf while the Hessian is indefinite (lambda_min "
          "< 0);\nlmax/|lmin|: the spread of the spectrum either way; gradient descent is stable "
          "while lr*lambda_max < 2.")
    png = os.path.join(args.out, "curvature.png")
    plot_curvature(monitor.history, png,
                   title=f"Hessian of the loss on {args.samples} {args.data} samples while "
                         f"training an MLP {list(args.hidden)} with {args.optimizer} "
                         f"(lr {monitor.history[0].lr:g})")
    print(f"\nwrote {png} and {csv_path}")
    return 0


# ---------------------------------------------------------------- instruments, spectrum, surface
def cmd_instruments(args):
    """Train an MLP with Cockpit's instruments recorded every --every steps on each step's own
    minibatch (docs/instruments.md: gradient tests, noise scale, step-size quality alpha,
    curvature). Prints each quantity's first, median and last value and writes
    instruments.png (one dashboard) and instruments.csv into --out."""
    from .studies import instruments_run
    require("matplotlib", "instruments.png")
    table = instruments_run(setup(args, args.optimizer), args.out, args.quantities, args.every,
                            [progress(args)])
    print("\n" + format_table(*table) + f"\n\nwrote {args.out}/instruments.png and .csv")
    return 0


def cmd_spectrum(args):
    """Train an MLP and estimate the whole eigenvalue density of the Hessian of the loss on a
    fixed batch of training samples, at the start and after a few epochs, by stochastic
    Lanczos quadrature (Ghorbani et al. 2019). Prints the spectrum's ends, the share of
    negative eigenvalues and the trace per measurement; writes spectrum.png and .csv."""
    from .studies import spectrum_run
    require("matplotlib", "spectrum.png")
    table = spectrum_run(setup(args, args.optimizer), args.out, args.samples, args.lanczos_steps,
                         args.vectors, callbacks=[progress(args)])
    print("\n" + format_table(*table) + f"\n\nwrote {args.out}/spectrum.png and .csv")
    return 0


def cmd_surface(args):
    """Train an MLP, then evaluate the loss on the straight line from the initial to the trained
    parameters (Goodfellow et al. 2015) and on a plane of two filter-normalized random
    directions around the solution (Li et al. 2018). Prints the line and its barrier (how far
    it rises above its ends) and writes surface.png and surface.csv into --out."""
    from .studies import surface_run
    require("matplotlib", "surface.png")
    *table, barrier = surface_run(setup(args, args.optimizer), args.out, args.samples,
                                  args.points, args.grid, args.span, [progress(args)])
    print("\n" + format_table(*table) + f"\n\nbarrier on the line: {barrier:.3g} (<= 0: none)"
          f"\nwrote {args.out}/surface.png and .csv")
    return 0


# ---------------------------------------------------------------- help
DESCRIPTION = """\
Train and compare optimizers with tinygrad_opt, a small reverse-mode autodiff library
on NumPy/CuPy with exact Hessian-vector products.

{commands}

Every subcommand but benchmark runs with no flags on the 8x8 digits set (1,797
images, bundled with scikit-learn) in well under a minute and writes into --out;
benchmark's full protocol takes minutes (--quick: seconds).
Run `tinygrad-opt COMMAND --help` for the options of one command."""

EPILOG = """\
examples:
  tinygrad-opt compare
  tinygrad-opt compare --optimizers sgd:0.2,momentum,adam:0.01 --epochs 30 --target 0.97
  tinygrad-opt train --optimizer nesterov --schedule cosine --warmup 1 --init orthogonal
  tinygrad-opt train --optimizer adam --epochs 5 --save out/run.ckpt
  tinygrad-opt train --resume out/run.ckpt --epochs 10
  tinygrad-opt landscape --functions rosenbrock,saddle --optimizers sgd,adam,newton
  tinygrad-opt curvature --optimizer sgd --lr 0.2 --epochs 10
  tinygrad-opt instruments --quantities full --every 5
  tinygrad-opt spectrum --activation tanh && tinygrad-opt surface

exit status: 0 on success, 1 if training diverged, 2 on a usage error or a
missing optional package (install them with: pip install 'tinygrad_opt[examples]').

threads: one BLAS thread per process (faster for these small matrices), unless
OPENBLAS_NUM_THREADS, OMP_NUM_THREADS, MKL_NUM_THREADS or VECLIB_MAXIMUM_THREADS
is set."""


def _command(sub, func, summary, examples, listing="", sizes=({}, {})):
    """A subcommand parser: help from func's docstring (+ listing), `examples` as the epilog.

    sizes: (normal, quick) defaults for flags left at None (see parse_args).
    """
    name = func.__name__[len("cmd_"):]
    p = sub.add_parser(name, formatter_class=cliargs.Formatter,
                       description=cliargs.wrap(inspect.cleandoc(func.__doc__))
                       + ("\n\n" + listing if listing else ""),
                       epilog="examples:\n" + "\n".join(f"  tinygrad-opt {name} {e}".rstrip()
                                                        for e in examples))
    p.set_defaults(func=func, sizes=sizes)
    p.summary = summary                 # the line in `tinygrad-opt --help`
    sub.commands[name] = p
    return p


def build_parser():
    """The argparse parser of `tinygrad-opt` with its subcommands."""
    from . import __version__
    parser = cliargs.Parser(prog="tinygrad-opt", epilog=EPILOG, formatter_class=cliargs.Formatter)
    from .__main__ import BLAS_THREADS
    threads = ", ".join(f"{v}={os.environ[v]}" for v in BLAS_THREADS if v in os.environ)
    parser.add_argument("--version", action="version", version=f"tinygrad_opt {__version__} "
                        f"(NumPy {backend.np.__version__}; {threads or 'default BLAS threads'})")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", help="see above")
    sub.required = True
    sub.commands = parser.commands = {}
    mlp = (dict(epochs=20, hidden=(64,)), dict(epochs=2, hidden=(16,)))

    p = _command(sub, cmd_train, "train an MLP with one optimizer; checkpoints with "
                 "--save/--resume",
                 ["", "--optimizer momentum --lr 0.1 --schedule step --clip 5",
                  "--optimizer lbfgs --epochs 10 --dtype float64",
                  "--hidden 128,64 --init orthogonal --save out/run.ckpt",
                  "--resume out/run.ckpt --epochs 40   # continue the same run to epoch 40"],
                 cliargs.optimizer_help(TRAIN_OPTIMIZERS), mlp)
    p.add_argument("--optimizer", choices=TRAIN_OPTIMIZERS, default="adam", metavar="NAME",
                   help="one of the optimizers listed above (default: %(default)s)")
    cliargs.add_training(p, 20, (64,), "float32", "learning rate (default: the optimizer's, above)")
    g = p.add_argument_group("checkpoints")
    g.add_argument("--save", metavar="PATH",
                   help="write a checkpoint to PATH after every epoch (atomic; resumable)")
    g.add_argument("--resume", metavar="PATH",
                   help="continue the run saved in PATH to --epochs; data, model and optimizer "
                        "settings come from the checkpoint")
    cliargs.add_progress(p)
    cliargs.add_common(p, "2 epochs, one 16-unit hidden layer")

    default_opts = "sgd,momentum,nesterov,adagrad,rmsprop,adam"
    p = _command(sub, cmd_compare, "train the same MLP from the same init with several "
                 "optimizers; a table and compare.png",
                 ["", "--optimizers sgd:0.3,adam:0.001,adam:0.01",
                  "--optimizers momentum,adam,lbfgs,newtoncg --dtype float64",
                  "--data spirals --hidden 64,64 --epochs 60 --target 0.9"],
                 cliargs.optimizer_help(TRAIN_OPTIMIZERS, "optimizers (NAME or NAME:LR):"), mlp)
    p.add_argument("--optimizers", type=cliargs.training_list, metavar="NAME[:LR],...",
                   default=cliargs.training_list(default_opts),
                   help=f"comma-separated, each with an optional lr (default: {default_opts})")
    p.add_argument("--target", type=cliargs.fraction, default=0.95, metavar="ACC",
                   help="validation accuracy for the epochs-to-target column (default: "
                        "%(default)s)")
    cliargs.add_training(p, 20, (64,), "float32",
                  "one learning rate for all optimizers (default: each optimizer's own, above)")
    cliargs.add_progress(p)
    cliargs.add_common(p, "2 epochs, one 16-unit hidden layer")

    default_land = "sgd,momentum,nesterov,adagrad,rmsprop,adam,newton"
    p = _command(sub, cmd_landscape, "optimizer paths on 2-D test functions over contour "
                 "lines; landscape.png",
                 ["", "--functions saddle --optimizers sgd,adam,newton --steps 300",
                  "--optimizers momentum:0.001,lbfgs,cg,newtoncg"],
                 "functions:\n" + "\n".join(f"  {n:<11} {q.title}\n  {'':<11} start {q.start}, "
                                            f"{q.steps} steps" for n, q in PROBLEMS.items())
                 + "\n\nEach function has a tuned lr per optimizer; NAME:LR overrides it.")
    p.add_argument("--functions", type=cliargs.name_list(list(PROBLEMS), "function(s)"),
                   default=list(PROBLEMS), metavar="F,...",
                   help=f"which functions (default: {','.join(PROBLEMS)})")
    p.add_argument("--optimizers", type=cliargs.optimizer_list, metavar="NAME[:LR],...",
                   default=cliargs.optimizer_list(default_land),
                   help=f"any of {', '.join(OPTIMIZERS)} (default: {default_land})")
    p.add_argument("--steps", type=cliargs.positive_int, default=None,
                   help="optimizer steps per path (default: each function's own, above)")
    cliargs.add_common(p, "a fifth of the steps, a coarse contour grid", seed=False)

    p = _command(sub, cmd_curvature, "the top Hessian eigenvalues, lambda_min and g^T H g / "
                 "g^T g per epoch while training; a table and curvature.png",
                 ["", "--optimizer sgd --lr 0.5 --epochs 20   # watch lambda_max settle near 2/lr",
                  "--optimizer adam --k 5 --activation tanh"],
                 sizes=(dict(epochs=10, hidden=(32,), samples=512, lanczos_iter=60),
                        dict(epochs=2, hidden=(16,), samples=128, lanczos_iter=20)))
    p.add_argument("--optimizer", choices=TRAIN_OPTIMIZERS, default="sgd", metavar="NAME",
                   help=f"one of {', '.join(TRAIN_OPTIMIZERS)} (default: %(default)s)")
    p.add_argument("--k", type=cliargs.positive_int, default=3,
                   help="how many of the largest eigenvalues (default: %(default)s)")
    p.add_argument("--samples", type=cliargs.positive_int, default=None, metavar="N",
                   help="training samples in the fixed curvature batch (default: 512)")
    p.add_argument("--lanczos-iter", type=cliargs.positive_int, default=None, metavar="N",
                   help="Lanczos iterations (Hessian-vector products) per measurement "
                        "(default: 60)")
    cliargs.add_training(p, 10, (32,), "float64", "learning rate (default: the optimizer's)")
    cliargs.add_progress(p)
    cliargs.add_common(p, "2 epochs, 16 hidden units, 128 samples, 20 Lanczos iterations")

    small = dict(epochs=1, hidden=(16,), samples=128)
    for func, summary, examples, sizes in (
            (cmd_instruments, "Cockpit's instruments during training; one dashboard PNG",
             ["", "--quantities full --every 5", "--quantities NormTest,GradientNoiseScale"],
             (dict(epochs=5, hidden=(64,), every=1), dict(epochs=1, hidden=(16,), every=5))),
            (cmd_spectrum, "the Hessian's eigenvalue density over training; spectrum.png",
             ["", "--activation tanh --epochs 12 --vectors 4"],
             (dict(epochs=10, hidden=(32,), samples=512, lanczos_steps=80, vectors=2),
              dict(small, epochs=2, lanczos_steps=20, vectors=1))),
            (cmd_surface, "the loss from init to solution and around it; surface.png",
             ["", "--grid 41 --span 0.5"], (dict(epochs=10, hidden=(64,), samples=512, points=41,
                                                 grid=21), dict(small, points=9, grid=5)))):
        p = _command(sub, func, summary, examples, sizes=sizes)
        p.add_argument("--optimizer", choices=TRAIN_OPTIMIZERS, default="sgd", metavar="NAME",
                       help=f"one of {', '.join(TRAIN_OPTIMIZERS)} (default: %(default)s)")
        if func is cmd_instruments:
            p.add_argument("--quantities", default="economy",
                           type=cliargs.name_list(list(QUANTITIES), "quantity", tuple(PRESETS)),
                           help="economy, business, full, or names such as Loss,NormTest "
                                "(default: %(default)s)")
            p.add_argument("--every", type=cliargs.positive_int, metavar="K",
                           help="record every K steps (default: 1)")
        else:
            p.add_argument("--samples", type=cliargs.positive_int, metavar="N",
                           help="training samples in the fixed batch (default: 512)")
        if func is cmd_spectrum:
            p.add_argument("--lanczos-steps", type=cliargs.positive_int, metavar="N",
                           help="Lanczos steps per probe (default: 80)")
            p.add_argument("--vectors", type=cliargs.positive_int, metavar="N",
                           help="random probes per measurement (default: 2)")
        if func is cmd_surface:
            p.add_argument("--points", type=cliargs.positive_int, metavar="N",
                           help="points on the line, alpha in [-0.5, 1.5] (default: 41)")
            p.add_argument("--grid", type=cliargs.positive_int, metavar="N",
                           help="points per side of the plane (default: 21)")
            p.add_argument("--span", type=cliargs.positive_float, default=1.0,
                           help="the plane's half width (default: %(default)s)")
        cliargs.add_training(p, sizes[0]["epochs"], sizes[0]["hidden"], "float32",
                             "learning rate (default: the optimizer's)")
        cliargs.add_progress(p)
        cliargs.add_common(p, "1-2 epochs, 16 hidden units, small batches and grids")
    from .benchmark.command import add_command as add_benchmark     # its flags live there
    add_benchmark(sub, _command)

    width = max(len(n) for n in sub.choices)
    parser.description = DESCRIPTION.format(commands="\n".join(
        textwrap.fill(p.summary, 80, initial_indent=f"  {name:<{width}}   ",
                      subsequent_indent=" " * (width + 5)) for name, p in sub.choices.items()))
    return parser


def parse_args(argv=None):
    """Parse argv; sizes the user did not set get their normal or (--quick) small defaults.

    Mistakes that only show together (or on disk) end here too, as one-line usage errors.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    normal, quick = args.sizes
    for key, value in (quick if args.quick else normal).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    error = parser.commands[args.command].error
    cliargs.check_shared(args, error)
    if getattr(args, "lanczos_iter", None) and args.k > args.lanczos_iter:
        error(f"--k {args.k} eigenvalues need at least as many Lanczos iterations; "
              f"--lanczos-iter is {args.lanczos_iter}")
    args.given = cliargs.given(build_parser, argv) if getattr(args, "resume", None) else set()
    del args.sizes
    return args


def main(argv=None):
    """The command line with `argv` (default sys.argv[1:]); returns the exit status.

    0: done; 1: training diverged; 2: a usage error or a missing optional package, said in
    one line on stderr; 130: interrupted. Output cut short by a closed pipe (`| head`) ends
    quietly.
    """
    name = "tinygrad-opt"
    try:
        args = parse_args(argv)
        name = f"tinygrad-opt {args.command}"
        try:
            os.makedirs(args.out, exist_ok=True)
        except OSError as e:
            raise UsageError(f"--out {args.out}: cannot create the folder ({e})") from None
        with backend.np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            code = args.func(args)      # a NaN loss is reported once, as TrainingDiverged
        sys.stdout.flush()
        return code
    except TrainingDiverged as e:
        first_order = not OPTIMIZERS[getattr(args, "optimizer", "sgd")].needs_closure
        print(f"{name}: training diverged in epoch {e.epoch}, step {e.step}: the loss is "
              f"{e.loss}; lower --lr" + (" or clip the gradient norm with --clip MAX_NORM"
                                         if first_order else ""), file=sys.stderr)
        return 1
    except (UsageError, MissingDependency) as e:
        print(f"{name}: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{name}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:         # the reader went away (`| head`): stop without a traceback
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


if __name__ == "__main__":
    sys.exit(main())
