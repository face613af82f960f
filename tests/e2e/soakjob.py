"""A small deterministic job that notices lost, duplicated or torn work: the soak test's.

    python soakjob.py STEPS STEP_DELAY

State lives in two files of ``CHECKPOINT_DIR``: ``z-log.txt``, one line appended per step,
and ``a-state.json`` (written atomically): the next step, how many bytes of the log it
covers, and a running sha256 chain over those lines. A checkpoint may catch the log ahead
of the state (the agent reads ``a-state.json`` first, and the log only grows), never
behind it. On start the job cuts the log back to what the state covers and checks it line
by line against the chain: a log shorter than the state says (work lost), a wrong or
repeated line (work duplicated or mixed) or a chain mismatch prints ``INCONSISTENT`` and
exits 3. At the end it writes ``result.json``: equal to :func:`expected` only if every step
was applied exactly once, in order.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sys
import time
from pathlib import Path

STATE = "a-state.json"
LOG = "z-log.txt"
ZERO = "0" * 64


def line_for(i: int) -> bytes:
    return f"{i} {hashlib.sha256(str(i).encode()).hexdigest()[:24]}\n".encode()


def chain(acc: str, line: bytes) -> str:
    return hashlib.sha256(acc.encode() + line).hexdigest()


def expected(steps: int) -> dict[str, object]:
    acc = ZERO
    log = b""
    for i in range(steps):
        acc = chain(acc, line_for(i))
        log += line_for(i)
    return {"steps": steps, "acc": acc, "log_sha256": hashlib.sha256(log).hexdigest()}


def main() -> int:
    import checkpoint

    steps, delay = int(sys.argv[1]), float(sys.argv[2])
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    root = Path(os.environ["CHECKPOINT_DIR"])
    state = checkpoint.load_json(STATE, default={"next": 0, "log_bytes": 0, "acc": ZERO})
    log_path = root / LOG
    data = log_path.read_bytes() if log_path.exists() else b""

    def inconsistent(why: str) -> int:
        print(f"INCONSISTENT: {why}; state {state}, log {len(data)} bytes", flush=True)
        return 3

    if len(data) < state["log_bytes"]:
        return inconsistent("the log is shorter than the state says: work lost")
    data = data[: state["log_bytes"]]
    acc = ZERO
    lines = data.splitlines(keepends=True)
    for i, line in enumerate(lines):
        if line != line_for(i):
            return inconsistent(f"line {i} is {line!r}: work duplicated or mixed")
        acc = chain(acc, line)
    if len(lines) != state["next"] or acc != state["acc"]:
        return inconsistent("the chain does not match the log")
    with open(log_path, "r+b" if log_path.exists() else "wb") as fh:
        fh.truncate(state["log_bytes"])
    print(f"resume {state['next']}", flush=True)

    with open(log_path, "ab") as log:
        i = state["next"]
        while i < steps and not stop:
            line = line_for(i)
            log.write(line)
            log.flush()
            acc = chain(acc, line)
            i += 1
            state = {"next": i, "log_bytes": state["log_bytes"] + len(line), "acc": acc}
            checkpoint.save_json(STATE, state)
            if i % 25 == 0:
                checkpoint.request_sync()
            time.sleep(delay)
    if i < steps:
        print(f"stopped at {i}", flush=True)
        return 0
    result = {
        "steps": steps,
        "acc": acc,
        "log_sha256": hashlib.sha256(log_path.read_bytes()).hexdigest(),
    }
    checkpoint.save_json("result.json", result)
    print(f"result {json.dumps(result)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
