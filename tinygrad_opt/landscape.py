"""Loss along lines and planes in parameter space.

    d = random_direction(model.parameters(), seed=0)            # filter-normalized (Li et al.)
    losses = surface_1d(closure, model.parameters(), d, alphas)  # L(theta + a d)
    losses = interpolate(closure, params, init, final, alphas)   # L((1-a) init + a final)

`closure` recomputes the loss from the current parameters (no backward); it is evaluated
without a graph. The functions move the parameters in place and restore them bit for bit
afterwards, also when the closure raises. Directions, `start` and `end` are lists of Tensors
(or arrays) shaped like the parameters; results are host NumPy arrays. See docs/challenges.md.
"""
from . import backend
from .curvature import _Probes
from .flat import unflatten
from .engine import no_grad
from .tensor import Tensor

np = backend.np     # host NumPy for the result arrays


def _params(params, where):
    params = list(params)
    if not params:
        raise ValueError(f"{where}: no parameters given")
    for i, p in enumerate(params):
        if not isinstance(p, Tensor):
            raise TypeError(f"{where}: parameter {i} is a {type(p).__name__}, not a Tensor")
    return params


def _like(arrays, params, where, what):
    """`arrays` (Tensors or arrays) as arrays on the parameters' devices, shapes checked."""
    arrays = list(arrays)
    if len(arrays) != len(params):
        raise ValueError(f"{where}: {what} has {len(arrays)} entries for {len(params)} parameters")
    out = []
    for i, (a, p) in enumerate(zip(arrays, params)):
        a = a.data if isinstance(a, Tensor) else a
        if tuple(a.shape) != tuple(p.shape):
            raise ValueError(f"{where}: {what}[{i}] has shape {tuple(a.shape)}, parameter {i} "
                             f"has shape {tuple(p.shape)}")
        out.append(backend.to_device(a, p.device))
    return out


def random_direction(params, normalize="filter", ignore="biasbn", seed=None):
    """A Gaussian random direction shaped like `params`, scaled to the parameters (Li et al. 2018).

    normalize="filter": each filter d_i (a row of an (out, in) weight: one unit's incoming
    weights) is rescaled to d_i * |theta_i| / |d_i|, so that a step along d changes every unit by
    the same relative amount and plots of networks with different weight scales compare.
    normalize="layer": the whole tensor instead; None: left as drawn.
    ignore="biasbn": one-dimensional parameters (biases, batch-norm scales) get d = 0, as in
    Li et al.'s code; ignore=None normalizes them as a single filter.
    seed: a private generator (the global stream is untouched); None uses the global one.
    """
    if normalize not in ("filter", "layer", None):
        raise ValueError(f"random_direction: normalize must be 'filter', 'layer' or None, "
                         f"got {normalize!r}")
    if ignore not in ("biasbn", None):
        raise ValueError(f"random_direction: ignore must be 'biasbn' or None, got {ignore!r}")
    params = _params(params, "random_direction")
    p0 = params[0].data
    xp = backend.xp_of(p0)
    dtype = xp.result_type(*[p.dtype for p in params])
    flat = _Probes(xp, dtype, backend.device_of(p0), seed).normal(sum(p.size for p in params))
    out = []
    for p, d in zip(params, unflatten(flat, params)):
        d = d.astype(p.dtype)
        w = p.data
        if d.ndim <= 1 and ignore == "biasbn":
            d = xp.zeros_like(w)
        elif normalize == "filter" and d.ndim >= 1:
            axes = tuple(range(1, d.ndim))
            dn = xp.sqrt((d * d).sum(axis=axes, keepdims=True)) if axes else xp.linalg.norm(d)
            wn = xp.sqrt((w * w).sum(axis=axes, keepdims=True)) if axes else xp.linalg.norm(w)
            d = d * (wn / (dn + 1e-10))
        elif normalize == "layer" or (normalize == "filter" and d.ndim == 0):
            d = d * (xp.linalg.norm(w) / (xp.linalg.norm(d) + 1e-10))
        out.append(Tensor(d, device=p.device))
    return out


def _evaluate(closure, params, points, where):
    """Loss at each parameter setting yielded by `points` (lists of arrays); restores params."""
    saved = [p.data.copy() for p in params]
    values = []
    try:
        with no_grad():
            for arrays in points:
                for p, a in zip(params, arrays):
                    p.data[...] = a
                loss = closure()
                if not isinstance(loss, Tensor) or loss.size != 1:
                    raise ValueError(f"{where}: the closure must return a one-element loss "
                                     f"Tensor, got {type(loss).__name__}")
                values.append(float(loss.item()))
    finally:
        for p, s in zip(params, saved):
            p.data[...] = s
    return np.array(values, dtype=float)


def _scalars(values, name, where):
    values = np.asarray(values, dtype=float).reshape(-1)
    if values.size == 0 or not np.all(np.isfinite(values)):
        raise ValueError(f"{where}: {name} must be a non-empty sequence of finite numbers")
    return values


def interpolate(closure, params, start, end, alphas):
    """L((1 - a) start + a end) for each a in alphas (Goodfellow, Vinyals & Saxe 2015).

    With start the initial and end the trained parameters, the curve shows whether training
    had to pass a barrier on the straight line between them.
    """
    params = _params(params, "interpolate")
    start = _like(start, params, "interpolate", "start")
    end = _like(end, params, "interpolate", "end")
    alphas = _scalars(alphas, "alphas", "interpolate")
    points = ([(1.0 - a) * s + a * e for s, e in zip(start, end)] for a in alphas)
    return _evaluate(closure, params, points, "interpolate")


def surface_1d(closure, params, direction, alphas):
    """L(theta + a d) for each a in alphas, theta the current parameters."""
    params = _params(params, "surface_1d")
    d = _like(direction, params, "surface_1d", "direction")
    alphas = _scalars(alphas, "alphas", "surface_1d")
    theta = [p.data.copy() for p in params]
    points = ([t + a * di for t, di in zip(theta, d)] for a in alphas)
    return _evaluate(closure, params, points, "surface_1d")


def surface_2d(closure, params, d1, d2, alphas, betas):
    """L(theta + a d1 + b d2) on the grid alphas x betas: shape (len(alphas), len(betas)).

    Li et al. 2018 draw this with two filter-normalized random directions (random_direction).
    """
    params = _params(params, "surface_2d")
    d1 = _like(d1, params, "surface_2d", "d1")
    d2 = _like(d2, params, "surface_2d", "d2")
    alphas = _scalars(alphas, "alphas", "surface_2d")
    betas = _scalars(betas, "betas", "surface_2d")
    theta = [p.data.copy() for p in params]
    points = ([t + a * u + b * v for t, u, v in zip(theta, d1, d2)]
              for a in alphas for b in betas)
    return _evaluate(closure, params, points, "surface_2d").reshape(len(alphas), len(betas))


def direction_between(start, end):
    """end - start as a list of Tensors (e.g. the training displacement, for surface_1d)."""
    def arr(a):
        return a.data if isinstance(a, Tensor) else a
    return [Tensor(arr(e) - arr(s)) for s, e in zip(start, end)]
