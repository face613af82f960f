"""Property: every committed checkpoint restores to the same tree (guarantee 7).

Hypothesis generates directory trees with names of any bytes but '/' and NUL, file and
directory modes, mtimes before 1970 and far ahead, sparse files, hard links and symlinks;
each is synced, restored into a fresh dir, changed, synced again and restored over the
first restore. Local store on tmpfs when there is one (fsync is then free): thousands of
cases in well under a minute.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from checkpoint.engine.checkpointer import Checkpointer
from checkpoint.engine.format.jobstore import JobStore
from checkpoint.engine.format.paged import PAGED_ABOVE
from checkpoint.engine.store.base import LocalStore
from checkpoint.protocol import RESERVED_DIR, TEMP_SUFFIX

EXAMPLES = 2000
CHUNK = 1024


def _name_ok(name: bytes) -> bool:
    return (
        name not in (b".", b"..")
        and not name.endswith(TEMP_SUFFIX.encode())
        and name != RESERVED_DIR.encode()
    )


NAMES = st.binary(min_size=1, max_size=6).map(lambda b: b.replace(b"/", b"_").replace(b"\0", b"-"))
NAMES = NAMES.filter(_name_ok)
MTIMES = st.integers(-(2**31) * 10**9, 2**33 * 10**9)  # 1901 to 2242: ext4 and tmpfs keep them
FILE_MODES = st.integers(0, 0o777).map(lambda m: m | 0o600)  # we must read what we sync
DIR_MODES = st.integers(0, 0o777).map(lambda m: m | 0o700)


@dataclass
class Spec:
    dirs: dict[bytes, int] = field(default_factory=dict)  # path -> mode
    files: dict[bytes, tuple[bytes, int, int, int]] = field(default_factory=dict)
    hardlinks: dict[bytes, bytes] = field(default_factory=dict)  # new name -> file
    links: dict[bytes, bytes] = field(default_factory=dict)  # path -> target


@st.composite
def specs(draw: st.DrawFn) -> Spec:
    spec = Spec()
    parents = [b""]
    taken: set[bytes] = set()
    for _ in range(draw(st.integers(0, 10))):
        kind = draw(st.sampled_from(["file", "file", "dir", "sparse", "hardlink", "symlink"]))
        parent = draw(st.sampled_from(parents))
        name = draw(NAMES)
        rel = parent + b"/" + name if parent else name
        if rel in taken:
            continue
        if kind == "dir":
            spec.dirs[rel] = draw(DIR_MODES)
            parents.append(rel)
        elif kind in ("file", "sparse"):
            data = draw(st.binary(max_size=3 * CHUNK))
            hole = draw(st.integers(0, 3)) * 16384 if kind == "sparse" else 0
            spec.files[rel] = (data, hole, draw(FILE_MODES), draw(MTIMES))
        elif kind == "hardlink":
            if not spec.files:
                continue
            spec.hardlinks[rel] = draw(st.sampled_from(sorted(spec.files)))
        else:
            parts = draw(st.lists(NAMES, min_size=1, max_size=2))
            spec.links[rel] = b"/".join(parts)
        taken.add(rel)
    return spec


def build(root: Path, spec: Spec) -> None:
    base = os.fsencode(root)
    for rel in spec.dirs:
        os.mkdir(os.path.join(base, rel), 0o700)
    for rel, (data, hole, mode, mtime) in spec.files.items():
        path = os.path.join(base, rel)
        with open(path, "wb") as fh:
            fh.seek(hole)  # a hole before the data (and a file all hole when data is empty)
            fh.write(data)
            fh.truncate(hole + len(data) + hole)
        os.chmod(path, mode)
        os.utime(path, ns=(mtime, mtime))
    for rel, target in spec.hardlinks.items():
        os.link(os.path.join(base, target), os.path.join(base, rel))
    for rel, target in spec.links.items():
        os.symlink(target, os.path.join(base, rel))
    for rel in sorted(spec.dirs, key=lambda r: r.count(b"/"), reverse=True):
        os.chmod(os.path.join(base, rel), spec.dirs[rel])


Tree = dict[bytes, tuple[object, ...]]


def read_tree(root: Path) -> Tree:
    """Everything a checkpoint promises to keep, by path; hard links as groups of names."""
    base = os.fsencode(root)
    out: Tree = {}
    names_of: dict[int, list[bytes]] = {}
    for dirpath, dirnames, filenames in os.walk(base):
        rel_dir = os.path.relpath(dirpath, base)
        if rel_dir == b".":
            dirnames[:] = [d for d in dirnames if d != RESERVED_DIR.encode()]
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            rel = os.path.normpath(os.path.join(rel_dir, name))
            st_ = os.lstat(path)
            if stat.S_ISLNK(st_.st_mode):
                out[rel] = ("link", os.readlink(path))
            elif stat.S_ISDIR(st_.st_mode):
                out[rel] = ("dir", stat.S_IMODE(st_.st_mode))
            else:
                with open(path, "rb") as fh:
                    data = fh.read()
                out[rel] = ("file", stat.S_IMODE(st_.st_mode), st_.st_mtime_ns, data)
                names_of.setdefault(st_.st_ino, []).append(rel)
    for names in names_of.values():
        for rel in names:
            out[rel] = (*out[rel], tuple(sorted(names)))
    return out


def only(tree: Tree, paths: set[bytes]) -> Tree:
    """The tree's entries at ``paths``; restore leaves files the checkpoint lacks (extras)."""
    out = {}
    for rel, entry in tree.items():
        if rel in paths:
            if entry[0] == "file":
                names = tuple(n for n in entry[-1] if n in paths)  # type: ignore[union-attr]
                entry = (*entry[:-1], names)
            out[rel] = entry
    return out


