"""Second-order methods made for networks against their first-order and quasi-Newton rivals.

1. Steps to 97% validation accuracy (MLP with one hidden layer of 128 ReLU units, batch 128):
   K-FAC against Adam, each with its learning rate tuned on a small grid (median over seeds;
   the best grid point is the one with the fewest median steps). Target: K-FAC <= 0.75x Adam.
2. Full-batch training of the same MLP (float64): Hessian-free against L-BFGS, counted in
   passes until the training loss reaches --loss-target (1e-3; 1e-1 and 1e-2 are reported
   on the way). Target: HF gets there in fewer passes, with at most 250 CG iterations per
   update. Each method is tuned on a small grid and its best point is reported: L-BFGS (strong
   Wolfe, history 10) over its first trial step lr; HF (Martens 2010: g and f on the full
   batch, G v on a fresh random curvature mini-batch of a fraction of the rows each update,
   sec. 4.3) over its initial damping lambda and the curvature fraction, then over lr.

What a pass is. One pass = one forward and one backward over all N training rows (the cost
of one full gradient). Every evaluation is priced where it happens, at the closures, not as
the optimizer reports it, with weights taken from the flop counts of the MLP and rounded up,
so that HF is not undercharged (part 2 ends with the measured cost of each kind beside its
weight; on a shared machine those timings are noisy):
  - the full-batch closure with gradient recording on: 1 (both optimizers take its
    backward); 1.5 when HF's preconditioner is on, since that backward also forms the
    per-example squared gradients (one more product per layer, (x^2)^T (g^2));
  - the full-batch closure with recording off: 1/2 (a forward only; by flops 0.47 here);
  - the curvature closure on m rows: 2 m/N (its forward and the backward recorded with
    create_graph for the J^T u of the Gauss-Newton product);
  - each G v product on m rows: 2 m/N (about two gradients, Schraudolph 2002; ours is two
    backward passes through recorded graphs).
The convergence test reads the training loss after every L-BFGS iteration (max_iter=1: one
direction and one line search per step, the history and the last evaluation kept across
steps) and after every HF update; that check is not counted.

Wall-clock seconds are reported too. Counts do not depend on the machine; times do (the
machine may be shared: compare times only within one run). K-FAC needs
tinygrad_opt.extensions; without it part 1 reports Adam only.

With --data-dir DIR holding the MNIST files (as tinygrad_opt.data.load_mnist reads them),
both parts run again on MNIST (MLP 784-128-10, validated on the test split every 10 steps;
part 2 on the first --mnist-rows training rows); without them MNIST is skipped with a line.

    python benchmarks/bench_second_order.py            # full grids, 3 seeds in part 1
    python benchmarks/bench_second_order.py --quick    # one seed, small grids
    python benchmarks/bench_second_order.py --data-dir ~/data    # digits, then MNIST
"""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import machine_line, parse_args, pin_threads   # noqa: E402

pin_threads()

import numpy as np                                          # noqa: E402

import tinygrad_opt as tg                                   # noqa: E402
from tinygrad_opt import Tensor, autograd, data, engine, nn, optim    # noqa: E402
from tinygrad_opt.nn import functional as F                 # noqa: E402

TARGET_ACC = 0.97
BATCH = 128
FORWARD, PRECONDITIONED = 0.5, 1.5  # passes per forward-only evaluation, per gradient with M
SETUP, PRODUCT = 2.0, 2.0           # passes per curvature set-up and per G v, times m / N
LOSS_MARKS = (1e-1, 1e-2)           # reported on the way to --loss-target


# ---------------------------------------------------------------------------- data and model
def digits():
    X, y = data.load_digits(dtype=np.float32)
    (Xtr, ytr), (Xva, yva) = data.train_val_split(X, y, val_fraction=0.2, seed=0, stratify=True)
    return dict(name="digits", sizes=[64, 128, 10], split=(Xtr, ytr, Xva, yva), eval_every=1)


def mnist(root, rows):
    """The MNIST problem, or None with the reason printed (one line) when its files are absent."""
    if root is None:
        print("\nMNIST: skipped (pass --data-dir DIR with the MNIST files to run it)")
        return None
    try:
        Xtr, ytr = data.load_mnist(root, split="train")
        Xva, yva = data.load_mnist(root, split="test")
    except (FileNotFoundError, ValueError) as e:
        print(f"\nMNIST: skipped ({str(e).splitlines()[0]})")
        return None
    return dict(name="MNIST", sizes=[784, 128, 10], split=(Xtr, ytr, Xva, yva), eval_every=10,
                full_rows=rows)


