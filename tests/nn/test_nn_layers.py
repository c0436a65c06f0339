"""nn layers: hand-computed values, shapes and errors, BatchNorm statistics, Dropout statistics."""
import math

import numpy as np
import pytest

import tinygrad_opt as tg
from tinygrad_opt import Tensor, gradcheck, gradgradcheck, nn
from tinygrad_opt.nn import init

rng = np.random.default_rng(0)


def f64(a):
    return Tensor(np.asarray(a, dtype=np.float64))


# ---------------------------------------------------------------- Linear
def test_linear_hand_values():
    lin = nn.Linear(2, 3)
    lin.weight.data[...] = [[1, 2], [0, -1], [3, 0.5]]
    lin.bias.data[...] = [0.5, 0, -1]
    y = lin(Tensor([[1.0, 1.0], [2.0, -2.0]]))
    np.testing.assert_allclose(y.numpy(), [[3.5, -1, 2.5], [-1.5, 2, 4]])
    assert lin.weight.shape == (3, 2) and lin.bias.shape == (3,)
    assert lin.weight.requires_grad and lin.weight.dtype == np.float32


def test_linear_default_init_bounds():
    tg.manual_seed(0)
    lin = nn.Linear(400, 300)
    b = 1 / math.sqrt(400)
    w = lin.weight.numpy()
    assert np.abs(w).max() <= b and np.abs(w).max() > 0.99 * b
    assert abs(w.var() - b * b / 3) < 5 * (b * b / 3) * math.sqrt(2 / w.size)
    assert np.abs(lin.bias.numpy()).max() <= b and np.abs(lin.bias.numpy()).std() > 0


def test_linear_backward_and_no_bias():
    x = rng.standard_normal((5, 3))
    lin = nn.Linear(3, 2, bias=False, dtype=np.float64)
    assert lin.bias is None and [n for n, _ in lin.named_parameters()] == ["weight"]
    lin(f64(x)).sum().backward()
    np.testing.assert_allclose(lin.weight.grad.numpy(), np.ones((2, 5)) @ x, rtol=1e-12)


def test_linear_gradcheck_float64():
    lin = nn.Linear(3, 2, dtype=np.float64)

    def f(x, w, b):
        lin.weight, lin.bias = w, b
        return lin(x).tanh()

    inputs = (Tensor(rng.standard_normal((4, 3)), requires_grad=True),
              Tensor(rng.standard_normal((2, 3)), requires_grad=True),
              Tensor(rng.standard_normal(2), requires_grad=True))
    assert gradcheck(f, inputs) and gradgradcheck(f, inputs)


def test_linear_leading_dims():
    lin = nn.Linear(3, 2, dtype=np.float64)
    W, b = lin.weight.numpy(), lin.bias.numpy()
    x = rng.standard_normal((2, 4, 3))
    np.testing.assert_allclose(lin(f64(x)).numpy(), x @ W.T + b, rtol=1e-12)
    v = rng.standard_normal(3)
    np.testing.assert_allclose(lin(f64(v)).numpy(), W @ v + b, rtol=1e-12)


def test_linear_shape_error():
    lin = nn.Linear(3, 2)
    with pytest.raises(ValueError, match=r"Linear: expected input with last dimension "
                                         r"in_features=3, got input of shape \(4, 5\)"):
        lin(Tensor(np.zeros((4, 5), dtype=np.float32)))


# ---------------------------------------------------------------- Sequential and activations
def test_activation_modules():
    x = Tensor([-2.0, 0.5, 3.0])
    np.testing.assert_allclose(nn.ReLU()(x).numpy(), [0, 0.5, 3])
    np.testing.assert_allclose(nn.Tanh()(x).numpy(), np.tanh([-2.0, 0.5, 3.0]), rtol=1e-6)
    np.testing.assert_allclose(nn.Sigmoid()(x).numpy(), 1 / (1 + np.exp([2.0, -0.5, -3.0])),
                               rtol=1e-6)


