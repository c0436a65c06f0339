"""Gradient clipping, in place on the parameters' .grad arrays."""
import math

from .. import backend
from ..tensor import Tensor


def _grads(params):
    """The gradient arrays of the parameters that have one."""
    if isinstance(params, Tensor):
        params = [params]
    return [p.grad.data for p in params if p.grad is not None]


def clip_grad_norm_(params, max_norm, norm_type=2.0, error_if_nonfinite=False):
    """Rescale all gradients together so their joint norm is at most max_norm; returns that norm.

    The norm is taken over every gradient as if concatenated into one vector (norm_type may be
    float('inf')). When it exceeds max_norm the gradients are multiplied by
    max_norm / (total_norm + 1e-6), PyTorch's coefficient (the 1e-6 guards against division by
    zero); otherwise they are left untouched. A non-finite norm raises with
    error_if_nonfinite=True and otherwise propagates (inf zeroes the finite gradients, NaN makes
    them NaN). Returns the norm before clipping, as a float.
    """
    if not max_norm > 0:
        raise ValueError(f"clip_grad_norm_: max_norm must be positive, got {max_norm}")
    norm_type = float(norm_type)
    if not norm_type > 0:
        raise ValueError(f"clip_grad_norm_: norm_type must be positive, got {norm_type}")
    grads = _grads(params)
    if not grads:
        return 0.0
    if norm_type == math.inf:
        total = max(float(backend.xp_of(g).abs(g).max()) if g.size else 0.0 for g in grads)
    elif norm_type == 2.0:
        total = math.sqrt(sum(float(backend.xp_of(g).vdot(g, g)) for g in grads))
    else:
        total = sum(float((backend.xp_of(g).abs(g) ** norm_type).sum()) for g in grads)
        total = total ** (1.0 / norm_type)
    if not math.isfinite(total):
        if error_if_nonfinite:
            raise RuntimeError(f"clip_grad_norm_: the total norm of order {norm_type} of the "
                               f"gradients is {total}, so they cannot be clipped; pass "
                               "error_if_nonfinite=False to clip anyway")
    coef = max_norm / (total + 1e-6)
    if not coef >= 1.0:                            # a NaN norm poisons the gradients, as in PyTorch
        for g in grads:
            g *= coef
    return total


def clip_grad_value_(params, clip_value):
    """Clip every gradient element into [-clip_value, clip_value] in place."""
    if not clip_value >= 0:
        raise ValueError(f"clip_grad_value_: clip_value must be non-negative, got {clip_value}")
    for g in _grads(params):
        backend.xp_of(g).clip(g, -clip_value, clip_value, out=g)
