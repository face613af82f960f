"""A Lightning job under spot-agent: a tiny regression model on random data, on the CPU.

One callback (``checkpoint.lightning.SpotAgentCallback``) makes each ``.ckpt`` the
Trainer writes a save point and turns the stop signal into "save this batch, then stop";
``last_checkpoint`` picks the file to resume from.

    spot-agent run --job-id fit -- python examples/lightning_fit.py --steps 40

Interrupted and resumed any number of times, it prints the same final line as an
uninterrupted run, bit for bit: ``seed_everything`` for the initial weights,
``deterministic=True``, no loader workers, no random numbers drawn while training, and
each step's minibatch a function of the step. Lightning stores neither the RNG states nor
the position in an epoch's data in its checkpoints (unless the dataloader has
``state_dict``/``load_state_dict``): after a resume mid-epoch, it starts the epoch's
dataloader again. And after a resume from a checkpoint saved at an epoch's last batch,
the checkpoints Lightning 2.6.6 writes count one epoch too few, so a ``max_epochs`` run
resumed from one of them trains an extra epoch; here the whole run is one epoch,
``max_steps`` long, and every save falls inside it.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import time
from typing import Any

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader, TensorDataset

import checkpoint
import checkpoint.lightning


class Regression(pl.LightningModule):
    def __init__(self, step_delay: float = 0.0) -> None:
        super().__init__()
        self.x, self.y = data()
        self.net = torch.nn.Sequential(
            torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1)
        )
        self.step_delay = step_delay
        self.losses: list[float] = []

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        rows = torch.arange(16) + 16 * (self.global_step % 4)  # the step's minibatch
        x, y = self.x[rows], self.y[rows]
        loss = torch.nn.functional.mse_loss(self.net(x), y)
        self.log("loss", loss)
        if self.step_delay:
            time.sleep(self.step_delay)
        return loss

    def configure_optimizers(self) -> Any:
        optimizer = torch.optim.Adam(self.parameters(), lr=0.01)
        schedule = torch.optim.lr_scheduler.StepLR(optimizer, step_size=10, gamma=0.5)
        return [optimizer], [schedule]


def data(n: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """Random inputs and targets, the same on every attempt (not part of the state)."""
    gen = torch.Generator().manual_seed(1234)
    x = torch.randn(n, 8, generator=gen)
    y = (x @ torch.randn(8, 1, generator=gen)).tanh() + 0.1 * torch.randn(n, 1, generator=gen)
    return x, y


class Steps(DataLoader[Any]):
    """One epoch of ``n`` steps; the model picks each step's data (see training_step), so
    the loader's position has nothing to restore (Lightning's test for a resumable one)."""

    def __init__(self, n: int) -> None:
        super().__init__(TensorDataset(torch.arange(n)), batch_size=1, num_workers=0)

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


def digest(model: torch.nn.Module) -> str:
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--save-every", type=int, default=5, help="steps between saves")
    ap.add_argument("--step-delay", type=float, default=0.0, help="sleep per step (rehearsals)")
    args = ap.parse_args()

    ckpt_dir = os.path.join(checkpoint.directory(), "lightning")
    pl.seed_everything(7, verbose=False)  # the initial weights; a resume loads them
    model = Regression(args.step_delay)
    trainer = pl.Trainer(
        max_steps=args.steps,
        accelerator="cpu",
        deterministic=True,
        default_root_dir=ckpt_dir,
        callbacks=[
            pl.callbacks.ModelCheckpoint(
                dirpath=ckpt_dir, every_n_train_steps=args.save_every, save_top_k=1
            ),
            checkpoint.lightning.SpotAgentCallback(),
        ],
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    resume = checkpoint.lightning.last_checkpoint(ckpt_dir)
    print(f"resuming from {resume}", flush=True)
    trainer.fit(model, Steps(args.steps + 1), ckpt_path=resume)

    if checkpoint.interrupted():  # saved interrupted.ckpt; the agent commits it
        print(f"stopped at step {trainer.global_step}", flush=True)
        return 0
    loss = float(trainer.callback_metrics["loss"])
    print(f"final step={trainer.global_step} loss={loss!r} weights={digest(model)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
