"""Command line: tinygrad-opt train | compare | landscape | curvature (or python -m tinygrad_opt).

Each subcommand runs with no flags on the embedded digits set in well under a minute and writes
its files into --out (default ./out). `--quick` shrinks every size for tests. Optional
dependencies (scikit-learn for digits, matplotlib for pictures, tqdm for a progress bar) are
checked before any work starts; a missing one ends the run with one line naming the extra.
"""
import argparse
import csv
import importlib
import importlib.util
import math
import os
import shutil
import sys
import textwrap
import time

from . import backend
from .train import Callback

np = backend.np                 # host NumPy: tables, contour grids, plotting

EXTRA = "pip install 'tinygrad_opt[examples]'"


class MissingDependency(Exception):
    """An optional package that a subcommand needs is not installed."""


def require(module, purpose):
    """Import `module` or raise MissingDependency naming the extra to install."""
    try:
        return importlib.import_module(module)
    except ImportError:
        package = {"sklearn": "scikit-learn"}.get(module, module)
        raise MissingDependency(f"{purpose} needs {package}, which is not installed; "
                                f"install the extra: {EXTRA}") from None


def new_figure(*args, **kwargs):
    """A matplotlib Figure drawn off-screen (no pyplot, no window, no global backend switch)."""
    require("matplotlib", "drawing pictures")
    from matplotlib.figure import Figure
    return Figure(*args, **kwargs)


# ---------------------------------------------------------------- optimizers
# name: (default lr, needs step(closure), what it is)
OPTIMIZERS = {
    "sgd": (0.2, False, "plain SGD: x <- x - lr g"),
    "momentum": (0.05, False, "SGD with heavy-ball momentum (--momentum, default 0.9)"),
    "nesterov": (0.05, False, "SGD with Nesterov momentum (--momentum, default 0.9)"),
    "adagrad": (0.1, False, "Adagrad: per-coordinate lr / sqrt(sum of g^2)"),
    "rmsprop": (3e-3, False, "RMSprop: lr / sqrt(moving average of g^2)"),
    "adam": (5e-3, False, "Adam: momentum and RMSprop with bias correction"),
    "adamw": (5e-3, False, "Adam with decoupled weight decay (--weight-decay, default 0.01)"),
    "lbfgs": (1.0, True, "L-BFGS with a strong Wolfe line search (20 iterations a step)"),
    "cg": (1.0, True, "nonlinear conjugate gradients, Polak-Ribiere+, strong Wolfe"),
    "newtoncg": (1.0, True, "Hessian-free Newton: (H + 0.01 I) d = -g by CG, Armijo steps"),
    "newton": (1.0, True, "Newton with the dense Hessian (tiny models only)"),
}
TRAIN_OPTIMIZERS = [n for n in OPTIMIZERS if n != "newton"]


def make_optimizer(name, params, lr=None, momentum=None, weight_decay=0.0, **extra):
    """The optimizer `name` of OPTIMIZERS on `params`; lr=None takes the listed default."""
    from . import optim
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; choose from {', '.join(OPTIMIZERS)}")
    lr = OPTIMIZERS[name][0] if lr is None else lr
    wd = weight_decay or 0.0
    if name == "sgd":
        return optim.SGD(params, lr, momentum=momentum or 0.0, weight_decay=wd)
    if name in ("momentum", "nesterov"):
        mu = 0.9 if momentum is None else momentum
        return optim.SGD(params, lr, momentum=mu, nesterov=name == "nesterov", weight_decay=wd)
    if name == "adagrad":
        return optim.Adagrad(params, lr, weight_decay=wd)
    if name == "rmsprop":
        return optim.RMSprop(params, lr, momentum=momentum or 0.0, weight_decay=wd)
    if name == "adam":
        return optim.Adam(params, lr, weight_decay=wd)
    if name == "adamw":
        return optim.AdamW(params, lr, weight_decay=weight_decay if weight_decay else 1e-2)
    if wd:
        raise ValueError(f"--weight-decay is not supported with {name}")
    if name == "lbfgs":
        return optim.LBFGS(params, lr, **{"max_iter": 20, **extra})
    if name == "cg":
        return optim.ConjugateGradient(params, lr, **extra)
    if name == "newtoncg":
        return optim.NewtonCG(params, lr, **{"damping": 1e-2, "cg_max_iter": 50,
                                             "line_search": "armijo", **extra})
    # the landscape shows the textbook step, which jumps onto saddles: no adaptive damping
    return optim.Newton(params, lr, **{"adaptive": False, **extra})


def parse_optimizer_list(text):
    """'sgd,adam:0.01' -> [('sgd', None), ('adam', 0.01)]."""
    out = []
    for item in filter(None, (s.strip() for s in text.split(","))):
        name, _, lr = item.partition(":")
        if name not in OPTIMIZERS:
            raise argparse.ArgumentTypeError(
                f"unknown optimizer {name!r}; choose from {', '.join(OPTIMIZERS)}")
        try:
            lr = float(lr) if lr else None
        except ValueError:
            raise argparse.ArgumentTypeError(f"bad learning rate in {item!r}") from None
        if lr is not None and not lr > 0:
            raise argparse.ArgumentTypeError(f"learning rate must be positive in {item!r}")
        out.append((name, lr))
    if not out:
        raise argparse.ArgumentTypeError("give at least one optimizer")
    return out


