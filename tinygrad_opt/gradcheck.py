"""Numerical checks of derivatives: gradcheck, gradgradcheck, hvpcheck.

Each compares the engine's analytical derivatives with central differences
(f(x + eps) - f(x - eps)) / (2 eps), whose error is O(eps^2) for smooth f, so the
checks are meaningful in float64 only. gradgradcheck is gradcheck applied to the
function that returns the gradient.
"""
import warnings

from . import backend, engine
from .autograd import grad, hvp
from .tensor import Tensor


class GradcheckError(RuntimeError):
    """An analytical derivative disagrees with its numerical estimate."""


def _as_tuple(x):
    return (x,) if isinstance(x, Tensor) else tuple(x)


def _warn_precision(inputs, name):
    for i, t in enumerate(inputs):
        if isinstance(t, Tensor) and t.requires_grad and t.dtype != backend.np.float64:
            warnings.warn(f"{name}: input {i} has dtype {t.dtype}; central differences need float64 "
                          "to be precise, expect spurious failures", stacklevel=3)


def _kink_warning(outputs, eps, name):
    """Warn when an op with a kink (relu, abs, max, clip) sees an input within 10*eps of it."""
    seen, stack = set(), [o._node for o in outputs if o._node is not None]
    while stack:
        n = stack.pop()
        if n in seen or n.parents is None:
            continue
        seen.add(n)
        dist = getattr(type(n), "kink_distance", None)
        if dist is not None:
            d = dist(n)
            if d < 10 * eps:
                warnings.warn(f"{name}: {type(n).__name__} has an input {d:.3g} away from its kink "
                              f"(a non-differentiable point), within 10*eps = {10 * eps:.3g}; "
                              "central differences straddle the kink there, so a mismatch is "
                              "expected and not a bug: move the inputs away from it", stacklevel=3)
        stack.extend(p._node for p in n.parents if isinstance(p, Tensor) and p._node is not None)


def _eval(func, inputs):
    with engine.no_grad():
        return tuple(o.data.copy() for o in _as_tuple(func(*inputs)))


def _mismatch(xp, ana, num, tol):
    """Where ana and num disagree: beyond tolerance, or not finite unless equal (NaN never agrees)."""
    diff = xp.abs(ana - num)
    bad = ~(diff <= tol) & ~(ana == num)
    return diff, bad


def _worst(xp, diff, tol, bad):
    """Flat index of the worst mismatch: a NaN first, else the largest excess over tolerance."""
    score = xp.where(bad, xp.where(xp.isnan(diff), xp.inf, diff - tol), -xp.inf)
    return int(xp.argmax(score))


def _report(name, j, i, worst_out, worst_in, num, ana, diff, tol, raise_exception, extra=""):
    msg = (f"{name}: Jacobian mismatch for output {j} with respect to input {i}{extra}:\n"
           f"  worst element: d output[{j}]{worst_out} / d input[{i}]{worst_in}\n"
           f"  numerical: {num:.10g}  analytical: {ana:.10g}  "
           f"|difference| {diff:.3g} > tolerance {tol:.3g} (atol + rtol * |numerical|)")
    if raise_exception:
        raise GradcheckError(msg)
    return False


def gradcheck(func, inputs, *, eps=1e-6, atol=1e-5, rtol=1e-3, raise_exception=True,
              fast_mode=False, check_forward_ad=False, _name="gradcheck"):
    """Compare the analytical Jacobian of func with central differences; True if they agree.

    func maps the inputs to a Tensor or tuple of Tensors; only inputs with requires_grad
    are checked. On mismatch raise GradcheckError naming the output, the input, the worst
    element and both values (or return False when raise_exception=False). A NaN on either
    side is a mismatch.
    fast_mode compares w^T J u along one random pair of directions per (output, input),
    which costs two function evaluations instead of two per input element.
    check_forward_ad: also compare forward mode's J u (the ops' tangent rules) with the same
    numerical Jacobian: column by column, or along the random u in fast mode.
    """
    inputs = _as_tuple(inputs)
    _warn_precision(inputs, _name)
    checked = [i for i, t in enumerate(inputs) if isinstance(t, Tensor) and t.requires_grad]
    if not checked:
        raise ValueError(f"{_name}: no input requires grad, so there is nothing to check")
    with engine.enable_grad():
        outputs = _as_tuple(func(*inputs))
    _kink_warning(outputs, eps, _name)
    if fast_mode:
        return _fast(func, inputs, outputs, checked, eps, atol, rtol, raise_exception, _name,
                     check_forward_ad)
    xp = backend.xp_of(inputs[checked[0]].data)
    for i in checked:
        x = inputs[i]
        # numerical Jacobian columns: one pair of evaluations per element of input i
        num = [xp.zeros((o.size, x.size), dtype=backend.np.float64) for o in outputs]
        for k, idx in enumerate(backend.np.ndindex(*x.shape)):
            old = x.data[idx].copy()
            x.data[idx] = old + eps
            plus = _eval(func, inputs)
            x.data[idx] = old - eps
            minus = _eval(func, inputs)
            x.data[idx] = old
            for j in range(len(outputs)):
                num[j][:, k] = ((plus[j] - minus[j]) / (2 * eps)).reshape(-1)
        for j, o in enumerate(outputs):
            ana = xp.zeros((o.size, x.size), dtype=backend.np.float64)
            if o.requires_grad:
                for m in range(o.size):
                    e = xp.zeros(o.size, dtype=o.dtype)
                    e[m] = 1
                    (gx,) = grad(o, x, grad_outputs=e.reshape(o.shape), retain_graph=True,
                                 allow_unused=True)
                    if gx is not None:
                        ana[m] = gx.data.reshape(-1)
            bad = _compare(_name, xp, j, i, o, x, ana, num[j], atol, rtol, raise_exception, "")
            if bad is not None:
                return bad
        if check_forward_ad:
            fwd = _forward_columns(func, inputs, x, outputs, xp)
            for j, o in enumerate(outputs):
                bad = _compare(_name, xp, j, i, o, x, fwd[j], num[j], atol, rtol, raise_exception,
                               " (forward mode: the tangent rules)")
                if bad is not None:
                    return bad
    return True


