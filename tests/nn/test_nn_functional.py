"""nn.functional: values against NumPy, gradcheck and gradgradcheck in float64, errors."""
import numpy as np
import pytest

import tinygrad_opt as tg
import tinygrad_opt.nn.functional as F
from tinygrad_opt import Tensor, gradcheck, gradgradcheck

rng = np.random.default_rng(0)


def leaf(a):
    return Tensor(np.asarray(a, dtype=np.float64), requires_grad=True)


def away_from_zero(shape):
    """Normal samples pushed at least 0.1 away from 0 (the kink of relu and abs)."""
    x = rng.standard_normal(shape)
    return x + 0.1 * np.sign(x)


def check_grads(f, *arrays):
    inputs = tuple(leaf(a) for a in arrays)
    assert gradcheck(f, inputs)
    assert gradgradcheck(f, inputs)


def np_log_softmax(x, axis=-1):
    m = x.max(axis=axis, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=axis, keepdims=True))


# ---------------------------------------------------------------- activations
@pytest.mark.parametrize("name, ref", [
    ("relu", lambda x: np.maximum(x, 0)),
    ("sigmoid", lambda x: 1 / (1 + np.exp(-x))),
    ("tanh", np.tanh),
])
def test_activation_values_and_grads(name, ref):
    x = away_from_zero((3, 4))
    fn = getattr(F, name)
    np.testing.assert_allclose(fn(Tensor(x)).numpy(), ref(x), rtol=1e-12)
    check_grads(fn, x)


@pytest.mark.parametrize("shape, axis", [((3, 5), -1), ((3, 5), 0), ((2, 3, 4), 1)])
def test_softmax_and_log_softmax(shape, axis):
    x = rng.standard_normal(shape)
    lsm = F.log_softmax(Tensor(x), axis=axis).numpy()
    np.testing.assert_allclose(lsm, np_log_softmax(x, axis), rtol=1e-12, atol=1e-12)
    sm = F.softmax(Tensor(x), axis=axis).numpy()
    np.testing.assert_allclose(sm, np.exp(np_log_softmax(x, axis)), rtol=1e-12)
    np.testing.assert_allclose(sm.sum(axis=axis), 1.0, rtol=1e-12)
    check_grads(lambda t: F.log_softmax(t, axis=axis), x)
    check_grads(lambda t: F.softmax(t, axis=axis), x)


def test_log_softmax_huge_logits_are_finite():
    x = np.array([[1000.0, -1000.0, 0.0], [-1000.0, -1000.0, 1000.0]])
    t = leaf(x)
    out = F.log_softmax(t)
    np.testing.assert_allclose(out.numpy(), [[0.0, -2000.0, -1000.0], [-2000.0, -2000.0, 0.0]])
    (out * Tensor(rng.standard_normal(x.shape))).sum().backward()
    assert np.isfinite(t.grad.numpy()).all()
    sm = F.softmax(Tensor(x))
    np.testing.assert_allclose(sm.numpy(), [[1, 0, 0], [0, 0, 1]], atol=1e-300)
    loss = F.cross_entropy(t, np.array([0, 2]))
    assert np.isfinite(loss.item()) and abs(loss.item()) < 1e-12


def test_log_softmax_float32_huge_logits():
    x = Tensor(np.array([[1000.0, -1000.0]], dtype=np.float32), requires_grad=True)
    out = F.log_softmax(x)
    assert out.dtype == np.float32
    out.sum().backward()
    assert np.isfinite(out.numpy()).all() and np.isfinite(x.grad.numpy()).all()


def test_linear_values_and_grads():
    x, w, b = rng.standard_normal((4, 3)), rng.standard_normal((2, 3)), rng.standard_normal(2)
    np.testing.assert_allclose(F.linear(Tensor(x), Tensor(w), Tensor(b)).numpy(), x @ w.T + b,
                               rtol=1e-12)
    np.testing.assert_allclose(F.linear(Tensor(x), Tensor(w)).numpy(), x @ w.T, rtol=1e-12)
    check_grads(F.linear, x, w, b)
    check_grads(lambda a, v: F.linear(a, v), x, w)
    # leading batch dimensions: the bias broadcasts over them and its gradient sums them back
    x3 = rng.standard_normal((2, 4, 3))
    np.testing.assert_allclose(F.linear(Tensor(x3), Tensor(w), Tensor(b)).numpy(),
                               x3 @ w.T + b, rtol=1e-12)
    check_grads(F.linear, x3, w, b)


