"""The parameters as one flat vector: the one home of everything that sees them that way.

- `flatten`, `unflatten`, `assign`: arrays <-> one flat array (views / in-place writes);
  `parameters_to_vector`, `vector_to_parameters`: the PyTorch-named Tensor versions.
- `closure_loss`: call a loss closure and check that it returned a one-element loss Tensor;
  `require_closure`: the error of a closure-taking step called without one.
- `HVPOperator`: v -> H v on flat arrays, from one differentiable gradient; `GGNOperator`
  beside it: v -> J^T H_L J v, the generalized Gauss-Newton matrix, by forward mode. Its interface
  (`matvec`, `shape`, `dtype`, `xp`, `n`) is the one every curvature operator offers, so
  Lanczos, CG and the line searches take any of them; `dense()` is the project's one dense
  Hessian builder (autograd.hessian, Newton and the textbook Newton all use it).
- `FlatObjective`: a loss closure as f(x) of one flat vector x, with the 1-D slice phi(alpha)
  that the line searches need; shared by the closure optimizers.
"""
from . import autograd, backend, engine
from .ops import concatenate, reshape
from .tensor import Tensor


# ---------------------------------------------------------------- flat arrays

def flatten(arrays):
    """One flat array from a list of arrays (or Tensors), in order."""
    arrays = [a.data if isinstance(a, Tensor) else a for a in arrays]
    if not arrays:
        raise ValueError("flatten: no arrays given")
    xp = backend.xp_of(arrays[0])
    return xp.concatenate([a.reshape(-1) for a in arrays])


def unflatten(vec, params):
    """The flat array `vec` split into arrays shaped like `params` (views of `vec`)."""
    out, i = [], 0
    for p in params:
        out.append(vec[i:i + p.size].reshape(p.shape))
        i += p.size
    if vec.ndim != 1 or i != vec.shape[0]:
        raise ValueError(f"unflatten: vector of shape {tuple(vec.shape)} does not match "
                         f"parameters of total size {i}")
    return out


def assign(params, vec):
    """Write the flat array `vec` into the parameters' data, in place (cast to each dtype)."""
    for p, part in zip(params, unflatten(vec, params)):
        p.data[...] = part


def parameters_to_vector(params):
    """All parameters flattened and joined into one 1-D Tensor (differentiable)."""
    params = list(params)
    if not params:
        raise ValueError("parameters_to_vector: no parameters given")
    return concatenate([reshape(p, -1) for p in params])


def vector_to_parameters(vec, params):
    """Copy consecutive slices of the 1-D vec into the parameters' data, in place."""
    data = vec.data if isinstance(vec, Tensor) else vec
    params = list(params)
    total = sum(p.size for p in params)
    if data.ndim != 1 or data.shape[0] != total:
        raise ValueError(f"vector_to_parameters: vector of shape {tuple(data.shape)} does not "
                         f"match {total} parameter elements")
    assign(params, data)


def _flat_or_zeros(arrays, params, xp, dtype):
    """Flat vector of `arrays` in `dtype`, zeros where an entry is None (an unused parameter)."""
    return xp.concatenate([xp.zeros(p.size, dtype=dtype) if a is None
                           else a.reshape(-1).astype(dtype, copy=False)
                           for a, p in zip(arrays, params)])


def require_closure(closure, name):
    """Raise the one TypeError every closure-taking step gives when the closure is missing."""
    if closure is None or not callable(closure):
        raise TypeError(f"{name}.step needs a closure that recomputes the loss and returns it "
                        "(without calling backward), e.g. opt.step(lambda: loss_fn(model(x), y))")


def closure_loss(closure, name):
    """closure() with grad recording on, checked to be a one-element loss Tensor."""
    with engine.enable_grad():
        loss = closure()
    if not isinstance(loss, Tensor):
        raise TypeError(f"{name}: the closure must return the loss Tensor (and not call "
                        f"backward), got {type(loss).__name__}")
    if loss.size != 1:
        raise ValueError(f"{name}: the closure must return a one-element loss, "
                         f"got shape {loss.shape}")
    return loss


