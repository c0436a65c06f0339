"""flat.py: flat vectors, the flat objective, the HVP operator and the one dense Hessian builder."""
import numpy as np
import pytest

from tinygrad_opt import autograd, curvature, flat
from tinygrad_opt.flat import FlatObjective, HVPOperator
from tinygrad_opt.tensor import Tensor


def two_params():
    a = Tensor(np.array([1.0, 2.0]), requires_grad=True)
    b = Tensor(np.array([[3.0]]), requires_grad=True)
    return a, b


def test_flatten_unflatten_assign_round_trip():
    a, b = two_params()
    v = flat.flatten([a, b])
    np.testing.assert_array_equal(v, [1.0, 2.0, 3.0])
    parts = flat.unflatten(v, [a, b])
    assert [p.shape for p in parts] == [(2,), (1, 1)]
    assert np.shares_memory(parts[1], v)                   # views, no copies
    flat.assign([a, b], np.array([-1.0, -2.0, -3.0]))
    np.testing.assert_array_equal(a.data, [-1.0, -2.0])
    np.testing.assert_array_equal(b.data, [[-3.0]])
    with pytest.raises(ValueError, match=r"shape \(4,\) does not match parameters of total size 3"):
        flat.unflatten(np.zeros(4), [a, b])


def test_autograd_keeps_the_flat_helpers():
    assert autograd.parameters_to_vector is flat.parameters_to_vector
    assert autograd.vector_to_parameters is flat.vector_to_parameters
    assert curvature.HVPOperator is flat.HVPOperator
    assert curvature.flatten is flat.flatten and curvature.unflatten is flat.unflatten


def test_flat_objective_phi_moves_the_parameters():
    a, b = two_params()
    obj = FlatObjective(lambda: (a * a).sum() + (b * b * b).sum(), [a, b], "Test")
    x = obj.get()
    np.testing.assert_array_equal(x, [1.0, 2.0, 3.0])
    d = np.array([-1.0, 0.0, -1.0])
    f, slope, g = obj.phi(x, d)(0.5)
    np.testing.assert_array_equal(a.data, [0.5, 2.0])
    np.testing.assert_array_equal(b.data, [[2.5]])
    assert f == 0.25 + 4 + 2.5 ** 3
    np.testing.assert_allclose(g, [1.0, 4.0, 3 * 2.5 ** 2])
    assert slope == pytest.approx(-1.0 - 3 * 2.5 ** 2)
    assert obj.evals == 1


def test_flat_objective_hvp_operator_reuses_one_gradient():
    A = np.array([[3.0, 1.0], [1.0, 2.0]])
    x = Tensor(np.array([1.0, -1.0]), requires_grad=True)
    At = Tensor(A)
    calls = []

    def closure():
        calls.append(1)
        return 0.5 * (x * (At * x).sum(axis=1)).sum() + (x * x * x).sum() / 3
    obj = FlatObjective(closure, [x], "Test")
    op = obj.hvp_operator()
    H = A + np.diag(2 * x.data)
    for v in (np.array([1.0, 0.0]), np.array([0.3, -2.0])):
        np.testing.assert_allclose(op.matvec(v), H @ v, rtol=1e-12)
    np.testing.assert_allclose(op.grad, A @ x.data + x.data ** 2, rtol=1e-12)
    assert obj.evals == 1 and len(calls) == 1 and op.n_products == 2
    assert op.shape == (2, 2) and op.dtype == np.float64 and op.xp is np


def test_dense_hessian_is_the_exact_symmetric_matrix():
    a, b = two_params()
    # f = a0^2 a1 + a1 b^3: H by hand
    op = HVPOperator(lambda: a[0] ** 2 * a[1] + a[1] * (b * b * b).sum(), [a, b])
    a0, a1, b0 = 1.0, 2.0, 3.0
    H = np.array([[2 * a1, 2 * a0, 0.0],
                  [2 * a0, 0.0, 3 * b0 ** 2],
                  [0.0, 3 * b0 ** 2, 6 * a1 * b0]])
    np.testing.assert_allclose(op.dense(), H, rtol=1e-14)
    assert op.n_products == 3
    # autograd.hessian is built by the same routine, in blocks
    Hab = autograd.hessian(lambda a, b: a[0] ** 2 * a[1] + a[1] * (b * b * b).sum(), (a, b))
    np.testing.assert_allclose(Hab[0][1].numpy(), H[:2, 2:].reshape(2, 1, 1))
    np.testing.assert_allclose(Hab[1][1].numpy(), H[2:, 2:].reshape(1, 1, 1, 1))


def test_constant_loss_has_zero_gradient_and_hessian():
    a, _ = two_params()
    obj = FlatObjective(lambda: Tensor(np.array(2.0)), [a], "Test")
    f, g = obj.value_and_grad()
    assert f == 2.0 and not g.any()
    np.testing.assert_array_equal(obj.hvp_operator().dense(), np.zeros((2, 2)))


def test_generator_of_parameters_is_read_once():
    a, b = two_params()
    op = HVPOperator(lambda: (a * a).sum() * (b * b).sum(), (p for p in [a, b]))
    assert op.n == 3 and len(op.params) == 2


def test_closure_must_return_the_loss_tensor():
    x = Tensor(np.array([1.0]), requires_grad=True)
    with pytest.raises(TypeError, match="closure must return the loss Tensor.*float"):
        FlatObjective(lambda: 1.0, [x], "Test").value_and_grad()
    with pytest.raises(TypeError, match="Test.step needs a closure"):
        FlatObjective(None, [x], "Test")
    with pytest.raises(ValueError, match="one-element loss, got shape \\(2,\\)"):
        HVPOperator(lambda: Tensor(np.ones(2)) * x, [x])
