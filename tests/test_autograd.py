"""autograd.grad semantics, hvp against the dense Hessian and finite differences, helpers."""
import numpy as np
import pytest

import tinygrad_opt as tg
from tinygrad_opt import autograd, ops
from tinygrad_opt.nn import functional as F


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


def _dense_hvp(f, params, v):
    H = autograd.hessian(f, params)
    sizes = [p.size for p in params]
    dense = np.block([[H[i][j].numpy().reshape(sizes[i], sizes[j]) for j in range(len(params))]
                      for i in range(len(params))])
    return dense @ np.concatenate([np.ravel(vi) for vi in v])


class _Scale(tg.Function):
    """y = x * w (same shapes), with a vjp_dot that returns the scalar term, as
    docs/custom_functions.md documents: <g * x, v_w> for a dotted w."""
    @staticmethod
    def forward(ctx, x, w):
        return x * w

    @staticmethod
    def backward(ctx, g):
        x, w = ctx.inputs
        return g * w, g * x

    @staticmethod
    def vjp_dot(ctx, g, vs):
        x, w = ctx.inputs
        return (g * x * vs[1]).sum()


def test_hvp_dot_mode_takes_scalar_terms_pairs_and_broadcast_biases():
    """A custom vjp_dot returning the scalar term, Sub's and Add's broadcast bias terms and
    MatMul's pairs, all in one loss: the dense Hessian times v, and the same without any
    vjp_dot (every gradient formed and dotted)."""
    rng = np.random.default_rng(6)
    X = t64(rng.standard_normal((5, 3)), rg=False)
    W, c, w, d = (t64(rng.standard_normal(s) * 0.5) for s in ((3, 4), (4,), (5, 4), (1, 4)))

    def f(W, c, w, d):
        h = ((X @ W) - c).tanh()
        return ((_Scale.apply(h, w) + d) ** 2).sum()

    v = tuple(rng.standard_normal(p.shape) for p in (W, c, w, d))
    expected = _dense_hvp(f, (W, c, w, d), v)
    _, hv = autograd.hvp(f, (W, c, w, d), v)
    np.testing.assert_allclose(_flatv(hv), expected, rtol=1e-10, atol=1e-12)
    for cls in (_Scale, ops.MatMul, ops.Add, ops.Sub):
        assert "vjp_dot" in cls.__dict__
    saved = {cls: cls.__dict__["vjp_dot"] for cls in (_Scale, ops.MatMul, ops.Add, ops.Sub)}
    try:
        for cls in saved:
            delattr(cls, "vjp_dot")
        _, plain = autograd.hvp(f, (W, c, w, d), v)
    finally:
        for cls, rule in saved.items():
            setattr(cls, "vjp_dot", rule)
    np.testing.assert_allclose(_flatv(plain), expected, rtol=1e-10, atol=1e-12)


def test_hvp_first_backward_records_only_the_backward_products():
    """The dot terms are seeds of the second backward, not nodes: for cross-entropy of
    relu(X W1^T + b1) W2^T + b2 the first backward records cross-entropy's gradient G and
    G W2, and nothing for the four dotted parameters."""
    from tinygrad_opt import engine, versions
    rng = np.random.default_rng(7)
    X, y = t64(rng.standard_normal((8, 4)), rg=False), rng.integers(0, 3, 8)
    params = _mlp_params(rng)
    v = tuple(rng.standard_normal(p.shape) for p in params)

    def f(W1, b1, W2, b2):
        return F.cross_entropy(ops.linear(X, W1, b1).relu() @ W2.T + b2, y)

    out = f(*params)
    start = versions.next_seq()
    seed = tg.Tensor._wrap(np.ones_like(out.data))
    pairs = engine.run_backward((out,), (seed,), inputs=params, create_graph=True,
                                retain_graph=True, dots=dict(zip(params, v)))
    recorded, seen = [], set()
    stack = [t._node for t, _ in pairs if t._node is not None]
    while stack:
        n = stack.pop()
        if n in seen:
            continue
        seen.add(n)
        if n.seq < start:                   # created during the first backward
            recorded.append(type(n).__name__)
        stack += [p._node for p in n.parents if type(p) is tg.Tensor and p._node is not None]
    assert sorted(recorded) == ["ClassCrossEntropyGrad", "MatMul"]
    roots, seeds = zip(*pairs)
    hv = engine.run_backward(roots, seeds, inputs=params)
    np.testing.assert_allclose(_flatv(hv), _dense_hvp(f, params, v), rtol=1e-10, atol=1e-12)


