"""Shared benchmark machinery: thread pinning, interleaved timing, same-run ratios, tables.

Import this module and call `pin_threads()` BEFORE importing NumPy: BLAS reads its thread
count once, when it loads. Every benchmark compares candidates measured in the same run,
interleaved round by round, and reports the median of per-round ratios to a baseline, so a
machine that is busy for a moment slows every candidate of that round alike.
"""
import argparse
import gc
import os
import platform
import random
import sys
import time

_THREAD_VARS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def parse_args(description, extra=None):
    """The flags every benchmark takes: --threads, --quick, --rounds, ... (plus `extra(parser)`)."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--threads", type=int, default=1,
                   help="BLAS/OpenMP threads for NumPy and PyTorch (default 1)")
    p.add_argument("--quick", action="store_true", help="few rounds: a smoke run, not a measurement")
    p.add_argument("--rounds", type=int, default=None, help="timing rounds (default per benchmark)")
    p.add_argument("--no-torch", action="store_true", help="skip PyTorch even when importable")
    p.add_argument("--gpu-only", action="store_true", help="only the GPU rows (when CuPy and a GPU are there)")
    p.add_argument("--default-malloc", action="store_true",
                   help="keep glibc's default trimming (see steady_allocator)")
    if extra is not None:
        extra(p)
    args = p.parse_args()
    global _ALLOCATOR
    _ALLOCATOR = steady_allocator(args.default_malloc)
    return args


def pin_threads(n=None):
    """Set the BLAS/OpenMP thread variables; must run before NumPy is imported.

    n=None reads --threads from the command line (default 1).
    """
    if n is None:
        n = 1
        argv = sys.argv[1:]
        for i, a in enumerate(argv):
            if a == "--threads" and i + 1 < len(argv):
                n = int(argv[i + 1])
            elif a.startswith("--threads="):
                n = int(a.split("=", 1)[1])
    if "numpy" in sys.modules:
        raise RuntimeError("pin_threads() must run before NumPy is imported")
    for var in _THREAD_VARS:
        os.environ[var] = str(n)
    return n


def steady_allocator(disabled=False):
    """Ask glibc to keep freed memory instead of returning it to the OS after every step.

    By default glibc unmaps or trims freed blocks of a few MiB as soon as more than about
    twice that is free, so a step that holds five 2 MiB activations maps (and page-faults)
    them afresh every time, and how often that happens depends on what ran just before.
    That noise would land on whichever candidate runs after another, so every candidate
    here runs with the same steady policy (what MALLOC_TRIM_THRESHOLD_ and
    MALLOC_MMAP_THRESHOLD_ set). Returns a word for the report. No-op off glibc.
    """
    if disabled:
        return "glibc default"
    try:
        import ctypes
        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3
        ok = libc.mallopt(m_trim_threshold, 1 << 30) and libc.mallopt(m_mmap_threshold, 32 << 20)
        return "steady (no trim, mmap >= 32 MiB)" if ok else "glibc default"
    except (OSError, AttributeError):
        return "platform default"


def import_torch(threads, disabled=False):
    """PyTorch if it is importable (with its intra-op threads set), else None. Never required."""
    if disabled:
        return None
    try:
        import torch
    except ImportError:
        return None
    torch.set_num_threads(threads)
    return torch


def cupy_gpu():
    """The cupy module when CuPy and a CUDA GPU are usable, else None."""
    try:
        import cupy
        if cupy.cuda.runtime.getDeviceCount() > 0:
            return cupy
    except Exception:
        pass
    return None


_ALLOCATOR = "not set"


def machine_line():
    """One line describing the machine, NumPy and its BLAS."""
    import numpy as np
    blas = "unknown BLAS"
    try:
        cfg = np.show_config(mode="dicts")
        b = cfg["Build Dependencies"]["blas"]
        blas = f"{b['name']} {b.get('version', '')}".strip()
    except Exception:
        pass
    cores = os.cpu_count()
    return (f"{platform.machine()}, {cores} cores, Python {platform.python_version()}, "
            f"NumPy {np.__version__} ({blas}), BLAS threads {os.environ.get('OPENBLAS_NUM_THREADS')}, "
            f"malloc {_ALLOCATOR}")


# ----------------------------------------------------------------------------- timing
def _time_call(fn, inner, sync):
    t0 = time.perf_counter()
    for _ in range(inner):
        fn()
    if sync is not None:
        sync()
    return (time.perf_counter() - t0) / inner


def compare(candidates, rounds, inner=1, warmup=3, sync=None):
    """Time candidates interleaved; return {name: [seconds per call, one per round]}.

    candidates: dict name -> zero-argument callable. Each round times `inner` calls of every
    candidate in a fresh order (a seeded shuffle, so that none always runs first), each
    block after one untimed call of the same candidate: a timed call then follows a call of
    its own kind, as a step follows a step in training, and not whatever the previous block
    left in the caches (in bench_extensions.py the plain step runs 0.82x as long after itself
    as after the other candidates, which moved the ratios to it by up to 0.4x). The
    collector is paused during a timed block (as it is for the NumPy baseline's sake too) and
    run between rounds, so its pauses land outside the measurements.
    sync: called at the end of each timed block (e.g. a GPU stream synchronize).
    """
    names = list(candidates)
    for name in names:
        for _ in range(warmup):
            candidates[name]()
    if sync is not None:
        sync()
    times = {name: [] for name in names}
    rng = random.Random(0)
    gc_on = gc.isenabled()
    try:
        for r in range(rounds):
            order = rng.sample(names, len(names))
            gc.collect()
            gc.disable()
            for name in order:
                candidates[name]()              # the block's own warm-up, untimed
                if sync is not None:
                    sync()
                times[name].append(_time_call(candidates[name], inner, sync))
            if gc_on:
                gc.enable()
    finally:
        if gc_on:
            gc.enable()
    return times


def median(xs):
    s = sorted(xs)
    n = len(s)
    return s[n // 2] if n % 2 else 0.5 * (s[n // 2 - 1] + s[n // 2])


def ratio(times, name, base):
    """Median over rounds of times[name][r] / times[base][r]."""
    return median([a / b for a, b in zip(times[name], times[base])])


# ----------------------------------------------------------------------------- output
def fmt_time(s):
    if s >= 1:
        return f"{s:.2f} s"
    if s >= 1e-3:
        return f"{s * 1e3:.2f} ms"
    return f"{s * 1e6:.1f} us"


def print_table(title, rows, header=("workload", "ours", "PyTorch", "NumPy", "ours/NumPy",
                                     "torch/NumPy", "target")):
    """Print rows (tuples of strings) as an aligned Markdown table under a title."""
    rows = [tuple(str(c) for c in r) for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h)
              for i, h in enumerate(header)]
    print(f"\n{title}")
    print("| " + " | ".join(h.ljust(w) for h, w in zip(header, widths)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for r in rows:
        print("| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |")
    sys.stdout.flush()


def verdict(value, target):
    """'ok' or 'MISSED' for a measured ratio against its upper target."""
    return "ok" if value <= target else "MISSED"