def test_sequential():
    a, b = nn.Linear(2, 2), nn.Linear(2, 1)
    a.weight.data[...] = [[1, -1], [2, 0]]
    a.bias.data[...] = [0, -5]
    b.weight.data[...] = [[1, 1]]
    b.bias.data[...] = [0.25]
    model = nn.Sequential(a, nn.ReLU(), b)
    # x=(3,1): a -> (2, 1) -> relu (2, 1) -> b -> 3.25
    assert model(Tensor([[3.0, 1.0]])).numpy().tolist() == [[3.25]]
    assert len(model) == 3 and model[0] is a and model[-1] is b
    assert [n for n, _ in model.named_parameters()] == ["0.weight", "0.bias", "2.weight", "2.bias"]
    assert isinstance(model[1:], nn.Sequential) and len(model[1:]) == 2
    named = nn.Sequential({"hidden": nn.Linear(2, 3), "act": nn.Tanh()})
    assert [n for n, _ in named.named_parameters()] == ["hidden.weight", "hidden.bias"]
    with pytest.raises(TypeError, match="Sequential: item 0 is a int"):
        nn.Sequential(3)


def _node_types(out):
    """Op names from the output back along the first Tensor input of each node."""
    names, n = [], out._node
    while n is not None:
        names.append(type(n).__name__)
        n = n.parents[0]._node
    return names


def test_sequential_fuses_linear_relu_pairs_with_identical_results():
    rng = np.random.default_rng(0)
    layers = [nn.Linear(3, 4, dtype=np.float64), nn.ReLU(), nn.Linear(4, 4, dtype=np.float64),
              nn.ReLU(), nn.Linear(4, 2, dtype=np.float64)]
    model = nn.Sequential(*layers)
    x = Tensor(rng.standard_normal((5, 3)))
    out = model(x)
    assert _node_types(out) == ["Linear", "LinearReLU", "LinearReLU"]
    assert (out.numpy() != 0).all()

    h = x                                       # the same layers one by one: .relu() of a
    for m in layers:                            # Linear's output records the same fused node
        h = m(h)
    assert _node_types(h) == ["Linear", "LinearReLU", "LinearReLU"]
    np.testing.assert_array_equal(out.numpy(), h.numpy())
    h = x                                       # and with ReLU's own op: two nodes a pair
    for m in layers:
        h = tg.ops.ReLU.apply(h) if isinstance(m, nn.ReLU) else m(h)
    assert _node_types(h) == ["Linear", "ReLU", "Linear", "ReLU", "Linear"]
    np.testing.assert_array_equal(out.numpy(), h.numpy())
    (out * out).sum().backward()
    fused = [p.grad.numpy().copy() for p in model.parameters()]
    model.zero_grad()
    (h * h).sum().backward()
    for a, p in zip(fused, model.parameters()):
        np.testing.assert_array_equal(a, p.grad.numpy())
    assert any((p.grad.numpy() == 0).any() for p in model.parameters())  # the mask did work


def test_sequential_fuses_only_exact_linear_then_relu():
    class Leaky(nn.ReLU):
        def forward(self, x):
            return x.maximum(x * 0.1)

    x = Tensor(np.ones((2, 3), dtype=np.float32), requires_grad=True)
    assert _node_types(nn.Sequential(nn.Linear(3, 2), Leaky())(x))[0] == "Maximum"
    assert _node_types(nn.Sequential(nn.Linear(3, 2), nn.Tanh())(x)) == ["Tanh", "Linear"]
    assert _node_types(nn.Sequential(nn.ReLU(), nn.Linear(3, 2))(x)) == ["Linear", "ReLU"]
    patched = nn.ReLU()
    patched.forward = lambda h: h.tanh()
    assert _node_types(nn.Sequential(nn.Linear(3, 2), patched)(x)) == ["Tanh", "Linear"]
    model = nn.Sequential(nn.Linear(3, 2))
    assert _node_types(model(x)) == ["Linear"]
    model.append(nn.ReLU())                     # appending re-plans the forward
    assert _node_types(model(x)) == ["LinearReLU"]
    with pytest.raises(ValueError, match="Linear: expected input with last dimension in_features=3"):
        model(Tensor(np.ones((2, 4))))


