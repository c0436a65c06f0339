"""Curvature of a loss from Hessian-vector products only.

Every quantity here is computed from products v -> H v (the gradient of g . v), so the Hessian
is never formed: top and bottom eigenvalues by Lanczos, the condition number, Hutchinson's trace,
the curvature along the gradient and the second-order step test. The loss is given as a closure
that recomputes a scalar loss Tensor from the current parameters (without calling backward), and
the parameters as a list (or any iterable, read once) of Tensors, e.g. `model.parameters()`.
Vectors are flat arrays of the parameters' total size on the parameters' device; the operator
and the flat-vector helpers live in flat.py (re-exported here). See docs/curvature.md.
"""
import inspect
import math
import threading
import warnings
from dataclasses import dataclass

from . import autograd, backend
from .engine import no_grad
from .flat import GGNOperator, HVPOperator, flatten, unflatten  # noqa: F401  (re-exported)
from .optim.monitor import OptimizerMonitor, OptimizerRecord, _info_get, _Recorder  # noqa: F401
from .tensor import Tensor
from .train import Callback

np = backend.np     # host NumPy, only for the tiny tridiagonal eigenproblem and summaries


class _Probes:
    """Random probe vectors on the parameters' device.

    With seed=None they come from the global generator (backend.random_*, seeded by
    manual_seed); with a seed, from a private generator, so the global stream is untouched.
    """

    def __init__(self, xp, dtype, device, seed=None):
        self.xp, self.dtype, self.device = xp, dtype, device
        self.rs = None if seed is None else _seeded(xp, seed)

    def __del__(self):
        if self.rs is not None:                 # free for this thread's next seeded _Probes
            try:
                idle = _idle.__dict__.setdefault(self.xp, [])
                if len(idle) < 4:
                    idle.append(self.rs)
            except Exception:                   # (at interpreter exit)
                pass

    def normal(self, n):
        if self.rs is None:
            return backend.random_normal((n,), self.dtype, self.device)
        return self.rs.standard_normal(n).astype(self.dtype, copy=False)

    def rademacher(self, n):
        """Entries +1 or -1 with probability 1/2 each."""
        if self.rs is None:
            u = backend.random_uniform((n,), self.dtype, self.device)
        else:
            u = self.rs.random_sample(n)
        return (1.0 - 2.0 * (u < 0.5)).astype(self.dtype)


_idle = threading.local()       # per thread: {array module: RandomStates no _Probes holds}


def _seeded(xp, seed):
    """xp.random.RandomState(seed): one that an earlier _Probes let go, re-seeded, which
    gives the same stream for about 1% of the cost of building one (building one costs
    about half a Hessian-vector product of a small MLP)."""
    idle = _idle.__dict__.get(xp)
    rs = idle.pop() if idle else xp.random.RandomState()
    rs.seed(seed)
    return rs


def _operator(closure, params):
    """`closure` itself if it is already an HVPOperator, else a new one."""
    if isinstance(closure, HVPOperator):
        return closure
    if params is None:
        raise ValueError("params is required unless an HVPOperator is given")
    return HVPOperator(closure, params)


def _dot(a, b):
    """a . b of flat arrays as a float (the method: the cheapest call on NumPy and CuPy)."""
    return float(a.dot(b))


# ---------------------------------------------------------------- Lanczos

@dataclass
class Eigen:
    """Ritz pairs from Lanczos; unpacks as `(eigenvalues, eigenvectors)`.

    eigenvalues: host float64 array (descending for the top end, ascending for the bottom);
    eigenvectors: (k, n) array on the parameters' device, unit rows;
    residuals: ||H y - theta y|| for each pair (from the Lanczos recurrence).
    """
    eigenvalues: object
    eigenvectors: object
    residuals: object
    iterations: int
    n_products: int
    converged: bool

    def __iter__(self):
        return iter((self.eigenvalues, self.eigenvectors))


