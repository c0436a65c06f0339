"""The backward engine: accumulation, graph freeing, deep chains, higher order, no_grad, anomalies."""
import gc
import weakref

import numpy as np
import pytest

import tinygrad_opt as tg
from tinygrad_opt import autograd
from tinygrad_opt.engine import Function


def t64(a, rg=True):
    return tg.Tensor(np.asarray(a, dtype=np.float64), requires_grad=rg)


def test_gradients_accumulate_until_zeroed():
    x = t64([1.0, 2.0])
    (x * x).sum().backward()
    (3 * x).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [2 + 3, 4 + 3])
    x.grad = None
    (x * x).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [2, 4])


def test_shared_gradient_arrays_are_not_aliased_between_leaves():
    """Add returns g for both inputs; scaling one leaf's grad must not touch the other's."""
    x, y = t64([1.0, 2.0]), t64([3.0, 4.0])
    (x + y).sum().backward()
    x.grad.data *= 10
    np.testing.assert_array_equal(y.grad.numpy(), [1, 1])


def test_same_input_twice_accumulates():
    x = t64([3.0])
    (x * x * x).sum().backward()           # d/dx x^3 = 3x^2
    np.testing.assert_allclose(x.grad.numpy(), [27.0])
    y = t64([2.0])
    (y + y).backward()
    np.testing.assert_array_equal(y.grad.numpy(), [2.0])


def test_diamond_graph():
    x = t64(0.7)
    a = x.tanh()
    b = a * a + a.exp()                     # both branches of a meet again
    b.backward()
    th = np.tanh(0.7)
    np.testing.assert_allclose(x.grad.item(), (2 * th + np.exp(th)) * (1 - th ** 2), rtol=1e-14)


def test_second_backward_through_freed_graph_raises():
    x = t64([1.0, 2.0])
    y = (x.tanh() * 2).sum()
    y.backward()
    with pytest.raises(RuntimeError, match="retain_graph=True"):
        y.backward()


def test_retain_graph_allows_second_backward():
    x = t64([1.0, 2.0])
    y = (x * x).sum()
    y.backward(retain_graph=True)
    y.backward()
    np.testing.assert_array_equal(x.grad.numpy(), [4.0, 8.0])


def test_backward_on_non_scalar_needs_grad():
    x = t64([[1.0, 2.0]])
    with pytest.raises(RuntimeError, match=r"one-element output.*\(1, 2\)"):
        (x * 2).backward()
    (x * 2).backward(np.array([[1.0, 10.0]]))
    np.testing.assert_array_equal(x.grad.numpy(), [[2.0, 20.0]])


def test_backward_grad_of_wrong_shape_is_an_error():
    x = t64([1.0, 2.0])
    with pytest.raises(RuntimeError, match=r"shape \(3,\).*\(2,\)"):
        (x * 2).backward(np.ones(3))


def test_backward_without_graph_is_an_error():
    with pytest.raises(RuntimeError, match="does not require grad"):
        tg.Tensor([1.0]).sum().backward()


def test_chain_of_100000_ops_has_no_recursion_error():
    x = t64(1.0)
    y = x
    for _ in range(100_000):
        y = y * 1.0
    y.backward()
    assert x.grad.item() == 1.0


def test_freed_intermediates_are_garbage_collected():
    x = t64(np.ones(4))
    h = x.tanh()
    ref = weakref.ref(h)
    loss = (h * 3).sum()
    del h
    assert ref() is not None                # the graph keeps h alive ...
    loss.backward()
    assert ref() is None                    # ... until backward frees it (no cycles: no gc needed)


def test_backward_frees_what_a_held_node_saved():
    """A node kept alive by a Tensor the caller still holds drops its saved arrays."""
    x = t64(np.array([-1.0, 2.0]))
    h = x.relu()                            # ReLU saves its mask on the node
    assert "mask" in vars(h._node)
    (h * 3).sum().backward()
    assert vars(h._node) == {} and h._node.inputs is None


