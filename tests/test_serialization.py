"""save / load: exact round trips, atomic writes, clear errors on damaged files."""
import os
import zipfile

import numpy as np
import pytest

from tinygrad_opt import backend, serialization
from tinygrad_opt.serialization import CheckpointError, load, save


def nested():
    rng = np.random.default_rng(0)
    return {
        "model": {"0.weight": rng.standard_normal((3, 4)).astype(np.float32),
                  "0.bias": np.arange(3, dtype=np.float64),
                  "steps": np.array(7, dtype=np.int64)},
        "optimizer": {"state": {0: {"step": 3, "exp_avg": np.full((2, 2), 0.5, np.float16)},
                                1: {"step": 3, "flags": np.array([True, False])}},
                      "param_groups": [{"params": [0, 1], "lr": 1e-3, "betas": (0.9, 0.999),
                                        "amsgrad": False, "name": None}]},
        "epoch": 4,
        "rng": {"bit_generator": "PCG64",
                "state": {"state": 2**127 + 12345678901234567890123, "inc": 2**128 - 1},
                "has_uint32": 0, "uinteger": 0},
        "neg_big": -(2**200) + 1,
        "floats": [0.1, -0.0, float("inf"), float("-inf"), 1e-310, 3.141592653589793],
        "nan": float("nan"),
        "np_scalar": np.float32(2.5),
        "empty": np.zeros((0, 5), np.int32),
        "uint8": np.array([[0, 255]], np.uint8),
        (1, "a"): "tuple key",
        2.5: "float key",
        "text": "héllo ∇",
        "nested_list": [[1, [2, (3, None)]], {}],
    }


def assert_same(a, b):
    assert type(a) is type(b), (type(a), type(b))
    if isinstance(a, dict):
        assert list(a.keys()) == list(b.keys())
        for k in a:
            assert type(k) is type(next(kk for kk in b if kk == k))
            assert_same(a[k], b[k])
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            assert_same(x, y)
    elif isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and a.shape == b.shape
        assert np.array_equal(a, b)
    elif isinstance(a, np.generic):
        assert a.dtype == b.dtype and a == b
    elif isinstance(a, float) and a != a:
        assert b != b
    elif isinstance(a, float):
        assert a.hex() == b.hex()                 # bitwise, keeps -0.0
    else:
        assert a == b


def test_round_trip_nested(tmp_path):
    obj = nested()
    path = tmp_path / "ckpt.npz"
    save(obj, path)
    back = load(path)
    assert_same(obj, back)
    assert back["rng"]["state"]["state"] == 2**127 + 12345678901234567890123
    assert back["neg_big"] == -(2**200) + 1
    assert list(back["optimizer"]["state"]) == [0, 1]
    assert back["optimizer"]["param_groups"][0]["betas"] == (0.9, 0.999)


def test_file_is_plain_npz_without_pickle(tmp_path):
    path = tmp_path / "c.ckpt"                    # any name; no suffix is added
    save({"w": np.ones(3)}, path)
    assert os.listdir(tmp_path) == ["c.ckpt"]
    with np.load(path, allow_pickle=False) as z:
        assert serialization.STRUCTURE_KEY in z.files
        assert z[serialization.STRUCTURE_KEY].dtype.kind == "U"


def test_real_generator_state_round_trip(tmp_path):
    g = np.random.default_rng(123)
    g.standard_normal(10)
    save({"rng": g.bit_generator.state}, tmp_path / "r.npz")
    g2 = np.random.default_rng()
    g2.bit_generator.state = load(tmp_path / "r.npz")["rng"]
    assert np.array_equal(g.standard_normal(5), g2.standard_normal(5))


def test_top_level_leaf_and_tensor(tmp_path):
    save(np.arange(4), tmp_path / "a.npz")
    assert np.array_equal(load(tmp_path / "a.npz"), np.arange(4))
    save(None, tmp_path / "n.npz")
    assert load(tmp_path / "n.npz") is None


def test_tensor_leaves(tmp_path):
    from tinygrad_opt.tensor import Tensor
    t = Tensor(np.arange(6, dtype=np.float32).reshape(2, 3), requires_grad=True)
    save({"t": t}, tmp_path / "t.npz")
    back = load(tmp_path / "t.npz")["t"]
    assert isinstance(back, Tensor) and back.requires_grad
    assert back.dtype == np.float32 and np.array_equal(back.numpy(), t.numpy())


