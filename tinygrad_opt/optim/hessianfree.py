"""Hessian-free optimization with Gauss-Newton products (Martens 2010, "Deep learning via
Hessian-free optimization"); and `loss_output`, which finds the model output in a loss's graph."""
import math

from .. import autograd, backend, engine
from ..tensor import Tensor
from ..flat import FlatObjective, closure_loss
from .closure import ClosureOptimizer


def loss_output(loss, name):
    """(output, kind): the model output z that the loss was computed from, read off the graph
    the closure built, and kind 'cross_entropy' or 'mse'.

    Supported: F.cross_entropy(z, y) (any reduction that gives a scalar) and
    F.mse_loss(z, t) (mean or sum). The loss must be the closure's return value itself.
    """
    r = autograd.read_loss(loss) if isinstance(loss, Tensor) else None
    if r is not None and r.kind in ("cross_entropy", "mse"):
        return r.output, r.kind
    node = getattr(loss, "_node", None)
    op = "a leaf" if node is None else type(node).__name__
    raise ValueError(f"{name}: cannot find the model output in the loss's graph (its last op "
                     f"is {op}); the closure must return F.cross_entropy(output, y) or "
                     "F.mse_loss(output, target) computed from the model output")


def gauss_newton_product(loss, output, params):
    """v -> G v for G = J^T H_L J at the graph the closure built (lists of arrays).

    J = d output / d params and H_L = d^2 loss / d output^2, both read off that graph:
    J v = d/du <J^T u, v> with J^T u = grad(output, params, u) recorded once for a dummy u
    (the adjoint trick, since J^T u is linear in u), H_L u by autograd.curvature_of_loss
    (closed form for F's losses), and J^T (H_L J v) by one backward of the output. Each
    product is two backward passes through recorded graphs and no new forward pass
    (autograd.ggnvp instead takes J v in forward mode, which needs a model function).
    """
    xp = backend.xp_of(output.data)
    with engine.enable_grad():
        u = Tensor._wrap(xp.zeros_like(output.data), requires_grad=True)
        jtu = autograd.grad(output, params, grad_outputs=u, create_graph=True, allow_unused=True)
    live = [i for i, t in enumerate(jtu) if t is not None and t.requires_grad]

    def product(vs):
        if not live:
            return [xp.zeros_like(p.data) for p in params]
        jv, = autograd.grad([jtu[i] for i in live], u, grad_outputs=[vs[i] for i in live],
                            retain_graph=True)
        with engine.enable_grad():
            hjv = autograd.curvature_of_loss(loss, output, jv.data)
        gv = autograd.grad(output, params, grad_outputs=hjv, retain_graph=True,
                           allow_unused=True)
        return [xp.zeros_like(p.data) if g is None else g.data for p, g in zip(params, gv)]
    return product


def _empirical_fisher_diagonal(loss, params):
    """Per-parameter sum over examples of the squared per-example gradients (of the loss as
    reduced), and the gradient into p.grad, from one backward with extensions.SumGradSquared."""
    from .. import extensions
    for p in params:
        p.grad = None
    with engine.enable_grad(), extensions.collect(extensions.SumGradSquared()):
        loss.backward(retain_graph=True)
    return [p.sum_grad_squared.data for p in params]


