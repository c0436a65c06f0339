"""DataLoader, train_val_split, synthetic sets, digits and the IDX / npz MNIST readers."""
import gzip
import os

import numpy as np
import pytest

from tinygrad_opt import backend, data
from tinygrad_opt.data import DataLoader, read_idx, train_val_split
from tinygrad_opt.tensor import Tensor


def epoch_rows(loader):
    """The first-column values of every batch of one epoch, in order, and the batch sizes."""
    rows, sizes = [], []
    for xb, yb in loader:
        assert isinstance(xb, Tensor) and isinstance(yb, Tensor)
        assert np.array_equal(xb.numpy()[:, 0], yb.numpy())      # rows stay paired with labels
        rows.extend(yb.numpy().tolist())
        sizes.append(xb.shape[0])
    return rows, sizes


def make(n=10, d=3):
    X = np.repeat(np.arange(n, dtype=np.float32)[:, None], d, axis=1)
    return X, np.arange(n, dtype=np.int64)


# ---------------------------------------------------------------- DataLoader
def test_each_sample_once_per_epoch():
    X, y = make(10)
    loader = DataLoader(X, y, batch_size=3, seed=0)
    assert len(loader) == 4
    for _ in range(3):
        rows, sizes = epoch_rows(loader)
        assert sorted(rows) == list(range(10))
        assert sizes == [3, 3, 3, 1]
    assert loader.epoch == 3


def test_drop_last():
    X, y = make(10)
    loader = DataLoader(X, y, batch_size=3, seed=0, drop_last=True)
    assert len(loader) == 3
    rows, sizes = epoch_rows(loader)
    assert sizes == [3, 3, 3] and len(set(rows)) == 9
    exact = DataLoader(*make(9), batch_size=3, drop_last=True)
    assert len(exact) == 3 and epoch_rows(exact)[1] == [3, 3, 3]


def test_fresh_permutation_each_epoch_and_seed_reproducible():
    X, y = make(50)
    a = DataLoader(X, y, batch_size=8, seed=7)
    orders = [epoch_rows(a)[0] for _ in range(4)]
    assert all(orders[i] != orders[j] for i in range(4) for j in range(i))
    assert orders[0] != list(range(50))
    b = DataLoader(X, y, batch_size=8, seed=7)
    assert [epoch_rows(b)[0] for _ in range(4)] == orders
    c = DataLoader(X, y, batch_size=8, seed=8)
    assert epoch_rows(c)[0] != orders[0]


def test_global_generator_when_no_seed():
    X, y = make(30)
    backend.manual_seed(3)
    first = epoch_rows(DataLoader(X, y, batch_size=4))[0]
    backend.manual_seed(3)
    again = epoch_rows(DataLoader(X, y, batch_size=4))[0]
    assert first == again and sorted(first) == list(range(30))
    backend.manual_seed(4)                           # another global seed, another order
    other = epoch_rows(DataLoader(X, y, batch_size=4))[0]
    assert other != first and sorted(other) == list(range(30))


def test_no_shuffle_keeps_order_and_views():
    X, y = make(7)
    loader = DataLoader(X, y, batch_size=4, shuffle=False)
    rows, sizes = epoch_rows(loader)
    assert rows == list(range(7)) and sizes == [4, 3]
    xb, _ = next(iter(loader))
    assert np.shares_memory(xb.data, loader.X)       # wrapped without a copy


def test_state_dict_resumes_identically():
    X, y = make(40)
    a = DataLoader(X, y, batch_size=6, seed=1)
    epoch_rows(a), epoch_rows(a)
    state = a.state_dict()
    rest = [epoch_rows(a)[0] for _ in range(2)]
    b = DataLoader(X, y, batch_size=6, seed=999)
    b.load_state_dict(state)
    assert b.epoch == 2
    assert [epoch_rows(b)[0] for _ in range(2)] == rest


def test_state_dict_survives_checkpoint_file(tmp_path):
    from tinygrad_opt.serialization import load, save
    X, y = make(40)
    a = DataLoader(X, y, batch_size=6, seed=1)
    epoch_rows(a)
    save({"loader": a.state_dict()}, tmp_path / "c.npz")
    nxt = epoch_rows(a)[0]
    b = DataLoader(X, y, batch_size=6, seed=1)
    b.load_state_dict(load(tmp_path / "c.npz")["loader"])
    assert epoch_rows(b)[0] == nxt