def test_hvp_takes_the_array_rop_sweep_where_every_node_has_a_rule():
    """Linear, LinearReLU, ReLU and class cross-entropy have backward_jvp rules: hvp's default
    runs engine.tangent_backward on them (no graph of the backward), here with the input
    itself among the differentiated leaves and a bias-free layer; the dense Hessian times v,
    and the double backward's and forward-over-reverse's products, agree. With a power and a
    sum (no rule) the sweep declines, and the default falls back to the double backward."""
    from tinygrad_opt import engine
    rng = np.random.default_rng(8)
    y = rng.integers(0, 3, 6)

    def f(x, W1, b1, W2, b2, W3):
        h = ops.linear(x, W1, b1).relu()                     # LinearReLU
        h = ops.ReLU.apply(h @ W2.T + b2)                    # Linear, then a separate ReLU
        return F.cross_entropy(ops.linear(h, W3), y)

    shapes = ((6, 4), (5, 4), (5,), (4, 5), (4,), (3, 4))
    params = tuple(t64(rng.standard_normal(s) * 0.6) for s in shapes)
    v = tuple(rng.standard_normal(s) for s in shapes)
    expected = _dense_hvp(f, params, v)
    swept = engine.tangent_backward(f(*params), dict(zip(params, v)))
    assert swept is not None and set(swept) == set(params)
    np.testing.assert_allclose(np.concatenate([swept[p].ravel() for p in params]), expected,
                               rtol=1e-10, atol=1e-12)
    for mode in (None, "reverse", "forward"):
        _, hv = autograd.hvp(f, params, v, mode=mode)
        np.testing.assert_allclose(_flatv(hv), expected, rtol=1e-10, atol=1e-12)
    x, W, b = params[:3]
    power = (ops.linear(x, W, b).tanh() ** 2).sum()
    assert engine.tangent_backward(power, {W: v[1], b: v[2]}) is None


def _node_of(make, arrays):
    """The node make(*Tensors) records for float64 copies of arrays (all requiring grad)."""
    ts = [t64(a) for a in arrays]
    return make(*ts)._node


@pytest.mark.parametrize("name", ["linear", "linear_nd", "linear_relu", "relu", "tanh", "sigmoid",
                                  "class_cross_entropy"])
def test_backward_jvp_is_the_derivative_of_the_backward(name):
    """Each backward_jvp rule against central differences of the op's own backward: its
    gradients at (x + e t, g + e dg) minus those at (x - e t, g - e dg), over 2e, and its
    gradients against backward's."""
    rng = np.random.default_rng(9)
    y = rng.integers(0, 3, 4)
    make, shapes = {
        "linear": (lambda x, W, b: ops.linear(x, W, b), [(4, 3), (2, 3), (2,)]),
        "linear_nd": (lambda x, W: ops.linear(x, W), [(2, 4, 3), (2, 3)]),
        "linear_relu": (lambda x, W, b: ops.linear_relu(x, W, b), [(4, 3), (2, 3), (2,)]),
        "relu": (lambda x: ops.ReLU.apply(x), [(4, 3)]),
        "tanh": (lambda x: x.tanh(), [(4, 3)]),
        "sigmoid": (lambda x: x.sigmoid(), [(4, 3)]),
        "class_cross_entropy": (lambda x: F.cross_entropy(x, y), [(4, 3)]),
    }[name]
    xs = [rng.standard_normal(s) for s in shapes]
    ts = [rng.standard_normal(s) for s in shapes]
    n = _node_of(make, xs)
    g = rng.standard_normal(n.out.shape)
    tg = rng.standard_normal(n.out.shape)
    k = len(shapes)
    primal = [True] * k + [False] * (len(n.parents) - k)
    tangents = ts + [None] * (len(n.parents) - k)
    got = type(n).backward_jvp(n, g, tg, tangents, primal)
    plain = n.backward(n, g)
    plain = plain if type(plain) is tuple else (plain,)
    eps = 1e-6
    for i in range(k):
        np.testing.assert_allclose(got[i][0], plain[i], rtol=1e-13, atol=1e-15)
        up, down = (_node_of(make, [a + s * eps * t for a, t in zip(xs, ts)]) for s in (1, -1))
        gu, gd = up.backward(up, g + eps * tg), down.backward(down, g - eps * tg)
        gu, gd = (r if type(r) is tuple else (r,) for r in (gu, gd))
        np.testing.assert_allclose(got[i][1], (gu[i] - gd[i]) / (2 * eps), rtol=1e-6, atol=1e-8)



