"""Nonlinear conjugate gradients (Fletcher-Reeves and Polak-Ribiere+)."""
from tinygrad_opt.optim.optimizer import Optimizer
from tinygrad_opt.optim.linesearch import (FlatObjective, backtracking_armijo, single_group,
                                           strong_wolfe)

BETAS = ("polak-ribiere", "fletcher-reeves")
LINE_SEARCHES = ("strong_wolfe", "armijo", "exact")


class ConjugateGradient(Optimizer):
    """Nonlinear conjugate gradients; one line search per step.

        textbook (Goodfellow et al. Alg. 8.9):  d_t = -g_t + beta_t d_{t-1}
            Fletcher-Reeves  beta_t = g_t^T g_t / g_{t-1}^T g_{t-1}
            Polak-Ribiere    beta_t = (g_t - g_{t-1})^T g_t / g_{t-1}^T g_{t-1}
            theta <- theta + alpha* d_t,  alpha* from a line search
        here:  PR+ uses max(beta, 0); d restarts at -g every `restart` steps (None: n, the
               number of parameters) and whenever d is not a descent direction.
               line_search: 'strong_wolfe' (c1=1e-4, c2=0.1), 'armijo', or 'exact', which takes
               alpha = -g^T d / d^T H d from one Hessian-vector product: the exact minimizer on a
               quadratic, where CG then ends in at most n steps.

    The first trial step has length lr; later ones are alpha_{t-1} g_{t-1}^T d_{t-1} / g_t^T d_t
    (N&W eq. 3.60).
    """
    needs_closure = True

    def __init__(self, params, lr=1.0, beta="polak-ribiere", line_search="strong_wolfe",
                 restart=None, c1=1e-4, c2=0.1, max_ls=25):
        if not lr > 0:
            raise ValueError(f"Invalid learning rate: {lr}")
        if beta not in BETAS:
            raise ValueError(f"ConjugateGradient: unknown beta {beta!r}; expected one of {BETAS}")
        if line_search not in LINE_SEARCHES:
            raise ValueError(f"ConjugateGradient: unknown line_search {line_search!r}; "
                             f"expected one of {LINE_SEARCHES}")
        if restart is not None and not (isinstance(restart, int) and restart >= 1):
            raise ValueError(f"Invalid restart: {restart} (a positive number of steps, or None)")
        super().__init__(params, dict(lr=lr, beta=beta, line_search=line_search, restart=restart,
                                      c1=c1, c2=c2, max_ls=max_ls))
        single_group(self, "ConjugateGradient")

    def step(self, closure=None):
        """One CG direction and line search along it; returns the loss before the step."""
        group = self.param_groups[0]
        params = single_group(self, "ConjugateGradient")
        obj = FlatObjective(closure, params, "ConjugateGradient")
        xp = obj.xp
        state = self.state.setdefault(params[0], {})
        x = obj.get()
        exact = group["line_search"] == "exact"
        if exact:
            f, g, hvp = obj.hvp_at_current()
        else:
            f, g = obj.value_and_grad()
        gg = float(xp.dot(g, g))
        state["step"] = state.get("step", 0) + 1
        if gg == 0:                             # stationary point: nothing to do
            return f
        d_prev, g_prev = state.get("d"), state.get("g")
        k = state.get("k", 0)                   # steps since the last restart
        if d_prev is None or k >= (group["restart"] or g.size):
            d, k = -g, 0
        else:
            gg_prev = float(xp.dot(g_prev, g_prev))
            if group["beta"] == "fletcher-reeves":
                beta = gg / gg_prev
            else:
                beta = max(float(xp.dot(g - g_prev, g)) / gg_prev, 0.0)
            d = -g + beta * d_prev
            if float(xp.dot(g, d)) >= 0:       # not a descent direction: restart
                d, k = -g, 0
        gd = float(xp.dot(g, d))
        if exact:
            dHd = float(xp.dot(d, hvp(d)))
            if not dHd > 0:
                raise ValueError(f"ConjugateGradient(line_search='exact'): curvature along d "
                                 f"is d^T H d = {dHd:.6g} <= 0; use 'strong_wolfe' on "
                                 "non-convex losses")
            alpha = -gd / dHd
        else:
            if k == 0 or "alpha" not in state:
                alpha0 = group["lr"] / max(1.0, float(xp.linalg.norm(d)))
            else:
                alpha0 = state["alpha"] * state["gd"] / gd
            phi = obj.phi(x, d)
            if group["line_search"] == "strong_wolfe":
                res = strong_wolfe(phi, f, gd, alpha=alpha0, c1=group["c1"], c2=group["c2"],
                                   max_evals=group["max_ls"], grad0=g)
            else:
                res = backtracking_armijo(phi, f, gd, alpha=alpha0, c1=group["c1"],
                                          max_evals=group["max_ls"], grad0=g)
            alpha = res.alpha
        obj.set(x + alpha * d)
        if alpha == 0:                          # no decrease along d: restart next step
            state.update(d=None, g=None, k=0)
            return f
        state.update(d=d, g=g, k=k + 1, alpha=alpha, gd=gd)
        return f
