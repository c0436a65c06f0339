"""Command line: tinygrad-opt train | compare | landscape | curvature (or python -m tinygrad_opt).

Each subcommand runs with no flags on the embedded digits set in well under a minute and writes
its files into --out (default ./out). `--quick` shrinks every size for tests. Optional
dependencies (scikit-learn for digits, matplotlib for pictures, tqdm for a progress bar) are
checked before any work starts; a missing one ends the run with one line naming the extra.

This file holds the parser, the help and one thin `cmd_*` per subcommand; the work is done by
experiment.py (data, model, optimizer, schedule), optim/registry.py (optimizers by name),
testfunctions.py (2-D problems), plots.py (pictures) and train.py (fit, Progress). A new
subcommand is a `cmd_*` function and a block in build_parser.
"""
import argparse
import csv
import inspect
import math
import os
import shutil
import sys
import textwrap
import time

from . import experiment
from .experiment import format_table, num, pct, write_csv
from ._optional import MissingDependency, require
from .optim.registry import OPTIMIZERS, parse_optimizer_list, training_optimizers
from .testfunctions import PROBLEMS, problem_lr, run_path
from .train import Callback, Progress, TrainingDiverged
TRAIN_OPTIMIZERS = training_optimizers()


# ---------------------------------------------------------------- shared by the commands
def dataset(args):
    """load_dataset with the data flags of `args`."""
    return experiment.load_dataset(args.data, dtype=args.dtype, device=args.device,
                                   seed=args.seed, val_fraction=args.val_fraction,
                                   data_dir=args.data_dir, quick=args.quick)


def setup(args, optimizer, data=None, lr=None):
    """experiment.Setup for `optimizer` with the training flags of `args`."""
    options = {k: getattr(args, k) for k in experiment.Setup.OPTIONS}
    options["lr"] = lr or args.lr
    return experiment.Setup(optimizer, dataset(args) if data is None else data, **options)


def progress(args, label="", leave=True):
    """The Progress callback for --progress."""
    return Progress(args.progress, label, leave)


def report(args, filename, headers, rows, raw):
    """Print the table `rows` under `headers` and write `raw` as filename (CSV) into --out."""
    print()
    print(format_table(headers, rows))
    write_csv(os.path.join(args.out, filename), headers, raw)
    return os.path.join(args.out, filename)


# ---------------------------------------------------------------- train
def cmd_train(args):
    """Train an MLP classifier with one optimizer, print one line per epoch and a final
    table, and write train_history.csv into --out."""
    from . import serialization
    from .train import History, restore_state

    state = None
    if args.resume:
        state = serialization.load(args.resume)
        saved = state.get("config", {})
        for key, value in saved.items():       # the model, data and optimizer must match
            if key not in ("epochs", "out", "save", "resume", "progress", "quick", "command"):
                setattr(args, key, tuple(value) if key == "hidden" else value)
        args.save = args.save or args.resume
        if (args.schedule != "none" or args.warmup) and saved.get("epochs") != args.epochs:
            print(f"note: the lr schedule keeps the length of the saved run "
                  f"({saved.get('epochs')} epochs)")
    bar = progress(args)
    s = setup(args, args.optimizer)
    history, start = History(), 0
    if state is not None:
        start = restore_state(state["train"], s.model, s.optimizer, s.loader, s.scheduler,
                              history)
        print(f"resumed {args.resume} at epoch {start} of {args.epochs}")
    config = {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(args).items()
              if k not in ("func", "resume", "save")}
    callbacks = [bar]
    if args.save:
        callbacks.append(_SaveEachEpoch(args.save, config, s))
    n_params = sum(p.size for p in s.model.parameters())
    print(f"{args.optimizer} (lr {s.lr:g}) on {args.data}: MLP {s.model.sizes}, {n_params} "
          f"parameters, {s.train[0].shape[0]} train / {s.val[0].shape[0]} val samples, "
          f"batch {s.loader.batch_size}, {args.dtype}")
    t0 = time.perf_counter()
    history = s.fit(callbacks, start_epoch=start, history=history)
    elapsed = time.perf_counter() - t0
    headers = ["optimizer", "epochs", "train_loss", "val_loss", "val_acc", "best_val_acc",
               "time_s"]
    row = [args.optimizer, len(history), num(history.train_loss[-1]) if history.train_loss
           else "-", num(history.val_loss[-1]) if history.val_loss else "-",
           pct(history.val_acc[-1]) if history.val_acc else "-",
           pct(max(history.val_acc)) if history.val_acc else "-", f"{elapsed:.2f}"]
    print()
    print(format_table(headers, [row]))
    path = os.path.join(args.out, "train_history.csv")
    write_csv(path, ["epoch", "train_loss", "val_loss", "val_acc", "lr"],
              zip([e + 1 for e in history.epoch], history.train_loss, history.val_loss,
                  history.val_acc, history.lr))
    print(f"\nwrote {path}" + (f" and checkpoint {args.save}" if args.save else ""))
    return 0


