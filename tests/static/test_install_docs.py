"""What the install docs promise, read as text (no container engine runs the tests)."""

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


def test_the_add_to_any_image_recipe() -> None:
    recipe = next(
        b for b in blocks(REPO / "docs" / "container.md", "dockerfile") if "AS spot-agent" in b
    )
    lines = [line.strip() for line in recipe.splitlines() if line.strip()]
    froms = [line for line in lines if line.startswith("FROM ")]
    assert len(froms) == 2 and froms[0].endswith(" AS spot-agent"), froms
    # the agent brings its own Python into /opt/spot-agent, and only that is copied
    assert "UV_PYTHON_INSTALL_DIR=/opt/spot-agent/python" in recipe
    assert "COPY --from=spot-agent /opt/spot-agent /opt/spot-agent" in lines
    entry = next(line for line in lines if line.startswith("ENTRYPOINT "))
    # exec form, so the agent is PID 1 and receives the platform's signals
    assert json.loads(entry.removeprefix("ENTRYPOINT ")) == [
        "/opt/spot-agent/bin/spot-agent",
        "run",
        "--",
    ]
    # what the recipe copies from the source is what the package is built from
    for part in ("pyproject.toml", "agent", "checkpoint"):
        assert (REPO / part).exists(), part
        assert f"COPY --from=spot-agent-src {part}" in recipe
