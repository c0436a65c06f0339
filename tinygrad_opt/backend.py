"""The only door to NumPy and CuPy.

Every array function the project calls is reached through the module returned by
`xp_of(array)` or `get_xp(device)`. NumPy is imported here once; CuPy is imported the
first time something asks for "cuda", so CPU users never import it.
"""
import numpy

np = numpy                      # re-exported for the few places that need host NumPy
ndarray = numpy.ndarray
DEFAULT_DTYPE = numpy.float32
DEVICES = ("cpu", "cuda")

_cupy = None                    # the cupy module once loaded


def _load_cupy():
    """Import CuPy and check that a GPU is visible; raise a RuntimeError that says what is missing."""
    global _cupy
    if _cupy is None:
        try:
            import cupy
        except ImportError as e:
            raise RuntimeError(
                "device 'cuda' requested, but CuPy is not installed; "
                "install the gpu extra: pip install 'tinygrad_opt[gpu-cuda12]' (or gpu-cuda13)") from e
        try:
            n = cupy.cuda.runtime.getDeviceCount()
        except Exception as e:  # the driver or runtime itself is missing
            raise RuntimeError(f"device 'cuda' requested, but no usable CUDA GPU was found ({e})") from e
        if n == 0:
            raise RuntimeError("device 'cuda' requested, but no CUDA GPU was found")
        _cupy = cupy
    return _cupy


def cupy_loaded():
    """True once CuPy has been imported by a request for 'cuda'."""
    return _cupy is not None


def check_device(device):
    """Normalise a device name to 'cpu' or 'cuda'; None means 'cpu'.

    Accepted: 'cpu', 'cuda' and 'cuda:0' (the same device). The project runs on one GPU,
    CuPy's device 0: another index is refused rather than silently mapped to some GPU
    (choose the GPU with CUDA_VISIBLE_DEVICES instead), and malformed names are errors.
    """
    if device is None:
        return "cpu"
    if not isinstance(device, str):
        raise TypeError(f"device must be a string such as 'cpu' or 'cuda', not {type(device).__name__}")
    if device == "cpu" or device == "cuda":
        return str(device)
    kind, sep, index = device.partition(":")
    if kind == "cuda" and sep and index.isascii() and index.isdigit():
        if int(index) == 0:
            return "cuda"
        raise ValueError(
            f"device {device!r}: only one GPU is supported, 'cuda' (= 'cuda:0'); to run on GPU "
            f"{int(index)}, make it the only visible one: CUDA_VISIBLE_DEVICES={int(index)}")
    raise ValueError(f"unknown device {device!r}; expected 'cpu', 'cuda' or 'cuda:0'")


def _check_gpu(index, what):
    """Refuse a CuPy device other than 0, the one GPU that 'cuda' names."""
    if index != 0:
        raise ValueError(
            f"{what} is on GPU {index}, but tinygrad_opt's 'cuda' is GPU 0 only; make that GPU "
            f"the only visible one (CUDA_VISIBLE_DEVICES={index}) instead of selecting it in CuPy")


def get_xp(device):
    """The array module for a device name; for 'cuda', CuPy with GPU 0 current (it allocates there)."""
    if check_device(device) == "cpu":
        return numpy
    cupy = _load_cupy()
    _check_gpu(cupy.cuda.runtime.getDevice(), "CuPy's current device")
    return cupy


def _is_cupy_array(a):
    """True for a CuPy array, also before anything here asked for 'cuda' (then CuPy is loaded)."""
    if _cupy is None:
        if not type(a).__module__.startswith("cupy"):
            return False
        _load_cupy()
    return isinstance(a, _cupy.ndarray)


def xp_of(a):
    """The array module that owns array `a` (NumPy for anything that is not a CuPy array)."""
    if type(a) is ndarray:
        return numpy
    return _cupy if _is_cupy_array(a) else numpy


def device_of(a):
    """'cuda' for a CuPy array (on GPU 0; another GPU is an error), 'cpu' otherwise."""
    if xp_of(a) is numpy:
        return "cpu"
    _check_gpu(a.device.id, "a CuPy array")
    return "cuda"


def is_array(a):
    """True for a NumPy or CuPy ndarray."""
    return isinstance(a, ndarray) or _is_cupy_array(a)


def to_device(a, device):
    """Array `a` moved to `device` (the same object if it is already there)."""
    device = check_device(device)
    if device_of(a) == device:
        return a
    if device == "cpu":
        return a.get()
    return get_xp(device).asarray(a)


def to_numpy(a):
    """A host NumPy copy of `a` (never a view of it)."""
    if xp_of(a) is numpy:
        return numpy.array(a, copy=True)
    return a.get()