# ---------------------------------------------------------------- data, model, schedule
def load_dataset(args):
    """((X_train, y_train), (X_val, y_val), n_classes) for --data; quick mode subsamples."""
    from . import data
    kind, dtype, device = args.data, np.dtype(args.dtype), args.device
    if kind == "digits":
        require("sklearn", "the digits data set")
        X, y = data.load_digits(dtype=dtype, device=device)
    elif kind == "spirals":
        X, y = data.spirals(200, n_classes=3, seed=args.seed, dtype=dtype, device=device)
    elif kind == "moons":
        X, y = data.two_moons(600, noise=0.15, seed=args.seed, dtype=dtype, device=device)
    else:
        if not args.data_dir:
            raise ValueError("--data mnist needs --data-dir, a folder holding the MNIST files "
                             "(train-images-idx3-ubyte[.gz] ... or mnist.npz)")
        train = data.load_mnist(args.data_dir, split="train", dtype=dtype, device=device)
        val = data.load_mnist(args.data_dir, split="test", dtype=dtype, device=device)
        if args.quick:
            train, val = (train[0][:2000], train[1][:2000]), (val[0][:500], val[1][:500])
        return train, val, 10
    train, val = data.train_val_split(X, y, val_fraction=args.val_fraction, seed=args.seed,
                                      stratify=True)
    return train, val, int(backend.to_numpy(y).max()) + 1


def weight_init(name, activation):
    """The weight initialiser for --init (None keeps Linear's default)."""
    from .nn import init
    gain = init.calculate_gain(activation)
    if name == "default":
        return None
    if name == "orthogonal":
        return lambda w: init.orthogonal_(w, gain=gain)
    if name == "xavier":
        return lambda w: init.xavier_uniform_(w, gain=gain)
    if name == "kaiming":
        return lambda w: init.kaiming_uniform_(w, nonlinearity=activation)

    def sparse(w, k=15):
        k = min(k, w.shape[1])
        return init.sparse_(w, k, std=gain / math.sqrt(k))     # keeps each unit's input variance
    return sparse


def build_model(args, n_in, n_out):
    """MLP [n_in, *hidden, n_out] with --activation and --init, seeded by --seed."""
    from . import nn
    backend.manual_seed(args.seed)
    return nn.MLP([n_in, *args.hidden, n_out], activation=args.activation,
                  init=weight_init(args.init, args.activation), dtype=np.dtype(args.dtype),
                  device=args.device)


