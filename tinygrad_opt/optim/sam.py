"""Sharpness-aware minimization (Foret et al. 2021) and its adaptive form ASAM (Kwon et al. 2021)."""
from .. import backend, engine
from ..flat import require_closure
from ..tensor import Tensor
from .lookahead import WrapperOptimizer


class SAM(WrapperOptimizer):
    """SAM around a first-order optimizer: the base steps with the gradient taken at the worst
    nearby point w + e(w) of a rho-ball.

        implemented (reference code, davda54/sam)      paper (Foret et al. eq. 2, Alg. 1)
        +------------------------------------------+   +------------------------------------+
        | g <- grad L(w)                           |   | e(w) = rho * g / ||g||_2           |
        | e <- rho * T^2 g / (||T g|| + 1e-12)     |   | g_SAM = grad L(w) at w + e(w)      |
        |   (T = 1, adaptive: T = |w|)             |   | w <- w - eta * g_SAM               |
        | w' <- w + e;  g' <- grad L(w')           |   |                                    |
        | w <- w;  base step with g'               |   | ASAM: e = rho T^2 g / ||T g||,     |
        |                                          |   |   T = |w| (+ eta, Kwon et al.)     |
        +------------------------------------------+   +------------------------------------+

    The norm is one norm over every parameter (all groups). The 1e-12 keeps e finite at
    g = 0; ASAM's eta offset is not used (the reference code drops it too). Any optimizer
    replaces the paper's SGD step; the base sees only g', so its weight decay and momentum
    act as they would alone. Each step costs two forward and backward passes. w is restored
    from a copy, not by subtracting e, so it comes back bit for bit.
    """

    hyper = ("rho", "adaptive")

    def __init__(self, base_optimizer, rho=0.05, adaptive=False):
        if not rho >= 0:
            raise ValueError(f"Invalid neighbourhood size rho: {rho}")
        if getattr(base_optimizer, "needs_closure", False):
            raise TypeError(f"SAM: the base optimizer {type(base_optimizer).__name__} needs a "
                            "closure of its own; SAM wraps first-order optimizers (SGD, Adam, ...)")
        super().__init__(base_optimizer, "SAM")
        self.rho, self.adaptive = rho, bool(adaptive)

    needs_closure = True

    def step(self, closure=None):
        """Two gradient evaluations and one base step; returns the loss at w (before the step)."""
        require_closure(closure, "SAM")
        loss = self._loss_and_grad(closure)
        params = [p for g in self.param_groups for p in g["params"] if p.grad is not None]
        if not params:
            self.base_optimizer.step()
            return loss
        with engine.no_grad():
            xp = backend.xp_of(params[0].data)
            scaled = [(xp.abs(p.data) * p.grad.data if self.adaptive else p.grad.data)
                      for p in params]
            norm = xp.sqrt(sum((t * t).sum() for t in scaled))     # a 0-d array: no host sync
            scale = self.rho / (norm + 1e-12)
            saved = []
            for p, t in zip(params, scaled):
                e = t * xp.abs(p.data) if self.adaptive else t.copy()   # T^2 g = |w| (|w| g)
                e *= scale
                saved.append(p.data.copy())
                p.data += e
        self._loss_and_grad(closure)
        with engine.no_grad():
            for p, w in zip(params, saved):
                p.data[...] = w
        self.base_optimizer.step()
        return loss

    def _loss_and_grad(self, closure):
        self.base_optimizer.zero_grad()
        with engine.enable_grad():
            loss = closure()
            if not isinstance(loss, Tensor):
                raise TypeError("SAM: the closure must return the loss Tensor (and not call "
                                f"backward), got {type(loss).__name__}")
            loss.backward()
        return loss.detach()
