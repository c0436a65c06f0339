"""On the GPU the first-order updates run as fused kernels; they must follow the CPU rule."""
import numpy as np
import pytest

from tinygrad_opt import optim
from tinygrad_opt.tensor import Tensor

from conftest import CUDA

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not CUDA, reason="CuPy with a CUDA GPU is not available")]

CONFIGS = [
    ("sgd", optim.SGD, dict(lr=0.05)),
    ("momentum", optim.SGD, dict(lr=0.05, momentum=0.9)),
    ("dampening+wd", optim.SGD, dict(lr=0.05, momentum=0.8, dampening=0.3, weight_decay=0.01)),
    ("nesterov", optim.SGD, dict(lr=0.05, momentum=0.9, nesterov=True)),
    ("adam", optim.Adam, dict(lr=0.05)),
    ("adam+wd", optim.Adam, dict(lr=0.05, weight_decay=0.1)),
    ("amsgrad", optim.Adam, dict(lr=0.05, amsgrad=True)),
    ("adamw", optim.AdamW, dict(lr=0.05, weight_decay=0.1)),
    ("adagrad", optim.Adagrad, dict(lr=0.05, lr_decay=0.1, weight_decay=0.01)),
    ("rmsprop", optim.RMSprop, dict(lr=0.01)),
    ("rmsprop centered", optim.RMSprop, dict(lr=0.01, centered=True)),
    ("rmsprop momentum", optim.RMSprop, dict(lr=0.01, momentum=0.9, weight_decay=0.01)),
    ("rmsprop centered momentum", optim.RMSprop, dict(lr=0.01, centered=True, momentum=0.9)),
]


def _trajectory(cls, kwargs, device, dtype, steps=6):
    """Parameters after each step on a smooth non-quadratic whose gradient changes every step."""
    rng = np.random.default_rng(0)
    w0, target = rng.standard_normal((3, 4)), rng.standard_normal((3, 4))
    w = Tensor(w0.astype(dtype), requires_grad=True, device=device)
    t = Tensor(target.astype(dtype), device=device)
    opt = cls([w], **kwargs)
    out = []
    for _ in range(steps):
        opt.zero_grad()
        (((w - t) ** 2).sum() + 0.1 * (w ** 4).sum()).backward()
        opt.step()
        out.append(w.numpy().copy())
    return out


@pytest.mark.parametrize("name,cls,kwargs", CONFIGS, ids=[c[0] for c in CONFIGS])
@pytest.mark.parametrize("dtype,tol", [(np.float64, 1e-12), (np.float32, 2e-5)])
def test_gpu_update_follows_the_cpu_rule(name, cls, kwargs, dtype, tol):
    cpu = _trajectory(cls, kwargs, "cpu", dtype)
    gpu = _trajectory(cls, kwargs, "cuda", dtype)
    assert np.isfinite(cpu[-1]).all() and not np.allclose(cpu[0], cpu[-1])   # they move, stay finite
    for step, (a, b) in enumerate(zip(cpu, gpu)):
        assert b.dtype == dtype
        np.testing.assert_allclose(b, a, rtol=tol, atol=tol, err_msg=f"{name}, step {step + 1}")


def test_gpu_state_dict_round_trip_continues_exactly():
    """Momentum state saved from a GPU run and loaded into a fresh optimizer continues the run."""
    def make():
        w = Tensor(np.linspace(-1, 1, 6), requires_grad=True, device="cuda")
        return w, optim.SGD([w], lr=0.1, momentum=0.9)

    def step(w, opt):
        opt.zero_grad()
        ((w ** 2) ** 2).sum().backward()
        opt.step()

    w, opt = make()
    for _ in range(3):
        step(w, opt)
    w2, opt2 = make()
    w2.data[...] = w.data
    opt2.load_state_dict(opt.state_dict())
    step(w, opt)
    step(w2, opt2)
    np.testing.assert_array_equal(w2.numpy(), w.numpy())
