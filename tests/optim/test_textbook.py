"""Goodfellow ch. 8 forms: where they give the same trajectory as the practical optimizers, and
by exactly how much they differ where they do not."""
import math

import numpy as np
import pytest

from tinygrad_opt import Tensor
from tinygrad_opt.optim import SGD, Adagrad, Adam, RMSprop, textbook
from tinygrad_opt.optim.lr_scheduler import StepLR

A = np.array([1.0, 30.0, 0.3])
X0 = [1.0, -2.0, 0.5]


def param(values=X0):
    return Tensor(np.array(values, dtype=np.float64), requires_grad=True)


def bumpy(x):
    """A non-quadratic loss, so gradients along the two trajectories must really match."""
    return (0.5 * Tensor(A) * x * x).sum() + (x ** 4).sum() * 0.1 + (x[0] * x[1] - 0.5) ** 2


def trajectory(opt, x, steps, closure=False, after_step=None):
    out = []
    for _ in range(steps):
        if closure:
            opt.step(lambda: bumpy(x))
        else:
            opt.zero_grad()
            bumpy(x).backward()
            opt.step()
        if after_step:
            after_step()
        out.append(x.numpy())
    return np.array(out)


def same(a, b):
    np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)


# ---------------------------------------------------------------- identical trajectories
def test_sgd_is_algorithm_8_1():
    x, y = param(), param()
    same(trajectory(SGD([x], lr=0.01), x, 20), trajectory(textbook.SGD([y], lr=0.01), y, 20))


def test_momentum_matches_algorithm_8_2_with_v_equal_minus_lr_b():
    # b <- mu b + g, theta <- theta - lr b   vs   v <- a v - eps g, theta <- theta + v:
    # by induction v_t = -eps b_t (true at t = 0), so the thetas agree.
    x, y = param(), param()
    practical = SGD([x], lr=0.01, momentum=0.9)
    book = textbook.Momentum([y], lr=0.01, alpha=0.9)
    same(trajectory(practical, x, 30), trajectory(book, y, 30))
    same(practical.state[x]["momentum_buffer"], -book.state[y]["v"] / 0.01)


def test_nesterov_matches_algorithm_8_3_after_change_of_variables():
    # Book: v' = a v - eps g(theta + a v), theta' = theta + v'. Put phi = theta + a v (the point
    # where the book takes its gradient). Then
    #   phi' = theta' + a v' = theta + (1 + a) v' = phi - a v + (1 + a)(a v - eps g(phi))
    #        = phi - eps g(phi) + a (a v - eps g(phi)) = phi - eps (g(phi) + a b'),
    # with b = -v/eps, b' = a b + g(phi): PyTorch's nesterov rule on phi. Both start with v = 0,
    # so phi_0 = theta_0, and at every step PyTorch's parameters are theta_book + a v_book.
    alpha, lr = 0.9, 0.01
    x, y = param(), param()
    practical = SGD([x], lr=lr, momentum=alpha, nesterov=True)
    book = textbook.Nesterov([y], lr=lr, alpha=alpha)
    for _ in range(30):
        practical.zero_grad()
        bumpy(x).backward()
        practical.step()
        book.step(lambda: bumpy(y))
        v = book.state[y]["v"]
        same(x.numpy(), y.numpy() + alpha * v)
        same(practical.state[x]["momentum_buffer"], -v / lr)
    assert not np.allclose(x.numpy(), y.numpy())      # the raw parameters do differ


def test_adagrad_matches_algorithm_8_4():
    # both add delta after the square root: -eps g / (delta + sqrt(r))
    x, y = param(), param()
    same(trajectory(Adagrad([x], lr=0.1, eps=1e-7), x, 30),
         trajectory(textbook.AdaGrad([y], lr=0.1, delta=1e-7), y, 30))


def test_adam_matches_algorithm_8_7():
    # lr/(1 - b1^t) m = eps s^ and sqrt(v)/sqrt(1 - b2^t) = sqrt(r^): one update, two spellings
    x, y = param(), param()
    practical = Adam([x], lr=0.01, betas=(0.9, 0.999), eps=1e-8)
    book = textbook.Adam([y], lr=0.01, rho1=0.9, rho2=0.999, delta=1e-8)
    same(trajectory(practical, x, 40), trajectory(book, y, 40))
    same(practical.state[x]["exp_avg"], book.state[y]["s"])
    same(practical.state[x]["exp_avg_sq"], book.state[y]["r"])


