"""One training experiment from plain settings: data set, MLP, optimizer by name, lr schedule.

The command line and notebooks build runs the same way:

    from tinygrad_opt import experiment
    dataset = experiment.load_dataset("digits", seed=0)
    s = experiment.Setup("adam", dataset, epochs=10, hidden=(64,), schedule="cosine")
    history = fit(s.model, s.optimizer, s.loader, F.cross_entropy, 10, val=s.val,
                  scheduler=s.scheduler, scheduler_interval="step", clip=s.clip)

    for r in experiment.compare(["sgd", ("adam", 0.01)], dataset, epochs=10):
        print(r.name, r.status, r.history)

Every function takes keyword arguments with defaults; none needs argparse.
"""
import csv
import importlib.util
import math
import time
from dataclasses import dataclass

from . import backend
from ._optional import require
from .optim.registry import get_spec, make_optimizer

np = backend.np

DATASETS = ("digits", "spirals", "moons", "mnist")


def load_dataset(name="digits", *, dtype="float32", device="cpu", seed=0, val_fraction=0.2,
                 data_dir=None, quick=False):
    """((X_train, y_train), (X_val, y_val), n_classes) of a data set.

    digits (scikit-learn's 8x8 images), spirals (3 arms) and moons are split with
    `val_fraction` held out (stratified, seeded); mnist is read from `data_dir` and validated
    on its test split (quick: 2,000 train and 500 test samples).
    """
    from . import data
    dtype = np.dtype(dtype)
    if name == "digits":
        if importlib.util.find_spec("sklearn") is None:     # data reads its file: no import
            require("sklearn", "the digits data set")
        X, y = data.load_digits(dtype=dtype, device=device)
    elif name == "spirals":
        X, y = data.spirals(200, n_classes=3, seed=seed, dtype=dtype, device=device)
    elif name == "moons":
        X, y = data.two_moons(600, noise=0.15, seed=seed, dtype=dtype, device=device)
    elif name == "mnist":
        if not data_dir:
            raise ValueError("the mnist data set needs data_dir, a folder holding the MNIST files "
                             "(train-images-idx3-ubyte[.gz] ... or mnist.npz)")
        train = data.load_mnist(data_dir, split="train", dtype=dtype, device=device)
        val = data.load_mnist(data_dir, split="test", dtype=dtype, device=device)
        if quick:
            train, val = (train[0][:2000], train[1][:2000]), (val[0][:500], val[1][:500])
        return train, val, 10
    else:
        raise ValueError(f"unknown data set {name!r}; choose from {', '.join(DATASETS)}")
    train, val = data.train_val_split(X, y, val_fraction=val_fraction, seed=seed, stratify=True)
    return train, val, int(backend.to_numpy(y).max()) + 1


INITS = ("default", "orthogonal", "xavier", "kaiming", "sparse")


def weight_init(name, activation):
    """The weight initialiser called `name` (one of INITS); None keeps Linear's default."""
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
    if name != "sparse":
        raise ValueError(f"unknown init {name!r}; choose from {', '.join(INITS)}")

    def sparse(w, k=15):
        k = min(k, w.shape[1])
        return init.sparse_(w, k, std=gain / math.sqrt(k))     # keeps each unit's input variance
    return sparse


def build_model(n_in, n_out, *, hidden=(64,), activation="relu", init="default",
                dtype="float32", device="cpu", seed=0):
    """MLP [n_in, *hidden, n_out] with `activation` and weight init `init`, seeded by `seed`."""
    from . import nn
    backend.manual_seed(seed)
    return nn.MLP([n_in, *hidden, n_out], activation=activation,
                  init=weight_init(init, activation), dtype=np.dtype(dtype), device=device)


SCHEDULES = ("none", "linear", "step", "exp", "cosine")


