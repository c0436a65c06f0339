"""The speed primitives: fused layer and loss ops that the catalogue in ops.py could write as
composites, made single nodes because they are measurably faster or more stable that way.

Each is still forward beside backward (and its tangent rule), written with the dual-typed
helpers of ops.py, so everything said there holds here: plain gradients on arrays, recorded
ones under create_graph, tangents in forward mode.
"""
from . import backend, versions
from . import engine as _engine
from .engine import Function, _new, _record
from .ops import (ReLU, _relu_gpu, exp, reshape_to, sigmoid, sum_to, swap_last,
                  tangent_sum)
from .tensor import Tensor

# NumPy's sum called directly where every layer pays for it: arr.sum() passes through a
# Python-level wrapper first, which costs as much as the sum itself on a bias gradient.
_ndarray = backend.ndarray
_add_reduce = backend.np.add.reduce
_maximum = backend.np.maximum


# ============================================================================ layers
def affine(x, W, b=None):
    """x @ W^T (+ b): the product every layer op computes, on arrays (a new array, b added in
    place) or on Tensors (one Linear node)."""
    if type(x) is Tensor or type(W) is Tensor or type(b) is Tensor:
        return Linear.apply(x, W, b)
    out = x @ W.T
    if b is not None:
        out += b
    return out


class Linear(Function):
    """y = x @ W^T + b, fused; dx = G W, dW = G^T x, db = sum of G over the batch.

    One op instead of transpose, matmul and add: fewer nodes, no transposed copies.
    """
    @staticmethod
    def forward(ctx, x, W, b=None):
        return affine(x, W, b)

    @staticmethod
    def backward(ctx, g):
        x, W, b = ctx.inputs
        nx, nW, nb = ctx.needs_input_grad
        return _linear_grads(g, x, W, b, nx, nW, nb)

    @staticmethod
    def jvp(ctx, tx, tW, tb):
        x, W, b = ctx.inputs
        return _affine_tangent(ctx.out.shape, x, W, tx, tW, tb)

    @staticmethod
    def backward_jvp(ctx, g, tg, tangents, primal):
        """The backward and its tangent, on arrays (hvp's R-op; see _linear_backward_jvp)."""
        return _linear_backward_jvp(ctx, g, tg, tangents, primal)

    @staticmethod
    def reads_grad(ctx, tangents, primal):
        """Whether backward_jvp reads G (a first layer's, with a constant input, does not)."""
        return _linear_reads_grad(ctx, tangents, primal)

    @staticmethod
    def vjp_dot(ctx, g, vs):
        """hvp's dot-mode term sum_i <grad of input i, vs[i]> as (Tensor, array) pairs, without
        forming the gradients (see _linear_dot_pairs)."""
        return _linear_dot_pairs(ctx, g, None, vs)

    @staticmethod
    def error_message(shapes, err):
        sx, sW = shapes[0], shapes[1]
        return (f"linear: input of shape {sx} does not match weight of shape {sW} "
                f"(expected last input dim {sW[-1] if sW else '?'}) ({err})")


def bias_into_linear(a, b, da, db):
    """a + b as one Linear(x, W, b) node when a = x @ W^T came from a bias-free Linear node and
    b is a bias (1-D, a's last dim, a's dtype); None otherwise (the caller adds as usual).

    The course spelling of a layer, h @ W.T + b, then records nn.Linear's node: the backward
    skips the Add and its sum over the batch, and hvp's dot mode dots the bias with the weight.
    The value is a + b, exactly Add's. a's node stays as it was for any other use of a; the
    fusion is skipped if an array changed in place since a was recorded (its inputs would be
    read as they are now, not as the forward saw them).
    """
    n = a._node
    parents = n.parents
    if (parents is None or parents[2] is not None or db.ndim != 1 or not da.ndim
            or db.shape[0] != da.shape[-1] or db.dtype != da.dtype
            or versions.last_change < n.seq):
        return None
    need = n.needs_input_grad
    xd, Wd = n.inputs[0], n.inputs[1]
    return _record(_new(Linear), da + db, (parents[0], parents[1], b),
                   (need[0], need[1], b._requires_grad), (xd, Wd, db), True)


