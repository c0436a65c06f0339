"""The Optimizer base: parameter groups, validation, closures, zero_grad and state_dict."""
import math

import numpy as np
import pytest

from tinygrad_opt import Tensor
from tinygrad_opt.optim import (LBFGS, SGD, Adagrad, Adam, AdamW, ConjugateGradient, Newton,
                                NewtonCG, Optimizer, RMSprop, textbook)


def param(values=(1.0, -2.0, 0.5)):
    return Tensor(np.array(values, dtype=np.float64), requires_grad=True)


# ---------------------------------------------------------------- construction errors
def test_empty_parameter_list():
    with pytest.raises(ValueError, match="empty parameter list"):
        SGD([], lr=0.1)
    with pytest.raises(ValueError, match="empty parameter list"):
        Adam(iter([]))


def test_single_tensor_instead_of_iterable():
    with pytest.raises(TypeError, match="iterable of Tensors or dicts"):
        SGD(param(), lr=0.1)


def test_non_tensor_parameter():
    with pytest.raises(TypeError, match="parameter 1 is a ndarray"):
        SGD([param(), np.ones(3)], lr=0.1)


def test_parameter_that_does_not_require_grad():
    with pytest.raises(ValueError, match="does not require grad"):
        SGD([Tensor(np.ones(3))], lr=0.1)


def test_duplicate_parameter_in_one_group():
    x = param()
    with pytest.raises(ValueError, match="appears more than once"):
        SGD([x, x], lr=0.1)


def test_duplicate_parameter_across_groups():
    x, y = param(), param()
    with pytest.raises(ValueError, match="appears more than once"):
        SGD([{"params": [x, y]}, {"params": [x]}], lr=0.1)
    opt = SGD([x], lr=0.1)
    with pytest.raises(ValueError, match="appears more than once"):
        opt.add_param_group({"params": [y, x]})


def test_set_of_parameters_is_rejected():
    with pytest.raises(TypeError, match="ordered collection"):
        SGD([{"params": {param()}}], lr=0.1)


@pytest.mark.parametrize("make,match", [
    (lambda p: SGD(p, lr=-0.1), r"Invalid learning rate: -0\.1"),
    (lambda p: Adam(p, lr=-0.1), r"Invalid learning rate: -0\.1"),
    (lambda p: SGD(p, lr=0.1, momentum=-0.5), r"Invalid momentum value: -0\.5"),
    (lambda p: SGD(p, lr=0.1, weight_decay=-1e-4), r"Invalid weight_decay value: -0\.0001"),
    (lambda p: Adam(p, eps=-1e-8), r"Invalid epsilon value: -1e-08"),
    (lambda p: Adam(p, betas=(1.0, 0.999)), r"Invalid beta parameter at index 0: 1\.0"),
    (lambda p: AdamW(p, betas=(0.9, -0.1)), r"Invalid beta parameter at index 1: -0\.1"),
    (lambda p: Adam(p, weight_decay=-0.1), r"Invalid weight_decay value: -0\.1"),
    (lambda p: RMSprop(p, alpha=-0.5), r"Invalid alpha value: -0\.5"),
    (lambda p: RMSprop(p, momentum=-0.1), r"Invalid momentum value: -0\.1"),
    (lambda p: Adagrad(p, lr_decay=-1.0), r"Invalid lr_decay value: -1\.0"),
    (lambda p: Adagrad(p, initial_accumulator_value=-1.0), r"Invalid initial_accumulator_value"),
    (lambda p: SGD(p, lr=0.1, nesterov=True), "Nesterov momentum requires momentum > 0"),
    (lambda p: SGD(p, lr=0.1, momentum=0.9, dampening=0.1, nesterov=True),
     "zero|dampening = 0"),
    (lambda p: textbook.Momentum(p, lr=0.1, alpha=1.0), r"Invalid alpha value: 1\.0"),
    (lambda p: textbook.RMSProp(p, rho=1.5), r"Invalid rho value: 1\.5"),
])
def test_invalid_hyperparameters(make, match):
    with pytest.raises(ValueError, match=match):
        make([param()])


NAN = float("nan")


