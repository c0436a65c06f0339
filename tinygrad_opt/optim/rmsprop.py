"""RMSProp: steps scaled by a moving average of squared gradients."""
from .. import backend
from .kernels import Kernel
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
        args = (g, alpha, 1 - alpha, group["eps"], group["lr"], mu, state["square_avg"],
                state.get("grad_avg"), state.get("momentum_buffer"))
        if xp is backend.np:
            return _rmsprop_numpy(*args, p)
        f = p.dtype.type
        rmsprop_kernel(group["centered"], args[-1] is not None)(*_kernel_args(args, f), p)


def _rmsprop_numpy(g, alpha, one_alpha, eps, lr, mu, v, m, b, p):
    """v <- a v + (1 - a) g^2;  m <- m + (1 - a)(g - m) (m: None unless centered);
    d = sqrt(v - m^2 or v) + eps;  b <- mu b + g/d (b: None without momentum);
    theta <- theta - lr (b or g/d)."""
    np = backend.np
    tmp = np.multiply(g, g)
    tmp *= one_alpha
    v *= alpha
    v += tmp
    if m is not None:
        np.subtract(g, m, out=tmp)
        tmp *= one_alpha
        m += tmp
        np.multiply(m, m, out=tmp)
        np.subtract(v, tmp, out=tmp)
        np.sqrt(tmp, out=tmp)
    else:
        np.sqrt(v, out=tmp)
    tmp += eps
    np.divide(g, tmp, out=tmp)
    if b is not None:
        b *= mu
        b += tmp
        np.multiply(b, lr, out=tmp)
    else:
        tmp *= lr
    p -= tmp


def _kernel_args(args, f):
    """The kernel's arguments: scalars cast to the parameter dtype, absent buffers dropped."""
    g, alpha, one_alpha, eps, lr, mu, v, m, b = args
    out = [g, f(alpha), f(one_alpha), f(eps), f(lr)] + ([f(mu)] if b is not None else [])
    return out + [a for a in (v, m, b) if a is not None]


_RMSPROP = {}


def rmsprop_kernel(centered, momentum):
    """The fused kernel for one of the four variants (built from the same fragments)."""
    key = (bool(centered), bool(momentum))
    if key not in _RMSPROP:
        d = "(sqrt(v - m * m) + eps)" if centered else "(sqrt(v) + eps)"
        body = "v = v * alpha + (g * g) * one_alpha; "
        if centered:
            body += "m += (g - m) * one_alpha; "
        body += f"b = b * mu + g / {d}; p -= lr * b" if momentum else f"p -= lr * g / {d}"
        name = "tinygrad_opt_rmsprop" + "_centered" * centered + "_momentum" * momentum
        ins = "T g, T alpha, T one_alpha, T eps, T lr" + ", T mu" * momentum
        outs = "T v" + ", T m" * centered + ", T b" * momentum + ", T p"
        _RMSPROP[key] = Kernel(name, ins, outs, body)
    return _RMSPROP[key]


KERNELS = [(rmsprop_kernel(c, mom), _rmsprop_numpy)               # checked by test_kernels.py
           for c in (False, True) for mom in (False, True)]
