"""Tensor construction, dtype rules, attributes, operators and the errors that teach."""
import numpy as np
import pytest

import tinygrad_opt as tg


def test_lists_and_scalars_become_float32_arrays_keep_dtype():
    assert tg.Tensor([1, 2, 3]).dtype == np.float32
    assert tg.Tensor(2.5).dtype == np.float32 and tg.Tensor(2.5).shape == ()
    assert tg.Tensor(np.arange(3)).dtype == np.int64
    assert tg.Tensor(np.ones(2, np.float64)).dtype == np.float64
    assert tg.Tensor([1, 2], dtype=np.float64).dtype == np.float64
    assert tg.Tensor([True, False]).dtype == np.bool_


def test_tensor_copies_its_data_and_numpy_is_a_copy():
    a = np.ones(3)
    t = tg.Tensor(a)
    a[0] = 5
    assert t.numpy()[0] == 1
    n = t.numpy()
    n[1] = 7
    assert t.data[1] == 1


def test_requires_grad_on_integer_tensor_is_a_type_error():
    with pytest.raises(TypeError, match="floating"):
        tg.Tensor(np.arange(3), requires_grad=True)
    t = tg.Tensor(np.arange(3))
    with pytest.raises(TypeError, match="int64"):
        t.requires_grad = True


def test_attributes():
    t = tg.Tensor(np.zeros((2, 3)), requires_grad=True)
    assert t.shape == (2, 3) and t.ndim == 2 and t.size == 6 and t.device == "cpu"
    assert t.grad is None and t.requires_grad and t.is_leaf
    assert tg.Tensor([[4.0]]).item() == 4.0
    with pytest.raises(ValueError, match="6 elements"):
        t.item()


def test_python_scalars_never_upcast():
    x = tg.Tensor(np.ones(3, np.float32), requires_grad=True)
    for y in (x + 1, 2.5 * x, x / 3.0, x ** 2, 1.0 - x, 2.0 ** x, x.mean(), -x):
        assert y.dtype == np.float32
    (x * 2.0).sum().backward()
    assert x.grad.dtype == np.float32


def test_comparisons_return_bool_tensors_without_graph():
    x = tg.Tensor([1.0, 2.0, 3.0], requires_grad=True)
    m = x > 1.5
    assert m.dtype == np.bool_ and not m.requires_grad
    np.testing.assert_array_equal(m.numpy(), [False, True, True])
    np.testing.assert_array_equal((x == 2.0).numpy(), [False, True, False])
    twin = tg.Tensor([1.0, 2.0, 3.0])
    table = {x: "x", twin: "twin"}                  # keyed by identity, not by value
    assert len(table) == 2 and table[x] == "x"


def test_ndarray_on_the_left_defers_to_tensor():
    x = tg.Tensor([1.0, 2.0], requires_grad=True)
    y = np.array([3.0, 4.0], np.float32) * x
    assert isinstance(y, tg.Tensor) and y.requires_grad
    y.sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [3.0, 4.0])


def test_broadcasting_error_names_op_and_shapes():
    a, b = tg.Tensor(np.ones((3, 4))), tg.Tensor(np.ones((5, 3)))
    with pytest.raises(ValueError, match=r"add: shapes \(3, 4\) and \(5, 3\) cannot be broadcast"):
        a + b
    with pytest.raises(ValueError, match=r"mul: shapes"):
        a * b


def test_matmul_error_names_shapes():
    with pytest.raises(ValueError, match=r"matmul: shapes \(64, 784\) and \(10, 128\) do not align \(784 != 10\)"):
        tg.zeros(64, 784) @ tg.zeros(10, 128)
    with pytest.raises(ValueError, match="scalar operands"):
        tg.zeros(3) @ tg.Tensor(2.0)


def test_linear_shape_errors():
    from tinygrad_opt.ops import linear
    with pytest.raises(ValueError, match=r"linear: input of shape \(4, 5\) does not match weight of shape \(3, 6\)"):
        linear(tg.zeros(4, 5), tg.zeros(3, 6))
    with pytest.raises(ValueError, match="bias"):
        linear(tg.zeros(4, 6), tg.zeros(3, 6), tg.zeros(4))


def test_reshape_transpose_and_index_errors():
    x = tg.zeros(2, 3)
    with pytest.raises(ValueError, match="reshape"):
        x.reshape(4, 2)
    with pytest.raises(ValueError, match="not a permutation"):
        x.transpose(0, 0)
    with pytest.raises(IndexError, match=r"getitem: .*shape \(2, 3\)"):
        x[5]


