"""Newton's method with a dense Hessian, and Hessian-free truncated Newton (Newton-CG).

Both are safeguarded by default with Levenberg-Marquardt damping driven by the reduction
ratio (Nocedal & Wright sec. 4 and 10.3; Nielsen's update, as in Madsen, Nielsen & Tingleff,
"Methods for non-linear least squares problems", 2004, eq. 3.16):

    d = -(H + lam I)^{-1} g                     (CG solves it approximately in Newton-CG)
    m(d) = g.d + 1/2 d.H.d                      the quadratic model's predicted change
    rho = (f(theta + d) - f(theta)) / m(d)      actual over predicted change
    rho >= ETA:  accept;  lam <- lam * max(1/5, 1 - (2 rho - 1)^3)
    otherwise:   reject (stay) and try again with lam such that the step is about t times
                 as long, 1 / (c + lam') = t / (c + lam), where c = s.H.s / s.s is the
                 curvature along the rejected step s and t in [0.1, 0.5] minimizes the parabola
                 through f, g.s and f(theta + s) (what backtracking would do)

lam also grows until H + lam I is positive definite along every direction the solver meets,
so each step is a descent direction and saddles repel the iteration instead of attracting it.
The trial point's loss, gradient and Hessian operator start the next step (ClosureOptimizer's
reuse), so an accepted step costs one closure call.
"""
import math

from .closure import ClosureOptimizer, finite

MAX_DENSE_PARAMS = 5000
ETA = 1e-4            # accept a step when rho >= ETA (N&W Alg. 4.1's eta)
DAMP_MIN_FACTOR = 1 / 5   # an accepted step shrinks lam at most 5-fold (Nielsen: 3-fold)
FLOOR = 1e-3          # c is at least FLOOR * (the curvature scale |d.H.d| / d.d, or max |eig H|)
MAX_TRIES = 30        # rejected trial steps per step() before giving up (parameters unchanged)


class _LevenbergMarquardt:
    """lam of the damping rule in the module docstring, kept in the optimizer state."""

    def __init__(self, state, lam0):
        self.state = state
        self.lam = state.get("damping", lam0)

    def accept(self, rho):
        """After a step with reduction ratio rho >= ETA."""
        self.lam *= max(DAMP_MIN_FACTOR, 1 - (2 * rho - 1) ** 3)
        self.state["damping"] = self.lam

    def reject(self, f, f_new, slope, curv, scale):
        """After a rejected step s: f, f_new the loss before and at the trial point, slope =
        g.s, curv = s.H.s / s.s. lam grows so that the next step is about t times as long,
        t the minimizer of the parabola through f, slope and f_new, kept in [0.1, 0.5]
        (backtracking's interpolation): 1/(c + lam') = t/(c + lam) for curvature c."""
        t = 0.1
        if finite(f_new) and f_new - f - slope > 0:
            t = min(max(-slope / (2 * (f_new - f - slope)), 0.1), 0.5)
        c = max(curv, FLOOR * scale)
        self.lam = (c + self.lam) / t - c
        self.state["damping"] = self.lam


def _ratio(f, f_new, pred):
    """rho = actual / predicted change; -inf when the trial loss is not finite.

    When both changes are below the loss's rounding error the model cannot be checked; the
    step is then accepted with rho = 1 if the loss did not grow by more than that error."""
    if not finite(f_new):
        return -math.inf
    noise = 64 * 2.0 ** -52 * abs(f)
    if abs(pred) <= noise and abs(f_new - f) <= noise:
        return 1.0
    return (f_new - f) / pred if pred < 0 else -math.inf