def test_order_with_chains_that_fork_and_join():
    """Chains meet and split (x feeds two chains of different length that join again, and a
    node's two inputs are the same tensor): every node runs once, after all its consumers."""
    x = t64(np.array([0.3, -0.7]))
    a = x * 2.0
    b = (x.tanh() * 3.0).exp()
    c = a * b + a * a
    c.sum().backward()
    xd = x.data
    th, e = np.tanh(xd), np.exp(3.0 * np.tanh(xd))
    expected = 2.0 * e + 2.0 * xd * e * 3.0 * (1 - th ** 2) + 8.0 * xd
    np.testing.assert_allclose(x.grad.numpy(), expected, rtol=1e-13)


def test_a_gradient_dies_once_its_consumer_has_run():
    """The engine keeps no stray reference to a gradient it has passed on: the array a
    three-input node hands down is freed as soon as the node below has used it."""
    refs, alive = [], []

    class Three(Function):
        @staticmethod
        def forward(ctx, x, w, b):
            return x * w + b

        @staticmethod
        def backward(ctx, g):
            x, w, b = ctx.inputs
            gx = g * w
            refs.append(weakref.ref(gx))
            return gx, (g * x).sum(), g.sum()

    class Copy(Function):
        @staticmethod
        def forward(ctx, x):
            return x.copy()

        @staticmethod
        def backward(ctx, g):
            alive.append([r() is not None for r in refs])
            return g * 1.0

    x = t64(np.ones(1000))
    w, b = t64(2.0), t64(0.5)
    y = Copy.apply(Copy.apply(x))
    Three.apply(y, w, b).sum().backward()
    # the first Copy to run holds gx as its g; by the time the second runs gx is gone
    assert alive == [[True], [False]]
    np.testing.assert_array_equal(x.grad.numpy(), 2.0)


def test_graph_has_no_reference_cycles():
    gc.collect()
    gc.disable()
    try:
        x = t64(np.ones(3))
        loss = ((x * 2).tanh() + x.exp()).sum()
        ref = weakref.ref(loss._node)
        del loss
        assert ref() is None                # freed by reference counting alone
    finally:
        gc.enable()


def test_no_grad_records_nothing():
    x = t64([1.0])
    with tg.no_grad():
        y = x * 2
    assert not y.requires_grad and y._node is None
    with tg.no_grad():
        with tg.enable_grad():
            z = x * 2
    assert z.requires_grad


def test_detach_cuts_the_graph_and_shares_data():
    x = t64([1.0, 2.0])
    d = (x * 2).detach()
    assert not d.requires_grad and d.is_leaf
    y = (x * d).sum()
    y.backward()
    np.testing.assert_array_equal(x.grad.numpy(), [2.0, 4.0])   # d treated as a constant


def test_branches_that_need_no_gradient_are_skipped():
    """Gradients flow only into tensors that require them; constants get none."""
    x = t64([1.0, 2.0])
    c = tg.Tensor(np.array([3.0, 4.0]))
    (x * c).sum().backward()
    assert c.grad is None
    np.testing.assert_array_equal(x.grad.numpy(), [3.0, 4.0])


