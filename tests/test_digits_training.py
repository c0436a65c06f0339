"""Acceptance: an MLP trained with Adam on the 8x8 digits reaches 95% validation accuracy
within 20 epochs in float32."""
import numpy as np
import pytest

from tinygrad_opt import backend, data, nn
from tinygrad_opt.nn import functional as F
from tinygrad_opt.optim import Adam
from tinygrad_opt.train import evaluate, fit

pytest.importorskip("sklearn")


def test_digits_mlp_reaches_95_percent():
    X, y = data.load_digits()
    (Xt, yt), (Xv, yv) = data.train_val_split(X, y, val_fraction=0.2, seed=0, stratify=True)
    assert Xt.dtype == np.float32 and len(yv) == 359
    backend.manual_seed(0)
    model = nn.MLP([64, 128, 10])
    assert all(p.dtype == np.float32 for p in model.parameters())
    h = fit(model, Adam(model.parameters(), lr=1e-2),
            data.DataLoader(Xt, yt, batch_size=32, seed=0), F.cross_entropy, epochs=20,
            val=(Xv, yv), progress=False)
    assert len(h.val_acc) == 20
    assert max(h.val_acc) >= 0.95
    assert h.val_acc[-1] >= 0.95
    assert all(p.dtype == np.float32 for p in model.parameters())
    loss, acc = evaluate(model, (Xv, yv), F.cross_entropy)
    assert acc == h.val_acc[-1] and loss == h.val_loss[-1]
