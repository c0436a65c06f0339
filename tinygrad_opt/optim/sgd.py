"""Stochastic gradient descent with optional (Nesterov) momentum."""
from .. import backend
from .kernels import Kernel
from .optimizer import Optimizer, l2_gradient

_ndarray = backend.ndarray


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

    arrays_only = True      # its update_group below works on p.data and p.grad.data

    def update_group(self, group):
        if group["momentum"] or group["weight_decay"]:
            return super().update_group(group)
        # plain SGD keeps no state: theta <- theta - lr * g for each parameter, nothing else;
        # NumPy's rule (_step_numpy) written out, since this loop runs on every step
        lr = group["lr"]
        for p in group["params"]:
            g = p.grad
            if g is not None:
                d = p.data
                if type(d) is _ndarray:
                    d -= lr * g.data
                else:
                    _step(d, g.data, lr)

    def update(self, p, g, state, group):
        lr, mu, wd = group["lr"], group["momentum"], group["weight_decay"]
        if wd:
            g = l2_gradient(p, g, wd)
        if mu:
            b = state.get("momentum_buffer")
            if b is None:
                b = state["momentum_buffer"] = g.copy()       # step 1: b = g
                g = g + mu * b if group["nesterov"] else b
            else:
                args = (g, mu, 1 - group["dampening"], lr, bool(group["nesterov"]), b, p)
                if type(p) is backend.ndarray:
                    return _momentum_numpy(*args)
                t = p.dtype.type
                return MOMENTUM(g, t(mu), t(args[2]), t(lr), backend.np.bool_(args[4]), b, p)
        _step(p, g, lr)


def _step(p, g, lr):
    """theta <- theta - lr * g on either backend (the one dispatch of the plain step)."""
    if type(p) is backend.ndarray:
        _step_numpy(g, lr, p)
    else:
        STEP(g, p.dtype.type(lr), p)


def _step_numpy(g, lr, p):
    p -= lr * g


def _momentum_numpy(g, mu, damp1, lr, nesterov, b, p):
    """b <- mu b + (1 - dampening) g;  theta <- theta - lr (g + mu b if nesterov else b)."""
    b *= mu
    b += damp1 * g if damp1 != 1 else g
    p -= lr * (g + mu * b if nesterov else b)


STEP = Kernel("tinygrad_opt_sgd", "T g, T lr", "T p", "p -= lr * g")
MOMENTUM = Kernel("tinygrad_opt_sgd_momentum", "T g, T mu, T damp1, T lr, bool nesterov",
                  "T b, T p", "b = mu * b + damp1 * g; p -= lr * (nesterov ? g + mu * b : b)")
KERNELS = [(STEP, _step_numpy), (MOMENTUM, _momentum_numpy)]    # checked by test_kernels.py
