"""Every row of the op table: values vs NumPy, gradcheck, gradgradcheck, fast == graph backward,
and forward mode: jvp vs the numerical and the reverse-mode Jacobian, tangents of tangents,
forward-over-reverse vs double backward."""
import numpy as np
import pytest

import tinygrad_opt as tg
from tinygrad_opt import autograd

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
    """Output, gradient and second-order products of one case, as host arrays.

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
    return [out, *grads, *second]


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
