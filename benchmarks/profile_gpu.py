"""Where a GPU step's time goes: kernels launched, their device time, and the host's share.

    python benchmarks/profile_gpu.py            # large MLP SGD step: ours, CuPy floor, PyTorch
    python benchmarks/profile_gpu.py --host     # plus our host-side profile (cProfile)

On a GPU the large-MLP step is mostly launch-bound: the device finishes each kernel before
the host has issued the next. This lists, per candidate, the kernels one step launches
(read with PyTorch's CUDA profiler, which sees CuPy's kernels too), their summed device
time, and the wall time per step with and without waiting for the device. Needs CuPy and a
GPU; the kernel list also needs PyTorch (the timings do not).
"""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_mlp import LARGE, NumpyMLP, OursMLP, TorchMLP, init_params, make_batch  # noqa: E402
from common import cupy_gpu, import_torch, median, parse_args  # noqa: E402

import tinygrad_opt as tg  # noqa: E402


def kernels(torch, step, sync, steps=5):
    """[(kernel name, launches per step, device us per step)] and the totals, from the profiler."""
    from torch.profiler import ProfilerActivity, profile
    step()
    sync()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(steps):
            step()
        sync()
    rows = []
    for e in prof.key_averages():
        t = getattr(e, "device_time_total", None)
        if t is None:
            t = e.cuda_time_total
        if e.count and t:
            rows.append((e.key, e.count / steps, t / steps))
    rows.sort(key=lambda r: -r[2])
    return rows


def wall(step, sync, n=50):
    """(seconds per step with the device waited for every step, host seconds per step to issue)."""
    for _ in range(3):
        step()
    sync()
    waited, issued = [], []
    for _ in range(n):
        t0 = time.perf_counter()
        step()
        t1 = time.perf_counter()
        sync()
        waited.append(time.perf_counter() - t0)
        issued.append(t1 - t0)
    return median(waited), median(issued)


def main():
    args = parse_args(__doc__.splitlines()[0],
                      extra=lambda p: p.add_argument("--host", action="store_true",
                                                     help="also print our host-side cProfile"))
    cp = cupy_gpu()
    if cp is None:
        print("CuPy with a CUDA GPU not available")
        return
    torch = import_torch(args.threads, args.no_torch)
    params = init_params(LARGE)
    x, y = make_batch(LARGE, 512)
    xg, yg = cp.asarray(x), cp.asarray(y)
    ref = NumpyMLP([cp.asarray(p) for p in params], xp=cp)
    ours = OursMLP(params, device="cuda")
    xt = tg.Tensor(xg)
    cands = {"numpy": (lambda: ref.sgd_step(xg, yg), cp.cuda.get_current_stream().synchronize),
             "ours": (lambda: ours.sgd_step(xt, yg), cp.cuda.get_current_stream().synchronize)}
    if torch is not None and torch.cuda.is_available():
        tm = TorchMLP(torch, params, device="cuda")
        tx, ty = torch.from_numpy(x).cuda(), torch.from_numpy(y).cuda()
        cands["torch"] = (lambda: tm.sgd_step(tx, ty), torch.cuda.synchronize)
    for name, (step, sync) in cands.items():
        w, h = wall(step, sync)
        line = f"\n== {name}: {w * 1e6:.0f} us per step waited, {h * 1e6:.0f} us to issue"
        if torch is not None and torch.cuda.is_available():
            rows = kernels(torch, step, sync)
            n = sum(r[1] for r in rows)
            dev = sum(r[2] for r in rows)
            line += f"; {n:.0f} kernels, {dev:.0f} us of device time per step"
            print(line)
            for key, count, t in rows[:25]:
                print(f"  {count:4.0f} x {t:8.1f} us  {key[:90]}")
        else:
            print(line)
    if args.host:
        import cProfile
        import pstats
        step, sync = cands["ours"]
        pr = cProfile.Profile()
        pr.enable()
        for _ in range(100):
            step()
        sync()
        pr.disable()
        pstats.Stats(pr).sort_stats("tottime").print_stats(30)


if __name__ == "__main__":
    main()