def test_inputs_tensor_and_x_only():
    X, y = make(5)
    loader = DataLoader(Tensor(X), Tensor(y), batch_size=2, shuffle=False)
    assert epoch_rows(loader)[0] == list(range(5))
    xs = list(DataLoader(X, batch_size=2, shuffle=False))
    assert all(isinstance(xb, Tensor) for xb in xs) and [x.shape[0] for x in xs] == [2, 2, 1]


def test_errors():
    X, y = make(5)
    with pytest.raises(ValueError, match=r"\(5, 3\).*\(4,\)"):
        DataLoader(X, y[:4])
    with pytest.raises(ValueError, match="batch_size"):
        DataLoader(X, y, batch_size=0)
    with pytest.raises(TypeError, match="numpy.asarray"):
        DataLoader([[1.0]], None)


# ---------------------------------------------------------------- split
def test_split_sizes_disjoint_and_deterministic():
    X, y = make(103)
    (Xt, yt), (Xv, yv) = train_val_split(X, y, val_fraction=0.2, seed=0)
    assert Xv.shape == (21, 3) and Xt.shape == (82, 3) and yv.shape == (21,)
    assert sorted(yt.tolist() + yv.tolist()) == list(range(103))
    assert np.array_equal(Xt[:, 0], yt) and np.array_equal(Xv[:, 0], yv)
    (_, yt2), (_, yv2) = train_val_split(X, y, val_fraction=0.2, seed=0)
    assert np.array_equal(yt, yt2) and np.array_equal(yv, yv2)
    (_, yt3), _ = train_val_split(X, y, val_fraction=0.2, seed=1)
    assert not np.array_equal(yt, yt3)


def test_split_stratified():
    labels = np.array([0] * 50 + [1] * 30 + [2] * 20, dtype=np.int64)
    X = np.arange(100, dtype=np.float32)[:, None]
    (Xt, yt), (Xv, yv) = train_val_split(X, labels, val_fraction=0.25, seed=3, stratify=True)
    assert len(yv) == 25 and len(yt) == 75
    # 50*0.25 = 12.5, 30*0.25 = 7.5, 20*0.25 = 5: floors give 24, the one spare slot goes to
    # the first of the tied remainders
    assert np.bincount(yv, minlength=3).tolist() == [13, 7, 5]
    assert np.array_equal(labels[Xv[:, 0].astype(int)], yv)
    rows = sorted(Xt[:, 0].tolist() + Xv[:, 0].tolist())
    assert rows == list(range(100))
    # uneven shares are spread by largest remainder
    lab = np.array([0] * 7 + [1] * 3, dtype=np.int64)
    (_, _), (_, yv) = train_val_split(np.zeros((10, 1)), lab, val_fraction=0.3, stratify=True)
    assert np.bincount(yv, minlength=2).tolist() == [2, 1]


def test_split_errors():
    X, y = make(5)
    with pytest.raises(ValueError, match="val_fraction"):
        train_val_split(X, y, val_fraction=1.0)
    with pytest.raises(ValueError, match=r"\(5, 3\).*\(6,\)"):
        train_val_split(X, np.arange(6))


# ---------------------------------------------------------------- synthetic sets
def test_spirals():
    X, y = data.spirals(40, n_classes=3, noise=0.1, seed=0)
    assert X.shape == (120, 2) and X.dtype == np.float32 and y.dtype == np.int64
    assert np.bincount(y).tolist() == [40, 40, 40]
    r = np.sqrt((X.astype(np.float64) ** 2).sum(1))
    assert r.max() <= 1.0 + 1e-6                     # the radius is exact; noise is in the angle
    X2, y2 = data.spirals(40, n_classes=3, noise=0.1, seed=0)
    assert np.array_equal(X, X2) and np.array_equal(y, y2)
    assert not np.array_equal(X, data.spirals(40, n_classes=3, noise=0.1, seed=1)[0])


