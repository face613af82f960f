"""docs/container.md's first stage for job images with an older Python, run with the uv it
pins, but for its download.

``uv python install`` fetches python-build-standalone from GitHub, which the test machines
cannot reach: a stand-in directory takes its place in ``UV_PYTHON_INSTALL_DIR`` (uv puts its
Python there, so the directory is never empty), and the stage's other commands run as
printed, under a temporary root: ``uv venv`` into its own directory beside it, ``uv pip
install`` of this repository (dependencies from the package index), ``job-api-path``.
uv 0.5.11 refused the layout this replaced, a venv target holding uv's Python.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from checkpoint.api_files import COPIED_MODULES
from tests.agentproc import REPO

pytestmark = pytest.mark.long


def stage_one() -> tuple[str, dict[str, str], str]:
    """(uv's image tag, the stage's ENV, its RUN command), as docs/container.md prints them."""
    text = (REPO / "docs" / "container.md").read_text()
    recipe = next(b for b in re.findall(r"```dockerfile\n(.*?)```", text, re.S) if " AS " in b)
    stage = re.sub(r"\s*\\\n\s*", " ", recipe.split("\nFROM ", 2)[1])
    tag = re.match(r"ghcr\.io/astral-sh/uv:([0-9.]+)-\S* AS spot-agent", stage)
    assert tag, stage
    env = dict(re.findall(r"(\w+)=(\S+)", re.search(r"^ENV (.*)$", stage, re.M)[1]))  # type: ignore[index]
    run = re.search(r"^RUN (.*)$", stage, re.M)[1]  # type: ignore[index]
    return tag[1], env, run


def test_the_stage_runs_with_the_pinned_uv(tmp_path: Path) -> None:
    uv = shutil.which("uv")
    if uv is None:
        pytest.fail("uv is not installed: pip install -e '.[test]'", pytrace=False)
    version, env, run = stage_one()
    assert (
        subprocess.run([uv, "--version"], capture_output=True, text=True).stdout.split()[1]
        == version.split("-")[0]
    ), "the test extras' uv is not the one the recipe pins"

    root = tmp_path / "root"
    src = root / "src"
    src.mkdir(parents=True)
    for part in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / part, src / part)
    for part in ("agent", "checkpoint"):
        shutil.copytree(REPO / part, src / part, ignore=shutil.ignore_patterns("__pycache__"))
    assert run.startswith("uv python install 3.12 && "), run
    commands = run.removeprefix("uv python install 3.12 && ")
    # under the temporary root; this interpreter stands in for the one uv would download
    commands = commands.replace("/opt/", f"{root}/opt/").replace(" /src", f" {src}")
    commands = commands.replace("--python 3.12 ", f"--python {sys.executable} ", 1)
    stage_env = {k: v.replace("/opt/", f"{root}/opt/") for k, v in env.items()}
    stage_env["UV_PYTHON_PREFERENCE"] = "only-system"  # instead of only-managed: no download
    python_dir = Path(stage_env["UV_PYTHON_INSTALL_DIR"])
    (python_dir / "cpython-3.12-stand-in" / "bin").mkdir(parents=True)

    full_env = {**os.environ, **stage_env, "UV_CACHE_DIR": str(tmp_path / "uv-cache")}
    out = subprocess.run(
        ["sh", "-ec", commands], capture_output=True, text=True, env=full_env, timeout=600
    )
    assert out.returncode == 0, out.stdout + out.stderr
    agent_dir = root / "opt" / "spot-agent"
    assert sorted(p.name for p in agent_dir.iterdir()) == ["job-api", "python", "venv"]
    api = sorted(p.name for p in (agent_dir / "job-api" / "checkpoint").iterdir())
    assert api == sorted(f"{m}.py" for m in COPIED_MODULES)
    version_out = subprocess.run(
        [agent_dir / "venv" / "bin" / "spot-agent", "--version"], capture_output=True, text=True
    )
    assert version_out.stdout.startswith("spot-agent "), version_out.stderr
