"""The optimizer registry: names, default lrs, needs_closure read from the class."""
import numpy as np
import pytest

from tinygrad_opt import optim
from tinygrad_opt.optim.registry import (OPTIMIZERS, OptimizerSpec, get_spec, make_optimizer,
                                         parse_optimizer_list, training_optimizers)
from tinygrad_opt.tensor import Tensor


def params():
    return [Tensor(np.ones(3), requires_grad=True)]


def test_needs_closure_comes_from_the_class():
    closure = {n for n, s in OPTIMIZERS.items() if s.needs_closure}
    assert closure == {"lbfgs", "cg", "newtoncg", "newton", "sam", "adahessian", "sophia",
                       "hessianfree", "kfac"}
    for spec in OPTIMIZERS.values():
        assert spec.needs_closure is spec.cls.needs_closure
        wrapper = issubclass(spec.cls, optim.lookahead.WrapperOptimizer)   # steps its base
        assert spec.needs_closure == (spec.cls.step is not optim.Optimizer.step) or wrapper
    for cls in (optim.textbook.Newton, optim.textbook.NonlinearCG, optim.textbook.Nesterov):
        assert cls.needs_closure
    assert not optim.textbook.SGD.needs_closure


@pytest.mark.parametrize("name, cls, group", [
    ("sgd", optim.SGD, dict(lr=0.2, momentum=0.0, nesterov=False, weight_decay=0.0)),
    ("momentum", optim.SGD, dict(lr=0.05, momentum=0.9, nesterov=False)),
    ("nesterov", optim.SGD, dict(lr=0.05, momentum=0.9, nesterov=True)),
    ("adagrad", optim.Adagrad, dict(lr=0.1, weight_decay=0.0)),
    ("rmsprop", optim.RMSprop, dict(lr=3e-3, momentum=0.0)),
    ("adam", optim.Adam, dict(lr=5e-3, weight_decay=0.0)),
    ("adamw", optim.AdamW, dict(lr=5e-3, weight_decay=1e-2)),
    ("lbfgs", optim.LBFGS, dict(lr=1.0, max_iter=20)),
    ("cg", optim.ConjugateGradient, dict(lr=1.0)),
    ("newtoncg", optim.NewtonCG, dict(lr=1.0, damping=1e-2, cg_max_iter=50,
                                      line_search="armijo")),
    ("newton", optim.Newton, dict(lr=1.0)),
])
def test_defaults_of_each_name(name, cls, group):
    opt = make_optimizer(name, params())
    assert type(opt) is cls
    for key, value in group.items():
        assert opt.param_groups[0][key] == value, key


def test_overrides_and_mistakes():
    opt = make_optimizer("momentum", params(), lr=0.3, momentum=0.5, weight_decay=0.1)
    g = opt.param_groups[0]
    assert (g["lr"], g["momentum"], g["weight_decay"]) == (0.3, 0.5, 0.1)
    assert make_optimizer("lbfgs", params(), max_iter=1).param_groups[0]["max_iter"] == 1
    with pytest.raises(ValueError, match="unknown optimizer 'adamm'; choose from sgd"):
        make_optimizer("adamm", params())
    with pytest.raises(ValueError, match="weight_decay is not supported with lbfgs"):
        make_optimizer("lbfgs", params(), weight_decay=0.1)
    with pytest.raises(ValueError, match="momentum is not supported with adam"):
        make_optimizer("adam", params(), momentum=0.9)
    assert "newton" not in training_optimizers() and "newtoncg" in training_optimizers()


def test_parse_optimizer_list():
    assert parse_optimizer_list("sgd, adam:0.01,") == [("sgd", None), ("adam", 0.01)]
    for text, match in [("sgd,nope", "unknown optimizer 'nope'"), ("adam:x", "bad learning"),
                        ("adam:-1", "must be positive"), ("adam:inf", "must be positive"),
                        (" , ", "at least one")]:
        with pytest.raises(ValueError, match=match):
            parse_optimizer_list(text)


def test_register_a_new_name():
    spec = OptimizerSpec("sgd_fast", optim.SGD, 0.5, "SGD with a large step", momentum=0.0)
    from tinygrad_opt.optim import registry
    try:
        registry.register(spec)
        assert get_spec("sgd_fast") is spec
        assert make_optimizer("sgd_fast", params()).param_groups[0]["lr"] == 0.5
    finally:
        del OPTIMIZERS["sgd_fast"]


@pytest.mark.parametrize("name, cls, group", [
    ("lion", optim.Lion, dict(lr=1e-3, weight_decay=0.0, betas=(0.9, 0.99))),
    ("lookahead", optim.Lookahead, dict(lr=5e-3, weight_decay=0.0)),
    ("sam", optim.SAM, dict(lr=0.05, momentum=0.9)),
    ("adahessian", optim.AdaHessian, dict(lr=0.1, weight_decay=0.0)),
    ("sophia", optim.Sophia, dict(lr=2e-3, weight_decay=0.0, estimator="hutchinson")),
    ("hessianfree", optim.HessianFree, dict(lr=1.0, damping=45.0)),
    ("kfac", optim.KFAC, dict(lr=1.0, damping=1e-2)),
])
def test_network_optimizer_rows(name, cls, group):
    opt = make_optimizer(name, params())
    assert isinstance(opt, cls)
    for key, value in group.items():
        assert opt.param_groups[0][key] == value, key
    assert make_optimizer(name, params(), lr=0.3).param_groups[0]["lr"] == 0.3
    if name in ("lookahead", "sam"):                # the wrapper steps an Adam / momentum SGD
        base = opt.base_optimizer
        assert type(base) is (optim.Adam if name == "lookahead" else optim.SGD)
        assert (opt.k, opt.alpha) == (5, 0.5) if name == "lookahead" else opt.rho == 0.05
    if name in ("hessianfree", "kfac"):
        with pytest.raises(ValueError, match="weight_decay is not supported"):
            make_optimizer(name, params(), weight_decay=0.1)
