"""A training loop in miniature: model, optimizer and RNG state saved together, resumed exactly.

It fits a linear model to synthetic data with minibatch SGD and momentum, in plain Python.
Its state is three files, as a PyTorch job's would be (model weights, optimizer state, the
RNG that draws the minibatches); they only make sense together, so they are saved in one
save point (``checkpoint.saving()``): a checkpoint never holds the model of one step with
the optimizer of another. The stop signal sets a flag (``checkpoint.interrupted()``), so an
interruption ends the loop after a whole step and a whole save.

    spot-agent run --job-id train -- python examples/training.py --steps 3000

Interrupted and resumed any number of times, it prints the same final line, bit for bit, as
an uninterrupted run.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from typing import Any

import checkpoint

FEATURES = 8


def dataset(n: int = 512) -> list[tuple[list[float], float]]:
    """Fixed synthetic data: the same on every attempt, so it is not part of the state."""
    gen = random.Random(1234)
    true_w = [gen.uniform(-2, 2) for _ in range(FEATURES)]
    rows = []
    for _ in range(n):
        x = [gen.gauss(0, 1) for _ in range(FEATURES)]
        rows.append((x, sum(a * b for a, b in zip(x, true_w, strict=True)) + gen.gauss(0, 0.1)))
    return rows


def load_state() -> tuple[list[float], dict[str, Any], random.Random]:
    weights = checkpoint.load_json("model.json", default=[0.0] * FEATURES)
    fresh = {"step": 0, "loss": None, "momentum": [0.0] * FEATURES}
    optim = checkpoint.load_json("optimizer.json", default=fresh)
    rng = random.Random(42)
    saved = checkpoint.load_json("rng.json")
    if saved is not None:
        rng.setstate((saved[0], tuple(saved[1]), saved[2]))
    return weights, optim, rng


def save_state(weights: list[float], optim: dict[str, Any], rng: random.Random) -> None:
    with checkpoint.saving():  # three files, one save
        checkpoint.save_json("model.json", weights)
        checkpoint.save_json("optimizer.json", optim)
        with checkpoint.atomic_write("rng.json", "w") as fh:
            json.dump(rng.getstate(), fh)
    checkpoint.report_progress(step=optim["step"])


def train_step(
    weights: list[float], optim: dict[str, Any], rng: random.Random, data: list[Any], lr: float
) -> float:
    batch = [data[rng.randrange(len(data))] for _ in range(16)]
    grad = [0.0] * FEATURES
    loss = 0.0
    for x, y in batch:
        err = sum(a * b for a, b in zip(x, weights, strict=True)) - y
        loss += err * err / len(batch)
        for i in range(FEATURES):
            grad[i] += 2 * err * x[i] / len(batch)
    mom = optim["momentum"]
    for i in range(FEATURES):
        mom[i] = 0.9 * mom[i] + grad[i]
        weights[i] -= lr * mom[i]
    optim["step"] += 1
    optim["loss"] = loss
    return loss


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--save-every", type=int, default=25, help="steps between saves")
    ap.add_argument("--lr", type=float, default=0.01)
    ap.add_argument("--step-delay", type=float, default=0.0, help="sleep per step (rehearsals)")
    args = ap.parse_args()
    data = dataset()
    weights, optim, rng = load_state()
    print(f"resuming at step {optim['step']}", flush=True)
    while optim["step"] < args.steps and not checkpoint.interrupted():
        train_step(weights, optim, rng, data, args.lr)
        if args.step_delay:
            time.sleep(args.step_delay)
        if optim["step"] % args.save_every == 0 or optim["step"] == args.steps:
            save_state(weights, optim, rng)
            checkpoint.request_sync()
    if optim["step"] < args.steps:  # stopped early: save where we are, report the signal
        save_state(weights, optim, rng)
        print(f"stopped at step {optim['step']}", flush=True)
        sig = checkpoint.stop_requested()
        return 128 + sig if sig else 0
    digest = ",".join(w.hex() for w in weights)
    print(f"final step={optim['step']} loss={optim['loss']!r} weights={digest}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
