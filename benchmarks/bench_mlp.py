"""MLP training-step speed: tinygrad_opt vs a hand-written NumPy floor (and PyTorch CPU).

    python benchmarks/bench_mlp.py              # 1 BLAS thread
    python benchmarks/bench_mlp.py --threads 2  # the 2-thread figures

Workloads (float32, ReLU, softmax cross-entropy, mean over the batch):
  small MLP 784-128-64-10, batch 64: forward+backward, SGD step, Adam step, and the SGD
  step with the layers written `(h @ W.T + b).relu()` as a course writes them;
  large MLP 1024-1024-1024-10, batch 512: SGD step.
The NumPy floor is what an eager NumPy framework cannot beat: the same forward and the
hand-derived backward on float32 arrays, updates in place. Every row is measured
interleaved in one run; ratios are medians of per-round ratios to that floor.
The model builders here are shared with bench_memory.py.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import (compare, cupy_gpu, fmt_time, import_torch, machine_line, median,  # noqa: E402
                    parse_args, pin_threads, print_table, ratio, verdict)

if __name__ == "__main__":
    pin_threads()

import numpy as np  # noqa: E402

import tinygrad_opt as tg  # noqa: E402
from tinygrad_opt import ops  # noqa: E402

SMALL = (784, 128, 64, 10)
LARGE = (1024, 1024, 1024, 10)
LR = 0.01
BETAS, EPS = (0.9, 0.999), 1e-8


def init_params(sizes, dtype=np.float32, seed=0):
    """[W1, b1, W2, b2, ...] as host arrays, PyTorch's default Linear init, W of shape (out, in)."""
    rng = np.random.default_rng(seed)
    params = []
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
        bound = 1.0 / np.sqrt(fan_in)
        params.append(rng.uniform(-bound, bound, (fan_out, fan_in)).astype(dtype))
        params.append(rng.uniform(-bound, bound, (fan_out,)).astype(dtype))
    return params


def make_batch(sizes, batch, dtype=np.float32, seed=1):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch, sizes[0])).astype(dtype)
    y = rng.integers(0, sizes[-1], batch).astype(np.int64)
    return x, y


# ============================================================================ NumPy floor
class NumpyMLP:
    """The MLP with its backward derived by hand: the floor for an eager NumPy framework."""

    def __init__(self, params, xp=np):
        self.xp = xp
        self.params = [xp.array(p) for p in params]
        self.state = None

    def loss_and_grads(self, x, y):
        """Mean softmax cross-entropy and the gradient of every parameter (new arrays)."""
        xp = self.xp
        ps = self.params
        n_layers = len(ps) // 2
        acts = [x]
        h = x
        for i in range(n_layers):
            W, b = ps[2 * i], ps[2 * i + 1]
            h = h @ W.T
            h += b
            if i < n_layers - 1:
                xp.maximum(h, 0, out=h)        # relu in place; the mask is read off h later
            acts.append(h)
        z = acts[-1]
        n = z.shape[0]
        z -= z.max(axis=1, keepdims=True)       # log_softmax in place
        e = xp.exp(z)
        s = e.sum(axis=1, keepdims=True)
        rows = xp.arange(n)
        loss = (xp.log(s[:, 0]) - z[rows, y]).mean()
        e /= s                                  # softmax
        e[rows, y] -= 1
        e *= 1.0 / n
        g = e                                   # dL/dz
        grads = [None] * len(ps)
        for i in reversed(range(n_layers)):
            a = acts[i]
            grads[2 * i] = g.T @ a
            grads[2 * i + 1] = g.sum(axis=0)
            if i > 0:
                g = g @ ps[2 * i]
                g *= a > 0                      # relu backward
        return loss, grads

    def sgd_step(self, x, y, lr=LR):
        loss, grads = self.loss_and_grads(x, y)
        for p, g in zip(self.params, grads):
            g *= lr
            p -= g
        return loss

    def adam_step(self, x, y):
        loss, grads = self.loss_and_grads(x, y)
        if self.state is None:
            self.state = adam_state(self.xp, self.params)
        adam_update(self.xp, self.params, grads, self.state)
        return loss


def adam_state(xp, params):
    """[step, first moments, second moments] for Adam."""
    return [0, [xp.zeros_like(p) for p in params], [xp.zeros_like(p) for p in params]]


