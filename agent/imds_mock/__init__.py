"""A local EC2 instance metadata service (IMDSv2) for rehearsing spot-agent without EC2.

Run it with ``spot-agent imds-mock`` (or ``python -m agent.imds_mock``) and point the
agent (and boto3, NTH or the ``ec2-metadata`` package) at it::

    spot-agent imds-mock --notice-after 60 --action stop
    export AWS_EC2_METADATA_SERVICE_ENDPOINT=http://127.0.0.1:1338

It serves, in EC2's formats: the token API (``PUT /latest/api/token``, with the remaining
TTL on every GET made with a token); directory listings and trailing slashes at every
level; the spot notice paths (``termination-time`` for terminations only, ``time`` the
lead after the notice for every action, hibernate included, as AWS's ec2-metadata-mock);
rebalance recommendations; scheduled events (active, completed or
canceled); the instance's identity, network fields, user data and fake, clearly marked
IAM role credentials. A control API (see ``spot-agent imds-mock --help`` and
docs/notices.md) posts notices and injects faults from another shell.

Rooms: :mod:`.tree` (what the instance serves, at the paths :mod:`agent.notices.protocol`
names), :mod:`.state` (notices and events), :mod:`.tokens` (IMDSv2 tokens), :mod:`.faults`
(fault knobs), :mod:`.server` (HTTP and the control API), :mod:`.cli` (the command line).
"""

from .cli import CONTROL_API, add_arguments, main
from .server import CONTROL_PREFIX, DEFAULT_PORT, ImdsMock

__all__ = ["CONTROL_API", "CONTROL_PREFIX", "DEFAULT_PORT", "ImdsMock", "add_arguments", "main"]
