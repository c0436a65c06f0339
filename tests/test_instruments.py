"""Instruments against hand computations: linear least squares, whose individual gradients
g_n = 2 r_n [x_n, 1] and Hessian (2/N) sum_n [x_n, 1][x_n, 1]^T are known in closed form."""
import math

import numpy as np
import pytest

from tinygrad_opt import instruments, nn
from tinygrad_opt.data import DataLoader
from tinygrad_opt.instruments import Alpha, Instruments, dashboard
from tinygrad_opt.nn import functional as F
from tinygrad_opt.optim import SGD
from tinygrad_opt.tensor import Tensor
from tinygrad_opt.train import fit

try:
    from tinygrad_opt import extensions  # noqa: F401
    HAVE_EXT = True
except ImportError:
    HAVE_EXT = False

MODES = ["loop", pytest.param("extensions", marks=pytest.mark.skipif(
    not HAVE_EXT, reason="needs tinygrad_opt.extensions (per-example gradients), not built yet"))]

N, B, D, LR = 32, 8, 3, 0.05


def problem(seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((N, D))
    y = (X @ np.array([1.0, -2.0, 0.5]) + 0.3 + 0.5 * rng.standard_normal(N)).reshape(N, 1)
    model = nn.Linear(D, 1)
    for p in model.parameters():
        p.data = p.data.astype(np.float64)
    return X, y, model


def reference(X, y, w, b, steps, B=B):
    """Plain SGD on the mean squared error with the loader's unshuffled batches, by hand."""
    rows, theta0 = [], np.concatenate([w.ravel(), b])
    theta = theta0.copy()
    for t in range(steps):
        i = (t * B) % N
        Xb, yb = X[i:i + B], y[i:i + B, 0]
        A = np.hstack([Xb, np.ones((B, 1))])
        r = A @ theta - yb
        G = 2 * r[:, None] * A                       # individual gradients g_n
        g = G.mean(axis=0)
        H = 2 * A.T @ A / B
        new = theta - LR * g
        rows.append(dict(loss=float((r ** 2).mean()), G=G, g=g, H=H, theta=theta,
                         s=new - theta, new=new))
        theta = new
    for row in rows:
        row["distance"] = np.linalg.norm(row["new"] - theta0)
    return rows


def train(quantities, every=1, per_example="loop", epochs=2, batch_size=B, **kw):
    X, y, model = problem()
    w0, b0 = model.weight.data.copy(), model.bias.data.copy()
    inst = Instruments(quantities, every=every, per_example=per_example, **kw)
    fit(model, SGD(model.parameters(), lr=LR), DataLoader(X, y, batch_size=batch_size,
        shuffle=False), F.mse_loss, epochs=epochs, callbacks=[inst], progress=False)
    return inst, reference(X, y, w0, b0, epochs * N // batch_size, batch_size), model


@pytest.mark.parametrize("mode", MODES)
def test_first_order_quantities_match_hand_computations(mode):
    business = [instruments.GradHist1d(every=1) if q == "GradHist1d" else q
                for q in instruments.PRESETS["business"]]            # a histogram every step
    inst, ref, _ = train(business, per_example=mode, n_probes=1)
    h = inst.history
    assert h["step"] == list(range(1, 9))
    gns_trace = gns_g2 = 0.0
    for k, row in enumerate(ref):
        G, g, n = row["G"], row["g"], B
        gg = g @ g
        assert h["Loss"][k] == pytest.approx(row["loss"], rel=1e-12)
        assert h["GradNorm"][k] == pytest.approx(math.sqrt(gg), rel=1e-12)
        assert h["UpdateSize"][k] == pytest.approx(np.linalg.norm(row["s"]), rel=1e-12)
        assert h["Distance"][k] == pytest.approx(row["distance"], rel=1e-12)
        dev = G - g
        assert h["NormTest"][k] == pytest.approx(
            math.sqrt((dev ** 2).sum() / (n * (n - 1) * gg)), rel=1e-10)
        assert h["InnerTest"][k] == pytest.approx(
            math.sqrt(((G @ g - gg) ** 2).sum() / (n * (n - 1) * gg ** 2)), rel=1e-10)
        ortho = G - np.outer(G @ g / gg, g)
        assert h["OrthoTest"][k] == pytest.approx(
            math.sqrt((ortho ** 2).sum() / (n * (n - 1) * gg)), rel=1e-10)
        var = (G ** 2).mean(axis=0) - g ** 2
        assert h["GSNR"][k] == pytest.approx(np.mean(g ** 2 / var), rel=1e-10)
        tr = (dev ** 2).sum() / (n - 1)
        gns_trace = 0.9 * gns_trace + 0.1 * tr
        gns_g2 = 0.9 * gns_g2 + 0.1 * (gg - tr / n)
        assert h["GradientNoiseScale"][k] == pytest.approx(gns_trace / gns_g2, rel=1e-10)
        edges, counts = h["GradHist1d"][k]
        assert counts.sum() == G.size and edges[-1] == pytest.approx(np.abs(G).max())
        # per parameter: the weight's (N, 1, 3) block and the bias's (N, 1)
        want = sum(np.histogram(part.ravel(), bins=edges)[0] for part in (G[:, :3], G[:, 3:]))
        assert np.abs(counts - want).sum() <= 2      # bin edges: rounding of (g + top) * scale


@pytest.mark.parametrize("mode", MODES)
def test_alpha_of_gradient_descent_on_a_quadratic(mode):
    # Full batch: the loss along the step is exactly L - tau lr g^T g + tau^2 lr^2 g^T H g / 2,
    # whose minimum is tau* = g^T g / (lr g^T H g), so alpha = lr g^T H g / g^T g - 1.
    inst, ref, _ = train(["Alpha"], per_example=mode, epochs=6, batch_size=N)
    alpha = inst.column("Alpha")
    for k in range(len(ref) - 1):
        g, H = ref[k]["g"], ref[k]["H"]
        assert alpha[k] == pytest.approx(LR * (g @ H @ g) / (g @ g) - 1, rel=1e-8)
    assert math.isnan(alpha[-1])                   # the step after the last is never seen


def test_alpha_with_minibatches_uses_the_next_batch():
    inst, ref, _ = train(["Alpha"])
    alpha = inst.column("Alpha")
    for k in range(len(ref) - 1):
        s = ref[k]["s"]
        want = Alpha.fit(ref[k]["loss"], ref[k]["g"] @ s, ref[k + 1]["loss"], ref[k + 1]["g"] @ s)
        assert alpha[k] == pytest.approx(want, rel=1e-9, nan_ok=True)
    assert np.isfinite(alpha).sum() >= 2


@pytest.mark.parametrize("mode", MODES)
def test_grad_hist_every_kth_recorded_step_and_scalars_without_the_block(mode):
    inst, ref, model = train(["GradHist1d", "NormTest", "InnerTest"], every=2, epochs=8,
                             per_example=mode)
    h = inst.history
    assert h["step"] == list(range(2, 33, 2))
    for k, (step, hist) in enumerate(zip(h["step"], h["GradHist1d"])):
        if k % 8:                                  # default every=8 of the recorded steps
            assert hist is None
            continue
        G = ref[step - 1]["G"]
        assert hist[1].sum() == G.size and hist[0][-1] == pytest.approx(np.abs(G).max())
    assert sum(x is not None for x in h["GradHist1d"]) == 2
    for step, nt in zip(h["step"], h["NormTest"]):
        G, g = ref[step - 1]["G"], ref[step - 1]["g"]
        assert nt == pytest.approx(math.sqrt(((G - g) ** 2).sum() / (B * (B - 1) * (g @ g))),
                                   rel=1e-10)
    if mode == "extensions":                       # binned from the layer factors
        assert not any(hasattr(p, "grad_batch") for p in model.parameters())
        inst, _, model = train(["NormTest", "InnerTest", "OrthoTest"], per_example=mode)
        assert not any(hasattr(p, "grad_batch") for p in model.parameters())
        assert not any(hasattr(p, "batch_l2") or hasattr(p, "batch_dot_grad")
                       for p in model.parameters())       # the sums only, nothing per parameter
    with pytest.raises(ValueError, match="every"):
        instruments.GradHist1d(every=0)


def test_grad_hist_subsamples_large_blocks():
    class B:
        individual, factors, scale = [np.arange(-5000.0, 5000.0).reshape(10, 1000)], None, 1.0
    edges, counts = instruments.GradHist1d(bins=10, max_elements=1000).compute(B)
    assert edges[0] == -5000 and edges[-1] == 5000 and counts.sum() == 10000
    np.testing.assert_array_equal(counts, np.full(10, 1000))   # every 10th of a uniform ramp

    # one stride for all blocks: 3000 values over a cap of 1000 is every 3rd of each, the
    # small block's too, each counting 3 times
    class Two:
        individual, factors, scale = [np.full((10, 270), -1.0), np.full((10, 30), 1.0)], None, 1.0
    edges, counts = instruments.GradHist1d(bins=2, max_elements=1000).compute(Two)
    np.testing.assert_array_equal(edges, [-1.0, 0.0, 1.0])
    np.testing.assert_array_equal(counts, [3 * 900, 3 * 100])


def test_grad_hist_from_layer_factors_equals_the_block():
    # extensions give a Linear layer's g (N, out) and x (N, in); every k-th entry of the block
    # g_n x_n^T is read off them, the same products as forming the block and slicing it
    rng = np.random.default_rng(3)
    g1, x1 = rng.standard_normal((6, 5)), rng.standard_normal((6, 7))
    g2, x2 = rng.standard_normal((6, 3)), rng.standard_normal((6, 5))

    class Blocks:
        factors, scale = None, 6.0
        individual = [np.einsum("no,ni->noi", g1, x1), g1, np.einsum("no,ni->noi", g2, x2), g2]

    class Factors:
        individual, scale, params = None, 6.0, [0, 1, 2, 3]
        factors = [("W2", "b2", g2, x2), ("W1", "b1", g1, x1)]
    for cap in (4096, 40, 7, 30):                  # exact, every 5th of W1, ..., a grid
        want = instruments.GradHist1d(bins=9, max_elements=cap).compute(Blocks)
        got = instruments.GradHist1d(bins=9, max_elements=cap).compute(Factors)
        np.testing.assert_array_equal(got[0], want[0])
        np.testing.assert_array_equal(got[1], want[1])
        if cap == 4096:                            # below the cap: every value, once
            assert got[1].sum() == sum(a.size for a in Blocks.individual)
    Factors.params = [0, 1, 2, 3, 4]
    with pytest.raises(RuntimeError, match="found 4 of the 5 parameters"):
        instruments.GradHist1d().compute(Factors)


def test_alpha_on_exact_parabolas():
    # q(tau) = (tau - tau*)^2: minimum at tau*, alpha = 1 / tau* - 1
    for tau, want in ((1.0, 0.0), (0.5, 1.0), (2.0, -0.5), (0.25, 3.0)):
        q = lambda t: (t - tau) ** 2                                    # noqa: E731
        assert Alpha.fit(q(0), -2 * tau, q(1), 2 * (1 - tau)) == pytest.approx(want, abs=1e-12)
    assert math.isnan(Alpha.fit(0.0, 1.0, 0.0, -1.0))                # concave: no minimum


def test_alpha_with_every_k_uses_the_next_step():
    inst, ref, _ = train(["Loss", "Alpha"], every=3, epochs=7, batch_size=N)
    assert inst.history["step"] == [3, 6]
    for row, k in enumerate((2, 5)):
        g, H = ref[k]["g"], ref[k]["H"]
        assert inst.history["Alpha"][row] == pytest.approx(LR * (g @ H @ g) / (g @ g) - 1,
                                                           rel=1e-8)


def test_curvature_quantities_match_the_dense_hessian():
    inst, ref, _ = train(["HessMaxEV", "HessTrace", "TICDiag"], per_example="loop",
                         epochs=1, n_probes=300)
    for k, row in enumerate(ref):
        H, G = row["H"], row["G"]
        assert inst.history["HessMaxEV"][k] == pytest.approx(np.linalg.eigvalsh(H)[-1], rel=1e-9)
        # Hutchinson with 300 Rademacher probes: variance 2 sum_{i != j} H_ij^2 per probe
        se = math.sqrt(2 * ((H - np.diag(np.diag(H))) ** 2).sum() / 300)
        assert abs(inst.history["HessTrace"][k] - np.trace(H)) < 4 * se
        tic = ((G ** 2).mean(axis=0) / (np.diag(H) + 1e-7)).sum()
        assert inst.history["TICDiag"][k] == pytest.approx(tic, rel=0.15)


@pytest.mark.skipif(not HAVE_EXT, reason="needs tinygrad_opt.extensions (DiagGGN), not built yet")
def test_tic_diag_is_exact_with_extensions():
    inst, ref, _ = train(["TICDiag"], per_example="extensions", epochs=1)
    for k, row in enumerate(ref):
        tic = ((row["G"] ** 2).mean(axis=0) / (np.diag(row["H"]) + 1e-7)).sum()
        assert inst.history["TICDiag"][k] == pytest.approx(tic, rel=1e-9)


def test_instruments_do_not_change_the_run():
    X, y, model = problem()
    state = {k: v.copy() for k, v in model.state_dict().items()}
    drop = nn.Sequential(nn.Linear(D, 4), nn.Dropout(0.3), nn.Linear(4, 1))
    finals = []
    for inst in (None, Instruments("full", every=2, per_example="loop")):
        import tinygrad_opt as tg
        tg.manual_seed(1)
        m = nn.Sequential(nn.Linear(D, 4), nn.Dropout(0.3), nn.Linear(4, 1))
        m.load_state_dict(drop.state_dict())
        fit(m, SGD(m.parameters(), lr=LR), DataLoader(X.astype(np.float32),
            y.astype(np.float32), batch_size=B, shuffle=False), F.mse_loss, epochs=1,
            callbacks=[] if inst is None else [inst], progress=False)
        finals.append([p.data.copy() for p in m.parameters()])
    for a, b in zip(*finals):
        assert np.array_equal(a, b)
    assert state.keys() == model.state_dict().keys()


def test_every_as_a_function_and_columns():
    inst, _, _ = train(["Loss", "GradNorm"], every=lambda step: step in (1, 2, 7))
    assert inst.history["step"] == [1, 2, 7]
    assert inst.column("Loss").shape == (3,)
    with pytest.raises(KeyError, match="no column 'Alpha'"):
        inst.column("Alpha")


def test_presets_and_bad_arguments():
    assert [q.name for q in Instruments("economy").quantities] == instruments.ECONOMY
    full = [q.name for q in Instruments("full").quantities]
    assert set(full) == set(instruments.QUANTITIES)
    with pytest.raises(ValueError, match="unknown preset 'cheap'"):
        Instruments("cheap")
    with pytest.raises(ValueError, match="unknown quantity 'Curvature'"):
        Instruments(["Loss", "Curvature"])
    with pytest.raises(ValueError, match="every must be a positive int"):
        Instruments(every=0)
    with pytest.raises(ValueError, match="per_example"):
        Instruments(per_example="batched")


def test_dashboard_writes_a_readable_png(tmp_path):
    pytest.importorskip("matplotlib")
    inst, _, _ = train(["Loss", "GradHist1d", "NormTest", "Alpha"])
    path = tmp_path / "dash.png"
    dashboard(inst.history, path)
    import matplotlib.image as mpimg
    img = mpimg.imread(path)
    assert img.ndim == 3 and img.shape[0] > 300 and img.shape[1] > 900
    with pytest.raises(ValueError, match="no recorded steps"):
        dashboard({"step": [], "Loss": []}, tmp_path / "empty.png")


@pytest.mark.parametrize("mode", MODES)
def test_a_second_fit_continues_update_and_distance_from_the_first_theta0(mode):
    X, y, model = problem()
    w0, b0 = model.weight.data.copy(), model.bias.data.copy()
    inst = Instruments(["UpdateSize", "Distance", "Alpha"], per_example=mode)
    opt = SGD(model.parameters(), lr=LR)
    for _ in range(2):                             # two calls of one epoch each
        fit(model, opt, DataLoader(X, y, batch_size=B, shuffle=False), F.mse_loss, epochs=1,
            callbacks=[inst], progress=False)
    ref = reference(X, y, w0, b0, 2 * N // B)
    assert inst.history["step"] == [1, 2, 3, 4] * 2       # each call counts its own steps
    for k, row in enumerate(ref):
        assert inst.history["UpdateSize"][k] == pytest.approx(np.linalg.norm(row["s"]), rel=1e-12)
        assert inst.history["Distance"][k] == pytest.approx(row["distance"], rel=1e-12)
    alpha = inst.column("Alpha")
    for k in (0, 1, 2, 4, 5, 6):                   # within a call: from the next step
        s = ref[k]["s"]
        assert alpha[k] == pytest.approx(Alpha.fit(ref[k]["loss"], ref[k]["g"] @ s,
                                                   ref[k + 1]["loss"], ref[k + 1]["g"] @ s),
                                         rel=1e-9, nan_ok=True)
    assert math.isnan(alpha[3]) and math.isnan(alpha[7])   # the end of a call is not seen


@pytest.mark.skipif(not HAVE_EXT, reason="needs tinygrad_opt.extensions")
def test_recording_every_step_leaves_nothing_for_the_cyclic_collector():
    # a reference cycle per step (in the collect pass or here) would pile up garbage that the
    # cyclic collector then scans, at a cost that grows with everything else in the process
    import gc
    X, y, model = problem()
    inst = Instruments("business")
    loader = DataLoader(X, y, batch_size=B, shuffle=False)
    opt = SGD(model.parameters(), lr=LR)
    fit(model, opt, loader, F.mse_loss, epochs=1, callbacks=[inst], progress=False)
    while gc.collect():                            # finalizers may free more on a second pass
        pass
    enabled = gc.isenabled()
    gc.disable()
    try:
        fit(model, opt, loader, F.mse_loss, epochs=2, callbacks=[inst], progress=False)
        assert gc.collect() == 0
    finally:
        if enabled:
            gc.enable()
    assert len(inst.history["step"]) == 12


@pytest.mark.skipif(not HAVE_EXT, reason="needs tinygrad_opt.extensions")
def test_totals_are_the_per_parameter_quantities_summed():
    # extensions._Totals, what the gradient tests read: sum_p <grad_batch_p[n], G_p> per
    # example and sum_{p, n} ||grad_batch_p[n]||^2, here against BatchGrad's dense blocks on
    # layers with a bias, without one, and with a frozen weight (its bias alone)
    from tinygrad_opt import extensions as ext
    rng = np.random.default_rng(4)
    model = nn.Sequential(nn.Linear(5, 4), nn.ReLU(), nn.Linear(4, 3, bias=False), nn.Tanh(),
                          nn.Linear(3, 2))
    for p in model.parameters():
        p.data = rng.standard_normal(p.shape)
    model[4].weight.requires_grad = False
    x, y = Tensor(rng.standard_normal((6, 5))), Tensor(rng.integers(0, 2, 6))
    totals = ext._Totals()
    for _ in range(2):                             # the second pass reuses the arrays
        model.zero_grad()
        with ext.collect(totals, ext.BatchGrad()):
            F.cross_entropy(model(x), y).backward()
    params = [p for p in model.parameters() if p.requires_grad]
    assert len(params) == 4
    blocks = [p.grad_batch.data.reshape(6, -1) for p in params]
    dots = sum(B @ p.grad.data.reshape(-1) for B, p in zip(blocks, params))
    np.testing.assert_allclose(totals.dot_grad(), dots, rtol=1e-12)
    assert float(totals.l2()) == pytest.approx(sum((B ** 2).sum() for B in blocks), rel=1e-12)
    assert totals.count == 3 and totals.layers is None


@pytest.mark.skipif(not HAVE_EXT, reason="needs tinygrad_opt.extensions")
@pytest.mark.parametrize("widths,batch", [((40, 30, 20), 3),      # every layer by Gram
                                          ((3, 40, 2), 30),       # every layer by rows
                                          ((40, 30, 2), 6)])      # Gram, then rows
def test_totals_gram_and_rows_routes_agree_with_dense_blocks(widths, batch):
    # _Totals takes the Gram route, (delta delta^T) * (x x^T + 1), where it multiplies less
    # (or both routes are small), the rows route otherwise; both against BatchGrad's blocks
    from tinygrad_opt import extensions as ext
    rng = np.random.default_rng(5)
    a, h, c = widths
    model = nn.Sequential(nn.Linear(a, h), nn.Tanh(), nn.Linear(h, c, bias=False))
    for p in model.parameters():
        p.data = rng.standard_normal(p.shape)
    x, y = Tensor(rng.standard_normal((batch, a))), Tensor(rng.integers(0, c, batch))
    totals = ext._Totals()
    for _ in range(2):                             # the second pass reuses the arrays
        model.zero_grad()
        with ext.collect(totals, ext.BatchGrad()):
            F.cross_entropy(model(x), y).backward()
    gram = [batch * (i + o) <= i * o or batch * batch * (i + o) <= ext._GRAM_SMALL
            for i, o in ((a, h), (h, c))]
    assert (totals._gram is not None) == any(gram) and totals._k == 2 - sum(gram)
    params = list(model.parameters())
    blocks = [p.grad_batch.data.reshape(batch, -1) for p in params]
    dots = sum(B @ p.grad.data.reshape(-1) for B, p in zip(blocks, params))
    np.testing.assert_allclose(totals.dot_grad(), dots, rtol=1e-12)
    assert float(totals.l2()) == pytest.approx(sum((B ** 2).sum() for B in blocks), rel=1e-12)


def test_one_recorder_on_a_model_of_another_size_raises():
    # Instruments keeps theta_0 of the first model it records; a model with another number of
    # trained values is refused where fit begins, naming both counts
    X, y, model = problem()
    inst = Instruments(["Loss", "Distance"])
    loader = DataLoader(X, y, batch_size=B, shuffle=False)
    fit(model, SGD(model.parameters(), lr=LR), loader, F.mse_loss, epochs=1, callbacks=[inst],
        progress=False)
    other = nn.Linear(D, 2)
    with pytest.raises(ValueError, match=r"has 8 trained values, 4 when recording began"):
        fit(other, SGD(other.parameters(), lr=LR), loader, F.mse_loss, epochs=1,
            callbacks=[inst], progress=False)
