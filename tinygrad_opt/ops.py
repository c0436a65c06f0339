"""The op catalogue: primitives (Function subclasses, forward beside backward) and composites.

The fused layer and loss ops (Linear, LinearReLU, softmax, the cross-entropies) live in
fused.py and are re-exported here, so `ops.X` names every op.

Backward formulas use only operators and the dual-typed helpers below (sum_to,
broadcast_to, reshape, where, exp, log, ...), which accept raw arrays and Tensors alike:
the engine runs them on arrays for plain gradients and on Tensors under create_graph=True,
where they record a graph of their own and can be differentiated again.
"""
import math

from . import backend
from .engine import Function
from .tensor import Tensor



# ============================================================ dual-typed backward helpers
def _sum_to_array(x, shape):
    lead = x.ndim - len(shape)
    if lead == 1 and x.shape[1:] == shape:        # a bias: sum over the batch axis
        return x.sum(axis=0)
    kept = tuple(i + lead for i, s in enumerate(shape) if s == 1 and x.shape[i + lead] != 1)
    if kept:
        x = x.sum(axis=kept, keepdims=True)
    if lead:
        # summing the leading axes away (not keepdims + reshape) returns a fresh array,
        # which the engine can then own instead of copying a view
        x = x.sum(axis=tuple(range(lead)))
    return x


def sum_to(x, shape):
    """Sum x over its broadcast axes so it has `shape` (undoes broadcasting)."""
    if x.shape == shape:          # the common case, checked before any conversion
        return x
    shape = tuple(shape)
    if x.shape == shape:
        return x
    if type(x) is Tensor:
        return SumTo.apply(x, shape=shape)
    return _sum_to_array(x, shape)


def broadcast_to(x, shape):
    """x broadcast to `shape` (a read-only view for arrays)."""
    shape = tuple(shape)
    if x.shape == shape:
        return x
    if type(x) is Tensor:
        return BroadcastTo.apply(x, shape=shape)
    if type(x) is backend.ndarray and math.prod(shape) <= _SMALL_COPY:
        # numpy's broadcast_to spends ~3.5 us in Python; filling a small new array takes ~0.5,
        # and the engine may then accumulate into it in place (a view it would have to copy)
        out = backend.np.empty(shape, dtype=x.dtype)
        out[...] = x
        return out
    return backend.xp_of(x).broadcast_to(x, shape)


_SMALL_COPY = 1 << 14               # elements: below this a copy is cheaper than a view


def reshape_to(x, shape):
    """x reshaped (arrays or Tensors)."""
    if type(x) is Tensor:
        return reshape(x, *shape)
    return x.reshape(shape)


def permute(x, axes=None):
    """x with axes permuted (arrays or Tensors)."""
    if type(x) is Tensor:
        return Transpose.apply(x, axes=axes)
    return x.transpose(axes)


def swap_last(x):
    """x with its last two axes swapped: the matrix transpose of a (batched) matrix."""
    if type(x) is Tensor:
        axes = tuple(range(x.ndim - 2)) + (x.ndim - 1, x.ndim - 2)
        return Transpose.apply(x, axes=axes)
    return x.swapaxes(-1, -2)


def where(cond, a, b):
    """Elementwise cond ? a : b; differentiable in a and b."""
    if type(cond) is Tensor:
        cond = cond.data
    if type(a) is Tensor or type(b) is Tensor:
        return Where.apply(cond, a, b)
    return backend.xp_of(cond).where(cond, a, b)


def exp(x):
    """e**x for arrays or Tensors."""
    return x.exp() if type(x) is Tensor else backend.xp_of(x).exp(x)


def log(x):
    """Natural log for arrays, Tensors or Python numbers."""
    if type(x) is Tensor:
        return x.log()
    if backend.is_array(x):
        return backend.xp_of(x).log(x)
    return math.log(x)


