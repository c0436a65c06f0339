"""Lion against its formula worked by hand, optax's rule coordinate by coordinate, checkpoints."""
import numpy as np
import pytest

from tinygrad_opt import Tensor
from tinygrad_opt.optim import Lion

from resume import assert_resume_bit_identical, trajectory
from conftest import CUDA


def run(opt_kwargs, x0, a, steps):
    x = Tensor(np.array(x0, dtype=np.float64), requires_grad=True)
    at = Tensor(np.array(a, dtype=np.float64))
    opt = Lion([x], **opt_kwargs)
    out = []
    for _ in range(steps):
        opt.zero_grad()
        (0.5 * at * x * x).sum().backward()
        opt.step()
        out.append(x.numpy())
    return np.array(out), opt


def test_lion_with_decay_by_hand():
    # f = x^2/2, x0 = 1, lr = 0.1, wd = 0.5, b1 = 0.9, b2 = 0.99; every c > 0 so sign(c) = 1:
    # x1 = 1 - 0.1*(1 + 0.5) = 0.85, m1 = 0.01; x2 = 0.85 - 0.1*(1 + 0.425) = 0.7075,
    # m2 = 0.99*0.01 + 0.01*0.85 = 0.0184; x3 = 0.7075 - 0.1*(1 + 0.35375) = 0.572125
    traj, opt = run(dict(lr=0.1, weight_decay=0.5), [1.0], [1.0], 3)
    np.testing.assert_allclose(traj[:, 0], [0.85, 0.7075, 0.572125], rtol=1e-14)
    state = next(iter(opt.state.values()))
    np.testing.assert_allclose(state["exp_avg"], [0.99 * 0.0184 + 0.01 * 0.7075], rtol=1e-14)
    assert state["step"] == 3


def test_lion_sign_of_the_interpolation_not_of_the_gradient():
    # x0 = 0.05 and lr = 0.1 overshoot: x1 = -0.05, m1 = 0.01*0.05 = 5e-4.
    # step 2: g = -0.05, c = 0.9*5e-4 - 0.1*0.05 < 0, x2 = 0.05; m2 = 0.99*5e-4 - 0.01*0.05 = -5e-6
    # step 3: g = 0.05, c = 0.9*(-5e-6) + 0.1*0.05 > 0, x3 = -0.05
    traj, _ = run(dict(lr=0.1, betas=(0.9, 0.99)), [0.05], [1.0], 3)
    np.testing.assert_allclose(traj[:, 0], [-0.05, 0.05, -0.05], rtol=1e-14)
    # momentum against the gradient: m large and negative, g small and positive
    x = Tensor(np.array([0.3]), requires_grad=True)
    opt = Lion([x], lr=0.1, betas=(0.9, 0.99))
    opt.state[x] = {"step": 5, "exp_avg": np.array([-1.0])}
    x.grad = Tensor(np.array([0.3]))
    opt.step()      # c = -0.9 + 0.03 < 0: x moves UP although g > 0
    np.testing.assert_allclose(x.numpy(), [0.4], rtol=1e-14)
    np.testing.assert_allclose(opt.state[x]["exp_avg"], [-0.99 + 0.003], rtol=1e-14)


def reference(x0, a, lr, b1, b2, wd, steps):
    """optax.lion written out per coordinate in Python floats."""
    xs, ms, out = list(x0), [0.0] * len(x0), []
    for _ in range(steps):
        for i, (x, m) in enumerate(zip(xs, ms)):
            g = a[i] * x
            c = b1 * m + (1 - b1) * g
            s = (c > 0) - (c < 0)
            xs[i] = x - lr * (s + wd * x)
            ms[i] = b2 * m + (1 - b2) * g
        out.append(list(xs))
    return np.array(out)


@pytest.mark.parametrize("wd", [0.0, 0.3])
def test_lion_matches_optax_rule(wd):
    x0, a = [1.0, -2.0, 0.5, 0.04], [1.0, 4.0, 0.25, 3.0]
    traj, _ = run(dict(lr=0.07, betas=(0.8, 0.95), weight_decay=wd), x0, a, 8)
    np.testing.assert_allclose(traj, reference(x0, a, 0.07, 0.8, 0.95, wd, 8), rtol=1e-12,
                               atol=1e-15)


def test_lion_every_coordinate_moves_by_lr_without_decay():
    traj = trajectory(lambda p: Lion(p, lr=0.01), 2)
    from resume import mlp_problem
    model, _ = mlp_problem()
    for w0, w1 in zip([p.numpy() for p in model.parameters()], traj[0]):
        d = np.abs(w1 - w0)
        assert np.all((np.isclose(d, 0.01, rtol=1e-9)) | (d == 0))


def test_lion_float32_stays_float32():
    x = Tensor(np.array([1.0, -1.0], dtype=np.float32), requires_grad=True)
    opt = Lion([x], lr=0.1, weight_decay=0.1)
    (x * x).sum().backward()
    opt.step()
    assert x.data.dtype == np.float32 and opt.state[x]["exp_avg"].dtype == np.float32


def test_lion_resume_is_bit_identical():
    assert_resume_bit_identical(lambda p: Lion(p, lr=0.01, weight_decay=0.1))


@pytest.mark.parametrize("kwargs,match", [(dict(lr=0.0), "learning rate"),
                                          (dict(lr=0.1, betas=(1.0, 0.9)), "beta"),
                                          (dict(lr=0.1, weight_decay=-1), "weight_decay")])
def test_lion_rejects_bad_hyperparameters(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Lion([Tensor(np.zeros(2), requires_grad=True)], **kwargs)


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="CuPy with a CUDA GPU is not available")
def test_lion_on_gpu_follows_the_cpu_rule(monkeypatch):
    make = lambda p: Lion(p, lr=0.01, weight_decay=0.1)     # noqa: E731
    for a, b in zip(trajectory(make, 4), trajectory(make, 4, device="cuda")):
        for x, y in zip(a, b):
            np.testing.assert_allclose(y, x, rtol=1e-12, atol=1e-12)
    from test_no_host_transfer import no_host_transfers
    from resume import mlp_problem, take_step
    model, closure = mlp_problem(device="cuda")
    opt = Lion(model.parameters(), lr=0.01, weight_decay=0.1)
    take_step(opt, closure)
    with no_host_transfers(monkeypatch):
        take_step(opt, closure)
