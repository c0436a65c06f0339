"""In-place operators and methods with PyTorch's rules, and the version counter that turns a
backward through changed saved values into an error instead of a wrong gradient."""
import numpy as np
import pytest

import tinygrad_opt as tg
from tinygrad_opt import nn


def t64(a, rg=False):
    return tg.Tensor(np.asarray(a, dtype=np.float64), requires_grad=rg)


def test_course_update_under_no_grad_changes_the_weights():
    """p -= lr * p.grad in a loop: Python rebinds p to what __isub__ returns, so only a true
    in-place operator updates the parameter the model holds."""
    model = nn.Linear(3, 2, dtype=np.float64)
    x = t64([[1.0, 2.0, 3.0], [0.5, -1.0, 2.0]])
    before = [p.numpy() for p in model.parameters()]
    loss = (model(x) ** 2).mean()
    loss.backward()
    grads = [p.grad.numpy() for p in model.parameters()]
    lr = 0.1
    with tg.no_grad():
        for p in model.parameters():
            p -= lr * p.grad
    for p, b, g in zip(model.parameters(), before, grads):
        np.testing.assert_allclose(p.numpy(), b - lr * g, rtol=1e-15)
        assert p.requires_grad and p.is_leaf


def test_operators_and_methods_match_numpy_and_keep_identity():
    a = t64([1.0, 2.0, 3.0])
    ref = a.numpy()
    data = a.data
    ops = [(lambda t: t.__iadd__(2.0), ref + 2), (lambda t: t.__isub__(t64([1, 1, 1])), ref + 1),
           (lambda t: t.__imul__(3.0), (ref + 1) * 3), (lambda t: t.__itruediv__(2.0), (ref + 1) * 1.5),
           (lambda t: t.add_(t64([1, 2, 3]), alpha=2), (ref + 1) * 1.5 + [2, 4, 6]),
           (lambda t: t.sub_(1.0), (ref + 1) * 1.5 + [1, 3, 5]),
           (lambda t: t.mul_(t64([2, 0, 1])), ((ref + 1) * 1.5 + [1, 3, 5]) * [2, 0, 1]),
           (lambda t: t.div_(4.0), ((ref + 1) * 1.5 + [1, 3, 5]) * [2, 0, 1] / 4)]
    for op, expect in ops:
        assert op(a) is a
        np.testing.assert_allclose(a.numpy(), expect, rtol=1e-15)
    assert a.data is data                       # the same array, changed in place
    assert a.fill_(7.0) is a and a.numpy().tolist() == [7.0, 7.0, 7.0]
    assert a.zero_() is a and a.numpy().tolist() == [0.0, 0.0, 0.0]
    assert a.copy_(np.array([4.0, 5.0, 6.0])) is a and a.numpy().tolist() == [4.0, 5.0, 6.0]
    a.copy_(tg.Tensor([1.5], dtype=np.float32))       # broadcast and cast
    assert a.numpy().tolist() == [1.5, 1.5, 1.5] and a.dtype == np.float64
    assert a.data is data


def test_views_and_detached_tensors_see_the_change_and_share_the_version():
    a = t64(np.arange(6.0).reshape(2, 3))
    d = a.detach()
    v0 = a._version
    d += 1.0
    np.testing.assert_array_equal(a.numpy(), np.arange(6.0).reshape(2, 3) + 1)
    assert a._version == d._version == v0 + 1
    a[0, 1] = -5.0
    assert a.numpy()[0, 1] == -5.0 and d._version == v0 + 2


def test_leaf_that_requires_grad_cannot_change_in_place_with_grad_on():
    w = t64([1.0, 2.0], rg=True)
    for op in (lambda: w.__isub__(1.0), lambda: w.add_(1.0), lambda: w.zero_(),
               lambda: w.fill_(2.0), lambda: w.copy_(np.zeros(2)), lambda: w.mul_(2.0)):
        with pytest.raises(RuntimeError, match="leaf tensor that requires grad.*no_grad"):
            op()
    np.testing.assert_array_equal(w.numpy(), [1.0, 2.0])
    with pytest.raises(RuntimeError, match="item assignment.*no_grad"):
        w[0] = 3.0
    with tg.no_grad():
        w.zero_()
        w[1] = 3.0
    np.testing.assert_array_equal(w.numpy(), [0.0, 3.0])


def test_changing_a_saved_input_under_no_grad_makes_backward_raise():
    w = t64([1.0, 2.0, 3.0], rg=True)
    x = t64([4.0, 5.0, 6.0])
    loss = (w * x).sum()                # Mul saved x for w's gradient
    with tg.no_grad():
        x *= 2.0
    with pytest.raises(RuntimeError, match=r"backward through Mul: .*modified in place .*version 1"):
        loss.backward()


