"""Per-example and second-order quantities in the same backward pass (BackPACK's semantics).

    with extensions.collect(BatchGrad(), DiagGGN()):
        loss.backward()
    W.grad_batch, W.diag_ggn          # besides W.grad, from that one pass

While a collection is active, every `loss.backward()` first plans the pass (engine.run_backward
calls `_Plan`): it walks the graph from the loss, checks that every op between the loss and a
parameter is one whose per-example structure it knows, and builds the loss Hessian's symmetric
factor. Then each node's backward runs through `_Pass.__call__`, which also computes the
quantities of the layer's parameters from the node's output gradient g (N, out) and its input
x (N, in), and pushes the factor S (C, N, out) one layer down: S <- S W for a Linear, S * f'
for an activation. Outside `collect` the engine does none of this.

Conventions (BackPACK's): the per-example gradients are those of the loss as reduced, so for
a mean over the batch they carry its 1/N and sum to p.grad; Variance is the population
variance over n of these; the GGN factors carry the reduction too. Formulas per layer, costs
and a worked example: docs/extensions.md.
"""
import math
import threading

from . import autograd, backend, engine
from .fused import (ClassCrossEntropy, Linear, LinearReLU, _is_one, _linear_grads,
                    _relu_mask)
from .ops import Mul, ReLU, Sigmoid, Sum, Tanh
from .tensor import Tensor

_np = backend.np            # host NumPy: its ufuncs' reduce skips the sum wrapper's cost


# --------------------------------------------------------------------------- quantities
class Quantity:
    """A quantity `collect` can fill: `attr` names the parameter attribute it sets."""
    attr = None
    second_order = False
    mc_samples = None

    def __repr__(self):
        return f"{type(self).__name__}()"


class BatchGrad(Quantity):
    """p.grad_batch (N, *p.shape): the gradient of each example's term of the loss."""
    attr = "grad_batch"


class BatchL2(Quantity):
    """p.batch_l2 (N,): ||grad_batch[n]||^2, from ||delta_n||^2 ||x_n||^2 without grad_batch."""
    attr = "batch_l2"


class BatchDotGrad(Quantity):
    """p.batch_dot_grad (N,): <grad_batch[n], G>, G = sum_n grad_batch[n] the parameter's
    gradient from this backward (p.grad after a zero_grad), without grad_batch: for a weight
    delta_n^T G x_n = rowsum((delta @ G) * x), for a bias delta_n^T G (the inner-product and
    orthogonality tests' g_n^T g)."""
    attr = "batch_dot_grad"


_GRAM_SMALL = 1 << 17     # multiply-adds below which _Totals takes the Gram route (fewer calls)


