"""Stochastic Lanczos quadrature and per-layer block eigenvalues against dense Hessians."""
import numpy as np
import pytest

from tinygrad_opt import curvature, nn
from tinygrad_opt.tensor import Tensor

from test_curvature import mlp_dense_hessian, mlp_problem, quadratic, random_symmetric


def _integral(grid, density, k=0):
    return float(curvature._trapezoid(density * grid ** k, grid))


def test_density_integrates_to_one_on_an_mlp():
    closure, params = mlp_problem(seed=0)
    grid, density = curvature.spectral_density(closure, params, n_iter=20, n_vectors=3, seed=0)
    assert isinstance(grid, np.ndarray) and isinstance(density, np.ndarray)
    assert grid.shape == density.shape and np.all(density >= 0)
    assert _integral(grid, density) == pytest.approx(1.0, abs=1e-12)


def test_moments_are_exact_on_a_diagonal_hessian():
    # Rademacher probes have v_i^2 = 1, so v^T H^k v / n = tr(H^k) / n exactly for diagonal H,
    # and m Lanczos steps integrate polynomials of degree <= 2m - 1 exactly.
    h = np.array([-3.0, -0.5, 0.25, 1.0, 2.0, 4.0, 7.5, 9.0])
    closure, params = quadratic(np.diag(h), np.ones(8))
    sn = curvature.spectral_nodes(closure, params, n_iter=3, n_vectors=1, seed=4)
    assert sn.moment(0) == pytest.approx(1.0, abs=1e-12)
    assert sn.moment(1) == pytest.approx(h.mean(), abs=1e-12)
    assert sn.moment(2) == pytest.approx((h ** 2).mean(), abs=1e-11)
    assert sn.moment(5) == pytest.approx((h ** 5).mean(), rel=1e-10)
    sigma = 0.05
    grid, density = curvature.spectral_density(closure, params, n_iter=8, seed=4, sigma=sigma)
    assert _integral(grid, density, 1) == pytest.approx(h.mean(), abs=1e-6)
    # the Gaussian kernel adds sigma^2 to the second moment
    assert _integral(grid, density, 2) - sigma ** 2 == pytest.approx((h ** 2).mean(), abs=1e-5)


@pytest.mark.parametrize("reorth", [False, True])
def test_moments_match_the_dense_hessian_of_an_mlp(reorth):
    H, _, _ = mlp_dense_hessian(seed=0)
    n = H.shape[0]
    closure, params = mlp_problem(seed=0)
    sn = curvature.spectral_nodes(closure, params, n_iter=10, n_vectors=300, seed=1,
                                  reorthogonalize=reorth)
    # per probe the estimate of tr(H^k)/n has variance 2 sum_{i != j} (H^k)_ij^2 / n^2
    for k in (1, 2):
        Hk = np.linalg.matrix_power(H, k)
        off = Hk - np.diag(np.diag(Hk))
        se = np.sqrt(2 * (off ** 2).sum()) / n / np.sqrt(300)
        assert abs(sn.moment(k) - np.trace(Hk) / n) < 4 * se + 1e-12
    per_probe = (sn.weights * sn.nodes).sum(axis=1)
    assert per_probe.std() > 0                     # really stochastic, really averaged
    assert sn.n_products == 300 * 10


@pytest.mark.parametrize("reorth", [False, True])
def test_mass_lands_where_the_eigenvalues_are(reorth):
    eig = np.array([-2.0] * 5 + [1.0] * 10 + [5.0] * 5)
    closure, params = quadratic(random_symmetric(20, eig, seed=3), np.zeros(20))
    sn = curvature.spectral_nodes(closure, params, n_iter=20, n_vectors=60, seed=0,
                                  reorthogonalize=reorth)
    assert sn.mass_below(0.0) == pytest.approx(0.25, abs=0.05)
    assert sn.mass_below(-3.0) == 0.0 and sn.mass_below(6.0) == pytest.approx(1.0)
    grid, density = sn.density(sigma=0.05)
    def mass(a, b):
        m = (grid >= a) & (grid <= b)
        return float(curvature._trapezoid(density[m], grid[m]))
    assert mass(-2.3, -1.7) == pytest.approx(0.25, abs=0.05)
    assert mass(0.7, 1.3) == pytest.approx(0.50, abs=0.05)
    assert mass(4.7, 5.3) == pytest.approx(0.25, abs=0.05)
    assert mass(-1.5, 0.5) + mass(1.5, 4.5) < 1e-6
    # the peaks sit on the eigenvalues
    for lam in (-2.0, 1.0, 5.0):
        near = np.abs(grid - lam) < 0.3
        assert abs(grid[near][np.argmax(density[near])] - lam) < 0.01


