"""Tensor: one backend array plus, when an op made it, a link to that op's graph node."""
import operator as _operator

_new = object.__new__

from . import backend

_np = backend.np
_ndarray = backend.ndarray


class Tensor:
    """An n-dimensional array that records the ops applied to it for reverse-mode autodiff.

    ``Tensor(data)`` copies its data (a scalar, nested list, NumPy/CuPy array or Tensor).
    Arrays keep their dtype; Python scalars and lists become float32. Only floating
    tensors may require grad.
    """
    __slots__ = ("data", "grad", "_requires_grad", "_node", "__weakref__",
                 # filled by extensions.collect on layer parameters; unset (AttributeError) otherwise
                 "grad_batch", "batch_l2", "sum_grad_squared", "variance", "diag_ggn",
                 "diag_ggn_mc", "kfac", "batch_dot_grad")
    __hash__ = object.__hash__          # __eq__ is elementwise; dicts key tensors by identity
    __array_ufunc__ = None              # ndarray (op) Tensor defers to Tensor's reflected op
    __array_priority__ = 1000           # the same for CuPy, which looks at the priority

    def __init__(self, data, requires_grad=False, dtype=None, device=None):
        if type(data) is Tensor:
            data = data.data
        self.data = backend.as_array(data, dtype=dtype, device=device)
        self.grad = None
        self._node = None
        self._requires_grad = False
        if requires_grad:
            self.requires_grad = True

    @staticmethod
    def _wrap(array, requires_grad=False, node=None):
        """A Tensor around a backend array, without copying (internal): the one helper for
        it, except on the per-op hot paths of engine.py, which write these lines inline."""
        t = _new(Tensor)
        t.data, t.grad, t._requires_grad, t._node = array, None, requires_grad, node
        return t

    # ------------------------------------------------------------------ attributes
    @property
    def requires_grad(self):
        return self._requires_grad

    @requires_grad.setter
    def requires_grad(self, flag):
        if flag and not backend.is_floating(self.data.dtype):
            raise TypeError(f"only floating-point tensors can require grad, got dtype {self.data.dtype}")
        if not flag and self._node is not None:
            raise RuntimeError("requires_grad can only be turned off on a leaf; use .detach()")
        self._requires_grad = bool(flag)

    def requires_grad_(self, flag=True):
        """Set requires_grad in place and return self."""
        self.requires_grad = flag
        return self

    @property
    def is_leaf(self):
        return self._node is None

    @property
    def shape(self):
        return self.data.shape          # a tuple already, for NumPy and CuPy alike

    @property
    def ndim(self):
        return self.data.ndim

    @property
    def size(self):
        """The number of elements (NumPy's .size); also callable as PyTorch's size():
        t.size() is the shape and t.size(d) its length along axis d."""
        return _Size(self.data.shape, int(self.data.size))

    @property
    def dtype(self):
        return self.data.dtype

    @property
    def device(self):
        return backend.device_of(self.data)

    def __len__(self):
        if self.data.ndim == 0:
            raise TypeError("len() of a 0-d tensor")
        return self.data.shape[0]

    def __repr__(self):
        body = repr(backend.to_numpy(self.data)).replace("array(", "tensor(", 1)
        extra = ""
        if self.device != "cpu":
            extra += f", device='{self.device}'"
        if self._node is not None:
            extra += f", grad_fn={type(self._node).__name__}"
        elif self._requires_grad:
            extra += ", requires_grad=True"
        return body[:-1] + extra + ")" if extra else body

    def __format__(self, spec):
        # f"{loss:.3f}": a one-element tensor formats as its number, like PyTorch
        if self.data.ndim == 0 or (spec and self.data.size == 1):
            return format(self.item(), spec)
        if not spec:
            return str(self)
        raise TypeError(f"unsupported format string {spec!r} for a tensor of shape {self.shape}: "
                        "format its .item() or its .numpy() elements")

    def __array__(self, dtype=None, copy=None):
        # np.asarray(t), matplotlib, pandas: a host NumPy copy, never a view of .data
        if copy is False:           # NumPy 2's protocol: refuse rather than copy
            raise ValueError("Tensor.__array__: a tensor converts to a NumPy copy only; "
                             "use t.data for its own array")
        a = backend.to_numpy(self.data)
        return a if dtype is None else a.astype(dtype, copy=False)

    def __bool__(self):
        if self.data.size != 1:
            raise ValueError(f"the truth value of a tensor of shape {self.shape} is ambiguous; "
                             "use .any() or .all()")
        return bool(self.data)

    def __float__(self):
        return float(self.item())

    def __int__(self):
        return int(self.item())

    def __index__(self):
        return int(self.item())

    # ---------------------------------------------------------------- conversions
    def numpy(self):
        """A host NumPy copy of the data (never a view of .data)."""
        return backend.to_numpy(self.data)

    def tolist(self):
        return self.numpy().tolist()

    def item(self):
        """The value of a one-element tensor as a Python number."""
        if self.data.size != 1:
            raise ValueError(f"item(): tensor of shape {self.shape} has {self.size} elements, not 1")
        return self.data.reshape(()).item()

    def detach(self):
        """A new leaf sharing this tensor's data, cut off from the graph."""
        return Tensor._wrap(self.data)

    def to(self, device):
        """This tensor on `device` ('cpu' or 'cuda'); differentiable across the move."""
        if backend.check_device(device) == self.device:
            return self
        return ops.ToDevice.apply(self, device=backend.check_device(device))

    def cpu(self):
        return self.to("cpu")

    def cuda(self):
        return self.to("cuda")

    def astype(self, dtype):
        """This tensor cast to `dtype`; gradients are cast back. A cast to a non-floating
        dtype (int, bool) is not differentiable: its result records no graph."""
        dtype = backend.np.dtype(dtype)
        if dtype == self.data.dtype:
            return self
        if not backend.is_floating(dtype):
            return Tensor._wrap(self.data.astype(dtype))
        return ops.Cast.apply(self, dtype=dtype)

    def float(self):
        """float32 (differentiable)."""
        return self.astype(backend.np.float32)

    def double(self):
        """float64 (differentiable)."""
        return self.astype(backend.np.float64)

    def long(self):
        """int64 (class indices); not differentiable."""
        return self.astype(backend.np.int64)

    def int(self):
        """int32; not differentiable."""
        return self.astype(backend.np.int32)

    def clone(self):
        """A differentiable copy with its own data (the gradient passes through unchanged)."""
        return ops.Cast.apply(self, dtype=self.data.dtype)

    # ------------------------------------------------------------------- autograd
    def backward(self, grad=None, retain_graph=False, create_graph=False):
        """Accumulate d(self)/d(leaf) into the .grad of every leaf that requires grad."""
        if not self._requires_grad:
            raise RuntimeError("backward: this tensor does not require grad and has no graph; "
                               "create its inputs with requires_grad=True")
        if grad is None:
            if self.data.size != 1:
                raise RuntimeError(f"backward: grad can be omitted only for a one-element output, "
                                   f"but this tensor has shape {self.shape}; pass grad= of that shape")
            d = self.data
            g = (_np if type(d) is _ndarray else backend.xp_of(d)).empty_like(d)
            g.fill(1)               # ones_like, without its Python-level wrapper
        else:
            g = ops._grad_like(self, grad, "backward")
        if create_graph:
            g = Tensor._wrap(g)
        engine.run_backward((self,), (g,), create_graph=create_graph,
                            retain_graph=retain_graph or create_graph)

    # ------------------------------------------------------------------ operators
    # + - * / and their reflections are set below the class: engine.operator_methods
    def __pow__(self, other): return ops.pow(self, other)
    def __rpow__(self, other): return ops.pow(other, self)
    def __matmul__(self, other): return ops.matmul(self, other)
    def __rmatmul__(self, other): return ops.matmul(other, self)
    def __neg__(self): return _unary(ops.Neg, self)
    def __pos__(self): return self
    def __abs__(self): return _unary(ops.Abs, self)
    def __getitem__(self, index): return ops.getitem(self, index)

    # comparisons are not differentiable: they return bool tensors with no graph
    def __eq__(self, other): return ops.compare(self, other, "equal")
    def __ne__(self, other): return ops.compare(self, other, "not_equal")
    def __lt__(self, other): return ops.compare(self, other, "less")
    def __le__(self, other): return ops.compare(self, other, "less_equal")
    def __gt__(self, other): return ops.compare(self, other, "greater")
    def __ge__(self, other): return ops.compare(self, other, "greater_equal")

    # -------------------------------------------------------------------- methods
    def exp(self): return _unary(ops.Exp, self)
    def log(self): return _unary(ops.Log, self)
    def sqrt(self): return _unary(ops.Sqrt, self)
    def tanh(self): return _unary(ops.Tanh, self)
    def sigmoid(self): return _unary(ops.Sigmoid, self)
    def relu(self): return ops.relu(self)
    def abs(self): return _unary(ops.Abs, self)
    def square(self): return ops.Mul.apply(self, self)
    def sin(self): return _unary(ops.Sin, self)
    def cos(self): return _unary(ops.Cos, self)
    def log1p(self): return _unary(ops.Log1p, self)
    def expm1(self): return _unary(ops.Expm1, self)

    # reductions take NumPy's axis/keepdims, and PyTorch's dim/keepdim as aliases
    def sum(self, axis=None, keepdims=False, *, dim=None, keepdim=None):
        if dim is not None or keepdim is not None:
            axis, keepdims = ops.reduction_args("sum", axis, keepdims, dim, keepdim)
        return ops.Sum.apply(self, axis=ops._axis(axis), keepdims=keepdims)

    def mean(self, axis=None, keepdims=False, *, dim=None, keepdim=None):
        if dim is not None or keepdim is not None:
            axis, keepdims = ops.reduction_args("mean", axis, keepdims, dim, keepdim)
        return ops.mean(self, axis, keepdims)

    def max(self, axis=None, keepdims=False, *, dim=None, keepdim=None):
        """Max over axis. With PyTorch's dim= it returns PyTorch's (values, indices) pair."""
        return ops.extremum(self, ops.Max, ops.argmax, axis, keepdims, dim, keepdim)

    def min(self, axis=None, keepdims=False, *, dim=None, keepdim=None):
        """Min over axis. With PyTorch's dim= it returns PyTorch's (values, indices) pair."""
        return ops.extremum(self, ops.Min, ops.argmin, axis, keepdims, dim, keepdim)

    def var(self, axis=None, keepdims=False, correction=1, **dims):
        return ops.var(self, axis, keepdims, correction, **dims)

    def std(self, axis=None, keepdims=False, correction=1, **dims):
        return ops.std(self, axis, keepdims, correction, **dims)

    def norm(self, p=2, axis=None, keepdims=False, **dims): return ops.norm(self, p, axis, keepdims, **dims)
    def argmax(self, axis=None, keepdims=False, **dims): return ops.argmax(self, axis, keepdims, **dims)
    def argmin(self, axis=None, keepdims=False, **dims): return ops.argmin(self, axis, keepdims, **dims)

    def reshape(self, *shape): return ops.reshape(self, *shape)
    def transpose(self, *axes): return ops.transpose(self, *axes)
    def clip(self, lo=None, hi=None): return ops.Clip.apply(self, lo=lo, hi=hi)
    def maximum(self, other): return ops.Maximum.apply(self, other)
    def minimum(self, other): return ops.Minimum.apply(self, other)
    def view(self, *shape): return ops.reshape(self, *shape)

    def flatten(self, start_dim=0, end_dim=-1):
        """Axes start_dim..end_dim merged into one (all of them by default), like PyTorch."""
        shape = self.shape
        n = len(shape)
        if n == 0:
            return ops.reshape(self, 1)
        s, e = _dim(start_dim, n, "flatten"), _dim(end_dim, n, "flatten")
        if s > e:
            raise ValueError(f"flatten: start_dim {start_dim} comes after end_dim {end_dim} "
                             f"for a tensor of shape {shape}")
        return ops.reshape(self, *shape[:s], -1, *shape[e + 1:])

    def unsqueeze(self, dim):
        """A new axis of length 1 at position dim (dim may be -ndim-1 .. ndim)."""
        shape = list(self.shape)
        shape.insert(_dim(dim, len(shape) + 1, "unsqueeze"), 1)
        return ops.reshape(self, *shape)

    def squeeze(self, dim=None):
        """Axes of length 1 removed (only axis dim if given, and only if its length is 1)."""
        shape = self.shape
        if dim is None:
            return ops.reshape(self, *[k for k in shape if k != 1])
        if not shape:
            _dim(dim, 1, "squeeze")
            return self
        d = _dim(dim, len(shape), "squeeze")
        if shape[d] != 1:
            return self
        return ops.reshape(self, *shape[:d], *shape[d + 1:])

    def t(self):
        """The transpose of a matrix; a 0-D or 1-D tensor is returned as it is (PyTorch)."""
        if self.ndim > 2:
            raise ValueError(f"t(): expects a tensor with at most 2 dimensions, got shape "
                             f"{self.shape}; use transpose(*axes)")
        return ops.transpose(self) if self.ndim == 2 else self
    def any(self): return Tensor._wrap(backend.xp_of(self.data).asarray(self.data.any()))
    def all(self): return Tensor._wrap(backend.xp_of(self.data).asarray(self.data.all()))

    @property
    def T(self):
        # all axes reversed: nothing to check (x @ W.T runs this once per layer call)
        return _unary(ops.Transpose, self)

    # ------------------------------------------------------------------- in place
    # PyTorch's rules. Under no_grad (or when nothing involved requires grad) the data
    # changes in place and its version counter moves on, so a backward through a node that
    # saved the old values raises instead of giving a wrong gradient. With grad mode on, a
    # leaf that requires grad may not change in place; a tensor made by ops (or one taking
    # a value that requires grad) changes in place and records the op, as if x = x + y.
    def __iadd__(self, other): return self._inplace("+=", "add", _operator.add, other)
    def __isub__(self, other): return self._inplace("-=", "subtract", _operator.sub, other)
    def __imul__(self, other): return self._inplace("*=", "multiply", _operator.mul, other)
    def __itruediv__(self, other): return self._inplace("/=", "true_divide", _operator.truediv, other)

    def add_(self, other, alpha=1):
        """self += alpha * other, in place; returns self."""
        return self._inplace("add_", "add", _operator.add, _scaled(other, alpha))

    def sub_(self, other, alpha=1):
        """self -= alpha * other, in place; returns self."""
        return self._inplace("sub_", "subtract", _operator.sub, _scaled(other, alpha))

    def mul_(self, other):
        """self *= other, in place; returns self."""
        return self._inplace("mul_", "multiply", _operator.mul, other)

    def div_(self, other):
        """self /= other, in place; returns self."""
        return self._inplace("div_", "true_divide", _operator.truediv, other)

    def zero_(self):
        """Fill with zeros, in place; returns self."""
        return self.fill_(0)

    def fill_(self, value):
        """Fill with `value` (a number or one-element tensor), in place; returns self."""
        if type(value) is Tensor:
            if value.data.size != 1:
                raise ValueError(f"fill_: the value must have one element, got shape {value.shape}")
            if value._requires_grad and engine.is_grad_enabled():
                return self._recorded("fill_", lambda old: old * 0.0 + value.reshape(()), value)
            value = value.item()
        if self._requires_grad and engine.is_grad_enabled():
            return self._recorded("fill_", lambda old: old * 0.0 + value, None)
        self.data.fill(value)
        versions.bump_version(self.data)
        return self

    def copy_(self, src):
        """Copy src's values into this tensor (broadcast to its shape, cast to its dtype,
        moved to its device), in place; returns self."""
        d = self.data
        if type(src) is Tensor and src._requires_grad and engine.is_grad_enabled():
            return self._recorded("copy_", lambda old: ops.broadcast_to(
                src.to(self.device).astype(d.dtype), d.shape) + old * 0.0, src)
        if self._requires_grad and engine.is_grad_enabled():
            return self._recorded("copy_", lambda old: old * 0.0 + src, src)
        sd = src.data if type(src) is Tensor else src
        sd = backend.as_array(sd, dtype=d.dtype, device=self.device, copy=False)
        try:
            d[...] = sd
        except ValueError:
            raise ValueError(f"copy_: source of shape {tuple(sd.shape)} cannot be broadcast "
                             f"to the tensor's shape {self.shape}") from None
        versions.bump_version(d)
        return self

    def __setitem__(self, index, value):
        """t[index] = value, in place (under no_grad, or with nothing requiring grad)."""
        if engine.is_grad_enabled() and (self._requires_grad or
                                         (type(value) is Tensor and value._requires_grad)):
            raise RuntimeError(
                f"item assignment into a tensor of shape {self.shape}: the tensor or the value "
                "requires grad, and assignment records no graph; build the result out of place "
                "(tinygrad_opt.where, concatenate), or assign under tinygrad_opt.no_grad()")
        v = value.data if type(value) is Tensor else value
        d = self.data
        index = tuple(i.data if type(i) is Tensor else i for i in index) \
            if type(index) is tuple else (index.data if type(index) is Tensor else index)
        d[index] = backend.as_array(v, dtype=d.dtype, device=self.device, copy=False) \
            if type(value) is Tensor else v
        versions.bump_version(d)

    @property
    def _version(self):
        """How often this tensor's storage changed in place (shared with its views)."""
        return versions.version_of(self.data)

    def _inplace(self, name, ufunc, op, other):
        if engine.is_grad_enabled() and (self._requires_grad or
                                         (type(other) is Tensor and other._requires_grad)):
            return self._recorded(name, lambda old: op(old, other), other)
        d = self.data
        od = other
        if type(other) is Tensor:
            od = other.data
            if type(od) is not type(d):
                raise RuntimeError(f"{name}: the tensors are on different devices "
                                   f"({self.device} and {other.device}); move one with .to(device)")
        try:
            getattr(backend.xp_of(d), ufunc)(d, od, out=d)
        except (TypeError, ValueError) as e:
            oshape = tuple(getattr(od, "shape", ())) if not isinstance(od, list) else "list"
            kind = ValueError if isinstance(e, ValueError) else TypeError
            raise kind(f"{name}: cannot update a tensor of shape {self.shape} and dtype "
                       f"{d.dtype} in place with an operand of shape {oshape} and dtype "
                       f"{getattr(od, 'dtype', type(od).__name__)} ({e})") from None
        versions.bump_version(d)
        return self

    def _recorded(self, name, compute, other):
        """The in-place change with grad mode on, recorded: the result of compute(old), where
        old stands for this tensor before the change, is written into this tensor's data,
        and this tensor now points at the op that made it."""
        if self._node is None and self._requires_grad:
            raise RuntimeError(
                f"{name}: a leaf tensor that requires grad cannot change in place while grad "
                "mode is on; update parameters under `with tinygrad_opt.no_grad():` "
                "(p -= lr * p.grad), or write x = x + y to get a new tensor")
        d = self.data
        before = d.copy()
        # Nodes that consumed this tensor until now read it as it was: the version stamp
        # makes a backward through any of them raise (they would also route their gradient
        # to the new node). The node that made it keeps its output as it was.
        versions.bump_version(d)
        node = self._node
        if node is not None and node.out is d:
            node.out = before
        old = Tensor._wrap(before, self._requires_grad, node)
        res = compute(old)
        if type(res) is not Tensor:
            res = Tensor._wrap(res)
        if res.shape != d.shape:
            raise ValueError(f"{name}: the result has shape {res.shape}, which cannot be written "
                             f"in place into a tensor of shape {self.shape}")
        if res.dtype != d.dtype:
            if not backend.np.can_cast(res.dtype, d.dtype, "same_kind"):
                raise TypeError(f"{name}: a result of dtype {res.dtype} cannot be written in place "
                                f"into a tensor of dtype {d.dtype}")
            res = res.astype(d.dtype)
        d[...] = res.data
        rn = res._node
        if rn is not None and rn.out is res.data:
            rn.out = d
        self._node = rn
        self._requires_grad = res._requires_grad
        return self


