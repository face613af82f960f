"""The layers of agent/ and checkpoint/, read from the import graph (tests/static/imports.py):
no cycle, counting imports under TYPE_CHECKING and in functions; ``checkpoint`` never
imports ``agent``; save and restore never import each other; each engine room imports only
the rooms below it."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.static.imports import REPO, cycles, describe, graph

ENGINE = "checkpoint.engine"
#: each room of the engine, and the rooms it may import (besides the job's side:
#: checkpoint.errors, checkpoint.protocol, ...); checkpointer sits on both directions
ROOMS: dict[str, set[str]] = {
    "store": set(),
    "format": {"store"},
    "budget": set(),
    "config": {"budget", "format"},  # every tunable, one object (EngineConfig)
    "progress": {"config"},
    "localdir": {"format", "config"},
    "group": {"format", "store"},  # a multi-node group's records, ranks' parts, union
    "gc": {"format", "store", "group"},  # a group job's chunks: every rank's parts count
    "lease": {"format", "store"},  # a live attempt's lease, an operator's forced sweep
    "save": {"format", "store", "localdir", "gc", "lease", "budget", "config", "progress"},
    "restore": {"format", "store", "localdir", "budget", "config", "progress"},
    "checkpointer": {"save", "restore", "format", "store", "config", "progress"},
}


def room(module: str) -> str | None:
    if not module.startswith(ENGINE + "."):
        return None
    return module.split(".")[2]


def cycle_messages(root: Path = REPO) -> list[str]:
    edges = graph(root)
    return [describe(c, edges) for c in cycles(edges)]


def layer_violations(root: Path = REPO) -> list[str]:
    bad = []
    for src, targets in graph(root).items():
        for dst, line in targets.items():
            where = f"{src} imports {dst} (line {line})"
            if src.startswith("checkpoint") and dst.startswith("agent"):
                bad.append(f"{where}: checkpoint never imports agent")
            job_side = src.startswith("checkpoint") and not src.startswith(ENGINE)
            if job_side and room(dst) is not None:
                bad.append(f"{where}: the job's side never imports the engine")
            here, there = room(src), room(dst)
            if here and there and here != there and there not in ROOMS.get(here, set()):
                bad.append(f"{where}: the {here} room does not import the {there} room")
    return sorted(bad)


def test_every_engine_room_is_known() -> None:
    found = {room(m) for m in graph() if room(m)}
    assert found == set(ROOMS), "a new room of checkpoint/engine: give it its place in ROOMS"


def test_no_import_cycle() -> None:
    assert cycle_messages() == []


def test_imports_flow_down_the_layers() -> None:
    assert layer_violations() == []


def test_save_and_restore_never_import_each_other() -> None:
    assert "restore" not in ROOMS["save"] and "save" not in ROOMS["restore"]
    edges = graph()
    crossing = [
        (a, b)
        for a, targets in edges.items()
        for b in targets
        if {room(a), room(b)} == {"save", "restore"}
    ]
    assert crossing == []


@pytest.fixture
def copy(tmp_path: Path) -> Path:
    for package in ("agent", "checkpoint"):
        shutil.copytree(
            REPO / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    return tmp_path


def append(path: Path, text: str) -> None:
    path.write_text(path.read_text() + text)


def test_a_type_checking_cycle_is_caught(copy: Path) -> None:
    append(
        copy / "checkpoint/engine/format/manifest.py",
        "\nfrom typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
        "    from checkpoint.engine.format.jobstore import JobStore\n",
    )
    assert any("manifest" in m and "jobstore" in m for m in cycle_messages(copy))


def test_a_function_level_cycle_is_caught(copy: Path) -> None:
    append(copy / "agent/run/syncs.py", "\ndef _late():\n    from .loop import RunLoop\n")
    assert any("agent.run.loop" in m and "agent.run.syncs" in m for m in cycle_messages(copy))


def test_save_importing_restore_is_caught(copy: Path) -> None:
    append(copy / "checkpoint/engine/save/sync.py", "\nfrom ..restore.restore import Restorer\n")
    assert any(
        "the save room does not import the restore room" in m for m in layer_violations(copy)
    )


def test_restore_importing_save_is_caught(copy: Path) -> None:
    append(
        copy / "checkpoint/engine/restore/kept.py", "\ndef f():\n    from ..save import upload\n"
    )
    assert any(
        "the restore room does not import the save room" in m for m in layer_violations(copy)
    )


def test_checkpoint_importing_agent_is_caught(copy: Path) -> None:
    append(copy / "checkpoint/engine/gc.py", "\nimport agent.exits\n")
    assert any("checkpoint never imports agent" in m for m in layer_violations(copy))


def test_the_job_side_importing_the_engine_is_caught(copy: Path) -> None:
    append(copy / "checkpoint/savelock.py", "\nfrom .engine.progress import Progress\n")
    assert any("the job's side never imports the engine" in m for m in layer_violations(copy))


def test_a_cycle_through_a_package_init_is_caught(copy: Path) -> None:
    """Importing agent.notices.protocol runs agent/notices/__init__.py, whose modules import
    agent.config: from agent.config, that is a cycle (Python says "partially initialized")."""
    append(copy / "agent/config/__init__.py", "\nfrom ..notices.protocol import DEFAULT_ENDPOINT\n")
    assert any("agent.config" in m and "agent.notices" in m for m in cycle_messages(copy))
