"""Tensor creation: zeros, ones, randn, rand, arange, eye, and the seed of every device."""
from . import backend
from .tensor import Tensor


def _shape(shape):
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        return tuple(int(s) for s in shape[0])
    return tuple(int(s) for s in shape)


def _make(array, requires_grad):
    t = Tensor._wrap(array)
    if requires_grad:
        t.requires_grad = True
    return t


def _dtype(dtype):
    return backend.np.dtype(dtype) if dtype is not None else backend.DEFAULT_DTYPE


def zeros(*shape, dtype=None, device=None, requires_grad=False):
    """A tensor of zeros; zeros(2, 3) and zeros((2, 3)) both work."""
    xp = backend.get_xp(device)
    return _make(xp.zeros(_shape(shape), dtype=_dtype(dtype)), requires_grad)


def ones(*shape, dtype=None, device=None, requires_grad=False):
    """A tensor of ones."""
    xp = backend.get_xp(device)
    return _make(xp.ones(_shape(shape), dtype=_dtype(dtype)), requires_grad)


def randn(*shape, dtype=None, device=None, requires_grad=False):
    """Standard normal samples from the device's generator (see manual_seed)."""
    return _make(backend.random_normal(_shape(shape), _dtype(dtype), backend.check_device(device)),
                 requires_grad)


def rand(*shape, dtype=None, device=None, requires_grad=False):
    """Uniform samples in [0, 1) from the device's generator."""
    return _make(backend.random_uniform(_shape(shape), _dtype(dtype), backend.check_device(device)),
                 requires_grad)


def arange(start, stop=None, step=1, dtype=None, device=None, requires_grad=False):
    """Evenly spaced values in [start, stop); int64 for integer arguments, else float32."""
    if stop is None:
        start, stop = 0, start
    if dtype is None:
        ints = all(isinstance(v, int) for v in (start, stop, step))
        dtype = backend.np.int64 if ints else backend.DEFAULT_DTYPE
    xp = backend.get_xp(device)
    return _make(xp.arange(start, stop, step, dtype=backend.np.dtype(dtype)), requires_grad)


def eye(n, m=None, dtype=None, device=None, requires_grad=False):
    """The n x m identity matrix."""
    xp = backend.get_xp(device)
    return _make(xp.eye(n, m, dtype=_dtype(dtype)), requires_grad)


def manual_seed(seed):
    """Seed the random generators of every device (randn, rand, init, Dropout, DataLoader)."""
    backend.manual_seed(seed)


def _like(t, dtype, device):
    data = t.data if isinstance(t, Tensor) else backend.as_array(t, copy=False)
    return (backend.np.dtype(dtype) if dtype is not None else data.dtype,
            backend.check_device(device) if device is not None else backend.device_of(data),
            tuple(data.shape))


def zeros_like(t, dtype=None, device=None, requires_grad=False):
    """zeros with t's shape, dtype and device (unless given)."""
    dtype, device, shape = _like(t, dtype, device)
    return zeros(shape, dtype=dtype, device=device, requires_grad=requires_grad)


def ones_like(t, dtype=None, device=None, requires_grad=False):
    """ones with t's shape, dtype and device (unless given)."""
    dtype, device, shape = _like(t, dtype, device)
    return ones(shape, dtype=dtype, device=device, requires_grad=requires_grad)


def randn_like(t, dtype=None, device=None, requires_grad=False):
    """Standard normal samples with t's shape, dtype and device (unless given)."""
    dtype, device, shape = _like(t, dtype, device)
    return randn(shape, dtype=dtype, device=device, requires_grad=requires_grad)


def tensor(data, dtype=None, device=None, requires_grad=False):
    """A new tensor holding a copy of data (PyTorch's torch.tensor); the same as Tensor(...)."""
    return Tensor(data, requires_grad=requires_grad, dtype=dtype, device=device)


def from_numpy(array):
    """A tensor that SHARES the memory of a NumPy array (no copy, like torch.from_numpy):
    changes to one show in the other. The dtype is kept."""
    if not isinstance(array, backend.np.ndarray):
        raise TypeError(f"from_numpy: expected a numpy.ndarray, got {type(array).__name__}")
    if array.dtype.kind not in "biuf":
        raise TypeError(f"from_numpy: unsupported dtype {array.dtype}")
    return Tensor._wrap(array)
