"""A job that keeps its own record of every whole save, to check what the agent gives back.

    python exactjob.py RECORD SAVES [HANG_IN] [DECLARE]

Each save writes ``ckpt-N/`` (four small files and one of 300 KiB, so that a sync both packs
and uploads whole blobs) and ``meta.json`` naming the save, and removes ``ckpt-(N-2)/``. Just
before a save is declared whole, the job appends the save's exact tree (every path and its
sha256) to ``RECORD``, a file outside the checkpoint dir that no restore touches.

``DECLARE``: ``saving`` (default) makes each save one ``checkpoint.saving()`` block;
``request:K`` writes the files one by one (each atomically, 10 ms apart) and calls
``checkpoint.request_sync()`` after every K-th save (and once at the start).

On start the job compares its dir with the record: it must be empty or exactly one recorded
save. It prints ``start SAVE`` (``start fresh``), ``cut-off told`` when the agent says the
dir holds a cut-off save (it then starts over), or ``SAW-UNCOMMITTED ...`` and exits 3.
``HANG_IN`` (a save number): in that save, after two files, print ``hanging N pid P`` and
wait to be killed.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import time
import uuid
from pathlib import Path

import checkpoint

SMALL = ("a.bin", "b.bin", "c.bin", "d.bin")
BIG = "weights.bin"


def tree(root: Path) -> dict[str, str]:
    """Every entry below root but the agent's own: path -> sha256 ("dir" for a directory)."""
    out: dict[str, str] = {}
    for dirpath, dirs, files in os.walk(root):
        rel = os.path.relpath(dirpath, root)
        if rel == ".":
            dirs[:] = [d for d in dirs if d != ".spot-agent"]
            rel = ""
        for d in dirs:
            out[os.path.join(rel, d)] = "dir"
        for f in files:
            out[os.path.join(rel, f)] = hashlib.sha256(Path(dirpath, f).read_bytes()).hexdigest()
    return out


def recorded(record: Path) -> dict[str, dict[str, str]]:
    saves: dict[str, dict[str, str]] = {}
    if record.exists():
        for line in record.read_text().splitlines():
            if line.endswith("}"):  # a line cut off by the kill is not a record
                doc = json.loads(line)
                saves[doc["id"]] = doc["tree"]
    return saves


def write_save(root: Path, n: int, save_id: str, hang: bool, record: Path, req: bool) -> None:
    out = root / f"ckpt-{n}"
    out.mkdir(exist_ok=True)
    for i, name in enumerate((*SMALL, BIG)):
        size = 300 << 10 if name == BIG else 2048
        checkpoint.save_bytes(f"ckpt-{n}/{name}", f"{save_id}\n".encode() + os.urandom(size))
        if hang and i == 1:
            print(f"hanging {n} pid {os.getpid()}", flush=True)
            while True:
                time.sleep(1)
        if req:
            time.sleep(0.01)
    shutil.rmtree(root / f"ckpt-{n - 2}", ignore_errors=True)
    checkpoint.save_json("meta.json", {"n": n, "id": save_id})
    with open(record, "a") as fh:  # before the save is whole: a kill after it is harmless
        fh.write(json.dumps({"id": save_id, "n": n, "tree": tree(root)}) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def main() -> int:
    record, saves = Path(sys.argv[1]), int(sys.argv[2])
    hang_in = int(sys.argv[3]) if len(sys.argv) > 3 and sys.argv[3] else 0
    declare = sys.argv[4] if len(sys.argv) > 4 else "saving"
    req = declare.startswith("request")
    every = int(declare.partition(":")[2] or 1)
    root = checkpoint.directory()
    found = tree(root)
    if os.environ.get("SPOT_AGENT_CUT_OFF_SAVE") == "1":
        print("cut-off told", flush=True)
        for entry in os.listdir(root):
            if entry != ".spot-agent":
                shutil.rmtree(root / entry, ignore_errors=True)
                Path(root / entry).unlink(missing_ok=True)
        found = {}
    meta = checkpoint.load_json("meta.json")
    if found:
        if meta is None or recorded(record).get(meta["id"]) != found:
            print(f"SAW-UNCOMMITTED {json.dumps(sorted(found))} meta {meta}", flush=True)
            return 3
        print(f"start {meta['id']} n {meta['n']}", flush=True)
    else:
        print("start fresh", flush=True)
    checkpoint.handle_stop()
    if req:
        checkpoint.request_sync()  # the state it starts from is whole: declared
    n = meta["n"] if found and meta else 0
    while n < saves and not checkpoint.interrupted():
        n += 1
        save_id = uuid.uuid4().hex[:12]
        if req:
            write_save(root, n, save_id, n == hang_in, record, req)
            if n % every == 0:
                checkpoint.request_sync()
        else:
            with checkpoint.saving():
                write_save(root, n, save_id, n == hang_in, record, req)
        print(f"saved {n} {save_id}", flush=True)
        time.sleep(0.02)
    print(f"stopped {n}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
