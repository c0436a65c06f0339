"""fit, evaluate, History, EWMA, callbacks, divergence and bit-identical resume."""
import math

import numpy as np
import pytest

from tinygrad_opt import backend, data, nn
from tinygrad_opt.data import DataLoader
from tinygrad_opt.nn import functional as F
from tinygrad_opt.optim import SGD, Adam, lr_scheduler
from tinygrad_opt.serialization import load, save
from tinygrad_opt.tensor import Tensor
from tinygrad_opt.train import (EWMA, Callback, Checkpoint, History, TrainingDiverged,
                                checkpoint_state, evaluate, fit, restore_state)


def blobs(n=120, seed=0):
    """Three well separated Gaussian blobs in 2-D."""
    g = np.random.default_rng(seed)
    centers = np.array([[2.0, 0.0], [-2.0, 1.0], [0.0, -2.0]])
    y = np.arange(n) % 3
    X = centers[y] + 0.3 * g.standard_normal((n, 2))
    return X.astype(np.float32), y.astype(np.int64)


def small_model(seed=0, dropout=0.0):
    backend.manual_seed(seed)
    return nn.MLP([2, 16, 3], dropout=dropout)


# ---------------------------------------------------------------- EWMA
def test_ewma_bias_correction_exact():
    e = EWMA(beta=0.5)
    assert math.isnan(e.value)
    # m1 = 0.5*4 = 2 -> 2/0.5 = 4; m2 = 0.5*2 + 0.5*2 = 2 -> 2/0.75;
    # m3 = 0.5*2 + 0.5*8 = 5 -> 5/0.875
    assert e.update(4.0) == 4.0
    assert e.update(2.0) == pytest.approx(2 / 0.75, abs=0, rel=1e-15)
    assert e.update(8.0) == pytest.approx(5 / 0.875, abs=0, rel=1e-15)
    assert e.m == 5.0 and e.t == 3


def test_ewma_matches_weighted_mean_and_constant():
    losses = [3.0, 1.0, 4.0, 1.0, 5.0, 9.0, 2.0, 6.0]
    beta = 0.9
    e = EWMA(beta)
    for l in losses:
        got = e.update(l)
    w = [beta ** (len(losses) - 1 - i) for i in range(len(losses))]
    assert got == pytest.approx(sum(wi * l for wi, l in zip(w, losses)) / sum(w), rel=1e-13)
    c = EWMA(0.98)
    assert all(c.update(2.5) == pytest.approx(2.5, rel=1e-13) for _ in range(10))
    assert EWMA(0.0).update(7.0) == 7.0
    with pytest.raises(ValueError, match="beta"):
        EWMA(1.0)


# ---------------------------------------------------------------- fit / evaluate
def test_fit_decreases_loss_and_history(capsys):
    X, y = blobs()
    (Xt, yt), (Xv, yv) = data.train_val_split(X, y, val_fraction=0.25, seed=0)
    model = small_model()
    opt = SGD(model.parameters(), lr=0.1)
    sched = lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
    loader = DataLoader(Xt, yt, batch_size=10, seed=0)
    loss0, _ = evaluate(model, (Xt, yt), F.cross_entropy)
    h = fit(model, opt, loader, F.cross_entropy, epochs=5, val=(Xv, yv), scheduler=sched,
            progress=True, ewma_beta=0.9)
    assert isinstance(h, History) and len(h) == 5
    assert h.epoch == [0, 1, 2, 3, 4]
    assert len(h.train_loss) == len(h.val_loss) == len(h.val_acc) == len(h.epoch_time) == 5
    assert len(h.step_loss) == 5 * len(loader) == 45
    assert h.lr == pytest.approx([0.1, 0.1, 0.05, 0.05, 0.025])
    assert h.train_loss[-1] < h.train_loss[0] and h.train_loss[-1] < 0.5 * loss0
    assert h.val_acc[-1] == 1.0 and h.val_loss[-1] < 0.3
    assert all(t > 0 for t in h.epoch_time)
    # train_loss of an epoch is the bias-corrected EWMA of that epoch's step losses
    e = EWMA(0.9)
    for l in h.step_loss[-9:]:
        e.update(l)
    assert h.train_loss[-1] == e.value
    # the validation numbers are evaluate's
    assert evaluate(model, (Xv, yv), F.cross_entropy) == (h.val_loss[-1], h.val_acc[-1])
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 5 and lines[0].startswith("epoch 1/5") and "val_acc" in lines[0]


