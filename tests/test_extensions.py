"""extensions.collect against dense truths built with the plain autograd on small nets.

Per-example gradients: a loop over single-example losses. BatchL2, SumGradSquared and
Variance: their definitions applied to those. DiagGGN: the diagonal of J^T H_L J, with the
Jacobian J of the model output built row by row with autograd.grad and H_L written down.
KFAC: A = x^T x / N from the layer inputs; G against the bias block of the dense GGN.
The sampled quantities converge to the exact ones (stated seeds and tolerances).
"""
import numpy as np
import pytest

import tinygrad_opt as tg
from tinygrad_opt import autograd, engine, extensions as ext, nn, ops
from tinygrad_opt.nn import functional as F

FIRST = (ext.BatchGrad, ext.BatchL2, ext.SumGradSquared, ext.Variance)
TOL = {np.float64: dict(rtol=1e-9, atol=1e-12), np.float32: dict(rtol=2e-4, atol=2e-6)}


# ------------------------------------------------------------------------------ helpers
class _ReluOp(nn.Module):
    """Linear, then relu as its own op (not fused), then Linear, Sigmoid, Linear."""

    def __init__(self, dtype):
        super().__init__()
        self.l1 = nn.Linear(4, 6, dtype=dtype)
        self.l2 = nn.Linear(6, 5, dtype=dtype)
        self.l3 = nn.Linear(5, 3, dtype=dtype)

    def forward(self, x):
        return self.l3(F.sigmoid(self.l2(F.relu(self.l1(x)))))


def _model(kind, dtype):
    tg.manual_seed(1)
    if kind == "fused":         # Sequential runs Linear, ReLU as one LinearReLU node
        return nn.Sequential(nn.Linear(4, 6, dtype=dtype), nn.ReLU(), nn.Linear(6, 5, dtype=dtype),
                             nn.Tanh(), nn.Linear(5, 3, dtype=dtype))
    if kind == "relu_op":
        return _ReluOp(dtype)
    if kind == "dropout":
        return nn.MLP([4, 6, 5, 3], activation="tanh", dropout=0.3, dtype=dtype)
    raise ValueError(kind)


def _data(n, loss, dtype, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, 4)).astype(dtype)
    t = rng.integers(0, 3, n) if loss == "ce" else rng.standard_normal((n, 3)).astype(dtype)
    return X, t


def _loss(out, t, loss, reduction):
    if loss == "ce":
        return F.cross_entropy(out, t, reduction=reduction)
    return F.mse_loss(out, tg.Tensor(t[: out.shape[0]] if t.shape[0] != out.shape[0] else t),
                      reduction=reduction)


def _scale(loss, reduction, n):
    """The factor of one example's summed loss in the reduced loss."""
    if reduction == "sum":
        return 1.0
    return 1.0 / n if loss == "ce" else 1.0 / (n * 3)


def _per_example_loop(model, X, t, loss, reduction):
    """grad_batch truth: one backward per single-example loss, scaled as in the batch loss."""
    params = list(model.parameters())
    n = X.shape[0]
    rows = []
    for i in range(n):
        li = _loss(model(tg.Tensor(X[i:i + 1])), t[i:i + 1], loss, "sum") * _scale(loss, reduction, n)
        rows.append([g.data for g in autograd.grad(li, params)])
    return [np.stack([r[j] for r in rows]) for j in range(len(params))]


def _dense_ggn(model, X, t, loss, reduction, forward=None):
    """J^T H_L J for all parameters flattened, with J built row by row by autograd.grad."""
    params = list(model.parameters())
    out = (forward or model)(tg.Tensor(X))
    n, k = out.shape
    J = np.zeros((n * k, sum(p.size for p in params)))
    for i in range(n):
        for c in range(k):
            gs = autograd.grad(out[i, c], params, retain_graph=True)
            J[i * k + c] = np.concatenate([g.data.ravel() for g in gs])
    H = np.zeros((n * k, n * k))
    s = _scale(loss, reduction, n)
    for i in range(n):
        if loss == "ce":
            z = out.data[i].astype(np.float64)
            p = np.exp(z - z.max())
            p /= p.sum()
            Hi = np.diag(p) - np.outer(p, p)
        else:
            Hi = 2 * np.eye(k)
        H[i * k:(i + 1) * k, i * k:(i + 1) * k] = s * Hi
    return J.T @ H @ J, out


def _split(vec, params):
    out, i = [], 0
    for p in params:
        out.append(vec[i:i + p.size].reshape(p.shape))
        i += p.size
    return out


def _layer_inputs(model, X):
    """The input of every Linear of a `fused` model, computed by hand."""
    W = [m for m in model if isinstance(m, nn.Linear)]
    h1 = np.maximum(X @ W[0].weight.data.T + W[0].bias.data, 0)
    h2 = np.tanh(h1 @ W[1].weight.data.T + W[1].bias.data)
    return [X, h1, h2]


