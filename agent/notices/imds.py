"""The IMDS notice source for a run's settings, chosen without any network call."""

from __future__ import annotations

from collections.abc import Callable

import structlog

from ..config import Settings
from .notice import NoticeSource

#: The fastest a rebalance recommendation may trigger checkpoints, whatever --sync-interval.
REBALANCE_EVERY_MAX = 60.0


def looks_like_ec2(sys_root: str = "/sys") -> bool:
    """True on EC2 hardware (Nitro DMI or a Xen hypervisor uuid), without any network call.

    ``--imds auto`` asks this before polling, so a laptop or a CI runner never sends a
    request to the link-local metadata address.
    """
    signatures = (
        ("class/dmi/id/sys_vendor", "amazon ec2"),
        ("class/dmi/id/board_asset_tag", "i-"),
        ("hypervisor/uuid", "ec2"),
    )
    for rel, prefix in signatures:
        try:
            with open(f"{sys_root}/{rel}") as fh:
                if fh.read().strip().lower().startswith(prefix):
                    return True
        except OSError:
            continue
    return False


def rebalance_every(sync_interval: float) -> float:
    """At most one rebalance checkpoint per --sync-interval or per minute, the shorter."""
    return min(sync_interval, REBALANCE_EVERY_MAX) if sync_interval > 0 else REBALANCE_EVERY_MAX


def make_imds_source(
    settings: Settings,
    on_identity: Callable[[dict[str, str | None]], None],
    *,
    looks_like_ec2: Callable[[], bool] = looks_like_ec2,
) -> NoticeSource | None:
    """The metadata-service source, or None (logged once, with why) when there is none.

    Cheap: no request is sent here. The source's ``run`` does everything in its own
    thread: it tries the service with a short back-off until it answers, then logs
    ``imds.polling``, hands ``{"instance_id", "instance_type", "availability_zone",
    "lifecycle"}`` to ``on_identity`` once, and polls for notices until stopped.
    """
    log = structlog.get_logger()
    s = settings
    why = None
    if s.imds == "off":
        why = "--imds off"
    elif s.imds_disabled:
        why = "AWS_EC2_METADATA_DISABLED=true"
    elif s.imds == "auto" and not s.imds_endpoint_set and not looks_like_ec2():
        why = "not on EC2 and AWS_EC2_METADATA_SERVICE_ENDPOINT unset"
    if why is not None:
        # --imds on with the SDK's kill switch set: worth a warning, the two disagree.
        (log.warning if s.imds == "on" else log.info)(
            "imds.skipped", why=why, notices="SIGTERM only"
        )
        return None
    # The client and its source bring requests (and its charset detection): imported
    # here, when there is a service to poll; a run without one starts its job without them.
    from .client import ImdsClient
    from .source import ImdsSource

    client = ImdsClient(s.imds_endpoint, allow_v1=s.imds_v1 == "allow")
    return ImdsSource(
        client,
        interval=s.imds_interval,
        rebalance_every=rebalance_every(s.sync_interval),
        required=s.imds == "on",
        on_identity=on_identity,
    )
