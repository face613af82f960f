"""Every reader of the checkpoint dir sees the same job's entries (one walker,
checkpoint.engine.localdir.walk): the scan of a sync, the freeze, a restore's count of
extras, the set-aside and ``checkpoints restore --force``'s pruning, on a tree with long
names, a path too long to open, symlinks, reserved names, a FIFO and a file that vanishes
while it is walked."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from agent.stores import prune_to_manifest
from checkpoint.engine.format.manifest import (
    MAX_PATH_BYTES,
    DirEntry,
    FileEntry,
    HardLinkEntry,
    LinkEntry,
    Manifest,
)
from checkpoint.engine.localdir import walk as walk_module
from checkpoint.engine.localdir.scan import scan, scan_frozen
from checkpoint.engine.localdir.walk import TOO_LONG, Kind, walk
from checkpoint.engine.restore.aside import aside_area, set_aside
from checkpoint.engine.restore.kept import count_extra
from checkpoint.engine.save.freeze import Freezer

PART = 250  # one long name (NAME_MAX is 255)
#: the checkpointable chain "long/<PART>/<PART>/...": this many levels fit MAX_PATH_BYTES
LEVELS = (MAX_PATH_BYTES - len("long/")) // (PART + 1)
TOO_DEEP = "y" * 50


def _make_dirs(top: Path, names: list[str]) -> int:
    """mkdir the chain ``names`` below ``top`` through dir fds (the whole path may be
    longer than PATH_MAX); returns an fd on the last one (the caller closes it)."""
    fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY)
    for name in names:
        os.mkdir(name, dir_fd=fd)
        nxt = os.open(name, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
        os.close(fd)
        fd = nxt
    return fd


def _write_at(fd: int, name: str, data: bytes) -> None:
    f = os.open(name, os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd)
    os.write(f, data)
    os.close(f)


def tricky_tree(tmp: Path) -> tuple[Path, set[str], set[str]]:
    """A checkpoint dir whose own path is long, and (its rel paths the job's, the other
    entries below it: temporary, FIFO, unsafe symlink, a path too long to open)."""
    chain = ["long"] + ["x" * PART] * LEVELS
    rels = ["/".join(chain[: i + 1]) for i in range(len(chain))]
    # The root's length is chosen so that the deepest file of the chain (and its link in
    # the freeze area) fits PATH_MAX, and a dir beside it, short enough for a manifest,
    # does not: the system refuses to open it.
    root_len = 4095 - len(rels[-1]) - len("/f") - 30
    pad = root_len - len(str(tmp)) - 1
    pads = ["r" * PART] * (pad // (PART + 1)) + ["r" * (pad % (PART + 1) or 1)]
    os.close(_make_dirs(tmp, pads))
    root = tmp.joinpath(*pads)
    job = {"a", "a/b.txt", "a/hard", "a/ok-link", "a/dir-link", "v", "v/stay", "top.bin"}
    job |= {"nested", "nested/.spot-agent", "nested/.spot-agent/x"}  # only the top is reserved
    (root / "a").mkdir()
    (root / "a" / "b.txt").write_bytes(b"b" * 100)
    os.link(root / "a" / "b.txt", root / "a" / "hard")
    os.symlink("b.txt", root / "a" / "ok-link")
    os.symlink("../a", root / "a" / "up-link")  # climbs out: not checkpointed
    os.symlink(".", root / "a" / "dir-link")  # a link to a dir: never followed
    (root / "v").mkdir()
    (root / "v" / "stay").write_bytes(b"s")
    (root / "v" / "gone").write_bytes(b"g")  # vanishes while the walk is in v/ (fixture)
    (root / "top.bin").write_bytes(os.urandom(3000))
    (root / "nested" / ".spot-agent").mkdir(parents=True)
    (root / "nested" / ".spot-agent" / "x").write_bytes(b"x")
    (root / ".spot-agent").mkdir()  # the agent's
    (root / ".spot-agent" / "mine").write_bytes(b"m")
    (root / "a" / "c.spot-tmp").write_bytes(b"t")  # a save cut off
    os.mkfifo(root / "a" / "fifo")
    fd = _make_dirs(root, chain)
    _write_at(fd, "f", b"deep")
    os.mkdir(TOO_DEEP, dir_fd=fd)
    os.close(fd)
    job |= set(rels) | {f"{rels[-1]}/f"}
    too_deep = f"{rels[-1]}/{TOO_DEEP}"
    assert len(too_deep) <= MAX_PATH_BYTES  # a manifest could name it
    assert len(str(root / rels[-1] / "f")) + len("/.spot-agent/freeze") < 4095
    assert len(str(root / too_deep)) > 4095
    return root, job, {"a/up-link", "a/c.spot-tmp", "a/fifo", too_deep}


@pytest.fixture
def vanishing(monkeypatch: pytest.MonkeyPatch) -> None:
    """``v/gone`` is deleted right after ``v/`` is listed, before anyone looks at it."""
    listing = walk_module._listing

    def and_delete(path: str, rel: str) -> list[os.DirEntry[str]] | walk_module.Entry:
        out = listing(path, rel)
        if rel == "v":  # the first walk's listing names it; later ones (a freeze's) do not
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(path, "gone"))
        return out

    monkeypatch.setattr(walk_module, "_listing", and_delete)


def job_manifest(root: Path, job: set[str]) -> Manifest:
    """The job's entries, as a manifest would name them (content does not matter here)."""
    files, dirs, links, hard = [], [], [], []
    for rel in sorted(job, key=lambda p: p.split("/")):
        if rel == "a/hard":
            hard.append(HardLinkEntry(rel, "a/b.txt"))
        elif os.path.islink(root / rel):
            links.append(LinkEntry(rel, os.readlink(root / rel)))
        elif rel.endswith(("/f", ".txt", ".bin", "stay", "/x")):
            files.append(FileEntry(rel, 0, 0o644, 0, ()))
        else:
            dirs.append(DirEntry(rel, None))
    return Manifest(
        "j", 1, 0, "", "t", tuple(files), tuple(dirs), tuple(links), hardlinks=tuple(hard)
    )


