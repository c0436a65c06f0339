"""What a benchmark shows: a summary table (printed and CSV), the learning-rate sensitivity
of each problem, and a performance profile across problems.

Per problem and optimizer, over the seeds of the chosen setting: the median and quartiles
of the final and of the best validation metric, and the median steps and seconds to the
problem's target (a seed that never reaches it counts as infinitely slow, so the median is
"-" when half the seeds miss). A diverged run scores the worst value there is.

Performance profile (Dolan & More 2002): with t[p, s] the median steps optimizer s needs on
problem p, rho_s(tau) is the fraction of problems on which t[p, s] <= tau * min_s' t[p, s'];
rho_s(1) is how often s is the fastest, and the curve's height at large tau how often it
reaches the target at all.
"""
import math

from .. import backend
from .runner import quantiles

np = backend.np
INF = float("inf")


def _worst(problem):
    return -INF if problem.higher_is_better else INF


def _run_values(problem, row):
    """(final, best, steps to target, seconds to target) of one run."""
    if row["status"] != "ok" or not row["metric"]:
        return _worst(problem), _worst(problem), INF, INF
    m = [_worst(problem) if v is None or not math.isfinite(v) else v for v in row["metric"]]
    best = problem.best(m)
    steps = secs = INF
    for v, n, t in zip(m, row["steps"], row["seconds"]):
        if problem.reached(v):
            steps, secs = n, t
            break
    return m[-1], _worst(problem) if best is None else best, steps, secs


def cell_stats(cell):
    """dict of quartiles (q1, median, q3) of final, best, steps, seconds; counts of statuses."""
    vals = [_run_values(cell.problem, r) for r in cell.seed_runs]
    out = {name: quantiles([v[i] for v in vals])
           for i, name in enumerate(("final", "best", "steps", "seconds"))}
    out["ok"] = sum(r["status"] == "ok" for r in cell.seed_runs)
    out["diverged"] = sum(r["status"] == "diverged" for r in cell.seed_runs)
    out["failed"] = len(cell.seed_runs) - out["ok"] - out["diverged"]
    return out


def _fmt(x, fmt=".4g"):
    return "-" if x is None or not math.isfinite(x) else format(x, fmt)


def _iqr(q, fmt=".4g"):
    return f"{_fmt(q[1], fmt)} [{_fmt(q[0], fmt)}, {_fmt(q[2], fmt)}]"


def summary_table(result):
    """(headers, display rows, raw rows) with one row per problem and optimizer."""
    headers = ["problem", "optimizer", "budget", "settings", "chosen", "metric",
               "final (median [q1, q3])", "best (median [q1, q3])", "steps_to_target",
               "seconds_to_target", "ok/diverged/failed"]
    rows, raw = [], []
    for c in result.cells:
        s = cell_stats(c)
        chosen = " ".join(f"{k}={v}" for k, v in sorted(c.best_hparams.items()))
        counts = f"{s['ok']}/{s['diverged']}/{s['failed']}"
        rows.append([c.problem.name, c.optimizer, c.budget, len(c.tuning), chosen,
                     c.problem.metric, _iqr(s["final"]), _iqr(s["best"]), _fmt(s["steps"][1], ".0f"),
                     _fmt(s["seconds"][1], ".2f"), counts])
        raw.append([c.problem.name, c.optimizer, c.budget, len(c.tuning), chosen, c.problem.metric,
                    *s["final"], *s["best"], s["steps"][1], s["seconds"][1], s["ok"], s["diverged"],
                    s["failed"]])
    raw_headers = ["problem", "optimizer", "budget", "settings", "chosen", "metric",
                   "final_q1", "final_median", "final_q3", "best_q1", "best_median", "best_q3",
                   "steps_to_target", "seconds_to_target", "ok", "diverged", "failed"]
    return headers, rows, (raw_headers, raw)


def write_summary_csv(result, path):
    from ..experiment import write_csv
    _, _, (headers, raw) = summary_table(result)
    write_csv(path, headers, raw)


def performance_profile(result, cost="steps"):
    """(taus, {optimizer: rho values at taus}) from the median steps (or seconds) to target."""
    problems = list(dict.fromkeys(c.problem.name for c in result.cells))
    optimizers = list(dict.fromkeys(c.optimizer for c in result.cells))
    t = {(c.problem.name, c.optimizer): cell_stats(c)[cost][1] for c in result.cells}
    ratios = {o: [] for o in optimizers}
    for p in problems:
        best = min(t[p, o] for o in optimizers)
        for o in optimizers:
            ratios[o].append(t[p, o] / best if math.isfinite(t[p, o]) else INF)
    finite = [r for rs in ratios.values() for r in rs if math.isfinite(r)]
    top = max(finite + [1.0]) * 2
    taus = np.unique(np.concatenate([[1.0, top], np.geomspace(1.0, top, 200), finite]))
    rho = {o: np.array([sum(r <= tau for r in ratios[o]) / len(problems) for tau in taus])
           for o in optimizers}
    return taus, rho