class HessianFree(ClosureOptimizer):
    """Hessian-free optimization with Gauss-Newton products (Martens 2010).

        this implementation, one step(closure)            paper (Martens 2010, Alg. 1; sec. 4)
        +-----------------------------------------------+ +------------------------------------+
        | g <- grad f;  G v on the curvature batch      | | B = G (GGN, sec. 4.2), G v on a    |
        |   (curvature_closure; else the closure's)     | |   mini-batch per update (4.3)      |
        | M <- (diag(sum_i g_i^2) + lambda)^0.75        | | preconditioner (4.7), alpha = 3/4  |
        | d_0 <- zeta d_prev  (zeta = 0.95)             | | CG init p_{n-1} decayed (4.5)      |
        | CG on (G + lambda I) d = -g, preconditioned,  | | damped CG, at most 250 its.        |
        |   stop at i > k when q_i < 0 and              | | stopping rule (4.4)                |
        |   (q_i - q_{i-k}) / q_i < k eps,              | |   k = max(10, 0.1 i),              |
        |   k = max(10, 0.1 i), eps = 5e-4              | |   eps = 5e-4                       |
        | keep iterates i = ceil(1.3^j) and the last;   | | CG backtracking (4.6),             |
        |   walk back while f(theta + d_i) decreases    | |   gamma = 1.3                      |
        | rho <- (f(theta+d) - f) / (g.d + d.G d / 2)   | | reduction ratio (4.1)              |
        | rho < 1/4: lambda *= 3/2; rho > 3/4: *= 2/3   | | Levenberg-Marquardt                |
        | alpha <- lr, 0.8 lr, ... until f(theta+a d)   | | backtracking line search           |
        |   <= f + 1e-2 a g.d  (alpha = 0 after 60)     | |   (Martens & Sutskever 2012, 8.8)  |
        +-----------------------------------------------+ +------------------------------------+

    The loss graph the closure returns must end in F.cross_entropy or F.mse_loss applied to
    the model output; G uses that loss's Hessian in the output, so G is positive
    semi-definite and equals the Fisher for these losses. The paper computes G v by the
    R-operator on a mini-batch (sec. 4.3: g and f on the whole training set, G on a fresh
    mini-batch per update); here G v is the double backward of `gauss_newton_product`, on
    the graph of `step(closure, curvature_closure=...)`'s mini-batch loss when one is given,
    else on the closure's own batch. The preconditioner's sum of squared per-example
    gradients comes from extensions.SumGradSquared on the closure's batch (a model with a
    layer it does not support, such as BatchNorm1d, needs precondition=False).
    damping=45 is the initial lambda of Martens' released code; the ratio rho uses the
    undamped model, as the paper does. A zero step (every trial failed) keeps theta and
    raises lambda. `self.log` holds one dict per step: loss, new_loss, rho, damping (the
    lambda used), cg_iters, iterate (the backtracked CG iteration), alpha and products (the
    G v products, warm start included).
    Arrays stay on the parameters' device. The host reads, per update: one copy of three
    scalars per CG iteration (CG's step and stop need them; one more for an iteration that
    finds no curvature and stops), one before CG, one for rho and Armijo, and the loss of
    each evaluation (`tests/optim/test_hessianfree.py` counts them).
    """

    def __init__(self, params, lr=1.0, damping=45.0, cg_max_iter=250, cg_min_iter=10,
                 cg_tol=5e-4, cg_decay=0.95, backtrack_gamma=1.3, precondition=True,
                 precond_power=0.75, armijo_c=1e-2, armijo_beta=0.8, max_line_search=60):
        if not damping > 0:
            raise ValueError(f"Invalid damping: {damping} (Levenberg-Marquardt needs lambda > 0)")
        if not (isinstance(cg_max_iter, int) and cg_max_iter >= 1):
            raise ValueError(f"Invalid cg_max_iter: {cg_max_iter}")
        if not 0 <= cg_decay <= 1:
            raise ValueError(f"Invalid cg_decay: {cg_decay} (need 0 <= zeta <= 1)")
        if not backtrack_gamma > 1:
            raise ValueError(f"Invalid backtrack_gamma: {backtrack_gamma} (need > 1)")
        if not (0 < armijo_c < 1 and 0 < armijo_beta < 1):
            raise ValueError(f"Invalid line search constants c={armijo_c}, beta={armijo_beta}")
        super().__init__(params, dict(lr=lr, damping=damping, cg_max_iter=cg_max_iter,
                                      cg_min_iter=cg_min_iter, cg_tol=cg_tol, cg_decay=cg_decay,
                                      backtrack_gamma=backtrack_gamma, precondition=precondition,
                                      precond_power=precond_power, armijo_c=armijo_c,
                                      armijo_beta=armijo_beta, max_line_search=max_line_search))
        self.log = []

    def step(self, closure=None, curvature_closure=None):
        """One Hessian-free update; returns the loss before it (a float).

        `curvature_closure`, if given, returns the loss on the curvature mini-batch (the same
        model, a subset of the rows): every G v of this update is taken on its graph, while
        g, f and the preconditioner come from `closure` (Martens 2010, sec. 4.3). Pass a new
        mini-batch each update; None takes G on the closure's own batch.
        """
        group = self.param_groups[0]
        params = self.params
        obj = FlatObjective(closure, params, "HessianFree")
        xp = obj.xp
        loss = obj.loss()
        output, _ = loss_output(loss, "HessianFree")
        f0 = float(loss.item())
        if not math.isfinite(f0):           # nothing to model: keep theta, let fit report it
            return f0
        diag = _empirical_fisher_diagonal(loss, params) if group["precondition"] else None
        if diag is None:
            g = obj.flat(autograd.grad(loss, params, retain_graph=True, allow_unused=True))
        else:
            g = obj.flat([p.grad for p in params])
        if curvature_closure is not None:
            closs = closure_loss(curvature_closure, "HessianFree (curvature_closure)")
            product = gauss_newton_product(closs, loss_output(closs, "HessianFree")[0], params)
        else:
            product = gauss_newton_product(loss, output, params)   # the one call to swap for ggnvp
        products = [0]
        shapes = [p.data.shape for p in params]

        def G(v):
            products[0] += 1
            parts, off = [], 0
            for s in shapes:
                n = int(math.prod(s))
                parts.append(v[off:off + n].reshape(s))
                off += n
            return xp.concatenate([a.reshape(-1) for a in product(parts)])

        lam = group["damping"]
        m = None if diag is None else \
            (xp.concatenate([d.reshape(-1) for d in diag]) + lam) ** group["precond_power"]
        state = self.flat_state
        prev = state.get("cg_prev")
        x0 = None if prev is None else group["cg_decay"] * prev
        d, qs, saved, iters = _martens_cg(xp, G, g, lam, m, x0, group)
        state["cg_prev"] = d                                    # the last iterate, not the chosen one
        state["step"] = state.get("step", 0) + 1
        x = obj.get()

        def f_at(step):
            obj.set(x + step)
            obj.evals += 1
            with engine.no_grad():
                return float(obj.closure().item())

        # CG backtracking: walk back from the last iterate while f keeps decreasing
        best_i, best = saved[-1]
        fbest = f_at(best)
        for i, di in reversed(saved[:-1]):
            fi = f_at(di)
            if not fi < fbest:
                break
            best_i, best, fbest = i, di, fi
        dd, slope = _host(xp, xp.dot(best, best), xp.dot(g, best))
        q_undamped = qs[best_i] - 0.5 * lam * dd
        rho = (fbest - f0) / q_undamped if q_undamped < 0 else -math.inf
        if rho < 0.25:
            group["damping"] = lam * 1.5
        elif rho > 0.75:
            group["damping"] = lam * (2.0 / 3.0)
        # Armijo backtracking along the chosen direction
        alpha, f_new = group["lr"], None
        for k in range(group["max_line_search"]):
            f_try = fbest if alpha == 1.0 else f_at(alpha * best)
            if slope < 0 and f_try <= f0 + group["armijo_c"] * alpha * slope:
                f_new = f_try
                break
            alpha *= group["armijo_beta"]
        if f_new is None:
            alpha, f_new = 0.0, f0
        obj.set(x + alpha * best)
        self.count_evals(obj)
        self.log.append(dict(loss=f0, new_loss=f_new, rho=rho, damping=lam, cg_iters=iters,
                             iterate=best_i, alpha=alpha, products=products[0]))
        return f0