def _compare(name, xp, j, i, o, x, ana, num, atol, rtol, raise_exception, extra):
    """None if the (output j, input i) Jacobian blocks agree, else _report's answer."""
    tol = atol + rtol * xp.abs(num)
    diff, bad = _mismatch(xp, ana, num, tol)
    if not bool(bad.any()):
        return None
    m, k = (int(a) for a in backend.np.unravel_index(_worst(xp, diff, tol, bad), diff.shape))
    wo = backend.np.unravel_index(m, o.shape) if o.shape else ()
    wi = backend.np.unravel_index(k, x.shape) if x.shape else ()
    return _report(name, j, i, list(int(a) for a in wo), list(int(a) for a in wi),
                   float(num[m, k]), float(ana[m, k]), float(diff[m, k]), float(tol[m, k]),
                   raise_exception, extra)


def _forward_tangents(func, inputs, x, u):
    """Forward mode's J u for every output of func, with tangent u on input x only (arrays)."""
    with engine.no_grad(), engine.forward_level() as level:
        level[x] = u
        outs = _as_tuple(func(*inputs))
        return [level.get(o) for o in outs], outs


def _forward_columns(func, inputs, x, outputs, xp):
    """The Jacobian blocks d output_j / d x built a column at a time by forward mode."""
    cols = [xp.zeros((o.size, x.size), dtype=backend.np.float64) for o in outputs]
    for k in range(x.size):
        e = xp.zeros(x.size, dtype=x.dtype)
        e[k] = 1
        tans, _ = _forward_tangents(func, inputs, x, e.reshape(x.shape))
        for j, t in enumerate(tans):
            if t is not None:
                cols[j][:, k] = t.reshape(-1)
    return cols


def _fast(func, inputs, outputs, checked, eps, atol, rtol, raise_exception, name, forward):
    for i in checked:
        x = inputs[i]
        u = backend.random_normal(x.shape, x.dtype, x.device)
        old = x.data.copy()
        x.data[...] = old + eps * u
        plus = _eval(func, inputs)
        x.data[...] = old - eps * u
        minus = _eval(func, inputs)
        x.data[...] = old
        tans = _forward_tangents(func, inputs, x, u)[0] if forward else None
        for j, o in enumerate(outputs):
            w = backend.random_normal(o.shape, o.dtype, o.device)
            num = float(((plus[j] - minus[j]) / (2 * eps) * w).sum())
            ana = 0.0
            if o.requires_grad:
                (gx,) = grad(o, x, grad_outputs=w, retain_graph=True, allow_unused=True)
                if gx is not None:
                    ana = float((gx.data * u).sum())
            bad = _fast_compare(name, j, i, num, ana, atol, rtol, raise_exception,
                                " (fast mode: w^T J u along random directions)")
            if bad is not None:
                return bad
            if forward:
                ana = 0.0 if tans[j] is None else float((tans[j] * w).sum())
                bad = _fast_compare(name, j, i, num, ana, atol, rtol, raise_exception,
                                    " (fast mode, forward: w^T (J u) along random directions)")
                if bad is not None:
                    return bad
    return True


