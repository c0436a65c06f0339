"""The command line answers each user mistake with one line on stderr and exit status 2, a
diverged run with exit status 1, and never with a traceback; resume is exact even after kill -9.
"""
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from tinygrad_opt import backend, cli, optim, serialization
from conftest import run_cli as run

pytest.importorskip("matplotlib")

QUICK = ["--quick", "--data", "spirals", "--progress", "none"]     # no scikit-learn, ~0.1 s
ENV = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS",
                                                        "MKL_NUM_THREADS", "VECLIB_MAXIMUM_THREADS")}
ONE_THREAD = {**ENV, **dict.fromkeys(["OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS",
                                       "MKL_NUM_THREADS"], "1")}     # starts once, no re-exec
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def one_line(err, *words):
    """stderr is exactly one line, no traceback, holding every word."""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    for w in words:
        assert w in lines[0], lines[0]
    return lines[0]


def python_m(*argv, env=None, **kw):
    return subprocess.run([sys.executable, "-m", "tinygrad_opt", *argv], capture_output=True,
                          text=True, timeout=120, cwd=ROOT, env=env or ENV, **kw)


# ---------------------------------------------------------------- files and folders
def test_out_naming_a_file(tmp_path, capsys):
    f = tmp_path / "notes.txt"
    f.write_text("x")
    code, _, err = run(capsys, "train", *QUICK, "--out", str(f))
    assert code == 2
    one_line(err, "--out", "is a file")
    assert f.read_text() == "x"


def test_save_into_a_missing_folder_creates_it(tmp_path, capsys):
    ckpt = tmp_path / "runs" / "a" / "run.ckpt"
    code, out, _ = run(capsys, "train", *QUICK, "--epochs", "1", "--save", str(ckpt),
                       "--out", str(tmp_path))
    assert code == 0 and ckpt.is_file() and "checkpoint" in out
    config, state = __import__("tinygrad_opt.experiment").experiment.load_run(ckpt)
    assert state["epoch"] == 1 and config["data"] == "spirals"
    code, _, err = run(capsys, "train", *QUICK, "--save", str(tmp_path), "--out", str(tmp_path))
    assert code == 2
    one_line(err, "--save", "is a folder")


def test_data_dir_missing_or_empty(tmp_path, capsys):
    code, _, err = run(capsys, "train", "--quick", "--data", "mnist", "--data-dir",
                       str(tmp_path / "nowhere"), "--out", str(tmp_path))
    assert code == 2
    one_line(err, "--data-dir", "is not a folder")
    code, _, err = run(capsys, "train", "--quick", "--data", "mnist", "--data-dir",
                       str(tmp_path), "--out", str(tmp_path / "o"))
    assert code == 2
    one_line(err, "--data mnist", "no mnist train data")


def test_device_cuda_without_cupy(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "cupy", None)          # `import cupy` fails
    monkeypatch.setattr(backend, "_cupy", None)
    code, _, err = run(capsys, "train", *QUICK, "--device", "cuda", "--out", str(tmp_path))
    assert code == 2
    one_line(err, "--device cuda", "CuPy is not installed", "gpu-cuda12")


# ---------------------------------------------------------------- resume
@pytest.fixture
def saved_run(tmp_path, capsys):
    ckpt = tmp_path / "run.ckpt"
    code, _, _ = run(capsys, "train", *QUICK, "--optimizer", "momentum", "--epochs", "2",
                     "--save", str(ckpt), "--out", str(tmp_path))
    assert code == 0
    return ckpt