def test_fit_quiet_and_without_val(capsys):
    X, y = blobs(60)
    model = small_model()
    h = fit(model, Adam(model.parameters(), lr=1e-2), DataLoader(X, y, batch_size=16, seed=1),
            F.cross_entropy, epochs=2, progress=False)
    assert capsys.readouterr().out == ""
    assert h.val_loss == [] and h.val_acc == [] and len(h.train_loss) == 2


def test_scheduler_per_step():
    X, y = blobs(40)
    model = small_model()
    opt = SGD(model.parameters(), lr=1.0)
    sched = lr_scheduler.LinearDecay(opt, total_steps=8, final_lr=0.0)
    seen = []

    class LrSpy(Callback):
        def on_step_end(self, info):
            seen.append(info.lr)

    fit(model, opt, DataLoader(X, y, batch_size=10, seed=0), F.cross_entropy, epochs=2,
        scheduler=sched, scheduler_interval="step", callbacks=[LrSpy()], progress=False)
    assert seen == pytest.approx([1 - k / 8 for k in range(8)])


def test_clip_reports_norm_and_limits_update():
    X, y = blobs(40)
    model = small_model()
    norms = []

    class NormSpy(Callback):
        def on_step_end(self, info):
            norms.append(info.grad_norm)
            total = math.sqrt(sum(float((p.grad.data.astype(np.float64) ** 2).sum())
                                  for p in info.run.model.parameters()))
            assert total <= 1e-3 * (1 + 1e-4)

    fit(model, SGD(model.parameters(), lr=0.1), DataLoader(X, y, batch_size=20, seed=0),
        F.cross_entropy, epochs=1, clip=1e-3, callbacks=[NormSpy()], progress=False)
    assert len(norms) == 2 and all(n > 1e-3 for n in norms)


def test_callback_order_and_early_stop():
    X, y = blobs(30)
    model = small_model()
    events = []

    class Recorder(Callback):
        def on_train_begin(self, run):
            events.append("train_begin")

        def on_epoch_begin(self, run):
            events.append(f"epoch_begin {run.epoch}")
            assert run.model.training

        def on_step_end(self, info):
            events.append(f"step {info.epoch}.{info.step} #{info.global_step}")
            assert isinstance(info.xb, Tensor) and info.loss == info.run.history.step_loss[-1]

        def on_epoch_end(self, run):
            events.append(f"epoch_end {run.epoch}")
            run.history.record("double_loss", 2 * run.history.train_loss[-1])
            if run.epoch == 1:
                run.stop_training = True

        def on_train_end(self, run):
            events.append("train_end")

    h = fit(model, SGD(model.parameters(), lr=0.1), DataLoader(X, y, batch_size=15, seed=0),
            F.cross_entropy, epochs=10, callbacks=[Recorder()], progress=False)
    assert events == ["train_begin", "epoch_begin 0", "step 0.0 #1", "step 0.1 #2", "epoch_end 0",
                      "epoch_begin 1", "step 1.0 #3", "step 1.1 #4", "epoch_end 1", "train_end"]
    assert len(h) == 2 and h.extra["double_loss"] == [2 * t for t in h.train_loss]


def test_nan_loss_stops_with_message():
    X, y = blobs(40)
    X[25] = np.nan                                   # poisons the batch that holds sample 25
    model = small_model()
    loader = DataLoader(X, y, batch_size=10, shuffle=False)
    with pytest.raises(TrainingDiverged, match=r"epoch 1, step 3: the loss is nan") as info:
        fit(model, SGD(model.parameters(), lr=0.1), loader, F.cross_entropy, epochs=3,
            progress=False)
    assert isinstance(info.value, RuntimeError)
    assert (info.value.epoch, info.value.step) == (1, 3) and np.isnan(info.value.loss)