def test_third_derivative_of_tanh_matches_closed_form():
    """d3/dx3 tanh = -2 sech^2 (1 - 3 tanh^2) = 6 tanh^2 sech^2 - 2 sech^2."""
    xs = np.array([-1.3, -0.2, 0.0, 0.4, 1.7])
    x = t64(xs)
    (g1,) = autograd.grad(x.tanh().sum(), x, create_graph=True)
    (g2,) = autograd.grad(g1.sum(), x, create_graph=True)
    (g3,) = autograd.grad(g2.sum(), x)
    t, s2 = np.tanh(xs), 1 - np.tanh(xs) ** 2
    np.testing.assert_allclose(g1.numpy(), s2, rtol=1e-13)
    np.testing.assert_allclose(g2.numpy(), -2 * t * s2, rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(g3.numpy(), 6 * t ** 2 * s2 - 2 * s2, rtol=1e-12)


def test_fourth_derivative_of_exp_times_x():
    """d^n/dx^n (x e^x) = (x + n) e^x."""
    x = t64(0.3)
    y = x * x.exp()
    for n in range(1, 5):
        (y,) = autograd.grad(y, x, create_graph=True)
        assert y.item() == pytest.approx((0.3 + n) * np.exp(0.3), rel=1e-13)


def test_create_graph_backward_leaves_differentiable_grad():
    x = t64([1.0, 2.0])
    (x ** 3).sum().backward(create_graph=True)
    assert x.grad.requires_grad            # 3 x^2, differentiable again
    (gg,) = autograd.grad(x.grad.sum(), x)
    np.testing.assert_allclose(gg.numpy(), [6.0, 12.0])


def test_float32_parameters_get_float32_gradients():
    W = tg.Tensor(np.ones((2, 3), np.float32), requires_grad=True)
    x = tg.Tensor(np.ones((4, 2, 3), np.float64))    # float64 data promotes the forward
    (x * W).sum().backward()                          # (a product would refuse the mix)
    assert W.grad.dtype == np.float32
    np.testing.assert_array_equal(W.grad.numpy(), np.full((2, 3), 4.0))


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_detect_anomaly_names_the_op_in_forward_and_backward():
    x = t64([0.0, 1.0])
    with tg.detect_anomaly():
        with pytest.raises(RuntimeError, match="Log produced Inf in its forward"):
            x.log()
        y = x.sqrt().sum()                   # forward finite, backward 1/(2 sqrt 0) = inf
        with pytest.raises(RuntimeError, match="Sqrt produced Inf in its backward"):
            y.backward()
    x.log()                                  # off again: no error


def test_layer_apply_is_apply_for_the_layer_ops():
    """nn.Linear's written-out apply records what Function.apply records, and hands anomaly
    mode, constants and shape errors to the same places."""
    from tinygrad_opt import ops
    from tinygrad_opt.engine import layer_apply
    rng = np.random.default_rng(0)
    x, W, b = tg.Tensor(rng.standard_normal((5, 3))), t64(rng.standard_normal((4, 3))), t64(np.zeros(4))
    for cls in (ops.Linear, ops.LinearReLU):
        for bias in (b, None):
            fast, ref = layer_apply(cls, x, W, bias), cls.apply(x, W, bias)
            np.testing.assert_array_equal(fast.numpy(), ref.numpy())
            assert type(fast._node) is cls and fast._node.needs_input_grad == (False, True, bias is b)
            assert all(a is e for a, e in zip(fast._node.parents, (x, W, bias)))
            fast.sum().backward()
            first = W.grad.numpy().copy()
            W.grad = None
            ref.sum().backward()
            np.testing.assert_array_equal(W.grad.numpy(), first)
            W.grad = None
    with tg.no_grad():
        assert layer_apply(ops.Linear, x, W, b)._node is None
    assert layer_apply(ops.Linear, x, t64(W.numpy(), rg=False), None)._node is None
    W.data[0, 0] = np.nan
    with tg.detect_anomaly(), pytest.raises(RuntimeError, match="LinearReLU produced NaN in its forward"):
        layer_apply(ops.LinearReLU, x, W, b)
    with pytest.raises(ValueError, match=r"linear: input of shape \(5, 3\) does not match weight"):
        layer_apply(ops.Linear, x, t64(np.ones((4, 2))), None)


def test_backward_owned_runs_only_on_a_gradient_the_pass_owns():
    """A node's backward_owned (which may overwrite g) runs only when g is a fresh buffer of
    the pass that nothing else holds: not the caller's seed, not a view, not one array handed
    to two inputs, not a gradient autograd.grad returns, not under create_graph. Either way
    the gradients are backward's."""
    seen = []

    class Twice(Function):
        @staticmethod
        def forward(ctx, x):
            return x * 2

        @staticmethod
        def backward(ctx, g):
            seen.append("backward")
            return g * 2

        @staticmethod
        def backward_owned(ctx, g):
            seen.append("owned")
            g *= 2
            return g

    x = t64([1.0, -2.0, 3.0])
    cases = {
        "fresh": (lambda: (Twice.apply(x) * 3.0).sum(), "owned"),
        "seed": (lambda: Twice.apply(x), "backward"),
        "view": (lambda: Twice.apply(x).reshape(3, 1).sum(), "backward"),
        "two inputs": (lambda: (lambda y: (y + y).sum())(Twice.apply(x) * 3.0), "owned"),
        "shared by Add": (lambda: (lambda y: (y + Twice.apply(x)).sum())(x * 1.0), "backward"),
    }
    for name, (f, expect) in cases.items():
        seen.clear()
        x.grad = None
        out = f()
        out.backward(np.ones(out.shape))
        assert seen == [expect], name
        ref = {"fresh": 6.0, "seed": 2.0, "view": 2.0, "two inputs": 12.0, "shared by Add": 3.0}[name]
        np.testing.assert_array_equal(x.grad.numpy(), np.full(3, ref))
    seen.clear()
    t = Twice.apply(x)
    gt, gx = autograd.grad((t * 3.0).sum(), (t, x))     # t's gradient is returned: kept
    assert seen == ["backward"]
    np.testing.assert_array_equal(gt.numpy(), np.full(3, 3.0))
    np.testing.assert_array_equal(gx.numpy(), np.full(3, 6.0))
    seen.clear()
    autograd.grad((Twice.apply(x) * 3.0).sum(), x, create_graph=True)
    assert seen == ["backward"]


def test_linear_relu_masks_an_owned_gradient_in_place_with_the_same_result():
    """nn.Sequential's fused layers get their (owned) gradient masked in place: the gradients
    are those of Linear and ReLU as separate nodes, to the last bit."""
    from tinygrad_opt import nn, ops
    rng = np.random.default_rng(0)
    model = nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 6), nn.ReLU(), nn.Linear(6, 3))
    model.double()
    x = tg.Tensor(rng.standard_normal((7, 5)))
    y = np.array([0, 1, 2, 0, 1, 2, 0])
    tg.nn.functional.cross_entropy(model(x), y).backward()
    fused = [p.grad.numpy() for p in model.parameters()]
    ps = list(model.parameters())
    for p in ps:
        p.grad = None
    h = x
    for i in range(3):
        h = ops.Linear.apply(h, ps[2 * i], ps[2 * i + 1])
        if i < 2:
            h = ops.ReLU.apply(h)
    tg.nn.functional.cross_entropy(h, y).backward()
    for a, p in zip(fused, ps):
        np.testing.assert_array_equal(a, p.grad.numpy())


