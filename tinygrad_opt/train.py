"""Training loop: fit(), evaluate(), History, callbacks and exact-resume checkpoints.

    history = fit(model, Adam(model.parameters(), lr=1e-3), DataLoader(X, y, seed=0),
                  F.cross_entropy, epochs=20, val=(X_val, y_val))

Resuming continues bit for bit:

    save(checkpoint_state(model, opt, loader, epoch, scheduler), path)      # between epochs
    ...
    start = restore_state(load(path), model, opt, loader, scheduler)
    fit(model, opt, loader, loss_fn, epochs, start_epoch=start)
"""
import math
import sys
import time
from contextlib import ExitStack
from dataclasses import dataclass, field

from . import backend, engine
from .data import as_loader
from .optim import clip_grad_norm_
from .serialization import save


class TrainingDiverged(RuntimeError):
    """The training loss became NaN or infinite.

    epoch and step count from 1, as the progress lines do (step within the epoch); loss is
    the offending value.
    """

    def __init__(self, message, epoch=None, step=None, loss=None):
        super().__init__(message)
        self.epoch, self.step, self.loss = epoch, step, loss


# ---------------------------------------------------------------- smoothing
class EWMA:
    """Bias-corrected exponentially weighted moving average of a stream of numbers.

        m_t = beta m_{t-1} + (1 - beta) l_t,  m_0 = 0
        m_hat_t = m_t / (1 - beta^t)

    Starting at m_0 = 0 pulls the first averages towards 0; dividing by 1 - beta^t (the sum
    of the weights given to l_1..l_t) removes that bias, so m_hat_1 = l_1.
    """

    def __init__(self, beta=0.98):
        if not 0.0 <= beta < 1.0:
            raise ValueError(f"EWMA: beta must be in [0, 1), got {beta}")
        self.beta, self.m, self.t = beta, 0.0, 0

    def update(self, value):
        """Add one value; returns the bias-corrected average."""
        self.t += 1
        self.m = self.beta * self.m + (1.0 - self.beta) * float(value)
        return self.value

    @property
    def value(self):
        """m_hat_t (nan before the first update)."""
        return self.m / (1.0 - self.beta ** self.t) if self.t else math.nan


# ---------------------------------------------------------------- history
class History:
    """What fit() measured. Per epoch: epoch, train_loss (bias-corrected EWMA of that epoch's
    minibatch losses), val_loss and val_acc (when validating; val_acc is None for targets that
    are not class labels), lr (of the first parameter group at the epoch's start) and
    epoch_time (seconds, validation included). Per step: step_loss. `extra` holds the series
    that callbacks add with `record(name, value)`.

    Each column is a list, read as an attribute or by name: history.val_acc is
    history["val_acc"]; "loss" is train_loss (Keras' name); a callback's series is
    history["name"]. history.keys() lists the columns that hold values.
    """

    ALIASES = {"loss": "train_loss"}

    FIELDS = ("epoch", "train_loss", "val_loss", "val_acc", "lr", "epoch_time", "step_loss")

    def __init__(self):
        for name in self.FIELDS:
            setattr(self, name, [])
        self.extra = {}

    def record(self, name, value):
        """Append `value` to the series `name` in `extra`."""
        self.extra.setdefault(name, []).append(value)

    def state_dict(self):
        out = {name: list(getattr(self, name)) for name in self.FIELDS}
        out["extra"] = {k: list(v) for k, v in self.extra.items()}
        return out

    def load_state_dict(self, state):
        for name in self.FIELDS:
            setattr(self, name, list(state.get(name, [])))
        self.extra = {k: list(v) for k, v in state.get("extra", {}).items()}

    def __len__(self):
        return len(self.epoch)

    def __getitem__(self, name):
        """The column `name` (a list): a field, an alias in ALIASES or a recorded series."""
        name = self.ALIASES.get(name, name)
        if name in self.FIELDS:
            return getattr(self, name)
        if name in self.extra:
            return self.extra[name]
        raise KeyError(f"History has no column {name!r}; it has "
                       f"{', '.join(self.FIELDS + tuple(self.extra))}")

    def __contains__(self, name):
        name = self.ALIASES.get(name, name)
        return name in self.FIELDS or name in self.extra

    def keys(self):
        """The names of the columns that hold values (fields first, then recorded series)."""
        return [n for n in self.FIELDS if getattr(self, n)] + list(self.extra)

    def __repr__(self):
        last = f", last train_loss={self.train_loss[-1]:.4g}" if self.train_loss else ""
        return f"History(epochs={len(self)}{last})"


# ---------------------------------------------------------------- callbacks
@dataclass
class TrainRun:
    """The state of a fit() call that callbacks see (and may change: set stop_training=True)."""
    model: object
    optimizer: object
    loader: object
    loss_fn: object
    history: History
    epochs: int
    scheduler: object = None
    epoch: int = 0                     # index of the current epoch
    global_step: int = 0               # steps done in this call and the calls it resumed
    stop_training: bool = False


