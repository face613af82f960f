"""The Dockerfile and entrypoint.sh, read as text (tests/e2e/test_image.py builds and runs
them)."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    joined = re.sub(r"\\\n", " ", path.read_text())
    found = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            found.append((word.upper(), rest.strip()))
    return found


def test_base_image_is_a_slim_python_pinned_by_tag_and_digest() -> None:
    froms = [args for word, args in instructions(REPO / "Dockerfile") if word == "FROM"]
    assert len(froms) == 1
    assert re.fullmatch(
        r"python:3\.\d+\.\d+-slim-[a-z]+@sha256:[0-9a-f]{64}", froms[0].split()[0]
    ), froms[0]


def test_runs_as_a_non_root_user() -> None:
    steps = instructions(REPO / "Dockerfile")
    users = [args for word, args in steps if word == "USER"]
    assert users, "no USER instruction: the job would run as root"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0"), users[-1]
    # USER comes after everything that needs root (installing, creating the user)
    last_run = max(i for i, (word, _) in enumerate(steps) if word == "RUN")
    assert [i for i, (word, _) in enumerate(steps) if word == "USER"][-1] > last_run


def test_agent_is_installed_from_the_repository_without_a_pip_cache() -> None:
    steps = instructions(REPO / "Dockerfile")
    copies = " ".join(args for word, args in steps if word == "COPY")
    for source in ("pyproject.toml", "agent", "checkpoint", "entrypoint.sh"):
        assert source in copies
    runs = " ".join(args for word, args in steps if word == "RUN")
    assert re.search(r"pip install --no-cache-dir \.(\s|$)", runs), runs
    assert "-e " not in runs


def test_entrypoint_is_exec_form_and_points_to_the_script() -> None:
    steps = instructions(REPO / "Dockerfile")
    entrypoints = [args for word, args in steps if word == "ENTRYPOINT"]
    assert len(entrypoints) == 1
    assert json.loads(entrypoints[0]) == ["/entrypoint.sh"]  # exec form: no sh -c wrapper
    assert not [args for word, args in steps if word == "CMD"], "CMD is the job author's"
    assert any("/entrypoint.sh" in args for word, args in steps if word == "COPY")


def test_entrypoint_script_execs_the_agent() -> None:
    script = REPO / "entrypoint.sh"
    lines = [ln.strip() for ln in script.read_text().splitlines()]
    assert lines[0] == "#!/bin/sh"
    code = [ln for ln in lines[1:] if ln and not ln.startswith("#")]
    assert code == ["set -eu", 'exec spot-agent run -- "$@"']
    assert os.access(script, os.X_OK)


def test_dockerignore_keeps_the_context_small() -> None:
    ignored = (REPO / ".dockerignore").read_text().splitlines()
    for pattern in (".git", "tests", "**/__pycache__"):
        assert pattern in ignored
    assert not any(p in ("agent", "checkpoint", "pyproject.toml") for p in ignored)
