"""Test functions for optimizers: classic 2-D ones with the path an optimizer takes on them,
and n-D benchmark problems with known minima.

    from tinygrad_opt.testfunctions import PROBLEMS, run_path
    p = PROBLEMS["rosenbrock"]
    path = run_path(p, "adam", p.steps)            # (steps + 1, 2) iterates from p.start
    p.f(*path[-1])                                 # f works on floats, NumPy grids and Tensors

    from tinygrad_opt.testfunctions import mgh_problems
    for q in mgh_problems():                       # NDProblem: f(x Tensor), x0, f_star
        f, g = q.value_and_grad(q.x0)              # NumPy in and out, e.g. for scipy.optimize

Each function is written with operators only, so the same formula evaluates a contour grid
and builds a graph for autograd; the n-D ones run on NumPy and CuPy (constants are moved to
x's device). The n-D set, from Moré, Garbow & Hillstrom (1981) (MGH number) plus two convex
problems, with the standard starting points:

    name             n    MGH   x0                      f*
    rosenbrock{n}    2k   21    (-1.2, 1, -1.2, 1, ...) 0 at ones (the 2-D `rosenbrock` summed)
    beale            2    5     (1, 1)                  0 at (3, 0.5) (the 2-D `beale`)
    powell_singular  4    13    (3, -1, 0, 1)           0 at 0, singular Hessian there
    wood             4    14    (-3, -1, -3, -1)        0 at ones
    trigonometric{n} n    26    1/n                     local minimum 2.79506e-5 (n = 10)
    quadratic{n}     n    -     0                       -b^T A^-1 b / 2, cond(A) = 1e4
    logistic         11   -     0                       by Newton on the host
"""
from . import backend
from .optim.registry import get_spec

np = backend.np                 # host NumPy: start points, paths, grids


def _exp(a):
    return a.exp() if hasattr(a, "exp") else np.exp(a)


def rosenbrock(x, y):
    """(1 - x)^2 + 100 (y - x^2)^2: minimum 0 at (1, 1) at the end of a curved, narrow valley."""
    return (1 - x) ** 2 + 100.0 * (y - x * x) ** 2


def beale(x, y):
    """Beale's function: minimum 0 at (3, 0.5), a saddle at (0, 1)."""
    return ((1.5 - x + x * y) ** 2 + (2.25 - x + x * y * y) ** 2
            + (2.625 - x + x * y * y * y) ** 2)


def quadratic(x, y):
    """x^2/2 + 10 y^2: condition number 20."""
    return 0.5 * x * x + 10.0 * y * y


def saddle(x, y):
    """x^2 - y^2: a saddle point at the origin."""
    return x * x - y * y


def plateau(x, y):
    """1 - exp(-(x^2 + 4 y^2)/2): a bowl whose gradient almost vanishes far out."""
    return 1.0 - _exp(-(x * x + 4.0 * y * y) / 2.0)


class Problem:
    """A 2-D test function with its start, plot window, known minima and saddles, a tuned lr
    per optimizer name (`lrs`) and a default number of steps."""

    def __init__(self, name, title, tex, f, start, xlim, ylim, minima, saddles, lrs, steps,
                 log_levels=False):
        self.name, self.title, self.tex, self.f = name, title, tex, f
        self.start, self.xlim, self.ylim = start, xlim, ylim
        self.minima, self.saddles, self.lrs, self.steps = minima, saddles, lrs, steps
        self.log_levels = log_levels

    def __repr__(self):
        return f"Problem({self.name!r}, start={self.start})"


PROBLEMS = {p.name: p for p in [
    Problem("quadratic", "ill-conditioned quadratic x^2/2 + 10 y^2 (condition number 20)",
            r"quadratic $x^2/2 + 10y^2$ ($\kappa = 20$)",
            quadratic, (-4.5, 1.0), (-5, 5), (-2, 2), [(0, 0)], [],
            dict(sgd=0.09, momentum=0.02, nesterov=0.02, adagrad=1.0, rmsprop=0.05,
                 adam=0.25, adamw=0.25), 100),
    Problem("rosenbrock", "Rosenbrock (1 - x)^2 + 100 (y - x^2)^2, a curved narrow valley",
            r"Rosenbrock $(1-x)^2 + 100(y-x^2)^2$",
            rosenbrock, (-1.5, 2.0), (-2, 2), (-1, 3), [(1, 1)], [],
            dict(sgd=1e-3, momentum=2e-4, nesterov=2e-4, adagrad=0.2, rmsprop=0.01,
                 adam=0.1, adamw=0.1), 1500, log_levels=True),
    Problem("saddle", "saddle x^2 - y^2, started almost on the ridge", r"saddle $x^2 - y^2$",
            saddle, (-1.5, 1e-3), (-2, 2), (-2, 2), [], [(0, 0)],
            dict(sgd=0.05, momentum=0.01, nesterov=0.01, adagrad=0.5, rmsprop=0.02,
                 adam=0.05, adamw=0.05), 150),
    Problem("beale", "Beale's function, minimum (3, 0.5), saddle (0, 1)", "Beale's function",
            beale, (1.0, 1.4), (-0.5, 4), (-1, 2), [(3, 0.5)], [(0, 1)],
            dict(sgd=1e-3, momentum=2e-4, nesterov=2e-4, adagrad=0.5, rmsprop=0.01,
                 adam=0.1, adamw=0.1), 500, log_levels=True),
    Problem("plateau", "plateau 1 - exp(-(x^2 + 4 y^2)/2), tiny gradients far out",
            r"plateau $1 - e^{-(x^2 + 4y^2)/2}$",
            plateau, (3.2, 1.2), (-4, 4), (-2, 2), [(0, 0)], [],
            dict(sgd=0.5, momentum=0.1, nesterov=0.1, adagrad=0.5, rmsprop=0.01,
                 adam=0.1, adamw=0.1), 200),
]}


