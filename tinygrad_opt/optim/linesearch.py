"""Line searches along a direction d: backtracking Armijo and strong Wolfe.

Both work on a 1-D function phi(alpha) -> (value, derivative, grad): the loss at x + alpha d,
its slope phi'(alpha) = grad . d, and the full gradient there, which the search hands back
untouched for the accepted alpha. `flat.FlatObjective.phi` builds such a phi from a loss closure.
Conditions (Nocedal & Wright, Numerical Optimization, 2nd ed., eq. 3.6 and 3.7):

    sufficient decrease (Armijo)   phi(alpha) <= phi(0) + c1 alpha phi'(0)
    strong curvature               |phi'(alpha)| <= c2 |phi'(0)|          0 < c1 < c2 < 1
"""
import math
from collections import namedtuple


LineSearchResult = namedtuple("LineSearchResult", "alpha value derivative grad evals success")
LineSearchResult.__doc__ = """Outcome of a line search.

alpha, value, derivative, grad: the accepted step and phi, phi' and the full gradient there
(alpha = 0 with the starting values if no step decreased the loss); evals: calls of phi;
success: whether the requested conditions hold at alpha."""


def _check_descent(name, f0, df0):
    if not math.isfinite(f0):
        raise ValueError(f"{name}: the loss at the starting point is {f0}; cannot search from it")
    if not df0 < 0:
        raise ValueError(f"{name}: d is not a descent direction: phi'(0) = g.d = {df0:.6g} >= 0; "
                         "pass a direction with g.d < 0 (for example d = -g)")


def backtracking_armijo(phi, f0, df0, alpha=1.0, c1=1e-4, rho=0.5, max_evals=30, grad0=None):
    """First alpha in alpha, rho*alpha, rho^2*alpha, ... with sufficient decrease (N&W Alg. 3.1)."""
    _check_descent("backtracking_armijo", f0, df0)
    if not 0 < c1 < 1 or not 0 < rho < 1 or not alpha > 0:
        raise ValueError(f"backtracking_armijo: need 0 < c1 < 1, 0 < rho < 1 and alpha > 0, "
                         f"got c1={c1}, rho={rho}, alpha={alpha}")
    for evals in range(1, max_evals + 1):
        f, df, g = phi(alpha)
        if f <= f0 + c1 * alpha * df0:          # False for nan: backtrack
            return LineSearchResult(alpha, f, df, g, evals, True)
        alpha *= rho
    return LineSearchResult(0.0, f0, df0, grad0, max_evals, False)


def strong_wolfe(phi, f0, df0, alpha=1.0, c1=1e-4, c2=0.9, max_evals=25, alpha_max=1e10,
                 grad0=None, accept=None):
    """Step satisfying the strong Wolfe conditions: bracketing then zoom (N&W Alg. 3.5 and 3.6).

    c2 = 0.9 suits quasi-Newton directions, c2 = 0.1 nonlinear CG. If max_evals runs out, the
    best point found with sufficient decrease is returned with success=False.
    Near a minimizer the loss changes by less than its rounding error; there the search
    compares the trapezoid estimate phi(0) + alpha (phi'(0) + phi'(alpha)) / 2 instead
    (exact for a quadratic: the idea of Hager & Zhang's approximate Wolfe conditions, 2005),
    so the exact slopes still drive it. The returned value is always the computed loss.
    accept(alpha, grad) -> bool, if given, is one more condition a point needs to end the
    search (SciPy's `extra_condition`); a point meeting Wolfe but not it is treated like one
    failing the curvature condition, so the search goes on.
    """
    _check_descent("strong_wolfe", f0, df0)
    if not 0 < c1 < c2 < 1 or not alpha > 0:
        raise ValueError(f"strong_wolfe: need 0 < c1 < c2 < 1 and alpha > 0, "
                         f"got c1={c1}, c2={c2}, alpha={alpha}")
    if max_evals < 1:
        raise ValueError(f"strong_wolfe: max_evals must be at least 1, got {max_evals}")
    def done(point):                            # strong curvature (and accept) at point
        return abs(point[2]) <= -c2 * df0 and (accept is None or accept(point[0], point[3][0]))
    res = _search(_resolve_rounding(phi, f0, df0), f0, df0, alpha, c1, done, max_evals,
                  alpha_max, (grad0, f0))
    g, f = res.grad
    return res._replace(value=f, grad=g)


