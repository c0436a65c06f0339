"""Regenerate the figures of docs/challenges.md: the challenges of Goodfellow et al. ch. 8, each
reproduced on a small MLP or a test function.

    python docs/gen_challenges.py                       # all figures into docs/images
    python docs/gen_challenges.py cliff zigzag          # some of them
    python docs/gen_challenges.py --out /tmp/figs --quick

Each challenge prints the numbers its paragraph in docs/challenges.md quotes.
"""
import argparse
import math
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))

import numpy as np  # noqa: E402

import tinygrad_opt as tg  # noqa: E402
from tinygrad_opt import curvature, data, landscape, nn, plots, studies  # noqa: E402
from tinygrad_opt.instruments import Instruments  # noqa: E402
from tinygrad_opt.nn import functional as F  # noqa: E402
from tinygrad_opt.optim import SGD, clip_grad_norm_  # noqa: E402
from tinygrad_opt.train import fit  # noqa: E402

QUICK = False


def digits_run(hidden=(32,), lr=0.1, seed=0, activation="relu"):
    """A seeded digits MLP, its SGD optimizer, loader and the train/val split."""
    X, y = data.load_digits(dtype=np.float32)
    (Xt, yt), (Xv, yv) = data.train_val_split(X, y, val_fraction=0.2, seed=0, stratify=True)
    tg.manual_seed(seed)
    model = nn.MLP([64, *hidden, 10], activation=activation)
    opt = SGD(model.parameters(), lr=lr)
    loader = data.DataLoader(Xt, yt, batch_size=32, seed=seed)
    return model, opt, loader, (Xt, yt), (Xv, yv)


