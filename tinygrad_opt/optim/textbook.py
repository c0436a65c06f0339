"""The optimizers of Goodfellow, Bengio & Courville, Deep Learning (2016), ch. 8, as printed.

Each class follows its Algorithm box line by line, with the book's symbols: the book's global
learning rate epsilon is `lr` (so the schedules of lr_scheduler apply), the momentum
parameter is `alpha`, decay rates are `rho`, and the small stabilising constant is `delta`.
They are for study and for the equivalence tests against the practical forms in sgd.py,
adagrad.py, rmsprop.py and adam.py; docs/optimizers.md works through where the two agree.

Algorithms 8.1, 8.2, 8.4, 8.5 and 8.7 read p.grad like any first-order optimizer. Algorithms
8.3 and 8.6 evaluate the gradient at an interim point, and 8.8 and 8.9 need the loss itself, so
those take `step(closure)`, where the closure recomputes the loss from the current parameters
and returns it without calling backward.
"""
import math

from .. import autograd, backend, engine
from ..flat import HVPOperator, unflatten
from ..tensor import Tensor
from .optimizer import Optimizer


class _Textbook(Optimizer):
    """Shared range checks for the book's hyperparameters."""

    def check_group(self, group):
        super().check_group(group)
        for key in ("alpha", "rho", "rho1", "rho2"):
            if key in group and not 0.0 <= group[key] < 1.0:
                raise ValueError(f"Invalid {key} value: {group[key]} (need 0 <= {key} < 1)")
        if "delta" in group and not group["delta"] >= 0:
            raise ValueError(f"Invalid delta value: {group['delta']}")

    def _params(self):
        return [p for group in self.param_groups for p in group["params"]]

    def _loss_and_grads(self, closure):
        """The closure's loss and the gradient array of every parameter (zeros where unused)."""
        params = self._params()
        with engine.enable_grad():
            loss = closure()
            grads = autograd.grad(loss, params, allow_unused=True)
        return loss, [backend.xp_of(p.data).zeros_like(p.data) if g is None else g.data
                      for p, g in zip(params, grads)]


class SGD(_Textbook):
    """Algorithm 8.1, stochastic gradient descent:  theta <- theta - eps_k * g.

    The schedule eps_k comes from lr_scheduler (e.g. LinearDecay, the book's eq. 8.14).
    """

    def __init__(self, params, lr):
        super().__init__(params, dict(lr=lr))

    def update(self, p, g, state, group):
        p -= group["lr"] * g


class Momentum(_Textbook):
    """Algorithm 8.2, SGD with momentum:  v <- alpha*v - eps*g;  theta <- theta + v  (v_0 = 0)."""

    def __init__(self, params, lr, alpha=0.9):
        super().__init__(params, dict(lr=lr, alpha=alpha))

    def update(self, p, g, state, group):
        if "v" not in state:
            state["v"] = backend.xp_of(p).zeros_like(p)
        v = state["v"]
        v[...] = group["alpha"] * v - group["lr"] * g
        p += v


class Nesterov(_Textbook):
    """Algorithm 8.3, SGD with Nesterov momentum:

        theta~ <- theta + alpha*v;  g <- grad J(theta~);  v <- alpha*v - eps*g;  theta <- theta + v

    step(closure) moves the parameters to the interim point theta~, evaluates the closure and
    its gradient there (autograd.grad, so .grad is not touched), restores theta and applies the
    update. It returns the loss at the interim point.
    """
    needs_closure = True

    def __init__(self, params, lr, alpha=0.9):
        super().__init__(params, dict(lr=lr, alpha=alpha))

    def step(self, closure):
        pairs = [(p, group) for group in self.param_groups for p in group["params"]]
        thetas = []
        for p, group in pairs:
            state = self.state[p]
            if "v" not in state:
                state["v"] = backend.xp_of(p.data).zeros_like(p.data)
            thetas.append(p.data.copy())
            p.data += group["alpha"] * state["v"]         # interim point theta~
        loss, grads = self._loss_and_grads(closure)
        for (p, group), theta, g in zip(pairs, thetas, grads):
            v = self.state[p]["v"]
            v[...] = group["alpha"] * v - group["lr"] * g
            p.data[...] = theta + v
        return loss


class AdaGrad(_Textbook):
    """Algorithm 8.4, AdaGrad:  r <- r + g*g;  theta <- theta - eps/(delta + sqrt(r)) * g."""

    step_size_kind = "adagrad"

    def __init__(self, params, lr=1e-2, delta=1e-7):
        super().__init__(params, dict(lr=lr, delta=delta))

    def step_size(self, p, state, group):
        return group["lr"] / (group["delta"] + backend.xp_of(p).sqrt(state["r"]))

    def update(self, p, g, state, group):
        xp = backend.xp_of(p)
        if "r" not in state:
            state["r"] = xp.zeros_like(p)
        r = state["r"]
        r += g * g
        p += -group["lr"] / (group["delta"] + xp.sqrt(r)) * g


