"""Property-based tests: values, gradients and Hessian-vector products of the ops on random
shapes (broadcasting, keepdims, negative axes) against closed forms, and random programs
against finite differences.

Every derivative is compared with a formula written here in NumPy, independent of the
op's backward (gradients broadcast back by `unbroadcast`, not by ops.sum_to), with
assert_allclose, which fails on any NaN mismatch. First derivatives come from
autograd.grad, second ones from autograd.hvp (double backward) as H v for a random v.
Runtime: the hypothesis profile of tests/conftest.py (few examples in CI;
TINYGRAD_OPT_HYPOTHESIS_PROFILE=long for thousands).
"""
import numpy as np
import pytest
from hypothesis import assume, given, strategies as st
from hypothesis.extra import numpy as hnp

import tinygrad_opt as tg
from tinygrad_opt import autograd, ops
from tinygrad_opt.gradcheck import gradcheck, gradgradcheck
from tinygrad_opt.tensor import Tensor

F64 = np.float64
RTOL, ATOL = 1e-9, 1e-11


def floats(lo, hi):
    return st.floats(lo, hi, allow_nan=False, allow_infinity=False, allow_subnormal=False)


def away_from_zero(lo, hi):
    return st.one_of(floats(-hi, -lo), floats(lo, hi))


def arrays(shape, elements=None):
    return hnp.arrays(F64, shape, elements=floats(-3, 3) if elements is None else elements)


def unbroadcast(g, shape):
    """g summed down to `shape`, the reference for how a broadcast input's gradient adds up."""
    g = np.asarray(g, F64)
    while g.ndim > len(shape):
        g = g.sum(0)
    for i, n in enumerate(shape):
        if n == 1 and g.shape[i] != 1:
            g = g.sum(i, keepdims=True)
    return g


def derivatives(f, arrays_, w, vs):
    """(f(x), grad of <w, f(x)>, H v of <w, f(x)>) for inputs x = arrays_ (NumPy)."""
    xs = [Tensor(a, requires_grad=True) for a in arrays_]
    out = f(*xs)
    gs = autograd.grad((out * Tensor(w)).sum(), xs, allow_unused=True)
    _, hv = autograd.hvp(lambda *t: (f(*t) * Tensor(w)).sum(), tuple(xs), tuple(vs))
    zero = [np.zeros_like(a) for a in arrays_]
    return (out.numpy(), [z if g is None else g.numpy() for g, z in zip(gs, zero)],
            [h.numpy() for h in hv])


def close(actual, expected, what):
    np.testing.assert_allclose(actual, expected, rtol=RTOL, atol=ATOL, err_msg=what)
    assert np.shape(actual) == np.shape(expected), (what, np.shape(actual), np.shape(expected))


