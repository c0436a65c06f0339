"""Loss lines and planes against hand computations on quadratics; exact restoration."""
import numpy as np
import pytest

from tinygrad_opt import landscape, nn
from tinygrad_opt.tensor import Tensor


def quad_problem():
    """f(W, b) = 1/2 |W|^2 + 2 |b|^2 + sum(W) with W (3, 2) and b (3,)."""
    W = Tensor(np.arange(6, dtype=np.float64).reshape(3, 2) - 2.0, requires_grad=True)
    b = Tensor(np.array([1.0, -1.0, 0.5]), requires_grad=True)

    def closure():
        return 0.5 * (W * W).sum() + 2.0 * (b * b).sum() + W.sum()
    return closure, [W, b]


def f_np(W, b):
    return 0.5 * (W * W).sum() + 2.0 * (b * b).sum() + W.sum()


def test_interpolate_matches_the_formula_and_restores():
    closure, params = quad_problem()
    before = [p.data.copy() for p in params]
    rng = np.random.default_rng(0)
    start = [rng.standard_normal((3, 2)), rng.standard_normal(3)]
    end = [Tensor(rng.standard_normal((3, 2))), Tensor(rng.standard_normal(3))]
    alphas = [-0.5, 0.0, 0.3, 1.0, 1.5]
    out = landscape.interpolate(closure, params, start, end, alphas)
    want = [f_np((1 - a) * start[0] + a * end[0].data, (1 - a) * start[1] + a * end[1].data)
            for a in alphas]
    np.testing.assert_allclose(out, want, rtol=1e-14)
    for p, b in zip(params, before):
        assert np.array_equal(p.data, b)


def test_surface_1d_and_2d_match_closed_forms():
    closure, params = quad_problem()
    W0, b0 = (p.data.copy() for p in params)
    d1 = [Tensor(np.ones((3, 2))), Tensor(np.zeros(3))]
    d2 = [Tensor(np.zeros((3, 2))), Tensor(np.array([1.0, 0.0, 0.0]))]
    alphas, betas = np.linspace(-1, 1, 5), np.array([-2.0, 0.0, 0.5])
    line = landscape.surface_1d(closure, params, d1, alphas)
    # along the all-ones W direction: f = f0 + a (sum W0 + 6) + 3 a^2
    f0 = f_np(W0, b0)
    np.testing.assert_allclose(line, f0 + alphas * (W0.sum() + 6) + 3 * alphas ** 2, rtol=1e-14)
    plane = landscape.surface_2d(closure, params, d1, d2, alphas, betas)
    assert plane.shape == (5, 3)
    for i, a in enumerate(alphas):
        for j, b in enumerate(betas):
            assert plane[i, j] == pytest.approx(f_np(W0 + a, b0 + b * np.array([1.0, 0, 0])),
                                                rel=1e-14)
    assert np.array_equal(params[0].data, W0) and np.array_equal(params[1].data, b0)


def test_parameters_restored_when_the_closure_raises():
    closure, params = quad_problem()
    before = [p.data.copy() for p in params]
    calls = []

    def bad():
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("boom")
        return closure()
    d = [Tensor(np.ones((3, 2))), Tensor(np.ones(3))]
    with pytest.raises(RuntimeError, match="boom"):
        landscape.surface_1d(bad, params, d, [0.1, 0.2, 0.3])
    for p, b in zip(params, before):
        assert np.array_equal(p.data, b)


def test_filter_normalized_direction():
    model = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    params = list(model.parameters())
    d = landscape.random_direction(params, seed=0)
    for p, di in zip(params, d):
        assert di.shape == p.shape and di.dtype == p.dtype
        if p.ndim == 1:
            assert np.all(di.data == 0)                        # biases ignored
        else:                                                  # each row: the norm of W's row
            np.testing.assert_allclose(np.linalg.norm(di.data, axis=1),
                                       np.linalg.norm(p.data, axis=1), rtol=1e-5)
    again = landscape.random_direction(params, seed=0)
    assert all(np.array_equal(a.data, b.data) for a, b in zip(d, again))
    other = landscape.random_direction(params, seed=1)
    assert not np.array_equal(d[0].data, other[0].data)
    layer = landscape.random_direction(params, normalize="layer", ignore=None, seed=0)
    for p, di in zip(params, layer):
        assert np.linalg.norm(di.data) == pytest.approx(np.linalg.norm(p.data), rel=1e-5)
    raw = landscape.random_direction(params, normalize=None, ignore=None, seed=0)
    # filter normalization only rescales rows of the same draw
    ratio = d[0].data / raw[0].data
    np.testing.assert_allclose(ratio, ratio[:, :1] * np.ones((1, 4)), rtol=1e-5)


def test_global_stream_untouched_with_a_seed():
    import tinygrad_opt as tg
    params = [Tensor(np.ones((2, 2)), requires_grad=True)]
    tg.manual_seed(5)
    a = tg.randn(3).numpy()
    tg.manual_seed(5)
    landscape.random_direction(params, seed=3)
    assert np.array_equal(tg.randn(3).numpy(), a)


def test_bad_inputs_name_the_function_and_shapes():
    closure, params = quad_problem()
    with pytest.raises(ValueError, match=r"surface_1d: direction\[0\] has shape \(2, 3\)"):
        landscape.surface_1d(closure, params, [np.ones((2, 3)), np.ones(3)], [0.0])
    with pytest.raises(ValueError, match="interpolate: end has 1 entries for 2 parameters"):
        landscape.interpolate(closure, params, params, params[:1], [0.0])
    with pytest.raises(ValueError, match="alphas"):
        landscape.surface_1d(closure, params, params, [])
    with pytest.raises(ValueError, match="normalize"):
        landscape.random_direction(params, normalize="unit")
    with pytest.raises(ValueError, match="one-element loss"):
        landscape.surface_1d(lambda: params[0], params, params, [0.0])
