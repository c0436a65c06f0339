"""nn.init: invariants of every initialiser (orthogonality, sparsity, variances, bounds, priors)."""
import math

import numpy as np
import pytest

import tinygrad_opt as tg
from tinygrad_opt import Tensor
from tinygrad_opt.nn import init


def empty(*shape, dtype=np.float64):
    return Tensor(np.zeros(shape, dtype=dtype), requires_grad=True)


def assert_std(w, std, mean=0.0):
    """Sample mean and variance within 5 standard errors of the targets (Gaussian-like)."""
    a = w.numpy().ravel().astype(np.float64)
    n = a.size
    assert abs(a.mean() - mean) < 5 * std / math.sqrt(n)
    # the sample variance has standard error about var * sqrt(2 / n) (a bit more for heavy tails)
    assert abs(a.var() - std ** 2) < 5 * std ** 2 * math.sqrt(2.0 / n)


def test_calculate_gain():
    assert init.calculate_gain("linear") == 1.0
    assert init.calculate_gain("sigmoid") == 1.0
    assert init.calculate_gain("conv2d") == 1.0
    assert init.calculate_gain("tanh") == pytest.approx(5 / 3)
    assert init.calculate_gain("relu") == pytest.approx(math.sqrt(2))
    assert init.calculate_gain("leaky_relu") == pytest.approx(math.sqrt(2 / (1 + 0.01 ** 2)))
    assert init.calculate_gain("leaky_relu", 0.2) == pytest.approx(math.sqrt(2 / 1.04))
    assert init.calculate_gain("selu") == 0.75
    with pytest.raises(ValueError, match="unsupported nonlinearity 'swish'"):
        init.calculate_gain("swish")


def test_fans():
    assert init._calculate_fan_in_and_fan_out(empty(5, 3)) == (3, 5)
    assert init._calculate_fan_in_and_fan_out(empty(8, 4, 3, 3)) == (36, 72)
    with pytest.raises(ValueError, match=r"at least 2 dimensions, got shape \(5,\)"):
        init._calculate_fan_in_and_fan_out(empty(5))


@pytest.mark.parametrize("shape, gain", [((20, 50), 1.0), ((50, 20), 2.0), ((16, 16), 0.5),
                                         ((6, 3, 2, 2), 1.0), ((1, 10), 1.0)])
def test_orthogonal(shape, gain):
    tg.manual_seed(0)
    w = empty(*shape)
    assert init.orthogonal_(w, gain=gain) is w
    m = w.numpy().reshape(shape[0], -1)
    rows, cols = m.shape
    if rows <= cols:       # wide: orthonormal rows
        np.testing.assert_allclose(m @ m.T, gain ** 2 * np.eye(rows), atol=1e-12)
    if rows >= cols:       # tall: orthonormal columns
        np.testing.assert_allclose(m.T @ m, gain ** 2 * np.eye(cols), atol=1e-12)


def test_orthogonal_float32_and_sign_fix_distribution():
    tg.manual_seed(1)
    w = init.orthogonal_(empty(8, 8, dtype=np.float32))
    assert w.dtype == np.float32
    np.testing.assert_allclose(w.numpy() @ w.numpy().T, np.eye(8), atol=1e-5)
    # with the sign fix Q is Haar-distributed: diagonal entries are symmetric around 0
    diag = np.concatenate([np.diag(init.orthogonal_(empty(4, 4)).numpy()) for _ in range(500)])
    assert abs(diag.mean()) < 5 * diag.std() / math.sqrt(diag.size)
    with pytest.raises(ValueError, match="orthogonal_"):
        init.orthogonal_(empty(5))


@pytest.mark.parametrize("shape, k", [((30, 40), 15), ((5, 3), 3), ((7, 9), 1), ((4, 6), 0)])
def test_sparse_exactly_k_per_row(shape, k):
    tg.manual_seed(2)
    w = empty(*shape)
    w.data[...] = 7.0                       # leftovers must be cleared
    assert init.sparse_(w, k, std=0.5) is w
    a = w.numpy()
    assert ((a != 0).sum(axis=1) == k).all()
    # different rows use different inputs (not one fixed pattern)
    if k and shape[1] > k and shape[0] > 3:
        assert len({tuple(np.flatnonzero(r)) for r in a}) > 1


def test_sparse_values_and_errors():
    tg.manual_seed(3)
    a = init.sparse_(empty(400, 100), 25, std=0.5).numpy()
    assert_std(Tensor(a[a != 0]), 0.5)
    with pytest.raises(ValueError, match=r"sparse_: k=11 nonzeros per row .* 10 inputs"):
        init.sparse_(empty(3, 10), 11)
    with pytest.raises(ValueError, match="2-D"):
        init.sparse_(empty(3, 4, 2), 2)


def test_xavier():
    tg.manual_seed(4)
    fi, fo = 300, 200
    b = 2.0 * math.sqrt(6 / (fi + fo))
    a = init.xavier_uniform_(empty(fo, fi), gain=2.0).numpy()
    assert a.min() >= -b and a.max() <= b and a.max() > 0.99 * b and a.min() < -0.99 * b
    assert_std(Tensor(a), b / math.sqrt(3))
    assert_std(init.xavier_normal_(empty(fo, fi), gain=0.5), 0.5 * math.sqrt(2 / (fi + fo)))


