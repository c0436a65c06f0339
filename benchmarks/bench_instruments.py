"""What instruments and spectra cost, as multiples of the work they watch.

    python benchmarks/bench_instruments.py
    python benchmarks/bench_instruments.py --quick

Digits MLP 64-64-10 (ReLU, softmax cross-entropy, float32, batch 32, plain SGD), one fit epoch
over the 1437 training images (45 steps), timed interleaved in one run:
  plain:          fit without callbacks;
  economy/1:      Instruments("economy", every=1);
  full/16:        Instruments("full", every=16);
  economy/1 h1:   economy every step with GradHist1d(every=1) (Cockpit's histogram every step);
  collect/1:      only the extensions.collect pass the economy preset runs around every
                  backward (its private _Totals: the per-example sums the gradient tests read),
                  the part of economy/1 that is the collect pass, not the instruments.
Targets: economy every step <= 1.5x plain, full every 16 steps <= 3x plain.
spectral_density with 100 Lanczos steps against 110 Hessian-vector products on a batch of 256
(the gradient is built once in both): target <= 1x.
When cockpit-for-pytorch is installed, Cockpit's economy and full presets on the same model,
data and batch size in PyTorch, against its own plain epoch, are printed in the same run.
"""
import os
import sys
import warnings

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import (compare, fmt_time, import_torch, machine_line, median,  # noqa: E402
                    parse_args, pin_threads, ratio, verdict)

if __name__ == "__main__":
    pin_threads()

import numpy as np  # noqa: E402

import tinygrad_opt as tg  # noqa: E402
from tinygrad_opt import curvature, data, extensions, instruments, nn  # noqa: E402
from tinygrad_opt.nn import functional as F  # noqa: E402
from tinygrad_opt.optim import SGD  # noqa: E402
from tinygrad_opt.train import Callback, fit  # noqa: E402

BATCH, LR = 32, 0.1


def digits():
    X, y = data.load_digits(dtype=np.float32)
    (Xt, yt), _ = data.train_val_split(X, y, val_fraction=0.2, seed=0, stratify=True)
    return Xt, yt


def epoch_fn(X, y, make_callbacks):
    tg.manual_seed(0)
    model = nn.MLP([64, 64, 10])
    opt = SGD(model.parameters(), lr=LR)
    loader = data.DataLoader(X, y, batch_size=BATCH, seed=0)

    def run():
        fit(model, opt, loader, F.cross_entropy, epochs=1, callbacks=make_callbacks(),
            progress=False)
    return run


class CollectOnly(Callback):
    """Enters the economy preset's extensions.collect around every backward, nothing else."""

    def __init__(self):
        self.ctx = extensions.collect(extensions._Totals())

    def backward_context(self, run, xb, yb):
        return self.ctx


def bench_fit(args, X, y):
    cands = {
        "plain": epoch_fn(X, y, list),
        "economy/1": epoch_fn(X, y, lambda: [instruments.Instruments("economy", every=1)]),
        "full/16": epoch_fn(X, y, lambda: [instruments.Instruments("full", every=16)]),
        # Cockpit's histogram every step: the (N, P) per-example block on every step
        "economy/1 h1": epoch_fn(X, y, lambda: [instruments.Instruments(
            [instruments.GradHist1d(every=1) if q == "GradHist1d" else q
             for q in instruments.ECONOMY], every=1)]),
        "collect/1": epoch_fn(X, y, lambda: [CollectOnly()]),
    }
    rounds = args.rounds or (2 if args.quick else 7)
    times = compare(cands, rounds, warmup=1)
    ext = instruments._extensions() is not None
    print(f"\nfit epoch, digits MLP 64-64-10, batch {BATCH}, {len(X) // BATCH + 1} steps "
          f"(per-example gradients: {'extensions' if ext else 'one backward per example'})")
    print(f"  plain      {fmt_time(median(times['plain']))}")
    for name, target in (("economy/1", 1.5), ("full/16", 3.0)):
        r = ratio(times, name, "plain")
        print(f"  {name:<10} {fmt_time(median(times[name]))}  {r:6.2f}x plain  "
              f"(target <= {target}x: {verdict(r, target)})")
    r = ratio(times, "economy/1 h1", "plain")
    print(f"  economy/1 with GradHist1d(every=1), the (N, P) block every step: "
          f"{fmt_time(median(times['economy/1 h1']))}  {r:6.2f}x plain")
    r = ratio(times, "collect/1", "plain")
    print(f"  of which the collect pass (the tests' per-example sums) alone every step: "
          f"{fmt_time(median(times['collect/1']))}  {r:6.2f}x plain")


