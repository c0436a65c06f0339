"""The reverse-mode engine: Function (an op and its graph node), grad mode, and the backward pass.

A Function instance is both the op's context and its node in the graph::

        x ─┐                       y = Mul.apply(x, w)
           ├─> [Mul ctx] ─> y      ctx.parents = (x, w)   the input Tensors (or constants)
        w ─┘                       ctx.out_data            the output array
                                   y._node = ctx           leaves have _node None

The node keeps its inputs alive, never its output Tensor, so the graph has no reference
cycles and is freed by reference counting as soon as the last Tensor pointing into it dies.

`backward(ctx, g)` is written with operators and the dual-typed helpers of ops.py. The engine
runs it on raw arrays when no graph is wanted (the fast path: no Tensor wrappers) and on
Tensors under create_graph=True, where the backward records its own graph and can be
differentiated again.
"""
import gc
from contextlib import contextmanager

from . import backend

_grad_enabled = True
_anomaly = False


# ----------------------------------------------------------------------------- modes
def is_grad_enabled():
    """True when new ops record a graph."""
    return _grad_enabled


class _GradMode:
    """Context manager (and decorator) that sets grad mode and restores it on exit."""
    __slots__ = ("mode", "prev")

    def __init__(self, mode):
        self.mode = mode

    def __enter__(self):
        global _grad_enabled
        self.prev, _grad_enabled = _grad_enabled, self.mode
        return self

    def __exit__(self, *exc):
        global _grad_enabled
        _grad_enabled = self.prev
        return False

    def __call__(self, fn):
        def wrapped(*args, **kwargs):
            with _GradMode(self.mode):
                return fn(*args, **kwargs)
        wrapped.__name__, wrapped.__doc__ = fn.__name__, fn.__doc__
        return wrapped


def no_grad():
    """Context manager: ops inside record no graph (evaluation, optimizer updates)."""
    return _GradMode(False)


def enable_grad():
    """Context manager: ops inside record a graph even within no_grad()."""
    return _GradMode(True)


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

    # Set by apply: parents, needs_input_grad, out_data, xp.
    def __repr__(self):
        return f"<{type(self).__name__} node>"

    @classmethod
    def apply(cls, *args, **params):
        ctx = object.__new__(cls)
        arrays = []
        record = False
        xp = None
        for a in args:
            if type(a) is Tensor:
                d = a.data
                if a._requires_grad:
                    record = True
                if xp is None:
                    xp = backend.xp_of(d)
                elif backend.xp_of(d) is not xp:
                    _device_error(cls, args)
                arrays.append(d)
            else:
                arrays.append(a)
        if xp is None:
            xp = backend.np
        ctx.xp = xp
        try:
            out = cls.forward(ctx, *arrays, **params)
        except ValueError as e:
            raise ValueError(_op_error(cls, args, e)) from None
        if type(out) is not xp.ndarray and not backend.is_array(out):
            out = xp.asarray(out)              # NumPy turns 0-d results into scalars
        if _anomaly:
            _check_finite(cls.__name__, out, "forward output")
        t = Tensor.__new__(Tensor)
        t.data = out
        t.grad = None
        if record and _grad_enabled:
            ctx.parents = args
            ctx.needs_input_grad = tuple(type(a) is Tensor and a._requires_grad for a in args)
            ctx.out_data = out
            t._requires_grad = True
            t._node = ctx
        else:
            t._requires_grad = False
            t._node = None
        return t

    @staticmethod
    def forward(ctx, *arrays):
        raise NotImplementedError

    @staticmethod
    def backward(ctx, g):
        raise NotImplementedError

    @staticmethod
    def error_message(shapes, err):
        """Hook for ops that explain a ValueError from their forward better (matmul)."""
        return None


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
                 allow_unused=False):
    """Propagate root_grads from roots back through the graph.

    inputs=None: accumulate into the .grad of every leaf that requires grad (Tensor.backward).
    inputs given: return their gradients as a list (None where unreached), touching no .grad.
    Raw arrays flow on the fast path; Tensors (and a recorded graph) under create_graph.
    """
    gc_was_enabled = gc.isenabled()
    gc.disable()      # the graph holds no cycles; pausing the collector saves its scans
    try:
        if create_graph:
            with _GradMode(True):
                return _backward(roots, root_grads, inputs, True, retain_graph)
        with _GradMode(False):
            return _backward(roots, root_grads, inputs, False, retain_graph)
    finally:
        if gc_was_enabled:
            gc.enable()