@pytest.mark.parametrize("xshape", [(4, 3), (2, 4, 3)])
@pytest.mark.parametrize("given", [(1, 1, 1), (1, 0, 0), (0, 1, 0), (0, 0, 1), (1, 1, 0), (0, 1, 1)])
def test_linear_tangent_rules_on_arrays_for_every_subset_of_tangents(xshape, given):
    """Linear's and LinearReLU's jvp on arrays (hvp's sweep, with a fast path for a batch of
    rows) against the closed form tx W^T + x tW^T + tb (times [y > 0] for LinearReLU), for
    each subset of inputs that carry a tangent, on a batch of rows and on a 3-D batch."""
    rng = np.random.default_rng(11)
    x, W, b = rng.standard_normal(xshape), rng.standard_normal((2, 3)), rng.standard_normal(2)
    tx, tW, tb = (rng.standard_normal(a.shape) if k else None for a, k in zip((x, W, b), given))
    expected = np.zeros(xshape[:-1] + (2,))
    for t, term in ((tx, lambda: tx @ W.T), (tW, lambda: x @ tW.T), (tb, lambda: tb)):
        if t is not None:
            expected = expected + term()
    for make in (ops.linear, ops.linear_relu):
        n = _node_of(make, [x, W, b])
        got = type(n).jvp(n, tx, tW, tb)
        want = expected if make is ops.linear else expected * (n.out > 0)
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=1e-13, atol=1e-14)

# ------------------------------------------------------------------ forward mode and the GGN
def _mlp(rng, sizes=(4, 5, 3)):
    return tuple(t64(rng.standard_normal(s) * 0.5) for s in
                 [(sizes[1], sizes[0]), (sizes[1],), (sizes[2], sizes[1]), (sizes[2],)])


def _model(X, act="tanh", spelling="linear"):
    def f(W1, b1, W2, b2):
        h = tg.Tensor(X)
        if spelling == "linear":
            h = getattr(ops.linear(h, W1, b1), act)()
            return ops.linear(h, W2, b2)
        h = getattr(h @ W1.T + b1, act)()
        return h @ W2.T + b2
    return f


def _flatv(ts):
    return np.concatenate([np.asarray(t.numpy() if isinstance(t, tg.Tensor) else t).ravel()
                           for t in ts])


