"""Grad mode is thread-local (as in PyTorch): no_grad, enable_grad and a backward pass switch
recording off or on for the calling thread only; the decorators cover generator bodies."""
import gc
import sys
import threading

import numpy as np
import pytest

import tinygrad_opt as tg
from tinygrad_opt import autograd, engine


@pytest.fixture
def fast_switching():
    """Hand the GIL between threads every microsecond, so threads interleave op by op."""
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    yield
    sys.setswitchinterval(old)


def _run_threads(*targets):
    errors = []

    def guarded(fn):
        def run():
            try:
                fn()
            except BaseException as e:      # reported by the main thread
                errors.append(e)
        return run

    threads = [threading.Thread(target=guarded(fn)) for fn in targets]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads), "a thread did not finish"
    if errors:
        raise errors[0]


def test_no_grad_in_one_thread_leaves_another_recording():
    entered, release = threading.Event(), threading.Event()

    def hold_no_grad():
        with tg.no_grad():
            assert not tg.is_grad_enabled()
            entered.set()
            release.wait(10)
            assert not tg.is_grad_enabled()

    t = threading.Thread(target=hold_no_grad)
    t.start()
    try:
        assert entered.wait(10)
        assert tg.is_grad_enabled()
        x = tg.Tensor([1.0, 2.0], requires_grad=True)
        y = (x * x + 1.0).sum()          # operator fast path and apply both record
        assert y.requires_grad and y._node is not None
        y.backward()
        np.testing.assert_array_equal(x.grad.numpy(), [2.0, 4.0])
    finally:
        release.set()
        t.join()