def bench_spectrum(args, X, y):
    tg.manual_seed(0)
    model = nn.MLP([64, 64, 10])
    xb, yb = tg.Tensor(X[:256]), tg.Tensor(y[:256])
    params = list(model.parameters())

    def closure():
        return F.cross_entropy(model(xb), yb)

    def hvps():         # the operator spectral_density builds, built once here too
        op = curvature.HVPOperator(closure, params)
        v = op.xp.ones(op.n, dtype=op.dtype)
        for _ in range(110):
            op.matvec(v)

    def slq():
        curvature.spectral_density(closure, params, n_iter=100, n_vectors=1, seed=0)
    rounds = args.rounds or (2 if args.quick else 5)
    times = compare({"110 HVPs": hvps, "SLQ 100": slq}, rounds, warmup=1)
    r = ratio(times, "SLQ 100", "110 HVPs")
    used = curvature.spectral_nodes(closure, params, n_iter=100, n_vectors=1, seed=0).n_products
    print(f"\nspectral_density, 100 Lanczos steps ({used} products of the HVPOperator the "
          f"baseline uses), batch 256, {sum(p.size for p in params)} parameters")
    print(f"  110 HVPs   {fmt_time(median(times['110 HVPs']))}")
    print(f"  SLQ 100    {fmt_time(median(times['SLQ 100']))}  {r:6.2f}x 110 HVPs  "
          f"(target <= 1x: {verdict(r, 1.0)})")


def bench_cockpit(args, X, y):
    torch = import_torch(args.threads, args.no_torch)
    try:
        import cockpit
        from backpack import extend
        from cockpit.utils.configuration import configuration
    except ImportError:
        print("\nCockpit: cockpit-for-pytorch is not installed (pip install cockpit-for-pytorch); "
              "its ratios are skipped")
        return
    if torch is None:
        return
    Xt, yt = torch.from_numpy(np.asarray(X)), torch.from_numpy(np.asarray(y)).long()

    def make(preset, every):
        torch.manual_seed(0)
        model = extend(torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.ReLU(),
                                           torch.nn.Linear(64, 10)))
        loss_fn = extend(torch.nn.CrossEntropyLoss(reduction="mean"))
        ind_fn = extend(torch.nn.CrossEntropyLoss(reduction="none"))
        opt = torch.optim.SGD(model.parameters(), lr=LR)
        # s >= 0 as in Cockpit's own schedules: two-point quantities (Alpha, UpdateSize) ask
        # whether step s - 1 was tracked, and -1 % 1 == 0 would send them to a step that never ran
        ck = None if preset is None else cockpit.Cockpit(model.parameters(), quantities=(
            configuration(preset, track_schedule=lambda s, k=every: s >= 0 and s % k == 0)))

        step = [0]                              # Cockpit's global step runs across epochs

        def run():
            perm = torch.randperm(len(Xt))
            for s in range(0, len(Xt), BATCH):
                i, step[0] = step[0], step[0] + 1
                idx = perm[s:s + BATCH]
                xb, yb = Xt[idx], yt[idx]
                opt.zero_grad()
                out = model(xb)
                loss = loss_fn(out, yb)
                if ck is None:
                    loss.backward()
                else:
                    losses = ind_fn(out, yb)
                    with ck(i, info={"batch_size": len(idx), "individual_losses": losses,
                                     "loss": loss, "optimizer": opt}):
                        loss.backward(create_graph=ck.create_graph(i))
                opt.step()
        return run
    cands = {"plain": make(None, 1), "economy/1": make("economy", 1), "full/16": make("full", 16)}
    try:
        with warnings.catch_warnings():     # BackPACK's hooks on a first layer with a plain input
            warnings.simplefilter("ignore")
            times = compare(cands, args.rounds or (2 if args.quick else 5), warmup=1)
    except Exception as e:          # an installed Cockpit that does not run with this PyTorch
        print(f"\nCockpit: installed but its run failed here ({type(e).__name__}: {e}); "
              "no ratios")
        return
    print("\nCockpit (PyTorch), same model, data and batch size")
    for name in ("economy/1", "full/16"):
        print(f"  {name:<10} {ratio(times, name, 'plain'):6.2f}x its plain epoch")


def main():
    args = parse_args(__doc__.splitlines()[0])
    print(machine_line())
    X, y = digits()
    bench_fit(args, X, y)
    bench_spectrum(args, X, y)
    bench_cockpit(args, X, y)


if __name__ == "__main__":
    main()