# --------------------------------------------------------------------- first order
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("n", [1, 5])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("loss", ["ce", "mse"])
@pytest.mark.parametrize("kind", ["fused", "relu_op"])
def test_first_order_match_single_example_loop(kind, loss, reduction, n, dtype):
    model = _model(kind, dtype)
    X, t = _data(n, loss, dtype)
    truth = _per_example_loop(model, X, t, loss, reduction)
    out = model(tg.Tensor(X))
    with ext.collect(*(q() for q in FIRST)):
        _loss(out, t, loss, reduction).backward()
    tol = TOL[dtype]
    for p, gb in zip(model.parameters(), truth):
        assert p.grad_batch.shape == (n,) + p.shape and p.grad_batch.dtype == dtype
        np.testing.assert_allclose(p.grad_batch.data, gb, **tol)
        np.testing.assert_allclose(p.grad_batch.data.sum(0), p.grad.data, **tol)   # same pass
        flat = gb.reshape(n, -1).astype(np.float64)
        np.testing.assert_allclose(p.batch_l2.data, (flat ** 2).sum(1), **tol)
        np.testing.assert_allclose(p.sum_grad_squared.data, (gb.astype(np.float64) ** 2).sum(0), **tol)
        var = (gb.astype(np.float64) ** 2).mean(0) - gb.astype(np.float64).mean(0) ** 2
        np.testing.assert_allclose(p.variance.data, var, rtol=tol["rtol"] * 10,
                                   atol=tol["atol"] + 1e-6 * (dtype == np.float32) * np.abs(var).max())


@pytest.mark.parametrize("block", [1, 30, 61, 1 << 18])
def test_grad_batch_written_in_blocks(block, monkeypatch):
    """BatchGrad's blocks of a few examples (one example's block larger than the block size,
    a last block shorter than the others, one block for all) give exactly g_n x_n^T, also
    with x in a wider dtype than g."""
    monkeypatch.setattr(ext, "_BLOCK", block)
    rng = np.random.default_rng(3)
    g = rng.standard_normal((7, 5)).astype(np.float32)
    for x in (rng.standard_normal((7, 6)).astype(np.float32), rng.standard_normal((7, 6))):
        out = ext._outer_per_example(g, x, np)
        assert out.dtype == np.result_type(g, x) and out.shape == (7, 5, 6)
        np.testing.assert_array_equal(out, g[:, :, None] * x[:, None, :])
    model = _model("fused", np.float64)
    X, t = _data(7, "ce", np.float64)
    truth = _per_example_loop(model, X, t, "ce", "mean")
    with ext.collect(ext.BatchGrad()):
        F.cross_entropy(model(tg.Tensor(X)), t).backward()
    for p, gb in zip(model.parameters(), truth):
        np.testing.assert_allclose(p.grad_batch.data, gb, rtol=1e-10, atol=1e-14)


def test_batch_l2_without_grad_batch_and_single_quantities():
    """Each quantity alone fills only its own attribute (BatchL2 never forms grad_batch)."""
    model = _model("fused", np.float64)
    X, t = _data(4, "ce", np.float64)
    truth = _per_example_loop(model, X, t, "ce", "mean")
    with ext.collect(ext.BatchL2()):
        _loss(model(tg.Tensor(X)), t, "ce", "mean").backward()
    for p, gb in zip(model.parameters(), truth):
        np.testing.assert_allclose(p.batch_l2.data, (gb.reshape(4, -1) ** 2).sum(1), rtol=1e-10)
        for attr in ("grad_batch", "variance", "sum_grad_squared", "diag_ggn", "kfac"):
            assert not hasattr(p, attr)


@pytest.mark.parametrize("subset", [(ext.SumGradSquared,), (ext.Variance,),
                                    (ext.SumGradSquared, ext.Variance), (ext.BatchL2, ext.Variance),
                                    (ext.BatchL2, ext.SumGradSquared),
                                    (ext.BatchGrad, ext.BatchL2)])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_each_subset_of_first_order_quantities(subset, dtype):
    """Each subset takes its own path (Variance alone from a pre-scaled product, with
    SumGradSquared from its product): the same values as the truth, and no attribute not
    asked for."""
    model = _model("fused", dtype)
    X, t = _data(5, "ce", dtype)
    truth = _per_example_loop(model, X, t, "ce", "mean")
    with ext.collect(*(q() for q in subset)):
        _loss(model(tg.Tensor(X)), t, "ce", "mean").backward()
    tol = TOL[dtype]
    for p, gb in zip(model.parameters(), truth):
        gb = gb.astype(np.float64)
        want = {"grad_batch": gb, "batch_l2": (gb.reshape(5, -1) ** 2).sum(1),
                "sum_grad_squared": (gb ** 2).sum(0),
                "variance": (gb ** 2).mean(0) - gb.mean(0) ** 2}
        asked = {q.attr for q in subset}
        for attr, value in want.items():
            if attr not in asked:
                assert not hasattr(p, attr)
                continue
            got = getattr(p, attr).data
            assert got.dtype == dtype and got.shape == value.shape
            atol = tol["atol"] + (1e-6 * np.abs(value).max() if dtype == np.float32 else 0)
            np.testing.assert_allclose(got, value, rtol=tol["rtol"] * 10, atol=atol)