class _Size(int):
    """Tensor.size: the element count as an int (NumPy), callable as PyTorch's size()."""

    def __new__(cls, shape, n):
        obj = int.__new__(cls, n)
        obj.shape = shape
        return obj

    def __reduce__(self):           # pickles and copies as the plain count
        return (int, (int(self),))

    def __call__(self, dim=None):
        if dim is None:
            return tuple(self.shape)
        return self.shape[_dim(dim, len(self.shape), "size")]


def _dim(dim, n, name):
    """Axis dim in range(n), negative counting from the end; an IndexError names the op."""
    d = int(dim)
    if not -n <= d < n:
        raise IndexError(f"{name}: dimension {dim} is out of range for {n} dimension(s)")
    return d % n


def _scaled(other, alpha):
    return other if alpha == 1 else other * alpha


from . import engine, ops, versions  # noqa: E402  (ops needs Tensor; methods above resolve at call time)

_unary = engine.unary_apply

Tensor.__add__, Tensor.__radd__ = engine.operator_methods(
    ops.Add, _operator.add, fuse=(ops.Linear, ops.bias_into_linear))
Tensor.__sub__, Tensor.__rsub__ = engine.operator_methods(ops.Sub, _operator.sub)
Tensor.__mul__, Tensor.__rmul__ = engine.operator_methods(ops.Mul, _operator.mul)
Tensor.__truediv__, Tensor.__rtruediv__ = engine.operator_methods(ops.Div, _operator.truediv)
