"""Neural-network functions: activations, softmax, losses and dropout (import as F).

Each is a formula of differentiable ops, so each is differentiable to every order. Targets,
class weights and dropout masks are constants: they are built as backend arrays with the
input's `xp` and enter the graph only as plain factors.
"""
from .. import backend, ops
from ..tensor import Tensor

_REDUCTIONS = ("mean", "sum", "none")


def _check_reduction(fn, reduction):
    if reduction not in _REDUCTIONS:
        raise ValueError(f"{fn}: reduction must be one of {_REDUCTIONS}, got {reduction!r}")


def _reduce(loss, reduction):
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    return loss


def _as_tensor(x, like=None):
    """x as a Tensor; arrays and scalars become constants (with `like`'s dtype and device)."""
    if isinstance(x, Tensor):
        return x
    if like is None:
        return Tensor(x)
    return Tensor._wrap(backend.as_array(x, dtype=like.dtype, device=like.device))


# ---------------------------------------------------------------- activations
def relu(x):
    """max(x, 0) elementwise."""
    return x.relu()


def sigmoid(x):
    """1 / (1 + exp(-x)) elementwise."""
    return x.sigmoid()


def tanh(x):
    """tanh(x) elementwise."""
    return x.tanh()


def log_softmax(x, axis=-1):
    """x - logsumexp(x) along `axis`, computed after subtracting the max (finite for huge logits)."""
    return ops.log_softmax(x, axis=axis)


def softmax(x, axis=-1):
    """exp(x) / sum(exp(x)) along `axis`, after subtracting the max so it never overflows."""
    return ops.softmax(x, axis=axis)


def linear(x, weight, bias=None):
    """x @ weight.T + bias, with weight of shape (out_features, in_features)."""
    return ops.linear(x, weight, bias)


def dropout(x, p=0.5, training=True):
    """Inverted dropout: zero each element with probability p and scale the rest by 1/(1-p),
    so the expected value is unchanged and evaluation needs no rescaling. Identity if not training.
    """
    if not 0.0 <= p < 1.0:
        raise ValueError(f"dropout: probability p must be in [0, 1), got {p}")
    if not training or p == 0.0:
        return x
    keep = backend.random_uniform(x.shape, x.dtype, x.device) >= p
    scale = keep.astype(x.dtype) * (1.0 / (1.0 - p))
    return x * Tensor._wrap(scale)


# ---------------------------------------------------------------- losses
def _class_targets(targets, n, c, xp, fn):
    """Integer class indices as an array on the logits' device.

    On the CPU an index outside [0, C) raises ValueError here. On the GPU that check would
    copy to the host and wait for the device on every call, so it is left to the device:
    the caller turns the rows of such targets into NaN.
    """
    t = targets.data if isinstance(targets, Tensor) else targets
    if type(t) is not backend.ndarray or xp is not backend.np:     # else already in place
        if not backend.is_array(t):
            t = backend.np.asarray(t)
        t = backend.to_device(t, "cpu" if xp is backend.np else "cuda")
    if t.dtype.kind not in "iu":
        raise TypeError(f"{fn}: targets must be integer class indices, got dtype {t.dtype}; "
                        "help: convert with .astype('int64')")
    if t.shape != (n,):
        raise ValueError(f"{fn}: targets must have shape ({n},) to match logits of shape "
                         f"({n}, {c}), got targets of shape {tuple(t.shape)}")
    # one pass: read as unsigned, a negative index is larger than any valid one
    if n and xp is backend.np and int(xp.maximum.reduce(t.view(_UNSIGNED[t.itemsize]))) >= c:
        lo, hi = int(xp.minimum.reduce(t)), int(xp.maximum.reduce(t))
        raise ValueError(f"{fn}: targets must be class indices in [0, {c}), got values in "
                         f"[{lo}, {hi}]")
    return t


_UNSIGNED = {k: backend.np.dtype(f"u{k}") for k in (1, 2, 4, 8)}


def _target_rows_gpu(y, c, off, on, dtype):
    """T[n, k] = on if k == y[n] else off, in one kernel; rows whose y[n] is not in [0, c) are NaN."""
    xp = backend.xp_of(y)
    t = xp.empty((y.shape[0], c), dtype=dtype)
    f = t.dtype.type
    backend.elementwise_kernel(
        "raw I y, int64 c, T off, T on, T nan_value", "T t",
        "ptrdiff_t r = i / c; I k = y[r];"
        "t = (k < 0 || k >= c) ? nan_value : (i - r * c == k ? on : off)",
        "tinygrad_opt_class_targets")(y, backend.np.int64(c), f(off), f(on), f(float("nan")), t)
    return t


