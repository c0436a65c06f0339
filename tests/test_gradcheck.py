"""The numerical checkers catch wrong derivatives and say where; they warn when they cannot be trusted."""
import warnings

import numpy as np
import pytest

import tinygrad_opt as tg
from tinygrad_opt import GradcheckError


class WrongSquare(tg.Function):
    """y = x^2 with a deliberately wrong backward: 3x instead of 2x."""
    @staticmethod
    def forward(ctx, x):
        return x * x

    @staticmethod
    def backward(ctx, g):
        return g * 3 * ctx.inputs[0]


class WrongSecondOrder(tg.Function):
    """y = sin-like x^3 whose first derivative is right at the point but whose backward
    uses a constant saved value, so its second derivative is wrong (zero)."""
    @staticmethod
    def forward(ctx, x):
        ctx.slope = 3 * x * x            # saved as plain data: invisible to the next derivative
        return x * x * x

    @staticmethod
    def backward(ctx, g):
        return g * ctx.slope


def x64(shape=(2, 3), seed=0):
    return tg.Tensor(np.random.default_rng(seed).uniform(0.5, 1.5, shape), requires_grad=True)


def test_gradcheck_passes_on_a_correct_function():
    assert tg.gradcheck(lambda x: (x * x).sum(axis=0), x64())


def test_gradcheck_catches_wrong_backward_and_names_the_element():
    x = x64()
    with pytest.raises(GradcheckError) as e:
        tg.gradcheck(lambda x: WrongSquare.apply(x), x)
    msg = str(e.value)
    assert "output 0 with respect to input 0" in msg
    assert "worst element" in msg and "numerical" in msg and "analytical" in msg and "tolerance" in msg
    # the worst element is the largest |3x - 2x| = |x|: find it and check it is the one named
    k = np.unravel_index(np.argmax(x.numpy()), x.shape)
    assert f"d input[0]{[int(i) for i in k]}" in msg
    assert f"{2 * x.numpy()[k]:.6f}"[:6] in msg


def test_gradcheck_returns_false_without_raising():
    assert tg.gradcheck(lambda x: WrongSquare.apply(x), x64(), raise_exception=False) is False


def test_gradcheck_names_the_input_index():
    a, b = x64((2,), 1), x64((2,), 2)
    with pytest.raises(GradcheckError, match="with respect to input 1"):
        tg.gradcheck(lambda a, b: a * 2 + WrongSquare.apply(b), (a, b))


def test_gradgradcheck_catches_wrong_second_derivative():
    x = x64()
    assert tg.gradcheck(lambda x: WrongSecondOrder.apply(x), x)      # first order is right
    with pytest.raises(GradcheckError, match="gradgradcheck: Jacobian mismatch"):
        tg.gradgradcheck(lambda x: WrongSecondOrder.apply(x), x)


def test_gradgradcheck_checks_the_backward_pass_itself():
    """It differentiates the backward as written: a consistent (if wrong) linear backward
    passes, which is why gradcheck and gradgradcheck are run together."""
    assert tg.gradgradcheck(lambda x: WrongSquare.apply(x), x64())
    assert tg.gradgradcheck(lambda x: (x * x * x).tanh(), x64())


def test_fast_mode_agrees_and_catches():
    x = x64((20, 10))
    assert tg.gradcheck(lambda x: (x.tanh() @ x.T).sum(axis=1), x, fast_mode=True)
    with pytest.raises(GradcheckError, match="fast mode"):
        tg.gradcheck(lambda x: WrongSquare.apply(x), x, fast_mode=True)


def test_float32_inputs_draw_a_precision_warning():
    x = tg.Tensor(np.ones(2, np.float32), requires_grad=True)
    with pytest.warns(UserWarning, match="float64"):
        tg.gradcheck(lambda x: x * 2, x, eps=1e-2, atol=1e-2)