def test_two_moons():
    X, y = data.two_moons(101, noise=0.0, seed=0)
    assert X.shape == (101, 2) and np.bincount(y).tolist() == [50, 51]
    up, low = X[y == 0].astype(np.float64), X[y == 1].astype(np.float64)
    assert np.allclose((up ** 2).sum(1), 1.0, atol=1e-6)
    assert np.allclose(((low - [1.0, 0.5]) ** 2).sum(1), 1.0, atol=1e-6)
    a, b = data.two_moons(50, noise=0.2, seed=4), data.two_moons(50, noise=0.2, seed=4)
    assert np.array_equal(a[0], b[0])


def test_teacher_regression():
    X, y = data.teacher_regression(64, sizes=(5, 7, 2), seed=0)
    assert X.shape == (64, 5) and y.shape == (64, 2) and y.dtype == np.float32
    X2, y2 = data.teacher_regression(64, sizes=(5, 7, 2), seed=0)
    assert np.array_equal(X, X2) and np.array_equal(y, y2)
    _, noisy = data.teacher_regression(64, sizes=(5, 7, 2), seed=0, noise=0.5)
    d = noisy.astype(np.float64) - y
    assert 0.3 < d.std() < 0.7                       # the same teacher plus N(0, 0.5^2)
    assert data.teacher_regression(10, sizes=(3, 1), dtype=np.float64)[1].dtype == np.float64


# ---------------------------------------------------------------- digits
def test_load_digits():
    pytest.importorskip("sklearn")
    X, y = data.load_digits()
    assert X.shape == (1797, 64) and X.dtype == np.float32 and y.dtype == np.int64
    assert X.min() == 0.0 and X.max() == 1.0 and sorted(set(y.tolist())) == list(range(10))
    X16, _ = data.load_digits(normalize=False, dtype=np.float64)
    assert X16.max() == 16.0 and X16.dtype == np.float64


