"""Forward mode: tangent levels, the tangent step of every op, and the R-op sweep on arrays.

Inside `forward_level()` every op whose input carries a tangent also runs its
`jvp(ctx, *tangents)` rule (Function.apply calls `_push_tangents` while a level is open in
any thread: `engine._levels`), so a tangent rides along the forward; a backward run inside a
level carries tangents through its own ops (forward-over-reverse). `tangent_backward` is
Pearlmutter's R-op on arrays, hvp's default where every node has a `backward_jvp` rule.
docs/forward_mode.md compares the modes. The engine re-exports `forward_level` and
`tangent_backward`, where callers know them.
"""
from contextlib import contextmanager
from operator import attrgetter

from . import backend, engine, versions
from .engine import _check_finite, _enter_backward, _exit_backward, _freed_error, _grad, _lock
from .tensor import Tensor


class _Level(dict):
    """One forward-mode pass: maps each Tensor that carries a tangent (and each recorded node,
    for the backward's output Tensors) to its tangent. `tensors`: tangents are Tensors, so
    they can be differentiated again (create_graph, or an outer level watching); else arrays."""
    __slots__ = ("tensors",)


@contextmanager
def forward_level(tensors=False):
    """Open a forward-mode level: while it is active every op that has an input with a tangent
    in it also computes its output's tangent, with its jvp rule. Levels nest (a tangent of a
    tangent): an inner level's rules run under the outer levels only, so each level sees
    its own perturbation and no other. Yields the level; set leaf tangents with level[x] = v.
    """
    level = _Level()
    prev = _grad.levels
    level.tensors = bool(tensors) or bool(prev)
    with _lock:
        engine._levels += 1
    _grad.levels = prev + (level,)
    try:
        yield level
    finally:
        _grad.levels = prev
        with _lock:
            engine._levels -= 1


def _push_tangents(cls, ctx, args, arrays, t):
    """Apply's forward-mode step: t's tangent in every active level from its inputs' tangents.

    The rule gets ctx as after forward, with ctx.inputs and ctx.out bound as the backward has
    them: arrays, or Tensors (the parents and t) in a level that keeps Tensor tangents.
    """
    levels = _grad.levels
    recorded = t._node is ctx
    for k, level in enumerate(levels):
        tans = [level.get(a) if type(a) is Tensor else None for a in args]
        if all(x is None for x in tans):
            continue
        rule = cls.jvp
        if rule is None:
            raise RuntimeError(
                f"forward mode: {cls.__name__} has no tangent rule; give it a static method "
                f"jvp(ctx, *tangents) returning the output's tangent (see docs/custom_functions.md)")
        tensors = level.tensors
        if tensors:
            ctx.inputs, ctx.out = args, t
        else:
            ctx.inputs, ctx.out = arrays, t.data
        _grad.levels = levels[:k]       # the rule's own ops carry the outer levels' tangents
        try:
            tan = rule(ctx, *tans)
        finally:
            _grad.levels = levels
            if recorded:
                ctx.inputs, ctx.out = arrays, t.data
        if tan is None:
            continue
        tan = _conform_tangent(cls, t, tan, tensors)
        level[t] = tan
        if recorded:
            level[ctx] = tan


def _conform_tangent(cls, t, tan, tensors):
    """A rule's result as a tangent for t: its shape, dtype and kind (array or Tensor)."""
    if type(tan) is Tensor:
        if not tensors:
            tan = tan.data
    else:
        if not backend.is_array(tan):
            tan = backend.xp_of(t.data).asarray(tan)
        if tensors:
            tan = Tensor._wrap(tan)
    shape = tan.shape
    if shape != t.data.shape:
        raise RuntimeError(f"{cls.__name__}.jvp returned a tangent of shape {tuple(shape)} "
                           f"for an output of shape {tuple(t.data.shape)}")
    if tan.dtype != t.data.dtype:
        tan = tan.astype(t.data.dtype)
    if engine._anomaly:
        _check_finite(cls.__name__, tan.data if tensors else tan, "tangent")
    return tan


_by_seq = attrgetter("seq")


def tangent_backward(out, tangents):
    """Forward-over-reverse on arrays (Pearlmutter's R-op): the tangents of the gradients of
    scalar `out` at the leaves in `tangents` ({leaf: v}) along v, i.e. the Hessian times v.

    One sweep of the recorded graph in creation order gives each node's output tangent from
    its `jvp` rule; one sweep in reverse runs each node's `backward_jvp(ctx, g, dg, tangents,
    primal)`, which returns per input (its gradient, that gradient's tangent), the gradient
    only where primal[i] says a later node needs it: a leaf's gradient is never formed, only
    its tangent, and a node's gradient only where its own rule reads it (an optional
    `reads_grad(ctx, tangents, primal)`; a first layer's does not). Nothing is recorded and
    no Tensor is made. Returns None (the caller falls back to a double backward) if a node
    has no such rule, else {leaf: tangent} (absent: 0). Every rule returns new arrays, so the
    g and dg a rule receives are the sweep's own: it may overwrite them (LinearReLU masks them
    in place).
    """
    root = out._node
    nodes, seen, stack = [], set(), [root]
    pop, push, add, append = stack.pop, stack.append, seen.add, nodes.append
    while stack:
        n = pop()
        if n in seen:
            continue
        parents = n.parents
        if parents is None:
            raise _freed_error(n)
        if getattr(type(n), "backward_jvp", None) is None:
            return None
        add(n)
        append(n)
        for p in parents:
            if type(p) is Tensor and p._node is not None:
                push(p._node)
    nodes.sort(key=_by_seq)                 # newest first: every consumer before its inputs
    modified = versions.last_change
    leaf_tangent = tangents.get
    tan, reads = {}, {}                     # node -> its output's tangent; reads its gradient?
    plan = []                               # (node, its inputs' tangents, primal), oldest first
    for n in reversed(nodes):
        if modified < n.seq:
            versions.check_unmodified(n)
        # an input's gradient is formed only for an input node whose rule reads it
        tins, prim, carried = [], [], False
        for p, f in zip(n.parents, n.needs_input_grad):
            if type(p) is not Tensor:
                t, r = None, f
            else:
                pn = p._node
                if pn is None:
                    t, r = leaf_tangent(p), False
                else:
                    t, r = tan.get(pn), f and reads[pn]
            if t is not None:
                carried = True
            tins.append(t)
            prim.append(r)
        plan.append((n, tins, prim))
        cls = type(n)
        rule = getattr(cls, "reads_grad", None)
        reads[n] = True if rule is None else rule(n, tins, prim)
        if carried and n is not root:       # out's own tangent: unused
            t = cls.jvp(n, *tins)
            if t is not None:
                tan[n] = t
    result = {}
    prev = _enter_backward(False)
    try:
        d = out.data
        pending = {root: [backend.xp_of(d).ones(d.shape, d.dtype), None]}
        for n, tins, prim in reversed(plan):
            g, tg = pending.pop(n)
            grads = type(n).backward_jvp(n, g, tg, tins, prim)
            for p, f, (gx, tx) in zip(n.parents, n.needs_input_grad, grads):
                if not f:
                    continue
                pn = p._node
                if pn is None:
                    if tx is not None and p in tangents:
                        result[p] = tx if p not in result else result[p] + tx
                    continue
                e = pending.get(pn)
                if e is None:
                    pending[pn] = [gx, tx]
                else:
                    if gx is not None:
                        e[0] = gx if e[0] is None else e[0] + gx
                    if tx is not None:
                        e[1] = tx if e[1] is None else e[1] + tx
        return result
    finally:
        _exit_backward(prev)