def test_jvp_structure_follows_torch():
    x, y = t64([1.0, 2.0], rg=False), t64([3.0], rg=False)
    out, t = autograd.jvp(lambda a: a * a, x, np.array([1.0, 1.0]))
    assert isinstance(out, tg.Tensor) and isinstance(t, tg.Tensor)
    np.testing.assert_array_equal(t.numpy(), [2.0, 4.0])
    outs, ts = autograd.jvp(lambda a, b: (a * b, (a * b).sum()), (x, y),
                            (np.array([1.0, 0.0]), np.array([2.0])))
    assert isinstance(outs, tuple) and isinstance(ts, tuple) and len(ts) == 2
    np.testing.assert_array_equal(ts[0].numpy(), [3.0 + 2.0, 4.0])    # b dx + a db
    assert ts[1].item() == 9.0
    # v may be omitted only for a single one-element input
    _, t1 = autograd.jvp(lambda a: a * 3, t64([2.0], rg=False))
    assert t1.item() == 3.0
    with pytest.raises(RuntimeError, match="v can be omitted only"):
        autograd.jvp(lambda a: a, x)
    with pytest.raises(ValueError, match=r"jvp: v\[0\] has shape \(3,\) but inputs\[0\] has shape \(2,\)"):
        autograd.jvp(lambda a: a, x, np.ones(3))
    # an output the inputs do not reach has a zero tangent; outputs are detached
    out, t = autograd.jvp(lambda a: tg.Tensor([1.0, 1.0]) * 2, x, np.ones(2))
    np.testing.assert_array_equal(t.numpy(), [0.0, 0.0])
    assert not out.requires_grad


def test_vjp_structure_and_values():
    x = t64([1.0, 2.0, 3.0])
    A = np.arange(6.0).reshape(2, 3)
    out, g = autograd.vjp(lambda a: tg.Tensor(A) @ a, x, np.array([1.0, -1.0]))
    np.testing.assert_allclose(g.numpy(), np.array([1.0, -1.0]) @ A)
    assert not out.requires_grad
    outs, gs = autograd.vjp(lambda a, b: (a * b, b.sum()), (x, t64([2.0, 2.0, 2.0])),
                            (np.ones(3), np.array(2.0)))
    np.testing.assert_allclose(gs[0].numpy(), [2.0, 2.0, 2.0])
    np.testing.assert_allclose(gs[1].numpy(), [3.0, 4.0, 5.0])
    _, gz = autograd.vjp(lambda a: tg.Tensor([1.0]) * 1.0, x, np.ones(1))
    np.testing.assert_array_equal(gz.numpy(), 0.0)


@pytest.mark.parametrize("mode", ["reverse", "forward"])
def test_jacobian_shapes_and_values_in_both_modes(mode):
    rng = np.random.default_rng(0)
    A = rng.standard_normal((2, 3, 4))
    x = t64(rng.standard_normal(4))
    J = autograd.jacobian(lambda a: tg.Tensor(A) @ a, x, mode=mode)
    assert J.shape == (2, 3, 4)
    np.testing.assert_allclose(J.numpy(), A, rtol=0, atol=1e-15)
    y = t64(rng.standard_normal((2, 2)))
    Js = autograd.jacobian(lambda a, b: ((a * a).sum(), b * 2.0), (x, y), mode=mode)
    assert isinstance(Js, tuple) and len(Js) == 2 and len(Js[0]) == 2
    np.testing.assert_allclose(Js[0][0].numpy(), 2 * x.numpy())
    assert Js[0][1].shape == (2, 2) and not Js[0][1].numpy().any()
    assert Js[1][1].shape == (2, 2, 2, 2)
    np.testing.assert_allclose(Js[1][1].numpy().reshape(4, 4), 2 * np.eye(4))
    with pytest.raises(ValueError, match="mode must be"):
        autograd.jacobian(lambda a: a, x, mode="sideways")


def test_jacobian_create_graph_is_differentiable():
    x = t64([0.3, -0.7])
    for mode in ("reverse", "forward"):
        J = autograd.jacobian(lambda a: a.tanh() * 3.0, x, create_graph=True, mode=mode)
        (g,) = autograd.grad(J.sum(), x)
        t = np.tanh(x.numpy())                        # d/dx 3 (1 - tanh^2) = -6 tanh (1 - tanh^2)
        np.testing.assert_allclose(g.numpy(), -6 * t * (1 - t * t), rtol=1e-12)


