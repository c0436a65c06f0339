"""Every example runs in quick mode and teaches what it claims."""
import importlib.util
import math
import pathlib

import pytest

pytest.importorskip("matplotlib")

EXAMPLES = pathlib.Path(__file__).resolve().parent.parent / "examples"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def run_example(name, tmp_path):
    """main(['--quick', '--out', tmp_path]) of examples/<name>.py; asserts its figure exists."""
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    result = module.main(["--quick", "--out", str(tmp_path)])
    png = tmp_path / f"{name}.png"
    assert png.read_bytes()[:8] == PNG_SIGNATURE
    return result


def test_every_example_is_tested():
    tested = {"train_digits", "gradcheck_custom_op", "newton_hvp", "rosenbrock",
              "init_experiments", "class_prior_bias"}
    assert {p.stem for p in EXAMPLES.glob("*.py")} == tested


def test_train_digits(tmp_path):
    pytest.importorskip("sklearn")
    result = run_example("train_digits", tmp_path)
    assert result["val_acc"] > 0.5                      # chance is 0.1
    assert result["losses"][-1] < result["losses"][0]


def test_gradcheck_custom_op(tmp_path):
    result = run_example("gradcheck_custom_op", tmp_path)
    assert result["correct"] == (True, True)
    assert result["wrong_sign"][0] is False             # a wrong first derivative
    assert result["frozen_slope"] == (True, False)      # right gradient, wrong Hessian


def test_newton_hvp(tmp_path):
    result = run_example("newton_hvp", tmp_path)
    assert result["hvp_error"] < 1e-12
    assert result["newton_grad_norm"] < 1e-10 and result["newton_cg_grad_norm"] < 1e-10
    assert result["gd_grad_norm"] > 1e-4                # 10x the iterations, still far off
    assert result["train_acc"] > 0.85


def test_rosenbrock(tmp_path):
    result = run_example("rosenbrock", tmp_path)
    final = result["final"]
    assert final["Newton"] < 1e-12 and final["L-BFGS"] < 1e-8
    assert final["SGD (lr 1e-3)"] > 1e-3                # still crawling along the valley
    assert all(math.isfinite(v) for v in final.values())


def test_init_experiments(tmp_path):
    result = run_example("init_experiments", tmp_path)
    act = result["activation_std"]
    small, ortho = act["N(0, 0.01^2)"], act["orthogonal x 5/3"]
    assert small[-1] < 1e-6 * small[0]                  # vanishes geometrically
    assert 0.3 < ortho[-1] < 1.0 and ortho[-1] > 0.5 * ortho[0]


def test_class_prior_bias(tmp_path):
    pytest.importorskip("sklearn")
    result = run_example("class_prior_bias", tmp_path)
    assert result["initial_loss"]["zero bias"] == pytest.approx(result["log_C"], rel=1e-6)
    assert result["initial_loss"]["prior bias"] == pytest.approx(result["entropy"], rel=1e-5)
    assert result["entropy"] < result["log_C"]