def _fast_compare(name, j, i, num, ana, atol, rtol, raise_exception, extra):
    diff, tol = abs(ana - num), atol + rtol * abs(num)
    if diff <= tol or ana == num:
        return None
    return _report(name, j, i, "", "", num, ana, diff, tol, raise_exception, extra=extra)


def gradgradcheck(func, inputs, grad_outputs=None, *, eps=1e-6, atol=1e-5, rtol=1e-3,
                  raise_exception=True):
    """gradcheck of the backward pass: checks second derivatives of func.

    The checked function maps (inputs, grad_outputs) to the gradients of
    sum(outputs * grad_outputs) with respect to the inputs that require grad, so its
    output j is the gradient of the j-th such input, and its inputs after the first
    len(inputs) are the grad_outputs (random float64 when None).
    """
    inputs = _as_tuple(inputs)
    _warn_precision(inputs, "gradgradcheck")
    with engine.enable_grad():
        outs = _as_tuple(func(*inputs))
    if grad_outputs is None:
        grad_outputs = tuple(Tensor(backend.random_normal(o.shape, backend.np.float64, o.device),
                                    requires_grad=True) for o in outs)
    else:
        grad_outputs = _as_tuple(grad_outputs)
    n = len(inputs)
    wrt = [i for i, t in enumerate(inputs) if isinstance(t, Tensor) and t.requires_grad]

    def backward_fn(*args):
        xs, gos = args[:n], args[n:]
        with engine.enable_grad():
            os_ = _as_tuple(func(*xs))
            pairs = [(o, g) for o, g in zip(os_, gos) if o.requires_grad]
            targets = [xs[i] for i in wrt]
            if not pairs:
                gs = (None,) * len(targets)
            else:
                gs = grad([o for o, _ in pairs], targets, grad_outputs=[g for _, g in pairs],
                          create_graph=True, allow_unused=True)
        return tuple(g if g is not None else Tensor._wrap(backend.xp_of(t.data).zeros_like(t.data))
                     for g, t in zip(gs, targets))

    return gradcheck(backward_fn, inputs + tuple(grad_outputs), eps=eps, atol=atol, rtol=rtol,
                     raise_exception=raise_exception, _name="gradgradcheck")


def hvpcheck(func, inputs, v=None, *, eps=1e-6, atol=1e-5, rtol=1e-3, raise_exception=True,
             mode=None):
    """Compare autograd.hvp (in `mode`) with central differences of the gradient along v.

    H v ~ (grad f(x + eps v) - grad f(x - eps v)) / (2 eps); v is random when None.
    A NaN on either side is a mismatch.
    """
    xs = _as_tuple(inputs)
    _warn_precision([Tensor._wrap(x.data, requires_grad=True) for x in xs], "hvpcheck")
    if v is None:
        v = tuple(backend.random_normal(x.shape, x.dtype, x.device) for x in xs)
    vs = _as_tuple(v) if isinstance(v, (tuple, list, Tensor)) else (v,)
    vs = tuple(vi.data if isinstance(vi, Tensor) else vi for vi in vs)
    _, hv = hvp(func, xs, vs, mode=mode)
    leaves = tuple(Tensor._wrap(x.data.copy(), requires_grad=True) for x in xs)

    def grads_at(sign):
        for leaf, x, vi in zip(leaves, xs, vs):
            leaf.data[...] = x.data + sign * eps * vi
        with engine.enable_grad():
            out = func(*leaves)
            return [g.data.copy() if g is not None else backend.xp_of(leaf.data).zeros_like(leaf.data)
                    for g, leaf in zip(grad(out, leaves, allow_unused=True), leaves)]

    gp, gm = grads_at(+1), grads_at(-1)
    xp = backend.xp_of(xs[0].data)
    for i, (h, a, b) in enumerate(zip(hv, gp, gm)):
        num = (a - b) / (2 * eps)
        tol = atol + rtol * xp.abs(num)
        diff, bad = _mismatch(xp, h.data, num, tol)
        if bool(bad.any()):
            k = _worst(xp, diff.reshape(-1), tol.reshape(-1), bad.reshape(-1))
            idx = [int(t) for t in backend.np.unravel_index(k, num.shape)] if num.shape else []
            msg = (f"hvpcheck: Hessian-vector product mismatch for input {i}:\n"
                   f"  worst element: (H v)[{i}]{idx}\n"
                   f"  numerical: {float(num.reshape(-1)[k]):.10g}  analytical: "
                   f"{float(h.data.reshape(-1)[k]):.10g}  |difference| {float(diff.reshape(-1)[k]):.3g} "
                   f"> tolerance {float(tol.reshape(-1)[k]):.3g} (atol + rtol * |numerical|)")
            if raise_exception:
                raise GradcheckError(msg)
            return False
    return True