@pytest.mark.parametrize("make,match", [
    (lambda p: SGD(p, lr=NAN), "Invalid learning rate: nan"),
    (lambda p: SGD(p, lr=0.1, momentum=NAN), "Invalid momentum value: nan"),
    (lambda p: SGD(p, lr=0.1, dampening=NAN), "Invalid dampening value: nan"),
    (lambda p: SGD(p, lr=0.1, weight_decay=NAN), "Invalid weight_decay value: nan"),
    (lambda p: Adam(p, lr=NAN), "Invalid learning rate: nan"),
    (lambda p: Adam(p, eps=NAN), "Invalid epsilon value: nan"),
    (lambda p: Adam(p, betas=(NAN, 0.999)), "Invalid beta parameter at index 0: nan"),
    (lambda p: AdamW(p, weight_decay=NAN), "Invalid weight_decay value: nan"),
    (lambda p: RMSprop(p, alpha=NAN), "Invalid alpha value: nan"),
    (lambda p: Adagrad(p, lr_decay=NAN), "Invalid lr_decay value: nan"),
    (lambda p: Adagrad(p, initial_accumulator_value=NAN), "Invalid initial_accumulator_value"),
    (lambda p: textbook.Adam(p, delta=NAN), "Invalid delta value: nan"),
    (lambda p: textbook.Momentum(p, lr=0.1, alpha=NAN), "Invalid alpha value: nan"),
    (lambda p: LBFGS(p, lr=NAN), "Invalid learning rate: nan"),
    (lambda p: ConjugateGradient(p, lr=NAN), "Invalid learning rate: nan"),
    (lambda p: Newton(p, damping=NAN), "Invalid damping: nan"),
    (lambda p: NewtonCG(p, lr=NAN), "Invalid learning rate: nan"),
    (lambda p: SGD(p, lr=float("inf")), None),          # inf is a (useless) valid number
])
def test_nan_hyperparameters_are_rejected(make, match):
    if match is None:
        make([param()])
        return
    with pytest.raises(ValueError, match=match):
        make([param()])


def test_invalid_hyperparameter_in_a_later_group():
    with pytest.raises(ValueError, match=r"Invalid learning rate: -1"):
        SGD([{"params": [param()]}, {"params": [param()], "lr": -1}], lr=0.1)


# ---------------------------------------------------------------- groups and state
def test_param_groups_fill_in_defaults():
    x, y = param(), param()
    opt = Adam([{"params": [x]}, {"params": y, "lr": 0.5, "betas": (0.5, 0.6)}], lr=0.1)
    g0, g1 = opt.param_groups
    assert g0["params"] == [x] and g0["lr"] == 0.1 and g0["betas"] == (0.9, 0.999)
    assert g1["params"] == [y] and g1["lr"] == 0.5 and g1["betas"] == (0.5, 0.6)
    assert g1["eps"] == 1e-8 and g1["amsgrad"] is False


def test_add_param_group_joins_the_loop():
    x, y = param(), param()
    opt = SGD([x], lr=0.1)
    opt.add_param_group({"params": [y], "lr": 1.0})
    x.grad = Tensor(np.ones(3))
    y.grad = Tensor(np.ones(3))
    opt.step()
    np.testing.assert_allclose(x.numpy(), [0.9, -2.1, 0.4])
    np.testing.assert_allclose(y.numpy(), [0.0, -3.0, -0.5])


def test_state_is_keyed_by_the_tensor():
    x, y = param(), param()
    opt = SGD([x, y], lr=0.1, momentum=0.9)
    x.grad = Tensor(np.ones(3))
    y.grad = Tensor(2 * np.ones(3))
    opt.step()
    np.testing.assert_array_equal(opt.state[x]["momentum_buffer"], np.ones(3))
    np.testing.assert_array_equal(opt.state[y]["momentum_buffer"], 2 * np.ones(3))


def test_zero_grad_sets_none():
    x = param()
    x.grad = Tensor(np.ones(3))
    opt = SGD([x], lr=0.1)
    opt.zero_grad()
    assert x.grad is None


