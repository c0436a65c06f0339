"""tinygrad_opt: reverse-mode autodiff on NumPy/CuPy, built for studying optimization.

This module re-exports the public API; it defines nothing itself.
"""
from .tensor import Tensor
from .engine import Function, no_grad, enable_grad, is_grad_enabled, detect_anomaly
from .ops import concatenate, stack, where
from .ops import sin, cos, log1p, expm1, var, std, norm, argmax, argmin
from .creation import zeros, ones, randn, rand, arange, eye, manual_seed
from .creation import zeros_like, ones_like, randn_like, from_numpy
from .creation import tensor  # noqa: F811  (the function; the module stays tinygrad_opt.tensor in sys.modules)
from . import autograd
from .gradcheck import gradcheck, gradgradcheck, hvpcheck, GradcheckError

__version__ = "0.1.0"

_LAZY = {"nn", "optim", "curvature", "extensions", "data", "train", "serialization", "cli"}


def __getattr__(name):
    # The heavier rooms are imported on first use, so `import tinygrad_opt` stays light.
    import importlib
    if name in _LAZY:
        return importlib.import_module(f".{name}", __name__)
    if name in ("save", "load"):
        return getattr(importlib.import_module(".serialization", __name__), name)
    raise AttributeError(f"module 'tinygrad_opt' has no attribute {name!r}")
