"""autograd.grad semantics, hvp against the dense Hessian and finite differences, helpers."""
import numpy as np
import pytest

import tinygrad_opt as tg
from tinygrad_opt import autograd, ops


def t64(a, rg=True):
    return tg.Tensor(np.asarray(a, dtype=np.float64), requires_grad=rg)


def test_grad_returns_tuple_and_does_not_touch_dot_grad():
    x, y = t64([1.0, 2.0]), t64([3.0])
    gx, gy = autograd.grad((x * y).sum(), (x, y))
    np.testing.assert_array_equal(gx.numpy(), [3.0, 3.0])
    np.testing.assert_array_equal(gy.numpy(), [3.0])
    assert x.grad is None and y.grad is None


def test_grad_unused_input_needs_allow_unused():
    x, y = t64([1.0]), t64([2.0])
    out = (x * 2).sum()
    with pytest.raises(RuntimeError, match=r"inputs\[1\].*allow_unused=True"):
        autograd.grad(out, (x, y), retain_graph=True)
    gx, gy = autograd.grad(out, (x, y), allow_unused=True)
    assert gy is None and gx.item() == 2.0


def test_grad_input_without_requires_grad_is_an_error():
    x = t64([1.0])
    c = t64([1.0], rg=False)
    with pytest.raises(RuntimeError, match=r"inputs\[1\].*does not require grad"):
        autograd.grad((x * c).sum(), (x, c))


def test_retain_graph_defaults_to_create_graph():
    x = t64([1.0, 2.0])
    y = (x ** 3).sum()
    (g,) = autograd.grad(y, x, create_graph=True)
    autograd.grad(y, x)                          # graph retained by create_graph=True
    with pytest.raises(RuntimeError, match="freed"):
        autograd.grad(y, x)
    assert g.requires_grad


def test_grad_with_respect_to_intermediate():
    x = t64([1.0, 2.0])
    h = x * 3
    y = (h * h).sum()
    gh, gx = autograd.grad(y, (h, x))
    np.testing.assert_array_equal(gh.numpy(), 2 * h.numpy())
    np.testing.assert_array_equal(gx.numpy(), 18 * x.numpy())


def test_grad_outputs_weight_the_outputs():
    x = t64([1.0, 2.0, 3.0])
    (g,) = autograd.grad(x * x, x, grad_outputs=np.array([1.0, 0.0, 2.0]))
    np.testing.assert_array_equal(g.numpy(), [2.0, 0.0, 12.0])
    with pytest.raises(RuntimeError, match="one-element"):
        autograd.grad(x * x, x)


def _mlp_loss(X, y_onehot, act):
    def f(W1, b1, W2, b2):
        if act == "linear_relu":                 # the fused op nn.Sequential uses
            h = ops.linear_relu(X, W1, b1)
        else:
            h = ops.linear(X, W1, b1)
            h = h.tanh() if act == "tanh" else h.relu()
        logits = ops.linear(h, W2, b2)
        return -(ops.log_softmax(logits) * y_onehot).sum() / X.shape[0]
    return f


def _mlp_problem(act, seed):
    """A small MLP's loss, its float64 parameters and a random direction v."""
    rng = np.random.default_rng(seed)
    X = t64(rng.standard_normal((8, 4)), rg=False)
    Y = np.eye(3)[rng.integers(0, 3, 8)]
    params = _mlp_params(rng)
    return _mlp_loss(X, Y, act), params, tuple(rng.standard_normal(p.shape) for p in params)


def _mlp_params(rng):
    return (t64(rng.standard_normal((5, 4)) * 0.7), t64(rng.standard_normal(5) * 0.1),
            t64(rng.standard_normal((3, 5)) * 0.7), t64(rng.standard_normal(3) * 0.1))


