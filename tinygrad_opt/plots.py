"""Pictures of optimizer comparisons, paths on 2-D test functions, curvature over training,
instrument dashboards, Hessian spectra and loss surfaces.

Each function draws on an off-screen matplotlib Figure (no pyplot, no window, no global
backend switch) and writes a PNG to `path`; it returns the Figure, so a notebook can show or
change it. matplotlib is optional: a missing install raises MissingDependency naming the extra.
"""
import math

from . import backend
from ._optional import require

np = backend.np                 # host NumPy: contour grids and plotted series


def new_figure(*args, **kwargs):
    """A matplotlib Figure drawn off-screen."""
    require("matplotlib", "drawing pictures")
    from matplotlib.figure import Figure
    return Figure(*args, **kwargs)


def colours(n):
    """n distinct colours (tab10, then tab20)."""
    from matplotlib import colormaps
    cmap = colormaps["tab10" if n <= 10 else "tab20"]
    return [cmap(i) for i in range(n)]


def _integer_epochs(*axes):
    from matplotlib.ticker import MaxNLocator
    for ax in axes:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))


# ---------------------------------------------------------------- compare
def plot_compare(results, path, target=None, title=None):
    """Training loss (log scale) and validation accuracy per epoch, one colour per optimizer.

    results: objects with .name, .lr and .history (a train.History, or None for a run that
    diverged or failed, which is left out); target: a validation accuracy in (0, 1) drawn as a
    dashed line.
    """
    fig = new_figure(figsize=(11, 4.2), layout="constrained")
    ax_loss, ax_acc = fig.subplots(1, 2)
    done = [r for r in results if r.history is not None]
    for r, c in zip(results, colours(len(results))):
        if r.history is None:
            continue
        h = r.history
        epochs = [e + 1 for e in h.epoch]
        ax_loss.plot(epochs, h.train_loss, color=c, lw=1.8, label=f"{r.name} (lr {r.lr:g})")
        if h.val_acc and None not in h.val_acc:
            ax_acc.plot(epochs, [100 * a for a in h.val_acc], color=c, lw=1.8, label=r.name)
    ax_loss.set_yscale("log")
    ax_loss.set(xlabel="epoch", ylabel="training loss (smoothed, log scale)",
                title="Training loss")
    _integer_epochs(ax_loss, ax_acc)
    accs = [100 * a for r in done for a in r.history.val_acc if a is not None]
    if target is not None:
        ax_acc.axhline(100 * target, color="0.5", ls="--", lw=1,
                       label=f"target {100 * target:g}%")
        accs.append(100 * target)
        lo = min(accs)
        ax_acc.set_ylim(max(0.0, min(lo, 100 * target - 5) - 1), 100.5)
    ax_acc.set(xlabel="epoch", ylabel="validation accuracy (%)", title="Validation accuracy")
    for ax in (ax_loss, ax_acc):
        ax.grid(True, which="major", alpha=0.3)
    ax_loss.legend(fontsize=9)
    if target is not None:
        ax_acc.legend(fontsize=9, loc="lower right")
    if title:
        fig.suptitle(title)
    fig.savefig(path, dpi=110)
    return fig


# ---------------------------------------------------------------- landscape
def exits(xy, xlim, ylim):
    """Where an (n, 2) path leaves the box: a list of (point on the edge, step direction), one
    per step from a point inside to one outside (a point that is not finite is outside)."""
    x, y = xy[:, 0], xy[:, 1]
    with np.errstate(invalid="ignore"):
        inside = (np.isfinite(xy).all(axis=1) & (xlim[0] <= x) & (x <= xlim[1])
                  & (ylim[0] <= y) & (y <= ylim[1]))
    out = []
    for i in np.flatnonzero(inside[:-1] & ~inside[1:]):
        a, b = xy[i], xy[i + 1]
        if not np.isfinite(b).all():
            out.append((a, None))
            continue
        d, t = b - a, 1.0
        for k, (lo, hi) in enumerate((xlim, ylim)):     # the first edge that a -> b crosses
            if b[k] > hi:
                t = min(t, (hi - a[k]) / d[k])
            elif b[k] < lo:
                t = min(t, (lo - a[k]) / d[k])
        out.append((a + t * d, d))
    return out


