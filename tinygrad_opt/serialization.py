"""save / load: checkpoints as a single .npz file, without pickle.

A checkpoint holds a tree of dicts, lists and tuples whose leaves are arrays (NumPy or
CuPy, stored from host memory), Tensors, Python numbers, strings, bools and None. The
tree's shape is stored as one JSON string (entry ``__structure__``) and every array as its
own entry, so reading a file never runs code from it (no pickle, ever).

Exact round trips: dict keys keep their type (optimizer state keyed by parameter index
comes back keyed by int), ints of any size are stored as decimal strings (a PCG64 state
holds 128-bit ints), floats as hex strings (every bit, nan and inf included), arrays keep
dtype, shape and values, and NumPy scalars come back as NumPy scalars of the same dtype.

Writes are atomic: the file is written under a temporary name in the same folder, synced
to disk and renamed over the target, so a crash mid-save leaves the previous checkpoint
intact. The file gets the permissions a plain write would give it (an existing file keeps
its mode, a new one gets 0666 less the umask), and temporary files that a killed process
left behind are removed by the next save to the same path.

Reading trusts nothing in the file: every entry's declared shape must match the bytes it
holds (checked before allocating), the archive's checksums are verified, nesting is limited
to MAX_DEPTH, and any failure to read is a CheckpointError.
"""
import json
import math
import os
import re
import secrets
import stat
import time
import zipfile

from . import backend

np = backend.np                 # host NumPy: this module only does file I/O

FORMAT = "tinygrad_opt.checkpoint"
VERSION = 1
STRUCTURE_KEY = "__structure__"
MAX_DEPTH = 100                 # nesting of dicts, lists and tuples, on save and on load
_CHUNK = 1 << 24                # bytes read at a time into an array


class CheckpointError(ValueError):
    """A file that is not a readable tinygrad_opt checkpoint (corrupted, truncated, foreign)."""


# ---------------------------------------------------------------- encoding
def _is_tensor(obj):
    # Duck-typed so this module does not need the Tensor class to save plain arrays.
    return type(obj).__name__ == "Tensor" and backend.is_array(getattr(obj, "data", None))


def _encode(obj, arrays, where, depth=0):
    """JSON-ready description of `obj`; arrays are appended to `arrays` and referenced by name."""
    if isinstance(obj, np.generic):             # before str/float/complex: np.str_ is a str
        return _encode_array(obj, "scalar", arrays, where)
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, int):                    # bool handled above; ints of any size
        return {"t": "int", "v": str(obj)}
    if isinstance(obj, float):
        return {"t": "float", "v": float.hex(obj)}
    if isinstance(obj, complex):
        return {"t": "complex", "v": [float.hex(obj.real), float.hex(obj.imag)]}
    if backend.is_array(obj) or _is_tensor(obj):
        return _encode_array(obj, "tensor" if _is_tensor(obj) else "array", arrays, where)
    if isinstance(obj, (dict, list, tuple)) and depth >= MAX_DEPTH:
        raise ValueError(f"save: {_short(where)} is nested deeper than {MAX_DEPTH} levels "
                         "(a container that contains itself?)")
    if isinstance(obj, dict):
        items = []
        for k, v in obj.items():
            if not (k is None or isinstance(k, (bool, int, float, str, tuple))
                    or isinstance(k, np.generic) and not isinstance(k, np.void)):
                raise TypeError(f"save: dict key {k!r} of type {type(k).__name__} at {where} is not "
                                "supported (use str, int, float, bool, None, tuple or a NumPy scalar)")
            items.append([_encode(k, arrays, where, depth + 1),
                          _encode(v, arrays, f"{where}[{k!r}]", depth + 1)])
        return {"t": "dict", "items": items}
    if isinstance(obj, (list, tuple)):
        vals = [_encode(v, arrays, f"{where}[{i}]", depth + 1) for i, v in enumerate(obj)]
        return {"t": "list" if isinstance(obj, list) else "tuple", "v": vals}
    raise TypeError(f"save: cannot store {type(obj).__name__} at {where}; supported: dict, list, "
                    "tuple, arrays, Tensors, numbers, str, bool, None")


def _encode_array(obj, kind, arrays, where):
    a = np.asarray(obj) if kind == "scalar" else backend.to_numpy(obj.data if kind == "tensor" else obj)
    if a.dtype.hasobject:
        raise TypeError(f"save: object arrays cannot be stored without pickle (at {where})")
    name = f"a{len(arrays)}"
    arrays.append((name, a))
    node = {"t": kind, "ref": name}
    if kind == "tensor":
        node["requires_grad"] = bool(obj.requires_grad)
    return node


