"""Optimizers by name: the defaults the command line, `compare` and benchmarks start from.

    from tinygrad_opt.optim.registry import OPTIMIZERS, make_optimizer
    opt = make_optimizer("adam", model.parameters())            # lr 5e-3, the listed default
    OPTIMIZERS["lbfgs"].needs_closure                           # True: call opt.step(closure)

Each entry is an OptimizerSpec: the class, a default lr tuned for small MLPs on the digits
set, a one-line summary and the keyword arguments the name implies (e.g. "nesterov" is SGD
with nesterov=True). `needs_closure` is read from the class, so it cannot disagree with what
`step` expects. `register` adds a name.
"""
from dataclasses import dataclass, field

from .adagrad import Adagrad
from .adam import Adam, AdamW
from .cg import ConjugateGradient
from .lbfgs import LBFGS
from .newton import Newton, NewtonCG
from .rmsprop import RMSprop
from .sgd import SGD
from .adahessian import AdaHessian
from .hessianfree import HessianFree
from .kfac import KFAC
from .lion import Lion
from .lookahead import Lookahead
from .sam import SAM
from .sophia import Sophia


@dataclass(frozen=True)
class OptimizerSpec:
    """One named optimizer: its class, default lr, summary and implied keyword arguments.

    momentum: None when the class takes no `momentum`; else the default the name implies.
    weight_decay: the default weight decay (adamw: 0.01); None when the class has none, so
    asking for one is an error. dense: it builds the full Hessian, so it is only for tiny
    problems (2-D test functions) and is not offered for training networks.
    """
    name: str
    cls: type
    lr: float
    summary: str
    kwargs: dict = field(default_factory=dict)
    momentum: float = None
    weight_decay: float = 0.0
    dense: bool = False

    @property
    def needs_closure(self):
        """True when step() must be given the loss closure (line searches, Newton)."""
        return self.cls.needs_closure

    def make(self, params, lr=None, momentum=None, weight_decay=None, **extra):
        """The optimizer on `params`; None for lr, momentum or weight_decay takes the default."""
        kwargs = dict(self.kwargs)
        if self.momentum is not None:
            kwargs["momentum"] = self.momentum if momentum is None else momentum
        elif momentum:
            raise ValueError(f"momentum is not supported with {self.name}")
        if self.weight_decay is not None:
            kwargs["weight_decay"] = weight_decay or self.weight_decay
        elif weight_decay:
            raise ValueError(f"weight_decay is not supported with {self.name}")
        kwargs.update(extra)
        return self.cls(params, self.lr if lr is None else lr, **kwargs)


OPTIMIZERS = {}


def register(spec):
    """Add (or replace) `spec` under spec.name; returns it."""
    OPTIMIZERS[spec.name] = spec
    return spec


for _spec in [
    OptimizerSpec("sgd", SGD, 0.2, "plain SGD: x <- x - lr g", momentum=0.0),
    OptimizerSpec("momentum", SGD, 0.05, "SGD with heavy-ball momentum (--momentum, default 0.9)",
                  momentum=0.9),
    OptimizerSpec("nesterov", SGD, 0.05, "SGD with Nesterov momentum (--momentum, default 0.9)",
                  dict(nesterov=True), momentum=0.9),
    OptimizerSpec("adagrad", Adagrad, 0.1, "Adagrad: per-coordinate lr / sqrt(sum of g^2)"),
    OptimizerSpec("rmsprop", RMSprop, 3e-3, "RMSprop: lr / sqrt(moving average of g^2)",
                  momentum=0.0),
    OptimizerSpec("adam", Adam, 5e-3, "Adam: momentum and RMSprop with bias correction"),
    OptimizerSpec("adamw", AdamW, 5e-3,
                  "Adam with decoupled weight decay (--weight-decay, default 0.01)",
                  weight_decay=1e-2),
    OptimizerSpec("lbfgs", LBFGS, 1.0,
                  "L-BFGS with a strong Wolfe line search (20 iterations a step)",
                  dict(max_iter=20), weight_decay=None),
    OptimizerSpec("cg", ConjugateGradient, 1.0,
                  "nonlinear conjugate gradients, Polak-Ribiere+, strong Wolfe",
                  weight_decay=None),
    OptimizerSpec("newtoncg", NewtonCG, 1.0,
                  "Hessian-free Newton: (H + 0.01 I) d = -g by CG, Armijo steps",
                  dict(damping=1e-2, cg_max_iter=50, line_search="armijo"), weight_decay=None),
    # the textbook step (no adaptive damping), so the landscape shows it jumping onto saddles
    OptimizerSpec("newton", Newton, 1.0, "Newton with the dense Hessian (tiny models only)",
                  dict(adaptive=False), weight_decay=None, dense=True),
]:
    register(_spec)


