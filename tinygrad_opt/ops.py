"""The op catalogue: primitives (Function subclasses, forward beside backward) and composites.

Reductions live in reductions.py, shape and indexing ops in shape_ops.py, and the fused
layer and loss ops (Linear, LinearReLU, softmax, the cross-entropies) in fused.py; all are
re-exported here, so `ops.X` names every op.

Backward formulas use only operators and the dual-typed helpers below (sum_to,
broadcast_to, reshape, where, exp, log, ...), which accept raw arrays and Tensors alike:
the engine runs them on arrays for plain gradients and on Tensors under create_graph=True,
where they record a graph of their own and can be differentiated again.
"""
import math

from . import backend
from .engine import Function, layer_apply
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


def sin(x):
    """sin x for arrays or Tensors."""
    return Sin.apply(x) if type(x) is Tensor else backend.xp_of(x).sin(x)


def cos(x):
    """cos x for arrays or Tensors."""
    return Cos.apply(x) if type(x) is Tensor else backend.xp_of(x).cos(x)


def log1p(x):
    """log(1 + x) for arrays or Tensors."""
    return Log1p.apply(x) if type(x) is Tensor else backend.xp_of(x).log1p(x)


def expm1(x):
    """e^x - 1 for arrays or Tensors."""
    return Expm1.apply(x) if type(x) is Tensor else backend.xp_of(x).expm1(x)


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


def _data(x):
    return x.data if type(x) is Tensor else x


def zeros_like(x):
    """Zeros of x's shape, dtype and device, as an array (a constant)."""
    d = x.data if type(x) is Tensor else x
    return backend.xp_of(d).zeros(d.shape, dtype=d.dtype)


def tangent_sum(shape, *terms):
    """The sum of the tangent terms that are not None, broadcast to `shape` (None if none is)."""
    total = None
    for t in terms:
        if t is not None:
            total = t if total is None else total + t
    if total is None or total.shape == shape:
        return total
    return broadcast_to(total, shape)


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
def _dot_broadcast(g, vs, signs):
    """Add's and Sub's vjp_dot: sum_i signs[i] <g, v_i> with each v_i broadcast against g,
    whose derivative is the pair (g, sum_i signs[i] v_i broadcast to g's shape)."""
    c = None
    for i, v in vs.items():
        t = backend.xp_of(v).broadcast_to(v if signs[i] > 0 else -v, g.shape)
        c = t if c is None else c + t
    return [(g, c)]


def _data(a):
    return a.data if type(a) is Tensor else a


def _binary_error(name):
    def error_message(shapes, err):
        s = [str(x) if x is not None else "scalar" for x in shapes]
        return f"{name}: shapes {s[0]} and {s[1]} cannot be broadcast together ({err})"
    return staticmethod(error_message)


class Add(Function):
    """z = a + b; dz/da = dz/db = 1 (then undo broadcasting)."""
    error_message = _binary_error("add")
    _broadcast_grads = True

    @staticmethod
    def forward(ctx, a, b):
        return a + b

    @staticmethod
    def backward(ctx, g):
        # g for both, of the output's shape: the engine sums it to a broadcast input's
        # shape (_broadcast_grads), so this runs no shape test of its own
        na, nb = ctx.needs_input_grad
        return (g if na else None), (g if nb else None)

    @staticmethod
    def jvp(ctx, ta, tb):
        return tangent_sum(ctx.out.shape, ta, tb)

    @staticmethod
    def vjp_dot(ctx, g, vs):
        """sum_i <sum_to(g, shape_i), v_i> = sum_i <g, v_i broadcast>: hvp's dot term for a bias
        added with +, with no sum over the batch recorded."""
        return _dot_broadcast(g, vs, (1.0, 1.0))


class Sub(Function):
    """z = a - b; dz/da = 1, dz/db = -1."""
    error_message = _binary_error("sub")
    _broadcast_grads = True

    @staticmethod
    def forward(ctx, a, b):
        return a - b

    @staticmethod
    def backward(ctx, g):
        na, nb = ctx.needs_input_grad    # the engine sums to broadcast inputs, as for Add
        return (g if na else None), (-g if nb else None)

    @staticmethod
    def jvp(ctx, ta, tb):
        return tangent_sum(ctx.out.shape, ta, None if tb is None else -tb)

    @staticmethod
    def vjp_dot(ctx, g, vs):
        return _dot_broadcast(g, vs, (1.0, -1.0))


