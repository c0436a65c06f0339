"""Every row of the op table: values vs NumPy, gradcheck, gradgradcheck, fast == graph backward,
and forward mode: jvp vs the numerical and the reverse-mode Jacobian, tangents of tangents,
forward-over-reverse vs double backward."""
import numpy as np
import pytest

import tinygrad_opt as tg
from tinygrad_opt import autograd, ops

from conftest import CUDA
from op_cases import CASES, sample

IDS = [c.id for c in CASES]


def _inputs(case, seed=0):
    rng = np.random.default_rng(seed)
    return [tg.Tensor(a, requires_grad=True) for a in sample(case, rng)]


def _tol(case):
    return dict(eps=1e-3, atol=1e-3, rtol=1e-3) if case.name == "astype" else {}


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_values_match_numpy(case):
    xs = _inputs(case)
    out = case.fn(*xs)
    tol = 1e-6 if case.name == "astype" else 1e-12
    np.testing.assert_allclose(out.numpy(), case.ref(*[x.numpy() for x in xs]), rtol=tol, atol=tol)
    assert out.dtype == np.float64


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_gradcheck(case):
    assert tg.gradcheck(case.fn, _inputs(case), **_tol(case))


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_gradgradcheck(case):
    assert tg.gradgradcheck(case.fn, _inputs(case), **_tol(case))


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_fast_backward_equals_graph_backward(case):
    """The backward on raw arrays and the recorded (create_graph) backward give the same arrays."""
    xs = _inputs(case)
    out = case.fn(*xs)
    g = np.random.default_rng(1).standard_normal(out.shape)
    fast = autograd.grad(out, xs, grad_outputs=g, retain_graph=True, allow_unused=True)
    graph = autograd.grad(out, xs, grad_outputs=g, create_graph=True, allow_unused=True)
    for a, b in zip(fast, graph):
        assert (a is None) == (b is None)
        if a is not None:
            assert type(a.data) is type(b.data)
            np.testing.assert_array_equal(a.numpy(), b.numpy())


def _directions(case, xs, seed):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(x.shape) for x in xs]


def _shifted(xs, vs, step):
    """Tensors x + step * v (float64 also for 0-d inputs)."""
    return [tg.Tensor(np.asarray(x.numpy() + step * v, dtype=np.float64)) for x, v in zip(xs, vs)]


def _flat(ts):
    return np.concatenate([np.asarray(t.numpy() if isinstance(t, tg.Tensor) else t).ravel() for t in ts])