class _SaveEachEpoch(Callback):
    """Write {'config', 'train': checkpoint_state(...)} after every epoch (atomic)."""

    def __init__(self, path, config, setup):
        self.path, self.config, self.setup = path, config, setup

    def on_epoch_end(self, run):
        from .serialization import save
        from .train import checkpoint_state
        s = self.setup
        state = checkpoint_state(s.model, s.optimizer, s.loader, run.epoch + 1, s.scheduler,
                                 run.history)
        save({"config": self.config, "train": state}, self.path)


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


# ---------------------------------------------------------------- argument types
def _number(convert, ok, what):
    """An argparse type: `convert` the text, then require ok(value), else say `what` was expected."""
    def parse(text):
        try:
            v = convert(text)
        except ValueError:
            v = None
        if v is None or not ok(v):
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return v
    return parse


_positive_int = _number(int, lambda v: v >= 1, "a positive integer")
_nonneg_int = _number(int, lambda v: v >= 0, "an integer >= 0")
_positive_float = _number(float, lambda v: v > 0 and math.isfinite(v), "a positive number")
_nonneg_float = _number(float, lambda v: v >= 0 and math.isfinite(v), "a number >= 0")
_fraction = _number(float, lambda v: 0 < v < 1, "a number in (0, 1)")


def _typed(parse):
    """An argparse type from `parse`, whose ValueError message becomes the usage error."""
    def typed(text):
        try:
            return parse(text)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None
    return typed


@_typed
def _hidden(text):
    """'64,32' -> (64, 32); 'none' -> () (a linear softmax classifier)."""
    if text.strip().lower() in ("", "none", "0"):
        return ()
    try:
        sizes = tuple(int(s) for s in text.split(","))
    except ValueError:
        raise ValueError(f"expected comma-separated layer widths such as 64,32, "
                         f"got {text!r}") from None
    if any(s < 1 for s in sizes):
        raise ValueError(f"layer widths must be positive, got {text!r}")
    return sizes


@_typed
def _functions(text):
    names = [s.strip() for s in text.split(",") if s.strip()]
    bad = [n for n in names if n not in PROBLEMS]
    if bad or not names:
        raise ValueError(f"unknown function(s) {', '.join(bad) or '(none)'}; "
                         f"choose from {', '.join(PROBLEMS)}")
    return names


_optimizer_list = _typed(parse_optimizer_list)


# ---------------------------------------------------------------- help
class _Formatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the line breaks of descriptions and epilogs; paragraphs are wrapped by _wrap."""

    def __init__(self, prog):
        super().__init__(prog, max_help_position=30, width=_terminal_width())


def _wrap(text):
    """Fill each paragraph of `text` to the help width."""
    width = _terminal_width() - 2
    return "\n\n".join(textwrap.fill(p, width) for p in text.strip().split("\n\n"))


def _terminal_width():
    """Columns for help text: the terminal's, between 60 and 100."""
    return max(60, min(100, shutil.get_terminal_size((100, 24)).columns))


DESCRIPTION = """\
Train and compare optimizers with tinygrad_opt, a small reverse-mode autodiff library
on NumPy/CuPy with exact Hessian-vector products.

{commands}

Every subcommand runs with no flags on the 8x8 digits set (1,797 images,
bundled with scikit-learn) in well under a minute and writes into --out.
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

exit status: 0 on success, 1 if training diverged, 2 on a usage error or a
missing optional package (install them with: pip install 'tinygrad_opt[examples]')."""


