"""Benchmark problems: each trains one optimizer setting with one seed and reports per epoch.

A problem has a documented target on one validation metric; `run(task)` returns the metric
after every epoch, the step and second counts at each epoch's end, and a status ("ok",
"diverged", "failed: ..."). Runs are independent and fully seeded, so the same task gives
the same numbers in any process, on any executor.

    quadratic     noisy quadratic model (Zhang et al. 2019): 0.5 sum_i h_i w_i^2 with h_i = 1/i,
                  i = 1..100, minibatch gradient noise of variance h_i / B (B = 16);
                  metric: the exact loss; target 0.05 (it starts near 2.6).
    digits        MLP 64-64-10 on scikit-learn's 8x8 digits; validation accuracy, target 95%.
    spirals       MLP 2-64-64-3 on three noisy spiral arms; validation accuracy, target 90%.
    mnist_logreg  softmax regression on MNIST (needs data_dir); test accuracy, target 92%.
    mnist_mlp     MLP 784-128-10 on MNIST (needs data_dir); test accuracy, target 97%.
    rosenbrock    the 2-D test function from (-1.5, 2) plus a seeded jitter; target f < 1e-3.
    beale         Beale's function from (1, 1.4) plus a seeded jitter; target f < 1e-3.
"""
import math
import time
import warnings
from dataclasses import dataclass

from .. import backend

np = backend.np


@dataclass(frozen=True)
class Problem:
    """A benchmark problem. metric: what is recorded per epoch; higher_is_better says which
    way it improves; target: the value that counts as solved (reached: metric >= target
    when higher is better, <= target otherwise)."""
    name: str
    metric: str
    higher_is_better: bool
    target: float
    epochs: int
    description: str
    needs_data_dir: bool = False
    epoch_seconds: float = 0.05     # rough time of one epoch on one core: longest runs first

    def reached(self, value):
        if value is None or not math.isfinite(value):
            return False
        return value >= self.target if self.higher_is_better else value <= self.target

    def better(self, a, b):
        """True when metric value a beats b (None or non-finite loses to anything)."""
        if a is None or not math.isfinite(a):
            return False
        if b is None or not math.isfinite(b):
            return True
        return a > b if self.higher_is_better else a < b

    def best(self, values):
        """The best finite value of a series, or None."""
        out = None
        for v in values:
            if self.better(v, out):
                out = v
        return out

    def run(self, optimizer, hparams, seed, epochs=None, data_dir=None):
        """Train once: a dict with status, metric (per epoch), steps and seconds (cumulative at
        each epoch's end) and error (the message when the status is not ok)."""
        epochs = self.epochs if epochs is None else epochs
        runner = _FUNCTION_RUNNERS.get(self.name, _run_classifier)
        out = {"metric": [], "steps": [], "seconds": [], "status": "ok", "error": None}
        try:
            with warnings.catch_warnings(), np.errstate(all="ignore"):
                warnings.simplefilter("ignore", RuntimeWarning)   # overflow on the way to a NaN
                runner(self, optimizer, dict(hparams), seed, epochs, data_dir, out)
        except _Diverged as e:
            out["status"], out["error"] = "diverged", str(e)
        except Exception as e:              # a singular Hessian, a failed line search, ...
            from ..train import TrainingDiverged
            if isinstance(e, TrainingDiverged):
                out["status"], out["error"] = "diverged", str(e)
            else:
                out["status"], out["error"] = f"failed: {type(e).__name__}", f"{type(e).__name__}: {e}"
        return out


class _Diverged(Exception):
    pass


# ---------------------------------------------------------------- classification problems
_CLASSIFIERS = {   # name: (data set, hidden layers, quick subset for mnist)
    "digits": ("digits", (64,)),
    "spirals": ("spirals", (64, 64)),
    "mnist_logreg": ("mnist", ()),
    "mnist_mlp": ("mnist", (128,)),
}
_DATA = {}                              # data sets loaded in this process, by (name, data_dir)


def _data_key(problem, data_dir):
    """(data set, data_dir) of a classification problem; only MNIST reads data_dir."""
    name = _CLASSIFIERS[problem][0]
    return name, data_dir if name == "mnist" else None


def _dataset(name, data_dir):
    from .. import experiment
    key = (name, data_dir)
    if key not in _DATA:
        _DATA[key] = experiment.load_dataset(name, seed=0, data_dir=data_dir)
    return _DATA[key]


def data_keys(tasks):
    """The (data set, data_dir) keys the tasks train on, in first-use order (items that are
    not benchmark tasks need none)."""
    return list(dict.fromkeys(_data_key(t.problem, t.data_dir) for t in tasks
                              if getattr(t, "problem", None) in _CLASSIFIERS))


def load_data(keys):
    """Load the data sets `keys` in this process, once (later runs use them)."""
    for k in keys:
        _dataset(*k)


def _run_classifier(problem, optimizer, hparams, seed, epochs, data_dir, out):
    from .. import experiment
    from ..train import Callback
    hidden = _CLASSIFIERS[problem.name][1]
    setup = experiment.Setup(optimizer, _dataset(*_data_key(problem.name, data_dir)),
                             epochs=epochs, seed=seed,
                             hidden=hidden, **_setup_options(hparams))
    _apply_hparams(setup.optimizer, hparams)
    steps_per_epoch = len(setup.loader)
    t0 = time.perf_counter()

    class Record(Callback):
        def on_epoch_end(self, run):
            out["metric"].append(run.history.val_acc[-1])
            out["steps"].append((run.epoch + 1) * steps_per_epoch)
            out["seconds"].append(time.perf_counter() - t0)

    setup.fit([Record()])


