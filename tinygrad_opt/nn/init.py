"""Weight and bias initialisation, in place on a Tensor's data (each returns the Tensor).

Randomness comes from the backend generator of the tensor's device, so `manual_seed` makes
every init reproducible. Nothing here records a graph: only `.data` is written.
Fans follow PyTorch: for a weight of shape (out, in, *kernel), fan_in = in * prod(kernel)
and fan_out = out * prod(kernel).
"""
import math

from .. import backend
from ..tensor import Tensor

_LINEAR_LIKE = ("linear", "identity", "conv1d", "conv2d", "conv3d", "conv_transpose1d",
                "conv_transpose2d", "conv_transpose3d", "sigmoid")


def calculate_gain(nonlinearity, param=None):
    """The factor by which `nonlinearity` shrinks the standard deviation, to be undone at init.

    linear/conv/sigmoid 1, tanh 5/3, relu sqrt(2), leaky_relu sqrt(2 / (1 + slope^2))
    (slope = param, default 0.01), selu 3/4; PyTorch's table.
    """
    if nonlinearity in _LINEAR_LIKE:
        return 1.0
    if nonlinearity == "tanh":
        return 5.0 / 3.0
    if nonlinearity == "relu":
        return math.sqrt(2.0)
    if nonlinearity == "leaky_relu":
        if param is None:
            slope = 0.01
        elif isinstance(param, (int, float)) and not isinstance(param, bool):
            slope = float(param)
        else:
            raise ValueError(f"calculate_gain: negative slope {param!r} is not a number")
        return math.sqrt(2.0 / (1.0 + slope ** 2))
    if nonlinearity == "selu":
        return 3.0 / 4.0
    raise ValueError(f"calculate_gain: unsupported nonlinearity {nonlinearity!r}")


def _calculate_fan_in_and_fan_out(t):
    """(fan_in, fan_out) of a weight of shape (out, in, *kernel)."""
    if t.ndim < 2:
        raise ValueError(f"init: fan in and fan out need a tensor with at least 2 dimensions, "
                         f"got shape {tuple(t.shape)}")
    receptive = math.prod(t.shape[2:])
    return t.shape[1] * receptive, t.shape[0] * receptive


def _fan(t, mode):
    if mode not in ("fan_in", "fan_out"):
        raise ValueError(f"init: mode must be 'fan_in' or 'fan_out', got {mode!r}")
    fan_in, fan_out = _calculate_fan_in_and_fan_out(t)
    return fan_in if mode == "fan_in" else fan_out


def _check(t, fn):
    if not isinstance(t, Tensor):
        raise TypeError(f"{fn}: expected a Tensor, got {type(t).__name__}")
    if not backend.is_floating(t.dtype):
        raise TypeError(f"{fn}: expected a floating tensor, got dtype {t.dtype}")


def _normal(t, std, mean=0.0):
    t.data[...] = backend.random_normal(t.shape, t.dtype, t.device) * std + mean
    return t


def _uniform(t, a, b):
    t.data[...] = backend.random_uniform(t.shape, t.dtype, t.device) * (b - a) + a
    return t


# ---------------------------------------------------------------- plain distributions
def uniform_(t, a=0.0, b=1.0):
    """Fill with samples of U(a, b)."""
    _check(t, "uniform_")
    return _uniform(t, a, b)


def normal_(t, mean=0.0, std=1.0):
    """Fill with samples of N(mean, std^2)."""
    _check(t, "normal_")
    return _normal(t, std, mean)


def constant_(t, val):
    """Fill with the constant `val`."""
    t.data[...] = val
    return t


def zeros_(t):
    """Fill with 0 (the usual bias init: weights already break the symmetry)."""
    return constant_(t, 0)


def ones_(t):
    """Fill with 1 (e.g. a normalisation layer's scale, which starts as the identity)."""
    return constant_(t, 1)


# ---------------------------------------------------------------- variance-preserving inits
def xavier_uniform_(t, gain=1.0):
    """U(-b, b) with b = gain * sqrt(6 / (fan_in + fan_out)).

    Keeps activation and gradient variances balanced through linear-like layers
    (Glorot & Bengio 2010).
    """
    _check(t, "xavier_uniform_")
    fan_in, fan_out = _calculate_fan_in_and_fan_out(t)
    b = gain * math.sqrt(6.0 / (fan_in + fan_out))
    return _uniform(t, -b, b)


def xavier_normal_(t, gain=1.0):
    """N(0, std^2) with std = gain * sqrt(2 / (fan_in + fan_out)) (Glorot & Bengio 2010)."""
    _check(t, "xavier_normal_")
    fan_in, fan_out = _calculate_fan_in_and_fan_out(t)
    return _normal(t, gain * math.sqrt(2.0 / (fan_in + fan_out)))


