"""Lookahead: slow weights pulled towards the fast weights every k steps (Zhang et al. 2019,
"Lookahead Optimizer: k steps forward, 1 step back"); and the base class of optimizers that
wrap another optimizer instance (Lookahead, SAM)."""
from collections import defaultdict

from .. import backend, engine
from .optimizer import Optimizer


class WrapperOptimizer(Optimizer):
    """An optimizer built around another one (`base_optimizer`), sharing its parameter groups.

    Learning-rate schedulers and `zero_grad` act on the base's groups, since they are the same
    list. `state_dict()` holds the wrapper's own per-parameter state, its hyperparameters
    (`wrapper`) and the whole state dict of the base (`base`), so a resumed run continues
    exactly.
    """

    hyper = ()                      # names of the wrapper's own hyperparameters (attributes)

    def __init__(self, base_optimizer, name):
        if not isinstance(base_optimizer, Optimizer):
            raise TypeError(f"{name}: base_optimizer must be an optimizer instance (e.g. "
                            f"optim.SGD(model.parameters(), lr=0.1)), got "
                            f"{type(base_optimizer).__name__}")
        self.base_optimizer = base_optimizer
        self.defaults = base_optimizer.defaults
        self.param_groups = base_optimizer.param_groups
        self.state = defaultdict(dict)

    def __repr__(self):
        own = ", ".join(f"{k}={getattr(self, k)}" for k in self.hyper)
        return f"{type(self).__name__}({own},\n{self.base_optimizer!r})"

    def add_param_group(self, group):
        self.base_optimizer.add_param_group(group)

    def zero_grad(self):
        self.base_optimizer.zero_grad()

    def step_size_of(self, p, group):
        """The base optimizer's step size (what effective_step_size reports)."""
        return self.base_optimizer.step_size_of(p, group)

    def state_dict(self):
        sd = Optimizer.state_dict(self)
        sd["wrapper"] = {k: getattr(self, k) for k in self.hyper}
        sd["base"] = self.base_optimizer.state_dict()
        return sd

    def load_state_dict(self, state_dict):
        self.base_optimizer.load_state_dict(state_dict["base"])
        Optimizer.load_state_dict(self, state_dict)
        self.param_groups = self.base_optimizer.param_groups
        for k in self.hyper:
            setattr(self, k, state_dict["wrapper"][k])


class Lookahead(WrapperOptimizer):
    """Lookahead around any optimizer: k fast steps, then one step of the slow weights.

        implemented                                     paper (Alg. 1)
        +------------------------------------------+    +----------------------------------+
        | phi <- theta  (before the first step)    |    | phi_0 <- theta_0                 |
        | each step: theta <- base step of theta   |    | for i = 1..k: theta <- A(theta)  |
        | every k-th step:                         |    | phi_t <- phi_{t-1}               |
        |   phi <- phi + alpha*(theta - phi)       |    |        + alpha*(theta_k - phi_t-1)|
        |   theta <- phi                           |    | theta_0 <- phi_t                 |
        +------------------------------------------+    +----------------------------------+

    The same rule, counted per call of step() instead of in an inner loop, so it fits a
    training loop unchanged. The base optimizer's own state (e.g. momentum) carries over the
    synchronisation, as in the paper's experiments. Slow weights are taken lazily at the first
    step, so a model loaded after the optimizer was built starts from its loaded values.
    """

    hyper = ("k", "alpha", "lookahead_step")

    def __init__(self, base_optimizer, k=5, alpha=0.5):
        if not (isinstance(k, int) and k >= 1):
            raise ValueError(f"Invalid lookahead steps k: {k} (need an integer >= 1)")
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"Invalid slow step size alpha: {alpha} (need 0 <= alpha <= 1)")
        super().__init__(base_optimizer, "Lookahead")
        self.k, self.alpha, self.lookahead_step = k, alpha, 0
        # a closure is needed exactly when the base needs one (an instance attribute)
        self.needs_closure = getattr(base_optimizer, "needs_closure", False)

    def step(self, closure=None):
        """One step of the base optimizer, then the slow update if this is the k-th; returns
        the base optimizer's loss."""
        with engine.no_grad():
            for group in self.param_groups:
                for p in group["params"]:
                    state = self.state[p]
                    if "slow_buffer" not in state:
                        state["slow_buffer"] = p.data.copy()
        loss = self.base_optimizer.step() if closure is None else self.base_optimizer.step(closure)
        self.lookahead_step += 1
        if self.lookahead_step % self.k == 0:
            with engine.no_grad():
                for group in self.param_groups:
                    for p in group["params"]:
                        phi = self.state[p]["slow_buffer"]
                        d = backend.xp_of(phi).subtract(p.data, phi)  # phi += alpha*(theta-phi)
                        d *= self.alpha
                        phi += d
                        p.data[...] = phi
        return loss
