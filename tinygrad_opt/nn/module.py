"""Module: the base class of layers and models, and the ModuleList / ModuleDict containers.

A Module finds its parameters by looking at its attributes, so there is nothing to register:

    self.fc = Linear(3, 4)           # a submodule       -> names fc.weight, fc.bias
    self.w = Tensor(..., requires_grad=True)   # a parameter  -> name w
    self.blocks = [Linear(4, 4), Linear(4, 2)]   # lists, tuples and dicts are searched
                                                 # -> blocks.0.weight, blocks.1.bias, ...

Every Tensor attribute is a parameter unless it was declared a buffer with `register_buffer`
(running statistics and other state that is saved but not trained). Attributes whose names
start with an underscore are private and never searched.
"""
from collections import namedtuple

from .. import backend
from ..tensor import Tensor

_IncompatibleKeys = namedtuple("IncompatibleKeys", ["missing_keys", "unexpected_keys"])


def _flatten(prefix, value):
    """(dotted name, item) for the Tensors and Modules inside a value, searching lists and dicts."""
    if isinstance(value, (Tensor, Module)):
        yield prefix, value
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            yield from _flatten(f"{prefix}.{i}", v)
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from _flatten(f"{prefix}.{k}", v)


class Module:
    """Base class of layers and models; subclasses define `forward` and call it as `m(x)`."""

    def __init__(self):
        self.training = True
        self._buffer_names = []

    def forward(self, *args, **kwargs):
        raise NotImplementedError(f"{type(self).__name__} does not define forward()")

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    # ------------------------------------------------------------ discovery
    def _items(self):
        """(name, value) of the public attributes, in assignment order; containers override this."""
        for name, value in vars(self).items():
            if not name.startswith("_") and name != "training":
                yield name, value

    def _check_init(self):
        if "_buffer_names" not in vars(self):
            raise RuntimeError(f"{type(self).__name__}.__init__ did not call super().__init__()")

    def _members(self):
        """This module's own tensors and its direct children: two lists of (name, object)."""
        self._check_init()
        tensors, children = [], []
        for name, value in self._items():
            for n, v in _flatten(name, value):
                (tensors if isinstance(v, Tensor) else children).append((n, v))
        return tensors, children

    def register_buffer(self, name, tensor):
        """Store `tensor` as attribute `name`: saved in state_dict and moved by to(), not trained."""
        self._check_init()
        if tensor is not None and not isinstance(tensor, Tensor):
            raise TypeError(f"register_buffer: {name!r} must be a Tensor or None, "
                            f"got {type(tensor).__name__}")
        setattr(self, name, tensor)
        if name not in self._buffer_names:
            self._buffer_names.append(name)

    def named_children(self):
        """(name, module) for each direct submodule."""
        seen = set()
        for name, m in self._members()[1]:
            if id(m) not in seen:
                seen.add(id(m))
                yield name, m

    def children(self):
        """The direct submodules."""
        for _, m in self.named_children():
            yield m

    def named_modules(self, prefix=""):
        """(dotted name, module) for this module ('' ) and every descendant, each once."""
        seen = set()
        stack = [(prefix, self)]
        while stack:
            name, m = stack.pop()
            if id(m) in seen:
                continue
            seen.add(id(m))
            m._check_init()
            yield name, m
            kids = [(f"{name}.{n}" if name else n, c) for n, c in m.named_children()]
            stack.extend(reversed(kids))

    def modules(self):
        """This module and every descendant."""
        for _, m in self.named_modules():
            yield m

    def _named_tensors(self, want_buffers):
        seen = set()
        for mname, m in self.named_modules():
            buffers = m._buffer_names
            for n, t in m._members()[0]:
                if (n in buffers) == want_buffers and id(t) not in seen:
                    seen.add(id(t))
                    yield (f"{mname}.{n}" if mname else n), t

    def named_parameters(self):
        """(dotted name, Tensor) for every parameter, each shared parameter once (PyTorch order)."""
        return self._named_tensors(False)

    def parameters(self):
        """Every parameter Tensor, each once."""
        for _, p in self.named_parameters():
            yield p

    def named_buffers(self):
        """(dotted name, Tensor) for every buffer."""
        return self._named_tensors(True)

    def buffers(self):
        for _, b in self.named_buffers():
            yield b

    # ------------------------------------------------------------ modes and gradients
    def train(self, mode=True):
        """Set training mode (Dropout active, BatchNorm on batch statistics) here and below."""
        for m in self.modules():
            m.training = bool(mode)
        return self

    def eval(self):
        """Set evaluation mode here and below; the same as train(False)."""
        return self.train(False)

    def zero_grad(self, set_to_none=True):
        """Clear the gradients of every parameter (to None by default, like PyTorch)."""
        for p in self.parameters():
            if set_to_none:
                p.grad = None
            elif p.grad is not None:
                p.grad.data[...] = 0

    def to(self, *args, device=None, dtype=None):
        """Move every parameter, gradient and buffer to `device` and/or cast the floating
        ones to `dtype`, in place; returns self. Like PyTorch, to("cuda"), to(np.float64)
        and to(device=..., dtype=...) all work; integer buffers keep their dtype."""
        for a in args:
            if isinstance(a, str):
                device = a
            else:
                dtype = a
        if device is None and dtype is None:
            raise TypeError("Module.to: give a device ('cpu', 'cuda') and/or a dtype")
        if dtype is not None:
            dtype = backend.np.dtype(dtype)
            if not backend.is_floating(dtype):
                raise TypeError(f"Module.to: dtype must be a floating dtype, got {dtype}")
        for t in list(self.parameters()) + list(self.buffers()):
            for x in (t, t.grad):
                if x is None:
                    continue
                if device is not None:
                    x.data = backend.to_device(x.data, device)
                if dtype is not None and backend.is_floating(x.data.dtype):
                    x.data = x.data.astype(dtype, copy=False)
        return self

    def float(self):
        """Cast the floating parameters and buffers to float32; returns self."""
        return self.to(dtype=backend.np.float32)

    def double(self):
        """Cast the floating parameters and buffers to float64; returns self."""
        return self.to(dtype=backend.np.float64)

    # ------------------------------------------------------------ state
    def state_dict(self):
        """Copies of every parameter and buffer array, keyed by dotted name (parameters first
        within each module, then buffers, then submodules)."""
        out = {}
        for mname, m in self.named_modules():
            own = m._members()[0]
            own = ([(n, t) for n, t in own if n not in m._buffer_names]
                   + [(n, t) for n, t in own if n in m._buffer_names])
            for n, t in own:
                key = f"{mname}.{n}" if mname else n
                if key not in out:
                    out[key] = backend.xp_of(t.data).array(t.data, copy=True)
        return out

    def _state_tensors(self):
        tensors = {}
        for mname, m in self.named_modules():
            for n, t in m._members()[0]:
                tensors.setdefault(f"{mname}.{n}" if mname else n, t)
        return tensors

    def load_state_dict(self, state_dict, strict=True):
        """Copy arrays (or Tensors) from `state_dict` into the parameters and buffers in place.

        Shapes must match. With strict=True the keys must match exactly. Returns
        (missing_keys, unexpected_keys), like PyTorch.
        """
        own = self._state_tensors()
        missing = [k for k in own if k not in state_dict]
        unexpected = [k for k in state_dict if k not in own]
        errors = []
        if strict and missing:
            errors.append("missing keys: " + ", ".join(missing))
        if strict and unexpected:
            errors.append("unexpected keys: " + ", ".join(unexpected))
        for k, t in own.items():
            if k in state_dict:
                v = state_dict[k]
                shape = tuple(getattr(v, "shape", backend.np.shape(v)))
                if shape != tuple(t.shape):
                    errors.append(f"shape mismatch for {k}: expected {tuple(t.shape)}, got {shape}")
        if errors:
            raise RuntimeError(f"load_state_dict for {type(self).__name__}: " + "; ".join(errors))
        for k, t in own.items():
            if k in state_dict:
                v = state_dict[k]
                v = v.data if isinstance(v, Tensor) else v
                t.data[...] = backend.as_array(v, dtype=t.dtype, device=t.device, copy=False)
        return _IncompatibleKeys(missing, unexpected)

    # ------------------------------------------------------------ printing
    def extra_repr(self):
        return ""

    def __repr__(self):
        kids = list(self.named_children())
        head = f"{type(self).__name__}({self.extra_repr()}"
        if not kids:
            return head + ")"
        lines = [head]
        for n, m in kids:
            sub = repr(m).replace("\n", "\n  ")
            lines.append(f"  ({n}): {sub}")
        return "\n".join(lines) + "\n)"


