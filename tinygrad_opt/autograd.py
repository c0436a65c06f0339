"""Functional autodiff on top of the engine: grad, jvp, vjp, jacobian, hvp, ggnvp, hessian,
and flat-vector helpers.

Reverse mode: `grad(..., create_graph=True)` returns gradients as Tensors with a graph of
their own, so a second `grad` differentiates through them. Forward mode: inside
`engine.forward_level` every op also pushes a tangent through its jvp rule, so one forward
pass gives J v (`jvp`), and a backward run inside that pass gives the tangent of the
gradient, H v (`hvp(mode="forward")`, Pearlmutter's R-op). docs/forward_mode.md compares them.
"""
from . import backend, engine
from . import ops
from .ops import reshape
from .tensor import Tensor


def _seq(x, what):
    if isinstance(x, Tensor):
        return (x,), True
    x = tuple(x)
    for i, t in enumerate(x):
        if not isinstance(t, Tensor):
            raise TypeError(f"grad: {what}[{i}] is a {type(t).__name__}, expected a Tensor")
    return x, False


def grad(outputs, inputs, grad_outputs=None, retain_graph=None, create_graph=False,
         allow_unused=False):
    """Gradients of sum(outputs * grad_outputs) with respect to inputs, as a tuple.

    PyTorch semantics: .grad is not touched; retain_graph defaults to create_graph; an
    input the outputs do not depend on is an error unless allow_unused=True (then None).
    With create_graph=True the results are differentiable Tensors.
    """
    outputs, _ = _seq(outputs, "outputs")
    inputs, _ = _seq(inputs, "inputs")
    for i, t in enumerate(inputs):
        if not t.requires_grad:
            raise RuntimeError(f"grad: inputs[{i}] (shape {t.shape}) does not require grad; "
                               "create it with requires_grad=True")
    if grad_outputs is None:
        grad_outputs = (None,) * len(outputs)
    elif isinstance(grad_outputs, Tensor) or backend.is_array(grad_outputs):
        grad_outputs = (grad_outputs,)
    grad_outputs = tuple(grad_outputs)
    if len(grad_outputs) != len(outputs):
        raise ValueError(f"grad: {len(grad_outputs)} grad_outputs for {len(outputs)} outputs")
    if retain_graph is None:
        retain_graph = create_graph
    roots, root_grads = [], []
    for i, (o, go) in enumerate(zip(outputs, grad_outputs)):
        if not o.requires_grad:
            raise RuntimeError(f"grad: outputs[{i}] does not require grad and has no graph")
        if go is None:
            if o.size != 1:
                raise RuntimeError(f"grad: grad_outputs[{i}] can be omitted only for a one-element "
                                   f"output, but outputs[{i}] has shape {o.shape}")
            g = backend.xp_of(o.data).ones_like(o.data)
            if create_graph:
                g = Tensor._wrap(g)
        elif create_graph and isinstance(go, Tensor):
            if go.shape != o.shape:
                raise RuntimeError(f"grad: grad_outputs[{i}] has shape {go.shape} but outputs[{i}] "
                                   f"has shape {o.shape}")
            g = go
        else:
            from .ops import _grad_like
            g = _grad_like(o, go, "grad")
            if create_graph:
                g = Tensor._wrap(g)
        roots.append(o)
        root_grads.append(g)
    results = engine.run_backward(roots, root_grads, inputs=inputs, create_graph=create_graph,
                                  retain_graph=retain_graph)
    for i, r in enumerate(results):
        if r is None and not allow_unused:
            raise RuntimeError(f"grad: inputs[{i}] (shape {inputs[i].shape}) was not used to compute "
                               "the outputs; pass allow_unused=True to get None for it")
    return tuple(results)