class _Totals(Quantity):
    """The whole model's per-example numbers that the gradient tests read, summed over the
    parameters, so nothing is stored per parameter (instruments' use). After the backward:
        dot_grad()[n] = sum_p <grad_batch_p[n], G_p>   (sum over p of p.batch_dot_grad), (N,)
        l2() = sum_n sum_p ||grad_batch_p[n]||^2       (sum over p and n of p.batch_l2)
    A layer with output gradient delta (N, out) and input x (N, in) adds, by whichever of two
    routes multiplies less, or by the first where both are small (below _GRAM_SMALL
    multiply-adds an array call costs more than its arithmetic, and it makes fewer calls):
      Gram, when N (in + out) <= in out: with x~_n = [x_n, 1] (x_n without a bias, 1 for a
        bias alone), <grad_batch[n], grad_batch[m]> = (delta_n . delta_m)(x~_n . x~_m), so
        the (N, N) matrix K = (delta delta^T) * (x x^T + 1) is added into one sum P over
        the layers: two products and two or three passes over N x N, G never read;
      rows, otherwise: rowsum(delta * (x G_W^T + G_b)), ||delta_n||^2 and ||x~_n||^2 into
        row i of three (layers, N) arrays (one (N, in) @ (in, out) product, three row dots).
    dot_grad is then P's row sums plus the rows' first lines summed, l2 P's trace plus
    <||delta||^2 rows, ||x~||^2 rows>. The arrays are this object's, on the pass's device (in
    the first layer's dtype), valid until its next backward (so one backward at a time: one
    instance per thread).
    factors=True also keeps, per layer, layers[i] = (weight, bias, delta, x) (None where not
    a parameter): grad_batch of the weight is delta_n x_n^T, of the bias delta_n.
    """

    def __init__(self, factors=False):
        self.factors = factors
        self.layers = self._rows = self._gram = None
        self.count = self._k = 0
        self._one = backend.np.ones(())

    def reset(self, n_layers, n):
        """Before a pass through n_layers layers with a batch of n."""
        self.count, self.n_layers, self.n = 0, n_layers, n
        self._k, self._gram = 0, None
        self.layers = [] if self.factors else None

    def add(self, g, x, pW, pb, gW, gb, xp):
        """One layer: output gradient g (N, out), input x (N, in), its weight and bias and
        their gradients of this pass (None where not a parameter)."""
        if gW is None and gb is None:
            return
        if self.layers is not None:
            self.layers.append((pW, pb, g, x))
        self.count += 1
        n, out = g.shape
        inp = x.shape[1]
        if gW is not None and (n * (inp + out) <= inp * out or
                               n * n * (inp + out) <= _GRAM_SMALL):
            K = x.dot(x.T)                              # x_n . x_m
            if gb is not None:
                one = self._one
                if one.dtype != K.dtype or backend.xp_of(one) is not xp:
                    one = self._one = xp.ones((), dtype=K.dtype)    # (a 0-d array adds fastest)
                K += one
            K *= g.dot(g.T)                             # delta_n . delta_m
            P = self._gram
            if P is None:
                self._gram = K
            else:
                P += K
            return
        rows, i = self._rows, self._k
        if (rows is None or rows.shape[1] < self.n_layers or rows.shape[2] != n or
                rows.dtype != g.dtype or backend.xp_of(rows) is not xp):
            if i:                                       # keep this pass's earlier rows
                old, rows = rows, xp.empty((3, self.n_layers, n), dtype=g.dtype)
                rows[:, :i] = old[:, :i]
            else:
                rows = xp.empty((3, self.n_layers, n), dtype=g.dtype)
            self._rows = rows
            self._ones = xp.ones(self.n_layers, dtype=g.dtype)     # sums the layers' rows
        self._k = i + 1
        dot, gg, xx = rows[0, i], rows[1, i], rows[2, i]
        _row_dots(g, g, xp, gg)                         # ||delta_n||^2
        if gW is None:
            xp.matmul(g, gb, out=dot)
            xx.fill(1)
            return
        t = x @ gW.T                                    # row n: G_W x_n (+ G_b)
        if gb is not None:
            t += gb
        _row_dots(g, t, xp, dot)
        _row_dots(x, x, xp, xx)
        if gb is not None:
            xx += self._ones[0]                         # ||[x_n, 1]||^2

    def dot_grad(self, out=None):
        """The (N,) sum over the layers (into out if given)."""
        P, k = self._gram, self._k
        xp = backend.xp_of(P if P is not None else self._rows)
        if P is None:
            return xp.matmul(self._ones[:k], self._rows[0, :k], out=out)
        d = P.sum(axis=1, out=out) if xp is not _np else _np.add.reduce(P, axis=1, out=out)
        if k:
            d += self._ones[:k] @ self._rows[0, :k]
        return d

    def l2(self):
        """sum over the layers and n of ||delta_n||^2 ||[x_n, 1]||^2 (0-d, on the device)."""
        P, rows, k = self._gram, self._rows, self._k
        xp = backend.xp_of(P if P is not None else rows)
        s = None
        if P is not None:                   # the trace (NumPy's Python wrapper costs more)
            s = P.diagonal().sum() if xp is not _np else _np.add.reduce(P.diagonal())
        if k:
            r = xp.vdot(rows[1, :k], rows[2, :k])
            s = r if s is None else s + r
        return s


class SumGradSquared(Quantity):
    """p.sum_grad_squared: sum_n grad_batch[n]^2 (AdaGrad's accumulated square, per batch)."""
    attr = "sum_grad_squared"


class Variance(Quantity):
    """p.variance: mean_n grad_batch[n]^2 - (mean_n grad_batch[n])^2 (over the batch, 1/N)."""
    attr = "variance"


class DiagGGN(Quantity):
    """p.diag_ggn: the exact diagonal of the generalized Gauss-Newton matrix J^T H_L J."""
    attr = "diag_ggn"
    second_order = True


