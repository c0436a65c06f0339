"""The example of docs/custom_functions.md works as written, on every device."""
import numpy as np

import tinygrad_opt as tg
from tinygrad_opt.ops import exp


class Softplus(tg.Function):
    """y = log(1 + e^x); dy/dx = sigmoid(x) = 1 - e^-y."""
    @staticmethod
    def forward(ctx, x):
        return ctx.xp.logaddexp(0, x)

    @staticmethod
    def backward(ctx, g):
        return g * (1 - exp(-ctx.out))


def test_documented_softplus_passes_both_checks():
    x = tg.Tensor(np.linspace(-3, 3, 7), requires_grad=True)
    assert tg.gradcheck(Softplus.apply, x) and tg.gradgradcheck(Softplus.apply, x)


def test_documented_softplus_values_and_third_derivative(device):
    xs = np.linspace(-3, 3, 7)
    x = tg.Tensor(xs, requires_grad=True, device=device)
    y = Softplus.apply(x)
    np.testing.assert_allclose(y.numpy(), np.log1p(np.exp(xs)), rtol=1e-14)
    (g1,) = tg.autograd.grad(y.sum(), x, create_graph=True)
    (g2,) = tg.autograd.grad(g1.sum(), x)
    s = 1 / (1 + np.exp(-xs))
    np.testing.assert_allclose(g1.numpy(), s, rtol=1e-13)
    np.testing.assert_allclose(g2.numpy(), s * (1 - s), rtol=1e-12)


def test_documented_contract_needs_input_grad_skips_work():
    calls = []

    class Scale(tg.Function):
        @staticmethod
        def forward(ctx, x, w):
            return x * w

        @staticmethod
        def backward(ctx, g):
            x, w = ctx.inputs
            calls.append(ctx.needs_input_grad)
            return (g * w if ctx.needs_input_grad[0] else None,
                    g * x if ctx.needs_input_grad[1] else None)

    x = tg.Tensor(np.ones(2))
    w = tg.Tensor(np.full(2, 3.0), requires_grad=True)
    Scale.apply(x, w).sum().backward()
    assert calls == [(False, True)]
    np.testing.assert_array_equal(w.grad.numpy(), [1.0, 1.0])


def test_every_example_of_the_page_runs():
    """The page's code blocks (Softplus with its tangent rule, the two-input Hypot) run as written:
    each ends in gradcheck(check_forward_ad=True) and gradgradcheck assertions."""
    import os
    import re
    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs",
                        "custom_functions.md")
    with open(path) as f:
        blocks = re.findall(r"```python\n(.*?)```", f.read(), re.S)
    assert len(blocks) >= 2
    scope = {}
    for block in blocks:
        exec(block, scope)
    assert "jvp" in vars(scope["Softplus"]) and "jvp" in vars(scope["Hypot"])