def _fn(case):
    """The row's function with a float32 round trip's tolerance noted (astype)."""
    return case.fn, (1e-5 if case.name == "astype" else 1e-8)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_jvp_matches_numerical_directional_derivative(case):
    """The tangent rules: J v == (f(x + eps v) - f(x - eps v)) / (2 eps) along a random v."""
    xs = _inputs(case)
    vs = _directions(case, xs, 3)
    fn, tol = _fn(case)
    _, t = autograd.jvp(fn, tuple(xs), tuple(vs))
    eps = 1e-3 if case.name == "astype" else 1e-6
    with tg.no_grad():
        plus = fn(*_shifted(xs, vs, eps)).numpy()
        minus = fn(*_shifted(xs, vs, -eps)).numpy()
    np.testing.assert_allclose(t.numpy(), (plus - minus) / (2 * eps), rtol=1e-5,
                               atol=1e-3 if case.name == "astype" else 1e-6)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_jvp_equals_reverse_jacobian_times_v(case):
    """Forward and reverse mode agree: jvp == jacobian(mode="reverse") @ v, for every input."""
    xs = _inputs(case)
    vs = _directions(case, xs, 4)
    fn, tol = _fn(case)
    out, t = autograd.jvp(fn, tuple(xs), tuple(vs))
    J = autograd.jacobian(fn, tuple(xs))
    expect = sum(j.numpy().reshape(out.size, -1) @ v.ravel() for j, v in zip(J, vs))
    np.testing.assert_allclose(t.numpy().ravel(), expect, rtol=tol, atol=tol)
    assert t.shape == out.shape and t.dtype == out.dtype


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_tangent_of_tangent(case):
    """Second order by forward over forward: d/ds <J(x + s w) u, g> == w^T (d^2 <f, g>) u,
    checked against central differences of the inner jvp (each op's rule carries tangents)."""
    xs = _inputs(case)
    us, ws = _directions(case, xs, 5), _directions(case, xs, 6)
    g = np.random.default_rng(7).standard_normal(case.fn(*xs).shape)

    def inner(*x):
        return (autograd.jvp(case.fn, x, tuple(us), create_graph=True)[1] * g).sum()

    _, tt = autograd.jvp(inner, tuple(xs), tuple(ws))
    eps = 1e-3 if case.name == "astype" else 1e-5
    shifted = [inner(*_shifted(xs, ws, s * eps)).item() for s in (1, -1)]
    np.testing.assert_allclose(tt.item(), (shifted[0] - shifted[1]) / (2 * eps), rtol=1e-4,
                               atol=1e-3 if case.name == "astype" else 1e-6)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_forward_over_reverse_equals_double_backward(case):
    """hvp(mode="forward") (the tangent of the backward's ops) == hvp(mode="reverse")."""
    xs = _inputs(case)
    vs = _directions(case, xs, 8)
    g = np.random.default_rng(9).standard_normal(case.fn(*xs).shape)

    def f(*x):
        return (case.fn(*x) * g).sum()

    _, hr = autograd.hvp(f, tuple(xs), tuple(vs), mode="reverse")
    _, hf = autograd.hvp(f, tuple(xs), tuple(vs), mode="forward")
    np.testing.assert_allclose(_flat(hf), _flat(hr), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("case", [c for c in CASES if c.zero_second], ids=lambda c: c.id)
def test_piecewise_linear_ops_have_zero_second_derivative(case):
    """relu, abs, max, clip...: the Hessian of sum(w * f(x)) is zero away from kinks."""
    if len(case.shapes) != 1:
        pytest.skip("single-input ops only")
    (x,) = _inputs(case)
    w = np.random.default_rng(2).standard_normal(case.fn(x).shape)
    H = autograd.hessian(lambda x: (case.fn(x) * w).sum(), x)
    np.testing.assert_array_equal(H.numpy(), 0.0)


def _orders(case, xs, device):
    """Output, gradient, second-order products and the jvp of one case, as host arrays.

    The gradient is the vector-Jacobian product with a fixed cotangent g; the second-order
    term differentiates <grad, v> again (a Hessian-vector product of <out, g>).
    """
    rng = np.random.default_rng(1)
    out = case.fn(*xs)
    g = tg.Tensor(rng.standard_normal(out.shape), device=device)
    grads = autograd.grad(out, xs, grad_outputs=g, create_graph=True, allow_unused=True)
    pairs = [(gr, tg.Tensor(rng.standard_normal(x.shape), device=device))
             for gr, x in zip(grads, xs) if gr is not None]
    terms = [(gr * v).sum() for gr, v in pairs if gr.requires_grad]
    second = []
    if terms:
        dot = terms[0]
        for t in terms[1:]:
            dot = dot + t
        second = autograd.grad(dot, xs, allow_unused=True)
    vs = [tg.Tensor(rng.standard_normal(x.shape), device=device) for x in xs]
    _, tangent = autograd.jvp(case.fn, tuple(xs), tuple(vs))           # forward mode
    return [out, *grads, *second, tangent]


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="CuPy with a CUDA GPU is not available")
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_cuda_matches_cpu(case):
    """On CuPy every op gives the NumPy run's values, gradients and second-order products."""
    arrays = sample(case, np.random.default_rng(0))
    cpu = _orders(case, [tg.Tensor(a, requires_grad=True) for a in arrays], "cpu")
    gpu_in = [tg.Tensor(a, requires_grad=True, device="cuda") for a in arrays]
    gpu = _orders(case, gpu_in, "cuda")
    assert len(cpu) == len(gpu)
    tol = 1e-6 if case.name == "astype" else 1e-10
    for i, (a, b) in enumerate(zip(cpu, gpu)):
        assert (a is None) == (b is None), f"term {i}"
        if a is not None:
            assert b.device == "cuda", f"term {i} left the GPU"
            assert b.dtype == a.dtype, f"term {i}: {b.dtype} vs {a.dtype}"
            np.testing.assert_allclose(b.numpy(), a.numpy(), rtol=tol, atol=tol, err_msg=f"term {i}")