def model_for(sizes, seed, dtype):
    tg.manual_seed(seed)
    model = nn.MLP(sizes)
    for p in model.parameters():
        p.data = p.data.astype(dtype)
    return model


def accuracy(model, X, y):
    with tg.no_grad():
        return float((model(Tensor(X)).numpy().argmax(1) == y).mean())


# ---------------------------------------------------------------- part 1: steps to accuracy
def steps_to_target(make_opt, seed, prob, max_steps):
    """(steps until validation accuracy >= TARGET_ACC or None, seconds spent training)."""
    Xtr, ytr, Xva, yva = prob["split"]
    model = model_for(prob["sizes"], seed, np.float32)
    opt = make_opt(model.parameters())
    rng = np.random.default_rng(seed)
    closure_mode = getattr(opt, "needs_closure", False)
    step, spent = 0, 0.0
    while step < max_steps:
        order = rng.permutation(len(ytr))
        for i in range(0, len(order) - BATCH + 1, BATCH):
            idx = order[i:i + BATCH]
            xb, yb = Tensor(Xtr[idx]), ytr[idx]
            t0 = time.perf_counter()
            if closure_mode:
                opt.step(lambda: F.cross_entropy(model(xb), yb))
            else:
                opt.zero_grad()
                F.cross_entropy(model(xb), yb).backward()
                opt.step()
            spent += time.perf_counter() - t0
            step += 1
            if step % prob["eval_every"] == 0 and accuracy(model, Xva, yva) >= TARGET_ACC:
                return step, spent
            if step >= max_steps:
                break
    return None, spent


def tune(name, grid, seeds, prob, max_steps):
    """Rows (label, median steps, per-seed steps, median seconds) per grid point; the best."""
    rows = []
    for label, make in grid:
        res = [steps_to_target(make, s, prob, max_steps) for s in seeds]
        steps = [r[0] if r[0] is not None else np.inf for r in res]
        rows.append((f"{name} {label}", float(np.median(steps)), steps,
                     float(np.median([r[1] for r in res]))))
        print(f"  {rows[-1][0]:<34} median steps {rows[-1][1]:>7}  per seed {steps}  "
              f"median time {rows[-1][3]:.2f}s", flush=True)
    return rows, min(rows, key=lambda r: r[1])


def part1(prob, args, seeds, have_ext):
    print(f"\n1. {prob['name']}: steps to {TARGET_ACC:.0%} validation accuracy, MLP "
          f"{'-'.join(map(str, prob['sizes']))}, batch {BATCH}"
          + (f", validated every {prob['eval_every']} steps" if prob["eval_every"] > 1 else ""))
    max_steps = args.max_steps * prob["eval_every"]
    adam_lrs = [3e-3, 1e-2] if args.quick else [1e-3, 3e-3, 1e-2, 3e-2]
    _, adam = tune("Adam", [(f"lr={lr:g}", lambda p, lr=lr: optim.Adam(p, lr=lr))
                            for lr in adam_lrs], seeds, prob, max_steps)
    if not have_ext:
        print("  K-FAC skipped: tinygrad_opt.extensions is not available")
        return
    kfac_grid = [(0.3, 1e-2), (1.0, 1e-2)] if args.quick else \
        [(lr, d) for lr in (0.3, 1.0) for d in (1e-3, 1e-2, 1e-1)]
    _, kfac = tune("K-FAC", [(f"lr={lr:g} damping={d:g}",
                              lambda p, lr=lr, d=d: optim.KFAC(p, lr=lr, damping=d))
                             for lr, d in kfac_grid], seeds, prob, max_steps)
    print(f"  best Adam: {adam[0]} ({adam[1]} steps, {adam[3]:.2f}s); best K-FAC: {kfac[0]} "
          f"({kfac[1]} steps, {kfac[3]:.2f}s); K-FAC / Adam steps = {kfac[1] / adam[1]:.2f}x "
          f"(target <= 0.75x), time = {kfac[3] / adam[3]:.2f}x")


# ------------------------------------------------------------ part 2: passes to a low loss
class Passes:
    """The cost of one run in passes (see the module docstring), counted at the closures."""

    def __init__(self, model, X, y, gradient_cost=1.0):
        self.model, self.X, self.y, self.n, self.total = model, Tensor(X), y, len(y), 0.0
        self.gradient_cost = gradient_cost

    def closure(self):
        """The full-batch loss: a gradient with recording on, FORWARD without."""
        self.total += self.gradient_cost if engine.is_grad_enabled() else FORWARD
        return F.cross_entropy(self.model(self.X), self.y)

    def curvature_closure(self, X, y):
        """The loss on m curvature rows: SETUP m / N for its forward and recorded backward."""
        def closure():
            self.total += SETUP * len(y) / self.n
            return F.cross_entropy(self.model(X), y)
        return closure


