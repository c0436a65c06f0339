"""The reverse-mode engine: Function (an op and its graph node), grad mode, and the backward pass.

A Function instance is both the op's context and its node in the graph::

        x ─┐                       y = Mul.apply(x, w)
           ├─> [Mul ctx] ─> y      ctx.parents = (x, w)   the input Tensors (or constants)
        w ─┘                       ctx.inputs, ctx.out     their arrays and the output array
                                   y._node = ctx           leaves have _node None

The node keeps its inputs alive, never its output Tensor, so the graph has no reference
cycles and is freed by reference counting as soon as the last Tensor pointing into it dies.

`backward(ctx, g)` is written with operators and the dual-typed helpers of ops.py. The engine
runs it on raw arrays when no graph is wanted (the fast path: no Tensor wrappers) and on
Tensors under create_graph=True, where the backward records its own graph and can be
differentiated again.
"""
import functools
import gc
import inspect
import sys
import threading
from contextlib import contextmanager
from heapq import heappop, heappush

from . import backend, versions

_np = backend.np
_ndarray = backend.ndarray
_np_generic = _np.generic
_new = object.__new__
_refcount = sys.getrefcount
# Nodes are numbered in creation order, counting down (versions.next_seq: the clock that
# also stamps in-place changes); visiting nodes from the lowest (newest) number up is a
# topological order of any graph, and heapq's min-heap pops them in that order.
_next_seq = versions.next_seq
_anomaly = False
# Forward-mode levels open in ANY thread (see forward_level); each thread's own levels are
# _grad.levels. While it is 0 the hot paths need not look for tangents at all.
_levels = 0


# ----------------------------------------------------------------------------- modes
class _GradState(threading.local):
    """Grad mode of the current thread (PyTorch keeps it thread-local too): each thread
    starts with recording on, whatever other threads do, and with no forward-mode level."""
    enabled = True
    levels = ()         # this thread's active forward-mode levels, outermost first
    # extensions.collect's planner while this thread collects, else None: called once per
    # backward pass, it returns the per-node function that runs a node's backward together
    # with the extra quantities asked for (see tinygrad_opt/extensions.py)
    collect = None


_grad = _GradState()
# How many grad-mode overrides (no_grad, enable_grad, a backward pass) are active in ANY
# thread. While it is 0 every thread is in its default mode, recording, so the hot paths
# test `not _overrides` (one global read) before reading the thread-local flag.
_overrides = 0
_lock = threading.Lock()
# the lock's methods called directly where every step takes it: a `with` block costs twice
# as much as the acquire and release themselves
_acquire, _release = _lock.acquire, _lock.release


def is_grad_enabled():
    """True when new ops record a graph (in the calling thread)."""
    return _grad.enabled


def _push_mode(mode):
    """Set the calling thread's grad mode; returns the previous one for _pop_mode."""
    global _overrides
    _acquire()
    try:
        _overrides += 1
    finally:
        _release()
    prev, _grad.enabled = _grad.enabled, mode
    return prev


def _pop_mode(prev):
    global _overrides
    _grad.enabled = prev
    _acquire()
    try:
        _overrides -= 1
    finally:
        _release()


class _GradMode:
    """Context manager (and decorator) that sets the thread's grad mode and restores it.

    As a decorator of a generator function it covers the generator's body: the mode is
    set around each resumption and restored at each yield, so the caller's code between
    two items runs in its own mode (PyTorch's rule).
    """
    __slots__ = ("mode", "prev")

    def __init__(self, mode):
        self.mode = mode

    def __enter__(self):
        self.prev = _push_mode(self.mode)
        return self

    def __exit__(self, *exc):
        _pop_mode(self.prev)
        return False

    def __call__(self, fn):
        mode = self.mode
        if inspect.isgeneratorfunction(fn):
            @functools.wraps(fn)
            def wrapped_gen(*args, **kwargs):
                return (yield from _in_mode(fn(*args, **kwargs), mode))
            return wrapped_gen

        @functools.wraps(fn)
        def wrapped(*args, **kwargs):
            with _GradMode(mode):
                return fn(*args, **kwargs)
        return wrapped