def _host(xp, *scalars):
    """The device scalars as host floats, in ONE device-to-host copy: the only door through
    which HessianFree reads its arrays (the losses come as Tensor.item())."""
    return [float(v) for v in backend.to_numpy(xp.stack(scalars))]


def _martens_cg(xp, G, g, lam, m, x0, group):
    """Preconditioned CG on q(d) = g.d + d.(G + lam I) d / 2 from x0 (or 0), with Martens'
    relative-progress stop. Returns the last iterate, q per iteration {i: q_i}, the saved
    iterates [(i, d_i)] at i = ceil(gamma^j) and the last, and the iteration count.

    The control flow reads three numbers per iteration, p.A p, r.M^-1 r and q_i, in one
    copy to the host (and one before the loop); everything else stays on the device.
    """
    def A(v):
        return G(v) + lam * v

    def q(d, r):                        # q(d) = d.(A d + g)/2 + g.d/2 = d.(r + g)/2
        return 0.5 * xp.dot(d, r + g)

    def precond(r):
        return r if m is None else r / m

    d, r = xp.zeros_like(g), g          # r = A d + g, the gradient of q
    y = precond(r)
    ry = xp.dot(r, y)
    if x0 is None:
        ry_h, = _host(xp, ry)
        qs = {0: 0.0}
    else:
        r0 = A(x0) + g
        y0 = precond(r0)
        ry0 = xp.dot(r0, y0)
        ry_h, q0_h, ry0_h = _host(xp, ry, q(x0, r0), ry0)
        qs = {0: 0.0}
        if q0_h < 0:                    # a warm start worse than d = 0 is dropped
            d, r, y, ry, ry_h, qs[0] = x0, r0, y0, ry0, ry0_h, q0_h
    if ry_h == 0:                       # g = 0 (and no warm start): d = 0 is the minimizer
        return d, qs, [(0, d)], 0
    p = -y
    saved = []
    gamma, next_save, j = group["backtrack_gamma"], 1, 0
    max_iter, min_iter, eps = group["cg_max_iter"], group["cg_min_iter"], group["cg_tol"]
    i = 0
    for i in range(1, max_iter + 1):
        Ap = A(p)
        pAp = xp.dot(p, Ap)
        a = ry / xp.where(pAp > 0, pAp, xp.full_like(pAp, math.inf))   # 0 without curvature
        d_new = d + a * p
        r_new = r + a * Ap
        y = precond(r_new)
        ry_new = xp.dot(r_new, y)
        pAp_h, ry_new_h, qs_i = _host(xp, pAp, ry_new, q(d_new, r_new))
        if not pAp_h > 0:               # no curvature left along p (G + lam I is PD in exact math)
            i -= 1
            break
        d, r = d_new, r_new
        qs[i] = qs_i
        if i == next_save:
            saved.append((i, d))
            while next_save <= i:
                j += 1
                next_save = math.ceil(gamma ** j)
        k = max(min_iter, int(0.1 * i))
        if ry_new_h == 0 or (i > k and qs_i < 0 and (qs_i - qs[i - k]) / qs_i < k * eps):
            break                       # solved exactly, or too little progress over k steps
        p = -y + (ry_new / ry) * p
        ry = ry_new
    if not saved or saved[-1][0] != i:
        saved.append((i, d))
    return d, qs, saved, i
