"""Data: minibatch loader, train/validation split, synthetic sets, digits and MNIST readers.

Random choices (shuffles, splits, synthetic sets) are drawn on the host from NumPy
generators and the resulting index arrays are moved to the data's device, so one seed
gives the same batches on the CPU and on the GPU, and every generator state is a plain
dict that a checkpoint can store.
"""
import gzip
import math
import os

from . import backend
from .tensor import Tensor

np = backend.np                 # host NumPy: generators, index bookkeeping, file I/O


def _array(a, name, device=None):
    """The backend array behind `a` (an ndarray or a Tensor), moved to `device` if given."""
    if isinstance(a, Tensor):
        a = a.data
    if not backend.is_array(a):
        raise TypeError(f"{name} must be a NumPy/CuPy array or a Tensor, got {type(a).__name__}; "
                        f"wrap it with numpy.asarray({name})")
    if a.ndim == 0:
        raise ValueError(f"{name} must have a leading sample axis, got a 0-d array")
    return a if device is None else backend.to_device(a, device)


def _check_lengths(X, y, where):
    if y is not None and X.shape[0] != y.shape[0]:
        raise ValueError(f"{where}: X and y hold different numbers of samples: "
                         f"X has shape {tuple(X.shape)}, y has shape {tuple(y.shape)}")


# ---------------------------------------------------------------- DataLoader
class DataLoader:
    """Minibatches (xb, yb) of Tensors, sampled without replacement: one permutation per epoch.

    X, y: NumPy/CuPy arrays or Tensors with the same first dimension (y may be None; then
    the loader yields xb alone). With a `seed` the loader owns its generator; with seed=None
    it draws from the global generator (set by `tinygrad_opt.manual_seed`). Batches wrap the
    indexed arrays without a further copy. `state_dict()` holds the epoch counter and the
    generator state; taken between epochs, it lets a resumed run see the same batches.
    """

    def __init__(self, X, y=None, batch_size=32, shuffle=True, seed=None, drop_last=False,
                 device=None):
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"DataLoader: batch_size must be a positive int, got {batch_size!r}")
        self.X = _array(X, "X", device)
        self.y = None if y is None else _array(y, "y", device)
        _check_lengths(self.X, self.y, "DataLoader")
        self.batch_size = batch_size
        self.shuffle = bool(shuffle)
        self.drop_last = bool(drop_last)
        self.seed = seed
        self.device = backend.device_of(self.X)
        self.generator = None if seed is None else np.random.default_rng(seed)
        self.epoch = 0                     # epochs started so far

    @property
    def num_samples(self):
        return self.X.shape[0]

    def __len__(self):
        n, b = self.num_samples, self.batch_size
        return n // b if self.drop_last else -(-n // b)

    def _order(self):
        """This epoch's sample order (an index array on the data's device), or None for 0..n-1."""
        if not self.shuffle:
            return None
        n = self.num_samples
        perm = backend.permutation(n, "cpu") if self.generator is None else self.generator.permutation(n)
        return backend.to_device(perm, self.device)

    def __iter__(self):
        order = self._order()              # drawn when iteration starts, so state_dict is exact
        self.epoch += 1
        n, b = self.num_samples, self.batch_size
        stop = n - n % b if self.drop_last else n
        for i in range(0, stop, b):
            idx = slice(i, min(i + b, n)) if order is None else order[i:i + b]
            xb = Tensor._wrap(self.X[idx])
            if self.y is None:
                yield xb
            else:
                yield xb, Tensor._wrap(self.y[idx])

    def state_dict(self):
        """Epoch counter and generator state (plain Python values)."""
        gen = None if self.generator is None else self.generator.bit_generator.state
        return {"epoch": self.epoch, "seed": self.seed, "generator": gen}

    def load_state_dict(self, state):
        self.epoch = int(state["epoch"])
        if state.get("generator") is not None:
            if self.generator is None:
                self.generator = np.random.default_rng()
            self.generator.bit_generator.state = state["generator"]

    def __repr__(self):
        return (f"DataLoader(samples={self.num_samples}, batch_size={self.batch_size}, "
                f"shuffle={self.shuffle}, drop_last={self.drop_last}, device={self.device!r})")


def as_loader(data, batch_size=256):
    """A DataLoader for `data` (returned as is) or for an (X, y) pair, in a fixed order."""
    if isinstance(data, DataLoader):
        return data
    if isinstance(data, (tuple, list)) and len(data) == 2:
        return DataLoader(data[0], data[1], batch_size=batch_size, shuffle=False)
    raise TypeError(f"expected a DataLoader or an (X, y) pair, got {type(data).__name__}")