def _in_mode(gen, mode):
    """Drive generator gen with grad mode `mode` set only while its own code runs."""
    try:
        with _GradMode(mode):
            item = gen.send(None)
        while True:
            try:
                sent = yield item
            except GeneratorExit:
                with _GradMode(mode):
                    gen.close()
                raise
            except BaseException as e:       # thrown into us: pass it on to gen
                with _GradMode(mode):
                    item = gen.throw(e)
            else:
                with _GradMode(mode):
                    item = gen.send(sent)
    except StopIteration as stop:
        return stop.value


def no_grad(fn=None):
    """Context manager: ops inside record no graph (evaluation, optimizer updates).

    Thread-local: it affects the calling thread only. Also a decorator, with or without
    parentheses (`@no_grad()` or `@no_grad`), of functions and generator functions.
    """
    return _GradMode(False) if fn is None else _GradMode(False)(fn)


def enable_grad(fn=None):
    """Context manager: ops inside record a graph even within no_grad() (this thread only)."""
    return _GradMode(True) if fn is None else _GradMode(True)(fn)


@contextmanager
def detect_anomaly():
    """Report the first op whose forward or backward produces NaN or Inf, by name.

    Costs one isfinite() pass per op, so it is meant for debugging only.
    """
    global _anomaly
    prev, _anomaly = _anomaly, True
    try:
        yield
    finally:
        _anomaly = prev


def _check_finite(name, arr, where):
    xp = backend.xp_of(arr)
    if arr.dtype.kind in "fc" and not bool(xp.isfinite(arr).all()):
        bad = "NaN" if bool(xp.isnan(arr).any()) else "Inf"
        raise RuntimeError(f"detect_anomaly: {name} produced {bad} in its {where} "
                           f"(shape {tuple(arr.shape)}, dtype {arr.dtype})")


# -------------------------------------------------------------------------- Function
class Function:
    """Base class of every differentiable op; one instance per call is the op's context.

    Subclasses define two static methods, next to each other:

    - ``forward(ctx, *arrays, **params) -> array`` computes the output from backend arrays.
      It may store plain data on ctx (shapes, axes, masks): never Tensors.
    - ``backward(ctx, g) -> grad | tuple of grads`` returns one gradient per input (None
      where an input needs none; see ``ctx.needs_input_grad``). Write it only with
      operators and the helpers in ops.py: the engine calls it with arrays on the fast
      path and with Tensors under create_graph=True. ``ctx.inputs`` (the inputs, in the
      same form as g) and ``ctx.out`` (the output) are bound just before it runs.
      Gradients must be new arrays or views of g, never arrays saved on ctx.

    Call ``MyOp.apply(*inputs, **params)``; inputs are Tensors or constants (scalars,
    arrays), and only Tensors receive gradients.
    """

    # Set by apply: seq, parents, needs_input_grad, inputs and out (the arrays), xp. Slots
    # make these cheap to set on every call; what an op saves itself goes to its __dict__.
    __slots__ = ("seq", "parents", "needs_input_grad", "inputs", "out", "__dict__")
    xp = _np            # the inputs' array module: NumPy unless apply sets CuPy on the instance
    # True: backward may return gradients of the output's broadcast shape; the engine, which
    # tests every gradient's shape anyway, sums them to the input's (elementwise ops skip a test)
    _broadcast_grads = False

    def __repr__(self):
        return f"<{type(self).__name__} node>"

    @classmethod
    def apply(cls, *args, **params):
        # The hot path of every op: kept to plain loops and local names on purpose.
        ctx = _new(cls)
        arrays = []
        need = []
        record = False
        xp = None
        for a in args:
            if type(a) is Tensor:
                d = a.data
                arrays.append(d)
                r = a._requires_grad
                need.append(r)
                if r:
                    record = True
                m = _np if type(d) is _ndarray else backend.xp_of(d)
                if m is not xp:
                    if xp is not None:
                        _device_error(cls, args)
                    xp = m
            else:
                arrays.append(a)
                need.append(False)
        if xp is not None and xp is not _np:
            ctx.xp = xp
        try:
            out = cls.forward(ctx, *arrays, **params) if params else cls.forward(ctx, *arrays)
        except ValueError as e:
            raise ValueError(_op_error(cls, args, e)) from None
        if type(out) is not _ndarray:          # NumPy turns 0-d results into scalars
            if isinstance(out, _np_generic):
                out = _np.asarray(out)
            elif not backend.is_array(out):
                out = ctx.xp.asarray(out)
        if _anomaly:
            _check_finite(cls.__name__, out, "forward output")
        t = _record(ctx, out, args, need, arrays, record)
        if _levels:
            _push_tangents(cls, ctx, args, arrays, t)
        return t

    @staticmethod
    def forward(ctx, *arrays):
        raise NotImplementedError

    @staticmethod
    def backward(ctx, g):
        raise NotImplementedError

    jvp = None      # the tangent rule, jvp(ctx, *tangents) -> the output's tangent; see _push_tangents
    # Optional: backward_owned(ctx, g), backward's gradients for a g the engine allocated and
    # no one else holds, which it may overwrite (LinearReLU masks it in place); arrays only
    backward_owned = None

    @staticmethod
    def error_message(shapes, err):
        """Hook for ops that explain a ValueError from their forward better (matmul)."""
        return None


