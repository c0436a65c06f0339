"""Orthogonal vs Gaussian initialisation in a deep tanh network: do activations survive depth?

    python examples/init_experiments.py [--quick] [--out DIR]

Push one batch of unit-variance inputs through a tanh MLP of 20 linear layers and measure
the standard deviation of each layer's activations and of each layer's weight gradient.
  Gaussian, std 0.01          each layer multiplies the scale by about 0.01 sqrt(width):
                              activations and gradients vanish geometrically
  Gaussian, std 1/sqrt(fan_in) (LeCun) keeps the scale of a linear layer, but tanh shrinks
                              it a little at every layer
  orthogonal, gain 5/3        all singular values equal the tanh gain, so a layer stretches
                              no direction more than another (Saxe et al. 2013)
Writes init_experiments.png (activation and gradient std per layer, log scale).
"""
import argparse
import math
import os

import numpy as np

import tinygrad_opt as tg
from tinygrad_opt import nn
from tinygrad_opt.nn import init


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a narrower, shallower net")
    parser.add_argument("--out", default="out", help="folder for the figure (default: out)")
    args = parser.parse_args(argv)

    # settings
    depth, width, batch = (8, 64, 128) if args.quick else (20, 256, 512)
    gain = init.calculate_gain("tanh")
    schemes = {
        "N(0, 0.01^2)": lambda w: init.normal_(w, std=0.01),
        "N(0, 1/fan_in)": lambda w: init.normal_(w, std=1 / math.sqrt(w.shape[1])),
        "orthogonal x 5/3": lambda w: init.orthogonal_(w, gain=gain),
    }

    # data: white noise is enough to see what the initialisation does to a signal
    tg.manual_seed(0)
    x = tg.randn(batch, width)

    # model and measurement: forward layer by layer, keeping every activation
    act_std, grad_std = {}, {}
    for name, weight_init in schemes.items():
        tg.manual_seed(1)
        model = nn.MLP([width] * (depth + 1), activation="tanh", init=weight_init, bias_init=0.0)
        h, acts = x, []
        for layer in model:
            h = layer(h)
            if isinstance(layer, nn.Tanh):
                acts.append(h)
        h.sum().backward()                      # the gradient of a sum reaches every layer
        act_std[name] = [float(a.numpy().std()) for a in acts]
        linears = [m for m in model if isinstance(m, nn.Linear)]
        grad_std[name] = [float(m.weight.grad.numpy().std()) for m in linears]

    # result
    print(f"{'layer':>5s}  " + "  ".join(f"{n:>16s}" for n in schemes))
    for i in range(len(next(iter(act_std.values())))):
        print(f"{i + 1:5d}  " + "  ".join(f"{act_std[n][i]:16.3e}" for n in schemes))
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "init_experiments.png")
    from matplotlib.figure import Figure
    fig = Figure(figsize=(11, 4), layout="constrained")
    ax1, ax2 = fig.subplots(1, 2)
    for name in schemes:
        ax1.semilogy(np.arange(1, len(act_std[name]) + 1), act_std[name], "o-", ms=3, label=name)
        ax2.semilogy(np.arange(1, len(grad_std[name]) + 1), grad_std[name], "o-", ms=3,
                     label=name)
    ax1.set(xlabel="layer", ylabel="std of tanh output", title="Forward: activations")
    ax2.set(xlabel="layer", ylabel="std of dL/dW", title="Backward: weight gradients")
    from matplotlib.ticker import MaxNLocator
    for ax in (ax1, ax2):                       # layers are counted: integer ticks only
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax1.legend(fontsize=8)
    fig.suptitle(f"tanh MLP with {depth} linear layers of width {width}")
    fig.savefig(path, dpi=100)
    print(f"wrote {path}")
    return {"activation_std": act_std, "gradient_std": grad_std}


if __name__ == "__main__":
    main()
