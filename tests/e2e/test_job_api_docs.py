"""Every job snippet of the README ("The job's side") and of docs/job-api.md, run exactly as
printed under the agent, and interrupted: the job sees the stop signal, ends after a whole
save, exits 0, and the agent commits its last save and exits 75."""

from __future__ import annotations

import re
import signal
import sys
from pathlib import Path

import pytest

from checkpoint.engine.checkpointer import Checkpointer
from checkpoint.engine.format.jobstore import JobStore
from checkpoint.engine.store.base import LocalStore
from tests.agentproc import REPO, agent_env, start_agent

_BLOCK = re.compile(r"```(python|sh)\n(.*?)```", re.S)


def snippets() -> list[tuple[str, str, str]]:
    readme = (REPO / "README.md").read_text()
    section = readme.split("## The job's side\n", 1)[1].split("\n## ", 1)[0]
    found = []
    for where, text in (("README", section), ("job-api", (REPO / "docs/job-api.md").read_text())):
        for n, (lang, code) in enumerate(_BLOCK.findall(text)):
            found.append((f"{where}-{n}-{lang}", lang, code))
    return found


def job_files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and ".spot-agent" not in p.parts
    }


def test_the_docs_have_snippets() -> None:
    langs = [lang for _, lang, _ in snippets()]
    assert langs.count("python") >= 2 and langs.count("sh") >= 2


@pytest.mark.parametrize(("name", "lang", "code"), snippets(), ids=[s[0] for s in snippets()])
def test_snippet_runs_and_sees_the_interruption(
    tmp_path: Path, name: str, lang: str, code: str
) -> None:
    command = [sys.executable, "-c", code] if lang == "python" else ["sh", "-c", code]
    workdir = tmp_path / "work"
    # A long grace period: on a loaded machine a torch job may need more than the default's
    # 20 s to reach its next check of the signal; this test is about seeing it, not speed.
    args = ["--job-id", "doc", "--sync-interval", "1", "--checkpoint-dir", str(workdir)]
    args += ["--grace-period", "120s"]
    env = agent_env(tmp_path, {"HF_HUB_OFFLINE": "1"})  # the framework snippets download nothing
    run = start_agent(tmp_path, args, command, env)
    commits = lambda: sum(e.get("event") == "sync.committed" for e in run.events())  # noqa: E731
    run.wait_for(lambda: commits() >= 2, timeout=60, what="two commits")
    run.signal(signal.SIGTERM)
    assert run.wait(150) == 75, run.stdout + run.stderr
    assert run.event("shutdown.child_exited")["exit_code"] == 0, "the job did not see the signal"
    assert run.event("agent.exit")["restorable"] is not None
    restored = tmp_path / "restored"
    job = JobStore(LocalStore(tmp_path / "store"), "doc")
    Checkpointer(job, restored).restore(into=restored)
    if not any(e.get("event") == "sync.save_incomplete" for e in run.events()):
        assert job_files(restored) == job_files(workdir)  # the job's last save, whole
    else:  # the signal cut a save off in a child process: the last whole save is restored
        assert job_files(restored)
