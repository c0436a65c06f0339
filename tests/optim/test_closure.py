"""closure.ClosureOptimizer: the shared preamble, reuse of the last point, NaN losses in fit."""
import numpy as np
import pytest

from tinygrad_opt import nn
from tinygrad_opt.data import DataLoader
from tinygrad_opt.nn import functional as F
from tinygrad_opt.optim import (LBFGS, SGD, ConjugateGradient, Newton, NewtonCG, Optimizer,
                                textbook)
from tinygrad_opt.optim.closure import ClosureOptimizer
from tinygrad_opt.tensor import Tensor
from tinygrad_opt.train import TrainingDiverged, fit

from problems import rosenbrock

CLOSURE_OPTIMIZERS = [LBFGS, ConjugateGradient, NewtonCG, Newton]


def test_needs_closure_is_read_from_the_class():
    assert Optimizer.needs_closure is False and SGD.needs_closure is False
    for cls in CLOSURE_OPTIMIZERS:
        assert issubclass(cls, ClosureOptimizer) and cls.needs_closure is True
    assert textbook.Newton.needs_closure is True


@pytest.mark.parametrize("cls", CLOSURE_OPTIMIZERS)
def test_shared_preamble_errors(cls):
    x, closure = rosenbrock()
    y = Tensor(np.zeros(2), requires_grad=True)
    with pytest.raises(ValueError, match=f"{cls.__name__} doesn't support per-parameter"):
        cls([{"params": [x]}, {"params": [y]}])
    with pytest.raises(ValueError, match="Invalid learning rate: 0"):
        cls([x], lr=0)
    with pytest.raises(TypeError, match=f"{cls.__name__}.step needs a closure"):
        cls([x]).step()


@pytest.mark.parametrize("cls", CLOSURE_OPTIMIZERS)
def test_nan_loss_leaves_the_parameters_and_is_returned(cls):
    x = Tensor(np.array([1.0, 2.0]), requires_grad=True)
    opt = cls([x])
    f = opt.step(lambda: (x * x).sum() * float("nan"))
    assert np.isnan(f)
    np.testing.assert_array_equal(x.data, [1.0, 2.0])


@pytest.mark.parametrize("cls", CLOSURE_OPTIMIZERS)
def test_fit_reports_a_nan_loss_as_training_diverged(cls):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((16, 3))
    X[5, 1] = np.nan                           # one bad sample: the full-batch loss is NaN
    y = rng.standard_normal((16, 1))
    model = nn.Linear(3, 1)
    for p in model.parameters():
        p.data = p.data.astype(np.float64)
    loader = DataLoader(X, y, batch_size=16, shuffle=False)
    with pytest.raises(TrainingDiverged, match="loss is nan"):
        fit(model, cls(list(model.parameters())), loader, F.mse_loss, epochs=1, progress=False)


@pytest.mark.parametrize("make", [ConjugateGradient, lambda ps: LBFGS(ps, max_iter=2),
                                  NewtonCG, Newton])
def test_the_last_point_is_reused_and_changes_nothing_but_the_count(make):
    # the same closure object reuses the end point of the previous step; a new closure object
    # each step (a new minibatch, as in fit) re-evaluates it: same path, one call more a step
    runs = []
    for fresh in (False, True):
        x, closure = rosenbrock()
        calls = []

        def counting():
            calls.append(1)
            return closure()
        opt = make([x])
        path = []
        for _ in range(6):
            opt.step((lambda: counting()) if fresh else counting)
            path.append(x.data.copy())
        runs.append((np.array(path), len(calls)))
    (path_a, calls_a), (path_b, calls_b) = runs
    np.testing.assert_array_equal(path_a, path_b)
    assert calls_b == calls_a + 5


def test_cache_is_dropped_when_the_parameters_change():
    x, closure = rosenbrock()
    calls = []

    def counting():
        calls.append(1)
        return closure()
    opt = ConjugateGradient([x])
    opt.step(counting)
    x.data[...] = [0.5, 0.5]
    m = len(calls)
    f = opt.step(counting)
    assert f == pytest.approx(0.5 ** 2 + 100 * 0.25 ** 2) and len(calls) > m


def test_cache_is_not_used_after_load_state_dict():
    x, closure = rosenbrock()
    opt = LBFGS([x], max_iter=2)
    opt.step(closure)
    opt.load_state_dict(opt.state_dict())
    assert opt._cache is None