def relu(x):
    """max(x, 0), Tensor.relu's op: when x is the output of a recorded Linear node (also what
    h @ W.T + b records), one LinearReLU node on that Linear's inputs instead of a ReLU node.

    The course spelling `(h @ W.T + b).relu()` then builds nn.Sequential's graph: one node per
    hidden layer, and a backward that reads its mask off the output instead of keeping one.
    x itself is left as it is (its data and its node, for any other use of it); the result
    is a new array with ReLU's values. Not fused while a forward-mode level or anomaly mode
    is active, nor after an in-place change since x was recorded (as bias_into_linear).
    For an array, max(x, 0) as an array (like the other helpers of ops.py).
    """
    if type(x) is not Tensor:
        return backend.xp_of(x).maximum(x, 0)
    n = x._node
    if (type(n) is not Linear or _engine._anomaly or _engine._levels or n.parents is None
            or versions.last_change < n.seq):
        return ReLU.apply(x)
    ctx = _new(LinearReLU)
    z = x.data
    if type(z) is _ndarray:
        out = _maximum(z, 0)
    else:                                       # GPU: one kernel gives output and mask
        out, ctx.mask = _relu_gpu(z)
    return _record(ctx, out, n.parents, n.needs_input_grad, n.inputs, True)


def _affine_tangent(shape, x, W, tx, tW, tb):
    """The tangent of x W^T + b: tx W^T + x tW^T + tb (None if no input carries one)."""
    if (type(tW) is _ndarray and type(x) is _ndarray and x.ndim == 2
            and (tx is None or type(tx) is _ndarray) and (tb is None or type(tb) is _ndarray)):
        # a batch of rows on the CPU (hvp's sweep): one new product, and ndarray.dot, the same
        # BLAS product as @ with a third of its Python-level cost on small arrays
        c = x.dot(tW.T)
        if tb is not None:
            c += tb
        if tx is not None:
            c += tx.dot(W.T)
        if c.shape == shape:
            return c
        return tangent_sum(shape, c)
    a = None if tx is None else affine(tx, W)
    if tW is None:
        return tangent_sum(shape, a, tb)
    c = affine(x, tW, tb)               # tb rides on the product (in place for arrays)
    if a is None:
        return tangent_sum(shape, c)
    if type(a) is not Tensor and type(c) is not Tensor:     # two new arrays: add in place
        a += c
        return tangent_sum(shape, a)
    return tangent_sum(shape, a, c)


def _linear_reads_grad(ctx, tangents, primal):
    tx, tW, tb = tangents
    nx, nW, nb = ctx.needs_input_grad
    return any(primal) or (nx and tW is not None) or (nW and tx is not None)


def _linear_backward_jvp(ctx, g, tg, tangents, primal, mask=None):
    """Linear's gradients (where primal asks) and their tangents, with tx, tW, tb the inputs'
    tangents and tg the output gradient's (None: zero), G and tG times mask if given:
        d(G W) = tG W + G tW,   d(G^T x) = tG^T x + G^T tx,   d(sum G) = sum tG.
    """
    x, W, b = ctx.inputs
    tx, tW, tb = tangents
    nx, nW, nb = ctx.needs_input_grad
    px, pW, pb = primal
    if mask is not None:                # G only where something reads it (not a first layer);
        if tg is not None:              # in place: the sweep hands each rule arrays it owns
            tg *= mask
        if px or pW or pb or (nx and tW is not None) or (nW and tx is not None):
            g *= mask                   # (_linear_reads_grad, inline)
    if type(g) is _ndarray and g.ndim == 2:     # a batch of rows on the CPU: the products
        gx = g.dot(W) if px else None             # written out (hvp's hot path, per layer),
        gW = g.T.dot(x) if pW else None           # with ndarray.dot as in _affine_tangent
        gb = _add_reduce(g, axis=0) if pb else None
        if tg is None:
            tgx = tgW = tgb = None
        else:
            tgx = tg.dot(W) if nx else None
            tgW = tg.T.dot(x) if nW else None
            tgb = _add_reduce(tg, axis=0) if nb else None
        if nx and tW is not None:
            if tgx is None:
                tgx = g.dot(tW)
            else:
                tgx += g.dot(tW)
        if nW and tx is not None:
            if tgW is None:
                tgW = g.T.dot(tx)
            else:
                tgW += g.T.dot(tx)
        return (gx, tgx), (gW, tgW), (gb, tgb)
    gx, gW, gb = _linear_grads(g, x, W, b, px, pW, pb) if px or pW or pb else (None,) * 3
    t = _linear_grads(tg, x, W, b, nx, nW, nb) if tg is not None else (None,) * 3
    tgx, tgW, tgb = t
    if nx and tW is not None:           # arrays only here: add into the fresh products
        u = _linear_grads(g, x, tW, None, True, False, False)[0]
        if tgx is None:
            tgx = u
        else:
            tgx += u
    if nW and tx is not None:
        u = _linear_grads(g, tx, W, None, False, True, False)[1]
        if tgW is None:
            tgW = u
        else:
            tgW += u
    return (gx, tgx), (gW, tgW), (gb, tgb)