@pytest.mark.parametrize("spelling", ["linear", "matmul"])
@pytest.mark.parametrize("act", ["tanh", "sigmoid", "relu"])
def test_hvp_modes_agree_with_the_dense_hessian(act, spelling):
    rng = np.random.default_rng(1)
    X, y = rng.standard_normal((6, 4)), np.array([0, 1, 2, 1, 0, 2])
    params = _mlp(rng)
    f = lambda *p: F.cross_entropy(_model(X, act, spelling)(*p), y)  # noqa: E731
    vs = tuple(rng.standard_normal(p.shape) for p in params)
    H = autograd.hessian(f, params)
    sizes = [p.size for p in params]
    dense = np.block([[H[i][j].numpy().reshape(sizes[i], sizes[j]) for j in range(4)]
                      for i in range(4)])
    for mode in (None, "reverse", "forward"):
        value, hv = autograd.hvp(f, params, vs, mode=mode)
        np.testing.assert_allclose(_flatv(hv), dense @ _flatv(vs), rtol=1e-10, atol=1e-12)
        assert value.item() == pytest.approx(f(*params).item())
    with pytest.raises(ValueError, match="mode must be"):
        autograd.hvp(f, params, vs, mode="both")


def test_hvp_forward_records_no_graph_and_leaves_inputs_alone():
    x = t64([0.5, -1.0])
    _, hv = autograd.hvp(lambda a: (a ** 3).sum(), x, np.array([1.0, 2.0]), mode="forward")
    np.testing.assert_allclose(hv.numpy(), 6 * x.numpy() * [1.0, 2.0])
    assert not hv.requires_grad and x.grad is None


def _dense_ggn(model, loss_fn, params):
    """J^T H_L J from jacobian (reverse) and hessian: the truth ggnvp must match."""
    out = model(*params)
    J = autograd.jacobian(model, params)
    Jm = np.concatenate([j.numpy().reshape(out.size, -1) for j in J], axis=1)
    HL = autograd.hessian(loss_fn, out.detach()).numpy().reshape(out.size, out.size)
    return Jm.T @ HL @ Jm


LOSSES = {
    "cross_entropy": lambda y: (lambda o: F.cross_entropy(o, y)),
    "cross_entropy_sum": lambda y: (lambda o: F.cross_entropy(o, y, reduction="sum")),
    "cross_entropy_weighted": lambda y: (lambda o: F.cross_entropy(o, y, weight=np.array([1.0, 2.0, 0.5]))),
    "mse": lambda y: (lambda o: F.mse_loss(o, np.eye(3)[y])),
    "mse_sum": lambda y: (lambda o: F.mse_loss(o, np.eye(3)[y], reduction="sum")),
    "bce": lambda y: (lambda o: F.binary_cross_entropy_with_logits(o, np.eye(3)[y])),
    "bce_pos_weight": lambda y: (lambda o: F.binary_cross_entropy_with_logits(
        o, np.eye(3)[y], pos_weight=np.array([2.0, 1.0, 3.0]))),
    "other": lambda y: (lambda o: (o.exp().sum(axis=1).log() * 0.5).sum() + (o * o * o).sum() * 0.01),
}
CLOSED = {"cross_entropy", "cross_entropy_sum", "cross_entropy_weighted", "mse", "mse_sum", "bce"}


@pytest.mark.parametrize("loss", sorted(LOSSES))
def test_ggnvp_equals_dense_jt_hl_j(loss, monkeypatch):
    rng = np.random.default_rng(2)
    X, y = rng.standard_normal((5, 4)), np.array([0, 1, 2, 1, 0])
    params = _mlp(rng)
    model, loss_fn = _model(X), LOSSES[loss](y)
    vs = tuple(rng.standard_normal(p.shape) for p in params)
    # which H_L path runs: the closed form for F's losses, double backward for the others
    calls = []
    real = autograd._loss_hessian_closed_form
    monkeypatch.setattr(autograd, "_loss_hessian_closed_form",
                        lambda *a: calls.append(r := real(*a)) or r)
    value, gv = autograd.ggnvp(model, loss_fn, params, vs)
    assert (calls[0] is not None) == (loss in CLOSED)
    G = _dense_ggn(model, loss_fn, params)
    np.testing.assert_allclose(_flatv(gv), G @ _flatv(vs), rtol=1e-10, atol=1e-12)
    assert value.item() == pytest.approx(loss_fn(model(*params)).item(), rel=1e-14)
    assert isinstance(gv, tuple) and [g.shape for g in gv] == [p.shape for p in params]