def test_load_digits_reads_the_file_without_importing_sklearn():
    sklearn_datasets = pytest.importorskip("sklearn.datasets")
    import subprocess
    import sys
    code = ("import sys; from tinygrad_opt import data; X, y = data.load_digits(); "
            "print(X.shape, 'sklearn' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["(1797,", "64)", "False"]
    ref = sklearn_datasets.load_digits()
    X, y = data.load_digits(normalize=False, dtype=np.float64)
    assert np.array_equal(X, ref.data) and np.array_equal(y, ref.target)


def test_load_digits_without_sklearn(monkeypatch):
    import builtins
    import importlib.util
    real_import, real_find_spec = builtins.__import__, importlib.util.find_spec

    def no_sklearn(name, *args, **kwargs):
        if name.startswith("sklearn"):
            raise ImportError("No module named 'sklearn'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_sklearn)
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name.startswith("sklearn") else real_find_spec(name, *a))
    with pytest.raises(ImportError) as info:
        data.load_digits()
    msg = str(info.value)
    assert "pip install 'tinygrad_opt[examples]'" in msg and "\n" not in msg


# ---------------------------------------------------------------- IDX and MNIST
def idx_bytes(arr, code):
    arr = np.asarray(arr)
    head = bytes([0, 0, code, arr.ndim]) + np.array(arr.shape, dtype=">u4").tobytes()
    return head + arr.astype(arr.dtype.newbyteorder(">")).tobytes()


def write_mnist(folder, prefix, images, labels, gz):
    os.makedirs(folder, exist_ok=True)
    for name, arr in ((f"{prefix}-images-idx3-ubyte", images), (f"{prefix}-labels-idx1-ubyte", labels)):
        raw = idx_bytes(arr, 0x08)
        if gz:
            with gzip.open(os.path.join(folder, name + ".gz"), "wb") as f:
                f.write(raw)
        else:
            with open(os.path.join(folder, name), "wb") as f:
                f.write(raw)


def tiny_images(n=3, seed=0):
    g = np.random.default_rng(seed)
    return g.integers(0, 256, (n, 28, 28), dtype=np.uint8), g.integers(0, 10, n, dtype=np.uint8)


@pytest.mark.parametrize("gz", [False, True])
def test_read_idx(tmp_path, gz):
    arrays = [(np.arange(24, dtype=np.uint8).reshape(2, 3, 4), 0x08),
              (np.array([-3, 7], dtype=np.int16), 0x0B),
              (np.array([[1.5, -2.25]], dtype=np.float32), 0x0D),
              (np.array([70000, -1], dtype=np.int32), 0x0C),
              (np.array([0.1], dtype=np.float64), 0x0E)]
    for i, (arr, code) in enumerate(arrays):
        p = tmp_path / f"a{i}"
        raw = idx_bytes(arr, code)
        p.write_bytes(gzip.compress(raw) if gz else raw)
        back = read_idx(p)
        assert back.shape == arr.shape and np.array_equal(back, arr)
        assert back.dtype == arr.dtype


def test_read_idx_bad_files(tmp_path):
    p = tmp_path / "bad"
    p.write_bytes(b"\x12\x34\x08\x01" + b"\x00" * 8)
    with pytest.raises(ValueError, match="not an IDX file"):
        read_idx(p)
    p.write_bytes(idx_bytes(np.arange(10, dtype=np.uint8), 0x08)[:-3])
    with pytest.raises(ValueError, match=r"shape \(10,\)"):
        read_idx(p)


@pytest.mark.parametrize("gz", [False, True])
def test_load_mnist_idx(tmp_path, gz):
    imgs, labs = tiny_images(3)
    timgs, tlabs = tiny_images(2, seed=1)
    write_mnist(tmp_path, "train", imgs, labs, gz)
    write_mnist(tmp_path, "t10k", timgs, tlabs, gz)
    X, y = data.load_mnist(tmp_path)
    assert X.shape == (3, 784) and X.dtype == np.float32 and y.dtype == np.int64
    assert np.array_equal(X, (imgs.reshape(3, -1) / 255.0).astype(np.float32))
    assert np.array_equal(y, labs)
    Xt, yt = data.load_mnist(tmp_path, split="test", normalize=False, flatten=False)
    assert Xt.shape == (2, 28, 28) and np.array_equal(Xt, timgs) and np.array_equal(yt, tlabs)


def test_load_fashion_from_subfolder(tmp_path):
    imgs, labs = tiny_images(4)
    write_mnist(tmp_path / "fashion", "train", imgs, labs, gz=True)
    X, y = data.load_mnist(tmp_path, kind="fashion")
    assert X.shape == (4, 784) and np.array_equal(y, labs)
    with pytest.raises(FileNotFoundError):
        data.load_mnist(tmp_path, kind="mnist")      # the fashion files are not MNIST


def test_load_mnist_npz(tmp_path):
    imgs, labs = tiny_images(3)
    timgs, tlabs = tiny_images(2, seed=1)
    np.savez(tmp_path / "mnist.npz", x_train=imgs, y_train=labs, x_test=timgs, y_test=tlabs)
    X, y = data.load_mnist(tmp_path, split="test")
    assert X.shape == (2, 784) and np.array_equal(y, tlabs)
    assert np.array_equal(X, (timgs.reshape(2, -1) / 255.0).astype(np.float32))


def test_load_mnist_missing(tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        data.load_mnist(tmp_path, split="test")
    msg = str(info.value)
    assert str(tmp_path) in msg
    assert "t10k-images-idx3-ubyte" in msg and "t10k-labels-idx1-ubyte" in msg and "mnist.npz" in msg
    with pytest.raises(ValueError, match="kind"):
        data.load_mnist(tmp_path, kind="kmnist")


# ---------------------------------------------------------------- devices
def test_loader_split_and_sets_on_device(device):
    X, y = make(20)
    loader = DataLoader(X, y, batch_size=6, seed=2, device=device)
    assert loader.device == device
    rows = []
    for xb, yb in loader:
        assert xb.device == device and yb.device == device
        rows.extend(yb.numpy().tolist())
    assert sorted(rows) == list(range(20))
    # the same seed gives the same batches on every device
    assert rows == epoch_rows(DataLoader(X, y, batch_size=6, seed=2))[0]
    Xd, yd = backend.to_device(X, device), backend.to_device(y, device)
    (Xt, yt), (Xv, yv) = train_val_split(Xd, yd, val_fraction=0.25, seed=0, stratify=True)
    assert backend.device_of(Xt) == device and backend.device_of(yv) == device
    (_, yt_cpu), _ = train_val_split(X, y, val_fraction=0.25, seed=0, stratify=True)
    assert np.array_equal(backend.to_numpy(yt), yt_cpu)
    Xs, ys = data.spirals(10, seed=0, device=device)
    assert backend.device_of(Xs) == device
    assert np.array_equal(backend.to_numpy(Xs), data.spirals(10, seed=0)[0])