def as_array(data, dtype=None, device=None, copy=True):
    """Backend array from scalars, nested lists, NumPy or CuPy arrays.

    Arrays keep their dtype; Python scalars and lists become float32 (bool lists stay bool).
    With device=None an array stays where it is and anything else goes to the CPU.
    """
    if device is None:
        device = device_of(data) if is_array(data) else "cpu"
    xp = get_xp(device)
    if is_array(data):
        if data.dtype.kind not in "biufc":      # object, string, datetime: not numbers
            raise TypeError(f"Tensor: cannot make a tensor from an array of dtype {data.dtype}; "
                            "convert it to a numeric dtype first")
        data = to_device(data, device)
        return xp.array(data, dtype=dtype, copy=True) if copy else xp.asarray(data, dtype=dtype)
    arr = numpy.asarray(data)
    if dtype is None:
        if arr.dtype.kind in "iuf":
            dtype = DEFAULT_DTYPE
        elif arr.dtype.kind not in "bc":
            raise TypeError(f"Tensor: cannot make a tensor from {type(data).__name__} "
                            f"(NumPy gives dtype {arr.dtype})")
    return xp.asarray(arr, dtype=dtype)


def is_floating(dtype):
    """True for floating dtypes (the ones that can require grad)."""
    return numpy.dtype(dtype).kind == "f"


def product_dtype_error(name, a_dtype, b_dtype, what=("input", "weight")):
    """The error for a matrix product of mixed dtypes, or None when they agree.

    PyTorch's rule: a product never promotes. A float64 batch into a float32 model would
    otherwise turn every activation, gradient and step into float64 (twice the cost) while
    the parameters stay float32; the message says how to convert either side.
    """
    if a_dtype == b_dtype or (a_dtype.kind != "f" and b_dtype.kind != "f"):
        return None
    want = b_dtype if b_dtype.kind == "f" else a_dtype
    return TypeError(
        f"{name}: {what[0]} of dtype {a_dtype} and {what[1]} of dtype {b_dtype} (a product "
        f"does not promote); convert the {what[0]} with .astype(np.{want}) (x.float() for "
        f"float32, x.double() for float64), or the model with model.to(dtype=...)")


def scatter_add(a, index, values):
    """a[index] += values, adding repeated indices (numpy.add.at, cupy.add.at)."""
    xp = xp_of(a)
    if hasattr(xp.add, "at"):
        xp.add.at(a, index, values)
    else:                           # CuPy before ufunc.at
        import cupyx
        cupyx.scatter_add(a, index, values)
    return a


# ---------------------------------------------------------------- fused GPU kernels
# On a GPU every array call is one kernel launch that costs the host 10-20 us, several times
# what the device spends on a layer of a small model, so a step is bound by the number of
# calls. Hot expressions that NumPy evaluates in several calls run there as one kernel;
# callers keep their NumPy code for the CPU and use these only on CuPy arrays.
_kernels = {}


def elementwise_kernel(in_params, out_params, operation, name):
    """A CuPy ElementwiseKernel, compiled on first use and cached by name."""
    k = _kernels.get(name)
    if k is None:
        k = _kernels[name] = _load_cupy().ElementwiseKernel(in_params, out_params, operation, name)
    return k


def reduction_kernel(in_params, out_params, map_expr, reduce_expr, post_map_expr, identity, name):
    """A CuPy ReductionKernel, compiled on first use and cached by name."""
    k = _kernels.get(name)
    if k is None:
        k = _kernels[name] = _load_cupy().ReductionKernel(in_params, out_params, map_expr,
                                                          reduce_expr, post_map_expr, identity, name)
    return k


# ---------------------------------------------------------------- random numbers
# One generator per device (the CPU and GPU 0); manual_seed reseeds both. CPU: NumPy's PCG64 Generator.
# CUDA: CuPy's RandomState, created lazily from the same seed.
_seed = None
_cpu_rng = numpy.random.default_rng()
_gpu_rng = None


def manual_seed(seed):
    """Seed the generators of every device."""
    global _seed, _cpu_rng, _gpu_rng
    _seed = int(seed)
    _cpu_rng = numpy.random.default_rng(_seed)
    _gpu_rng = get_xp("cuda").random.RandomState(_seed) if _cupy is not None else None


def rng(device="cpu"):
    """The generator of a device: numpy Generator on the CPU, cupy RandomState on CUDA."""
    global _gpu_rng
    if check_device(device) == "cpu":
        return _cpu_rng
    if _gpu_rng is None:
        _gpu_rng = get_xp("cuda").random.RandomState(_seed)
    return _gpu_rng


def random_normal(shape, dtype=DEFAULT_DTYPE, device="cpu"):
    """Standard normal samples of `shape` and floating `dtype` on `device`."""
    r = rng(device)
    if check_device(device) == "cpu":
        return r.standard_normal(shape, dtype=numpy.float64).astype(dtype, copy=False)
    return r.standard_normal(shape, dtype=dtype)


def random_uniform(shape, dtype=DEFAULT_DTYPE, device="cpu"):
    """Uniform samples in [0, 1) of `shape` and floating `dtype` on `device`."""
    r = rng(device)
    if check_device(device) == "cpu":
        return r.random(shape, dtype=numpy.float64).astype(dtype, copy=False)
    return r.random_sample(shape, dtype=dtype)


def permutation(n, device="cpu"):
    """A random permutation of range(n) on `device`."""
    return rng(device).permutation(n)


def get_rng_state():
    """The CPU generator's state as a plain dict (for checkpoints)."""
    return _cpu_rng.bit_generator.state


def set_rng_state(state):
    """Restore the CPU generator from `get_rng_state()`."""
    _cpu_rng.bit_generator.state = state
