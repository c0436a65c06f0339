"""save / load: exact round trips, atomic writes, clear errors on damaged files."""
import json
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


def test_bad_device_is_the_callers_error(tmp_path):
    save({"w": np.ones(2)}, tmp_path / "c.npz")
    with pytest.raises(ValueError, match="only one GPU") as info:
        load(tmp_path / "c.npz", device="cuda:1")
    assert not isinstance(info.value, CheckpointError)


# ---------------------------------------------------------------- NumPy scalars
@pytest.mark.parametrize("value", [np.float64(0.1), np.float32(-0.0), np.float16(3.5), np.int64(-2**62),
                                   np.uint8(255), np.bool_(True), np.complex128(1 - 2j),
                                   np.complex64(0.5j), np.str_("héllo"), np.bytes_(b"\x00ab"),
                                   np.datetime64("2026-12-01T21:00"), np.float64("nan")],
                         ids=lambda v: type(v).__name__)
def test_numpy_scalars_round_trip_as_numpy_scalars(tmp_path, value):
    # np.float64 is a Python float and np.str_ a str: they used to come back as those.
    save({"v": value, "in_list": [value], value: "as key"}, tmp_path / "s.npz")
    back = load(tmp_path / "s.npz")
    for got in (back["v"], back["in_list"][0], next(k for k in back if k not in ("v", "in_list"))):
        assert type(got) is type(value) and got.dtype == value.dtype
        assert got == value or (value != value and got != got)


# ---------------------------------------------------------------- file system behaviour
posix_only = pytest.mark.skipif(os.name != "posix", reason="POSIX permissions and pids")