class Mul(Function):
    """z = a * b; dz/da = b, dz/db = a."""
    error_message = _binary_error("mul")
    _broadcast_grads = True

    @staticmethod
    def forward(ctx, a, b):
        return a * b

    @staticmethod
    def backward(ctx, g):
        a, b = ctx.inputs
        na, nb = ctx.needs_input_grad    # the engine sums to broadcast inputs, as for Add
        return (g * b if na else None), (g * a if nb else None)

    @staticmethod
    def jvp(ctx, ta, tb):
        a, b = ctx.inputs
        return tangent_sum(ctx.out.shape, None if ta is None else ta * b,
                           None if tb is None else a * tb)


class Div(Function):
    """z = a / b; dz/da = 1/b, dz/db = -a/b^2 = -z/b."""
    error_message = _binary_error("div")
    _broadcast_grads = True

    @staticmethod
    def forward(ctx, a, b):
        return a / b

    @staticmethod
    def backward(ctx, g):
        a, b = ctx.inputs
        na, nb = ctx.needs_input_grad
        # the engine sums to broadcast inputs, as for Add
        return (g / b if na else None), (-(g * ctx.out) / b if nb else None)

    @staticmethod
    def jvp(ctx, ta, tb):
        a, b = ctx.inputs
        return tangent_sum(ctx.out.shape, None if ta is None else ta / b,
                           None if tb is None else -(ctx.out * tb) / b)


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
        ga = sum_to(g * _pow_da(a, b), a.shape) if na else None
        gb = sum_to(g * _pow_db(a, b, ctx.out), b.shape) if nb else None
        return ga, gb

    @staticmethod
    def jvp(ctx, ta, tb):
        a, b = ctx.inputs
        return tangent_sum(ctx.out.shape, None if ta is None else ta * _pow_da(a, b),
                           None if tb is None else tb * _pow_db(a, b, ctx.out))


def _pow_da(a, b):
    """d(a^b)/da = b a^(b-1), and 0 where a == b == 0 (the formula gives 0 * inf there).

    Masking only that point keeps the mixed derivative d/db (b a^(b-1)) = a^(b-1) at b = 0,
    a != 0 (1/a), which a mask on b == 0 alone would zero."""
    if type(b) in (int, float):
        return b * a ** (b - 1) if b != 0 else 0 * a
    return where((_data(b) == 0) & (_data(a) == 0), 0.0, b * a ** (b - 1))


def _pow_db(a, b, out):
    """d(a^b)/db = a^b log a, and 0 where a == 0 and b >= 0 (PyTorch's answer: 0^b does not
    change with b there); a Python-number base <= 0 gives -inf or NaN, never a domain error."""
    if type(a) in (int, float):
        if a > 0:
            return out * math.log(a)
        if a < 0:
            return out * math.nan
        return where(_data(b) >= 0, 0.0, out * -math.inf)
    return where((_data(a) == 0) & (_data(b) >= 0), 0.0, out * log(a))


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
    def jvp(ctx, ta, tb):
        return tangent_sum(ctx.out.shape, None if ta is None else ta * ctx.wa,
                           None if tb is None else tb * (1 - ctx.wa))

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
    jvp = staticmethod(Maximum.jvp)
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

    @staticmethod
    def jvp(ctx, tc, ta, tb):
        cond = ctx.inputs[0]
        return tangent_sum(ctx.out.shape, None if ta is None else where(cond, ta, 0),
                           None if tb is None else where(cond, 0, tb))


# ================================================================== elementwise unary
class Neg(Function):
    """y = -x."""
    @staticmethod
    def forward(ctx, x):
        return -x

    @staticmethod
    def backward(ctx, g):
        return -g

    @staticmethod
    def jvp(ctx, t):
        return -t


class Exp(Function):
    """y = e^x; dy/dx = y."""
    @staticmethod
    def forward(ctx, x):
        return ctx.xp.exp(x)

    @staticmethod
    def backward(ctx, g):
        return g * ctx.out

    @staticmethod
    def jvp(ctx, t):
        return t * ctx.out


class Log(Function):
    """y = log x; dy/dx = 1/x."""
    @staticmethod
    def forward(ctx, x):
        return ctx.xp.log(x)

    @staticmethod
    def backward(ctx, g):
        return g / ctx.inputs[0]

    @staticmethod
    def jvp(ctx, t):
        return t / ctx.inputs[0]


