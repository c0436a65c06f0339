"""K-FAC: natural-gradient steps with a Kronecker-factored Fisher per Linear layer (Martens &
Grosse 2015, "Optimizing Neural Networks with Kronecker-factored Approximate Curvature")."""
import math

from .. import autograd, backend, engine, extensions as ext
from .adahessian import closure_loss
from .hessianfree import loss_output
from .optimizer import Optimizer


class KFAC(Optimizer):
    """K-FAC for the Linear layers of a network, factors from extensions.KFAC.

        implemented                                       paper (Martens & Grosse 2015)
        +-----------------------------------------------+ +-----------------------------------+
        | A_new = x^T x / N, G_new = sampled E[d d^T]   | | A = E[a a^T], G = E[g g^T] (sec 3)|
        | A <- eps A + (1-eps) A_new, same for G,       | | eps = min(1 - 1/k, 0.95)  (sec 5) |
        |   eps = min(1 - 1/k, 0.95)                    | |                                   |
        | every T steps: pi = sqrt((tr A/dA)/(tr G/dG)) | | factored Tikhonov (sec 6.3),      |
        |   Ai = (A + pi sqrt(lam) I)^-1,               | |   gamma = sqrt(lambda + eta)      |
        |   Gi = (G + sqrt(lam)/pi I)^-1                | | inverses every T3 = 20 (sec 8)    |
        | Delta_W = -Gi grad_W Ai                       | | Delta = -F_hat^-1 grad            |
        | Delta_b = -(G + lam I)^-1 grad_b              | |   (bias: homogeneous coordinate)  |
        | alpha = -g.Delta / (Delta.F Delta             | | alpha*, mu* minimizing the        |
        |          + lam |Delta|^2)  (rescale=True)     | |   quadratic model (sec 6.4, 7)    |
        | theta <- theta + lr alpha Delta               | |   with momentum mu                |
        | every T1 = 5: lam *= 19/20^5 if rho > 3/4,    | | LM adjustment of lambda (6.5)     |
        |   /= it if rho < 1/4                          | |                                   |
        +-----------------------------------------------+ +-----------------------------------+

    Where it is simpler than the paper: the bias is its own block with the exact factor G
    (F_b = 1 (x) G, so its damping is the exact lam I) instead of a homogeneous coordinate of
    A, as extensions.KFAC (BackPACK) provides the factors; there is no momentum, so only alpha
    is fitted to the model (mu = 0); weight decay eta is 0. Delta.F Delta is exact, as the
    paper's F products are: one more evaluation of the closure in forward mode gives J Delta
    (a closure with fresh randomness, e.g. Dropout, is then measured on another draw).
    rescale=False takes theta <- theta + lr Delta instead. The closure's
    loss must be F.cross_entropy or F.mse_loss of the model output, and every parameter must
    belong to a layer that extensions.KFAC supports.
    """

    needs_closure = True

    def __init__(self, params, lr=1.0, damping=1e-2, inverse_period=20, rescale=True,
                 adapt_damping=True, damping_period=5, mc_samples=1, ema_max=0.95):
        if not lr > 0:
            raise ValueError(f"Invalid learning rate: {lr}")
        if not damping > 0:
            raise ValueError(f"Invalid damping: {damping} (Tikhonov damping needs lambda > 0)")
        for name, v in (("inverse_period", inverse_period), ("damping_period", damping_period),
                        ("mc_samples", mc_samples)):
            if not (isinstance(v, int) and v >= 1):
                raise ValueError(f"Invalid {name}: {v} (need an integer >= 1)")
        if not 0 <= ema_max < 1:
            raise ValueError(f"Invalid ema_max: {ema_max} (need 0 <= eps < 1)")
        super().__init__(params, dict(lr=lr, damping=damping, inverse_period=inverse_period,
                                      rescale=rescale, adapt_damping=adapt_damping,
                                      damping_period=damping_period, mc_samples=mc_samples,
                                      ema_max=ema_max))
        if len(self.param_groups) != 1:
            raise ValueError("KFAC doesn't support per-parameter options (parameter groups); "
                             "pass one list of parameters")
        self.log = []

    def step(self, closure=None):
        """One K-FAC update; returns the loss before it (a detached Tensor)."""
        group = self.param_groups[0]
        params = group["params"]
        lam = group["damping"]
        loss = closure_loss(closure, "KFAC")
        loss_output(loss, "KFAC")                # a supported loss on the model output
        self.zero_grad()
        with engine.enable_grad(), ext.collect(ext.KFAC(mc_samples=group["mc_samples"])):
            loss.backward(retain_graph=True)
        deltas = []
        with engine.no_grad():
            for p in params:
                factors = getattr(p, "kfac", None)
                if factors is None or p.grad is None:
                    raise ValueError(f"KFAC: the parameter of shape {tuple(p.shape)} got no "
                                     "Kronecker factors; only Linear weights and biases on the "
                                     "path to the loss are supported")
                state = self.state[p]
                k = state["step"] = state.get("step", 0) + 1
                eps = min(1 - 1 / k, group["ema_max"])
                for name, f in zip(("A", "G") if len(factors) == 2 else ("G",), factors):
                    if name in state:                   # F <- eps F + (1 - eps) F_new
                        state[name] *= eps
                        state[name] += (1 - eps) * f.data
                    else:
                        state[name] = f.data.copy()
                if (k - 1) % group["inverse_period"] == 0:
                    _refresh_inverses(state, lam)
                g = p.grad.data
                if "A_inv" in state:                    # Delta_W = -Gi grad_W Ai
                    deltas.append(-(state["G_inv"] @ g @ state["A_inv"]))
                else:                                   # Delta_b = -(G + lam I)^-1 grad_b
                    deltas.append(-(state["G_inv"] @ g))
        xp = backend.xp_of(params[0].data)
        gd = sum((p.grad.data * d).sum() for p, d in zip(params, deltas))
        if group["rescale"]:
            dFd = _curvature_along(closure, params, deltas)
            dd = sum((d * d).sum() for d in deltas)
            alpha = -gd / (dFd + lam * dd)              # minimizer of the quadratic model
        else:
            alpha = xp.ones((), dtype=params[0].data.dtype)
        scale = group["lr"] * alpha
        with engine.no_grad():
            for p, d in zip(params, deltas):
                p.data += scale * d
        k = self.state[params[0]]["step"]
        entry = dict(damping=lam)
        if group["adapt_damping"] and group["rescale"] and k % group["damping_period"] == 0:
            # rho = (h(theta + delta) - h(theta)) / M(delta), M the damped quadratic model
            with engine.no_grad():
                new = float(closure().item())
            model = float(scale * gd + 0.5 * scale * scale * (dFd + lam * dd))
            rho = (new - float(loss.item())) / model if model < 0 else -math.inf
            w = (19 / 20) ** group["damping_period"]
            if rho > 0.75:
                group["damping"] = lam * w
            elif rho < 0.25:
                group["damping"] = lam / w
            entry.update(rho=rho)
        self.log.append(entry)
        return loss.detach()