def _optimizer_help(names, heading="optimizers:"):
    width = max(len(n) for n in names)
    return heading + "\n" + "\n".join(
        f"  {n.ljust(width)}  lr {OPTIMIZERS[n].lr:<6g} {OPTIMIZERS[n].summary}" for n in names)


def _command(sub, func, summary, examples, listing="", sizes=({}, {})):
    """A subcommand parser: help from func's docstring (+ listing), `examples` as the epilog.

    sizes: (normal, quick) defaults for flags left at None (see parse_args).
    """
    name = func.__name__[len("cmd_"):]
    p = sub.add_parser(name, formatter_class=_Formatter,
                       description=_wrap(inspect.cleandoc(func.__doc__))
                       + ("\n\n" + listing if listing else ""),
                       epilog="examples:\n" + "\n".join(f"  tinygrad-opt {name} {e}".rstrip()
                                                        for e in examples))
    p.set_defaults(func=func, sizes=sizes)
    p.summary = summary                 # the line in `tinygrad-opt --help`
    return p


def _add_common(p, quick_what, seed=True):
    g = p.add_argument_group("output")
    g.add_argument("--out", metavar="DIR", default="out",
                   help="folder for pictures and tables (created if needed; default: %(default)s)")
    g.add_argument("--quick", action="store_true",
                   help=f"shrink everything ({quick_what}) for tests and smoke runs")
    if seed:
        g.add_argument("--seed", type=int, default=0,
                       help="seed for the split, the init and the batch order "
                            "(default: %(default)s)")


def _add_training(p, epochs, hidden, dtype, lr_help, batch_default="32; 512 for lbfgs/cg/newtoncg"):
    g = p.add_argument_group("data and model")
    g.add_argument("--data", choices=["digits", "spirals", "moons", "mnist"], default="digits",
                   help="data set (default: %(default)s); digits: 8x8 images, 10 classes, "
                        "20%% held out for validation; spirals: 3 arms in 2-D; moons: 2 "
                        "classes in 2-D; mnist: read from --data-dir, validated on its test split")
    g.add_argument("--data-dir", metavar="DIR",
                   help="folder with the MNIST files (IDX, optionally .gz, or mnist.npz)")
    g.add_argument("--val-fraction", type=_fraction, default=0.2, metavar="F",
                   help="share of the samples held out for validation (default: %(default)s)")
    g.add_argument("--hidden", type=_hidden, default=None, metavar="W1,W2,...",
                   help="hidden layer widths; 'none' for a linear softmax classifier "
                        f"(default: {','.join(map(str, hidden))})")
    g.add_argument("--activation", choices=["relu", "tanh", "sigmoid"], default="relu",
                   help="hidden activation (default: %(default)s)")
    g.add_argument("--init", choices=["default", "orthogonal", "xavier", "kaiming", "sparse"],
                   default="default",
                   help="weight init (default: %(default)s = PyTorch's Linear init; orthogonal, "
                        "xavier and sparse use the activation's gain; sparse: 15 nonzero "
                        "inputs per unit)")
    g.add_argument("--dtype", choices=["float32", "float64"], default=dtype,
                   help="parameter and data dtype (default: %(default)s)")
    g.add_argument("--device", choices=["cpu", "cuda"], default="cpu",
                   help="cuda needs CuPy and an NVIDIA GPU (default: %(default)s)")
    g = p.add_argument_group("training")
    g.add_argument("--epochs", type=_positive_int, default=None, metavar="N",
                   help=f"passes over the training set (default: {epochs})")
    g.add_argument("--batch-size", type=_positive_int, default=None, metavar="B",
                   help=f"minibatch size (default: {batch_default})")
    g.add_argument("--lr", type=_positive_float, default=None, help=lr_help)
    g.add_argument("--momentum", type=_nonneg_float, default=None, metavar="MU",
                   help="momentum coefficient for momentum, nesterov (default 0.9), sgd and "
                        "rmsprop (default 0)")
    g.add_argument("--weight-decay", type=_nonneg_float, default=0.0, metavar="WD",
                   help="L2 penalty (decoupled for adamw, whose default is 0.01; "
                        "first-order optimizers only; default: %(default)s)")
    g.add_argument("--schedule", choices=["none", "linear", "step", "exp", "cosine"],
                   default="none",
                   help="lr schedule over the run, stepped every minibatch: linear decay to "
                        "lr/100, step (x0.1 at each third), exp (to lr/100), cosine (to 0) "
                        "(default: %(default)s)")
    g.add_argument("--warmup", type=_nonneg_int, default=0, metavar="EPOCHS",
                   help="linear warm-up from lr/steps to lr over this many epochs, then the "
                        "schedule (default: %(default)s)")
    g.add_argument("--clip", type=_positive_float, default=None, metavar="MAX_NORM",
                   help="clip the total gradient norm to MAX_NORM (first-order optimizers)")


