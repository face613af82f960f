"""``spot-agent job-api-path``: ``import checkpoint`` from an interpreter that does not have
the agent, with the job API alone (standard library only), nothing of the engine.

The foreign interpreter is a venv made here without the system's site-packages (so without
the agent and its dependencies), holding a stand-in for the unrelated PyPI package called
``checkpoint``: the job API on ``PYTHONPATH`` must win over it.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import venv
from pathlib import Path

import pytest

from checkpoint.api_files import API_MODULES, COPIED_MODULES
from tests.agentproc import REPO, agent_env, cli

#: a job: uses the API and reports which modules the import loaded
JOB = textwrap.dedent("""
    import json, sys, sysconfig
    before = set(sys.modules)
    import checkpoint
    state = checkpoint.load_json("state.json", default={"step": 0})
    with checkpoint.saving():
        checkpoint.save_json("state.json", {"step": state["step"] + 1})
    stdlib = sysconfig.get_paths()["stdlib"]
    loaded = sorted(set(sys.modules) - before)
    ours = [m for m in loaded if m.split(".")[0] == "checkpoint"]
    files = {m: getattr(sys.modules[m], "__file__", None) for m in loaded if m not in ours}
    not_stdlib = [m for m, f in files.items() if f and not f.startswith(stdlib)]
    print(json.dumps({"file": checkpoint.__file__, "ours": ours, "not_stdlib": not_stdlib}))
""")


@pytest.fixture(scope="module")
def foreign_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A venv without the agent, and with a ``checkpoint`` package that is not ours."""
    root = tmp_path_factory.mktemp("foreign") / "venv"
    venv.EnvBuilder(system_site_packages=False, with_pip=False).create(root)
    python = root / "bin" / "python"
    site = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    impostor = Path(site) / "checkpoint"
    impostor.mkdir()
    (impostor / "__init__.py").write_text("IMPOSTOR = True\n")
    return python


def job_api_path(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return cli(tmp_path, "job-api-path", *args)


def test_the_copy_is_the_job_api_files_and_nothing_else(tmp_path: Path) -> None:
    out = job_api_path(tmp_path, "--into", str(tmp_path / "api"))
    assert out.returncode == 0, out.stderr
    assert out.stdout == f"{tmp_path / 'api'}\n"
    copied = sorted(p.name for p in (tmp_path / "api" / "checkpoint").iterdir())
    assert copied == sorted(f"{name}.py" for name in COPIED_MODULES)
    for name in copied:
        ours = (REPO / "checkpoint" / name).read_bytes()
        assert (tmp_path / "api" / "checkpoint" / name).read_bytes() == ours, name


def test_api_modules_is_exactly_what_import_checkpoint_loads() -> None:
    """The one list of job-API files: an import added to the API (or a module left in the
    list after it is gone) fails here."""
    code = "import sys, checkpoint; print(sorted(m for m in sys.modules if m.split('.')[0] == 'checkpoint'))"  # noqa: E501
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True
    )
    expected = sorted("checkpoint" if m == "__init__" else f"checkpoint.{m}" for m in API_MODULES)
    assert eval(out.stdout) == expected  # a list literal of module names


def test_a_venv_without_the_agent_imports_the_job_api_and_not_the_pypi_namesake(
    tmp_path: Path, foreign_venv: Path
) -> None:
    api = tmp_path / "api"
    assert job_api_path(tmp_path, "--into", str(api)).returncode == 0
    # without the path: the venv has no agent, and its `checkpoint` is the other package
    bare = subprocess.run(
        [foreign_venv, "-c", "import checkpoint; print(checkpoint.IMPOSTOR); import agent"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert bare.stdout == "True\n" and "No module named 'agent'" in bare.stderr, bare.stderr

    env = {"PYTHONPATH": str(api), "CHECKPOINT_DIR": str(tmp_path / "ck"), "PATH": "/usr/bin"}
    out = subprocess.run(
        [foreign_venv, "-c", JOB], capture_output=True, text=True, env=env, cwd=tmp_path
    )
    assert out.returncode == 0, out.stderr
    seen = json.loads(out.stdout)
    assert seen["file"] == str(api / "checkpoint" / "__init__.py")
    assert seen["not_stdlib"] == [], seen
    # nothing of the engine: only the job API's own modules were imported
    assert {m.partition(".")[2] or "__init__" for m in seen["ours"]} <= set(API_MODULES)
    assert json.loads((tmp_path / "ck" / "state.json").read_text()) == {"step": 1}
    # the framework callbacks are there too: what stops them is the framework the venv lacks
    hf = subprocess.run(
        [foreign_venv, "-c", "import checkpoint.hf"], capture_output=True, text=True, env=env
    )
    assert "No module named 'transformers'" in hf.stderr, hf.stderr


def test_the_documented_command_runs_a_foreign_job_under_the_agent(
    tmp_path: Path, foreign_venv: Path
) -> None:
    """``spot-agent run -- env PYTHONPATH="$(spot-agent job-api-path)" venv/bin/python``: the
    job saves through the API, the agent (its own checkpoint package intact) commits it, and
    the next run resumes."""
    env = agent_env(tmp_path, {"XDG_CACHE_HOME": str(tmp_path / "cache")})
    for step in (1, 2):
        api = cli(tmp_path, "job-api-path", env=env).stdout.strip()
        assert api == str(tmp_path / "cache" / "spot-agent" / f"job-api-{_version()}")
        command = ["env", f"PYTHONPATH={api}", str(foreign_venv), "-c", JOB]
        out = cli(tmp_path, "run", "--job-id", "foreign", "--", *command, env=env)
        assert out.returncode == 0, out.stdout + out.stderr
        assert '"event": "sync.committed"' in out.stdout, out.stdout
        restored = tmp_path / f"restored{step}"
        got = cli(tmp_path, "checkpoints", "restore", "--job-id", "foreign", "--to", str(restored))
        assert got.returncode == 0, got.stderr
        assert json.loads((restored / "state.json").read_text()) == {"step": step}


def _version() -> str:
    from checkpoint import __version__

    return __version__


def test_an_existing_directory_that_is_not_a_copy_is_never_replaced(tmp_path: Path) -> None:
    mine = tmp_path / "src" / "checkpoint"
    mine.mkdir(parents=True)
    (mine / "engine.py").write_text("# someone's own code\n")
    (mine / "api.py").write_text("# also theirs\n")
    out = job_api_path(tmp_path, "--into", str(tmp_path / "src"))
    assert out.returncode == 2 and out.stdout == ""
    assert out.stderr.count("\n") == 1 and "engine.py" in out.stderr, out.stderr
    assert (mine / "api.py").read_text() == "# also theirs\n"


def test_an_older_copy_is_replaced_and_an_identical_one_left_alone(tmp_path: Path) -> None:
    api = tmp_path / "api"
    assert job_api_path(tmp_path, "--into", str(api)).returncode == 0
    (api / "checkpoint" / "api.py").write_text("# an older version\n")
    (api / "checkpoint" / "__pycache__").mkdir()
    assert job_api_path(tmp_path, "--into", str(api)).returncode == 0
    assert (api / "checkpoint" / "api.py").read_bytes() == (REPO / "checkpoint/api.py").read_bytes()
    assert not (api / "checkpoint" / "__pycache__").exists()
    before = (api / "checkpoint").stat().st_ino
    assert job_api_path(tmp_path, "--into", str(api)).returncode == 0
    assert (api / "checkpoint").stat().st_ino == before
    assert sorted(p.name for p in api.iterdir()) == ["checkpoint"]  # no staging left over