def _curvature_along(closure, params, deltas):
    """Delta^T F Delta = (J Delta)^T H_L (J Delta), F the Gauss-Newton matrix (the Fisher for
    F's losses), from one forward-mode evaluation of the closure with tangents Delta on the
    parameters (a 0-d array). About half a gradient's cost, against one and a half for
    Delta^T (F Delta) by `gauss_newton_product`, which the tests check it against."""
    with engine.enable_grad(), engine.forward_level() as level:
        for p, d in zip(params, deltas):
            level[p] = d
        loss = closure()
        output, _ = loss_output(loss, "KFAC")
        jd = level.get(output)
        hjd = autograd.curvature_of_loss(loss, output, jd)
    return (jd * hjd).sum()


def _refresh_inverses(state, lam):
    """Damped inverses of the running factors: factored Tikhonov with the pi correction."""
    G = state["G"]
    xp = backend.xp_of(G)
    gamma = math.sqrt(lam)
    eye_g = xp.eye(G.shape[0], dtype=G.dtype)
    if "A" not in state:                                # bias: the exact lam I
        state["G_inv"] = xp.linalg.inv(G + lam * eye_g)
        return
    A = state["A"]
    eye_a = xp.eye(A.shape[0], dtype=A.dtype)
    # pi = sqrt((tr A / dim A) / (tr G / dim G)) balances the two factors' scales (sec. 6.3);
    # the traces stay on the device
    pi = xp.sqrt((xp.trace(A) / A.shape[0]) / (xp.trace(G) / G.shape[0]))
    state["A_inv"] = xp.linalg.inv(A + (pi * gamma) * eye_a)
    state["G_inv"] = xp.linalg.inv(G + (gamma / pi) * eye_g)