def sigmoid(x):
    """1 / (1 + e^-x) for arrays or Tensors."""
    if type(x) is Tensor:
        return x.sigmoid()
    return Sigmoid.forward(_Ctx(backend.xp_of(x), None), x)


def cast(x, dtype):
    """x as `dtype` (differentiable for Tensors)."""
    if type(x) is Tensor:
        return x.astype(dtype)
    return x.astype(dtype, copy=False)


def scatter(g, index, shape):
    """A zero array of `shape` with g added at `index` (the adjoint of x[index])."""
    if type(g) is Tensor:
        return Scatter.apply(g, index=index, shape=tuple(shape))
    return Scatter.forward(_Ctx(backend.xp_of(g), index), g, index=index, shape=tuple(shape))


class _Ctx:
    __slots__ = ("xp", "index")

    def __init__(self, xp, index):
        self.xp, self.index = xp, index


def _axis(axis):
    if axis is None or isinstance(axis, int):
        return axis
    return tuple(int(a) for a in axis)


def _keepdims_shape(shape, axis):
    """`shape` with the reduced axes kept as 1."""
    if axis is None:
        return (1,) * len(shape)
    axes = (axis,) if isinstance(axis, int) else axis
    nd = len(shape)
    axes = {a % nd for a in axes}
    return tuple(1 if i in axes else s for i, s in enumerate(shape))


def _grad_like(t, grad, where_):
    """grad (Tensor, array or scalar) as an array matching tensor t's shape, dtype and device."""
    if type(grad) is Tensor:
        grad = grad.data
    xp = backend.xp_of(t.data)
    if backend.is_array(grad):
        if backend.device_of(grad) != t.device:
            raise RuntimeError(f"{where_}: grad is on {backend.device_of(grad)} but the tensor is on {t.device}")
        g = grad
    else:
        g = xp.asarray(grad, dtype=t.dtype)
    if tuple(g.shape) != t.shape:
        if g.size == 1 and t.data.size == 1:
            g = g.reshape(t.shape)
        else:
            raise RuntimeError(f"{where_}: grad has shape {tuple(g.shape)} but the output has shape {t.shape}")
    if g.dtype != t.dtype:
        g = g.astype(t.dtype)
    return g


# ================================================================= elementwise binary
def _binary_error(name):
    def error_message(shapes, err):
        s = [str(x) if x is not None else "scalar" for x in shapes]
        return f"{name}: shapes {s[0]} and {s[1]} cannot be broadcast together ({err})"
    return staticmethod(error_message)


class Add(Function):
    """z = a + b; dz/da = dz/db = 1 (then undo broadcasting)."""
    error_message = _binary_error("add")

    @staticmethod
    def forward(ctx, a, b):
        return a + b

    @staticmethod
    def backward(ctx, g):
        a, b = ctx.inputs
        na, nb = ctx.needs_input_grad
        # the tests inline what sum_to checks first (this runs for every add); beside a Python
        # float the other input has the output's shape, so no shape needs reading at all
        ga = (g if type(b) is float or g.shape == a.shape else sum_to(g, a.shape)) if na else None
        gb = (g if type(a) is float or g.shape == b.shape else sum_to(g, b.shape)) if nb else None
        return ga, gb


class Sub(Function):
    """z = a - b; dz/da = 1, dz/db = -1."""
    error_message = _binary_error("sub")

    @staticmethod
    def forward(ctx, a, b):
        return a - b

    @staticmethod
    def backward(ctx, g):
        a, b = ctx.inputs
        na, nb = ctx.needs_input_grad
        return (sum_to(g, a.shape) if na else None), (sum_to(-g, b.shape) if nb else None)