def adam_update(xp, params, grads, state, lr=LR, betas=BETAS, eps=EPS):
    """One in-place Adam update of the arrays in params (PyTorch's rule)."""
    state[0] += 1
    t = state[0]
    b1, b2 = betas
    c1 = 1 - b1 ** t
    c2 = (1 - b2 ** t) ** 0.5
    for p, g, m, v in zip(params, grads, state[1], state[2]):
        tmp = g - m                             # m <- m + (1 - b1)(g - m)
        tmp *= 1 - b1
        m += tmp
        xp.multiply(g, g, out=tmp)              # v <- b2 v + (1 - b2) g^2
        tmp *= 1 - b2
        v *= b2
        v += tmp
        xp.sqrt(v, out=tmp)                     # p <- p - lr/c1 m / (sqrt(v)/c2 + eps)
        tmp += eps * c2
        xp.divide(m, tmp, out=tmp)
        tmp *= lr * c2 / c1
        p -= tmp


# ============================================================================ tinygrad_opt
class OursMLP:
    """The MLP in tinygrad_opt: nn + optim when importable, else ops.linear and a hand update."""

    def __init__(self, params, device="cpu"):
        self.device = device
        try:
            from tinygrad_opt import nn
            from tinygrad_opt.nn import functional as F
            self.F = F
        except ImportError:
            nn = self.F = None
        n_layers = len(params) // 2
        if nn is not None:
            layers = []
            for i in range(n_layers):
                lin = nn.Linear(params[2 * i].shape[1], params[2 * i].shape[0],
                                dtype=params[2 * i].dtype, device=device)
                lin.weight.data[...] = tg.backend.to_device(params[2 * i], device)
                lin.bias.data[...] = tg.backend.to_device(params[2 * i + 1], device)
                layers.append(lin)
                if i < n_layers - 1:
                    layers.append(nn.ReLU())
            self.model = nn.Sequential(*layers)
            self.params = list(self.model.parameters())
        else:
            self.model = None
            self.params = [tg.Tensor(p, requires_grad=True, device=device) for p in params]
        self.sgd = self.adam = None
        try:
            from tinygrad_opt import optim
            self.sgd = optim.SGD(self.params, lr=LR)
            self.adam = optim.Adam(self.params, lr=LR, betas=BETAS, eps=EPS)
        except ImportError:
            self.adam_state = None

    def loss(self, x, y):
        if self.model is not None:
            return self.F.cross_entropy(self.model(x), y)
        h = x
        n_layers = len(self.params) // 2
        for i in range(n_layers):
            h = ops.linear(h, self.params[2 * i], self.params[2 * i + 1])
            if i < n_layers - 1:
                h = h.relu()
        n, c = h.shape
        xp = tg.backend.xp_of(h.data)
        onehot = xp.zeros((n, c), dtype=h.dtype)
        onehot[xp.arange(n), y.data if isinstance(y, tg.Tensor) else y] = 1.0 / n
        return -(ops.log_softmax(h) * tg.Tensor._wrap(onehot)).sum()

    def zero_grad(self):
        for p in self.params:
            p.grad = None

    def fwd_bwd(self, x, y):
        self.zero_grad()
        loss = self.loss(x, y)
        loss.backward()
        return loss

    def sgd_step(self, x, y):
        loss = self.fwd_bwd(x, y)
        if self.sgd is not None:
            self.sgd.step()
        else:
            with tg.no_grad():
                for p in self.params:
                    g = p.grad.data
                    g *= LR
                    p.data -= g
        return loss

    def adam_step(self, x, y):
        loss = self.fwd_bwd(x, y)
        if self.adam is not None:
            self.adam.step()
            return loss
        # the same in-place rule as the NumPy floor
        xp = tg.backend.xp_of(self.params[0].data)
        arrays = [p.data for p in self.params]
        if self.adam_state is None:
            self.adam_state = adam_state(xp, arrays)
        adam_update(xp, arrays, [p.grad.data for p in self.params], self.adam_state)
        return loss


class CourseMLP:
    """The MLP as a course writes it: `h = (h @ W.T + b).relu()`, F.cross_entropy, optim.SGD."""

    def __init__(self, params):
        from tinygrad_opt import optim
        from tinygrad_opt.nn import functional as F
        self.F = F
        self.params = [tg.Tensor(p.copy(), requires_grad=True) for p in params]
        self.sgd = optim.SGD(self.params, lr=LR)

    def sgd_step(self, x, y):
        self.sgd.zero_grad()
        ps, h = self.params, x
        n_layers = len(ps) // 2
        for i in range(n_layers):
            h = h @ ps[2 * i].T + ps[2 * i + 1]
            if i < n_layers - 1:
                h = h.relu()
        loss = self.F.cross_entropy(h, y)
        loss.backward()
        self.sgd.step()
        return loss