def _lanczos(op, k, which, max_iter, tol, seed):
    """Lanczos with full reorthogonalization on `op`; Ritz pairs at one or both ends.

    Builds an orthonormal basis Q of the Krylov space {q, Hq, H^2 q, ...} and the tridiagonal
    T = Q^T H Q (alpha on the diagonal, beta beside it). The eigenvalues of the small T (Ritz
    values) approximate the extreme eigenvalues of H; the residual of a Ritz pair (theta, Q^T s)
    is |beta_j s_j| (s_j: last entry of s), which is the stopping test.
    Returns (top-k pairs, bottom-k pairs) with None for an end that was not asked for.
    """
    xp, n = op.xp, op.n
    k = max(1, min(int(k), n))
    m = n if max_iter is None else max(1, min(int(max_iter), n))
    if tol is None:
        tol = math.sqrt(float(np.finfo(op.dtype).eps))
    eps = float(np.finfo(op.dtype).eps)
    probes = _Probes(xp, op.dtype, op.device, seed)

    Q = xp.empty((m, n), dtype=op.dtype)
    alpha = np.zeros(m)
    beta = np.zeros(m)          # beta[j] couples q_j and q_{j+1}; 0 after a restart
    q = probes.normal(n)
    q /= xp.linalg.norm(q)
    converged = False
    for j in range(m):
        Q[j] = q
        w = op.matvec(q)
        alpha[j] = _dot(q, w)
        # Full Gram-Schmidt against the whole basis, done twice ("twice is enough"): this
        # contains the three-term recurrence and stops the loss of orthogonality that makes
        # plain Lanczos report copies of converged eigenvalues.
        B = Q[:j + 1]
        for _ in range(2):
            w -= B.T @ (B @ w)
        b = float(xp.linalg.norm(w))

        theta, S = _tridiag_eigh(alpha[:j + 1], beta[:j])
        scale = float(np.max(np.abs(theta)))
        resid = np.abs(b * S[-1, :])
        top, bottom = _end_indices(theta, k, which)
        converged = all(idx is None or (len(idx) == k and np.all(resid[idx] <= tol * scale))
                        for idx in (top, bottom))
        if j == m - 1 or (converged and scale == 0.0):
            break
        if b <= n * eps * scale:
            # The Krylov space is invariant. Restart with a fresh direction orthogonal to the
            # basis, so that eigenvalues the first start vector could not reach (repeated ones
            # included) can still be found; T becomes block diagonal.
            w = probes.normal(n)
            w /= xp.linalg.norm(w)
            for _ in range(2):
                w -= B.T @ (B @ w)
            b2 = float(xp.linalg.norm(w))
            if b2 <= math.sqrt(eps):
                break                    # the basis already spans everything
            beta[j], q = 0.0, w / b2
            continue
        if converged:
            break
        beta[j], q = b, w / b

    Qs = Q[:len(theta)]
    results = []
    for idx in (top, bottom):
        if idx is None:
            results.append(None)
            continue
        vecs = xp.asarray(S[:, idx].T, dtype=op.dtype) @ Qs
        results.append(Eigen(theta[idx].copy(), vecs, resid[idx].copy(), len(theta),
                             op.n_products, bool(converged)))
    return results[0], results[1]


def _tridiag_eigh(alpha, beta):
    """Eigen-decomposition of the small symmetric tridiagonal matrix (host, ascending)."""
    m = len(alpha)
    T = np.zeros(m * m)                     # written through the flat index: no temporaries
    T[::m + 1], T[1::m + 1], T[m::m + 1] = alpha, beta, beta
    return np.linalg.eigh(T.reshape(m, m))


def _end_indices(theta, k, which):
    """Indices of the k largest (descending) and/or k smallest (ascending) Ritz values."""
    k = min(k, len(theta))
    top = (np.arange(len(theta) - 1, len(theta) - 1 - k, -1) if which in ("largest", "both")
           else None)
    bottom = np.arange(k) if which in ("smallest", "both") else None
    return top, bottom


def top_eigenvalues(closure, params=None, k=1, max_iter=100, tol=None, seed=None):
    """The k largest Hessian eigenvalues (descending) and unit eigenvectors, by Lanczos.

    Returns an `Eigen` that unpacks as (eigenvalues, eigenvectors); eigenvectors are the rows
    of a (k, n) array (split one per parameter with `unflatten`). `closure` may be an
    HVPOperator to share its gradient. tol bounds ||H y - theta y|| relative to the largest
    |Ritz value| (default sqrt(machine epsilon), which gives eigenvalues to about machine
    precision). Single-vector Lanczos: a repeated eigenvalue may be reported fewer times.
    """
    op = _operator(closure, params)
    top, _ = _lanczos(op, k, "largest", max_iter, tol, seed)
    return top


