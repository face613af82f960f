"""A job that saves its state as four files that only make sense together.

Each generation writes ``model.bin``, ``optim.bin``, ``rng.bin`` and ``meta.json``, each
atomically, 30 ms apart, then asks for a checkpoint. Every file starts with the generation
number, so a checkpoint that mixes two saves is seen at once.

    python savepointjob.py api|plain|sqlite|trainer GENERATIONS

``api``: the four writes are one save point (``with checkpoint.saving():``) and the stop
signal sets a flag (``checkpoint.interrupted()``). ``plain``: what the README suggested
before save points: four atomic writes and ``request_sync()``. ``sqlite``: one transaction
per save point into a SQLite database in WAL mode (database, -wal and -shm rewritten in
place, -shm through mmap). ``trainer``: Hugging Face Trainer's layout, a ``checkpoint-N/``
directory of six files written in place per save, the older ones deleted beyond two.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
import sys
import time

import checkpoint

NAMES = ("model.bin", "optim.bin", "rng.bin", "meta.json")


def generation_of(data: bytes | None) -> int:
    return int(data.split(b"\n", 1)[0]) if data else 0


TRAINER_FILES = (
    "model.safetensors",
    "optimizer.pt",
    "scheduler.pt",
    "rng_state.pth",
    "trainer_state.json",
    "training_args.bin",
)


def sqlite_job(generations: int) -> int:
    checkpoint.handle_stop()
    with checkpoint.saving():
        conn = sqlite3.connect(checkpoint.directory() / "tx.db", isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("CREATE TABLE IF NOT EXISTS tx (n INTEGER PRIMARY KEY, payload BLOB)")
        (n,) = conn.execute("SELECT COALESCE(MAX(n), 0) FROM tx").fetchone()
    print(f"pid {os.getpid()} start {n}", flush=True)
    while n < generations and not checkpoint.interrupted():
        n += 1
        with checkpoint.saving():
            conn.execute("BEGIN")
            conn.execute("INSERT INTO tx VALUES (?, ?)", (n, os.urandom(3000)))
            time.sleep(0.01)
            conn.execute("COMMIT")
        print(f"committed {n}", flush=True)
        checkpoint.request_sync()
    with checkpoint.saving():
        conn.close()
    print(f"stopped {n}", flush=True)
    return 0


def trainer_job(generations: int) -> int:
    checkpoint.handle_stop()
    root = checkpoint.directory()
    kept = sorted(int(p.name.split("-")[1]) for p in root.glob("checkpoint-*"))
    step = kept[-1] if kept else 0
    print(f"pid {os.getpid()} start {step}", flush=True)
    while step < generations and not checkpoint.interrupted():
        step += 1
        with checkpoint.saving():
            out = root / f"checkpoint-{step}"
            out.mkdir()
            for name in TRAINER_FILES:  # written in place, as torch.save and json.dump do
                (out / name).write_bytes(f"{step}\n".encode() + os.urandom(2048))
                time.sleep(0.01)
            kept.append(step)
            while len(kept) > 2:  # save_total_limit=2
                shutil.rmtree(root / f"checkpoint-{kept.pop(0)}")
        checkpoint.request_sync()
    print(f"stopped {step}", flush=True)
    return 0


def main() -> int:
    mode, generations = sys.argv[1], int(sys.argv[2])
    if mode == "sqlite":
        return sqlite_job(generations)
    if mode == "trainer":
        return trainer_job(generations)
    save_point = checkpoint.saving if mode == "api" else contextlib.nullcontext
    if mode == "api":
        checkpoint.handle_stop()
    g = generation_of(checkpoint.load_bytes("meta.json"))
    print(f"pid {os.getpid()} start {g}", flush=True)
    while g < generations and not checkpoint.interrupted():
        g += 1
        print(f"saving {g}", flush=True)
        with save_point():
            for i, name in enumerate(NAMES):
                if i:
                    time.sleep(0.03)
                checkpoint.save_bytes(name, f"{g}\n".encode() + os.urandom(4096 * (i + 1)))
        print(f"saved {g}", flush=True)
        checkpoint.request_sync()
    print(f"stopped {g}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
