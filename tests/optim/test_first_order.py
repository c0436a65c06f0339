"""SGD, Adagrad, RMSprop, Adam and AdamW against update sequences written out from the formulas.

The problem is f(x) = 0.5 * sum(a * x^2), so g = a * x; each reference below runs the
optimizer's formula one coordinate at a time in plain Python floats.
"""
import math

import numpy as np
import pytest

from tinygrad_opt import Tensor
from tinygrad_opt.optim import SGD, Adagrad, Adam, AdamW, RMSprop

A = [1.0, 4.0, 0.25]
X0 = [1.0, -2.0, 0.5]
STEPS = 4


def run(make_opt, steps=STEPS, x0=X0, a=A, dtype=np.float64):
    """Parameter values after each of `steps` optimizer steps on 0.5 * sum(a x^2)."""
    x = Tensor(np.array(x0, dtype=dtype), requires_grad=True)
    a_t = Tensor(np.array(a, dtype=dtype))
    opt = make_opt([x])
    out = []
    for _ in range(steps):
        opt.zero_grad()
        loss = (0.5 * a_t * x * x).sum()
        loss.backward()
        opt.step()
        out.append(x.numpy())
    return np.array(out), opt


def reference(rule, steps=STEPS):
    """Trajectory of the per-coordinate rule(x, g, state, k) -> new x, k = 1, 2, ..."""
    out, xs = [], list(X0)
    states = [{} for _ in xs]
    for k in range(1, steps + 1):
        xs = [rule(x, a * x, s, k) for x, a, s in zip(xs, A, states)]
        out.append(list(xs))
    return np.array(out)


def close(actual, expected):
    np.testing.assert_allclose(actual, expected, rtol=1e-12, atol=1e-15)


# ---------------------------------------------------------------- SGD
def test_sgd_plain_by_hand():
    # f = x^2 (a = 2), lr = 0.1: x <- x - 0.1 * 2x = 0.8 x
    traj, _ = run(lambda p: SGD(p, lr=0.1), steps=3, x0=[1.0], a=[2.0])
    close(traj[:, 0], [0.8, 0.64, 0.512])


def test_plain_sgd_group_loop_skips_missing_grads_and_keeps_no_state():
    """Plain SGD updates a whole group in one loop: a parameter without a gradient stays put,
    two groups keep their own lr, and there is no state to save."""
    x = Tensor(np.array([1.0, -2.0]), requires_grad=True)
    y = Tensor(np.array([3.0]), requires_grad=True)
    z = Tensor(np.array([5.0]), requires_grad=True)
    opt = SGD([{"params": [x, y]}, {"params": [z], "lr": 0.5}], lr=0.1)
    ((x * x).sum() + (z * z).sum()).backward()      # y gets no gradient
    opt.step()
    close(x.numpy(), [0.8, -1.6])
    close(y.numpy(), [3.0])
    close(z.numpy(), [0.0])
    assert opt.state_dict()["state"] == {}


def test_sgd_momentum_by_hand():
    # f = x^2, lr = 0.1, mu = 0.5: b1 = 2, x1 = 0.8; b2 = 0.5*2 + 1.6 = 2.6, x2 = 0.54;
    # b3 = 1.3 + 1.08 = 2.38, x3 = 0.302
    traj, opt = run(lambda p: SGD(p, lr=0.1, momentum=0.5), steps=3, x0=[1.0], a=[2.0])
    close(traj[:, 0], [0.8, 0.54, 0.302])
    close(next(iter(opt.state.values()))["momentum_buffer"], [2.38])


@pytest.mark.parametrize("mu,damp,nesterov,wd", [
    (0.9, 0.0, False, 0.0), (0.9, 0.3, False, 0.1), (0.8, 0.0, True, 0.0), (0.8, 0.0, True, 0.05),
    (0.0, 0.0, False, 0.2)])
def test_sgd_against_formula(mu, damp, nesterov, wd):
    lr = 0.05

    def rule(x, g, s, k):
        g = g + wd * x
        if mu:
            s["b"] = g if k == 1 else mu * s["b"] + (1 - damp) * g
            g = g + mu * s["b"] if nesterov else s["b"]
        return x - lr * g

    traj, _ = run(lambda p: SGD(p, lr=lr, momentum=mu, dampening=damp, nesterov=nesterov,
                                weight_decay=wd))
    close(traj, reference(rule))


