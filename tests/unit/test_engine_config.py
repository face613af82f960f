"""EngineConfig: the engine's tunables in one object, built from the settings, passed down."""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

import pytest

from agent.config import RUN_OPTIONS, load_settings
from agent.config.engine import engine_config
from checkpoint.engine.checkpointer import Checkpointer
from checkpoint.engine.config import DEFAULTS, EngineConfig
from checkpoint.engine.format.jobstore import JobStore
from checkpoint.engine.save import known, savepoints, upload, writers
from checkpoint.engine.store.base import LocalStore


def test_the_settings_make_the_config() -> None:
    args = argparse.Namespace(**{o.dest: None for o in RUN_OPTIONS})
    args.max_bytes_in_flight = "64M"
    s = load_settings(args, ["true"], {"HOME": "/tmp"})
    assert engine_config(s) == replace(DEFAULTS, max_bytes_in_flight=64 << 20)


def test_the_checkpointer_hands_its_config_to_the_save_side(tmp_path: Path) -> None:
    config = EngineConfig(chunk_size=1 << 16, pack_threshold=0, max_bytes_in_flight=1 << 20)
    src = tmp_path / "src"
    src.mkdir()
    (src / "big").write_bytes(b"x" * (3 << 16))
    ckpt = Checkpointer(JobStore(LocalStore(tmp_path / "store"), "job"), src, config=config)
    try:
        assert ckpt.config == config
        assert (ckpt.chunk_size, ckpt.pack_threshold) == (1 << 16, 0)
        assert ckpt.max_bytes_in_flight == 1 << 20
        ckpt.sync_once("test")
        assert ckpt.base is not None
        [entry] = ckpt.base.files
        assert len(entry.chunks) == 3  # cut at the config's chunk size
    finally:
        ckpt.close()


def test_a_keyword_replaces_one_field(tmp_path: Path) -> None:
    job = JobStore(LocalStore(tmp_path / "store"), "job")
    ckpt = Checkpointer(job, tmp_path, config=EngineConfig(pack_threshold=0), chunk_size=4096)
    try:
        assert ckpt.config == EngineConfig(pack_threshold=0, chunk_size=4096)
    finally:
        ckpt.close()


@pytest.mark.parametrize(
    ("field", "value", "why"),
    [
        ("chunk_size", 0, "chunk_size must be in"),
        ("chunk_size", 65 << 20, "chunk_size must be in"),
        ("max_bytes_in_flight", 0, "max_bytes_in_flight must be at least 1, not 0"),
        ("concurrency", 0, "concurrency must be at least 1, not 0"),
        ("pack_threshold", -1, "pack_threshold must be at least 0, not -1"),
        ("progress_seconds", -1.0, "progress_seconds must be at least 0, not -1.0"),
    ],
)
def test_a_bad_value_is_one_line_naming_the_field(field: str, value: float, why: str) -> None:
    with pytest.raises(ValueError, match=why) as raised:
        EngineConfig(**{field: value})  # type: ignore[arg-type]
    assert "\n" not in str(raised.value)


def test_the_globals_not_yet_wired_agree_with_the_config() -> None:
    # Until these modules take their values from the config they are handed, each global
    # is a second copy of a default: it must not drift. (Delete a line once wired.)
    assert DEFAULTS.pack_threshold == upload.PACK_THRESHOLD
    assert DEFAULTS.pack_target == upload.PACK_TARGET
    assert DEFAULTS.freeze_attempts == savepoints.FREEZE_ATTEMPTS
    assert DEFAULTS.upload_trust_seconds == known.UPLOAD_TRUST_SECONDS
    assert DEFAULTS.writer_sample_seconds == writers.SAMPLE_SECONDS