def full_batch(kind, options, prob, X, y, target, max_passes, seed=0, fraction=None):
    """Passes to each loss mark and to `target`, seconds in step(), steps, final loss, max CG."""
    model = model_for(prob["sizes"], seed, np.float64)
    n = len(y)
    if kind == "lbfgs":
        opt = optim.LBFGS(model.parameters(), max_iter=1, history_size=10, **options)
    else:
        opt = optim.HessianFree(model.parameters(), **options)
    preconditioned = kind == "hf" and opt.param_groups[0]["precondition"]
    cost = Passes(model, X, y, PRECONDITIONED if preconditioned else 1.0)
    closure = cost.closure          # one object: L-BFGS reuses its last evaluation only then
    rng = np.random.default_rng(seed)
    m = n if fraction is None else max(1, int(round(fraction * n)))
    hits, steps, spent, loss, max_cg = {}, 0, 0.0, np.inf, 0
    while cost.total < max_passes:
        t0 = time.perf_counter()
        if kind == "lbfgs":
            opt.step(closure)
        else:
            idx = rng.choice(n, m, replace=False)
            curv = cost.curvature_closure(Tensor(X[idx]), y[idx])
            opt.step(closure, curvature_closure=curv)
            cost.total += PRODUCT * m / n * opt.log[-1]["products"]
            max_cg = max(max_cg, opt.log[-1]["cg_iters"])
        spent += time.perf_counter() - t0
        steps += 1
        with tg.no_grad():
            loss = float(F.cross_entropy(model(Tensor(X)), y).item())
        for mark in LOSS_MARKS + (target,):
            if loss <= mark and mark not in hits:
                hits[mark] = cost.total
        if loss <= target or not np.isfinite(loss):
            break
    return dict(hits=hits, passes=hits.get(target, np.inf), total=cost.total, steps=steps,
                seconds=spent, loss=loss, max_cg=max_cg, m=m,
                acc=accuracy(model, prob["split"][2].astype(np.float64), prob["split"][3]))


def measured_costs(prob, X, y, m, reps=21):
    """Seconds of each kind of evaluation over the seconds of one full gradient (median)."""
    from tinygrad_opt import extensions
    from tinygrad_opt.optim.hessianfree import gauss_newton_product, loss_output
    model = model_for(prob["sizes"], 0, np.float64)
    params = list(model.parameters())
    Xt, Xm, ym = Tensor(X), Tensor(X[:m]), y[:m]

    def gradient():
        autograd.grad(F.cross_entropy(model(Xt), y), params)

    def forward():
        with tg.no_grad():
            F.cross_entropy(model(Xt), y)

    def gradient_sgs():
        with extensions.collect(extensions.SumGradSquared()):
            F.cross_entropy(model(Xt), y).backward()

    def setup():
        loss = F.cross_entropy(model(Xm), ym)
        return gauss_newton_product(loss, loss_output(loss, "bench")[0], params)

    product = setup()
    vs = [np.ones(p.shape) for p in params]
    times = {}
    for name, fn in (("gradient", gradient), ("forward", forward),
                     ("gradient + SumGradSquared", gradient_sgs),
                     ("curvature set-up", setup), ("G v", lambda: product(vs))):
        ts = []
        for _ in range(reps):
            t0 = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t0)
        times[name] = float(np.median(ts))
    return {k: v / times["gradient"] for k, v in times.items()}


