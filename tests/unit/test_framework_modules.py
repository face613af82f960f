"""The framework integrations as modules: ``import checkpoint`` never loads a framework, they
compile on Python 3.9, import nothing of the engine, and their resume helpers pick the
newest whole checkpoint and pass over partial ones."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from checkpoint.api_files import API_MODULES
from tests.static.test_api_old_python import python39

REPO = Path(__file__).resolve().parents[2]
MODULES = ["hf.py", "lightning.py", "pytorch_lightning.py", "_lightning.py"]
FRAMEWORKS = ("torch", "transformers", "lightning", "pytorch_lightning", "lightning_fabric")


def test_import_checkpoint_loads_no_framework() -> None:
    code = (
        "import sys, checkpoint\n"
        f"loaded = sorted(m for m in {FRAMEWORKS!r} if m in sys.modules)\n"
        "assert not loaded, loaded\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=60
    )
    assert out.returncode == 0, out.stderr


@pytest.mark.parametrize("name", MODULES)
def test_integration_imports_only_the_job_api(name: str) -> None:
    """Job API: from the package, only the modules ``import checkpoint`` loads (api_files)
    and the shared ``_lightning``; never the engine."""
    tree = ast.parse((REPO / "checkpoint" / name).read_text())
    local = {
        node.module or "."
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.level == 1
    }
    relative_names = {
        alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module is None
        for alias in node.names
    }
    job_side = {".", "_lightning", *API_MODULES}
    assert local <= job_side, local
    assert relative_names <= set(API_MODULES), relative_names


def test_integrations_compile_on_python_3_9(tmp_path: Path) -> None:
    exe = python39()
    if exe is None:
        pytest.skip("no Python 3.9 here (set SPOT_AGENT_TEST_PYTHON39, or install python3.9)")
    paths = [str(REPO / "checkpoint" / name) for name in MODULES]
    code = "import sys\nfor p in sys.argv[1:]: compile(open(p).read(), p, 'exec')"
    out = subprocess.run([exe, "-c", code, *paths], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr


# -- transformers: checkpoint-N/ ---------------------------------------------------------


def trainer_checkpoint(root: Path, step: int, *, state_step: int | None = None) -> Path:
    path = root / f"checkpoint-{step}"
    path.mkdir(parents=True)
    (path / "model.safetensors").write_bytes(b"weights")
    steps = step if state_step is None else state_step
    (path / "trainer_state.json").write_text(f'{{"global_step": {steps}}}')
    return path


def test_hf_last_checkpoint_is_the_newest_whole_one(tmp_path: Path) -> None:
    hf = pytest.importorskip("checkpoint.hf")
    assert hf.last_checkpoint(tmp_path / "missing") is None
    assert hf.last_checkpoint(tmp_path) is None
    trainer_checkpoint(tmp_path, 5)
    good = trainer_checkpoint(tmp_path, 10)
    assert hf.last_checkpoint(tmp_path) == str(good)
    # newer, but partial in each way a cut-off save leaves one
    (trainer_checkpoint(tmp_path, 15) / "trainer_state.json").unlink()
    (trainer_checkpoint(tmp_path, 20) / "model.safetensors").unlink()
    (trainer_checkpoint(tmp_path, 25) / "trainer_state.json").write_text('{"global_st')
    trainer_checkpoint(tmp_path, 30, state_step=25)  # a copy left under the wrong name
    (tmp_path / "checkpoint-35").write_text("not a directory")
    (tmp_path / "checkpoint-x").mkdir()
    assert hf.last_checkpoint(tmp_path) == str(good)
    # numeric order, not the order of the names
    assert hf.last_checkpoint(tmp_path) != str(tmp_path / "checkpoint-5")


def test_hf_refuses_an_output_dir_outside_the_checkpoint_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hf = pytest.importorskip("checkpoint.hf")
    monkeypatch.setenv("CHECKPOINT_DIR", str(tmp_path / "ck"))
    monkeypatch.delenv("SPOT_AGENT_PID", raising=False)
    hf._check_inside_checkpoint_dir(str(tmp_path / "elsewhere"))  # no agent: anything goes
    monkeypatch.setenv("SPOT_AGENT_PID", str(os.getpid()))
    hf._check_inside_checkpoint_dir(str(tmp_path / "ck" / "trainer"))
    hf._check_inside_checkpoint_dir(str(tmp_path / "ck"))
    with pytest.raises(ValueError, match=r"output_dir=.*elsewhere is outside the checkpoint dir"):
        hf._check_inside_checkpoint_dir(str(tmp_path / "elsewhere"))
    with pytest.raises(ValueError, match="outside"):
        hf._check_inside_checkpoint_dir(str(tmp_path / "ck" / ".." / "ck2"))


# -- Lightning: .ckpt files --------------------------------------------------------------


def ckpt(path: Path, mtime: int) -> Path:
    with zipfile.ZipFile(path, "w") as archive:  # torch.save's layout
        archive.writestr(f"{path.stem}/data.pkl", b"pickle")
        archive.writestr(f"{path.stem}/version", b"3\n")
    os.utime(path, ns=(mtime, mtime))
    return path


def test_lightning_last_checkpoint_is_the_newest_whole_one(tmp_path: Path) -> None:
    from checkpoint._lightning import last_checkpoint

    assert last_checkpoint(tmp_path / "missing") is None
    assert last_checkpoint(tmp_path) is None
    ckpt(tmp_path / "epoch=0-step=5.ckpt", 1_000_000_000)
    newest = ckpt(tmp_path / "interrupted.ckpt", 3_000_000_000)
    ckpt(tmp_path / "epoch=1-step=10.ckpt", 2_000_000_000)
    assert last_checkpoint(tmp_path) == str(newest)
    # newer, but not whole: cut off, or not torch.save's archive; links are skipped
    cut = tmp_path / "epoch=2-step=15.ckpt"
    cut.write_bytes(newest.read_bytes()[:-30])
    os.utime(cut, ns=(4_000_000_000, 4_000_000_000))
    other = tmp_path / "epoch=3-step=20.ckpt"
    with zipfile.ZipFile(other, "w") as archive:
        archive.writestr("readme.txt", b"")
    os.utime(other, ns=(5_000_000_000, 5_000_000_000))
    (tmp_path / "last.ckpt").symlink_to("epoch=0-step=5.ckpt")
    (tmp_path / "notes.txt").write_text("x")
    assert last_checkpoint(tmp_path) == str(newest)


def test_lightning_refuses_a_dirpath_outside_the_checkpoint_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from checkpoint._lightning import _check_inside_checkpoint_dir

    monkeypatch.setenv("CHECKPOINT_DIR", str(tmp_path / "ck"))
    monkeypatch.setenv("SPOT_AGENT_PID", str(os.getpid()))
    _check_inside_checkpoint_dir(tmp_path / "ck" / "lightning")
    with pytest.raises(ValueError, match=r"lightning_logs is outside the checkpoint dir"):
        _check_inside_checkpoint_dir(tmp_path / "lightning_logs")