def _leaves(inputs, requires_grad=True, create_graph=False, reuse_all=False):
    """The Tensors to differentiate at, one per input.

    An input that is a leaf requiring grad is used itself (under create_graph any input that
    requires grad, torch's view_as; with reuse_all, forward mode's keys, any input), so a
    func that closes over the same Tensors, a Module's parameters, sees the perturbation too.
    Any other input, or a repeated one, becomes a fresh leaf sharing its data.
    """
    ins, single = _seq(inputs, "inputs")
    xs, seen = [], set()
    for i, t in enumerate(ins):
        if t.data.dtype.kind != "f":            # backend.is_floating, on the array's own dtype
            raise TypeError(f"inputs[{i}] has dtype {t.dtype}; differentiation needs floating point")
        own = reuse_all or (t._requires_grad and (create_graph or t._node is None))
        xs.append(t if own and id(t) not in seen else Tensor._wrap(t.data, requires_grad=requires_grad))
        seen.add(id(t))
    return tuple(xs), single


def _vectors(fn, v, like, single, what, keep_tensors=False):
    """v (a Tensor/array, or a tuple of them when `like` came as a tuple) as arrays with the
    shape, dtype and device of the Tensors in `like`; None is allowed for one element only.
    keep_tensors: Tensors in v are kept as they are (create_graph: they may carry a graph)."""
    if v is None:
        if len(like) == 1 and like[0].size == 1:
            return (backend.xp_of(like[0].data).ones_like(like[0].data),)
        raise RuntimeError(f"{fn}: v can be omitted only for a single one-element {what}; "
                           f"give v with the structure of the {what}s")
    vs = (v,) if single else tuple(v)
    if len(vs) != len(like):
        raise ValueError(f"{fn}: {len(vs)} vectors for {len(like)} {what}s")
    out = []
    for i, (vi, x) in enumerate(zip(vs, like)):
        xd = x.data
        if isinstance(vi, Tensor):
            va = vi if keep_tensors else vi.data
        elif type(vi) is type(xd) and vi.dtype == xd.dtype:    # already x's kind of array
            va = vi
        else:
            va = backend.as_array(vi, dtype=x.dtype, device=x.device, copy=False)
        if va.shape != xd.shape and tuple(va.shape) != xd.shape:
            raise ValueError(f"{fn}: v[{i}] has shape {tuple(va.shape)} but {what}s[{i}] has "
                             f"shape {x.shape}")
        out.append(va)
    return tuple(out)


def _outputs(out, fn):
    if isinstance(out, Tensor):
        return (out,), True
    if isinstance(out, (tuple, list)) and all(isinstance(o, Tensor) for o in out):
        return tuple(out), False
    raise TypeError(f"{fn}: func must return a Tensor or a tuple of Tensors, got {type(out).__name__}")


def _zeros(x):
    return Tensor._wrap(backend.xp_of(x.data).zeros_like(x.data))


def _tangent(level, t, create_graph):
    """t's tangent in a forward level as a Tensor (zeros when nothing reached t)."""
    tan = level.get(t)
    if tan is None:
        return _zeros(t)
    if type(tan) is Tensor:
        return tan if create_graph else tan.detach()
    return Tensor._wrap(tan)


def _structure(items, single):
    return items[0] if single else tuple(items)


def jvp(func, inputs, v=None, create_graph=False):
    """(func(inputs), J v) in forward mode: one pass that carries a tangent beside every value.

    torch.autograd.functional.jvp's contract: inputs and v are a Tensor or matching tuples (v
    may hold arrays; None for a single one-element input); the outputs and J v have func's
    output structure. Unlike torch (a double-backward trick) no backward runs: each op's jvp
    rule pushes the tangent forward, at about the cost of a second forward pass. With
    create_graph=True the tangents are Tensors you can differentiate again.
    """
    xs, single = _leaves(inputs, requires_grad=False, reuse_all=True)
    vs = _vectors("jvp", v, xs, single, "input", keep_tensors=create_graph)
    with engine.forward_level(tensors=create_graph) as level:
        for x, vi in zip(xs, vs):
            level[x] = (vi if type(vi) is Tensor else Tensor._wrap(vi)) if create_graph else vi
        outs, out_single = _outputs(func(*xs), "jvp")
        tans = [_tangent(level, o, create_graph) for o in outs]
    if not create_graph:
        outs = [o.detach() for o in outs]
    return _structure(outs, out_single), _structure(tans, out_single)