def test_inf_loss_stops():
    X, y = blobs(20)
    model = small_model()

    def exploding(out, target):
        return F.cross_entropy(out, target) * float("inf")

    with pytest.raises(TrainingDiverged, match="epoch 1, step 1: the loss is inf"):
        fit(model, SGD(model.parameters(), lr=0.1), DataLoader(X, y, batch_size=10, seed=0),
            exploding, epochs=1, progress=False)


def test_evaluate_modes_and_metrics():
    X, y = blobs(50)
    model = small_model(dropout=0.5)
    model.train()
    loss, acc = evaluate(model, DataLoader(X, y, batch_size=7, shuffle=False), F.cross_entropy)
    assert model.training                            # mode restored
    with_big, acc_big = evaluate(model, (X, y), F.cross_entropy, batch_size=50)
    assert loss == pytest.approx(with_big, rel=1e-6) and acc == acc_big   # eval: no dropout
    out = model.eval()(Tensor(X)).numpy()
    assert acc == np.mean(out.argmax(1) == y)
    # regression targets: no accuracy
    Xr, yr = data.teacher_regression(30, sizes=(2, 4, 1), seed=0)
    reg = nn.Linear(2, 1)
    loss_r, acc_r = evaluate(reg, (Xr, yr), F.mse_loss)
    assert acc_r is None and loss_r > 0
    # one logit per sample with 0/1 targets: thresholded at 0
    lin = nn.Linear(2, 1)
    yb = (X[:, 0] > 0).astype(np.float32)[:, None]
    _, acc_b = evaluate(lin, (X, yb), F.binary_cross_entropy_with_logits)
    pred = lin(Tensor(X)).numpy() > 0
    assert acc_b == np.mean(pred == (yb == 1))


def test_fit_argument_errors():
    X, y = blobs(20)
    model = small_model()
    opt = SGD(model.parameters(), lr=0.1)
    loader = DataLoader(X, y, batch_size=10)
    with pytest.raises(ValueError, match="scheduler_interval"):
        fit(model, opt, loader, F.cross_entropy, 1, scheduler_interval="batch")
    with pytest.raises(ValueError, match="clip"):
        fit(model, opt, loader, F.cross_entropy, 1, clip=0)
    with pytest.raises(ValueError, match="no targets"):
        fit(model, opt, DataLoader(X, batch_size=10), F.cross_entropy, 1)
    with pytest.raises(ValueError, match="no batches"):
        fit(model, opt, DataLoader(X, y, batch_size=50, drop_last=True), F.cross_entropy, 1)
    with pytest.raises(ValueError, match="start_epoch"):
        fit(model, opt, loader, F.cross_entropy, 2, start_epoch=3)


def test_closure_optimizer():
    from tinygrad_opt.optim import LBFGS
    X, y = blobs(60)
    model = small_model()
    loss0, _ = evaluate(model, (X, y), F.cross_entropy)
    h = fit(model, LBFGS(model.parameters()), DataLoader(X, y, batch_size=60, shuffle=False),
            F.cross_entropy, epochs=3, progress=False)
    assert len(h.step_loss) == 3 and h.step_loss[0] == pytest.approx(loss0, rel=1e-6)
    assert evaluate(model, (X, y), F.cross_entropy)[0] < 0.5 * loss0


# ---------------------------------------------------------------- resume
def resume_setup():
    X, y = blobs(90, seed=2)
    model = small_model(seed=11, dropout=0.3)       # dropout draws from the global generator
    opt = Adam(model.parameters(), lr=5e-3)
    sched = lr_scheduler.ExponentialLR(opt, gamma=0.8)
    loader = DataLoader(X, y, batch_size=16, seed=5)
    return model, opt, sched, loader, (X[:30], y[:30])


def params_of(model):
    return [p.data.copy() for p in model.parameters()]


