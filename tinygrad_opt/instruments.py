"""Instruments for training: Cockpit's quantities, recorded by a `fit` callback.

    inst = Instruments("economy", every=1)
    fit(model, opt, loader, F.cross_entropy, epochs=5, callbacks=[inst])
    inst.history["NormTest"]                    # one column per quantity, aligned with "step"
    dashboard(inst.history, "dashboard.png")

Each quantity is measured on the step's own minibatch B (size N) at the parameters theta_t the
step's gradient was taken at. The loss must be a mean over the batch (as in Cockpit).
Notation: l_n the loss of example n, g_n = grad l_n its individual gradient, g = (1/N) sum_n g_n
the minibatch gradient (p.grad), s_t = theta_{t+1} - theta_t the update.

Per-example numbers come from the training backward itself, through `extensions.collect`:
the gradient tests' sums over n of |g_n|^2 and of (g_n^T g)^2 from its _Totals (per layer two
(N, N) Gram products or one product and three row dots, summed over the layers in the pass),
sum_n g_n^2 from SumGradSquared (BackPACK's semantics: each carries the mean's 1/N); none
forms the (N, P) block of individual gradients, and GradHist1d reads only the entries it bins
off the layers' factors (g_n x_n^T). Where tinygrad_opt.extensions is not available, or with
per_example="loop", they are computed with one backward per example (exact, slow: for tests
and small problems). Curvature quantities (HessTrace, HessMaxEV) build their own graph on
the same batch. Extra forwards keep the CPU random stream unchanged, so a run with
instruments takes the same steps as one without. Formulas and papers: each quantity's docstring,
and docs/instruments.md.
"""
import math
from contextlib import contextmanager
from functools import cached_property

from . import autograd, backend
from .curvature import _Probes, _lanczos_tridiagonal, _tridiag_eigh
from .flat import HVPOperator, flatten, unflatten
from .train import Callback

np = backend.np     # host NumPy for the recorded numbers


# ---------------------------------------------------------------- quantities
class Quantity:
    """One instrument. `needs`: what it reads from a Batch (see Batch)."""
    needs = ()

    @property
    def name(self):
        return type(self).__name__

    def compute(self, b):
        raise NotImplementedError


class Loss(Quantity):
    """The minibatch loss L_B(theta_t) = (1/N) sum_n l_n."""

    def compute(self, b):
        return b.loss


class GradNorm(Quantity):
    """|g|, the norm of the minibatch gradient."""

    def compute(self, b):
        return math.sqrt(b.gg)


class UpdateSize(Quantity):
    """|s_t| = |theta_{t+1} - theta_t|, the length of the step the optimizer took."""
    needs = ("update",)

    def compute(self, b):
        return b.update_norm


class Distance(Quantity):
    """|theta_{t+1} - theta_0|, how far training has moved from the initialization."""
    needs = ("update",)

    def compute(self, b):
        return b.distance


