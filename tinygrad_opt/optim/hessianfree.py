"""Hessian-free optimization with Gauss-Newton products (Martens 2010, "Deep learning via
Hessian-free optimization"); and `loss_output`, which finds the model output in a loss's graph."""
from .. import ops
from ..tensor import Tensor


def loss_output(loss, name):
    """(output, kind): the model output z that the loss was computed from, read off the graph
    the closure built, and kind 'cross_entropy' or 'mse'.

    Supported: F.cross_entropy(z, y) (any reduction that gives a scalar) and
    F.mse_loss(z, t) (mean or sum). The loss must be the closure's return value itself.
    """
    node = getattr(loss, "_node", None)
    if isinstance(node, (ops.ClassCrossEntropy, ops.SoftmaxCrossEntropy)):
        return node.parents[0], "cross_entropy"
    # mse: [Mul(., 1/n) of] Sum of Mul(d, d) with d = Sub(z, t)
    n = node
    if isinstance(n, ops.Mul) and not any(isinstance(a, Tensor) and a._node is not None
                                          and isinstance(a._node, ops.Mul) for a in n.parents):
        src = [a for a in n.parents if isinstance(a, Tensor) and a._node is not None]
        n = src[0]._node if len(src) == 1 else None
    if isinstance(n, ops.Sum):
        sq = n.parents[0]._node
        if (isinstance(sq, ops.Mul) and sq.parents[0] is sq.parents[1]
                and isinstance(sq.parents[0]._node, ops.Sub)):
            return sq.parents[0]._node.parents[0], "mse"
    op = "a leaf" if node is None else type(node).__name__
    raise ValueError(f"{name}: cannot find the model output in the loss's graph (its last op "
                     f"is {op}); the closure must return F.cross_entropy(output, y) or "
                     "F.mse_loss(output, target) computed from the model output")
