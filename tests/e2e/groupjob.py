"""A multi-node training job for the group tests: run by ``torchrun`` on every node.

A tiny linear model trained with gloo on the CPU; gradients are averaged across ranks, so
every rank holds the same weights. Every ``SAVE_EVERY`` steps it saves with
``torch.distributed.checkpoint`` into ``step-<n>/`` inside a save point labelled with the
step (rank 0 writes ``.metadata``, each rank its own shard), and keeps the newest two.
Every step the ranks agree (an all-reduce) on whether any was told to stop: then all save
the same step and exit. At the end rank 0 prints ``FINAL <weights as hex>``.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp

import checkpoint

STEPS = int(os.environ.get("GROUP_JOB_STEPS", "30"))
SAVE_EVERY = int(os.environ.get("GROUP_JOB_SAVE_EVERY", "5"))
STEP_SECONDS = float(os.environ.get("GROUP_JOB_STEP_SECONDS", "0.1"))
#: after its last save, this rank waits this long before it exits (a window to kill it in)
LINGER = float(os.environ.get("GROUP_JOB_LINGER", "0"))


def step_dirs(root: Path) -> list[Path]:
    return sorted(p for p in root.glob("step-*") if (p / ".metadata").exists())


def save(root: Path, model: torch.nn.Module, step: int) -> None:
    target = root / f"step-{step:06d}"
    with checkpoint.saving(label=step):
        dcp.save({"model": model.state_dict(), "step": torch.tensor(step)}, checkpoint_id=target)
        for old in sorted(root.glob("step-*"))[:-2]:
            shutil.rmtree(old)
    print(f"rank {dist.get_rank()} saved step {step}", flush=True)


def main() -> int:
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    root = checkpoint.directory()
    torch.manual_seed(0)
    model = torch.nn.Linear(8, 1)
    start = 0
    found = step_dirs(root)
    if found:
        state = {"model": model.state_dict(), "step": torch.tensor(0)}
        dcp.load(state, checkpoint_id=found[-1])
        model.load_state_dict(state["model"])
        start = int(state["step"])
        print(f"rank {rank} resumed at step {start}", flush=True)
    checkpoint.handle_stop()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    for step in range(start, STEPS):
        stop = torch.tensor([1 if checkpoint.interrupted() else 0])
        dist.all_reduce(stop, op=dist.ReduceOp.MAX)
        if stop.item():
            save(root, model, step)
            print(f"rank {rank} stopping at step {step}", flush=True)
            time.sleep(LINGER)
            dist.destroy_process_group()
            return 0
        gen = torch.Generator().manual_seed(step * 1000 + rank)
        x = torch.randn(16, 8, generator=gen)
        y = x.sum(dim=1, keepdim=True)
        opt.zero_grad()
        torch.nn.functional.mse_loss(model(x), y).backward()
        for p in model.parameters():
            assert p.grad is not None
            dist.all_reduce(p.grad)
            p.grad /= dist.get_world_size()
        opt.step()
        time.sleep(STEP_SECONDS)
        if (step + 1) % SAVE_EVERY == 0:
            save(root, model, step + 1)
    if rank == 0:
        flat = torch.cat([p.detach().flatten() for p in model.parameters()])
        print("FINAL " + flat.numpy().tobytes().hex(), flush=True)
    dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