def build_scheduler(kind, optimizer, total_steps, warmup_steps=0):
    """An lr schedule stepped once per optimizer step (None for 'none' without warm-up).

    linear: to lr/100; step: x0.1 at each third; exp: to lr/100; cosine: to 0; all over the
    steps after the warm-up, which rises linearly to lr first.
    """
    from .optim import lr_scheduler as S
    if kind not in SCHEDULES:
        raise ValueError(f"unknown schedule {kind!r}; choose from {', '.join(SCHEDULES)}")
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
    """Everything one training run needs: model, optimizer, loader, scheduler, clip.

    dataset: load_dataset's ((X, y), (X_val, y_val), n_classes). batch_size None: 512 for
    optimizers that take step(closure) (line searches want large, steady batches), else 32.
    `momentum` goes only to optimizers that have one; `clip` only to first-order ones.
    """

    OPTIONS = ("lr", "momentum", "weight_decay", "batch_size", "epochs", "schedule", "warmup",
               "clip", "seed", "hidden", "activation", "init", "dtype", "device")

    def __init__(self, optimizer, dataset, *, lr=None, momentum=None, weight_decay=0.0,
                 batch_size=None, epochs=20, schedule="none", warmup=0, clip=None, seed=0,
                 hidden=(64,), activation="relu", init="default", dtype="float32",
                 device="cpu"):
        from .data import DataLoader
        spec = get_spec(optimizer)
        self.train, self.val, n_classes = dataset
        X, y = self.train
        self.model = build_model(X.shape[1], n_classes, hidden=hidden, activation=activation,
                                 init=init, dtype=dtype, device=device, seed=seed)
        self.name, self.spec = optimizer, spec
        self.optimizer = make_optimizer(optimizer, self.model.parameters(), lr=lr,
                                        momentum=momentum if spec.momentum is not None else None,
                                        weight_decay=weight_decay)
        self.lr = self.optimizer.param_groups[0]["lr"]
        if batch_size is None:
            batch_size = 512 if spec.needs_closure else 32
        self.loader = DataLoader(X, y, batch_size=min(batch_size, X.shape[0]), seed=seed)
        self.epochs = epochs
        steps = epochs * len(self.loader)
        self.scheduler = build_scheduler(schedule, self.optimizer, steps,
                                         warmup * len(self.loader))
        self.clip = clip if not spec.needs_closure else None

    def fit(self, callbacks=(), loss_fn=None, progress=False, **kwargs):
        """train.fit of this run: cross-entropy (or loss_fn), validation on self.val, the lr
        schedule stepped every optimizer step, clipping; kwargs go to fit (start_epoch, ...)."""
        from .nn import functional as F
        from .train import fit
        return fit(self.model, self.optimizer, self.loader,
                   F.cross_entropy if loss_fn is None else loss_fn, self.epochs, val=self.val,
                   scheduler=self.scheduler, scheduler_interval="step", clip=self.clip,
                   callbacks=list(callbacks), progress=progress, **kwargs)


# ---------------------------------------------------------------- saved runs
def save_run(path, config):
    """A fit callback that writes {'config': config, 'train': checkpoint_state(...)} to `path`
    after every epoch (atomically), so load_run + restore_state can continue the run exactly.
    config: the run's settings (JSON-like values), e.g. Setup's keyword arguments."""
    from .serialization import save
    from .train import Callback, checkpoint_state

    class SaveRun(Callback):
        def on_epoch_end(self, run):
            state = checkpoint_state(run.model, run.optimizer, run.loader, run.epoch + 1,
                                     run.scheduler, run.history)
            save({"config": config, "train": state}, path)
    return SaveRun()


def load_run(path):
    """(config, train_state) of a file written by save_run.

    FileNotFoundError when it is missing; serialization.CheckpointError (a ValueError) when it
    is damaged or is not such a file.
    """
    from .serialization import CheckpointError, load
    state = load(path)
    train = state.get("train") if isinstance(state, dict) else None
    if (not isinstance(train, dict) or not isinstance(state.get("config"), dict)
            or not isinstance(train.get("epoch"), int)):
        raise CheckpointError(f"load_run: {path} holds no saved run (one written by save_run, "
                              "e.g. tinygrad-opt train --save)")
    return state["config"], train


# ---------------------------------------------------------------- comparisons
@dataclass
class RunResult:
    """One optimizer's run in a comparison. status: 'ok', 'diverged' or 'failed: <error>';
    history is None unless the run finished."""
    name: str
    lr: float
    history: object
    seconds: float
    status: str = "ok"

    @property
    def ok(self):
        return self.status == "ok"


def compare(optimizers, dataset, *, epochs=20, callbacks=None, loss_fn=None, **options):
    """Train the same model from the same init on the same batches with each optimizer.

    optimizers: names or (name, lr) pairs (lr None: the optimizer's default, or options' lr).
    Yields one RunResult per optimizer as it finishes. A run that diverges or fails (a singular
    Hessian, a failed line search) is recorded as such and the next one still runs.
    callbacks(i, name) -> extra fit callbacks for run i; options: Setup's keyword arguments.
    """
    from .train import TrainingDiverged
    default_lr = options.pop("lr", None)
    for i, item in enumerate(optimizers):
        name, lr = (item, None) if isinstance(item, str) else item
        s = Setup(name, dataset, lr=lr or default_lr, epochs=epochs, **options)
        t0 = time.perf_counter()
        history, status = None, "ok"
        try:
            history = s.fit(callbacks(i, name) if callbacks else (), loss_fn)
        except TrainingDiverged:
            status = "diverged"
        except (ValueError, ArithmeticError, RuntimeError) as e:
            status = f"failed: {type(e).__name__}: {e}"
        yield RunResult(name, s.lr, history, time.perf_counter() - t0, status)


def epochs_to(val_acc, target):
    """The first epoch (1-based) whose validation accuracy reaches target, or None."""
    for i, a in enumerate(val_acc):
        if a is not None and a >= target:
            return i + 1
    return None


