"""The EC2 instance metadata protocol: paths, headers, limits and time formats.

One module, shared by the client (:mod:`agent.notices.client`) and the emulator
(:mod:`agent.imds_mock`: its server and the metadata tree, which places each notice and
identity item at the path named here), so that the two can never disagree about what
IMDS looks like.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

#: The SDKs' default endpoints (``AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE`` IPv4 or IPv6).
DEFAULT_ENDPOINT = "http://169.254.169.254"
DEFAULT_ENDPOINT_IPV6 = "http://[fd00:ec2::254]"

TOKEN_PATH = "/latest/api/token"
TOKEN_HEADER = "X-aws-ec2-metadata-token"
#: Sent with the token PUT (the TTL asked for); IMDS echoes it on the PUT reply and, on
#: every GET made with a token, answers with the token's remaining seconds.
TTL_HEADER = "X-aws-ec2-metadata-token-ttl-seconds"
MAX_TOKEN_TTL = 21600
META_PREFIX = "/latest/meta-data/"

# Notice paths, relative to /latest/meta-data/.
INSTANCE_ACTION = "spot/instance-action"
TERMINATION_TIME = "spot/termination-time"
REBALANCE_PATH = "events/recommendations/rebalance"
SCHEDULED_PATH = "events/maintenance/scheduled"

# Identity paths the agent binds to its log events.
IDENTITY_PATHS = {
    "instance_id": "instance-id",
    "instance_type": "instance-type",
    "availability_zone": "placement/availability-zone",
    "lifecycle": "instance-life-cycle",  # spot or on-demand: the timeline shows it
}

#: Spot interruption actions. Each notice's ``time`` says when: the agent plans from it,
#: whatever the action (EC2 documents no warning before hibernation, a ``time`` already
#: due; AWS's ec2-metadata-mock serves two minutes for every action).
SPOT_ACTIONS = ("terminate", "stop", "hibernate")
#: EC2 gives two minutes between the instance-action notice and a stop or termination.
SPOT_WARNING = timedelta(seconds=120)

#: Scheduled-event codes (``events/maintenance/scheduled``) and their states.
EVENT_CODES = (
    "instance-stop",
    "instance-retirement",
    "instance-reboot",
    "system-reboot",
    "system-maintenance",
)
EVENT_STATES = ("active", "completed", "canceled")
#: Codes that end the instance (or our process on it): the job must be stopped in time.
INTERRUPTING_CODES = frozenset({"instance-stop", "instance-retirement"})
#: Codes that restart the instance: the job dies with it, so a checkpoint shortly before.
REBOOT_CODES = frozenset({"instance-reboot", "system-reboot"})

_MONTH_NAMES = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def iso_time(moment: datetime) -> str:
    """The format of instance-action and rebalance times: ``2026-11-23T12:00:00Z``."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def event_time(moment: datetime) -> str:
    """The format of scheduled-event times: ``21 Jan 2019 09:00:43 GMT``."""
    # Built by hand: %b follows the process locale, EC2's month names do not.
    moment = moment.astimezone(UTC)
    month = _MONTH_NAMES[moment.month - 1]
    return f"{moment.day} {month} {moment.year} {moment:%H:%M:%S} GMT"


def month_number(name: str) -> int | None:
    """1..12 for EC2's English month abbreviations, whatever the locale."""
    try:
        return _MONTH_NAMES.index(name.title()) + 1
    except ValueError:
        return None
