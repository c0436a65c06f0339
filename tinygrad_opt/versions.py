"""Version counters of in-place changes, and the graph's clock.

Every array changed in place through a Tensor method (x -= y, add_, copy_, t[i] = v, ...)
gets a version count and the stamp of its latest change, keyed by its storage (the array
that owns the memory, so views and detach()ed tensors share one count, as PyTorch's views
share one version counter). Stamps come from the same clock that numbers the graph's nodes
(`next_seq`, counting down), so "changed after node n was recorded" is `stamp < n.seq`.
The engine checks a node's saved arrays (`check_unmodified`) before its backward only when
the node was recorded before the latest change anywhere (n.seq > last_change): a training
loop changes its parameters after the backward and before the next forward, so its nodes
are never checked, and the cost is one comparison per node.
"""
import itertools
import weakref

from . import backend

_ndarray = backend.ndarray
# Nodes are numbered in creation order, counting down: a node's inputs always exist before
# it does, so visiting nodes from the lowest (newest) number up is a topological order of
# any graph, and heapq's min-heap pops them in that order with no negation.
next_seq = itertools.count(0, -1).__next__
last_change = 1         # the stamp of the latest in-place change (1: none yet)

_versions = {}          # id(storage) -> [version, seq of the latest change, weakref or None]


def _storage(a):
    """The object that owns a's memory (NumPy and CuPy views point to it through .base)."""
    while True:
        b = getattr(a, "base", None)
        if b is None:
            return a
        a = b


def _version_entry(a):
    base = _storage(a)
    e = _versions.get(id(base))
    if e is not None and e[2] is not None and e[2]() is not base:
        return None, base           # a dead array's entry whose id was reused
    return e, base


def version_of(a):
    """How many times array a's storage was changed in place through Tensor methods."""
    e, _ = _version_entry(a)
    return 0 if e is None else e[0]


def bump_version(a):
    """Record an in-place change of array a (Tensor's in-place methods call this)."""
    global last_change
    stamp = next_seq()
    e, base = _version_entry(a)
    if e is None:
        key = id(base)
        try:
            ref = weakref.ref(base, lambda r, key=key: _drop_version(key, r))
        except TypeError:           # not weakly referenceable (bytes): keep no reference
            ref = None
        e = _versions[key] = [0, stamp, ref]
    e[0] += 1
    e[1] = stamp
    last_change = stamp


def _drop_version(key, ref):
    e = _versions.get(key)
    if e is not None and e[2] is ref:
        del _versions[key]


def check_unmodified(n):
    """Raise if an array node n saved for its backward was changed in place since."""
    seq = n.seq
    ins = n.inputs
    out = n.out
    for a in (*ins, out) if type(ins) in (tuple, list) else (out,):
        t = type(a)
        if t is not _ndarray and (t is float or t is int or a is None or not backend.is_array(a)):
            continue
        s = a
        while True:                 # _storage, inline: this runs for every saved array
            b = s.base
            if b is None or not hasattr(b, "base"):
                s = s if b is None else b
                break
            s = b
        e = _versions.get(id(s))
        if e is None or e[1] >= seq or (e[2] is not None and e[2]() is not s):
            continue
        name = type(n).__name__
        what = "output" if a is out else "inputs"
        raise RuntimeError(
            f"backward through {name}: one of its saved {what} (shape {tuple(a.shape)}, "
            f"dtype {a.dtype}) was modified in place after {name} recorded it (now at "
            f"version {e[0]}), so its gradient would be wrong; do the in-place change "
            "after backward, or change a copy (x.clone()) instead")