def test_docs_ops_table_is_current():
    """docs/ops.md is generated from this table; regenerate it with python docs/gen_ops.py."""
    import os
    import subprocess
    import sys
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    r = subprocess.run([sys.executable, os.path.join(root, "docs", "gen_ops.py"), "--check"])
    assert r.returncode == 0, "docs/ops.md is out of date: run python docs/gen_ops.py"


# ----------------------------------------------------------------- ops at the edges
# PyTorch's answers are the reference; each value below is the closed form PyTorch returns.
def _t(a, rg=True):
    return tg.Tensor(np.asarray(a, dtype=np.float64), requires_grad=rg)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_pow_gradients_at_base_zero():
    a, b = _t([0.0, 0.0, 2.0]), _t([2.0, 0.0, 1.5])
    (a ** b).sum().backward()
    # d/da: b a^(b-1) -> 0 at (0, 2) and 0 (not 0 * inf) at (0, 0); d/db: 0 where a = 0, b >= 0
    np.testing.assert_allclose(a.grad.numpy(), [0.0, 0.0, 1.5 * 2 ** 0.5])
    np.testing.assert_allclose(b.grad.numpy(), [0.0, 0.0, 2 ** 1.5 * np.log(2.0)])
    assert np.isfinite(a.grad.numpy()).all() and np.isfinite(b.grad.numpy()).all()


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_python_number_base_at_or_below_zero_does_not_crash_backward():
    y = _t([2.0, 0.0, -1.0])
    (0.0 ** y).sum().backward()
    np.testing.assert_array_equal(y.grad.numpy(), [0.0, 0.0, -np.inf])
    y = _t([2.0, 0.5])
    (-2.0 ** y).sum().backward()              # -(2 ** y): a positive base, the usual gradient
    np.testing.assert_allclose(y.grad.numpy(), -(2.0 ** y.numpy()) * np.log(2.0))
    y = _t([2.0, 0.5])
    ((-2.0) ** y).sum().backward()            # log of a negative base: NaN, as PyTorch
    assert np.isnan(y.grad.numpy()).all()
    _, t = autograd.jvp(lambda y: 0.0 ** y, _t([1.0, -1.0], rg=False), np.ones(2))
    np.testing.assert_array_equal(t.numpy(), [0.0, -np.inf])


@pytest.mark.filterwarnings("ignore:divide by zero")
def test_logsumexp_of_infinities_and_empty_axes():
    lse = tg.ops.logsumexp
    assert lse(_t([-np.inf, -np.inf], rg=False), axis=0).item() == -np.inf
    assert lse(_t([np.inf, 1.0], rg=False), axis=0).item() == np.inf
    out = lse(_t(np.zeros((2, 0)), rg=False), axis=-1)
    assert out.shape == (2,) and (out.numpy() == -np.inf).all()
    # and the ordinary case still shifts by the max (no overflow)
    assert lse(_t([1000.0, 1000.0], rg=False), axis=0).item() == pytest.approx(1000.0 + np.log(2.0))


def test_softmax_over_an_empty_axis_is_empty():
    x = _t(np.zeros((3, 0)))
    for f in (ops.softmax, ops.log_softmax):
        y = f(x, axis=-1)
        assert y.shape == (3, 0)
        (g,) = autograd.grad(y.sum(), x)
        assert g.shape == (3, 0)


@pytest.mark.parametrize("kw", [dict(reduction="none"), dict(weight=np.array([1.0, 2.0, 3.0])),
                                dict(weight=np.array([1.0, 2.0, 3.0]), reduction="sum")])
def test_cross_entropy_with_a_masked_non_target_logit_is_finite(kw):
    from tinygrad_opt.nn import functional as F
    logits = _t([[0.0, -np.inf, 1.0], [2.0, 1.0, -np.inf]])
    y = np.array([0, 1])
    loss = F.cross_entropy(logits, y, **kw)
    per_row = np.array([np.log1p(np.e), np.log1p(np.e)])     # log(1 + e) in both rows
    w = kw.get("weight")
    if "weight" not in kw:
        expect = per_row
    elif kw.get("reduction") == "sum":
        expect = (w[y] * per_row).sum()
    else:
        expect = (w[y] * per_row).sum() / w[y].sum()
    np.testing.assert_allclose(loss.numpy(), expect, rtol=1e-14)
    (g,) = autograd.grad(loss.sum(), logits)
    assert np.isfinite(g.numpy()).all() and g.numpy()[0, 1] == 0.0