def operator_methods(cls, fwd, fuse=None):
    """Tensor's a (op) b and b (op) a for binary op cls, whose forward is the C function fwd.

    The commonest calls in any model are these operators on NumPy data; `binary` below is
    cls.apply written out for two arguments, with fwd (operator.mul, ...) called in place of
    cls.forward, so an operator costs one Python call instead of three. Anything unusual
    (CuPy data, anomaly mode) goes through cls.apply.
    fuse=(node_cls, f): when a is the output of a node_cls node, f(a, b, da, db) may return
    the result as one fused node instead (None: no fusion); Add's is fused.bias_into_linear.
    """
    slow = cls.apply
    fuse_cls, fuse_fn = fuse if fuse is not None else (None, None)

    def binary(a, b):
        if type(a) is Tensor:
            da = a.data
            if type(da) is not _ndarray:
                return slow(a, b)
            ra = a._requires_grad
        else:
            da = a
            ra = False
        if type(b) is Tensor:
            db = b.data
            if type(db) is not _ndarray:
                return slow(a, b)
            rb = b._requires_grad
        else:
            db = b
            rb = False
        if _anomaly or _levels:
            return slow(a, b)
        if ra and fuse_cls is not None and type(a._node) is fuse_cls and type(b) is Tensor:
            t = fuse_fn(a, b, da, db)
            if t is not None:
                return t
        ctx = _new(cls)
        try:
            out = fwd(da, db)
        except ValueError as e:
            raise ValueError(_op_error(cls, (a, b), e)) from None
        if type(out) is not _ndarray:
            out = _np.asarray(out)
        t = _new(Tensor)
        t.data = out
        t.grad = None
        if (ra or rb) and (not _overrides or _grad.enabled):
            ctx.seq = _next_seq()
            ctx.parents = (a, b)
            # the three possible flags as constant tuples: nothing to build or free
            ctx.needs_input_grad = ((True, True) if rb else (True, False)) if ra else (False, True)
            ctx.inputs = (da, db)
            ctx.out = out
            t._requires_grad = True
            t._node = ctx
        else:
            t._requires_grad = False
            t._node = None
        return t

    def reflected(self, other):     # other (op) self
        return binary(other, self)

    return binary, reflected


def unary_apply(cls, x):
    """cls.apply(x) for a one-input op without parameters (Tensor.T, exp, tanh, ...) on a
    Tensor x: apply's loop written out for one argument, as operator_methods does for the
    operators. Anything unusual (CuPy data, anomaly mode, forward mode) goes through cls.apply.
    """
    d = x.data
    if type(d) is not _ndarray or _anomaly or _levels:
        return cls.apply(x)
    ctx = _new(cls)
    try:
        out = cls.forward(ctx, d)
    except ValueError as e:
        raise ValueError(_op_error(cls, (x,), e)) from None
    if type(out) is not _ndarray:           # NumPy turns 0-d results into scalars
        out = _np.asarray(out)
    t = _new(Tensor)
    t.data = out
    t.grad = None
    if x._requires_grad and (not _overrides or _grad.enabled):
        ctx.seq = _next_seq()
        ctx.parents = (x,)
        ctx.needs_input_grad = (True,)
        ctx.inputs = (d,)
        ctx.out = out
        t._requires_grad = True
        t._node = ctx
    else:
        t._requires_grad = False
        t._node = None
    return t


