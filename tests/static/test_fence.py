"""The fence around the job's side of ``checkpoint``, held on every machine (no skip).

What a job imports (the modules at the top of ``checkpoint/``) runs in the job's own
interpreter: standard library only, Python 3.9 syntax, never the engine behind the fence
(``checkpoint/engine/``: boto3, Python 3.11+). ``test_api_old_python.py`` also runs it
under a real Python 3.9 where one is installed.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

from checkpoint.api_files import API_MODULES

REPO = Path(__file__).resolve().parents[2]
JOB_SIDE = sorted((REPO / "checkpoint").glob("*.py"))

LOADED = """
import json, sys
before = set(sys.modules)
import checkpoint
print(json.dumps(sorted(set(sys.modules) - before)))
"""


def loaded_by_import_checkpoint(repo: Path = REPO) -> list[str]:
    """The modules ``import checkpoint`` loads, in a fresh interpreter (-I: no site, no
    user paths, nothing imported before)."""
    out = subprocess.run(
        [sys.executable, "-I", "-c", f"import sys; sys.path.insert(0, {str(repo)!r})\n{LOADED}"],
        capture_output=True,
        text=True,
        cwd=repo,
        timeout=60,
        check=True,
    )
    return list(json.loads(out.stdout))


def not_stdlib(names: list[str]) -> list[str]:
    return sorted(
        n
        for n in names
        if n.split(".")[0] not in sys.stdlib_module_names and n.split(".")[0] != "checkpoint"
    )


def static_imports(path: Path) -> list[tuple[str, int]]:
    """Every module a job-side file names in an import (any level, any branch)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: a sibling on the job's side, or the engine
                base = "checkpoint" + ("." + node.module if node.module else "")
                found += [(base, node.lineno)]
                if not node.module:
                    found += [(f"checkpoint.{a.name}", node.lineno) for a in node.names]
            else:
                found += [(node.module or "", node.lineno)]
    return found


def test_import_checkpoint_loads_only_the_standard_library_and_the_job_side() -> None:
    loaded = loaded_by_import_checkpoint()
    assert "checkpoint.api" in loaded  # the probe ran what a job runs
    assert not_stdlib(loaded) == [], "import checkpoint loaded more than the standard library"
    engine = [n for n in loaded if n.startswith("checkpoint.engine")]
    assert engine == [], "the job API loaded the engine"


@pytest.mark.parametrize("path", JOB_SIDE, ids=lambda p: p.name)
def test_the_job_side_parses_as_python_3_9(path: Path) -> None:
    ast.parse(path.read_text(), str(path), feature_version=(3, 9))


@pytest.fixture(scope="module")
def loaded() -> list[str]:
    return loaded_by_import_checkpoint()


@pytest.mark.parametrize("path", JOB_SIDE, ids=lambda p: p.name)
def test_the_job_side_never_names_the_engine(path: Path) -> None:
    """Function-level and conditional imports too: a path the probe above did not run."""
    bad = [
        f"line {line}: {name}"
        for name, line in static_imports(path)
        if name.startswith("checkpoint.engine")
        or (
            name.startswith("checkpoint.")
            and not (REPO / "checkpoint" / f"{name.split('.')[1]}.py").exists()
        )
    ]
    assert bad == [], f"{path.name} imports beyond the job's side"


@pytest.mark.parametrize("path", JOB_SIDE, ids=lambda p: p.name)
def test_what_import_checkpoint_loads_names_only_the_stdlib(path: Path, loaded: list[str]) -> None:
    """A module ``import checkpoint`` loads names only the standard library and its siblings,
    in any import; one it does not load (a framework's callbacks, imported by the job that
    uses that framework) may import its framework, never the engine (the test above)."""
    if f"checkpoint.{path.stem}" not in loaded and path.stem != "__init__":
        assert path.stem not in API_MODULES
        return  # not part of `import checkpoint`: checked by the test above only
    bad = [
        f"line {line}: {name}"
        for name, line in static_imports(path)
        if name.split(".")[0] != "checkpoint" and name.split(".")[0] not in sys.stdlib_module_names
    ]
    assert bad == [], f"{path.name} imports beyond the standard library"


def test_the_fence_catches_a_violation(tmp_path: Path) -> None:
    """The checks above fail on a job-side module that imports the engine or a third-party
    package, or uses syntax newer than 3.9 (a copy of the tree, changed)."""
    import shutil

    copy = tmp_path / "repo"
    shutil.copytree(
        REPO / "checkpoint", copy / "checkpoint", ignore=shutil.ignore_patterns("__pycache__")
    )
    api = copy / "checkpoint" / "api.py"
    api.write_text(api.read_text() + "\nimport structlog\nfrom .engine import progress\n")
    loaded = loaded_by_import_checkpoint(copy)
    assert "structlog" in not_stdlib(loaded)
    assert any(n.startswith("checkpoint.engine") for n in loaded)
    assert ("checkpoint.engine", api.read_text().count("\n")) in static_imports(api)
    newer = copy / "checkpoint" / "errors.py"
    newer.write_text(newer.read_text() + "\nmatch 1:\n    case _:\n        pass\n")
    with pytest.raises(SyntaxError):
        ast.parse(newer.read_text(), feature_version=(3, 9))
