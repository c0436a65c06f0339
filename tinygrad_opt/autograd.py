"""Functional autodiff on top of the engine: grad, hvp, hessian, and flat-vector helpers.

Everything second-order in the project (hvp, gradgradcheck, Newton, curvature) is built
on `grad(..., create_graph=True)`: the gradient comes back as Tensors with a graph of
their own, and a second `grad` differentiates through it.
"""
from . import backend, engine
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


def _leaves(inputs):
    """Fresh leaves that share the inputs' data and require grad."""
    ins, single = _seq(inputs, "inputs")
    for i, t in enumerate(ins):
        if not backend.is_floating(t.dtype):
            raise TypeError(f"inputs[{i}] has dtype {t.dtype}; differentiation needs floating point")
    return tuple(Tensor._wrap(t.data, requires_grad=True) for t in ins), single


def _scalar_output(out, where_):
    if not isinstance(out, Tensor) or out.size != 1:
        shape = out.shape if isinstance(out, Tensor) else type(out).__name__
        raise RuntimeError(f"{where_}: func must return a one-element Tensor, got {shape}")
    return out


def hvp(func, inputs, v):
    """(func(inputs), H v): the Hessian of scalar func at inputs times v, by double backward.

    H v is the gradient of the scalar s = sum_i <g_i, v_i>, g = grad(f, x). The first
    backward builds s directly with create_graph=True (engine dot mode): an op that knows
    <g_i, v_i> without forming g_i says so (Linear: <G^T x, V> = <G, x V^T>), which saves the
    product with the batch that g_i would cost and the second pass would never read. The
    second backward is grad(s, x). inputs and v are a Tensor or matching tuples (v may hold
    arrays); the product has the structure of inputs.
    """
    xs, single = _leaves(inputs)
    vs = (v,) if single else tuple(v)
    if len(vs) != len(xs):
        raise ValueError(f"hvp: {len(vs)} vectors for {len(xs)} inputs")
    dots = {}
    for i, (x, vi) in enumerate(zip(xs, vs)):
        va = vi.data if isinstance(vi, Tensor) else backend.as_array(vi, dtype=x.dtype, device=x.device, copy=False)
        if tuple(va.shape) != x.shape:
            raise ValueError(f"hvp: v[{i}] has shape {tuple(va.shape)} but inputs[{i}] has shape {x.shape}")
        dots[x] = va
    with engine.enable_grad():
        out = _scalar_output(func(*xs), "hvp")
        if not out.requires_grad:
            s = None
        else:
            seed = Tensor._wrap(backend.xp_of(out.data).ones_like(out.data))
            s = engine.run_backward((out,), (seed,), inputs=xs, create_graph=True,
                                    retain_graph=True, dots=dots)
    if s is None or not s.requires_grad:
        hv = (None,) * len(xs)
    else:
        hv = grad(s, xs, allow_unused=True)
    hv = tuple(Tensor._wrap(backend.xp_of(x.data).zeros_like(x.data)) if h is None else h
               for h, x in zip(hv, xs))
    return out.detach(), (hv[0] if single else hv)


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