def plot_landscape(problems, names, paths, path, resolution=300):
    """One panel per 2-D problem (contours, minima, start, each optimizer's path) and a legend.

    problems: testfunctions.Problem objects; names: optimizer names; paths[problem.name, name]:
    the (n, 2) iterates. The paths are clipped to the panel; an arrowhead on the edge marks
    each place where one leaves it, pointing the way it went.
    """
    n = len(problems) + 1
    cols = min(3, n)
    rows = -(-n // cols)
    fig = new_figure(figsize=(5.2 * cols, 4.3 * rows), layout="constrained")
    axes = np.atleast_1d(fig.subplots(rows, cols)).ravel()
    colour = dict(zip(names, colours(len(names))))
    any_left = False
    for ax, p in zip(axes, problems):
        xs = np.linspace(*p.xlim, resolution)
        ys = np.linspace(*p.ylim, resolution)
        X, Y = np.meshgrid(xs, ys)
        Z = p.f(X, Y)
        if p.log_levels:
            lo = max(Z.min(), 1e-3)
            levels = np.logspace(np.log10(lo), np.log10(Z.max()), 20)
        else:
            levels = np.linspace(Z.min(), Z.max(), 22)
        ax.contour(X, Y, Z, levels=levels, colors="0.6", linewidths=0.6, linestyles="solid")
        for name in names:
            xy = paths[p.name, name]
            ax.plot(xy[:, 0], xy[:, 1], "-", color=colour[name], lw=1.6, alpha=0.9)
            ax.plot(xy[-1, 0], xy[-1, 1], "o", color=colour[name], ms=4)     # clipped if out
            for point, d in exits(xy, p.xlim, p.ylim):   # an arrowhead where it leaves
                angle = 0 if d is None else math.degrees(math.atan2(d[1], d[0])) - 90
                ax.plot(*point, marker=(3, 0, angle), color=colour[name], ms=9, clip_on=False)
                any_left = True
        ax.plot(*p.start, "k^", ms=8)
        for m in p.minima:
            ax.plot(*m, "*", color="gold", mec="k", ms=14)
        for m in p.saddles:
            ax.plot(*m, "X", color="w", mec="k", ms=10)
        ax.set(xlim=p.xlim, ylim=p.ylim, title=p.tex, xlabel="$x$", ylabel="$y$")
    legend_ax = axes[len(problems)]
    legend_ax.axis("off")
    handles = [legend_ax.plot([], [], "-", color=colour[n], lw=2.5, label=n)[0] for n in names]
    handles.append(legend_ax.plot([], [], "k^", ms=8, label="start")[0])
    handles.append(legend_ax.plot([], [], "*", color="gold", mec="k", ms=14, label="minimum")[0])
    handles.append(legend_ax.plot([], [], "X", color="w", mec="k", ms=10, label="saddle point")[0])
    handles.append(legend_ax.plot([], [], "o", color="0.3", ms=4, label="end of a path")[0])
    if any_left:
        handles.append(legend_ax.plot([], [], marker=(3, 0, -90), ls="", color="0.3", ms=9,
                                      label="path leaves the panel")[0])
    legend_ax.legend(handles=handles, loc="upper center", fontsize=12, frameon=False,
                     title="optimizer", title_fontsize=12)
    legend_ax.text(0.5, 0.0, "same start for all; lr tuned per function and optimizer",
                   ha="center", va="bottom", fontsize=9, color="0.3",
                   transform=legend_ax.transAxes)
    for ax in axes[len(problems) + 1:]:
        ax.axis("off")
    fig.savefig(path, dpi=80)
    return fig


# ---------------------------------------------------------------- curvature
def spread(record):
    """lambda_max / |lambda_min| of a curvature record: the condition number when PD."""
    r = record
    return r.lambda_max / abs(r.lambda_min) if r.lambda_min != 0 else math.inf


def plot_curvature(records, path, title=None):
    """Top eigenvalues with 2/lr and g^T H g / g^T g; lambda_min; the spread, per epoch.

    records: CurvatureMonitor.history (CurvatureRecord objects with step, lr, top_eigenvalues,
    lambda_min, lambda_max, condition_number, positive_definite, grad_curvature).
    """
    fig = new_figure(figsize=(13, 4), layout="constrained")
    ax_top, ax_min, ax_cond = fig.subplots(1, 3)
    ep = [r.step for r in records]
    tops = np.array([r.top_eigenvalues for r in records])
    c = colours(tops.shape[1] + 1)
    for i in range(tops.shape[1]):
        ax_top.plot(ep, tops[:, i], "o-", ms=3, color=c[i], label=rf"$\lambda_{i + 1}$")
    ax_top.plot(ep, [r.grad_curvature for r in records], "s--", ms=3, color=c[-1],
                label=r"$g^\top H g \,/\, g^\top g$")
    ax_top.plot(ep, [2.0 / r.lr for r in records], ":", color="k",
                label=r"$2/\mathrm{lr}$ (stability edge)")
    ax_top.set_yscale("log")
    ax_top.set(xlabel="epoch", ylabel="curvature", title="Largest Hessian eigenvalues")
    ax_top.legend(fontsize=8)
    ax_min.plot(ep, [r.lambda_min for r in records], "o-", ms=3, color="tab:red")
    ax_min.axhline(0.0, color="0.5", lw=1)
    ax_min.set(xlabel="epoch", ylabel=r"$\lambda_{\min}$",
               title=r"Smallest eigenvalue ($< 0$: indefinite)")
    ax_cond.plot(ep, [spread(r) for r in records], "o-", ms=3, color="tab:purple",
                 label=r"$\lambda_{\max} / |\lambda_{\min}|$")
    pd = [(e, r.condition_number) for e, r in zip(ep, records) if r.positive_definite]
    if pd:
        ax_cond.plot(*zip(*pd), "D", color="k", ms=5, label=r"condition number (PD)")
    ax_cond.set_yscale("log")
    ax_cond.set(xlabel="epoch", ylabel="ratio", title="Spread of the spectrum")
    ax_cond.legend(fontsize=8)
    for ax in (ax_top, ax_min, ax_cond):
        ax.grid(True, alpha=0.3)
    _integer_epochs(ax_top, ax_min, ax_cond)
    if title:
        fig.suptitle(title)
    fig.savefig(path, dpi=110)
    return fig


# ---------------------------------------------------------------- instruments, spectra, surfaces
_LOG = ("GradNorm", "UpdateSize", "Distance", "NormTest", "InnerTest", "OrthoTest", "GSNR",
        "GradientNoiseScale", "TICDiag", "HessMaxEV", "Loss")
_LABELS = {
    "Loss": "minibatch loss", "GradNorm": "|g|", "UpdateSize": "|theta_t+1 - theta_t|",
    "Distance": "|theta - theta_0|", "NormTest": "norm test", "InnerTest": "inner-product test",
    "OrthoTest": "orthogonality test", "GSNR": "mean GSNR", "Alpha": "alpha",
    "GradientNoiseScale": "B_simple (examples)", "TICDiag": "tr(diag(H)^-1 C)",
    "HessTrace": "tr(H)", "HessMaxEV": "lambda_max(H)",
}


def plot_dashboard(history, path, title="Instruments"):
    """One PNG with a titled panel per quantity in `history` (Instruments.history); returns
    the matplotlib Figure.

    Log scales where a positive series spans more than two decades; the gradient-test panels
    draw the threshold 1; GradHist1d shows the first and the last recorded histogram
    (steps it did not bin hold None).
    """
    from matplotlib.ticker import MaxNLocator

    steps = np.asarray(history["step"], dtype=float)
    names = [k for k in history if k != "step"]
    if not names or steps.size == 0:
        raise ValueError("dashboard: the history holds no recorded steps")
    cols = 3 if len(names) > 4 else 2
    rows = math.ceil(len(names) / cols)
    fig = new_figure(figsize=(4.6 * cols, 3.1 * rows))
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax, name in zip(axes.flat, names):
        if name == "GradHist1d":
            _hist_panel(ax, history[name], steps)
            continue
        y = np.array([math.nan if v is None else v for v in history[name]], dtype=float)
        ax.plot(steps, y, ".-" if y.size < 60 else "-", lw=1.2, ms=3)
        ax.set_title(name)
        if name in ("NormTest", "InnerTest", "OrthoTest"):
            ax.axhline(1.0, color="k", ls="--", lw=0.8, label="threshold 1")
            ax.legend(fontsize=7, loc="best")
        if name == "Alpha":
            ax.axhline(0.0, color="k", ls="--", lw=0.8, label="lands on the minimum")
            ax.legend(fontsize=7, loc="best")
            if np.nanmax(np.abs(y), initial=0.0) > 3:          # a few wild fits hide the rest
                ax.set_ylim(-3.2, 3.2)
                ax.set_title("Alpha (axis clipped to [-3, 3])")
        pos = y[np.isfinite(y) & (y > 0)]
        if name in _LOG and pos.size == np.isfinite(y).sum() and pos.size and \
                pos.max() > 100 * pos.min():
            ax.set_yscale("log")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("step")
        ax.set_ylabel(_LABELS.get(name, name))
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(names):]:
        ax.axis("off")
    fig.suptitle(title, fontsize=13)
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    fig.savefig(path, dpi=110)
    return fig