def test_max_gradient_goes_to_the_nan():
    x = _t([1.0, np.nan, 3.0])
    m = x.max()
    assert np.isnan(m.item())
    m.backward()
    np.testing.assert_array_equal(x.grad.numpy(), [0.0, 1.0, 0.0])
    x = _t([[4.0, np.nan], [1.0, 2.0]])
    x.min(axis=1).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [[0.0, 1.0], [1.0, 0.0]])


def test_empty_list_index():
    x = _t([[1.0, 2.0], [3.0, 4.0]])
    y = x[[]]
    assert y.shape == (0, 2)
    (g,) = autograd.grad(y.sum(), x)
    np.testing.assert_array_equal(g.numpy(), 0.0)


def test_object_arrays_are_rejected():
    with pytest.raises(TypeError, match="cannot make a tensor from an array of dtype object"):
        tg.Tensor(np.array([1.0, "a"], dtype=object))


# ----------------------------------------------------------------- new ops and PyTorch spellings
def test_norm_gradient_at_the_origin_is_zero():
    x = _t([0.0, 0.0])
    x.norm().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [0.0, 0.0])
    _, t = autograd.jvp(lambda a: a.norm(), _t([0.0, 0.0], rg=False), np.ones(2))
    assert t.item() == 0.0
    with pytest.raises(ValueError, match="norm: p must be positive"):
        _t([1.0]).norm(p=-1)


def test_var_and_std_follow_pytorch():
    a = np.arange(12.0).reshape(3, 4) ** 1.5
    x = _t(a, rg=False)
    np.testing.assert_allclose(x.var().item(), a.var(ddof=1))
    np.testing.assert_allclose(tg.var(x, dim=0).numpy(), a.var(axis=0, ddof=1))
    np.testing.assert_allclose(x.std(axis=1, correction=0).numpy(), a.std(axis=1))
    np.testing.assert_allclose(tg.std(x, 1, True).numpy(), a.std(axis=1, ddof=1, keepdims=True))
    assert np.isnan(_t([2.0], rg=False).var().item())        # one sample, corrected: NaN


def test_argmax_argmin_and_max_with_dim():
    x = _t([[1.0, 5.0, 3.0], [4.0, 2.0, 6.0]])
    np.testing.assert_array_equal(x.argmax(dim=1).numpy(), [1, 2])
    np.testing.assert_array_equal(tg.argmin(x, axis=0).numpy(), [0, 1, 0])
    assert x.argmax().item() == 5 and not x.argmax().requires_grad
    assert x.argmax(dim=1, keepdim=True).shape == (2, 1)
    values, indices = x.max(dim=1)                            # PyTorch returns a pair with dim=
    np.testing.assert_array_equal(values.numpy(), [5.0, 6.0])
    np.testing.assert_array_equal(indices.numpy(), [1, 2])
    assert x.min(dim=0).values.shape == (3,) and x.max(dim=0, keepdim=True).indices.shape == (1, 3)
    assert x.max(axis=1).shape == (2,)                        # NumPy's axis= gives the values
    with pytest.raises(TypeError, match="sum: got both axis=0 and dim=1"):
        x.sum(axis=0, dim=1)
    with pytest.raises(TypeError, match="max: dim must be one int"):
        x.max(dim=(0, 1))
    np.testing.assert_array_equal(x.mean(dim=0, keepdim=True).numpy(), [[2.5, 3.5, 4.5]])


def test_module_functions_for_the_new_ops():
    x = _t([0.1, 0.2], rg=False)
    for name, ref in [("sin", np.sin), ("cos", np.cos), ("log1p", np.log1p), ("expm1", np.expm1)]:
        np.testing.assert_allclose(getattr(tg, name)(x).numpy(), ref(x.numpy()), rtol=1e-15)
        np.testing.assert_allclose(getattr(tg.ops, name)(x.numpy()), ref(x.numpy()), rtol=1e-15)
    assert tg.norm(x).item() == pytest.approx(np.hypot(0.1, 0.2))