def test_creation_functions():
    assert tg.zeros(2, 3).shape == (2, 3) and tg.zeros((2, 3)).numpy().sum() == 0
    assert tg.ones(4, dtype=np.float64).dtype == np.float64
    np.testing.assert_array_equal(tg.eye(3).numpy(), np.eye(3))
    assert tg.arange(5).dtype == np.int64 and tg.arange(0.0, 1.0, 0.25).dtype == np.float32
    np.testing.assert_array_equal(tg.arange(2, 8, 2).numpy(), [2, 4, 6])
    assert tg.randn(3, 4, requires_grad=True).requires_grad


def test_manual_seed_makes_random_tensors_reproducible():
    tg.manual_seed(123)
    a = tg.randn(5).numpy()
    b = tg.rand(5).numpy()
    tg.manual_seed(123)
    np.testing.assert_array_equal(a, tg.randn(5).numpy())
    np.testing.assert_array_equal(b, tg.rand(5).numpy())
    assert ((b >= 0) & (b < 1)).all()


def test_astype_is_differentiable_and_casts_gradient_back():
    x = tg.Tensor(np.array([1.0, 2.0], np.float32), requires_grad=True)
    y = x.astype(np.float64)
    assert y.dtype == np.float64
    (y * y).sum().backward()
    assert x.grad.dtype == np.float32
    np.testing.assert_array_equal(x.grad.numpy(), [2.0, 4.0])


def test_getitem_gradients_scatter_and_add_repeats():
    x = tg.Tensor(np.arange(4.0), requires_grad=True)
    x[np.array([0, 0, 3])].sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [2, 0, 0, 1])
    y = tg.Tensor(np.arange(6.0).reshape(2, 3), requires_grad=True)
    y[y > 2.5].sum().backward()           # boolean mask indexing
    np.testing.assert_array_equal(y.grad.numpy(), [[0, 0, 0], [1, 1, 1]])


def test_max_splits_gradient_evenly_at_ties():
    x = tg.Tensor(np.array([1.0, 3.0, 3.0]), requires_grad=True)
    x.max().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [0, 0.5, 0.5])
    y = tg.Tensor(np.array([2.0, 2.0]), requires_grad=True)
    z = tg.Tensor(np.array([2.0, 1.0]), requires_grad=True)
    y.maximum(z).sum().backward()
    np.testing.assert_array_equal(y.grad.numpy(), [0.5, 1.0])
    np.testing.assert_array_equal(z.grad.numpy(), [0.5, 0.0])


def test_relu_and_abs_gradient_is_zero_at_the_kink():
    x = tg.Tensor(np.array([-1.0, 0.0, 2.0]), requires_grad=True)
    (x.relu() + x.abs()).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [-1.0, 0.0, 2.0])


def test_stack_concatenate_where():
    a, b = tg.Tensor([1.0, 2.0], requires_grad=True), tg.Tensor([3.0, 4.0], requires_grad=True)
    s = tg.stack([a, b])
    assert s.shape == (2, 2)
    c = tg.concatenate([a, b])
    np.testing.assert_array_equal(c.numpy(), [1, 2, 3, 4])
    w = tg.where(a > 1.5, a, b)
    np.testing.assert_array_equal(w.numpy(), [3.0, 2.0])
    (s.sum() + (w * 10).sum()).backward()
    np.testing.assert_array_equal(a.grad.numpy(), [1.0, 11.0])
    np.testing.assert_array_equal(b.grad.numpy(), [11.0, 1.0])
    with pytest.raises(ValueError, match="same shape"):
        tg.stack([a, tg.zeros(3)])


def test_cuda_request_without_gpu_is_a_clear_error():
    import importlib.util
    from tinygrad_opt import backend
    if importlib.util.find_spec("cupy") is not None:
        pytest.skip("CuPy is installed")
    with pytest.raises(RuntimeError, match="CuPy is not installed"):
        tg.Tensor([1.0], device="cuda")
    with pytest.raises(RuntimeError, match="cuda"):
        tg.zeros(2).to("cuda")
    assert not backend.cupy_loaded()