def layer_apply(cls, x, W, b):
    """cls.apply(x, W, b) for a layer op (Linear, LinearReLU) on Tensors x, W and a Tensor or
    None b: apply's loop written out for the call every layer makes, as operator_methods
    does for the operators. Anything unusual (CuPy data, anomaly mode) goes through cls.apply.
    """
    xd, Wd = x.data, W.data
    if b is None:
        bd = None
        rb = False
    else:
        bd = b.data
        rb = b._requires_grad
        if type(bd) is not _ndarray:
            return cls.apply(x, W, b)
    if type(xd) is not _ndarray or type(Wd) is not _ndarray or _anomaly or _levels:
        return cls.apply(x, W, b)
    ctx = _new(cls)
    try:
        out = cls.forward(ctx, xd, Wd, bd)
    except ValueError as e:
        raise ValueError(_op_error(cls, (x, W, b), e)) from None
    rx = x._requires_grad
    rW = W._requires_grad
    t = _new(Tensor)                        # _record, inline: every layer call ends here
    t.data = out
    t.grad = None
    if (rx or rW or rb) and (not _overrides or _grad.enabled):
        ctx.seq = _next_seq()
        ctx.parents = (x, W, b)
        ctx.needs_input_grad = (rx, rW, rb)
        ctx.inputs = (xd, Wd, bd)
        ctx.out = out
        t._requires_grad = True
        t._node = ctx
    else:
        t._requires_grad = False
        t._node = None
    return t


def _record(ctx, out, parents, need, inputs, record):
    """The Tensor around an op's output array; with `record` (some input requires grad)
    and grad mode on in this thread, ctx becomes its graph node: it keeps the parents
    (Tensors or constants), which of them need a gradient, the arrays backward reads on
    the fast path (inputs) and the output array. Function.apply ends here; the operators
    (operator_methods), unary_apply and layer_apply write the same lines out inline."""
    t = _new(Tensor)
    t.data = out
    t.grad = None
    if record and (not _overrides or _grad.enabled):
        ctx.seq = _next_seq()
        ctx.parents = parents
        ctx.needs_input_grad = tuple(need)
        ctx.inputs = inputs
        ctx.out = out
        t._requires_grad = True
        t._node = ctx
    else:
        t._requires_grad = False
        t._node = None
    return t


def _shapes(args):
    return ", ".join(str(tuple(a.shape)) if hasattr(a, "shape") else repr(a) for a in args)


def _op_error(cls, args, err):
    custom = cls.error_message([getattr(a, "shape", None) for a in args], err)
    if custom:
        return custom
    return f"{cls.__name__.lower()}: cannot apply to shapes {_shapes(args)} ({err})"


def _device_error(cls, args):
    devs = [f"{tuple(a.shape)} on {a.device}" for a in args if type(a) is Tensor]
    raise RuntimeError(f"{cls.__name__.lower()}: inputs are on different devices ({', '.join(devs)}); "
                       "move them with .to(device) first")


# --------------------------------------------------------------------------- backward
def _freed_error(node):
    return RuntimeError(
        f"backward through {type(node).__name__} a second time, but its graph was freed; "
        "pass retain_graph=True to the first backward (or create_graph=True)")


def run_backward(roots, root_grads, *, inputs=None, create_graph=False, retain_graph=False,
                 allow_unused=False, dots=None, record=True):
    """Propagate root_grads from roots back through the graph.

    inputs=None: accumulate into the .grad of every leaf that requires grad (Tensor.backward).
    inputs given: return their gradients as a list (None where unreached), touching no .grad.
    Raw arrays flow on the fast path; Tensors (and a recorded graph) under create_graph.
    dots={leaf: v} (create_graph only): instead of the leaves' gradients g, return the first
    derivative of the scalar s = sum <g, v> over them, as (Tensor T, array c) pairs with
    ds = sum <c, dT>, without forming g where an op knows how (Function.vjp_dot);
    autograd.hvp runs one more backward from the T's seeded with the c's, which is the
    gradient of s without recording s itself.
    record=False (with create_graph): run the backward on Tensors, so its ops carry
    forward-mode tangents, but record no graph of it (hvp's forward-over-reverse).
    """
    if dots is not None and not create_graph:
        raise ValueError("run_backward: dots needs create_graph=True")
    hook = _grad.collect
    if hook is not None:
        hook = hook(roots, root_grads, inputs, create_graph, retain_graph)
    create_graph = bool(create_graph)
    prev = _enter_backward(create_graph and bool(record))
    try:
        pending, heap, leaves, terms = _seed(roots, root_grads, create_graph, dots)
        wanted = results = None
        if inputs is not None:
            # gradients wanted for non-leaf inputs are read off their node once it is complete
            wanted = {}
            for i, t in enumerate(inputs):
                if t._node is not None:
                    wanted.setdefault(t._node, []).append(i)
            results = [None] * len(inputs)
        _backward(pending, heap, leaves, terms, wanted, results, create_graph, retain_graph, dots,
                  hook)
        return _deliver(inputs, leaves, results, terms, create_graph, dots)
    finally:
        _exit_backward(prev)