def bottom_eigenvalues(closure, params=None, k=1, max_iter=100, tol=None, seed=None):
    """The k smallest (most negative first) Hessian eigenvalues and eigenvectors, by Lanczos."""
    op = _operator(closure, params)
    _, bottom = _lanczos(op, k, "smallest", max_iter, tol, seed)
    return bottom


def lambda_max(closure, params=None, max_iter=100, tol=None, seed=None):
    """The largest Hessian eigenvalue (the sharpness) as a float."""
    return float(top_eigenvalues(closure, params, 1, max_iter, tol, seed).eigenvalues[0])


def lambda_min(closure, params=None, max_iter=100, tol=None, seed=None):
    """The smallest (most negative) Hessian eigenvalue as a float."""
    return float(bottom_eigenvalues(closure, params, 1, max_iter, tol, seed).eigenvalues[0])


@dataclass
class ConditionNumber:
    """kappa = lambda_max / lambda_min when the Hessian is positive definite, else inf."""
    value: float
    lambda_max: float
    lambda_min: float
    positive_definite: bool
    converged: bool


def condition_number(closure, params=None, max_iter=100, tol=None, seed=None):
    """Estimate of the Hessian's condition number from one Lanczos run at both ends."""
    op = _operator(closure, params)
    top, bottom = _lanczos(op, 1, "both", max_iter, tol, seed)
    return _condition(float(top.eigenvalues[0]), float(bottom.eigenvalues[0]),
                      top.converged)


def _condition(lmax, lmin, converged):
    pd = lmin > 0.0
    return ConditionNumber(lmax / lmin if pd else math.inf, lmax, lmin, pd, converged)


# ---------------------------------------------------------------- trace and gradient curvature

@dataclass
class TraceEstimate:
    """Hutchinson estimate of tr(H): mean of z^T H z and its standard error."""
    mean: float
    stderr: float
    n_samples: int
    samples: object         # host array of the n_samples values z^T H z


def hutchinson_trace(closure, params=None, n_samples=100, seed=None):
    """tr(H) ~ mean of z^T H z over Rademacher probes z (E[z z^T] = I).

    Rademacher probes have the smallest variance of the usual choices: the variance is
    2 * sum_{i != j} H_ij^2, so a diagonal Hessian gives the exact trace with zero error.
    """
    if n_samples < 1:
        raise ValueError(f"hutchinson_trace: n_samples must be >= 1, got {n_samples}")
    op = _operator(closure, params)
    probes = _Probes(op.xp, op.dtype, op.device, seed)
    s = np.empty(n_samples)
    for i in range(n_samples):
        z = probes.rademacher(op.n)
        s[i] = _dot(z, op.matvec(z))
    stderr = float(s.std(ddof=1) / math.sqrt(n_samples)) if n_samples > 1 else math.inf
    return TraceEstimate(float(s.mean()), stderr, n_samples, s)


def gradient_curvature(closure, params=None):
    """g^T H g / g^T g: the curvature of the loss along the gradient (nan if g = 0)."""
    op = _operator(closure, params)
    gg = _dot(op.grad, op.grad)
    if gg == 0.0:
        return math.nan
    return _dot(op.grad, op.matvec(op.grad)) / gg


@dataclass
class StepTest:
    """Second-order prediction for the gradient step theta - lr g (Goodfellow et al. eq. 4.9).

    f(theta - lr g) ~ f(theta) - lr g^T g + 1/2 lr^2 g^T H g.
    """
    lr: float
    loss: float
    grad_norm_sq: float          # g^T g
    gHg: float                   # g^T H g
    curvature: float             # g^T H g / g^T g
    first_order: float           # lr g^T g: the decrease the linear model predicts
    second_order: float          # 1/2 lr^2 g^T H g: the curvature correction
    predicted_change: float      # -first_order + second_order
    predicted_decrease: bool     # predicted_change < 0
    optimal_lr: float            # g^T g / g^T H g when g^T H g > 0, else inf
    actual_change: float = None  # f(theta - lr g) - f(theta), when measured