def below(root: Path) -> set[str]:
    """Every entry below root, the reserved dir excepted (an independent walk)."""
    out = set()
    for dirpath, dirnames, filenames in os.walk(root):
        rel = os.path.relpath(dirpath, root)
        prefix = "" if rel == "." else f"{rel}/"
        if not prefix:
            dirnames[:] = [d for d in dirnames if d != ".spot-agent"]
        out |= {prefix + n for n in dirnames + filenames}
    return out


Caller = Callable[[Path, set[str]], set[str]]


def by_scan(root: Path, job: set[str]) -> set[str]:
    found = scan(root)
    return (
        {r for r, _ in found.files}
        | {d.path for d in found.dirs}
        | {lk.path for lk in found.links}
        | {h.path for h in found.hardlinks}
    )


def by_freeze(root: Path, job: set[str]) -> set[str]:
    frozen = scan_frozen(Freezer(root).freeze(5), root)
    return (
        {r for r, _ in frozen.files}
        | {d.path for d in frozen.dirs}
        | {lk.path for lk in frozen.links}
    )


def by_aside(root: Path, job: set[str]) -> set[str]:
    """What stays in sight after the set-aside of what the job's manifest lacks."""
    set_aside(root, job_manifest(root, job))
    moved = below(aside_area(root))
    assert "a/fifo" in moved and "a/c.spot-tmp" in moved and "a/up-link" in moved
    return {p for p in below(root) if not p.endswith(TOO_DEEP)}  # nobody can touch it


def by_prune(root: Path, job: set[str]) -> set[str]:
    prune_to_manifest(root, job_manifest(root, job))
    assert (root / ".spot-agent" / "mine").exists()
    return {p for p in below(root) if not p.endswith(TOO_DEEP)}  # nobody can touch it


@pytest.mark.parametrize("caller", [by_scan, by_freeze, by_aside, by_prune])
def test_every_reader_sees_the_jobs_entries(
    tmp_path: Path, vanishing: None, caller: Caller
) -> None:
    root, job, _ = tricky_tree(tmp_path)
    assert caller(root, job) == job


def test_count_extra_counts_the_jobs_files_the_manifest_lacks(tmp_path: Path) -> None:
    root, job, _ = tricky_tree(tmp_path)
    os.unlink(root / "v" / "gone")
    files = {r for r in job if (root / r).is_file() and not (root / r).is_symlink()}
    empty = Manifest("j", 1, 0, "", "t", ())
    assert count_extra(root, empty) == len(files)  # a/hard too: it is a regular file
    assert count_extra(root, job_manifest(root, job)) == 0


@pytest.mark.parametrize("order", ["walk", "reversed"])
def test_count_extra_merges_a_sorted_manifest_and_sets_any_other(
    tmp_path: Path, order: str
) -> None:
    root, job, _ = tricky_tree(tmp_path)
    os.unlink(root / "v" / "gone")
    whole = job_manifest(root, job)
    step = 1 if order == "walk" else -1
    for n in range(len(whole.files) + 1):  # the manifest lacks the first n files
        part = replace(whole, files=whole.files[n:][::step])
        assert count_extra(root, part) == n, (order, n)


def test_the_walk_is_sorted_and_names_what_it_skips(tmp_path: Path, vanishing: None) -> None:
    root, job, other = tricky_tree(tmp_path)
    entries = list(walk(root))
    rels = [e.rel for e in entries]
    assert rels == sorted(rels, key=lambda r: r.split("/"))
    why = {e.rel: e.why for e in entries if e.why}
    assert set(why) == other - {"a/c.spot-tmp"}  # temporary files: not even named
    assert why[next(r for r in other if r.startswith("long/"))] == TOO_LONG
    assert {e.rel for e in entries if not e.why} == job
    kinds = {e.rel: e.kind for e in entries}
    assert (kinds["a/dir-link"], kinds["a/fifo"], kinds["a"]) == (Kind.LINK, Kind.OTHER, Kind.DIR)
    assert "a/c.spot-tmp" in {e.rel for e in walk(root, temporary=True, lstat=False)}


def test_an_unreadable_directory_is_an_error_not_a_silent_gap(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "locked").mkdir()
    real = os.scandir

    def refuse(path: str) -> Iterator[os.DirEntry[str]]:
        if path.endswith("/locked"):  # as for a dir of mode 000 (the tests may run as root)
            raise PermissionError(13, "Permission denied")
        return real(path)

    monkeypatch.setattr(walk_module.os, "scandir", refuse)
    with pytest.raises(walk_module.Unreadable, match=r"cannot read directory .*locked"):
        list(walk(tmp_path))
