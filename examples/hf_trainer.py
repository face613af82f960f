"""A Hugging Face Trainer job under spot-agent: a tiny BERT classifier on random data, on the CPU.

One callback (``checkpoint.hf.SpotAgentCallback``) makes each save of the Trainer a save
point and turns the stop signal into "save this step, then stop"; ``last_checkpoint`` picks
the ``checkpoint-N/`` to resume from. Nothing is downloaded: the model is built from a
``BertConfig``.

    spot-agent run --job-id bert -- python examples/hf_trainer.py --steps 40

Interrupted and resumed any number of times, it prints the same final line as an
uninterrupted run: the loss of every step and a digest of the final weights, bit for bit
(seeded, ``full_determinism``, the data order fixed by the seed, no loader workers).
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import time
from typing import Any

import torch
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    Trainer,
    TrainerCallback,
    TrainingArguments,
)

import checkpoint
import checkpoint.hf


class StepDelay(TrainerCallback):
    """Slows each step down, so that a rehearsal can interrupt the job mid-run."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def on_step_end(self, *_: Any, **__: Any) -> None:
        time.sleep(self.seconds)


def dataset(n: int = 64, length: int = 8, vocab: int = 32) -> list[dict[str, torch.Tensor]]:
    """Random tokens and labels, the same on every attempt (not part of the state)."""
    gen = torch.Generator().manual_seed(1234)
    ids = torch.randint(0, vocab, (n, length), generator=gen)
    labels = torch.randint(0, 2, (n,), generator=gen)
    return [{"input_ids": ids[i], "labels": labels[i]} for i in range(n)]


def digest(model: torch.nn.Module) -> str:
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--save-steps", type=int, default=5)
    ap.add_argument("--save-total-limit", type=int, default=None)
    ap.add_argument("--step-delay", type=float, default=0.0, help="sleep per step (rehearsals)")
    args = ap.parse_args()

    output_dir = str(checkpoint.directory() / "trainer")
    training = TrainingArguments(
        output_dir=output_dir,
        max_steps=args.steps,
        per_device_train_batch_size=8,
        learning_rate=1e-3,
        save_strategy="steps",
        save_steps=args.save_steps,
        save_total_limit=args.save_total_limit,
        logging_steps=1,
        seed=7,
        full_determinism=True,  # seeds everything, torch.use_deterministic_algorithms(True)
        dataloader_num_workers=0,
        use_cpu=True,
        report_to="none",
        disable_tqdm=True,
    )
    torch.manual_seed(7)  # the initial weights; a resume loads them from the checkpoint
    config = BertConfig(
        vocab_size=32,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=16,
    )
    model = BertForSequenceClassification(config)
    callbacks: list[TrainerCallback] = [checkpoint.hf.SpotAgentCallback()]
    if args.step_delay:
        callbacks.append(StepDelay(args.step_delay))
    trainer = Trainer(model=model, args=training, train_dataset=dataset(), callbacks=callbacks)
    resume = checkpoint.hf.last_checkpoint(output_dir)
    print(f"resuming from {resume}", flush=True)
    trainer.train(resume_from_checkpoint=resume)

    step = trainer.state.global_step
    if checkpoint.interrupted():  # saved checkpoint-{step}/; the agent commits it
        print(f"stopped at step {step}", flush=True)
        return 0
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    loss_digest = hashlib.sha256(repr(losses).encode()).hexdigest()[:16]
    print(
        f"final step={step} loss={losses[-1]!r} losses={loss_digest} weights={digest(model)}",
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