def test_closure_zeroes_grads_then_backpropagates():
    x = param([3.0])
    x.grad = Tensor(np.array([100.0]))       # stale: the closure step must discard it
    opt = SGD([x], lr=0.25)
    loss = opt.step(lambda: (x * x).sum())   # returns the loss; no backward inside
    assert loss.item() == 9.0
    np.testing.assert_allclose(x.numpy(), [3.0 - 0.25 * 6.0])
    np.testing.assert_allclose(x.grad.numpy(), [6.0])


def test_step_without_closure_returns_none_and_still_updates():
    x = param()
    x.grad = Tensor(np.ones(3))
    before = x.numpy()
    assert Adam([x], lr=0.1).step() is None
    # Adam's first step: m_hat = g, v_hat = g^2, so every coordinate moves by lr / (1 + eps)
    np.testing.assert_allclose(x.numpy(), before - 0.1 / (1 + 1e-8), rtol=1e-14)
    assert x.grad is not None                      # step() without a closure keeps .grad


def test_zero_grad_set_to_none_false_zeroes_in_place():
    x, y = param(), param()
    x.grad = Tensor(np.ones(3))
    buf = x.grad.data
    opt = SGD([x, y], lr=0.1)
    opt.zero_grad(set_to_none=False)
    assert x.grad.data is buf and np.all(buf == 0)        # same array, zeroed
    assert y.grad is None                                  # no gradient stays None
    opt.zero_grad(set_to_none=True)
    assert x.grad is None


def test_zero_grad_in_place_detaches_a_create_graph_gradient():
    x = param()
    (x * x * x).sum().backward(create_graph=True)
    assert x.grad.requires_grad
    SGD([x], lr=0.1).zero_grad(set_to_none=False)
    assert not x.grad.requires_grad and np.all(x.grad.numpy() == 0)


def test_base_class_needs_update():
    x = param()
    x.grad = Tensor(np.ones(3))
    with pytest.raises(NotImplementedError, match="update"):
        Optimizer([x], {"lr": 0.1}).step()


def test_repr_lists_hyperparameters():
    text = repr(SGD([param()], lr=0.1, momentum=0.9))
    assert "SGD" in text and "momentum: 0.9" in text and "lr: 0.1" in text


# ---------------------------------------------------------------- state_dict
def test_state_dict_layout():
    x, y, z = param(), param(), param()
    opt = Adam([{"params": [x, y]}, {"params": [z], "lr": 0.5}], lr=0.1)
    for p in (x, z):
        p.grad = Tensor(np.ones(3))
    opt.step()
    sd = opt.state_dict()
    assert [g["params"] for g in sd["param_groups"]] == [[0, 1], [2]]
    assert sd["param_groups"][1]["lr"] == 0.5
    assert sorted(sd["state"]) == [0, 2]            # y never had a gradient
    assert sd["state"][0]["step"] == 1
    assert set(sd["state"][2]) == {"step", "exp_avg", "exp_avg_sq"}


def test_state_dict_holds_copies():
    x = param()
    opt = SGD([x], lr=0.1, momentum=0.9)
    x.grad = Tensor(np.ones(3))
    opt.step()
    sd = opt.state_dict()
    saved = sd["state"][0]["momentum_buffer"].copy()
    opt.step()
    np.testing.assert_array_equal(sd["state"][0]["momentum_buffer"], saved)
    sd["param_groups"][0]["lr"] = 99.0
    assert opt.param_groups[0]["lr"] == 0.1


def test_load_state_dict_mismatch():
    opt = SGD([param(), param()], lr=0.1)
    with pytest.raises(ValueError, match="2 parameter groups"):
        opt.load_state_dict(SGD([{"params": [param()]}, {"params": [param()]}], lr=0.1)
                            .state_dict())
    with pytest.raises(ValueError, match="has 1 parameters, this optimizer's has 2"):
        opt.load_state_dict(SGD([param()], lr=0.1).state_dict())


LOSS_A = np.array([1.0, 30.0, 0.3])


def _loss(x, y):
    """A non-quadratic loss on two parameters, so every buffer takes irregular values."""
    return (0.5 * Tensor(LOSS_A) * x * x).sum() + ((x[:2] * y).sum() - 1.0) ** 2 + (y ** 4).sum()