def _check_params(params, name):
    params = list(params)
    if not params:
        raise ValueError(f"{name}: no parameters given")
    for i, p in enumerate(params):
        if not isinstance(p, Tensor) or not p.requires_grad:
            raise ValueError(f"{name}: parameter {i} is not a Tensor with requires_grad=True")
    return params


# ---------------------------------------------------------------- the operator

class HVPOperator:
    """v -> H v for the loss of `closure` at the current values of `params`, on flat vectors.

    Interface shared by every curvature operator: `matvec(v)` (also `op(v)`) on flat arrays,
    `shape == (n, n)`, `n`, `dtype`, `xp`, `device`, `n_products`; this one also has the
    loss (`loss`, a float; `loss_tensor`, detached) and the flat gradient (`grad`) at which it
    was built.
    The gradient g is computed once with create_graph=True; each product is the gradient of
    g . v through that same graph (retain_graph=True): every g_i seeded with v_i, so no dot
    product is recorded and a product costs about one backward pass (Pearlmutter 1994).
    Build a new operator after the parameters change.
    """

    def __init__(self, closure, params, name="HVPOperator"):
        self.params = _check_params(params, name)
        first = self.params[0].data
        self.xp = backend.xp_of(first)
        self.device = backend.device_of(first)
        self.dtype = self.xp.result_type(*[p.dtype for p in self.params])
        self.n = sum(p.size for p in self.params)
        loss = closure_loss(closure, name)
        with engine.enable_grad():
            grads = autograd.grad(loss, self.params, create_graph=True, allow_unused=True) \
                if loss.requires_grad else (None,) * len(self.params)
        self.loss = float(loss.item())
        self.loss_tensor = loss.detach()
        self.grads = grads             # per-parameter differentiable gradients (None: unused)
        self.grad = self._flat([None if g is None else g.data for g in grads])
        self.n_products = 0

    @property
    def shape(self):
        return (self.n, self.n)

    def _flat(self, arrays):
        return _flat_or_zeros(arrays, self.params, self.xp, self.dtype)

    def matvec(self, v):
        """H v for a flat vector v."""
        v = self.xp.asarray(v, dtype=self.dtype)
        if v.shape != (self.n,):
            raise ValueError(f"HVPOperator: vector of shape {v.shape}, expected ({self.n},)")
        self.n_products += 1
        # A gradient that does not depend on the parameters has zero Hessian rows.
        used = [(g, vi.astype(g.dtype, copy=False))
                for g, vi in zip(self.grads, unflatten(v, self.params))
                if g is not None and g.requires_grad]
        if not used:
            return self.xp.zeros(self.n, dtype=self.dtype)
        hv = autograd.grad(tuple(g for g, _ in used), self.params,
                           grad_outputs=tuple(vi for _, vi in used), retain_graph=True,
                           allow_unused=True)
        return self._flat([None if h is None else h.data for h in hv])

    __call__ = matvec

    def dense(self):
        """The dense n x n Hessian, one product per column, symmetrised (small problems only)."""
        eye = self.xp.eye(self.n, dtype=self.dtype)
        H = self.xp.stack([self.matvec(eye[i]) for i in range(self.n)])
        return 0.5 * (H + H.T)

    def to_params(self, vec):
        """A flat vector split into arrays shaped like the parameters."""
        return unflatten(vec, self.params)


