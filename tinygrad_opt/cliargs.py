"""Argument plumbing shared by the tinygrad-opt subcommands (cli.py defines the commands).

One-line usage errors, help formatting, validated argument types, and the groups of flags
that several subcommands share (output, data and model, training, progress).
"""
import argparse
import math
import os
import shutil
import textwrap

from .optim.registry import OPTIMIZERS, parse_optimizer_list, training_optimizers

TRAIN_OPTIMIZERS = training_optimizers()


class UsageError(Exception):
    """A mistake in the command line found after parsing: one line on stderr, exit status 2."""


# ---------------------------------------------------------------- argument types
def number(convert, ok, what):
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


positive_int = number(int, lambda v: v >= 1, "a positive integer")
nonneg_int = number(int, lambda v: v >= 0, "an integer >= 0")
positive_float = number(float, lambda v: v > 0 and math.isfinite(v), "a positive number")
nonneg_float = number(float, lambda v: v >= 0 and math.isfinite(v), "a number >= 0")
fraction = number(float, lambda v: 0 < v < 1, "a number in (0, 1)")


def typed(parse):
    """An argparse type from `parse`, whose ValueError message becomes the usage error."""
    def typed(text):
        try:
            return parse(text)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None
    return typed


def name_list(known, what, presets=()):
    """An argparse type: 'a,b' -> ['a', 'b'] (first-seen order, no repeats), every name in
    `known`; a single word from `presets` is returned as is."""
    @typed
    def parse(text):
        if text.strip() in presets:
            return text.strip()
        names = [s.strip() for s in text.split(",") if s.strip()]
        bad = [n for n in names if n not in known]
        if bad or not names:
            choose = f"a preset ({', '.join(presets)}) or names from" if presets else "choose from"
            raise ValueError(f"unknown {what} {', '.join(bad) or '(none)'}; "
                             f"{choose} {', '.join(known)}")
        return list(dict.fromkeys(names))
    return parse


@typed
def hidden_sizes(text):
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


optimizer_list = typed(parse_optimizer_list)
training_list = typed(lambda text: parse_optimizer_list(text, TRAIN_OPTIMIZERS))


# ---------------------------------------------------------------- help
class Parser(argparse.ArgumentParser):
    """argparse, with a usage error in one line: 'tinygrad-opt train: error: ... (see --help)'."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


class Formatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the line breaks of descriptions and epilogs; paragraphs are wrapped by wrap."""

    def __init__(self, prog):
        super().__init__(prog, max_help_position=30, width=terminal_width())


def wrap(text):
    """Fill each paragraph of `text` to the help width."""
    width = terminal_width() - 2
    return "\n\n".join(textwrap.fill(p, width) for p in text.strip().split("\n\n"))


def terminal_width():
    """Columns for help text: the terminal's, between 60 and 100."""
    return max(60, min(100, shutil.get_terminal_size((100, 24)).columns))


def optimizer_help(names, heading="optimizers:"):
    width = max(len(n) for n in names)
    return heading + "\n" + "\n".join(
        f"  {n.ljust(width)}  lr {OPTIMIZERS[n].lr:<6g} {OPTIMIZERS[n].summary}" for n in names)


def add_common(p, quick_what, seed=True):
    g = p.add_argument_group("output")
    g.add_argument("--out", metavar="DIR", default="out",
                   help="folder for pictures and tables (created if needed; default: %(default)s)")
    g.add_argument("--quick", action="store_true",
                   help=f"shrink everything ({quick_what}) for tests and smoke runs")
    if seed:
        g.add_argument("--seed", type=int, default=0,
                       help="seed for the split, the init and the batch order "
                            "(default: %(default)s)")