_gc_pausers = 0         # backward passes running in any thread, which keep gc paused
_gc_was_enabled = False


def _enter_backward(mode):
    """Pause the cyclic collector (the graph holds no cycles; its scans would only cost
    time) and set this thread's grad mode for the pass (on only to record a create_graph
    backward). The collector is
    process-wide: the first pass in (of any thread) pauses it, the last one out restores it."""
    global _gc_pausers, _gc_was_enabled, _overrides
    _acquire()
    try:
        if _gc_pausers == 0:
            _gc_was_enabled = gc.isenabled()
            gc.disable()
        _gc_pausers += 1
        _overrides += 1
    finally:
        _release()
    prev, _grad.enabled = _grad.enabled, mode
    return prev


def _exit_backward(prev):
    global _gc_pausers, _overrides
    _grad.enabled = prev
    _acquire()
    try:
        _overrides -= 1
        _gc_pausers -= 1
        if _gc_pausers == 0 and _gc_was_enabled:
            gc.enable()
    finally:
        _release()


def _seed(roots, root_grads, create_graph, dots):
    """The pass's starting state from the roots and their gradients.

    pending maps a node's seq -> [grad, owned, node]; leaves maps leaf -> [grad, owned];
    heap holds the seq of every pending node (the next to run on top); terms collects dot
    mode's <g, v> contributions. `owned` marks a buffer this pass allocated and no one else
    holds: only such a buffer may take later contributions in place (a backward may return
    g itself, a view of it, or one array for two inputs, as Add does).
    """
    pending = {}
    leaves = {}
    heap = []
    terms = []
    for r, g in zip(roots, root_grads):
        n = r._node
        if n is None:
            if dots is not None and r in dots:
                terms.append((g, dots[r]))
            else:
                _accumulate(leaves, r, g, create_graph)
        else:
            if n.parents is None:
                raise _freed_error(n)
            e = pending.get(n.seq)
            if e is None:
                pending[n.seq] = [g, False, n]
                heappush(heap, n.seq)
            else:
                _add_into(e, g, create_graph)
    return pending, heap, leaves, terms