class _Sampled(Quantity):
    second_order = True

    def __init__(self, mc_samples=1):
        if isinstance(mc_samples, bool) or not isinstance(mc_samples, int) or mc_samples < 1:
            raise ValueError(f"{type(self).__name__}: mc_samples must be a positive int, "
                             f"got {mc_samples!r}")
        self.mc_samples = mc_samples

    def __repr__(self):
        return f"{type(self).__name__}(mc_samples={self.mc_samples})"


class DiagGGNMC(_Sampled):
    """p.diag_ggn_mc: the GGN diagonal from mc_samples targets drawn from the model's
    predictive distribution (an unbiased estimate of DiagGGN)."""
    attr = "diag_ggn_mc"


class KFAC(_Sampled):
    """p.kfac: [A, G] for a Linear weight, [G] for its bias (Martens & Grosse 2015).

    A = x^T x / N over the layer's inputs (no bias column); G = sum_{m,n} s s^T over the
    sampled output-gradient factors s (mc_samples targets per example), which carry the loss
    reduction, so for a mean G is the per-example second moment over N. BackPACK's
    normalisation; BackPACK returns the list as [G, A].
    """
    attr = "kfac"


# ------------------------------------------------------------------------------ collect
class collect:
    """Fill the quantities' attributes on the layer parameters during each backward inside.

    Used as `with collect(*quantities):`; a plain class rather than a generator, since it is
    entered once per training step (see benchmarks/README.md for what each step costs). The
    plan it replaces is kept per thread, so one collect object may be entered again, nested
    or from several threads at once.
    """

    def __init__(self, *quantities):
        seen = {}
        for q in quantities:
            if isinstance(q, type) and issubclass(q, Quantity):
                raise TypeError(f"collect: pass an instance, {q.__name__}(), not the class")
            if not isinstance(q, Quantity):
                raise TypeError(f"collect: expected quantities such as BatchGrad(), got {q!r}")
            if q.attr in seen:
                raise ValueError(f"collect: {q!r} and {seen[q.attr]!r} both fill p.{q.attr}")
            seen[q.attr] = q
        self._plan = _Plan(quantities) if quantities else None

    def __enter__(self):
        state = engine._grad                # this thread's: other threads' passes are plain
        _replaced.__dict__.setdefault("stack", []).append(state.collect)
        state.collect = self._plan
        return self

    def __exit__(self, *exc):
        engine._grad.collect = _replaced.stack.pop()
        return False


_replaced = threading.local()           # per thread: the plans that open collects replaced


# The ops collect knows: layers (Linear, LinearReLU: they own the parameters), activations
# applied per element, and dropout's product with a constant mask. Anything else raises.
_ELEMENTWISE = (ReLU, Tanh, Sigmoid, Mul)
_SUPPORTED = "Linear (also fused with ReLU), ReLU, Tanh, Sigmoid, Dropout"


class _Plan:
    """Called by the engine at the start of each backward inside `collect`.

    What each layer must compute is decided here, once per `collect`, not per node: the
    first-order quantities by type (None where not asked), and whether x^2 is needed.
    """

    def __init__(self, quantities):
        self.quantities = quantities
        self.second = [q for q in quantities if q.second_order]
        q = {type(q): q for q in quantities if not q.second_order}
        self.first = bool(q)
        self.batch_grad, self.batch_l2 = q.get(BatchGrad), q.get(BatchL2)
        self.batch_dot = q.get(BatchDotGrad)
        self.sgs, self.variance = q.get(SumGradSquared), q.get(Variance)
        self.totals = q.get(_Totals)
        self.first_per_parameter = len(q) > (self.totals is not None)   # beside _Totals
        # _Totals alone (instruments' gradient tests): the layers take _Pass.layer_totals
        self.totals_only = self.totals is not None and not self.first_per_parameter and \
            not self.second
        self.squares_first = self.sgs is not None or self.variance is not None
        # x^2 (N, in) feeds the products with x^2 (BatchL2 needs only row norms, by vecdot)
        self.squares = self.squares_first or any(type(q) is not KFAC for q in self.second)
        self.attrs = tuple(q.attr for q in quantities if q.attr is not None)   # not _Totals
        self._names = None

    @property
    def names(self):
        """The quantities as written, for the error messages."""
        if self._names is None:
            self._names = ", ".join(repr(q) for q in self.quantities)
        return self._names

    def __call__(self, roots, root_grads, inputs, create_graph, retain_graph):
        if inputs is not None or create_graph:
            raise RuntimeError(f"extensions.collect({self.names}): quantities are filled by "
                               "loss.backward() only, not by autograd.grad or create_graph=True")
        if len(roots) != 1 or roots[0]._node is None or roots[0].data.size != 1:
            raise RuntimeError(f"extensions.collect({self.names}): backward must start from a "
                               "scalar loss computed by cross_entropy or mse_loss")
        if roots[0]._node.parents is None:          # a second backward: the engine's error
            raise engine._freed_error(roots[0]._node)
        out_node, hessian = _loss(roots[0], self)
        p = _Pass(self)
        p.walk(out_node)
        if self.totals is not None:
            self.totals.reset(len(p.layers), out_node.out.shape[0])
        if self.second:
            p.seed(out_node, hessian, root_grads[0])
        return p


