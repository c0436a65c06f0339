"""Gradient clipping against hand-computed norms."""
import math

import numpy as np
import pytest

from tinygrad_opt import Tensor
from tinygrad_opt.optim import clip_grad_norm_, clip_grad_value_


def params_with_grads(*grads):
    out = []
    for g in grads:
        p = Tensor(np.zeros(len(g)), requires_grad=True)
        p.grad = Tensor(np.array(g, dtype=np.float64))
        out.append(p)
    return out


def test_two_norm_clips_jointly():
    # grads (3, 4) and (12,): joint 2-norm sqrt(9 + 16 + 144) = 13
    ps = params_with_grads([3.0, 4.0], [12.0])
    total = clip_grad_norm_(ps, max_norm=6.5)
    assert total == 13.0 and isinstance(total, float)
    coef = 6.5 / (13.0 + 1e-6)
    np.testing.assert_allclose(ps[0].grad.numpy(), [3 * coef, 4 * coef], rtol=1e-15)
    np.testing.assert_allclose(ps[1].grad.numpy(), [12 * coef], rtol=1e-15)


def test_below_max_norm_is_untouched():
    ps = params_with_grads([3.0, 4.0])
    assert clip_grad_norm_(ps, max_norm=10.0) == 5.0
    np.testing.assert_array_equal(ps[0].grad.numpy(), [3.0, 4.0])


@pytest.mark.parametrize("norm_type,expected", [
    (1.0, 3 + 4 + 12), (math.inf, 12.0), ("inf", 12.0), (3.0, (27 + 64 + 1728) ** (1 / 3))])
def test_other_norms(norm_type, expected):
    ps = params_with_grads([3.0, -4.0], [-12.0])
    total = clip_grad_norm_(ps, max_norm=1.0, norm_type=norm_type)
    assert total == pytest.approx(expected, rel=1e-14)
    np.testing.assert_allclose(ps[1].grad.numpy(), [-12.0 / (expected + 1e-6)], rtol=1e-14)


def test_single_tensor_and_missing_grads():
    p, = params_with_grads([6.0, 8.0])
    q = Tensor(np.ones(3), requires_grad=True)          # no grad: ignored
    assert clip_grad_norm_([p, q], 5.0) == 10.0
    assert clip_grad_norm_(p, 100.0) == pytest.approx(5.0, rel=1e-6)
    assert clip_grad_norm_([q], 1.0) == 0.0


def test_float32_grads_stay_float32():
    p = Tensor(np.zeros(2, dtype=np.float32), requires_grad=True)
    p.grad = Tensor(np.array([30.0, 40.0], dtype=np.float32))
    clip_grad_norm_([p], 1.0)
    assert p.grad.dtype == np.float32
    np.testing.assert_allclose(p.grad.numpy(), [0.6, 0.8], rtol=1e-6)


@pytest.mark.parametrize("bad", [0.0, -1.0])
def test_max_norm_must_be_positive(bad):
    with pytest.raises(ValueError, match=f"max_norm must be positive, got {bad}"):
        clip_grad_norm_(params_with_grads([1.0]), bad)


def test_nonfinite_norm():
    ps = params_with_grads([1.0, math.inf])
    with pytest.raises(RuntimeError, match="norm of order 2.0 .* is inf"):
        clip_grad_norm_(ps, 1.0, error_if_nonfinite=True)
    with np.errstate(invalid="ignore"):                 # inf * 0 = nan, as in PyTorch
        assert clip_grad_norm_(ps, 1.0) == math.inf     # clipping by 0 zeroes the finite part
    assert ps[0].grad.numpy()[0] == 0.0


def test_clip_grad_value():
    ps = params_with_grads([0.5, -3.0, 2.0], [-0.1])
    clip_grad_value_(ps, 1.0)
    np.testing.assert_array_equal(ps[0].grad.numpy(), [0.5, -1.0, 1.0])
    np.testing.assert_array_equal(ps[1].grad.numpy(), [-0.1])
    with pytest.raises(ValueError, match="clip_value must be non-negative, got -1"):
        clip_grad_value_(ps, -1)


def test_clipping_is_in_place():
    p, = params_with_grads([30.0, 40.0])
    arr = p.grad.data
    clip_grad_norm_([p], 1.0)
    clip_grad_value_([p], 0.1)
    assert p.grad.data is arr
    np.testing.assert_allclose(arr, [0.1, 0.1])
