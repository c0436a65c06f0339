"""Layers: Linear, Sequential, activations, Dropout, BatchNorm1d and the MLP convenience model."""
import math

from .. import backend, ops
from ..engine import layer_apply, no_grad
from ..tensor import Tensor
from . import functional as F
from . import init as nninit
from .module import Module


def _param(shape, dtype, device):
    """A new zero parameter tensor (requires grad) to be filled by an init function."""
    xp = backend.get_xp(device)
    data = xp.zeros(shape, dtype=backend.DEFAULT_DTYPE if dtype is None else dtype)
    return Tensor._wrap(data, requires_grad=True)


class Linear(Module):
    """y = x @ weight.T + bias, weight of shape (out_features, in_features).

    Default init is PyTorch's: kaiming_uniform_(a=sqrt(5)) for the weight, which is
    U(-1/sqrt(in_features), 1/sqrt(in_features)), and the same uniform range for the bias.
    """

    def __init__(self, in_features, out_features, bias=True, dtype=None, device=None):
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.weight = _param((out_features, in_features), dtype, device)
        self.bias = _param((out_features,), dtype, device) if bias else None
        self.reset_parameters()

    def reset_parameters(self):
        if self.in_features > 0:
            nninit.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            b = 1.0 / math.sqrt(self.in_features) if self.in_features > 0 else 0.0
            nninit.uniform_(self.bias, -b, b)

    def forward(self, x):
        # the input is checked here and the parameters are the layer's own: the op directly
        return layer_apply(ops.Linear, self._checked(x), self.weight, self.bias)

    def _forward_relu(self, x):
        """relu(forward(x)) as one node: Sequential's Linear, ReLU pairs."""
        return layer_apply(ops.LinearReLU, self._checked(x), self.weight, self.bias)

    def _checked(self, x):
        if not isinstance(x, Tensor):
            x = Tensor(x)
        xd = x.data
        shape = xd.shape
        if not shape or shape[-1] != self.in_features:
            raise ValueError(f"Linear: expected input with last dimension in_features="
                             f"{self.in_features}, got input of shape {tuple(shape)}")
        dt = self.weight.data.dtype
        if xd.dtype is not dt and xd.dtype != dt:
            raise backend.product_dtype_error("Linear", xd.dtype, dt) or TypeError(
                f"Linear: input of dtype {xd.dtype} does not match the weight's {dt}")
        return x

    def extra_repr(self):
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}")


class Sequential(Module):
    """Modules applied in order; parameters are named by position (0.weight, 1.bias, ...)
    or by key when built from a single dict.

    A Linear directly followed by a ReLU runs as one fused op (ops.LinearReLU): the same
    values and gradients with one graph node and one activation array fewer per pair.
    """

    def __init__(self, *modules):
        super().__init__()
        if len(modules) == 1 and isinstance(modules[0], dict):
            items = [(str(k), m) for k, m in modules[0].items()]
        else:
            items = [(str(i), m) for i, m in enumerate(modules)]
        for name, m in items:
            if not isinstance(m, Module):
                raise TypeError(f"Sequential: item {name} is a {type(m).__name__}, not a Module")
        self._layers = dict(items)
        self._plan = None

    def _items(self):
        return iter(self._layers.items())

    def forward(self, x):
        plan = self._plan
        if plan is None:
            plan = self._plan = _fusion_plan(list(self._layers.values()))
        for m, relu, own in plan:
            if relu is None:
                x = m(x)
            # while neither module (instance or class) has another forward; `own` holds
            # the two instances' attribute dicts
            elif ("forward" not in own[0] and "forward" not in own[1]
                  and Linear.forward is _LINEAR_FORWARD and ReLU.forward is _RELU_FORWARD):
                x = m._forward_relu(x)
            else:               # given a forward of its own since the plan was made
                x = relu(m(x))
        return x

    def append(self, module):
        if not isinstance(module, Module):
            raise TypeError(f"Sequential: cannot append a {type(module).__name__}")
        self._layers[str(len(self._layers))] = module
        self._plan = None
        return self

    def __getitem__(self, i):
        layers = list(self._layers.values())
        if isinstance(i, slice):
            return Sequential(*layers[i])
        return layers[i]

    def __len__(self):
        return len(self._layers)

    def __iter__(self):
        return iter(self._layers.values())


def _fusion_plan(layers):
    """(module, relu, own) per step of a forward: relu is the ReLU after a Linear that runs
    fused with it, else None, and own the two modules' instance dicts. Exact types with their
    own forward only, so a subclass or an instance given another forward is never bypassed;
    the forward checks the same again on every call, so a forward assigned after the plan
    was made is not either."""
    def plain(m, cls):
        return type(m) is cls and "forward" not in vars(m)

    plan, i = [], 0
    while i < len(layers):
        m = layers[i]
        fused = plain(m, Linear) and i + 1 < len(layers) and plain(layers[i + 1], ReLU)
        plan.append((m, layers[i + 1], (vars(m), vars(layers[i + 1]))) if fused
                    else (m, None, None))
        i += 2 if fused else 1
    return tuple(plan)


class ReLU(Module):
    """max(x, 0)."""

    def forward(self, x):
        return F.relu(x)


class Tanh(Module):
    """tanh(x)."""

    def forward(self, x):
        return F.tanh(x)


class Sigmoid(Module):
    """1 / (1 + exp(-x))."""

    def forward(self, x):
        return F.sigmoid(x)


class Dropout(Module):
    """Inverted dropout: in training zero each element with probability p and scale the kept
    ones by 1/(1-p); in eval the identity."""

    def __init__(self, p=0.5):
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"Dropout: probability p must be in [0, 1), got {p}")
        self.p = p

    def forward(self, x):
        return F.dropout(x, self.p, self.training)

    def extra_repr(self):
        return f"p={self.p}"