# ---------------------------------------------------------------- binary ops, broadcasting
# Each row: op, NumPy value, strategies for a and b, and the partial derivatives
# (fa, fb, faa, fab, fbb) as functions of the broadcast arrays a, b.
BINARY = {
    "add": (lambda a, b: a + b, np.add, None, None,
            lambda a, b: (1 + 0 * a * b, 1 + 0 * a * b, 0 * a * b, 0 * a * b, 0 * a * b)),
    "sub": (lambda a, b: a - b, np.subtract, None, None,
            lambda a, b: (1 + 0 * a * b, -1 + 0 * a * b, 0 * a * b, 0 * a * b, 0 * a * b)),
    "mul": (lambda a, b: a * b, np.multiply, None, None,
            lambda a, b: (b + 0 * a, a + 0 * b, 0 * a * b, 1 + 0 * a * b, 0 * a * b)),
    "div": (lambda a, b: a / b, np.divide, None, away_from_zero(0.5, 3),
            lambda a, b: (1 / b + 0 * a, -a / b**2, 0 * a * b, -1 / b**2 + 0 * a, 2 * a / b**3)),
    # b == 0 is drawn on purpose: the mixed partial a^(b-1) (1 + b log a) is 1/a there
    "pow": (lambda a, b: a ** b, np.power, floats(0.2, 3),
            st.one_of(st.just(0.0), away_from_zero(0.01, 2)),
            lambda a, b: (b * a ** (b - 1), a ** b * np.log(a), b * (b - 1) * a ** (b - 2),
                          a ** (b - 1) * (1 + b * np.log(a)), a ** b * np.log(a) ** 2)),
    # ties split the gradient evenly (STYLE: balanced at kinks); integers make ties common
    "maximum": (lambda a, b: a.maximum(b), np.maximum, st.integers(-2, 2).map(float),
                st.integers(-2, 2).map(float),
                lambda a, b: ((a > b) + 0.5 * (a == b), (b > a) + 0.5 * (a == b),
                              0 * a * b, 0 * a * b, 0 * a * b)),
    "minimum": (lambda a, b: a.minimum(b), np.minimum, st.integers(-2, 2).map(float),
                st.integers(-2, 2).map(float),
                lambda a, b: ((a < b) + 0.5 * (a == b), (b < a) + 0.5 * (a == b),
                              0 * a * b, 0 * a * b, 0 * a * b)),
}


@pytest.mark.parametrize("name", list(BINARY))
@given(data=st.data(), shapes=hnp.mutually_broadcastable_shapes(num_shapes=2, max_dims=3, max_side=3))
def test_binary_op_closed_forms(name, data, shapes):
    f, ref, ea, eb, partials = BINARY[name]
    sa, sb = shapes.input_shapes
    a = data.draw(arrays(sa, ea), label="a")
    b = data.draw(arrays(sb, eb), label="b")
    out_shape = shapes.result_shape
    w = data.draw(arrays(out_shape), label="w")
    va, vb = data.draw(arrays(sa), label="va"), data.draw(arrays(sb), label="vb")
    value, (ga, gb), (ha, hb) = derivatives(f, [a, b], w, [va, vb])
    close(value, ref(a, b), f"{name} value")
    A, B = np.broadcast_arrays(a, b)
    VA, VB = np.broadcast_to(va, out_shape), np.broadcast_to(vb, out_shape)
    fa, fb, faa, fab, fbb = partials(A, B)
    close(ga, unbroadcast(w * fa, sa), f"{name} d/da")
    close(gb, unbroadcast(w * fb, sb), f"{name} d/db")
    close(ha, unbroadcast(w * (faa * VA + fab * VB), sa), f"{name} (H v)_a")
    close(hb, unbroadcast(w * (fab * VA + fbb * VB), sb), f"{name} (H v)_b")


@pytest.mark.parametrize("side", ["left", "right"])
@given(data=st.data(), shape=hnp.array_shapes(min_dims=0, max_dims=3, max_side=3),
       c=away_from_zero(0.5, 2))
def test_python_number_operands(side, data, shape, c):
    # A Python number beside a tensor: c - x, c / x, x - c, x / c, c * x, x ** c.
    x = data.draw(arrays(shape, away_from_zero(0.5, 2)), label="x")
    w, v = data.draw(arrays(shape), label="w"), data.draw(arrays(shape), label="v")
    if side == "left":
        f = lambda t: c - t + c / t + c * t
        fx, fxx = -1 - c / x**2 + c, 2 * c / x**3
        val = c - x + c / x + c * x
    else:
        f = lambda t: t - c + t / c + abs(t) ** c
        ax = np.abs(x)
        fx = 1 + 1 / c + c * ax ** (c - 1) * np.sign(x)
        fxx = c * (c - 1) * ax ** (c - 2)
        val = x - c + x / c + ax ** c
    value, (g,), (h,) = derivatives(f, [x], w, [v])
    close(value, val, "value")
    close(g, w * fx, "gradient")
    close(h, w * fxx * v, "H v")