class Mul(Function):
    """z = a * b; dz/da = b, dz/db = a."""
    error_message = _binary_error("mul")

    @staticmethod
    def forward(ctx, a, b):
        return a * b

    @staticmethod
    def backward(ctx, g):
        a, b = ctx.inputs
        na, nb = ctx.needs_input_grad
        ga = gb = None
        if na:
            ga = g * b
            if type(b) is not float and ga.shape != a.shape:     # as in Add.backward
                ga = sum_to(ga, a.shape)
        if nb:
            gb = g * a
            if type(a) is not float and gb.shape != b.shape:
                gb = sum_to(gb, b.shape)
        return ga, gb


class Div(Function):
    """z = a / b; dz/da = 1/b, dz/db = -a/b^2 = -z/b."""
    error_message = _binary_error("div")

    @staticmethod
    def forward(ctx, a, b):
        return a / b

    @staticmethod
    def backward(ctx, g):
        a, b = ctx.inputs
        na, nb = ctx.needs_input_grad
        ga = sum_to(g / b, a.shape) if na else None
        gb = sum_to(-(g * ctx.out) / b, b.shape) if nb else None
        return ga, gb


class Pow(Function):
    """z = a ** b; dz/da = b a^(b-1), dz/db = z log a."""
    error_message = _binary_error("pow")

    @staticmethod
    def forward(ctx, a, b):
        return a ** b

    @staticmethod
    def backward(ctx, g):
        a, b = ctx.inputs
        na, nb = ctx.needs_input_grad
        ga = sum_to(g * (b * a ** (b - 1)), a.shape) if na else None
        gb = sum_to(g * ctx.out * log(a), b.shape) if nb else None
        return ga, gb


def pow(a, b):
    """a ** b; a constant exponent 2 becomes a*a (cheaper, same derivatives)."""
    if type(a) is Tensor and type(b) is not Tensor and not backend.is_array(b) and b == 2:
        return Mul.apply(a, a)
    return Pow.apply(a, b)


class Maximum(Function):
    """z = max(a, b) elementwise; the gradient goes to the larger input, split evenly at ties."""
    error_message = _binary_error("maximum")

    @staticmethod
    def forward(ctx, a, b):
        out = ctx.xp.maximum(a, b)
        ctx.wa = (a > b) + (a == b) * out.dtype.type(0.5)
        return out

    @staticmethod
    def backward(ctx, g):
        a, b = ctx.inputs
        na, nb = ctx.needs_input_grad
        return (sum_to(g * ctx.wa, a.shape) if na else None,
                sum_to(g * (1 - ctx.wa), b.shape) if nb else None)

    @staticmethod
    def kink_distance(ctx):
        a, b = (p.data if type(p) is Tensor else p for p in ctx.parents)
        return float(backend.xp_of(a if backend.is_array(a) else b).abs(a - b).min())


class Minimum(Function):
    """z = min(a, b) elementwise; the gradient goes to the smaller input, split evenly at ties."""
    error_message = _binary_error("minimum")

    @staticmethod
    def forward(ctx, a, b):
        out = ctx.xp.minimum(a, b)
        ctx.wa = (a < b) + (a == b) * out.dtype.type(0.5)
        return out

    backward = staticmethod(Maximum.backward)
    kink_distance = staticmethod(Maximum.kink_distance)


class Where(Function):
    """z = cond ? a : b; the gradient flows to whichever input was chosen."""

    @staticmethod
    def forward(ctx, cond, a, b):
        return ctx.xp.where(cond, a, b)

    @staticmethod
    def backward(ctx, g):
        cond, a, b = ctx.inputs
        _, na, nb = ctx.needs_input_grad
        return (None,
                sum_to(where(cond, g, 0), a.shape) if na else None,
                sum_to(where(cond, 0, g), b.shape) if nb else None)


# ================================================================== elementwise unary
class Neg(Function):
    """y = -x."""
    @staticmethod
    def forward(ctx, x):
        return -x

    @staticmethod
    def backward(ctx, g):
        return -g


class Exp(Function):
    """y = e^x; dy/dx = y."""
    @staticmethod
    def forward(ctx, x):
        return ctx.xp.exp(x)

    @staticmethod
    def backward(ctx, g):
        return g * ctx.out


