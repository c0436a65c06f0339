"""AdaHessian: Adam with the Hessian diagonal in place of the squared gradient (Yao et al. 2021,
"ADAHESSIAN: An Adaptive Second Order Optimizer for Machine Learning"); and the Hutchinson
probe of the Hessian diagonal that it and Sophia share."""
import math

from .. import autograd, backend, engine
from ..flat import closure_loss as flat_closure_loss, require_closure
from ..tensor import Tensor
from .optimizer import Optimizer


def closure_loss(closure, name):
    """The step's closure (checked present) called with grad enabled: its one-element loss."""
    require_closure(closure, name)
    return flat_closure_loss(closure, name)


def rademacher_like(a):
    """An array of a's shape, dtype and device with entries +1 or -1, each with probability 1/2
    (from the global generator, seeded by tinygrad_opt.manual_seed)."""
    u = backend.random_uniform(a.shape, a.dtype, backend.device_of(a))
    z = u < 0.5
    return (1 - 2 * z).astype(a.dtype)


def gradient_and_hutchinson_diagonal(loss, params):
    """(g, D) per parameter: the gradient arrays, and z * (H z) for one Rademacher probe z.

    E[z * Hz] = diag(H), since E[z_i z_j] = [i = j] (Bekas et al. 2007). One differentiable
    backward builds g, a second backward of g . z gives Hz. Each p.grad is set to g (not
    accumulated), so the parameters look as after a plain backward.
    """
    with engine.enable_grad():
        grads = autograd.grad(loss, params, create_graph=True, allow_unused=True)
    gs = [backend.xp_of(p.data).zeros_like(p.data) if g is None else g.data
          for p, g in zip(params, grads)]
    zs = [rademacher_like(p.data) for p in params]
    live = [i for i, g in enumerate(grads) if g is not None and g.requires_grad]
    ds = [backend.xp_of(p.data).zeros_like(p.data) for p in params]   # H = 0 where g is constant
    if live:
        hz = autograd.grad([grads[i] for i in live], params, grad_outputs=[zs[i] for i in live],
                           allow_unused=True)
        for i, h in enumerate(hz):
            if h is not None:
                ds[i] = zs[i] * h.data
    for p, g in zip(params, gs):
        p.grad = Tensor._wrap(g)
    return gs, ds


class AdaHessian(Optimizer):
    """AdaHessian (the reference implementation's rule, amirgholami/adahessian).

        implemented (reference code)                  paper (Yao et al. eq. 8-10)
        +-----------------------------------------+   +----------------------------------------+
        | D <- z * (H z),  z Rademacher           |   | D = diag(H) ~ E[z * (H z)]             |
        | m <- b1*m + (1-b1)*g                    |   | m_t = (1-b1) sum b1^(t-i) g_i / (1-b1^t)|
        | v <- b2*v + (1-b2)*D*D                  |   | v_t = sqrt((1-b2) sum b2^(t-i) D_i^2   |
        | denom <- (sqrt(v)/sqrt(1-b2^t))^k + eps |   |            / (1-b2^t))^k               |
        | theta <- theta - lr/(1-b1^t) *          |   | theta <- theta - eta * m_t / v_t       |
        |         (m/denom + wd*theta)            |   |                                        |
        +-----------------------------------------+   +----------------------------------------+

    The same moments: the reference keeps the uncorrected sums and corrects them in the step,
    as Adam does. It adds eps (the paper has none) and weight decay scaled by lr/(1-b1^t), both
    kept here. The reference squares |Hz|, which equals (z*Hz)^2 since z^2 = 1. Its spatial
    averaging applies to convolution kernels only; every parameter here is a dense block of
    size 1 (its rule for tensors of at most 2 dimensions). k is `hessian_power` (1 by default).
    One Rademacher probe per step from the global generator (tinygrad_opt.manual_seed).
    """

    needs_closure = True

    def __init__(self, params, lr=0.15, betas=(0.9, 0.999), eps=1e-4, weight_decay=0.0,
                 hessian_power=1.0):
        if not lr > 0:
            raise ValueError(f"Invalid learning rate: {lr}")
        if not 0.0 <= hessian_power <= 1.0:
            raise ValueError(f"Invalid hessian_power: {hessian_power} (need 0 <= k <= 1)")
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps,
                                      weight_decay=weight_decay, hessian_power=hessian_power))

    step_size_kind = "adahessian"

    def step_size(self, p, state, group):
        """lr / ((sqrt(v)/sqrt(1-b2^t))^k + eps): the factor on m_hat = m / (1 - b1^t)."""
        xp = backend.xp_of(p)
        t = state["step"]
        denom = xp.sqrt(state["exp_hessian_diag_sq"]) * (1 / math.sqrt(1 - group["betas"][1] ** t))
        return group["lr"] / (denom ** group["hessian_power"] + group["eps"])

    def step(self, closure=None):
        """One step from the gradient and one Hutchinson probe; returns the loss before it."""
        loss = closure_loss(closure, "AdaHessian")
        params = [p for g in self.param_groups for p in g["params"]]
        _, ds = gradient_and_hutchinson_diagonal(loss, params)
        diag = dict(zip(params, ds))
        with engine.no_grad():
            for group in self.param_groups:
                for p in group["params"]:
                    self._update(p.data, p.grad.data, diag[p], self.state[p], group)
        return loss.detach()

    def _update(self, p, g, D, state, group):
        xp = backend.xp_of(p)
        beta1, beta2 = group["betas"]
        if not state:
            state["step"] = 0
            state["exp_avg"] = xp.zeros_like(p)
            state["exp_hessian_diag_sq"] = xp.zeros_like(p)
        t = state["step"] = state["step"] + 1
        m, v = state["exp_avg"], state["exp_hessian_diag_sq"]
        m *= beta1                                      # m <- b1*m + (1-b1)*g
        m += (1 - beta1) * g
        v *= beta2                                      # v <- b2*v + (1-b2)*D*D
        v += (1 - beta2) * (D * D)
        k = group["hessian_power"]
        denom = xp.sqrt(v) * (1 / math.sqrt(1 - beta2 ** t))
        if k != 1:
            denom **= k
        denom += group["eps"]
        u = xp.divide(m, denom)
        if group["weight_decay"]:
            u += group["weight_decay"] * p
        u *= group["lr"] / (1 - beta1 ** t)
        p -= u