def _setup_options(hparams):
    """The hyperparameters experiment.Setup takes itself (lr, momentum, weight_decay)."""
    return {k: hparams[k] for k in ("lr", "momentum", "weight_decay") if k in hparams}


def _apply_hparams(opt, hparams):
    """Set the other hyperparameters (betas, alpha, ...) on every parameter group."""
    for k, v in hparams.items():
        if k in ("lr", "momentum", "weight_decay"):
            continue
        for g in opt.param_groups:
            if k not in g:
                raise ValueError(f"{type(opt).__name__} has no hyperparameter {k!r}")
            g[k] = tuple(v) if isinstance(g[k], tuple) else v


# ---------------------------------------------------------------- loss functions of a vector
def _run_function(problem, optimizer, hparams, seed, epochs, data_dir, out, *, start, loss,
                  metric, steps_per_epoch):
    """Minimise loss(w, rng) over a vector w from start(rng), `steps_per_epoch` steps an epoch."""
    from ..optim.registry import get_spec
    from ..tensor import Tensor
    rng = np.random.default_rng(seed)
    w = Tensor(start(rng), requires_grad=True)
    spec = get_spec(optimizer)
    opt = spec.make([w], **_setup_options(hparams))
    _apply_hparams(opt, hparams)
    t0 = time.perf_counter()
    for epoch in range(epochs):
        for step in range(steps_per_epoch):
            sample = loss(w, rng)                 # a fixed minibatch for this step
            if spec.needs_closure:
                value = opt.step(sample)
            else:
                opt.zero_grad()
                value = sample()
                value.backward()
                opt.step()
            value = float(value.item() if hasattr(value, "item") else value)
            if not math.isfinite(value) or not np.isfinite(w.numpy()).all():
                raise _Diverged(f"the loss is {value} at epoch {epoch}, step {step}")
        out["metric"].append(float(metric(w.numpy())))
        out["steps"].append((epoch + 1) * steps_per_epoch)
        out["seconds"].append(time.perf_counter() - t0)


_NQM_H = 1.0 / np.arange(1, 101)            # eigenvalues 1, 1/2, ..., 1/100
_NQM_BATCH = 16


def _run_quadratic(problem, optimizer, hparams, seed, epochs, data_dir, out):
    from ..tensor import Tensor
    h = Tensor(_NQM_H)

    def loss(w, rng):
        # 0.5 sum h (w - z)^2 with z ~ N(0, 1/(h B)): gradient h w + noise of variance h / B
        z = Tensor(rng.standard_normal(_NQM_H.size) / np.sqrt(_NQM_H * _NQM_BATCH))
        return lambda: 0.5 * (h * (w - z) * (w - z)).sum()

    _run_function(problem, optimizer, hparams, seed, epochs, data_dir, out,
                  start=lambda rng: rng.standard_normal(_NQM_H.size) / np.sqrt(_NQM_H) * 0.23,
                  loss=loss, metric=lambda w: 0.5 * float((_NQM_H * w * w).sum()),
                  steps_per_epoch=50)


def _test_function_runner(name):
    def run(problem, optimizer, hparams, seed, epochs, data_dir, out):
        from ..testfunctions import PROBLEMS
        p = PROBLEMS[name]
        jitter = 0.0 if seed == 0 else 0.05

        def loss(w, rng):
            return lambda: p.f(w[0], w[1])

        _run_function(problem, optimizer, hparams, seed, epochs, data_dir, out,
                      start=lambda rng: np.array(p.start) + jitter * rng.standard_normal(2),
                      loss=loss, metric=lambda w: float(p.f(w[0], w[1])), steps_per_epoch=50)
    return run


_FUNCTION_RUNNERS = {"quadratic": _run_quadratic, "rosenbrock": _test_function_runner("rosenbrock"),
                     "beale": _test_function_runner("beale")}


PROBLEMS = {p.name: p for p in [
    Problem("quadratic", "loss", False, 0.05, 10,
            "noisy quadratic, 100 eigenvalues 1/i, batch noise (Zhang et al. 2019)",
            epoch_seconds=0.015),
    Problem("digits", "val_acc", True, 0.95, 10, "MLP 64-64-10 on the 8x8 digits",
            epoch_seconds=0.04),
    Problem("spirals", "val_acc", True, 0.90, 20, "MLP 2-64-64-3 on three spiral arms",
            epoch_seconds=0.015),
    Problem("mnist_logreg", "val_acc", True, 0.92, 5, "softmax regression on MNIST",
            needs_data_dir=True, epoch_seconds=1.0),
    Problem("mnist_mlp", "val_acc", True, 0.97, 5, "MLP 784-128-10 on MNIST", needs_data_dir=True,
            epoch_seconds=2.5),
    Problem("rosenbrock", "loss", False, 1e-3, 20, "Rosenbrock's valley from (-1.5, 2)",
            epoch_seconds=0.025),
    Problem("beale", "loss", False, 1e-3, 10, "Beale's function from (1, 1.4)",
            epoch_seconds=0.045),
]}


def get_problem(name):
    """The Problem called `name`; a ValueError lists the known names."""
    try:
        return PROBLEMS[name]
    except KeyError:
        raise ValueError(f"unknown problem {name!r}; choose from {', '.join(PROBLEMS)}") from None