class Log(Function):
    """y = log x; dy/dx = 1/x."""
    @staticmethod
    def forward(ctx, x):
        return ctx.xp.log(x)

    @staticmethod
    def backward(ctx, g):
        return g / ctx.inputs[0]


class Sqrt(Function):
    """y = sqrt(x); dy/dx = 1 / (2y)."""
    @staticmethod
    def forward(ctx, x):
        return ctx.xp.sqrt(x)

    @staticmethod
    def backward(ctx, g):
        return g / (ctx.out * 2)


class Tanh(Function):
    """y = tanh(x); dy/dx = 1 - y^2."""
    @staticmethod
    def forward(ctx, x):
        return ctx.xp.tanh(x)

    @staticmethod
    def backward(ctx, g):
        y = ctx.out
        return g * (1 - y * y)


class Sigmoid(Function):
    """y = 1 / (1 + e^-x); dy/dx = y (1 - y)."""
    @staticmethod
    def forward(ctx, x):
        xp = ctx.xp
        # sigmoid(x) = (1 + tanh(x/2)) / 2 never overflows, unlike 1 / (1 + exp(-x))
        y = xp.tanh(x * 0.5)
        y += 1
        y *= 0.5
        return y

    @staticmethod
    def backward(ctx, g):
        y = ctx.out
        return g * (y * (1 - y))


class ReLU(Function):
    """y = max(x, 0); dy/dx = [x > 0] (0 at the kink). Its second derivative is 0 a.e."""
    @staticmethod
    def forward(ctx, x):
        if type(x) is not backend.ndarray:
            out, ctx.mask = _relu_gpu(x)
            return out
        ctx.mask = x > 0
        return x * ctx.mask

    @staticmethod
    def backward(ctx, g):
        return g * ctx.mask

    @staticmethod
    def kink_distance(ctx):
        x = ctx.parents[0].data
        return float(backend.xp_of(x).abs(x).min())


def _relu_gpu(x):
    """(max(x, 0), x > 0) from one GPU kernel."""
    return backend.elementwise_kernel(
        "T x", "T y, bool mask", "mask = x > 0; y = x * (T)mask", "tinygrad_opt_relu")(x)


class Abs(Function):
    """y = |x|; dy/dx = sign(x), 0 at the kink (the mean of -1 and 1)."""
    @staticmethod
    def forward(ctx, x):
        ctx.sign = ctx.xp.sign(x)
        return ctx.xp.abs(x)

    @staticmethod
    def backward(ctx, g):
        return g * ctx.sign

    kink_distance = staticmethod(ReLU.kink_distance)


class Clip(Function):
    """y = min(max(x, lo), hi); dy/dx = 1 inside [lo, hi], 0 outside."""
    @staticmethod
    def forward(ctx, x, lo=None, hi=None):
        if lo is not None and hi is not None and lo > hi:
            raise ValueError(f"clip: lo={lo} is greater than hi={hi}")
        mask = None
        if lo is not None:
            mask = x >= lo
        if hi is not None:
            mask = (x <= hi) if mask is None else (mask & (x <= hi))
        ctx.mask = mask
        ctx.bounds = (lo, hi)
        return x if mask is None else ctx.xp.clip(x, lo, hi)

    @staticmethod
    def backward(ctx, g):
        return g if ctx.mask is None else g * ctx.mask

    @staticmethod
    def kink_distance(ctx):
        x = ctx.parents[0].data
        xp = backend.xp_of(x)
        d = [float(xp.abs(x - b).min()) for b in ctx.bounds if b is not None]
        return min(d) if d else math.inf


class Cast(Function):
    """y = x as another dtype; the gradient is cast back."""
    @staticmethod
    def forward(ctx, x, dtype):
        return x.astype(dtype)

    @staticmethod
    def backward(ctx, g):
        return cast(g, ctx.inputs[0].dtype)