# ---------------------------------------------------------------- cross entropy
def np_cross_entropy(x, y, weight=None, eps=0.0, reduction="mean"):
    """PyTorch's definition written out term by term (nll part and smoothing part)."""
    n, c = x.shape
    logp = np_log_softmax(x)
    w = np.ones(c) if weight is None else np.asarray(weight, dtype=float)
    nll = -w[y] * logp[np.arange(n), y]
    smooth = -(logp * w).sum(axis=1)
    per = (1 - eps) * nll + eps / c * smooth
    if reduction == "none":
        return per
    if reduction == "sum":
        return per.sum()
    return per.sum() / w[y].sum()


def test_cross_entropy_hand_value():
    # uniform logits: loss is log C for any target
    assert F.cross_entropy(Tensor(np.zeros((2, 4))), np.array([1, 3])).item() == pytest.approx(
        np.log(4), rel=1e-12)
    # one row by hand: logits (0, ln 3) -> p = (1/4, 3/4); target 1 -> -ln(3/4)
    x = Tensor(np.array([[0.0, np.log(3.0)]]))
    assert F.cross_entropy(x, np.array([1])).item() == pytest.approx(-np.log(0.75), rel=1e-12)


@pytest.mark.parametrize("weight", [None, [0.5, 2.0, 1.0, 3.0]])
@pytest.mark.parametrize("eps", [0.0, 0.1])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_cross_entropy_against_numpy(weight, eps, reduction):
    x = rng.standard_normal((6, 4)) * 2
    y = np.array([0, 3, 1, 1, 2, 3])
    got = F.cross_entropy(Tensor(x), y, weight=weight, label_smoothing=eps, reduction=reduction)
    np.testing.assert_allclose(got.numpy(), np_cross_entropy(x, y, weight, eps, reduction),
                               rtol=1e-12)
    w = None if weight is None else np.array(weight)
    check_grads(lambda t: F.cross_entropy(t, y, weight=w, label_smoothing=eps,
                                          reduction=reduction), x)


def test_cross_entropy_accepts_tensor_and_list_targets_and_gradient():
    x = rng.standard_normal((3, 5))
    y = np.array([4, 0, 2])
    ref = np_cross_entropy(x, y)
    assert F.cross_entropy(Tensor(x), Tensor(y)).item() == pytest.approx(ref, rel=1e-12)
    assert F.cross_entropy(Tensor(x), [4, 0, 2]).item() == pytest.approx(ref, rel=1e-12)
    t = leaf(x)
    F.cross_entropy(t, y).backward()
    p = np.exp(np_log_softmax(x))
    onehot = np.eye(5)[y]
    np.testing.assert_allclose(t.grad.numpy(), (p - onehot) / 3, rtol=1e-10)


def test_cross_entropy_float32_keeps_dtype():
    x = Tensor(rng.standard_normal((4, 3)).astype(np.float32), requires_grad=True)
    loss = F.cross_entropy(x, np.array([0, 1, 2, 0]), weight=np.array([1.0, 2.0, 3.0]))
    loss.backward()
    assert loss.dtype == np.float32 and x.grad.dtype == np.float32


@pytest.mark.parametrize("targets, exc, match", [
    (np.array([0.0, 1.0, 2.0]), TypeError, "cross_entropy: targets must be integer.*float64"),
    (np.array([0, 1]), ValueError, r"cross_entropy: targets must have shape \(3,\).*\(2,\)"),
    (np.array([[0], [1], [2]]), ValueError, r"cross_entropy: targets must have shape \(3,\)"),
    (np.array([0, 1, 4]), ValueError, r"cross_entropy: targets must be class indices in \[0, 4\)"),
    (np.array([0, -1, 2]), ValueError, r"cross_entropy: targets must be class indices"),
])
def test_cross_entropy_target_errors(targets, exc, match):
    with pytest.raises(exc, match=match):
        F.cross_entropy(Tensor(np.zeros((3, 4))), targets)


def test_cross_entropy_out_of_range_target_per_device(device):
    """CPU: a ValueError at the call. GPU: no host round trip, so the loss and that row's
    gradient are NaN (with class weights, the whole gradient)."""
    x = Tensor(np.zeros((3, 4)), device=device, requires_grad=True)
    y = Tensor(np.array([0, 4, 2]), device=device)
    if device == "cpu":
        with pytest.raises(ValueError, match=r"cross_entropy: targets must be class indices"):
            F.cross_entropy(x, y)
        return
    loss = F.cross_entropy(x, y)
    loss.backward()
    grad = x.grad.numpy()
    assert np.isnan(loss.item()) and np.isnan(grad[1]).all() and np.isfinite(grad[[0, 2]]).all()
    rows = F.cross_entropy(x, y, reduction="none", label_smoothing=0.1).numpy()
    assert np.isnan(rows[1]) and np.isfinite(rows[[0, 2]]).all()
    x.grad = None
    weighted = F.cross_entropy(x, y, weight=np.ones(4))
    weighted.backward()
    assert np.isnan(weighted.item()) and np.isnan(x.grad.numpy()).all()
    ok = F.cross_entropy(x, Tensor(np.array([0, 3, 2]), device=device))
    assert ok.item() == pytest.approx(np.log(4), rel=1e-12)