@pytest.mark.parametrize("act", ["tanh", "relu", "linear_relu"])
def test_hvp_of_mlp_loss_equals_dense_hessian_times_v(act):
    f, params, v = _mlp_problem(act, seed=0)
    value, hv = autograd.hvp(f, params, v)
    assert value.item() == pytest.approx(f(*params).item(), rel=1e-14)
    H = autograd.hessian(f, params)
    sizes = [p.size for p in params]
    dense = np.block([[H[i][j].numpy().reshape(sizes[i], sizes[j]) for j in range(4)] for i in range(4)])
    np.testing.assert_allclose(dense, dense.T, atol=1e-12)        # a Hessian is symmetric
    expected = dense @ np.concatenate([vi.ravel() for vi in v])
    np.testing.assert_allclose(np.concatenate([h.numpy().ravel() for h in hv]), expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("act,eps", [("tanh", 1e-5), ("relu", 1e-8)])
def test_hvp_of_mlp_loss_matches_central_differences_of_gradient(act, eps):
    """On a ReLU net the difference step must stay below the distance to the nearest kink."""
    f, params, v = _mlp_problem(act, seed=1)
    assert tg.hvpcheck(f, params, v, eps=eps, atol=1e-6, rtol=1e-4)


def test_hvp_of_quadratic_is_matrix_vector_product():
    A = np.array([[3.0, 1.0], [1.0, 2.0]])
    x = t64([0.5, -1.0])
    _, hv = autograd.hvp(lambda x: 0.5 * (x @ (tg.Tensor(A) @ x)), x, np.array([1.0, 2.0]))
    np.testing.assert_allclose(hv.numpy(), A @ [1.0, 2.0], rtol=1e-14)


def test_hvp_of_linear_function_is_zero_and_shape_errors():
    x = t64([1.0, 2.0])
    _, hv = autograd.hvp(lambda x: (x * 3).sum(), x, np.ones(2))
    np.testing.assert_array_equal(hv.numpy(), [0.0, 0.0])
    with pytest.raises(ValueError, match=r"v\[0\] has shape \(3,\)"):
        autograd.hvp(lambda x: (x * x).sum(), x, np.ones(3))
    with pytest.raises(RuntimeError, match="one-element"):
        autograd.hvp(lambda x: x * x, x, np.ones(2))


def test_hessian_shapes_and_values():
    x = t64(np.array([[1.0, 2.0], [3.0, 4.0]]))
    H = autograd.hessian(lambda x: (x ** 3).sum(), x)
    assert H.shape == (2, 2, 2, 2)
    expected = np.zeros((4, 4))
    np.fill_diagonal(expected, 6 * x.numpy().ravel())
    np.testing.assert_allclose(H.numpy().reshape(4, 4), expected)
    a, b = t64([1.0]), t64([2.0, 3.0])
    Hab = autograd.hessian(lambda a, b: (a * b).sum() * a.sum(), (a, b))
    assert Hab[0][1].shape == (1, 2)
    np.testing.assert_allclose(Hab[0][1].numpy(), [[2.0, 2.0]])    # f = a^2 (b1+b2): d2f/da db_j = 2a
    np.testing.assert_allclose(Hab[0][0].numpy(), [[10.0]])        # d2f/da2 = 2 (b1 + b2)


def test_parameters_to_vector_round_trip():
    p = [t64(np.arange(6.0).reshape(2, 3)), t64([7.0])]
    v = autograd.parameters_to_vector(p)
    np.testing.assert_array_equal(v.numpy(), [0, 1, 2, 3, 4, 5, 7])
    autograd.vector_to_parameters(v * 2, p)
    np.testing.assert_array_equal(p[0].numpy(), np.arange(6.0).reshape(2, 3) * 2)
    assert p[1].item() == 14.0
    with pytest.raises(ValueError, match="7 parameter elements"):
        autograd.vector_to_parameters(np.zeros(5), p)


def test_grad_results_are_writable_arrays_of_their_own():
    """A gradient that is a view of another array (sum's broadcast ones) comes back copied."""
    x = t64([1.0, 2.0])
    (g,) = autograd.grad(x.sum(), x)
    g.data += 1                                  # would fail on a read-only broadcast view
    np.testing.assert_array_equal(g.numpy(), [2.0, 2.0])
    y = t64([1.0, 2.0])
    ga, gb = autograd.grad((x + y).sum(), (x, y))
    ga.data *= 10
    np.testing.assert_array_equal(gb.numpy(), [1.0, 1.0])


@pytest.mark.parametrize("act", ["tanh", "relu", "linear_relu"])
def test_hvp_dot_mode_agrees_with_forming_the_gradient(act, monkeypatch):
    """hvp's first pass takes <g_i, v_i> from Linear.vjp_dot without forming g_i; removing
    that shortcut (so every g_i is formed and dotted) must give the same product."""
    f, params, v = _mlp_problem(act, seed=3)
    _, fast = autograd.hvp(f, params, v)
    monkeypatch.delattr(ops.LinearReLU, "vjp_dot")
    monkeypatch.delattr(ops.Linear, "vjp_dot")
    _, plain = autograd.hvp(f, params, v)
    for a, b in zip(fast, plain):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-12, atol=1e-14)


def test_hvp_dot_mode_for_matmul_leaves_and_leaf_roots():
    """x @ W and a loss that is a parameter itself, both through hvp, against the dense Hessian."""
    rng = np.random.default_rng(4)
    A = rng.standard_normal((3, 4))
    W = t64(rng.standard_normal((4, 2)))
    a = t64(0.7)

    def f(W, a):
        return ((tg.Tensor(A) @ W).tanh() ** 2).sum() * a + a + (W @ W.T).sum()

    v = (rng.standard_normal((4, 2)), np.array(0.3))
    _, (hW, ha) = autograd.hvp(f, (W, a), v)
    H = autograd.hessian(f, (W, a))
    dense = np.block([[H[0][0].numpy().reshape(8, 8), H[0][1].numpy().reshape(8, 1)],
                      [H[1][0].numpy().reshape(1, 8), H[1][1].numpy().reshape(1, 1)]])
    expected = dense @ np.concatenate([v[0].ravel(), [0.3]])
    np.testing.assert_allclose(np.concatenate([hW.numpy().ravel(), [ha.item()]]), expected,
                               rtol=1e-10, atol=1e-12)
    value, h = autograd.hvp(lambda a: a, a, 1.0)      # the loss is the parameter itself
    assert value.item() == 0.7 and h.item() == 0.0


def test_hvp_dot_mode_with_every_linear_input_a_leaf():
    rng = np.random.default_rng(5)
    x, W, b = t64(rng.standard_normal((3, 4))), t64(rng.standard_normal((2, 4))), t64(rng.standard_normal(2))

    def f(x, W, b):
        return (ops.linear(x, W, b).tanh() ** 2).sum()

    v = tuple(rng.standard_normal(p.shape) for p in (x, W, b))
    _, hv = autograd.hvp(f, (x, W, b), v)
    H = autograd.hessian(f, (x, W, b))
    sizes = [12, 8, 2]
    dense = np.block([[H[i][j].numpy().reshape(sizes[i], sizes[j]) for j in range(3)] for i in range(3)])
    expected = dense @ np.concatenate([vi.ravel() for vi in v])
    np.testing.assert_allclose(np.concatenate([h.numpy().ravel() for h in hv]), expected,
                               rtol=1e-10, atol=1e-12)