def epochs(n):
    return max(2, n // 4) if QUICK else n


# ---------------------------------------------------------------- ill-conditioning
def ill_conditioning(out):
    """|g| and g^T H g on a fixed batch per epoch, beside the validation error (Fig. 8.1)."""
    model, _, loader, train, val = digits_run(hidden=(64, 64))
    opt = SGD(model.parameters(), lr=0.05, momentum=0.9)
    rec = studies.GradCurvatureRecorder(*studies.fixed_batch(train, 512))
    h = fit(model, opt, loader, F.cross_entropy, epochs(8), val=val, callbacks=[rec],
            progress=False)
    e = [r["epoch"] for r in rec.records]
    fig = plots.new_figure(figsize=(12, 3.8))
    a1, a2, a3 = fig.subplots(1, 3)
    a1.plot(e, [r["grad_norm"] for r in rec.records], "o-")
    a1.set(title="gradient norm |g| (fixed batch)", xlabel="epoch", ylabel="|g|")
    a2.plot(range(1, len(h.val_acc) + 1), [100 * (1 - a) for a in h.val_acc], "o-", color="C1")
    a2.set(title="validation error", xlabel="epoch", ylabel="error (%)")
    a3.semilogy(e, [r["first_order"] for r in rec.records], "o-", label="lr |g|^2 (first order)")
    a3.semilogy(e, [r["second_order"] if r["second_order"] > 0 else np.nan
                    for r in rec.records], "s-",
                label="lr^2 g^T H g / 2 (second order)")
    a3.set(title="the step's first- and second-order terms", xlabel="epoch",
           ylabel="loss change")
    a3.legend(fontsize=8)
    for ax in (a1, a2, a3):
        ax.grid(alpha=0.3)
    fig.suptitle("Ill-conditioning: the gradient grows while the error falls; g^T H g grows more "
                 "(SGD, lr 0.05, momentum 0.9)")
    fig.tight_layout()
    fig.savefig(os.path.join(out, "challenge_ill_conditioning.png"), dpi=110)
    r0, rm = rec.records[0], max(rec.records, key=lambda r: r["grad_norm"])
    k = rm["epoch"]
    print(f"ill-conditioning: |g| {r0['grad_norm']:.3f} at init -> {rm['grad_norm']:.3f} at "
          f"epoch {k}, val error {100 * (1 - h.val_acc[0]):.1f}% (epoch 1) -> "
          f"{100 * (1 - h.val_acc[k - 1]):.1f}% (epoch {k}) -> {100 * (1 - h.val_acc[-1]):.1f}%; "
          f"g^T H g {r0['gHg']:.2e} -> {rm['gHg']:.2e}; first/second order "
          f"{r0['first_order'] / r0['second_order']:.0f} -> "
          f"{rm['first_order'] / rm['second_order']:.2f}")


# ---------------------------------------------------------------- steepest descent zig-zag
def zigzag(out):
    """Steepest descent with exact line search on f = 1/2 x^T A x beside heavy-ball momentum."""
    A = np.diag([1.0, 10.0])
    At = tg.Tensor(A)
    start = np.array([10.0, 1.0])

    def path(step):
        x = tg.Tensor(start.copy(), requires_grad=True)
        closure = lambda: 0.5 * (x * (At @ x)).sum()                  # noqa: E731
        pts = [x.numpy()]
        for _ in range(25):
            step(x, closure)
            pts.append(x.numpy())
        return np.array(pts)

    def exact(x, closure):
        t = curvature.step_test(closure, [x], lr=1.0)   # optimal_lr = g^T g / g^T H g
        g = curvature.HVPOperator(closure, [x]).grad
        x.data -= t.optimal_lr * g

    kappa = 10.0
    lr, mu = 4 / (math.sqrt(10) + 1) ** 2, ((math.sqrt(kappa) - 1) / (math.sqrt(kappa) + 1)) ** 2
    state = {}

    def momentum(x, closure):
        opt = state.setdefault("opt", SGD([x], lr=lr, momentum=mu))
        opt.zero_grad()
        closure().backward()
        opt.step()
    sd, hb = path(exact), path(momentum)
    f = lambda p: 0.5 * np.einsum("ni,ij,nj->n", p, A, p)               # noqa: E731
    fig = plots.new_figure(figsize=(11, 4))
    a1, a2 = fig.subplots(1, 2, gridspec_kw=dict(width_ratios=(1.5, 1)))
    gx, gy = np.meshgrid(np.linspace(-11, 11, 200), np.linspace(-3.5, 3.5, 200))
    a1.contour(gx, gy, 0.5 * (gx ** 2 + 10 * gy ** 2), levels=np.geomspace(0.01, 60, 14),
               colors="0.7", linewidths=0.7)
    a1.plot(sd[:, 0], sd[:, 1], "o-", ms=3, label="steepest descent, exact line search")
    a1.plot(hb[:, 0], hb[:, 1], "s-", ms=3, label=f"momentum (lr {lr:.3f}, mu {mu:.3f})")
    a1.set(title="paths on f = (x^2 + 10 y^2) / 2", xlabel="x", ylabel="y")
    a1.legend(fontsize=8)
    a2.semilogy(f(sd), "o-", ms=3, label="exact line search")
    a2.semilogy(f(hb), "s-", ms=3, label="momentum")
    a2.set(title="f per iteration", xlabel="iteration", ylabel="f (log scale)")
    a2.legend(fontsize=8)
    a2.grid(alpha=0.3)
    fig.suptitle("Ill-conditioning: each exact line search step is orthogonal to the last")
    fig.tight_layout()
    fig.savefig(os.path.join(out, "challenge_zigzag.png"), dpi=110)
    d = np.diff(sd, axis=0)
    cos = [float(d[i] @ d[i + 1] / (np.linalg.norm(d[i]) * np.linalg.norm(d[i + 1]) + 1e-300))
           for i in range(3)]
    print(f"zigzag: consecutive steepest-descent steps have cosine {cos[0]:.1e}, {cos[1]:.1e}; "
          f"f after 25 steps: exact line search {f(sd)[-1]:.2e}, momentum {f(hb)[-1]:.2e}")


# ---------------------------------------------------------------- local minima
def local_minima(out):
    """Two equivalent minima: a solution and its hidden units permuted (weight-space symmetry)."""
    model, opt, loader, train, val = digits_run(hidden=(32,), lr=0.1)
    fit(model, opt, loader, F.cross_entropy, epochs(15), progress=False)
    X, y = studies.fixed_batch(train, 512)
    params = list(model.parameters())
    sol = [p.data.copy() for p in params]
    perm = np.random.default_rng(0).permutation(32)
    W1, b1, W2, b2 = sol
    permuted = [W1[perm], b1[perm], W2[:, perm], b2]
    alphas = np.linspace(-0.25, 1.25, 31 if not QUICK else 13)
    closure = lambda: F.cross_entropy(model(X), y)                      # noqa: E731
    same = landscape.interpolate(closure, params, sol, permuted, [0.0, 1.0])
    line = landscape.interpolate(closure, params, sol, permuted, alphas)
    finals = []
    for seed in range(3 if QUICK else 5):
        m, o, ld, tr, _ = digits_run(hidden=(32,), lr=0.1, seed=seed)
        fit(m, o, ld, F.cross_entropy, epochs(15), progress=False)
        finals.append(studies.evaluate_loss(m, F.cross_entropy, X, y))
    fig = plots.new_figure(figsize=(11, 4))
    a1, a2 = fig.subplots(1, 2, gridspec_kw=dict(width_ratios=(1.5, 1)))
    a1.plot(alphas, line, "o-", ms=3)
    a1.set(title="loss from a solution to the same network with its hidden units permuted",
           xlabel="alpha: (1 - alpha) theta* + alpha P theta*", ylabel="train-batch loss")
    a1.grid(alpha=0.3)
    a2.bar(range(len(finals)), finals, color="C2")
    a2.set(title="final loss from different seeds", xlabel="seed", ylabel="train-batch loss")
    fig.suptitle("Local minima: many equivalent minima (symmetry), all of low cost")
    fig.tight_layout()
    fig.savefig(os.path.join(out, "challenge_local_minima.png"), dpi=110)
    print(f"local minima: loss at theta* {same[0]:.4f} = at P theta* {same[1]:.4f}; midpoint "
          f"{line[np.argmin(abs(alphas - 0.5))]:.4f}; seeds' final losses "
          f"{', '.join(f'{v:.3f}' for v in finals)}")


# ---------------------------------------------------------------- saddles and plateaus
def saddles(out):
    """Negative eigenvalue mass of the Hessian early in training (SLQ), and the interpolation."""
    model, opt, loader, train, val = digits_run(hidden=(32,), lr=0.1, activation="tanh")
    X, y = studies.fixed_batch(train, 512)
    Xv, yv = studies.fixed_batch(val, 256)
    theta0 = [p.data.copy() for p in model.parameters()]
    n = epochs(12)
    rec = studies.SpectrumRecorder(X, y, epochs=sorted({1, n // 4, n // 2, n}),
                                   n_iter=40 if QUICK else 80, n_vectors=2 if QUICK else 4)
    fit(model, opt, loader, F.cross_entropy, n, callbacks=[rec], progress=False)
    plots.plot_spectra(rec.records, os.path.join(out, "challenge_saddles.png"),
                       title="Saddle points: negative curvature is largest early in training")
    st = studies.surface_study(model, F.cross_entropy, (X, y), (Xv, yv), theta0,
                               np.linspace(-0.5, 1.5, 21 if not QUICK else 9),
                               np.linspace(-1, 1, 21 if not QUICK else 7))
    plots.plot_surface(st, os.path.join(out, "challenge_interpolation.png"),
                       title="Plateaus: no obstacle between initialization and solution")
    masses = ", ".join(f"epoch {r['epoch']}: {100 * r['negative_mass']:.1f}%" for r in rec.records)
    print(f"saddles: eigenvalues below 0 {masses}; lambda_min {rec.records[0]['lambda_min']:.3f}"
          f" -> {rec.records[-1]['lambda_min']:.3f}")
    a = st["alphas"]
    i0, i1 = np.argmin(abs(a)), np.argmin(abs(a - 1))
    print(f"interpolation: train loss {st['train'][i0]:.3f} at init -> {st['train'][i1]:.3f} at "
          f"the solution, barrier {st['barrier']:.2e} (<= 0: none)")


# ---------------------------------------------------------------- cliffs
def cliff(out):
    """A cliff (a sigmoid wall of height 5) beside a shallow bowl: SGD with and without clipping."""
    def f(x, y):
        return 0.1 * ((x - 3) ** 2 + 2 * y ** 2) + 5 * (20 * (x - 1.5)).sigmoid()

    def run(clip):
        p = tg.Tensor(np.array([-1.0, 1.0]), requires_grad=True)
        opt = SGD([p], lr=0.9)
        pts, losses = [p.numpy()], []
        for _ in range(60):
            opt.zero_grad()
            loss = f(p[0], p[1])
            losses.append(loss.item())
            loss.backward()
            if clip:
                clip_grad_norm_([p], clip)
            opt.step()
            pts.append(p.numpy())
        return np.array(pts), np.array(losses)
    raw, lr_ = run(None)
    clipped, lc = run(1.0)
    fig = plots.new_figure(figsize=(11, 4))
    a1, a2 = fig.subplots(1, 2, gridspec_kw=dict(width_ratios=(1.5, 1)))
    lo = min(raw[:, 0].min(), -2) - 1
    gx, gy = np.meshgrid(np.linspace(lo, 4, 400), np.linspace(-2, 2, 200))
    fz = 0.1 * ((gx - 3) ** 2 + 2 * gy ** 2) + 5 / (1 + np.exp(-20 * (gx - 1.5)))
    a1.contourf(gx, gy, fz, levels=30, cmap="Greys")
    a1.plot(raw[:, 0], raw[:, 1], "o-", ms=3, color="C3", label="SGD lr 0.9")
    a1.plot(clipped[:, 0], clipped[:, 1], "s-", ms=3, color="C0", label="SGD lr 0.9, clip 1")
    a1.set(title="paths (the wall rises at x = 1.5)", xlabel="x", ylabel="y")
    a1.legend(fontsize=8)
    a2.plot(lr_, "o-", ms=3, color="C3", label="no clipping")
    a2.plot(lc, "s-", ms=3, color="C0", label="clipped")
    a2.set(title="loss per step", xlabel="step", ylabel="f")
    a2.legend(fontsize=8)
    a2.grid(alpha=0.3)
    fig.suptitle("Cliffs: one step at the wall throws SGD far away; clipping bounds the step")
    fig.tight_layout()
    fig.savefig(os.path.join(out, "challenge_cliff.png"), dpi=110)
    jump = np.abs(np.diff(raw[:, 0])).max()
    print(f"cliff: largest step without clipping {jump:.1f} (x reaches {raw[:, 0].min():.1f}); "
          f"with clipping at most {np.abs(np.diff(clipped, axis=0)).max():.2f}; final loss "
          f"{lr_[-1]:.3f} vs {lc[-1]:.3f}")


# ---------------------------------------------------------------- inexact gradients
def noise_scale(out):
    """The gradient noise scale B_simple and the norm test as training proceeds."""
    model, opt, loader, train, val = digits_run(hidden=(32,), lr=0.1)
    inst = Instruments(["Loss", "GradNorm", "NormTest", "GradientNoiseScale"],
                       every=9 if not QUICK else 15)
    fit(model, opt, loader, F.cross_entropy, epochs(12), callbacks=[inst], progress=False)
    plots.plot_dashboard(inst.history, os.path.join(out, "challenge_noise_scale.png"),
                         title="Inexact gradients: the noise scale grows as the loss falls")
    b = inst.column("GradientNoiseScale")
    b = b[np.isfinite(b)]
    print(f"noise scale: B_simple {b[:3].mean():.1f} over the first records -> "
          f"{b[-3:].mean():.1f} over the last (batch 32); norm test "
          f"{inst.column('NormTest')[:3].mean():.2f} -> {inst.column('NormTest')[-3:].mean():.2f}")


# ---------------------------------------------------------------- local vs global structure
def local_global(out):
    """Local descent heads away from the global minimum: f(x) = 0.6 sigmoid(3x) - exp(-(x-3)^2)."""
    def f(x):
        return 0.6 * (3 * x).sigmoid() - (-(x - 3) ** 2).exp()

    def run(x0):
        x = tg.Tensor(np.array(x0), requires_grad=True)
        opt = SGD([x], lr=1.0)
        xs, gs = [x0], []
        for _ in range(200):
            opt.zero_grad()
            f(x).backward()
            gs.append(abs(x.grad.item()))
            opt.step()
            xs.append(x.item())
        return np.array(xs), np.array(gs)
    left, gl = run(-0.5)
    right, gr = run(1.5)
    grid = np.linspace(-8, 6, 400)
    fg = 0.6 / (1 + np.exp(-3 * grid)) - np.exp(-(grid - 3) ** 2)
    fig = plots.new_figure(figsize=(11, 4))
    a1, a2 = fig.subplots(1, 2)
    a1.plot(grid, fg, color="0.3")
    for xs, c, lab in ((left, "C3", "start -0.5"), (right, "C0", "start 1.5")):
        ys = 0.6 / (1 + np.exp(-3 * xs)) - np.exp(-(xs - 3) ** 2)
        a1.plot(xs, ys, "o", ms=3, color=c, label=lab)
    a1.set(title="f(x) and gradient-descent iterates", xlabel="x", ylabel="f")
    a1.legend(fontsize=8)
    a2.semilogy(gl, color="C3", label="start -0.5: |f'| -> 0, no minimum")
    a2.semilogy(gr, color="C0", label="start 1.5: the global minimum")
    a2.set(title="gradient magnitude", xlabel="step", ylabel="|f'(x)|")
    a2.legend(fontsize=8)
    a2.grid(alpha=0.3)
    fig.suptitle("Poor correspondence between local and global structure")
    fig.tight_layout()
    fig.savefig(os.path.join(out, "challenge_local_global.png"), dpi=110)
    print(f"local/global: from -0.5 x -> {left[-1]:.2f} with |f'| {gl[-1]:.1e} (f "
          f"{f(tg.Tensor(left[-1])).item():.3f}); from 1.5 x -> {right[-1]:.3f} (f "
          f"{f(tg.Tensor(right[-1])).item():.3f})")


CHALLENGES = {"ill-conditioning": ill_conditioning, "zigzag": zigzag,
              "local-minima": local_minima, "saddles": saddles, "cliff": cliff,
              "noise-scale": noise_scale, "local-global": local_global}


def main():
    global QUICK
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("names", nargs="*", choices=[[]] + list(CHALLENGES),
                   help=f"which figures (default: all): {', '.join(CHALLENGES)}")
    p.add_argument("--out", default=os.path.join(HERE, "images"))
    p.add_argument("--quick", action="store_true", help="shorter runs, for a smoke test")
    args = p.parse_args()
    QUICK = args.quick
    os.makedirs(args.out, exist_ok=True)
    for name in args.names or CHALLENGES:
        CHALLENGES[name](args.out)


if __name__ == "__main__":
    main()