class GradHist1d(Quantity):
    """Histogram of the individual gradient elements g_{n,j} over examples n and parameters j.

    Recorded as (edges, counts) on `bins` bins symmetric about 0 that span the largest
    |g_{n,j}| binned (Cockpit: Schneider et al. 2021, Fig. 1 "gradient element histogram").
    When the (N, *shape) blocks of all parameters hold more than `max_elements` values in
    all, every k-th value of each block is binned, k = total // max_elements, each counting k
    times: a uniform sample of every entry at the same rate, the shape of the distribution at
    a bounded cost (exact below the limit).

    +-- Cockpit ---------------------------------------------------------------------------+
    | every tracked step, from the full per-example gradients (BackPACK's BatchGrad)        |
    +-- here -------------------------------------------------------------------------------+
    | the same histogram on the first recorded step and then every `every`-th recorded one |
    | (None in between), from the sampled entries only (extensions: g_n x_n^T read off the |
    | layer's factors, never the (N, P) block). every=1 is Cockpit's.                      |
    +---------------------------------------------------------------------------------------+
    Binning costs about half a training step on a small model; every 8th step keeps the
    economy preset cheap enough to leave on, and the histogram drifts slowly.
    """
    needs = ("batch_grad",)

    def __init__(self, bins=41, max_elements=4096, every=8):
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ValueError(f"GradHist1d: every must be a positive int, got {every!r}")
        self.bins, self.max_elements, self.every = int(bins), int(max_elements), every
        self._calls = 0
        self._unit_edges = np.linspace(-1.0, 1.0, self.bins + 1)     # exact ends: +-top
        self._buf = None

    def due(self):
        """Whether the next recorded step is binned: the first, then every `every`-th."""
        return self._calls % self.every == 0

    def compute(self, b):
        due = self.due()
        self._calls += 1
        if not due:
            return None
        v, k = self._samples(b)
        xp = backend.xp_of(v)
        top = float(xp.abs(v).max()) or 1.0
        # binned before the scale, which moves values and edges alike
        v += top                                        # equal bins: no search
        v *= self.bins / (2 * top)
        c = backend.to_numpy(xp.bincount(v.astype(xp.intp), minlength=self.bins + 1))
        counts = c[:self.bins].astype(np.int64)         # v in [0, bins]: bins only at top,
        counts[-1] += c[self.bins]                      # which goes in the last bin
        if k > 1:
            counts *= k
        return (b.scale * top) * self._unit_edges, counts

    def _samples(self, b):
        """(every k-th value of each parameter's (N, *shape) block of individual gradients
        over `scale`, joined into one array that this object reuses; k). From the blocks, or
        from extensions' layer factors (grad_batch_W[n] = g_n x_n^T, grad_batch_b[n] = g_n)
        at those entries only, the same products without forming the block."""
        if b.factors is None:
            parts = [a.reshape(-1) for a in b.individual]
            k = max(1, sum(a.size for a in parts) // self.max_elements)
            counts = [-(-a.size // k) for a in parts]           # ceil(size / k) each
            v, o = self._buffer(parts[0], sum(counts)), 0
            for a, m in zip(parts, counts):
                v[o:o + m] = a[::k]
                o += m
            return v, k
        shapes = []                                     # per parameter (n, out, in or None)
        for pW, pb, g, x in b.factors:
            if pW is not None:
                shapes.append((g.shape[0], g.shape[1], x.shape[1]))
            if pb is not None:
                shapes.append((g.shape[0], g.shape[1], None))
        if len(shapes) != len(b.params):
            raise RuntimeError(f"Instruments: GradHist1d found {len(shapes)} of the "
                               f"{len(b.params)} parameters in Linear layers on the way from "
                               "the loss")
        sizes = [n * o * (1 if i is None else i) for n, o, i in shapes]
        k = max(1, sum(sizes) // self.max_elements)
        g0 = b.factors[0][2]
        xp = backend.xp_of(g0)
        v, o = self._buffer(g0, sum(-(-s // k) for s in sizes)), 0
        for pW, pb, g, x in b.factors:
            n, out = g.shape
            if pW is not None:
                inp = x.shape[1]
                gi, xi = _entries(xp, n, out, inp, k)
                m = gi.shape[0]
                xp.multiply(g.take(gi), x.take(xi), out=v[o:o + m])    # (flat indices)
                o += m
            if pb is not None:
                m = -(-(n * out) // k)
                v[o:o + m] = g.reshape(-1)[::k]
                o += m
        return v, k

    def _buffer(self, like, size):
        """This object's scratch array for `size` values, in like's dtype and on its device."""
        buf = self._buf
        if (buf is None or buf.shape[0] != size or buf.dtype != like.dtype
                or backend.xp_of(buf) is not backend.xp_of(like)):
            buf = self._buf = backend.xp_of(like).empty(size, dtype=like.dtype)
        return buf


class NormTest(Quantity):
    """Norm test (Byrd, Chin, Nocedal & Wu 2012), as Cockpit reports it:

        sqrt( sum_n |g_n - g|^2 / (N (N - 1) |g|^2) )

    the estimated relative error |g - grad L| / |grad L| of the minibatch gradient. Byrd et al.
    grow the batch when it exceeds a threshold theta (Cockpit plots it against theta = 1).
    """
    needs = ("sq",)

    def compute(self, b):
        return _ratio(b.sq_sum - b.n * b.gg, b.n * (b.n - 1) * b.gg)


class InnerTest(Quantity):
    """Inner-product test (Bollapragada, Byrd & Nocedal 2018):

        sqrt( sum_n (g_n^T g - |g|^2)^2 / (N (N - 1) |g|^4) )

    the relative spread of g_n^T g: below 1, the minibatch gradient is a descent direction for
    the expected loss with high probability.
    """
    needs = ("dots",)

    def compute(self, b):
        return _ratio(b.inner_sq, b.n * (b.n - 1) * b.gg ** 2)


class OrthoTest(Quantity):
    """Orthogonality test (Bollapragada, Byrd & Nocedal 2018):

        sqrt( sum_n |g_n - (g_n^T g / |g|^2) g|^2 / (N (N - 1) |g|^2) )

    the spread of the individual gradients orthogonal to g, relative to |g|; the companion of
    the inner-product test, which only sees the spread along g.
    """
    needs = ("sq", "dots")

    def compute(self, b):
        ortho = b.sq_sum - b.dots_sq / b.gg if b.gg > 0 else math.nan
        return _ratio(ortho, b.n * (b.n - 1) * b.gg)


class GSNR(Quantity):
    """Mean gradient signal-to-noise ratio (Liu et al. 2020), over the parameters j:

        r_j = g_j^2 / sigma_j^2,   sigma_j^2 = (1/N) sum_n g_{n,j}^2 - g_j^2

    averaged over the coordinates with sigma_j^2 > 0. A large GSNR means the examples agree on
    the direction of coordinate j.
    """
    needs = ("sgs",)

    def compute(self, b):
        g, mean_sq = b.g_host, b.sgs / b.n          # over all coordinates at once
        var = mean_sq - g * g
        live = var > 1e-12 * mean_sq                # 0 up to rounding: all examples agree
        count = int(live.sum())
        return float((g[live] ** 2 / var[live]).sum()) / count if count else math.nan


class GradientNoiseScale(Quantity):
    """The simple gradient noise scale (McCandlish, Kaplan, Amodei et al. 2018):

        B_simple = tr(Sigma) / |G|^2

    the batch size at which noise and signal in the gradient are equal; Sigma is the covariance
    of the individual gradients and G the full-batch gradient. Per step, unbiased estimates
        tr(Sigma) ~= sum_n |g_n - g|^2 / (N - 1),   |G|^2 ~= |g|^2 - tr(Sigma) / N
    are each smoothed by an exponential moving average (weight `beta`) before dividing, as
    McCandlish et al. (App. A) recommend: the per-step |G|^2 estimate is noisy and may be
    negative. (The paper estimates both from two batch sizes; per-example gradients give the
    same unbiased estimates from one batch.)
    """
    needs = ("sq",)

    def __init__(self, beta=0.9):
        self.beta = beta
        self._trace = self._g2 = 0.0
        self._t = 0

    def compute(self, b):
        trace = (b.sq_sum - b.n * b.gg) / (b.n - 1)
        g2 = b.gg - trace / b.n
        self._t += 1
        self._trace = self.beta * self._trace + (1 - self.beta) * trace
        self._g2 = self.beta * self._g2 + (1 - self.beta) * g2
        return self._trace / self._g2 if self._g2 > 0 else math.nan


class Alpha(Quantity):
    """Step-size quality alpha (Schneider et al. 2021, Cockpit):

    A parabola q(tau) along the step, tau in [0, 1] from theta_t to theta_{t+1}, is fitted by
    least squares to the losses and slopes measured at both ends,
        q(0) = L_t, q'(0) = g_t^T s_t, q(1) = L_{t+1}, q'(1) = g_{t+1}^T s_t,
    and alpha = 1 / tau* - 1 places the step's end relative to the parabola's minimum tau*:
    -1 the step did not move, 0 it landed on the minimum, 1 it jumped to the point of equal
    loss on the other side (beyond 1: it overshot). nan when the parabola has no minimum.
    The end values come from the next step's minibatch, as in Cockpit; Cockpit weighs the four
    equations by their estimated noise, we weigh them equally. Needs the next step, so the
    value of step t is filled in at step t + 1 (the last recorded step keeps nan).
    """
    needs = ("update",)

    def compute(self, b):
        return math.nan                   # filled in by Instruments when step t + 1 is done

    @staticmethod
    def fit(loss0, slope0, loss1, slope1):
        """alpha from the four measurements (see the class docstring)."""
        (a0, a1, a2, a3), (b0, b1, b2, b3) = _ALPHA_LSQ[0], _ALPHA_LSQ[1]   # 4 numbers: Python
        a = a0 * loss0 + a1 * slope0 + a2 * loss1 + a3 * slope1
        c1 = b0 * loss0 + b1 * slope0 + b2 * loss1 + b3 * slope1
        if not a > 0:
            return math.nan
        tau = -c1 / (2 * a)
        return 1.0 / tau - 1.0 if tau != 0 else math.inf


# q(tau) = a tau^2 + c1 tau + c0 from the rows q(0), q'(0), q(1), q'(1): least squares through
# the pseudo-inverse of the fixed 4 x 3 design matrix, computed once
_ALPHA_LSQ = np.linalg.pinv(np.array([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [1.0, 1.0, 1.0],
                                      [2.0, 1.0, 0.0]])).tolist()


class TICDiag(Quantity):
    """Takeuchi information criterion, diagonal approximation (Thomas et al. 2020), as Cockpit:

        TIC ~= tr(H^-1 C) ~= sum_j C_jj / (H_jj + eps),   C_jj = (1/N) sum_n g_{n,j}^2

    with H_jj the diagonal of the generalized Gauss-Newton matrix (extensions.DiagGGN, exact;
    it equals the Hessian's diagonal for piecewise-linear networks such as ReLU MLPs; Cockpit
    uses the Hessian's diagonal) and eps = 1e-7 guarding flat directions. Thomas et al. relate
    tr(H^-1 C) / N_train to the generalization gap. Without extensions the diagonal is a
    Hutchinson estimate E[z * Hz] from `n_probes` Rademacher probes.
    """
    needs = ("sgs", "diag_h")

    def __init__(self, eps=1e-7):
        self.eps = eps

    def compute(self, b):
        return float((b.sgs / b.n / (b.diag_h + self.eps)).sum())


class HessTrace(Quantity):
    """tr(H) of the minibatch loss by Hutchinson's estimator, n * mean_z (z^T H z / |z|^2) with
    Rademacher probes z (Cockpit computes it exactly from the Hessian's diagonal). The first
    probe is the start vector of HessMaxEV's Lanczos run, so the two share products.
    """
    needs = ("hvp",)

    def compute(self, b):
        return b.hess_trace


class HessMaxEV(Quantity):
    """The largest Hessian eigenvalue of the minibatch loss (the sharpness), from `lanczos_steps`
    Lanczos steps (a lower bound that is usually tight after about 10 steps); gradient descent
    with learning rate lr is stable along the top eigenvector only while lr * HessMaxEV < 2.
    """
    needs = ("hvp",)

    def compute(self, b):
        return b.hess_max_ev


_ENTRIES = {}


def _entries(xp, n, out, inp, k):
    """Where every k-th entry j of the flat (n, out, inp) block g_n x_n^T reads g and x:
    flat indices n*out + o and n*inp + i, built once per shape in the process."""
    key = (xp, n, out, inp, k)
    if key not in _ENTRIES:
        j = np.arange(0, n * out * inp, k)
        row, col = j // (out * inp), j % (out * inp)
        _ENTRIES[key] = (xp.asarray(row * out + col // inp), xp.asarray(row * inp + col % inp))
    return _ENTRIES[key]


def _ratio(num, den):
    if not den > 0:
        return math.nan
    return math.sqrt(max(float(num), 0.0) / den)


QUANTITIES = {c.__name__: c for c in (Loss, GradNorm, UpdateSize, Distance, GradHist1d, NormTest,
                                      InnerTest, OrthoTest, GSNR, GradientNoiseScale, Alpha,
                                      TICDiag, HessTrace, HessMaxEV)}
ECONOMY = ["Loss", "GradNorm", "UpdateSize", "Distance", "GradHist1d", "NormTest", "InnerTest",
           "OrthoTest", "Alpha"]
PRESETS = {"economy": ECONOMY,
           "business": ECONOMY + ["GSNR", "GradientNoiseScale", "TICDiag", "HessTrace"],
           "full": ECONOMY + ["GSNR", "GradientNoiseScale", "TICDiag", "HessTrace", "HessMaxEV"]}


def _make(quantities):
    if isinstance(quantities, str):
        if quantities not in PRESETS:
            raise ValueError(f"Instruments: unknown preset {quantities!r}; choose one of "
                             f"{sorted(PRESETS)} or give a list of quantity names")
        quantities = PRESETS[quantities]
    out = []
    for q in quantities:
        if isinstance(q, str):
            if q not in QUANTITIES:
                raise ValueError(f"Instruments: unknown quantity {q!r}; known: "
                                 f"{', '.join(QUANTITIES)}")
            q = QUANTITIES[q]()
        elif not isinstance(q, Quantity):
            raise TypeError(f"Instruments: a quantity must be a name or a Quantity, got "
                            f"{type(q).__name__}")
        out.append(q)
    if len({q.name for q in out}) != len(out):
        raise ValueError("Instruments: a quantity is listed twice")
    return out


# ---------------------------------------------------------------- one measured step
class Batch:
    """What the quantities read about one step, each number computed once and shared (several
    quantities read |g|^2, the per-example sums or the update).

    n, loss; g (the flat minibatch gradient on the parameters' device, in their dtype: a row
    of a buffer that the next step overwrites, so copy what a quantity keeps);
    gg = |g|^2, update_norm = |s_t|, distance = |theta_{t+1} - theta_0|, slope = g^T s_t;
    sq_sum = sum_n |g_n|^2, dots_sq = sum_n (g_n^T g)^2, inner_sq = sum_n (g_n^T g - |g|^2)^2
    (the gradient tests' sums; until the step ends `per_example` holds their scales and
    sum_n |g_n|^2, and _Vectors.per_example the dots);
    individual (N, *shape) per parameter, whose rows times `scale` are the g_n, or factors
    (extensions: per Linear layer (weight, bias, g, x), the individual gradients g_n x_n^T
    and g_n over `scale`, carrying the mean's 1/N: scale = N); sgs = sum_n g_n^2 and diag_h
    (flat, host float64); hess_trace, hess_max_ev. On first use: g_host (g in host float64),
    grad (g per parameter).
    """
    individual = factors = sgs = diag_h = per_example = None
    scale = 1.0
    hist = False                # whether GradHist1d bins this step
    gg = update_norm = distance = slope = hess_trace = hess_max_ev = math.nan
    sq_sum = dots_sq = inner_sq = math.nan

    def __init__(self, step, recorded, params):
        self.step, self.recorded, self.params = step, recorded, params

    @cached_property
    def g_host(self):
        return backend.to_numpy(self.g).astype(np.float64)

    @cached_property
    def grad(self):
        return unflatten(self.g_host, self.params)


@contextmanager
def _same_random_stream():
    """Leave the CPU generator as it was (extra forwards must not change dropout masks)."""
    state = backend.get_rng_state()
    try:
        yield
    finally:
        backend.set_rng_state(state)


def _extensions():
    try:
        from . import extensions
    except ImportError:
        return None
    return extensions


class _Vectors:
    """The step's flat vectors as rows of one buffer, laid out so that each step costs few
    array calls (on a small model each call costs more than its arithmetic):

        row 0: theta_0    1: theta_t    2: G = g_t    3, 5: S = s_t and P = s_{t-1}
        row 4: D = theta_{t+1} - theta_0

    After the backward one join writes theta_t and g_t (rows 1, 2); after the step one
    subtraction writes [D, S] = theta_{t+1} - [theta_0, theta_t] (S is row 3 or 5, so the
    target is rows 4, 3 or rows 4, 5), and rows 2..5 give every squared norm and every dot
    with g in two calls (P: the previous recorded step's update, for Alpha's g_t^T s_{t-1}).
    S and P trade rows after each recorded step instead of copying. Every number of a step
    lands in one small array `out` on the same device, turned into Python floats at once."""
    G, D = 2, 4
    NORMS, DOTS, INNER, DOTS_SQ, L2 = -2, 2, 8, 9, 10       # out[NORMS + row], out[DOTS + row]

    def __init__(self, params):
        self.xp = xp = backend.xp_of(params[0].data)
        dtype = xp.result_type(*[p.data.dtype for p in params])
        n = sum(p.size for p in params)
        self.rows = rows = xp.zeros((6, n), dtype=dtype)
        self.out = out = xp.zeros(11, dtype=dtype)
        self.after = xp.empty(n, dtype=dtype)
        self.params = params
        self.flatten(0)                                         # theta_0
        self.S, self.P = 3, 5
        # every view a step reads, made once (each slice is a call of its own)
        self._targets = {3: rows[4:2:-1], 5: rows[4:6]}         # [D, S]
        self._start, self._block, self._g = rows[0:2], rows[2:6], rows[self.G]
        self._out_norms, self._out_dots = out[:4], out[4:8]
        self._out_tests = out[self.INNER:self.DOTS_SQ + 1]
        self._work = None
        vecdot = getattr(xp, "vecdot", None)                    # NumPy >= 2: one pass
        if vecdot is not None:
            self._norms = lambda a, b, out: vecdot(a, b, out=out)
        else:
            def _norms(a, b, out):
                out[...] = xp.einsum("ij,ij->i", a, b)
            self._norms = _norms

    def per_example(self, n):
        """A (2, n) array for the per-example dots: row 1 takes d, row 0 d - |g|^2 / c."""
        w = self._work
        if w is None or w.shape[1] != n:
            w = self._work = self.xp.empty((2, n), dtype=self.rows.dtype)
            self._w0, self._w1 = w[0], w[1]
        return w

    @property
    def params(self):
        return self._params

    @params.setter
    def params(self, params):
        """The parameters, and per row that takes them a view of it per parameter (in its
        shape): an assignment to each costs less than one concatenate of them all."""
        self._params = params
        rows, after = self.rows, self.after
        if sum(p.size for p in params) != rows.shape[1]:
            raise ValueError(f"Instruments: the model has {sum(p.size for p in params)} "
                             f"trained values, {rows.shape[1]} when recording began")
        shapes, views = [p.shape for p in params], {}
        for key, flat in ((0, rows[0]), (1, rows[1]), (2, rows[2]), ("after", after)):
            views[key], o = [], 0
            for shape in shapes:
                size = math.prod(shape)
                views[key].append(flat[o:o + size].reshape(shape))
                o += size
        self._views = views

    def flatten(self, row):
        """The parameters written into row 0 or "after"; returns that flat array."""
        for v, p in zip(self._views[row], self._params):
            v[...] = p.data
        return self.rows[0] if row == 0 else self.after

    def snapshot(self, update):
        """After the backward: g_t into row G (a copy: clipping and some optimizers change
        p.grad in place), with update also theta_t into row 1."""
        for v, p in zip(self._views[self.G], self._params):
            g = p.grad
            if g is None:
                v.fill(0)
            else:
                v[...] = g.data
        if update:
            for v, p in zip(self._views[1], self._params):
                v[...] = p.data
        return self._g

    def scalars(self, update, per_example):
        """After the step: the step's numbers as a list indexed by the slots of `out`.

        NORMS + row: |row|^2, DOTS + row: g^T row for the rows 2..5 (with update; else only
        |g|^2); from per_example = (c, l2, c2) and the dots d in row 1 of the per_example
        array, with c d_n = g_n^T g and c2 l2 = sum_n |g_n|^2: INNER = sum_n (d_n - |g|^2 / c)^2
        (c^2 INNER is the inner-product test's sum), DOTS_SQ = sum_n d_n^2, L2 = l2.
        """
        out, xp = self.out, self.xp
        gg = self.NORMS + self.G
        if update:
            after = self.flatten("after")                      # theta_{t+1}
            xp.subtract(after, self._start, out=self._targets[self.S])
            block = self._block
            self._norms(block, block, self._out_norms)
            xp.matmul(block, self._g, out=self._out_dots)      # (4 x P BLAS gemm is slower)
        else:
            g = self._g
            out[gg] = g @ g
        if per_example is not None:
            c, l2, _ = per_example
            xp.subtract(self._w1, out[gg] / c, out=self._w0)   # d - |g|^2 / c, on the device
            self._norms(self._work, self._work, self._out_tests)
            out[self.L2] = l2
        return out.tolist()

    def swap(self):
        """This step's update becomes the previous one."""
        self.S, self.P = self.P, self.S


class _StepContext:
    """Entered around a step's backward: collects per-example quantities in that same
    backward, and fills the step's Batch on exit (g_t and theta_t, which the backward does
    not change). One per Instruments, reused."""

    def __init__(self, inst):
        self.inst = inst
        self.run = self.xb = self.yb = self.collect = None

    def __enter__(self):
        inst, b = self.inst, self.inst._batch
        if b.recorded and inst._curv:
            inst._curvature(self.run, self.xb, self.yb)
        self.collect = c = inst._collector()
        if c is not None:
            c.__enter__()
        return self

    def __exit__(self, *exc):
        c, self.collect = self.collect, None
        if c is not None:
            c.__exit__(*exc)
        if exc[0] is None:
            self.inst._after_backward(self)
        self.run = self.xb = self.yb = None
        return False


class Instruments(Callback):
    """Records Cockpit-style quantities during `fit` every `every` steps.

    quantities: "economy" (Loss, GradNorm, UpdateSize, Distance, GradHist1d, NormTest, InnerTest,
    OrthoTest, Alpha: first order, from one backward), "business" (adds GSNR,
    GradientNoiseScale, TICDiag, HessTrace), "full" (adds HessMaxEV), or a list of names or
    Quantity instances. every: an int, or a function step -> bool (steps count from 1).
    per_example: "auto" (extensions when available, else "loop"), "extensions" or "loop".
    `history` maps "step" and each quantity's name to a list, one entry per recorded step.
    """

    def __init__(self, quantities="economy", every=1, per_example="auto", lanczos_steps=10,
                 n_probes=4, seed=0):
        self.quantities = _make(quantities)
        if callable(every):
            self._due = every
        else:
            if isinstance(every, bool) or not isinstance(every, int) or every < 1:
                raise ValueError(f"Instruments: every must be a positive int or a function of "
                                 f"the step, got {every!r}")
            self._due = lambda step, k=every: step % k == 0
        if per_example not in ("auto", "extensions", "loop"):
            raise ValueError(f"Instruments: per_example must be 'auto', 'extensions' or 'loop', "
                             f"got {per_example!r}")
        self._ext = None if per_example == "loop" else _extensions()
        if per_example == "extensions" and self._ext is None:
            raise ImportError("Instruments: per_example='extensions' needs tinygrad_opt.extensions")
        self.lanczos_steps, self.n_probes, self.seed = int(lanczos_steps), int(n_probes), seed
        self._needs = {n for q in self.quantities for n in q.needs}
        self._tests = bool(self._needs & {"sq", "dots"})    # the gradient tests' sums
        if self._tests or "sgs" in self._needs:
            self._needs.add("per_example")
        self._update = "update" in self._needs
        self._curv = "hvp" in self._needs or ("diag_h" in self._needs and self._ext is None)
        self._alpha = next((q.name for q in self.quantities if isinstance(q, Alpha)), None)
        self._hists = [q for q in self.quantities if "batch_grad" in q.needs]
        self._collects = None
        self.history = {"step": [], **{q.name: [] for q in self.quantities}}
        self._columns = [(q, self.history[q.name]) for q in self.quantities]
        self._params = self._vec = None
        self._batch = None
        self._ctx = _StepContext(self)
        self._alpha_pending = None      # (row, loss_t, slope_t) waiting for step t + 1
        self._probe_calls = 0

    # ---- fit hooks
    def on_train_begin(self, run):
        self._params = [p for p in run.model.parameters() if p.requires_grad]
        if self._vec is None:
            self._vec = _Vectors(self._params)          # keeps theta_0 from the first call
        self._vec.params = self._params

    def backward_context(self, run, xb, yb):
        step = run.global_step + 1
        due = self._due(step)
        if not due and self._alpha_pending is None:
            self._batch = None
            return None
        b = self._batch = Batch(step, bool(due), self._params)
        if due and self._hists:
            b.hist = any(q.due() for q in self._hists)
        ctx = self._ctx
        ctx.run, ctx.xb, ctx.yb = run, xb, yb
        return ctx

    def on_step_end(self, info):
        b, self._batch = self._batch, None
        if b is None:
            return
        b.loss = float(info.loss)
        vec, pending = self._vec, self._alpha_pending
        v = vec.scalars(self._update, b.per_example)        # one conversion for the step
        b.gg = v[vec.NORMS + vec.G]
        if self._update:
            b.slope = v[vec.DOTS + vec.S]
            b.update_norm = math.sqrt(v[vec.NORMS + vec.S])
            b.distance = math.sqrt(v[vec.NORMS + vec.D])
        if b.per_example is not None:
            c, _, c2 = b.per_example
            b.inner_sq, b.dots_sq = c * c * v[vec.INNER], c * c * v[vec.DOTS_SQ]
            b.sq_sum = c2 * v[vec.L2]
        if pending is not None:
            self._alpha_pending = None
            row, loss0, slope0 = pending
            if b.step == self.history["step"][row] + 1:     # slope at the end: g_{t+1}^T s_t
                self.history[self._alpha][row] = Alpha.fit(loss0, slope0, b.loss,
                                                           v[vec.DOTS + vec.P])
        if not b.recorded:
            return
        self.history["step"].append(b.step)
        for q, column in self._columns:
            column.append(q.compute(b))
        if self._alpha is not None:
            self._alpha_pending = (len(self.history["step"]) - 1, b.loss, b.slope)
            vec.swap()

    # ---- measurement
    def _collector(self):
        """The extensions.collect context for a recorded step's backward, None if nothing is
        collected: the tests' sums without the (N, P) block, the block only where a
        histogram is due. Both contexts are built once and entered at every step."""
        ext, b = self._ext, self._batch
        if ext is None or not b.recorded:
            return None
        if self._collects is None:           # per kind of step: (collect or None, _Totals)
            base = []
            if "sgs" in self._needs:
                base.append(ext.SumGradSquared())
            if "diag_h" in self._needs:
                base.append(ext.DiagGGN())
            plain = ext._Totals() if self._tests else None
            hist = ext._Totals(factors=True)
            self._collects = ((ext.collect(plain, *base) if plain else
                               ext.collect(*base) if base else None, plain),
                              (ext.collect(hist, *base), hist))
        return self._collects[b.hist][0]

    def _after_backward(self, ctx):
        b = self._batch
        b.g = self._vec.snapshot(self._update)
        if not b.recorded:
            return
        b.n = n = int(ctx.xb.shape[0])
        if self._ext is not None:
            self._from_extensions(b)
        elif "per_example" in self._needs or "batch_grad" in self._needs:
            b.individual, b.scale = self._individual(ctx)
            flat = [g.reshape(n, -1) for g in b.individual]
            s2 = b.scale * b.scale          # in the gradients' dtype, scaled and summed in float64
            if self._tests:
                sq_sum = s2 * sum(float(np.vdot(G, G)) for G in flat)
                dots = sum((G @ gm.reshape(-1).astype(G.dtype)).astype(np.float64)
                           for G, gm in zip(flat, b.grad))
                self._vec.per_example(n)[1] = self._vec.xp.asarray(dots)
                b.per_example = (b.scale, sq_sum, 1.0)
            if "sgs" in self._needs:
                b.sgs = s2 * np.concatenate([np.einsum("ij,ij->j", G, G).astype(np.float64)
                                             for G in flat])
        if "diag_h" in self._needs:
            if self._ext is not None:
                b.diag_h = self._host_flat("diag_ggn")
            else:
                b.diag_h = self._hutchinson_diag
        if "hvp" in self._needs:
            b.hess_trace, b.hess_max_ev = self._hess

    def _collected(self, attr):
        """The arrays extensions.collect put in p.<attr>, one per parameter."""
        out = []
        for p in self._params:
            a = getattr(p, attr, None)
            if a is None:
                raise RuntimeError(f"Instruments: extensions.collect gave no {attr} for a "
                                   f"parameter of shape {p.shape}")
            out.append(a.data)
        return out

    def _host_flat(self, attr):
        """p.<attr> of every parameter joined into one flat host float64 array."""
        return backend.to_numpy(flatten(self._collected(attr))).astype(np.float64)

    def _from_extensions(self, b):
        """The tests' sums from the backward's _Totals, which carry the mean's 1/N
        (g_n = N grad_batch_n), sgs from SumGradSquared; on a histogram step the layer
        factors, never the (N, P) block."""
        n = float(b.n)
        t = self._collects[b.hist][1]
        if t is not None:
            if not t.count:
                raise RuntimeError("Instruments: extensions.collect found no layer with "
                                   "parameters on the way from the loss")
            if self._tests:
                t.dot_grad(out=self._vec.per_example(b.n)[1])
                b.per_example = (n, t.l2(), n * n)
            if b.hist:              # on the device, in the parameters' dtype
                b.factors, b.scale, t.layers = t.layers, n, None
        if "sgs" in self._needs:
            b.sgs = n * n * self._host_flat("sum_grad_squared")

    def _individual(self, ctx):
        """(arrays, 1.0): per parameter a host array (N, *shape) of the g_n, one backward per
        example (per_example="loop")."""
        n = int(ctx.xb.shape[0])
        run = ctx.run
        out = [np.empty((n,) + tuple(p.shape)) for p in self._params]
        with _same_random_stream():
            for i in range(n):
                loss = run.loss_fn(run.model(ctx.xb[i:i + 1]), ctx.yb[i:i + 1])
                grads = autograd.grad(loss, self._params, allow_unused=True)
                for o, g in zip(out, grads):
                    o[i] = 0.0 if g is None else backend.to_numpy(g.data)
        return out, 1.0

    def _curvature(self, run, xb, yb):
        """HessTrace and HessMaxEV (one Lanczos run from a Rademacher probe plus n_probes - 1
        more probes), and without extensions the Hutchinson diagonal for TICDiag."""
        self._hess, self._hutchinson_diag = (math.nan, math.nan), None
        if self._batch is None or not self._batch.recorded:
            return
        with _same_random_stream():
            op = HVPOperator(lambda: run.loss_fn(run.model(xb), yb), self._params)
            probes = _Probes(op.xp, op.dtype, op.device, None if self.seed is None
                             else self.seed + self._probe_calls)
            self._probe_calls += 1
            if "hvp" in self._needs:
                z = probes.rademacher(op.n)
                alpha, beta = _lanczos_tridiagonal(op, z / math.sqrt(op.n),
                                                   min(self.lanczos_steps, op.n))
                samples = [alpha[0] * op.n]       # z^T H z / |z|^2 * n with |z|^2 = n
                for _ in range(self.n_probes - 1):
                    z = probes.rademacher(op.n)
                    samples.append(float(z @ op.matvec(z)))
                self._hess = (float(np.mean(samples)), float(_tridiag_eigh(alpha, beta)[0][-1]))
            if "diag_h" in self._needs and self._ext is None:
                acc = op.xp.zeros(op.n, dtype=op.dtype)
                for _ in range(max(self.n_probes, 1)):
                    z = probes.rademacher(op.n)
                    acc += z * op.matvec(z)
                self._hutchinson_diag = backend.to_numpy(acc / max(self.n_probes, 1)).astype(
                    np.float64)

    def column(self, name):
        """A scalar quantity's values as a float array (nan where not measured)."""
        if name not in self.history:
            raise KeyError(f"Instruments: no column {name!r}; columns: {list(self.history)}")
        return np.array([math.nan if v is None else v for v in self.history[name]], dtype=float)


# ---------------------------------------------------------------- the dashboard
def dashboard(history, path, title="Instruments"):
    """One PNG with a titled panel per quantity in `history` (Instruments.history); returns
    the matplotlib Figure (drawn by plots.plot_dashboard)."""
    from .plots import plot_dashboard
    return plot_dashboard(history, path, title)