@pytest.mark.parametrize("with_sgs", [True, False])
def test_variance_is_never_below_zero(with_sgs):
    """Seven identical examples: every per-example gradient is the same, so the variance is 0,
    and the formula (sum of squares - grad^2 / N) / N lands below 0 by rounding in about a
    third of the entries (checked here, so that the test can fail). Those come out as 0, on
    a layer large enough for the host's look-first path and on small ones."""
    tg.manual_seed(0)
    model = nn.Sequential(nn.Linear(48, 40, dtype=np.float32), nn.Tanh(),
                          nn.Linear(40, 3, dtype=np.float32))
    rng = np.random.default_rng(0)
    X = np.repeat(rng.standard_normal((1, 48)).astype(np.float32), 7, axis=0)
    t = np.repeat(rng.integers(0, 3, 1), 7)
    qs = (ext.SumGradSquared(), ext.Variance()) if with_sgs else (ext.Variance(),)
    with ext.collect(*qs):
        F.cross_entropy(model(tg.Tensor(X)), t).backward()
    W = model[0].weight
    gb = W.grad.data.astype(np.float64) / 7                      # every example's gradient
    raw = ((7 * gb ** 2).astype(np.float32) - W.grad.data ** 2 / 7) / 7
    assert W.size >= 1024 and (raw < 0).sum() > W.size // 10
    for p in model.parameters():
        v = p.variance.data
        assert v.dtype == np.float32 and (v >= 0).all()
        np.testing.assert_allclose(v, 0, atol=1e-8 * float((p.grad.data ** 2).max()))