# ---------------------------------------------------------------- unary elementwise ops
_sig = lambda x: 1 / (1 + np.exp(-x))
UNARY = {   # name: (op, elements, f, f', f'')
    "exp": (lambda t: t.exp(), None, np.exp, np.exp, np.exp),
    "log": (lambda t: t.log(), floats(0.1, 5), np.log, lambda x: 1 / x, lambda x: -1 / x**2),
    "sqrt": (lambda t: t.sqrt(), floats(0.1, 5), np.sqrt, lambda x: 0.5 / np.sqrt(x),
             lambda x: -0.25 * x ** -1.5),
    "tanh": (lambda t: t.tanh(), None, np.tanh, lambda x: 1 - np.tanh(x)**2,
             lambda x: -2 * np.tanh(x) * (1 - np.tanh(x)**2)),
    "sigmoid": (lambda t: t.sigmoid(), floats(-8, 8), _sig, lambda x: _sig(x) * (1 - _sig(x)),
                lambda x: _sig(x) * (1 - _sig(x)) * (1 - 2 * _sig(x))),
    "relu": (lambda t: t.relu(), away_from_zero(0.01, 3), lambda x: np.maximum(x, 0),
             lambda x: (x > 0) * 1.0, lambda x: 0 * x),
    "abs": (lambda t: t.abs(), away_from_zero(0.01, 3), np.abs, np.sign, lambda x: 0 * x),
    "neg": (lambda t: -t, None, np.negative, lambda x: -1 + 0 * x, lambda x: 0 * x),
    "square": (lambda t: t.square(), None, np.square, lambda x: 2 * x, lambda x: 2 + 0 * x),
    "cube": (lambda t: t ** 3, None, lambda x: x**3, lambda x: 3 * x**2, lambda x: 6 * x),
    "clip": (lambda t: t.clip(-1, 1), st.one_of(floats(-3, -1.01), floats(-0.99, 0.99), floats(1.01, 3)),
             lambda x: np.clip(x, -1, 1), lambda x: (np.abs(x) < 1) * 1.0, lambda x: 0 * x),
    "softplus": (ops.softplus, floats(-20, 20), lambda x: np.logaddexp(0, x), _sig,
                 lambda x: _sig(x) * (1 - _sig(x))),
}


@pytest.mark.parametrize("name", list(UNARY))
@given(data=st.data(), shape=hnp.array_shapes(min_dims=0, max_dims=3, max_side=4))
def test_unary_op_closed_forms(name, data, shape):
    op, elements, f, f1, f2 = UNARY[name]
    x = data.draw(arrays(shape, elements), label="x")
    w, v = data.draw(arrays(shape), label="w"), data.draw(arrays(shape), label="v")
    value, (g,), (h,) = derivatives(op, [x], w, [v])
    close(value, f(x), f"{name} value")
    close(g, w * f1(x), f"{name}'")
    close(h, w * f2(x) * v, f"{name}''")


# ---------------------------------------------------------------- reductions over an axis
@st.composite
def shape_and_axis(draw, min_side=1):
    shape = draw(hnp.array_shapes(min_dims=1, max_dims=3, min_side=min_side, max_side=4))
    axis = draw(st.one_of(st.none(), st.integers(-len(shape), len(shape) - 1)))
    return shape, axis, draw(st.booleans())


def _expand(r, shape, axis, keepdims):
    """A reduced array (or its cotangent) broadcast back over the reduced axis."""
    if axis is None:
        return np.broadcast_to(np.reshape(r, (1,) * len(shape)), shape)
    return np.broadcast_to(r if keepdims else np.expand_dims(r, axis), shape)


