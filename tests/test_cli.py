"""The tinygrad-opt command line, end to end in quick mode: tables, pictures, exit codes."""
import re
import subprocess
import sys

import pytest

from tinygrad_opt import cli, testfunctions

pytest.importorskip("sklearn")
pytest.importorskip("matplotlib")

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def run(capsys, *argv):
    """(exit code, stdout, stderr) of `tinygrad-opt argv`."""
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def table(out, first_header):
    """The table whose header line starts with `first_header`: (headers, rows of cells)."""
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(first_header + " "))
    headers = lines[start].split()
    assert set(lines[start + 1]) <= {"-", " "}
    rows = []
    for line in lines[start + 2:]:
        if not line.strip():
            break
        rows.append(line)
    return headers, rows


def number(cell):
    return float(cell.rstrip("%"))


def assert_png(path):
    from matplotlib.image import imread
    assert path.is_file()
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    image = imread(path)
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100


def test_compare_table_and_picture(tmp_path, capsys):
    code, out, _ = run(capsys, "compare", "--quick", "--out", str(tmp_path),
                       "--optimizers", "sgd,momentum,adam:0.01", "--target", "0.5")
    assert code == 0
    headers, rows = table(out, "optimizer")
    assert headers == ["optimizer", "lr", "final_train_loss", "best_val_acc", "epochs_to_50%",
                       "time_s"]
    assert [r.split()[0] for r in rows] == ["sgd", "momentum", "adam"]
    for r in rows:
        name, lr, loss, acc, reach, seconds = r.split()
        assert 0 < number(lr) <= 1 and 0 < number(loss) < 2.31        # below log(10) at chance
        assert 10 < number(acc) <= 100 and number(seconds) >= 0
        assert reach == "-" or 1 <= int(reach) <= 2
    assert rows[2].split()[1] == "0.01"
    assert_png(tmp_path / "compare.png")
    assert (tmp_path / "compare.csv").read_text().startswith("optimizer,lr,")


def test_compare_default_optimizers_parse():
    args = cli.parse_args(["compare"])
    assert [n for n, _ in args.optimizers] == ["sgd", "momentum", "nesterov", "adagrad",
                                               "rmsprop", "adam"]
    assert args.epochs == 20 and args.target == 0.95 and args.out == "out"
    quick = cli.parse_args(["compare", "--quick", "--epochs", "3"])
    assert quick.epochs == 3 and quick.hidden == (16,)       # explicit flags win over --quick


def test_train_table_history_and_exact_resume(tmp_path, capsys):
    ckpt = tmp_path / "run.ckpt"
    common = ["--quick", "--hidden", "16", "--optimizer", "momentum", "--progress", "none"]
    code, out, _ = run(capsys, "train", *common, "--epochs", "1", "--save", str(ckpt),
                       "--out", str(tmp_path / "a"))
    assert code == 0 and ckpt.is_file()
    code, resumed, _ = run(capsys, "train", "--resume", str(ckpt), "--epochs", "2",
                           "--progress", "none", "--out", str(tmp_path / "a"))
    assert code == 0 and "resumed" in resumed
    code, straight, _ = run(capsys, "train", *common, "--epochs", "2",
                            "--out", str(tmp_path / "b"))
    assert code == 0
    headers, rows = table(straight, "optimizer")
    assert headers == ["optimizer", "epochs", "train_loss", "val_loss", "val_acc",
                       "best_val_acc", "time_s"]
    assert len(rows) == 1 and rows[0].split()[:2] == ["momentum", "2"]
    assert 10 < number(rows[0].split()[4]) <= 100
    # one epoch, a checkpoint, one more epoch == two epochs in one go (time aside)
    assert table(resumed, "optimizer")[1][0].split()[:6] == rows[0].split()[:6]
    lines = (tmp_path / "b" / "train_history.csv").read_text().splitlines()
    assert lines[0] == "epoch,train_loss,val_loss,val_acc,lr" and len(lines) == 3


