"""PyTorch's torch.nn.utils names, as aliases of their homes: gradient clipping lives with the
optimizers (optim.clip), flat parameter vectors with autograd."""
from ..autograd import parameters_to_vector, vector_to_parameters

__all__ = ["clip_grad_norm_", "clip_grad_value_", "parameters_to_vector", "vector_to_parameters"]


def __getattr__(name):
    # optim sits above nn in the layering, so its functions are looked up on first use
    if name in ("clip_grad_norm_", "clip_grad_value_"):
        from .. import optim
        return getattr(optim, name)
    raise AttributeError(f"module 'tinygrad_opt.nn.utils' has no attribute {name!r}")