# ============================================================================ PyTorch
class TorchMLP:
    def __init__(self, torch, params, device="cpu"):
        self.torch = torch
        nn = torch.nn
        n_layers = len(params) // 2
        layers = []
        for i in range(n_layers):
            lin = nn.Linear(params[2 * i].shape[1], params[2 * i].shape[0], device=device)
            with torch.no_grad():
                lin.weight.copy_(torch.from_numpy(params[2 * i]))
                lin.bias.copy_(torch.from_numpy(params[2 * i + 1]))
            layers.append(lin)
            if i < n_layers - 1:
                layers.append(nn.ReLU())
        self.model = nn.Sequential(*layers).to(device)
        self.sgd = torch.optim.SGD(self.model.parameters(), lr=LR)
        self.adam = torch.optim.Adam(self.model.parameters(), lr=LR, betas=BETAS, eps=EPS)

    def fwd_bwd(self, x, y):
        self.sgd.zero_grad(set_to_none=True)
        loss = self.torch.nn.functional.cross_entropy(self.model(x), y)
        loss.backward()
        return loss

    def sgd_step(self, x, y):
        loss = self.fwd_bwd(x, y)
        self.sgd.step()
        return loss

    def adam_step(self, x, y):
        loss = self.fwd_bwd(x, y)
        self.adam.step()
        return loss


# ============================================================================ checks and runs
def check_agreement(params, x, y):
    """Ours and the floor compute the same loss and gradients (else the timing is meaningless)."""
    ref = NumpyMLP(params)
    ours = OursMLP(params)
    loss_ref, g_ref = ref.loss_and_grads(x.copy(), y)
    loss = ours.fwd_bwd(tg.Tensor(x), y)
    np.testing.assert_allclose(loss.item(), loss_ref, rtol=1e-4)
    for p, g in zip(ours.params, g_ref):
        np.testing.assert_allclose(p.grad.numpy(), g, rtol=1e-3, atol=1e-5)


