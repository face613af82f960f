"""Crash consistency: kill -9 a syncing process at many exact points, then check everything.

Each round starts from a committed tree, changes it at random into a new tree (files
rewritten, patched, grown, truncated, copied, added and deleted, dirs and symlinks added
and removed), and syncs the new tree in a child process (``tests/crashsync.py``) that
SIGKILLs itself at one exact step of the sync: before a put, while the local store's temp
file holds the object's bytes, or after the put; the steps cover every blob upload, the
manifest's put and the moment just after it. Some rounds are killed from outside at a
random moment instead. After each kill:

1. restore (hash-verified, no checkpoint skipped as damaged) gives exactly the previous
   committed tree, or exactly the new one when the manifest made it: never a mix;
2. ``collect_garbage(min_age=0)`` leaves no unreferenced blob, no leftover temp object,
   and every blob a manifest names; the newest checkpoint still restores exactly;
3. a fresh process syncs the new tree to completion, and it restores exactly.

Rounds alternate between packing small files (one pack put for all new chunks) and
storing every chunk as a blob, so checkpoints mix both.

The random seed is new each run unless ``SPOT_AGENT_CRASH_SEED`` is set; every failure
message names it, so a failing run can be replayed exactly.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest

from checkpoint.engine.checkpointer import Checkpointer
from checkpoint.engine.format.hashes import new_id
from checkpoint.engine.format.jobstore import JobStore
from checkpoint.engine.format.manifest import Chunk, FileEntry
from checkpoint.engine.gc import collect_garbage
from checkpoint.engine.save.repack import Packs
from checkpoint.engine.save.upload import PACK_THRESHOLD, Stored
from checkpoint.engine.store.base import LocalStore, Store
from tests.crashsync import Tree, chunk_hashes, read_tree
from tests.stores import kind_of

REPO = Path(__file__).resolve().parents[2]
CHUNK = 4096
JOB = "crash"
#: kinds of kill point, taken in turn: anywhere in the sync, around the manifest's put
#: (the last blob's completion and every step of the manifest), right after the manifest
#: is in place, and a kill from outside at a random moment.
KINDS = ("anywhere", "manifest", "anywhere", "after-manifest", "timed")
#: what a round does to the tree ("add" twice as often: the tree must grow some)
OPS = (
    *("rewrite", "patch", "append", "add", "add", "copy", "delete", "truncate"),
    *("dir", "link", "unlink", "state"),
)


def seed_for(name: str) -> int:
    fixed = os.environ.get("SPOT_AGENT_CRASH_SEED")
    seed = int(fixed) if fixed else random.SystemRandom().randrange(1 << 32)
    print(f"{name}: seed {seed} (replay with SPOT_AGENT_CRASH_SEED={seed})")
    return seed


def initial_tree(rng: random.Random) -> Tree:
    t = Tree(dirs={"empty0"})
    t.files["state.json"] = b'{"step": 0}'
    t.files["f0.bin"] = rng.randbytes(3 * CHUNK + 100)
    t.files["d0/f1.bin"] = rng.randbytes(CHUNK // 2)
    t.files["d1/deep/f2.bin"] = rng.randbytes(5 * CHUNK)
    t.files["zero"] = b""
    t.links["l0"] = "d0/f1.bin"
    return t


def mutate(rng: random.Random, old: Tree, n: int) -> Tree:
    """A random job's worth of changes; never none."""
    t = old.copy()
    while t.normalized() == old.normalized():
        for _ in range(rng.randint(1, 4)):
            names = sorted(t.files)
            op = rng.choice(OPS)
            if len(names) > 12:
                op = "delete"
            name = rng.choice(names)
            if op == "rewrite":
                t.files[name] = rng.randbytes(rng.randint(0, 5 * CHUNK + 50))
            elif op == "patch" and t.files[name]:
                data = bytearray(t.files[name])
                at = rng.randrange(len(data))
                data[at] ^= 0xFF
                t.files[name] = bytes(data)
            elif op == "append":
                t.files[name] += rng.randbytes(rng.randint(1, 3 * CHUNK))
            elif op == "add":
                where = rng.choice(["", "d0/", "d1/", "d1/deep/", "d2/"])
                t.files[f"{where}f{n}-{rng.randrange(1000)}.bin"] = rng.randbytes(
                    rng.randint(1, 4 * CHUNK)
                )
            elif op == "copy":  # same content under another name: no new blob
                t.files[f"copy{n}-{rng.randrange(1000)}"] = t.files[name]
            elif op == "delete" and len(names) > 2:
                del t.files[name]
            elif op == "truncate":
                t.files[name] = b""
            elif op == "dir":
                if len(t.dirs) > 3:
                    t.dirs.discard(sorted(t.dirs)[0])
                else:
                    t.dirs.add(f"empty{n}")
            elif op == "link":
                t.links[f"l{n}"] = name
            elif op == "unlink" and t.links:
                del t.links[rng.choice(sorted(t.links))]
            elif op == "state":
                t.files["state.json"] = json.dumps({"step": n}).encode()
    return t


