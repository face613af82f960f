"""A job that saves its state as four files that only make sense together.

Each generation writes ``model.bin``, ``optim.bin``, ``rng.bin`` and ``meta.json``, each
atomically, 30 ms apart, then asks for a checkpoint. Every file starts with the generation
number, so a checkpoint that mixes two saves is seen at once.

    python savepointjob.py api|plain GENERATIONS

``api``: the four writes are one save point (``with checkpoint.saving():``) and the stop
signal sets a flag (``checkpoint.interrupted()``). ``plain``: what the README suggested
before save points: four atomic writes and ``request_sync()``.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time

import checkpoint

NAMES = ("model.bin", "optim.bin", "rng.bin", "meta.json")


def generation_of(data: bytes | None) -> int:
    return int(data.split(b"\n", 1)[0]) if data else 0


def main() -> int:
    mode, generations = sys.argv[1], int(sys.argv[2])
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