def _add_progress(p):
    p.add_argument("--progress", choices=["auto", "bar", "lines", "none"], default="auto",
                   help="auto: a tqdm bar on a terminal when tqdm is installed, else one line "
                        "per epoch (default: %(default)s)")


def build_parser():
    """The argparse parser of `tinygrad-opt` with its subcommands."""
    from . import __version__
    parser = argparse.ArgumentParser(prog="tinygrad-opt", epilog=EPILOG,
                                     formatter_class=_Formatter)
    parser.add_argument("--version", action="version", version=f"tinygrad_opt {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", help="see above")
    sub.required = True
    mlp = (dict(epochs=20, hidden=(64,)), dict(epochs=2, hidden=(16,)))

    p = _command(sub, cmd_train, "train an MLP with one optimizer; checkpoints with "
                 "--save/--resume",
                 ["", "--optimizer momentum --lr 0.1 --schedule step --clip 5",
                  "--optimizer lbfgs --epochs 10 --dtype float64",
                  "--hidden 128,64 --init orthogonal --save out/run.ckpt",
                  "--resume out/run.ckpt --epochs 40   # continue the same run to epoch 40"],
                 _optimizer_help(TRAIN_OPTIMIZERS), mlp)
    p.add_argument("--optimizer", choices=TRAIN_OPTIMIZERS, default="adam", metavar="NAME",
                   help="one of the optimizers listed above (default: %(default)s)")
    _add_training(p, 20, (64,), "float32", "learning rate (default: the optimizer's, above)")
    g = p.add_argument_group("checkpoints")
    g.add_argument("--save", metavar="PATH",
                   help="write a checkpoint to PATH after every epoch (atomic; resumable)")
    g.add_argument("--resume", metavar="PATH",
                   help="continue the run saved in PATH to --epochs; data, model and optimizer "
                        "settings come from the checkpoint")
    _add_progress(p)
    _add_common(p, "2 epochs, one 16-unit hidden layer")

    default_opts = "sgd,momentum,nesterov,adagrad,rmsprop,adam"
    p = _command(sub, cmd_compare, "train the same MLP from the same init with several "
                 "optimizers; a table and compare.png",
                 ["", "--optimizers sgd:0.3,adam:0.001,adam:0.01",
                  "--optimizers momentum,adam,lbfgs,newtoncg --dtype float64",
                  "--data spirals --hidden 64,64 --epochs 60 --target 0.9"],
                 _optimizer_help(TRAIN_OPTIMIZERS, "optimizers (NAME or NAME:LR):"), mlp)
    p.add_argument("--optimizers", type=_optimizer_list, metavar="NAME[:LR],...",
                   default=_optimizer_list(default_opts),
                   help=f"comma-separated, each with an optional lr (default: {default_opts})")
    p.add_argument("--target", type=_fraction, default=0.95, metavar="ACC",
                   help="validation accuracy for the epochs-to-target column (default: "
                        "%(default)s)")
    _add_training(p, 20, (64,), "float32",
                  "one learning rate for all optimizers (default: each optimizer's own, above)")
    _add_progress(p)
    _add_common(p, "2 epochs, one 16-unit hidden layer")

    default_land = "sgd,momentum,nesterov,adagrad,rmsprop,adam,newton"
    p = _command(sub, cmd_landscape, "optimizer paths on 2-D test functions over contour "
                 "lines; landscape.png",
                 ["", "--functions saddle --optimizers sgd,adam,newton --steps 300",
                  "--optimizers momentum:0.001,lbfgs,cg,newtoncg"],
                 "functions:\n" + "\n".join(f"  {n:<11} {q.title}\n  {'':<11} start {q.start}, "
                                            f"{q.steps} steps" for n, q in PROBLEMS.items())
                 + "\n\nEach function has a tuned lr per optimizer; NAME:LR overrides it.")
    p.add_argument("--functions", type=_functions, default=list(PROBLEMS), metavar="F,...",
                   help=f"which functions (default: {','.join(PROBLEMS)})")
    p.add_argument("--optimizers", type=_optimizer_list, metavar="NAME[:LR],...",
                   default=_optimizer_list(default_land),
                   help=f"any of {', '.join(OPTIMIZERS)} (default: {default_land})")
    p.add_argument("--steps", type=_positive_int, default=None,
                   help="optimizer steps per path (default: each function's own, above)")
    _add_common(p, "a fifth of the steps, a coarse contour grid", seed=False)

    p = _command(sub, cmd_curvature, "the top Hessian eigenvalues, lambda_min and g^T H g / "
                 "g^T g per epoch while training; a table and curvature.png",
                 ["", "--optimizer sgd --lr 0.5 --epochs 20   # watch lambda_max settle near 2/lr",
                  "--optimizer adam --k 5 --activation tanh"],
                 sizes=(dict(epochs=10, hidden=(32,), samples=512, lanczos_iter=60),
                        dict(epochs=2, hidden=(16,), samples=128, lanczos_iter=20)))
    p.add_argument("--optimizer", choices=TRAIN_OPTIMIZERS, default="sgd", metavar="NAME",
                   help=f"one of {', '.join(TRAIN_OPTIMIZERS)} (default: %(default)s)")
    p.add_argument("--k", type=_positive_int, default=3,
                   help="how many of the largest eigenvalues (default: %(default)s)")
    p.add_argument("--samples", type=_positive_int, default=None, metavar="N",
                   help="training samples in the fixed curvature batch (default: 512)")
    p.add_argument("--lanczos-iter", type=_positive_int, default=None, metavar="N",
                   help="Lanczos iterations (Hessian-vector products) per measurement "
                        "(default: 60)")
    _add_training(p, 10, (32,), "float64", "learning rate (default: the optimizer's)")
    _add_progress(p)
    _add_common(p, "2 epochs, 16 hidden units, 128 samples, 20 Lanczos iterations")

    width = max(len(n) for n in sub.choices)
    parser.description = DESCRIPTION.format(commands="\n".join(
        textwrap.fill(p.summary, 80, initial_indent=f"  {name:<{width}}   ",
                      subsequent_indent=" " * (width + 5)) for name, p in sub.choices.items()))
    return parser