# ------------------------------------------------------------------------------- losses
def _loss(loss, plan):
    """(the node whose output is the prediction, the loss Hessian's factor there: None when
    the plan has no second-order quantity).

    The loss is read by autograd.read_loss. The factor's exact(xp) and sampled(m, xp) give
    S of shape (C, N, K) with sum_c S[c, n] S[c, n]^T the Hessian of the loss (as reduced)
    w.r.t. prediction row n, exactly or in expectation over m samples.
    """
    r = autograd.read_loss(loss)
    kind = r.kind if r is not None else None
    if kind == "cross_entropy" and (type(r.node) is ClassCrossEntropy or not r.node.rows):
        node = r.node
        if not r.constant_target():
            raise RuntimeError(f"extensions.collect({plan.names}): cross-entropy targets "
                               "require grad")
        _check_prediction(r.output, "cross_entropy", plan)
        if not plan.second:
            return r.output._node, None
        if type(node) is ClassCrossEntropy or _is_one(node.row_sums):
            w = None                                    # each row of the targets sums to 1
        else:
            w = node.inputs[1].sum(axis=-1, keepdims=True)
        return r.output._node, _CrossEntropyHessian(node.p, w, 1.0 / node.denom)
    if kind == "mse" and r.constant_target():
        _check_prediction(r.output, "mse_loss", plan)
        return r.output._node, (_SquareHessian(2.0 * r.scale, r.output.data) if plan.second
                                else None)
    raise RuntimeError(f"extensions.collect({plan.names}): the loss must be cross_entropy or "
                       f"mse_loss (reduction 'mean' or 'sum') of the model output; this "
                       f"backward starts at {type(loss._node).__name__}")


def _check_prediction(x, loss, plan):
    if type(x) is not Tensor or x._node is None or x.data.ndim != 2:
        shape = tuple(x.data.shape) if type(x) is Tensor else None
        raise RuntimeError(f"extensions.collect({plan.names}): {loss} needs a (N, K) model output "
                           f"computed by layers, got {'a leaf' if shape else 'a constant'}"
                           f"{' of shape ' + str(shape) if shape else ''}")


class _CrossEntropyHessian:
    """l_n = -r_n log softmax(x_n)[y_n] * scale: H_n = r_n scale (diag p - p p^T).

    Exact factor: column c is sqrt(r_n scale p_c) (e_c - p), since
    sum_c p_c (e_c - p)(e_c - p)^T = diag p - p p^T. Sampled: y ~ Cat(p) and the column
    sqrt(r_n scale / M) (p - e_y), whose outer product has expectation H_n / M.
    """

    def __init__(self, p, r, scale):
        self.p = p
        self.w = scale if r is None else r * scale         # r_n scale: a number or (N, 1)

    def exact(self, xp):
        p = self.p
        n, c = p.shape
        sq = xp.sqrt(p)                                         # sqrt(p_nc)
        S = sq.T[:, :, None] * -p[None, :, :]                   # S[c, n, k] = -sqrt(p_nc) p_nk
        idx = xp.arange(c)
        S[idx, :, idx] += sq.T                                  # + sqrt(p_nc) at k = c
        return S * _sqrt(self.w, xp)

    def sampled(self, m, xp):
        p = self.p
        n, c = p.shape
        u = backend.random_uniform((m, n, 1), p.dtype, backend.device_of(p))
        y = (xp.cumsum(p, axis=-1)[None] < u).sum(axis=-1, keepdims=True)      # inverse CDF
        y = xp.minimum(y, c - 1)                                # rounding in the last bin
        S = p[None] - (xp.arange(c) == y).astype(p.dtype)
        return S * _sqrt(self.w / m, xp)


