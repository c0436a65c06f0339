"""The base of the optimizers that take step(closure): CG, L-BFGS, Newton and Newton-CG.

They all see the parameters as one flat vector (flat.FlatObjective), so they share one
preamble: a single parameter group, a positive lr, the closure check, line searches by name,
and a cache of the last point they evaluated, so that a step starting where the previous one
ended does not call the closure again.
"""
import math

from ..flat import FlatObjective
from .linesearch import LINE_SEARCHES
from .optimizer import Optimizer


class ClosureOptimizer(Optimizer):
    """Optimizer whose step(closure) evaluates the loss itself (API: the closure returns the
    loss Tensor without calling backward; step returns the loss before the step as a float).

    Reuse: the loss, flat gradient and (for the Newton methods) Hessian operator at the point
    where a step ends are kept; the next step uses them instead of calling the closure again
    when it gets the SAME closure object and the parameters still hold exactly that point.
    A closure whose value changes between calls (a new minibatch each call) must therefore be
    a new function object each step, as `fit` makes it.
    A loss that is NaN or infinite at the start of a step leaves the parameters unchanged and
    is returned, so `fit` reports TrainingDiverged.
    """

    needs_closure = True

    def __init__(self, params, defaults):
        lr = defaults.get("lr")
        if lr is not None and not lr > 0:
            raise ValueError(f"Invalid learning rate: {lr}")
        super().__init__(params, defaults)
        single_group(self, type(self).__name__)
        self._cache = None

    @property
    def params(self):
        """The parameters, in order (the one group's list)."""
        return self.param_groups[0]["params"]

    @property
    def flat_state(self):
        """The optimizer's state: one dict, kept under the first parameter (checkpointed)."""
        return self.state[self.params[0]]

    def check_line_search(self, name, allowed):
        if name not in allowed:
            raise ValueError(f"{type(self).__name__}: unknown line_search {name!r}; "
                             f"expected one of {allowed}")

    @staticmethod
    def line_search(name, phi, f0, df0, **options):
        """Run the line search called `name` ('strong_wolfe' or 'armijo') on phi."""
        return LINE_SEARCHES[name](phi, f0, df0, **options)

    # ------------------------------------------------------------------ evaluation and reuse
    def begin(self, closure, operator=False):
        """(objective, x, f, g, op) at the current parameters, reusing the last step's end point.

        op is an HVPOperator when `operator` is True, else None. `obj.reused` says whether the
        start point came from the cache (a budget of closure calls counts it as one, so that
        a resumed run, which has no cache, takes the same steps).
        """
        obj = FlatObjective(closure, self.params, type(self).__name__)
        x = obj.get()
        c = self._cache
        self._cache = None
        if (c is not None and c[0] is closure and (c[4] is not None or not operator)
                and c[1].shape == x.shape and bool(obj.xp.array_equal(c[1], x))):
            obj.reused = True
            return obj, x, c[2], c[3], c[4]
        obj.reused = False
        if operator:
            op = obj.hvp_operator()
            return obj, x, op.loss, op.grad, op
        f, g = obj.value_and_grad()
        return obj, x, f, g, None

    def remember(self, closure, x, f, g, op=None):
        """Keep (f, g, op) at x, the point where this step leaves the parameters."""
        self._cache = (closure, x.copy(), f, g, op)

    def load_state_dict(self, state_dict):
        self._cache = None
        super().load_state_dict(state_dict)

    def count_evals(self, obj):
        """Add the closure calls of this step to state['func_evals']."""
        state = self.flat_state
        state["func_evals"] = state.get("func_evals", 0) + obj.evals


def finite(f):
    return math.isfinite(f)


def single_group(opt, name):
    """All parameters of an optimizer that works on one flat vector (one parameter group)."""
    if len(opt.param_groups) != 1:
        raise ValueError(f"{name} doesn't support per-parameter options (parameter groups); "
                         "pass one list of parameters")
    return list(opt.param_groups[0]["params"])