def step_test(closure, params=None, lr=None, measure=False):
    """Predicted first- vs second-order change of the loss for one gradient step of size lr.

    With measure=True the step is also taken, the loss re-evaluated and the parameters restored,
    so `actual_change` can be compared with `predicted_change`.
    """
    if lr is None:
        raise ValueError("step_test: lr is required")
    op = _operator(closure, params)
    g = op.grad
    gg = _dot(g, g)
    gHg = _dot(g, op.matvec(g)) if gg > 0.0 else 0.0
    first = lr * gg
    second = 0.5 * lr * lr * gHg
    change = -first + second
    result = StepTest(
        lr=float(lr), loss=op.loss, grad_norm_sq=gg, gHg=gHg,
        curvature=gHg / gg if gg > 0.0 else math.nan,
        first_order=first, second_order=second, predicted_change=change,
        predicted_decrease=change < 0.0,
        optimal_lr=gg / gHg if gHg > 0.0 else math.inf)
    if measure:
        if isinstance(closure, HVPOperator):
            raise ValueError("step_test: measure=True needs the closure, not an HVPOperator")
        saved = [p.data.copy() for p in op.params]
        try:
            with no_grad():
                for p, gi in zip(op.params, op.to_params(g)):
                    p.data -= (lr * gi).astype(p.dtype, copy=False)
                result.actual_change = float(closure().item()) - op.loss
        finally:
            for p, d in zip(op.params, saved):
                p.data[...] = d
    return result


# ---------------------------------------------------------------- training-loop monitors

@dataclass
class CurvatureRecord:
    """Curvature of the loss at one training step."""
    step: int
    loss: float
    lambda_max: float            # sharpness: largest Hessian eigenvalue
    lambda_min: float            # smallest (most negative) eigenvalue
    top_eigenvalues: list        # the k largest, descending
    trace: float                 # Hutchinson estimate of tr(H)
    trace_stderr: float
    condition_number: float      # lambda_max / lambda_min when positive definite, else inf
    positive_definite: bool
    negative_curvature: bool     # lambda_min clearly below zero: a saddle or a maximum direction
    grad_curvature: float        # g^T H g / g^T g
    lr: float = None
    lr_sharpness: float = None   # lr * lambda_max; gradient descent is stable only below 2
    converged: bool = True
    n_products: int = 0


class CurvatureMonitor(Callback, _Recorder):
    """Records Hessian curvature every `every` steps and warns when lr * lambda_max > 2.

    closure_or_batch_fn: a closure `() -> loss Tensor` (for instance the loss on a fixed
    batch); or a function `(step_info) -> loss Tensor` called with fit()'s StepInfo; or None
    inside fit(), to use the step's own minibatch, loss_fn(model(xb), yb), at the updated
    parameters. params defaults to the model's parameters inside fit(). Steps are counted by
    `global_step`. Each record runs one Lanczos (both ends of the spectrum), `n_probes`
    Hutchinson probes and one g^T H g product, all on one gradient. Probes come from a private
    generator (seed), so monitoring does not change the training run's random stream.
    """

    def __init__(self, closure_or_batch_fn=None, params=None, every=10, k=1, lr=None,
                 n_probes=10, max_iter=50, tol=None, seed=0, warn=True):
        if every < 1:
            raise ValueError(f"CurvatureMonitor: every must be >= 1, got {every}")
        self.fn = closure_or_batch_fn
        self.takes_info = self.fn is not None and _required_args(self.fn) > 0
        self.params = None if params is None else list(params)
        self.every, self.k, self.lr = int(every), int(k), lr
        self.n_probes, self.max_iter, self.tol = int(n_probes), max_iter, tol
        self.seed, self.warn = seed, warn
        self.history = []

    def _closure_and_params(self, info):
        run = _info_get(info, "run")
        params = self.params
        if params is None:
            if run is None:
                raise ValueError("CurvatureMonitor: params are required outside fit()")
            params = list(run.model.parameters())
        fn = self.fn
        if fn is None:
            if run is None:
                raise ValueError("CurvatureMonitor: give a closure or a batch function to use "
                                 "it outside fit()")
            return (lambda: run.loss_fn(run.model(info.xb), info.yb)), params
        return ((lambda: fn(info)) if self.takes_info else fn), params

    def record(self, step, info=None, lr=None):
        """Measure the curvature now and append a CurvatureRecord (also returned)."""
        closure, params = self._closure_and_params(info)
        op = HVPOperator(closure, params)
        top, bottom = _lanczos(op, self.k, "both", self.max_iter, self.tol, self.seed)
        lmax, lmin = float(top.eigenvalues[0]), float(bottom.eigenvalues[0])
        cond = _condition(lmax, lmin, top.converged)
        trace = (hutchinson_trace(op, n_samples=self.n_probes, seed=self.seed)
                 if self.n_probes > 0 else None)
        gg = _dot(op.grad, op.grad)
        gcurv = _dot(op.grad, op.matvec(op.grad)) / gg if gg > 0.0 else math.nan
        tol = self.tol if self.tol is not None else math.sqrt(float(np.finfo(op.dtype).eps))
        lr = lr if lr is not None else self.lr
        if lr is None:
            lr = _current_lr(info)
        rec = CurvatureRecord(
            step=int(step), loss=op.loss, lambda_max=lmax, lambda_min=lmin,
            top_eigenvalues=[float(t) for t in top.eigenvalues],
            trace=None if trace is None else trace.mean,
            trace_stderr=None if trace is None else trace.stderr,
            condition_number=cond.value, positive_definite=cond.positive_definite,
            # Ritz values lie inside the spectrum, so a clearly negative one proves a negative
            # eigenvalue; the margin only absorbs rounding.
            negative_curvature=lmin < -tol * max(abs(lmax), abs(lmin)),
            grad_curvature=gcurv, lr=None if lr is None else float(lr),
            lr_sharpness=None if lr is None else float(lr) * lmax,
            converged=top.converged, n_products=op.n_products)
        self.history.append(rec)
        if self.warn and rec.lr_sharpness is not None and rec.lr_sharpness > 2.0:
            warnings.warn(
                f"step {step}: lr * lambda_max = {rec.lr:.3g} * {lmax:.4g} = "
                f"{rec.lr_sharpness:.3g} > 2; gradient descent diverges along the top Hessian "
                f"eigenvector (stable only for lr < 2 / lambda_max = {2.0 / lmax:.3g})",
                RuntimeWarning, stacklevel=2)
        return rec

    def on_step_end(self, info):
        step = _info_get(info, "global_step")
        if self._due(step):
            self.record(step, info)