class _Decoder:
    """Rebuilds the tree from the structure, checking every node a crafted file could bend."""

    def __init__(self, arrays, device):
        self.arrays, self.device, self.used = arrays, device, set()

    def __call__(self, node, depth=0):
        if node is None or isinstance(node, (bool, str)):
            return node
        if not isinstance(node, dict) or not isinstance(node.get("t"), str):
            raise ValueError(f"unexpected node {_short(node)}")
        t = node["t"]
        if t == "int":
            v = _field(node, "v", str)
            if len(v) > 4300:                   # Python's own limit since 3.11: no slow parses
                raise ValueError(f"an int of {len(v)} digits")
            return int(v)
        if t == "float":
            return float.fromhex(_field(node, "v", str))
        if t == "complex":
            re_, im = _field(node, "v", list, 2)
            return complex(float.fromhex(re_), float.fromhex(im))
        if t in ("array", "tensor", "scalar"):
            return self.array(node, t)
        if depth >= MAX_DEPTH:
            raise ValueError(f"nested deeper than {MAX_DEPTH} levels")
        if t == "dict":
            out = {}
            for item in _field(node, "items", list):
                k, v = _check(item, list, 2)
                out[self(k, depth + 1)] = self(v, depth + 1)
            return out
        if t == "list":
            return [self(v, depth + 1) for v in _field(node, "v", list)]
        if t == "tuple":
            return tuple(self(v, depth + 1) for v in _field(node, "v", list))
        raise ValueError(f"unknown node type {_short(t)}")

    def array(self, node, t):
        ref = _field(node, "ref", str)
        if ref not in self.arrays:
            raise ValueError(f"node refers to a missing entry {_short(ref)}")
        if ref in self.used:                    # never two objects sharing one buffer
            raise ValueError(f"entry {ref!r} is referenced twice")
        self.used.add(ref)
        a = self.arrays[ref]
        if t == "scalar":
            if a.ndim != 0:
                raise ValueError(f"scalar entry {ref!r} has shape {a.shape}")
            return a[()]
        if self.device is not None:
            a = backend.to_device(a, self.device)
        if t == "array":
            return a
        requires_grad = node.get("requires_grad", False)
        if not isinstance(requires_grad, bool):
            raise ValueError(f"tensor entry {ref!r}: requires_grad is {_short(requires_grad)}")
        if a.dtype.kind not in "biufc":
            raise ValueError(f"tensor entry {ref!r} has dtype {a.dtype}, which no Tensor holds")
        if requires_grad and not backend.is_floating(a.dtype):
            raise ValueError(f"tensor entry {ref!r} of dtype {a.dtype} cannot require grad")
        from .tensor import Tensor
        return Tensor._wrap(a, requires_grad=requires_grad)


def _short(x):
    r = repr(x)
    return r if len(r) <= 80 else r[:77] + "..."


def _check(value, kind, length=None):
    if type(value) is not kind or (length is not None and len(value) != length):
        want = kind.__name__ + (f" of {length}" if length is not None else "")
        raise ValueError(f"expected a {want}, found {_short(value)}")
    return value


def _field(node, key, kind, length=None):
    if key not in node:
        raise ValueError(f"node {_short(node)} lacks {key!r}")
    return _check(node[key], kind, length)


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
    base = os.path.basename(path)
    _remove_stale_temps(folder, base)
    fd, tmp = _create_temp(folder, base, path)
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


# The temporary name carries the writer's pid, so a later save can tell a leftover of a
# killed process from the file another live process is writing right now.
_TEMP = re.compile(r"(\d+)\.[0-9a-f]{8}\.tmp")


