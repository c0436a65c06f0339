"""Adam and AdamW: moment estimates with bias correction."""
import math

from .. import backend
from .kernels import Kernel
from .optimizer import Optimizer, l2_gradient


class Adam(Optimizer):
    """Adam with optional L2 weight decay and AMSGrad (PyTorch's rule; Kingma & Ba, 2015).

        implemented (PyTorch)                          textbook (Alg. 8.7)
        +-------------------------------------------+  +-------------------------------+
        | g <- g + wd * theta                       |  | t <- t + 1                    |
        | m <- b1*m + (1-b1)*g                      |  | s <- rho1*s + (1-rho1)*g      |
        | v <- b2*v + (1-b2)*g*g                    |  | r <- rho2*r + (1-rho2)*g*g    |
        | vmax <- max(vmax, v)   (amsgrad: v=vmax)  |  | s^ <- s/(1 - rho1^t)          |
        | theta <- theta - lr/(1-b1^t) * m /        |  | r^ <- r/(1 - rho2^t)          |
        |          (sqrt(v)/sqrt(1-b2^t) + eps)     |  | theta <- theta                |
        |                                           |  |    - eps*s^/(sqrt(r^) + delta)|
        +-------------------------------------------+  +-------------------------------+

    The same update: lr/(1-b1^t) * m is eps*s^ and sqrt(v)/sqrt(1-b2^t) is sqrt(r^); eps (the
    book's delta) is added after the corrected root in both. AMSGrad (Reddi et al., 2018)
    divides by the running maximum of v instead of v.
    """

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0,
                 amsgrad=False):
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps,
                                      weight_decay=weight_decay, amsgrad=amsgrad))

    decoupled = False               # AdamW: decay theta directly instead of adding wd*theta to g
    step_size_kind = "adam"

    def step_size(self, p, state, group):
        """lr / (sqrt(v_hat) + eps), v_hat = v / (1 - beta2^t) (AMSGrad: of max v): the factor
        on m_hat = m / (1 - beta1^t)."""
        xp = backend.xp_of(p)
        v = state.get("max_exp_avg_sq") if group["amsgrad"] else None
        v = state["exp_avg_sq"] if v is None else v
        v_hat = v / (1.0 - group["betas"][1] ** float(state["step"]))
        return group["lr"] / (xp.sqrt(v_hat) + group["eps"])

    def update(self, p, g, state, group):
        xp = backend.xp_of(p)
        beta1, beta2 = group["betas"]
        lr, wd = group["lr"], group["weight_decay"]
        if not state:
            state["step"] = 0
            state["exp_avg"] = xp.zeros_like(p)
            state["exp_avg_sq"] = xp.zeros_like(p)
            if group["amsgrad"]:
                state["max_exp_avg_sq"] = xp.zeros_like(p)
        t = state["step"] = state["step"] + 1
        if wd:
            if self.decoupled:
                p *= 1 - lr * wd
            else:
                g = l2_gradient(p, g, wd)
        c1 = 1 - beta1 ** t
        c2 = math.sqrt(1 - beta2 ** t)
        # lr/c1 * m / (sqrt(v)/c2 + eps) == (lr*c2/c1) * m / (sqrt(v) + eps*c2) exactly:
        # eps is scaled together with sqrt(v), so it stays outside the corrected root.
        args = (g, 1 - beta1, beta2, 1 - beta2, group["eps"] * c2, lr * c2 / c1,
                state["exp_avg"], state["exp_avg_sq"])
        if group["amsgrad"]:
            args += (state["max_exp_avg_sq"],)
        if xp is backend.np:
            return (_amsgrad_numpy if group["amsgrad"] else _adam_numpy)(*args, p)
        f = p.dtype.type
        args = args[:1] + tuple(f(a) for a in args[1:6]) + args[6:]
        (AMSGRAD if group["amsgrad"] else ADAM)(*args, p)


def _moments_numpy(g, one_b1, b2, one_b2, m, v):
    """m <- m + (1 - b1)(g - m);  v <- b2 v + (1 - b2) g^2; returns a scratch array."""
    tmp = backend.np.subtract(g, m)
    tmp *= one_b1
    m += tmp
    backend.np.multiply(g, g, out=tmp)
    tmp *= one_b2
    v *= b2
    v += tmp
    return tmp


def _adam_numpy(g, one_b1, b2, one_b2, eps_c2, step, m, v, p):
    tmp = _moments_numpy(g, one_b1, b2, one_b2, m, v)
    _apply_numpy(step, m, v, eps_c2, tmp, p)


def _amsgrad_numpy(g, one_b1, b2, one_b2, eps_c2, step, m, v, vmax, p):
    tmp = _moments_numpy(g, one_b1, b2, one_b2, m, v)
    backend.np.maximum(vmax, v, out=vmax)
    _apply_numpy(step, m, vmax, eps_c2, tmp, p)


def _apply_numpy(step, m, v, eps_c2, tmp, p):
    """theta <- theta - step * m / (sqrt(v) + eps_c2), through the scratch array tmp."""
    np = backend.np
    np.sqrt(v, out=tmp)
    tmp += eps_c2
    np.divide(m, tmp, out=tmp)
    tmp *= step
    p -= tmp


_ADAM_IN = "T g, T one_b1, T b2, T one_b2, T eps_c2, T step"
_MOMENTS = "m += (g - m) * one_b1; v = v * b2 + (g * g) * one_b2;"
ADAM = Kernel("tinygrad_opt_adam", _ADAM_IN, "T m, T v, T p",
              _MOMENTS + "p -= step * m / (sqrt(v) + eps_c2)")
AMSGRAD = Kernel("tinygrad_opt_amsgrad", _ADAM_IN, "T m, T v, T vmax, T p",
                 _MOMENTS + "vmax = max(vmax, v); p -= step * m / (sqrt(vmax) + eps_c2)")
KERNELS = [(ADAM, _adam_numpy), (AMSGRAD, _amsgrad_numpy)]      # checked by test_kernels.py


class AdamW(Adam):
    """Adam with decoupled weight decay (PyTorch's rule; Loshchilov & Hutter, 2019).

        theta <- theta * (1 - lr*wd), then the Adam step above without the L2 term.

    The book has no AdamW. Decay is applied to theta before the step and is not rescaled by
    the adaptive denominator, so every coordinate shrinks by the same factor.
    """

    decoupled = True

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2,
                 amsgrad=False):
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                         amsgrad=amsgrad)
