"""Module: parameter discovery, names, modes, zero_grad, state_dict round trips and errors."""
import numpy as np
import pytest

import tinygrad_opt as tg
from tinygrad_opt import Tensor, backend, nn

rng = np.random.default_rng(0)


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, 3)
        self.drop = nn.Dropout(0.1)

    def forward(self, x):
        return self.drop(self.fc(x)).relu()


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.scale = Tensor(np.ones(3, dtype=np.float32), requires_grad=True)
        self.blocks = [Block(), Block()]
        self.heads = {"a": nn.Linear(3, 2), "b": nn.Linear(3, 1, bias=False)}
        self.norm = nn.BatchNorm1d(3)
        self._cache = Tensor(np.zeros(2, dtype=np.float32))     # private: not a parameter
        self.n_calls = 0

    def forward(self, x):
        h = x * self.scale
        for b in self.blocks:
            h = b(h)
        h = self.norm(h)
        return self.heads["a"](h), self.heads["b"](h)


PARAM_NAMES = ["scale", "blocks.0.fc.weight", "blocks.0.fc.bias", "blocks.1.fc.weight",
               "blocks.1.fc.bias", "heads.a.weight", "heads.a.bias", "heads.b.weight",
               "norm.weight", "norm.bias"]


def test_named_parameters_nested_lists_dicts():
    net = Net()
    names = [n for n, _ in net.named_parameters()]
    assert names == PARAM_NAMES
    assert len(list(net.parameters())) == 10
    assert next(iter(dict(net.named_parameters()).values())) is net.scale
    assert dict(net.named_parameters())["blocks.1.fc.weight"] is net.blocks[1].fc.weight
    assert [n for n, _ in net.named_buffers()] == [
        "norm.running_mean", "norm.running_var", "norm.num_batches_tracked"]


def test_children_and_modules():
    net = Net()
    assert [n for n, _ in net.named_children()] == ["blocks.0", "blocks.1", "heads.a", "heads.b",
                                                   "norm"]
    names = [n for n, _ in net.named_modules()]
    assert names == ["", "blocks.0", "blocks.0.fc", "blocks.0.drop", "blocks.1", "blocks.1.fc",
                     "blocks.1.drop", "heads.a", "heads.b", "norm"]
    assert list(net.modules())[0] is net and len(list(net.children())) == 5


def test_shared_parameters_are_listed_once():
    class Tied(nn.Module):
        def __init__(self):
            super().__init__()
            self.enc = nn.Linear(4, 4)
            self.dec = self.enc
            self.w = self.enc.weight

    t = Tied()
    # a module's own tensors come before its children's (PyTorch order); each appears once
    assert [n for n, _ in t.named_parameters()] == ["w", "enc.bias"]
    assert [n for n, _ in t.named_modules()] == ["", "enc"]


def test_train_eval_recurse():
    net = Net()
    assert all(m.training for m in net.modules())
    assert net.eval() is net
    assert not any(m.training for m in net.modules())
    net.train()
    assert all(m.training for m in net.modules())
    net.blocks[0].train(False)
    assert not net.blocks[0].drop.training and net.blocks[1].drop.training


def test_forward_backward_and_zero_grad():
    net = Net()
    a, b = net(Tensor(rng.standard_normal((4, 3)).astype(np.float32)))
    assert a.shape == (4, 2) and b.shape == (4, 1)
    (a.sum() + b.sum()).backward()
    grads = {n: p.grad for n, p in net.named_parameters()}
    assert all(g is not None for g in grads.values())
    net.zero_grad()
    assert all(p.grad is None for p in net.parameters())


def test_state_dict_round_trip():
    src, dst = Net(), Net()
    src.train()
    src(Tensor(rng.standard_normal((6, 3)).astype(np.float32)))     # moves running stats
    sd = src.state_dict()
    assert list(sd) == PARAM_NAMES[:-2] + ["norm.weight", "norm.bias", "norm.running_mean",
                                           "norm.running_var", "norm.num_batches_tracked"]
    assert all(isinstance(v, np.ndarray) for v in sd.values())
    assert int(sd["norm.num_batches_tracked"]) == 1
    # copies, not views
    sd["scale"][0] = 42.0
    assert src.scale.numpy()[0] == 1.0
    sd = src.state_dict()
    w = dst.blocks[0].fc.weight
    result = dst.load_state_dict(sd)
    assert result.missing_keys == [] and result.unexpected_keys == []
    assert dst.blocks[0].fc.weight is w                       # loaded in place
    for k, v in dst.state_dict().items():
        np.testing.assert_array_equal(v, sd[k])
    x = Tensor(rng.standard_normal((5, 3)).astype(np.float32))
    src.eval(), dst.eval()
    np.testing.assert_array_equal(src(x)[0].numpy(), dst(x)[0].numpy())
    # loading copies: later changes to the dict do not reach the model
    sd["heads.a.bias"][...] = 7
    assert not (dst.heads["a"].bias.numpy() == 7).any()


def test_load_state_dict_accepts_tensors_and_casts():
    lin = nn.Linear(2, 2)
    lin.load_state_dict({"weight": Tensor(np.eye(2)), "bias": np.array([1, 2])})
    assert lin.weight.dtype == np.float32
    np.testing.assert_array_equal(lin.weight.numpy(), np.eye(2))
    np.testing.assert_array_equal(lin.bias.numpy(), [1.0, 2.0])