def test_resume_of_a_missing_or_corrupt_file(tmp_path, saved_run, capsys):
    code, _, err = run(capsys, "train", "--resume", str(tmp_path / "nope.ckpt"))
    assert code == 2
    one_line(err, "--resume", "no such checkpoint")
    data = saved_run.read_bytes()
    for name, content in [("garbage.ckpt", b"not a checkpoint at all"),
                          ("truncated.ckpt", data[: len(data) // 2])]:
        (tmp_path / name).write_bytes(content)
        code, _, err = run(capsys, "train", "--resume", str(tmp_path / name), "--out",
                           str(tmp_path))
        assert code == 2
        one_line(err, "--resume", "not a valid tinygrad_opt checkpoint")
    other = tmp_path / "weights.ckpt"                 # a checkpoint, but not of a train run
    serialization.save({"weights": np.zeros(3)}, other)
    code, _, err = run(capsys, "train", "--resume", str(other), "--out", str(tmp_path))
    assert code == 2
    one_line(err, "holds no saved run")


def test_resume_of_a_run_longer_than_asked(tmp_path, saved_run, capsys):
    code, _, err = run(capsys, "train", "--resume", str(saved_run), "--epochs", "1",
                       "--out", str(tmp_path))
    assert code == 2
    one_line(err, "already trained 2 epochs", "--epochs 2 or more")


def test_resume_refuses_flags_the_checkpoint_overrides(tmp_path, saved_run, capsys):
    code, _, err = run(capsys, "train", "--resume", str(saved_run), "--epochs", "3",
                       "--optimizer", "adam", "--lr", "0.1", "--hidden", "32",
                       "--out", str(tmp_path))
    assert code == 2
    line = one_line(err, "--optimizer momentum", "no --lr", "--hidden 16")
    assert "--epochs" not in line
    # flags that agree with the checkpoint, and the ones resume leaves to the user, are fine
    code, out, err = run(capsys, "train", "--resume", str(saved_run), "--epochs", "3",
                         "--optimizer", "momentum", "--data", "spirals", "--progress", "none",
                         "--out", str(tmp_path))
    assert code == 0 and "resumed" in out and "at epoch 2 of 3" in out and err == ""


@pytest.mark.slow
def test_kill_9_then_resume_is_bit_identical(tmp_path):
    """Train with --save in a child process, kill -9 it once a checkpoint exists, resume, and
    compare the final checkpoint with one of a run that was never interrupted."""
    args = ["train", "--quick", "--data", "spirals", "--batch-size", "8", "--epochs", "6",
            "--progress", "lines", "--out", str(tmp_path)]
    child = subprocess.Popen([sys.executable, "-m", "tinygrad_opt", *args, "--save",
                              str(tmp_path / "a.ckpt")], stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL, text=True, cwd=ROOT, env=ONE_THREAD)
    try:
        for line in child.stdout:               # the epoch-2 line comes after epoch 1's save
            if line.startswith("epoch 2/6"):
                break
        child.send_signal(signal.SIGKILL)
    finally:
        child.kill()
        child.wait(30)
    assert child.returncode == -signal.SIGKILL
    resumed = python_m("train", "--resume", str(tmp_path / "a.ckpt"), "--epochs", "6",
                       "--progress", "lines", "--out", str(tmp_path), env=ONE_THREAD)
    assert resumed.returncode == 0, resumed.stderr
    start = int(resumed.stdout.split(" at epoch ")[1].split()[0])
    assert 1 <= start < 6 and " of 6" in resumed.stdout      # the kill came mid-run
    straight = python_m(*args, "--save", str(tmp_path / "b.ckpt"), env=ONE_THREAD)
    assert straight.returncode == 0, straight.stderr
    a, b = serialization.load(tmp_path / "a.ckpt"), serialization.load(tmp_path / "b.ckpt")
    for part in ("model", "optimizer", "loader", "rng"):
        assert_same(a["train"][part], b["train"][part])
    ha, hb = a["train"]["history"], b["train"]["history"]
    for column in ("epoch", "train_loss", "val_loss", "val_acc", "lr", "step_loss"):
        assert ha[column] == hb[column]
    assert len(ha["step_loss"]) == 6 * 60


def assert_same(x, y):
    """Equal trees, arrays equal bit for bit."""
    if isinstance(x, dict):
        assert x.keys() == y.keys()
        for k in x:
            assert_same(x[k], y[k])
    elif isinstance(x, (list, tuple)):
        assert len(x) == len(y)
        for u, v in zip(x, y):
            assert_same(u, v)
    elif isinstance(x, np.ndarray):
        assert x.dtype == y.dtype and x.tobytes() == y.tobytes()
    else:
        assert x == y


# ---------------------------------------------------------------- compare, curvature
def test_compare_refuses_newton_up_front(tmp_path, capsys):
    code, out, err = run(capsys, "compare", *QUICK, "--optimizers", "adam,newton",
                         "--out", str(tmp_path))
    assert code == 2 and out == ""
    one_line(err, "'newton'", "dense Hessian")
    assert not (tmp_path / "compare.csv").exists()


def test_compare_keeps_finished_results_when_one_optimizer_fails(tmp_path, capsys, monkeypatch):
    def singular(self, closure=None):
        raise np.linalg.LinAlgError("Singular matrix")
    monkeypatch.setattr(optim.LBFGS, "step", singular)
    code, out, err = run(capsys, "compare", *QUICK, "--optimizers", "sgd,lbfgs,adam",
                         "--out", str(tmp_path))
    assert code == 0
    one_line(err, "lbfgs", "LinAlgError", "Singular matrix")
    rows = {line.split()[0]: line.split() for line in out.splitlines()
            if line.split() and line.split()[0] in ("sgd", "lbfgs", "adam")}
    assert rows["lbfgs"][2] == "failed"
    for name in ("sgd", "adam"):
        assert 0 < float(rows[name][2]) < 2 and rows[name][3].endswith("%")
    csv = (tmp_path / "compare.csv").read_text().splitlines()
    assert [r.split(",")[0] for r in csv[1:]] == ["sgd", "lbfgs", "adam"]
    assert (tmp_path / "compare.png").is_file()


def test_curvature_refuses_more_eigenvalues_than_lanczos_iterations(tmp_path, capsys):
    code, _, err = run(capsys, "curvature", *QUICK, "--lanczos-iter", "1", "--k", "3",
                       "--out", str(tmp_path))
    assert code == 2
    one_line(err, "--k 3", "--lanczos-iter is 1")


# ---------------------------------------------------------------- divergence, pipes, threads
def test_divergence_exit_1_names_the_flag_and_counts_from_1(tmp_path, capsys):
    code, out, err = run(capsys, "train", *QUICK, "--optimizer", "sgd", "--lr", "1e30",
                         "--out", str(tmp_path))
    assert code == 1
    line = one_line(err, "training diverged in epoch 1, step", "--clip", "lower --lr")
    assert "clip=" not in line
    code, _, err = run(capsys, "train", *QUICK, "--optimizer", "lbfgs", "--lr", "1e30",
                       "--out", str(tmp_path))
    if code == 1:                                   # no --clip for step(closure) optimizers
        assert "--clip" not in one_line(err, "training diverged")


def test_output_piped_into_head_ends_quietly(tmp_path):
    child = subprocess.Popen([sys.executable, "-m", "tinygrad_opt", "train", "--quick",
                              "--data", "spirals", "--epochs", "6", "--progress", "lines",
                              "--out", str(tmp_path)], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, cwd=ROOT, env=ENV)
    first = child.stdout.readline()                 # like `| head -1`: read a line, go away
    child.stdout.close()
    _, err = child.communicate(timeout=120)
    assert first.startswith(b"adam (lr 0.005) on spirals")
    assert b"Traceback" not in err and b"BrokenPipe" not in err, err
    assert child.returncode == 141


def test_one_blas_thread_unless_the_user_sets_one():
    threadpoolctl = pytest.importorskip("threadpoolctl")
    assert threadpoolctl
    code = ("import os, sys\n"
            "if os.environ.get('OPENBLAS_NUM_THREADS') == '1':\n"
            "    from threadpoolctl import threadpool_info\n"
            "    print('blas', max([i['num_threads'] for i in threadpool_info()"
            " if i['user_api'] == 'blas'] or [1]))\n"
            "sys.argv = ['tinygrad-opt', '--version']\n"
            "from tinygrad_opt.__main__ import entry_point\n"
            "entry_point()\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=ROOT, env=ENV, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "blas 1" in done.stdout and "OPENBLAS_NUM_THREADS=1" in done.stdout
    mine = python_m("--version", env={**ENV, "OMP_NUM_THREADS": "3"})
    assert "OMP_NUM_THREADS=3" in mine.stdout and "OPENBLAS" not in mine.stdout
    assert "one BLAS thread per process" in python_m("--help").stdout