def mutate(root: Path, spec: Spec) -> None:
    """Change the tree a little: rewrite one file, remove one entry."""
    base = os.fsencode(root)
    files = sorted(spec.files)
    if files:
        path = os.path.join(base, files[0])
        with open(path, "ab") as fh:
            fh.write(b"more")
    leaves = sorted(spec.links) + sorted(spec.hardlinks)
    if leaves:
        os.unlink(os.path.join(base, leaves[-1]))


@pytest.fixture(scope="module")
def scratch() -> Iterator[Path]:
    shm = Path("/dev/shm")
    parent = shm if shm.is_dir() and os.access(shm, os.W_OK) else None
    path = Path(tempfile.mkdtemp(prefix="spot-agent-prop-", dir=parent))
    yield path
    _force_rmtree(path)


def _force_rmtree(path: Path) -> None:
    for dirpath, dirnames, _ in os.walk(path):
        for d in dirnames:
            os.chmod(os.path.join(dirpath, d), 0o700)
    shutil.rmtree(path, ignore_errors=True)


_cases = itertools.count()


@pytest.mark.long
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(spec=specs())
def test_every_committed_checkpoint_restores_to_the_same_tree(scratch: Path, spec: Spec) -> None:
    roundtrip(scratch, spec, PAGED_ABOVE)


@pytest.mark.long
@settings(
    max_examples=EXAMPLES // 4,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(spec=specs())
def test_every_paged_checkpoint_restores_to_the_same_tree(scratch: Path, spec: Spec) -> None:
    """The same on a paged manifest (format 4, or 5 with data): every manifest paged,
    however small."""
    roundtrip(scratch, spec, 0)


def roundtrip(scratch: Path, spec: Spec, paged_above: int) -> None:
    case = scratch / str(next(_cases))
    src, dst = case / "src", case / "dst"
    src.mkdir(parents=True)
    store = LocalStore(case / "store")
    try:
        build(src, spec)
        first = read_tree(src)
        job = JobStore(store, "job")
        sync = Checkpointer(job, src, attempt=1, chunk_size=CHUNK, paged_above=paged_above)
        assert sync.sync_once("first").sequence == 1
        # any data is named by BLAKE3: format 5 (a tree of holes and empty files alone is
        # stored as formats 1 to 4 store it)
        m1 = job.load_manifest(1)
        paged = len(m1.files) + len(m1.dirs) + len(m1.links) + len(m1.hardlinks) > paged_above
        fmt = json.loads(store.get_object(job.manifest_key(1)))["format"]
        assert fmt == (5 if any(not c.is_hole for c in m1.chunks()) else 4 if paged else 3)
        restore = Checkpointer(job, dst, attempt=2, chunk_size=CHUNK)
        r = restore.restore()
        assert r.manifest is not None and not r.skipped
        assert read_tree(dst) == first

        mutate(src, spec)
        second = read_tree(src)
        seq = sync.sync_once("second").sequence
        r = restore.restore()  # over the first restore: files kept, replaced, or left extra
        if seq is not None:
            assert only(read_tree(dst), set(second)) == second
            assert r.extra_files <= len(first)
        sync.close()
        restore.close()
    finally:
        _force_rmtree(case)
