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
                  the part of economy/1 that is the collect pass, not the instruments;
  floor:          the plain epoch plus only the economy preset's array work in bare NumPy
                  (ArithmeticFloor), what economy/1 cannot go below on this machine.
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


class ArithmeticFloor(Callback):
    """The economy preset's array work every step in bare NumPy, nothing else: the floor.

    Per step, on arrays of the model's shapes (the output gradients are fixed arrays: their
    values do not change the cost): the tests' sums by the Gram route (two products and the
    passes per layer, the row sums and the trace), theta_t, g_t and theta_{t+1} copied into
    flat rows (one assignment per parameter), the update and theta - theta_0 by one
    subtraction, the norms and the dots with g (two calls), the tests' sums over the examples
    (two calls), one conversion to floats; on one step in eight the histogram's gathers,
    scaling and bincount.
    """

    def __init__(self):
        self.step = 0

    def on_train_begin(self, run):
        params = [p for p in run.model.parameters()]
        self.params = params
        n = sum(p.size for p in params)
        dt = params[0].data.dtype
        rng = np.random.default_rng(0)
        self.rows, self.out, self.after = np.zeros((6, n), dt), np.zeros(11, dt), np.empty(n, dt)
        self.views = []
        for flat in (self.rows[1], self.rows[2], self.after):
            views, o = [], 0
            for p in params:
                views.append(flat[o:o + p.size].reshape(p.shape))
                o += p.size
            self.views.append(views)
        self.h = rng.standard_normal((BATCH, 64)).astype(dt)
        self.d1 = rng.standard_normal((BATCH, 64)).astype(dt)
        self.d2 = rng.standard_normal((BATCH, 10)).astype(dt)
        self.one = np.ones((), dt)
        self.work = np.zeros((2, BATCH), dt)
        k = (BATCH * 64 * 64 + BATCH * 64 + BATCH * 10 * 64 + BATCH * 10) // 4096
        self.k = k
        self.ent = [instruments._entries(np, BATCH, o, 64, k) for o in (64, 10)]
        self.v = np.empty(sum(e[0].shape[0] for e in self.ent) + -(-BATCH * 64 // k)
                          + -(-BATCH * 10 // k), dt)

    def on_step_end(self, info):
        x = info.xb.data if hasattr(info.xb, "data") else info.xb
        if x.shape[0] != BATCH:
            return
        one = self.one
        K = x.dot(x.T)
        K += one
        K *= self.d1.dot(self.d1.T)
        K2 = self.h.dot(self.h.T)
        K2 += one
        K2 *= self.d2.dot(self.d2.T)
        K += K2
        np.add.reduce(K, axis=1, out=self.work[1])
        tr = np.add.reduce(K.diagonal())
        for v, p in zip(self.views[0], self.params):
            v[...] = p.data
        for v, p in zip(self.views[1], self.params):
            v[...] = p.grad.data
        for v, p in zip(self.views[2], self.params):
            v[...] = p.data
        rows, out = self.rows, self.out
        np.subtract(self.after, rows[0:2], out=rows[4:2:-1])
        np.vecdot(rows[2:6], rows[2:6], out=out[:4])
        np.matmul(rows[2:6], rows[2], out=out[4:8])
        np.subtract(self.work[1], out[0] / 32.0, out=self.work[0])
        np.vecdot(self.work, self.work, out=out[8:10])
        out[10] = tr
        out.tolist()
        self.step += 1
        if self.step % 8 == 1:
            v, o = self.v, 0
            for (gi, xi), g in zip(self.ent, (self.d1, self.d2)):
                m = gi.shape[0]
                np.multiply(g.take(gi), self.h.take(xi), out=v[o:o + m])
                o += m
            for g in (self.d1, self.d2):
                m = -(-g.size // self.k)
                v[o:o + m] = g.reshape(-1)[::self.k]
                o += m
            top = float(np.abs(v).max())
            v += top
            v *= 41 / (2 * top)
            np.bincount(v.astype(np.intp), minlength=42)


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
        "floor": epoch_fn(X, y, lambda: [ArithmeticFloor()]),
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
    r = ratio(times, "floor", "plain")
    print(f"  floor: the plain epoch plus only the economy preset's array work, in bare NumPy: "
          f"{fmt_time(median(times['floor']))}  {r:6.2f}x plain")


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
