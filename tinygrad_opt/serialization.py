"""save / load: checkpoints as a single .npz file, without pickle.

A checkpoint holds a tree of dicts, lists and tuples whose leaves are arrays (NumPy or
CuPy, stored from host memory), Tensors, Python numbers, strings, bools and None. The
tree's shape is stored as one JSON string (entry ``__structure__``) and every array as its
own entry, so reading a file never runs code from it (``numpy.load(allow_pickle=False)``).

Exact round trips: dict keys keep their type (optimizer state keyed by parameter index
comes back keyed by int), ints of any size are stored as decimal strings (a PCG64 state
holds 128-bit ints), floats as hex strings (every bit, nan and inf included), arrays keep
dtype, shape and values, and NumPy scalars come back as NumPy scalars of the same dtype.

Writes are atomic: the file is written under a temporary name in the same folder, synced
to disk and renamed over the target, so a crash mid-save leaves the previous checkpoint
intact.
"""
import json
import os
import tempfile
import zipfile

from . import backend

np = backend.np                 # host NumPy: this module only does file I/O

FORMAT = "tinygrad_opt.checkpoint"
VERSION = 1
STRUCTURE_KEY = "__structure__"


class CheckpointError(ValueError):
    """A file that is not a readable tinygrad_opt checkpoint (corrupted, truncated, foreign)."""


# ---------------------------------------------------------------- encoding
def _is_tensor(obj):
    # Duck-typed so this module does not need the Tensor class to save plain arrays.
    return type(obj).__name__ == "Tensor" and backend.is_array(getattr(obj, "data", None))


def _encode(obj, arrays, where):
    """JSON-ready description of `obj`; arrays are appended to `arrays` and referenced by name."""
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, int):                    # bool handled above; ints of any size
        return {"t": "int", "v": str(obj)}
    if isinstance(obj, float):
        return {"t": "float", "v": float.hex(obj)}
    if isinstance(obj, complex):
        return {"t": "complex", "v": [float.hex(obj.real), float.hex(obj.imag)]}
    if backend.is_array(obj) or _is_tensor(obj) or isinstance(obj, np.generic):
        kind = "tensor" if _is_tensor(obj) else "scalar" if isinstance(obj, np.generic) else "array"
        a = obj.data if kind == "tensor" else obj
        a = np.asarray(a) if kind == "scalar" else backend.to_numpy(a)
        if a.dtype.hasobject:
            raise TypeError(f"save: object arrays cannot be stored without pickle (at {where})")
        name = f"a{len(arrays)}"
        arrays.append((name, a))
        node = {"t": kind, "ref": name}
        if kind == "tensor":
            node["requires_grad"] = bool(obj.requires_grad)
        return node
    if isinstance(obj, dict):
        items = []
        for k, v in obj.items():
            if not (k is None or isinstance(k, (bool, int, float, str, tuple))):
                raise TypeError(f"save: dict key {k!r} of type {type(k).__name__} at {where} "
                                "is not supported (use str, int, float, bool, None or tuple)")
            items.append([_encode(k, arrays, where), _encode(v, arrays, f"{where}[{k!r}]")])
        return {"t": "dict", "items": items}
    if isinstance(obj, (list, tuple)):
        vals = [_encode(v, arrays, f"{where}[{i}]") for i, v in enumerate(obj)]
        return {"t": "list" if isinstance(obj, list) else "tuple", "v": vals}
    raise TypeError(f"save: cannot store {type(obj).__name__} at {where}; supported: dict, list, "
                    "tuple, arrays, Tensors, numbers, str, bool, None")


def _decode(node, arrays, device):
    if node is None or isinstance(node, (bool, str)):
        return node
    if not isinstance(node, dict) or "t" not in node:
        raise ValueError(f"unexpected node {node!r}")
    t = node["t"]
    if t == "int":
        return int(node["v"])
    if t == "float":
        return float.fromhex(node["v"])
    if t == "complex":
        return complex(float.fromhex(node["v"][0]), float.fromhex(node["v"][1]))
    if t in ("array", "tensor", "scalar"):
        a = arrays[node["ref"]]
        if t == "scalar":
            return a[()]
        if device is not None:
            a = backend.to_device(a, device)
        if t == "tensor":
            from .tensor import Tensor
            return Tensor._wrap(a, requires_grad=node.get("requires_grad", False))
        return a
    if t == "dict":
        return {_decode(k, arrays, device): _decode(v, arrays, device) for k, v in node["items"]}
    if t == "list":
        return [_decode(v, arrays, device) for v in node["v"]]
    if t == "tuple":
        return tuple(_decode(v, arrays, device) for v in node["v"])
    raise ValueError(f"unknown node type {t!r}")


# ---------------------------------------------------------------- save
def save(obj, path):
    """Write `obj` (a tree of dicts/lists/tuples of arrays, numbers, strings) to `path` atomically.

    The file is a .npz archive written exactly at `path` (no suffix is added).
    """
    path = os.fspath(path)
    arrays = []
    structure = {"format": FORMAT, "version": VERSION, "root": _encode(obj, arrays, "obj")}
    entries = {STRUCTURE_KEY: np.array(json.dumps(structure, allow_nan=False))}
    entries.update(arrays)

    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=folder, prefix="." + os.path.basename(path) + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            _write_npz(f, entries)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    _fsync_dir(folder)


def _write_npz(f, entries):
    """The archive itself (separate so tests can make it fail midway)."""
    np.savez(f, **entries)


def _fsync_dir(folder):
    """Persist the rename itself; not every platform can open a directory (Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# ---------------------------------------------------------------- load
def load(path, device=None):
    """Read a checkpoint written by `save`; arrays land on `device` (host NumPy when None).

    Raises FileNotFoundError for a missing file and CheckpointError (a ValueError) naming the
    path for anything that is not an intact checkpoint.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"load: no checkpoint at {path}")
    try:
        npz = np.load(path, allow_pickle=False)
        if not isinstance(npz, np.lib.npyio.NpzFile):
            raise ValueError("a single .npy array, not a .npz archive")
        with npz:
            if STRUCTURE_KEY not in npz.files:
                raise ValueError(f"missing the {STRUCTURE_KEY!r} entry")
            # Read every entry now: a damaged member only shows up when it is decompressed.
            arrays = {name: npz[name] for name in npz.files}
        structure = json.loads(str(arrays.pop(STRUCTURE_KEY)[()]))
        if not isinstance(structure, dict) or structure.get("format") != FORMAT:
            raise ValueError("the structure entry is not a tinygrad_opt checkpoint")
        if structure.get("version", 0) > VERSION:
            raise ValueError(f"written by a newer format version {structure.get('version')}")
        return _decode(structure["root"], arrays, device)
    except (ValueError, KeyError, OSError, EOFError, zipfile.BadZipFile, TypeError) as e:
        if isinstance(e, FileNotFoundError):
            raise
        raise CheckpointError(f"load: {path} is not a valid tinygrad_opt checkpoint "
                              f"(corrupted or truncated?): {e}") from e