def get_spec(name):
    """The OptimizerSpec called `name`; a ValueError lists the known names."""
    try:
        return OPTIMIZERS[name]
    except KeyError:
        raise ValueError(f"unknown optimizer {name!r}; choose from "
                         f"{', '.join(OPTIMIZERS)}") from None


def make_optimizer(name, params, lr=None, momentum=None, weight_decay=0.0, **extra):
    """The optimizer `name` of OPTIMIZERS on `params`; lr=None takes the listed default."""
    return get_spec(name).make(params, lr=lr, momentum=momentum, weight_decay=weight_decay,
                               **extra)


def training_optimizers():
    """The names that can train a network (every one but the dense-Hessian methods)."""
    return [n for n, s in OPTIMIZERS.items() if not s.dense]


def parse_optimizer_list(text, allowed=None):
    """'sgd,adam:0.01' -> [('sgd', None), ('adam', 0.01)]; a ValueError says what is wrong.

    allowed: the names accepted (default: all).
    """
    out = []
    for item in filter(None, (s.strip() for s in text.split(","))):
        name, _, lr = item.partition(":")
        spec = get_spec(name)
        if allowed is not None and name not in allowed:
            why = " (it forms the dense Hessian: 2-D problems only)" if spec.dense else ""
            raise ValueError(f"optimizer {name!r} cannot be used here{why}; choose from "
                             f"{', '.join(allowed)}")
        try:
            lr = float(lr) if lr else None
        except ValueError:
            raise ValueError(f"bad learning rate in {item!r}") from None
        if lr is not None and not (lr > 0 and lr < float("inf")):
            raise ValueError(f"learning rate must be positive in {item!r}")
        out.append((name, lr))
    if not out:
        raise ValueError("give at least one optimizer")
    return out


# ---------------------------------------------------------------- optimizers made for networks
class LookaheadAdam(Lookahead):
    """Lookahead(Adam(params, lr, ...), k, alpha): the registry's 'lookahead'."""

    def __init__(self, params, lr, k=5, alpha=0.5, **adam_kwargs):
        super().__init__(Adam(params, lr=lr, **adam_kwargs), k=k, alpha=alpha)


class SAMSGD(SAM):
    """SAM(SGD(params, lr, momentum, weight_decay), rho, adaptive): the registry's 'sam'."""

    def __init__(self, params, lr, momentum=0.9, weight_decay=0.0, rho=0.05, adaptive=False):
        super().__init__(SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay),
                         rho=rho, adaptive=adaptive)


for _spec in [
    OptimizerSpec("lion", Lion, 1e-3, "Lion: lr * sign of interpolated momentum, decoupled decay"),
    OptimizerSpec("lookahead", LookaheadAdam, 5e-3,
                  "Lookahead over Adam: slow weights pulled halfway every 5 steps"),
    OptimizerSpec("sam", SAMSGD, 0.05,
                  "SAM over momentum SGD: the gradient at the worst point of a 0.05-ball",
                  momentum=0.9),
    OptimizerSpec("adahessian", AdaHessian, 0.1,
                  "AdaHessian: Adam with a Hutchinson Hessian diagonal for g^2"),
    OptimizerSpec("sophia", Sophia, 2e-3,
                  "Sophia: momentum / Hutchinson curvature, clipped to lr per coordinate"),
    OptimizerSpec("hessianfree", HessianFree, 1.0,
                  "Hessian-free (Martens 2010): CG on Gauss-Newton products, LM damping",
                  weight_decay=None),
    OptimizerSpec("kfac", KFAC, 1.0,
                  "K-FAC: Kronecker-factored natural gradient, step fitted to the model",
                  weight_decay=None),
]:
    register(_spec)