def problem_lr(problem, name, lr=None):
    """The lr `name` runs with on `problem`: lr if given, else the tuned one, else the default."""
    return lr or problem.lrs.get(name) or get_spec(name).lr


def run_path(problem, name, steps, lr=None):
    """The iterates of optimizer `name` on `problem` from its start, as an (n, 2) array.

    Stops early when the iterate leaves a wide box around the plot or stops being finite.
    Line-search methods record every iteration (L-BFGS runs one iteration per step).
    """
    from .tensor import Tensor
    p = Tensor(np.array(problem.start, dtype=np.float64), requires_grad=True)
    spec = get_spec(name)
    extra = {"max_iter": 1} if name == "lbfgs" else {}
    opt = spec.make([p], lr=lr or problem.lrs.get(name), **extra)
    closure_mode = spec.needs_closure

    def closure():
        return problem.f(p[0], p[1])

    path = [p.numpy().copy()]
    span = max(problem.xlim[1] - problem.xlim[0], problem.ylim[1] - problem.ylim[0])
    for _ in range(steps):
        try:
            if closure_mode:
                opt.step(closure)
            else:
                opt.zero_grad()
                closure().backward()
                opt.step()
        except (ValueError, ArithmeticError, np.linalg.LinAlgError):
            break                   # a singular Hessian or a failed line search ends the path
        x = p.numpy().copy()
        path.append(x)
        if not np.all(np.isfinite(x)) or np.abs(x).max() > 3 * span:
            break
        if np.abs(path[-1] - path[-2]).max() < 1e-10 and closure_mode:
            break                   # converged: later steps would not move
    return np.array(path)


# ---- n-D problems with known minima (Moré, Garbow & Hillstrom 1981, and two convex ones) ----

class NDProblem:
    """An n-D minimization problem: `f(x)` maps a 1-D float64 Tensor to the scalar loss; `x0`
    (host NumPy) is the standard start and `f_star` the minimum value reached from it.
    `value_and_grad` and `hessp` take and return host NumPy vectors (scipy.optimize's calling
    convention), so SciPy and the library's optimizers can count evaluations of one function."""

    def __init__(self, name, f, x0, f_star):
        self.name, self.f, self.x0, self.f_star = name, f, np.asarray(x0, dtype=np.float64), f_star

    @property
    def n(self):
        return self.x0.size

    def value_and_grad(self, x, device=None):
        from . import autograd
        from .tensor import Tensor
        t = Tensor(np.asarray(x, dtype=np.float64), requires_grad=True, device=device)
        loss = self.f(t)
        (g,) = autograd.grad(loss, [t])
        return float(loss.item()), g.numpy().copy()

    def hessp(self, x, v, device=None):
        from . import autograd
        from .tensor import Tensor
        t = Tensor(np.asarray(x, dtype=np.float64), requires_grad=True, device=device)
        v = Tensor(np.asarray(v, dtype=np.float64), device=device)
        return autograd.hvp(self.f, t, v)[1].numpy().copy()

    def __repr__(self):
        return f"NDProblem({self.name!r}, n={self.n}, f_star={self.f_star:.6g})"


def _const(a):
    """A host constant as a Tensor on x's device, made once per device."""
    from .tensor import Tensor
    cache = {}

    def on(x):
        if x.device not in cache:
            cache[x.device] = Tensor(a, device=x.device)
        return cache[x.device]
    return on


def _sumsq(terms):
    return sum((t * t).sum() for t in terms)


