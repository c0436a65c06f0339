"""Lion: the sign of an interpolated momentum (Chen et al. 2023, "Symbolic Discovery of
Optimization Algorithms")."""
from .. import backend
from .optimizer import Optimizer


class Lion(Optimizer):
    """Lion with decoupled weight decay (optax's rule; the paper's Program 1).

        implemented (optax.lion)                       paper (Program 1 / Alg. 2)
        +-------------------------------------------+  +-------------------------------------+
        | c <- b1*m + (1-b1)*g                      |  | c_t <- b1*m_{t-1} + (1-b1)*g_t      |
        | theta <- theta - lr*(sign(c) + wd*theta)  |  | theta_t <- theta_{t-1}              |
        | m <- b2*m + (1-b2)*g                      |  |     - eta_t*(sign(c_t) + lambda*th) |
        |                                           |  | m_t <- b2*m_{t-1} + (1-b2)*g_t      |
        +-------------------------------------------+  +-------------------------------------+

    The same rule: optax adds wd*theta to the signed update and scales the sum by -lr, as the
    paper writes it. The decay is decoupled (not added to g), so it does not enter the momentum,
    and every coordinate moves by exactly lr (plus the decay) at each step. m starts at zero.
    sign(0) = 0, as in both references. The paper suggests an lr 3-10x smaller than AdamW's.
    """

    def __init__(self, params, lr=1e-4, betas=(0.9, 0.99), weight_decay=0.0):
        if not lr > 0:
            raise ValueError(f"Invalid learning rate: {lr}")
        super().__init__(params, dict(lr=lr, betas=tuple(betas), weight_decay=weight_decay))

    def update(self, p, g, state, group):
        xp = backend.xp_of(p)
        beta1, beta2 = group["betas"]
        lr, wd = group["lr"], group["weight_decay"]
        if not state:
            state["step"] = 0
            state["exp_avg"] = xp.zeros_like(p)
        state["step"] += 1
        m = state["exp_avg"]
        c = xp.multiply(m, beta1)                       # c <- b1*m + (1-b1)*g
        c += (1 - beta1) * g
        u = xp.sign(c)
        if wd:
            u += wd * p                                 # sign(c) + wd*theta, before theta moves
        u *= lr
        p -= u
        m *= beta2                                      # m <- b2*m + (1-b2)*g
        m += (1 - beta2) * g