def _create_temp(folder, base, path):
    """A new file next to `path`, created with mode 0666 so the umask applies as for any write."""
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)      # an existing file keeps its mode
    except OSError:
        mode = None
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    while True:
        tmp = os.path.join(folder, f".{base}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
        try:
            fd = os.open(tmp, flags, 0o666)
            break
        except FileExistsError:
            continue
    if mode is not None:
        try:
            os.chmod(tmp, mode)
        except OSError:
            pass
    return fd, tmp


def _remove_stale_temps(folder, base):
    """Delete temporary files of earlier saves to this path whose writer is gone."""
    prefix = "." + base + "."
    try:
        names = [n for n in os.listdir(folder) if n.startswith(prefix)]
    except OSError:
        return
    for name in names:
        m = _TEMP.fullmatch(name[len(prefix):])
        if m and not _writer_alive(int(m.group(1)), os.path.join(folder, name)):
            try:
                os.unlink(os.path.join(folder, name))
            except OSError:
                pass                            # another save removed it first


def _writer_alive(pid, tmp):
    if pid == os.getpid():
        return True                             # another thread of this process
    if os.name != "posix":                      # no safe "is it alive" probe: go by age
        try:
            return time.time() - os.path.getmtime(tmp) < 3600
        except OSError:
            return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True                             # alive, owned by someone else
    return True


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
    path for anything that is not an intact checkpoint, whatever is wrong with it.
    """
    path = os.fspath(path)
    if device is not None:
        device = backend.check_device(device)   # the caller's mistake, not the file's
    if not os.path.exists(path):
        raise FileNotFoundError(f"load: no checkpoint at {path}")
    try:
        arrays = _read_archive(path)
        structure = arrays.pop(STRUCTURE_KEY, None)
        if structure is None:
            raise ValueError(f"missing the {STRUCTURE_KEY!r} entry")
        if structure.ndim != 0 or structure.dtype.kind != "U":
            raise ValueError(f"the {STRUCTURE_KEY!r} entry is not a string")
        structure = json.loads(str(structure[()]))
        if not isinstance(structure, dict) or structure.get("format") != FORMAT:
            raise ValueError("the structure entry is not a tinygrad_opt checkpoint")
        version = structure.get("version")
        if type(version) is not int or not 1 <= version <= VERSION:
            raise ValueError(f"format version {_short(version)}; this version reads 1 to {VERSION}")
        if "root" not in structure:
            raise ValueError("the structure entry has no root")
        return _Decoder(arrays, device)(structure["root"])
    except FileNotFoundError:
        raise
    except RecursionError:
        raise CheckpointError(f"load: {path} is not a valid tinygrad_opt checkpoint: "
                              "its structure is nested too deeply") from None
    except MemoryError:
        raise CheckpointError(f"load: {path}: not enough memory to read its arrays") from None
    except Exception as e:                      # whatever a damaged or crafted file provokes
        raise CheckpointError(f"load: {path} is not a valid tinygrad_opt checkpoint "
                              f"(corrupted or truncated?): {type(e).__name__}: {e}") from e


def _read_archive(path):
    """Every entry of the .npz at `path` as {name: array}, checking sizes before allocating."""
    arrays = {}
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if f.read(4) != b"PK\x03\x04":
            raise ValueError("not a zip archive (a .npz starts with PK\\x03\\x04)")
        f.seek(0)
        with zipfile.ZipFile(f) as zf:
            for info in zf.infolist():
                name = info.filename
                if not name.endswith(".npy") or name[:-4] in arrays:
                    raise ValueError(f"unexpected or repeated entry {_short(name)}")
                if info.compress_type != zipfile.ZIP_STORED:
                    raise ValueError(f"entry {name!r} uses compression method {info.compress_type}; "
                                     "checkpoints are stored uncompressed")
                if info.file_size != info.compress_size or info.file_size > size:
                    raise ValueError(f"entry {name!r} declares {info.file_size} bytes "
                                     f"in a file of {size}")
                with zf.open(info) as member:
                    arrays[name[:-4]] = _read_npy(member, info.file_size, name)
    return arrays


def _read_npy(f, nbytes, name):
    """One .npy entry of `nbytes` bytes; its header must account for exactly those bytes."""
    fmt = np.lib.format
    version = fmt.read_magic(f)
    if version == (1, 0):
        shape, fortran, dtype = fmt.read_array_header_1_0(f)
    elif version == (2, 0):
        shape, fortran, dtype = fmt.read_array_header_2_0(f)
    else:
        raise ValueError(f"entry {name!r} has .npy format version {version}")
    if dtype.hasobject:
        raise ValueError(f"entry {name!r} holds Python objects, which would need pickle")
    count = math.prod(shape)
    need = count * dtype.itemsize
    if f.tell() + need != nbytes:
        raise ValueError(f"entry {name!r} declares shape {shape} of {dtype} ({need} bytes) "
                         f"but holds {nbytes - f.tell()}")
    a = np.empty(count, dtype)
    if need:
        buf = memoryview(a.view(np.uint8))
        pos = 0
        while pos < need:
            n = f.readinto(buf[pos:pos + _CHUNK])
            if not n:
                raise EOFError(f"entry {name!r} ends early")
            pos += n
    if f.read(1):                               # reading to the end also checks the CRC
        raise ValueError(f"entry {name!r} is longer than declared")
    return a.reshape(shape, order="F" if fortran else "C")