def add_training(p, epochs, hidden, dtype, lr_help, batch_default="32; 512 for lbfgs/cg/newtoncg"):
    g = p.add_argument_group("data and model")
    g.add_argument("--data", choices=["digits", "spirals", "moons", "mnist"], default="digits",
                   help="data set (default: %(default)s); digits: 8x8 images, 10 classes, "
                        "20%% held out for validation; spirals: 3 arms in 2-D; moons: 2 "
                        "classes in 2-D; mnist: read from --data-dir, validated on its test split")
    g.add_argument("--data-dir", metavar="DIR",
                   help="folder with the MNIST files (IDX, optionally .gz, or mnist.npz)")
    g.add_argument("--val-fraction", type=fraction, default=0.2, metavar="F",
                   help="share of the samples held out for validation (default: %(default)s)")
    g.add_argument("--hidden", type=hidden_sizes, default=None, metavar="W1,W2,...",
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
    g.add_argument("--epochs", type=positive_int, default=None, metavar="N",
                   help=f"passes over the training set (default: {epochs})")
    g.add_argument("--batch-size", type=positive_int, default=None, metavar="B",
                   help=f"minibatch size (default: {batch_default})")
    g.add_argument("--lr", type=positive_float, default=None, help=lr_help)
    g.add_argument("--momentum", type=nonneg_float, default=None, metavar="MU",
                   help="momentum coefficient for momentum, nesterov (default 0.9), sgd and "
                        "rmsprop (default 0)")
    g.add_argument("--weight-decay", type=nonneg_float, default=0.0, metavar="WD",
                   help="L2 penalty (decoupled for adamw, whose default is 0.01; "
                        "first-order optimizers only; default: %(default)s)")
    g.add_argument("--schedule", choices=["none", "linear", "step", "exp", "cosine"],
                   default="none",
                   help="lr schedule over the run, stepped every minibatch: linear decay to "
                        "lr/100, step (x0.1 at each third), exp (to lr/100), cosine (to 0) "
                        "(default: %(default)s)")
    g.add_argument("--warmup", type=nonneg_int, default=0, metavar="EPOCHS",
                   help="linear warm-up from lr/steps to lr over this many epochs, then the "
                        "schedule (default: %(default)s)")
    g.add_argument("--clip", type=positive_float, default=None, metavar="MAX_NORM",
                   help="clip the total gradient norm to MAX_NORM (first-order optimizers)")


def add_progress(p):
    p.add_argument("--progress", choices=["auto", "bar", "lines", "none"], default="auto",
                   help="auto: a tqdm bar on a terminal when tqdm is installed, else one line "
                        "per epoch (default: %(default)s)")


def given(build_parser, argv):
    """The option dests that argv sets explicitly: parsed again by a fresh build_parser() with
    every default suppressed."""
    parser = build_parser()
    for p in [parser, *parser.commands.values()]:
        for action in p._actions:
            action.default = argparse.SUPPRESS
    return set(vars(parser.parse_args(argv)))


# ---------------------------------------------------------------- checks after parsing
def check_shared(args, error):
    """Call error(message) for a mistake in the shared flags that only shows together or on
    disk: --out naming a file, --warmup too long, --weight-decay with a closure optimizer,
    --data mnist without --data-dir, a --data-dir, --save or --resume path of the wrong kind,
    --device cuda without CuPy or a GPU."""
    from . import backend
    if os.path.exists(args.out) and not os.path.isdir(args.out):
        error(f"--out {args.out} is a file; give a folder (created if needed)")
    if getattr(args, "warmup", 0) and args.warmup >= args.epochs:
        error(f"--warmup {args.warmup} must be shorter than --epochs {args.epochs}")
    names = [args.optimizer] if hasattr(args, "optimizer") else [n for n, _ in args.optimizers]
    second = [n for n in names if OPTIMIZERS[n].needs_closure]
    if getattr(args, "weight_decay", 0) and second:
        error(f"--weight-decay applies to first-order optimizers only, not {second[0]}")
    if getattr(args, "data", None) == "mnist" and not args.data_dir:
        error("--data mnist needs --data-dir DIR (the folder with the MNIST files)")
    if getattr(args, "data_dir", None) and not os.path.isdir(args.data_dir):
        error(f"--data-dir {args.data_dir} is not a folder")
    if getattr(args, "save", None) and os.path.isdir(args.save):
        error(f"--save {args.save} is a folder; give a file name such as {args.save}/run.ckpt")
    if getattr(args, "resume", None) and not os.path.isfile(args.resume):
        error(f"--resume {args.resume}: no such checkpoint file")
    if getattr(args, "device", "cpu") != "cpu":
        try:
            backend.get_xp(args.device)
        except (RuntimeError, ValueError) as e:
            error(f"--device {args.device}: {e}")


_OWN_FLAGS = ("epochs", "out", "save", "resume", "progress", "quick", "command")


def resume(args):
    """The saved training state of --resume. The run's data, model and optimizer settings
    replace the flags'; a flag given on the command line that disagrees is a UsageError."""
    from . import experiment
    from .serialization import CheckpointError
    try:
        config, state = experiment.load_run(args.resume)
    except (OSError, CheckpointError) as e:
        raise UsageError(f"--resume: {e}") from None
    clash = []
    for key, value in config.items():
        if key in _OWN_FLAGS:
            continue
        value = tuple(value) if isinstance(value, list) else value
        if key in args.given and getattr(args, key, value) != value:
            flag = "--" + key.replace("_", "-")
            shown = ",".join(map(str, value)) if isinstance(value, tuple) else value
            clash.append(f"no {flag}" if value is None else f"{flag} {shown}")
        setattr(args, key, value)
    if clash:
        raise UsageError(f"--resume: {args.resume} was trained with {', '.join(clash)}; drop "
                         "the flags that disagree (data, model and optimizer come from the "
                         "checkpoint) or start a new run")
    if state["epoch"] > args.epochs:
        raise UsageError(f"--resume: {args.resume} has already trained {state['epoch']} "
                         f"epochs; give --epochs {state['epoch']} or more")
    if (args.schedule != "none" or args.warmup) and config.get("epochs") != args.epochs:
        print(f"note: the lr schedule keeps the length of the saved run "
              f"({config.get('epochs')} epochs)")
    return state