# ---------------------------------------------------------------- split
def train_val_split(X, y, val_fraction=0.2, seed=0, stratify=False):
    """((X_train, y_train), (X_val, y_val)): a random split with round(n * val_fraction) val samples.

    stratify=True keeps each class's share in both parts (per class counts are rounded by
    largest remainder so the total is still exact). Inputs may be arrays or Tensors; the
    parts are arrays on the same device.
    """
    X, y = _array(X, "X"), _array(y, "y")
    _check_lengths(X, y, "train_val_split")
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"train_val_split: val_fraction must be in [0, 1), got {val_fraction}")
    n = X.shape[0]
    n_val = int(round(n * val_fraction))
    g = np.random.default_rng(seed)
    if not stratify:
        perm = g.permutation(n)
        val_idx, train_idx = perm[:n_val], perm[n_val:]
    else:
        labels = backend.to_numpy(y)
        if labels.ndim != 1:
            raise ValueError(f"train_val_split: stratify needs 1-d class labels, got shape {labels.shape}")
        classes, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
        ideal = counts * (n_val / n)
        take = np.floor(ideal).astype(np.int64)
        # Hand the remaining val slots to the classes with the largest fractional parts.
        extra = n_val - int(take.sum())
        take[np.argsort(-(ideal - take), kind="stable")[:extra]] += 1
        val_parts, train_parts = [], []
        for c in range(len(classes)):
            members = g.permutation(np.flatnonzero(inverse == c))
            val_parts.append(members[:take[c]])
            train_parts.append(members[take[c]:])
        val_idx = g.permutation(np.concatenate(val_parts))
        train_idx = g.permutation(np.concatenate(train_parts))
    dev = backend.device_of(X)
    val_idx, train_idx = backend.to_device(val_idx, dev), backend.to_device(train_idx, dev)
    return (X[train_idx], y[train_idx]), (X[val_idx], y[val_idx])


# ---------------------------------------------------------------- synthetic sets
def _finish(X, y, dtype, device):
    X = backend.to_device(X.astype(dtype), backend.check_device(device))
    y = backend.to_device(y, backend.check_device(device))
    return X, y


def spirals(n_per_class, n_classes=3, noise=0.2, seed=0, dtype=np.float32, device=None):
    """(X, y): `n_classes` interleaved spiral arms in 2-D, n_per_class points each.

    Arm k has points r (cos t, sin t) with r evenly spaced in (0, 1] and angle
    t = 2 pi k / K + 4 r + noise * N(0, 1); y holds int64 class labels.
    """
    g = np.random.default_rng(seed)
    r = np.linspace(1.0 / n_per_class, 1.0, n_per_class)
    X, y = [], []
    for k in range(n_classes):
        t = 2 * np.pi * k / n_classes + 4.0 * r + noise * g.standard_normal(n_per_class)
        X.append(np.stack([r * np.cos(t), r * np.sin(t)], axis=1))
        y.append(np.full(n_per_class, k, dtype=np.int64))
    return _finish(np.concatenate(X), np.concatenate(y), dtype, device)


def two_moons(n, noise=0.1, seed=0, dtype=np.float32, device=None):
    """(X, y): two interleaving half circles in 2-D (n points, n // 2 in the upper moon).

    Upper moon: (cos a, sin a); lower moon: (1 - cos a, 1/2 - sin a), a in [0, pi];
    Gaussian noise of std `noise` on every coordinate; y in {0, 1} (int64).
    """
    g = np.random.default_rng(seed)
    n_up = n // 2
    a_up, a_low = np.linspace(0, np.pi, n_up), np.linspace(0, np.pi, n - n_up)
    up = np.stack([np.cos(a_up), np.sin(a_up)], axis=1)
    low = np.stack([1 - np.cos(a_low), 0.5 - np.sin(a_low)], axis=1)
    X = np.concatenate([up, low]) + noise * g.standard_normal((n, 2))
    y = np.concatenate([np.zeros(n_up, np.int64), np.ones(n - n_up, np.int64)])
    return _finish(X, y, dtype, device)


def teacher_regression(n, sizes=(8, 16, 1), seed=0, noise=0.0, dtype=np.float32, device=None):
    """(X, y): targets of a random tanh teacher MLP with layer sizes `sizes`, plus noise.

    X ~ N(0, I) of shape (n, sizes[0]); weights N(0, 1/fan_in), biases N(0, 0.1^2); hidden
    layers use tanh and the last is linear, so y has shape (n, sizes[-1]). A student with the
    same architecture can reach zero training loss when noise=0.
    """
    if len(sizes) < 2:
        raise ValueError(f"teacher_regression: sizes needs an input and an output size, got {sizes}")
    g = np.random.default_rng(seed)
    X = g.standard_normal((n, sizes[0]))
    h = X
    for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        W = g.standard_normal((fan_out, fan_in)) / math.sqrt(fan_in)
        b = 0.1 * g.standard_normal(fan_out)
        h = h @ W.T + b
        if i < len(sizes) - 2:
            h = np.tanh(h)
    y = h + noise * g.standard_normal(h.shape)
    return _finish(X, y.astype(dtype), dtype, device)


# ---------------------------------------------------------------- real data
_EXTRA_HINT = "pip install 'tinygrad_opt[examples]'"