def _required_args(fn):
    """Number of positional parameters of `fn` without a default."""
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return 0
    return sum(1 for p in sig.parameters.values()
               if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
               and p.default is p.empty)


def _current_lr(info):
    """The learning rate from step info: its 'lr', else the optimizer's first group."""
    lr = _info_get(info, "lr")
    if lr is None:
        opt = _info_get(info, "optimizer")
        if opt is not None and opt.param_groups:
            lr = opt.param_groups[0].get("lr")
    return lr


# ---------------------------------------------------------------- spectral density (SLQ)

@dataclass
class SpectralNodes:
    """Gauss quadrature of the spectrum from stochastic Lanczos: one row per probe vector.

    For a probe v with |v| = 1 and T = Q^T H Q from m Lanczos steps started at v,
    T = S diag(theta) S^T gives nodes theta_j and weights tau_j = S_0j^2 with
    v^T f(H) v ~= sum_j tau_j f(theta_j), exact for polynomials f of degree <= 2m - 1.
    nodes, weights: host float64 arrays (n_vectors, m) (m may shrink on an invariant space;
    missing entries have weight 0). moments(k) averages sum_j tau_j theta_j^k over the probes.
    """
    nodes: object
    weights: object
    n_products: int

    def moment(self, k):
        return float((self.weights * self.nodes ** k).sum(axis=1).mean())

    def mass_below(self, x=0.0):
        """The estimated fraction of eigenvalues below x (negative mass for x = 0)."""
        return float((self.weights * (self.nodes < x)).sum(axis=1).mean())

    def density(self, sigma=None, grid=None, n_grid=1000):
        """(grid, density): the quadrature smoothed by a Gaussian kernel of width sigma
        (default 1% of the node range), which adds sigma^2 to the second moment; on a uniform grid
        (default n_grid points from the smallest node - 5 sigma to the largest + 5 sigma),
        normalised to integrate to 1; each node's Gaussian is summed within 12 sigma of it
        (_kernel_sum). PyHessian differs in form only: it scales the spectrum to [-1, 1] and
        uses sigma^2 = 1e-5 there."""
        live = self.weights > 0
        lo, hi = float(self.nodes[live].min()), float(self.nodes[live].max())
        if sigma is None:
            sigma = 0.01 * max(hi - lo, abs(hi), abs(lo), 1e-12)
        if not sigma > 0:
            raise ValueError(f"spectral_density: sigma must be positive, got {sigma}")
        default_grid = grid is None
        grid = (np.linspace(lo - 5 * sigma, hi + 5 * sigma, int(n_grid)) if default_grid
                else np.asarray(grid, dtype=float))
        nodes = self.nodes[live]
        w = self.weights[live] / (self.nodes.shape[0] * sigma * math.sqrt(2 * math.pi))
        density = _kernel_sum(grid, nodes, w, sigma, ascending=default_grid)
        total = float(_trapezoid(density, grid))
        if not total > 0:
            raise ValueError("spectral_density: the grid does not cover the spectrum "
                             f"[{lo:.4g}, {hi:.4g}]")
        return grid, density / total