def test_unary_apply_is_apply_for_one_input_ops():
    """Tensor's one-input methods (and .T) through the written-out apply record what
    Function.apply records: the same values, node, gradients, no node without grad, and
    anomaly mode and a custom op's ValueError reported as apply reports them."""
    from tinygrad_opt import ops
    from tinygrad_opt.engine import unary_apply
    rng = np.random.default_rng(0)
    x = t64(rng.uniform(0.2, 0.9, (3, 2)))
    for cls in (ops.Exp, ops.Log, ops.Tanh, ops.Sigmoid, ops.Neg, ops.Transpose, ops.Sqrt):
        fast, ref = unary_apply(cls, x), cls.apply(x)
        np.testing.assert_array_equal(fast.numpy(), ref.numpy())
        assert type(fast._node) is cls and fast._node.needs_input_grad == (True,)
        assert fast._node.parents[0] is x and fast._node.inputs[0] is x.data
        gy = rng.standard_normal(fast.shape)
        (a,) = autograd.grad(fast, x, grad_outputs=gy)
        (b,) = autograd.grad(ref, x, grad_outputs=gy)
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    np.testing.assert_array_equal(x.T.numpy(), x.numpy().T)
    assert type(x.T._node) is ops.Transpose and x.T.data.base is x.data     # a view
    with tg.no_grad():
        assert x.exp()._node is None and not x.T.requires_grad
    assert t64([1.0], rg=False).exp()._node is None
    assert unary_apply(ops.Sum, t64([1.0, 2.0])).data.shape == ()          # 0-d, an array
    with tg.detect_anomaly(), pytest.raises(RuntimeError, match="Log produced NaN in its forward"):
        with np.errstate(invalid="ignore"):
            t64([-1.0]).log()

    class Picky(tg.Function):
        @staticmethod
        def forward(ctx, x):
            raise ValueError("bad input")
    with pytest.raises(ValueError, match=r"picky: cannot apply to shapes \(3, 2\) \(bad input\)"):
        unary_apply(Picky, x)


def test_custom_function_with_wrong_gradient_shape_is_reported():
    class Bad(tg.Function):
        @staticmethod
        def forward(ctx, x):
            return x * 2

        @staticmethod
        def backward(ctx, g):
            return g.sum()

    x = t64([1.0, 2.0])
    with pytest.raises(RuntimeError, match=r"Bad.backward returned a gradient of shape \(\)"):
        Bad.apply(x).sum().backward()


