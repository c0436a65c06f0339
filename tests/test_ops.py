"""Every row of the op table: values vs NumPy, gradcheck, gradgradcheck, fast == graph backward."""
import numpy as np
import pytest

import tinygrad_opt as tg
from tinygrad_opt import autograd

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


def test_docs_ops_table_is_current():
    """docs/ops.md is generated from this table; regenerate it with python docs/gen_ops.py."""
    import os
    import subprocess
    import sys
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    r = subprocess.run([sys.executable, os.path.join(root, "docs", "gen_ops.py"), "--check"])
    assert r.returncode == 0, "docs/ops.md is out of date: run python docs/gen_ops.py"