class RMSProp(_Textbook):
    """Algorithm 8.5, RMSProp:  r <- rho*r + (1-rho)*g*g;  theta <- theta - eps/sqrt(delta + r) * g.

    delta is inside the square root here, unlike PyTorch's RMSprop, which adds eps after it.
    """

    step_size_kind = "rmsprop"

    def __init__(self, params, lr=1e-3, rho=0.9, delta=1e-6):
        super().__init__(params, dict(lr=lr, rho=rho, delta=delta))

    def step_size(self, p, state, group):
        return group["lr"] / backend.xp_of(p).sqrt(group["delta"] + state["r"])

    def update(self, p, g, state, group):
        xp = backend.xp_of(p)
        if "r" not in state:
            state["r"] = xp.zeros_like(p)
        r, rho = state["r"], group["rho"]
        r[...] = rho * r + (1 - rho) * g * g
        p += -group["lr"] / xp.sqrt(group["delta"] + r) * g


class RMSPropNesterov(_Textbook):
    """Algorithm 8.6, RMSProp with Nesterov momentum:

        theta~ <- theta + alpha*v;  g <- grad J(theta~);  r <- rho*r + (1-rho)*g*g
        v <- alpha*v - eps/sqrt(r) * g;  theta <- theta + v

    The book has no delta in this algorithm; a coordinate whose gradient has been exactly zero
    so far then gives 0/0. Pass delta > 0 to put one inside the root as in Alg. 8.5.
    """
    needs_closure = True
    step_size_kind = "rmsprop"
    step_size = RMSProp.step_size

    def __init__(self, params, lr=1e-3, rho=0.9, alpha=0.9, delta=0.0):
        super().__init__(params, dict(lr=lr, rho=rho, alpha=alpha, delta=delta))

    def step(self, closure):
        pairs = [(p, group) for group in self.param_groups for p in group["params"]]
        thetas = []
        for p, group in pairs:
            state = self.state[p]
            if not state:
                state["v"] = backend.xp_of(p.data).zeros_like(p.data)
                state["r"] = backend.xp_of(p.data).zeros_like(p.data)
            thetas.append(p.data.copy())
            p.data += group["alpha"] * state["v"]         # interim point theta~
        loss, grads = self._loss_and_grads(closure)
        for (p, group), theta, g in zip(pairs, thetas, grads):
            xp = backend.xp_of(p.data)
            r, v, rho = self.state[p]["r"], self.state[p]["v"], group["rho"]
            r[...] = rho * r + (1 - rho) * g * g
            v[...] = group["alpha"] * v - group["lr"] / xp.sqrt(group["delta"] + r) * g
            p.data[...] = theta + v
        return loss


class Adam(_Textbook):
    """Algorithm 8.7, Adam (defaults as printed: eps=1e-3, rho1=0.9, rho2=0.999, delta=1e-8).

        t <- t + 1;  s <- rho1*s + (1-rho1)*g;  r <- rho2*r + (1-rho2)*g*g
        s^ <- s/(1 - rho1^t);  r^ <- r/(1 - rho2^t);  theta <- theta - eps * s^/(sqrt(r^) + delta)
    """

    step_size_kind = "adam"

    def __init__(self, params, lr=1e-3, rho1=0.9, rho2=0.999, delta=1e-8):
        super().__init__(params, dict(lr=lr, rho1=rho1, rho2=rho2, delta=delta))

    def step_size(self, p, state, group):
        r_hat = state["r"] / (1.0 - group["rho2"] ** float(state["step"]))
        return group["lr"] / (backend.xp_of(p).sqrt(r_hat) + group["delta"])

    def update(self, p, g, state, group):
        xp = backend.xp_of(p)
        if not state:
            state["step"] = 0
            state["s"] = xp.zeros_like(p)
            state["r"] = xp.zeros_like(p)
        t = state["step"] = state["step"] + 1
        s, r, rho1, rho2 = state["s"], state["r"], group["rho1"], group["rho2"]
        s[...] = rho1 * s + (1 - rho1) * g
        r[...] = rho2 * r + (1 - rho2) * g * g
        s_hat = s / (1 - rho1 ** t)
        r_hat = r / (1 - rho2 ** t)
        p += -group["lr"] * s_hat / (xp.sqrt(r_hat) + group["delta"])


class Newton(_Textbook):
    """Algorithm 8.8, Newton's method:  H <- Hessian at theta;  theta <- theta - H^{-1} g.

    All parameters are treated as one flat vector; H is dense (n x n), computed row by row
    from a differentiable gradient, and inverted as printed, so use it on small problems only.
    Unlike optim.Newton there is no damping or step size. step(closure) returns the loss
    before the step.
    """
    needs_closure = True

    def __init__(self, params):
        super().__init__(params, {})

    def step(self, closure):
        params = self._params()
        op = HVPOperator(closure, params, "textbook.Newton")
        if any(g is None for g in op.grads):
            raise ValueError("textbook.Newton: the loss does not depend on every parameter, "
                             "so its Hessian is singular")
        H = op.dense()
        H_inv = op.xp.linalg.inv(H)
        for p, dp in zip(params, unflatten(-(H_inv @ op.grad), params)):
            p.data += dp
        self.state[params[0]]["step"] = self.state[params[0]].get("step", 0) + 1
        return op.loss_tensor


