"""A syncing process that can SIGKILL itself at an exact step of its uploads.

    python -m tests.crashsync URI JOB WORKDIR TREE.json KILL_AT PUT_DELAY CHUNK_SIZE [PACKING
    [PAGED_ABOVE]]

It does what an agent does on a new attempt: claim an attempt, restore the newest
checkpoint into WORKDIR, then (as the job would) turn WORKDIR into the tree in TREE.json,
print ``syncing`` and sync it. Every put of the sync is counted in steps: one before the
put, one (local store only) when the object's bytes sit in their temp file but are not in
place yet, and one after the put. At step KILL_AT (``-1``: never) the process sends itself
SIGKILL, so the kill lands exactly there, whatever thread is uploading. The manifest is
always the last put of a sync, so its steps are the last ones. Small files' chunks go
into packs (one put for all of them when they fit one pack) unless PACKING (the pack
threshold) is 0. A manifest of more than PAGED_ABOVE entries is paged (format 4): its new
pages are put before it.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

RESERVED = ".spot-agent"


@dataclass
class Tree:
    """What a checkpoint dir holds: files (bytes), explicit dirs, symlinks (targets)."""

    files: dict[str, bytes] = field(default_factory=dict)
    dirs: set[str] = field(default_factory=set)
    links: dict[str, str] = field(default_factory=dict)

    def all_dirs(self) -> set[str]:
        out = set(self.dirs)
        for path in (*self.files, *self.links, *self.dirs):
            parts = path.split("/")[:-1]
            out |= {"/".join(parts[: i + 1]) for i in range(len(parts))}
        return out

    def to_json(self) -> str:
        return json.dumps(
            {
                "files": {k: v.hex() for k, v in self.files.items()},
                "dirs": sorted(self.dirs),
                "links": self.links,
            }
        )

    @classmethod
    def from_json(cls, text: str) -> Tree:
        doc = json.loads(text)
        return cls(
            {k: bytes.fromhex(v) for k, v in doc["files"].items()},
            set(doc["dirs"]),
            dict(doc["links"]),
        )

    def copy(self) -> Tree:
        return Tree(dict(self.files), set(self.dirs), dict(self.links))

    def normalized(self) -> tuple[dict[str, bytes], set[str], dict[str, str]]:
        return self.files, self.all_dirs(), self.links


def read_tree(root: Path) -> Tree:
    """What is in a dir now (the agent's reserved dir left out)."""
    t = Tree()

    def walk(rel: str) -> None:
        for e in sorted(os.scandir(root / rel if rel else root), key=lambda e: e.name):
            r = f"{rel}{e.name}"
            if r == RESERVED:
                continue
            if e.is_symlink():
                t.links[r] = os.readlink(e.path)
            elif e.is_dir():
                t.dirs.add(r)
                walk(r + "/")
            else:
                t.files[r] = Path(e.path).read_bytes()

    walk("")
    return t


def apply_tree(root: Path, t: Tree) -> None:
    """Make ``root`` hold exactly ``t``, touching only what differs (as a job would)."""
    root.mkdir(parents=True, exist_ok=True)
    keep_dirs = t.all_dirs()

    def prune(rel: str) -> None:
        for e in os.scandir(root / rel if rel else root):
            r = f"{rel}{e.name}"
            if r == RESERVED:
                continue
            if e.is_symlink():
                if t.links.get(r) != os.readlink(e.path):
                    os.unlink(e.path)
            elif e.is_dir():
                if r in keep_dirs:
                    prune(r + "/")
                else:
                    shutil.rmtree(e.path)
            elif r not in t.files:
                os.unlink(e.path)

    prune("")
    for d in sorted(keep_dirs):
        (root / d).mkdir(exist_ok=True)
    for rel, data in t.files.items():
        p = root / rel
        if not p.exists() or p.read_bytes() != data:
            p.write_bytes(data)
    for rel, target in t.links.items():
        if not os.path.lexists(root / rel):
            os.symlink(target, root / rel)


def chunk_hashes(t: Tree, chunk_size: int) -> set[str]:
    from checkpoint.engine.format.hashes import new_id

    return {
        new_id(data[i : i + chunk_size])
        for data in t.files.values()
        for i in range(0, len(data), chunk_size)
    }


def main(argv: list[str]) -> int:
    from checkpoint.engine.checkpointer import Checkpointer
    from checkpoint.engine.format.jobstore import JobStore
    from checkpoint.engine.store.base import ObjectInfo, Store
    from checkpoint.engine.store.uri import open_store

    uri, job_id, workdir, tree_file = argv[:4]
    kill_at, put_delay, chunk_size = int(argv[4]), float(argv[5]), int(argv[6])
    from checkpoint.engine.format.paged import PAGED_ABOVE
    from checkpoint.engine.save.upload import PACK_THRESHOLD

    pack_threshold = int(argv[7]) if len(argv) > 7 else PACK_THRESHOLD
    paged_above = int(argv[8]) if len(argv) > 8 else PAGED_ABOVE
    inner = open_store(uri)
    lock = threading.Lock()
    armed = False
    steps = 0

    def step() -> None:
        nonlocal steps
        if not armed:
            return
        with lock:
            n = steps
            steps += 1
        if n == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
            time.sleep(60)  # never reached: SIGKILL cannot be caught

    write_temp = getattr(inner, "_write_temp", None)
    if write_temp is not None:  # the local store: a step while the object is a temp file

        def _write_temp(path: Path, data: bytes) -> Path:
            tmp: Path = write_temp(path, data)
            step()
            return tmp

        inner._write_temp = _write_temp  # type: ignore[attr-defined]

    class Killing(Store):
        def __init__(self) -> None:
            self.uri = inner.uri
            self.concurrency = inner.concurrency

        def put_object(self, key: str, data: bytes, *, sha256: str | None = None) -> None:
            step()
            if put_delay:
                time.sleep(put_delay)
            inner.put_object(key, data, sha256=sha256)
            step()

        def put_object_if_absent(self, key: str, data: bytes) -> bool:
            step()
            ok = inner.put_object_if_absent(key, data)
            step()
            return ok

        def get_object(self, key: str, *, max_bytes: int | None = None) -> bytes:
            return inner.get_object(key, max_bytes=max_bytes)

        def get_range(self, key: str, start: int, length: int) -> bytes:
            return inner.get_range(key, start, length)

        def exists(self, key: str) -> bool:
            return inner.exists(key)

        def list_objects(self, prefix: str) -> Iterator[ObjectInfo]:
            return inner.list_objects(prefix)

        def delete_objects(self, keys: Iterable[str]) -> None:
            inner.delete_objects(keys)

        def check(self) -> None:
            inner.check()

    job = JobStore(Killing(), job_id)
    attempt = job.claim_attempt({"host": "crashsync"})
    work = Path(workdir)
    work.mkdir(parents=True, exist_ok=True)
    c = Checkpointer(
        job,
        work,
        attempt=attempt,
        chunk_size=chunk_size,
        pack_threshold=pack_threshold,
        paged_above=paged_above,
    )
    restored = c.restore()
    apply_tree(work, Tree.from_json(Path(tree_file).read_text()))
    print("syncing", flush=True)
    armed = True
    r = c.sync_once("crash-test")
    armed = False
    print(
        json.dumps(
            {
                "restored": restored.manifest.sequence if restored.manifest else None,
                "sequence": r.sequence,
                "chunks_uploaded": r.chunks_uploaded,
                "steps": steps,
            }
        ),
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
