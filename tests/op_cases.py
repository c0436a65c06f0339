"""The op table: one row per op and broadcasting case.

Each row names the op, how to call it on Tensors, a NumPy reference, the input shapes,
a safe input domain and whether its second derivative is zero almost everywhere.
tests/test_ops.py runs values, gradcheck, gradgradcheck and "fast backward == graph
backward" on every row; docs/gen_ops.py turns the table into docs/ops.md.
"""
from dataclasses import dataclass, field

import numpy as np

import tinygrad_opt as tg
from tinygrad_opt import ops
from tinygrad_opt.nn import functional as F


@dataclass
class OpCase:
    name: str
    fn: object                      # Tensors -> Tensor
    ref: object                     # arrays -> array
    shapes: list
    domain: tuple = (-2.0, 2.0)     # inputs drawn uniformly from here ...
    away_from: list = field(default_factory=list)   # ... and at least 0.05 away from these kinks
    zero_second: bool = False       # second derivative zero almost everywhere
    note: str = ""
    distinct: bool = False          # inputs should have no ties (max/min)

    @property
    def id(self):
        return f"{self.name}-" + "x".join(str(s).replace(" ", "") for s in self.shapes)


def sample(case, rng, dtype=np.float64):
    """Inputs for a case: uniform in its domain, away from kinks, distinct if asked."""
    arrays = []
    for shape in case.shapes:
        lo, hi = case.domain
        a = rng.uniform(lo, hi, size=shape)
        for k in case.away_from:
            near = np.abs(a - k) < 0.05
            a = np.where(near, a + np.where(a >= k, 0.1, -0.1), a)
        if case.distinct:
            a = a + np.arange(a.size).reshape(shape) * 1e-2 if a.size else a
        arrays.append(a.astype(dtype))
    return arrays


def _ref_log_softmax(a):
    s = a - a.max(-1, keepdims=True)
    return s - np.log(np.exp(s).sum(-1, keepdims=True))


B = [((3, 1, 4), (5, 4)), ((), (2, 3)), ((2, 3), ()), ((4,), (3, 4)), ((2, 3), (2, 3))]
IDX = np.array([2, 0, 2, 1])
TARGETS = np.array([0, 2, 1, 2])
CE_W = np.array([0.5, 2.0, 1.5])
BCE_T = np.array([[0.0, 1.0, 1.0], [1.0, 0.0, 0.5], [0.0, 0.0, 1.0], [1.0, 1.0, 0.0]])

CASES = []
for sa, sb in B:
    CASES += [
        OpCase("add", lambda a, b: a + b, np.add, [sa, sb]),
        OpCase("sub", lambda a, b: a - b, np.subtract, [sa, sb]),
        OpCase("mul", lambda a, b: a * b, np.multiply, [sa, sb]),
        OpCase("div", lambda a, b: a / b, np.divide, [sa, sb], domain=(0.5, 2.0)),
        OpCase("pow", lambda a, b: a ** b, np.power, [sa, sb], domain=(0.5, 2.0)),
        OpCase("maximum", lambda a, b: a.maximum(b), np.maximum, [sa, sb], zero_second=True,
               note="gradient split evenly at ties"),
    ]