class ToDevice(Function):
    """y = x on another device; the gradient moves back."""
    @staticmethod
    def forward(ctx, x, device):
        ctx.src = backend.device_of(x)
        return backend.to_device(x, device)

    @staticmethod
    def backward(ctx, g):
        return g.to(ctx.src) if type(g) is Tensor else backend.to_device(g, ctx.src)


# ========================================================================= reductions
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


class _Extremum(Function):
    """y = max (or min) of x over axis; the gradient goes to the extrema, split evenly among
    ties. Its second derivative is zero almost everywhere. Subclasses name the reduction."""
    reduce = None                       # "max" or "min": the xp function

    @classmethod
    def forward(cls, ctx, x, axis=None, keepdims=False):
        if x.size == 0:
            raise ValueError(f"{cls.reduce} of an empty tensor of shape {tuple(x.shape)}")
        ctx.axis, ctx.keepdims = axis, keepdims
        m = getattr(ctx.xp, cls.reduce)(x, axis=axis, keepdims=True)
        hit = x == m
        ctx.w = hit / hit.sum(axis=axis, keepdims=True).astype(x.dtype)
        return m if keepdims else m.reshape(_reduced_shape(x.shape, axis))

    @staticmethod
    def backward(ctx, g):
        shape = ctx.inputs[0].shape
        if not ctx.keepdims:
            g = reshape_to(g, _keepdims_shape(shape, ctx.axis))
        return g * ctx.w

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
    return Sum.apply(x, axis=axis, keepdims=keepdims) * (1.0 / n)


def logsumexp(x, axis=None, keepdims=False):
    """log(sum(exp(x))) over axis, shifted by the (constant) max so it never overflows."""
    axis = _axis(axis)
    m = Tensor._wrap(x.data.max(axis=axis, keepdims=True))
    out = m + (x - m).exp().sum(axis=axis, keepdims=True).log()
    return out if keepdims else reshape(out, *_reduced_shape(x.shape, axis))


class SumTo(Function):
    """y = x summed down to `shape` (the adjoint of broadcast_to)."""
    @staticmethod
    def forward(ctx, x, shape):
        return _sum_to_array(x, shape)

    @staticmethod
    def backward(ctx, g):
        return broadcast_to(g, ctx.inputs[0].shape)


class BroadcastTo(Function):
    """y = x broadcast to `shape` (the adjoint of sum_to)."""
    @staticmethod
    def forward(ctx, x, shape):
        return ctx.xp.broadcast_to(x, shape)

    @staticmethod
    def backward(ctx, g):
        return sum_to(g, ctx.inputs[0].shape)


# ======================================================================= shape ops
class Reshape(Function):
    """y = x with a new shape; the gradient is reshaped back."""
    @staticmethod
    def forward(ctx, x, shape):
        return x.reshape(shape)

    @staticmethod
    def backward(ctx, g):
        return reshape_to(g, ctx.inputs[0].shape)


def reshape(x, *shape):
    """x with a new shape; accepts reshape(2, 3) and reshape((2, 3))."""
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        shape = tuple(shape[0])
    if tuple(shape) == x.shape:
        return x
    return Reshape.apply(x, shape=tuple(shape))


class Transpose(Function):
    """y = x with axes permuted; the gradient takes the inverse permutation."""
    @staticmethod
    def forward(ctx, x, axes=None):
        ctx.axes = axes
        return x.transpose(axes)

    @staticmethod
    def backward(ctx, g):
        axes = ctx.axes
        if axes is None:
            return permute(g)
        inv = [0] * len(axes)
        for i, a in enumerate(axes):
            inv[a] = i
        return permute(g, tuple(inv))


def transpose(x, *axes):
    """x with axes permuted (reversed when none are given), like NumPy."""
    if len(axes) == 1 and isinstance(axes[0], (tuple, list)):
        axes = tuple(axes[0])
    if axes and sorted(a % x.ndim for a in axes) != list(range(x.ndim)):
        raise ValueError(f"transpose: axes {axes} are not a permutation of a tensor of shape {x.shape}")
    return Transpose.apply(x, axes=tuple(a % x.ndim for a in axes) if axes else None)