def vjp(func, inputs, v=None, create_graph=False):
    """(func(inputs), v^T J) by one backward: torch.autograd.functional.vjp's contract.

    v has the structure of func's outputs (None for a single one-element output); the vjp
    has the structure of inputs, zeros where an input does not reach the outputs.
    """
    xs, single = _leaves(inputs, create_graph=create_graph)
    with engine.enable_grad():
        outs, out_single = _outputs(func(*xs), "vjp")
    vs = _vectors("vjp", v, outs, out_single, "output", keep_tensors=create_graph)
    used = [(o, vi) for o, vi in zip(outs, vs) if o.requires_grad]
    if used:
        gs = grad([o for o, _ in used], xs, grad_outputs=[vi for _, vi in used],
                  create_graph=create_graph, allow_unused=True)
    else:
        gs = (None,) * len(xs)
    gs = [_zeros(x) if g is None else g for g, x in zip(gs, xs)]
    if not create_graph:
        outs = [o.detach() for o in outs]
    return _structure(outs, out_single), _structure(gs, single)


def jacobian(func, inputs, create_graph=False, mode="reverse"):
    """The Jacobian of func, with torch.autograd.functional.jacobian's shapes.

    One input and one output: a Tensor of shape output.shape + input.shape. A tuple of inputs:
    a tuple over inputs; a tuple of outputs: a tuple over outputs (of Tensors or tuples).
    mode="reverse" takes one backward per output element (a row at a time; cheap for few
    outputs, a loss); mode="forward" one tangent pass per input element (a column at a time;
    cheap for few inputs, a curve or a small layer).
    """
    if mode not in ("reverse", "forward"):
        raise ValueError(f"jacobian: mode must be 'reverse' or 'forward', got {mode!r}")
    xs, single = _leaves(inputs, requires_grad=create_graph or mode == "reverse",
                         create_graph=create_graph, reuse_all=mode == "forward")
    xp = backend.xp_of(xs[0].data)
    if mode == "reverse":
        with engine.enable_grad():
            outs, out_single = _outputs(func(*xs), "jacobian")
        blocks = [[None] * len(xs) for _ in outs]
        for i, o in enumerate(outs):
            rows = [[] for _ in xs]
            for k in range(o.size):
                if o.requires_grad:
                    e = xp.zeros(o.size, dtype=o.dtype)
                    e[k] = 1
                    gs = grad(o, xs, grad_outputs=e.reshape(o.shape), retain_graph=True,
                              create_graph=create_graph, allow_unused=True)
                else:
                    gs = (None,) * len(xs)
                for j, (x, g) in enumerate(zip(xs, gs)):
                    rows[j].append(_zeros(x) if g is None else g)
            for j, x in enumerate(xs):
                blocks[i][j] = _stacked(rows[j], o.shape + x.shape, xp)
    else:
        blocks = None
        for j, x in enumerate(xs):
            cols = None
            for k in range(x.size):
                e = xp.zeros(x.size, dtype=x.dtype)
                e[k] = 1
                with engine.forward_level(tensors=create_graph) as level:
                    level[x] = Tensor._wrap(e.reshape(x.shape)) if create_graph else e.reshape(x.shape)
                    outs, out_single = _outputs(func(*xs), "jacobian")
                    tans = [_tangent(level, o, create_graph) for o in outs]
                if cols is None:
                    cols = [[] for _ in outs]
                for i, t in enumerate(tans):
                    cols[i].append(t)
            if blocks is None:
                blocks = [[None] * len(xs) for _ in outs]
            for i, o in enumerate(outs):      # columns stacked first, then moved behind o's axes
                J = _stacked(cols[i], x.shape + o.shape, xp)
                n = len(x.shape)
                blocks[i][j] = J.transpose(*(tuple(range(n, n + o.ndim)) + tuple(range(n))))
    rows = [_structure(b, single) for b in blocks]
    return _structure(rows, out_single)


def _stacked(parts, shape, xp):
    """Tensors of equal shape stacked and reshaped to `shape` (differentiably if any has a graph)."""
    if any(p.requires_grad for p in parts):
        from .ops import stack
        return reshape(stack(parts), *shape)
    return Tensor._wrap(xp.stack([p.data for p in parts]).reshape(shape))