def test_cross_entropy_of_an_empty_batch():
    """The mean over no rows is NaN (as in PyTorch), the sum 0; the gradient is empty."""
    for kwargs, expect_nan in [({}, True), ({"reduction": "sum"}, False),
                               ({"label_smoothing": 0.1}, True), ({"weight": np.ones(3)}, True)]:
        x = leaf(np.zeros((0, 3)))
        loss = F.cross_entropy(x, np.array([], dtype=np.int64), **kwargs)
        assert np.isnan(loss.item()) == expect_nan and (expect_nan or loss.item() == 0)
        loss.backward()
        assert x.grad.shape == (0, 3)


def test_cross_entropy_backward_twice_with_retained_graph():
    x = leaf(rng.standard_normal((3, 4)))
    loss = F.cross_entropy(x, np.array([1, 0, 3]))
    loss.backward(retain_graph=True)
    first = x.grad.numpy().copy()
    loss.backward()
    np.testing.assert_allclose(x.grad.numpy(), 2 * first, rtol=1e-15)
    np.testing.assert_allclose(first.sum(axis=1), 0, atol=1e-15)   # softmax - one-hot rows


def test_cross_entropy_other_errors():
    with pytest.raises(ValueError, match=r"cross_entropy: logits must have shape \(N, C\)"):
        F.cross_entropy(Tensor(np.zeros(4)), np.array([1]))
    with pytest.raises(ValueError, match=r"cross_entropy: weight must have shape \(4,\)"):
        F.cross_entropy(Tensor(np.zeros((2, 4))), np.array([1, 2]), weight=np.ones(3))
    with pytest.raises(ValueError, match="reduction"):
        F.cross_entropy(Tensor(np.zeros((2, 4))), np.array([1, 2]), reduction="avg")


# ---------------------------------------------------------------- mse
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_mse_loss(reduction):
    a, b = rng.standard_normal((3, 4)), rng.standard_normal((3, 4))
    ref = {"mean": ((a - b) ** 2).mean(), "sum": ((a - b) ** 2).sum(), "none": (a - b) ** 2}
    got = F.mse_loss(Tensor(a), Tensor(b), reduction=reduction)
    np.testing.assert_allclose(got.numpy(), ref[reduction], rtol=1e-12)
    check_grads(lambda p, t: F.mse_loss(p, t, reduction=reduction), a, b)


def test_mse_loss_array_target_and_shape_error():
    a = rng.standard_normal((3, 1))
    assert F.mse_loss(Tensor(a), a + 1).item() == pytest.approx(1.0)
    with pytest.raises(ValueError, match=r"mse_loss: pred shape \(3, 1\) and target shape \(3,\)"):
        F.mse_loss(Tensor(a), Tensor(a[:, 0]))


# ---------------------------------------------------------------- bce with logits
def np_bce_logits(x, y, weight=None, pos_weight=None):
    s = 1 / (1 + np.exp(-x))
    pw = 1.0 if pos_weight is None else pos_weight
    loss = -(pw * y * np.log(s) + (1 - y) * np.log(1 - s))
    return loss * (1.0 if weight is None else weight)


@pytest.mark.parametrize("weight_shape, pos_weight_shape", [
    (None, None), ((3, 1), None), (None, (4,)), ((4,), (4,)), ((3, 4), (1, 4))])
def test_bce_with_logits_values_and_grads(weight_shape, pos_weight_shape):
    x = away_from_zero((3, 4)) * 2
    y = rng.uniform(0, 1, (3, 4))
    w = None if weight_shape is None else rng.uniform(0.5, 2, weight_shape)
    pw = None if pos_weight_shape is None else rng.uniform(0.5, 3, pos_weight_shape)
    got = F.binary_cross_entropy_with_logits(Tensor(x), Tensor(y), weight=w, pos_weight=pw,
                                             reduction="none")
    np.testing.assert_allclose(got.numpy(), np_bce_logits(x, y, w, pw), rtol=1e-10)
    mean = F.binary_cross_entropy_with_logits(Tensor(x), y, weight=w, pos_weight=pw)
    assert mean.item() == pytest.approx(np_bce_logits(x, y, w, pw).mean(), rel=1e-10)
    # differentiable in the logits and in soft targets
    check_grads(lambda a, b: F.binary_cross_entropy_with_logits(a, b, weight=w, pos_weight=pw), x, y)


