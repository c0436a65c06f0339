"""OptimizerMonitor: what each optimizer step did (effective step sizes, update-to-parameter
ratio, momentum, clipping), read from the optimizers' own `effective_step_size()`.

A fit() callback, so this module imports train.Callback; the optim package does not import it
(use `tinygrad_opt.optim.monitor`, or `tinygrad_opt.curvature.OptimizerMonitor` as before).
"""
import math
from dataclasses import dataclass

from .. import backend
from ..train import Callback

np = backend.np     # host NumPy for the summary columns


class _Recorder:
    """A list of record dataclasses with column access."""

    def column(self, name):
        """One field over all records, as a host array (None becomes nan)."""
        return np.array([math.nan if getattr(r, name) is None else getattr(r, name)
                         for r in self.history], dtype=float)

    def _due(self, step):
        return self.every > 0 and step % self.every == 0


def _info_get(info, key, default=None):
    """`key` from a step-info dict or object."""
    if info is None:
        return default
    if isinstance(info, dict):
        return info.get(key, default)
    return getattr(info, key, default)


@dataclass
class OptimizerRecord:
    """What one optimizer step did."""
    step: int
    lr: float                    # the first group's lr
    step_size_kind: str          # "lr", "adam", "rmsprop" or "adagrad"
    step_size_mean: float        # effective per-coordinate step size, summarised
    step_size_median: float
    step_size_min: float
    step_size_max: float
    update_norm: float = None    # ||theta_after - theta_before||
    param_norm: float = None     # ||theta_before||
    update_ratio: float = None   # update_norm / param_norm
    momentum_norm: float = None  # ||momentum buffer|| (Adam: ||first moment||)
    clip_coef: float = None      # min(1, max_norm / total_norm) when the gradient was clipped


class OptimizerMonitor(Callback, _Recorder):
    """Records effective step sizes, the update-to-parameter ratio, momentum and clipping.

    Standalone use: `snapshot()`, then `optimizer.step()`, then `record(step)`. Inside fit()
    the snapshot is taken before each recorded step automatically (steps count by
    global_step). The clip coefficient needs the total gradient norm from the step info and
    max_norm (pass fit()'s `clip` value as max_norm).
    Effective step sizes come from each optimizer's `effective_step_size()`: SGD lr; Adam
    lr / (sqrt(v_hat) + eps) with v_hat = v / (1 - beta2^t); RMSprop lr / (sqrt(E[g^2] -
    E[g]^2 if centered) + eps); Adagrad lr_k / (sqrt(sum g^2) + eps); the textbook forms
    likewise, with their delta.
    """

    def __init__(self, optimizer, every=1, max_norm=None):
        if every < 1:
            raise ValueError(f"OptimizerMonitor: every must be >= 1, got {every}")
        self.optimizer, self.every, self.max_norm = optimizer, int(every), max_norm
        self.history = []
        self._before = None

    def _params(self):
        return [p for group in self.optimizer.param_groups for p in group["params"]]

    def snapshot(self):
        """Remember the current parameters, to measure the next update."""
        self._before = [p.data.copy() for p in self._params()]

    def record(self, step, info=None):
        """Summarise the step just taken and append an OptimizerRecord (also returned)."""
        opt = self.optimizer
        sizes, kinds, mom_sq, has_mom = [], set(), 0.0, False
        for group in opt.param_groups:
            for p in group["params"]:
                state = opt.state.get(p, {}) if hasattr(opt.state, "get") else {}
                kind, eff = opt.step_size_of(p, group)
                kinds.add(kind)
                sizes.append(eff.reshape(-1))
                buf = _momentum(state)
                if buf is not None:
                    has_mom = True
                    mom_sq += _sqnorm(buf)
        xp = backend.xp_of(sizes[0])
        allsizes = xp.concatenate(sizes)
        rec = OptimizerRecord(
            step=int(step), lr=float(opt.param_groups[0]["lr"]),
            step_size_kind=kinds.pop() if len(kinds) == 1 else "mixed",
            step_size_mean=float(allsizes.mean()), step_size_median=float(xp.median(allsizes)),
            step_size_min=float(allsizes.min()), step_size_max=float(allsizes.max()),
            momentum_norm=math.sqrt(mom_sq) if has_mom else None,
            clip_coef=_clip_coef(info, self.max_norm))
        if self._before is not None:
            du = sum(_sqnorm(p.data - b) for p, b in zip(self._params(), self._before))
            pn = sum(_sqnorm(b) for b in self._before)
            rec.update_norm, rec.param_norm = math.sqrt(du), math.sqrt(pn)
            rec.update_ratio = rec.update_norm / rec.param_norm if pn > 0 else math.inf
            self._before = None
        self.history.append(rec)
        return rec

    def on_train_begin(self, run):
        if self._due(run.global_step + 1):
            self.snapshot()

    def on_step_end(self, info):
        step = _info_get(info, "global_step")
        if self._due(step):
            self.record(step, info)
        if self._due(step + 1):
            self.snapshot()


def _sqnorm(a):
    return float((a * a).sum())


def _momentum(state):
    """The momentum buffer: PyTorch's momentum_buffer, Adam's exp_avg, the textbook v or s."""
    for key in ("momentum_buffer", "exp_avg", "v"):
        if key in state:
            return state[key]
    return state.get("s") if "r" in state else None      # textbook Adam's first moment


def _clip_coef(info, max_norm=None):
    """min(1, max_norm / total_norm) from step info, when gradient clipping was used."""
    c = _info_get(info, "clip_coef")
    if c is None:
        c = (_info_get(info, "extra") or {}).get("clip_coef")
    if c is not None:
        return float(c)
    total = _info_get(info, "grad_norm")
    if max_norm is None:
        max_norm = _info_get(info, "max_norm")
    if total is None or max_norm is None:
        return None
    # clip_grad_norm_'s coefficient; the 1e-6 guards a zero norm
    return min(1.0, float(max_norm) / (float(total) + 1e-6))