def _scalar_output(out, where_):
    if not isinstance(out, Tensor) or out.data.size != 1:
        shape = out.shape if isinstance(out, Tensor) else type(out).__name__
        raise RuntimeError(f"{where_}: func must return a one-element Tensor, got {shape}")
    return out


def hvp(func, inputs, v, mode=None):
    """(func(inputs), H v): the Hessian of scalar func at inputs times v.

    mode="reverse" (double backward): H v is the gradient of s = sum_i <g_i, v_i> with
    g = grad(f, x). The first backward (create_graph=True, engine dot mode) returns the
    derivative of s instead of s, as pairs (T, c) with ds = sum <c, dT>, and the second
    backward starts from the T's seeded with the c's: s itself is never recorded. An op that
    knows <g_i, v_i> without forming g_i says so (Linear: <G^T x, V> = <G, x V^T>, whose
    derivative is (G, x V^T + v) and, for a recorded x, (x, G V)), which saves the product
    with the batch that g_i would cost and the second pass would never read; a transposed
    weight (h @ W.T) is dotted through the transpose and h @ W.T + b records F.linear's
    node, so both spellings build one graph. The recorded first backward holds only the
    backward's own products (G W, the ReLU masks, ClassCrossEntropyGrad for cross-entropy's
    gradient).
    mode="forward" (forward-over-reverse, Pearlmutter's R-op): one forward pass carries the
    tangent v, and the backward run inside it carries the tangents of the gradients: H v is
    the tangent of g. No graph of the backward is recorded.
    mode=None takes the R-op on arrays when every node of func's graph has a backward_jvp
    rule (Linear, LinearReLU, ReLU, Tanh, Sigmoid, class cross-entropy: MLPs):
    engine.tangent_backward pushes v through the recorded graph with the jvp rules, then runs
    each node's backward together with its tangent, forming a leaf's gradient only as a
    tangent and recording nothing; otherwise "reverse". Measured on the 784-128-64-10 MLP
    (benchmarks/bench_hvp.py, benchmarks/README.md): the sweep 1.7 gradients, the dot-mode
    double backward 1.9, mode="forward" 2.5 (it runs the backward on Tensors to carry the
    tangents and also forms the weight gradients' primal values).
    inputs and v are a Tensor or matching tuples (v may hold arrays); the product has the
    structure of inputs.
    """
    if mode not in (None, "reverse", "forward"):
        raise ValueError(f"hvp: mode must be None, 'reverse' or 'forward', got {mode!r}")
    xs, single = _leaves(inputs)
    vs = _vectors("hvp", v, xs, single, "input")
    if mode == "forward":
        out, hv = _hvp_forward(func, xs, vs)
    else:
        out, hv = _hvp_reverse(func, xs, vs, mode is None)
    hv = tuple(_zeros(x) if h is None else h for h, x in zip(hv, xs))
    return out.detach(), (hv[0] if single else hv)


def _hvp_reverse(func, xs, vs, rop):
    dots = dict(zip(xs, vs))
    with engine.enable_grad():
        out = _scalar_output(func(*xs), "hvp")
        pairs = None
        if rop and out._node is not None:   # every node with a backward_jvp: the R-op sweep
            tangents = engine.tangent_backward(out, dots)
            if tangents is not None:
                return out, tuple(None if x not in tangents else Tensor._wrap(tangents[x])
                                  for x in xs)
        if out.requires_grad:
            seed = Tensor._wrap(backend.xp_of(out.data).ones_like(out.data))
            pairs = engine.run_backward((out,), (seed,), inputs=xs, create_graph=True,
                                        retain_graph=True, dots=dots)
    if not pairs:
        return out, (None,) * len(xs)
    # the gradient of s = sum_i <g_i, v_i>: one backward from the pairs' Tensors
    roots, seeds = zip(*pairs)
    return out, tuple(engine.run_backward(roots, seeds, inputs=xs))