def _kernel_sum(grid, nodes, w, sigma, ascending=False, cut=12.0):
    """sum_j w_j exp(-(x - theta_j)^2 / (2 sigma^2)) at each grid point x.

    On an ascending grid each node's Gaussian is evaluated only on a window of grid points
    around it, as wide as needed to reach `cut` sigma on both sides for every node (beyond,
    it is below 1e-31 of its peak): on a fine grid most points lie beyond for most nodes, and
    the exponentials are the cost. Windows running past the grid's end read +inf there, whose
    kernel is 0. A grid that is not ascending gets every pair.
    """
    n = grid.shape[0]
    E = None
    if ascending or n < 2 or bool((grid[1:] >= grid[:-1]).all()):
        first = np.searchsorted(grid, nodes - cut * sigma)         # each node's window
        width = int((np.searchsorted(grid, nodes + cut * sigma, side="right") - first).max())
        if width < n:
            idx = first[:, None] + np.arange(width)                # (nodes, width)
            E = np.concatenate([grid, np.full(width, np.inf)])[idx] - nodes[:, None]
    if E is None:
        E = grid[None, :] - nodes[:, None]
        idx = None
    E *= E
    E *= -0.5 / (sigma * sigma)
    K = np.exp(E, out=E)                                           # -inf -> 0
    if idx is None:
        return w @ K
    K *= w[:, None]
    return np.bincount(idx.ravel(), weights=K.ravel(), minlength=n + width)[:n]


def _lanczos_tridiagonal(op, q, m, reorthogonalize=False):
    """alpha, beta of T = Q^T H Q after m Lanczos steps from the unit vector q.

    Here the start vector matters (it is the probe of the quadrature) and all m steps run.
    Without reorthogonalization this is the three-term recurrence alone, which keeps two
    vectors: in floating point the basis loses orthogonality and converged eigenvalues come
    back as copies, but the copies share the weight of the original, so the quadrature stays
    accurate (Knizhnerman 1996; Papyan 2019 uses it for the same reason). reorthogonalize=True
    adds the full Gram-Schmidt of _lanczos (twice), at O(m n) extra work and memory per step.
    Stops early, with a smaller T, when the Krylov space is invariant: the quadrature is then
    exact for that probe.
    """
    xp = op.xp
    Q = xp.empty((m, op.n), dtype=op.dtype) if reorthogonalize else None
    alpha, beta = np.zeros(m), np.zeros(max(m - 1, 0))
    eps = float(np.finfo(op.dtype).eps)
    V = xp.zeros((2, op.n), dtype=op.dtype)     # q_j and q_{j-1}, in alternating rows
    V[0] = q
    c = np.zeros(2, dtype=op.dtype)             # their coefficients in the recurrence
    b, amax = 0.0, 1.0
    for j in range(m):
        cur = j % 2
        q = V[cur]
        w = op.matvec(q)                        # a new array each step: updated in place
        a = alpha[j] = _dot(q, w)
        if j == m - 1:
            break
        if reorthogonalize:
            Q[j] = q
            B = Q[:j + 1]
            for _ in range(2):
                w -= B.T @ (B @ w)
        else:                                   # w -= a q_j + b q_{j-1}: one product
            c[cur], c[1 - cur] = a, b
            w -= (c if xp is np else xp.asarray(c)).dot(V)
        b = math.sqrt(_dot(w, w))
        amax = max(amax, abs(a))
        if b <= op.n * eps * amax:
            return alpha[:j + 1], beta[:j]
        xp.multiply(w, 1.0 / b, out=V[1 - cur])     # q_{j+1}, over q_{j-1}
        beta[j] = b
    return alpha, beta


