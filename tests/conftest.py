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


# Hypothesis profiles (tests/test_properties.py): few examples and no deadline in CI, so the
# run stays bounded and timing noise on a shared machine never fails a test; "long" for a
# thorough hunt: TINYGRAD_OPT_HYPOTHESIS_PROFILE=long python -m pytest tests/test_properties.py
import os  # noqa: E402

from hypothesis import HealthCheck, settings  # noqa: E402

settings.register_profile("ci", max_examples=10, deadline=None, derandomize=True, database=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.register_profile("long", max_examples=1000, deadline=None, database=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.load_profile(os.environ.get("TINYGRAD_OPT_HYPOTHESIS_PROFILE", "ci"))


def run_cli(capsys, *argv):
    """(exit status, stdout, stderr) of the command line's main(argv), whether it returns or exits."""
    from tinygrad_opt import cli
    try:
        code = cli.main(list(argv))
    except SystemExit as e:
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err