class Sqrt(Function):
    """y = sqrt(x); dy/dx = 1 / (2y)."""
    @staticmethod
    def forward(ctx, x):
        return ctx.xp.sqrt(x)

    @staticmethod
    def backward(ctx, g):
        return g / (ctx.out * 2)

    @staticmethod
    def jvp(ctx, t):
        return t / (ctx.out * 2)


class Sin(Function):
    """y = sin x; dy/dx = cos x."""
    @staticmethod
    def forward(ctx, x):
        return ctx.xp.sin(x)

    @staticmethod
    def backward(ctx, g):
        return g * cos(ctx.inputs[0])

    @staticmethod
    def jvp(ctx, t):
        return t * cos(ctx.inputs[0])


class Cos(Function):
    """y = cos x; dy/dx = -sin x."""
    @staticmethod
    def forward(ctx, x):
        return ctx.xp.cos(x)

    @staticmethod
    def backward(ctx, g):
        return -(g * sin(ctx.inputs[0]))

    @staticmethod
    def jvp(ctx, t):
        return -(t * sin(ctx.inputs[0]))


class Log1p(Function):
    """y = log(1 + x), exact for tiny x; dy/dx = 1 / (1 + x)."""
    @staticmethod
    def forward(ctx, x):
        return ctx.xp.log1p(x)

    @staticmethod
    def backward(ctx, g):
        return g / (ctx.inputs[0] + 1)

    @staticmethod
    def jvp(ctx, t):
        return t / (ctx.inputs[0] + 1)


class Expm1(Function):
    """y = e^x - 1, exact for tiny x; dy/dx = e^x = y + 1."""
    @staticmethod
    def forward(ctx, x):
        return ctx.xp.expm1(x)

    @staticmethod
    def backward(ctx, g):
        return g * (ctx.out + 1)

    @staticmethod
    def jvp(ctx, t):
        return t * (ctx.out + 1)


class Tanh(Function):
    """y = tanh(x); dy/dx = 1 - y^2."""
    @staticmethod
    def forward(ctx, x):
        return ctx.xp.tanh(x)

    @staticmethod
    def backward(ctx, g):
        y = ctx.out
        return g * (1 - y * y)

    @staticmethod
    def jvp(ctx, t):
        y = ctx.out
        return t * (1 - y * y)

    @staticmethod
    def backward_jvp(ctx, g, tg, tangents, primal):
        """On arrays (hvp's R-op), with d = 1 - y^2 and dy = d tx:
        d(g d) = tg d - 2 g y dy."""
        y, tx = ctx.out, tangents[0]
        d = 1 - y * y
        t = None if tg is None else tg * d
        if tx is not None:
            u = g * y * d * tx * -2.0
            t = u if t is None else t + u
        return ((g * d if primal[0] else None, t),)


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

    @staticmethod
    def jvp(ctx, t):
        y = ctx.out
        return t * (y * (1 - y))

    @staticmethod
    def backward_jvp(ctx, g, tg, tangents, primal):
        """On arrays (hvp's R-op), with d = y (1 - y) and dy = d tx:
        d(g d) = tg d + g (1 - 2 y) dy."""
        y, tx = ctx.out, tangents[0]
        d = y * (1 - y)
        t = None if tg is None else tg * d
        if tx is not None:
            u = g * (1 - 2 * y) * d * tx
            t = u if t is None else t + u
        return ((g * d if primal[0] else None, t),)


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
    def jvp(ctx, t):
        return t * ctx.mask

    @staticmethod
    def backward_jvp(ctx, g, tg, tangents, primal):
        """The backward and its tangent, on arrays (hvp's R-op): the mask is constant a.e."""
        return ((g * ctx.mask if primal[0] else None, None if tg is None else tg * ctx.mask),)

    @staticmethod
    def reads_grad(ctx, tangents, primal):
        return primal[0]

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

    @staticmethod
    def jvp(ctx, t):
        return t * ctx.sign

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
    def jvp(ctx, t):
        return t if ctx.mask is None else t * ctx.mask

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

    @staticmethod
    def jvp(ctx, t):
        return cast(t, ctx.out.dtype)