def run_cpu(args, torch):
    rows = []
    results = {}
    rounds = args.rounds or (10 if args.quick else 60)

    params = init_params(SMALL)
    x, y = make_batch(SMALL, 64)
    check_agreement(params, x, y)
    xt = tg.Tensor(x)
    for kind, target in (("fwd_bwd", 1.2), ("sgd_step", 1.15), ("adam_step", 1.15)):
        ref, ours = NumpyMLP(params), OursMLP(params)
        cands = {"numpy": lambda ref=ref, kind=kind: getattr(ref, kind if kind != "fwd_bwd"
                                                            else "loss_and_grads")(x, y),
                 "ours": lambda ours=ours, kind=kind: getattr(ours, kind)(xt, y)}
        if torch is not None:
            tm = TorchMLP(torch, params)
            tx, ty = torch.from_numpy(x), torch.from_numpy(y)
            cands["torch"] = lambda tm=tm, kind=kind: getattr(tm, kind)(tx, ty)
        times = compare(cands, rounds=rounds, inner=20)
        rows.append(_row(f"small MLP {kind.replace('_', ' ')} (b=64)", times, target))
        results[f"small_{kind}"] = times
    ref, course = NumpyMLP(params), CourseMLP(params)
    times = compare({"numpy": lambda: ref.sgd_step(x, y), "ours": lambda: course.sgd_step(xt, y)},
                    rounds=rounds, inner=20)
    rows.append(_row("small MLP sgd step, h @ W.T + b layers (b=64)", times, 1.15))
    results["small_course_sgd_step"] = times

    params = init_params(LARGE)
    x, y = make_batch(LARGE, 512)
    xt = tg.Tensor(x)
    ref, ours = NumpyMLP(params), OursMLP(params)
    cands = {"numpy": lambda: ref.sgd_step(x, y), "ours": lambda: ours.sgd_step(xt, y)}
    if torch is not None:
        tm = TorchMLP(torch, params)
        tx, ty = torch.from_numpy(x), torch.from_numpy(y)
        cands["torch"] = lambda: tm.sgd_step(tx, ty)
    times = compare(cands, rounds=max(5, rounds // 3), inner=1, warmup=2)
    rows.append(_row("large MLP sgd step (b=512)", times, 1.03))
    results["large_sgd_step"] = times
    print_table(f"MLP steps, CPU float32 [{machine_line()}]", rows)
    return results


def _row(name, times, target):
    t_np = median(times["numpy"])
    r = ratio(times, "ours", "numpy")
    torch_t = fmt_time(median(times["torch"])) if "torch" in times else "-"
    torch_r = f"{ratio(times, 'torch', 'numpy'):.2f}x" if "torch" in times else "-"
    return (name, fmt_time(median(times["ours"])), torch_t, fmt_time(t_np), f"{r:.3f}x", torch_r,
            f"<= {target} {verdict(r, target)}")


def run_gpu(args, torch):
    """The large-MLP step on the GPU next to the CPU (and PyTorch CUDA when it is there)."""
    cp = cupy_gpu()
    if cp is None:
        print("\nGPU: CuPy with a CUDA GPU not available; skipped")
        return
    params = init_params(LARGE)
    x, y = make_batch(LARGE, 512)
    sync = cp.cuda.get_current_stream().synchronize
    ref = NumpyMLP([cp.asarray(p) for p in params], xp=cp)
    ours = OursMLP(params, device="cuda")
    xg, yg = cp.asarray(x), cp.asarray(y)
    xt = tg.Tensor(xg)
    cands = {"numpy": lambda: ref.sgd_step(xg, yg), "ours": lambda: ours.sgd_step(xt, yg)}
    if torch is not None and torch.cuda.is_available():
        tm = TorchMLP(torch, params, device="cuda")
        tx, ty = torch.from_numpy(x).cuda(), torch.from_numpy(y).cuda()
        cands["torch"] = lambda: tm.sgd_step(tx, ty)
    rounds = args.rounds or (5 if args.quick else 30)
    times = compare(cands, rounds=rounds, inner=10, sync=sync)
    rows = [_row("large MLP sgd step (b=512), cuda", times, 1.03)]
    cpu_ref, cpu_ours = NumpyMLP(params), OursMLP(params)
    cpu_x = tg.Tensor(x)
    cpu = compare({"numpy": lambda: cpu_ref.sgd_step(x, y), "ours": lambda: cpu_ours.sgd_step(cpu_x, y)},
                  rounds=3 if args.quick else 7, inner=1, warmup=1)
    rows.append(_row("same step on the CPU", cpu, 1.03))
    torch_ratio = ratio(times, "ours", "torch") if "torch" in times else None
    speedup = median(cpu["ours"]) / median(times["ours"])
    # the small MLP on the GPU: every step is launch-bound, so this is a count of launches
    params = init_params(SMALL)
    x, y = make_batch(SMALL, 64)
    xg, yg = cp.asarray(x), cp.asarray(y)
    xt = tg.Tensor(xg)
    for kind in ("sgd_step", "adam_step"):
        ref = NumpyMLP([cp.asarray(p) for p in params], xp=cp)
        ours = OursMLP(params, device="cuda")
        cands = {"numpy": lambda ref=ref, kind=kind: getattr(ref, kind)(xg, yg),
                 "ours": lambda ours=ours, kind=kind: getattr(ours, kind)(xt, yg)}
        if torch is not None and torch.cuda.is_available():
            tm = TorchMLP(torch, params, device="cuda")
            tx, ty = torch.from_numpy(x).cuda(), torch.from_numpy(y).cuda()
            cands["torch"] = lambda tm=tm, kind=kind: getattr(tm, kind)(tx, ty)
        small = compare(cands, rounds=rounds, inner=10, sync=sync)
        rows.append(_row(f"small MLP {kind.replace('_', ' ')} (b=64), cuda", small, 1.15))
    print_table("MLP steps on the GPU (floor: the same hand-written code on CuPy)", rows)
    if torch_ratio is not None:
        print(f"large step, ours / PyTorch CUDA: {torch_ratio:.2f}x (goal <= 1.3x); "
              f"GPU speed-up over our CPU step: {speedup:.0f}x")


def main():
    args = parse_args(__doc__.splitlines()[0])
    torch = import_torch(args.threads, args.no_torch)
    if not args.gpu_only:
        run_cpu(args, torch)
    run_gpu(args, torch)


if __name__ == "__main__":
    main()