def cross_entropy(logits, targets, weight=None, label_smoothing=0.0, reduction="mean"):
    """Softmax cross-entropy of (N, C) logits against integer class indices (PyTorch semantics).

    With class weights w the mean is the weighted mean sum_n w[y_n] l_n / sum_n w[y_n]. With
    label smoothing e the target is (1 - e) one_hot(y) + e / C; under weights the smoothed part of
    row n is weighted by w[c] per class, and the mean still divides by sum_n w[y_n], as in PyTorch.

    A target outside [0, C) raises ValueError on the CPU. On the GPU the check stays on the
    device (a host check would stall every step), so such a target makes the loss and its
    row's gradient NaN instead (and every weight the row reaches, after backward); `train.fit`
    then stops with TrainingDiverged.
    """
    fn = "cross_entropy"
    _check_reduction(fn, reduction)
    if not isinstance(logits, Tensor):
        logits = Tensor(logits)
    data = logits.data
    if data.ndim != 2:
        raise ValueError(f"{fn}: logits must have shape (N, C), got {tuple(data.shape)}")
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"{fn}: label_smoothing must be in [0, 1], got {label_smoothing}")
    n, c = data.shape
    dtype = data.dtype
    xp = backend.np if type(data) is backend.ndarray else backend.xp_of(data)
    y = _class_targets(targets, n, c, xp, fn)
    mean_denom = n if n else float("nan")      # the mean of no rows is NaN, as in PyTorch
    # Plain class targets on the CPU gather log-probabilities (ClassCrossEntropy). Otherwise a
    # target-weight matrix T with loss_n = -sum_c T[n, c] log_softmax(x)[n, c]: on the GPU one
    # kernel builds it, and class weights and label smoothing are rows of it.
    if weight is None and xp is not backend.np:
        t = _target_rows_gpu(y, c, label_smoothing / c, label_smoothing / c + (1.0 - label_smoothing),
                             dtype)
        return ops.softmax_cross_entropy(logits, t, denom=mean_denom if reduction == "mean" else 1,
                                         rows=reduction == "none", row_sums=1)
    if weight is None and not label_smoothing and reduction != "none":
        return ops.ClassCrossEntropy.apply(logits, y, denom=mean_denom if reduction == "mean" else 1)
    rows = xp.arange(n)
    if weight is None:
        if label_smoothing:
            t = xp.full((n, c), label_smoothing / c, dtype=dtype)
            t[rows, y] += 1.0 - label_smoothing
        else:
            t = xp.zeros((n, c), dtype=dtype)
            t[rows, y] = 1.0
        row_sums = 1                # each row of T sums to 1
        denom = mean_denom if reduction == "mean" else 1
    else:
        w = weight.data if isinstance(weight, Tensor) else weight
        w = backend.as_array(w, dtype=dtype, device=logits.device, copy=False)
        if w.shape != (c,):
            raise ValueError(f"{fn}: weight must have shape ({c},) for logits of shape "
                             f"({n}, {c}), got {tuple(w.shape)}")
        wy = w[y]
        t = xp.broadcast_to(w * (label_smoothing / c), (n, c)).copy()
        t[rows, y] += (1.0 - label_smoothing) * wy
        if reduction == "mean":
            t /= wy.sum()           # an array division: no copy of the sum to the host
        row_sums, denom = None, (mean_denom if reduction == "mean" and not n else 1)
    if xp is not backend.np:        # out-of-range targets on the GPU: NaN, without a sync
        t += xp.where(((y < 0) | (y >= c)).any(), float("nan"), 0.0)
    return ops.softmax_cross_entropy(logits, t, denom=denom, rows=reduction == "none",
                                     row_sums=row_sums)


def mse_loss(pred, target, reduction="mean"):
    """Mean squared error (pred - target)^2; the shapes must be equal (no silent broadcasting)."""
    fn = "mse_loss"
    _check_reduction(fn, reduction)
    target = _as_tensor(target, like=pred)
    if tuple(pred.shape) != tuple(target.shape):
        raise ValueError(f"{fn}: pred shape {tuple(pred.shape)} and target shape "
                         f"{tuple(target.shape)} differ; help: reshape one of them")
    d = pred - target
    return _reduce(d * d, reduction)


def binary_cross_entropy_with_logits(logits, targets, weight=None, pos_weight=None,
                                     reduction="mean"):
    """Sigmoid + binary cross-entropy in one stable formula (PyTorch semantics).

    loss = -[pos_weight * y * log s(x) + (1 - y) * log(1 - s(x))] * weight. With
    -log s(x) = softplus(-x) and -log(1 - s(x)) = x + softplus(-x) this is
    (1 - y) * x + (1 + (pos_weight - 1) * y) * softplus(-x), with softplus one smooth op
    (logaddexp), so the gradient sigmoid(x) - y and the curvature are right at x = 0 too.
    """
    fn = "binary_cross_entropy_with_logits"
    _check_reduction(fn, reduction)
    targets = _as_tensor(targets, like=logits)
    if tuple(logits.shape) != tuple(targets.shape):
        raise ValueError(f"{fn}: targets shape {tuple(targets.shape)} must equal logits shape "
                         f"{tuple(logits.shape)}")
    x, y = logits, targets
    sp = ops.softplus(-x)
    if pos_weight is None:
        loss = (1 - y) * x + sp
    else:
        pw = _as_tensor(pos_weight, like=logits)
        loss = (1 - y) * x + (1 + (pw - 1) * y) * sp
    if weight is not None:
        loss = loss * _as_tensor(weight, like=logits)
    return _reduce(loss, reduction)