def test_clip_below_zero_in_place():
    v = np.array([-1e-9, 0.0, 2.0, np.nan, -0.5] * 300, dtype=np.float32)   # the look-first path
    for a in (v.copy(), v[:5].copy()):                                      # and the small one
        out = ext._clip_below_zero(a, np)
        assert out is a
        np.testing.assert_array_equal(a, np.tile(np.array([0, 0, 2, np.nan, 0], np.float32),
                                                 a.size // 5))
    w = np.arange(2000, dtype=np.float64)
    ext._clip_below_zero(w, np)
    np.testing.assert_array_equal(w, np.arange(2000))


@pytest.mark.parametrize("kind,loss,reduction", [("fused", "ce", "mean"),
                                                   ("relu_op", "mse", "sum"),
                                                   ("dropout", "ce", "sum")])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_batch_dot_grad_against_grad_batch(kind, loss, reduction, dtype):
    """batch_dot_grad[n] = <grad_batch[n], p.grad>, without grad_batch (same masks: one pass
    collects both, the truth is formed from that pass's grad_batch)."""
    model = _model(kind, dtype)
    X, t = _data(5, loss, dtype)
    tg.manual_seed(3)
    with ext.collect(ext.BatchDotGrad(), ext.BatchGrad()):
        _loss(model(tg.Tensor(X)), t, loss, reduction).backward()
    tol = TOL[dtype]
    for p in model.parameters():
        gb = p.grad_batch.data.reshape(5, -1).astype(np.float64)
        want = gb @ gb.sum(axis=0)
        np.testing.assert_allclose(gb.sum(axis=0), p.grad.data.reshape(-1), **tol)
        np.testing.assert_allclose(p.batch_dot_grad.data, want, rtol=tol["rtol"],
                                   atol=tol["atol"] + tol["rtol"] * np.abs(want).max())
        assert p.batch_dot_grad.shape == (5,) and p.batch_dot_grad.dtype == p.data.dtype
    if kind == "fused":                   # against the loop's truth, and alone: no grad_batch
        truth = _per_example_loop(model, X, t, loss, reduction)
        for p in model.parameters():
            p.grad = None
            del p.grad_batch
        with ext.collect(ext.BatchDotGrad()):
            _loss(model(tg.Tensor(X)), t, loss, reduction).backward()
        for p, gb in zip(model.parameters(), truth):
            gb = gb.reshape(5, -1)
            np.testing.assert_allclose(p.batch_dot_grad.data, gb @ gb.sum(axis=0), **tol)
            assert not hasattr(p, "grad_batch")


def test_dropout_per_example_and_ggn_on_the_same_masks():
    """Dropout's mask is random: the truth differentiates the rows of the same forward."""
    dtype = np.float64
    model = _model("dropout", dtype)
    X, t = _data(5, "ce", dtype)
    params = list(model.parameters())
    out = model(tg.Tensor(X))
    rows = F.cross_entropy(out, t, reduction="none")
    truth = [[g.data for g in autograd.grad(rows[i] * 0.2, params, retain_graph=True)]
             for i in range(5)]
    J = np.stack([np.concatenate([g.data.ravel() for g in autograd.grad(out[i, c], params,
                                                                       retain_graph=True)])
                  for i in range(5) for c in range(3)])
    p_ = np.exp(out.data - out.data.max(1, keepdims=True))
    p_ /= p_.sum(1, keepdims=True)
    H = np.zeros((15, 15))
    for i in range(5):
        H[3 * i:3 * i + 3, 3 * i:3 * i + 3] = (np.diag(p_[i]) - np.outer(p_[i], p_[i])) / 5
    ggn = np.diag(J.T @ H @ J)
    assert any(type(n) is ops.Mul for n in _nodes(out))        # the dropout product is passed
    with ext.collect(ext.BatchGrad(), ext.DiagGGN()):
        F.cross_entropy(out, t).backward()
    for j, (p, d) in enumerate(zip(params, _split(ggn, params))):
        np.testing.assert_allclose(p.grad_batch.data, np.stack([r[j] for r in truth]), rtol=1e-10,
                                   atol=1e-14)
        np.testing.assert_allclose(p.diag_ggn.data, d, rtol=1e-10, atol=1e-14)


def _nodes(t):
    stack, seen = [t._node], []
    while stack:
        n = stack.pop()
        if n is None or n in seen:
            continue
        seen.append(n)
        stack.extend(p._node for p in (n.parents or ()) if isinstance(p, tg.Tensor))
    return seen


# -------------------------------------------------------------------- second order
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("n", [1, 3])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("loss", ["ce", "mse"])
@pytest.mark.parametrize("kind", ["fused", "relu_op"])
def test_diag_ggn_is_the_dense_ggn_diagonal(kind, loss, reduction, n, dtype):
    model = _model(kind, dtype)
    X, t = _data(n, loss, dtype)
    ggn, out = _dense_ggn(model, X, t, loss, reduction)
    with ext.collect(ext.DiagGGN()):
        _loss(out, t, loss, reduction).backward()
    params = list(model.parameters())
    tol = TOL[dtype]
    for p, d in zip(params, _split(np.diag(ggn), params)):
        assert p.diag_ggn.shape == p.shape and p.diag_ggn.dtype == dtype
        np.testing.assert_allclose(p.diag_ggn.data, d, rtol=tol["rtol"] * 10, atol=tol["atol"])


def test_class_weighted_cross_entropy_per_example_and_ggn():
    """Class weights go through SoftmaxCrossEntropy with rows of T summing to w[y] / sum w[y]."""
    model = _model("fused", np.float64)
    X, t = _data(6, "ce", np.float64)
    w = np.array([0.5, 2.0, 1.0])
    params = list(model.parameters())
    out = model(tg.Tensor(X))
    rows = F.cross_entropy(out, t, weight=w, reduction="none")
    truth = [[g.data for g in autograd.grad(rows[i] / w[t].sum(), params, retain_graph=True)]
             for i in range(6)]
    with ext.collect(ext.BatchGrad(), ext.DiagGGN()):
        F.cross_entropy(out, t, weight=w).backward()
    for j, p in enumerate(params):
        np.testing.assert_allclose(p.grad_batch.data, np.stack([r[j] for r in truth]), rtol=1e-10,
                                   atol=1e-14)
    # the bias of the last layer: its GGN block is sum_n r_n (diag p_n - p_n p_n^T)
    p_ = np.exp(out.data - out.data.max(1, keepdims=True))
    p_ /= p_.sum(1, keepdims=True)
    r = w[t] / w[t].sum()
    expect = sum(r[i] * (p_[i] - p_[i] ** 2) for i in range(6))
    np.testing.assert_allclose(params[-1].diag_ggn.data, expect, rtol=1e-10)


def test_label_smoothing_and_a_layer_without_bias():
    """Smoothed targets keep rows summing to 1, so H_n = (diag p - p p^T) / N as without;
    a bias-free Linear fills its weight only."""
    tg.manual_seed(2)
    model = nn.Sequential(nn.Linear(4, 5, bias=False, dtype=np.float64), nn.Tanh(),
                          nn.Linear(5, 3, dtype=np.float64))
    X, t = _data(5, "ce", np.float64)
    params = list(model.parameters())
    truth = []
    for i in range(5):
        li = F.cross_entropy(model(tg.Tensor(X[i:i + 1])), t[i:i + 1], label_smoothing=0.1) / 5
        truth.append([g.data for g in autograd.grad(li, params)])
    out = model(tg.Tensor(X))
    with ext.collect(ext.BatchGrad(), ext.DiagGGN()):
        F.cross_entropy(out, t, label_smoothing=0.1).backward()
    for j, p in enumerate(params):
        np.testing.assert_allclose(p.grad_batch.data, np.stack([r[j] for r in truth]), rtol=1e-10,
                                   atol=1e-15)
    p_ = np.exp(out.data - out.data.max(1, keepdims=True))
    p_ /= p_.sum(1, keepdims=True)
    np.testing.assert_allclose(params[-1].diag_ggn.data, (p_ - p_ ** 2).sum(0) / 5, rtol=1e-10)
    assert len(params) == 3 and params[0].diag_ggn.shape == (5, 4)


@pytest.mark.parametrize("n", [1, 5])
def test_kfac_factors_by_definition(n):
    dtype = np.float64
    model = _model("fused", dtype)
    X, t = _data(n, "ce", dtype)
    out = model(tg.Tensor(X))
    with ext.collect(ext.KFAC(mc_samples=2), ext.DiagGGNMC(mc_samples=2)):
        F.cross_entropy(out, t).backward()
    layers = [m for m in model if isinstance(m, nn.Linear)]
    for lin, x in zip(layers, _layer_inputs(model, X)):
        A, G = (a.data for a in lin.weight.kfac)
        (Gb,) = (a.data for a in lin.bias.kfac)
        np.testing.assert_allclose(A, x.T @ x / n, rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(Gb, G, rtol=0, atol=0)
        np.testing.assert_allclose(G, G.T, rtol=0, atol=1e-15)
        assert np.linalg.eigvalsh(G).min() > -1e-12
        # KFAC and DiagGGNMC with the same mc_samples share their samples: diag G is the
        # bias's sampled GGN diagonal, and with one example A kron G is the weight's block
        np.testing.assert_allclose(np.diag(G), lin.bias.diag_ggn_mc.data, rtol=1e-12, atol=1e-15)
        if n == 1:
            np.testing.assert_allclose(np.outer(np.diag(G), np.diag(A)), lin.weight.diag_ggn_mc.data,
                                       rtol=1e-10, atol=1e-15)
    # the last layer's G: (p - e_y)(p - e_y)^T / (N M) summed over the samples; its trace is
    # then sum over n, m of |p_n - e_y|^2 / (N M), between min and max of |p - e_c|^2 / N
    p_ = np.exp(out.data - out.data.max(1, keepdims=True))
    p_ /= p_.sum(1, keepdims=True)
    G = layers[-1].weight.kfac[1].data
    norms = np.array([[((p_[i] - np.eye(3)[c]) ** 2).sum() for c in range(3)] for i in range(n)])
    assert norms.min(1).sum() / n - 1e-12 <= np.trace(G) <= norms.max(1).sum() / n + 1e-12
    np.testing.assert_allclose(G.sum(axis=1), 0, atol=1e-14)      # (p - e_y) sums to 0


def test_kfac_input_factor_is_one_symmetric_product():
    """A = x^T x / N comes out exactly symmetric: NumPy runs the product of one buffer with its
    own transpose as BLAS syrk (about half the multiply-adds) and mirrors one triangle, where
    a general product of two buffers rounds the two triangles apart in float32."""
    tg.manual_seed(0)
    model = nn.Sequential(nn.Linear(32, 5, dtype=np.float32))
    X = np.random.default_rng(0).standard_normal((8, 32)).astype(np.float32)
    xs = X / np.sqrt(np.float32(8))
    general = xs.T @ xs.copy()
    assert not np.array_equal(general, general.T)          # so the check below can fail
    with ext.collect(ext.KFAC()):
        F.cross_entropy(model(tg.Tensor(X)), np.arange(8) % 5).backward()
    A = model[0].weight.kfac[0].data
    np.testing.assert_array_equal(A, A.T)
    np.testing.assert_allclose(A, X.T.astype(np.float64) @ X / 8, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("loss", ["ce", "mse"])
def test_sampled_quantities_converge_to_exact(loss):
    """DiagGGNMC and KFAC's G with M = 4000 samples (seed 0) are within 10% (relative, in the
    Frobenius norm per parameter) of DiagGGN and of the dense GGN's bias blocks; the Monte
    Carlo error is about sqrt(2 / M) = 2.2% here. With M = 1 they are not (a sanity check
    that the statistic can fail)."""
    dtype = np.float64
    model = _model("fused", dtype)
    X, t = _data(5, loss, dtype)
    ggn, out = _dense_ggn(model, X, t, loss, "mean")
    tg.manual_seed(0)
    with ext.collect(ext.DiagGGN(), ext.DiagGGNMC(mc_samples=4000), ext.KFAC(mc_samples=4000)):
        _loss(out, t, loss, "mean").backward(retain_graph=True)
    params = list(model.parameters())
    blocks, i = {}, 0
    for p in params:
        blocks[p] = ggn[i:i + p.size, i:i + p.size]
        i += p.size

    def rel(a, b):
        return np.linalg.norm(a - b) / np.linalg.norm(b)

    for p in params:
        assert rel(p.diag_ggn_mc.data, p.diag_ggn.data) < 0.1
        if p.ndim == 1:
            assert rel(p.kfac[0].data, blocks[p]) < 0.1
    with ext.collect(ext.DiagGGNMC(mc_samples=1)):
        _loss(out, t, loss, "mean").backward()
    assert max(rel(p.diag_ggn_mc.data, p.diag_ggn.data) for p in params) > 0.1


def test_mc_samples_follow_the_project_seed():
    model = _model("fused", np.float64)
    X, t = _data(4, "ce", np.float64)
    vals = []
    for seed in (3, 3, 4):
        tg.manual_seed(seed)
        with ext.collect(ext.DiagGGNMC()):
            F.cross_entropy(model(tg.Tensor(X)), t).backward()
        vals.append(model[0].weight.diag_ggn_mc.data.copy())
    np.testing.assert_array_equal(vals[0], vals[1])
    assert not np.array_equal(vals[0], vals[2])


# ------------------------------------------------------------------- scope and errors
def test_nothing_outside_collect():
    model = _model("fused", np.float64)
    X, t = _data(3, "ce", np.float64)
    F.cross_entropy(model(tg.Tensor(X)), t).backward()
    assert all(not hasattr(p, "grad_batch") for p in model.parameters())
    with ext.collect(ext.BatchGrad()):
        F.cross_entropy(model(tg.Tensor(X)), t).backward()
    first = [p.grad_batch for p in model.parameters()]
    assert engine._grad.collect is None
    F.cross_entropy(model(tg.Tensor(X[:2])), t[:2]).backward()      # a plain pass leaves them
    assert all(p.grad_batch is g for p, g in zip(model.parameters(), first))
    with pytest.raises(ZeroDivisionError):
        with ext.collect(ext.BatchGrad()):
            1 / 0
    assert engine._grad.collect is None


def test_a_new_backward_never_writes_into_arrays_the_user_holds():
    """Each backward drops the previous attributes before allocating its own (so the
    allocator may reuse their blocks): arrays the user kept from a step keep their values,
    and another collect's attributes are left alone."""
    model = _model("fused", np.float64)
    qs = (ext.BatchGrad(), ext.BatchL2(), ext.SumGradSquared(), ext.Variance(), ext.KFAC())
    kept, copies = [], []
    for seed in (0, 1):
        X, t = _data(5, "ce", np.float64, seed=seed)
        model.zero_grad()
        with ext.collect(*qs):
            F.cross_entropy(model(tg.Tensor(X)), t).backward()
        arrays = [a.data for p in model.parameters() for a in
                  (p.grad_batch, p.batch_l2, p.sum_grad_squared, p.variance, *p.kfac)]
        kept.append(arrays)
        copies.append([a.copy() for a in arrays])
        if seed == 0:
            with ext.collect(ext.DiagGGN()):
                F.cross_entropy(model(tg.Tensor(X)), t).backward()
            ggn = [p.diag_ggn for p in model.parameters()]
    for old, copy in zip(kept[0], copies[0]):
        np.testing.assert_array_equal(old, copy)
    assert not any(np.shares_memory(a, b) for a in kept[0] for b in kept[1])
    assert not all(np.array_equal(a, b) for a, b in zip(kept[0], kept[1]))
    assert all(p.diag_ggn is g for p, g in zip(model.parameters(), ggn))


def test_collect_nests_and_restores():
    """An inner collect fills its own quantities and gives the outer one back on exit, also
    on an error; one collect object may be entered again, also by another thread while it
    is open in this one."""
    model = _model("fused", np.float64)
    X, t = _data(3, "ce", np.float64)
    outer, inner = ext.collect(ext.BatchL2()), ext.collect(ext.SumGradSquared())
    with outer:
        with inner:
            F.cross_entropy(model(tg.Tensor(X)), t).backward()
        assert all(hasattr(p, "sum_grad_squared") and not hasattr(p, "batch_l2")
                   for p in model.parameters())
        with pytest.raises(ZeroDivisionError):
            with inner:
                1 / 0
        F.cross_entropy(model(tg.Tensor(X)), t).backward()
        assert all(hasattr(p, "batch_l2") for p in model.parameters())
        import threading
        other = _model("relu_op", np.float64)
        seen = []

        def in_thread():
            seen.append(engine._grad.collect)
            with inner:
                with outer:
                    F.cross_entropy(other(tg.Tensor(X)), t).backward()
                seen.append(engine._grad.collect)
            seen.append(engine._grad.collect)
        th = threading.Thread(target=in_thread)
        th.start()
        th.join()
        assert seen == [None, inner._plan, None]
        assert all(hasattr(p, "batch_l2") and not hasattr(p, "sum_grad_squared")
                   for p in other.parameters())
        assert engine._grad.collect is outer._plan
    assert engine._grad.collect is None
    with outer:
        model.zero_grad()
        F.cross_entropy(model(tg.Tensor(X)), t).backward()
    truth = _per_example_loop(model, X, t, "ce", "mean")
    for p, gb in zip(model.parameters(), truth):
        np.testing.assert_allclose(p.batch_l2.data, (gb.reshape(3, -1) ** 2).sum(1), rtol=1e-10)
    assert engine._grad.collect is None


def test_a_collecting_step_leaves_no_garbage_cycles():
    """The pass and its plan are freed by reference counting when the backward ends: no
    cycle is left for the collector (which would keep the graph's nodes alive until it runs)."""
    import gc
    model = _model("fused", np.float64)
    X, t = _data(3, "ce", np.float64)
    qs = (ext.BatchL2(), ext.Variance(), ext.SumGradSquared(), ext.DiagGGN(), ext.KFAC())
    with ext.collect(*qs):
        F.cross_entropy(model(tg.Tensor(X)), t).backward()
    gc.collect()
    was = gc.isenabled()
    gc.disable()
    try:
        for _ in range(3):
            model.zero_grad()
            with ext.collect(*qs):
                F.cross_entropy(model(tg.Tensor(X)), t).backward()
        assert gc.collect() == 0
    finally:
        if was:
            gc.enable()


def test_a_backward_gradient_scales_every_quantity():
    """loss.backward(c) differentiates c * loss: grad_batch scales by c, the GGN by c, the
    sampled factors by c too (same seed); a negative c has no GGN factor and raises."""
    model = _model("fused", np.float64)
    X, t = _data(4, "ce", np.float64)
    res = []
    for c in (1.0, 3.0):
        tg.manual_seed(5)
        with ext.collect(ext.BatchGrad(), ext.DiagGGN(), ext.DiagGGNMC()):
            F.cross_entropy(model(tg.Tensor(X)), t).backward(np.array(c))
        res.append([(p.grad_batch.data, p.diag_ggn.data, p.diag_ggn_mc.data)
                    for p in model.parameters()])
    for a, b in zip(*res):
        for x, y in zip(a, b):
            np.testing.assert_allclose(y, 3.0 * x, rtol=1e-12, atol=1e-15)

    def negative():
        with ext.collect(ext.DiagGGN()):
            F.cross_entropy(model(tg.Tensor(X)), t).backward(np.array(-1.0))
    _err(negative, "nonnegative")


def test_collect_is_per_thread():
    """A collection in one thread leaves a backward in another thread plain."""
    import threading
    model = _model("fused", np.float64)
    other = _model("relu_op", np.float64)
    X, t = _data(3, "ce", np.float64)
    inside, done = threading.Event(), threading.Event()

    def collector():
        with ext.collect(ext.BatchGrad()):
            inside.set()
            done.wait(10)
            F.cross_entropy(model(tg.Tensor(X)), t).backward()
    th = threading.Thread(target=collector)
    th.start()
    inside.wait(10)
    F.cross_entropy(other(tg.Tensor(X)), t).backward()     # while the other thread collects
    done.set()
    th.join()
    assert all(p.grad is not None and not hasattr(p, "grad_batch") for p in other.parameters())
    assert all(hasattr(p, "grad_batch") for p in model.parameters())


def _err(fn, *match):
    with pytest.raises((RuntimeError, ValueError, TypeError)) as e:
        fn()
    for m in match:
        assert m in str(e.value), str(e.value)


def test_batchnorm_in_train_mode_is_named():
    model = nn.MLP([4, 6, 3], batchnorm=True, dtype=np.float64)
    X, t = _data(5, "ce", np.float64)
    loss = F.cross_entropy(model(tg.Tensor(X)), t)

    def run():
        with ext.collect(ext.DiagGGN()):
            loss.backward()
    _err(run, "BatchNorm1d", "DiagGGN()", "mixes the examples")
    assert model[0].weight.grad is None          # raised before the pass ran


def test_errors_name_the_op_and_the_quantity():
    dtype = np.float64
    X, t = _data(4, "ce", dtype)
    x = tg.Tensor(X)
    W = tg.Tensor(np.random.default_rng(0).standard_normal((4, 4)), requires_grad=True)
    V = tg.Tensor(np.random.default_rng(1).standard_normal((3, 4)), requires_grad=True)
    s = tg.Tensor(np.ones(3), requires_grad=True)

    def run(q, make):
        def f():
            with ext.collect(q):
                make().backward()
        return f
    # a parameter used twice (weight tying)
    _err(run(ext.BatchGrad(), lambda: F.cross_entropy(ops.linear(ops.linear(ops.linear(x, W), W), V), t)),
         "used twice", "BatchGrad()")
    # a parameter used by an op other than a layer
    _err(run(ext.SumGradSquared(), lambda: F.cross_entropy(ops.linear(x, V) * s, t)),
         "used by Mul", "SumGradSquared()")
    # a second-order quantity through an unsupported op
    _err(run(ext.DiagGGN(), lambda: F.cross_entropy(ops.linear(x, V).exp(), t)),
         "cannot pass Exp", "DiagGGN()")
    _err(run(ext.KFAC(), lambda: F.cross_entropy(ops.linear(x, V) + ops.linear(x, V), t)),
         "cannot pass Add", "KFAC(mc_samples=1)")
    # a loss that is not cross_entropy or mse_loss
    _err(run(ext.Variance(), lambda: (ops.linear(x, V) ** 2).sum()), "cross_entropy or mse_loss")
    _err(run(ext.BatchGrad(), lambda: F.cross_entropy(ops.linear(x, V), t, reduction="none").sum()),
         "cross_entropy or mse_loss")
    # autograd.grad inside collect
    def grad_inside():
        with ext.collect(ext.BatchGrad()):
            autograd.grad(F.cross_entropy(ops.linear(x, V), t), [V])
    _err(grad_inside, "loss.backward() only")
    _err(lambda: ext.collect(ext.BatchGrad).__enter__(), "BatchGrad()")
    _err(lambda: ext.collect(ext.BatchGrad(), ext.BatchGrad()).__enter__(), "grad_batch")
    _err(lambda: ext.DiagGGNMC(mc_samples=0), "mc_samples")
    # a second backward through a freed graph: the engine's own message, not a crash
    loss = F.cross_entropy(ops.linear(x, V), t)
    with ext.collect(ext.BatchL2()):
        loss.backward()
        _err(loss.backward, "a second time", "retain_graph=True")
    assert engine._grad.collect is None


def test_gradients_are_unchanged_by_collect():
    model = _model("fused", np.float32)
    X, t = _data(7, "ce", np.float32)
    F.cross_entropy(model(tg.Tensor(X)), t).backward()
    plain = [p.grad.data.copy() for p in model.parameters()]
    model.zero_grad()
    with ext.collect(*(q() for q in FIRST), ext.DiagGGN(), ext.DiagGGNMC(), ext.KFAC()):
        F.cross_entropy(model(tg.Tensor(X)), t).backward()
    for p, g in zip(model.parameters(), plain):
        np.testing.assert_array_equal(p.grad.data, g)


@pytest.mark.gpu
def test_cuda_matches_cpu_without_host_transfers(device, monkeypatch):
    """The same quantities on CuPy arrays, the pass shut off from the host; the sampled ones
    use the GPU generator, so only the deterministic ones are compared with the CPU's."""
    if device != "cuda":
        pytest.skip("the CPU is the reference here")
    import cupy
    from test_no_host_transfer import no_host_transfers
    qs = [q() for q in FIRST] + [ext.DiagGGN(), ext.DiagGGNMC(), ext.KFAC()]
    res = {}
    for dev in ("cpu", "cuda"):
        model = _model("fused", np.float64).to(dev)
        X, t = _data(5, "ce", np.float64)
        xt, tt = tg.Tensor(X, device=dev), tg.Tensor(t, device=dev)
        with ext.collect(*qs), (no_host_transfers(monkeypatch) if dev == "cuda"
                                else _nullcontext()):
            F.cross_entropy(model(xt), tt).backward()
        res[dev] = [(p.grad_batch.data, p.batch_l2.data, p.variance.data, p.diag_ggn.data,
                     p.kfac[0].data if p.ndim == 2 else p.sum_grad_squared.data)
                    for p in model.parameters()]
        if dev == "cuda":
            assert all(isinstance(p.diag_ggn_mc.data, cupy.ndarray) and
                       isinstance(p.kfac[-1].data, cupy.ndarray) for p in model.parameters())
    for a, b in zip(res["cpu"], res["cuda"]):
        for x, y in zip(a, b):
            assert isinstance(y, cupy.ndarray)
            np.testing.assert_allclose(cupy.asnumpy(y), x, rtol=1e-10, atol=1e-14)


def _nullcontext():
    import contextlib
    return contextlib.nullcontext()


def test_read_loss_is_the_one_reader_of_loss_graphs():
    """autograd.read_loss finds output, kind, scale and target of each loss F builds; the
    curvature closed form, extensions and the optimizers' loss_output all go through it."""
    from tinygrad_opt.optim.hessianfree import loss_output
    rng = np.random.default_rng(0)
    z = tg.tensor(rng.standard_normal((5, 3)), requires_grad=True)
    out = z * 2.0
    t = rng.standard_normal((5, 3))
    y = np.array([0, 2, 1, 1, 0])
    r = autograd.read_loss(F.mse_loss(out, t))
    assert (r.kind, r.output, r.scale) == ("mse", out, 1.0 / 15)
    np.testing.assert_array_equal(r.target.data, t)
    assert autograd.read_loss(F.mse_loss(out, t, reduction="sum")).scale == 1.0
    for loss in (F.cross_entropy(out, y), F.cross_entropy(out, y, label_smoothing=0.1)):
        r = autograd.read_loss(loss)
        assert r.kind == "cross_entropy" and r.output is out and r.node is loss._node
        assert loss_output(loss, "X") == (out, "cross_entropy")
    tb = (rng.random((5, 3)) > 0.5).astype(np.float64)
    r = autograd.read_loss(F.binary_cross_entropy_with_logits(out, tb, reduction="sum"))
    assert (r.kind, r.output, r.scale) == ("bce", out, 1.0)
    with pytest.raises(ValueError, match="X: cannot find the model output.*Sum"):
        loss_output((out * out).sum(), "X")          # bce is read, but X supports two kinds
    assert autograd.read_loss((out * out).sum()) is None
    with pytest.raises(ValueError, match="X: cannot find"):
        loss_output(F.binary_cross_entropy_with_logits(out, tb), "X")
    # the closed form and the double backward agree through the reader (mse, a mean)
    loss = F.mse_loss(z, t)
    u = rng.standard_normal((5, 3))
    np.testing.assert_allclose(autograd.curvature_of_loss(loss, z, u), u * 2 / 15)