def _is_basic(index):
    parts = index if isinstance(index, tuple) else (index,)
    return all(p is None or p is Ellipsis or isinstance(p, (int, slice)) for p in parts)


class GetItem(Function):
    """y = x[index] (basic or integer-array indexing); the gradient is scattered back."""
    @staticmethod
    def forward(ctx, x, index):
        ctx.index = index
        return x[index]

    @staticmethod
    def backward(ctx, g):
        return scatter(g, ctx.index, ctx.inputs[0].shape)


class Scatter(Function):
    """y = zeros(shape) with g added at index (repeated indices add up); adjoint of GetItem."""
    @staticmethod
    def forward(ctx, g, index, shape):
        ctx.index = index
        out = ctx.xp.zeros(shape, dtype=g.dtype)
        if _is_basic(index):
            out[index] = g
        else:
            backend.scatter_add(out, index, g)
        return out

    @staticmethod
    def backward(ctx, gg):
        return gg[ctx.index]


def _index_part(p, xp):
    if type(p) is Tensor:
        return p.data
    if isinstance(p, list):
        return xp.asarray(p)
    return p


def getitem(x, index):
    """x[index]: ints, slices, None, Ellipsis, integer or boolean arrays/Tensors/lists."""
    xp = backend.xp_of(x.data)
    index = tuple(_index_part(p, xp) for p in index) if isinstance(index, tuple) else _index_part(index, xp)
    try:
        return GetItem.apply(x, index=index)
    except IndexError as e:
        raise IndexError(f"getitem: index {index!r} is out of range for a tensor of shape {x.shape} ({e})") from None


class Concatenate(Function):
    """y = inputs joined along axis; the gradient is split back into pieces."""
    @staticmethod
    def forward(ctx, *xs, axis=0):
        ctx.axis = axis
        return ctx.xp.concatenate(xs, axis=axis)

    @staticmethod
    def backward(ctx, g):
        axis = ctx.axis % g.ndim
        grads, start = [], 0
        for x, need in zip(ctx.inputs, ctx.needs_input_grad):
            n = x.shape[axis]
            if need:
                grads.append(g[(slice(None),) * axis + (slice(start, start + n),)])
            else:
                grads.append(None)
            start += n
        return tuple(grads)


def concatenate(tensors, axis=0):
    """Join tensors along an existing axis, like numpy.concatenate."""
    tensors = [t if type(t) is Tensor else Tensor(t) for t in tensors]
    if not tensors:
        raise ValueError("concatenate: need at least one tensor")
    nd = tensors[0].ndim
    for t in tensors:
        if t.ndim != nd:
            raise ValueError(f"concatenate: all tensors need the same number of dimensions, "
                             f"got shapes {[u.shape for u in tensors]}")
    return Concatenate.apply(*tensors, axis=axis)


def stack(tensors, axis=0):
    """Join tensors along a new axis, like numpy.stack."""
    tensors = [t if type(t) is Tensor else Tensor(t) for t in tensors]
    if not tensors:
        raise ValueError("stack: need at least one tensor")
    shape = tensors[0].shape
    for t in tensors:
        if t.shape != shape:
            raise ValueError(f"stack: all tensors need the same shape, got {[u.shape for u in tensors]}")
    nd = len(shape) + 1
    if not -nd <= axis < nd:
        raise ValueError(f"stack: axis {axis} is out of range for {nd}-d output")
    a = axis % nd
    new = shape[:a] + (1,) + shape[a:]
    return Concatenate.apply(*[reshape(t, *new) for t in tensors], axis=a)