def _linear_dot_pairs(ctx, g, mask, vs):
    """The derivative of hvp's term t = <dW, V> + <db, v> + <dx, vx> of a Linear node (G * mask
    for LinearReLU) at output gradient G, as (Tensor, array) pairs with dt = sum <c, dT>.

    The weight gradient G^T x would cost a product with the batch that the second backward
    never reads, while t = <G', x V^T + v + vx W^T> with G' = G * mask: its derivative is
    (G, (x V^T + v + vx W^T) * mask), (x, G' V) and (W, G'^T vx), all constants computed once
    on arrays, and nothing is recorded.
    """
    x, W, b = ctx.inputs
    xd, Wd = _data(x), _data(W)
    vx, vW, vb = vs.get(0), vs.get(1), vs.get(2)
    c = None                                    # d t / d G', a new array unless only vb
    if vW is not None:
        c = affine(xd, vW, vb)
    if vx is not None:                          # <G W, vx> = <G, vx W^T>
        c = affine(vx, Wd, None if vW is not None else vb) if c is None else c + affine(vx, Wd)
    pairs = []
    if c is None and vb is not None:
        gshape = g.data.shape
        c = backend.xp_of(vb).broadcast_to(vb, gshape)
        if mask is not None:
            c = c * mask
    elif c is not None and mask is not None:
        c *= mask
    if c is not None:
        pairs.append((g, c))
    dx = vW is not None and type(x) is Tensor and x._requires_grad
    dW = vx is not None and type(W) is Tensor and W._requires_grad
    if dx or dW:
        gd = g.data if mask is None else g.data * mask
        if dx:
            pairs.append((x, _linear_grads(gd, xd, vW, None, True, False, False)[0]))
        if dW:
            pairs.append((W, _linear_grads(gd, vx, Wd, None, False, True, False)[1]))
    return pairs


def _data(a):
    return a.data if type(a) is Tensor else a


def _linear_grads(g, x, W, b, nx, nW, nb):
    """Linear's input gradients for output gradient g: (g W, g^T x, g summed over the batch),
    each only where asked; for arrays and Tensors alike."""
    gx = g @ W if nx else None
    gW = gb = None
    flat = g.ndim == 2                  # a batch of rows, the common case: .T and .sum
    if nW:
        if flat:
            gW = g.T @ x
        else:
            gW = swap_last(reshape_to(g, (-1, g.shape[-1]))) @ reshape_to(x, (-1, x.shape[-1]))
    if nb:
        if not flat:
            gb = sum_to(g, b.shape)
        else:
            gb = _add_reduce(g, axis=0) if type(g) is _ndarray else g.sum(axis=0)
    return gx, gW, gb