CASES += [
    OpCase("minimum", lambda a, b: a.minimum(b), np.minimum, [(3, 4), (4,)], zero_second=True),
    OpCase("pow_const", lambda a: a ** 3, lambda a: a ** 3, [(3, 4)]),
    OpCase("pow_half", lambda a: a ** 0.5, np.sqrt, [(3, 4)], domain=(0.5, 2.0)),
    OpCase("square", lambda a: a ** 2, np.square, [(3, 4)]),
    OpCase("rpow", lambda a: 2.0 ** a, lambda a: 2.0 ** a, [(3, 4)]),
    OpCase("radd_scalar", lambda a: 1.5 + a, lambda a: 1.5 + a, [(3,)]),
    OpCase("rsub_scalar", lambda a: 1.5 - a, lambda a: 1.5 - a, [(3,)]),
    OpCase("rdiv_scalar", lambda a: 1.5 / a, lambda a: 1.5 / a, [(3,)], domain=(0.5, 2.0)),
    OpCase("neg", lambda a: -a, np.negative, [(2, 3)]),
    OpCase("exp", lambda a: a.exp(), np.exp, [(2, 3)]),
    OpCase("log", lambda a: a.log(), np.log, [(2, 3)], domain=(0.2, 3.0)),
    OpCase("sqrt", lambda a: a.sqrt(), np.sqrt, [(2, 3)], domain=(0.2, 3.0)),
    OpCase("tanh", lambda a: a.tanh(), np.tanh, [(2, 3)]),
    OpCase("sigmoid", lambda a: a.sigmoid(), lambda a: 1 / (1 + np.exp(-a)), [(2, 3)]),
    OpCase("relu", lambda a: a.relu(), lambda a: np.maximum(a, 0), [(3, 4)], away_from=[0.0],
           zero_second=True, note="kink at 0: gradient 0 there"),
    OpCase("abs", lambda a: a.abs(), np.abs, [(3, 4)], away_from=[0.0], zero_second=True,
           note="kink at 0: gradient 0 there"),
    OpCase("sin", lambda a: a.sin(), np.sin, [(2, 3)], domain=(-4.0, 4.0)),
    OpCase("cos", lambda a: a.cos(), np.cos, [(2, 3)], domain=(-4.0, 4.0)),
    OpCase("log1p", lambda a: a.log1p(), np.log1p, [(2, 3)], domain=(-0.8, 3.0)),
    OpCase("expm1", lambda a: a.expm1(), np.expm1, [(2, 3)]),
    OpCase("var", lambda a: a.var(), lambda a: a.var(ddof=1), [(3, 4)], note="Bessel-corrected, as PyTorch"),
    OpCase("var_dim", lambda a: a.var(dim=1, keepdim=True), lambda a: a.var(axis=1, ddof=1, keepdims=True),
           [(3, 4)], note="dim=/keepdim= are aliases of axis/keepdims"),
    OpCase("std", lambda a: a.std(axis=0, correction=0), lambda a: a.std(axis=0), [(3, 4)]),
    OpCase("norm", lambda a: a.norm(), np.linalg.norm, [(3, 4)], note="gradient 0 at the origin"),
    OpCase("norm_axis", lambda a: a.norm(axis=1), lambda a: np.linalg.norm(a, axis=1), [(3, 4)]),
    OpCase("norm_1", lambda a: a.norm(p=1, dim=0), lambda a: np.abs(a).sum(0), [(3, 4)], away_from=[0.0],
           zero_second=True),
    OpCase("norm_inf", lambda a: a.norm(p=np.inf), lambda a: np.abs(a).max(), [(3, 4)], away_from=[0.0],
           zero_second=True, distinct=True),
    OpCase("norm_3", lambda a: a.norm(p=3, axis=-1), lambda a: (np.abs(a) ** 3).sum(-1) ** (1 / 3), [(3, 4)],
           away_from=[0.0]),
    OpCase("sum_dim", lambda a: a.sum(dim=(0, 2), keepdim=True), lambda a: a.sum(axis=(0, 2), keepdims=True),
           [(3, 4, 2)]),
    OpCase("max_dim", lambda a: a.max(dim=1).values, lambda a: a.max(axis=1), [(3, 4)], zero_second=True,
           distinct=True, note="with dim= max returns (values, indices), as in PyTorch"),
    OpCase("clip", lambda a: a.clip(-0.5, 0.7), lambda a: np.clip(a, -0.5, 0.7), [(3, 4)],
           away_from=[-0.5, 0.7], zero_second=True),
    OpCase("sum", lambda a: a.sum(), np.sum, [(3, 4)]),
    OpCase("sum_axis", lambda a: a.sum(axis=1), lambda a: a.sum(axis=1), [(3, 4, 2)]),
    OpCase("sum_keepdims", lambda a: a.sum(axis=(0, 2), keepdims=True),
           lambda a: a.sum(axis=(0, 2), keepdims=True), [(3, 4, 2)]),
    OpCase("mean", lambda a: a.mean(), np.mean, [(3, 4)]),
    OpCase("mean_axis", lambda a: a.mean(axis=-1), lambda a: a.mean(axis=-1), [(3, 4)]),
    OpCase("mean_keepdims", lambda a: a.mean(axis=0, keepdims=True),
           lambda a: a.mean(axis=0, keepdims=True), [(3, 4)]),
    OpCase("max", lambda a: a.max(), np.max, [(3, 4)], zero_second=True, distinct=True),
    OpCase("max_axis", lambda a: a.max(axis=1), lambda a: a.max(axis=1), [(3, 4)],
           zero_second=True, distinct=True, note="gradient split evenly among tied maxima"),
    OpCase("max_keepdims", lambda a: a.max(axis=0, keepdims=True),
           lambda a: a.max(axis=0, keepdims=True), [(3, 4)], zero_second=True, distinct=True),
    OpCase("min_axis", lambda a: a.min(axis=0), lambda a: a.min(axis=0), [(3, 4)],
           zero_second=True, distinct=True),
    OpCase("reshape", lambda a: a.reshape(4, 3), lambda a: a.reshape(4, 3), [(3, 4)]),
    OpCase("transpose", lambda a: a.transpose(), lambda a: a.transpose(), [(2, 3, 4)]),
    OpCase("transpose_axes", lambda a: a.transpose(1, 2, 0), lambda a: a.transpose(1, 2, 0), [(2, 3, 4)]),
    OpCase("T", lambda a: a.T, lambda a: a.T, [(3, 4)]),
    OpCase("matmul", lambda a, b: a @ b, np.matmul, [(3, 4), (4, 2)]),
    OpCase("matmul_batched", lambda a, b: a @ b, np.matmul, [(2, 3, 4), (4, 2)]),
    OpCase("matmul_bcast", lambda a, b: a @ b, np.matmul, [(2, 1, 3, 4), (5, 4, 2)]),
    OpCase("matmul_vec", lambda a, b: a @ b, np.matmul, [(3, 4), (4,)]),
    OpCase("vec_matmul", lambda a, b: a @ b, np.matmul, [(4,), (4, 2)]),
    OpCase("dot", lambda a, b: a @ b, np.matmul, [(4,), (4,)]),
    OpCase("linear", lambda x, W, b: ops.linear(x, W, b), lambda x, W, b: x @ W.T + b,
           [(5, 4), (3, 4), (3,)]),
    OpCase("linear_nd", lambda x, W: ops.linear(x, W), lambda x, W: x @ W.T, [(2, 5, 4), (3, 4)]),
    OpCase("linear_relu", lambda x, W, b: ops.linear_relu(x, W, b),
           lambda x, W, b: np.maximum(x @ W.T + b, 0), [(5, 4), (3, 4), (3,)],
           note="nn.Sequential's fused Linear, ReLU pair"),
    OpCase("linear_relu_nd", lambda x, W: ops.linear_relu(x, W),
           lambda x, W: np.maximum(x @ W.T, 0), [(2, 5, 4), (3, 4)]),
    OpCase("getitem_basic", lambda a: a[1:, ::2], lambda a: a[1:, ::2], [(3, 4)]),
    OpCase("getitem_int", lambda a: a[1], lambda a: a[1], [(3, 4)]),
    OpCase("getitem_array", lambda a: a[IDX], lambda a: a[IDX], [(3, 4)],
           note="repeated indices add up in the gradient"),
    OpCase("getitem_pairs", lambda a: a[np.arange(4), np.array([0, 2, 1, 2])],
           lambda a: a[np.arange(4), np.array([0, 2, 1, 2])], [(4, 3)]),
    OpCase("concatenate", lambda a, b: tg.concatenate([a, b], axis=1),
           lambda a, b: np.concatenate([a, b], axis=1), [(2, 3), (2, 2)]),
    OpCase("stack", lambda a, b: tg.stack([a, b], axis=1), lambda a, b: np.stack([a, b], axis=1),
           [(2, 3), (2, 3)]),
    OpCase("where", lambda a, b: tg.where(a > 0, a, b), lambda a, b: np.where(a > 0, a, b),
           [(3, 4), (4,)], away_from=[0.0]),
    OpCase("softplus", lambda a: ops.softplus(a), lambda a: np.logaddexp(0, a), [(3, 4)], domain=(-30.0, 30.0)),
    OpCase("log_softmax", lambda a: ops.log_softmax(a, axis=-1),
           lambda a: a - a.max(-1, keepdims=True) - np.log(np.exp(a - a.max(-1, keepdims=True)).sum(-1, keepdims=True)),
           [(3, 5)]),
    OpCase("softmax", lambda a: ops.softmax(a, axis=-1),
           lambda a: np.exp(_ref_log_softmax(a)), [(3, 4)]),
    OpCase("softmax_axis0", lambda a: ops.softmax(a, axis=0),
           lambda a: np.exp(_ref_log_softmax(a.T)).T, [(3, 4)]),
    OpCase("log_softmax_axis0", lambda a: ops.log_softmax(a, axis=0),
           lambda a: a - np.log(np.exp(a).sum(0, keepdims=True)), [(3, 5)]),
    OpCase("softmax_cross_entropy", lambda a, t: ops.softmax_cross_entropy(a, t, denom=4.0),
           lambda a, t: -(t * _ref_log_softmax(a)).sum() / 4.0, [(4, 3), (4, 3)],
           note="T (target weights) differentiable too"),
    OpCase("softmax_cross_entropy_rows", lambda a, t: ops.softmax_cross_entropy(a, t, rows=True),
           lambda a, t: -(t * _ref_log_softmax(a)).sum(-1), [(4, 3), (4, 3)]),
    OpCase("logsumexp", lambda a: ops.logsumexp(a, axis=1), lambda a: np.log(np.exp(a).sum(1)), [(3, 5)]),
    OpCase("astype", lambda a: (a.astype(np.float32) * 2).astype(np.float64), lambda a: a * 2, [(3,)],
           note="float32 round trip: checked with loose tolerance"),
    # PyTorch's shape names, composites of reshape / transpose / Cast
    OpCase("view", lambda a: a.view(2, -1), lambda a: a.reshape(2, -1), [(3, 4)]),
    OpCase("unsqueeze", lambda a: a.unsqueeze(-2), lambda a: np.expand_dims(a, -2), [(3, 4)]),
    OpCase("squeeze", lambda a: a.squeeze(), lambda a: a.squeeze(), [(3, 1, 4, 1)]),
    OpCase("squeeze_dim", lambda a: a.squeeze(1) * a.squeeze(0).sum(), lambda a: a.squeeze(1) * a.sum(),
           [(3, 1)]),
    OpCase("flatten_dims", lambda a: a.flatten(1, 2), lambda a: a.reshape(2, 12, 5), [(2, 3, 4, 5)]),
    OpCase("clone", lambda a: a.clone() * a, lambda a: a * a, [(2, 3)]),
    OpCase("t", lambda a: a.t() @ a, lambda a: a.T @ a, [(3, 2)]),
    # nn.functional composites are gradchecked like any op
    OpCase("F.softmax", lambda a: F.softmax(a, axis=-1),
           lambda a: np.exp(a) / np.exp(a).sum(-1, keepdims=True), [(3, 5)]),
    OpCase("class_cross_entropy_grad",
           lambda a: ops.ClassCrossEntropyGrad.apply(a, TARGETS, np.array(0.25)),
           lambda a: (np.exp(_ref_log_softmax(a)) - np.eye(3)[TARGETS]) * 0.25, [(4, 3)],
           note="cross-entropy's gradient, one node under hvp"),
    OpCase("F.cross_entropy", lambda a: F.cross_entropy(a, TARGETS),
           lambda a: -np.mean((a - np.log(np.exp(a).sum(-1, keepdims=True)))[np.arange(4), TARGETS]),
           [(4, 3)]),
    OpCase("F.cross_entropy_weighted",
           lambda a: F.cross_entropy(a, TARGETS, weight=CE_W, label_smoothing=0.1),
           lambda a: -((0.9 * np.eye(3)[TARGETS] + 0.1 / 3) * CE_W * _ref_log_softmax(a)).sum()
           / CE_W[TARGETS].sum(), [(4, 3)], note="class weights and label smoothing"),
    OpCase("F.cross_entropy_smoothed",
           lambda a: F.cross_entropy(a, TARGETS, label_smoothing=0.2, reduction="none"),
           lambda a: -((0.8 * np.eye(3)[TARGETS] + 0.2 / 3) * _ref_log_softmax(a)).sum(-1), [(4, 3)],
           note="label smoothing, one loss per row"),
    OpCase("F.mse_loss", lambda a, b: F.mse_loss(a, b), lambda a, b: np.mean((a - b) ** 2), [(4, 3), (4, 3)]),
    OpCase("F.bce_with_logits", lambda a: F.binary_cross_entropy_with_logits(a, BCE_T),
           lambda a: np.mean(np.log1p(np.exp(-a)) + (1 - BCE_T) * a), [(4, 3)]),
]
