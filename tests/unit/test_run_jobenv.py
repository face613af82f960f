"""The job's runtime files and the checkpoint dir's lock, in-process."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from agent.config import ConfigError
from agent.notices import sigterm_notice
from agent.run.jobenv import JobFiles, lock_checkpoint_dir


@pytest.fixture
def files() -> JobFiles:
    f = JobFiles()
    yield f  # type: ignore[misc]
    f.close()


def test_notice_and_status_files_are_private_json(files: JobFiles) -> None:
    files.write_notice(sigterm_notice(30))
    files.write_status(4, 1.0, "periodic")
    assert json.loads(files.notice_file.read_text())["source"] == "sigterm"
    assert json.loads(files.status_file.read_text())["sequence"] == 4
    assert files.notice_file.stat().st_mode & 0o777 == 0o600


def test_a_notice_or_status_file_that_cannot_be_written_is_not_fatal(files: JobFiles) -> None:
    # stands for a full disk: the write fails with an OSError either way
    files.notice_file.mkdir()
    files.status_file.mkdir()
    files.write_notice(sigterm_notice(30))  # logged (notice.file_failed), not raised
    files.write_status(1, 0.0, "exit")  # logged (status.file_failed), not raised
    assert files.notice_file.is_dir() and files.status_file.is_dir()
    files.notice_file.rmdir()
    files.write_notice(sigterm_notice(30))  # and the next write works again
    assert json.loads(files.notice_file.read_text())["source"] == "sigterm"


def test_a_second_lock_on_one_checkpoint_dir_is_refused_in_one_line(tmp_path: Path) -> None:
    fd = lock_checkpoint_dir(tmp_path)
    try:
        with pytest.raises(ConfigError) as refused:
            lock_checkpoint_dir(tmp_path)
        assert "\n" not in str(refused.value)
        assert str(refused.value).startswith("--checkpoint-dir (SPOT_AGENT_CHECKPOINT_DIR): ")
        assert f"pid {os.getpid()}" in str(refused.value)
    finally:
        os.close(fd)
    os.close(lock_checkpoint_dir(tmp_path))  # released with its descriptor


def test_cut_off_save_variable_is_only_ever_the_agents_word(
    files: JobFiles, tmp_path: Path
) -> None:
    from agent.cli import build_parser
    from agent.config import load_settings
    from agent.run.jobenv import job_environ
    from checkpoint.protocol import CUT_OFF_SAVE_ENV

    parsed = build_parser().parse_args(["run"])
    environ = {"XDG_STATE_HOME": str(tmp_path), CUT_OFF_SAVE_ENV: "1"}
    s = load_settings(parsed, ["job"], environ)
    assert CUT_OFF_SAVE_ENV not in job_environ(s, files, 1, 3)  # inherited: dropped
    assert job_environ(s, files, 1, None, cut_off=True)[CUT_OFF_SAVE_ENV] == "1"


def test_status_file_says_declared_from_the_start(files: JobFiles) -> None:
    """request_sync() waits for ``declared`` when the agent publishes it at all."""
    files.write_status(None, 0.0, "restore")
    assert json.loads(files.status_file.read_text())["declared"] == 0.0
    files.write_declared(12.5)
    files.write_status(1, 1.0, "requested")
    assert json.loads(files.status_file.read_text())["declared"] == 12.5