def test_ggn_of_a_linear_model_with_mse_is_the_hessian():
    rng = np.random.default_rng(3)
    X, Y = rng.standard_normal((7, 3)), rng.standard_normal((7, 2))
    W, b = t64(rng.standard_normal((2, 3))), t64(rng.standard_normal(2))
    model = lambda W, b: ops.linear(tg.Tensor(X), W, b)          # noqa: E731
    loss_fn = lambda o: F.mse_loss(o, Y)                         # noqa: E731
    for _ in range(3):
        v = (rng.standard_normal(W.shape), rng.standard_normal(b.shape))
        _, gv = autograd.ggnvp(model, loss_fn, (W, b), v)
        _, hv = autograd.hvp(lambda W, b: loss_fn(model(W, b)), (W, b), v)
        np.testing.assert_allclose(_flatv(gv), _flatv(hv), rtol=1e-12, atol=1e-14)


def test_ggnvp_single_input_and_errors():
    rng = np.random.default_rng(4)
    W = t64(rng.standard_normal((3, 4)))
    X = rng.standard_normal((2, 4))
    loss, gv = autograd.ggnvp(lambda W: tg.Tensor(X) @ W.T, lambda o: (o * o).sum() * 0.5, W,
                              np.ones((3, 4)))
    assert isinstance(gv, tg.Tensor) and gv.shape == (3, 4)
    # o = X W^T, loss = |o|^2 / 2: H_L = I, so G v = (X^T X V^T)^T = V X^T X
    np.testing.assert_allclose(gv.numpy(), np.ones((3, 4)) @ X.T @ X, rtol=1e-12)
    with pytest.raises(RuntimeError, match="one-element"):
        autograd.ggnvp(lambda W: W * 1.0, lambda o: o, W, np.ones((3, 4)))


def test_ggn_operator_is_positive_semidefinite_and_matches_ggnvp():
    from tinygrad_opt import curvature
    rng = np.random.default_rng(5)
    X, y = rng.standard_normal((8, 4)), rng.integers(0, 3, 8)
    params = list(_mlp(rng))
    model = _model(X, "tanh")
    op = curvature.GGNOperator(lambda: model(*params), lambda o: F.cross_entropy(o, y), params)
    v = rng.standard_normal(op.n)
    _, gv = autograd.ggnvp(model, lambda o: F.cross_entropy(o, y), tuple(params),
                           tuple(op.to_params(v)))
    np.testing.assert_allclose(op.matvec(v), _flatv(gv), rtol=1e-12, atol=1e-14)
    low = curvature.bottom_eigenvalues(op, k=1, max_iter=op.n, seed=0).eigenvalues[0]
    assert low >= -1e-10
    # the Hessian of the same loss is indefinite here, so the check can fail
    H = curvature.HVPOperator(lambda: F.cross_entropy(model(*params), y), params)
    assert curvature.bottom_eigenvalues(H, k=1, max_iter=H.n, seed=0).eigenvalues[0] < -1e-6
    top = curvature.top_eigenvalues(op, k=1, max_iter=op.n, seed=0).eigenvalues[0]
    G = _dense_ggn(model, lambda o: F.cross_entropy(o, y), tuple(params))
    assert top == pytest.approx(np.linalg.eigvalsh(G)[-1], rel=1e-8)
    np.testing.assert_allclose(op.dense(), G, rtol=1e-10, atol=1e-12)
    from tinygrad_opt import flat
    assert flat.GGNOperator is curvature.GGNOperator


