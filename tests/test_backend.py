"""backend: device names and the one-GPU rule.

The project runs on the CPU and on one GPU, CuPy's device 0: 'cuda' and 'cuda:0' name it,
any other index is refused with a hint (CUDA_VISIBLE_DEVICES), and malformed names are
errors. Parsing needs no GPU; the GPU-side checks run here against a stand-in CuPy module
and for real in the tests marked gpu.
"""
import types

import numpy as np
import pytest

import tinygrad_opt as tg
from tinygrad_opt import backend
from tinygrad_opt.tensor import Tensor

from conftest import CUDA


@pytest.mark.parametrize("name, expected", [(None, "cpu"), ("cpu", "cpu"), ("cuda", "cuda"),
                                            ("cuda:0", "cuda"), ("cuda:00", "cuda")])
def test_valid_device_names(name, expected):
    assert backend.check_device(name) == expected


@pytest.mark.parametrize("name", ["cudafoo", "cuda:abc", "cuda:-1", "cuda:", "cuda:0:0", "cuda:+1",
                                  "cuda: 0", "CUDA", " cuda", "cuda ", "gpu", "cpu:0", "", "cuda:\u0661"])
def test_malformed_device_names_rejected(name):
    with pytest.raises(ValueError, match=r"unknown device .*expected 'cpu', 'cuda' or 'cuda:0'"):
        backend.check_device(name)


@pytest.mark.parametrize("index", [1, 2, 15])
def test_other_gpu_index_refused_with_hint(index):
    with pytest.raises(ValueError, match=rf"'cuda:{index}': only one GPU.*CUDA_VISIBLE_DEVICES={index}"):
        backend.check_device(f"cuda:{index}")


@pytest.mark.parametrize("device", [0, 1.0, b"cuda", ["cpu"], np.array("cpu")])
def test_non_string_device_is_type_error(device):
    with pytest.raises(TypeError, match="device must be a string"):
        backend.check_device(device)


def test_tensor_entry_points_refuse_bad_devices_before_touching_cupy(monkeypatch):
    def no_cupy():
        raise AssertionError("CuPy was asked for while parsing a device name")

    monkeypatch.setattr(backend, "_load_cupy", no_cupy)
    x = tg.zeros(3, requires_grad=True)
    for make in (lambda d: x.to(d), lambda d: tg.zeros(2, device=d), lambda d: tg.randn(2, device=d),
                 lambda d: Tensor([1.0], device=d), lambda d: backend.to_device(np.ones(2), d),
                 lambda d: tg.nn.Linear(2, 2).to(d)):
        with pytest.raises(ValueError, match="only one GPU"):
            make("cuda:1")
        with pytest.raises(ValueError, match="unknown device 'cudafoo'"):
            make("cudafoo")
    assert x.to("cpu") is x and x.device == "cpu"


@pytest.mark.skipif(CUDA, reason="checks the error without a GPU")
def test_cuda_0_without_gpu_says_what_is_missing():
    with pytest.raises(RuntimeError, match="device 'cuda' requested"):
        tg.zeros(2).to("cuda:0")


# ------------------------------------------------------------ a stand-in CuPy with two GPUs
class _FakeArray:
    def __init__(self, gpu):
        self.device = types.SimpleNamespace(id=gpu)


@pytest.fixture
def fake_cupy(monkeypatch):
    """backend with a CuPy stand-in whose current GPU is `fake.current[0]`."""
    current = [0]
    runtime = types.SimpleNamespace(getDeviceCount=lambda: 2, getDevice=lambda: current[0])
    fake = types.SimpleNamespace(ndarray=_FakeArray, cuda=types.SimpleNamespace(runtime=runtime),
                                 current=current, asarray=lambda a: _FakeArray(current[0]))
    monkeypatch.setattr(backend, "_cupy", fake)
    monkeypatch.setattr(backend, "_gpu_rng", None)
    return fake


def test_array_on_gpu_0_is_cuda(fake_cupy):
    a = _FakeArray(0)
    assert backend.xp_of(a) is fake_cupy and backend.device_of(a) == "cuda"
    assert backend.to_device(a, "cuda:0") is a
    assert backend.get_xp("cuda:0") is fake_cupy


def test_array_on_another_gpu_is_refused_where_it_enters(fake_cupy):
    a = _FakeArray(1)
    with pytest.raises(ValueError, match="CuPy array is on GPU 1.*CUDA_VISIBLE_DEVICES=1"):
        backend.device_of(a)
    with pytest.raises(ValueError, match="GPU 1"):
        backend.as_array(a)                    # Tensor(a) reads it through as_array
    with pytest.raises(ValueError, match="GPU 1"):
        backend.to_device(a, "cuda")


def test_cupy_switched_to_another_gpu_is_refused_before_allocating(fake_cupy):
    fake_cupy.current[0] = 1
    for call in (lambda: backend.get_xp("cuda"), lambda: backend.to_device(np.ones(2), "cuda"),
                 lambda: backend.rng("cuda")):
        with pytest.raises(ValueError, match="current device is on GPU 1"):
            call()
    fake_cupy.current[0] = 0
    assert backend.device_of(backend.to_device(np.ones(2), "cuda")) == "cuda"


# ------------------------------------------------------------ on a real GPU
@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="CuPy with a CUDA GPU is not available")
def test_cuda_0_is_cuda_on_a_gpu():
    x = tg.ones(3, device="cuda:0", requires_grad=True)
    assert x.device == "cuda" and x.to("cuda") is x and x.to("cuda:0") is x
    y = (x.to("cpu") * 2).to("cuda:0").sum()
    y.backward()
    assert x.grad.device == "cuda" and np.array_equal(x.grad.numpy(), [2.0, 2.0, 2.0])
    with pytest.raises(ValueError, match="only one GPU"):
        x.to("cuda:1")


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="CuPy with a CUDA GPU is not available")
def test_second_gpu_array_refused():
    import cupy
    if cupy.cuda.runtime.getDeviceCount() < 2:
        pytest.skip("needs two GPUs")
    with cupy.cuda.Device(1):
        a = cupy.ones(3)
        with pytest.raises(ValueError, match="current device is on GPU 1"):
            tg.zeros(2, device="cuda")
    with pytest.raises(ValueError, match="CuPy array is on GPU 1"):
        Tensor(a)
