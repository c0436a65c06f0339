"""Shared fixtures: the device fixture (cpu always, cuda when CuPy and a GPU are present), seeds."""
import numpy as np
import pytest

import tinygrad_opt as tg


def _cuda_available():
    try:
        import cupy
        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:
        return False


CUDA = _cuda_available()


@pytest.fixture(params=["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
def device(request):
    """Run a test once per device; 'cuda' is skipped without CuPy and a GPU."""
    if request.param == "cuda" and not CUDA:
        pytest.skip("CuPy with a CUDA GPU is not available")
    return request.param


@pytest.fixture(autouse=True)
def _seed():
    tg.manual_seed(0)
    np.random.seed(0)
    yield