def test_custom_function_without_a_tangent_rule_names_itself():
    from tinygrad_opt.engine import Function

    class Cube(Function):
        @staticmethod
        def forward(ctx, x):
            return x ** 3

        @staticmethod
        def backward(ctx, g):
            return g * 3 * ctx.inputs[0] ** 2

    x = t64([1.0, 2.0], rg=False)
    with pytest.raises(RuntimeError,
                       match="forward mode: Cube has no tangent rule; give it a static method jvp"):
        autograd.jvp(lambda a: Cube.apply(a).sum(), x, np.ones(2))
    with pytest.raises(RuntimeError, match="Cube has no tangent rule"):
        autograd.hvp(lambda a: Cube.apply(a).sum(), t64([1.0, 2.0]), np.ones(2), mode="forward")
    # without forward mode the op works as before
    assert Cube.apply(x).sum().item() == 9.0


def test_tangent_rule_shape_is_checked():
    from tinygrad_opt.engine import Function

    class Bad(Function):
        @staticmethod
        def forward(ctx, x):
            return x * 2

        @staticmethod
        def backward(ctx, g):
            return g * 2

        @staticmethod
        def jvp(ctx, t):
            return t.sum()

    with pytest.raises(RuntimeError,
                       match=r"Bad.jvp returned a tangent of shape \(\) for an output of shape \(2,\)"):
        autograd.jvp(lambda a: Bad.apply(a), t64([1.0, 2.0], rg=False), np.ones(2))


def test_nested_levels_give_second_derivatives_without_confusion():
    """d/dx [d/dy (x * y)] at a point: perturbation confusion would give 2, the truth is 1."""
    x = t64([3.0], rg=False)

    def inner(a):
        y = t64([5.0], rg=False)
        return autograd.jvp(lambda b: a * b, y, np.ones(1), create_graph=True)[1]

    _, t = autograd.jvp(inner, x, np.ones(1))
    assert t.item() == 1.0
    # and a scalar's second derivative by forward over forward
    f = lambda a: a.sin() * a   # noqa: E731
    _, tt = autograd.jvp(lambda a: autograd.jvp(f, a, np.ones(1), create_graph=True)[1],
                         x, np.ones(1))
    xv = 3.0
    assert tt.item() == pytest.approx(2 * np.cos(xv) - xv * np.sin(xv), rel=1e-12)



def test_products_at_a_modules_own_parameters():
    """func may close over the parameters it is given (a Module's): the products see them."""
    from tinygrad_opt import nn
    tg.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 3)).double()
    params = tuple(model.parameters())
    rng = np.random.default_rng(7)
    X, y = tg.Tensor(rng.standard_normal((6, 4))), np.array([0, 1, 2, 0, 1, 2])
    vs = tuple(rng.standard_normal(p.shape) for p in params)
    W1, b1, W2, b2 = params
    functional = lambda W1, b1, W2, b2: ops.linear(ops.linear(X, W1, b1).tanh(), W2, b2)  # noqa: E731
    closure = lambda *ps: model(X)                                                        # noqa: E731
    loss = lambda o: F.cross_entropy(o, y)                                                # noqa: E731
    _, g_ref = autograd.ggnvp(functional, loss, params, vs)
    _, g = autograd.ggnvp(closure, loss, params, vs)
    np.testing.assert_allclose(_flatv(g), _flatv(g_ref), rtol=1e-12)
    assert np.abs(_flatv(g)).max() > 1e-3
    for mode in ("reverse", "forward"):
        _, h_ref = autograd.hvp(lambda *ps: loss(functional(*ps)), params, vs, mode=mode)
        _, h = autograd.hvp(lambda *ps: loss(closure(*ps)), params, vs, mode=mode)
        np.testing.assert_allclose(_flatv(h), _flatv(h_ref), rtol=1e-12)
    _, t_ref = autograd.jvp(lambda *ps: loss(functional(*ps)), params, vs)
    _, t = autograd.jvp(lambda *ps: loss(closure(*ps)), params, vs)
    assert t.item() == pytest.approx(t_ref.item(), rel=1e-12) and t.item() != 0.0
    assert all(p.grad is None for p in params)