# ---------------------------------------------------------------- Adagrad
@pytest.mark.parametrize("wd,lr_decay,init", [(0.0, 0.0, 0.0), (0.1, 0.2, 0.5)])
def test_adagrad_against_formula(wd, lr_decay, init):
    lr, eps = 0.3, 1e-10

    def rule(x, g, s, k):
        g = g + wd * x
        s["sum"] = s.get("sum", init) + g * g
        lr_k = lr / (1 + (k - 1) * lr_decay)
        return x - lr_k * g / (math.sqrt(s["sum"]) + eps)

    traj, opt = run(lambda p: Adagrad(p, lr=lr, weight_decay=wd, lr_decay=lr_decay,
                                      initial_accumulator_value=init))
    close(traj, reference(rule))
    assert next(iter(opt.state.values()))["step"] == STEPS


def test_adagrad_first_step_by_hand():
    # sum = g^2, so the first step is lr * g/(|g| + eps) = lr * sign(g) up to eps
    traj, _ = run(lambda p: Adagrad(p, lr=0.1, eps=0.0), steps=1)
    close(traj[0], np.array(X0) - 0.1 * np.sign(X0))


# ---------------------------------------------------------------- RMSprop
@pytest.mark.parametrize("centered,mu,wd", [
    (False, 0.0, 0.0), (True, 0.0, 0.0), (False, 0.9, 0.0), (True, 0.7, 0.1), (False, 0.0, 0.1)])
def test_rmsprop_against_formula(centered, mu, wd):
    lr, alpha, eps = 0.01, 0.9, 1e-6

    def rule(x, g, s, k):
        g = g + wd * x
        s["v"] = alpha * s.get("v", 0.0) + (1 - alpha) * g * g
        if centered:
            s["m"] = alpha * s.get("m", 0.0) + (1 - alpha) * g
            d = math.sqrt(s["v"] - s["m"] ** 2) + eps
        else:
            d = math.sqrt(s["v"]) + eps
        if mu:
            s["b"] = mu * s.get("b", 0.0) + g / d
            return x - lr * s["b"]
        return x - lr * g / d

    traj, opt = run(lambda p: RMSprop(p, lr=lr, alpha=alpha, eps=eps, momentum=mu,
                                      centered=centered, weight_decay=wd))
    close(traj, reference(rule))
    state = next(iter(opt.state.values()))
    assert ("grad_avg" in state) == centered and ("momentum_buffer" in state) == (mu > 0)


def test_rmsprop_first_step_by_hand():
    # v1 = (1 - alpha) g^2, so x1 = x0 - lr * g / (sqrt(1 - alpha)|g| + eps)
    traj, _ = run(lambda p: RMSprop(p, lr=0.01, alpha=0.99, eps=0.0), steps=1)
    close(traj[0], np.array(X0) - 0.01 * np.sign(X0) / math.sqrt(0.01))


# ---------------------------------------------------------------- Adam / AdamW
def adam_rule(lr, b1, b2, eps, wd=0.0, decoupled=False, amsgrad=False):
    def rule(x, g, s, k):
        if decoupled:
            x = x * (1 - lr * wd)
        else:
            g = g + wd * x
        s["m"] = b1 * s.get("m", 0.0) + (1 - b1) * g
        s["v"] = b2 * s.get("v", 0.0) + (1 - b2) * g * g
        s["vmax"] = max(s.get("vmax", 0.0), s["v"])
        v = s["vmax"] if amsgrad else s["v"]
        m_hat = s["m"] / (1 - b1 ** k)
        v_hat = v / (1 - b2 ** k)
        return x - lr * m_hat / (math.sqrt(v_hat) + eps)
    return rule


@pytest.mark.parametrize("betas,wd,amsgrad", [
    ((0.9, 0.999), 0.0, False), ((0.8, 0.9), 0.1, False), ((0.9, 0.5), 0.0, True),
    ((0.5, 0.6), 0.05, True)])
def test_adam_against_formula(betas, wd, amsgrad):
    lr, eps = 0.1, 1e-8
    traj, opt = run(lambda p: Adam(p, lr=lr, betas=betas, eps=eps, weight_decay=wd,
                                   amsgrad=amsgrad), steps=6)
    close(traj, reference(adam_rule(lr, *betas, eps, wd, amsgrad=amsgrad), steps=6))
    state = next(iter(opt.state.values()))
    assert state["step"] == 6
    if amsgrad:     # the case must exercise the maximum: v has fallen below its past peak
        assert np.any(state["max_exp_avg_sq"] > state["exp_avg_sq"])


def test_adam_first_step_by_hand():
    # m^ = g and v^ = g^2 after one step, so theta moves by lr * g/(|g| + eps)
    traj, _ = run(lambda p: Adam(p, lr=0.1, eps=1e-8), steps=1)
    g = np.array(A) * np.array(X0)
    close(traj[0], np.array(X0) - 0.1 * g / (np.abs(g) + 1e-8))