def load_digits(dtype=np.float32, normalize=True, device=None):
    """(X, y): scikit-learn's bundled 8x8 digits, 1,797 images as rows of 64 pixels, labels 0-9.

    Pixels are 0..16; normalize=True scales them to [0, 1]. Needs scikit-learn (offline).
    """
    table = _sklearn_digits_file()
    if table is None:
        try:
            from sklearn.datasets import load_digits as _sk_digits
        except ImportError:
            raise ImportError(f"load_digits needs scikit-learn: {_EXTRA_HINT}") from None
        d = _sk_digits()
        table = np.column_stack([d.data, d.target])
    X = table[:, :-1].astype(np.float64)
    if normalize:
        X = X / 16.0
    return _finish(X, table[:, -1].astype(np.int64), dtype, device)


def _sklearn_digits_file():
    """scikit-learn's digits file as a 1797 x 65 table (pixels, label), parsed as its
    load_digits parses it but without importing scikit-learn, which takes seconds; None
    when the file is not where scikit-learn keeps it."""
    import importlib.util
    spec = importlib.util.find_spec("sklearn")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = os.path.join(spec.submodule_search_locations[0], "datasets", "data", "digits.csv.gz")
    if not os.path.isfile(path):
        return None
    with gzip.open(path, "rt") as f:
        table = np.loadtxt(f, delimiter=",")
    return table if table.shape == (1797, 65) else None


_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path):
    """The host NumPy array stored in an IDX file (gzip-compressed when it starts with 1f 8b).

    IDX layout: two zero bytes, a type code, the number of dimensions, then each dimension
    as a big-endian uint32, then the values in C order.
    """
    path = os.fspath(path)
    with open(path, "rb") as f:
        raw = f.read()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise ValueError(f"read_idx: {path} is not an IDX file (bad magic {raw[:4]!r})")
    dtype, ndim = np.dtype(_IDX_DTYPES[raw[2]]), raw[3]
    header = 4 + 4 * ndim
    shape = tuple(int(d) for d in np.frombuffer(raw[4:header], dtype=">u4"))
    count = math.prod(shape)
    if len(raw) != header + count * dtype.itemsize:
        raise ValueError(f"read_idx: {path} holds {len(raw) - header} data bytes, but its header "
                         f"announces shape {shape} of {dtype} ({count * dtype.itemsize} bytes)")
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


_MNIST_DIRS = {"mnist": ("mnist", "MNIST", os.path.join("MNIST", "raw")),
               "fashion": ("fashion", "fashion-mnist", "FashionMNIST",
                           os.path.join("FashionMNIST", "raw"))}
_MNIST_NPZ = {"mnist": "mnist.npz", "fashion": "fashion-mnist.npz"}


def load_mnist(root, kind="mnist", split="train", dtype=np.float32, normalize=True, flatten=True,
               device=None):
    """(X, y) of MNIST or Fashion-MNIST from files already on disk (nothing is downloaded).

    Looks in `root` and in its usual subfolders (e.g. root/mnist, root/MNIST/raw,
    root/fashion) for the IDX files `train-images-idx3-ubyte`, `train-labels-idx1-ubyte`,
    `t10k-images-idx3-ubyte`, `t10k-labels-idx1-ubyte` (optionally .gz), or for an .npz with
    x_train, y_train, x_test, y_test (mnist.npz / fashion-mnist.npz). X is (n, 784) when
    flatten, pixels scaled to [0, 1] when normalize; y is int64.
    """
    if kind not in _MNIST_DIRS:
        raise ValueError(f"load_mnist: kind must be 'mnist' or 'fashion', got {kind!r}")
    if split not in ("train", "test"):
        raise ValueError(f"load_mnist: split must be 'train' or 'test', got {split!r}")
    root = os.fspath(root)
    prefix = "train" if split == "train" else "t10k"
    img_name, lbl_name = f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte"
    npz_name = _MNIST_NPZ[kind]
    folders = [root] + [os.path.join(root, d) for d in _MNIST_DIRS[kind]]

    def find(folder, name):
        for candidate in (name, name + ".gz"):
            p = os.path.join(folder, candidate)
            if os.path.isfile(p):
                return p
        return None

    images = labels = None
    for folder in folders:
        img, lbl = find(folder, img_name), find(folder, lbl_name)
        if img and lbl:
            images, labels = read_idx(img), read_idx(lbl)
            break
        npz = os.path.join(folder, npz_name)
        if os.path.isfile(npz):
            with np.load(npz, allow_pickle=False) as z:
                images, labels = z[f"x_{split}"], z[f"y_{split}"]
            break
    if images is None:
        raise FileNotFoundError(
            f"load_mnist: no {kind} {split} data under {root} (looked in {', '.join(folders)}); "
            f"expected {img_name}[.gz] and {lbl_name}[.gz], or {npz_name} with "
            "x_train, y_train, x_test, y_test")
    if images.shape[0] != labels.shape[0]:
        raise ValueError(f"load_mnist: {images.shape[0]} images but {labels.shape[0]} labels in {root}")
    X = images.reshape(images.shape[0], -1) if flatten else images
    X = X.astype(np.float64) / 255.0 if normalize else X
    return _finish(X, labels.astype(np.int64), dtype, device)