class Newton(ClosureOptimizer):
    """Newton's method with a dense Hessian, for small models.

        textbook (Goodfellow et al. eq. 8.27, Alg. 8.8):  theta <- theta - H^{-1} g
        here:  solve (H + lam I) d = g;  theta <- theta - lr * d
        saddle_free=True:  |H| = Q |Lambda| Q^T, d = (|H| + lam I)^{-1} g
        adaptive=True (default): lam starts at `damping` and follows the Levenberg-Marquardt
        rule of this module (constants ETA, FLOOR, MAX_TRIES there), raised first until
        H + lam I is positive definite; adaptive=False: lam = damping at every step.

    Plain Newton jumps to the stationary point of the local quadratic model, saddles included;
    with |H|, or with lam above -lambda_min(H), every direction of negative curvature becomes
    one of descent, so saddles repel it (Dauphin et al. 2014). H comes from
    flat.HVPOperator.dense: one differentiable gradient and one backward pass per column.
    """

    def __init__(self, params, lr=1.0, damping=0.0, saddle_free=False, adaptive=True):
        if not damping >= 0:
            raise ValueError(f"Invalid damping: {damping}")
        super().__init__(params, dict(lr=lr, damping=damping, saddle_free=saddle_free,
                                      adaptive=adaptive))
        n = sum(p.data.size for p in self.params)
        if n > MAX_DENSE_PARAMS:
            raise ValueError(f"Newton: {n} parameters is too many for a dense {n}x{n} Hessian "
                             f"(limit {MAX_DENSE_PARAMS}); use NewtonCG, which needs only "
                             "Hessian-vector products")

    def step(self, closure=None):
        """One Newton step; returns the loss before it."""
        group = self.param_groups[0]
        obj, x, f, g, op = self.begin(closure, operator=True)
        xp = obj.xp
        state = self.flat_state
        state["step"] = state.get("step", 0) + 1
        if not finite(f):                       # fit turns this into TrainingDiverged
            return f
        H = op.dense()
        lr = group["lr"]
        if not group["adaptive"]:
            d = self._fixed_direction(xp, H, g, group["damping"], group["saddle_free"])
            obj.set(x - lr * d)
            self.count_evals(obj)
            return f
        lam_h, Q = xp.linalg.eigh(H)
        if group["saddle_free"]:
            lam_h = xp.abs(lam_h)
        lo, scale = float(lam_h.min()), max(float(xp.abs(lam_h).max()), 1e-300)
        gq = Q.T @ g
        lm = _LevenbergMarquardt(state, group["damping"])
        if lm.lam + lo <= 0:                    # make H + lam I positive definite
            lm.lam = -lo + FLOOR * scale
        for tries in range(MAX_TRIES):
            step = -lr * (Q @ (gq / (lam_h + lm.lam)))
            if _lm_trial(self, closure, obj, x, f, step, float(g @ step),
                         float(step @ (H @ step)), lm, scale, tries):
                break
        else:
            obj.set(x)
            self.remember(closure, x, f, g, op)
        self.count_evals(obj)
        return f

    @staticmethod
    def _fixed_direction(xp, H, g, damping, saddle_free):
        n = g.size
        if saddle_free:
            lam, Q = xp.linalg.eigh(H)
            scale = xp.abs(lam) + damping
            if float(scale.min()) <= 0:
                raise ValueError("Newton(saddle_free=True): the Hessian has a zero eigenvalue; "
                                 "pass damping > 0")
            return Q @ ((Q.T @ g) / scale)
        return _solve(xp, H + damping * xp.eye(n, dtype=H.dtype), g)


def _solve(xp, A, b):
    try:
        d = xp.linalg.solve(A, b)
    except Exception as e:                      # LinAlgError on NumPy and CuPy alike
        raise ValueError("Newton: the (damped) Hessian is singular; pass damping > 0") from e
    if not bool(xp.isfinite(d).all()):
        raise ValueError("Newton: the (damped) Hessian is singular; pass damping > 0")
    return d