class LinearReLU(Function):
    """y = relu(x @ W^T + b), fused; the gradient is Linear's applied to G * [y > 0].

    nn.Sequential runs a Linear followed by a ReLU as this one node: the ReLU works in place
    on the product, the graph has one node per hidden layer instead of two, and on the CPU
    the mask [y > 0] is read off the output in the backward instead of being kept (the
    pre-activation, the output and the mask of the two-op form, only the output here).
    Values and gradients are exactly those of the two ops.
    """
    @staticmethod
    def forward(ctx, x, W, b=None):
        out = affine(x, W, b)
        if type(out) is not backend.ndarray:    # GPU: one kernel gives output and mask
            out, ctx.mask = _relu_gpu(out)
            return out
        return ctx.xp.maximum(out, 0, out=out)  # out is this op's own new array

    @staticmethod
    def backward(ctx, g):
        x, W, b = ctx.inputs                    # Linear.backward for G * mask
        nx, nW, nb = ctx.needs_input_grad
        return _linear_grads(g * _relu_mask(ctx), x, W, b, nx, nW, nb)

    @staticmethod
    def backward_owned(ctx, g):
        """backward for a g the engine owns: masked in place, as the hand-written step does."""
        x, W, b = ctx.inputs
        nx, nW, nb = ctx.needs_input_grad
        g *= _relu_mask(ctx)
        return _linear_grads(g, x, W, b, nx, nW, nb)

    @staticmethod
    def jvp(ctx, tx, tW, tb):
        x, W, b = ctx.inputs
        t = _affine_tangent(ctx.out.shape, x, W, tx, tW, tb)
        if t is None:
            return None
        if type(t) is _ndarray and (tx is not None or tW is not None):   # a new product
            t *= _relu_mask(ctx, keep=True)
            return t
        return t * _relu_mask(ctx, keep=True)

    @staticmethod
    def vjp_dot(ctx, g, vs):
        return _linear_dot_pairs(ctx, g, _relu_mask(ctx), vs)

    @staticmethod
    def backward_jvp(ctx, g, tg, tangents, primal):
        """Linear's rule for G * mask and tG * mask (the mask's derivative is 0 a.e.)."""
        return _linear_backward_jvp(ctx, g, tg, tangents, primal, _relu_mask(ctx))

    reads_grad = staticmethod(_linear_reads_grad)

    @staticmethod
    def kink_distance(ctx):
        x, W, b = (p.data if type(p) is Tensor else p for p in ctx.parents)
        z = affine(x, W, b)
        return float(backend.xp_of(z).abs(z).min())

    error_message = staticmethod(Linear.error_message)


def _relu_mask(ctx, keep=False):
    """LinearReLU's [y > 0]: saved by the GPU forward, else read off the output, and kept
    where it is asked for again: under create_graph (hvp's dot mode asks in backward and
    vjp_dot) and by keep=True (the tangent rule, before hvp's backward_jvp)."""
    mask = ctx.__dict__.get("mask")
    if mask is None:
        out = ctx.out
        if type(out) is Tensor:
            mask = ctx.mask = out.data > 0
        elif keep:
            mask = ctx.mask = out > 0
        else:
            mask = out > 0
    return mask


def _shape_of(x):
    return x.data.shape if type(x) is Tensor else x.shape


def linear(x, W, b=None):
    """x @ W.T + b with W of shape (out_features, in_features), as nn.Linear computes it."""
    _check_linear(x, W, b)
    return Linear.apply(x, W, b)


def linear_relu(x, W, b=None):
    """relu(x @ W.T + b) as one node (LinearReLU)."""
    _check_linear(x, W, b)
    return LinearReLU.apply(x, W, b)


def _check_linear(x, W, b):
    # shapes read once off the arrays: this check runs on every layer call
    ws, xs = _shape_of(W), _shape_of(x)
    if len(ws) != 2:
        raise ValueError(f"linear: weight must be 2-D (out_features, in_features), got shape {W.shape}")
    if not xs or xs[-1] != ws[1]:
        raise ValueError(f"linear: input of shape {x.shape} does not match weight of shape {W.shape} "
                         f"(expected last input dim {W.shape[1]})")
    err = backend.product_dtype_error("linear", x.dtype, W.dtype)
    if err is not None:
        raise err
    if b is not None and _shape_of(b) != (ws[0],):
        raise ValueError(f"linear: bias of shape {tuple(b.shape)} does not match weight of shape "
                         f"{W.shape} (expected ({W.shape[0]},))")


# ======================================================================= softmax family
class LogSoftmax(Function):
    """y = x - logsumexp(x) along axis; dx = g - softmax(x) * sum(g).

    The forward subtracts the max, so logits of +-1000 stay finite. The backward uses
    exp(y) = softmax(x), recorded under create_graph, so it is twice differentiable.
    """
    @staticmethod
    def forward(ctx, x, axis=-1):
        ctx.axis = axis
        xp = ctx.xp
        if x.shape[axis] == 0:          # nothing to normalise over: an empty result
            return x.copy()
        s = x - x.max(axis=axis, keepdims=True)
        e = xp.exp(s)
        s -= xp.log(e.sum(axis=axis, keepdims=True))
        return s

    @staticmethod
    def backward(ctx, g):
        return g - exp(ctx.out) * g.sum(axis=ctx.axis, keepdims=True)

    @staticmethod
    def jvp(ctx, t):
        return t - (exp(ctx.out) * t).sum(axis=ctx.axis, keepdims=True)


