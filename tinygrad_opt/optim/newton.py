"""Newton's method with a dense Hessian, and Hessian-free truncated Newton (Newton-CG)."""
import math

from tinygrad_opt.optim.optimizer import Optimizer
from tinygrad_opt.optim.linesearch import (FlatObjective, backtracking_armijo, single_group,
                                           strong_wolfe)

MAX_DENSE_PARAMS = 5000


class Newton(Optimizer):
    """Newton's method with a dense Hessian, for small models.

        textbook (Goodfellow et al. eq. 8.27, Alg. 8.8):  theta <- theta - H^{-1} g
        here:  solve (H + damping I) d = g;  theta <- theta - lr * d
        saddle_free=True:  |H| = Q |Lambda| Q^T, d = (|H| + damping I)^{-1} g

    Plain Newton jumps to the stationary point of the local quadratic model, saddles included;
    with |H| every direction of negative curvature becomes one of descent, so saddles repel it
    (Dauphin et al. 2014). H comes from one differentiable gradient and one backward pass per row.
    """
    needs_closure = True

    def __init__(self, params, lr=1.0, damping=0.0, saddle_free=False):
        if not lr > 0:
            raise ValueError(f"Invalid learning rate: {lr}")
        if not damping >= 0:
            raise ValueError(f"Invalid damping: {damping}")
        super().__init__(params, dict(lr=lr, damping=damping, saddle_free=saddle_free))
        n = sum(p.data.size for p in single_group(self, "Newton"))
        if n > MAX_DENSE_PARAMS:
            raise ValueError(f"Newton: {n} parameters is too many for a dense {n}x{n} Hessian "
                             f"(limit {MAX_DENSE_PARAMS}); use NewtonCG, which needs only "
                             "Hessian-vector products")

    def step(self, closure=None):
        """One Newton step; returns the loss before it."""
        group = self.param_groups[0]
        params = single_group(self, "Newton")
        obj = FlatObjective(closure, params, "Newton")
        x = obj.get()
        xp = obj.xp
        f, g, hvp = obj.hvp_at_current()
        n = g.size
        eye = xp.eye(n, dtype=g.dtype)
        H = xp.stack([hvp(eye[i]) for i in range(n)])
        H = 0.5 * (H + H.T)
        damping = group["damping"]
        if group["saddle_free"]:
            lam, Q = xp.linalg.eigh(H)
            scale = xp.abs(lam) + damping
            if float(scale.min()) <= 0:
                raise ValueError("Newton(saddle_free=True): the Hessian has a zero eigenvalue; "
                                 "pass damping > 0")
            d = Q @ ((Q.T @ g) / scale)
        else:
            d = _solve(xp, H + damping * eye, g)
        obj.set(x - group["lr"] * d)
        state = self.state.setdefault(params[0], {})
        state["step"] = state.get("step", 0) + 1
        return f


def _solve(xp, A, b):
    try:
        d = xp.linalg.solve(A, b)
    except Exception as e:                      # LinAlgError on NumPy and CuPy alike
        raise ValueError("Newton: the (damped) Hessian is singular; pass damping > 0") from e
    if not bool(xp.isfinite(d).all()):
        raise ValueError("Newton: the (damped) Hessian is singular; pass damping > 0")
    return d


class NewtonCG(Optimizer):
    """Hessian-free truncated Newton: the Newton system solved by linear CG with H v products.

        textbook (Goodfellow et al. Alg. 8.8):  theta <- theta - H^{-1} g
        here:  (H + damping I) d ~= -g by CG (N&W Alg. 7.1), stopped when
               |r| <= eta |g| with eta = min(0.5, sqrt|g|) (or cg_tol), after cg_max_iter
               iterations, or at the first p with p^T (H + damping I) p <= 0 (then the last
               iterate, or -g if it is the first); theta <- theta + lr * d,
               or theta + alpha d with line_search 'armijo' / 'strong_wolfe'
               (first trial alpha = lr).

    The gradient is built once per step with create_graph=True; each CG iteration costs one
    backward pass of g . p through it (Pearlmutter's trick), never the full Hessian.
    cg_max_iter=None means min(n, 100) for n parameters.
    """
    needs_closure = True

    def __init__(self, params, lr=1.0, damping=0.0, cg_max_iter=None, cg_tol=None,
                 line_search=None):
        if not lr > 0:
            raise ValueError(f"Invalid learning rate: {lr}")
        if not damping >= 0:
            raise ValueError(f"Invalid damping: {damping}")
        if cg_max_iter is not None and not cg_max_iter >= 1:
            raise ValueError(f"Invalid cg_max_iter: {cg_max_iter}")
        if cg_tol is not None and not cg_tol > 0:
            raise ValueError(f"Invalid cg_tol: {cg_tol}")
        if line_search not in (None, "armijo", "strong_wolfe"):
            raise ValueError(f"NewtonCG: unknown line_search {line_search!r}; "
                             "expected None, 'armijo' or 'strong_wolfe'")
        super().__init__(params, dict(lr=lr, damping=damping, cg_max_iter=cg_max_iter,
                                      cg_tol=cg_tol, line_search=line_search))
        single_group(self, "NewtonCG")

    def step(self, closure=None):
        """One truncated Newton step; returns the loss before it."""
        group = self.param_groups[0]
        params = single_group(self, "NewtonCG")
        obj = FlatObjective(closure, params, "NewtonCG")
        xp = obj.xp
        x = obj.get()
        f, g, hvp = obj.hvp_at_current()
        gnorm = float(xp.linalg.norm(g))
        state = self.state.setdefault(params[0], {})
        state["step"] = state.get("step", 0) + 1
        if gnorm == 0:
            state["cg_iters"] = 0
            return f
        tol = (group["cg_tol"] or min(0.5, math.sqrt(gnorm))) * gnorm
        max_iter = group["cg_max_iter"] or min(g.size, 100)
        d, iters = _truncated_cg(xp, hvp, g, group["damping"], tol, max_iter)
        del hvp                                 # free the gradient graph before the line search
        state["cg_iters"] = iters
        lr, ls = group["lr"], group["line_search"]
        if ls is None:
            obj.set(x + lr * d)
            return f
        search = strong_wolfe if ls == "strong_wolfe" else backtracking_armijo
        res = search(obj.phi(x, d), f, float(xp.dot(g, d)), alpha=lr, grad0=g)
        obj.set(x + res.alpha * d)
        return f


def _truncated_cg(xp, hvp, g, damping, tol, max_iter):
    """Approximate solution d of (H + damping I) d = -g and the number of CG iterations."""
    z = xp.zeros_like(g)
    r = -g                                      # residual -g - B z at z = 0
    p = r
    rr = float(xp.dot(r, r))
    for j in range(max_iter):
        Bp = hvp(p)
        if damping:
            Bp = Bp + damping * p
        curv = float(xp.dot(p, Bp))
        if curv <= 0:                           # negative curvature: the model is unbounded along p
            return (-g if j == 0 else z), j + 1
        a = rr / curv
        z = z + a * p
        r = r - a * Bp
        rr_new = float(xp.dot(r, r))
        if math.sqrt(rr_new) <= tol:
            return z, j + 1
        p = r + (rr_new / rr) * p
        rr = rr_new
    return z, max_iter