class NewtonCG(ClosureOptimizer):
    """Hessian-free truncated Newton: the Newton system solved by linear CG with H v products.

        textbook (Goodfellow et al. Alg. 8.8):  theta <- theta - H^{-1} g
        here:  (H + lam I) d ~= -g by CG (N&W Alg. 7.1), stopped when
               |r| <= eta |g| with eta = min(0.5, sqrt|g|) (or cg_tol), or after cg_max_iter
               iterations; theta <- theta + lr * d.
               adaptive=True (default): lam starts at `damping` and follows this module's
               Levenberg-Marquardt rule; when CG meets a direction p with
               p^T (H + lam I) p <= 0, lam is raised past it and CG starts again (at most 10
               times, then the last iterate is used), so d is a descent direction.
               line_search 'armijo' / 'strong_wolfe' (first trial alpha = lr) replaces the
               rule: lam = damping stays fixed, and so does adaptive=False with no line search
               (then CG stops at the first direction of non-positive curvature and uses the
               last iterate, or -g if it is the first).

    The gradient is built once per point with create_graph=True; each CG iteration costs one
    backward pass of g . p through it (Pearlmutter's trick), never the full Hessian.
    cg_max_iter=None means min(n, 100) for n parameters.
    """

    def __init__(self, params, lr=1.0, damping=0.0, cg_max_iter=None, cg_tol=None,
                 line_search=None, adaptive=True):
        if not damping >= 0:
            raise ValueError(f"Invalid damping: {damping}")
        if cg_max_iter is not None and not cg_max_iter >= 1:
            raise ValueError(f"Invalid cg_max_iter: {cg_max_iter}")
        if cg_tol is not None and not cg_tol > 0:
            raise ValueError(f"Invalid cg_tol: {cg_tol}")
        super().__init__(params, dict(lr=lr, damping=damping, cg_max_iter=cg_max_iter,
                                      cg_tol=cg_tol, line_search=line_search, adaptive=adaptive))
        self.check_line_search(line_search, (None, "armijo", "strong_wolfe"))

    def step(self, closure=None):
        """One truncated Newton step; returns the loss before it."""
        group = self.param_groups[0]
        obj, x, f, g, op = self.begin(closure, operator=True)
        xp = obj.xp
        state = self.flat_state
        state["step"] = state.get("step", 0) + 1
        if not finite(f):                       # fit turns this into TrainingDiverged
            return f
        gnorm = float(xp.linalg.norm(g))
        if gnorm == 0:
            state["cg_iters"] = 0
            self.remember(closure, x, f, g, op)
            return f
        tol = (group["cg_tol"] or min(0.5, math.sqrt(gnorm))) * gnorm
        max_iter = group["cg_max_iter"] or min(g.size, 100)
        lr, ls = group["lr"], group["line_search"]
        if ls is not None or not group["adaptive"]:
            d, iters, _ = _truncated_cg(xp, op, g, group["damping"], tol, max_iter)
            del op                              # free the gradient graph before the line search
            state["cg_iters"] = iters
            if ls is None:
                obj.set(x + lr * d)
            else:
                res = self.line_search(ls, obj.phi(x, d), f, float(xp.dot(g, d)), alpha=lr,
                                       grad0=g)
                x_new = x + res.alpha * d
                obj.set(x_new)
                self.remember(closure, x_new, res.value, res.grad)
            self.count_evals(obj)
            return f
        lm = _LevenbergMarquardt(state, group["damping"])
        state["cg_iters"] = 0
        scale = None
        for tries in range(MAX_TRIES):
            d, iters, Hd = _damped_cg(xp, op, g, lm, tol, max_iter)
            state["cg_iters"] += iters
            if scale is None:                   # curvature scale: |d.H.d| / d.d of the first solve
                scale = max(abs(float(xp.dot(d, Hd))) / max(float(xp.dot(d, d)), 1e-300), 1e-300)
            if _lm_trial(self, closure, obj, x, f, lr * d, lr * float(xp.dot(g, d)),
                         lr * lr * float(xp.dot(d, Hd)), lm, scale, tries):
                break
        else:
            obj.set(x)
            self.remember(closure, x, f, g, op)
        self.count_evals(obj)
        return f


def _lm_trial(opt, closure, obj, x, f, step, slope, curv, lm, scale, tries):
    """Try x + step against the quadratic model f + slope + curv / 2 (curv = step.H.step):
    keep it and relax the damping when rho >= ETA (True), else raise the damping from the
    curvature along the step (False; the caller restores x after the last try)."""
    obj.set(x + step)
    trial = obj.hvp_operator()
    rho = _ratio(f, trial.loss, slope + 0.5 * curv)
    opt.flat_state.update(rho=rho, rejected=tries)
    if rho >= ETA:
        lm.accept(rho)
        opt.remember(closure, x + step, trial.loss, trial.grad, trial)
        return True
    lm.reject(f, trial.loss, slope, curv / float(step @ step), scale)
    return False


def _damped_cg(xp, hvp, g, lm, tol, max_iter, max_restarts=10):
    """(d, CG iterations, H d) with (H + lam I) d ~= -g, raising lm.lam past negative curvature."""
    total = 0
    for _ in range(max_restarts + 1):
        d, iters, neg = _truncated_cg(xp, hvp, g, lm.lam, tol, max_iter)
        total += iters
        if neg is None:
            break
        # p^T (H + lam I) p = q |p|^2 with q <= 0: lam + |q| (and a bit) makes it positive
        lm.lam = max(2 * lm.lam, lm.lam - neg) + 1e-8 * max(float(xp.linalg.norm(g)), 1.0)
        lm.state["damping"] = lm.lam
    return d, total, hvp(d)


def _truncated_cg(xp, hvp, g, damping, tol, max_iter):
    """Approximate solution d of (H + damping I) d = -g, the number of CG iterations, and the
    Rayleigh quotient p^T (H + damping I) p / p^T p of a direction of non-positive curvature
    (None if none was met). At such a direction CG stops with the last iterate (-g if first)."""
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
            return (-g if j == 0 else z), j + 1, curv / float(xp.dot(p, p))
        a = rr / curv
        z = z + a * p
        r = r - a * Bp
        rr_new = float(xp.dot(r, r))
        if math.sqrt(rr_new) <= tol:
            return z, j + 1, None
        p = r + (rr_new / rr) * p
        rr = rr_new
    return z, max_iter, None