@pytest.mark.parametrize("amsgrad", [False, True])
def test_adamw_against_formula(amsgrad):
    lr, betas, eps, wd = 0.05, (0.9, 0.8), 1e-8, 0.3
    traj, _ = run(lambda p: AdamW(p, lr=lr, betas=betas, eps=eps, weight_decay=wd,
                                  amsgrad=amsgrad), steps=5)
    close(traj, reference(adam_rule(lr, *betas, eps, wd, decoupled=True, amsgrad=amsgrad),
                          steps=5))


def test_adamw_default_decay_differs_from_adam():
    adamw, _ = run(lambda p: AdamW(p, lr=0.1), steps=2)
    adam, _ = run(lambda p: Adam(p, lr=0.1), steps=2)
    # step 1 of AdamW: x (1 - lr*0.01) - lr * sign(g) (up to eps)
    close(adamw[0], np.array(X0) * (1 - 0.1 * 0.01) - 0.1 * np.sign(X0) * (1 - 1e-8 / np.abs(
        np.array(A) * np.array(X0))))
    assert not np.allclose(adamw, adam)


# ---------------------------------------------------------------- shared behaviour
ALL = [
    lambda p: SGD(p, lr=0.01, momentum=0.9, weight_decay=0.1),
    lambda p: SGD(p, lr=0.01, momentum=0.9, nesterov=True),
    lambda p: Adagrad(p, lr=0.1, weight_decay=0.1),
    lambda p: RMSprop(p, lr=0.01, momentum=0.5, centered=True, weight_decay=0.1),
    lambda p: Adam(p, lr=0.01, weight_decay=0.1, amsgrad=True),
    lambda p: AdamW(p, lr=0.01, amsgrad=True),
]


@pytest.mark.parametrize("make_opt", ALL)
def test_float32_stays_float32(make_opt):
    traj, opt = run(make_opt, dtype=np.float32)
    assert traj.dtype == np.float32
    for state in opt.state.values():
        for k, v in state.items():
            if k != "step":
                assert v.dtype == np.float32, k


@pytest.mark.parametrize("make_opt", ALL)
def test_weight_decay_leaves_grad_alone(make_opt):
    x = Tensor(np.array(X0), requires_grad=True)
    g = np.array([0.5, -1.0, 2.0])
    x.grad = Tensor(g.copy())
    make_opt([x]).step()
    np.testing.assert_array_equal(x.grad.numpy(), g)


def test_param_groups_use_their_own_lr():
    x = Tensor(np.array([1.0]), requires_grad=True)
    y = Tensor(np.array([1.0]), requires_grad=True)
    opt = SGD([{"params": [x]}, {"params": [y], "lr": 0.5}], lr=0.1)
    x.grad = Tensor(np.array([1.0]))
    y.grad = Tensor(np.array([1.0]))
    opt.step()
    close(x.numpy(), [0.9])
    close(y.numpy(), [0.5])


def test_parameter_without_grad_is_skipped():
    x = Tensor(np.array([1.0]), requires_grad=True)
    y = Tensor(np.array([1.0]), requires_grad=True)
    opt = Adam([x, y], lr=0.1)
    x.grad = Tensor(np.array([1.0]))
    opt.step()
    close(y.numpy(), [1.0])
    assert y not in opt.state and x in opt.state


# ---------------------------------------------------------------- convergence
# f(x) = 0.5 x^T H x with H = R diag(1, 50) R^T (condition number 50, rotated axes).
_R = np.array([[math.cos(0.5), -math.sin(0.5)], [math.sin(0.5), math.cos(0.5)]])
_H = _R @ np.diag([1.0, 50.0]) @ _R.T


@pytest.mark.parametrize("make_opt,steps", [
    (lambda p: SGD(p, lr=0.035), 500),
    (lambda p: SGD(p, lr=0.02, momentum=0.7), 300),
    (lambda p: SGD(p, lr=0.02, momentum=0.7, nesterov=True), 300),
    (lambda p: Adagrad(p, lr=2.0), 1000),
    (lambda p: RMSprop(p, lr=0.003, momentum=0.5, centered=True), 1500),
    (lambda p: Adam(p, lr=0.1), 1500),
    (lambda p: AdamW(p, lr=0.1, weight_decay=0.0, amsgrad=True), 1500),
])
def test_converges_on_ill_conditioned_quadratic(make_opt, steps):
    x = Tensor(np.array([3.0, -2.0]), requires_grad=True)
    H = Tensor(_H)
    opt = make_opt([x])

    def loss():
        return 0.5 * (x * (H @ x)).sum()
    f0 = loss().item()
    for _ in range(steps):
        opt.step(loss)
    assert loss().item() < 1e-8 * f0