class NonlinearCG(_Textbook):
    """Algorithm 8.9, nonlinear conjugate gradients:

        g_t <- grad J(theta)
        beta_t <- (g_t - g_{t-1}).g_t / (g_{t-1}.g_{t-1})      (Polak-Ribiere)
               or g_t.g_t / (g_{t-1}.g_{t-1})                  (Fletcher-Reeves)
        rho_t <- -g_t + beta_t rho_{t-1};  eps* <- argmin_eps J(theta + eps rho_t)
        theta <- theta + eps* rho_t

    beta_1 = 0 (the first direction is -g). reset_every=k sets beta to zero every k steps, the
    book's optional restart. The line search is either "exact" (the minimiser of the quadratic
    model along rho: eps* = -g.rho / rho.H.rho with one Hessian-vector product, exact for a
    quadratic J as the book suggests) or "golden" (a numeric golden-section search).
    step(closure) returns the loss before the step.
    """
    needs_closure = True

    def __init__(self, params, beta="polak-ribiere", line_search="exact", reset_every=None,
                 tol=1e-10):
        if beta not in ("polak-ribiere", "fletcher-reeves"):
            raise ValueError(f"NonlinearCG: beta must be 'polak-ribiere' or 'fletcher-reeves', "
                             f"got {beta!r}")
        if line_search not in ("exact", "golden"):
            raise ValueError(f"NonlinearCG: line_search must be 'exact' or 'golden', "
                             f"got {line_search!r}")
        super().__init__(params, dict(beta=beta, line_search=line_search, reset_every=reset_every,
                                      tol=tol))

    def step(self, closure):
        params = self._params()
        group = self.param_groups[0]
        exact = group["line_search"] == "exact"
        with engine.enable_grad():
            loss = closure()
            grads = autograd.grad(loss, params, create_graph=exact, allow_unused=True)
        grads = [Tensor._wrap(backend.xp_of(p.data).zeros_like(p.data)) if g is None else g
                 for p, g in zip(params, grads)]
        g = [gi.data for gi in grads]
        first = self.state[params[0]]
        t = first.get("step", 0) + 1
        reset = t == 1 or (group["reset_every"] and (t - 1) % group["reset_every"] == 0)
        if reset:
            beta = 0.0
        else:
            g_prev = [self.state[p]["g_prev"] for p in params]
            den = _dot(g_prev, g_prev)
            if group["beta"] == "fletcher-reeves":
                num = _dot(g, g)
            else:
                num = _dot(g, g) - _dot(g_prev, g)
            beta = num / den if den > 0 else 0.0
        direction = []
        for p, gi in zip(params, g):
            state = self.state[p]
            d = -gi if beta == 0.0 else -gi + beta * state["rho"]
            state["rho"] = d
            state["g_prev"] = gi.copy()
            direction.append(d)
        slope = _dot(g, direction)
        if slope == 0.0:
            eps = 0.0                                   # at a stationary point already
        elif exact:
            with engine.enable_grad():
                gd = sum((gi * Tensor._wrap(d)).sum() for gi, d in zip(grads, direction))
                Hd = autograd.grad(gd, params, allow_unused=True)
            curv = _dot([backend.xp_of(d).zeros_like(d) if h is None else h.data
                         for d, h in zip(direction, Hd)], direction)
            if not curv > 0:
                raise ValueError(f"NonlinearCG: the curvature along the search direction is "
                                 f"{curv:.6g} <= 0, so the exact line search has no minimum; "
                                 "use line_search='golden'")
            eps = -slope / curv
        else:
            eps = _golden_section(closure, params, direction, float(loss.item()), group["tol"])
        for p, d in zip(params, direction):
            p.data += eps * d
        first["step"] = t
        return loss


def _dot(xs, ys):
    """Sum over parameters of the inner products x.y, as a Python float."""
    return sum(float(backend.xp_of(x).vdot(x, y)) for x, y in zip(xs, ys))


def _golden_section(closure, params, direction, f0, tol, max_evals=200):
    """argmin over eps >= 0 of J(theta + eps d), by doubling a bracket then golden section."""
    thetas = [p.data.copy() for p in params]

    def phi(eps):
        for p, theta, d in zip(params, thetas, direction):
            p.data[...] = theta + eps * d
        with engine.no_grad():
            return float(closure().item())

    hi = 1.0
    while phi(hi) < f0 and hi < 1e8:                  # J(theta + hi d) still below J(theta)
        hi *= 2
    invphi = (math.sqrt(5) - 1) / 2
    a, b = 0.0, hi
    c, d = b - invphi * (b - a), a + invphi * (b - a)
    fc, fd = phi(c), phi(d)
    for _ in range(max_evals):
        if b - a <= tol * max(1.0, b):
            break
        if fc < fd:
            b, d, fd = d, c, fc
            c = b - invphi * (b - a)
            fc = phi(c)
        else:
            a, c, fc = c, d, fd
            d = a + invphi * (b - a)
            fd = phi(d)
    for p, theta in zip(params, thetas):
        p.data[...] = theta
    return (a + b) / 2
