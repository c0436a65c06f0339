"""RMSProp: steps scaled by a moving average of squared gradients."""
from .. import backend
from .optimizer import Optimizer, l2_gradient


class RMSprop(Optimizer):
    """RMSProp with optional centering and momentum (PyTorch's rule; Hinton's lecture 6e).

        implemented (PyTorch)                         textbook (Alg. 8.5, 8.6)
        +------------------------------------------+  +-------------------------------------+
        | g <- g + wd * theta                      |  | r <- rho*r + (1-rho)*g*g            |
        | square_avg <- a*square_avg + (1-a)*g*g   |  | 8.5: theta <- theta                 |
        | grad_avg <- a*grad_avg + (1-a)*g (cent.) |  |         - eps/sqrt(delta + r) * g   |
        | d <- sqrt(square_avg - grad_avg^2) + eps |  | 8.6: g at theta + alpha*v, then     |
        | buf <- mu*buf + g/d       (mu > 0)       |  |      v <- alpha*v - eps/sqrt(r) * g |
        | theta <- theta - lr*buf   (or lr*g/d)    |  |      theta <- theta + v             |
        +------------------------------------------+  +-------------------------------------+

    Alpha here is the book's rho. PyTorch adds eps outside the square root, the book adds delta
    inside, so the steps differ most when r is small: at step 1, |g|/(sqrt(1-a)|g| + eps)
    against |g|/sqrt(delta + (1-a) g^2). The momentum form is heavy-ball momentum on the scaled
    gradient, not the book's Nesterov variant (Alg. 8.6). Centering divides by an estimate of
    the gradient's standard deviation instead of its root mean square (Graves, 2013).
    """

    def __init__(self, params, lr=1e-2, alpha=0.99, eps=1e-8, momentum=0, centered=False,
                 weight_decay=0):
        super().__init__(params, dict(lr=lr, alpha=alpha, eps=eps, momentum=momentum,
                                      centered=centered, weight_decay=weight_decay))

    step_size_kind = "rmsprop"

    def step_size(self, p, state, group):
        """lr / (sqrt(square_avg - grad_avg^2 if centered) + eps): the factor on g."""
        avg = state["square_avg"]
        if group["centered"] and "grad_avg" in state:
            avg = avg - state["grad_avg"] ** 2
        return group["lr"] / (backend.xp_of(p).sqrt(avg) + group["eps"])

    def update(self, p, g, state, group):
        xp = backend.xp_of(p)
        alpha, mu = group["alpha"], group["momentum"]
        if not state:
            state["step"] = 0
            state["square_avg"] = xp.zeros_like(p)
            if mu > 0:
                state["momentum_buffer"] = xp.zeros_like(p)
            if group["centered"]:
                state["grad_avg"] = xp.zeros_like(p)
        state["step"] += 1
        if group["weight_decay"]:
            g = l2_gradient(p, g, group["weight_decay"])
        v = state["square_avg"]
        tmp = xp.multiply(g, g)
        tmp *= 1 - alpha
        v *= alpha
        v += tmp
        if group["centered"]:
            m = state["grad_avg"]
            xp.subtract(g, m, out=tmp)             # m <- m + (1 - alpha)(g - m)
            tmp *= 1 - alpha
            m += tmp
            xp.multiply(m, m, out=tmp)
            xp.subtract(v, tmp, out=tmp)
            xp.sqrt(tmp, out=tmp)
        else:
            xp.sqrt(v, out=tmp)
        tmp += group["eps"]
        xp.divide(g, tmp, out=tmp)
        if mu > 0:
            b = state["momentum_buffer"]
            b *= mu
            b += tmp
            xp.multiply(b, group["lr"], out=tmp)
        else:
            tmp *= group["lr"]
        p -= tmp
