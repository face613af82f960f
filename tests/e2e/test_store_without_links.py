"""A ``file://`` store on a filesystem without hard links (issue 22, item 7).

The commit is a create-only ``link(2)``; on vfat, some FUSE and network mounts it fails
with EPERM. Such a store is refused at start (exit 69) and by ``doctor``, each with one
line, before anything is written; no traceback. The filesystem is simulated: a
sitecustomize on the agent's PYTHONPATH makes ``os.link`` fail under the store's root
(mounting a vfat image needs root privileges a CI runner may lack).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from tests.agentproc import REPO, agent_env, cli, run_agent

NOLINK = REPO / "tests" / "fixtures" / "nolink"


def no_link_env(tmp: Path) -> dict[str, str]:
    env = agent_env(tmp)
    env["PYTHONPATH"] = f"{NOLINK}{os.pathsep}{env['PYTHONPATH']}"
    env["NO_HARD_LINKS_UNDER"] = str(tmp / "store")
    return env


def test_the_simulated_filesystem_refuses_links_under_the_store_only(tmp_path: Path) -> None:
    code = (
        "import os, sys\n"
        "open(sys.argv[1], 'w').close()\n"
        "try:\n"
        "    os.link(sys.argv[1], sys.argv[2]); print('linked')\n"
        "except PermissionError: print('EPERM')\n"
    )
    (tmp_path / "store").mkdir()
    env = no_link_env(tmp_path)
    import subprocess

    def link(where: Path) -> str:
        out = subprocess.run(
            [sys.executable, "-c", code, str(where / "a"), str(where / "b")],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        return out.stdout.strip()

    assert link(tmp_path / "store") == "EPERM"
    assert link(tmp_path) == "linked"


def test_a_store_without_hard_links_is_refused_at_start_with_one_line(tmp_path: Path) -> None:
    r = run_agent(
        tmp_path,
        ["--job-id", "nolink"],
        [sys.executable, "-c", "print(1)"],
        env=no_link_env(tmp_path),
    )
    assert r.proc.returncode == 69, r.stdout + r.stderr
    assert "Traceback" not in r.stdout + r.stderr
    event = r.event("store.unavailable")
    assert "no hard links" in event["error"] and "\n" not in event["error"]
    assert not any(e["event"] == "child.started" for e in r.events())
    # nothing of the job was written: no attempt record, no object, no leftover probe
    assert not [p for p in (tmp_path / "store").rglob("*") if p.is_file()]


def test_doctor_refuses_a_store_without_hard_links_with_one_line(tmp_path: Path) -> None:
    out = cli(tmp_path, "doctor", env=no_link_env(tmp_path))
    assert out.returncode != 0, out.stdout + out.stderr
    failed = [line for line in out.stdout.splitlines() if "FAIL" in line and "store" in line]
    assert len(failed) == 1 and "no hard links" in failed[0], out.stdout
    assert "Traceback" not in out.stdout + out.stderr
