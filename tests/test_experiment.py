"""Runs built from keyword arguments (no argparse): Setup, compare, saved runs, tables."""
import numpy as np
import pytest

from tinygrad_opt import experiment, optim
from tinygrad_opt.serialization import CheckpointError, save
from tinygrad_opt.train import History, restore_state


@pytest.fixture(scope="module")
def spirals():
    return experiment.load_dataset("spirals", seed=0)


def test_load_dataset_and_setup(spirals):
    (X, y), (Xv, yv), n = spirals
    assert n == 3 and X.shape[1] == 2 and X.shape[0] + Xv.shape[0] == 600
    assert abs(Xv.shape[0] - 120) <= 3
    s = experiment.Setup("nesterov", spirals, hidden=(8, 8), epochs=3, schedule="cosine",
                         warmup=1, clip=1.0, dtype="float64")
    assert s.model.sizes == [2, 8, 8, 3]
    assert all(p.dtype == np.float64 for p in s.model.parameters())
    g = s.optimizer.param_groups[0]
    assert type(s.optimizer) is optim.SGD and g["nesterov"] and g["momentum"] == 0.9
    assert s.lr == 0.05 and s.clip == 1.0 and s.loader.batch_size == 32
    assert type(s.scheduler).__name__ == "LinearWarmup"
    lbfgs = experiment.Setup("lbfgs", spirals, clip=1.0, momentum=0.5)
    assert lbfgs.clip is None and lbfgs.loader.batch_size == 480     # 512, capped at n
    with pytest.raises(ValueError, match="unknown data set 'cifar'"):
        experiment.load_dataset("cifar")
    with pytest.raises(ValueError, match="mnist data set needs data_dir"):
        experiment.load_dataset("mnist")
    with pytest.raises(ValueError, match="unknown schedule 'warm'"):
        experiment.Setup("sgd", spirals, schedule="warm")


def test_same_init_and_batches_for_every_optimizer(spirals):
    a = experiment.Setup("sgd", spirals, seed=3)
    b = experiment.Setup("adam", spirals, seed=3)
    for p, q in zip(a.model.parameters(), b.model.parameters()):
        np.testing.assert_array_equal(p.numpy(), q.numpy())
    assert [yb.numpy().tolist() for _, yb in a.loader] == [yb.numpy().tolist()
                                                            for _, yb in b.loader]


def test_compare_keeps_going_after_a_failure(spirals, monkeypatch):
    def broken(self, closure=None):
        raise np.linalg.LinAlgError("Singular matrix")
    monkeypatch.setattr(optim.ConjugateGradient, "step", broken)
    results = list(experiment.compare(["sgd", ("cg", 0.5), ("adam", 0.01)], spirals,
                                      epochs=2, hidden=(8,)))
    assert [r.name for r in results] == ["sgd", "cg", "adam"]
    assert [r.lr for r in results] == [0.2, 0.5, 0.01]
    assert results[1].status == "failed: LinAlgError: Singular matrix"
    assert results[1].history is None and not results[1].ok
    for r in (results[0], results[2]):
        assert r.ok and len(r.history) == 2 and r.seconds > 0
    headers, rows, raw = experiment.compare_table(results, 0.5)
    assert headers[4] == "epochs_to_50%" and rows[1][2] == "failed"
    assert raw[0][2] == results[0].history.train_loss[-1]


@pytest.mark.filterwarnings("ignore:overflow:RuntimeWarning", "ignore:invalid:RuntimeWarning")
def test_compare_records_divergence(spirals):
    (r,) = experiment.compare([("sgd", 1e30)], spirals, epochs=1, hidden=(8,))
    assert r.status == "diverged" and r.history is None


def test_saved_run_resumes_exactly(spirals, tmp_path):
    path = tmp_path / "run.ckpt"
    full = experiment.Setup("momentum", spirals, epochs=3, hidden=(8,)).fit()
    s = experiment.Setup("momentum", spirals, epochs=3, hidden=(8,))
    s.epochs = 2
    s.fit([experiment.save_run(path, {"optimizer": "momentum"})])
    config, state = experiment.load_run(path)
    assert config == {"optimizer": "momentum"} and state["epoch"] == 2
    t = experiment.Setup("momentum", spirals, epochs=3, hidden=(8,))
    history = History()
    start = restore_state(state, t.model, t.optimizer, t.loader, t.scheduler, history)
    resumed = t.fit(start_epoch=start, history=history)
    assert resumed.train_loss == full.train_loss and resumed.step_loss == full.step_loss
    save({"weights": np.ones(2)}, tmp_path / "other.ckpt")
    with pytest.raises(CheckpointError, match="holds no saved run"):
        experiment.load_run(tmp_path / "other.ckpt")


def test_tables():
    assert experiment.pct(0.97314) == "97.31%" and experiment.pct(None) == "-"
    assert experiment.num(float("nan")) == "-" and experiment.num(1.23456, ".2f") == "1.23"
    assert experiment.epochs_to([0.5, None, 0.9, 0.95], 0.9) == 3
    assert experiment.epochs_to([0.5], 0.9) is None
    table = experiment.format_table(["a", "long_header"], [[1, 2], ["wide cell", 3]])
    assert table.splitlines() == ["a          long_header", "---------  -----------",
                                  "1          2", "wide cell  3"]
