"""extensions.collect: a backward step that also fills per-example and curvature quantities,
over a plain backward step, in one run (and BackPACK over PyTorch's plain step, when installed).

    python benchmarks/bench_extensions.py              # 1 BLAS thread
    python benchmarks/bench_extensions.py --no-torch   # without PyTorch / BackPACK

Workload: the small MLP 784-128-64-10 (ReLU, through nn.Sequential, so each hidden Linear,
ReLU pair is one fused node), batch 64, float32, softmax cross-entropy with mean reduction.
A step is zero_grad, forward, loss and backward; the rows differ only in the quantities
collected. Candidates run interleaved round by round; ratios are medians of per-round
ratios to the plain step of the same framework. The floor column is the plain step plus
only the bare NumPy array work the row cannot avoid (see floor_steps): a lower bound.
BackPACK (backpack-for-pytorch) is a benchmark-only dependency: its rows are skipped when
it is not importable.
"""
import os
import sys
import warnings

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import (compare, fmt_time, import_torch, machine_line, median,  # noqa: E402
                    parse_args, pin_threads, print_table, ratio, verdict)

if __name__ == "__main__":
    pin_threads()

import numpy as np  # noqa: E402

import tinygrad_opt as tg  # noqa: E402
from tinygrad_opt import extensions as ext, nn  # noqa: E402
from tinygrad_opt.nn import functional as F  # noqa: E402

from bench_mlp import SMALL, init_params, make_batch  # noqa: E402

BATCH = 64
# (label, our quantities, BackPACK's extension names, target ratio)
ROWS = [
    ("BatchL2 + Variance + SumGradSquared",
     lambda: (ext.BatchL2(), ext.Variance(), ext.SumGradSquared()),
     ("BatchL2Grad", "Variance", "SumGradSquared"), 1.3),
    ("BatchGrad", lambda: (ext.BatchGrad(),), ("BatchGrad",), 2.5),
    ("DiagGGNMC(1)", lambda: (ext.DiagGGNMC(1),), ("DiagGGNMC",), 2.0),
    ("DiagGGN (exact, C = 10)", lambda: (ext.DiagGGN(),), ("DiagGGNExact",), 2.5),
    ("KFAC(1)", lambda: (ext.KFAC(1),), ("KFAC",), 2.0),
]


def our_model(params):
    layers = []
    for i in range(len(SMALL) - 1):
        lin = nn.Linear(SMALL[i], SMALL[i + 1], dtype=np.float32)
        lin.weight.data[...] = params[2 * i]
        lin.bias.data[...] = params[2 * i + 1]
        layers.append(lin)
        if i < len(SMALL) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def our_steps(params, x, y):
    model = our_model(params)
    xt = tg.Tensor(x)

    def plain():
        model.zero_grad()
        F.cross_entropy(model(xt), y).backward()

    def with_(make):
        qs = make()

        def step():
            model.zero_grad()
            with ext.collect(*qs):
                F.cross_entropy(model(xt), y).backward()
        return step
    return plain, {label: with_(make) for label, make, _, _ in ROWS}


def floor_steps(plain, x):
    """Lower bounds in the same run: the plain step plus only the array work a row cannot
    avoid, on arrays of the layers' shapes (g: output gradients, a: layer inputs, G: weight
    gradients), in bare NumPy, every result kept alive until the next step as the attributes
    keep theirs. The products with x^2 of SumGradSquared (one per layer, the size of the
    weight gradient's); BatchGrad's N x P floats written once with no arithmetic at all
    (fill); KFAC's input factors a^T a (NumPy runs a product of an array with its own
    transpose as one symmetric product, syrk). Each drops its previous result before it
    allocates the next, as collect does (extensions._drop). Rows whose floor is over their target cannot
    meet it. Besides (EXTRA): the first row's whole array work in bare NumPy, the same calls
    extensions.collect makes with none of its bookkeeping; BatchGrad's blocks by the bare
    einsum and by collect's formulation (see extensions._outer_per_example).
    """
    rng = np.random.default_rng(0)
    a = [x] + [rng.standard_normal((BATCH, k)).astype(np.float32) for k in SMALL[1:-1]]
    g = [rng.standard_normal((BATCH, k)).astype(np.float32) for k in SMALL[1:]]
    G = [gi.T @ ai for gi, ai in zip(g, a)]
    gb = [gi.sum(axis=0) for gi in g]
    keep = {}

    def sgs():
        plain()
        for i, (gi, ai) in enumerate(zip(g, a)):
            keep.pop(("s", i), None)
            keep["s", i] = (gi * gi).T @ (ai * ai)

    def first_order_arrays():
        """BatchL2 from row norms, SumGradSquared from the products, Variance in four
        passes over the weight's shape from them and G, with the check for values below 0."""
        plain()
        c = 1.0 / BATCH
        for i, (gi, ai, Gi, bi) in enumerate(zip(g, a, G, gb)):
            keep.pop(("f", i), None)            # as collect drops the previous step's
            g2 = gi * gi
            gg = np.vecdot(gi, gi)
            s = g2.T @ (ai * ai)
            v = Gi * Gi
            v *= -c
            v += s
            v *= c
            sb = g2.sum(axis=0)
            t = bi * c
            t *= t
            vb = sb * c
            vb -= t
            keep["f", i] = (gg * np.vecdot(ai, ai), gg, s, v.min() >= 0, sb, vb.min() >= 0)

    def batch_grad_writes():
        plain()
        for i, (gi, ai) in enumerate(zip(g, a)):
            keep.pop(("b", i), None)
            keep["b", i] = b = np.empty((BATCH, gi.shape[1], ai.shape[1]), np.float32)
            b.fill(0.0)

    def batch_grad_product():
        plain()
        for i, (gi, ai) in enumerate(zip(g, a)):
            keep.pop(("b", i), None)
            keep["b", i] = np.einsum("no,ni->noi", gi, ai)

    def batch_grad_blocks():
        plain()
        for i, (gi, ai) in enumerate(zip(g, a)):
            keep.pop(("b", i), None)
            keep["b", i] = ext._outer_per_example(gi, ai, np)

    def kfac():
        plain()
        for i, ai in enumerate(a):
            keep.pop(("k", i), None)
            keep["k", i] = ai.T @ ai
    return {"BatchL2 + Variance + SumGradSquared": sgs, "BatchGrad": batch_grad_writes,
            "KFAC(1)": kfac}, {FIRST_ARRAYS: first_order_arrays, PRODUCT: batch_grad_product,
                               BLOCKS: batch_grad_blocks}


