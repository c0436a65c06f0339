"""Every fused CuPy update kernel against its NumPy rule, on NumPy (no GPU needed).

Kernel.run_numpy evaluates the kernel's C body itself, so a change to the NumPy rule that is
not made to the kernel (or the other way round) fails here on every commit.
"""
import numpy as np
import pytest

from tinygrad_opt.optim import adagrad, adam, rmsprop, sgd
from tinygrad_opt.optim.kernels import Kernel

PAIRS = [pair for module in (sgd, adam, adagrad, rmsprop) for pair in module.KERNELS]

# values at which every term of every rule matters (eps comparable to sqrt(v), damping != 1)
SCALARS = dict(lr=0.3, mu=0.7, damp1=0.6, nesterov=True, one_b1=0.2, b2=0.75, one_b2=0.25,
               eps_c2=0.05, step=0.4, lr_k=0.3, eps=0.05, alpha=0.8, one_alpha=0.2)


def _arguments(kernel, rng):
    """Random arrays for the kernel's arrays (state positive where a root is taken)."""
    args = {}
    for name in kernel.args:
        if name in SCALARS:
            args[name] = SCALARS[name]
        elif name in ("v", "vmax", "s"):
            args[name] = rng.uniform(0.5, 2.0, (3, 4))
        elif name == "m" and "centered" in kernel.name:
            args[name] = rng.uniform(-0.3, 0.3, (3, 4))    # keeps v - m^2 > 0
        else:
            args[name] = rng.standard_normal((3, 4))
    return args


@pytest.mark.parametrize("kernel,rule", PAIRS, ids=[k.name for k, _ in PAIRS])
def test_kernel_body_equals_the_numpy_rule(kernel, rule):
    rng = np.random.default_rng(0)
    args = _arguments(kernel, rng)
    a = {k: v.copy() if isinstance(v, np.ndarray) else v for k, v in args.items()}
    b = {k: v.copy() if isinstance(v, np.ndarray) else v for k, v in args.items()}
    kernel.run_numpy(*[a[n] for n in kernel.args])
    if rule is rmsprop._rmsprop_numpy:          # one signature for the four variants
        rule(*[b.get(n) for n in ("g", "alpha", "one_alpha", "eps", "lr", "mu", "v", "m", "b")],
             b["p"])
    else:
        rule(*[b[n] for n in kernel.args])
    outs = kernel.args[len(kernel.args) - len(kernel.out_params.split(",")):]
    assert "p" in outs
    for name in outs:
        assert not np.array_equal(a[name], args[name]), f"{name} did not change"
        np.testing.assert_allclose(a[name], b[name], rtol=1e-13, atol=1e-15,
                                   err_msg=f"{kernel.name}: {name}")


def test_a_stale_kernel_is_caught():
    # the check fails when the kernel forgets a term the rule has (eps here)
    stale = Kernel("stale_adagrad", "T g, T lr_k, T eps", "T s, T p",
                   "s += g * g; p -= lr_k * g / sqrt(s)")
    rng = np.random.default_rng(0)
    args = _arguments(stale, rng)
    a = {k: v.copy() if isinstance(v, np.ndarray) else v for k, v in args.items()}
    stale.run_numpy(*[a[n] for n in stale.args])
    adagrad._adagrad_numpy(*[args[n] for n in stale.args])
    assert not np.allclose(a["p"], args["p"], rtol=1e-6)


def test_translation_of_the_c_body():
    k = Kernel("t", "T g, T c, bool f", "T x, T y", "x = max(x, g); y -= (f ? c * x : sqrt(x))")
    x, y = np.array([1.0, 4.0]), np.array([0.0, 0.0])
    k.run_numpy(np.array([2.0, 3.0]), 3.0, False, x, y)
    np.testing.assert_array_equal(x, [2.0, 4.0])
    np.testing.assert_allclose(y, [-np.sqrt(2.0), -2.0])
    with pytest.raises(ValueError, match="cannot evaluate"):
        Kernel("bad", "T g", "T x", "if (g > 0) x = g").run_numpy(np.ones(1), np.ones(1))