def test_training_thread_beside_an_evaluation_loop_loses_no_step(fast_switching):
    """Before grad mode was thread-local, the evaluation thread's no_grad turned recording
    off for the trainer too, which lost most of its steps."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((32, 4))
    w_true = np.array([1.0, -2.0, 0.5, 3.0])
    y = X @ w_true
    w = tg.Tensor(np.zeros(4), requires_grad=True)
    params = [w]
    Xt, yt = tg.Tensor(X), tg.Tensor(y)
    steps, lr = 300, 0.1
    done = threading.Event()
    evaluated = []

    def train():
        try:
            w_ref = np.zeros(4)
            for _ in range(steps):
                w.grad = None
                loss = ((Xt @ w - yt) ** 2).mean()
                loss.backward()
                with tg.no_grad():
                    for p in params:
                        p -= lr * p.grad          # in place: the course's update
                w_ref -= lr * 2 * X.T @ (X @ w_ref - y) / len(y)
            np.testing.assert_allclose(w.numpy(), w_ref, rtol=1e-10, atol=1e-12)
        finally:
            done.set()

    def evaluate():
        while not done.is_set():
            with tg.no_grad():
                out = Xt @ w.detach() * 2.0
                assert not out.requires_grad
                evaluated.append(out.shape)

    _run_threads(train, evaluate)
    assert evaluated, "the evaluation loop never ran beside the training"
    np.testing.assert_allclose(w.numpy(), w_true, atol=1e-6)


def test_hvp_beside_another_threads_backward_is_never_zero(fast_switching):
    """A backward pass switches recording off for its own thread only: hvp's first,
    recorded backward in another thread still builds its graph."""
    A = np.array([[3.0, 1.0, 0.0], [1.0, 2.0, 0.5], [0.0, 0.5, 4.0]])
    v = np.array([1.0, -1.0, 2.0])
    x0 = np.array([0.3, -0.2, 0.1])
    stop = threading.Event()
    results = []

    def f(x):
        At = tg.Tensor(A)
        return 0.5 * (x * (At @ x)).sum()

    def hvps():
        try:
            for _ in range(200):
                _, hv = autograd.hvp(f, tg.Tensor(x0), tg.Tensor(v))
                results.append(hv.numpy())
        finally:
            stop.set()

    def backwards():
        z = tg.Tensor(np.ones(5), requires_grad=True)
        while not stop.is_set():
            ((z * z).tanh() * 3.0).sum().backward()

    _run_threads(hvps, backwards)
    assert len(results) == 200
    for hv in results:
        np.testing.assert_allclose(hv, A @ v, rtol=1e-12)


def test_concurrent_backwards_give_exact_gradients_and_restore_gc(fast_switching):
    assert gc.isenabled()
    grads = {}

    def worker(k):
        def run():
            x = tg.Tensor(np.linspace(-1, 1, 7) * (k + 1), requires_grad=True)
            for _ in range(100):
                x.grad = None
                (x.tanh() * x).sum().backward()
                xd = x.numpy()
                np.testing.assert_allclose(
                    x.grad.numpy(), np.tanh(xd) + xd * (1 - np.tanh(xd) ** 2), rtol=1e-6)
            grads[k] = True
        return run

    _run_threads(*(worker(k) for k in range(3)))
    assert len(grads) == 3
    assert gc.isenabled(), "the last backward out must switch the collector back on"


def test_backward_leaves_a_disabled_collector_disabled():
    gc.disable()
    try:
        x = tg.Tensor([1.0], requires_grad=True)
        (x * 2.0).sum().backward()
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_backward_restores_the_threads_grad_mode():
    x = tg.Tensor([1.0], requires_grad=True)
    with tg.no_grad():
        assert not tg.is_grad_enabled()
    (x * 2.0).sum().backward()
    assert tg.is_grad_enabled()
    with tg.no_grad():
        y = x * 2.0
    assert not y.requires_grad
    assert engine._overrides == 0


def test_no_grad_decorator_covers_a_generator_body_only():
    seen = []

    @tg.no_grad()
    def batches(x):
        for k in range(3):
            seen.append(tg.is_grad_enabled())
            yield x * float(k)

    x = tg.Tensor([1.0, 2.0], requires_grad=True)
    outs = []
    for out in batches(x):
        outs.append(out)
        seen.append(("caller", tg.is_grad_enabled()))
        assert (x * 2.0).requires_grad          # the caller records between items
    assert seen == [False, ("caller", True)] * 3
    assert not any(o.requires_grad for o in outs)
    np.testing.assert_array_equal(outs[2].numpy(), [2.0, 4.0])


def test_enable_grad_decorator_on_a_generator_inside_no_grad():
    @tg.enable_grad()
    def gen(x):
        got = yield x * 2.0
        yield x * got

    x = tg.Tensor([3.0], requires_grad=True)
    with tg.no_grad():
        g = gen(x)
        a = next(g)
        b = g.send(5.0)
        assert not (x * 1.0).requires_grad
    assert a.requires_grad and b.requires_grad
    b.sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [5.0])


def test_generator_decorator_passes_return_value_throw_and_close():
    @tg.no_grad()
    def gen():
        try:
            yield 1
            yield 2
        except KeyError:
            assert not tg.is_grad_enabled()
            yield "caught"
        return "done"

    g = gen()
    assert next(g) == 1
    assert g.throw(KeyError("k")) == "caught"
    with pytest.raises(StopIteration) as stop:
        next(g)
    assert stop.value.value == "done"
    assert tg.is_grad_enabled()
    g2 = gen()
    next(g2)
    g2.close()
    assert tg.is_grad_enabled() and engine._overrides == 0


def test_no_grad_as_a_bare_decorator_and_a_function_decorator():
    @tg.no_grad
    def f(x):
        return x * 2.0

    @tg.no_grad()
    def h(x):
        """doc of h"""
        return x * 2.0

    x = tg.Tensor([1.0], requires_grad=True)
    assert not f(x).requires_grad and not h(x).requires_grad
    assert h.__name__ == "h" and h.__doc__ == "doc of h"
    assert (x * 2.0).requires_grad


def test_forward_mode_levels_are_per_thread(fast_switching):
    """One thread's jvp neither sees nor ends another thread's forward-mode level."""
    x0 = np.array([0.3, -0.7, 1.1])
    v = np.array([1.0, 2.0, -1.0])
    out = {}

    def jvps(k):
        def run():
            got = []
            for _ in range(100):
                if k == 0:
                    _, t = autograd.jvp(lambda x: (x * x).tanh(), tg.Tensor(x0), tg.Tensor(v))
                else:
                    _, t = autograd.jvp(lambda x: x.exp() * 3.0, tg.Tensor(x0), tg.Tensor(v))
                got.append(t.numpy())
            out[k] = got
        return run

    def plain_ops():
        z = tg.Tensor(np.ones(3), requires_grad=True)
        for _ in range(300):
            (z * 2.0 + 1.0).sum().backward()

    _run_threads(jvps(0), jvps(1), plain_ops)
    th = np.tanh(x0 * x0)
    for t in out[0]:
        np.testing.assert_allclose(t, (1 - th ** 2) * 2 * x0 * v, rtol=1e-12)
    for t in out[1]:
        np.testing.assert_allclose(t, 3 * np.exp(x0) * v, rtol=1e-12)
    assert engine._levels == 0 and engine._grad.levels == ()