FIRST_ARRAYS = "BatchL2 + Variance + SumGradSquared, all its array work"
PRODUCT = "BatchGrad, bare einsum"
BLOCKS = "BatchGrad, bare blocks as collect writes them"


def backpack_steps(torch, params, x, y):
    """PyTorch's plain step and BackPACK's per row, on the same weights and batch; None if
    BackPACK is not installed."""
    try:
        import backpack
        from backpack import extensions as bext
    except ImportError:
        return None

    def make_model():
        layers = []
        for i in range(len(SMALL) - 1):
            lin = torch.nn.Linear(SMALL[i], SMALL[i + 1])
            with torch.no_grad():
                lin.weight.copy_(torch.from_numpy(params[2 * i]))
                lin.bias.copy_(torch.from_numpy(params[2 * i + 1]))
            layers.append(lin)
            if i < len(SMALL) - 2:
                layers.append(torch.nn.ReLU())
        return torch.nn.Sequential(*layers)

    # BackPACK's module hooks fire on outputs when the input needs no grad; PyTorch warns
    warnings.filterwarnings("ignore", message="Full backward hook is firing")
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    plain_model, plain_loss = make_model(), torch.nn.CrossEntropyLoss()
    model = backpack.extend(make_model())
    lossfunc = backpack.extend(torch.nn.CrossEntropyLoss())

    def plain():
        plain_model.zero_grad()
        plain_loss(plain_model(xt), yt).backward()

    def with_(names):
        def step():
            model.zero_grad()
            exts = [getattr(bext, n)() for n in names]
            with backpack.backpack(*exts):
                lossfunc(model(xt), yt).backward()
        return step
    return plain, {label: with_(names) for label, _, names, _ in ROWS}


def main():
    args = parse_args(__doc__.splitlines()[0])
    rounds = args.rounds or (5 if args.quick else 40)
    torch = import_torch(args.threads, args.no_torch)
    params = init_params(SMALL)
    x, y = make_batch(SMALL, BATCH)
    plain, ours = our_steps(params, x, y)
    cands = {"ours: plain": plain}
    cands.update({f"ours: {k}": v for k, v in ours.items()})
    floors, extra = floor_steps(plain, x)
    cands.update({f"floor: {k}": v for k, v in floors.items()})
    cands.update({f"floor: {k}": v for k, v in extra.items()})
    bp = backpack_steps(torch, params, x, y) if torch is not None else None
    if bp is not None:
        cands["torch: plain"] = bp[0]
        cands.update({f"backpack: {k}": v for k, v in bp[1].items()})
    print(machine_line())
    if torch is not None:
        print(f"PyTorch {torch.__version__}, BackPACK {'installed' if bp else 'not installed'}")
    times = compare(cands, rounds, inner=5 if not args.quick else 1)
    rows = [("plain step", fmt_time(median(times["ours: plain"])), "1.00x", "1.00x",
             fmt_time(median(times["torch: plain"])) if bp else "-", "1.00x" if bp else "-", "")]
    for label, _, _, target in ROWS:
        r = ratio(times, f"ours: {label}", "ours: plain")
        rb = ratio(times, f"backpack: {label}", "torch: plain") if bp else None
        rf = (f"{ratio(times, f'floor: {label}', 'ours: plain'):.2f}x" if label in floors
              else "-")
        rows.append((label, fmt_time(median(times[f"ours: {label}"])), f"{r:.2f}x", rf,
                     fmt_time(median(times[f"backpack: {label}"])) if bp else "-",
                     f"{rb:.2f}x" if bp else "-", f"<= {target}x {verdict(r, target)}"))
    print_table(f"Small MLP 784-128-64-10, batch {BATCH}, float32, {args.threads} thread(s), "
                f"{rounds} rounds", rows,
                header=("quantities", "ours", "ours / plain", "floor / plain", "BackPACK",
                        "BackPACK / torch plain", "target"))
    for label in extra:
        print(f"floor: {label}: {ratio(times, f'floor: {label}', 'ours: plain'):.2f}x")

if __name__ == "__main__":
    main()
