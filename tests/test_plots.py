"""Pictures without argparse: what is drawn where (axis labels, legends, clipped paths)."""
import numpy as np
import pytest

from tinygrad_opt import plots
from tinygrad_opt.experiment import RunResult
from tinygrad_opt.testfunctions import PROBLEMS, run_path
from tinygrad_opt.train import History

pytest.importorskip("matplotlib")


def test_exits_of_a_path_land_on_the_edge():
    box = ((-1, 1), (-1, 1))
    assert plots.exits(np.array([[0.0, 0.0], [0.5, 0.5]]), *box) == []
    # leaves through the right edge at y = 0.25, comes back, leaves through the bottom
    path = np.array([[0.0, 0.0], [2.0, 0.5], [0.0, 0.0], [0.0, -3.0], [np.nan, np.nan]])
    (p1, d1), (p2, d2) = plots.exits(path, *box)
    np.testing.assert_allclose(p1, [1.0, 0.25])
    np.testing.assert_allclose(d1, [2.0, 0.5])
    np.testing.assert_allclose(p2, [0.0, -1.0])
    # a corner: the edge crossed first wins (x = 1 at t = 1/2, y = 1 at t = 1/4)
    ((p3, _),) = plots.exits(np.array([[0.0, 0.0], [2.0, 4.0]]), *box)
    np.testing.assert_allclose(p3, [0.5, 1.0])
    ((p4, d4),) = plots.exits(np.array([[0.0, 0.0], [np.inf, 0.0]]), *box)
    np.testing.assert_allclose(p4, [0.0, 0.0])
    assert d4 is None


def test_landscape_panels_have_axis_labels_and_mark_where_newton_leaves(tmp_path):
    p = PROBLEMS["plateau"]
    paths = {(p.name, n): run_path(p, n, 30) for n in ("sgd", "newton")}
    fig = plots.plot_landscape([p], ["sgd", "newton"], paths, tmp_path / "l.png", 40)
    ax = fig.axes[0]
    assert ax.get_xlabel() == "$x$" and ax.get_ylabel() == "$y$"
    assert ax.get_xlim() == p.xlim and ax.get_ylim() == p.ylim       # clipped to the panel
    assert np.abs(paths[p.name, "newton"]).max() > 4                 # Newton runs away ...
    arrows = [line for line in ax.get_lines() if isinstance(line.get_marker(), tuple)]
    assert len(arrows) == 1                                          # ... and that is marked
    x, y = arrows[0].get_xydata()[0]
    assert x == pytest.approx(p.xlim[1]) and p.ylim[0] <= y <= p.ylim[1]
    labels = [t.get_text() for t in fig.axes[1].get_legend().get_texts()]
    assert "path leaves the panel" in labels and "newton" in labels
    assert (tmp_path / "l.png").is_file()


def test_compare_legend_names_the_target_line(tmp_path):
    h = History()
    h.epoch, h.train_loss, h.val_acc = [0, 1], [1.0, 0.5], [0.8, 0.97]
    results = [RunResult("sgd", 0.1, h, 1.0), RunResult("newtoncg", 1.0, None, 2.0, "failed: x")]
    fig = plots.plot_compare(results, tmp_path / "c.png", target=0.95, title="t")
    ax_loss, ax_acc = fig.axes
    assert [t.get_text() for t in ax_acc.get_legend().get_texts()] == ["sgd", "target 95%"]
    assert [t.get_text() for t in ax_loss.get_legend().get_texts()] == ["sgd (lr 0.1)"]
    assert [tick for tick in ax_acc.get_xticks() if 1 <= tick <= 2] == [1, 2]   # whole epochs