class Softmax(Function):
    """y = e / sum(e) along axis with e = exp(x - max(x)); dx = y * (g - sum(g * y)).

    One node where exp(log_softmax(x)) takes two; it never overflows, and the backward is
    written in ops of the saved output, so it is twice differentiable.
    """
    @staticmethod
    def forward(ctx, x, axis=-1):
        ctx.axis = axis
        if x.shape[axis] == 0:
            return x.copy()
        e = ctx.xp.exp(x - x.max(axis=axis, keepdims=True))
        e /= e.sum(axis=axis, keepdims=True)
        return e

    @staticmethod
    def backward(ctx, g):
        y = ctx.out
        return y * (g - (g * y).sum(axis=ctx.axis, keepdims=True))

    @staticmethod
    def jvp(ctx, t):
        y = ctx.out
        return y * (t - (y * t).sum(axis=ctx.axis, keepdims=True))


class Softplus(Function):
    """y = log(1 + e^x), computed as logaddexp(0, x) so it never overflows; dy/dx = sigmoid(x).

    One smooth op rather than max(x, 0) + log(1 + e^-|x|): that composite has two kinks at
    0 whose one-sided conventions give a wrong gradient and curvature exactly there.
    """
    @staticmethod
    def forward(ctx, x):
        return ctx.xp.logaddexp(0, x)

    @staticmethod
    def backward(ctx, g):
        return g * sigmoid(ctx.inputs[0])

    @staticmethod
    def jvp(ctx, t):
        return t * sigmoid(ctx.inputs[0])


def softplus(x):
    """log(1 + e^x), stable for large |x|, smooth everywhere."""
    return Softplus.apply(x)


def log_softmax(x, axis=-1):
    """log(softmax(x)) along axis, computed stably."""
    return LogSoftmax.apply(x, axis=axis)


def softmax(x, axis=-1):
    """exp(x) / sum(exp(x)) along axis, after subtracting the max (never overflows)."""
    return Softmax.apply(x, axis=axis)


class SoftmaxCrossEntropy(Function):
    """y = -sum(T * log_softmax(x)) / denom over the last axis (and the rows, unless rows=True);
    dx = (softmax(x) * rowsum(T) - T) * g / denom, dT = -log_softmax(x) * g / denom.

    Cross-entropy against a target-weight matrix T of x's shape (one-hot, label-smoothed or
    class-weighted rows) in one node instead of log_softmax, mul, sum and neg; the forward
    keeps softmax and log_softmax for the backward. Under create_graph the backward rebuilds
    them from x with ops, so it is twice differentiable. `row_sums` may give rowsum(T) when
    the caller knows it for a constant T (1 for one-hot and label-smoothed rows).
    """
    @staticmethod
    def forward(ctx, x, T, denom=1.0, rows=False, row_sums=None):
        if T.shape != x.shape:
            raise ValueError("the target weights T must have the shape of x")
        ctx.denom, ctx.rows, ctx.row_sums = denom, rows, row_sums
        if not rows and type(x) is not backend.ndarray:
            return _sce_forward_gpu(ctx, x, T, denom)
        xp = ctx.xp
        logp = x - x.max(axis=-1, keepdims=True)
        p = xp.exp(logp)
        z = p.sum(axis=-1, keepdims=True)
        logp -= xp.log(z)
        xp.exp(logp, out=p)     # softmax as exp(log_softmax), exactly as the graph backward has it
        ctx.p, ctx.logp = p, logp
        # 0 * log p = 0 where a class has weight 0, also for a masked (-inf) logit: log p = -inf
        tl = T * xp.where(T == 0, 0, logp)
        if rows:
            return tl.sum(axis=-1) * (-1.0 / denom)
        return tl.sum() * (-1.0 / denom)

    @staticmethod
    def backward(ctx, g):
        x, T = ctx.inputs
        nx, nT = ctx.needs_input_grad
        if (nx and not nT and not ctx.rows and _is_one(ctx.row_sums)
                and type(x) is not Tensor and type(x) is not backend.ndarray):
            # GPU, the usual case: (p - T) * g / denom as one kernel
            return backend.elementwise_kernel(
                "T p, T t, T g, T s", "T gx", "gx = (p - t) * (g * s)", "tinygrad_opt_sce_grad")(
                ctx.p, T, g, x.dtype.type(1.0 / ctx.denom)), None
        if ctx.denom != 1:
            g = g * (1.0 / ctx.denom)
        if ctx.rows:
            g = reshape_to(g, g.shape + (1,))
        if type(x) is Tensor:            # create_graph: softmax and log_softmax as ops of x
            logp = log_softmax(x, axis=-1)
            p = exp(logp)
        else:
            logp, p = ctx.logp, ctx.p
        gx = gT = None
        if nx:
            r = ctx.row_sums
            if r is None:
                r = T.sum(axis=-1, keepdims=True)
            gx = ((p - T) if _is_one(r) else (p * r - T)) * g
        if nT:
            gT = logp * -g
        return gx, gT

    @staticmethod
    def jvp(ctx, tx, tT):
        x, T = ctx.inputs
        if type(x) is Tensor:
            logp = log_softmax(x, axis=-1)
            p = exp(logp)
        else:
            logp, p = ctx.logp, ctx.p
        s = None                 # d(T * log_softmax(x)), with d log_softmax = tx - <p, tx>
        if tx is not None:
            s = T * (tx - (p * tx).sum(axis=-1, keepdims=True))
        if tT is not None:
            s = tangent_sum(x.shape, s, tT * logp)
        s = s.sum(axis=-1) if ctx.rows else s.sum()
        return s * (-1.0 / ctx.denom)