class ToDevice(Function):
    """y = x on another device; the gradient moves back."""
    @staticmethod
    def forward(ctx, x, device):
        ctx.src = backend.device_of(x)
        return backend.to_device(x, device)

    @staticmethod
    def backward(ctx, g):
        return g.to(ctx.src) if type(g) is Tensor else backend.to_device(g, ctx.src)

    @staticmethod
    def jvp(ctx, t):
        dst = backend.device_of(ctx.out.data if type(ctx.out) is Tensor else ctx.out)
        return t.to(dst) if type(t) is Tensor else backend.to_device(t, dst)


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
    def jvp(ctx, ta, tb):
        a, b = ctx.inputs
        return tangent_sum(ctx.out.shape, None if ta is None else ta @ b,
                           None if tb is None else a @ tb)

    @staticmethod
    def vjp_dot(ctx, g, vs):
        """hvp's dot-mode term sum_i <grad of input i, vs[i]> as (Tensor, array) pairs (see
        engine.run_backward), on 2-D operands without forming the gradients:
        <G B^T, V> = <G, V B>, whose derivative is (G, V B) and (B, V^T G), and
        <A^T G, V> = <G, A V>, with (G, A V) and (A, G V^T)."""
        a, b = ctx.inputs
        pairs = []
        for i, v in vs.items():
            if a.ndim == 2 and b.ndim == 2:
                ad, bd, other = _data(a), _data(b), b if i == 0 else a
                pairs.append((g, v @ bd if i == 0 else ad @ v))
                if type(other) is Tensor and other._requires_grad:
                    pairs.append((other, v.T @ g.data if i == 0 else g.data @ v.T))
            else:
                pairs.append((sum_to(g @ swap_last(b), a.shape) if i == 0
                              else sum_to(swap_last(a) @ g, b.shape), v))
        return pairs

    @staticmethod
    def error_message(shapes, err):
        sa, sb = shapes
        if sa and sb and len(sa) >= 1 and len(sb) >= 1:
            k1, k2 = sa[-1], sb[-2] if len(sb) > 1 else sb[-1]
            if k1 != k2:
                return f"matmul: shapes {sa} and {sb} do not align ({k1} != {k2})"
        return f"matmul: cannot multiply shapes {sa} and {sb} ({err})"


def matmul(a, b):
    """a @ b with NumPy's rules for 1-D operands (promoted, then squeezed).

    x @ W.T for a recorded transpose of a 2-D W is one Linear node on W itself: the course
    spelling of a layer then builds nn.Linear's graph (no transpose node, no transposed
    gradient), and hvp's dot mode reaches W through it, so both spellings cost the same.
    """
    if type(b) is Tensor:
        n = b._node
        if (type(n) is Transpose and n.parents is not None and n.axes in (None, (1, 0))
                and b.data.ndim == 2 and type(a) is Tensor and a.data.ndim >= 2
                and a.data.shape[-1] == b.data.shape[0]):     # else MatMul names the mismatch
            if a.data.dtype is not b.data.dtype:              # products never promote
                err = backend.product_dtype_error("matmul", a.dtype, b.dtype,
                                                  ("left operand", "right operand"))
                if err is not None:
                    raise err
            return layer_apply(Linear, a, n.parents[0], None)
    if type(a) is not Tensor and not backend.is_array(a):
        a = Tensor(a)
    if type(b) is not Tensor and not backend.is_array(b):
        b = Tensor(b)
    if a.ndim == 0 or b.ndim == 0:
        raise ValueError(f"matmul: shapes {tuple(a.shape)} and {tuple(b.shape)}: scalar operands "
                         "are not allowed, use * instead")
    err = backend.product_dtype_error("matmul", a.dtype, b.dtype, ("left operand", "right operand"))
    if err is not None:
        raise err
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
    ClassCrossEntropy, ClassCrossEntropyGrad, Linear, LinearReLU,
    LogSoftmax, Softmax, SoftmaxCrossEntropy, Softplus, affine, bias_into_linear, linear,
    linear_relu, log_softmax, relu, softmax, softmax_cross_entropy, softplus)
from .reductions import (  # noqa: E402,F401  (reductions.py builds on the helpers above)
    Max, Min, Norm2, Sum, argmax, argmin, extremum, logsumexp, mean, norm, reduction_args, std,
    var)
from .shape_ops import (  # noqa: E402,F401  (shape_ops.py builds on the helpers above)
    BroadcastTo, Concatenate, GetItem, Reshape, Scatter, SumTo, Transpose, concatenate, getitem,
    reshape, stack, transpose)
