"""Training studies: recorders against direct calls, surfaces on a convex problem, pictures."""
import numpy as np
import pytest

import tinygrad_opt as tg
from tinygrad_opt import curvature, data, nn, plots, studies
from tinygrad_opt.nn import functional as F
from tinygrad_opt.optim import SGD
from tinygrad_opt.train import fit


def tiny(seed=0):
    X, y = data.spirals(30, n_classes=3, seed=seed, dtype=np.float64)
    tg.manual_seed(seed)
    model = nn.MLP([2, 8, 3], activation="tanh", dtype=np.float64)
    return X, y, model


def test_recorders_measure_at_init_and_after_chosen_epochs():
    X, y, model = tiny()
    Xb, yb = studies.fixed_batch((X, y), 40, seed=1)
    assert Xb.shape == (40, 2) and yb.shape == (40,)
    spec = studies.SpectrumRecorder(Xb, yb, epochs=[3], n_iter=12, n_vectors=2)
    grad = studies.GradCurvatureRecorder(Xb, yb)
    fit(model, SGD(model.parameters(), lr=0.1), data.DataLoader(X, y, batch_size=16, seed=0),
        F.cross_entropy, epochs=3, callbacks=[spec, grad], progress=False)
    assert [r["epoch"] for r in spec.records] == [0, 3]
    assert [r["epoch"] for r in grad.records] == [0, 1, 2, 3]
    r = spec.records[-1]
    assert curvature._trapezoid(r["density"], r["grid"]) == pytest.approx(1.0)
    assert r["lambda_min"] <= r["lambda_max"] and 0.0 <= r["negative_mass"] <= 1.0
    closure = lambda: F.cross_entropy(model(Xb), yb)                    # noqa: E731
    params = list(model.parameters())
    t = curvature.step_test(closure, params, lr=0.1)
    last = grad.records[-1]
    assert last["gHg"] == pytest.approx(t.gHg, rel=1e-10)
    assert last["grad_norm"] == pytest.approx(np.sqrt(t.grad_norm_sq), rel=1e-10)
    H = curvature.top_eigenvalues(closure, params, k=1, max_iter=200)
    assert r["lambda_max"] <= H.eigenvalues[0] * (1 + 1e-9)         # Ritz values lie inside


def test_surface_study_on_a_convex_problem_has_no_barrier():
    rng = np.random.default_rng(0)
    X = tg.Tensor(rng.standard_normal((20, 3)))
    y = tg.Tensor(rng.standard_normal((20, 1)))
    model = nn.Linear(3, 1, dtype=np.float64)
    theta0 = [p.data.copy() for p in model.parameters()]
    fit(model, SGD(model.parameters(), lr=0.1), data.DataLoader(X, y, batch_size=5, seed=0),
        F.mse_loss, epochs=5, progress=False)
    final = [p.data.copy() for p in model.parameters()]
    st = studies.surface_study(model, F.mse_loss, (X, y), (X, y), theta0,
                               np.linspace(-0.5, 1.5, 9), np.linspace(-1, 1, 5))
    assert st["barrier"] <= 1e-12                     # a convex loss stays under its chord
    assert st["surface"].shape == (5, 5)
    assert all(np.array_equal(p.data, f) for p, f in zip(model.parameters(), final))
    assert st["surface"][2, 2] == pytest.approx(studies.evaluate_loss(model, F.mse_loss, X, y))
    assert st["train"][-3] == pytest.approx(st["surface"][2, 2])      # alpha = 1: the solution


def test_pictures(tmp_path):
    pytest.importorskip("matplotlib")
    X, y, model = tiny()
    Xb, yb = studies.fixed_batch((X, y), 30)
    spec = studies.SpectrumRecorder(Xb, yb, n_iter=8)
    theta0 = [p.data.copy() for p in model.parameters()]
    fit(model, SGD(model.parameters(), lr=0.1), data.DataLoader(X, y, batch_size=16, seed=0),
        F.cross_entropy, epochs=1, callbacks=[spec], progress=False)
    plots.plot_spectra(spec.records, tmp_path / "s.png")
    st = studies.surface_study(model, F.cross_entropy, (Xb, yb), (Xb, yb), theta0,
                               np.linspace(0, 1, 5), np.linspace(-1, 1, 5))
    plots.plot_surface(st, tmp_path / "f.png")
    assert (tmp_path / "s.png").stat().st_size > 10000 and (tmp_path / "f.png").stat().st_size > 10000


def _setup(epochs=2):
    from tinygrad_opt import experiment
    dataset = experiment.load_dataset("spirals", dtype="float64", seed=0)
    return experiment.Setup("sgd", dataset, epochs=epochs, hidden=(8,), dtype="float64",
                            batch_size=64)


@pytest.mark.slow
def test_command_runs_write_their_files(tmp_path):
    pytest.importorskip("matplotlib")
    import csv
    s = _setup()
    headers, rows = studies.instruments_run(s, tmp_path, quantities=["Loss", "NormTest",
                                            "GradHist1d"], every=2)
    assert headers == ["quantity", "first", "median", "last"]
    assert [r[0] for r in rows] == ["Loss", "NormTest"]
    with open(tmp_path / "instruments.csv") as f:
        table = list(csv.reader(f))
    assert table[0] == ["step", "Loss", "NormTest"] and len(table) == 1 + len(s.loader)
    headers, rows = studies.spectrum_run(_setup(), tmp_path, samples=60, n_iter=10,
                                         n_vectors=1)
    assert [r[0] for r in rows] == [0, 1, 2] and rows[0][-1] == "-"
    headers, rows, barrier = studies.surface_run(_setup(1), tmp_path, samples=60, points=9,
                                                 grid=5)
    assert len(rows) == 9 and np.isfinite(barrier)
    for name in ("instruments.png", "spectrum.png", "surface.png", "spectrum.csv",
                 "surface.csv"):
        assert (tmp_path / name).stat().st_size > 0