class ClassCrossEntropy(Function):
    """y = -sum_n log_softmax(x)[n, t_n] / denom for constant class indices t (rows of x);
    dx = (softmax(x) - onehot(t)) * g / denom.

    SoftmaxCrossEntropy with a one-hot T, for plain class targets on the CPU: gathering N
    log-probabilities and subtracting g / denom at N places replaces building the N x C
    matrix T and two N x C products with it. The caller checks that t holds valid indices.
    With z = x - rowmax(x) and e = exp(z), log_softmax(x)[n, t] = z[n, t] - log(sum_c e[n, c]),
    so the forward needs e and its row sums only. Under create_graph the backward takes
    softmax from the Softmax op, whose forward is the same arithmetic, and subtracts T s
    after scaling as the fast path does, so both backwards agree to the last bit.
    """
    @staticmethod
    def forward(ctx, x, t, denom=1.0):
        xp = ctx.xp
        ctx.rows = rows = xp.arange(x.shape[0])
        if type(x) is _ndarray:         # the reductions below, without NumPy's Python wrappers
            z = x - _maximum.reduce(x, axis=-1, keepdims=True)
            p = xp.exp(z)
            sums = _add_reduce(p, axis=-1, keepdims=True)
            loss = (_add_reduce(xp.log(sums), axis=None) - _add_reduce(z[rows, t])) * (1.0 / denom)
        else:
            z = x - x.max(axis=-1, keepdims=True)
            p = xp.exp(z)
            sums = p.sum(axis=-1, keepdims=True)
            loss = (xp.log(sums).sum() - z[rows, t].sum()) * (1.0 / denom)
        p /= sums
        ctx.p, ctx.denom = p, denom
        return loss

    @staticmethod
    def backward(ctx, g):
        x, t = ctx.inputs
        s = g * (1.0 / ctx.denom)
        if type(x) is Tensor and type(s) is Tensor and not s.requires_grad:
            # create_graph with a constant seed (hvp): one node, not softmax, two products, a sub
            return ClassCrossEntropyGrad.apply(x, t, s.data, p=ctx.p), None
        if type(x) is Tensor:            # create_graph: softmax as an op of x
            T = ctx.xp.zeros(x.shape, dtype=x.dtype)
            T[ctx.rows, t] = 1
            return Softmax.apply(x, axis=-1) * s - T * s, None
        gx = ctx.p * s
        gx[ctx.rows, t] -= s
        return gx, None

    @staticmethod
    def jvp(ctx, tx, tt):
        x, t = ctx.inputs
        if tx is None:
            return None
        p = Softmax.apply(x, axis=-1) if type(x) is Tensor else ctx.p
        # d(-sum_n log_softmax(x)[n, t_n]) = sum(p * tx) - sum_n tx[n, t_n]
        return ((p * tx).sum() - tx[ctx.rows, t].sum()) * (1.0 / ctx.denom)

    @staticmethod
    def backward_jvp(ctx, g, tg, tangents, primal):
        """The backward (p - onehot) g / denom and its tangent, on arrays (hvp's R-op):
        d(gx) = p (tx - rowsum(p tx)) g / denom + (p - onehot) tg / denom."""
        x, t = ctx.inputs
        p, tx, s = ctx.p, tangents[0], g * (1.0 / ctx.denom)
        d = None
        if primal[0] or tg is not None:
            d = p.copy()
            d[ctx.rows, t] -= 1
        tgx = None
        if tx is not None:              # new arrays from here on: products in place
            u = p * tx
            tgx = tx - (_add_reduce(u, axis=-1, keepdims=True) if type(u) is _ndarray
                        else u.sum(axis=-1, keepdims=True))
            tgx *= p
            tgx *= s
        if tg is not None:
            u = d * (tg * (1.0 / ctx.denom))
            tgx = u if tgx is None else tgx + u
        if primal[0]:
            d *= s                      # d is this rule's own copy, read above already
        return (d if primal[0] else None, tgx), (None, None)