def kaiming_uniform_(t, a=0, mode="fan_in", nonlinearity="leaky_relu"):
    """U(-b, b) with b = gain * sqrt(3 / fan), gain = calculate_gain(nonlinearity, a).

    Preserves the variance of activations (fan_in) or gradients (fan_out) through ReLU-like
    layers, so deep nets neither explode nor vanish at the start (He et al. 2015).
    """
    _check(t, "kaiming_uniform_")
    fan = _fan(t, mode)
    if fan == 0:
        raise ValueError(f"kaiming_uniform_: {mode} is 0 for shape {tuple(t.shape)}")
    b = calculate_gain(nonlinearity, a) * math.sqrt(3.0 / fan)
    return _uniform(t, -b, b)


def kaiming_normal_(t, a=0, mode="fan_in", nonlinearity="leaky_relu"):
    """N(0, std^2) with std = gain / sqrt(fan) (He et al. 2015)."""
    _check(t, "kaiming_normal_")
    fan = _fan(t, mode)
    if fan == 0:
        raise ValueError(f"kaiming_normal_: {mode} is 0 for shape {tuple(t.shape)}")
    return _normal(t, calculate_gain(nonlinearity, a) / math.sqrt(fan))


def orthogonal_(t, gain=1.0):
    """A (semi-)orthogonal matrix times `gain`: rows orthonormal if wide, columns if tall.

    All singular values are 1, so a linear layer preserves norms exactly and deep linear nets
    train as fast as shallow ones (Saxe et al. 2013). Shapes beyond 2-D are flattened to
    (shape[0], prod(shape[1:])).
    """
    _check(t, "orthogonal_")
    if t.ndim < 2:
        raise ValueError(f"orthogonal_: needs at least 2 dimensions, got shape {tuple(t.shape)}")
    xp = backend.xp_of(t.data)
    rows = t.shape[0]
    cols = t.size // rows
    a = backend.random_normal((rows, cols), backend.np.float64, t.device)
    if rows < cols:
        a = a.T
    q, r = xp.linalg.qr(a)
    # QR is unique only up to the signs of R's diagonal; fixing them makes Q Haar-distributed.
    q = q * xp.sign(xp.diagonal(r))
    if rows < cols:
        q = q.T
    t.data[...] = (gain * q).reshape(t.shape).astype(t.dtype)
    return t


def sparse_(t, k, std=1.0):
    """Each row (unit) of an (out, in) weight gets exactly k nonzero entries from N(0, std^2).

    With few inputs per unit the scale of a unit's input does not shrink with layer width, and
    units differ from one another from the start (Martens 2010, who used k = 15).
    """
    _check(t, "sparse_")
    if t.ndim != 2:
        raise ValueError(f"sparse_: needs a 2-D (out, in) tensor, got shape {tuple(t.shape)}")
    rows, cols = t.shape
    if not 0 <= k <= cols:
        raise ValueError(f"sparse_: k={k} nonzeros per row is not possible with {cols} "
                         f"inputs (shape {tuple(t.shape)})")
    xp = backend.xp_of(t.data)
    # the first k positions of a random permutation of each row, for all rows at once
    cols_idx = xp.argsort(backend.random_uniform((rows, cols), backend.np.float64, t.device),
                          axis=1)[:, :k]
    values = backend.random_normal((rows, k), t.dtype, t.device) * std
    t.data[...] = 0
    t.data[xp.arange(rows)[:, None], cols_idx] = values
    return t


# ---------------------------------------------------------------- bias heuristics
def class_prior_bias_(bias, class_probs):
    """Set an output bias so that softmax(bias) equals the class priors.

    b = log p - mean(log p); counts are accepted and normalised. The untrained model then
    predicts the base rates, so the first steps are not spent learning them (Lin et al. 2017).
    """
    _check(bias, "class_prior_bias_")
    xp = backend.xp_of(bias.data)
    p = class_probs.data if isinstance(class_probs, Tensor) else class_probs
    p = backend.as_array(p, dtype=backend.np.float64, device=bias.device)
    if p.shape != (bias.size,):
        raise ValueError(f"class_prior_bias_: class_probs of shape {tuple(p.shape)} do not match "
                         f"a bias of {bias.size} elements")
    if bool((p <= 0).any()) or not bool(xp.isfinite(p).all()):
        raise ValueError("class_prior_bias_: every class probability (or count) must be positive "
                         "and finite; a zero prior would need a bias of -inf")
    logp = xp.log(p / p.sum())
    bias.data[...] = (logp - logp.mean()).reshape(bias.shape).astype(bias.dtype)
    return bias


def relu_bias_(bias, value=0.1):
    """Set a small positive bias so ReLU units start active and pass gradient
    (Goodfellow et al. 2016, sec. 6.3.1)."""
    return constant_(bias, value)


def gate_bias_(bias, value=1.0):
    """Set a positive bias so a sigmoid gate starts mostly open, e.g. an LSTM forget gate,
    which lets memory and gradient flow through time from the start (Jozefowicz et al. 2015)."""
    return constant_(bias, value)
