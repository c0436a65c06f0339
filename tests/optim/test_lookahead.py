"""Lookahead: the slow/fast sequence worked by hand, shared groups, checkpoints."""
import numpy as np
import pytest

from tinygrad_opt import Tensor
from tinygrad_opt.optim import SGD, Adam, Lookahead, lr_scheduler

from resume import assert_resume_bit_identical, trajectory
from conftest import CUDA


def run(opt, x, steps):
    out = []
    for _ in range(steps):
        opt.zero_grad()
        (x * x).sum().backward()
        opt.step()
        out.append(x.numpy())
    return np.array(out)


def test_lookahead_by_hand():
    # f = x^2, SGD lr = 0.1: fast step x <- 0.8 x. k = 2, alpha = 0.5, x0 = phi0 = 1:
    # x1 = 0.8; x2 = 0.64 -> phi = 1 + 0.5*(0.64 - 1) = 0.82 = x2;
    # x3 = 0.656; x4 = 0.5248 -> phi = 0.82 + 0.5*(0.5248 - 0.82) = 0.6724 = x4; x5 = 0.53792
    x = Tensor(np.array([1.0]), requires_grad=True)
    opt = Lookahead(SGD([x], lr=0.1), k=2, alpha=0.5)
    traj = run(opt, x, 5)
    np.testing.assert_allclose(traj[:, 0], [0.8, 0.82, 0.656, 0.6724, 0.53792], rtol=1e-14)
    np.testing.assert_allclose(opt.state[x]["slow_buffer"], [0.6724], rtol=1e-14)


def test_lookahead_alpha_one_is_the_base_optimizer_and_k_one_alpha_half_halves_steps():
    x, y = (Tensor(np.array([1.0, -3.0]), requires_grad=True) for _ in range(2))
    a = run(Lookahead(Adam([x], lr=0.1), k=3, alpha=1.0), x, 7)
    b = run(Adam([y], lr=0.1), y, 7)
    np.testing.assert_allclose(a, b, rtol=1e-14)
    # k = 1: theta <- theta + alpha * (SGD step): SGD with lr * alpha
    x, y = (Tensor(np.array([1.0, -3.0]), requires_grad=True) for _ in range(2))
    np.testing.assert_allclose(run(Lookahead(SGD([x], lr=0.1), k=1, alpha=0.5), x, 4),
                               run(SGD([y], lr=0.05), y, 4), rtol=1e-14)


def test_lookahead_shares_the_base_groups_so_schedulers_act_on_both():
    x = Tensor(np.array([1.0]), requires_grad=True)
    base = SGD([x], lr=0.1)
    opt = Lookahead(base)
    assert opt.param_groups is base.param_groups
    sched = lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    run(opt, x, 1)
    sched.step()
    assert base.param_groups[0]["lr"] == 0.05
    y = Tensor(np.array([1.0, 2.0]), requires_grad=True)
    adam = Adam([y], lr=0.1)
    wrapped = Lookahead(adam)
    run(wrapped, y, 2)
    np.testing.assert_array_equal(wrapped.effective_step_size()[0], adam.effective_step_size()[0])


def test_lookahead_resume_is_bit_identical():
    # 3 steps before the checkpoint, 4 after: a slow update (k=3) falls on each side
    assert_resume_bit_identical(lambda p: Lookahead(Adam(p, lr=0.01), k=3, alpha=0.6))
    sd = Lookahead(SGD([Tensor(np.zeros(1), requires_grad=True)], lr=0.1), k=4).state_dict()
    assert sd["wrapper"] == {"k": 4, "alpha": 0.5, "lookahead_step": 0}


@pytest.mark.parametrize("kwargs,match", [(dict(k=0), "k"), (dict(alpha=1.5), "alpha")])
def test_lookahead_rejects_bad_hyperparameters(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Lookahead(SGD([Tensor(np.zeros(2), requires_grad=True)], lr=0.1), **kwargs)


def test_lookahead_needs_an_optimizer_instance():
    with pytest.raises(TypeError, match="optimizer instance"):
        Lookahead([Tensor(np.zeros(2), requires_grad=True)])


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="CuPy with a CUDA GPU is not available")
def test_lookahead_on_gpu_follows_the_cpu_rule(monkeypatch):
    make = lambda p: Lookahead(SGD(p, lr=0.1, momentum=0.9), k=2)     # noqa: E731
    for a, b in zip(trajectory(make, 5), trajectory(make, 5, device="cuda")):
        for x, y in zip(a, b):
            np.testing.assert_allclose(y, x, rtol=1e-12, atol=1e-12)
    from test_no_host_transfer import no_host_transfers
    from resume import mlp_problem, take_step
    model, closure = mlp_problem(device="cuda")
    opt = Lookahead(SGD(model.parameters(), lr=0.1, momentum=0.9), k=1)
    take_step(opt, closure)
    with no_host_transfers(monkeypatch):
        take_step(opt, closure)
