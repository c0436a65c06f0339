"""Classic 2-D test functions for optimizers, and the path an optimizer takes on one.

    from tinygrad_opt.testfunctions import PROBLEMS, run_path
    p = PROBLEMS["rosenbrock"]
    path = run_path(p, "adam", p.steps)            # (steps + 1, 2) iterates from p.start
    p.f(*path[-1])                                 # f works on floats, NumPy grids and Tensors

Each function is written with operators only, so the same formula evaluates a contour grid
and builds a graph for autograd.
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