@pytest.mark.parametrize("name", ["sum", "mean", "logsumexp"])
@given(data=st.data(), sak=shape_and_axis())
def test_smooth_reductions(name, data, sak):
    shape, axis, keepdims = sak
    x = data.draw(arrays(shape), label="x")
    ref = {"sum": np.sum, "mean": np.mean,
           "logsumexp": lambda a, axis, keepdims: np.log(np.exp(a).sum(axis=axis, keepdims=keepdims))}[name]
    y = ref(x, axis=axis, keepdims=keepdims)
    w = data.draw(arrays(np.shape(y)), label="w")
    v = data.draw(arrays(shape), label="v")
    op = {"sum": lambda t: t.sum(axis, keepdims), "mean": lambda t: t.mean(axis, keepdims),
          "logsumexp": lambda t: ops.logsumexp(t, axis, keepdims)}[name]
    value, (g,), (h,) = derivatives(op, [x], w, [v])
    close(value, y, f"{name} value")
    W = _expand(w, shape, axis, keepdims)
    n = x.size if axis is None else shape[axis]
    if name == "sum":
        close(g, W, "sum'")
        close(h, 0 * x, "sum''")
    elif name == "mean":
        close(g, W / n, "mean'")
        close(h, 0 * x, "mean''")
    else:   # p = softmax over the axis; d lse = p; H = diag(p) - p p^T per slice
        p = np.exp(x - _expand(y, shape, axis, keepdims))
        pv = _expand((p * v).sum(axis=axis, keepdims=keepdims), shape, axis, keepdims)
        close(g, W * p, "logsumexp'")
        close(h, W * (p * v - p * pv), "logsumexp''")


@pytest.mark.parametrize("name", ["max", "min"])
@given(data=st.data(), sak=shape_and_axis())
def test_max_min_split_ties_evenly(name, data, sak):
    shape, axis, keepdims = sak
    x = data.draw(arrays(shape, st.integers(-2, 2).map(float)), label="x")     # many ties
    ref = np.max if name == "max" else np.min
    y = ref(x, axis=axis, keepdims=keepdims)
    w = data.draw(arrays(np.shape(y)), label="w")
    op = (lambda t: t.max(axis, keepdims)) if name == "max" else (lambda t: t.min(axis, keepdims))
    value, (g,), (h,) = derivatives(op, [x], w, [np.ones(shape)])
    close(value, y, f"{name} value")
    hit = x == _expand(y, shape, axis, keepdims)
    count = _expand(hit.sum(axis=axis, keepdims=keepdims), shape, axis, keepdims)
    close(g, _expand(w, shape, axis, keepdims) * hit / count, f"{name}'")
    close(h, 0 * x, f"{name}''")


@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
@given(data=st.data(), shape=hnp.array_shapes(min_dims=1, max_dims=3, max_side=4))
def test_softmax_closed_forms(name, data, shape):
    axis = data.draw(st.integers(-len(shape), len(shape) - 1), label="axis")
    x = data.draw(arrays(shape, floats(-10, 10)), label="x")
    w, v = data.draw(arrays(shape), label="w"), data.draw(arrays(shape), label="v")
    op = ops.softmax if name == "softmax" else ops.log_softmax
    value, (g,), (h,) = derivatives(lambda t: op(t, axis), [x], w, [v])
    e = np.exp(x - x.max(axis, keepdims=True))
    p = e / e.sum(axis, keepdims=True)
    S = lambda a: a.sum(axis, keepdims=True)
    if name == "softmax":   # y = p; J^T w = p (w - <p, w>); H v from differentiating that in v
        close(value, p, "softmax value")
        close(g, p * (w - S(p * w)), "softmax'")
        dp = p * (v - S(p * v))                         # the tangent of p along v
        close(h, dp * (w - S(p * w)) - p * S(dp * w), "softmax''")
    else:                   # y = x - lse; J^T w = w - p sum(w); H v = -sum(w) (p v - p <p, v>)
        close(value, np.log(p), "log_softmax value")
        close(g, w - p * S(w), "log_softmax'")
        close(h, -S(w) * (p * v - p * S(p * v)), "log_softmax''")


