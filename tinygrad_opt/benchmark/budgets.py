"""Tuning budgets: which hyperparameter settings of an optimizer a benchmark tries.

    oneshot       the registry's defaults, one setting (what `compare` does)
    grid N        N learning rates log-spaced over [default / 100, default * 10]
    random N      N settings drawn (seeded) from: lr log-uniform over the same range,
                  momentum uniform in [0.5, 0.99] where the optimizer has one, Adam's beta1
                  uniform in [0.8, 0.99] and beta2 in {0.99, 0.999}, RMSprop's alpha uniform
                  in [0.9, 0.999], AdamW's weight decay log-uniform over [1e-4, 1e-1]

The range around the default lr is the same for every optimizer, so no optimizer gets a
wider search than another (Schmidt et al. 2021 tune every optimizer with the same budget).
A setting is a plain dict of hyperparameters (lr always included) that the problems pass
to the optimizer; the same budget, size and seed give the same settings everywhere.
"""
import math
import zlib

from .. import backend

np = backend.np

BUDGETS = ("oneshot", "grid", "random")
LR_RANGE = (1e-2, 10.0)                 # factors of the registry's default lr


def settings(budget, optimizer, size=1, seed=0):
    """The list of hyperparameter dicts `budget` tries for `optimizer` (a registry name)."""
    from ..optim.registry import get_spec
    spec = get_spec(optimizer)
    if budget not in BUDGETS:
        raise ValueError(f"unknown budget {budget!r}; choose from {', '.join(BUDGETS)}")
    if budget == "oneshot":
        return [{"lr": spec.lr}]
    if not isinstance(size, int) or size < 1:
        raise ValueError(f"budget {budget}: size must be a positive integer, got {size!r}")
    lo, hi = (math.log10(spec.lr * f) for f in LR_RANGE)
    if budget == "grid":
        if size == 1:
            return [{"lr": spec.lr}]
        return [{"lr": _round(10 ** (lo + (hi - lo) * i / (size - 1)))} for i in range(size)]
    # random: a generator of its own per (seed, optimizer), so adding an optimizer to the
    # list does not change the settings drawn for the others
    rng = np.random.default_rng([seed, zlib.crc32(optimizer.encode())])
    out = []
    for _ in range(size):
        s = {"lr": _round(10 ** rng.uniform(lo, hi))}
        if spec.momentum is not None:
            s["momentum"] = _round(rng.uniform(0.5, 0.99))
        if optimizer in ("adam", "adamw"):
            s["betas"] = [_round(rng.uniform(0.8, 0.99)), float(rng.choice([0.99, 0.999]))]
        if optimizer == "rmsprop":
            s["alpha"] = _round(rng.uniform(0.9, 0.999))
        if optimizer == "adamw":
            s["weight_decay"] = _round(10 ** rng.uniform(-4, -1))
        out.append(s)
    return out


def _round(x):
    """4 significant digits: settings print, store and compare as the same numbers."""
    return float(f"{x:.4g}")
