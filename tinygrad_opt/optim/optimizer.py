"""Optimizer base: parameter groups, per-parameter state, the step loop and checkpoints."""
from collections import defaultdict

from .. import backend, engine
from ..tensor import Tensor


class Optimizer:
    """Base class of every optimizer.

    params is an iterable of Tensors, or of dicts (parameter groups) each holding a
    'params' list and any hyperparameters that override `defaults` for that group.

    A first-order subclass only writes `update(p, g, state, group)`: it receives the
    parameter's array `p`, its gradient array `g` and its state dict, and changes `p` and
    the state in place. The base class owns the loop (`update_group`, which a subclass may
    replace to update a whole group at once), the closure, validation and `state_dict`.
    Optimizers that need the loss itself (Newton, CG, L-BFGS) override `step(closure)`
    instead (closure.ClosureOptimizer) and set `needs_closure = True`.

    `self.state[p]` is keyed by the parameter Tensor (identity hash), as in PyTorch.
    `effective_step_size()` gives the per-coordinate step size of the rule's current state
    (a subclass writes `step_size`), which OptimizerMonitor records.
    """
    needs_closure = False      # True where step(closure) must be given the loss closure
    step_size_kind = "lr"      # what `step_size` computes: "lr", "adam", "rmsprop", "adagrad"
    # step() runs update_group with recording off, so that an update written with Tensor ops
    # records nothing. Where update_group touches arrays only (the base loop, which hands
    # update() arrays, and the built-in rules) grad mode changes nothing, and the switch,
    # two thread-local writes and two lock round trips a step, is skipped. A subclass that
    # writes its own update_group gets the switch unless its class body sets this True.
    arrays_only = True

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "update_group" in cls.__dict__ and "arrays_only" not in cls.__dict__:
            cls.arrays_only = False

    def __init__(self, params, defaults):
        self.defaults = dict(defaults)
        self.state = defaultdict(dict)
        self.param_groups = []
        if isinstance(params, Tensor):
            raise TypeError("params argument given to the optimizer should be an iterable of "
                            "Tensors or dicts, but got a Tensor; wrap it in a list: [t]")
        if isinstance(params, dict):
            params = [params]
        params = list(params)
        if not params:
            raise ValueError("optimizer got an empty parameter list")
        if not isinstance(params[0], dict):
            params = [{"params": params}]
        for group in params:
            self.add_param_group(group)

    def __repr__(self):
        lines = [f"{type(self).__name__} ("]
        for i, group in enumerate(self.param_groups):
            lines.append(f"Parameter Group {i}")
            lines += [f"    {k}: {v}" for k, v in sorted(group.items()) if k != "params"]
        return "\n".join(lines) + "\n)"

    # ------------------------------------------------------------------ groups
    def add_param_group(self, group):
        """Append a parameter group; missing hyperparameters are taken from `defaults`."""
        if not isinstance(group, dict):
            raise TypeError(f"a parameter group must be a dict, got {type(group).__name__}")
        params = group["params"]
        if isinstance(params, Tensor):
            params = [params]
        elif isinstance(params, (set, frozenset)):
            raise TypeError("optimizer parameters need to be an ordered collection, but got a "
                            "set; the order must be the same in every run (use a list)")
        else:
            params = list(params)
        if not params:
            raise ValueError("optimizer got an empty parameter list")
        seen = {id(p) for g in self.param_groups for p in g["params"]}
        for i, p in enumerate(params):
            if not isinstance(p, Tensor):
                raise TypeError(f"optimizer can only optimize Tensors, but parameter {i} "
                                f"is a {type(p).__name__}")
            if not p.requires_grad:
                raise ValueError(f"parameter {i} (shape {p.shape}) does not require grad; "
                                 "create it with requires_grad=True or leave it out")
            if id(p) in seen:
                raise ValueError(f"parameter {i} (shape {p.shape}) appears more than once in "
                                 "the optimizer's parameter groups; pass each parameter once")
            seen.add(id(p))
        group = dict(group)
        group["params"] = params
        for k, v in self.defaults.items():
            group.setdefault(k, v)
        self.check_group(group)
        self.param_groups.append(group)

    def check_group(self, group):
        """Raise ValueError for a hyperparameter outside its range; subclasses add their own."""
        def at_least_zero(key, name):
            # `not x >= 0` also rejects NaN, which `x < 0` lets through
            if key in group and not group[key] >= 0:
                raise ValueError(f"Invalid {name}: {group[key]}")
        at_least_zero("lr", "learning rate")
        at_least_zero("eps", "epsilon value")
        at_least_zero("weight_decay", "weight_decay value")
        at_least_zero("momentum", "momentum value")
        at_least_zero("lr_decay", "lr_decay value")
        at_least_zero("initial_accumulator_value", "initial_accumulator_value")
        at_least_zero("dampening", "dampening value")
        if "alpha" in group and not 0.0 <= group["alpha"]:
            raise ValueError(f"Invalid alpha value: {group['alpha']}")
        if "betas" in group:
            for i, beta in enumerate(group["betas"]):
                if not 0.0 <= beta < 1.0:
                    raise ValueError(f"Invalid beta parameter at index {i}: {beta}")

    # ------------------------------------------------------------------ stepping
    def zero_grad(self, set_to_none=True):
        """Reset every parameter's gradient: .grad = None (default, as PyTorch), or with
        set_to_none=False zero the existing gradient arrays in place (detached first)."""
        for group in self.param_groups:
            for p in group["params"]:
                if set_to_none or p.grad is None:
                    p.grad = None
                else:
                    g = p.grad
                    if g.requires_grad:         # a create_graph gradient: drop its graph
                        g = p.grad = g.detach()
                    g.data[...] = 0

    def step(self, closure=None):
        """One update of every parameter that has a gradient; returns the closure's loss or None.

        With a closure (a function that recomputes the loss from the current parameters and
        returns it without calling backward), the optimizer zeroes the gradients, calls the
        closure with grad mode on, calls loss.backward(), then updates.
        """
        loss = None
        if closure is not None:
            self.zero_grad()
            with engine.enable_grad():
                loss = closure()
                loss.backward()
        if self.arrays_only:
            for group in self.param_groups:
                self.update_group(group)
            return loss
        prev = engine._push_mode(False)     # no_grad() without its context object
        try:
            for group in self.param_groups:
                self.update_group(group)
        finally:
            engine._pop_mode(prev)
        return loss

    def update_group(self, group):
        """Update every parameter of one group that has a gradient (a subclass may do a whole
        group at once, as plain SGD does)."""
        state, update = self.state, self.update
        for p in group["params"]:
            g = p.grad
            if g is not None:
                update(p.data, g.data, state[p], group)

    def update(self, p, g, state, group):
        """Change array p (and the state) in place from gradient array g."""
        raise NotImplementedError(f"{type(self).__name__} does not implement update()")

    # ------------------------------------------------------------------ step sizes
    def effective_step_size(self):
        """Per-coordinate step sizes of the next update, one array per parameter (shaped like
        it, in param_groups order): the factor the rule applies to its update direction
        (Adam: lr / (sqrt(v_hat) + eps) on m_hat), lr where the rule keeps no such state."""
        return [self.step_size_of(p, group)[1].reshape(p.shape)
                for group in self.param_groups for p in group["params"]]

    def step_size_of(self, p, group):
        """(kind, flat per-coordinate step size) of parameter p: `step_size_kind` and the
        `step_size` hook's array, or ('lr', lr everywhere) while p has no state."""
        state = self.state.get(p)
        eff = self.step_size(p.data, state, group) if state else None
        if eff is None:
            return "lr", backend.xp_of(p.data).full(p.size, float(group["lr"]), dtype=float)
        return self.step_size_kind, eff.reshape(-1)

    def step_size(self, p, state, group):
        """Hook: the per-coordinate step size array from parameter array p's state (None: lr)."""
        return None

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self):
        """{'state': {index: {name: value}}, 'param_groups': [...]} with parameters as indices.

        Indices count parameters across groups in order (PyTorch's layout); arrays are copies,
        so the checkpoint does not change when training goes on.
        """
        index, groups = {}, []
        for group in self.param_groups:
            packed = {k: v for k, v in group.items() if k != "params"}
            packed["params"] = []
            for p in group["params"]:
                index[id(p)] = len(index)
                packed["params"].append(index[id(p)])
            groups.append(packed)
        state = {index[id(p)]: {k: _copy(v) for k, v in s.items()}
                 for p, s in self.state.items() if s}
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict):
        """Restore hyperparameters and state from `state_dict()`, keeping the parameters.

        Array state is copied onto each parameter's device and dtype, so a resumed run continues
        exactly where the saved one stopped.
        """
        saved = state_dict["param_groups"]
        if len(saved) != len(self.param_groups):
            raise ValueError(f"loaded state dict has {len(saved)} parameter groups, "
                             f"this optimizer has {len(self.param_groups)}")
        by_index = {}
        for i, (s, g) in enumerate(zip(saved, self.param_groups)):
            if len(s["params"]) != len(g["params"]):
                raise ValueError(f"parameter group {i} of the loaded state dict has "
                                 f"{len(s['params'])} parameters, this optimizer's has "
                                 f"{len(g['params'])}")
            by_index.update(zip(s["params"], g["params"]))
        state = defaultdict(dict)
        for i, s in state_dict["state"].items():
            p = by_index[int(i)]
            state[p] = {k: _restore(k, v, p) for k, v in s.items()}
        groups = []
        for s, g in zip(saved, self.param_groups):
            group = {k: v for k, v in s.items() if k != "params"}
            group["params"] = g["params"]
            groups.append(group)
        self.state = state
        self.param_groups = groups


def l2_gradient(p, g, weight_decay):
    """g + weight_decay * p as a new array: L2 weight decay never changes the stored .grad."""
    out = backend.xp_of(p).multiply(p, weight_decay)
    out += g
    return out


def _copy(v):
    """A copy of a state value: arrays are copied, scalars are immutable already."""
    return v.copy() if backend.is_array(v) else v


def _restore(key, v, p):
    """State value v, saved for parameter p, as p's optimizer needs it now."""
    if key == "step":
        return int(v)
    if backend.is_array(v) or hasattr(v, "__array__"):
        dtype = p.data.dtype if backend.is_floating(v.dtype) else v.dtype
        return backend.as_array(v, dtype=dtype, device=p.device, copy=True)
    return v
