"""The group settings: N agents, one per node, sharing one job id (docs/groups.md).

The rank defaults from the platform's own variables: ``JOB_COMPLETION_INDEX`` (a
Kubernetes indexed Job), ``AWS_BATCH_JOB_NODE_INDEX`` and ``AWS_BATCH_JOB_NUM_NODES``
(a Batch multi-node job). Without a size, or with a size of 1, there is no group and
everything is as for one node.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from dataclasses import dataclass

from .option import Option, resolve
from .parsers import ConfigError, parse_choice, parse_count

#: the most ranks a group may have (a record names every rank's part)
MAX_GROUP_SIZE = 4096
#: how often an agent of a group looks for a peer's interruption notice, in seconds
NOTICE_WATCH_INTERVAL = 2.0

#: A multi-node group (docs/groups.md): read by :mod:`agent.config.group`.
GROUP_OPTIONS: tuple[Option, ...] = (
    Option(
        "--group-size",
        "SPOT_AGENT_GROUP_SIZE",
        "the number of nodes (agents) of a multi-node job that share one job id and commit "
        "one save point of every node or none (default: AWS_BATCH_JOB_NUM_NODES, else 1: "
        "no group); see docs/groups.md",
        parse_count,
        metavar="N",
    ),
    Option(
        "--group-rank",
        "SPOT_AGENT_GROUP_RANK",
        "this node's rank in the group, 0 to N-1 (default: JOB_COMPLETION_INDEX of a "
        "Kubernetes indexed Job, else AWS_BATCH_JOB_NODE_INDEX)",
        parse_count,
        metavar="R",
    ),
    Option(
        "--group-restore",
        "SPOT_AGENT_GROUP_RESTORE",
        "what a rank of a group restores: all (the union of every rank's files, as on a "
        "shared filesystem; PyTorch Distributed Checkpoint needs it) or own (its own files)",
        parse_choice("all", "own"),
        default="all",
        metavar="WHAT",
    ),
)

_SIZE, _RANK, _RESTORE = GROUP_OPTIONS


@dataclass(frozen=True)
class GroupSettings:
    size: int
    rank: int
    restore: str = "all"  # "all" or "own"
    rank_source: str = ""  # where the rank came from, for the start-up log and doctor
    watch_interval: float = NOTICE_WATCH_INTERVAL


def _platform_count(environ: Mapping[str, str], name: str) -> int | None:
    raw = environ.get(name, "").strip()
    if not raw:
        return None
    try:
        return parse_count(raw)
    except ValueError as exc:
        raise ConfigError(name, str(exc)) from None


def load_group_settings(
    args: argparse.Namespace, environ: Mapping[str, str]
) -> GroupSettings | None:
    """The group of this agent, or None when it runs alone. Raises ``ConfigError``."""
    size = resolve(_SIZE, args, environ)
    size_source = _SIZE.setting
    if size is None:
        size = _platform_count(environ, "AWS_BATCH_JOB_NUM_NODES")
        size_source = "AWS_BATCH_JOB_NUM_NODES"
    if size is None or size == 1:
        return None
    if not 2 <= size <= MAX_GROUP_SIZE:
        raise ConfigError(size_source, f"a group has 2 to {MAX_GROUP_SIZE} nodes, got {size}")
    rank = resolve(_RANK, args, environ)
    rank_source = _RANK.setting
    for name in ("JOB_COMPLETION_INDEX", "AWS_BATCH_JOB_NODE_INDEX"):
        if rank is None:
            rank, rank_source = _platform_count(environ, name), name
    if rank is None:
        raise ConfigError(
            _RANK.setting,
            f"a group of {size} needs each node's rank (0 to {size - 1}): set it, or run as "
            "a Kubernetes indexed Job (JOB_COMPLETION_INDEX)",
        )
    if rank >= size:
        raise ConfigError(rank_source, f"rank {rank} is not below the group size {size}")
    restore = resolve(_RESTORE, args, environ)
    return GroupSettings(size, rank, restore, rank_source)
