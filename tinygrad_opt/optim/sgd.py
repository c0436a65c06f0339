"""Stochastic gradient descent with optional (Nesterov) momentum."""
from .. import backend
from .optimizer import Optimizer, l2_gradient


class SGD(Optimizer):
    """SGD with momentum, dampening, Nesterov and L2 weight decay (PyTorch's rule).

        implemented (PyTorch)                    textbook (Goodfellow et al., ch. 8)
        +-------------------------------------+  +------------------------------------+
        | g <- g + wd * theta                 |  | Alg. 8.1: theta <- theta - eps*g   |
        | b <- g                    (step 1)  |  | Alg. 8.2: v <- a*v - eps*g         |
        | b <- mu*b + (1 - damp)*g  (later)   |  |           theta <- theta + v       |
        | d <- g + mu*b  if nesterov else b   |  | Alg. 8.3: g at theta + a*v, then   |
        | theta <- theta - lr * d             |  |           as Alg. 8.2              |
        +-------------------------------------+  +------------------------------------+

    Momentum: with a constant lr and no dampening, v = -lr * b after every step, so both give
    the same trajectory. Changing lr rescales the whole stored velocity here (b holds
    gradients, not steps) but only new gradients in the book.
    Nesterov: with theta' = theta + a*v (the look-ahead point), the book's updates become
    theta' <- theta' - lr*(g(theta') + mu*b), which is the rule above, so the gradient is
    taken at the current parameters and no second evaluation point is needed.
    """

    def __init__(self, params, lr, momentum=0, dampening=0, nesterov=False, weight_decay=0):
        super().__init__(params, dict(lr=lr, momentum=momentum, dampening=dampening,
                                      nesterov=nesterov, weight_decay=weight_decay))

    def check_group(self, group):
        super().check_group(group)
        if group["nesterov"] and (group["momentum"] <= 0 or group["dampening"] != 0):
            raise ValueError("Nesterov momentum requires momentum > 0 and dampening = 0, got "
                             f"momentum={group['momentum']}, dampening={group['dampening']}")

    def update_group(self, group):
        if group["momentum"] or group["weight_decay"]:
            return super().update_group(group)
        # plain SGD keeps no state: theta <- theta - lr * g for each parameter, nothing else
        lr = group["lr"]
        for p in group["params"]:
            g = p.grad
            if g is not None:
                d = p.data
                if type(d) is backend.ndarray:
                    d -= lr * g.data
                else:
                    _step_kernel()(g.data, d.dtype.type(lr), d)

    def update(self, p, g, state, group):
        lr, mu, wd = group["lr"], group["momentum"], group["weight_decay"]
        if wd:
            g = l2_gradient(p, g, wd)
        on_gpu = type(p) is not backend.ndarray
        if mu:
            b = state.get("momentum_buffer")
            if b is None:
                b = state["momentum_buffer"] = g.copy()
            elif on_gpu:            # the two lines below and the step as one kernel
                t = p.dtype.type
                _momentum_kernel()(g, t(mu), t(1 - group["dampening"]), t(lr),
                                   backend.np.bool_(group["nesterov"]), b, p)
                return
            else:
                b *= mu
                damp = group["dampening"]
                b += (1 - damp) * g if damp else g
            g = g + mu * b if group["nesterov"] else b
        if on_gpu:
            _step_kernel()(g, p.dtype.type(lr), p)
        else:
            p -= lr * g


def _step_kernel():
    return backend.elementwise_kernel("T g, T lr", "T p", "p -= lr * g", "tinygrad_opt_sgd")


def _momentum_kernel():
    return backend.elementwise_kernel(
        "T g, T mu, T damp1, T lr, bool nesterov", "T b, T p",
        "b = mu * b + damp1 * g; p -= lr * (nesterov ? g + mu * b : b)",
        "tinygrad_opt_sgd_momentum")