def test_x_matmul_transposed_weight_is_one_linear_node():
    """h @ W.T records Linear(h, W): nn.Linear's graph, the same values and gradients."""
    rng = np.random.default_rng(0)
    x, W = _t(rng.standard_normal((5, 4))), _t(rng.standard_normal((3, 4)))
    y = x @ W.T
    assert type(y._node).__name__ == "Linear" and y._node.parents[1] is W
    np.testing.assert_allclose(y.numpy(), x.numpy() @ W.numpy().T, rtol=1e-15)
    assert tg.gradcheck(lambda x, W: x @ W.T, (x, W))
    assert tg.gradgradcheck(lambda x, W: x @ W.T, (x, W))
    assert type((x @ W.transpose(1, 0))._node).__name__ == "Linear"
    # an identity permutation, a 1-D operand or a mismatch keep MatMul's meaning and message
    V = _t(rng.standard_normal((4, 3)))
    assert type((x @ V.transpose(0, 1))._node).__name__ == "MatMul"
    with pytest.raises(ValueError, match=r"matmul: shapes \(5, 4\) and \(3, 3\) do not align"):
        x @ _t(np.ones((3, 3))).T
    with tg.no_grad():
        assert (x @ W.T)._node is None
    # products never promote, in this spelling as in MatMul's and F.linear's
    x32 = tg.Tensor(np.ones((5, 4), np.float32))
    for a, w in ((x32, W), (x, tg.Tensor(np.ones((3, 4), np.float32), requires_grad=True))):
        with pytest.raises(TypeError, match="matmul: left operand of dtype .* does not promote"):
            a @ w.T


def test_bias_added_to_a_bias_free_linear_is_one_linear_node():
    """h @ W.T + b records Linear(h, W, b): Add's value, the composite's gradients, and the
    bias-free product stays usable; no fusion for a non-bias operand or after an in-place change."""
    rng = np.random.default_rng(1)
    x, W, b = (_t(rng.standard_normal(s)) for s in ((5, 4), (3, 4), (3,)))
    y = x @ W.T + b
    assert type(y._node).__name__ == "Linear" and y._node.parents == (x, W, b)
    np.testing.assert_array_equal(y.numpy(), (x.numpy() @ W.numpy().T) + b.numpy())
    xd, Wd = x.numpy(), W.numpy()
    gy = rng.standard_normal((5, 3))
    gx, gW, gb = autograd.grad(y, (x, W, b), grad_outputs=gy)
    np.testing.assert_allclose(gx.numpy(), gy @ Wd, rtol=1e-14)
    np.testing.assert_allclose(gW.numpy(), gy.T @ xd, rtol=1e-14)
    np.testing.assert_allclose(gb.numpy(), gy.sum(0), rtol=1e-14)
    assert tg.gradcheck(lambda x, W, b: x @ W.T + b, (x, W, b))
    assert tg.gradgradcheck(lambda x, W, b: x @ W.T + b, (x, W, b))
    z = x @ W.T                            # used twice: both uses keep their gradients
    (z.sum() + (z + b).sum()).backward()
    np.testing.assert_allclose(W.grad.numpy(), 2 * np.ones((5, 3)).T @ xd, rtol=1e-14)
    np.testing.assert_allclose(b.grad.numpy(), np.full(3, 5.0))
    for other in (_t(np.ones((5, 3))), tg.Tensor(np.ones(3, dtype=np.float32)), _t(np.ones((1, 3)))):
        assert type((x @ W.T + other)._node).__name__ == "Add"
    z = x @ W.T
    with tg.no_grad():
        W.zero_()                          # W changed after z was recorded: plain Add
    z2 = z + b
    assert type(z2._node).__name__ == "Add"
    with pytest.raises(RuntimeError, match="modified in place"):
        z2.sum().backward()


