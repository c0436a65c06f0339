"""tinygrad-opt instruments | spectrum | surface in quick mode: tables, files, usage errors."""
import csv
import re

import pytest

from conftest import run_cli as run

pytest.importorskip("matplotlib")

QUICK = ["--quick", "--data", "spirals", "--progress", "none"]     # no scikit-learn
PNG = b"\x89PNG\r\n\x1a\n"


def rows(out, first_header):
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(first_header + " "))
    body = []
    for line in lines[start + 2:]:
        if not line.strip():
            break
        body.append(line.split())
    return lines[start].split(), body


@pytest.mark.slow
def test_instruments_command(tmp_path, capsys):
    code, out, err = run(capsys, "instruments", *QUICK, "--out", str(tmp_path), "--quantities",
                         "Loss,GradNorm,NormTest", "--every", "2")
    assert code == 0, err
    headers, body = rows(out, "quantity")
    assert headers == ["quantity", "first", "median", "last"]
    assert [r[0] for r in body] == ["Loss", "GradNorm", "NormTest"]
    assert (tmp_path / "instruments.png").read_bytes()[:8] == PNG
    with open(tmp_path / "instruments.csv") as f:
        table = list(csv.reader(f))
    assert table[0] == ["step", "Loss", "GradNorm", "NormTest"]
    assert [int(r[0]) for r in table[1:]] == list(range(2, 2 * len(table) - 1, 2))
    assert float(table[1][1]) == pytest.approx(float(body[0][1]), rel=1e-3)


@pytest.mark.slow
def test_spectrum_and_surface_commands(tmp_path, capsys):
    code, out, err = run(capsys, "spectrum", *QUICK, "--out", str(tmp_path), "--samples", "40",
                         "--lanczos-steps", "8")
    assert code == 0, err
    headers, body = rows(out, "epoch")
    assert headers[:4] == ["epoch", "lambda_min", "lambda_max", "negative_mass"]
    assert [r[0] for r in body] == ["0", "1", "2"]
    assert all(float(r[1]) <= float(r[2]) for r in body)
    assert (tmp_path / "spectrum.png").read_bytes()[:8] == PNG
    code, out, err = run(capsys, "surface", *QUICK, "--out", str(tmp_path), "--samples", "40")
    assert code == 0, err
    headers, body = rows(out, "alpha")
    assert headers == ["alpha", "train_loss", "val_loss"] and body[0][0] == "-0.50"
    assert "barrier on the line" in out
    assert (tmp_path / "surface.png").read_bytes()[:8] == PNG


def test_usage_errors_are_one_line(tmp_path, capsys):
    for argv, needle in ((["instruments", "--quantities", "Curvature"], "unknown quantity"),
                         (["instruments", "--every", "0"], "positive integer"),
                         (["surface", "--span", "-1"], "positive number"),
                         (["spectrum", "--vectors", "x"], "positive integer")):
        code, out, err = run(capsys, *argv, "--out", str(tmp_path))
        assert code == 2 and needle in err and len(err.strip().splitlines()) == 1, (argv, err)


def test_help_lists_the_commands(capsys):
    code, out, _ = run(capsys, "--help")
    assert code == 0
    for name in ("instruments", "spectrum", "surface"):
        assert f"  {name}" in out


def test_name_lists_keep_first_order_drop_repeats_and_pass_presets_whole():
    import argparse
    from tinygrad_opt import cliargs
    parse = cliargs.name_list(["a", "b", "c"], "thing", presets=("all",))
    assert parse(" c, a,c ,b") == ["c", "a", "b"]
    assert parse("all") == "all"
    for bad, needle in (("a,zz", "unknown thing zz; a preset (all) or names from a, b, c"),
                        (" , ", "unknown thing (none)")):
        with pytest.raises(argparse.ArgumentTypeError, match=re.escape(needle)):
            parse(bad)
    with pytest.raises(argparse.ArgumentTypeError, match="unknown x a; choose from b$"):
        cliargs.name_list(["b"], "x")("a")