@pytest.mark.parametrize("flags", [
    ["--optimizer", "lbfgs"],
    ["--optimizer", "nesterov", "--schedule", "cosine", "--warmup", "1", "--init", "orthogonal",
     "--clip", "1.0", "--dtype", "float64"],
    ["--data", "spirals", "--optimizer", "adagrad", "--init", "sparse", "--schedule", "step"],
])
def test_train_variants(tmp_path, capsys, flags):
    code, out, _ = run(capsys, "train", "--quick", "--progress", "lines", "--out", str(tmp_path),
                       *flags)
    assert code == 0
    assert out.count("epoch ") >= 2
    _, rows = table(out, "optimizer")
    assert len(rows) == 1 and 0 <= number(rows[0].split()[2]) < 10


def test_landscape_picture_and_table(tmp_path, capsys):
    code, out, _ = run(capsys, "landscape", "--quick", "--out", str(tmp_path),
                       "--functions", "quadratic,rosenbrock,saddle",
                       "--optimizers", "sgd,adam,newton,lbfgs")
    assert code == 0
    headers, rows = table(out, "function")
    assert headers == ["function", "optimizer", "lr", "steps", "final_point", "final_value"]
    assert len(rows) == 3 * 4
    final = {tuple(r.split()[:2]): r.split()[-1] for r in rows}
    assert number(final["quadratic", "newton"]) < 1e-12         # Newton solves a quadratic at once
    assert number(final["saddle", "newton"]) == 0               # ... and jumps onto the saddle
    assert number(final["rosenbrock", "lbfgs"]) < 1e-3
    assert_png(tmp_path / "landscape.png")


def test_landscape_paths_descend():
    p = testfunctions.PROBLEMS["rosenbrock"]
    path = testfunctions.run_path(p, "adam", p.steps)
    assert path.shape == (p.steps + 1, 2)
    assert p.f(*path[-1]) < 1e-6 < p.f(*path[0])


def test_curvature_table_and_picture(tmp_path, capsys):
    code, out, _ = run(capsys, "curvature", "--quick", "--out", str(tmp_path), "--k", "2",
                       "--progress", "none")
    assert code == 0
    headers, rows = table(out, "epoch")
    assert headers[:4] == ["epoch", "loss", "val_acc", "top_eigenvalues"]
    assert "gHg/gg" in headers and "condition" in headers
    assert len(rows) == 3                                   # before training and after 2 epochs
    first = rows[0].split()
    assert first[0] == "0" and 0 < float(first[1]) < 5
    top = [float(v) for v in re.split(r"\s{2,}", rows[-1])[3].split(",")]
    assert len(top) == 2 and top[0] >= top[1] > 0
    assert_png(tmp_path / "curvature.png")


def test_help_reads_like_a_manual(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for word in ("train", "compare", "landscape", "curvature", "examples:"):
        assert word in out
    for command in ("train", "compare", "landscape", "curvature"):
        with pytest.raises(SystemExit) as e:
            cli.main([command, "--help"])
        assert e.value.code == 0
        out = capsys.readouterr().out
        assert "--out DIR" in out and "examples:" in out and "default" in out


@pytest.mark.parametrize("argv", [
    ["train", "--no-such-flag"],
    ["train", "--optimizer", "sgdd"],
    ["train", "--lr", "-1"],
    ["train", "--hidden", "64,x"],
    ["compare", "--optimizers", "sgd,nope"],
    ["landscape", "--functions", "himmelblau"],
    ["train", "--epochs", "2", "--warmup", "2"],
    ["train", "--optimizer", "lbfgs", "--weight-decay", "0.1"],
    [],
])
def test_bad_flags_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(argv)
    assert e.value.code == 2
    assert "error:" in capsys.readouterr().err


@pytest.mark.parametrize("module, argv", [
    ("matplotlib", ["landscape", "--quick"]),
    ("sklearn", ["train", "--quick"]),
    ("tqdm", ["train", "--quick", "--progress", "bar"]),
])
def test_missing_dependency_is_one_line(module, argv, tmp_path, capsys, monkeypatch):
    for name in list(sys.modules):
        if name == module or name.startswith(module + "."):
            monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, module, None)           # makes `import module` fail
    code, out, err = run(capsys, *argv, "--out", str(tmp_path))
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "pip install 'tinygrad_opt[examples]'" in lines[0]
    assert "Traceback" not in err


def test_python_dash_m(tmp_path):
    result = subprocess.run([sys.executable, "-m", "tinygrad_opt", "landscape", "--quick",
                             "--functions", "saddle", "--optimizers", "sgd",
                             "--out", str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "saddle" in result.stdout and (tmp_path / "landscape.png").is_file()