def _hvp_forward(func, xs, vs):
    with engine.forward_level() as level:
        for x, vi in zip(xs, vs):
            level[x] = vi
        with engine.enable_grad():
            out = _scalar_output(func(*xs), "hvp")
        if not out.requires_grad:
            return out, (None,) * len(xs)
        seed = Tensor._wrap(backend.xp_of(out.data).ones_like(out.data))
        gs = engine.run_backward((out,), (seed,), inputs=xs, create_graph=True, record=False)
        return out, tuple(None if g is None or level.get(g) is None else Tensor._wrap(level[g])
                          for g in gs)


def ggnvp(model_fn, loss_fn, inputs, v):
    """(loss, G v) with G = J^T H_L J, the generalized Gauss-Newton matrix (Schraudolph 2002).

    output = model_fn(*inputs), loss = loss_fn(output) (a scalar), J = d output / d inputs,
    H_L = d^2 loss / d output^2. J v comes from one forward-mode pass, u = H_L (J v) from the
    loss alone, and J^T u from one backward of the output: no second derivative of the model
    is taken, so G drops the Hessian's term sum_k (dL/dout_k) d^2 out_k and is positive
    semi-definite whenever the loss is convex in the output. H_L is applied in closed form
    for F.cross_entropy (softmax: diag(p) - p p^T per row), F.mse_loss (2/n I) and
    F.binary_cross_entropy_with_logits (diag(s (1 - s))); any other loss gets H_L u by a
    double backward through the loss. For cross-entropy and squared error G is the Fisher.
    """
    xs, single = _leaves(inputs)
    vs = _vectors("ggnvp", v, xs, single, "input")
    with engine.enable_grad():
        with engine.forward_level() as level:
            for x, vi in zip(xs, vs):
                level[x] = vi
            out = model_fn(*xs)
            if not isinstance(out, Tensor):
                raise TypeError(f"ggnvp: model_fn must return a Tensor, got {type(out).__name__}")
            jv = level.get(out)
        o = Tensor._wrap(out.data, requires_grad=True)
        loss = _scalar_output(loss_fn(o), "ggnvp")
        if jv is None or not out.requires_grad or not loss.requires_grad:
            return loss.detach(), _structure([_zeros(x) for x in xs], single)
        u = curvature_of_loss(loss, o, jv)
    gs = grad(out, xs, grad_outputs=u, allow_unused=True)
    gv = [_zeros(x) if g is None else g for g, x in zip(gs, xs)]
    return loss.detach(), _structure(gv, single)


def curvature_of_loss(loss, o, u):
    """H_L u: the Hessian of scalar `loss` in its input `o` (a leaf) times the array u.

    In closed form when loss is one of the recognised loss graphs (see ggnvp), else by a
    double backward through the loss. Returns an array.
    """
    hu = _loss_hessian_closed_form(loss, o, u)
    if hu is not None:
        return hu
    (g,) = grad(loss, (o,), create_graph=True)
    (hu,) = grad((g * u).sum(), (o,), allow_unused=True) if g.requires_grad else (None,)
    return _zeros(o).data if hu is None else hu.data


def _node(t, cls):
    """t's node if t is a Tensor made by a `cls` op, else None."""
    n = t._node if type(t) is Tensor else None
    return n if isinstance(n, cls) else None


def _constant(x):
    return type(x) is not Tensor or not x.requires_grad


class LossGraph:
    """A loss of F's read off its graph by `read_loss`: loss = scale * sum(...) of `output`.

    kind 'cross_entropy': `node` is the ClassCrossEntropy / SoftmaxCrossEntropy node on
    output (its denom carries the reduction; node.rows is set for reduction='none').
    kind 'mse': scale * sum((output - target)^2). kind 'bce': binary_cross_entropy_with_logits
    without weights, scale * sum((1 - target) * output + softplus(-output)).
    """
    __slots__ = ("kind", "output", "target", "node", "scale")

    def __init__(self, kind, output, target, node=None, scale=1.0):
        self.kind, self.output, self.target, self.node, self.scale = (
            kind, output, target, node, scale)

    def constant_target(self):
        if self.kind == "cross_entropy" and isinstance(self.node, ops.SoftmaxCrossEntropy):
            return not self.node.needs_input_grad[1]
        return _constant(self.target)


