"""What the install docs promise, read as text (tests/e2e/test_image.py builds what can be
built on the test machines)."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def blocks(path: Path, kind: str) -> list[str]:
    return re.findall(rf"```{kind}\n(.*?)```", path.read_text(), re.S)


def test_the_first_command_installs_into_a_venv_and_names_the_python_floor() -> None:
    readme = (REPO / "README.md").read_text()
    first = blocks(REPO / "README.md", "sh")[0]
    assert first.startswith("python3 -m venv ") and "pip install ." in first
    floor = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["requires-python"]
    assert floor == ">=3.11"
    assert "Python 3.11 or newer" in readme
    assert "Python 3.11 or newer" in (REPO / "docs" / "container.md").read_text()


def test_the_recipe_for_older_pythons_keeps_uvs_python_beside_the_venv() -> None:
    """The stage that tests/e2e/test_image.py cannot build (uv downloads its Python from
    GitHub): uv refuses a venv target that already holds something, so the Python it
    installs must not be inside the venv's directory."""
    recipe = next(
        b for b in blocks(REPO / "docs" / "container.md", "dockerfile") if "AS spot-agent" in b
    )
    lines = [line.strip() for line in recipe.splitlines() if line.strip()]
    froms = [line for line in lines if line.startswith("FROM ")]
    assert len(froms) == 2 and froms[0].endswith(" AS spot-agent"), froms
    python_dir = re.search(r"UV_PYTHON_INSTALL_DIR=(\S+)", recipe)
    venv_dir = re.search(r"uv venv --python \S+ (\S+)", recipe)
    assert python_dir and venv_dir, recipe
    python, venv = python_dir.group(1).rstrip("/"), venv_dir.group(1).rstrip("/")
    assert not (python + "/").startswith(venv + "/"), (python, venv)
    assert f"--python {venv}/bin/python" in recipe
    assert "COPY --from=spot-agent /opt/spot-agent /opt/spot-agent" in lines
    entry = next(line for line in lines if line.startswith("ENTRYPOINT "))
    # exec form, so the agent is PID 1; -I, so the job API on PYTHONPATH does not hide its own
    assert json.loads(entry.removeprefix("ENTRYPOINT ")) == [
        f"{venv}/bin/python",
        "-I",
        "-m",
        "agent",
        "run",
        "--",
    ]
    assert "job-api-path --into /opt/spot-agent/job-api" in recipe
    assert "ENV PYTHONPATH=/opt/spot-agent/job-api" in lines
    # what the recipe copies from the source is what the package is built from
    for part in ("pyproject.toml", "agent", "checkpoint"):
        assert (REPO / part).exists(), part
        assert f"COPY --from=spot-agent-src {part}" in recipe