# ---------------------------------------------------------------- where they differ
def test_lr_change_rescales_pytorch_momentum_by_exactly_this_much():
    # Linear loss c.theta: g = c at every point, so the difference has a closed form.
    # Both agree for k steps at lr e (b_k = c (1 - mu^k)/(1 - mu), v_k = -e b_k). After the drop
    # to e' the book keeps v: v_{k+j} = mu^j v_k - e' c (1 - mu^j)/(1 - mu), while PyTorch's step
    # is -e' b_{k+j} = -e' (mu^j b_k + c (1 - mu^j)/(1 - mu)). Step difference mu^j (e - e') b_k,
    # so after n steps: theta_pytorch - theta_book = (e - e') b_k mu (1 - mu^n)/(1 - mu).
    c = np.array([1.0, -3.0])
    mu, e, gamma, k, n = 0.9, 0.1, 0.2, 6, 5     # n <= k: one drop only
    x = Tensor(np.zeros(2), requires_grad=True)
    y = Tensor(np.zeros(2), requires_grad=True)
    practical = SGD([x], lr=e, momentum=mu)
    book = textbook.Momentum([y], lr=e, alpha=mu)
    schedules = [StepLR(opt, step_size=k, gamma=gamma) for opt in (practical, book)]
    for t in range(k + n):
        for opt, p, sched in zip((practical, book), (x, y), schedules):
            opt.zero_grad()
            (Tensor(c) * p).sum().backward()
            opt.step()
            sched.step()
        if t == k - 1:
            same(x.numpy(), y.numpy())
    e2 = gamma * e
    b_k = c * (1 - mu ** k) / (1 - mu)
    same(x.numpy() - y.numpy(), (e - e2) * b_k * mu * (1 - mu ** n) / (1 - mu))
    # and PyTorch's velocity is the book's with the stored part scaled by e'/e
    v_book = mu ** n * (-e * b_k) - e2 * c * (1 - mu ** n) / (1 - mu)
    same(book.state[y]["v"], v_book)
    same(-e2 * practical.state[x]["momentum_buffer"], v_book + mu ** n * (e - e2) * b_k)


def test_rmsprop_eps_placement_at_step_one_by_hand():
    # f = 0.05 x^2 at x = 1: g = 0.1; rho = 0.99, lr = 0.01, eps = delta = 1e-6.
    # r_1 = (1 - rho) g^2 = 1e-4.
    # PyTorch (eps outside): step = lr g / (sqrt(r_1) + eps) = 1e-3 / (0.01 + 1e-6) = 0.1/1.0001
    # book (delta inside):   step = lr g / sqrt(delta + r_1) = 1e-3 / (0.01 sqrt(1.01))
    #                                                        = 0.1/sqrt(1.01)
    # difference = 0.1 (1/1.0001 - 1/sqrt(1.01)) = 4.8628197890e-4: the book's step is 0.49%
    # shorter,
    # because delta = 1e-6 is 1% of r_1 but only 0.01% of sqrt(r_1).
    def one_step(opt, x):
        opt.zero_grad()
        (0.05 * x * x).sum().backward()
        opt.step()
        return x.item()

    x, y = param([1.0]), param([1.0])
    pytorch = one_step(RMSprop([x], lr=0.01, alpha=0.99, eps=1e-6), x)
    book = one_step(textbook.RMSProp([y], lr=0.01, rho=0.99, delta=1e-6), y)
    assert pytorch == pytest.approx(1 - 0.1 / 1.0001, rel=1e-14)
    assert book == pytest.approx(1 - 0.1 / math.sqrt(1.01), rel=1e-14)
    assert book - pytorch == pytest.approx(4.8628197890110e-4, rel=1e-10)


def test_rmsprop_forms_agree_when_delta_is_negligible():
    # once r >> delta both are lr g / sqrt(r) up to O(delta / sqrt(r))
    x, y = param(), param()
    np.testing.assert_allclose(
        trajectory(RMSprop([x], lr=0.01, alpha=0.99, eps=1e-12), x, 10),
        trajectory(textbook.RMSProp([y], lr=0.01, rho=0.99, delta=1e-24), y, 10), rtol=1e-9)


