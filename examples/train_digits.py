"""Train an MLP on the 8x8 digits with a hand-written loop: forward, loss, backward, step.

    python examples/train_digits.py [--quick] [--out DIR]

Everything fit() does, in the open: minibatches from a DataLoader, cross-entropy on the
logits, loss.backward() filling each parameter's .grad, SGD with Nesterov momentum and a
cosine learning-rate schedule, validation accuracy after every epoch. Writes
train_digits.png (loss per step and accuracy per epoch).
"""
import argparse
import os

import numpy as np

import tinygrad_opt as tg
from tinygrad_opt import data, nn
from tinygrad_opt.nn import functional as F
from tinygrad_opt.optim import SGD
from tinygrad_opt.optim.lr_scheduler import CosineAnnealingLR


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 epochs, for tests")
    parser.add_argument("--out", default="out", help="folder for the figure (default: out)")
    args = parser.parse_args(argv)

    # settings
    epochs, hidden, lr, batch_size = (2 if args.quick else 15), 64, 0.05, 32
    tg.manual_seed(0)

    # data: 1,797 images of 64 pixels in [0, 1]; 20% held out, class shares kept
    X, y = data.load_digits()
    (X_train, y_train), (X_val, y_val) = data.train_val_split(X, y, 0.2, seed=0, stratify=True)
    loader = data.DataLoader(X_train, y_train, batch_size=batch_size, seed=0)

    # model and optimizer
    model = nn.MLP([64, hidden, 10], activation="relu")
    opt = SGD(model.parameters(), lr=lr, momentum=0.9, nesterov=True)
    schedule = CosineAnnealingLR(opt, T_max=epochs * len(loader))

    # loop
    step_losses, val_accs = [], []
    for epoch in range(epochs):
        model.train()
        for xb, yb in loader:
            opt.zero_grad()
            loss = F.cross_entropy(model(xb), yb)
            loss.backward()
            opt.step()
            schedule.step()
            step_losses.append(loss.item())
        model.eval()
        with tg.no_grad():
            logits = model(tg.Tensor(X_val))
        val_accs.append(float((logits.numpy().argmax(axis=1) == y_val).mean()))
        print(f"epoch {epoch + 1:2d}  last loss {step_losses[-1]:.4f}  "
              f"val accuracy {100 * val_accs[-1]:.2f}%")

    # result
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "train_digits.png")
    plot(step_losses, val_accs, len(loader), path)
    print(f"final validation accuracy {100 * val_accs[-1]:.2f}% (chance: 10%); wrote {path}")
    return {"val_acc": val_accs[-1], "losses": step_losses}


def plot(step_losses, val_accs, steps_per_epoch, path):
    from matplotlib.figure import Figure
    fig = Figure(figsize=(10, 3.8), layout="constrained")
    ax1, ax2 = fig.subplots(1, 2)
    ax1.plot(np.arange(1, len(step_losses) + 1) / steps_per_epoch, step_losses, lw=0.8)
    ax1.set(xlabel="epoch", ylabel="minibatch loss", yscale="log", title="Training loss")
    ax2.plot(np.arange(1, len(val_accs) + 1), 100 * np.array(val_accs), "o-")
    ax2.set(xlabel="epoch", ylabel="accuracy (%)", title="Validation accuracy")
    fig.savefig(path, dpi=100)


if __name__ == "__main__":
    main()