# ---------------------------------------------------------------- matmul and shape ops
@st.composite
def matmul_shapes(draw):
    """Shapes for a @ b: vectors, matrices and broadcast batches, as NumPy's matmul allows."""
    n, k, m = (draw(st.integers(1, 3)) for _ in range(3))
    batch = draw(hnp.mutually_broadcastable_shapes(num_shapes=2, max_dims=2, max_side=2))
    ba, bb = batch.input_shapes
    sa = (k,) if draw(st.booleans()) else ba + (n, k)
    sb = (k,) if draw(st.booleans()) else bb + (k, m)
    return sa, sb


@given(data=st.data(), shapes=matmul_shapes())
def test_matmul_closed_forms(data, shapes):
    sa, sb = shapes
    a, b = data.draw(arrays(sa), label="a"), data.draw(arrays(sb), label="b")
    y = np.matmul(a, b)
    w = data.draw(arrays(y.shape), label="w")
    va, vb = data.draw(arrays(sa), label="va"), data.draw(arrays(sb), label="vb")
    value, (ga, gb), (ha, hb) = derivatives(lambda s, t: s @ t, [a, b], w, [va, vb])
    close(value, y, "matmul value")
    # Promote vectors to matrices, then the textbook ga = W B^T, gb = A^T W, summed over the
    # broadcast batch; <w, a b> is bilinear, so H v = (grad_a at b=vb, grad_b at a=va).
    A = a[None, :] if a.ndim == 1 else a
    B = b[:, None] if b.ndim == 1 else b
    W = w.reshape(np.matmul(A, B).shape)
    def ga_of(bb):
        BB = bb[:, None] if bb.ndim == 1 else bb
        return unbroadcast(W @ np.swapaxes(BB, -1, -2), A.shape).reshape(sa)
    def gb_of(aa):
        AA = aa[None, :] if aa.ndim == 1 else aa
        return unbroadcast(np.swapaxes(AA, -1, -2) @ W, B.shape).reshape(sb)
    close(ga, ga_of(b), "matmul d/da")
    close(gb, gb_of(a), "matmul d/db")
    close(ha, ga_of(vb), "matmul (H v)_a")
    close(hb, gb_of(va), "matmul (H v)_b")


@given(data=st.data(), shape=hnp.array_shapes(min_dims=1, max_dims=4, max_side=3))
def test_reshape_transpose_are_linear_maps(data, shape):
    x = data.draw(arrays(shape), label="x")
    perm = data.draw(st.permutations(range(len(shape))), label="perm")
    y = np.transpose(x, perm).reshape(-1)[::-1].reshape(x.size, 1)
    w = data.draw(arrays(y.shape), label="w")
    f = lambda t: t.transpose(*perm).reshape(-1)[::-1].reshape(x.size, 1)
    value, (g,), (h,) = derivatives(f, [x], w, [x])
    close(value, y, "value")
    # the gradient of a permutation of entries is the inverse permutation of w
    close(g, np.transpose(w.reshape(-1)[::-1].reshape(np.transpose(x, perm).shape),
                          np.argsort(perm)), "gradient")
    close(h, 0 * x, "H v")


@given(data=st.data(), shape=hnp.array_shapes(min_dims=1, max_dims=3, max_side=4))
def test_integer_indexing_adds_repeated_rows(data, shape):
    x = data.draw(arrays(shape), label="x")
    idx = np.array(data.draw(st.lists(st.integers(-shape[0], shape[0] - 1), min_size=1, max_size=6),
                             label="idx"))
    y = x[idx]
    w = data.draw(arrays(y.shape), label="w")
    value, (g,), (h,) = derivatives(lambda t: t[idx] * t[idx], [x], w, [x])
    close(value, y * y, "value")
    expected = np.zeros_like(x)
    np.add.at(expected, idx, 2 * w * y)
    close(g, expected, "gradient")
    hv = np.zeros_like(x)
    np.add.at(hv, idx, 2 * w * x[idx])
    close(h, hv, "H v")