def test_relu_of_a_linear_output_is_one_linear_relu_node():
    """(x @ W.T + b).relu() and F.linear(...).relu() record LinearReLU on the Linear's inputs:
    ReLU's values and gradients (to the last bit), the pre-activation left as it was, and
    gradcheck, gradgradcheck and the tangent check through the fused node."""
    rng = np.random.default_rng(2)
    x, W, b = (_t(rng.standard_normal(s)) for s in ((6, 4), (5, 4), (5,)))
    z = x @ W.T + b
    zd = z.numpy()
    h = z.relu()
    assert type(h._node).__name__ == "LinearReLU" and h._node.parents == (x, W, b)
    assert type(z._node).__name__ == "Linear" and h.data is not z.data
    np.testing.assert_array_equal(z.numpy(), zd)            # the pre-activation is untouched
    np.testing.assert_array_equal(h.numpy(), np.maximum(zd, 0))
    assert 0 < (zd > 0).sum() < zd.size
    assert type(tg.ops.linear(x, W, b).relu()._node).__name__ == "LinearReLU"
    np.testing.assert_array_equal(tg.ops.relu(zd), np.maximum(zd, 0))     # arrays stay arrays
    gy = rng.standard_normal((6, 5))
    fused = autograd.grad(h, (x, W, b), grad_outputs=gy)
    plain = autograd.grad(tg.ops.ReLU.apply(x @ W.T + b), (x, W, b), grad_outputs=gy)
    for a, p in zip(fused, plain):
        np.testing.assert_array_equal(a.numpy(), p.numpy())
    f = lambda x, W, b: (x @ W.T + b).relu()                  # noqa: E731
    assert tg.gradcheck(f, (x, W, b), check_forward_ad=True)
    assert tg.gradgradcheck(f, (x, W, b))
    h = z.relu()
    (z.sum() + (h * h).sum()).backward()                     # both uses keep their gradients
    mask = zd > 0
    np.testing.assert_allclose(b.grad.numpy(), 6 + (2 * zd * mask).sum(0), rtol=1e-13)


def test_relu_of_a_linear_output_is_not_fused_where_it_must_not_be():
    """Plain ReLU under no_grad (nothing recorded), for a non-Linear input, inside a
    forward-mode level (same tangent either way) and after an in-place change."""
    rng = np.random.default_rng(3)
    x, W, b = (_t(rng.standard_normal(s)) for s in ((4, 3), (2, 3), (2,)))
    with tg.no_grad():
        h = (x @ W.T + b).relu()
    assert h._node is None and not h.requires_grad
    assert type((x * 2.0).relu()._node).__name__ == "ReLU"
    v = tuple(rng.standard_normal(p.shape) for p in (x, W, b))
    _, t = autograd.jvp(lambda x, W, b: (x @ W.T + b).relu(), (x, W, b), v)
    z = x.numpy() @ W.numpy().T + b.numpy()
    tz = v[0] @ W.numpy().T + x.numpy() @ v[1].T + v[2]
    np.testing.assert_allclose(t.numpy(), tz * (z > 0), rtol=1e-14)
    z = x @ W.T + b
    with tg.no_grad():
        W.zero_()                          # W changed after z was recorded: plain ReLU
    assert type(z.relu()._node).__name__ == "ReLU"


def test_pow_mixed_second_derivative_at_exponent_zero():
    # d2(a^b)/da db = a^(b-1) (1 + b log a): 1/a at b = 0 (PyTorch: 1 at a = 1, b = 0)
    a = tg.Tensor(np.array([1.0, 2.0, 0.5]), requires_grad=True)
    b = tg.Tensor(np.array([0.0, 0.0, 0.0]), requires_grad=True)
    (ga,) = autograd.grad((a ** b).sum(), (a,), create_graph=True)
    np.testing.assert_array_equal(ga.numpy(), [0.0, 0.0, 0.0])
    (gab,) = autograd.grad(ga.sum(), (b,))
    np.testing.assert_allclose(gab.numpy(), [1.0, 0.5, 2.0])


def test_mean_over_an_empty_axis_is_nan_with_an_empty_gradient():
    x = tg.Tensor(np.zeros((2, 0)), requires_grad=True)
    m = x.mean(axis=1)
    assert m.shape == (2,) and np.isnan(m.numpy()).all()
    m.sum().backward()
    assert x.grad.shape == (2, 0)