@dataclass
class StepInfo:
    """One finished optimizer step, as given to Callback.on_step_end.

    grad_norm is the total gradient norm before clipping. fit computes it only to clip, so
    it is None unless fit was given `clip` (and always None for step(closure) optimizers,
    which fit does not clip). Without clip, a callback can measure it with
    optim.clip_grad_norm_(params, float("inf")), which leaves the gradients as they are.
    """
    run: TrainRun
    epoch: int                         # epoch index
    step: int                          # step index within the epoch
    global_step: int                   # steps done so far, this one included
    loss: float                        # the minibatch loss before the update
    smoothed_loss: float               # bias-corrected EWMA of this epoch's losses so far
    lr: float                          # lr of the first parameter group used by this step
    xb: object = None                  # the minibatch (Tensors), e.g. to rebuild the loss
    yb: object = None
    grad_norm: float = None            # before clipping; None unless fit's clip is set
    extra: dict = field(default_factory=dict)


class Callback:
    """Hooks that fit() calls; override the ones you need (all do nothing by default).

    Call order and arguments:

        on_train_begin(run)                  once, before the first epoch
        on_epoch_begin(run)                  run.epoch is the epoch about to start
            backward_context(run, xb, yb)    before each loss.backward(), parameters not yet
                                             updated: a context manager to run the backward
                                             in (e.g. extensions.collect(...)), or None
            on_step_end(info)                after each optimizer step (and lr schedule step),
                                             with the parameters already updated
        on_epoch_end(run)                    after validation; history holds this epoch
        on_train_end(run)                    once, also after an early stop

    `run` is a TrainRun: model, optimizer, loader, loss_fn, history, epochs, scheduler, epoch,
    global_step, and stop_training (set it to True to stop after the current epoch).
    `info` is a StepInfo: run, epoch, step, global_step, loss, smoothed_loss, lr, xb, yb,
    grad_norm. To rebuild the step's loss at the current parameters use
    `info.run.loss_fn(info.run.model(info.xb), info.yb)`. Record series with
    `run.history.record(name, value)`. Hooks run in training mode; a hook that switches the
    model to eval must switch it back.
    """

    def on_train_begin(self, run):
        pass

    def on_epoch_begin(self, run):
        pass

    def backward_context(self, run, xb, yb):
        return None

    def on_step_end(self, info):
        pass

    def on_epoch_end(self, run):
        pass

    def on_train_end(self, run):
        pass


class Checkpoint(Callback):
    """Save checkpoint_state(...) to `path` atomically every `every` epochs (and after the last)."""

    def __init__(self, path, every=1):
        self.path, self.every = path, every

    def on_epoch_end(self, run):
        done = run.epoch + 1
        if done % self.every == 0 or done == run.epochs or run.stop_training:
            save(checkpoint_state(run.model, run.optimizer, run.loader, done, run.scheduler,
                                  run.history), self.path)


# ---------------------------------------------------------------- evaluation
def _num_correct(out, y):
    """Correct predictions in a batch, or None when the targets are not labels.

    Class scores (n, C) with integer labels: argmax. One logit per sample ((n,) or (n, 1))
    with 0/1 targets: logit > 0.
    """
    xp = backend.xp_of(out)
    if out.ndim == 2 and out.shape[1] > 1 and y.ndim == 1 and y.dtype.kind in "iub":
        return int((out.argmax(axis=1) == y).sum())
    if out.size == y.size and (out.ndim == 1 or out.shape[-1] == 1):
        y = y.reshape(-1)
        if y.dtype.kind == "b" or bool(xp.all((y == 0) | (y == 1))):
            return int(((out.reshape(-1) > 0) == (y == 1)).sum())
    return None


def evaluate(model, data, loss_fn, batch_size=256):
    """(mean loss, accuracy) of `model` on a DataLoader or an (X, y) pair, in eval mode, no graph.

    The loss is the sample-weighted mean of loss_fn over the batches (exact for mean-reduced
    losses); accuracy is None when the targets are not class labels. The model's train/eval
    mode is restored afterwards.
    """
    loader = as_loader(data, batch_size)
    was_training = getattr(model, "training", True)
    model.eval()
    total, correct, n = 0.0, 0, 0
    try:
        with engine.no_grad():
            for xb, yb in loader:
                out = model(xb)
                b = xb.shape[0]
                total += float(loss_fn(out, yb).item()) * b
                c = _num_correct(out.data, yb.data)
                correct = None if c is None or correct is None else correct + c
                n += b
    finally:
        model.train(was_training)
    if n == 0:
        raise ValueError("evaluate: the data holds no samples")
    return total / n, (None if correct is None else correct / n)


