"""AdaGrad: per-coordinate step sizes from the running sum of squared gradients."""
from .. import backend
from .kernels import Kernel
from .optimizer import Optimizer, l2_gradient


class Adagrad(Optimizer):
    """AdaGrad (PyTorch's rule; Duchi et al., 2011).

        implemented (PyTorch)                       textbook (Alg. 8.4)
        +----------------------------------------+  +-------------------------------------+
        | g <- g + wd * theta                    |  | r <- r + g*g                        |
        | lr_k = lr / (1 + (k - 1) * lr_decay)   |  | dtheta <- -eps/(delta + sqrt(r))*g  |
        | sum <- sum + g*g       (sum_0 = init)  |  | theta <- theta + dtheta             |
        | theta <- theta - lr_k*g/(sqrt(sum)+eps)|  |                                     |
        +----------------------------------------+  +-------------------------------------+

    Both add eps (the book's delta) outside the square root, so with lr_decay = 0,
    initial_accumulator_value = 0 and weight_decay = 0 they are the same update.
    """

    def __init__(self, params, lr=1e-2, eps=1e-10, weight_decay=0, lr_decay=0,
                 initial_accumulator_value=0):
        super().__init__(params, dict(lr=lr, eps=eps, weight_decay=weight_decay, lr_decay=lr_decay,
                                      initial_accumulator_value=initial_accumulator_value))

    step_size_kind = "adagrad"

    def step_size(self, p, state, group):
        """lr_k / (sqrt(sum) + eps) with lr_k = lr / (1 + (k - 1) lr_decay): the factor on g."""
        lr = group["lr"] / (1.0 + (float(state["step"]) - 1.0) * group["lr_decay"])
        return lr / (backend.xp_of(p).sqrt(state["sum"]) + group["eps"])

    def update(self, p, g, state, group):
        xp = backend.xp_of(p)
        if not state:
            state["step"] = 0
            state["sum"] = xp.full_like(p, group["initial_accumulator_value"])
        k = state["step"] = state["step"] + 1
        if group["weight_decay"]:
            g = l2_gradient(p, g, group["weight_decay"])
        lr_k = group["lr"] / (1 + (k - 1) * group["lr_decay"])
        if xp is backend.np:
            return _adagrad_numpy(g, lr_k, group["eps"], state["sum"], p)
        f = p.dtype.type
        ADAGRAD(g, f(lr_k), f(group["eps"]), state["sum"], p)


def _adagrad_numpy(g, lr_k, eps, s, p):
    """sum <- sum + g^2;  theta <- theta - lr_k g / (sqrt(sum) + eps)."""
    np = backend.np
    tmp = np.multiply(g, g)
    s += tmp
    np.sqrt(s, out=tmp)
    tmp += eps
    np.divide(g, tmp, out=tmp)
    tmp *= lr_k
    p -= tmp


ADAGRAD = Kernel("tinygrad_opt_adagrad", "T g, T lr_k, T eps", "T s, T p",
                 "s += g * g; p -= lr_k * g / (sqrt(s) + eps)")
KERNELS = [(ADAGRAD, _adagrad_numpy)]                           # checked by test_kernels.py
