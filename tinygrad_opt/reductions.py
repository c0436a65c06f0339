"""Reductions: sum, max/min (one base), mean, logsumexp, var, std, norm, argmax/argmin.

Each backward broadcasts the output gradient back over the reduced axes; each tangent rule
reduces the input tangent the way the forward reduces the input.
"""
import math

from . import backend
from .engine import Function
from .ops import Abs, _axis, _data, _keepdims_shape, broadcast_to, reshape_to, where
from .shape_ops import reshape
from .tensor import Tensor

class Sum(Function):
    """y = sum of x over axis; dy/dx = 1 broadcast back."""
    @staticmethod
    def forward(ctx, x, axis=None, keepdims=False):
        ctx.axis, ctx.keepdims = axis, keepdims
        return x.sum(axis=axis, keepdims=keepdims)

    @staticmethod
    def backward(ctx, g):
        shape = ctx.inputs[0].shape
        if not ctx.keepdims:
            g = reshape_to(g, _keepdims_shape(shape, ctx.axis))
        return broadcast_to(g, shape)

    @staticmethod
    def jvp(ctx, t):
        return t.sum(axis=ctx.axis, keepdims=ctx.keepdims)


class _Extremum(Function):
    """y = max (or min) of x over axis; the gradient goes to the extrema, split evenly among
    ties. Its second derivative is zero almost everywhere. Subclasses name the reduction."""
    reduce = None                       # "max" or "min": the xp function

    @classmethod
    def forward(cls, ctx, x, axis=None, keepdims=False):
        if x.size == 0:
            raise ValueError(f"{cls.reduce} of an empty tensor of shape {tuple(x.shape)}")
        ctx.axis, ctx.keepdims = axis, keepdims
        xp = ctx.xp
        m = getattr(xp, cls.reduce)(x, axis=axis, keepdims=True)
        hit = (x == m) | (xp.isnan(x) & xp.isnan(m))     # a NaN extremum takes the gradient
        ctx.w = hit / hit.sum(axis=axis, keepdims=True).astype(x.dtype)
        return m if keepdims else m.reshape(_reduced_shape(x.shape, axis))

    @staticmethod
    def backward(ctx, g):
        shape = ctx.inputs[0].shape
        if not ctx.keepdims:
            g = reshape_to(g, _keepdims_shape(shape, ctx.axis))
        return g * ctx.w

    @staticmethod
    def jvp(ctx, t):
        return (t * ctx.w).sum(axis=ctx.axis, keepdims=ctx.keepdims)   # the tied entries' mean

    @classmethod
    def kink_distance(cls, ctx):
        """Gap between the largest and second-largest entries (0 at a tie)."""
        x = ctx.parents[0].data
        xp = backend.xp_of(x)
        d = xp.abs(getattr(xp, cls.reduce)(x, axis=ctx.axis, keepdims=True) - x)
        n_hit = (d == 0).sum(axis=ctx.axis)
        if bool((n_hit > 1).any()):
            return 0.0
        d = xp.where(d == 0, xp.inf, d)
        return float(d.min()) if d.size else math.inf


class Max(_Extremum):
    """y = max of x over axis (see _Extremum)."""
    reduce = "max"


class Min(_Extremum):
    """y = min of x over axis (see _Extremum)."""
    reduce = "min"


def _reduced_shape(shape, axis):
    if axis is None:
        return ()
    axes = (axis,) if isinstance(axis, int) else axis
    axes = {a % len(shape) for a in axes}
    return tuple(s for i, s in enumerate(shape) if i not in axes)


def mean(x, axis=None, keepdims=False):
    """Mean over axis: sum / count."""
    axis = _axis(axis)
    if axis is None:
        n = x.size
    else:
        axes = (axis,) if isinstance(axis, int) else axis
        n = 1
        for a in axes:
            n *= x.shape[a]
    # An empty reduction is NaN, as in NumPy and PyTorch (0 / 0), with an empty gradient.
    return Sum.apply(x, axis=axis, keepdims=keepdims) * (1.0 / n if n else math.nan)


def logsumexp(x, axis=None, keepdims=False):
    """log(sum(exp(x))) over axis, shifted by the (constant) max so it never overflows."""
    axis = _axis(axis)
    d = x.data
    xp = backend.xp_of(d)
    if d.size == 0:                 # the sum of no terms is 0: logsumexp is -inf (PyTorch)
        m = xp.zeros(_keepdims_shape(d.shape, axis), dtype=d.dtype)
    else:                           # an infinite max is no shift: all -inf gives -inf, +inf +inf
        m = d.max(axis=axis, keepdims=True)
        m = xp.where(xp.isfinite(m), m, 0)
    m = Tensor._wrap(m)
    out = m + (x - m).exp().sum(axis=axis, keepdims=True).log()
    return out if keepdims else reshape(out, *_reduced_shape(x.shape, axis))