def _backward(pending, heap, leaves, terms, wanted, results, create_graph, retain_graph, dots,
              hook=None):
    """The pass itself: run the pending node created last until none is left.

    Every node that consumes a node's output was created after it, so when a node is the
    newest pending one its gradient is complete. The loop body is the engine's hot path, so
    the common case is written out inline. `nxt` is a node that became pending while no
    other was (its gradient and ownership in nxt_g, nxt_owned): as the only one it runs
    next, so chains (most of a graph) touch neither the heap nor `pending`.
    """
    nxt = nxt_g = nxt_owned = None
    anomaly = _anomaly
    modified = versions.last_change   # nodes recorded before it may hold changed arrays
    while heap or nxt is not None:
        if nxt is None:
            g, owned, n = pending.pop(heappop(heap))
        else:
            g, owned, n = nxt_g, nxt_owned, nxt
            # no local may keep the gradient alive once it is used, nor the node (pn is the
            # node too): a node only this loop holds dies when n is rebound, freeing its arrays
            nxt = nxt_g = pn = None
        if wanted is not None and n in wanted:
            for i in wanted[n]:
                results[i] = (g, owned)
            owned = False                 # the results hold g now
        parents = n.parents
        if parents is None:
            raise _freed_error(n)
        if modified < n.seq:
            versions.check_unmodified(n)
        if create_graph:          # bind Tensors, so the backward records its own graph
            in_data, out_data = n.inputs, n.out
            out = _wrap(out_data, True, n)
            n.inputs, n.out = parents, out
            for level in _grad.levels:    # forward mode: the output's tangent, kept by node
                if n in level:
                    level[out] = level[n]
            try:
                grads = n.backward(n, g) if dots is None else _backward_dots(n, g, dots, terms)
            finally:              # the output Tensor points back at n: keep no cycle
                n.inputs, n.out = in_data, out_data
        elif hook is None:
            if owned and n.backward_owned is not None:    # g is the pass's to overwrite
                grads = n.backward_owned(n, g)
            else:
                grads = n.backward(n, g)
        else:                     # extensions.collect: the backward and the extra quantities
            grads = hook(n, g)
        if type(grads) is not tuple:
            grads = (grads,)
        k = len(grads)
        if k != len(parents):
            raise RuntimeError(f"{type(n).__name__}.backward returned {k} gradients "
                               f"for {len(parents)} inputs")
        if k == 1:
            shared = False
        elif k == 2:
            shared = grads[0] is grads[1]
        elif k == 3:              # indexing, not locals: a local would keep a gradient alive
            shared = ((grads[0] is not None and (grads[0] is grads[1] or grads[0] is grads[2]))
                      or (grads[1] is not None and grads[1] is grads[2]))
        else:
            shared = len({id(x) for x in grads if x is not None}) < \
                sum(x is not None for x in grads)
        for p, gx in zip(parents, grads):
            if gx is None or type(p) is not Tensor or not p._requires_grad:
                continue
            if create_graph:
                gx = _conform(n, p, gx, True)
                owned = False
            else:
                pd = p.data
                # In-place accumulation is safe only into a fresh array no one else holds
                # (such as one _conform made: summed to a broadcast input, or cast).
                if type(gx) is not type(pd) or gx.shape != pd.shape or anomaly or \
                        (gx.dtype is not pd.dtype and gx.dtype != pd.dtype):
                    gx, cx = _conform(n, p, gx, False), gx
                    owned = (gx is not cx and gx.base is None) or \
                        not (shared or cx is g or cx.base is not None)
                else:
                    owned = not (shared or gx is g or gx.base is not None)
            pn = p._node
            if pn is None:
                e = leaves.get(p)
                if e is None:
                    leaves[p] = [gx, owned]
                elif create_graph:
                    e[0] = e[0] + gx
                elif e[1]:                      # _add_into, inline: a trained constant
                    acc = e[0]                  # (a bias used at every step) lands here
                    acc += gx                   # once per use
                else:
                    e[0] = e[0] + gx
                    e[1] = True
            elif nxt is None and not heap:     # nothing else is pending: pn runs next
                if pn.parents is None:
                    raise _freed_error(pn)
                nxt, nxt_g, nxt_owned = pn, gx, owned
            elif nxt is pn:
                nxt_g, nxt_owned = _summed(nxt_g, nxt_owned, gx, create_graph)
            else:
                s = pn.seq
                e = pending.get(s)
                if e is None:
                    if pn.parents is None:
                        raise _freed_error(pn)
                    if nxt is not None:         # a second pending node: both go to the heap
                        q = nxt.seq
                        pending[q] = [nxt_g, nxt_owned, nxt]
                        heappush(heap, q)
                        nxt = nxt_g = None
                    pending[s] = [gx, owned, pn]
                    heappush(heap, s)
                else:
                    _add_into(e, gx, create_graph)
        # Without retain_graph n's saved arrays go now. If only this loop holds n (the loop
        # variable and the call's argument make two references) it dies, and frees them,
        # when n is rebound; if a Tensor still holds it, they are dropped here, what the op
        # saved (masks, softmax, ...) included, and a later pass through n raises.
        if not retain_graph and _refcount(n) > 2:
            n.parents = n.inputs = n.out = None
            n.__dict__.clear()


def _deliver(inputs, leaves, results, terms, create_graph, dots):
    """The pass's result: in dot mode the sum of the <g, v> terms; with inputs their
    gradients as a list; else None, after accumulating into the leaves' .grad."""
    if dots is not None:             # the pairs that carry a derivative; None stands for ones
        return [(t, backend.xp_of(t.data).ones_like(t.data) if c is None else c)
                for t, c in terms if type(t) is Tensor and t._requires_grad]
    if inputs is not None:
        for i, t in enumerate(inputs):
            if t._node is None and t in leaves:
                results[i] = leaves[t]
        # A gradient the pass does not own may be a read-only view or shared: hand out a copy.
        return [None if r is None else
                _as_tensor(r[0] if (r[1] or create_graph) else r[0].copy(), create_graph)
                for r in results]
    if create_graph:
        for leaf, (g, owned) in leaves.items():
            if leaf.grad is None:
                leaf.grad = g if type(g) is Tensor else _wrap(g)
            else:
                leaf.grad = leaf.grad + g
        return None
    for leaf, (g, owned) in leaves.items():
        lg = leaf.grad
        if lg is None:              # Tensor._wrap, inline: once per parameter per step
            lg = _new(Tensor)
            lg.data = g if owned else g.copy()
            lg.grad = lg._node = None
            lg._requires_grad = False
            leaf.grad = lg
        else:
            lg.data += g
    return None