def _resolve_rounding(phi, f0, df0):
    """phi whose value is the trapezoid estimate when the change from f0 is rounding noise;
    the computed value travels with the gradient as (grad, value)."""
    noise = 64 * 2.0 ** -52 * abs(f0)           # a few ulps of f0 (float64 arithmetic)

    def smooth(alpha):
        f, df, g = phi(alpha)
        if abs(f - f0) <= noise and math.isfinite(df):
            return f0 + 0.5 * alpha * (df0 + df), df, (g, f)
        return f, df, (g, f)
    return smooth


def _search(phi, f0, df0, alpha, c1, done, max_evals, alpha_max, grad0):
    """N&W Alg. 3.5: bracket a step with sufficient decrease, then zoom."""
    prev = (0.0, f0, df0, grad0)
    evals = 0
    while evals < max_evals:
        f, df, g = phi(alpha)
        evals += 1
        cur = (alpha, f, df, g)
        if not f <= f0 + c1 * alpha * df0 or (evals > 1 and f >= prev[1]):
            return _zoom(phi, f0, df0, prev, cur, c1, done, evals, max_evals)
        if done(cur):
            return LineSearchResult(alpha, f, df, g, evals, True)
        if df >= 0:                             # passed a minimizer: it lies in [prev, alpha]
            return _zoom(phi, f0, df0, cur, prev, c1, done, evals, max_evals)
        if alpha >= alpha_max:
            break
        # still going down: extrapolate to the cubic's minimizer, kept within [2, 10] * alpha
        nxt = _cubic_min(prev, cur)
        lo, hi = 2 * alpha, 10 * alpha
        alpha = min(alpha_max, hi if nxt is None else min(max(nxt, lo), hi))
        prev = cur
    return LineSearchResult(*cur, evals, False)     # sufficient decrease, curvature not met


def _zoom(phi, f0, df0, lo, hi, c1, done, evals, max_evals):
    """N&W Alg. 3.6: shrink [lo, hi] (lo: lowest value with sufficient decrease so far, and
    phi'(lo) (hi - lo) < 0) until a point satisfies the strong Wolfe conditions."""
    while evals < max_evals and abs(hi[0] - lo[0]) > 1e-12 * max(abs(hi[0]), abs(lo[0])):
        a = _interpolate(lo, hi)
        f, df, g = phi(a)
        evals += 1
        if not f <= f0 + c1 * a * df0 or f >= lo[1]:
            hi = (a, f, df, g)
        else:
            if done((a, f, df, g)):
                return LineSearchResult(a, f, df, g, evals, True)
            if df * (hi[0] - lo[0]) >= 0:
                hi = lo
            lo = (a, f, df, g)
    return LineSearchResult(*lo, evals, False)


def _cubic_min(p1, p2):
    """Minimizer of the cubic through (a, f, f') at two points (N&W eq. 3.59), or None."""
    (a1, f1, d1, _), (a2, f2, d2, _) = p1, p2
    if not all(map(math.isfinite, (f1, d1, f2, d2))) or a1 == a2:
        return None
    e1 = d1 + d2 - 3 * (f1 - f2) / (a1 - a2)
    rad = e1 * e1 - d1 * d2
    if rad < 0:                                 # no real stationary point
        return None
    e2 = math.copysign(math.sqrt(rad), a2 - a1)
    den = d2 - d1 + 2 * e2
    if den == 0:
        return None
    a = a2 - (a2 - a1) * (d2 + e2 - e1) / den
    return a if math.isfinite(a) else None


def _quadratic_min(p1, p2):
    """Minimizer of the parabola through f, f' at p1 and f at p2, or None."""
    (a1, f1, d1, _), (a2, f2, _, _) = p1, p2
    h = a2 - a1
    den = 2 * (f2 - f1 - d1 * h)
    if not math.isfinite(den) or den <= 0:      # not convex: no minimizer
        return None
    a = a1 - d1 * h * h / den
    return a if math.isfinite(a) else None


def _interpolate(lo, hi):
    """Trial point inside [lo, hi]: cubic, else quadratic, else the midpoint; kept at least a
    tenth of the interval away from both ends so that the interval keeps shrinking."""
    left, right = min(lo[0], hi[0]), max(lo[0], hi[0])
    w = right - left
    a = _cubic_min(lo, hi)
    if a is None:
        a = _quadratic_min(lo, hi)
    if a is None:
        return left + 0.5 * w
    return min(max(a, left + 0.1 * w), right - 0.1 * w)


LINE_SEARCHES = {"strong_wolfe": strong_wolfe, "armijo": backtracking_armijo}