class Rounds:
    """Drives the rounds against one store; ``k`` steps per put (3 local, 2 on S3)."""

    def __init__(self, tmp: Path, store: Store, k: int, seed: int, env: dict[str, str]) -> None:
        self.tmp = tmp
        self.store = store
        self.job = JobStore(store, JOB)
        self.k = k
        self.seed = seed
        self.env = env
        self.rng = random.Random(seed)
        self.work = tmp / "work"
        self.committed = Tree()
        self.n = 0
        self.outcomes: dict[str, int] = {}

    def where(self, extra: str = "") -> str:
        return f"[seed {self.seed}, round {self.n}{', ' + extra if extra else ''}]"

    def expected_puts(self, new: Tree, packs: bool) -> int:
        """Puts of a sync from the newest checkpoint to ``new``: new chunks, then the manifest.

        With packs, all new chunks go into one pack, and so do those repacked out of packs
        that ``new`` would reference less than half of (checkpoint.engine.save.repack).
        """
        stored = Stored()
        sizes = Packs()
        if self.job.sequences():
            base = self.job.load_manifest(self.job.sequences()[-1])
            sizes.take_base(base)
            for c in base.chunks():
                if c.pack is None and not c.is_hole:
                    stored.blobs.add(c.digest)
                elif c.pack is not None:
                    stored.packed.setdefault(c.digest, (c.pack, c.offset))
        uploads = chunk_hashes(new, CHUNK) - stored.hashes()
        if not packs:
            return len(uploads) + 1
        assert all(len(d) < PACK_THRESHOLD for d in new.files.values()), self.where()
        entries = [
            FileEntry(
                path,
                len(data),
                0,
                0,
                tuple(
                    Chunk(new_id(data[i : i + CHUNK]), len(data[i : i + CHUNK]))
                    for i in range(0, len(data), CHUNK)
                ),
            )
            for path, data in new.files.items()
        ]
        return (1 if uploads or sizes.sparse(entries, stored) else 0) + 1

    def spawn(
        self, tree: Tree, kill_at: int, put_delay: float = 0.0, packs: bool = True
    ) -> subprocess.Popen[str]:
        tree_file = self.tmp / "tree.json"
        tree_file.write_text(tree.to_json())
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.crashsync",
                self.store.uri,
                JOB,
                str(self.work),
                str(tree_file),
                str(kill_at),
                str(put_delay),
                str(CHUNK),
                str(PACK_THRESHOLD if packs else 0),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=REPO,
            env=self.env,
        )

    def restore_fresh(self, what: str) -> tuple[int | None, Tree]:
        self.n_restores = getattr(self, "n_restores", 0) + 1
        dst = self.tmp / f"restored-{self.n}-{self.n_restores}"
        res = Checkpointer(JobStore(self.store, JOB), dst, chunk_size=CHUNK).restore()
        assert not res.skipped, f"{what}: a checkpoint was skipped as damaged {res.skipped}"
        return (res.manifest.sequence if res.manifest else None), read_tree(dst)

    def first(self) -> None:
        """Commit the starting tree, with the same program and no kill."""
        self.committed = initial_tree(self.rng)
        self.recover(self.committed, "initial sync")

    def recover(self, tree: Tree, what: str) -> None:
        proc = self.spawn(tree, -1)
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, f"{what}: the fresh sync failed {self.where()}\n{out}{err}"
        seq, got = self.restore_fresh(what)
        assert got.normalized() == tree.normalized(), (
            f"{what}: restored tree differs {self.where()}"
        )
        assert seq == self.job.sequences()[-1]

    def round(self) -> None:
        self.n += 1
        kind = KINDS[self.n % len(KINDS)]
        old, new = self.committed, mutate(self.rng, self.committed, self.n)
        packs = self.n % 2 == 1
        puts = self.expected_puts(new, packs)  # blobs or one pack, + the manifest
        total = puts * self.k
        if kind == "anywhere":
            kill_at = self.rng.randrange(total)
        elif kind == "manifest":
            kill_at = self.rng.randrange(max(total - self.k - 1, 0), total - 1)
        elif kind == "after-manifest":
            kill_at = total - 1
        else:
            kill_at = -1
        how = "packed" if packs else "blobs"
        where = self.where(f"{kind}, {how}, kill at step {kill_at} of {total}, {puts} puts")
        before = self.job.sequences()

        proc = self.spawn(new, kill_at, put_delay=0.004 if kind == "timed" else 0.0, packs=packs)
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if kind == "timed":
            assert line.strip() == "syncing", f"{where}: {line}{proc.communicate()}"
            time.sleep(self.rng.uniform(0, 0.004 * puts / 3 + 0.006))
            proc.send_signal(signal.SIGKILL)
        out, err = proc.communicate(timeout=60)
        if kind != "timed":
            assert proc.returncode == -signal.SIGKILL, (
                f"{where}: the kill point was not reached (rc {proc.returncode})\n{line}{out}{err}"
            )

        after = self.job.sequences()
        if after == before:
            outcome = "old"
        else:
            assert after == [*before, before[-1] + 1], f"{where}: sequences {before} -> {after}"
            outcome = "new"
        if kind != "timed":
            expected_outcome = "new" if kill_at == total - 1 else "old"
            assert outcome == expected_outcome, f"{where}: the commit is {outcome}"
        self.outcomes[f"{kind}:{outcome}"] = self.outcomes.get(f"{kind}:{outcome}", 0) + 1
        expect = new if outcome == "new" else old

        # 1. all or nothing, hash-verified
        seq, got = self.restore_fresh("restore after the kill")
        assert seq == after[-1], f"{where}: restored {seq}, newest is {after[-1]}"
        assert got.normalized() == expect.normalized(), (
            f"{where}: restore after the kill gives neither tree exactly "
            f"(expected the {outcome} one)"
        )

        # 2. gc removes the orphans, and everything a manifest names is still there
        collect_garbage(self.job, min_age=timedelta(0))
        referenced: set[str] = set()
        referenced_packs: set[str] = set()
        for s in self.job.sequences():
            manifest = self.job.load_manifest(s)
            referenced |= {self.job.blob_key(d) for d in manifest.stored_blobs()}
            referenced_packs |= {self.job.pack_key(p) for p in manifest.pack_ids()}
        blobs = {o.key for o in self.store.list_objects(f"{JOB}/blobs/")}
        assert blobs == referenced, (
            f"{where}: after gc, orphans {len(blobs - referenced)}, "
            f"missing {len(referenced - blobs)}"
        )
        stored_packs = {o.key for o in self.store.list_objects(f"{JOB}/packs/")}
        assert stored_packs == referenced_packs, (
            f"{where}: after gc, orphan packs {len(stored_packs - referenced_packs)}, "
            f"missing {len(referenced_packs - stored_packs)}"
        )
        if isinstance(self.store, LocalStore):
            leftovers = [
                str(p.relative_to(self.store.root))
                for p in (self.store.root / JOB).rglob("*")
                if p.is_file() and p.name.endswith(".tmp")
            ]
            assert not leftovers, f"{where}: gc left partial uploads behind: {leftovers}"
        seq2, got2 = self.restore_fresh("restore after gc")
        assert (seq2, got2.normalized()) == (seq, expect.normalized()), f"{where}: after gc"

        # 3. a fresh process completes the sync, and it restores exactly
        if self.n % 7 == 0:
            import shutil

            shutil.rmtree(self.work)  # the next attempt runs on a new machine
        self.recover(new, f"sync after the kill {where}")
        self.committed = new


def run_rounds(rounds: Rounds, count: int) -> None:
    # No wall-clock budget: a loaded machine must not fail a correct run (time is printed).
    started = time.monotonic()
    rounds.first()
    for _ in range(count):
        rounds.round()
    took = time.monotonic() - started
    print(f"{count} kills in {took:.1f}s: {sorted(rounds.outcomes.items())}")
    kinds = {k.split(":")[0] for k in rounds.outcomes}
    assert kinds == set(KINDS), rounds.where()
    assert "after-manifest:new" in rounds.outcomes and "manifest:old" in rounds.outcomes


#: per kind of store: the ``k`` of :class:`Rounds` and how many kills (S3 rounds are slower)
KILLS = {"local": (3, 60), "s3": (2, 10)}


@pytest.mark.parametrize(
    "store_url", [pytest.param("local", marks=pytest.mark.long), "s3"], indirect=True
)
def test_kill_9_at_many_points_of_a_sync(tmp_path: Path, store_url: str, any_store: Store) -> None:
    kind = kind_of(store_url)
    k, kills = KILLS[kind]
    seed = seed_for(kind)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    run_rounds(Rounds(tmp_path, any_store, k, seed, env), kills)