# ---------------------------------------------------------------- Dropout
def test_dropout_statistics():
    tg.manual_seed(0)
    p, n = 0.3, 200_000
    drop = nn.Dropout(p)
    y = drop(Tensor(np.ones(n, dtype=np.float32))).numpy()
    zero = (y == 0).mean()
    assert abs(zero - p) < 5 * math.sqrt(p * (1 - p) / n)
    assert set(np.unique(y)) == {0.0, np.float32(1 / (1 - p))}
    # E[y] = 1; each element has variance p / (1 - p)
    assert abs(y.mean() - 1.0) < 5 * math.sqrt(p / (1 - p) / n)


def test_dropout_eval_identity_and_gradient():
    drop = nn.Dropout(0.5)
    x = Tensor(rng.standard_normal((4, 6)), requires_grad=True)
    drop.eval()
    np.testing.assert_array_equal(drop(x).numpy(), x.numpy())
    drop.train()
    tg.manual_seed(1)
    y = drop(x)
    y.sum().backward()
    kept = y.numpy() != 0
    np.testing.assert_allclose(x.grad.numpy(), kept * 2.0)
    np.testing.assert_allclose(y.numpy()[kept], 2 * x.numpy()[kept])


def test_dropout_bad_p():
    for p in (-0.5, 1.0, 2):
        with pytest.raises(ValueError, match=r"Dropout: probability p must be in \[0, 1\)"):
            nn.Dropout(p)
    assert nn.Dropout(0.0)(Tensor([1.0, 2.0])).numpy().tolist() == [1.0, 2.0]


# ---------------------------------------------------------------- BatchNorm1d
def test_batchnorm_train_step_and_running_stats():
    x = np.array([[1.0, 2.0], [3.0, 6.0], [5.0, 1.0], [7.0, 3.0]])
    bn = nn.BatchNorm1d(2, dtype=np.float64)
    bn.weight.data[...] = [2.0, 0.5]
    bn.bias.data[...] = [0.0, 1.0]
    y = bn(f64(x)).numpy()
    mean = x.mean(axis=0)                  # (4, 3)
    var_b = x.var(axis=0)                  # biased: (5, 3.5)
    var_u = x.var(axis=0, ddof=1)          # unbiased: (20/3, 14/3)
    ref = (x - mean) / np.sqrt(var_b + 1e-5) * [2.0, 0.5] + [0.0, 1.0]
    np.testing.assert_allclose(y, ref, rtol=1e-12)
    np.testing.assert_allclose(bn.running_mean.numpy(), 0.1 * mean, rtol=1e-12)
    np.testing.assert_allclose(bn.running_var.numpy(), 0.9 + 0.1 * var_u, rtol=1e-12)
    assert int(bn.num_batches_tracked.numpy()) == 1
    np.testing.assert_allclose(bn.running_var.numpy(), [0.9 + 2 / 3, 0.9 + 1.4 / 3], rtol=1e-12)


def test_batchnorm_eval_uses_running_stats():
    bn = nn.BatchNorm1d(3, dtype=np.float64)
    bn.running_mean.data[...] = [1.0, -1.0, 0.0]
    bn.running_var.data[...] = [4.0, 1.0, 0.25]
    bn.weight.data[...] = [1.0, 2.0, 3.0]
    bn.bias.data[...] = [0.0, 0.0, 1.0]
    bn.eval()
    x = rng.standard_normal((5, 3))
    ref = (x - [1.0, -1.0, 0.0]) / np.sqrt(np.array([4.0, 1.0, 0.25]) + 1e-5) * [1, 2, 3] + [0, 0, 1]
    np.testing.assert_allclose(bn(f64(x)).numpy(), ref, rtol=1e-12)
    # eval leaves the running statistics alone
    np.testing.assert_array_equal(bn.running_var.numpy(), [4.0, 1.0, 0.25])
    assert int(bn.num_batches_tracked.numpy()) == 0
    bn(f64(x[:1]))                                  # one sample is fine in eval