EVERY = {
    "SGD": lambda p: SGD(p, lr=0.01),
    "SGD-momentum": lambda p: SGD(p, lr=0.01, momentum=0.9, dampening=0.1, weight_decay=0.01),
    "SGD-nesterov": lambda p: SGD(p, lr=0.01, momentum=0.9, nesterov=True),
    "Adagrad": lambda p: Adagrad(p, lr=0.1, lr_decay=0.01, initial_accumulator_value=0.1),
    "RMSprop": lambda p: RMSprop(p, lr=0.01),
    "RMSprop-centered-momentum": lambda p: RMSprop(p, lr=0.01, momentum=0.5, centered=True,
                                                   weight_decay=0.01),
    "Adam": lambda p: Adam(p, lr=0.01, weight_decay=0.01),
    "Adam-amsgrad": lambda p: Adam(p, lr=0.01, amsgrad=True),
    "AdamW": lambda p: AdamW(p, lr=0.01, amsgrad=True),
    "textbook.SGD": lambda p: textbook.SGD(p, lr=0.01),
    "textbook.Momentum": lambda p: textbook.Momentum(p, lr=0.01, alpha=0.9),
    "textbook.Nesterov": lambda p: textbook.Nesterov(p, lr=0.01, alpha=0.9),
    "textbook.AdaGrad": lambda p: textbook.AdaGrad(p, lr=0.1),
    "textbook.RMSProp": lambda p: textbook.RMSProp(p, lr=0.01),
    "textbook.RMSPropNesterov": lambda p: textbook.RMSPropNesterov(p, lr=0.001, delta=1e-8),
    "textbook.Adam": lambda p: textbook.Adam(p, lr=0.01),
    "textbook.NonlinearCG": lambda p: textbook.NonlinearCG(p, reset_every=3),
}


def _train(opt, x, y, steps):
    """Trajectory of `steps` closure steps (the base-class closure or the textbook ones)."""
    out = []
    for _ in range(steps):
        opt.step(lambda: _loss(x, y))
        out.append(np.concatenate([x.numpy(), y.numpy()]))
    return out


@pytest.mark.parametrize("name", list(EVERY))
def test_resume_from_state_dict_is_bit_identical(name):
    make = EVERY[name]
    x = param([1.0, -2.0, 0.5])
    y = param([0.3, -0.7])
    opt = make([{"params": [x]}, {"params": [y]}])
    _train(opt, x, y, 5)
    saved = opt.state_dict()
    x_saved, y_saved = x.numpy(), y.numpy()
    expected = _train(opt, x, y, 5)

    x2, y2 = param(x_saved), param(y_saved)
    opt2 = make([{"params": [x2]}, {"params": [y2]}])
    opt2.load_state_dict(saved)
    actual = _train(opt2, x2, y2, 5)
    for a, e in zip(actual, expected):
        assert np.array_equal(a, e)
    assert all(math.isfinite(v) for v in actual[-1])


def test_load_state_dict_restores_hyperparameters_and_casts_state():
    x = Tensor(np.ones(3, dtype=np.float32), requires_grad=True)
    opt = Adam([x], lr=0.1)
    x.grad = Tensor(np.ones(3, dtype=np.float32))
    opt.step()
    sd = opt.state_dict()
    sd["state"][0]["exp_avg"] = sd["state"][0]["exp_avg"].astype(np.float64)
    sd["state"][0]["step"] = np.array(1)           # as a checkpoint file may give it back
    opt2 = Adam([x], lr=0.5)
    opt2.load_state_dict(sd)
    assert opt2.param_groups[0]["lr"] == 0.1 and opt2.param_groups[0]["params"] == [x]
    assert opt2.state[x]["exp_avg"].dtype == np.float32
    assert opt2.state[x]["step"] == 1 and isinstance(opt2.state[x]["step"], int)