class _SquareHessian:
    """l = scale' * sum_nk (pred_nk - t_nk)^2 (scale' = 1/(N K) for a mean): H_n = 2 scale' I.

    Exact factor: sqrt(2 scale') I, K columns. Sampled: sqrt(2 scale' / M) z with z ~ N(0, I)
    (BackPACK's), whose outer product has expectation H_n / M.
    """

    def __init__(self, h, pred):
        self.h, self.shape, self.dtype = h, pred.shape, pred.dtype
        self.device = backend.device_of(pred)

    def exact(self, xp):
        n, k = self.shape
        S = xp.zeros((k, n, k), dtype=self.dtype)
        idx = xp.arange(k)
        S[idx, :, idx] = math.sqrt(self.h)
        return S

    def sampled(self, m, xp):
        n, k = self.shape
        z = backend.random_normal((m, n, k), self.dtype, self.device)
        return z * math.sqrt(self.h / m)


def _sqrt(w, xp):
    return math.sqrt(w) if isinstance(w, float) else xp.sqrt(w)


# ----------------------------------------------------------------------------- the pass
class _Pass:
    """One backward under collect: the plan per node, then the per-node calls of the engine."""

    def __init__(self, plan):
        self.plan = plan
        self.nodes = {}             # node -> handler (a plain function: no cycle through self)
        self.params = {}            # parameter Tensor -> (node, slot) of its single use
        self.factors = {}           # node -> factor S (C, N, out) of its output, while pending
        self.streams = {}           # stream key -> slice of the columns of S
        self.layers = {}            # layer node -> (weight, bias), each None if not a parameter

    # ---------------------------------------------------------------- planning
    def walk(self, out_node):
        """Check every node from the prediction down to the parameters; record their handlers."""
        plan, nodes, layers, params = self.plan, self.nodes, self.layers, self.params
        layer = _Pass.layer_totals if plan.totals_only else _Pass.layer
        elementwise = _Pass.elementwise
        stack = [out_node]
        while stack:
            n = stack.pop()
            if n in nodes:
                continue
            cls = type(n)
            parents = n.parents
            if parents is None:
                raise engine._freed_error(n)
            if cls is LinearReLU or cls is Linear:
                x = n.inputs[0]
                if x.ndim != 2:
                    raise RuntimeError(f"extensions.collect({plan.names}): {cls.__name__} needs "
                                       f"(N, in_features) inputs, got shape {tuple(x.shape)}")
                nodes[n] = layer
                pW, pb = parents[1], parents[2]
                pW = pW if type(pW) is Tensor and pW._requires_grad else None
                pb = pb if type(pb) is Tensor and pb._requires_grad else None
                for p, slot in ((pW, 1), (pb, 2)):
                    if p is not None:
                        if p._node is not None or p in params:
                            self._misused(n, p, slot)
                        params[p] = (n, slot)
                layers[n] = (pW, pb)
                x = parents[0]
                if type(x) is Tensor and x._requires_grad and x._node is not None:
                    stack.append(x._node)
                continue
            if cls in _ELEMENTWISE:
                if cls is Mul:
                    self._check_mul(n, plan)
                nodes[n] = elementwise
            else:
                raise RuntimeError(_unsupported(n, plan.names))
            for p in parents:
                if type(p) is not Tensor or not p._requires_grad:
                    continue
                if p._node is None:
                    raise RuntimeError(_param_error(p, n, plan.names))
                stack.append(p._node)

    def _misused(self, n, p, slot):
        """Raise for a layer's weight or bias that is computed, or used by two layers."""
        names = self.plan.names
        if p._node is not None:
            raise RuntimeError(f"extensions.collect({names}): the {('weight', 'bias')[slot - 1]} "
                               f"of {type(n).__name__} is computed by {type(p._node).__name__}, "
                               "not a parameter")
        raise RuntimeError(f"extensions.collect({names}): the parameter of shape "
                           f"{tuple(p.shape)} is used twice (by {type(n).__name__} and "
                           f"{type(self.params[p][0]).__name__}); per-example quantities "
                           "need each parameter used once")

    @staticmethod
    def _check_mul(n, plan):
        """Only dropout's x * mask: one input with a graph, the other a constant of its shape."""
        a, b = n.parents
        for x, c in ((a, b), (b, a)):
            if type(x) is Tensor and x._requires_grad and not (type(c) is Tensor and c._requires_grad):
                xs = x.data.shape
                cs = getattr(c.data if type(c) is Tensor else c, "shape", ())
                if x is not c and (len(cs) < len(xs) or tuple(cs) == tuple(xs)):
                    n.__dict__["_ext_slot"] = 0 if x is a else 1
                    return
        for p in (a, b):
            if type(p) is Tensor and p._requires_grad and p._node is None:
                raise RuntimeError(_param_error(p, n, plan.names))
        raise RuntimeError(_unsupported(n, plan.names))

    def seed(self, out_node, hessian, root_grad):
        """The loss Hessian's factor at the prediction: the columns of every stream stacked."""
        xp = backend.xp_of(out_node.out)
        parts, start = [], 0
        if any(type(q) is DiagGGN for q in self.plan.second):
            parts.append(hessian.exact(xp))
            self.streams["exact"] = slice(start, start + parts[-1].shape[0])
            start += parts[-1].shape[0]
        for m in sorted({q.mc_samples for q in self.plan.second if q.mc_samples}):
            parts.append(hessian.sampled(m, xp))
            self.streams[m] = slice(start, start + m)
            start += m
        S = parts[0] if len(parts) == 1 else xp.concatenate(parts, axis=0)
        # loss.backward(c) differentiates c * loss, whose GGN is c times the loss's
        if type(root_grad) is backend.ndarray and float(root_grad) < 0:
            raise RuntimeError(f"extensions.collect({self.plan.names}): second-order "
                               "quantities need a nonnegative backward gradient")
        self.factors[out_node] = S * xp.sqrt(root_grad).astype(S.dtype)

    # ------------------------------------------------------------------ running
    def __call__(self, n, g):
        handler = self.nodes.get(n)
        if handler is None:
            return n.backward(n, g)
        return handler(self, n, g)

    def elementwise(self, n, g):
        grads = n.backward(n, g)
        S = self.factors.pop(n, None)
        if S is not None:
            cls = type(n)
            if cls is ReLU:
                d = n.mask
            elif cls is Tanh:
                d = 1 - n.out * n.out
            elif cls is Sigmoid:
                d = n.out * (1 - n.out)
            else:                                           # dropout's constant mask
                d = n.inputs[1 - n._ext_slot]
            slot = n._ext_slot if cls is Mul else 0
            self._push(n.parents[slot], S * d)
        return grads

    def layer(self, n, g):
        x, W, b = n.inputs
        relu = type(n) is LinearReLU
        if relu:
            mask = _relu_mask(n)
            g = g * mask                                   # the gradient of the pre-activation
        grads = Linear.backward(n, g)
        pW, pb = self.layers[n]
        plan = self.plan
        if pW is not None and plan.attrs:
            _drop(pW, plan.attrs)
        # x^2, shared by SumGradSquared, Variance and the GGN diagonals
        x2 = x * x if pW is not None and plan.squares else None
        if plan.first:
            self._first_order(g, x, x2, grads, pW, pb)
        S = self.factors.pop(n, None)
        if S is not None:
            if relu:
                S = S * mask
            self._second_order(S, x, x2, pW, pb)
            if n.needs_input_grad[0]:
                c, N, k = S.shape
                self._push(n.parents[0], (S.reshape(c * N, k) @ W).reshape(c, N, W.shape[1]))
        return grads

    def layer_totals(self, n, g):
        """layer() when the pass collects _Totals alone: the node's backward and the sums."""
        x, W, b = n.inputs
        if type(n) is LinearReLU:
            g = g * _relu_mask(n)                          # the gradient of the pre-activation
        nx, nW, nb = n.needs_input_grad
        grads = _linear_grads(g, x, W, b, nx, nW, nb)
        pW, pb = self.layers[n]
        self.plan.totals.add(g, x, pW, pb, None if pW is None else grads[1],
                             None if pb is None else grads[2], backend.xp_of(g))
        return grads

    def _push(self, parent, S):
        pn = parent._node
        if pn is None or pn not in self.nodes:
            return
        acc = self.factors.get(pn)
        self.factors[pn] = S if acc is None else acc + S

    def _first_order(self, g, x, x2, grads, pW, pb):
        """Per-example quantities of W (gradient g_n x_n^T) and b (g_n), g (N, out), x (N, in).

        Each is computed only if asked, with the fewest passes over (out, in) arrays: those
        passes, not the products, are what the quantities cost beyond SumGradSquared's product.
        """
        plan = self.plan
        xp = backend.xp_of(g)
        if plan.totals is not None:
            plan.totals.add(g, x, pW, pb, None if pW is None else grads[1],
                            None if pb is None else grads[2], xp)
            if not plan.first_per_parameter:
                return
        g2 = g * g if plan.squares_first else None
        q = plan.batch_grad
        if q is not None:
            if pW is not None:
                _store(pW, q, _outer_per_example(g, x, xp))
            if pb is not None:
                _store(pb, q, g.copy())
        q = plan.batch_l2
        if q is not None:                  # ||g_n x_n^T||^2 = ||g_n||^2 ||x_n||^2: row norms only
            gg = _row_dots(g, g, xp)
            if pW is not None:
                _store(pW, q, gg * _row_dots(x, x, xp))
            if pb is not None:
                _store(pb, q, gg)
        q = plan.batch_dot
        if q is not None:                  # <g_n x_n^T, G_W> = g_n^T G_W x_n: one (N, in) product
            if pW is not None:
                _store(pW, q, xp.einsum("ni,ni->n", g @ grads[1], x))
            if pb is not None:
                _store(pb, q, g @ grads[2])
        if g2 is None:
            return
        # SumGradSquared: sum_n g_n^2 (x_n^2)^T; Variance = (it - grad^2 / N) / N, BackPACK's
        # formula, from the products alone (the mean of squares minus the square of the mean)
        sq, var = plan.sgs, plan.variance
        c = 1.0 / g.shape[0]
        if pW is not None:
            if var is None:
                _store(pW, sq, g2.T @ x2)
            elif sq is None:               # Variance alone: s c - (grad c)^2, in s c's buffer
                t = grads[1] * c
                t *= t
                v = (g2 * c).T @ x2
                v -= t
                _store(pW, var, _clip_below_zero(v, xp))
            else:                          # (s - grad^2 c) c: four passes, one new buffer
                s = g2.T @ x2
                _store(pW, sq, s)
                grad = grads[1]
                v = grad * grad
                v *= -c
                v += s
                v *= c
                _store(pW, var, _clip_below_zero(v, xp))
        if pb is not None:
            s = g2.sum(axis=0)
            if sq is not None:
                _store(pb, sq, s)
            if var is not None:            # s c - (grad c)^2 on (out,) arrays
                t = grads[2] * c
                t *= t
                v = s * c
                v -= t
                _store(pb, var, _clip_below_zero(v, xp))

    def _second_order(self, S, x, x2, pW, pb):
        """DiagGGN / DiagGGNMC / KFAC of W and b from the pre-activation factor S (C, N, out):
        the GGN block of W is sum_n (x_n x_n^T) kron (S_n S_n^T), whose diagonal is
        sum_n (sum_c S[c, n]^2) (x_n^2)^T."""
        N = x.shape[0]
        xp = backend.xp_of(S)
        A = None
        for q in self.plan.second:
            Ss = S[self.streams["exact" if type(q) is DiagGGN else q.mc_samples]]
            if type(q) is KFAC:
                F = Ss.reshape(-1, Ss.shape[2])
                G = F.T @ F
                if pW is not None:
                    if A is None:       # xs^T xs with one buffer: BLAS's symmetric product
                        xs = x * (1.0 / math.sqrt(N))
                        A = xs.T @ xs
                    _store_list(pW, q, [A, G])
                if pb is not None:
                    _store_list(pb, q, [G])
            else:
                Q = xp.einsum("cno,cno->no", Ss, Ss)        # sum_c S[c, n, o]^2
                if pW is not None:
                    _store(pW, q, Q.T @ x2)
                if pb is not None:
                    _store(pb, q, Q.sum(axis=0))


