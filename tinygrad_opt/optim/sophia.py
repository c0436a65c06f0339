"""Sophia: clipped Newton-like steps with a Hessian diagonal refreshed every k steps (Liu et al.
2023, "Sophia: A Scalable Stochastic Second-order Optimizer for Language Model Pre-training")."""
from .. import autograd, backend, engine
from ..nn import functional as F
from .adahessian import closure_loss, gradient_and_hutchinson_diagonal
from .hessianfree import loss_output
from .optimizer import Optimizer

ESTIMATORS = ("hutchinson", "gnb")


class Sophia(Optimizer):
    """Sophia-H (Hutchinson) or Sophia-G (Gauss-Newton-Bartlett) with decoupled weight decay.

        implemented                                    paper (Alg. 3; reference code SophiaG)
        +------------------------------------------+   +--------------------------------------+
        | every k steps (t = 1, k+1, ...):         |   | if t mod k = 1:                      |
        |   h <- b2*h + (1-b2)*hhat                |   |   h_t = b2 h_{t-k} + (1-b2) hhat_t   |
        | theta <- theta*(1 - lr*wd)               |   | theta <- theta - eta*lambda*theta    |
        | m <- b1*m + (1-b1)*g                     |   | m_t = b1 m_{t-1} + (1-b1) g_t        |
        | theta <- theta                           |   | theta <- theta                       |
        |   - lr*clip(m / max(rho*h, eps), -1, 1)  |   |   - eta*clip(m_t/max(gamma h_t,eps),1)|
        +------------------------------------------+   +--------------------------------------+

    hhat: 'hutchinson' is z * (H z) for a Rademacher z (Alg. 1); 'gnb' samples labels
    yhat ~ softmax(logits) and takes B * ghat * ghat, ghat the gradient of the mean
    cross-entropy against yhat over the batch of B rows (Alg. 2; the logits are read off the
    loss's graph, so the closure must return F.cross_entropy(logits, y)). The paper's form
    is implemented: rho is its gamma. The reference code writes the clip as
    sign(m) * min(|m| / (rho*B*h + 1e-15), 1), with B applied in the step rather than in hhat
    (the same for h >= 0); with a negative Hutchinson h it would step uphill, while
    max(rho*h, eps) makes such a coordinate take a plain sign step. Every coordinate moves by
    at most lr (plus the decay). No bias correction, as in both.
    """

    needs_closure = True

    def __init__(self, params, lr=1e-4, weight_decay=0.0, betas=(0.965, 0.99), rho=0.04,
                 eps=1e-12, update_period=10, estimator="hutchinson"):
        if not lr > 0:
            raise ValueError(f"Invalid learning rate: {lr}")
        if not rho > 0:
            raise ValueError(f"Invalid rho (the paper's gamma): {rho}")
        if not (isinstance(update_period, int) and update_period >= 1):
            raise ValueError(f"Invalid update_period: {update_period} (need an integer >= 1)")
        if estimator not in ESTIMATORS:
            raise ValueError(f"Sophia: unknown estimator {estimator!r}; expected one of {ESTIMATORS}")
        super().__init__(params, dict(lr=lr, weight_decay=weight_decay, betas=tuple(betas),
                                      rho=rho, eps=eps, update_period=update_period,
                                      estimator=estimator))

    def step(self, closure=None):
        """One step; the Hessian estimate is refreshed on steps 1, k+1, 2k+1, ...
        Returns the loss before the step."""
        loss = closure_loss(closure, "Sophia")
        params = [p for g in self.param_groups for p in g["params"]]
        k, estimator = self._schedule()
        refresh = self.state[params[0]].get("step", 0) % k == 0
        hhat = None
        if refresh and estimator == "hutchinson":
            _, ds = gradient_and_hutchinson_diagonal(loss, params)    # also sets p.grad
            hhat = dict(zip(params, ds))
        else:
            if refresh:
                hhat = dict(zip(params, _gauss_newton_bartlett(loss, params)))
            self.zero_grad()
            with engine.enable_grad():
                loss.backward()
        with engine.no_grad():
            for group in self.param_groups:
                for p in group["params"]:
                    if p.grad is not None:
                        self._update(p.data, p.grad.data, None if hhat is None else hhat[p],
                                     self.state[p], group)
        return loss.detach()

    step_size_kind = "sophia"

    def step_size(self, p, state, group):
        """lr * clip(m / r, -1, 1) / m with r = max(rho h, eps): the factor the clipped rule
        applies to m (lr / r where m = 0)."""
        xp = backend.xp_of(p)
        m = state["exp_avg"]
        r = xp.maximum(state["hessian"] * group["rho"], group["eps"])
        safe = xp.where(m == 0, 1, m)
        return group["lr"] * xp.where(m == 0, 1 / r, xp.clip(m / r, -1, 1) / safe)

    def _schedule(self):
        """(update_period, estimator), which every group must share: one probe serves all."""
        first = self.param_groups[0]
        for i, group in enumerate(self.param_groups[1:], 1):
            for key in ("update_period", "estimator"):
                if group[key] != first[key]:
                    raise ValueError(f"Sophia: parameter group {i} has {key}={group[key]!r} but "
                                     f"group 0 has {first[key]!r}; all groups must share it")
        return first["update_period"], first["estimator"]

    def _update(self, p, g, hhat, state, group):
        xp = backend.xp_of(p)
        beta1, beta2 = group["betas"]
        lr, wd = group["lr"], group["weight_decay"]
        if not state:
            state["step"] = 0
            state["exp_avg"] = xp.zeros_like(p)
            state["hessian"] = xp.zeros_like(p)
        state["step"] += 1
        m, h = state["exp_avg"], state["hessian"]
        if hhat is not None:                            # h <- b2*h + (1-b2)*hhat
            h *= beta2
            h += (1 - beta2) * hhat
        if wd:
            p *= 1 - lr * wd                            # decoupled decay
        m *= beta1                                      # m <- b1*m + (1-b1)*g
        m += (1 - beta1) * g
        r = xp.maximum(h * group["rho"], group["eps"])  # clip(m / max(rho*h, eps), -1, 1)
        xp.divide(m, r, out=r)
        xp.clip(r, -1, 1, out=r)
        r *= lr
        p -= r


def _gauss_newton_bartlett(loss, params):
    """B * ghat * ghat per parameter, ghat the gradient of the mean cross-entropy of the
    loss's logits against labels sampled from their own softmax (Sophia's Alg. 2)."""
    logits, kind = loss_output(loss, "Sophia(estimator='gnb')")
    if kind != "cross_entropy":
        raise ValueError("Sophia(estimator='gnb'): the Gauss-Newton-Bartlett estimate needs a "
                         f"cross-entropy loss, but the closure's loss is {kind}; "
                         "help: use estimator='hutchinson'")
    z = logits.data
    xp = backend.xp_of(z)
    n = z.shape[0]
    e = xp.exp(z - z.max(axis=1, keepdims=True))
    cdf = xp.cumsum(e, axis=1)
    u = backend.random_uniform((n, 1), z.dtype, backend.device_of(z)) * cdf[:, -1:]
    yhat = (cdf < u).sum(axis=1)                        # inverse-CDF sample per row, on device
    yhat = xp.minimum(yhat, z.shape[1] - 1)
    with engine.enable_grad():
        sampled = F.cross_entropy(logits, yhat)
        ghat = autograd.grad(sampled, params, retain_graph=True, allow_unused=True)
    return [xp.zeros_like(p.data) if g is None else n * (g.data * g.data)
            for p, g in zip(params, ghat)]