def test_cpu_use_never_imports_cupy():
    import subprocess
    import sys
    code = ("import sys, tinygrad_opt as tg; x = tg.randn(3, requires_grad=True); (x*x).sum().backward(); "
            "print('cupy' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.gpu
def test_tensor_from_a_cupy_array_before_any_cuda_request():
    """A CuPy array handed in first (no device= anywhere yet) makes a CUDA tensor, not an error."""
    import subprocess
    import sys
    from conftest import CUDA
    if not CUDA:
        pytest.skip("CuPy with a CUDA GPU is not available")
    code = ("import cupy, tinygrad_opt as tg\n"
            "x = tg.Tensor(cupy.arange(3.0), requires_grad=True)\n"
            "(x * x).sum().backward()\n"
            "print(x.device, type(x.grad.data).__module__.split('.')[0], x.grad.data.tolist())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["cuda", "cupy", "[0.0,", "2.0,", "4.0]"]


def test_unknown_device_is_an_error():
    with pytest.raises(ValueError, match="unknown device 'tpu'"):
        tg.zeros(2, device="tpu")


def test_mixing_devices_in_one_op_names_both(device):
    if device == "cpu":
        pytest.skip("needs a GPU")
    a = tg.Tensor([1.0], device="cuda")
    b = tg.Tensor([1.0])
    with pytest.raises(RuntimeError, match=r"different devices.*cuda.*cpu"):
        a + b


def test_to_device_round_trip_is_differentiable(device):
    x = tg.Tensor([1.0, 2.0], requires_grad=True)
    y = x.to(device)
    assert y.device == device
    (y * y).sum().to("cpu").backward() if device == "cpu" else (y * y).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [2.0, 4.0])
    assert x.grad.device == "cpu"


# ------------------------------------------------------------- PyTorch habits
def test_array_protocol_gives_a_host_copy():
    t = tg.Tensor(np.arange(6.0).reshape(2, 3), requires_grad=True)
    a = np.asarray(t)
    assert a.dtype == np.float64 and a.shape == (2, 3)        # not an object array
    np.testing.assert_array_equal(a, np.arange(6.0).reshape(2, 3))
    a[0, 0] = 99.0
    assert t.numpy()[0, 0] == 0.0                       # a copy, never a view
    assert np.asarray(t, dtype=np.float64).dtype == np.float64
    np.testing.assert_allclose(t, np.arange(6.0).reshape(2, 3))  # NumPy's testing takes tensors
    with pytest.raises(ValueError, match="converts to a NumPy copy only"):
        np.asarray(t, copy=False)


def test_format_spec_on_one_element_tensors():
    loss = tg.Tensor(np.float64(0.123456))
    assert f"{loss:.3f}" == "0.123" and f"{tg.Tensor([2.5]):>6.1f}" == "   2.5"
    assert f"{tg.Tensor([1.0, 2.0])}" == str(tg.Tensor([1.0, 2.0]))
    with pytest.raises(TypeError, match=r"format string '\.3f' for a tensor of shape \(2,\)"):
        f"{tg.Tensor([1.0, 2.0]):.3f}"


def test_size_is_the_count_and_callable_like_pytorch():
    t = tg.zeros(2, 3, 4)
    assert t.size == 24 and isinstance(t.size, int) and t.size + 1 == 25
    assert t.size() == (2, 3, 4) and t.size(1) == 3 and t.size(-1) == 4
    with pytest.raises(IndexError, match="size: dimension 3 is out of range for 3"):
        t.size(3)


def test_view_unsqueeze_squeeze_flatten_t_values():
    a = np.arange(24.0).reshape(2, 3, 4)
    t = tg.Tensor(a)
    assert t.view(6, 4).shape == (6, 4) and t.view(-1).shape == (24,)
    assert t.unsqueeze(0).shape == (1, 2, 3, 4) and t.unsqueeze(-1).shape == (2, 3, 4, 1)
    assert t.unsqueeze(1).shape == (2, 1, 3, 4)
    s = tg.zeros(1, 3, 1)
    assert s.squeeze().shape == (3,) and s.squeeze(0).shape == (3, 1)
    assert s.squeeze(1).shape == (1, 3, 1) and s.squeeze(-1).shape == (1, 3)
    assert t.flatten().shape == (24,) and t.flatten(1).shape == (2, 12)
    assert t.flatten(0, 1).shape == (6, 4) and t.flatten(-2, -1).shape == (2, 12)
    np.testing.assert_array_equal(t.flatten(1).numpy(), a.reshape(2, 12))
    m = tg.Tensor(np.arange(6.0).reshape(2, 3))
    np.testing.assert_array_equal(m.t().numpy(), np.arange(6.0).reshape(2, 3).T)
    v = tg.Tensor([1.0, 2.0])
    assert v.t() is v
    with pytest.raises(ValueError, match=r"t\(\): expects a tensor with at most 2 dimensions"):
        t.t()
    with pytest.raises(IndexError, match="unsqueeze: dimension 4 is out of range"):
        t.unsqueeze(4)
    with pytest.raises(ValueError, match="flatten: start_dim 2 comes after end_dim 1"):
        t.flatten(2, 1)


def test_clone_copies_and_passes_the_gradient():
    x = tg.Tensor([1.0, 2.0], requires_grad=True)
    c = x.clone()
    assert c.data is not x.data and c.requires_grad
    with tg.no_grad():
        c += 1.0
    np.testing.assert_array_equal(x.numpy(), [1.0, 2.0])
    y = x.clone()
    (y * 3.0).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [3.0, 3.0])