@posix_only
@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_new_file_mode_follows_umask(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        save({"w": np.ones(2)}, tmp_path / "c.npz")
    finally:
        os.umask(old)
    assert os.stat(tmp_path / "c.npz").st_mode & 0o777 == mode


@posix_only
@pytest.mark.parametrize("mode", [0o644, 0o640, 0o666])
def test_overwrite_keeps_existing_mode(tmp_path, mode):
    path = tmp_path / "c.npz"
    save({"v": 1}, path)
    os.chmod(path, mode)
    old = os.umask(0o077)
    try:
        save({"v": 2}, path)
    finally:
        os.umask(old)
    assert os.stat(path).st_mode & 0o777 == mode and load(path) == {"v": 2}


@posix_only
def test_temp_file_of_killed_save_removed_by_next_save(tmp_path):
    import signal
    import subprocess
    import sys
    import time
    path = tmp_path / "c.npz"
    script = (
        "import sys, time, numpy as np\n"
        "from tinygrad_opt import serialization as s\n"
        "def slow(f, entries):\n"
        "    f.write(b'PK\\x03\\x04 part'); f.flush(); time.sleep(60)\n"
        "s._write_npz = slow\n"
        "s.save({'w': np.ones(3)}, sys.argv[1])\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    proc = subprocess.Popen([sys.executable, "-c", script, str(path)], env=env)
    try:
        deadline = time.monotonic() + 30
        while not any(n.endswith(".tmp") for n in os.listdir(tmp_path)):
            assert proc.poll() is None and time.monotonic() < deadline, "the writer never started"
            time.sleep(0.02)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    leftover = [n for n in os.listdir(tmp_path) if n.endswith(".tmp")]
    assert len(leftover) == 1 and leftover[0].startswith(".c.npz.") and not path.exists()
    save({"w": np.zeros(3)}, path)
    assert os.listdir(tmp_path) == ["c.npz"]
    assert np.array_equal(load(path)["w"], np.zeros(3))


@posix_only
def test_temp_file_of_live_writer_and_other_files_kept(tmp_path):
    import subprocess
    import sys
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    try:
        keep = [f".c.npz.{live.pid}.0123abcd.tmp", f".c.npz.{os.getpid()}.0123abcd.tmp",
                f".c.npz.1.npz.{dead.pid}.0123abcd.tmp",   # another checkpoint's name
                f".c.npz.{dead.pid}.notahex0.tmp", "c.npz.bak"]
        gone = [f".c.npz.{dead.pid}.89abcdef.tmp"]
        for n in keep + gone:
            (tmp_path / n).write_bytes(b"x")
        save({"v": 1}, tmp_path / "c.npz")
        assert sorted(os.listdir(tmp_path)) == sorted(keep + ["c.npz"])
    finally:
        live.kill()
        live.wait()


# ---------------------------------------------------------------- nesting limits
def test_save_refuses_nesting_deeper_than_the_limit(tmp_path):
    deep = []
    for _ in range(serialization.MAX_DEPTH - 1):
        deep = [deep]
    save(deep, tmp_path / "ok.npz")              # MAX_DEPTH lists inside each other: fine
    assert load(tmp_path / "ok.npz") == deep
    with pytest.raises(ValueError, match="nested deeper than"):
        save([deep], tmp_path / "deep.npz")
    cycle = {"a": []}
    cycle["a"].append(cycle)
    with pytest.raises(ValueError, match="contains itself"):
        save(cycle, tmp_path / "cycle.npz")
    assert os.listdir(tmp_path) == ["ok.npz"]


# ---------------------------------------------------------------- crafted files
def craft(path, root=None, arrays=(), structure=None, version=1, method=zipfile.ZIP_STORED):
    """An archive whose CRCs are right but whose content is whatever the test says."""
    if structure is None:
        structure = json.dumps({"format": serialization.FORMAT, "version": version, "root": root})
    with zipfile.ZipFile(path, "w", compression=method) as z:
        entries = [("__structure__", np.array(structure))] + list(arrays)
        for name, a in entries:
            if isinstance(a, bytes):
                z.writestr(name + ".npy", a)
            else:
                with z.open(name + ".npy", "w") as f:
                    np.lib.format.write_array(f, a)
    return path


def npy_header(shape, dtype="<f8"):
    """The bytes of a .npy header declaring `shape`, without the data."""
    import io
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": dtype, "fortran_order": False, "shape": shape})
    return buf.getvalue()


def test_crafted_file_reads_back_when_honest(tmp_path):
    # the helper itself makes loadable files, so the failures below are the crafted parts
    path = craft(tmp_path / "ok.npz", {"t": "list", "v": [{"t": "array", "ref": "a0"}, "x"]},
                 [("a0", np.arange(3.0))])
    back = load(path)
    assert np.array_equal(back[0], np.arange(3.0)) and back[1] == "x"
    assert load(craft(tmp_path / "none.npz", None)) is None


TENSOR = {"t": "tensor", "ref": "a0", "requires_grad": True}


@pytest.mark.parametrize("case", [
    "huge_shape", "shape_too_small", "negative_shape", "int_tensor_requires_grad",
    "requires_grad_not_bool", "str_tensor", "scalar_not_0d", "missing_ref", "ref_twice", "deep_json",
    "deep_nodes", "bad_int", "huge_int", "float_not_str", "complex_short", "unknown_node", "node_list",
    "dict_items_bad", "unhashable_key", "version_str", "version_new", "no_root", "not_json",
    "structure_int", "deflated", "npy_version_9", "not_npy_name", "object_array",
])
def test_crafted_file_is_checkpoint_error(tmp_path, case):
    path = tmp_path / "x.npz"
    arr = [("a0", np.arange(4.0))]
    if case == "huge_shape":                # 100 bytes declaring 8 PB: must not try to allocate it
        craft(path, {"t": "array", "ref": "a0"}, [("a0", npy_header((10**15,)) + b"\0" * 8)])
    elif case == "shape_too_small":
        craft(path, {"t": "array", "ref": "a0"}, [("a0", npy_header((2,)) + b"\0" * 24)])
    elif case == "negative_shape":
        craft(path, {"t": "array", "ref": "a0"}, [("a0", npy_header((-1, 2)) + b"\0" * 8)])
    elif case == "int_tensor_requires_grad":
        craft(path, TENSOR, [("a0", np.arange(4))])
    elif case == "requires_grad_not_bool":
        craft(path, dict(TENSOR, requires_grad="yes"), arr)
    elif case == "str_tensor":
        craft(path, dict(TENSOR, requires_grad=False), [("a0", np.array(["a", "b"]))])
    elif case == "scalar_not_0d":
        craft(path, {"t": "scalar", "ref": "a0"}, arr)
    elif case == "missing_ref":
        craft(path, {"t": "array", "ref": "a7"}, arr)
    elif case == "ref_twice":
        craft(path, {"t": "list", "v": [{"t": "array", "ref": "a0"}] * 2}, arr)
    elif case == "deep_json":               # the JSON parser's own recursion
        craft(path, structure='{"format": "tinygrad_opt.checkpoint", "version": 1, "root": '
              + "[" * 100000 + "]" * 100000 + "}")
    elif case == "deep_nodes":
        root = None
        for _ in range(serialization.MAX_DEPTH + 1):
            root = {"t": "list", "v": [root]}
        craft(path, root)
    elif case == "bad_int":
        craft(path, {"t": "int", "v": "12x"})
    elif case == "huge_int":
        craft(path, {"t": "int", "v": "9" * 100000})
    elif case == "float_not_str":
        craft(path, {"t": "float", "v": 1.5})
    elif case == "complex_short":
        craft(path, {"t": "complex", "v": ["0x1p+0"]})
    elif case == "unknown_node":
        craft(path, {"t": "pickle", "v": "os.system"})
    elif case == "node_list":
        craft(path, [1, 2])
    elif case == "dict_items_bad":
        craft(path, {"t": "dict", "items": [[1, 2, 3]]})
    elif case == "unhashable_key":
        craft(path, {"t": "dict", "items": [[{"t": "list", "v": []}, None]]})
    elif case == "version_str":
        craft(path, None, version="1")
    elif case == "version_new":
        craft(path, None, version=2)
    elif case == "no_root":
        craft(path, structure=json.dumps({"format": serialization.FORMAT, "version": 1}))
    elif case == "not_json":
        craft(path, structure="{not json")
    elif case == "structure_int":
        with zipfile.ZipFile(path, "w") as z:
            with z.open("__structure__.npy", "w") as f:
                np.lib.format.write_array(f, np.array(7))
    elif case == "deflated":
        craft(path, {"t": "array", "ref": "a0"}, arr, method=zipfile.ZIP_DEFLATED)
    elif case == "npy_version_9":
        craft(path, {"t": "array", "ref": "a0"}, [("a0", b"\x93NUMPY\x09\x00" + b"\0" * 40)])
    elif case == "not_npy_name":
        craft(path, None)
        with zipfile.ZipFile(path, "a") as z:
            z.writestr("evil.py", b"print(1)")
    elif case == "object_array":
        with zipfile.ZipFile(craft(path, {"t": "array", "ref": "a0"}), "a") as z:
            with z.open("a0.npy", "w") as f:
                np.lib.format.write_array(f, np.array([None, 1], dtype=object), allow_pickle=True)
    with pytest.raises(CheckpointError, match="x.npz"):
        load(path)


def test_damaged_zip_fields_are_checkpoint_errors(tmp_path):
    # A flipped compression-method field used to escape as NotImplementedError.
    path = tmp_path / "c.npz"
    save({"w": np.arange(3.0)}, path)
    raw = bytearray(path.read_bytes())
    central = raw.index(b"PK\x01\x02")              # first central-directory record
    for offset, value in [(10, 99), (10, 12), (8, 1), (20, 0xFF), (28, 0xFF)]:
        bad = bytearray(raw)
        bad[central + offset] = value            # method, flags (encrypted), size, name length
        path.write_bytes(bytes(bad))
        with pytest.raises(CheckpointError):
            load(path)


# ---------------------------------------------------------------- corruption fuzz
FUZZ_EXAMPLES = int(os.environ.get("TINYGRAD_OPT_FUZZ_EXAMPLES", "300"))


def fuzz_cases(raw, n, seed):
    """n damaged copies of `raw`: bit flips, byte overwrites, truncations, cut-and-splice."""
    rng = np.random.default_rng(seed)
    for i in range(n):
        bad = bytearray(raw)
        kind = i % 4
        if kind == 0:
            for _ in range(rng.integers(1, 4)):
                pos = rng.integers(len(bad))
                bad[pos] ^= 1 << int(rng.integers(8))
        elif kind == 1:
            pos = rng.integers(len(bad))
            bad[pos:pos + 4] = rng.integers(0, 256, 4, dtype=np.uint8).tobytes()
        elif kind == 2:
            bad = bad[:rng.integers(len(bad))]
        else:
            a, b = sorted(rng.integers(len(bad), size=2))
            bad = bad[:a] + bad[b:]
        yield bytes(bad)


@pytest.mark.parametrize("seed", [0, 1])
def test_corruption_fuzz_only_checkpoint_errors(tmp_path, seed):
    """Any damage either reads back the exact original or raises CheckpointError, nothing else."""
    from tinygrad_opt.tensor import Tensor
    obj = nested()
    obj["t"] = Tensor(np.arange(6.0).reshape(2, 3), requires_grad=True)
    path = tmp_path / "c.npz"
    save(obj, path)
    raw = path.read_bytes()
    obj["t"] = obj["t"].numpy()
    counts = {"error": 0, "intact": 0}
    for bad in fuzz_cases(raw, FUZZ_EXAMPLES, seed):
        path.write_bytes(bad)
        try:
            back = load(path)
        except CheckpointError:
            counts["error"] += 1
            continue
        back["t"] = back["t"].numpy()
        assert_same(back, obj)              # the damage hit bytes nothing reads (timestamps...)
        counts["intact"] += 1
    assert counts["error"] > FUZZ_EXAMPLES // 2