# ---------------------------------------------------------------- progress
def _use_tqdm(progress):
    if not progress or not sys.stdout.isatty():
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm


def epoch_line(history, epochs):
    """'epoch 3/20  train_loss 0.1234  val_loss ...  val_acc 97.00%  lr 0.01  1.23s'."""
    i = -1
    parts = [f"epoch {history.epoch[i] + 1}/{epochs}", f"train_loss {history.train_loss[i]:.4f}"]
    if history.val_loss and len(history.val_loss) == len(history.epoch):
        parts.append(f"val_loss {history.val_loss[i]:.4f}")
        if history.val_acc[i] is not None:
            parts.append(f"val_acc {100 * history.val_acc[i]:.2f}%")
    parts += [f"lr {history.lr[i]:.3g}", f"{history.epoch_time[i]:.2f}s"]
    return "  ".join(parts)


class Progress(Callback):
    """What fit() shows while it trains: a tqdm bar per epoch, one line per epoch, or nothing.

    mode: "bar" (tqdm, required), "lines", "none", or "auto" (True): a bar when tqdm is
    installed and stdout is a terminal, else lines; False is "none". A bar ends with the
    epoch's numbers as its postfix (leave=True) or vanishes (leave=False). `label` prefixes
    every bar and line, e.g. "[2/5] adam: ".
    """

    MODES = ("auto", "bar", "lines", "none")

    def __init__(self, mode="auto", label="", leave=True):
        mode = {True: "auto", False: "none", None: "none"}.get(mode, mode)
        if mode not in self.MODES:
            raise ValueError(f"Progress: mode must be one of {', '.join(self.MODES)}, got {mode!r}")
        self.tqdm = None
        if mode == "bar":
            from ._optional import require
            self.tqdm = require("tqdm", "a progress bar").tqdm
        elif mode == "auto":
            self.tqdm = _use_tqdm(True)
            mode = "bar" if self.tqdm else "lines"
        self.mode, self.label, self.leave, self.bar = mode, label, leave, None

    def on_epoch_begin(self, run):
        if self.tqdm is not None:
            self.bar = self.tqdm(total=len(run.loader), desc=f"{self.label}epoch "
                                 f"{run.epoch + 1}/{run.epochs}", file=sys.stdout,
                                 leave=self.leave)

    def on_step_end(self, info):
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(loss=f"{info.smoothed_loss:.4f}", refresh=False)

    def on_epoch_end(self, run):
        line = epoch_line(run.history, run.epochs)
        if self.bar is not None:
            self.bar.set_postfix_str(line.split("  ", 1)[1], refresh=True)
            self.bar.close()
            self.bar = None
        elif self.mode == "lines":
            print(self.label + line, flush=True)


# ---------------------------------------------------------------- fit
def _needs_closure(optimizer):
    """True for optimizers whose step must be given the loss closure (Newton, CG, L-BFGS):
    the `needs_closure` attribute of optim.Optimizer and its subclasses."""
    return bool(getattr(optimizer, "needs_closure", False))


def _diverged(epoch, step, value):
    return TrainingDiverged(
        f"training diverged at epoch {epoch + 1}, step {step + 1}: the loss is {value}; "
        "lower the learning rate, clip gradients (clip=...) or check the data for NaN/Inf "
        "(on the GPU, class targets out of range also give a NaN cross-entropy)",
        epoch + 1, step + 1, value)


