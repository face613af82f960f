"""The one-pass tree check (format/tree.py) agrees with the set-based one
(manifest.check_tree) on every tree, sorted as sync writes them or not."""

from __future__ import annotations

import random

import pytest

from checkpoint.engine.format import tree
from checkpoint.engine.format.manifest import (
    Chunk,
    DirEntry,
    FileEntry,
    HardLinkEntry,
    LinkEntry,
    check_tree,
)
from checkpoint.errors import ManifestError

NAMES = ["a", "a.b", "b", "c0"]


def random_tree(rng: random.Random) -> tuple[list, list, list, list]:
    paths = {"/".join(rng.choices(NAMES, k=rng.randint(1, 3))) for _ in range(rng.randint(1, 9))}
    files, dirs, links, hardlinks = [], [], [], []
    for p in paths:
        kind = rng.choice("fffdlh")
        if kind == "f":
            files.append(FileEntry(p, 1, 0o644, 0, (Chunk("0" * 64, 1),)))
        elif kind == "d":
            dirs.append(DirEntry(p, 0o755))
        elif kind == "l":
            links.append(LinkEntry(p, "x"))
        else:
            hardlinks.append(HardLinkEntry(p, rng.choice(sorted(paths))))
    if rng.random() < 0.2 and files:  # a path twice
        dirs.append(DirEntry(files[0].path, 0o755))
    return files, dirs, links, hardlinks


def outcome(check, *kinds) -> str:  # type: ignore[no-untyped-def]
    try:
        check(*kinds)
    except ManifestError as exc:
        return str(exc)
    return "ok"


@pytest.mark.parametrize("sort", [True, False])
def test_the_one_pass_check_agrees_with_the_set_based_one(sort: bool) -> None:
    rng = random.Random(23)
    results = set()
    for _ in range(3000):
        kinds = random_tree(rng)
        for entries in kinds:
            if sort:
                entries.sort(key=lambda e: e.path.split("/"))
            else:
                rng.shuffle(entries)
        args = tuple(tuple(k) for k in kinds)
        want, got = outcome(check_tree, *args), outcome(tree.check_tree_streaming, *args)
        # The same verdict; when a tree has several faults, either may be named first.
        assert (want == "ok") == (got == "ok"), (args, want, got)
        faults = ("appears twice", "lies below", "points at")
        results.update(f for f in faults if f in want)
        results.update(["ok"] if want == "ok" else [])
    assert results == {"ok", "appears twice", "lies below", "points at"}  # each was met


def test_a_sorted_tree_is_checked_without_a_set_of_every_path(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    def refuse(*_: object) -> None:
        raise AssertionError("the set-based check ran")

    monkeypatch.setattr(tree, "check_tree", refuse)
    files = tuple(
        FileEntry(f"d{i // 10}/f{i}", 1, 0o644, 0, (Chunk("0" * 64, 1),)) for i in range(100)
    )
    dirs = tuple(DirEntry(f"d{i}", 0o755) for i in range(10))
    files = tuple(sorted(files, key=lambda e: e.path.split("/")))
    tree.check_tree_streaming(files, dirs, (), (HardLinkEntry("e", files[0].path),))
    with pytest.raises(ManifestError, match="lies below the file or symlink 'd1/f10'"):
        tree.check_tree_streaming(files, dirs, (LinkEntry("d1/f10/x", "y"),), ())
    with pytest.raises(ManifestError, match="points at 'nope'"):
        tree.check_tree_streaming(files, dirs, (), (HardLinkEntry("e", "nope"),))