def test_batchnorm_cumulative_momentum_and_no_tracking():
    bn = nn.BatchNorm1d(2, momentum=None, dtype=np.float64)
    a, b = rng.standard_normal((6, 2)), rng.standard_normal((4, 2))
    bn(f64(a))
    bn(f64(b))
    np.testing.assert_allclose(bn.running_mean.numpy(), (a.mean(0) + b.mean(0)) / 2, rtol=1e-12)
    np.testing.assert_allclose(bn.running_var.numpy(),
                               (a.var(0, ddof=1) + b.var(0, ddof=1)) / 2, rtol=1e-12)
    free = nn.BatchNorm1d(2, affine=False, track_running_stats=False, dtype=np.float64).eval()
    assert list(free.parameters()) == [] and free.state_dict() == {}
    y = free(f64(a)).numpy()
    np.testing.assert_allclose(y, (a - a.mean(0)) / np.sqrt(a.var(0) + 1e-5), rtol=1e-12)


def test_batchnorm_gradcheck_and_gradgradcheck():
    bn = nn.BatchNorm1d(3, dtype=np.float64)

    def f(x, w, b):
        bn.weight, bn.bias = w, b
        return bn(x)

    inputs = (Tensor(rng.standard_normal((5, 3)), requires_grad=True),
              Tensor(rng.uniform(0.5, 2, 3), requires_grad=True),
              Tensor(rng.standard_normal(3), requires_grad=True))
    assert gradcheck(f, inputs) and gradgradcheck(f, inputs)
    bn.eval()
    assert gradcheck(f, inputs) and gradgradcheck(f, inputs)


def test_batchnorm_state_and_errors():
    bn = nn.BatchNorm1d(4)
    assert list(bn.state_dict()) == ["weight", "bias", "running_mean", "running_var",
                                     "num_batches_tracked"]
    assert [n for n, _ in bn.named_parameters()] == ["weight", "bias"]
    with pytest.raises(ValueError, match=r"BatchNorm1d: expected input of shape \(N, 4\), "
                                         r"got \(5, 3\)"):
        bn(Tensor(np.zeros((5, 3), dtype=np.float32)))
    with pytest.raises(ValueError, match="more than 1 sample"):
        bn(Tensor(np.zeros((1, 4), dtype=np.float32)))


# ---------------------------------------------------------------- MLP
def test_mlp_structure_and_values():
    m = nn.MLP([4, 8, 6, 3], activation="tanh", dropout=0.2, batchnorm=True)
    kinds = [type(layer).__name__ for layer in m]
    assert kinds == ["Linear", "BatchNorm1d", "Tanh", "Dropout",
                     "Linear", "BatchNorm1d", "Tanh", "Dropout", "Linear"]
    assert m(Tensor(np.ones((5, 4), dtype=np.float32))).shape == (5, 3)
    plain = nn.MLP([3, 5, 2], activation="sigmoid", dtype=np.float64)
    l0, l1 = plain[0], plain[2]
    x = rng.standard_normal((4, 3))
    h = 1 / (1 + np.exp(-(x @ l0.weight.numpy().T + l0.bias.numpy())))
    np.testing.assert_allclose(plain(f64(x)).numpy(), h @ l1.weight.numpy().T + l1.bias.numpy(),
                               rtol=1e-12)
    assert [n for n, _ in plain.named_parameters()] == ["0.weight", "0.bias", "2.weight", "2.bias"]


def test_mlp_inits():
    tg.manual_seed(0)
    m = nn.MLP([6, 4, 5], init="orthogonal", bias_init=0.1)
    w0 = m[0].weight.numpy()
    np.testing.assert_allclose(w0 @ w0.T, np.eye(4), atol=1e-5)
    assert (m[0].bias.numpy() == np.float32(0.1)).all() and (m[2].bias.numpy() == np.float32(0.1)).all()
    m2 = nn.MLP([6, 4, 5], init=lambda w: init.sparse_(w, 2), bias_init=init.zeros_)
    assert ((m2[0].weight.numpy() != 0).sum(axis=1) == 2).all()
    assert (m2[2].bias.numpy() == 0).all()
    with pytest.raises(ValueError, match="MLP: activation must be one of"):
        nn.MLP([2, 2], activation="gelu")
    with pytest.raises(ValueError, match="MLP: unknown init 'magic'"):
        nn.MLP([2, 2], init="magic")


