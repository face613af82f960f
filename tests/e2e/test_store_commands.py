"""``spot-agent checkpoints jobs|delete|gc|restore`` on real stores, through the CLI.

Listing and deleting jobs runs against every kind of store (tests/stores.py); the rest
against a local store."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from checkpoint.engine.format.jobstore import JobStore
from checkpoint.engine.format.layout import MANIFESTS
from checkpoint.engine.store.base import Store
from tests.agentproc import AGENT, agent_env, cli, run_agent
from tests.stores import kind_of, store_agent_env

# Each run adds a 200 kB file of its own and rewrites the counter: one checkpoint per run.
JOB = textwrap.dedent("""
    import checkpoint, os
    n = checkpoint.load_json("n.json", default=0) + 1
    checkpoint.save_json("n.json", n)
    checkpoint.save_bytes(f"part{n}.bin", os.urandom(200_000))
    if n > 1:
        os.unlink(os.path.join(os.environ["CHECKPOINT_DIR"], f"part{n - 1}.bin"))
""")


def runs(tmp: Path, job_id: str, count: int, env: dict[str, str] | None = None) -> None:
    for _ in range(count):
        r = run_agent(tmp, ["--job-id", job_id], [sys.executable, "-c", JOB], env=env)
        assert r.proc.returncode == 0, r.stdout + r.stderr


def one_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    return lines[0]


def test_jobs_lists_each_job_then_delete_needs_yes_and_removes_one_entirely(
    tmp_path: Path, store_url: str, any_store: Store
) -> None:
    env = store_agent_env(tmp_path, store_url)
    runs(tmp_path, "alpha", 2, env)
    runs(tmp_path, "beta:3", 1, env)
    r = cli(tmp_path, "checkpoints", "jobs", "--json", env=env)
    assert r.returncode == 0, r.stderr
    found = {j["job_id"]: j for j in json.loads(r.stdout)}
    assert sorted(found) == ["alpha", "beta:3"]
    assert (found["alpha"]["checkpoints"], found["alpha"]["newest"]) == (2, 2)
    assert (found["beta:3"]["checkpoints"], found["beta:3"]["newest"]) == (1, 1)
    assert found["alpha"]["stored_bytes"] > 400_000  # two parts, 200 kB each
    table = cli(tmp_path, "checkpoints", "jobs", env=env)
    assert table.returncode == 0
    assert [line.split()[0] for line in table.stdout.splitlines()] == ["JOB", "alpha", "beta:3"]

    r = cli(tmp_path, "checkpoints", "delete", "--job-id", "alpha", env=env)
    assert r.returncode == 2
    assert one_line(r.stderr).startswith("spot-agent: error: --yes: deleting job alpha in ")
    assert len(list(any_store.list_objects("alpha/manifests/"))) == 2  # nothing deleted

    r = cli(tmp_path, "checkpoints", "delete", "--job-id", "alpha", "--yes", env=env)
    assert r.returncode == 0, r.stderr
    assert "2 checkpoints" in r.stdout
    assert list(any_store.list_objects("alpha/")) == []
    if kind_of(store_url) == "local":
        assert not (tmp_path / "store" / "alpha").exists()  # no empty dirs left either
    jobs = json.loads(cli(tmp_path, "checkpoints", "jobs", "--json", env=env).stdout)
    assert [j["job_id"] for j in jobs] == ["beta:3"]
    r = cli(tmp_path, "checkpoints", "list", "--job-id", "alpha", env=env)
    assert r.returncode == 1
    assert one_line(r.stderr).endswith("; it holds: beta:3")
    to = tmp_path / "o"
    r = cli(tmp_path, "checkpoints", "restore", "--job-id", "beta:3", "--to", str(to), env=env)
    assert r.returncode == 0, r.stderr
    assert json.loads((to / "n.json").read_text()) == 1


def test_an_unknown_job_id_names_the_nearest(tmp_path: Path) -> None:
    runs(tmp_path, "train-2024-06", 1)
    for action in ("list", "show", "gc", "restore", "delete"):
        extra = {"delete": ["--yes"], "restore": ["--to", str(tmp_path / "to")]}.get(action, [])
        r = cli(tmp_path, "checkpoints", action, "--job-id", "train-2024-6", *extra)
        assert r.returncode == 1, (action, r.stdout + r.stderr)
        line = one_line(r.stderr)
        assert line.startswith("spot-agent: no job 'train-2024-6' in file://"), line
        assert line.endswith("; nearest: train-2024-06"), line
    assert (tmp_path / "store" / "train-2024-06" / "manifests").is_dir()  # nothing deleted


def test_a_store_with_no_jobs_says_so(tmp_path: Path) -> None:
    env = agent_env(tmp_path, {"SPOT_AGENT_CHECKPOINT_URI": (tmp_path / "typo").as_uri()})
    r = cli(tmp_path, "checkpoints", "list", "--job-id", "x", env=env)
    assert r.returncode == 1
    assert "the store holds no jobs at all (check --checkpoint-uri)" in one_line(r.stderr)


def test_gc_frees_space_at_once_when_no_agent_runs(tmp_path: Path) -> None:
    runs(tmp_path, "g", 3)
    data = [tmp_path / "store" / "g" / kind for kind in ("blobs", "packs")]

    def stored() -> int:
        return sum(p.stat().st_size for d in data for p in d.rglob("*") if p.is_file())

    before = stored()
    r = cli(tmp_path, "checkpoints", "gc", "--job-id", "g", "--keep", "1")
    assert r.returncode == 0, r.stderr
    assert "deleted 2 old checkpoints and 0 unreferenced blobs" in r.stdout  # young: kept
    assert stored() == before
    r = cli(tmp_path, "checkpoints", "gc", "--job-id", "g", "--keep", "1", "--no-agent-running")
    assert r.returncode == 0, r.stderr
    assert stored() < before - 300_000  # the two parts no checkpoint references any more
    r = cli(tmp_path, "checkpoints", "restore", "--job-id", "g", "--to", str(tmp_path / "r"))
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in (tmp_path / "r").iterdir()) == ["n.json", "part3.bin"]


def test_restore_into_a_non_empty_dir_refuses_or_with_force_makes_it_exact(
    tmp_path: Path,
) -> None:
    runs(tmp_path, "r", 2)
    to = tmp_path / "here"
    (to / "stale" / "deeper").mkdir(parents=True)
    (to / "stale" / "deeper" / "old.txt").write_text("old")
    (to / "part1.bin").write_bytes(b"not in checkpoint 2")
    (to / "n.json").write_text("99")
    os.symlink("n.json", to / "link")
    r = cli(tmp_path, "checkpoints", "restore", "--job-id", "r", "--to", str(to))
    assert r.returncode == 2
    assert one_line(r.stderr).startswith(f"spot-agent: error: --to: {to} is not empty")
    assert (to / "n.json").read_text() == "99"

    r = cli(tmp_path, "checkpoints", "restore", "--job-id", "r", "--to", str(to), "--force")
    assert r.returncode == 0, r.stderr
    assert sorted(p.relative_to(to).as_posix() for p in to.rglob("*")) == ["n.json", "part2.bin"]
    assert json.loads((to / "n.json").read_text()) == 2


@pytest.mark.parametrize(("answer", "code", "gone"), [("y\n", 0, True), ("n\n", 1, False)])
def test_delete_asks_at_a_terminal(tmp_path: Path, answer: str, code: int, gone: bool) -> None:
    runs(tmp_path, "asked", 1)
    master, slave = pty.openpty()
    try:
        os.write(master, answer.encode())  # typed ahead: the terminal buffers it
        done = subprocess.run(
            [*AGENT, "checkpoints", "delete", "--job-id", "asked"],
            stdin=slave,
            capture_output=True,
            text=True,
            env=agent_env(tmp_path),
            timeout=60,
            check=False,
        )
    finally:
        os.close(master)
        os.close(slave)
    assert done.returncode == code, done.stdout + done.stderr
    assert "delete job asked in file://" in done.stdout and "[y/N]" in done.stdout
    assert (tmp_path / "store" / "asked").exists() is not gone


def test_json_output_stays_json_when_the_engine_warns(
    tmp_path: Path, store_url: str, any_store: Store
) -> None:
    """``list --json`` and ``show --json`` are for scripts: an event the engine logs on the
    way (here a key in the manifests' folder no agent writes) goes to stderr, so stdout
    still parses as JSON."""
    env = store_agent_env(tmp_path, store_url)
    runs(tmp_path, "warned", 1, env)
    stray = JobStore(any_store, "warned").folder(MANIFESTS) + "notes.txt"
    any_store.put_object(stray, b"left here by hand")
    for action in ("list", "show"):
        r = cli(tmp_path, "checkpoints", action, "--job-id", "warned", "--json", env=env)
        assert r.returncode == 0, r.stdout + r.stderr
        doc = json.loads(r.stdout)
        assert (doc[0] if action == "list" else doc)["sequence"] == 1
        assert "store.key_ignored" in r.stderr and stray in r.stderr, r.stderr