def parse_args(argv=None):
    """Parse argv; sizes the user did not set get their normal or (--quick) small defaults."""
    parser = build_parser()
    args = parser.parse_args(argv)
    normal, quick = args.sizes
    for key, value in (quick if args.quick else normal).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if getattr(args, "warmup", 0) and args.warmup >= args.epochs:
        parser.error(f"--warmup {args.warmup} must be shorter than --epochs {args.epochs}")
    names = [args.optimizer] if hasattr(args, "optimizer") else [n for n, _ in args.optimizers]
    second = [n for n in names if OPTIMIZERS[n].needs_closure]
    if getattr(args, "weight_decay", 0) and second:
        parser.error(f"--weight-decay applies to first-order optimizers only, not {second[0]}")
    if getattr(args, "data", None) == "mnist" and not args.data_dir:
        parser.error("--data mnist needs --data-dir DIR (the folder with the MNIST files)")
    del args.sizes
    return args


def main(argv=None):
    """Entry point of `tinygrad-opt`; returns the exit status."""
    args = parse_args(argv)
    try:
        os.makedirs(args.out, exist_ok=True)
        return args.func(args)
    except TrainingDiverged as e:
        print(f"tinygrad-opt {args.command}: {e}", file=sys.stderr)
        return 1
    except MissingDependency as e:
        print(f"tinygrad-opt {args.command}: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"tinygrad-opt {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
