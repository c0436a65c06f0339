"""Tensor: one backend array plus, when an op made it, a link to that op's graph node."""
import operator as _operator

from . import backend


class Tensor:
    """An n-dimensional array that records the ops applied to it for reverse-mode autodiff.

    ``Tensor(data)`` copies its data (a scalar, nested list, NumPy/CuPy array or Tensor).
    Arrays keep their dtype; Python scalars and lists become float32. Only floating
    tensors may require grad.
    """
    __slots__ = ("data", "grad", "_requires_grad", "_node", "__weakref__")
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
    def _wrap(array, requires_grad=False):
        """A Tensor around a backend array, without copying (internal)."""
        t = Tensor.__new__(Tensor)
        t.data, t.grad, t._requires_grad, t._node = array, None, requires_grad, None
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
        return int(self.data.size)

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
        """This tensor cast to `dtype`; gradients are cast back."""
        if backend.np.dtype(dtype) == self.data.dtype:
            return self
        return ops.Cast.apply(self, dtype=backend.np.dtype(dtype))

    def float(self):
        return self.astype(backend.np.float32)

    def double(self):
        return self.astype(backend.np.float64)

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
            g = backend.xp_of(self.data).empty_like(self.data)
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
    def __neg__(self): return ops.Neg.apply(self)
    def __pos__(self): return self
    def __abs__(self): return ops.Abs.apply(self)
    def __getitem__(self, index): return ops.getitem(self, index)

    # comparisons are not differentiable: they return bool tensors with no graph
    def __eq__(self, other): return ops.compare(self, other, "equal")
    def __ne__(self, other): return ops.compare(self, other, "not_equal")
    def __lt__(self, other): return ops.compare(self, other, "less")
    def __le__(self, other): return ops.compare(self, other, "less_equal")
    def __gt__(self, other): return ops.compare(self, other, "greater")
    def __ge__(self, other): return ops.compare(self, other, "greater_equal")

    # -------------------------------------------------------------------- methods
    def exp(self): return ops.Exp.apply(self)
    def log(self): return ops.Log.apply(self)
    def sqrt(self): return ops.Sqrt.apply(self)
    def tanh(self): return ops.Tanh.apply(self)
    def sigmoid(self): return ops.Sigmoid.apply(self)
    def relu(self): return ops.ReLU.apply(self)
    def abs(self): return ops.Abs.apply(self)
    def square(self): return ops.Mul.apply(self, self)
    def sin(self): return ops.Sin.apply(self)
    def cos(self): return ops.Cos.apply(self)
    def log1p(self): return ops.Log1p.apply(self)
    def expm1(self): return ops.Expm1.apply(self)

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
    def flatten(self): return ops.reshape(self, -1)
    def any(self): return Tensor._wrap(backend.xp_of(self.data).asarray(self.data.any()))
    def all(self): return Tensor._wrap(backend.xp_of(self.data).asarray(self.data.all()))

    @property
    def T(self):
        return ops.transpose(self)


from . import engine, ops  # noqa: E402  (ops needs Tensor; methods above resolve at call time)

Tensor.__add__, Tensor.__radd__ = engine.operator_methods(ops.Add, _operator.add)
Tensor.__sub__, Tensor.__rsub__ = engine.operator_methods(ops.Sub, _operator.sub)
Tensor.__mul__, Tensor.__rmul__ = engine.operator_methods(ops.Mul, _operator.mul)
Tensor.__truediv__, Tensor.__rtruediv__ = engine.operator_methods(ops.Div, _operator.truediv)
