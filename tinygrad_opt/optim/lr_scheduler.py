"""Learning-rate schedules: each sets group['lr'] of an optimizer from a closed form in k.

As in PyTorch, a schedule's constructor records each group's starting lr as
group['initial_lr'] (the base lr) and sets lr to its value at k = 0; each `step()` advances k
by one. Call it once per optimizer step (or per epoch), after `optimizer.step()`.
"""
import math


class LRScheduler:
    """Base: subclasses give `lr_at(base_lr, k)`, the lr of a group at step k."""

    def __init__(self, optimizer, last_epoch=-1):
        self.optimizer = optimizer
        for group in optimizer.param_groups:
            if last_epoch == -1:
                group.setdefault("initial_lr", group["lr"])
            elif "initial_lr" not in group:
                raise KeyError("param 'initial_lr' is not set in a parameter group; resuming a "
                               "schedule (last_epoch != -1) needs the optimizer's state_dict")
        self.base_lrs = [group["initial_lr"] for group in optimizer.param_groups]
        self.last_epoch = last_epoch
        self.step()

    def lr_at(self, base_lr, k):
        raise NotImplementedError

    def get_lrs_at(self, k):
        """The lr of every group at step k."""
        return [self.lr_at(base, k) for base in self.base_lrs]

    def step(self):
        """Advance one step and write the new lr into every parameter group."""
        self.last_epoch += 1
        self._apply(self.get_lrs_at(self.last_epoch))

    def _apply(self, lrs):
        for group, lr in zip(self.optimizer.param_groups, lrs):
            group["lr"] = lr
        self._last_lr = list(lrs)

    def get_last_lr(self):
        """The lrs this schedule set last, one per parameter group."""
        return list(self._last_lr)

    def state_dict(self):
        """Everything but the optimizer (save the optimizer's own state_dict beside it)."""
        return {k: v for k, v in self.__dict__.items() if k != "optimizer"}

    def load_state_dict(self, state_dict):
        self.__dict__.update(state_dict)


class LinearDecay(LRScheduler):
    """The textbook decay (Goodfellow et al., eq. 8.14): lr_k = (1 - k/tau) lr_0 + (k/tau) lr_tau.

    tau = total_steps and lr_tau = final_lr; the lr stays at final_lr for k >= tau.
    final_lr may be one number for all groups or a list with one per group.
    """

    def __init__(self, optimizer, total_steps, final_lr, last_epoch=-1):
        if not total_steps > 0:
            raise ValueError(f"LinearDecay: total_steps must be positive, got {total_steps}")
        n = len(optimizer.param_groups)
        finals = list(final_lr) if isinstance(final_lr, (list, tuple)) else [final_lr] * n
        if len(finals) != n:
            raise ValueError(f"LinearDecay: {len(finals)} final_lr values for {n} groups")
        if any(f < 0 for f in finals):
            raise ValueError(f"LinearDecay: final_lr must be non-negative, got {final_lr}")
        self.total_steps = total_steps
        self.final_lrs = finals
        super().__init__(optimizer, last_epoch)

    def get_lrs_at(self, k):
        a = min(k, self.total_steps) / self.total_steps
        return [(1 - a) * base + a * final for base, final in zip(self.base_lrs, self.final_lrs)]


class StepLR(LRScheduler):
    """lr_k = base_lr * gamma ** (k // step_size): decay by gamma every step_size steps."""

    def __init__(self, optimizer, step_size, gamma=0.1, last_epoch=-1):
        if not (isinstance(step_size, int) and step_size > 0):
            raise ValueError(f"StepLR: step_size must be a positive integer, got {step_size}")
        self.step_size, self.gamma = step_size, gamma
        super().__init__(optimizer, last_epoch)

    def lr_at(self, base_lr, k):
        return base_lr * self.gamma ** (k // self.step_size)


class ExponentialLR(LRScheduler):
    """lr_k = base_lr * gamma ** k."""

    def __init__(self, optimizer, gamma, last_epoch=-1):
        self.gamma = gamma
        super().__init__(optimizer, last_epoch)

    def lr_at(self, base_lr, k):
        return base_lr * self.gamma ** k


class CosineAnnealingLR(LRScheduler):
    """lr_k = eta_min + (base_lr - eta_min) (1 + cos(pi k / T_max)) / 2 (Loshchilov & Hutter, 2017).

    The closed form: it reaches eta_min at k = T_max and, past it, rises again along the cosine,
    as PyTorch's schedule does.
    """

    def __init__(self, optimizer, T_max, eta_min=0, last_epoch=-1):
        if not T_max > 0:
            raise ValueError(f"CosineAnnealingLR: T_max must be positive, got {T_max}")
        self.T_max, self.eta_min = T_max, eta_min
        super().__init__(optimizer, last_epoch)

    def lr_at(self, base_lr, k):
        cos = math.cos(math.pi * k / self.T_max)
        return self.eta_min + (base_lr - self.eta_min) * (1 + cos) / 2


class LinearWarmup(LRScheduler):
    """lr_k = base_lr (k + 1) / warmup_steps for k < warmup_steps, then the schedule `after`.

    The first step already moves (lr = base_lr / warmup_steps) and the last warm-up step uses
    base_lr. From k = warmup_steps on, `after` (a schedule built on the same optimizer, e.g.
    CosineAnnealingLR) runs from its own step 0; without it the lr stays at base_lr.
    Step only the warm-up schedule; it drives `after`.
    """

    def __init__(self, optimizer, warmup_steps, after=None, last_epoch=-1):
        if not (isinstance(warmup_steps, int) and warmup_steps > 0):
            raise ValueError(f"LinearWarmup: warmup_steps must be a positive integer, "
                             f"got {warmup_steps}")
        if after is not None and after.optimizer is not optimizer:
            raise ValueError("LinearWarmup: `after` must schedule the same optimizer")
        self.warmup_steps, self.after = warmup_steps, after
        super().__init__(optimizer, last_epoch)

    def get_lrs_at(self, k):
        if k < self.warmup_steps:
            return [base * (k + 1) / self.warmup_steps for base in self.base_lrs]
        if self.after is None:
            return list(self.base_lrs)
        self.after.last_epoch = k - self.warmup_steps
        lrs = self.after.get_lrs_at(self.after.last_epoch)
        self.after._last_lr = list(lrs)
        return lrs

    def state_dict(self):
        state = super().state_dict()
        if self.after is not None:
            state["after"] = self.after.state_dict()
        return state

    def load_state_dict(self, state_dict):
        state = dict(state_dict)
        after = state.pop("after", None)
        super().load_state_dict(state)
        if after is not None:
            self.after.load_state_dict(after)