def build_scheduler(kind, optimizer, total_steps, warmup_steps=0):
    """An lr schedule stepped once per optimizer step (None for 'none' without warm-up)."""
    from .optim import lr_scheduler as S
    decay_steps = max(1, total_steps - warmup_steps)
    base = optimizer.param_groups[0]["lr"]
    if kind == "none":
        after = None
    elif kind == "linear":
        after = S.LinearDecay(optimizer, decay_steps, final_lr=0.01 * base)
    elif kind == "step":
        after = S.StepLR(optimizer, step_size=max(1, decay_steps // 3), gamma=0.1)
    elif kind == "exp":
        after = S.ExponentialLR(optimizer, gamma=0.01 ** (1.0 / decay_steps))
    else:
        after = S.CosineAnnealingLR(optimizer, T_max=decay_steps)
    if warmup_steps > 0:
        for group in optimizer.param_groups:        # warm-up counts from the base lr again
            group["lr"] = group["initial_lr"]
        return S.LinearWarmup(optimizer, warmup_steps, after=after)
    return after


class Setup:
    """Everything one training run needs, built from the parsed arguments."""

    def __init__(self, args, optimizer, lr=None, data=None):
        from .data import DataLoader
        self.train, self.val, n_classes = data if data is not None else load_dataset(args)
        X, y = self.train
        self.model = build_model(args, X.shape[1], n_classes)
        self.name = optimizer
        self.optimizer = make_optimizer(optimizer, self.model.parameters(), lr=lr or args.lr,
                                        momentum=args.momentum, weight_decay=args.weight_decay)
        self.lr = self.optimizer.param_groups[0]["lr"]
        batch = args.batch_size
        if batch is None:       # line-search and Newton methods want large, steady batches
            batch = 512 if OPTIMIZERS[optimizer][1] else 32
        self.loader = DataLoader(X, y, batch_size=min(batch, X.shape[0]), seed=args.seed)
        steps = args.epochs * len(self.loader)
        self.scheduler = build_scheduler(args.schedule, self.optimizer, steps,
                                         args.warmup * len(self.loader))
        self.clip = args.clip if not OPTIMIZERS[optimizer][1] else None


# ---------------------------------------------------------------- progress and tables
class Progress(Callback):
    """fit() callback: a tqdm bar per epoch, or one line per epoch, or nothing."""

    def __init__(self, mode, label=""):
        self.mode, self.label, self.bar = mode, label, None
        self.tqdm = require("tqdm", "--progress bar").tqdm if mode == "bar" else None

    def on_epoch_begin(self, run):
        if self.tqdm:
            self.bar = self.tqdm(total=len(run.loader), file=sys.stdout, leave=False,
                                 desc=f"{self.label}epoch {run.epoch + 1}/{run.epochs}")

    def on_step_end(self, info):
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(loss=f"{info.smoothed_loss:.4f}", refresh=False)

    def on_epoch_end(self, run):
        if self.bar is not None:
            self.bar.close()
        if self.mode in ("bar", "lines"):
            h = run.history
            acc = h.val_acc[-1] if h.val_acc else None
            print(f"{self.label}epoch {h.epoch[-1] + 1:>3}/{run.epochs}  "
                  f"train_loss {h.train_loss[-1]:.4f}  "
                  + (f"val_acc {100 * acc:.2f}%  " if acc is not None else "")
                  + f"lr {h.lr[-1]:.3g}  {h.epoch_time[-1]:.2f}s", flush=True)


def progress_mode(choice):
    if choice != "auto":
        return choice
    try:
        has_tqdm = importlib.util.find_spec("tqdm") is not None
    except (ImportError, ValueError):
        has_tqdm = False
    return "bar" if has_tqdm and sys.stdout.isatty() else "lines"


def format_table(headers, rows):
    """Columns padded to their widest cell, a dashed rule under the header."""
    cells = [[str(c) for c in headers]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def write_csv(path, headers, rows):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(headers)
        w.writerows(rows)


def pct(x):
    return "-" if x is None or not math.isfinite(x) else f"{100 * x:.2f}%"


def num(x, fmt=".4f"):
    return "-" if x is None or not math.isfinite(x) else format(x, fmt)


# ---------------------------------------------------------------- train
def cmd_train(args):
    """Train one MLP with one optimizer; print per-epoch lines and a final table."""
    from . import serialization
    from .nn import functional as F
    from .train import History, TrainingDiverged, fit, restore_state

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
    progress = Progress(progress_mode(args.progress))
    s = Setup(args, args.optimizer)
    history, start = History(), 0
    if state is not None:
        start = restore_state(state["train"], s.model, s.optimizer, s.loader, s.scheduler,
                              history)
        print(f"resumed {args.resume} at epoch {start} of {args.epochs}")
    os.makedirs(args.out, exist_ok=True)
    config = {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(args).items()
              if k not in ("func", "resume", "save")}
    callbacks = [progress]
    if args.save:
        callbacks.append(_SaveEachEpoch(args.save, config, s))
    n_params = sum(p.size for p in s.model.parameters())
    print(f"{args.optimizer} (lr {s.lr:g}) on {args.data}: MLP {s.model.sizes}, {n_params} "
          f"parameters, {s.train[0].shape[0]} train / {s.val[0].shape[0]} val samples, "
          f"batch {s.loader.batch_size}, {args.dtype}")
    t0 = time.perf_counter()
    try:
        history = fit(s.model, s.optimizer, s.loader, F.cross_entropy, args.epochs,
                      val=s.val, scheduler=s.scheduler, scheduler_interval="step", clip=s.clip,
                      callbacks=callbacks, progress=False, start_epoch=start, history=history)
    except TrainingDiverged as e:
        print(f"tinygrad-opt train: {e}", file=sys.stderr)
        return 1
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
def epochs_to(val_acc, target):
    """The first epoch (1-based) whose validation accuracy reaches target, or None."""
    for i, a in enumerate(val_acc):
        if a is not None and a >= target:
            return i + 1
    return None


def cmd_compare(args):
    """Train the same model from the same init with each optimizer; table and compare.png."""
    from .nn import functional as F
    from .train import TrainingDiverged, fit
    require("matplotlib", "compare.png")
    mode = progress_mode(args.progress)
    if mode == "bar":
        require("tqdm", "--progress bar")
    dataset = load_dataset(args)
    os.makedirs(args.out, exist_ok=True)
    results = []
    for i, (name, lr) in enumerate(args.optimizers):
        s = Setup(args, name, lr=lr, data=dataset)
        label = f"[{i + 1}/{len(args.optimizers)}] {name}: "
        t0 = time.perf_counter()
        try:
            h = fit(s.model, s.optimizer, s.loader, F.cross_entropy, args.epochs, val=s.val,
                    scheduler=s.scheduler, scheduler_interval="step", clip=s.clip,
                    callbacks=[Progress("bar" if mode == "bar" else "none", label)],
                    progress=False)
            diverged = False
        except TrainingDiverged:
            h, diverged = None, True
        elapsed = time.perf_counter() - t0
        results.append((name, s.lr, h, elapsed, diverged))
        if mode != "none":
            best = "diverged" if diverged else f"best val_acc {pct(max(h.val_acc))}"
            print(f"{label}{best}, {elapsed:.1f}s", flush=True)

    target = f"epochs_to_{100 * args.target:g}%"
    headers = ["optimizer", "lr", "final_train_loss", "best_val_acc", target, "time_s"]
    rows, raw = [], []
    for name, lr, h, elapsed, diverged in results:
        if diverged:
            rows.append([name, f"{lr:g}", "diverged", "-", "-", f"{elapsed:.2f}"])
            raw.append([name, lr, "nan", "nan", "", f"{elapsed:.3f}"])
            continue
        reach = epochs_to(h.val_acc, args.target)
        rows.append([name, f"{lr:g}", num(h.train_loss[-1]), pct(max(h.val_acc)),
                     "-" if reach is None else reach, f"{elapsed:.2f}"])
        raw.append([name, lr, h.train_loss[-1], max(h.val_acc), reach or "", f"{elapsed:.3f}"])
    print()
    print(format_table(headers, rows))
    write_csv(os.path.join(args.out, "compare.csv"), headers, raw)
    png = os.path.join(args.out, "compare.png")
    plot_compare(results, args, png)
    print(f"\nwrote {png} and {os.path.join(args.out, 'compare.csv')}")
    return 0


def plot_compare(results, args, path):
    """Training loss (log scale) and validation accuracy per epoch, one colour per optimizer."""
    fig = new_figure(figsize=(11, 4.2), layout="constrained")
    ax_loss, ax_acc = fig.subplots(1, 2)
    colours = _colours(len(results))
    for (name, lr, h, _, diverged), c in zip(results, colours):
        if diverged:
            continue
        epochs = [e + 1 for e in h.epoch]
        ax_loss.plot(epochs, h.train_loss, color=c, lw=1.8, label=f"{name} (lr {lr:g})")
        ax_acc.plot(epochs, [100 * a for a in h.val_acc], color=c, lw=1.8, label=name)
    ax_loss.set_yscale("log")
    ax_loss.set(xlabel="epoch", ylabel="training loss (smoothed, log scale)",
                title="Training loss")
    from matplotlib.ticker import MaxNLocator
    for ax in (ax_loss, ax_acc):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax_acc.axhline(100 * args.target, color="0.5", ls="--", lw=1)
    ax_acc.set(xlabel="epoch", ylabel="validation accuracy (%)", title="Validation accuracy")
    lo = min([100 * min(h.val_acc) for _, _, h, _, d in results if not d] + [100 * args.target])
    ax_acc.set_ylim(max(0.0, min(lo, 100 * args.target - 5) - 1), 100.5)
    for ax in (ax_loss, ax_acc):
        ax.grid(True, which="major", alpha=0.3)
    ax_loss.legend(fontsize=9)
    fig.suptitle(f"{len(results)} optimizers from the same init on the same {args.data} "
                 f"batches: MLP {[*args.hidden]} hidden, {args.epochs} epochs")
    fig.savefig(path, dpi=110)


def _colours(n):
    """n distinct colours (tab10, then tab20)."""
    from matplotlib import colormaps
    cmap = colormaps["tab10" if n <= 10 else "tab20"]
    return [cmap(i) for i in range(n)]


# ---------------------------------------------------------------- landscape
def _exp(a):
    return a.exp() if hasattr(a, "exp") else np.exp(a)


class Problem:
    """A 2-D test function, written with operators so it runs on Tensors and NumPy grids."""

    def __init__(self, name, title, tex, f, start, xlim, ylim, minima, saddles, lrs, steps,
                 log_levels=False):
        self.name, self.title, self.tex, self.f = name, title, tex, f
        self.start, self.xlim, self.ylim = start, xlim, ylim
        self.minima, self.saddles, self.lrs, self.steps = minima, saddles, lrs, steps
        self.log_levels = log_levels


def _beale(x, y):
    return ((1.5 - x + x * y) ** 2 + (2.25 - x + x * y * y) ** 2
            + (2.625 - x + x * y * y * y) ** 2)


PROBLEMS = {p.name: p for p in [
    Problem("quadratic", "ill-conditioned quadratic x^2/2 + 10 y^2 (condition number 20)",
            r"quadratic $x^2/2 + 10y^2$ ($\kappa = 20$)",
            lambda x, y: 0.5 * x * x + 10.0 * y * y, (-4.5, 1.0), (-5, 5), (-2, 2), [(0, 0)], [],
            dict(sgd=0.09, momentum=0.02, nesterov=0.02, adagrad=1.0, rmsprop=0.05,
                 adam=0.25, adamw=0.25), 100),
    Problem("rosenbrock", "Rosenbrock (1 - x)^2 + 100 (y - x^2)^2, a curved narrow valley",
            r"Rosenbrock $(1-x)^2 + 100(y-x^2)^2$",
            lambda x, y: (1 - x) ** 2 + 100.0 * (y - x * x) ** 2, (-1.5, 2.0),
            (-2, 2), (-1, 3), [(1, 1)], [],
            dict(sgd=1e-3, momentum=2e-4, nesterov=2e-4, adagrad=0.2, rmsprop=0.01,
                 adam=0.1, adamw=0.1), 1500, log_levels=True),
    Problem("saddle", "saddle x^2 - y^2, started almost on the ridge", r"saddle $x^2 - y^2$",
            lambda x, y: x * x - y * y, (-1.5, 1e-3), (-2, 2), (-2, 2), [], [(0, 0)],
            dict(sgd=0.05, momentum=0.01, nesterov=0.01, adagrad=0.5, rmsprop=0.02,
                 adam=0.05, adamw=0.05), 150),
    Problem("beale", "Beale's function, minimum (3, 0.5), saddle (0, 1)", "Beale's function",
            _beale, (1.0, 1.4), (-0.5, 4), (-1, 2), [(3, 0.5)], [(0, 1)],
            dict(sgd=1e-3, momentum=2e-4, nesterov=2e-4, adagrad=0.5, rmsprop=0.01,
                 adam=0.1, adamw=0.1), 500, log_levels=True),
    Problem("plateau", "plateau 1 - exp(-(x^2 + 4 y^2)/2), tiny gradients far out",
            r"plateau $1 - e^{-(x^2 + 4y^2)/2}$",
            lambda x, y: 1.0 - _exp(-(x * x + 4.0 * y * y) / 2.0), (3.2, 1.2),
            (-4, 4), (-2, 2), [(0, 0)], [],
            dict(sgd=0.5, momentum=0.1, nesterov=0.1, adagrad=0.5, rmsprop=0.01,
                 adam=0.1, adamw=0.1), 200),
]}


def run_path(problem, name, steps, lr=None):
    """The iterates of optimizer `name` on `problem` from its start, as an (n, 2) array.

    Stops early when the iterate leaves a wide box around the plot or stops being finite.
    Line-search methods record every iteration (L-BFGS runs one iteration per step).
    """
    from .tensor import Tensor
    p = Tensor(np.array(problem.start, dtype=np.float64), requires_grad=True)
    extra = {"max_iter": 1} if name == "lbfgs" else {}
    opt = make_optimizer(name, [p], lr=lr or problem.lrs.get(name), **extra)
    closure_mode = OPTIMIZERS[name][1]

    def closure():
        return problem.f(p[0], p[1])

    path = [p.numpy().copy()]
    span = max(problem.xlim[1] - problem.xlim[0], problem.ylim[1] - problem.ylim[0])
    for _ in range(steps):
        try:
            if closure_mode:
                opt.step(closure)
            else:
                opt.zero_grad()
                closure().backward()
                opt.step()
        except (ValueError, ArithmeticError, np.linalg.LinAlgError):
            break                   # a singular Hessian or a failed line search ends the path
        x = p.numpy().copy()
        path.append(x)
        if not np.all(np.isfinite(x)) or np.abs(x).max() > 3 * span:
            break
        if np.abs(path[-1] - path[-2]).max() < 1e-10 and closure_mode:
            break                   # converged: later steps would not move
    return np.array(path)


def cmd_landscape(args):
    """Optimizer paths on 2-D test functions over their contour lines; landscape.png."""
    require("matplotlib", "landscape.png")
    os.makedirs(args.out, exist_ok=True)
    names = [n for n, _ in args.optimizers]
    lrs = dict(args.optimizers)
    rows = []
    paths = {}
    for fname in args.functions:
        problem = PROBLEMS[fname]
        for name in names:
            steps = args.steps or (max(20, problem.steps // 5) if args.quick else problem.steps)
            path = run_path(problem, name, steps, lrs[name])
            paths[fname, name] = path
            end = path[-1]
            value = float(problem.f(end[0], end[1])) if np.all(np.isfinite(end)) else math.nan
            lr = lrs[name] or problem.lrs.get(name) or OPTIMIZERS[name][0]
            rows.append([fname, name, f"{lr:g}", len(path) - 1,
                         f"({end[0]:.3g}, {end[1]:.3g})", num(value, ".3g")])
    print(format_table(["function", "optimizer", "lr", "steps", "final_point", "final_value"],
                       rows))
    png = os.path.join(args.out, "landscape.png")
    plot_landscape(args.functions, names, paths, png, 60 if args.quick else 300)
    print(f"\nwrote {png}")
    return 0


def plot_landscape(functions, names, paths, path, resolution):
    """One panel per function (contours, minima, start, paths) and one panel for the legend."""
    n = len(functions) + 1
    cols = min(3, n)
    rows = -(-n // cols)
    fig = new_figure(figsize=(5.2 * cols, 4.3 * rows), layout="constrained")
    axes = np.atleast_1d(fig.subplots(rows, cols)).ravel()
    colours = dict(zip(names, _colours(len(names))))
    for ax, fname in zip(axes, functions):
        p = PROBLEMS[fname]
        xs = np.linspace(*p.xlim, resolution)
        ys = np.linspace(*p.ylim, resolution)
        X, Y = np.meshgrid(xs, ys)
        Z = p.f(X, Y)
        if p.log_levels:
            lo = max(Z.min(), 1e-3)
            levels = np.logspace(np.log10(lo), np.log10(Z.max()), 20)
        else:
            levels = np.linspace(Z.min(), Z.max(), 22)
        ax.contour(X, Y, Z, levels=levels, colors="0.6", linewidths=0.6, linestyles="solid")
        for name in names:
            xy = paths[fname, name]
            ax.plot(xy[:, 0], xy[:, 1], "-", color=colours[name], lw=1.6, alpha=0.9)
            ax.plot(xy[-1, 0], xy[-1, 1], "o", color=colours[name], ms=4)
        ax.plot(*p.start, "k^", ms=8)
        for m in p.minima:
            ax.plot(*m, "*", color="gold", mec="k", ms=14)
        for m in p.saddles:
            ax.plot(*m, "X", color="w", mec="k", ms=10)
        ax.set(xlim=p.xlim, ylim=p.ylim, title=p.tex)
    legend_ax = axes[len(functions)]
    legend_ax.axis("off")
    handles = [legend_ax.plot([], [], "-", color=colours[n], lw=2.5, label=n)[0] for n in names]
    handles.append(legend_ax.plot([], [], "k^", ms=8, label="start")[0])
    handles.append(legend_ax.plot([], [], "*", color="gold", mec="k", ms=14, label="minimum")[0])
    handles.append(legend_ax.plot([], [], "X", color="w", mec="k", ms=10, label="saddle point")[0])
    legend_ax.legend(handles=handles, loc="center", fontsize=12, frameon=False,
                     title="optimizer", title_fontsize=12)
    legend_ax.text(0.5, 0.0, "same start for all; lr tuned per function and optimizer",
                   ha="center", va="bottom", fontsize=9, color="0.3",
                   transform=legend_ax.transAxes)
    for ax in axes[len(functions) + 1:]:
        ax.axis("off")
    fig.savefig(path, dpi=80)


# ---------------------------------------------------------------- curvature
def cmd_curvature(args):
    """Train with one optimizer and measure the Hessian on a fixed batch at every epoch."""
    from .curvature import CurvatureMonitor
    from .nn import functional as F
    from .tensor import Tensor
    from .train import TrainingDiverged, fit
    require("matplotlib", "curvature.png")
    os.makedirs(args.out, exist_ok=True)
    s = Setup(args, args.optimizer)
    X, y = s.train
    n = min(args.samples, X.shape[0])
    xb, yb = Tensor._wrap(X[:n]), Tensor._wrap(y[:n])
    monitor = CurvatureMonitor(lambda: F.cross_entropy(s.model(xb), yb), s.model.parameters(),
                               k=args.k, n_probes=0, max_iter=args.lanczos_iter, seed=args.seed,
                               warn=False)

    class Measure(Callback):
        def on_train_begin(self, run):
            monitor.record(0, lr=s.optimizer.param_groups[0]["lr"])

        def on_epoch_end(self, run):
            monitor.record(run.epoch + 1, lr=s.optimizer.param_groups[0]["lr"])

    print(f"{args.optimizer} (lr {s.lr:g}) on {args.data}: MLP {s.model.sizes}; Hessian of the "
          f"loss on {n} fixed training samples, by Lanczos on Hessian-vector products")
    try:
        h = fit(s.model, s.optimizer, s.loader, F.cross_entropy, args.epochs, val=s.val,
                scheduler=s.scheduler, scheduler_interval="step", clip=s.clip,
                callbacks=[Measure(), Progress(progress_mode(args.progress))], progress=False)
    except TrainingDiverged as e:
        print(f"tinygrad-opt curvature: {e}", file=sys.stderr)
        return 1
    acc = [None] + list(h.val_acc)
    headers = ["epoch", "loss", "val_acc", "top_eigenvalues", "lambda_min", "condition",
               "lmax/|lmin|", "gHg/gg", "lr*lambda_max"]
    rows, raw = [], []
    for r, a in zip(monitor.history, acc):
        top = ", ".join(f"{t:.3g}" for t in r.top_eigenvalues)
        rows.append([r.step, f"{r.loss:.4f}", pct(a), top, f"{r.lambda_min:.3g}",
                     f"{r.condition_number:.3g}", f"{_spread(r):.3g}", f"{r.grad_curvature:.3g}",
                     f"{r.lr_sharpness:.3g}"])
        raw.append([r.step, r.loss, "" if a is None else a, " ".join(map(str, r.top_eigenvalues)),
                    r.lambda_min, r.condition_number, _spread(r), r.grad_curvature,
                    r.lr_sharpness])
    print()
    print(format_table(headers, rows))
    print("\ncondition: lambda_max / lambda_min, inf while the Hessian is indefinite (lambda_min "
          "< 0);\nlmax/|lmin|: the spread of the spectrum either way; gradient descent is stable "
          "while lr*lambda_max < 2.")
    write_csv(os.path.join(args.out, "curvature.csv"), headers, raw)
    png = os.path.join(args.out, "curvature.png")
    plot_curvature(monitor.history, args, png)
    print(f"\nwrote {png} and {os.path.join(args.out, 'curvature.csv')}")
    return 0


def _spread(r):
    """lambda_max / |lambda_min|: the condition number when positive definite."""
    return r.lambda_max / abs(r.lambda_min) if r.lambda_min != 0 else math.inf


def plot_curvature(records, args, path):
    """Top eigenvalues with 2/lr and g^T H g / g^T g; lambda_min; the spread, per epoch."""
    from matplotlib.ticker import MaxNLocator
    fig = new_figure(figsize=(13, 4), layout="constrained")
    ax_top, ax_min, ax_cond = fig.subplots(1, 3)
    ep = [r.step for r in records]
    tops = np.array([r.top_eigenvalues for r in records])
    colours = _colours(tops.shape[1] + 1)
    for i in range(tops.shape[1]):
        ax_top.plot(ep, tops[:, i], "o-", ms=3, color=colours[i], label=rf"$\lambda_{i + 1}$")
    ax_top.plot(ep, [r.grad_curvature for r in records], "s--", ms=3, color=colours[-1],
                label=r"$g^\top H g \,/\, g^\top g$")
    ax_top.plot(ep, [2.0 / r.lr for r in records], ":", color="k",
                label=r"$2/\mathrm{lr}$ (stability edge)")
    ax_top.set_yscale("log")
    ax_top.set(xlabel="epoch", ylabel="curvature", title="Largest Hessian eigenvalues")
    ax_top.legend(fontsize=8)
    ax_min.plot(ep, [r.lambda_min for r in records], "o-", ms=3, color="tab:red")
    ax_min.axhline(0.0, color="0.5", lw=1)
    ax_min.set(xlabel="epoch", ylabel=r"$\lambda_{\min}$",
               title=r"Smallest eigenvalue ($< 0$: indefinite)")
    ax_cond.plot(ep, [_spread(r) for r in records], "o-", ms=3, color="tab:purple",
                 label=r"$\lambda_{\max} / |\lambda_{\min}|$")
    pd = [(e, r.condition_number) for e, r in zip(ep, records) if r.positive_definite]
    if pd:
        ax_cond.plot(*zip(*pd), "D", color="k", ms=5, label=r"condition number (PD)")
    ax_cond.set_yscale("log")
    ax_cond.set(xlabel="epoch", ylabel="ratio", title="Spread of the spectrum")
    ax_cond.legend(fontsize=8)
    for ax in (ax_top, ax_min, ax_cond):
        ax.grid(True, alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.suptitle(f"Hessian of the loss on {args.samples} {args.data} samples while training "
                 f"an MLP {list(args.hidden)} with {args.optimizer} (lr {records[0].lr:g})")
    fig.savefig(path, dpi=110)


# ---------------------------------------------------------------- argument parsing
def _number(convert, ok, what):
    """An argparse type: `convert` the text, then require ok(value), else say `what` was expected."""
    def parse(text):
        try:
            v = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if not ok(v):
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return v
    return parse


_positive_int = _number(int, lambda v: v >= 1, "a positive integer")
_nonneg_int = _number(int, lambda v: v >= 0, "an integer >= 0")
_positive_float = _number(float, lambda v: v > 0 and math.isfinite(v), "a positive number")
_nonneg_float = _number(float, lambda v: v >= 0 and math.isfinite(v), "a number >= 0")


def _fraction(text):
    v = _positive_float(text)
    if v >= 1:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1), got {text!r}")
    return v


def _hidden(text):
    """'64,32' -> (64, 32); 'none' -> () (a linear softmax classifier)."""
    if text.strip().lower() in ("", "none", "0"):
        return ()
    try:
        sizes = tuple(int(s) for s in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated layer widths such as 64,32, got {text!r}") from None
    if any(s < 1 for s in sizes):
        raise argparse.ArgumentTypeError(f"layer widths must be positive, got {text!r}")
    return sizes


def _functions(text):
    names = [s.strip() for s in text.split(",") if s.strip()]
    bad = [n for n in names if n not in PROBLEMS]
    if bad or not names:
        raise argparse.ArgumentTypeError(
            f"unknown function(s) {', '.join(bad) or '(none)'}; choose from {', '.join(PROBLEMS)}")
    return names


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the line breaks of descriptions and epilogs; paragraphs are wrapped by _wrap."""

    def __init__(self, prog):
        super().__init__(prog, max_help_position=30, width=_terminal_width())


def _wrap(text):
    """Fill each paragraph of `text` to the help width; a trailing heading line stays."""
    width = _terminal_width() - 2
    paras = text.rstrip("\n").split("\n\n")
    tail = "\n" if text.endswith("\n") else ""
    return "\n\n".join(textwrap.fill(p, width) if "\n" in p.strip() or len(p) > width else p
                       for p in paras) + tail


def _terminal_width():
    """Columns for help text: the terminal's, between 60 and 100."""
    return max(60, min(100, shutil.get_terminal_size((100, 24)).columns))


DESCRIPTION = """\
Train and compare optimizers with tinygrad_opt, a small reverse-mode autodiff library
on NumPy/CuPy with exact Hessian-vector products.

  train       train an MLP with one optimizer; checkpoints with --save/--resume
  compare     train the same MLP from the same init with several optimizers;
              a table and compare.png
  landscape   optimizer paths on 2-D test functions over contour lines;
              landscape.png
  curvature   the top Hessian eigenvalues, lambda_min and g^T H g / g^T g per
              epoch while training; a table and curvature.png

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


TRAIN_TEXT = """\
Train an MLP classifier with one optimizer, print one line per epoch and a final table, and
write train_history.csv into --out.

optimizers:
"""

COMPARE_TEXT = """\
Train the same MLP from the same initial weights on the same batches with each optimizer.
Prints a table (final training loss, best validation accuracy, epochs to --target, wall
time) and writes compare.png (loss and accuracy curves) and compare.csv into --out.

optimizers (NAME or NAME:LR):
"""

LANDSCAPE_TEXT = """\
Run optimizers from the same start on 2-D test functions and draw their paths over the
contour lines, one colour per optimizer, in one grid (landscape.png in --out); prints where
each one ended.

functions:
"""

CURVATURE_TEXT = """\
Train an MLP and, before training and after every epoch, measure the Hessian of the loss on
a fixed set of training samples from Hessian-vector products only: the --k largest
eigenvalues and lambda_min (Lanczos), the condition number lambda_max / lambda_min (inf
while the Hessian is indefinite), the spread lambda_max / |lambda_min|, the curvature along
the gradient g^T H g / g^T g, and lr * lambda_max (gradient descent is stable only below 2).
Prints a table and writes curvature.png and curvature.csv into --out."""


def _optimizer_help(names):
    width = max(len(n) for n in names)
    return "\n".join(f"  {n.ljust(width)}  lr {OPTIMIZERS[n][0]:<6g} {OPTIMIZERS[n][2]}"
                     for n in names)


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
    """The argparse parser of `tinygrad-opt` with its four subcommands."""
    parser = argparse.ArgumentParser(prog="tinygrad-opt", description=DESCRIPTION, epilog=EPILOG,
                                     formatter_class=_Formatter)
    from . import __version__
    parser.add_argument("--version", action="version", version=f"tinygrad_opt {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND",
                                help="train, compare, landscape or curvature (see above)")
    sub.required = True

    p = sub.add_parser(
        "train", formatter_class=_Formatter,
        description=_wrap(TRAIN_TEXT) + _optimizer_help(TRAIN_OPTIMIZERS),
        epilog="examples:\n  tinygrad-opt train\n"
               "  tinygrad-opt train --optimizer momentum --lr 0.1 --schedule step --clip 5\n"
               "  tinygrad-opt train --optimizer lbfgs --epochs 10 --dtype float64\n"
               "  tinygrad-opt train --hidden 128,64 --init orthogonal --save out/run.ckpt\n"
               "  tinygrad-opt train --resume out/run.ckpt --epochs 40   "
               "# continue the same run to epoch 40")
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
    p.set_defaults(func=cmd_train, sizes=(dict(epochs=20, hidden=(64,)),
                                          dict(epochs=2, hidden=(16,))))

    default_opts = "sgd,momentum,nesterov,adagrad,rmsprop,adam"
    p = sub.add_parser(
        "compare", formatter_class=_Formatter,
        description=_wrap(COMPARE_TEXT) + _optimizer_help(TRAIN_OPTIMIZERS),
        epilog="examples:\n  tinygrad-opt compare\n"
               "  tinygrad-opt compare --optimizers sgd:0.3,adam:0.001,adam:0.01\n"
               "  tinygrad-opt compare --optimizers momentum,adam,lbfgs,newtoncg --dtype float64\n"
               "  tinygrad-opt compare --data spirals --hidden 64,64 --epochs 60 --target 0.9")
    p.add_argument("--optimizers", type=parse_optimizer_list, metavar="NAME[:LR],...",
                   default=parse_optimizer_list(default_opts),
                   help=f"comma-separated, each with an optional lr (default: {default_opts})")
    p.add_argument("--target", type=_fraction, default=0.95, metavar="ACC",
                   help="validation accuracy for the epochs-to-target column (default: "
                        "%(default)s)")
    _add_training(p, 20, (64,), "float32",
                  "one learning rate for all optimizers (default: each optimizer's own, above)")
    _add_progress(p)
    _add_common(p, "2 epochs, one 16-unit hidden layer")
    p.set_defaults(func=cmd_compare, sizes=(dict(epochs=20, hidden=(64,)),
                                            dict(epochs=2, hidden=(16,))))

    default_land = "sgd,momentum,nesterov,adagrad,rmsprop,adam,newton"
    p = sub.add_parser(
        "landscape", formatter_class=_Formatter,
        description=_wrap(LANDSCAPE_TEXT) + "\n".join(
            f"  {n:<11} {q.title}\n  {'':<11} start {q.start}, {q.steps} steps"
            for n, q in PROBLEMS.items())
        + "\n\nEach function has a tuned lr per optimizer; NAME:LR overrides it.",
        epilog="examples:\n  tinygrad-opt landscape\n"
               "  tinygrad-opt landscape --functions saddle --optimizers sgd,adam,newton "
               "--steps 300\n"
               "  tinygrad-opt landscape --optimizers momentum:0.001,lbfgs,cg,newtoncg")
    p.add_argument("--functions", type=_functions, default=list(PROBLEMS), metavar="F,...",
                   help=f"which functions (default: {','.join(PROBLEMS)})")
    p.add_argument("--optimizers", type=parse_optimizer_list, metavar="NAME[:LR],...",
                   default=parse_optimizer_list(default_land),
                   help=f"any of {', '.join(OPTIMIZERS)} (default: {default_land})")
    p.add_argument("--steps", type=_positive_int, default=None,
                   help="optimizer steps per path (default: each function's own, above)")
    _add_common(p, "a fifth of the steps, a coarse contour grid", seed=False)
    p.set_defaults(func=cmd_landscape, sizes=({}, {}))

    p = sub.add_parser(
        "curvature", formatter_class=_Formatter,
        description=_wrap(CURVATURE_TEXT),
        epilog="examples:\n  tinygrad-opt curvature\n"
               "  tinygrad-opt curvature --optimizer sgd --lr 0.5 --epochs 20   "
               "# watch lambda_max settle near 2/lr\n"
               "  tinygrad-opt curvature --optimizer adam --k 5 --activation tanh")
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
    p.set_defaults(func=cmd_curvature,
                   sizes=(dict(epochs=10, hidden=(32,), samples=512, lanczos_iter=60),
                          dict(epochs=2, hidden=(16,), samples=128, lanczos_iter=20)))
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
    second = [n for n in names if OPTIMIZERS[n][1]]
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
        return args.func(args)
    except MissingDependency as e:
        print(f"tinygrad-opt {args.command}: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"tinygrad-opt {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
