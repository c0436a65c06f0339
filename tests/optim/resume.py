"""Shared checks for the closure optimizers and wrappers: a checkpoint resumes bit for bit, and
a CuPy run follows the NumPy one."""
import numpy as np

import tinygrad_opt as tg
from tinygrad_opt import backend, nn
from tinygrad_opt.nn import functional as F
from tinygrad_opt.tensor import Tensor


def mlp_problem(seed=0, device="cpu", dtype=np.float64, loss="cross_entropy"):
    """A 3-6-3 tanh MLP and a closure of its loss on 12 fixed rows."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((12, 3)).astype(dtype)
    tg.manual_seed(seed)
    model = nn.Sequential(nn.Linear(3, 6), nn.Tanh(), nn.Linear(6, 3))
    for p in model.parameters():
        p.data = backend.as_array(p.numpy().astype(dtype), device=device)
    Xt = Tensor(X, device=device)
    if loss == "cross_entropy":
        y = backend.as_array(rng.integers(0, 3, 12), device=device)
        return model, lambda: F.cross_entropy(model(Xt), y)
    T = Tensor(rng.standard_normal((12, 3)).astype(dtype), device=device)
    return model, lambda: F.mse_loss(model(Xt), T)


def take_step(opt, closure):
    """One step the way the optimizer wants it: step(closure), or backward then step()."""
    if getattr(opt, "needs_closure", False):
        return opt.step(closure)
    opt.zero_grad()
    loss = closure()
    loss.backward()
    opt.step()
    return loss


def trajectory(make_opt, steps, device="cpu", dtype=np.float64, loss="cross_entropy"):
    """Host copies of the parameters after each step, on a fresh problem with seed 0."""
    model, closure = mlp_problem(device=device, dtype=dtype, loss=loss)
    opt = make_opt(model.parameters())
    out = []
    for _ in range(steps):
        take_step(opt, closure)
        out.append([p.numpy() for p in model.parameters()])
    return out


def assert_resume_bit_identical(make_opt, before=3, after=4, loss="cross_entropy"):
    """Steps after load_state_dict into a fresh optimizer equal those of the run that saved."""
    model, closure = mlp_problem(loss=loss)
    opt = make_opt(model.parameters())
    for _ in range(before):
        take_step(opt, closure)
    sd = opt.state_dict()
    saved = [p.numpy() for p in model.parameters()]
    rng_state = backend.get_rng_state()
    first = []
    for _ in range(after):
        take_step(opt, closure)
        first.append([p.numpy() for p in model.parameters()])

    model2, closure2 = mlp_problem(seed=0, loss=loss)
    for p, w in zip(model2.parameters(), saved):
        p.data[...] = w
    opt2 = make_opt(model2.parameters())
    opt2.load_state_dict(sd)
    backend.set_rng_state(rng_state)
    for k in range(after):
        take_step(opt2, closure2)
        for a, b in zip(first[k], model2.parameters()):
            np.testing.assert_array_equal(b.numpy(), a, err_msg=f"step {before + k + 1}")
    assert not np.array_equal(first[-1][0], saved[0])          # it did move
