"""Training studies: instruments, Hessian spectra and loss surfaces over a run.

What the commands `tinygrad-opt instruments | spectrum | surface` and docs/gen_challenges.py
run, usable from a notebook with any experiment.Setup-like object (model, optimizer, loader,
train, val, fit(callbacks)):

    rec = SpectrumRecorder(*fixed_batch(s.train, 512))
    s.fit([rec])
    plots.plot_spectra(rec.records, "spectrum.png")

Measurements use a fixed batch of training samples, so their changes come from the parameters,
not from the data; they leave the CPU random stream and the parameters as they were.
"""
import math

from . import backend, curvature, landscape
from .engine import no_grad
from .instruments import _same_random_stream
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
    lambda_max (the extreme nodes), negative_mass and trace (n * the first moment).
    negative_mass is the share of eigenvalues below -1% of the spectrum's width (the density's
    kernel width): most eigenvalues of a network's Hessian sit in a bulk at 0, which Lanczos
    resolves into nodes of either sign, so "below 0" would count rounding.
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
        lo, hi = float(sn.nodes[live].min()), float(sn.nodes[live].max())
        rec = dict(epoch=epoch, grid=grid, density=density, nodes=sn, lambda_min=lo,
                   lambda_max=hi, negative_mass=sn.mass_below(-0.01 * (hi - lo)),
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




# ---------------------------------------------------------------- the commands' runs
def _summary(values):
    v = np.asarray([math.nan if x is None else x for x in values], dtype=float)
    v = v[np.isfinite(v)]
    return (v[0], float(np.median(v)), v[-1]) if v.size else (math.nan,) * 3


def instruments_run(setup, out, quantities="economy", every=1, callbacks=()):
    """Train `setup` with Instruments; write instruments.png and instruments.csv into `out`.

    Returns (headers, rows) of a table: per scalar quantity its first, median and last value.
    """
    import os
    from . import plots
    from .experiment import write_csv
    from .instruments import Instruments
    inst = Instruments(quantities, every=every)
    setup.fit([*callbacks, inst])
    h = inst.history
    plots.plot_dashboard(h, os.path.join(out, "instruments.png"),
                         title=f"Instruments ({setup.name}, lr {setup.lr:g})")
    scalars = [k for k in h if k not in ("step", "GradHist1d")]
    write_csv(os.path.join(out, "instruments.csv"), ["step", *scalars],
              zip(h["step"], *[inst.column(k) for k in scalars]))
    rows = [[k, *(f"{x:.4g}" for x in _summary(h[k]))] for k in scalars]
    return ["quantity", "first", "median", "last"], rows


def spectrum_run(setup, out, samples=512, n_iter=80, n_vectors=2, measure=None, callbacks=()):
    """Train `setup` recording the Hessian spectrum on a fixed batch at init and after the
    epochs in `measure` (default: 1, a quarter, half and all of them); write spectrum.png and
    spectrum.csv. Returns (headers, rows): per measurement the extreme nodes, the negative
    mass, the trace estimate and the validation accuracy."""
    import os
    from . import plots
    from .experiment import write_csv
    n = setup.epochs
    measure = sorted({1, max(1, n // 4), max(1, n // 2), n}) if measure is None else measure
    rec = SpectrumRecorder(*fixed_batch(setup.train, samples), epochs=measure, n_iter=n_iter,
                           n_vectors=n_vectors)
    history = setup.fit([*callbacks, rec])
    plots.plot_spectra(rec.records, os.path.join(out, "spectrum.png"))
    headers = ["epoch", "lambda_min", "lambda_max", "negative_mass", "trace", "val_acc"]
    raw = [[r["epoch"], r["lambda_min"], r["lambda_max"], r["negative_mass"], r["trace"],
            history.val_acc[r["epoch"] - 1] if r["epoch"] else None] for r in rec.records]
    write_csv(os.path.join(out, "spectrum.csv"), headers, raw)
    rows = [[e, f"{a:.4g}", f"{b:.4g}", f"{100 * m:.2f}%", f"{t:.4g}",
             "-" if v is None else f"{100 * v:.2f}%"] for e, a, b, m, t, v in raw]
    return headers, rows


def surface_run(setup, out, samples=512, points=41, grid=21, span=1.0, callbacks=()):
    """Train `setup`, then the loss on the line from the initial to the trained parameters
    (alpha in [-0.5, 1.5]) and on a filter-normalized plane (+-span) around the solution;
    write surface.png and surface.csv. Returns (headers, rows) of the line, every fifth alpha,
    and the barrier (see surface_study)."""
    import os
    from . import plots
    from .experiment import write_csv
    theta0 = [p.data.copy() for p in setup.model.parameters()]
    setup.fit(callbacks)
    from .nn import functional as F
    st = surface_study(setup.model, F.cross_entropy, fixed_batch(setup.train, samples),
                       fixed_batch(setup.val, samples), theta0, np.linspace(-0.5, 1.5, points),
                       np.linspace(-span, span, grid))
    plots.plot_surface(st, os.path.join(out, "surface.png"))
    write_csv(os.path.join(out, "surface.csv"), ["alpha", "train_loss", "val_loss"],
              zip(st["alphas"], st["train"], st["val"]))
    step = max(1, (points - 1) // 8)
    rows = [[f"{a:.2f}", f"{t:.4f}", f"{v:.4f}"] for a, t, v in
            list(zip(st["alphas"], st["train"], st["val"]))[::step]]
    return ["alpha", "train_loss", "val_loss"], rows, st["barrier"]