def epoch_curvature(setup, samples=512, k=3, max_iter=60, seed=0):
    """A CurvatureMonitor for setup.fit that measures the Hessian of the loss on the first
    `samples` training samples before training (step 0) and after every epoch (step = epochs
    done): k top eigenvalues and lambda_min by Lanczos, g^T H g / g^T g, no trace probes."""
    from .curvature import CurvatureMonitor
    from .nn import functional as F
    from .tensor import Tensor
    X, y = setup.train
    n = min(samples, X.shape[0])
    xb, yb = Tensor._wrap(X[:n]), Tensor._wrap(y[:n])

    class EpochCurvature(CurvatureMonitor):
        def on_train_begin(self, run):
            self.record(0, lr=run.optimizer.param_groups[0]["lr"])

        def on_step_end(self, info):
            pass

        def on_epoch_end(self, run):
            self.record(run.epoch + 1, lr=run.optimizer.param_groups[0]["lr"])

    monitor = EpochCurvature(lambda: F.cross_entropy(setup.model(xb), yb),
                             setup.model.parameters(), k=k, n_probes=0, max_iter=max_iter,
                             seed=seed, warn=False)
    monitor.samples = n
    return monitor


# ---------------------------------------------------------------- tables
def format_table(headers, rows):
    """Columns padded to their widest cell, a dashed rule under the header."""
    cells = [[str(c) for c in headers]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def write_csv(path, headers, rows):
    """Write `rows` under `headers` to a CSV file."""
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(headers)
        w.writerows(rows)


def pct(x):
    """0.9731 -> '97.31%'; None or non-finite -> '-'."""
    return "-" if x is None or not math.isfinite(x) else f"{100 * x:.2f}%"


def num(x, fmt=".4f"):
    """x formatted with fmt; None or non-finite -> '-'."""
    return "-" if x is None or not math.isfinite(x) else format(x, fmt)


def train_table(name, history, seconds):
    """(headers, display rows, raw rows) of one fit(): the last epoch's numbers, and the raw
    rows one per epoch (epoch counted from 1, train_loss, val_loss, val_acc, lr)."""
    h = history
    last = (lambda col, fmt: fmt(col[-1]) if col else "-")
    headers = ["optimizer", "epochs", "train_loss", "val_loss", "val_acc", "best_val_acc",
               "time_s"]
    row = [name, len(h), last(h.train_loss, num), last(h.val_loss, num), last(h.val_acc, pct),
           pct(max(h.val_acc)) if h.val_acc else "-", f"{seconds:.2f}"]
    raw = zip([e + 1 for e in h.epoch], h.train_loss, h.val_loss, h.val_acc, h.lr)
    return headers, [row], (["epoch", "train_loss", "val_loss", "val_acc", "lr"], list(raw))


def compare_table(results, target):
    """(headers, display rows, raw rows) of compare()'s results: final training loss, best
    validation accuracy, the first epoch reaching `target`, seconds."""
    headers = ["optimizer", "lr", "final_train_loss", "best_val_acc",
               f"epochs_to_{100 * target:g}%", "time_s"]
    rows, raw = [], []
    for r in results:
        if not r.ok:
            rows.append([r.name, f"{r.lr:g}", r.status.split(":")[0], "-", "-",
                         f"{r.seconds:.2f}"])
            raw.append([r.name, r.lr, "nan", "nan", "", f"{r.seconds:.3f}"])
            continue
        h = r.history
        reach = epochs_to(h.val_acc, target)
        rows.append([r.name, f"{r.lr:g}", num(h.train_loss[-1]), pct(max(h.val_acc)),
                     "-" if reach is None else reach, f"{r.seconds:.2f}"])
        raw.append([r.name, r.lr, h.train_loss[-1], max(h.val_acc), reach or "",
                    f"{r.seconds:.3f}"])
    return headers, rows, raw


def curvature_table(records, val_acc):
    """(headers, display rows, raw rows) of curvature records, one per epoch, beside the
    validation accuracy of that epoch (None before training)."""
    from .plots import spread
    headers = ["epoch", "loss", "val_acc", "top_eigenvalues", "lambda_min", "condition",
               "lmax/|lmin|", "gHg/gg", "lr*lambda_max"]
    rows, raw = [], []
    for r, a in zip(records, val_acc):
        top = ", ".join(f"{t:.3g}" for t in r.top_eigenvalues)
        rows.append([r.step, f"{r.loss:.4f}", pct(a), top, f"{r.lambda_min:.3g}",
                     f"{r.condition_number:.3g}", f"{spread(r):.3g}", f"{r.grad_curvature:.3g}",
                     f"{r.lr_sharpness:.3g}"])
        raw.append([r.step, r.loss, "" if a is None else a, " ".join(map(str, r.top_eigenvalues)),
                    r.lambda_min, r.condition_number, spread(r), r.grad_curvature,
                    r.lr_sharpness])
    return headers, rows, raw
