"""Training studies: instruments, Hessian spectra and loss surfaces over a run.

What the commands `tinygrad-opt instruments | spectrum | surface` and docs/gen_challenges.py
run, usable from a notebook with any experiment.Setup-like object (model, optimizer, loader,
train, val, fit(callbacks)):

    rec = SpectrumRecorder(*fixed_batch(s.train, 512))
    s.fit([rec])
    plot_spectra(rec.records, "spectrum.png")

Measurements use a fixed batch of training samples, so their changes come from the parameters,
not from the data; they leave the CPU random stream and the parameters as they were.
"""
import math

from . import backend, curvature, landscape
from .engine import no_grad
from .instruments import Instruments, _same_random_stream, dashboard
from .tensor import Tensor
from .train import Callback

np = backend.np     # host NumPy for records and pictures


def fixed_batch(data, n, seed=0):
    """(X, y) Tensors: n samples of the (X, y) pair `data`, drawn once without replacement."""
    X, y = data
    m = X.shape[0]
    idx = np.sort(np.random.default_rng(seed).permutation(m)[:min(int(n), m)])
    idx = backend.to_device(idx, backend.device_of(X.data if isinstance(X, Tensor) else X))
    X = X.data if isinstance(X, Tensor) else X
    y = y.data if isinstance(y, Tensor) else y
    return Tensor(X[idx]), Tensor(y[idx])


def _cross_entropy():
    from .nn import functional as F
    return F.cross_entropy


class SpectrumRecorder(Callback):
    """The Hessian eigenvalue density of the loss on (X, y) at the start of training and after
    the epochs in `epochs` (None: every epoch), by stochastic Lanczos quadrature.

    records: dicts with epoch, grid, density, nodes (curvature.SpectralNodes), lambda_min and
    lambda_max (the extreme nodes), negative_mass (the share of eigenvalues below 0) and trace
    (n * the first moment).
    """

    def __init__(self, X, y, loss_fn=None, epochs=None, n_iter=50, n_vectors=2, seed=0):
        self.X, self.y = X, y
        self.loss_fn = _cross_entropy() if loss_fn is None else loss_fn
        self.epochs = None if epochs is None else set(epochs)
        self.n_iter, self.n_vectors, self.seed = int(n_iter), int(n_vectors), seed
        self.records = []

    def measure(self, model, epoch):
        params = list(model.parameters())
        with _same_random_stream():
            sn = curvature.spectral_nodes(lambda: self.loss_fn(model(self.X), self.y), params,
                                          self.n_iter, self.n_vectors, self.seed)
        grid, density = sn.density()
        live = sn.weights > 0
        rec = dict(epoch=epoch, grid=grid, density=density, nodes=sn,
                   lambda_min=float(sn.nodes[live].min()), lambda_max=float(sn.nodes[live].max()),
                   negative_mass=sn.mass_below(0.0),
                   trace=sum(p.size for p in params) * sn.moment(1))
        self.records.append(rec)
        return rec

    def on_train_begin(self, run):
        if not self.records:
            self.measure(run.model, 0)

    def on_epoch_end(self, run):
        done = run.epoch + 1
        if self.epochs is None or done in self.epochs:
            self.measure(run.model, done)


class GradCurvatureRecorder(Callback):
    """Per epoch, on (X, y): the gradient norm |g|, the curvature along it g^T H g, and the
    second-order change of a gradient step, 1/2 lr^2 g^T H g, beside its first-order gain
    lr |g|^2 (Goodfellow et al. eq. 8.10: ill-conditioning shows when the first outgrows the
    second). records: dicts with epoch, grad_norm, gHg, first_order, second_order, lr."""

    def __init__(self, X, y, loss_fn=None):
        self.X, self.y = X, y
        self.loss_fn = _cross_entropy() if loss_fn is None else loss_fn
        self.records = []

    def measure(self, run, epoch):
        lr = run.optimizer.param_groups[0]["lr"]
        with _same_random_stream():
            t = curvature.step_test(lambda: self.loss_fn(run.model(self.X), self.y),
                                    list(run.model.parameters()), lr=lr)
        self.records.append(dict(epoch=epoch, grad_norm=math.sqrt(t.grad_norm_sq), gHg=t.gHg,
                                 first_order=t.first_order, second_order=t.second_order, lr=lr))

    def on_train_begin(self, run):
        if not self.records:
            self.measure(run, 0)

    def on_epoch_end(self, run):
        self.measure(run, run.epoch + 1)


def surface_study(model, loss_fn, train, val, theta0, alphas, grid, seed=0):
    """Loss along the line from theta0 to the current parameters (train and val batches) and
    on a filter-normalized random plane around the current parameters (train batch).

    Returns a dict: alphas, train and val (interpolation losses), barrier (how far the train
    curve rises, for alpha in [0, 1], above the higher of its two ends: 0 or less means no
    obstacle), grid, surface (len(grid) x len(grid)) and the directions' seed.
    """
    params = list(model.parameters())
    end = [p.data.copy() for p in params]
    out = dict(alphas=np.asarray(alphas, dtype=float), grid=np.asarray(grid, dtype=float),
               seed=seed)
    for name, (X, y) in (("train", train), ("val", val)):
        out[name] = landscape.interpolate(lambda: loss_fn(model(X), y), params, theta0, end,
                                          alphas)
    a, L = out["alphas"], out["train"]
    inside = (a >= 0) & (a <= 1)
    ends = landscape.interpolate(lambda: loss_fn(model(train[0]), train[1]), params, theta0,
                                 end, [0.0, 1.0])
    out["barrier"] = float(np.max(L[inside]) - ends.max()) if inside.any() else math.nan
    with _same_random_stream():
        d1 = landscape.random_direction(params, seed=seed)
        d2 = landscape.random_direction(params, seed=seed + 1)
    X, y = train
    out["surface"] = landscape.surface_2d(lambda: loss_fn(model(X), y), params, d1, d2,
                                          grid, grid)
    return out


def evaluate_loss(model, loss_fn, X, y):
    """loss_fn(model(X), y) as a float, without a graph."""
    with no_grad():
        return float(loss_fn(model(X), y).item())


# ---------------------------------------------------------------- pictures
def _figure(*args, **kwargs):
    try:
        from ._optional import require
    except ImportError:
        from .cli import require
    require("matplotlib", "drawing pictures")
    from matplotlib.figure import Figure
    return Figure(*args, **kwargs)


def plot_spectra(records, path, title="Hessian eigenvalue density over training"):
    """The densities of SpectrumRecorder.records on a log scale, one colour per epoch, and the
    negative mass and extreme eigenvalues per epoch beside them."""
    from matplotlib import colormaps
    fig = _figure(figsize=(12, 4.2))
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
    """Interpolation curves (train and val) and the 2-D surface's contours from surface_study."""
    fig = _figure(figsize=(12, 4.6))
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


__all__ = ["fixed_batch", "SpectrumRecorder", "GradCurvatureRecorder", "surface_study",
           "evaluate_loss", "plot_spectra", "plot_surface", "Instruments", "dashboard"]