def part2(prob, args):
    Xtr, ytr = prob["split"][0], prob["split"][1]
    rows = prob.get("full_rows") or len(ytr)
    X, y = Xtr[:rows].astype(np.float64), ytr[:rows]
    target, cap = args.loss_target, args.max_passes
    print(f"\n2. {prob['name']}: full batch ({len(y)} rows, float64) to training loss <= "
          f"{target:g}; passes (1 = forward + backward over all rows) to loss "
          + ", ".join(f"{v:g}" for v in LOSS_MARKS + (target,)) + f"; at most {cap:g} passes")

    def show(label, r):
        marks = " / ".join(f"{r['hits'][v]:.1f}" if v in r["hits"] else "-"
                           for v in LOSS_MARKS + (target,))
        extra = f", max CG its {r['max_cg']}" if r["max_cg"] else ""
        print(f"  {label:<50} passes {marks:<22} steps {r['steps']:>4}{extra}, final loss "
              f"{r['loss']:.2e} (val acc {r['acc']:.3f}), {r['seconds']:.2f}s", flush=True)

    def best_of(results):                  # fewest passes to the target, then the lowest loss
        return min(results, key=lambda lr: (lr[1]["passes"], lr[1]["loss"]))

    lbfgs = []
    for lr in ([1.0] if args.quick else [0.5, 1.0, 2.0]):
        r = full_batch("lbfgs", dict(lr=lr), prob, X, y, target, cap)
        lbfgs.append((f"L-BFGS lr={lr:g}", r))
        show(*lbfgs[-1])
    hf = []
    lams, fracs = ([1.0, 0.1], [0.1]) if args.quick else \
        ([45.0, 1.0, 0.1, 0.01], [0.05, 0.1, 0.25, 1.0])
    for lam in lams:
        for frac in fracs:
            r = full_batch("hf", dict(damping=lam), prob, X, y, target, cap, fraction=frac)
            hf.append((f"HF damping={lam:g} curvature {frac:.0%}", r, lam, frac))
            show(*hf[-1][:2])
    if not args.quick:                     # then lr and the preconditioner at the best point
        _, _, lam, frac = best_of(hf)
        for label, extra in (("lr=0.5", dict(lr=0.5)), ("lr=2", dict(lr=2.0)),
                             ("unpreconditioned", dict(precondition=False))):
            r = full_batch("hf", dict(damping=lam, **extra), prob, X, y, target, cap,
                           fraction=frac)
            hf.append((f"HF damping={lam:g} curvature {frac:.0%} {label}", r, lam, frac))
            show(*hf[-1][:2])
    (bl, b), (hl, h) = best_of(lbfgs), best_of(hf)[:2]
    ratio = h["passes"] / b["passes"] if np.isfinite(h["passes"]) else np.inf
    print(f"  best L-BFGS: {bl} ({b['passes']:.0f} passes, {b['seconds']:.2f}s); best HF: {hl} "
          f"({h['passes']:.1f} passes, {h['seconds']:.2f}s, max CG its {h['max_cg']}); HF / "
          f"L-BFGS passes = {ratio:.2f}x (target < 1), time = {h['seconds'] / b['seconds']:.2f}x"
          + ("" if np.isfinite(h["passes"]) else
             f" (HF stopped at {h['total']:.0f} passes, loss {h['loss']:.2e})"))
    c, m, n = measured_costs(prob, X, y, h["m"]), h["m"], len(y)
    print(f"  measured cost, in full gradients: forward {c['forward']:.2f} (counted {FORWARD}), "
          f"gradient + SumGradSquared {c['gradient + SumGradSquared']:.2f} (counted "
          f"{PRECONDITIONED}); on {m} curvature rows: set-up {c['curvature set-up']:.3f} "
          f"(counted {SETUP * m / n:.3f}), one G v {c['G v']:.3f} (counted {PRODUCT * m / n:.3f})")


def main():
    args = parse_args(__doc__.splitlines()[0], extra=lambda p: (
        p.add_argument("--seeds", type=int, default=3),
        p.add_argument("--max-steps", type=int, default=1500,
                       help="part 1: most steps per run (MNIST: times its validation period)"),
        p.add_argument("--loss-target", type=float, default=1e-3),
        p.add_argument("--max-passes", type=float, default=1000),
        p.add_argument("--data-dir", default=None, help="folder with the MNIST files"),
        p.add_argument("--mnist-rows", type=int, default=10000,
                       help="part 2 on MNIST: the first this many training rows"),
        p.add_argument("--part", type=int, choices=(1, 2), default=None,
                       help="run only part 1 (K-FAC vs Adam) or part 2 (HF vs L-BFGS)")))
    seeds = list(range(1 if args.quick else args.seeds))
    print(machine_line())
    try:
        from tinygrad_opt import extensions  # noqa: F401
        have_ext = True
    except ImportError:
        have_ext = False
    for load in (digits, lambda: mnist(args.data_dir, args.mnist_rows)):
        prob = load()
        if prob is None:
            continue
        if args.part in (None, 1):
            part1(prob, args, seeds, have_ext)
        if args.part in (None, 2):
            part2(prob, args)


if __name__ == "__main__":
    main()
