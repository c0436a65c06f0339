"""Second-order methods made for networks against their first-order and quasi-Newton rivals.

1. Steps to 97% validation accuracy on the 8x8 digits (MLP 64-128-10, ReLU, batch 128):
   K-FAC against Adam, each with its learning rate tuned on a small grid (median over seeds;
   the best grid point is the one with the fewest median steps). Target: K-FAC <= 0.75x Adam.
2. Full-batch training of the same MLP on the digits training split (float64): Hessian-free
   against L-BFGS (strong Wolfe), counted in passes over the data until the training loss is
   below a threshold. A pass is one closure evaluation (a forward, with its backward when a
   gradient is taken) or one Gauss-Newton product (two backward passes through recorded
   graphs). Target: HF converges in fewer passes, with at most 250 CG iterations per update.

Wall-clock seconds are reported too. Counts do not depend on the machine; times do (the
machine may be shared: compare times only within one run). K-FAC needs
tinygrad_opt.extensions; without it part 1 reports Adam only.

    python benchmarks/bench_second_order.py            # full grid, 3 seeds
    python benchmarks/bench_second_order.py --quick    # one seed, two grid points each
"""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import machine_line, parse_args, pin_threads   # noqa: E402

pin_threads()

import numpy as np                                          # noqa: E402

import tinygrad_opt as tg                                   # noqa: E402
from tinygrad_opt import Tensor, data, nn, optim            # noqa: E402
from tinygrad_opt.nn import functional as F                 # noqa: E402

TARGET_ACC = 0.97
BATCH = 128


def digits(dtype):
    X, y = data.load_digits(dtype=dtype)
    (Xtr, ytr), (Xva, yva) = data.train_val_split(X, y, val_fraction=0.2, seed=0, stratify=True)
    return Xtr, ytr, Xva, yva


def model_for(seed, dtype):
    tg.manual_seed(seed)
    model = nn.MLP([64, 128, 10])
    for p in model.parameters():
        p.data = p.data.astype(dtype)
    return model


def accuracy(model, X, y):
    with tg.no_grad():
        return float((model(Tensor(X)).numpy().argmax(1) == y).mean())


def steps_to_target(make_opt, seed, split, max_steps):
    """(steps until validation accuracy >= TARGET_ACC or None, seconds spent training)."""
    Xtr, ytr, Xva, yva = split
    model = model_for(seed, np.float32)
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
            if accuracy(model, Xva, yva) >= TARGET_ACC:
                return step, spent
            if step >= max_steps:
                break
    return None, spent


def tune(name, grid, seeds, split, max_steps):
    """Rows (label, median steps, per-seed steps, median seconds) per grid point; the best."""
    rows = []
    for label, make in grid:
        res = [steps_to_target(make, s, split, max_steps) for s in seeds]
        steps = [r[0] if r[0] is not None else np.inf for r in res]
        rows.append((f"{name} {label}", float(np.median(steps)), steps,
                     float(np.median([r[1] for r in res]))))
        print(f"  {rows[-1][0]:<34} median steps {rows[-1][1]:>7}  per seed {steps}  "
              f"median time {rows[-1][3]:.2f}s", flush=True)
    return rows, min(rows, key=lambda r: r[1])


def full_batch(make_opt, X, y, loss_target, max_passes, seed=0):
    """Passes, outer steps, seconds and final loss of one optimizer on the full batch."""
    model = model_for(seed, np.float64)
    Xt = Tensor(X)
    count = {"evals": 0}

    def closure():
        count["evals"] += 1
        return F.cross_entropy(model(Xt), y)

    opt = make_opt(model.parameters())
    steps, spent, loss, products, max_cg = 0, 0.0, np.inf, 0, 0
    while count["evals"] + products < max_passes:
        t0 = time.perf_counter()
        opt.step(closure)
        spent += time.perf_counter() - t0
        steps += 1
        if hasattr(opt, "log") and opt.log:
            e = opt.log[-1]
            products += e["cg_iters"] + (1 if steps > 1 else 0)    # + the warm start's product
            max_cg = max(max_cg, e["cg_iters"])
        with tg.no_grad():
            loss = float(F.cross_entropy(model(Xt), y).item())
        if loss <= loss_target:
            break
    return dict(passes=count["evals"] + products, evals=count["evals"], products=products,
                steps=steps, seconds=spent, loss=loss, max_cg=max_cg)


def main():
    args = parse_args(__doc__.splitlines()[0], extra=lambda p: (
        p.add_argument("--seeds", type=int, default=3),
        p.add_argument("--max-steps", type=int, default=1500),
        p.add_argument("--loss-target", type=float, default=1e-3),
        p.add_argument("--max-passes", type=int, default=3000)))
    seeds = list(range(1 if args.quick else args.seeds))
    print(machine_line())
    split = digits(np.float32)
    try:
        from tinygrad_opt import extensions  # noqa: F401
        have_ext = True
    except ImportError:
        have_ext = False

    print(f"\n1. steps to {TARGET_ACC:.0%} validation accuracy, digits MLP 64-128-10, batch {BATCH}")
    adam_lrs = [3e-3, 1e-2] if args.quick else [1e-3, 3e-3, 1e-2, 3e-2]
    _, adam = tune("Adam", [(f"lr={lr:g}", lambda p, lr=lr: optim.Adam(p, lr=lr))
                            for lr in adam_lrs], seeds, split, args.max_steps)
    if have_ext:
        kfac_grid = [(0.3, 1e-2), (1.0, 1e-2)] if args.quick else \
            [(lr, d) for lr in (0.3, 1.0) for d in (1e-3, 1e-2, 1e-1)]
        _, kfac = tune("K-FAC", [(f"lr={lr:g} damping={d:g}",
                                  lambda p, lr=lr, d=d: optim.KFAC(p, lr=lr, damping=d))
                                 for lr, d in kfac_grid], seeds, split, args.max_steps)
        print(f"  best Adam: {adam[0]} ({adam[1]} steps, {adam[3]:.2f}s); best K-FAC: {kfac[0]} "
              f"({kfac[1]} steps, {kfac[3]:.2f}s); K-FAC / Adam steps = {kfac[1] / adam[1]:.2f}x "
              f"(target <= 0.75x), time = {kfac[3] / adam[3]:.2f}x")
    else:
        print("  K-FAC skipped: tinygrad_opt.extensions is not available")

    print(f"\n2. full batch ({len(split[1])} rows, float64) to training loss <= {args.loss_target:g}")
    X, y = split[0].astype(np.float64), split[1]
    runs = [("L-BFGS (strong Wolfe)", lambda p: optim.LBFGS(p, lr=1.0, max_iter=20)),
            ("Hessian-free", lambda p: optim.HessianFree(p, precondition=have_ext))]
    results = {}
    for name, make in runs:
        r = full_batch(make, X, y, args.loss_target, args.max_passes)
        results[name] = r
        print(f"  {name:<22} passes {r['passes']:>5} (closure evals {r['evals']}, GGN products "
              f"{r['products']}), outer steps {r['steps']}, max CG its {r['max_cg']}, "
              f"loss {r['loss']:.2e}, {r['seconds']:.2f}s", flush=True)
    a, b = results["Hessian-free"], results["L-BFGS (strong Wolfe)"]
    print(f"  HF / L-BFGS passes = {a['passes'] / b['passes']:.2f}x, time = "
          f"{a['seconds'] / b['seconds']:.2f}x")


if __name__ == "__main__":
    main()