def test_load_state_dict_errors():
    net = Net()
    sd = net.state_dict()
    bad = dict(sd)
    del bad["heads.a.bias"]
    bad["heads.c.weight"] = np.zeros(3)
    with pytest.raises(RuntimeError, match=r"missing keys: heads\.a\.bias.*"
                                           r"unexpected keys: heads\.c\.weight"):
        net.load_state_dict(bad)
    wrong = dict(sd)
    wrong["blocks.1.fc.weight"] = np.zeros((3, 4), dtype=np.float32)
    with pytest.raises(RuntimeError, match=r"shape mismatch for blocks\.1\.fc\.weight: "
                                           r"expected \(3, 3\), got \(3, 4\)"):
        net.load_state_dict(wrong)
    with pytest.raises(RuntimeError, match="shape mismatch"):
        net.load_state_dict(wrong, strict=False)
    before = net.scale.numpy().copy()
    res = net.load_state_dict({"scale": np.full(3, 2.0), "extra": np.zeros(1)}, strict=False)
    assert res.unexpected_keys == ["extra"] and "norm.running_var" in res.missing_keys
    np.testing.assert_array_equal(net.scale.numpy(), [2.0, 2.0, 2.0])
    assert not (before == 2.0).any()


def test_module_list_and_dict():
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.layers = nn.ModuleList([nn.Linear(2, 2), nn.Linear(2, 1)])
            self.extra = nn.ModuleDict({"proj": nn.Linear(1, 1, bias=False)})

    m = M()
    assert [n for n, _ in m.named_parameters()] == [
        "layers.0.weight", "layers.0.bias", "layers.1.weight", "layers.1.bias",
        "extra.proj.weight"]
    assert len(m.layers) == 2 and isinstance(m.layers[1], nn.Linear)
    m.layers.append(nn.Linear(1, 1))
    assert "layers.2.bias" in m.state_dict()
    assert "proj" in m.extra and list(m.extra.keys()) == ["proj"]
    with pytest.raises(TypeError, match="expected a Module"):
        m.layers.append(3)


def test_to_cpu_keeps_identity_and_repr():
    net = Net()
    p = net.scale
    assert net.to("cpu") is net and net.scale is p and net.scale.device == "cpu"
    r = repr(nn.Sequential(nn.Linear(2, 3), nn.ReLU()))
    assert "(0): Linear(in_features=2, out_features=3, bias=True)" in r and "(1): ReLU()" in r


def test_forgot_super_init():
    class Bad(nn.Module):
        def __init__(self):
            self.fc = nn.Linear(2, 2)

    with pytest.raises(RuntimeError, match=r"Bad.__init__ did not call super\(\).__init__\(\)"):
        list(Bad().parameters())


def test_forward_not_defined():
    with pytest.raises(NotImplementedError, match="Module does not define forward"):
        nn.Module()(1)


def test_to_device_and_state_dict_across_devices(device):
    net = Net()
    x = np.random.default_rng(1).standard_normal((4, 3)).astype(np.float32)
    net.eval()
    ref = net(Tensor(x))[0].numpy()
    sd = net.state_dict()
    moved = Net().to(device)
    assert all(p.device == device for p in moved.parameters())
    assert all(b.device == device for b in moved.buffers())
    moved.load_state_dict(sd)                      # host arrays into device parameters
    moved.eval()
    out = moved(Tensor(x, device=device))[0]
    assert out.device == device
    np.testing.assert_allclose(out.numpy(), ref, rtol=1e-5, atol=1e-6)
    back = moved.state_dict()
    assert all(backend.device_of(v) == device for v in back.values())
    assert net.load_state_dict(back).missing_keys == []


def test_module_float_double_and_to_dtype():
    bn = nn.BatchNorm1d(3)
    model = nn.Sequential(nn.Linear(2, 3), bn)
    model(tg.Tensor(np.ones((4, 2), dtype=np.float32))).sum().backward()
    w = model[0].weight
    assert model.double() is model
    assert all(p.dtype == np.float64 for p in model.parameters())
    assert w.grad.dtype == np.float64 and bn.running_var.dtype == np.float64
    assert bn.num_batches_tracked.dtype == np.int64       # integer buffers keep their dtype
    assert model(tg.Tensor(np.ones((4, 2)))).dtype == np.float64
    model.float()
    assert w.dtype == np.float32 and w.requires_grad and w.is_leaf
    model.to(dtype=np.float64)
    assert w.dtype == np.float64
    model.to("cpu", np.float32)
    assert w.dtype == np.float32 and w.device == "cpu"
    with pytest.raises(TypeError, match="Module.to: dtype must be a floating dtype"):
        model.to(dtype=np.int32)


def test_nn_utils_aliases_are_the_homes_functions():
    from tinygrad_opt import autograd, optim
    assert nn.utils.clip_grad_norm_ is optim.clip_grad_norm_
    assert nn.utils.clip_grad_value_ is optim.clip_grad_value_
    assert nn.utils.parameters_to_vector is autograd.parameters_to_vector
    lin = nn.Linear(2, 2)
    lin(tg.Tensor(np.ones((1, 2), dtype=np.float32))).sum().backward()
    total = nn.utils.clip_grad_norm_(lin.parameters(), 0.5)
    norm = np.sqrt(sum((p.grad.numpy().astype(np.float64) ** 2).sum() for p in lin.parameters()))
    np.testing.assert_allclose(float(total), np.sqrt(1 + 1 + 1 + 1 + 1 + 1), rtol=1e-6)
    np.testing.assert_allclose(norm, 0.5, rtol=1e-5)