@pytest.mark.parametrize("kind", ["concatenate", "stack"])
@given(data=st.data(), shape=hnp.array_shapes(min_dims=1, max_dims=3, max_side=3),
       n=st.integers(1, 3))
def test_concatenate_stack_route_gradients_back(kind, data, shape, n):
    axis = data.draw(st.integers(-len(shape) - (kind == "stack"), len(shape) - 1 + (kind == "stack")),
                     label="axis")
    xs = [data.draw(arrays(shape), label=f"x{i}") for i in range(n)]
    join = np.concatenate if kind == "concatenate" else np.stack
    y = join(xs, axis=axis)
    w = data.draw(arrays(y.shape), label="w")
    op = tg.concatenate if kind == "concatenate" else tg.stack
    value, gs, hs = derivatives(lambda *ts: op(list(ts), axis=axis) ** 2, xs, w, xs)
    close(value, y ** 2, "value")
    parts = (np.split(w, n, axis=axis) if kind == "concatenate"
             else [np.take(w, i, axis=axis) for i in range(n)])
    for i in range(n):
        close(gs[i], 2 * parts[i] * xs[i], f"gradient {i}")
        close(hs[i], 2 * parts[i] * xs[i], f"H v {i}")


# ---------------------------------------------------------------- random programs
# Smooth ops on any real input, so a program of them is smooth everywhere.
PROGRAM_OPS = {
    "mul": lambda x, y: x * y, "add": lambda x, y: x + y, "sub": lambda x, y: x - y,
    "div": lambda x, y: x / (y * y + 1), "tanh": lambda x, y: (x + y).tanh(),
    "sigmoid": lambda x, y: x.sigmoid() * y, "exp": lambda x, y: (x * 0.3).exp() - y,
    "log": lambda x, y: (x * x + 1).log() + y, "sqrt": lambda x, y: (y * y + 0.5).sqrt() * x,
    "softplus": lambda x, y: ops.softplus(x - y), "matmul_t": lambda x, y: x @ y.T / 3,
    "lse": lambda x, y: ops.logsumexp(x, -1, True) + y, "softmax": lambda x, y: ops.softmax(x, -1) * y,
    "mean": lambda x, y: x.mean(0, keepdims=True) * y, "pow": lambda x, y: (x * x + 1) ** 0.5 - y,
}


@given(data=st.data(), n=st.integers(1, 3), m=st.integers(1, 3),
       program=st.lists(st.sampled_from(sorted(PROGRAM_OPS)), min_size=1, max_size=5))
def test_random_programs_gradcheck_and_gradgradcheck(data, n, m, program):
    """Chains of ops on an (n, m) and a broadcast (1, m) or (m,) input, against finite differences."""
    if "matmul_t" in program:
        assume(n == m)
    shape_y = data.draw(st.sampled_from([(n, m), (1, m), (m,)]), label="shape_y")
    x0 = data.draw(arrays((n, m), floats(-1.5, 1.5)), label="x")
    y0 = data.draw(arrays(shape_y, floats(-1.5, 1.5)), label="y")

    def f(x, y):
        z = x
        for name in program:
            z = PROGRAM_OPS[name](z, y)
        return z

    xs = (Tensor(x0, requires_grad=True), Tensor(y0, requires_grad=True))
    out = f(*xs)
    assert np.isfinite(out.numpy()).all()
    assert gradcheck(f, xs, eps=1e-6, atol=1e-6, rtol=1e-4)
    assert gradgradcheck(f, xs, eps=1e-6, atol=1e-5, rtol=1e-3)
    # and the gradient is finite: a check that passes on NaN would pass here too
    gs = autograd.grad(out.sum(), xs)
    assert all(np.isfinite(g.numpy()).all() for g in gs)
