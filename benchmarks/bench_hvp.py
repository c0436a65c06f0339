"""Hessian-vector products of the small-MLP loss, as multiples of one gradient.

    python benchmarks/bench_hvp.py
    python benchmarks/bench_hvp.py --threads 2

MLP 784-128-64-10, ReLU, softmax cross-entropy, batch 64, float64; the parameters
are the six weight and bias arrays. Rows (each timed against one gradient, forward
included, of the same framework in the same run):
  fresh:  autograd.hvp(f, params, v): forward, grad with create_graph, grad of g.v;
  reused: g = grad(f, params, create_graph=True) once, then per product the gradient
          of sum_i <g_i, v_i> as grad(g, params, grad_outputs=v, retain_graph=True) (each
          g_i seeded with v_i, no dot product recorded), as NewtonCG and Lanczos do; the
          same call in PyTorch.
  fresh, h @ W.T + b: the same hvp with the layers written the way a course writes them;
  forward-over-reverse: hvp(..., mode="forward"), the tangent of the backward;
  ggnvp: autograd.ggnvp(model, cross_entropy, params, v), J^T H_L J v;
  jvp of the loss: autograd.jvp(f, params, v), timed against one plain forward of f.
The NumPy floor is the hand-written R-op (forward-over-reverse, Pearlmutter 1994): one
forward, one tangent forward, one backward and its tangent, against its own hand-written
gradient; "reused" there is the tangent passes alone with the forward state kept.
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
from tinygrad_opt import autograd, ops  # noqa: E402

from bench_mlp import SMALL, init_params, make_batch  # noqa: E402

try:
    from tinygrad_opt.nn import functional as F
except ImportError:                  # the benchmark works before nn exists
    F = None


# ============================================================================ NumPy floor
class NumpyRop:
    """Loss, gradient and Hessian-vector product of the MLP, derived by hand."""

    def __init__(self, x, y, xp=np):
        self.xp, self.x, self.y = xp, x, y
        self.n = x.shape[0]
        self.rows = xp.arange(self.n)

    def forward(self, ps):
        xp = self.xp
        acts, h = [self.x], self.x
        L = len(ps) // 2
        for i in range(L):
            h = h @ ps[2 * i].T
            h += ps[2 * i + 1]
            if i < L - 1:
                h *= h > 0
            acts.append(h)
        z = acts[-1]
        z = z - z.max(axis=1, keepdims=True)
        p = xp.exp(z)
        s = p.sum(axis=1, keepdims=True)
        p /= s
        loss = (xp.log(s[:, 0]) - z[self.rows, self.y]).mean()
        return loss, acts, p

    def grad(self, ps):
        loss, acts, p = self.forward(ps)
        return loss, self._backward(ps, acts, p)

    def _backward(self, ps, acts, p):
        d = p.copy()
        d[self.rows, self.y] -= 1
        d *= 1.0 / self.n
        L = len(ps) // 2
        grads = [None] * len(ps)
        for i in reversed(range(L)):
            grads[2 * i] = d.T @ acts[i]
            grads[2 * i + 1] = d.sum(axis=0)
            if i > 0:
                d = d @ ps[2 * i]
                d *= acts[i] > 0
        return grads

    def hvp(self, ps, vs, state=None):
        """H v by the R-op; state = (acts, p) from a kept forward pass, or None to run one."""
        acts, p = state if state is not None else self.forward(ps)[1:]
        L = len(ps) // 2
        # tangent forward: R(a_i) = (R(a_{i-1}) W^T + a_{i-1} V^T + v_b) * [a_i > 0]
        ra = [None]
        r = None
        for i in range(L):
            rz = acts[i] @ vs[2 * i].T
            rz += vs[2 * i + 1]
            if r is not None:
                rz += r @ ps[2 * i].T
            if i < L - 1:
                rz *= acts[i + 1] > 0
            ra.append(rz)
            r = rz
        # tangent of d = (softmax - onehot) / n: R(d) = p * (R(z) - <p, R(z)>) / n
        rz = ra[-1]
        rd = p * (rz - (p * rz).sum(axis=1, keepdims=True))
        rd *= 1.0 / self.n
        d = p.copy()
        d[self.rows, self.y] -= 1
        d *= 1.0 / self.n
        hv = [None] * len(ps)
        for i in reversed(range(L)):
            hW = rd.T @ acts[i]
            if ra[i] is not None:
                hW += d.T @ ra[i]
            hv[2 * i] = hW
            hv[2 * i + 1] = rd.sum(axis=0)
            if i > 0:
                mask = acts[i] > 0
                rd = rd @ ps[2 * i]
                rd += d @ vs[2 * i]
                rd *= mask
                d = d @ ps[2 * i]
                d *= mask
        return hv


# ============================================================================ tinygrad_opt
def ours_loss_fn(x, y):
    """f(*params) -> scalar loss of the MLP on the fixed batch (x, y)."""
    xt = tg.Tensor._wrap(x)

    def f(*ps):
        h = xt
        L = len(ps) // 2
        for i in range(L):
            h = ops.linear(h, ps[2 * i], ps[2 * i + 1])
            if i < L - 1:
                h = h.relu()
        if F is not None:
            return F.cross_entropy(h, y)
        n, c = h.shape
        onehot = np.zeros((n, c), dtype=h.dtype)
        onehot[np.arange(n), y] = 1.0 / n
        return -(ops.log_softmax(h) * tg.Tensor._wrap(onehot)).sum()
    return f


def ours_model_fn(x, spelling="linear"):
    """model(*params) -> logits, with F.linear-style layers or the h @ W.T + b spelling."""
    xt = tg.Tensor._wrap(x)

    def model(*ps):
        h = xt
        L = len(ps) // 2
        for i in range(L):
            W, b = ps[2 * i], ps[2 * i + 1]
            h = ops.linear(h, W, b) if spelling == "linear" else h @ W.T + b
            if i < L - 1:
                h = h.relu()
        return h
    return model


def ours_candidates(params, vs, x, y):
    f = ours_loss_fn(x, y)
    ps = tuple(tg.Tensor(p, requires_grad=True) for p in params)
    g_kept = autograd.grad(f(*ps), ps, create_graph=True)

    def grad():
        return autograd.grad(f(*ps), ps)

    def hvp_fresh():
        return autograd.hvp(f, ps, vs)[1]

    def hvp_reused():
        return autograd.grad(g_kept, ps, grad_outputs=vs, retain_graph=True)
    return grad, hvp_fresh, hvp_reused


def ours_forward_candidates(params, vs, x, y):
    """The second-round rows: the other spelling, forward mode, ggnvp, jvp."""
    ps = tuple(tg.Tensor(p, requires_grad=True) for p in params)
    mm = ours_model_fn(x, "matmul")
    lin = ours_model_fn(x, "linear")
    f_mm = lambda *p: F.cross_entropy(mm(*p), y)        # noqa: E731
    f_lin = lambda *p: F.cross_entropy(lin(*p), y)      # noqa: E731
    loss = lambda o: F.cross_entropy(o, y)              # noqa: E731
    detached = tuple(p.detach() for p in ps)

    def plain_forward():
        with tg.no_grad():
            return f_lin(*detached)
    return {"grad_mm": lambda: autograd.grad(f_mm(*ps), ps),
            "fresh_mm": lambda: autograd.hvp(f_mm, ps, vs)[1],
            "forward": lambda: autograd.hvp(f_lin, ps, vs, mode="forward")[1],
            "ggnvp": lambda: autograd.ggnvp(lin, loss, ps, vs)[1],
            "loss": plain_forward,
            "jvp": lambda: autograd.jvp(f_lin, detached, vs)[1]}      # as the forward: no graph


# ============================================================================ PyTorch
def torch_candidates(torch, params, vs, x, y):
    tx, ty = torch.from_numpy(x), torch.from_numpy(y)
    ps = [torch.tensor(p, requires_grad=True) for p in params]
    tv = [torch.from_numpy(v) for v in vs]

    def f():
        h = tx
        L = len(ps) // 2
        for i in range(L):
            h = torch.nn.functional.linear(h, ps[2 * i], ps[2 * i + 1])
            if i < L - 1:
                h = torch.relu(h)
        return torch.nn.functional.cross_entropy(h, ty)

    g_kept = torch.autograd.grad(f(), ps, create_graph=True)

    def grad():
        return torch.autograd.grad(f(), ps)

    def hvp_fresh():
        g = torch.autograd.grad(f(), ps, create_graph=True)
        return torch.autograd.grad(g, ps, grad_outputs=tv)

    def hvp_reused():
        return torch.autograd.grad(g_kept, ps, grad_outputs=tv, retain_graph=True)
    return grad, hvp_fresh, hvp_reused


# ============================================================================ runs
def run(args, torch, xp=np, device="cpu"):
    params = init_params(SMALL, dtype=np.float64)
    x, y = make_batch(SMALL, 64, dtype=np.float64)
    rng = np.random.default_rng(2)
    vs = [rng.standard_normal(p.shape) for p in params]
    ref = NumpyRop(x, y)
    _, ref_g = ref.grad(params)
    ref_hv = ref.hvp(params, vs)

    grad, hvp_fresh, hvp_reused = ours_candidates(params, vs, x, y)
    extra = ours_forward_candidates(params, vs, x, y)
    for a, b in zip(grad(), ref_g):
        np.testing.assert_allclose(a.numpy(), b, rtol=1e-7, atol=1e-10)
    for hv in (hvp_fresh(), hvp_reused(), extra["fresh_mm"](), extra["forward"]()):
        for a, b in zip(hv, ref_hv):
            np.testing.assert_allclose(a.numpy(), b, rtol=1e-6, atol=1e-9)

    kept = ref.forward(params)[1:]
    cands = {"numpy_grad": lambda: ref.grad(params),
             "numpy_fresh": lambda: ref.hvp(params, vs),
             "numpy_reused": lambda: ref.hvp(params, vs, kept),
             "ours_grad": grad, "ours_fresh": hvp_fresh, "ours_reused": hvp_reused}
    cands.update({f"ours_{k}": fn for k, fn in extra.items()})
    if torch is not None:
        tg_, tf, tr = torch_candidates(torch, params, vs, x, y)
        cands.update(torch_grad=tg_, torch_fresh=tf, torch_reused=tr)
    rounds = args.rounds or (10 if args.quick else 60)
    times = compare(cands, rounds=rounds, inner=10)

    rows = [("gradient (forward + backward)", "grad", None)] + \
        [("hvp fresh point", "fresh", 2.0), ("hvp reused gradient graph", "reused", 1.25)]
    out = []
    for label, key, target in rows:
        def cell(fw):
            if f"{fw}_{key}" not in times:
                return "-"
            t = median(times[f"{fw}_{key}"])
            if key == "grad":
                return fmt_time(t)
            return f"{fmt_time(t)} = {ratio(times, f'{fw}_{key}', f'{fw}_grad'):.2f} grad"
        r = ratio(times, f"ours_{key}", "ours_grad") if key != "grad" else None
        out.append((label, cell("ours"), cell("torch"), cell("numpy"),
                    f"{ratio(times, f'ours_{key}', f'numpy_{key}'):.2f}x",
                    f"<= {target} grad {verdict(r, target)}" if target else ""))
    print_table(f"small MLP Hessian-vector products, float64 [{machine_line()}]", out,
                header=("workload", "ours", "PyTorch", "NumPy R-op", "ours/NumPy",
                        "target (ours, in gradients)"))
    second = [("hvp fresh, F.linear layers", "fresh", "grad", 1.7),
              ("hvp fresh, h @ W.T + b layers", "fresh_mm", "grad_mm", 1.7),
              ("hvp forward-over-reverse", "forward", "grad", None),
              ("hvp reused gradient graph", "reused", "grad", 1.25),
              ("ggnvp (cross-entropy, closed-form H_L)", "ggnvp", "grad", 2.0),
              ("jvp of the loss, in plain forwards", "jvp", "loss", 2.5)]
    out = []
    for label, key, base, target in second:
        r = ratio(times, f"ours_{key}", f"ours_{base}")
        out.append((label, fmt_time(median(times[f"ours_{key}"])), f"{r:.2f}",
                    f"<= {target} {verdict(r, target)}" if target else "(for reference)"))
    spread = ratio(times, "ours_fresh_mm", "ours_fresh")
    out.append(("spelling gap: fresh h @ W.T / fresh F.linear", "", f"{spread:.2f}",
                f"within 10% {verdict(abs(spread - 1) + 1, 1.10)}"))
    print_table("forward mode and curvature products (ours, ratio to the baseline in the same run)",
                out, header=("workload", "time", "ratio", "target"))
    return times


def main():
    args = parse_args(__doc__.splitlines()[0])
    torch = import_torch(args.threads, args.no_torch)
    if not args.gpu_only:
        run(args, torch)
    if cupy_gpu() is None:
        print("\nGPU: CuPy with a CUDA GPU not available; skipped")
    else:
        run_gpu(args)


def run_gpu(args):
    """hvp and gradient on the GPU next to the same on the CPU."""
    cp = cupy_gpu()
    params = init_params(SMALL, dtype=np.float64)
    x, y = make_batch(SMALL, 64, dtype=np.float64)
    rng = np.random.default_rng(2)
    vs = [rng.standard_normal(p.shape) for p in params]
    sync = cp.cuda.get_current_stream().synchronize
    cands = {}
    for dev, conv in (("cpu", lambda a: a), ("cuda", cp.asarray)):
        f = ours_loss_fn(conv(x), conv(y))
        ps = tuple(tg.Tensor(conv(p), requires_grad=True) for p in params)
        vd = [conv(v) for v in vs]
        cands[f"{dev}_grad"] = lambda f=f, ps=ps: autograd.grad(f(*ps), ps)
        cands[f"{dev}_hvp"] = lambda f=f, ps=ps, vd=vd: autograd.hvp(f, ps, vd)
    times = compare(cands, rounds=args.rounds or (5 if args.quick else 30), inner=10, sync=sync)
    rows = [(k, fmt_time(median(v))) for k, v in times.items()]
    print_table("small MLP gradient and hvp, CPU vs GPU (float64)", rows, header=("run", "time"))


if __name__ == "__main__":
    main()
