"""Every row of the op table: values vs NumPy, gradcheck, gradgradcheck, fast == graph backward."""
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