def plot_performance_profile(result, path, cost="steps"):
    from ..plots import colours, new_figure
    taus, rho = performance_profile(result, cost)
    fig = new_figure(figsize=(6.5, 4.2))
    ax = fig.add_subplot()
    styles = ["-", "--", ":", "-."]
    for i, ((o, r), col) in enumerate(zip(rho.items(), colours(len(rho)))):
        # dashes and a small vertical offset keep coinciding curves visible
        ax.step(taus, r + 0.006 * (i - len(rho) / 2), where="post", label=o, color=col, lw=1.8,
                ls=styles[i % len(styles)])
    ax.set_xscale("log")
    from matplotlib.ticker import ScalarFormatter
    ax.xaxis.set_major_formatter(ScalarFormatter())
    ax.xaxis.set_minor_formatter(ScalarFormatter())
    ax.set(xlabel=f"tau (within tau x the fewest {cost} to target)", ylim=(-0.02, 1.02),
           ylabel="fraction of problems", title=f"Performance profile ({result.budget} budget)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=9, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return fig


def plot_lr_sensitivity(result, problem, path):
    """Best metric of each tuning run against its lr, one line per optimizer; x marks divergence."""
    from ..plots import colours, new_figure
    cells = [c for c in result.cells if c.problem.name == problem]
    fig = new_figure(figsize=(6.5, 4.2))
    ax = fig.add_subplot()
    p = cells[0].problem
    for c, col in zip(cells, colours(len(cells))):
        pts = sorted((r["hparams"]["lr"], _run_values(p, r)[1]) for r in c.tuning)
        ok = [(lr, v) for lr, v in pts if math.isfinite(v)]
        bad = [lr for lr, v in pts if not math.isfinite(v)]
        if ok:
            ax.plot(*zip(*ok), "o-" if c.budget == "grid" else "o", color=col, label=c.optimizer)
        if bad:
            y = min(v for _, v in ok) if ok and p.higher_is_better else max((v for _, v in ok), default=1.0)
            ax.plot(bad, [y] * len(bad), "x", color=col, ms=9,
                    label=None if ok else f"{c.optimizer} (diverged)")
    ax.axhline(p.target, color="0.5", ls="--", lw=1, label=f"target {p.target:g}")
    ax.set_xscale("log")
    if not p.higher_is_better:
        ax.set_yscale("log")
    ax.set(xlabel="learning rate", ylabel=f"best {p.metric} (seed 0)",
           title=f"{problem}: learning-rate sensitivity (x: diverged)")
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return fig


def write_report(result, out):
    """summary.csv, performance_profile.png and lr_sensitivity_<problem>.png in folder `out`;
    returns the paths written."""
    import os
    os.makedirs(out, exist_ok=True)
    paths = [os.path.join(out, "summary.csv")]
    write_summary_csv(result, paths[0])
    paths.append(os.path.join(out, "performance_profile.png"))
    plot_performance_profile(result, paths[-1])
    for p in dict.fromkeys(c.problem.name for c in result.cells):
        paths.append(os.path.join(out, f"lr_sensitivity_{p}.png"))
        plot_lr_sensitivity(result, p, paths[-1])
    return paths


def defaults_vs_tuned(defaults, tuned):
    """The crowded-valley question (Schmidt et al. 2021): is trying several optimizers at their
    defaults as good as tuning one on a grid of the same size?

    defaults: a BenchmarkResult with budget oneshot over several optimizers; tuned: one with a
    grid (or random) budget. Returns (headers, rows): per problem, the median best metric of
    the best optimizer at its defaults (named), and of each tuned optimizer.
    """
    tuned_opts = list(dict.fromkeys(c.optimizer for c in tuned.cells))
    headers = ["problem", "metric", f"best of {len({c.optimizer for c in defaults.cells})} "
               "at defaults"] + [f"{o} tuned ({len(tuned.cells[0].tuning)} settings)"
                                 for o in tuned_opts]
    rows = []
    for p in dict.fromkeys(c.problem.name for c in defaults.cells):
        cells = [c for c in defaults.cells if c.problem.name == p]
        problem = cells[0].problem
        best_cell, best = None, None
        for c in cells:
            v = cell_stats(c)["best"][1]
            if best_cell is None or problem.better(v, best):
                best_cell, best = c, v
        row = [p, problem.metric, f"{_fmt(best)} ({best_cell.optimizer})"]
        for o in tuned_opts:
            c = [c for c in tuned.cells if c.problem.name == p and c.optimizer == o]
            row.append(_fmt(cell_stats(c[0])["best"][1]) if c else "-")
        rows.append(row)
    return headers, rows