def extended_rosenbrock(n):
    """MGH 21: the 2-D `rosenbrock` summed over the pairs (x_2i-1, x_2i); f* = 0 at ones."""
    if n < 2 or n % 2:
        raise ValueError(f"extended_rosenbrock: n must be even and >= 2, got {n}")
    return NDProblem(f"rosenbrock{n}", lambda x: rosenbrock(x[0::2], x[1::2]).sum(),
                     np.tile([-1.2, 1.0], n // 2), 0.0)


def beale_problem():
    """MGH 5: the 2-D `beale` from (1, 1); f* = 0 at (3, 0.5)."""
    return NDProblem("beale", lambda x: beale(x[0], x[1]), [1.0, 1.0], 0.0)


def powell_singular():
    """MGH 13: f* = 0 at the origin, where the Hessian is singular (convergence is linear)."""
    def f(x):
        return _sumsq([x[0] + 10 * x[1], np.sqrt(5) * (x[2] - x[3]), (x[1] - 2 * x[2]) ** 2,
                       np.sqrt(10) * (x[0] - x[3]) ** 2])
    return NDProblem("powell_singular", f, [3.0, -1.0, 0.0, 1.0], 0.0)


def wood():
    """MGH 14: f* = 0 at (1, 1, 1, 1); a saddle region lies on the way from the start."""
    def f(x):
        return _sumsq([10 * (x[1] - x[0] ** 2), 1 - x[0], np.sqrt(90) * (x[3] - x[2] ** 2),
                       1 - x[2], np.sqrt(10) * (x[1] + x[3] - 2), (x[1] - x[3]) / np.sqrt(10)])
    return NDProblem("wood", f, [-3.0, -1.0, -3.0, -1.0], 0.0)


def extended_trigonometric(n=10):
    """MGH 26: f_i = n - sum_j cos x_j + i (1 - cos x_i) - sin x_i from x0 = 1/n.

    f* = 0 is the global minimum, but from x0 every method tried (SciPy's included) ends in
    the local minimum f = 2.79506e-5 for n = 10 (MGH list both); that is f_star here.
    """
    if n != 10:
        raise ValueError(f"extended_trigonometric: f_star is known for n = 10 only, got {n}")
    i = _const(np.arange(1.0, n + 1))

    def f(x):
        c = x.cos()
        return _sumsq([n - c.sum() + i(x) * (1 - c) - x.sin()])
    return NDProblem(f"trigonometric{n}", f, np.full(n, 1.0 / n), 2.795058e-5)


def conditioned_quadratic(n=50, cond=1e4, seed=0):
    """0.5 x^T A x - b^T x, A SPD with eigenvalues geomspace(1, cond, n) in a random basis;
    f* = -0.5 b^T A^-1 b."""
    rng = np.random.default_rng(seed)
    Q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    A = Q @ np.diag(np.geomspace(1.0, cond, n)) @ Q.T
    A = 0.5 * (A + A.T)
    b = rng.standard_normal(n)
    At, bt = _const(A), _const(b)
    return NDProblem(f"quadratic{n}", lambda x: 0.5 * (x * (At(x) @ x)).sum() - (bt(x) * x).sum(),
                     np.zeros(n), float(-0.5 * b @ np.linalg.solve(A, b)))


def logistic_regression(m=200, d=10, reg=1e-2, seed=0):
    """Mean logistic loss of a linear model with bias and L2 penalty reg/2 |w|^2 (strictly
    convex: a unique minimizer even on separable data); f* by Newton to machine precision."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((m, d))
    w_true = rng.standard_normal(d)
    y = (X @ w_true + 0.5 * rng.standard_normal(m) > 0).astype(float)
    Xb = np.hstack([X, np.ones((m, 1))])
    s = 2 * y - 1                                   # labels as +-1
    Xs, zero = _const(Xb * s[:, None]), _const(np.zeros(m))

    def f(x):
        # log(1 + exp(-s z)) = softplus(-s z), written stably as max(u, 0) + log(1 + exp(-|u|))
        u = -(Xs(x) @ x)
        return ((u.maximum(zero(x)) + (1 + (-(u.abs())).exp()).log()).mean()
                + 0.5 * reg * (x[:d] * x[:d]).sum())

    w = np.zeros(d + 1)
    for _ in range(50):                             # Newton on the host, for f*
        p = 1 / (1 + np.exp(-(Xb @ w) * s))
        g = -(Xb * (s * (1 - p))[:, None]).mean(0) + reg * np.r_[w[:d], 0]
        H = (Xb * (p * (1 - p))[:, None]).T @ Xb / m + reg * np.diag(np.r_[np.ones(d), 0])
        w = w - np.linalg.solve(H, g)
    prob = NDProblem("logistic", f, np.zeros(d + 1), 0.0)
    prob.f_star = prob.value_and_grad(w)[0]
    return prob


def mgh_problems():
    """The n-D set of the module docstring's table, in its order (built fresh: a few ms)."""
    return [extended_rosenbrock(2), extended_rosenbrock(10), extended_rosenbrock(100),
            beale_problem(), powell_singular(), wood(), extended_trigonometric(10),
            conditioned_quadratic(), logistic_regression()]