def _hist_panel(ax, hists, steps):
    binned = [i for i, h in enumerate(hists) if h is not None]    # None: a step not binned
    shown = [(binned[0], "first"), (binned[-1], "last")] if len(binned) > 1 else \
        [(i, "") for i in binned]
    for i, label in shown:
        edges, counts = hists[i]
        ax.stairs(counts, edges, label=f"step {int(steps[i])} {label}".strip())
    ax.set_yscale("log", nonpositive="mask")
    ax.set_title("GradHist1d")
    ax.set_xlabel("individual gradient element g_n,j")
    ax.set_ylabel("count")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)


def plot_spectra(records, path, title="Hessian eigenvalue density over training"):
    """The densities of studies.SpectrumRecorder.records on a log scale, one colour per epoch,
    and the negative mass and extreme eigenvalues per epoch beside them."""
    from matplotlib import colormaps
    fig = new_figure(figsize=(12, 4.2))
    ax, ax2 = fig.subplots(1, 2, gridspec_kw=dict(width_ratios=(1.6, 1)))
    cmap = colormaps["viridis"]
    for i, r in enumerate(records):
        c = cmap(i / max(len(records) - 1, 1))
        ax.semilogy(r["grid"], np.maximum(r["density"], 1e-8), color=c, lw=1.3,
                    label=f"epoch {r['epoch']}")
    ax.axvline(0.0, color="k", lw=0.7, ls="--")
    ax.set_ylim(1e-6, None)
    ax.set_xlabel("eigenvalue lambda")
    ax.set_ylabel("density (log scale)")
    ax.set_title("spectral density (stochastic Lanczos quadrature)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    epochs = [r["epoch"] for r in records]
    ax2.plot(epochs, [100 * r["negative_mass"] for r in records], "o-", color="C3")
    ax2.set_xlabel("epoch")
    ax2.set_ylabel("eigenvalues below 0 (%)", color="C3")
    ax2.set_title("negative mass and the spectrum's ends")
    ax3 = ax2.twinx()
    ax3.plot(epochs, [r["lambda_max"] for r in records], "s-", color="C0", label="lambda_max")
    ax3.plot(epochs, [-r["lambda_min"] for r in records], "^-", color="C2",
             label="-lambda_min")
    ax3.set_yscale("log")
    ax3.set_ylabel("|extreme eigenvalue|")
    ax3.legend(fontsize=8, loc="center right")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return fig


def plot_surface(study, path, title="Loss between initialization and solution"):
    """Interpolation curves (train and val) and the 2-D surface's contours (surface_study)."""
    fig = new_figure(figsize=(12, 4.6))
    ax, ax2 = fig.subplots(1, 2)
    a = study["alphas"]
    ax.plot(a, study["train"], label="train batch", lw=1.6)
    ax.plot(a, study["val"], label="validation", lw=1.6)
    for x, lab in ((0, "init"), (1, "solution")):
        ax.axvline(x, color="k", ls=":", lw=0.8)
        ax.annotate(lab, (x, 0.02), xycoords=("data", "axes fraction"), ha="right",
                    rotation=90, fontsize=8)
    ax.set_yscale("log")
    ax.set_xlabel("alpha: theta = (1 - alpha) theta_init + alpha theta_final")
    ax.set_ylabel("loss (log scale)")
    ax.set_title("linear interpolation (Goodfellow et al. 2015)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    g, Z = study["grid"], study["surface"]
    levels = np.quantile(Z, np.linspace(0.0, 0.95, 15))
    cs = ax2.contour(g, g, np.log10(Z).T, levels=np.unique(np.log10(levels)), cmap="viridis")
    ax2.clabel(cs, fontsize=7, fmt="%.2f")
    ax2.plot([0], [0], "r*", ms=10, label="solution")
    ax2.set_xlabel("alpha (filter-normalized direction 1)")
    ax2.set_ylabel("beta (filter-normalized direction 2)")
    ax2.set_title("log10 loss around the solution (Li et al. 2018)")
    ax2.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return fig