def test_dtype_conversions():
    x = tg.Tensor([1.7, -2.2], requires_grad=True)
    assert x.double().dtype == np.float64 and x.double().requires_grad
    assert x.double().float().dtype == np.float32
    n = x.long()
    assert n.dtype == np.int64 and n.numpy().tolist() == [1, -2] and not n.requires_grad
    assert x.int().dtype == np.int32
    assert x.astype(bool).dtype == bool and not x.astype(bool).requires_grad


def test_tensor_like_and_from_numpy_creation():
    base = tg.Tensor(np.ones((2, 3), dtype=np.float64))
    z, o = tg.zeros_like(base), tg.ones_like(base, dtype=np.float32)
    assert z.shape == (2, 3) and z.dtype == np.float64 and not z.numpy().any()
    assert o.dtype == np.float32 and o.numpy().sum() == 6
    tg.manual_seed(3)
    r = tg.randn_like(base, requires_grad=True)
    tg.manual_seed(3)
    np.testing.assert_array_equal(r.numpy(), tg.randn(2, 3, dtype=np.float64).numpy())
    assert r.requires_grad and r.dtype == np.float64
    assert tg.zeros_like(np.ones((4,), np.int64)).dtype == np.int64
    t = tg.tensor([[1, 2], [3, 4]], requires_grad=True)
    assert isinstance(t, tg.Tensor) and t.dtype == np.float32 and t.requires_grad
    src = np.array([1.0, 2.0])
    assert tg.tensor(src).data is not src
    shared = tg.from_numpy(src)
    src[0] = 10.0
    assert shared.numpy()[0] == 10.0 and shared.dtype == np.float64
    with pytest.raises(TypeError, match="from_numpy: expected a numpy.ndarray, got list"):
        tg.from_numpy([1.0])


def test_matmul_of_mixed_float_dtypes_is_an_error_naming_the_fix():
    a64 = tg.Tensor(np.ones((2, 3)))
    w32 = tg.Tensor(np.ones((3, 4), dtype=np.float32), requires_grad=True)
    with pytest.raises(TypeError, match=r"matmul: left operand of dtype float64 and right operand "
                                        r"of dtype float32.*\.astype\(np\.float32\)"):
        a64 @ w32
    with pytest.raises(TypeError, match="matmul: .*int64"):
        tg.Tensor(np.ones((2, 3), dtype=np.int64)) @ w32
    assert (a64.float() @ w32).dtype == np.float32
    i64 = tg.Tensor(np.ones((2, 3), dtype=np.int64))
    assert (i64 @ tg.Tensor(np.ones((3, 1), dtype=np.int64))).dtype == np.int64


def test_size_pickles_as_an_int_and_formats_zero_d_like_pytorch():
    import copy
    import pickle
    s = tg.zeros(2, 3).size
    assert pickle.loads(pickle.dumps(s)) == 6 and copy.deepcopy(s) == 6
    assert f"{tg.Tensor(np.float64(0.5))}" == "0.5"          # a 0-d tensor formats as its number
    assert f"{tg.Tensor([0.5])}" == str(tg.Tensor([0.5]))
    m = tg.zeros(2, 3)
    with tg.no_grad():
        m[tg.Tensor(np.array([1])), 0] = 4.0
    assert m.numpy()[1, 0] == 4.0