def spectral_nodes(closure, params=None, n_iter=100, n_vectors=1, seed=None,
                   reorthogonalize=False):
    """SLQ quadrature nodes and weights of the Hessian spectrum (see SpectralNodes).

    Probes are Rademacher vectors scaled to unit length, so E[v v^T] = I / n and the
    weighted nodes estimate the spectral measure (1/n) sum_i delta(lambda - lambda_i):
    sum_j tau_j theta_j^k is an unbiased estimate of tr(H^k) / n.
    """
    if n_iter < 1 or n_vectors < 1:
        raise ValueError(f"spectral_density: n_iter and n_vectors must be >= 1, got "
                         f"n_iter={n_iter}, n_vectors={n_vectors}")
    op = _operator(closure, params)
    m = min(int(n_iter), op.n)
    probes = _Probes(op.xp, op.dtype, op.device, seed)
    nodes, weights = np.zeros((n_vectors, m)), np.zeros((n_vectors, m))
    for i in range(n_vectors):
        v = probes.rademacher(op.n)
        alpha, beta = _lanczos_tridiagonal(op, v / math.sqrt(op.n), m, reorthogonalize)
        theta, S = _tridiag_eigh(alpha, beta)
        nodes[i, :len(theta)], weights[i, :len(theta)] = theta, S[0] ** 2
    return SpectralNodes(nodes, weights, op.n_products)


def spectral_density(closure, params=None, n_iter=100, n_vectors=1, seed=None, sigma=None,
                     grid=None, n_grid=1000, reorthogonalize=False):
    """Hessian eigenvalue density by stochastic Lanczos quadrature (Ghorbani et al. 2019).

        rho(lambda) ~= (1/n_vectors) sum_v sum_j tau_j N(lambda; theta_j, sigma^2)

    with the nodes theta_j and weights tau_j of `spectral_nodes` (n_iter Lanczos steps per
    probe, about n_iter Hessian-vector products each; see _lanczos_tridiagonal for
    reorthogonalize) and SpectralNodes.density for sigma, grid and n_grid. Returns host arrays
    (grid, density), the trapezoid integral of density over grid being 1.
    """
    sn = spectral_nodes(closure, params, n_iter, n_vectors, seed, reorthogonalize)
    return sn.density(sigma, grid, n_grid)


_trapezoid = getattr(np, "trapezoid", None) or np.trapz      # NumPy 2 renamed trapz


# ---------------------------------------------------------------- per-layer blocks

class _BlockOperator:
    """v -> H_bb v for the diagonal block b (a slice of the flat parameter vector) of `op`."""

    def __init__(self, op, start, stop):
        self.op, self.start, self.stop = op, start, stop
        self.xp, self.dtype, self.device = op.xp, op.dtype, op.device
        self.n = stop - start
        self.n_products = 0

    @property
    def shape(self):
        return (self.n, self.n)

    def matvec(self, v):
        full = self.xp.zeros(self.op.n, dtype=self.dtype)
        full[self.start:self.stop] = v
        self.n_products += 1
        return self.op.matvec(full)[self.start:self.stop]


def block_top_eigenvalues(closure, params, k=1, by="layer", max_iter=100, tol=None, seed=None):
    """Top-k eigenvalues of each diagonal Hessian block, e.g. one per layer.

    params: a list of Tensors, or of (name, Tensor) pairs as from model.named_parameters().
    by="parameter": each parameter is a block; by="layer": parameters whose names share the
    prefix before the last "." (a layer's weight and bias) form one block (unnamed parameters
    are numbered). The block H_bb = d^2 L / d theta_b^2 holds the curvature of the layer alone,
    the others fixed; all blocks use one gradient graph. Returns {block name: Eigen}.
    """
    if by not in ("layer", "parameter"):
        raise ValueError(f"block_top_eigenvalues: by must be 'layer' or 'parameter', got {by!r}")
    named = [(str(i), p) if isinstance(p, Tensor) else (p[0], p[1])
             for i, p in enumerate(params)]
    op = HVPOperator(closure, [p for _, p in named])
    blocks, offset = {}, 0
    for name, p in named:
        key = name.rsplit(".", 1)[0] if by == "layer" else name
        lo_hi = blocks.setdefault(key, [offset, offset])
        if lo_hi[1] != offset:
            raise ValueError(f"block_top_eigenvalues: the parameters of block {key!r} are not "
                             "adjacent in params")
        offset += p.size
        lo_hi[1] = offset
    out = {}
    for key, (lo, hi) in blocks.items():
        top, _ = _lanczos(_BlockOperator(op, lo, hi), k, "largest", max_iter, tol, seed)
        out[key] = top
    return out