# ========================================================================== matmul
class MatMul(Function):
    """C = A @ B (batched over leading axes); dA = G B^T, dB = A^T G (then undo broadcasting)."""
    @staticmethod
    def forward(ctx, a, b):
        return a @ b

    @staticmethod
    def backward(ctx, g):
        a, b = ctx.inputs
        na, nb = ctx.needs_input_grad
        return (sum_to(g @ swap_last(b), a.shape) if na else None,
                sum_to(swap_last(a) @ g, b.shape) if nb else None)

    @staticmethod
    def vjp_dot(ctx, g, vs):
        """sum_i <grad of input i, vs[i]> for hvp's dot mode, on 2-D operands without forming
        the gradients: <G B^T, V> = <G, V B> and <A^T G, V> = <G, A V>."""
        a, b = ctx.inputs
        total = None
        for i, v in vs.items():
            if a.ndim == 2 and b.ndim == 2:
                t = (g * (matmul(v, b) if i == 0 else matmul(a, v))).sum()
            else:
                gx = sum_to(g @ swap_last(b), a.shape) if i == 0 else sum_to(swap_last(a) @ g, b.shape)
                t = (gx * v).sum()
            total = t if total is None else total + t
        return total

    @staticmethod
    def error_message(shapes, err):
        sa, sb = shapes
        if sa and sb and len(sa) >= 1 and len(sb) >= 1:
            k1, k2 = sa[-1], sb[-2] if len(sb) > 1 else sb[-1]
            if k1 != k2:
                return f"matmul: shapes {sa} and {sb} do not align ({k1} != {k2})"
        return f"matmul: cannot multiply shapes {sa} and {sb} ({err})"


def matmul(a, b):
    """a @ b with NumPy's rules for 1-D operands (promoted, then squeezed)."""
    if type(a) is not Tensor and not backend.is_array(a):
        a = Tensor(a)
    if type(b) is not Tensor and not backend.is_array(b):
        b = Tensor(b)
    if a.ndim == 0 or b.ndim == 0:
        raise ValueError(f"matmul: shapes {tuple(a.shape)} and {tuple(b.shape)}: scalar operands "
                         "are not allowed, use * instead")
    if a.ndim >= 2 and b.ndim >= 2:
        return MatMul.apply(a, b)
    if a.ndim == 1 and b.ndim == 1:
        if a.shape != b.shape:
            raise ValueError(f"matmul: shapes {tuple(a.shape)} and {tuple(b.shape)} do not align "
                             f"({a.shape[0]} != {b.shape[0]})")
        return Sum.apply(Mul.apply(a, b))
    if a.ndim == 1:
        out = MatMul.apply(_promote(a, (1, -1)), b)
        return _squeeze_axis(out, -2)
    out = MatMul.apply(a, _promote(b, (-1, 1)))
    return _squeeze_axis(out, -1)


def _promote(x, shape):
    return reshape(x, *shape) if type(x) is Tensor else x.reshape(shape)


def _squeeze_axis(x, axis):
    shape = list(x.shape)
    del shape[axis]
    return reshape(x, *shape)


# ======================================================================= comparisons
def compare(a, b, name):
    """Elementwise comparison as a bool Tensor (not differentiable)."""
    ad = a.data if type(a) is Tensor else a
    bd = b.data if type(b) is Tensor else b
    xp = backend.xp_of(ad if backend.is_array(ad) else bd)
    try:
        return Tensor._wrap(xp.asarray(getattr(xp, name)(ad, bd)))
    except ValueError as e:
        raise ValueError(f"{name}: shapes {getattr(ad, 'shape', ())} and {getattr(bd, 'shape', ())} "
                         f"cannot be broadcast together ({e})") from None


from .fused import (  # noqa: E402,F401  (fused.py builds on the helpers above)
    ClassCrossEntropy, Linear, LinearDot, LinearReLU, LogSoftmax, Softmax, SoftmaxCrossEntropy,
    Softplus, affine, linear, linear_relu, log_softmax, softmax, softmax_cross_entropy, softplus)