def test_sgd_update_between_forward_and_backward_raises():
    w = t64([0.5, -1.0], rg=True)
    loss = (w.exp() * w).sum()
    with tg.no_grad():
        w -= 0.1                        # the forward saved the old w
    with pytest.raises(RuntimeError, match="modified in place"):
        loss.backward()


def test_changing_a_saved_output_raises():
    x = t64([0.1, 0.2], rg=True)
    y = x.exp()                         # Exp's backward reads its output
    with tg.no_grad():
        y += 1.0
    with pytest.raises(RuntimeError, match="backward through Exp: one of its saved output"):
        y.backward(np.ones(2))


def test_changing_a_view_of_a_saved_array_raises():
    w = t64([1.0, 2.0, 3.0, 4.0], rg=True)
    x = t64([1.0, 2.0, 3.0, 4.0])
    loss = (w * x).sum()
    view = x.reshape(2, 2)              # shares x's memory
    with tg.no_grad():
        view[0] = 0.0
    with pytest.raises(RuntimeError, match="modified in place"):
        loss.backward()


def test_changes_before_the_forward_and_after_the_backward_are_fine():
    w = t64([1.0, 2.0], rg=True)
    x = t64([3.0, 4.0])
    for step in range(3):
        with tg.no_grad():
            x += 1.0                    # before this step's forward: nothing saved it yet
        w.grad = None
        (w * x * w).sum().backward()
        np.testing.assert_allclose(w.grad.numpy(), 2 * w.numpy() * x.numpy())
        with tg.no_grad():
            w -= 0.01 * w.grad          # after the backward


def test_in_place_on_a_graph_tensor_records_like_out_of_place():
    """h = x @ W; h += b; h *= 2 gives the gradients of 2 (x @ W + b) (PyTorch records it)."""
    rng = np.random.default_rng(0)
    X, Wn, bn = rng.standard_normal((3, 4)), rng.standard_normal((4, 2)), rng.standard_normal(2)
    W, b = t64(Wn, rg=True), t64(bn, rg=True)
    h = t64(X) @ W
    data = h.data
    h += b
    h *= 2.0
    h = h.exp()
    h.sum().backward()
    assert h.data is not data
    G = 2 * np.exp(2 * (X @ Wn + bn))
    np.testing.assert_allclose(W.grad.numpy(), X.T @ G, rtol=1e-12)
    np.testing.assert_allclose(b.grad.numpy(), G.sum(0), rtol=1e-12)


def test_accumulating_a_loss_in_place_is_differentiable():
    w = t64([1.0, -2.0], rg=True)
    total = 0.0
    for k in range(3):
        total += (w * float(k + 1)).sum()       # the first += is float + Tensor
    total.backward()
    np.testing.assert_array_equal(w.grad.numpy(), [6.0, 6.0])


def test_in_place_with_a_value_that_requires_grad_records():
    w = t64([1.0, 2.0], rg=True)
    acc = t64([10.0, 20.0])
    acc *= w                                    # acc joins the graph
    assert acc.requires_grad and not acc.is_leaf
    (acc * acc).sum().backward()
    np.testing.assert_allclose(w.grad.numpy(), 2 * np.array([10.0, 20.0]) ** 2 * [1.0, 2.0])


def test_recorded_in_place_makes_earlier_consumers_raise_not_mislead():
    x = t64([1.0, 2.0], rg=True)
    h = x * 1.0
    y = (h * h).sum()                           # consumed h before the change
    h += 1.0
    with pytest.raises(RuntimeError, match="modified in place"):
        y.backward()


def test_in_place_errors_name_the_op_shapes_and_dtypes():
    a = tg.Tensor(np.zeros((2, 3), dtype=np.float32))
    with pytest.raises(ValueError, match=r"\+=: .*shape \(2, 3\).*shape \(4,\)"):
        a += np.ones(4, dtype=np.float32)
    i = tg.Tensor(np.zeros(3, dtype=np.int64))
    with pytest.raises(TypeError, match=r"/=: .*dtype int64"):
        i /= 2.0
    with pytest.raises(ValueError, match="copy_: source of shape \\(4,\\)"):
        a.copy_(np.ones(4))
    i += 2                                      # an integer update is fine
    assert i.numpy().tolist() == [2, 2, 2]


def test_version_check_costs_nothing_without_in_place_changes():
    """The check runs only for nodes recorded before the latest in-place change."""
    from tinygrad_opt import versions
    calls = []
    orig = versions.check_unmodified
    versions.check_unmodified = lambda n: calls.append(n) or orig(n)
    try:
        w = t64([1.0, 2.0], rg=True)
        with tg.no_grad():
            w -= 0.0
        (w.tanh() * w).sum().backward()
        assert calls == []
        loss = (w.tanh() * w).sum()
        with tg.no_grad():
            t64([1.0]).add_(1.0)                # an unrelated change
        loss.backward()
        assert len(calls) == 3                   # Sum, Mul, Tanh each checked once
    finally:
        versions.check_unmodified = orig