@pytest.mark.parametrize("mode", ["fan_in", "fan_out"])
def test_kaiming(mode):
    tg.manual_seed(5)
    shape = (120, 80, 3)
    fan = 80 * 3 if mode == "fan_in" else 120 * 3
    std = math.sqrt(2.0) / math.sqrt(fan)
    w = init.kaiming_normal_(empty(*shape), mode=mode, nonlinearity="relu")
    assert_std(w, std)
    u = init.kaiming_uniform_(empty(*shape), mode=mode, nonlinearity="relu").numpy()
    bound = math.sqrt(3) * std
    assert np.abs(u).max() <= bound and np.abs(u).max() > 0.99 * bound
    assert_std(Tensor(u), std)
    # default: leaky_relu with a=0 is the ReLU gain; a=sqrt(5) gives PyTorch's Linear bound
    d = init.kaiming_uniform_(empty(50, 400), a=math.sqrt(5)).numpy()
    assert np.abs(d).max() <= 1 / math.sqrt(400) and np.abs(d).max() > 0.99 / math.sqrt(400)
    with pytest.raises(ValueError, match="mode"):
        init.kaiming_normal_(empty(3, 3), mode="fan_avg")


def test_plain_fills():
    tg.manual_seed(6)
    w = empty(200, 300)
    assert init.normal_(w, mean=1.5, std=0.2) is w
    assert_std(w, 0.2, mean=1.5)
    u = init.uniform_(empty(200, 300), -2.0, 3.0).numpy()
    assert u.min() >= -2.0 and u.max() < 3.0 and u.min() < -1.99 and u.max() > 2.99
    assert abs(u.mean() - 0.5) < 5 * (5 / math.sqrt(12)) / math.sqrt(u.size)
    assert (init.zeros_(empty(3, 2)).numpy() == 0).all()
    assert (init.ones_(empty(3)).numpy() == 1).all()
    assert (init.constant_(empty(2, 2), -0.5).numpy() == -0.5).all()
    f32 = init.normal_(empty(4, 4, dtype=np.float32))
    assert f32.dtype == np.float32


def test_seed_reproducible():
    tg.manual_seed(7)
    a = init.orthogonal_(empty(4, 6)).numpy()
    tg.manual_seed(7)
    b = init.orthogonal_(empty(4, 6)).numpy()
    np.testing.assert_array_equal(a, b)


def test_init_records_no_graph():
    w = empty(4, 3)
    init.xavier_uniform_(w)
    assert w.requires_grad and w.grad is None
    (w * w).sum().backward()
    np.testing.assert_allclose(w.grad.numpy(), 2 * w.numpy())


@pytest.mark.parametrize("probs", [[0.7, 0.2, 0.1], [10, 30, 60, 900], np.array([0.25] * 4)])
def test_class_prior_bias(probs):
    b = empty(len(probs))
    assert init.class_prior_bias_(b, probs) is b
    p = np.asarray(probs, dtype=float)
    p = p / p.sum()
    z = b.numpy()
    np.testing.assert_allclose(np.exp(z) / np.exp(z).sum(), p, rtol=1e-12)
    assert abs(z.sum()) < 1e-12                      # centred: b = log p - mean(log p)


def test_class_prior_bias_float32_and_errors():
    b = init.class_prior_bias_(empty(3, dtype=np.float32), Tensor([1.0, 1.0, 2.0]))
    z = b.numpy().astype(np.float64)
    np.testing.assert_allclose(np.exp(z) / np.exp(z).sum(), [0.25, 0.25, 0.5], rtol=1e-6)
    with pytest.raises(ValueError, match="must be positive"):
        init.class_prior_bias_(empty(3), [0.5, 0.5, 0.0])
    with pytest.raises(ValueError, match=r"class_probs of shape \(2,\)"):
        init.class_prior_bias_(empty(3), [0.5, 0.5])


def test_relu_and_gate_bias():
    assert (init.relu_bias_(empty(5)).numpy() == 0.1).all()
    assert (init.relu_bias_(empty(5), 0.01).numpy() == 0.01).all()
    g = init.gate_bias_(empty(4)).numpy()
    assert (g == 1.0).all()
    assert (1 / (1 + np.exp(-g)) > 0.73).all()       # the gate starts mostly open


def test_inits_on_device(device):
    w = Tensor(np.zeros((6, 10)), device=device)
    init.orthogonal_(w, gain=2.0)
    assert w.device == device
    a = w.numpy()
    np.testing.assert_allclose(a @ a.T, 4 * np.eye(6), atol=1e-10)
    init.sparse_(w, 3)
    assert w.device == device and ((w.numpy() != 0).sum(axis=1) == 3).all()
    for fn in (init.xavier_uniform_, init.xavier_normal_, init.kaiming_uniform_,
               init.kaiming_normal_, init.normal_, init.uniform_):
        assert fn(w) is w and w.device == device and np.isfinite(w.numpy()).all()
    b = Tensor(np.zeros(3, dtype=np.float32), device=device)
    init.class_prior_bias_(b, [1, 1, 2])
    z = b.numpy().astype(np.float64)
    np.testing.assert_allclose(np.exp(z) / np.exp(z).sum(), [0.25, 0.25, 0.5], rtol=1e-6)
