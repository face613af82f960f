"""The bytes-in-flight bound: its option, and the budget that enforces it."""

from __future__ import annotations

import argparse
import os
import threading
from pathlib import Path
from typing import Any

import pytest

from agent.config import (
    RUN_OPTIONS,
    ConfigError,
    load_settings,
    load_store_settings,
    parse_byte_size,
)
from checkpoint.engine.budget import ByteBudget
from checkpoint.engine.format.hashes import new_id
from checkpoint.engine.format.manifest import Chunk
from checkpoint.engine.restore.download import _ChunkWriter
from checkpoint.errors import ObjectTooLarge


def settings(environ: dict[str, str], **flags: str) -> Any:
    args = argparse.Namespace(**{o.dest: None for o in RUN_OPTIONS})
    for name, value in flags.items():
        setattr(args, name, value)
    return load_settings(args, ["true"], {"HOME": "/tmp", **environ})


@pytest.mark.parametrize(
    ("raw", "value"),
    [
        ("67108864", 64 << 20),
        ("64M", 64 << 20),
        ("64MiB", 64 << 20),
        ("1g", 1 << 30),
        ("512k", 512 << 10),
        (" 96 MB ", 96 << 20),
    ],
)
def test_sizes_are_binary(raw: str, value: int) -> None:
    assert parse_byte_size(raw) == value


def test_the_default_and_the_environment_and_the_flag() -> None:
    assert settings({}).max_bytes_in_flight == 32 << 20
    assert settings({"SPOT_AGENT_MAX_BYTES_IN_FLIGHT": "256M"}).max_bytes_in_flight == 256 << 20
    flagged = settings({"SPOT_AGENT_MAX_BYTES_IN_FLIGHT": "256M"}, max_bytes_in_flight="16M")
    assert flagged.max_bytes_in_flight == 16 << 20


@pytest.mark.parametrize(
    ("raw", "why"), [("lots", "expected a size such as 64M"), ("1M", "at least 8M"), ("-5M", "")]
)
def test_a_bad_value_is_one_line_naming_the_setting(raw: str, why: str) -> None:
    with pytest.raises(ConfigError) as caught:
        settings({"SPOT_AGENT_MAX_BYTES_IN_FLIGHT": raw})
    text = str(caught.value)
    assert "--max-bytes-in-flight (SPOT_AGENT_MAX_BYTES_IN_FLIGHT)" in text
    assert why in text and "\n" not in text


def test_checkpoints_restore_takes_it_too(tmp_path: Path) -> None:
    args = argparse.Namespace(checkpoint_uri=(tmp_path / "s").as_uri(), job_id="j")
    ss = load_store_settings(args, {"HOME": str(tmp_path)})
    assert ss.max_bytes_in_flight == 32 << 20
    args.max_bytes_in_flight = "32M"
    assert load_store_settings(args, {"HOME": str(tmp_path)}).max_bytes_in_flight == 32 << 20


def test_the_budget_holds_back_what_does_not_fit() -> None:
    budget = ByteBudget(10)
    budget.acquire(6)
    got = threading.Event()

    def second() -> None:
        budget.acquire(6)
        got.set()

    t = threading.Thread(target=second)
    t.start()
    assert not got.wait(0.2)  # 12 > 10: waits
    budget.release(6)
    assert got.wait(10)
    t.join()
    assert budget.held == 6 and budget.peak == 6


def test_one_request_larger_than_the_budget_goes_alone() -> None:
    budget = ByteBudget(10)
    budget.acquire(25)  # nothing else held: let through, or it would wait forever
    assert budget.held == 25
    budget.release(25)
    budget.acquire(4, headroom=4)
    budget.acquire(2)
    assert budget.held == 6
    with pytest.raises(ValueError, match="max_bytes_in_flight"):
        ByteBudget(0)


def test_a_chunk_writer_refuses_bytes_past_its_chunk(tmp_path: Path) -> None:
    """A store that sends more than the chunk's size cannot overwrite the next chunk."""
    path = tmp_path / "f"
    path.write_bytes(b"a" * 8 + b"b" * 8)
    fd = os.open(path, os.O_WRONLY)
    try:
        into = _ChunkWriter(fd, 0, Chunk(new_id(b"d" * 8), 8), "blobs/x", "f")
        into.write(0, b"c" * 4)
        with pytest.raises(ObjectTooLarge):
            into.write(4, b"c" * 6)
        into.write(0, b"d" * 8)  # read again from the start: the hash starts over
    finally:
        os.close(fd)
    assert path.read_bytes() == b"d" * 8 + b"b" * 8
    assert into.matches()  # the bytes of the second read only