_BLOCK = 1 << 18               # floats per block of grad_batch written while it is in cache


def _outer_per_example(g, x, xp):
    """grad_batch (N, out, in): g_n x_n^T for every n, g (N, out), x (N, in).

    On the host, a few examples at a time: copy g's column across each row (a broadcast
    copy, which NumPy writes at full speed), then multiply those rows by x_n in place while
    they are in the cache. NumPy's broadcast product g[:, :, None] * x[:, None, :] (and
    einsum) runs its inner loop with a stride-0 operand, about half the write speed here.
    On a GPU, the one broadcast product.
    """
    if type(g) is not backend.ndarray:
        return g[:, :, None] * x[:, None, :]
    n, o = g.shape
    i = x.shape[1]
    out = xp.empty((n, o, i), dtype=xp.result_type(g, x))
    k = max(1, _BLOCK // max(1, o * i))
    for s in range(0, n, k):
        b = out[s:s + k]
        xp.copyto(b, g[s:s + k, :, None])
        b *= x[s:s + k, None, :]
    return out


def _row_dots(a, b, xp, out=None):
    """<a_n, b_n> per row (into out if given): vecdot where the array module has it
    (NumPy >= 2), one pass and no temporary, about 2.5x faster than einsum on a (64, 784)
    batch and than summing the rows of a * b at hand; else einsum."""
    vecdot = getattr(xp, "vecdot", None)
    if vecdot is not None:
        return vecdot(a, b) if out is None else vecdot(a, b, out=out)
    r = xp.einsum("ni,ni->n", a, b)
    if out is None:
        return r
    out[...] = r
    return out


def _clip_below_zero(v, xp):
    """v with the values that rounding put below 0 raised to 0, in place.

    NumPy's maximum against a scalar runs about six times as long as a plain pass over the
    array here, while the minimum is a quick reduction and rounding below 0 is rare: on the
    host, look first (a NaN makes the minimum NaN, and then the maximum runs: it keeps the
    NaN and still raises the other entries); also on small arrays, where each NumPy call
    costs about the same. On a GPU, no look: that would be a host transfer.
    """
    if type(v) is not backend.ndarray or not v.min() >= 0:
        xp.maximum(v, 0, out=v)
    return v


def _drop(p, attrs):
    """Delete the weight's attributes from the previous backward before this one allocates
    its own: the allocator then hands their blocks, still in the cache, to the new arrays of
    the same sizes instead of fresh ones (measured 0.06-0.1x of a step for the first row of
    bench_extensions.py). An array the user holds is untouched: only the reference goes."""
    for a in attrs:
        try:
            delattr(p, a)
        except AttributeError:
            pass


def _store(p, q, arr):
    dt = p.data.dtype
    if arr.dtype is not dt and arr.dtype != dt:        # `is`: the common case, quickly
        arr = arr.astype(dt)
    setattr(p, q.attr, Tensor._wrap(arr))


def _store_list(p, q, arrs):
    setattr(p, q.attr, [Tensor._wrap(a if a.dtype == p.data.dtype else a.astype(p.data.dtype))
                        for a in arrs])


def _param_error(p, n, names):
    return (f"extensions.collect({names}): a parameter of shape {tuple(p.shape)} is used by "
            f"{type(n).__name__}; only the weights and biases of Linear layers are supported")


def _unsupported(n, names):
    """The error for an op collect cannot pass, naming a batch-mixing one (BatchNorm1d)."""
    name = type(n).__name__
    msg = (f"extensions.collect({names}): cannot pass {name} on the way from the loss to the "
           f"parameters; supported: {_SUPPORTED} and cross_entropy / mse_loss")
    if _mixes_batch(n):
        msg += (f". {name} is part of a computation that reduces over the batch axis, as "
                "BatchNorm1d in train mode does: it mixes the examples, so per-example and "
                "GGN quantities are undefined (use BatchNorm1d in eval mode, or no batch norm)")
    return msg


def _mixes_batch(n, limit=64):
    """Whether a Sum over axis 0 lies within `limit` nodes below n (batch statistics)."""
    stack, seen = [n], set()
    while stack and len(seen) < limit:
        m = stack.pop()
        if m in seen:
            continue
        seen.add(m)
        if type(m) is Sum and m.axis is not None and 0 in (m.axis if isinstance(m.axis, tuple)
                                                           else (m.axis,)):
            return True
        stack.extend(p._node for p in (m.parents or ()) if type(p) is Tensor and p._node is not None)
    return False