# ---------------------------------------------------------------- the rest of the book
def test_rmsprop_nesterov_algorithm_8_6_by_formula():
    lr, rho, alpha = 0.01, 0.9, 0.5
    a, x0 = [2.0, 0.5], [1.0, -3.0]
    x = param(x0)
    opt = textbook.RMSPropNesterov([x], lr=lr, rho=rho, alpha=alpha)
    theta, v, r = list(x0), [0.0, 0.0], [0.0, 0.0]
    for _ in range(4):
        opt.step(lambda: (0.5 * Tensor(np.array(a)) * x * x).sum())
        for i in range(2):
            g = a[i] * (theta[i] + alpha * v[i])            # gradient at the interim point
            r[i] = rho * r[i] + (1 - rho) * g * g
            v[i] = alpha * v[i] - lr / math.sqrt(r[i]) * g
            theta[i] += v[i]
        same(x.numpy(), theta)


def test_newton_algorithm_8_8_one_step_on_a_quadratic():
    # f = 0.5 z^T Q z - b.z over z = (x0, x1, y): the minimiser Q^{-1} b in one step,
    # with the Hessian coupling two separate parameters
    Q = np.array([[4.0, 1.0, 0.5], [1.0, 3.0, -1.0], [0.5, -1.0, 2.0]])
    b = np.array([1.0, -2.0, 0.5])
    x, y = param([5.0, -5.0]), param([3.0])

    def loss():
        from tinygrad_opt import concatenate
        z = concatenate([x, y])
        return 0.5 * (z * (Tensor(Q) @ z)).sum() - (Tensor(b) * z).sum()

    opt = textbook.Newton([x, y])
    opt.step(loss)
    same(np.concatenate([x.numpy(), y.numpy()]), np.linalg.solve(Q, b))


def test_newton_algorithm_8_8_on_a_quartic_by_hand():
    # f = x^4/4: x <- x - x^3 / (3 x^2) = 2x/3
    x = param([3.0])
    opt = textbook.Newton([x])
    for expected in (2.0, 4.0 / 3.0, 8.0 / 9.0):
        opt.step(lambda: (x ** 4).sum() / 4)
        same(x.numpy(), [expected])


@pytest.mark.parametrize("beta", ["polak-ribiere", "fletcher-reeves"])
def test_nonlinear_cg_algorithm_8_9_solves_a_quadratic_in_n_steps(beta):
    # with exact line searches CG on an n-dimensional convex quadratic ends in n steps
    rng = np.random.default_rng(0)
    M = rng.standard_normal((4, 4))
    Q = M @ M.T + 0.5 * np.eye(4)
    b = rng.standard_normal(4)
    x = param(np.zeros(4))
    opt = textbook.NonlinearCG([x], beta=beta)
    loss = lambda: 0.5 * (x * (Tensor(Q) @ x)).sum() - (Tensor(b) * x).sum()  # noqa: E731
    for _ in range(4):
        opt.step(loss)
    np.testing.assert_allclose(x.numpy(), np.linalg.solve(Q, b), rtol=1e-9, atol=1e-10)


def test_nonlinear_cg_betas_coincide_on_quadratics_and_golden_search_agrees():
    # exact searches make successive gradients orthogonal, so PR's extra term g_{t-1}.g_t is 0
    Q = np.diag([1.0, 10.0, 100.0])
    b = np.array([1.0, 1.0, 1.0])
    paths = []
    for beta, search in (("polak-ribiere", "exact"), ("fletcher-reeves", "exact"),
                         ("polak-ribiere", "golden")):
        x = param(np.ones(3))
        opt = textbook.NonlinearCG([x], beta=beta, line_search=search, tol=1e-12)
        loss = lambda: 0.5 * (x * (Tensor(Q) @ x)).sum() - (Tensor(b) * x).sum()  # noqa: E731
        paths.append([(opt.step(loss), x.numpy())[1] for _ in range(2)])
    np.testing.assert_allclose(paths[0], paths[1], rtol=1e-10)
    np.testing.assert_allclose(paths[0], paths[2], rtol=1e-5)


def test_nonlinear_cg_exact_search_refuses_negative_curvature():
    x = param([0.1, 0.2])
    opt = textbook.NonlinearCG([x])
    with pytest.raises(ValueError, match="curvature along the search direction"):
        opt.step(lambda: -(x * x).sum())
