"""Shape and indexing ops: broadcast_to/sum_to (an adjoint pair), reshape, transpose,
indexing and its adjoint scatter, concatenate and stack.

None of them changes a value, so each backward is the adjoint shape move and each tangent
rule is the same move as the forward.
"""
from . import backend
from .engine import Function
from .ops import broadcast_to, permute, reshape_to, scatter, sum_to, zeros_like
from .ops import _sum_to_array
from .tensor import Tensor


# ==================================================================== broadcasting
class SumTo(Function):
    """y = x summed down to `shape` (the adjoint of broadcast_to)."""
    @staticmethod
    def forward(ctx, x, shape):
        return _sum_to_array(x, shape)

    @staticmethod
    def backward(ctx, g):
        return broadcast_to(g, ctx.inputs[0].shape)

    @staticmethod
    def jvp(ctx, t):
        return sum_to(t, ctx.out.shape)


class BroadcastTo(Function):
    """y = x broadcast to `shape` (the adjoint of sum_to)."""
    @staticmethod
    def forward(ctx, x, shape):
        return ctx.xp.broadcast_to(x, shape)

    @staticmethod
    def backward(ctx, g):
        return sum_to(g, ctx.inputs[0].shape)

    @staticmethod
    def jvp(ctx, t):
        return broadcast_to(t, ctx.out.shape)


# ======================================================================= shape ops
class Reshape(Function):
    """y = x with a new shape; the gradient is reshaped back."""
    @staticmethod
    def forward(ctx, x, shape):
        return x.reshape(shape)

    @staticmethod
    def backward(ctx, g):
        return reshape_to(g, ctx.inputs[0].shape)

    @staticmethod
    def jvp(ctx, t):
        return reshape_to(t, ctx.out.shape)


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

    @staticmethod
    def jvp(ctx, t):
        return permute(t, ctx.axes)


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

    @staticmethod
    def jvp(ctx, t):
        return t[ctx.index]


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

    @staticmethod
    def jvp(ctx, t):
        return scatter(t, ctx.index, ctx.out.shape)


def _index_part(p, xp):
    if type(p) is Tensor:
        return p.data
    if isinstance(p, list):         # [] is an empty integer index, as in NumPy's x[[]] for ints
        return xp.asarray(p) if p else xp.asarray(p, dtype=backend.np.intp)
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

    @staticmethod
    def jvp(ctx, *ts):
        parts = [zeros_like(x) if t is None else t for x, t in zip(ctx.inputs, ts)]
        if any(type(t) is Tensor for t in parts):
            return Concatenate.apply(*parts, axis=ctx.axis)
        return backend.xp_of(parts[0]).concatenate(parts, axis=ctx.axis)


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
