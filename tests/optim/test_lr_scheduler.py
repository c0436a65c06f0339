"""Learning-rate schedules against their closed forms."""
import math

import numpy as np
import pytest

from tinygrad_opt import Tensor
from tinygrad_opt.optim import SGD, Adam, textbook
from tinygrad_opt.optim.lr_scheduler import (CosineAnnealingLR, ExponentialLR, LinearDecay,
                                             LinearWarmup, StepLR)


def make_opt(lr=0.1, second_lr=None):
    x = Tensor(np.ones(2), requires_grad=True)
    if second_lr is None:
        return SGD([x], lr=lr)
    y = Tensor(np.ones(2), requires_grad=True)
    return SGD([{"params": [x]}, {"params": [y], "lr": second_lr}], lr=lr)


def lrs(sched, n):
    """lr of group 0 at k = 0 .. n-1 (the constructor sets k = 0)."""
    out = [sched.optimizer.param_groups[0]["lr"]]
    for _ in range(n - 1):
        sched.optimizer.step()
        sched.step()
        out.append(sched.optimizer.param_groups[0]["lr"])
    return out


def test_linear_decay_is_the_textbook_formula_then_constant():
    # eps_k = (1 - k/tau) eps_0 + (k/tau) eps_tau, constant after tau
    sched = LinearDecay(make_opt(0.1), total_steps=4, final_lr=0.02)
    assert lrs(sched, 7) == pytest.approx([0.1, 0.08, 0.06, 0.04, 0.02, 0.02, 0.02], rel=1e-14)


def test_linear_decay_per_group_final_lr():
    opt = make_opt(0.1, second_lr=1.0)
    sched = LinearDecay(opt, total_steps=2, final_lr=[0.0, 0.5])
    sched.step()
    assert sched.get_last_lr() == pytest.approx([0.05, 0.75])
    with pytest.raises(ValueError, match="2 final_lr values for 1 groups"):
        LinearDecay(make_opt(), total_steps=2, final_lr=[0.1, 0.2])


def test_step_lr():
    sched = StepLR(make_opt(1.0), step_size=3, gamma=0.5)
    assert lrs(sched, 8) == pytest.approx([1, 1, 1, 0.5, 0.5, 0.5, 0.25, 0.25], rel=1e-14)


def test_exponential_lr():
    sched = ExponentialLR(make_opt(2.0), gamma=0.9)
    assert lrs(sched, 5) == pytest.approx([2.0 * 0.9 ** k for k in range(5)], rel=1e-14)


def test_cosine_annealing_closed_form():
    sched = CosineAnnealingLR(make_opt(1.0), T_max=4, eta_min=0.2)
    # 0.2 + 0.8 (1 + cos(pi k/4))/2 at k = 0..4: 1, 0.2 + 0.4 (1 + 1/sqrt 2), 0.6, ..., 0.2
    h = 0.4 * (1 + 1 / math.sqrt(2))
    expected = [1.0, 0.2 + h, 0.6, 0.2 + 0.8 - h, 0.2, 0.2 + 0.8 - h]
    assert lrs(sched, 6) == pytest.approx(expected, rel=1e-14)


def test_linear_warmup_alone():
    sched = LinearWarmup(make_opt(0.4), warmup_steps=4)
    assert lrs(sched, 6) == pytest.approx([0.1, 0.2, 0.3, 0.4, 0.4, 0.4], rel=1e-14)


def test_linear_warmup_hands_over_to_cosine():
    opt = make_opt(1.0)
    sched = LinearWarmup(opt, warmup_steps=2, after=CosineAnnealingLR(opt, T_max=2))
    assert lrs(sched, 6) == pytest.approx([0.5, 1.0, 1.0, 0.5, 0.0, 0.5], abs=1e-15)
    assert sched.after.last_epoch == 3 and sched.after.get_last_lr() == pytest.approx([0.5])


def test_warmup_after_must_share_the_optimizer():
    with pytest.raises(ValueError, match="same optimizer"):
        LinearWarmup(make_opt(), 3, after=StepLR(make_opt(), 2))


def test_initial_lr_and_base_lrs_per_group():
    opt = make_opt(0.1, second_lr=0.3)
    sched = ExponentialLR(opt, gamma=0.5)
    assert [g["initial_lr"] for g in opt.param_groups] == [0.1, 0.3]
    assert sched.base_lrs == [0.1, 0.3]
    sched.step()
    assert sched.get_last_lr() == pytest.approx([0.05, 0.15])
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.05, 0.15])


def test_resume_needs_initial_lr():
    with pytest.raises(KeyError, match="initial_lr"):
        StepLR(make_opt(), step_size=2, last_epoch=3)


@pytest.mark.parametrize("make", [
    lambda o: LinearDecay(o, 5, 0.01),
    lambda o: StepLR(o, 2, 0.5),
    lambda o: ExponentialLR(o, 0.9),
    lambda o: CosineAnnealingLR(o, 6, 0.01),
    lambda o: LinearWarmup(o, 3, after=CosineAnnealingLR(o, 6)),
])
def test_state_dict_round_trip(make):
    opt = make_opt(0.1)
    sched = make(opt)
    for _ in range(4):
        sched.step()
    saved_sched, saved_opt = sched.state_dict(), opt.state_dict()
    expected = lrs(sched, 6)

    opt2 = make_opt(0.5)
    sched2 = make(opt2)
    opt2.load_state_dict(saved_opt)
    sched2.load_state_dict(saved_sched)
    assert lrs(sched2, 6) == expected


def test_schedule_drives_adam_and_textbook_sgd():
    for opt in (Adam([Tensor(np.ones(1), requires_grad=True)], lr=0.2),
                textbook.SGD([Tensor(np.ones(1), requires_grad=True)], lr=0.2)):
        sched = StepLR(opt, step_size=1, gamma=0.5)
        sched.step()
        assert opt.param_groups[0]["lr"] == 0.1
