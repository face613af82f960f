"""The linters a reviewer runs first, as tests, so CI fails when they do."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def run(*cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)


def test_ruff_is_clean() -> None:
    if shutil.which("ruff") is None:
        pytest.fail("ruff is not installed: pip install -e '.[test]'")
    out = run("ruff", "check", "--output-format", "concise", ".")
    assert out.returncode == 0, out.stdout + out.stderr


def test_mypy_strict_is_clean_on_agent_and_checkpoint() -> None:
    out = run(sys.executable, "-m", "mypy", "agent", "checkpoint")
    assert out.returncode == 0, out.stdout + out.stderr


def test_checkpoint_never_imports_agent() -> None:
    offenders = [
        str(p.relative_to(REPO))
        for p in (REPO / "checkpoint").rglob("*.py")
        if any(
            line.startswith(("import agent", "from agent")) for line in p.read_text().splitlines()
        )
    ]
    assert offenders == []


def test_every_run_option_is_documented_in_the_readme() -> None:
    from agent.config import RUN_OPTIONS

    readme = (REPO / "README.md").read_text()
    missing = [o.flag for o in RUN_OPTIONS if f"| `{o.flag}` | `{o.env}` |" not in readme]
    assert missing == [], "add these to the README's settings table"