def test_resume_is_bit_identical(tmp_path):
    # uninterrupted: 4 epochs
    model, opt, sched, loader, val = resume_setup()
    backend.manual_seed(123)
    full = fit(model, opt, loader, F.cross_entropy, epochs=4, val=val, scheduler=sched,
               progress=False)
    expected = params_of(model)

    # interrupted: 2 epochs, checkpoint to disk, everything rebuilt, 2 more
    model, opt, sched, loader, val = resume_setup()
    backend.manual_seed(123)
    h = fit(model, opt, loader, F.cross_entropy, epochs=2, val=val, scheduler=sched,
            progress=False)
    save(checkpoint_state(model, opt, loader, 2, sched, h), tmp_path / "ckpt.npz")
    backend.manual_seed(999)                         # whatever happens in between
    model, opt, sched, loader, val = resume_setup()
    hist = History()
    start = restore_state(load(tmp_path / "ckpt.npz"), model, opt, loader, sched, hist)
    assert start == 2
    h2 = fit(model, opt, loader, F.cross_entropy, epochs=4, val=val, scheduler=sched,
             progress=False, start_epoch=start, history=hist)

    got = params_of(model)
    assert len(got) == len(expected)
    assert all(np.array_equal(a, b) for a, b in zip(got, expected))
    assert h2.step_loss == full.step_loss and h2.train_loss == full.train_loss
    assert h2.val_loss == full.val_loss and h2.lr == full.lr and h2.epoch == [0, 1, 2, 3]
    # the dropout draws mattered: a different generator state gives different parameters
    model, opt, sched, loader, val = resume_setup()
    backend.manual_seed(124)
    fit(model, opt, loader, F.cross_entropy, epochs=4, scheduler=sched, progress=False)
    assert not all(np.array_equal(a, b) for a, b in zip(params_of(model), expected))


def test_checkpoint_callback_resume(tmp_path):
    path = tmp_path / "run.ckpt"
    model, opt, sched, loader, val = resume_setup()
    backend.manual_seed(7)
    fit(model, opt, loader, F.cross_entropy, epochs=3, scheduler=sched, progress=False)
    expected = params_of(model)

    model, opt, sched, loader, val = resume_setup()
    backend.manual_seed(7)
    fit(model, opt, loader, F.cross_entropy, epochs=3, scheduler=sched, progress=False,
        callbacks=[Checkpoint(path)])
    assert all(np.array_equal(a, b) for a, b in zip(params_of(model), expected))
    state = load(path)
    assert state["epoch"] == 3 and len(state["history"]["epoch"]) == 3
    assert set(state) == {"epoch", "model", "optimizer", "loader", "scheduler", "history", "rng"}
    assert list(state["optimizer"]["state"])[:2] == [0, 1]     # int keys survive the file


# ---------------------------------------------------------------- progress display
class FakeBar:
    """Stands in for tqdm.tqdm and records what fit() asks of it."""
    made = []

    def __init__(self, total, desc, file, leave):
        self.total, self.desc, self.n, self.closed, self.postfix = total, desc, 0, False, None
        FakeBar.made.append(self)

    def update(self, k):
        self.n += k

    def set_postfix(self, refresh=False, **kw):
        self.postfix = kw

    def set_postfix_str(self, s, refresh=True):
        self.postfix = s

    def close(self):
        self.closed = True


def test_progress_uses_tqdm_only_on_a_terminal(monkeypatch, capsys):
    import sys
    import types

    from tinygrad_opt import train
    fake = types.ModuleType("tqdm")
    fake.tqdm = FakeBar
    monkeypatch.setitem(sys.modules, "tqdm", fake)
    X, y = blobs(40)
    model = small_model()

    def run():
        FakeBar.made = []
        fit(model, SGD(model.parameters(), lr=0.1), DataLoader(X, y, batch_size=10, seed=0),
            F.cross_entropy, epochs=2, val=(X, y), progress=True)

    run()                                            # captured stdout is not a terminal
    assert FakeBar.made == [] and len(capsys.readouterr().out.splitlines()) == 2
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    assert train._use_tqdm(True) is FakeBar and train._use_tqdm(False) is None
    run()
    assert [b.desc for b in FakeBar.made] == ["epoch 1/2", "epoch 2/2"]
    assert all(b.n == b.total == 4 and b.closed for b in FakeBar.made)
    assert "val_acc" in FakeBar.made[-1].postfix
    assert capsys.readouterr().out == ""
    monkeypatch.setitem(sys.modules, "tqdm", None)   # not installed: plain lines again
    assert train._use_tqdm(True) is None