def test_elementwise_gradients_of_broadcast_inputs_are_summed_by_the_engine():
    """Add, Sub, Mul and Div return gradients of the output's shape (_broadcast_grads); the
    engine sums them to each input's shape. Closed forms for
    L = sum_ij (x_ij + b_j) c_i - b_j / c_i - s x_ij with x (3, 4), b (4,), c (3, 1), s ()."""
    rng = np.random.default_rng(0)
    x, b = t64(rng.standard_normal((3, 4))), t64(rng.standard_normal(4))
    c, s = t64(rng.uniform(1.0, 2.0, (3, 1))), t64(0.5)
    ((x + b) * c - b / c - s * x).sum().backward()
    cv, bv, xv = c.numpy(), b.numpy(), x.numpy()
    np.testing.assert_allclose(x.grad.numpy(), np.broadcast_to(cv - 0.5, (3, 4)), rtol=1e-14)
    np.testing.assert_allclose(b.grad.numpy(), (cv - 1 / cv).sum() * np.ones(4), rtol=1e-14)
    np.testing.assert_allclose(c.grad.numpy()[:, 0],
                               (xv + bv).sum(1) + bv.sum() / cv[:, 0] ** 2, rtol=1e-14)
    np.testing.assert_allclose(s.grad.numpy(), -xv.sum(), rtol=1e-14)
    # a broadcast input used twice: its summed gradient is accumulated in place, which must
    # touch neither the gradient Add shares with x nor the one delivered by the pass before
    x.grad = b.grad = None
    (x + b + b).sum().backward()
    first = b.grad.numpy().copy()
    (x + b + b).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), 2 * np.ones((3, 4)))
    np.testing.assert_array_equal(first, 6 * np.ones(4))
    np.testing.assert_array_equal(b.grad.numpy(), 12 * np.ones(4))
    # under detect_anomaly every gradient goes through the engine's check, which must not
    # take the g that Add hands to both inputs for a buffer of its own
    x.grad = None
    y = t64(np.ones((3, 4)))
    with tg.detect_anomaly():
        ((x + y) + x).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), 2 * np.ones((3, 4)))
    np.testing.assert_array_equal(y.grad.numpy(), np.ones((3, 4)))
    # create_graph: the sums are recorded, so the second derivative is exact
    (gb,) = autograd.grad(((x + b) * c).sum(), (b,), create_graph=True)
    (gc_,) = autograd.grad(gb.sum(), (c,))
    np.testing.assert_array_equal(gc_.numpy(), 4 * np.ones((3, 1)))


def test_operator_fast_path_and_apply_build_the_same_graph():
    """Tensor's operators write apply's lines out inline; both must record the same node."""
    from tinygrad_opt import ops
    a = t64([[1.0, 2.0], [3.0, 4.0]])
    b = t64([0.5, -1.0], rg=False)
    for op, cls in ((lambda x, y: x * y, ops.Mul), (lambda x, y: x + y, ops.Add),
                    (lambda x, y: x - y, ops.Sub), (lambda x, y: x / y, ops.Div)):
        for x, y in ((a, b), (b, a), (a, 2.0), (3.0, a)):
            fast, slow = op(x, y), cls.apply(x, y)
            nf, ns = fast._node, slow._node
            assert type(nf) is type(ns) is cls
            assert all(p is q for p, q in zip(nf.parents, ns.parents)) and len(nf.parents) == 2
            assert nf.needs_input_grad == tuple(ns.needs_input_grad)
            assert all((p is q) or (type(p) is float and p == q) for p, q in zip(nf.inputs, ns.inputs))
            np.testing.assert_array_equal(nf.out, ns.out)
            assert nf.xp is ns.xp and nf.seq > ns.seq                 # numbered in creation order
            assert fast.requires_grad and slow.requires_grad and fast.grad is None
            (fast * 1.0).sum().backward()
            g_fast = a.grad.numpy()
            a.grad = None
            (slow * 1.0).sum().backward()
            np.testing.assert_array_equal(a.grad.numpy(), g_fast)
            a.grad = None
    with tg.no_grad():
        for r in (a * b, ops.Mul.apply(a, b)):
            assert r._node is None and not r.requires_grad