def _backward_dots(n, g, dots, terms):
    """n's backward in dot mode: each dotted leaf input i adds the derivative of <grad_i, v>
    to `terms`, as (Tensor, array) pairs (see run_backward).

    An op with a `vjp_dot(ctx, g, vs)` gives the term of its dotted inputs i without forming
    their gradients (Linear's weight gradient G^T x would cost a product with the batch
    that is never read, while <G^T x, V> = <G, x V^T> has the derivative (G, x V^T) and,
    for a recorded x, (x, G V)); it returns such pairs, or the scalar term as a Tensor
    (a pair seeded with one). For the others grad_i is formed and paired with v.
    Returns the gradients of the remaining inputs.
    """
    parents = n.parents
    dotted = [i for i, p in enumerate(parents)
              if type(p) is Tensor and p._node is None and p._requires_grad and p in dots]
    if not dotted:
        return n.backward(n, g)
    vjp_dot = getattr(type(n), "vjp_dot", None)
    if vjp_dot is None:
        grads = n.backward(n, g)
        grads = list(grads) if type(grads) is tuple else [grads]
        for i in dotted:
            if grads[i] is not None:
                terms.append((_conform(n, parents[i], grads[i], True), dots[parents[i]]))
                grads[i] = None
        return tuple(grads)
    need = n.needs_input_grad
    rest = tuple(False if i in dotted else f for i, f in enumerate(need))
    if True in rest:
        n.needs_input_grad = rest
        try:
            grads = n.backward(n, g)
        finally:
            n.needs_input_grad = need
    else:                           # no other input needs a gradient: skip the backward
        grads = (None,) * len(parents)
    term = vjp_dot(n, g, {i: dots[parents[i]] for i in dotted})
    if type(term) is Tensor:
        terms.append((term, None))
    elif term is not None:
        terms.extend(term)
    return grads


def _conform(node, p, gx, create_graph):
    """Check a returned gradient against its input; cast it to the input's dtype."""
    pd = p.data
    if node._broadcast_grads and gx.shape != pd.shape:
        from .ops import sum_to                 # ops imports this module
        gx = sum_to(gx, pd.shape)
    if not create_graph and type(gx) is not type(pd):
        gx = node.xp.asarray(gx)            # NumPy reductions may return 0-d scalars
    if gx.shape != pd.shape:
        raise RuntimeError(f"{type(node).__name__}.backward returned a gradient of shape "
                           f"{tuple(gx.shape)} for an input of shape {tuple(pd.shape)}")
    if gx.dtype != pd.dtype:
        gx = gx.astype(pd.dtype)
    if _anomaly:
        _check_finite(type(node).__name__, gx.data if create_graph else gx, "backward (gradient)")
    return gx


def _accumulate(table, key, g, create_graph):
    entry = table.get(key)
    if entry is None:
        table[key] = [g, False]
    else:
        _add_into(entry, g, create_graph)


def _add_into(entry, g, create_graph):
    """entry[0] += g, in place only when entry[0] is a buffer the pass owns."""
    entry[0], entry[1] = _summed(entry[0], entry[1], g, create_graph)


def _summed(acc, owned, g, create_graph):
    """(acc + g, whether the pass owns the result): in place into acc when the pass owns it."""
    if create_graph:
        return acc + g, False
    if owned:
        acc += g
        return acc, True
    return acc + g, True


def _as_tensor(g, create_graph):
    return g if g is None or type(g) is Tensor else _wrap(g)


from .tensor import Tensor  # noqa: E402  (tensor imports engine; bound once both exist)

_wrap = Tensor._wrap

# forward mode has its own room; apply calls _push_tangents, and engine.forward_level and
# engine.tangent_backward stay where their callers know them
from .tangents import _push_tangents, forward_level, tangent_backward  # noqa: E402,F401