def test_mlp_trains_on_a_tiny_problem():
    tg.manual_seed(0)
    x = rng.standard_normal((64, 2))
    y = (x[:, 0] * x[:, 1] > 0).astype(np.int64)
    m = nn.MLP([2, 16, 2], activation="tanh", dtype=np.float64)
    import tinygrad_opt.nn.functional as F
    first = None
    for _ in range(300):
        m.zero_grad()
        loss = F.cross_entropy(m(f64(x)), y)
        loss.backward()
        first = loss.item() if first is None else first
        for p in m.parameters():
            p.data -= 0.5 * p.grad.data
    assert loss.item() < 0.5 * first


# ---------------------------------------------------------------- devices
def test_layers_on_device(device):
    lin = nn.Linear(3, 4, device=device)
    bn = nn.BatchNorm1d(4, device=device)
    model = nn.Sequential(lin, bn, nn.ReLU(), nn.Dropout(0.5))
    assert all(p.device == device for p in model.parameters())
    assert all(b.device == device for b in model.buffers())
    x = tg.randn(8, 3, device=device)
    y = model(x)
    assert y.device == device and y.shape == (8, 4)
    y.sum().backward()
    assert all(p.grad.device == device for p in model.parameters())
    assert int(bn.num_batches_tracked.numpy()) == 1
    model.eval()
    y1, y2 = model(x).numpy(), model(x).numpy()
    np.testing.assert_array_equal(y1, y2)               # eval is deterministic
    ref = (lin(x).numpy() - bn.running_mean.numpy()) / np.sqrt(bn.running_var.numpy() + 1e-5)
    np.testing.assert_allclose(y1, np.maximum(ref * bn.weight.numpy() + bn.bias.numpy(), 0),
                               rtol=1e-4, atol=1e-5)


def test_float64_input_into_a_float32_layer_is_an_error_naming_the_fix():
    """sklearn hands out float64: PyTorch raises on the mismatched product, and so do we,
    rather than run the whole model in float64 while its parameters stay float32."""
    from tinygrad_opt.nn import functional as F
    lin = nn.Linear(3, 2)
    x64 = np.ones((4, 3))
    for call in (lambda: lin(Tensor(x64)), lambda: lin(x64),
                 lambda: nn.Sequential(lin, nn.ReLU())(Tensor(x64)),
                 lambda: F.linear(Tensor(x64), lin.weight, lin.bias)):
        with pytest.raises(TypeError, match=r"(?i)linear: input of dtype float64 and weight of "
                                            r"dtype float32.*\.astype\(np\.float32\)"):
            call()
    with pytest.raises(TypeError, match="Linear: input of dtype int64"):
        lin(Tensor(np.ones((4, 3), dtype=np.int64)))
    assert lin(Tensor(x64.astype(np.float32))).dtype == np.float32
    assert lin.double()(Tensor(x64)).dtype == np.float64


def test_sequential_sees_a_forward_assigned_after_the_first_call():
    tg.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    x = Tensor(np.ones((2, 3), dtype=np.float32))
    y0 = model(x).numpy()                      # builds and caches the fusion plan
    model[1].forward = lambda h: h.tanh()      # the ReLU of a fused pair
    W0, b0 = model[0].weight.numpy(), model[0].bias.numpy()
    W2, b2 = model[2].weight.numpy(), model[2].bias.numpy()
    expect = np.tanh(x.numpy() @ W0.T + b0) @ W2.T + b2
    np.testing.assert_allclose(model(x).numpy(), expect, rtol=1e-6)
    del model[1].forward
    np.testing.assert_allclose(model(x).numpy(), y0, rtol=1e-6)
    model[0].forward = lambda h: nn.Linear.forward(model[0], h) * 0.0
    np.testing.assert_allclose(model(x).numpy(), np.broadcast_to(b2, (2, 2)), rtol=1e-6)


def test_sequential_sees_a_class_forward_patched_after_the_first_call(monkeypatch):
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU())
    x = Tensor(np.ones((2, 3), dtype=np.float32))
    model(x)
    monkeypatch.setattr(nn.ReLU, "forward", lambda self, h: h * 0.0 - 1.0)
    np.testing.assert_array_equal(model(x).numpy(), -np.ones((2, 4)))