def test_without_reorthogonalization_long_runs_keep_the_moments():
    # 60 steps on 12 distinct eigenvalues: the plain recurrence loses orthogonality and repeats
    # converged nodes, but the weights still integrate low moments exactly
    eig = np.linspace(-1.0, 4.0, 12)
    closure, params = quadratic(np.diag(eig), np.zeros(12))
    sn = curvature.spectral_nodes(closure, params, n_iter=60, seed=0)
    assert sn.moment(0) == pytest.approx(1.0, abs=1e-8)
    for k in (1, 2, 3):
        assert sn.moment(k) == pytest.approx((eig ** k).mean(), rel=1e-6)


def test_kernel_sum_matches_every_pair_on_any_grid():
    rng = np.random.default_rng(3)
    nodes = np.sort(rng.standard_normal(40)) * 5
    w = rng.random(40)
    sigma = 0.05
    grid = np.linspace(nodes[0] - 5 * sigma, nodes[-1] + 5 * sigma, 1500)
    E = grid[:, None] - nodes[None, :]
    want = np.exp(-0.5 * (E / sigma) ** 2) @ w
    got = curvature._kernel_sum(grid, nodes, w, sigma)
    # each node's Gaussian is cut at 12 sigma, below 1e-31 of its peak
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-30 * w.max())
    assert got.max() > 0.5 and (got == 0).any()    # far from every node: exactly 0
    order = rng.permutation(grid.size)             # a grid in any order: every pair
    np.testing.assert_allclose(curvature._kernel_sum(grid[order], nodes, w, sigma), want[order],
                               rtol=1e-12, atol=1e-300)
    wide = curvature._kernel_sum(grid, nodes, w, 100.0)     # windows wider than the grid
    np.testing.assert_allclose(wide, np.exp(-0.5 * (E / 100.0) ** 2) @ w, rtol=1e-12)


def test_seeded_probes_reuse_generators_without_sharing_their_streams():
    def stream(seed):
        return np.random.RandomState(seed).random_sample(20)
    for _ in range(3):                             # generators handed back and re-seeded
        a = curvature._Probes(np, np.float64, "cpu", seed=7)
        b = curvature._Probes(np, np.float64, "cpu", seed=8)    # both alive: two generators
        assert a.rs is not b.rs
        got_a = np.concatenate([a.rs.random_sample(10), a.rs.random_sample(10)])
        got_b = b.rs.random_sample(20)
        np.testing.assert_array_equal(got_a, stream(7))
        np.testing.assert_array_equal(got_b, stream(8))
        del a, b
    want = 1.0 - 2.0 * (np.random.RandomState(3).random_sample(6) < 0.5)
    np.testing.assert_array_equal(curvature._Probes(np, np.float64, "cpu", 3).rademacher(6), want)


def test_spectral_density_rejects_bad_arguments():
    closure, params = quadratic(np.eye(3), np.ones(3))
    with pytest.raises(ValueError, match="n_iter"):
        curvature.spectral_density(closure, params, n_iter=0)
    with pytest.raises(ValueError, match="sigma"):
        curvature.spectral_density(closure, params, sigma=-1.0)


def test_block_top_eigenvalues_match_dense_blocks():
    H, _, _ = mlp_dense_hessian(seed=0)
    closure, params = mlp_problem(seed=0)
    names = ["0.weight", "0.bias", "2.weight", "2.bias"]
    by_layer = curvature.block_top_eigenvalues(closure, list(zip(names, params)), k=1)
    assert list(by_layer) == ["0", "2"]
    for key, (lo, hi) in {"0": (0, 15), "2": (15, 33)}.items():
        dense = np.linalg.eigvalsh(H[lo:hi, lo:hi])[::-1][:1]
        np.testing.assert_allclose(by_layer[key].eigenvalues, dense, rtol=1e-8, atol=1e-10)
    by_param = curvature.block_top_eigenvalues(closure, params, k=1, by="parameter")
    bounds = np.cumsum([0, 10, 5, 15, 3])
    for i in range(4):
        block = H[bounds[i]:bounds[i + 1], bounds[i]:bounds[i + 1]]
        assert by_param[str(i)].eigenvalues[0] == pytest.approx(np.linalg.eigvalsh(block)[-1],
                                                                 rel=1e-8)


def test_block_top_eigenvalues_on_a_model_and_bad_grouping():
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))
    x = Tensor(np.random.default_rng(0).standard_normal((6, 3)).astype(np.float32))
    y = Tensor(np.array([0, 1, 1, 0, 1, 0]))
    def closure():
        return nn.functional.cross_entropy(model(x), y)
    out = curvature.block_top_eigenvalues(closure, list(model.named_parameters()))
    assert set(out) == {"0", "2"} and all(np.isfinite(e.eigenvalues[0]) for e in out.values())
    named = list(model.named_parameters())
    with pytest.raises(ValueError, match="adjacent"):
        curvature.block_top_eigenvalues(closure, [named[0], named[2], named[1]])
    with pytest.raises(ValueError, match="by must be"):
        curvature.block_top_eigenvalues(closure, named, by="row")
