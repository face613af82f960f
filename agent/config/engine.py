"""The engine's tunables from the agent's settings: the one place an EngineConfig is built."""

from __future__ import annotations

from typing import Protocol

from checkpoint.engine.config import EngineConfig


class TransferSettings(Protocol):
    """What :func:`engine_config` reads: :class:`~agent.config.Settings` of ``run``, or
    the store commands' :class:`~agent.config.StoreSettings`."""

    @property
    def max_bytes_in_flight(self) -> int: ...


def engine_config(settings: TransferSettings) -> EngineConfig:
    """The engine's config for these settings: ``--max-bytes-in-flight``; every other
    field keeps its default (see :mod:`checkpoint.engine.config`)."""
    return EngineConfig(max_bytes_in_flight=settings.max_bytes_in_flight)