def fit(model, optimizer, loader, loss_fn, epochs, val=None, scheduler=None,
        scheduler_interval="epoch", clip=None, callbacks=(), progress=True, ewma_beta=0.98,
        start_epoch=0, history=None):
    """Train `model` for epochs start_epoch .. epochs-1; returns the History.

    Each step: zero_grad, loss = loss_fn(model(xb), yb), backward, clip_grad_norm_ (when
    `clip` is set), optimizer.step(), then scheduler.step() if scheduler_interval="step".
    Optimizers that take step(closure) (Newton, CG, L-BFGS) are given a closure instead.
    After each epoch: validation on `val` (a DataLoader or an (X, y) pair) and
    scheduler.step() if scheduler_interval="epoch". `epochs` counts from 0, so a run resumed
    with start_epoch=2 and epochs=4 trains epochs 2 and 3; pass the earlier History as
    `history` to extend it. A NaN or infinite loss raises TrainingDiverged.
    progress: a Progress mode ("auto" = True: a tqdm bar when tqdm is installed and stdout is
    a terminal, otherwise one line per epoch; "bar", "lines"; False or "none" prints nothing).
    """
    if scheduler_interval not in ("epoch", "step"):
        raise ValueError(f"fit: scheduler_interval must be 'epoch' or 'step', got {scheduler_interval!r}")
    if not 0.0 <= ewma_beta < 1.0:
        raise ValueError(f"fit: ewma_beta must be in [0, 1), got {ewma_beta}")
    if clip is not None and not clip > 0:
        raise ValueError(f"fit: clip (the max gradient norm) must be positive, got {clip}")
    if not 0 <= start_epoch <= epochs:
        raise ValueError(f"fit: need 0 <= start_epoch <= epochs, got start_epoch={start_epoch}, "
                         f"epochs={epochs}")
    if getattr(loader, "y", True) is None:
        raise ValueError("fit: the loader has no targets; build it as DataLoader(X, y, ...)")
    if len(loader) == 0:
        raise ValueError(f"fit: the loader yields no batches ({loader!r})")
    closure_mode = _needs_closure(optimizer)
    if closure_mode and clip is not None:
        raise ValueError(f"fit: clip is not supported with {type(optimizer).__name__}, whose "
                         "step(closure) computes its own gradients")
    val_loader = None if val is None else as_loader(val)
    history = History() if history is None else history
    run = TrainRun(model, optimizer, loader, loss_fn, history, epochs, scheduler,
                   epoch=start_epoch, global_step=len(history.step_loss))
    params = list(model.parameters())
    if progress:
        callbacks = [Progress(progress), *callbacks]

    for cb in callbacks:
        cb.on_train_begin(run)
    for epoch in range(start_epoch, epochs):
        run.epoch = epoch
        model.train()
        for cb in callbacks:
            cb.on_epoch_begin(run)
        epoch_lr = optimizer.param_groups[0]["lr"]
        ewma = EWMA(ewma_beta)
        t0 = time.perf_counter()
        for step, (xb, yb) in enumerate(loader):
            lr = optimizer.param_groups[0]["lr"]
            grad_norm = None
            if closure_mode:
                def closure():
                    return loss_fn(model(xb), yb)
                value = float(optimizer.step(closure))
                if not math.isfinite(value):
                    raise _diverged(epoch, step, value)
            else:
                optimizer.zero_grad()
                loss = loss_fn(model(xb), yb)
                value = float(loss.item())
                if not math.isfinite(value):
                    raise _diverged(epoch, step, value)
                contexts = [c for c in (cb.backward_context(run, xb, yb) for cb in callbacks)
                            if c is not None] if callbacks else None
                if not contexts:
                    loss.backward()
                elif len(contexts) == 1:        # the common case, without ExitStack's cost
                    with contexts[0]:
                        loss.backward()
                else:
                    with ExitStack() as stack:
                        for c in contexts:
                            stack.enter_context(c)
                        loss.backward()
                if clip is not None:
                    grad_norm = clip_grad_norm_(params, clip)
                optimizer.step()
            if scheduler is not None and scheduler_interval == "step":
                scheduler.step()
            smoothed = ewma.update(value)
            history.step_loss.append(value)
            run.global_step += 1
            info = StepInfo(run, epoch, step, run.global_step, value, smoothed, lr, xb, yb,
                            grad_norm)
            for cb in callbacks:
                cb.on_step_end(info)

        if val_loader is not None:
            val_loss, val_acc = evaluate(model, val_loader, loss_fn)
            history.val_loss.append(val_loss)
            history.val_acc.append(val_acc)
        history.epoch.append(epoch)
        history.train_loss.append(ewma.value)
        history.lr.append(epoch_lr)
        history.epoch_time.append(time.perf_counter() - t0)
        if scheduler is not None and scheduler_interval == "epoch":
            scheduler.step()
        for cb in callbacks:
            cb.on_epoch_end(run)
        if run.stop_training:
            break
    for cb in callbacks:
        cb.on_train_end(run)
    return history


# ---------------------------------------------------------------- checkpoints
def checkpoint_state(model, optimizer, loader, epoch, scheduler=None, history=None):
    """Everything a bit-identical resume needs, as a tree that `save` can write.

    `epoch` is the number of finished epochs (the start_epoch of the resumed fit). The global
    CPU generator (dropout, loaders without a seed) is saved too. Take it between epochs.
    """
    return {
        "epoch": int(epoch),
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "loader": None if loader is None else loader.state_dict(),
        "scheduler": None if scheduler is None else scheduler.state_dict(),
        "history": None if history is None else history.state_dict(),
        "rng": backend.get_rng_state(),
    }


def restore_state(state, model, optimizer, loader=None, scheduler=None, history=None):
    """Load a checkpoint_state() tree into the given objects; returns the epoch to start from."""
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    for name, obj in (("loader", loader), ("scheduler", scheduler), ("history", history)):
        if obj is not None:
            if state.get(name) is None:
                raise ValueError(f"restore_state: the checkpoint holds no {name} state")
            obj.load_state_dict(state[name])
    backend.set_rng_state(state["rng"])
    return int(state["epoch"])
