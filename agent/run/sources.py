"""Where notices come from, besides SIGTERM. Called in a worker thread: probing the
metadata service may take seconds, and the loop must keep serving signals meanwhile."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .. import logs
from ..config import ConfigError, Settings
from ..imds import ImdsClient, ImdsSource, ImdsUnavailable, looks_like_ec2
from ..notices import NoticeSource

log = logs.get_logger()

_IDENTITY = (
    ("instance_id", "instance-id"),
    ("instance_type", "instance-type"),
    ("availability_zone", "placement/availability-zone"),
)


def notice_sources(
    s: Settings, on_identity: Callable[[dict[str, Any]], None]
) -> tuple[NoticeSource, ...]:
    """The metadata-service source, if ``--imds`` and the machine call for one.

    ``on_identity`` receives the instance's identity for the log. Raises
    :class:`ConfigError` when ``--imds on`` and the service cannot be used.
    """
    if s.imds == "off":
        return ()
    if s.imds == "auto" and not s.imds_endpoint_set and not looks_like_ec2():
        log.info(
            "imds.skipped",
            why="not on EC2 and AWS_EC2_METADATA_SERVICE_ENDPOINT unset",
            notices="SIGTERM only",
        )
        return ()
    client = ImdsClient(s.imds_endpoint)
    reason = client.probe()
    if reason is not None:
        if s.imds == "on":
            raise ConfigError(
                "--imds (SPOT_AGENT_IMDS)",
                f"on, but the metadata service at {s.imds_endpoint} cannot be used: {reason}",
            )
        log.warning(
            "imds.unavailable", endpoint=s.imds_endpoint, reason=reason, notices="SIGTERM only"
        )
        return ()
    identity: dict[str, Any] = {}
    for name, path in _IDENTITY:
        try:
            identity[name] = client.get(path)
        except ImdsUnavailable:
            identity[name] = None
    on_identity(identity)
    log.info("imds.polling", endpoint=s.imds_endpoint, interval=s.imds_interval)
    return (ImdsSource(client, interval=s.imds_interval),)
