"""Limited-memory BFGS."""
from .closure import ClosureOptimizer, finite

LINE_SEARCHES = ("strong_wolfe", "armijo", None)


class LBFGS(ClosureOptimizer):
    """L-BFGS with the two-loop recursion and a strong Wolfe line search.

        textbook (Goodfellow et al. sec. 8.6.3):  d_t = -M_t g_t, M_t ~ H^{-1} the BFGS
            update built from s_k = theta_{k+1} - theta_k, y_k = g_{k+1} - g_k;
            theta <- theta + alpha* d_t
        here:  M_t g_t from the last history_size pairs by the two-loop recursion
               (N&W Alg. 7.4), starting from gamma I with gamma = s^T y / y^T y of the newest pair;
               pairs with y^T s <= eps |s| |y| are skipped so M stays positive definite;
               alpha from strong Wolfe (c1=1e-4, c2=0.9) with first trial lr (lr / max(1, |g|)
               while there is no history), or that trial itself with line_search=None.

    One step(closure) runs up to max_iter iterations (direction, line search, history update)
    and starts no new one after max_eval closure calls; it stops early when max|g| <=
    tolerance_grad, or when the step max|s| or the change of the loss falls below
    tolerance_change. It returns the loss before the first iteration. A step that starts where
    the previous one stopped reuses its loss and gradient (see ClosureOptimizer).
    """

    def __init__(self, params, lr=1.0, history_size=10, max_iter=20, max_eval=None,
                 tolerance_grad=1e-7, tolerance_change=1e-9, line_search="strong_wolfe"):
        if not (isinstance(history_size, int) and history_size >= 1):
            raise ValueError(f"Invalid history_size: {history_size}")
        if not (isinstance(max_iter, int) and max_iter >= 1):
            raise ValueError(f"Invalid max_iter: {max_iter}")
        if max_eval is None:
            max_eval = max_iter * 5 // 4
        super().__init__(params, dict(lr=lr, history_size=history_size, max_iter=max_iter,
                                      max_eval=max_eval, tolerance_grad=tolerance_grad,
                                      tolerance_change=tolerance_change, line_search=line_search))
        self.check_line_search(line_search, LINE_SEARCHES)

    def step(self, closure=None):
        """Up to max_iter L-BFGS iterations; returns the loss before them."""
        group = self.param_groups[0]
        obj, x, f, g, _ = self.begin(closure)
        xp = obj.xp
        state = self.flat_state
        tol_grad, tol_change = group["tolerance_grad"], group["tolerance_change"]
        if "old_s" not in state:                # history: one (s, y) pair per row, newest last
            state.update(old_s=xp.zeros((0, x.size), x.dtype), old_y=xp.zeros((0, x.size), x.dtype),
                         n_iter=0, func_evals=0)
        f_start = f
        if not finite(f) or float(xp.abs(g).max()) <= tol_grad:
            state["func_evals"] += obj.evals
            if finite(f):
                self.remember(closure, x, f, g)
            return f_start
        eps = float(xp.finfo(g.dtype).eps)
        for _ in range(group["max_iter"]):
            state["n_iter"] += 1
            d = _two_loop(xp, g, state["old_s"], state["old_y"])
            gd = float(xp.dot(g, d))
            if not gd < 0:                      # no descent left along d (rounding)
                break
            alpha = group["lr"]
            if not len(state["old_s"]):
                alpha /= max(1.0, float(xp.linalg.norm(g)))
            if group["line_search"] is None:
                obj.set(x + alpha * d)
                f_new, g_new = obj.value_and_grad()
            else:
                options = dict(c2=0.9) if group["line_search"] == "strong_wolfe" else {}
                res = self.line_search(group["line_search"], obj.phi(x, d), f, gd, alpha=alpha,
                                       c1=1e-4, max_evals=25, grad0=g, **options)
                alpha, f_new, g_new = res.alpha, res.value, res.grad
                if alpha == 0:                  # no decrease found: stay at x
                    obj.set(x)
                    break
            s = alpha * d
            x_new = x + s
            obj.set(x_new)
            y = g_new - g
            ys = float(xp.dot(y, s))
            if ys > eps * float(xp.linalg.norm(y) * xp.linalg.norm(s)):
                m = group["history_size"]
                state["old_s"] = _push(xp, state["old_s"], s, m)
                state["old_y"] = _push(xp, state["old_y"], y, m)
            done = (obj.evals + obj.reused >= group["max_eval"]
                    or float(xp.abs(g_new).max()) <= tol_grad
                    or float(xp.abs(s).max()) <= tol_change
                    or abs(f_new - f) < tol_change)
            x, f, g = x_new, f_new, g_new
            if done:
                break
        state["func_evals"] += obj.evals
        if finite(f):
            self.remember(closure, x, f, g)
        return f_start


def _push(xp, rows, v, m):
    """A new array of the last m - 1 rows and v (the stored one is never changed in place)."""
    return xp.concatenate([rows[max(0, len(rows) - (m - 1)):], v[None]])


def _two_loop(xp, g, S, Y):
    """d = -M g by the two-loop recursion (N&W Alg. 7.4) over the rows of S and Y; -g if empty."""
    k = len(S)
    if k == 0:
        return -g
    rho = [1.0 / xp.dot(Y[i], S[i]) for i in range(k)]     # device scalars: no host syncs
    q = g
    a = [None] * k
    for i in reversed(range(k)):
        a[i] = rho[i] * xp.dot(S[i], q)
        q = q - a[i] * Y[i]
    # initial inverse Hessian gamma I with gamma = s^T y / y^T y of the newest pair
    q = q * (xp.dot(S[-1], Y[-1]) / xp.dot(Y[-1], Y[-1]))
    for i in range(k):
        b = rho[i] * xp.dot(Y[i], q)
        q = q + (a[i] - b) * S[i]
    return -q
