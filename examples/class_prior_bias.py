"""Initialise the output bias from the class priors on an imbalanced data set.

    python examples/class_prior_bias.py [--quick] [--out DIR]

With a zero output layer, softmax(logits) = softmax(b). A zero bias predicts the uniform
distribution, so the first loss is log(C) and the first steps are spent learning the base
rates. nn.init.class_prior_bias_ sets b = log p (up to a constant), so softmax(b) = p and the
first loss is the entropy of the priors, H(p) = -sum p log p < log(C). We make the digits
imbalanced (class k keeps a share proportional to 0.6^k), train both models from the same
hidden weights, and compare. Writes class_prior_bias.png (loss over the first epochs).
"""
import argparse
import math
import os

import numpy as np

import tinygrad_opt as tg
from tinygrad_opt import data, nn
from tinygrad_opt.nn import functional as F
from tinygrad_opt.nn import init
from tinygrad_opt.optim import SGD


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 epoch, for tests")
    parser.add_argument("--out", default="out", help="folder for the figure (default: out)")
    args = parser.parse_args(argv)

    # settings
    epochs, lr, ratio = (1 if args.quick else 3), 0.05, 0.6

    # data: keep about 0.6^k of class k, so class 0 is ~60 times more common than class 9
    X, y = data.load_digits()
    rng = np.random.default_rng(0)
    keep = rng.random(len(y)) < ratio ** y.astype(np.float64)
    X, y = X[keep], y[keep]
    priors = np.bincount(y, minlength=10) / len(y)
    entropy = float(-(priors * np.log(priors)).sum())
    print("class shares: " + " ".join(f"{p:.3f}" for p in priors))

    # models: the same hidden layer; the output layer zero except for the bias
    losses = {}
    for name in ("zero bias", "prior bias"):
        tg.manual_seed(0)
        model = nn.MLP([64, 64, 10])
        out = model[-1]
        init.zeros_(out.weight)
        if name == "prior bias":
            init.class_prior_bias_(out.bias, priors)
        else:
            init.zeros_(out.bias)
        opt = SGD(model.parameters(), lr=lr, momentum=0.9)
        loader = data.DataLoader(X, y, batch_size=32, seed=0)
        with tg.no_grad():
            first = F.cross_entropy(model(tg.Tensor(X)), tg.Tensor(y)).item()
        losses[name] = [first]
        for _ in range(epochs):
            for xb, yb in loader:
                opt.zero_grad()
                loss = F.cross_entropy(model(xb), yb)
                loss.backward()
                opt.step()
                losses[name].append(loss.item())

    # result
    initial = {k: v[0] for k, v in losses.items()}
    print(f"initial loss with zero bias  {initial['zero bias']:.4f}   log(C) = {math.log(10):.4f}")
    print(f"initial loss with prior bias {initial['prior bias']:.4f}   H(p)   = {entropy:.4f}")
    for name, ls in losses.items():
        print(f"{name:10s} mean loss over the first 20 steps: {np.mean(ls[1:21]):.4f}")
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "class_prior_bias.png")
    from matplotlib.figure import Figure
    fig = Figure(figsize=(7, 4), layout="constrained")
    ax = fig.subplots()
    for name, ls in losses.items():
        ax.plot(ls, lw=1, label=name)
    ax.axhline(math.log(10), color="0.5", ls="--", lw=1)
    ax.axhline(entropy, color="0.5", ls=":", lw=1)
    ax.text(len(ls) - 1, math.log(10), "log C", ha="right", va="bottom")
    ax.text(len(ls) - 1, entropy, "H(priors)", ha="right", va="bottom")
    ax.set(xlabel="step", ylabel="minibatch loss", title="Imbalanced digits: output bias at init")
    ax.legend()
    fig.savefig(path, dpi=100)
    print(f"wrote {path}")
    return {"initial_loss": initial, "entropy": entropy, "log_C": math.log(10),
            "losses": losses}


if __name__ == "__main__":
    main()
