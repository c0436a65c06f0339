"""Nonlinear conjugate gradients (Fletcher-Reeves and Polak-Ribiere+)."""
from .closure import ClosureOptimizer, finite

BETAS = ("polak-ribiere", "fletcher-reeves")
LINE_SEARCHES = ("strong_wolfe", "armijo", "exact")
POWELL_RESTART = 0.2        # restart when |g_k . g_{k-1}| >= 0.2 |g_k|^2 (N&W eq. 5.52)
SUFFICIENT_DESCENT = 0.01   # the line search seeks g_{k+1} . d_{k+1} <= -0.01 |g_{k+1}|^2 (SciPy)


class ConjugateGradient(ClosureOptimizer):
    """Nonlinear conjugate gradients; one line search per step.

        textbook (Goodfellow et al. Alg. 8.9):  d_t = -g_t + beta_t d_{t-1}
            Fletcher-Reeves  beta_t = g_t^T g_t / g_{t-1}^T g_{t-1}
            Polak-Ribiere    beta_t = (g_t - g_{t-1})^T g_t / g_{t-1}^T g_{t-1}
            theta <- theta + alpha* d_t,  alpha* from a line search
        here:  PR+ uses max(beta, 0); d restarts at -g every `restart` steps (None: n, the
               number of parameters), whenever d is not a descent direction, and for
               Fletcher-Reeves when successive gradients are far from orthogonal,
               |g_t . g_{t-1}| >= 0.2 |g_t|^2 (Powell's restart test, N&W eq. 5.52: without
               it FR can crawl with tiny steps for many iterations).
               line_search: 'strong_wolfe' (c1=1e-4, c2=0.4 as in SciPy; like SciPy's CG it
               also asks that the next direction be a sufficient descent one,
               g_{t+1}.d_{t+1} <= -0.01 |g_{t+1}|^2, and searches on where it is not, instead
               of restarting there), 'armijo', or
               'exact', which takes alpha = -g^T d / d^T H d from one Hessian-vector product:
               the exact minimizer on a quadratic, where CG then ends in at most n steps.

    The first trial step has length lr (at most lr / |d|); later ones follow N&W eq. 3.60:
    with strong Wolfe min(lr, 1.01 * 2 (f_t - f_{t-1}) / g_t^T d_t), the minimizer of the
    parabola with slope g_t^T d_t that falls as much as the last step did (SciPy's choice); with
    Armijo, which cannot extrapolate, alpha_{t-1} g_{t-1}^T d_{t-1} / g_t^T d_t.
    The loss and gradient the line search computed at the accepted point start the next step
    (see ClosureOptimizer: same closure, unchanged parameters), so each step costs only its
    line search's evaluations.
    """

    def __init__(self, params, lr=1.0, beta="polak-ribiere", line_search="strong_wolfe",
                 restart=None, c1=1e-4, c2=0.4, max_ls=25):
        if beta not in BETAS:
            raise ValueError(f"ConjugateGradient: unknown beta {beta!r}; expected one of {BETAS}")
        if restart is not None and not (isinstance(restart, int) and restart >= 1):
            raise ValueError(f"Invalid restart: {restart} (a positive number of steps, or None)")
        super().__init__(params, dict(lr=lr, beta=beta, line_search=line_search, restart=restart,
                                      c1=c1, c2=c2, max_ls=max_ls))
        self.check_line_search(line_search, LINE_SEARCHES)

    @staticmethod
    def _direction(beta_rule, g, g_prev, d_prev, xp):
        """-g + beta d_prev, or None where Fletcher-Reeves restarts by Powell's test."""
        gg, gg_prev = float(xp.dot(g, g)), float(xp.dot(g_prev, g_prev))
        if beta_rule == "fletcher-reeves":
            if abs(float(xp.dot(g, g_prev))) >= POWELL_RESTART * gg:
                return None
            beta = gg / gg_prev
        else:
            beta = max(float(xp.dot(g - g_prev, g)) / gg_prev, 0.0)
        return -g + beta * d_prev

    def step(self, closure=None):
        """One CG direction and line search along it; returns the loss before the step."""
        group = self.param_groups[0]
        exact = group["line_search"] == "exact"
        obj, x, f, g, op = self.begin(closure, operator=exact)
        xp = obj.xp
        state = self.flat_state
        state["step"] = state.get("step", 0) + 1
        if not finite(f):                       # fit turns this into TrainingDiverged
            return f
        gg = float(xp.dot(g, g))
        if gg == 0:                             # stationary point: nothing to do
            self.remember(closure, x, f, g, op)
            return f
        d_prev, g_prev = state.get("d"), state.get("g")
        k = state.get("k", 0)                   # steps since the last restart
        if d_prev is None or k >= (group["restart"] or g.size):
            d, k = -g, 0
        else:
            d = self._direction(group["beta"], g, g_prev, d_prev, xp)
            if d is None or float(xp.dot(g, d)) >= 0:   # restart: Powell's test, or not descent
                d, k = -g, 0
        gd = float(xp.dot(g, d))
        if exact:
            dHd = float(xp.dot(d, op.matvec(d)))
            if not dHd > 0:
                raise ValueError(f"ConjugateGradient(line_search='exact'): curvature along d "
                                 f"is d^T H d = {dHd:.6g} <= 0; use 'strong_wolfe' on "
                                 "non-convex losses")
            alpha = -gd / dHd
            obj.set(x + alpha * d)
        else:
            alpha0 = group["lr"] / max(1.0, float(xp.linalg.norm(d)))
            if group["line_search"] == "armijo":
                if k > 0 and "alpha" in state:  # same first-order change as the last step
                    alpha0 = state["alpha"] * state["gd"] / gd
            elif state.get("f_prev") is not None and f < state["f_prev"]:
                # the minimizer of the parabola with slope gd that falls by as much as the
                # last step did (N&W eq. 3.60), capped at lr; 1.01 as in SciPy
                alpha0 = min(group["lr"], 1.01 * 2 * (f - state["f_prev"]) / gd)
            options = dict(alpha=alpha0, c1=group["c1"], max_evals=group["max_ls"], grad0=g)
            if group["line_search"] == "strong_wolfe":
                options["c2"] = group["c2"]
                if k + 1 < (group["restart"] or g.size):
                    # SciPy's extra condition: end the search only where the next direction
                    # is a sufficient descent one, g'.d' <= -0.01 |g'|^2 (else search on);
                    # a Powell restart's -g' always is
                    def accept(_, g1, d=d, beta=group["beta"]):
                        d1 = self._direction(beta, g1, g, d, xp)
                        return d1 is None or \
                            float(xp.dot(g1, d1)) <= -SUFFICIENT_DESCENT * float(xp.dot(g1, g1))
                    options["accept"] = accept
            res = self.line_search(group["line_search"], obj.phi(x, d), f, gd, **options)
            alpha = res.alpha
            x_new = x + alpha * d
            obj.set(x_new)
            self.remember(closure, x_new, res.value, res.grad)
        self.count_evals(obj)
        if alpha == 0:                          # no decrease along d: restart next step
            state.update(d=None, g=None, k=0, f_prev=None)
            return f
        state.update(d=d, g=g, k=k + 1, alpha=alpha, gd=gd, f_prev=f)
        return f