def test_fit_on_device(device):
    X, y = blobs(60)
    backend.manual_seed(0)
    model = nn.MLP([2, 16, 3], device=device)
    loader = DataLoader(X, y, batch_size=20, seed=0, device=device)
    val = (backend.to_device(X, device), backend.to_device(y, device))
    h = fit(model, Adam(model.parameters(), lr=1e-2), loader, F.cross_entropy, epochs=3,
            val=val, progress=False)
    assert h.train_loss[-1] < h.train_loss[0] and h.val_acc[-1] is not None
    assert all(p.device == device for p in model.parameters())


# ---------------------------------------------------------------- History columns by name
def test_history_columns_by_name():
    X, y = blobs(40)
    model = small_model()

    class Double(Callback):
        def on_epoch_end(self, run):
            run.history.record("double_loss", 2 * run.history.train_loss[-1])

    h = fit(model, SGD(model.parameters(), lr=0.1), DataLoader(X, y, batch_size=10, seed=0),
            F.cross_entropy, epochs=3, val=(X, y), callbacks=[Double()], progress=False)
    assert h["train_loss"] is h.train_loss and h["loss"] is h.train_loss
    assert h["epoch"] == [0, 1, 2] and len(h["step_loss"]) == 12
    assert h["double_loss"] == [2 * t for t in h.train_loss]
    assert all(0.0 <= a <= 1.0 for a in h["val_acc"])
    assert "val_loss" in h and "loss" in h and "double_loss" in h and "nope" not in h
    assert h.keys() == ["epoch", "train_loss", "val_loss", "val_acc", "lr", "epoch_time",
                        "step_loss", "double_loss"]
    with pytest.raises(KeyError, match="no column 'acc'; it has epoch, train_loss"):
        h["acc"]
    quiet = fit(model, SGD(model.parameters(), lr=0.1), DataLoader(X, y, batch_size=10, seed=0),
                F.cross_entropy, epochs=1, progress=False)
    assert quiet["val_acc"] == [] and "val_acc" not in quiet.keys()


def test_grad_norm_is_given_only_with_clip():
    X, y = blobs(40)
    seen = {}

    class Spy(Callback):
        def on_step_end(self, info):
            seen.setdefault(info.run.epochs, []).append(info.grad_norm)

    for clip in (None, 1e6):
        model = small_model()
        fit(model, SGD(model.parameters(), lr=0.1), DataLoader(X, y, batch_size=10, seed=0),
            F.cross_entropy, epochs=1 if clip is None else 2, clip=clip, callbacks=[Spy()],
            progress=False)
    assert seen[1] == [None] * 4
    assert all(isinstance(n, float) and n > 0 for n in seen[2])


def test_fit_reads_needs_closure_from_the_optimizer():
    from tinygrad_opt.optim import LBFGS, Lookahead
    X, y = blobs(40)
    model = small_model()
    lookahead = Lookahead(SGD(model.parameters(), lr=0.1), k=2)      # first-order base
    assert not lookahead.needs_closure
    h = fit(model, lookahead, DataLoader(X, y, batch_size=10, seed=0), F.cross_entropy,
            epochs=1, clip=1.0, progress=False)                      # clip: a first-order path
    assert len(h.step_loss) == 4
    model = small_model()
    with pytest.raises(ValueError, match="clip is not supported with LBFGS"):
        fit(model, LBFGS(model.parameters()), DataLoader(X, y, batch_size=10, seed=0),
            F.cross_entropy, epochs=1, clip=1.0, progress=False)