class ClassCrossEntropyGrad(Function):
    """y = (softmax(x) - onehot(t)) * s for constant class indices t (rows of x) and a constant
    scalar s; dx = p * (gy s - rowsum(gy s p)) with p = softmax(x) (Softmax's backward).

    ClassCrossEntropy's gradient as one node, recorded by its backward under create_graph when
    the incoming gradient is a constant (hvp's seed): the second backward runs one node where
    the composite runs softmax, two products and a subtraction. Twice differentiable: under
    create_graph its own backward takes softmax from the Softmax op.
    """
    @staticmethod
    def forward(ctx, x, t, s, p=None):     # p: softmax(x) when the caller has it already
        xp = ctx.xp
        s = xp.asarray(s, dtype=x.dtype)
        ctx.s = s
        if p is None:
            p = xp.exp(x - x.max(axis=-1, keepdims=True))
            p /= p.sum(axis=-1, keepdims=True)
        ctx.p = p
        ctx.rows = rows = xp.arange(x.shape[0])
        out = p * s
        out[rows, t] -= s
        return out

    @staticmethod
    def backward(ctx, gy):
        x = ctx.inputs[0]
        p = Softmax.apply(x, axis=-1) if type(x) is Tensor else ctx.p
        gs = gy * ctx.s
        return p * (gs - (gs * p).sum(axis=-1, keepdims=True)), None, None

    @staticmethod
    def jvp(ctx, tx, tt, ts):
        x = ctx.inputs[0]
        if tx is None:
            return None
        p = Softmax.apply(x, axis=-1) if type(x) is Tensor else ctx.p
        return p * (tx - (p * tx).sum(axis=-1, keepdims=True)) * ctx.s


def _sce_forward_gpu(ctx, x, T, denom):
    """The forward above in four kernels instead of ten: row max, the sum of exp(x - max),
    log_softmax and softmax together, and the scaled sum of T * log_softmax."""
    m = x.max(axis=-1, keepdims=True)
    z = backend.reduction_kernel("T x, T m", "T z", "exp(x - m)", "a + b", "z = a", "0",
                                 "tinygrad_opt_sum_exp")(x, m, axis=-1, keepdims=True)
    ctx.logp, ctx.p = backend.elementwise_kernel(
        "T x, T m, T z", "T logp, T p", "logp = x - m - log(z); p = exp(logp)",
        "tinygrad_opt_log_softmax")(x, m, z)
    return backend.reduction_kernel("T t, T logp, T scale", "T y", "t == 0 ? (T)0 : t * logp", "a + b",
                                    "y = a * scale", "0", "tinygrad_opt_sce_loss")(
        T, ctx.logp, x.dtype.type(-1.0 / denom))


def _is_one(r):
    return type(r) in (int, float) and r == 1


def softmax_cross_entropy(x, T, denom=1.0, rows=False, row_sums=None):
    """-sum(T * log_softmax(x, axis=-1)) / denom: the whole sum, or one value per row if rows=True.

    T holds the target weights per class (x's shape); F.cross_entropy builds it from class
    indices, class weights and label smoothing.
    """
    return SoftmaxCrossEntropy.apply(x, T, denom=denom, rows=rows, row_sums=row_sums)