class ModuleList(Module):
    """A list of modules whose parameters are named by index: 0.weight, 1.weight, ..."""

    def __init__(self, modules=()):
        super().__init__()
        self._list = []
        for m in modules:
            self.append(m)

    def _items(self):
        for i, m in enumerate(self._list):
            yield str(i), m

    def append(self, module):
        if not isinstance(module, Module):
            raise TypeError(f"{type(self).__name__}: expected a Module, got {type(module).__name__}")
        self._list.append(module)
        return self

    def extend(self, modules):
        for m in modules:
            self.append(m)
        return self

    def __getitem__(self, i):
        if isinstance(i, slice):
            return type(self)(self._list[i])
        return self._list[i]

    def __len__(self):
        return len(self._list)

    def __iter__(self):
        return iter(self._list)


class ModuleDict(Module):
    """A dict of modules whose parameters are named by key: encoder.weight, ..."""

    def __init__(self, modules=None):
        super().__init__()
        self._dict = {}
        for k, m in dict(modules or {}).items():
            self[k] = m

    def _items(self):
        return iter(self._dict.items())

    def __setitem__(self, key, module):
        if not isinstance(module, Module):
            raise TypeError(f"ModuleDict: expected a Module for key {key!r}, "
                            f"got {type(module).__name__}")
        self._dict[str(key)] = module

    def __getitem__(self, key):
        return self._dict[key]

    def __len__(self):
        return len(self._dict)

    def __iter__(self):
        return iter(self._dict)

    def __contains__(self, key):
        return key in self._dict

    def keys(self):
        return self._dict.keys()

    def values(self):
        return self._dict.values()

    def items(self):
        return self._dict.items()