def test_unsupported_values_rejected(tmp_path):
    with pytest.raises(TypeError, match="cannot store set"):
        save({"x": {1, 2}}, tmp_path / "x.npz")
    with pytest.raises(TypeError, match="object arrays"):
        save({"x": np.array([1, "a", None], dtype=object)}, tmp_path / "x.npz")
    assert not os.listdir(tmp_path)


def test_overwrite_replaces(tmp_path):
    path = tmp_path / "c.npz"
    save({"v": 1}, path)
    save({"v": 2}, path)
    assert load(path) == {"v": 2}
    assert os.listdir(tmp_path) == ["c.npz"]


def test_crash_mid_save_keeps_old_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "c.npz"
    old = {"w": np.arange(10.0), "epoch": 3}
    save(old, path)
    before = path.read_bytes()

    def broken_write(f, entries):
        f.write(b"PK\x03\x04 half an archive")    # some bytes reach the temporary file
        raise OSError("disk full")

    monkeypatch.setattr(serialization, "_write_npz", broken_write)
    with pytest.raises(OSError, match="disk full"):
        save({"w": np.zeros(10), "epoch": 4}, path)
    assert path.read_bytes() == before
    assert_same(load(path), old)
    assert os.listdir(tmp_path) == ["c.npz"]      # no temporary file left behind


def test_interrupt_mid_save_cleans_up(tmp_path, monkeypatch):
    path = tmp_path / "c.npz"

    def interrupted(f, entries):
        np.savez(f, **entries)
        raise KeyboardInterrupt

    monkeypatch.setattr(serialization, "_write_npz", interrupted)
    with pytest.raises(KeyboardInterrupt):
        save({"w": np.ones(2)}, path)
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("damage", ["truncate_half", "truncate_tail", "garbage", "empty",
                                    "flip_middle"])
def test_damaged_file_clear_error(tmp_path, damage):
    path = tmp_path / "c.npz"
    save({"w": np.arange(1000.0), "epoch": 1}, path)
    raw = path.read_bytes()
    if damage == "truncate_half":
        raw = raw[: len(raw) // 2]
    elif damage == "truncate_tail":
        raw = raw[:-10]
    elif damage == "garbage":
        raw = np.random.default_rng(0).integers(0, 256, 500, dtype=np.uint8).tobytes()
    elif damage == "empty":
        raw = b""
    else:                                          # bytes inside an array's data change
        mid = len(raw) // 2
        raw = raw[:mid] + bytes(b ^ 0xFF for b in raw[mid:mid + 16]) + raw[mid + 16:]
    path.write_bytes(raw)
    with pytest.raises(CheckpointError, match="c.npz") as info:
        load(path)
    assert isinstance(info.value, ValueError)


def test_npz_without_structure(tmp_path):
    path = tmp_path / "plain.npz"
    np.savez(path, w=np.ones(3))
    with pytest.raises(CheckpointError, match="__structure__"):
        load(path)


def test_npy_file_rejected(tmp_path):
    path = tmp_path / "a.npy"
    np.save(path, np.ones(3))
    with pytest.raises(CheckpointError, match="a.npy"):
        load(path)


def test_pickled_member_never_loaded(tmp_path):
    # An archive whose array entry needs pickle is refused, not executed.
    path = tmp_path / "evil.npz"
    with zipfile.ZipFile(path, "w") as z:
        with z.open("__structure__.npy", "w") as f:
            np.lib.format.write_array(f, np.array('{"format": "tinygrad_opt.checkpoint", '
                                                  '"version": 1, "root": {"t": "array", '
                                                  '"ref": "a0"}}'))
        with z.open("a0.npy", "w") as f:
            np.lib.format.write_array(f, np.array([{"x": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(CheckpointError, match="evil.npz"):
        load(path)


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing.npz"):
        load(tmp_path / "nothing.npz")


def test_device_arrays_saved_from_host(tmp_path, device):
    a = backend.to_device(np.arange(6, dtype=np.float32).reshape(2, 3), device)
    save({"a": a, "n": 1}, tmp_path / "d.npz")
    host = load(tmp_path / "d.npz")["a"]
    assert isinstance(host, np.ndarray) and np.array_equal(host, backend.to_numpy(a))
    moved = load(tmp_path / "d.npz", device=device)["a"]
    assert backend.device_of(moved) == device and moved.dtype == np.float32