def _backward(roots, root_grads, inputs, create_graph, retain_graph):
    # 1. Count, for each node, how many edges from other reached nodes point into it.
    deps = {}
    stack = []
    for r in roots:
        n = r._node
        if n is not None and n not in deps:
            deps[n] = 0
            stack.append(n)
    while stack:
        n = stack.pop()
        parents = n.parents
        if parents is None:
            raise _freed_error(n)
        for p in parents:
            if type(p) is Tensor and p._requires_grad:
                pn = p._node
                if pn is not None:
                    if pn in deps:
                        deps[pn] += 1
                    else:
                        deps[pn] = 1
                        stack.append(pn)

    # Gradients wanted for non-leaf inputs are read off their node once it is complete.
    wanted = None
    if inputs is not None:
        wanted = {}
        for i, t in enumerate(inputs):
            if t._node is not None:
                wanted.setdefault(t._node, []).append(i)
    results = [None] * len(inputs) if inputs is not None else None

    # 2. Seed the roots. pending maps node -> [grad, owned]; leaves maps leaf -> [grad, owned].
    pending = {}
    leaves = {}
    for r, g in zip(roots, root_grads):
        if r._node is None:
            _accumulate(leaves, r, g, False, create_graph)
        else:
            _accumulate(pending, r._node, g, False, create_graph)

    ready = [n for n in pending if deps.get(n, 0) == 0]
    # 3. Pop nodes whose consumers are all done; run their backward.
    while ready:
        n = ready.pop()
        entry = pending.pop(n, None)
        if entry is None:
            continue
        g = entry[0]
        if wanted is not None and n in wanted:
            for i in wanted[n]:
                results[i] = g
        parents = n.parents
        if parents is None:
            raise _freed_error(n)
        if create_graph:
            n.inputs = parents
            out = Tensor.__new__(Tensor)
            out.data, out.grad, out._requires_grad, out._node = n.out_data, None, True, n
            n.out = out
        else:
            n.inputs = tuple(p.data if type(p) is Tensor else p for p in parents)
            n.out = n.out_data
        grads = n.backward(n, g)
        if type(grads) is not tuple:
            grads = (grads,)
        if len(grads) != len(parents):
            raise RuntimeError(f"{type(n).__name__}.backward returned {len(grads)} gradients "
                               f"for {len(parents)} inputs")
        n.inputs = n.out = None
        shared = len(grads) > 1 and len({id(x) for x in grads if x is not None}) < \
            sum(x is not None for x in grads)
        for p, gx in zip(parents, grads):
            if gx is None or type(p) is not Tensor or not p._requires_grad:
                continue
            gx = _conform(n, p, gx, create_graph)
            # In-place accumulation is safe only into a fresh array no one else holds.
            owned = not (create_graph or shared or gx is g or getattr(gx, "base", None) is not None)
            pn = p._node
            if pn is None:
                _accumulate(leaves, p, gx, owned, create_graph)
            else:
                _accumulate(pending, pn, gx, owned, create_graph)
                deps[pn] -= 1
                if deps[pn] == 0:
                    ready.append(pn)
        if not retain_graph:      # free saved arrays now; a later pass through n raises
            d = n.__dict__
            d.clear()
            d["parents"] = None

    # 4. Deliver leaf gradients.
    if inputs is not None:
        for i, t in enumerate(inputs):
            if t._node is None and t in leaves:
                results[i] = leaves[t][0]
        return [_as_tensor(r, create_graph) for r in results]
    for leaf, (g, owned) in leaves.items():
        if leaf.grad is None:
            if not create_graph and not owned:
                g = g.copy()
            leaf.grad = _as_tensor(g, create_graph)
        elif create_graph:
            leaf.grad = leaf.grad + g
        else:
            leaf.grad.data += g
    return None


def _conform(node, p, gx, create_graph):
    """Check a returned gradient against its input; cast it to the input's dtype."""
    pd = p.data
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


def _accumulate(table, key, g, owned, create_graph):
    entry = table.get(key)
    if entry is None:
        table[key] = [g, owned]
    elif create_graph:
        entry[0] = entry[0] + g
    elif entry[1]:
        entry[0] += g
    else:
        entry[0] = entry[0] + g
        entry[1] = True


def _as_tensor(g, create_graph):
    if g is None or type(g) is Tensor:
        return g
    t = Tensor.__new__(Tensor)
    t.data, t.grad, t._requires_grad, t._node = g, None, False, None
    return t


from .tensor import Tensor  # noqa: E402  (tensor imports engine; bound once both exist)