class BatchNorm1d(Module):
    """Batch normalisation of (N, C) inputs over the batch (Ioffe & Szegedy 2015).

    Training: y = (x - mean_B) / sqrt(var_B + eps) * weight + bias with the batch mean and the
    biased batch variance; the running statistics move by `momentum` towards the batch mean and
    the UNBIASED batch variance (PyTorch). Eval: the running statistics replace the batch ones.
    momentum=None averages all batches seen so far. Written with differentiable ops only, so it
    is differentiable to every order.
    """

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True,
                 track_running_stats=True, dtype=None, device=None):
        super().__init__()
        self.num_features = num_features
        self.eps = eps
        self.momentum = momentum
        self.affine = affine
        self.track_running_stats = track_running_stats
        if affine:
            self.weight = nninit.ones_(_param((num_features,), dtype, device))
            self.bias = _param((num_features,), dtype, device)
        else:
            self.weight = self.bias = None
        if track_running_stats:
            xp = backend.get_xp(device)
            dt = backend.DEFAULT_DTYPE if dtype is None else dtype
            self.register_buffer("running_mean", Tensor._wrap(xp.zeros(num_features, dtype=dt)))
            self.register_buffer("running_var", Tensor._wrap(xp.ones(num_features, dtype=dt)))
            self.register_buffer("num_batches_tracked",
                                 Tensor._wrap(xp.zeros((), dtype=backend.np.int64)))
        else:
            self.running_mean = self.running_var = self.num_batches_tracked = None

    def forward(self, x):
        if not isinstance(x, Tensor):
            x = Tensor(x)
        if x.ndim != 2 or x.shape[1] != self.num_features:
            raise ValueError(f"BatchNorm1d: expected input of shape (N, {self.num_features}), "
                             f"got {tuple(x.shape)}")
        use_batch = self.training or not self.track_running_stats
        if use_batch:
            n = x.shape[0]
            if n < 2 and self.training:
                raise ValueError(f"BatchNorm1d: training needs more than 1 sample per channel, "
                                 f"got input of shape {tuple(x.shape)}")
            mean = x.mean(axis=0, keepdims=True)
            xc = x - mean
            var = (xc * xc).mean(axis=0, keepdims=True)     # biased, as used for normalising
            y = xc / (var + self.eps).sqrt()
            if self.training and self.track_running_stats:
                self._update_running(mean.data[0], var.data[0], n)
        else:
            xp = backend.xp_of(self.running_var.data)
            inv_std = 1.0 / xp.sqrt(self.running_var.data + self.eps)
            y = (x - Tensor._wrap(self.running_mean.data)) * Tensor._wrap(inv_std)
        if self.affine:
            y = y * self.weight + self.bias
        return y

    def _update_running(self, mean, var, n):
        with no_grad():
            self.num_batches_tracked.data[...] += 1
            m = self.momentum
            if m is None:                       # cumulative average of every batch so far
                m = 1.0 / float(self.num_batches_tracked.data)
            unbiased = var * (n / (n - 1))
            rm, rv = self.running_mean.data, self.running_var.data
            rm[...] = (1 - m) * rm + m * mean
            rv[...] = (1 - m) * rv + m * unbiased

    def extra_repr(self):
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, "
                f"affine={self.affine}, track_running_stats={self.track_running_stats}")


_LINEAR_FORWARD, _RELU_FORWARD = Linear.forward, ReLU.forward
_ACTIVATIONS = {"relu": ReLU, "tanh": Tanh, "sigmoid": Sigmoid}


class MLP(Sequential):
    """A multilayer perceptron: Linear(sizes[i], sizes[i+1]) layers with, after every layer but
    the last, [BatchNorm1d], the activation and [Dropout].

    `init` (a function like nn.init.orthogonal_, or its name without the underscore) is applied
    to every weight; `bias_init` (a function or a number) to every bias. None keeps the
    Linear default.
    """

    def __init__(self, sizes, activation="relu", dropout=0.0, batchnorm=False, init=None,
                 bias_init=None, dtype=None, device=None):
        sizes = list(sizes)
        if len(sizes) < 2:
            raise ValueError(f"MLP: sizes needs at least an input and an output size, got {sizes}")
        if activation not in _ACTIVATIONS:
            raise ValueError(f"MLP: activation must be one of {sorted(_ACTIVATIONS)}, "
                             f"got {activation!r}")
        winit = _resolve_init(init)
        binit = bias_init
        if binit is not None and not callable(binit):
            value = float(bias_init)

            def binit(b):
                return nninit.constant_(b, value)
        layers = []
        for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
            lin = Linear(a, b, dtype=dtype, device=device)
            if winit is not None:
                winit(lin.weight)
            if binit is not None:
                binit(lin.bias)
            layers.append(lin)
            if i < len(sizes) - 2:
                if batchnorm:
                    layers.append(BatchNorm1d(b, dtype=dtype, device=device))
                layers.append(_ACTIVATIONS[activation]())
                if dropout:
                    layers.append(Dropout(dropout))
        super().__init__(*layers)
        self.sizes = sizes


def _resolve_init(spec):
    """An init function from a function or a name such as 'orthogonal' or 'xavier_uniform_'."""
    if spec is None or callable(spec):
        return spec
    name = spec if spec.endswith("_") else spec + "_"
    fn = getattr(nninit, name, None)
    if fn is None or name.startswith("_"):
        raise ValueError(f"MLP: unknown init {spec!r}; pass a function or the name of one in "
                         "nn.init, e.g. 'orthogonal' or 'kaiming_uniform'")
    return fn
