"""Every package of agent/ and checkpoint/ is in the distribution: pyproject.toml's package
list names it (a subpackage left out installs an agent that cannot import its engine)."""

from __future__ import annotations

import fnmatch
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_every_package_is_installed() -> None:
    config = tomllib.loads((REPO / "pyproject.toml").read_text())
    include = config["tool"]["setuptools"]["packages"]["find"]["include"]
    packages = sorted(
        ".".join(init.parent.relative_to(REPO).parts)
        for top in ("agent", "checkpoint")
        for init in (REPO / top).rglob("__init__.py")
    )
    assert "checkpoint.engine.save" in packages
    left_out = [p for p in packages if not any(fnmatch.fnmatchcase(p, i) for i in include)]
    assert left_out == [], f"not in [tool.setuptools.packages.find] include: {left_out}"