def test_bce_with_logits_is_stable_for_huge_logits():
    x = leaf([-1000.0, 1000.0, -1000.0, 1000.0])
    y = np.array([0.0, 1.0, 1.0, 0.0])
    loss = F.binary_cross_entropy_with_logits(x, y, reduction="none")
    np.testing.assert_allclose(loss.numpy(), [0.0, 0.0, 1000.0, 1000.0])
    loss.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [0.0, 0.0, -1.0, 1.0])
    lp = F.binary_cross_entropy_with_logits(leaf([-1000.0]), np.array([1.0]),
                                            pos_weight=np.array([2.0]))
    assert lp.item() == pytest.approx(2000.0)


def test_bce_with_logits_shape_error():
    with pytest.raises(ValueError, match=r"binary_cross_entropy_with_logits: targets shape \(3,\)"):
        F.binary_cross_entropy_with_logits(Tensor(np.zeros((3, 1))), np.zeros(3))


# ---------------------------------------------------------------- dropout
def test_dropout_function():
    x = Tensor(np.ones((4, 5)))
    assert F.dropout(x, 0.5, training=False) is x
    assert F.dropout(x, 0.0) is x
    tg.manual_seed(0)
    y = F.dropout(x, 0.25).numpy()
    assert set(np.unique(y)) <= {0.0, 1 / 0.75}
    for p in (-0.1, 1.0, 1.5):
        with pytest.raises(ValueError, match=r"dropout: probability p must be in \[0, 1\)"):
            F.dropout(x, p)


def test_dropout_grads():
    tg.manual_seed(1)
    x = rng.standard_normal((5, 6))

    def f(t):
        tg.manual_seed(3)        # the same mask on every evaluation
        return F.dropout(t, 0.4)

    check_grads(f, x)


# ---------------------------------------------------------------- devices
def test_losses_on_device(device):
    x = rng.standard_normal((5, 3))
    y = np.array([0, 2, 1, 1, 0])
    w = np.array([1.0, 2.0, 0.5])
    t = Tensor(x, device=device, requires_grad=True)
    loss = F.cross_entropy(t, y, weight=w, label_smoothing=0.1)
    assert loss.device == device
    assert loss.item() == pytest.approx(np_cross_entropy(x, y, w, 0.1), rel=1e-10)
    loss.backward()
    assert t.grad.device == device
    yt = Tensor(y, device=device)
    assert F.cross_entropy(t, yt).item() == pytest.approx(np_cross_entropy(x, y), rel=1e-10)
    m = F.mse_loss(t, x + 1)
    assert m.device == device and m.item() == pytest.approx(1.0)
    b = F.binary_cross_entropy_with_logits(t, (x > 0).astype(float), pos_weight=np.ones(3) * 2)
    assert b.device == device and np.isfinite(b.item())
    tg.manual_seed(0)
    d = F.dropout(Tensor(np.ones((100, 100)), device=device), 0.5)
    assert d.device == device and 0.4 < (d.numpy() == 0).mean() < 0.6


def test_bce_with_logits_gradient_and_curvature_are_right_at_zero_logit():
    """At x = 0: d/dx = sigmoid(0) - y = 0.5 - y and d2/dx2 = sigmoid'(0) = 1/4 (logistic
    regression started from zero weights sits exactly there)."""
    y = np.array([0.0, 1.0, 0.25])
    x = Tensor(np.zeros(3), requires_grad=True)
    loss = F.binary_cross_entropy_with_logits(x, y, reduction="sum")
    (g,) = tg.autograd.grad(loss, x, create_graph=True)
    np.testing.assert_allclose(g.numpy(), 0.5 - y, rtol=1e-15)
    H = tg.autograd.hessian(lambda x: F.binary_cross_entropy_with_logits(x, y, reduction="sum"), x)
    np.testing.assert_allclose(H.numpy(), np.eye(3) * 0.25, rtol=1e-15)
    big = Tensor(np.array([-800.0, 800.0]), requires_grad=True)
    out = F.binary_cross_entropy_with_logits(big, np.array([1.0, 0.0]), reduction="none")
    np.testing.assert_allclose(out.numpy(), [800.0, 800.0])
