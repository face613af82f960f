"""docs/container.md's "add the agent to any image" recipe copies the job API only: the
files at the top of checkpoint/, not the engine behind the fence. Its copy command runs
here against this checkout, and ``import checkpoint`` from the copy loads only the
standard library."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from tests.static.test_fence import loaded_by_import_checkpoint, not_stdlib

REPO = Path(__file__).resolve().parents[2]


def copy_commands() -> str:
    text = (REPO / "docs" / "container.md").read_text()
    recipe = next(
        b for b in re.findall(r"```dockerfile\n(.*?)```", text, re.S) if "AS spot-agent" in b
    )
    joined = re.sub(r"\\\n\s*", " ", recipe)
    run = next(
        line for line in joined.splitlines() if "/opt/spot-agent/api" in line and "RUN" in line
    )
    steps = [s.strip() for s in run.removeprefix("RUN").split("&&")]
    return " && ".join(s for s in steps if "/opt/spot-agent/api" in s)


def test_the_recipe_copies_the_job_api_and_not_the_engine(tmp_path: Path) -> None:
    commands = copy_commands()
    assert commands, "no step of the recipe fills /opt/spot-agent/api"
    here = commands.replace("/src/", f"{REPO}/").replace("/opt/spot-agent", str(tmp_path))
    subprocess.run(["sh", "-c", here], check=True, timeout=60)
    api = tmp_path / "api"
    copied = sorted(p.relative_to(api).as_posix() for p in api.rglob("*.py"))
    assert copied == sorted(f"checkpoint/{p.name}" for p in (REPO / "checkpoint").glob("*.py"))
    loaded = loaded_by_import_checkpoint(api)
    assert "checkpoint.api" in loaded and not_stdlib(loaded) == []
    out = subprocess.run(
        [sys.executable, "-I", "-c", f"import sys; sys.path.insert(0, {str(api)!r}); "
         "import checkpoint; print(checkpoint.__file__)"],
        capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip
    assert out.stdout.strip().startswith(str(api))