def var(x, axis=None, keepdims=False, correction=1, *, dim=None, keepdim=None):
    """Variance over axis with PyTorch's default Bessel correction: sum((x - mean)^2) / (n - correction)."""
    axis, keepdims = reduction_args("var", axis, keepdims, dim, keepdim)
    axes = (axis,) if isinstance(axis, int) else axis
    n = x.size if axis is None else math.prod(x.shape[a] for a in axes)
    d = x - mean(x, axis, keepdims=True)
    scale = 1.0 / (n - correction) if n > correction else math.nan   # PyTorch: NaN, no error
    return Sum.apply(d * d, axis=axis, keepdims=keepdims) * scale


def std(x, axis=None, keepdims=False, correction=1, *, dim=None, keepdim=None):
    """Standard deviation: sqrt(var(x)), with var's correction."""
    return var(x, axis, keepdims, correction, dim=dim, keepdim=keepdim).sqrt()


def norm(x, p=2, axis=None, keepdims=False, *, dim=None, keepdim=None):
    """The p-norm over axis (all elements when None): p = 2 (default), 1, inf or any p > 0.

    At x = 0 the 2-norm's gradient is 0 (a subgradient, PyTorch's choice), not 0/0.
    """
    axis, keepdims = reduction_args("norm", axis, keepdims, dim, keepdim)
    if p == 2:
        s = Sum.apply(x * x, axis=axis, keepdims=keepdims)
        return Norm2.apply(s)
    if p == 1:
        return Sum.apply(Abs.apply(x), axis=axis, keepdims=keepdims)
    if p == math.inf:
        return Max.apply(Abs.apply(x), axis=axis, keepdims=keepdims)
    if not p > 0:
        raise ValueError(f"norm: p must be positive or inf, got {p}")
    return Sum.apply(Abs.apply(x) ** p, axis=axis, keepdims=keepdims) ** (1.0 / p)


class Norm2(Function):
    """y = sqrt(s) for a sum of squares s; dy/ds = 1 / (2y), and 0 where s = 0 (so that the
    2-norm's gradient at the origin is 0, not 0/0)."""
    @staticmethod
    def forward(ctx, s):
        return ctx.xp.sqrt(s)

    @staticmethod
    def backward(ctx, g):
        y = ctx.out
        return where(_data(y) > 0, g / (y * 2 + (_data(y) == 0)), 0.0)

    @staticmethod
    def jvp(ctx, t):
        y = ctx.out
        return where(_data(y) > 0, t / (y * 2 + (_data(y) == 0)), 0.0)


def argmax(x, axis=None, keepdims=False, *, dim=None, keepdim=None):
    """Index of the largest entry over axis (flat index when None): an integer Tensor, no graph."""
    axis, keepdims = reduction_args("argmax", axis, keepdims, dim, keepdim)
    d = x.data
    return Tensor._wrap(backend.xp_of(d).asarray(d.argmax(axis=axis, keepdims=keepdims)))


def argmin(x, axis=None, keepdims=False, *, dim=None, keepdim=None):
    """Index of the smallest entry over axis (flat index when None): an integer Tensor, no graph."""
    axis, keepdims = reduction_args("argmin", axis, keepdims, dim, keepdim)
    d = x.data
    return Tensor._wrap(backend.xp_of(d).asarray(d.argmin(axis=axis, keepdims=keepdims)))


def extremum(x, cls, arg, axis, keepdims, dim, keepdim):
    """Tensor.max/min: the values over axis; with dim= (PyTorch's spelling) the pair
    (values, indices), as torch.max(x, dim) returns it, so `x.max(dim=1)[0]` means what a
    PyTorch user expects."""
    name = cls.reduce
    axis, keepdims = reduction_args(name, axis, keepdims, dim, keepdim)
    values = cls.apply(x, axis=axis, keepdims=keepdims)
    if dim is None:
        return values
    if not isinstance(axis, int):
        raise TypeError(f"{name}: dim must be one int, got {dim!r}; use axis= for several axes")
    return MinMax(values, arg(x, axis, keepdims))


class MinMax(tuple):
    """(values, indices), PyTorch's torch.return_types.max/min."""
    __slots__ = ()

    def __new__(cls, values, indices):
        return tuple.__new__(cls, (values, indices))

    values = property(lambda self: self[0])
    indices = property(lambda self: self[1])


def reduction_args(name, axis, keepdims, dim, keepdim):
    """axis/keepdims, taking PyTorch's dim=/keepdim= as aliases (giving both is an error)."""
    if dim is not None:
        if axis is not None:
            raise TypeError(f"{name}: got both axis={axis!r} and dim={dim!r}; they are the same argument")
        axis = dim
    if keepdim is not None:
        if keepdims:
            raise TypeError(f"{name}: got both keepdims and keepdim; they are the same argument")
        keepdims = keepdim
    return _axis(axis), bool(keepdims)