# ---------------------------------------------------------------- effective step sizes
def test_effective_step_size_of_each_rule_after_two_steps():
    g1, g2 = np.array([1.0, -2.0, 0.5]), np.array([0.5, 1.0, -1.0])
    lr, eps = 0.1, 1e-8

    def run(opt, x):
        for g in (g1, g2):
            x.grad = Tensor(g.copy())
            opt.step()
        (eff,) = opt.effective_step_size()
        assert eff.shape == x.shape
        return eff
    x = param()
    np.testing.assert_allclose(run(SGD([x], lr=lr, momentum=0.9), x), lr)
    x = param()
    v = 0.001 * (0.999 * g1 ** 2 + g2 ** 2)
    np.testing.assert_allclose(run(Adam([x], lr=lr), x),
                               lr / (np.sqrt(v / (1 - 0.999 ** 2)) + eps), rtol=1e-12)
    x = param()
    sq = 0.01 * (0.99 * g1 ** 2 + g2 ** 2)
    np.testing.assert_allclose(run(RMSprop([x], lr=lr), x), lr / (np.sqrt(sq) + eps), rtol=1e-12)
    x = param()
    np.testing.assert_allclose(run(Adagrad([x], lr=lr, lr_decay=0.5), x),
                               lr / 1.5 / (np.sqrt(g1 ** 2 + g2 ** 2) + 1e-10), rtol=1e-12)
    x = param()
    np.testing.assert_allclose(run(textbook.RMSProp([x], lr=lr), x),
                               lr / np.sqrt(1e-6 + 0.1 * (0.9 * g1 ** 2 + g2 ** 2)), rtol=1e-12)
    assert Adam.step_size_kind == "adam" and SGD.step_size_kind == "lr"


def test_effective_step_size_before_any_state_is_lr():
    x = param()
    (eff,) = Adam([x], lr=0.3).effective_step_size()
    np.testing.assert_array_equal(eff, [0.3, 0.3, 0.3])


# ---------------------------------------------------------------- the update's grad mode
def test_update_runs_with_grad_mode_off_and_restores_it_even_on_error():
    """step() updates with recording off (a subclass's Tensor ops record nothing), then
    restores the caller's mode, also when the update raises; plain SGD's values are exact."""
    import tinygrad_opt as tg

    seen = []

    class Probe(Optimizer):
        def update_group(self, group):
            seen.append(tg.is_grad_enabled())
            p = group["params"][0]
            seen.append((p * 2.0).requires_grad)        # an op on a Tensor records nothing
            if group.get("fail"):
                raise RuntimeError("update failed")

    p = param()
    opt = Probe([p], dict(fail=False))
    assert opt.step() is None and seen == [False, False] and tg.is_grad_enabled()
    opt.param_groups[0]["fail"] = True
    with pytest.raises(RuntimeError, match="update failed"):
        opt.step()
    assert tg.is_grad_enabled()
    with tg.no_grad():
        opt.param_groups[0]["fail"] = False
        opt.step()
        assert not tg.is_grad_enabled()
    assert tg.is_grad_enabled()
    q = param((1.0, -2.0, 0.5))
    q.grad = Tensor(np.array([0.5, 1.0, -4.0]))
    SGD([q], lr=0.25).step()
    np.testing.assert_array_equal(q.numpy(), [1.0 - 0.125, -2.0 - 0.25, 0.5 + 1.0])


def test_array_only_updates_skip_the_grad_mode_switch():
    """The built-in rules update arrays, so step() leaves grad mode alone around them (no
    switch to pay for); a subclass with its own update_group gets the switch unless it says
    its update touches arrays only, and a subclass of a built-in rule inherits the rule's."""
    import tinygrad_opt as tg
    from tinygrad_opt import engine, optim

    for cls in (optim.SGD, optim.Adam, optim.AdamW, optim.Adagrad, optim.RMSprop):
        assert cls.arrays_only, cls.__name__

    class Own(Optimizer):
        def update_group(self, group):
            seen.append(tg.is_grad_enabled())

    class Declared(Own):
        arrays_only = True

    class Rule(optim.SGD):
        def update(self, p, g, state, group):
            seen.append(tg.is_grad_enabled())
            p -= g

    assert not Own.arrays_only and Declared.arrays_only and Rule.arrays_only
    seen = []
    p = param()
    p.grad = Tensor(np.ones(3))
    for opt in (Own([p], {}), Declared([p], {}), Rule([p], lr=0.1, momentum=0.5)):
        opt.step()
    assert seen == [False, True, True] and engine._overrides == 0