def read_loss(loss):
    """The LossGraph of a loss F built (cross_entropy, mse_loss, bce with logits), else None.

    The one reader of loss graphs: curvature_of_loss, extensions.collect and the curvature
    optimizers all recognise the loss through it.
    """
    n = _node(loss, ops.ClassCrossEntropy) or _node(loss, ops.SoftmaxCrossEntropy)
    if n is not None:
        return LossGraph("cross_entropy", n.parents[0], n.parents[1], n)
    c, s = 1.0, loss                # strip mean's scale: loss = sum(...) * c
    m = _node(s, ops.Mul)
    if m is not None and type(m.parents[1]) is float:
        c, s = m.parents[1], m.parents[0]
    sm = _node(s, ops.Sum)
    if sm is None or sm.axis is not None:
        return None
    e = sm.parents[0]
    sq = _node(e, ops.Mul)                              # mse: d * d with d = o - t
    if sq is not None and sq.parents[0] is sq.parents[1]:
        d = _node(sq.parents[0], ops.Sub)
        return None if d is None else LossGraph("mse", d.parents[0], d.parents[1], scale=c)
    a = _node(e, ops.Add)                               # bce: (1 - y) * o + softplus(-o)
    if a is not None:
        lin, sp = _node(a.parents[0], ops.Mul), _node(a.parents[1], ops.Softplus)
        neg = sp is not None and _node(sp.parents[0], ops.Neg)
        if lin is not None and neg and neg.parents[0] is lin.parents[1]:
            return LossGraph("bce", lin.parents[1], lin.parents[0], scale=c)
    return None


def _loss_hessian_closed_form(loss, o, u):
    """H_L u for the loss graphs F builds (read_loss), on o with constant targets; else None.

    cross_entropy: H = r (diag(p) - p p^T) / denom per row (r = the row's target weight, 1
    for class indices). mse_loss: c * sum((o - t)^2), H = 2c I.
    binary_cross_entropy_with_logits (no weights): H = c diag(s (1 - s)), s = sigmoid(o).
    """
    r = read_loss(loss)
    if r is None or r.output is not o or not _constant(r.target):
        return None
    if r.kind == "cross_entropy":
        n = r.node
        if not isinstance(n, ops.ClassCrossEntropy) and n.rows:
            return None
        p = n.p
        pu = p * u
        hu = pu - p * pu.sum(axis=-1, keepdims=True)
        if not isinstance(n, ops.ClassCrossEntropy):
            T = n.parents[1].data if type(n.parents[1]) is Tensor else n.parents[1]
            hu = hu * (T.sum(axis=-1, keepdims=True) if n.row_sums is None else n.row_sums)
        return hu * (1.0 / n.denom)
    if r.kind == "mse":
        return u * (2.0 * r.scale)
    sg = ops.sigmoid(o.data)
    return u * (sg * (1 - sg)) * r.scale


def hessian(func, inputs):
    """The dense Hessian of scalar func; for one input of shape S, a Tensor of shape S + S.

    For a tuple of inputs, a tuple of tuples: H[i][j] has shape S_i + S_j. Built by
    flat.HVPOperator.dense (one backward pass per input element), so it is meant for small
    problems.
    """
    xs, single = _leaves(inputs)
    op = HVPOperator(lambda: _scalar_output(func(*xs), "hessian"), xs, "hessian")
    H = op.dense()
    offsets = [0]
    for x in xs:
        offsets.append(offsets[-1] + x.size)
    blocks = tuple(tuple(Tensor._wrap(H[offsets[i]:offsets[i + 1], offsets[j]:offsets[j + 1]]
                                      .reshape(xi.shape + xj.shape).astype(xj.dtype, copy=True))
                         for j, xj in enumerate(xs))
                   for i, xi in enumerate(xs))
    return blocks[0][0] if single else blocks


# The flat-vector helpers live in flat.py; they stay importable from here.
from .flat import HVPOperator, parameters_to_vector, vector_to_parameters  # noqa: E402,F401