class GGNOperator(HVPOperator):
    """v -> G v = J^T H_L J v, the generalized Gauss-Newton matrix, on flat vectors, for the
    output model_fn() and the scalar loss_fn(output) at the current `params`.

    The output's graph is built once; a product is one forward-mode pass for J v, H_L (J v)
    by autograd.curvature_of_loss (closed form for cross-entropy, squared error and the
    logistic loss) and one backward of the output for J^T. G is positive semi-definite for a
    loss convex in the output (docs/forward_mode.md), so Lanczos and CG run on it safely;
    it goes wherever an HVPOperator does. `dense()` gives G.
    """

    def __init__(self, model_fn, loss_fn, params):
        self.params = _check_params(params, "GGNOperator")
        first = self.params[0].data
        self.xp = backend.xp_of(first)
        self.device = backend.device_of(first)
        self.dtype = self.xp.result_type(*[p.dtype for p in self.params])
        self.n = sum(p.size for p in self.params)
        self.model_fn = model_fn
        with engine.enable_grad():
            self._out = model_fn()
            self._o = Tensor._wrap(self._out.data, requires_grad=True)
            loss = closure_loss(lambda: loss_fn(self._o), "GGNOperator (loss_fn)")
            (gout,) = autograd.grad(loss, self._o, retain_graph=True)
        self._loss = loss
        self.loss = float(loss.item())
        self.loss_tensor = loss.detach()
        self.grads = None
        self.grad = self._flat([None if g is None else g.data for g in autograd.grad(
            self._out, self.params, grad_outputs=gout.data, retain_graph=True, allow_unused=True)])
        self.n_products = 0

    def matvec(self, v):
        """G v for a flat vector v."""
        v = self.xp.asarray(v, dtype=self.dtype)
        if v.shape != (self.n,):
            raise ValueError(f"GGNOperator: vector of shape {v.shape}, expected ({self.n},)")
        self.n_products += 1
        with engine.no_grad(), engine.forward_level() as level:
            for p, vi in zip(self.params, unflatten(v, self.params)):
                level[p] = vi.astype(p.dtype, copy=False)
            jv = level.get(self.model_fn())
        if jv is None or not self._out.requires_grad:
            return self.xp.zeros(self.n, dtype=self.dtype)
        u = autograd.curvature_of_loss(self._loss, self._o, jv)
        gv = autograd.grad(self._out, self.params, grad_outputs=u, retain_graph=True,
                           allow_unused=True)
        return self._flat([None if g is None else g.data for g in gv])

    __call__ = matvec


# ---------------------------------------------------------------- the flat objective

class FlatObjective:
    """A loss closure as a function of one flat vector x holding every parameter.

    The closure recomputes the loss Tensor from the current parameters (without calling
    backward); gradients come from `autograd.grad`, so `.grad` is never touched. `set(x)`
    writes x into the parameters in place; `evals` counts closure calls.
    """

    def __init__(self, closure, params, name):
        require_closure(closure, name)
        self.closure, self.params, self.name = closure, list(params), name
        first = self.params[0].data
        self.xp = backend.xp_of(first)
        self.dtype = self.xp.result_type(*[p.dtype for p in self.params])
        self.evals = 0

    def get(self):
        """Copy of the current parameters as one flat vector."""
        return flatten(self.params).astype(self.dtype, copy=False)

    def set(self, x):
        """Write the flat vector x into the parameters (in place)."""
        assign(self.params, x)

    def loss(self):
        """The closure's loss Tensor, recorded with grad enabled (counted in evals)."""
        loss = closure_loss(self.closure, self.name)
        self.evals += 1
        return loss

    def flat(self, grads):
        """Flat vector of per-parameter gradients (Tensors or arrays; zeros where None)."""
        return _flat_or_zeros([g.data if isinstance(g, Tensor) else g for g in grads],
                              self.params, self.xp, self.dtype)

    def value_and_grad(self):
        """(loss as a float, flat gradient) at the current parameters."""
        loss = self.loss()
        if not loss.requires_grad:           # constant loss: zero gradient
            return float(loss.item()), self.xp.zeros(sum(p.size for p in self.params), self.dtype)
        return float(loss.item()), self.flat(autograd.grad(loss, self.params, allow_unused=True))

    def hvp_operator(self):
        """An HVPOperator at the current parameters (one closure call, counted in evals)."""
        op = HVPOperator(self.closure, self.params, self.name)
        self.evals += 1
        return op

    def phi(self, x, d):
        """phi(alpha) -> (loss, slope, gradient) at x + alpha d; leaves the parameters there."""
        xp = self.xp

        def phi(alpha):
            self.set(x + alpha * d)
            f, g = self.value_and_grad()
            return f, float(xp.dot(g, d)), g
        return phi