def test_kink_warning_when_an_input_sits_on_a_relu_kink():
    x = tg.Tensor(np.array([0.0, 1.0]), requires_grad=True)
    with pytest.warns(UserWarning, match="ReLU has an input .* from its kink"):
        tg.gradcheck(lambda x: x.relu(), x, raise_exception=False)
    y = tg.Tensor(np.array([-1.0, 1.0]), requires_grad=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert tg.gradcheck(lambda x: x.relu(), y)


def test_kink_warning_for_max_ties():
    x = tg.Tensor(np.array([2.0, 2.0, 1.0]), requires_grad=True)
    with pytest.warns(UserWarning, match="Max has an input"):
        tg.gradcheck(lambda x: x.max(), x, raise_exception=False)


def test_hvpcheck_passes_and_catches():
    x = x64((3,))
    assert tg.hvpcheck(lambda x: (x ** 3).sum() + (x[0] * x[1]), x)

    def wrong(x):
        return WrongSecondOrder.apply(x).sum()
    with pytest.raises(GradcheckError, match=r"hvpcheck: Hessian-vector product mismatch for input 0"):
        tg.hvpcheck(wrong, x)


def test_nothing_to_check_is_an_error():
    with pytest.raises(ValueError, match="no input requires grad"):
        tg.gradcheck(lambda x: x * 2, tg.Tensor(np.ones(2)))


class WrongTangent(tg.Function):
    """y = x^2 with a right backward (2x) and a wrong tangent rule (3x t)."""
    @staticmethod
    def forward(ctx, x):
        return x * x

    @staticmethod
    def backward(ctx, g):
        return g * 2 * ctx.inputs[0]

    @staticmethod
    def jvp(ctx, t):
        return t * 3 * ctx.inputs[0]


class NaNGradient(tg.Function):
    """y = 2x whose backward and tangent are NaN at one element."""
    @staticmethod
    def forward(ctx, x):
        return x * 2

    @staticmethod
    def backward(ctx, g):
        out = g * 2
        out[0] = np.nan
        return out

    @staticmethod
    def jvp(ctx, t):
        out = t * 2
        out[0] = np.nan
        return out


def test_check_forward_ad_catches_a_wrong_tangent_rule():
    x = x64()
    assert tg.gradcheck(lambda x: WrongTangent.apply(x), x)            # reverse mode is right
    with pytest.raises(GradcheckError) as e:
        tg.gradcheck(lambda x: WrongTangent.apply(x), x, check_forward_ad=True)
    msg = str(e.value)
    assert "forward mode: the tangent rules" in msg and "output 0 with respect to input 0" in msg
    k = np.unravel_index(np.argmax(x.numpy()), x.shape)                # worst: |3x - 2x| largest
    assert f"d input[0]{[int(i) for i in k]}" in msg
    with pytest.raises(GradcheckError, match="fast mode, forward"):
        tg.gradcheck(lambda x: WrongTangent.apply(x), x, check_forward_ad=True, fast_mode=True)
    assert tg.gradcheck(lambda x: (x * x).sin(), x, check_forward_ad=True)
    assert tg.gradcheck(lambda x: (x * x).sin(), x, check_forward_ad=True, fast_mode=True)


def test_check_forward_ad_names_an_op_without_a_tangent_rule():
    class Square(tg.Function):
        @staticmethod
        def forward(ctx, x):
            return x * x

        @staticmethod
        def backward(ctx, g):
            return g * 2 * ctx.inputs[0]

    assert tg.gradcheck(lambda x: Square.apply(x), x64())
    with pytest.raises(RuntimeError, match="forward mode: Square has no tangent rule"):
        tg.gradcheck(lambda x: Square.apply(x), x64(), check_forward_ad=True)


@pytest.mark.filterwarnings("ignore:invalid value encountered")
@pytest.mark.parametrize("fast", [False, True])
def test_checks_fail_on_nan(fast):
    """diff > tol is False for NaN: the checks must not read that as agreement."""
    x = tg.Tensor(np.array([1.0, 2.0]), requires_grad=True)
    expect = "analytical: nan" if fast else "numerical: 2  analytical: nan"
    with pytest.raises(GradcheckError, match=expect):
        tg.gradcheck(lambda x: NaNGradient.apply(x), x, fast_mode=fast)
    assert tg.gradcheck(lambda x: NaNGradient.apply(x), x, fast_mode=fast, raise_exception=False) is False
    # a function that is NaN itself: the numerical side is NaN, never a match either
    with pytest.raises(GradcheckError):
        tg.gradcheck(lambda x: (x - 5.0).sqrt(), x, fast_mode=fast)


def test_forward_check_fails_on_a_nan_tangent():
    x = tg.Tensor(np.array([1.0, 2.0]), requires_grad=True)

    class RightBackward(NaNGradient):
        @staticmethod
        def backward(ctx, g):
            return g * 2

    with pytest.raises(GradcheckError, match="forward mode"):
        tg.gradcheck(lambda x: RightBackward.apply(x), x, check_forward_ad=True)


def test_hvpcheck_fails_on_nan_and_checks_both_modes():
    x = tg.Tensor(np.array([1.0, 2.0]), requires_grad=True)
    for mode in (None, "reverse", "forward"):
        assert tg.hvpcheck(lambda x: (x ** 3).sum(), x, mode=mode)

    class NaNCurvature(tg.Function):
        @staticmethod
        def forward(ctx, x):
            return x * x

        @staticmethod
        def backward(ctx, g):       # the right 2x, through an op whose own derivative is NaN
            x = ctx.inputs[0]
            return g * (NaNGradient.apply(x) if isinstance(x, tg.Tensor) else 2 * x)

        @staticmethod
        def jvp(ctx, t):
            return t * 2 * ctx.inputs[0]

    for mode in ("reverse", "forward"):
        with pytest.raises(GradcheckError, match=r"hvpcheck.*\n.*\[0\][\s\S]*analytical: nan"):
            tg.hvpcheck(lambda x: NaNCurvature.apply(x).sum(), x, mode=mode)
