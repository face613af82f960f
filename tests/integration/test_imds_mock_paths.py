"""imds-mock serves what AWS's own mock (amazon-ec2-metadata-mock, AEMM) serves, over real
HTTP on 127.0.0.1, and the agent plans a hibernation from the ``time`` it is sent."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
import requests

from agent.imds_mock import ImdsMock
from agent.imds_mock import tree as served
from agent.notices.client import ImdsClient
from agent.notices.parsers import parse_instance_action, parse_scheduled, parse_time
from agent.notices.protocol import INSTANCE_ACTION, TTL_HEADER


@pytest.fixture
def mock() -> Iterator[ImdsMock]:
    with ImdsMock("127.0.0.1", 0) as server:
        assert server.url.startswith("http://127.0.0.1:")
        yield server


def get(mock: ImdsMock, path: str) -> requests.Response:
    token = requests.put(mock.url + "/latest/api/token", headers={TTL_HEADER: "60"}, timeout=5).text
    return requests.get(
        f"{mock.url}/latest/meta-data/{path}",
        headers={"X-aws-ec2-metadata-token": token},
        timeout=5,
    )


# AEMM's metadata paths (pkg/config/defaults/aemm-metadata-default-values.json) that ours
# lacked, and what each must answer.
@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("tags/instance", "Name\nspot-agent"),
        ("tags/instance/", "Name\nspot-agent"),
        ("tags/instance/Name", served.TAGS["Name"]),
        ("public-keys", f"0={served.KEY_NAME}"),
        ("public-keys/", f"0={served.KEY_NAME}"),
        ("public-keys/0/", "openssh-key"),
        ("public-keys/0/openssh-key", served.PUBLIC_KEY),
        ("block-device-mapping/", "ami\nebs0\nroot"),
        ("block-device-mapping/ami", "/dev/xvda"),
        ("block-device-mapping/root", "/dev/xvda"),
        ("block-device-mapping/ebs0", "sdb"),
        ("placement/group-name", served.PLACEMENT_GROUP),
        ("kernel-id", served.KERNEL_ID),
        ("product-codes", served.PRODUCT_CODE),
        ("iam/security-credentials", served.ROLE),
        ("iam/security-credentials/", served.ROLE),
    ],
)
def test_aemm_paths_answer_as_plain_text(mock: ImdsMock, path: str, expected: str) -> None:
    reply = get(mock, path)
    assert reply.status_code == 200, path
    assert reply.headers["Content-Type"] == "text/plain"
    assert reply.text == expected


def test_the_public_key_is_well_formed_and_fake() -> None:
    import base64

    kind, blob, comment = served.PUBLIC_KEY.split(" ")
    raw = base64.b64decode(blob)
    assert kind == "ssh-ed25519" and raw[4:15] == b"ssh-ed25519" and len(raw) == 51
    assert raw[-32:] == bytes(32) and comment == served.KEY_NAME  # nobody holds its key


def test_json_items_are_plain_text_as_on_ec2(mock: ImdsMock) -> None:
    mock.post_interruption("stop", 120)
    mock.add_scheduled_event("instance-stop", 600)
    for path in ("spot/instance-action", "events/maintenance/scheduled", "iam/info"):
        reply = get(mock, path)
        assert reply.status_code == 200 and reply.headers["Content-Type"] == "text/plain"
        json.loads(reply.text)


def test_scheduled_events_carry_not_before_deadline(mock: ImdsMock) -> None:
    mock.add_scheduled_event("instance-stop", 600)
    (event,) = json.loads(get(mock, "events/maintenance/scheduled").text)
    before, deadline = parse_time(event["NotBefore"]), parse_time(event["NotBeforeDeadline"])
    assert before is not None and deadline is not None and deadline > before
    # and the agent reads such an event as before
    (notice,) = parse_scheduled(json.dumps([event]))
    assert notice.deadline == before


def test_instance_life_cycle_follows_the_rehearsal(mock: ImdsMock) -> None:
    assert get(mock, "instance-life-cycle").text == "on-demand"  # as AEMM's default
    mock.post_rebalance()
    assert get(mock, "instance-life-cycle").text == "spot"
    with ImdsMock("127.0.0.1", 0, notice_after=3600) as planned:
        assert get(planned, "instance-life-cycle").text == "spot"  # before the notice shows


@pytest.mark.parametrize(("lead", "expected"), [(120.0, 120.0), (0.0, 0.0)])
def test_hibernation_is_planned_from_the_time_sent(lead: float, expected: float) -> None:
    """AEMM serves ``time`` = now + 2 min for hibernate; EC2 documents it as at once. The
    agent's deadline is the ``time`` sent, whichever it is."""
    with ImdsMock("127.0.0.1", 0, notice_after=0, action="hibernate", notice_lead=lead) as m:
        client = ImdsClient(m.url, connect_timeout=2, read_timeout=2)
        try:
            body = None
            deadline = time.monotonic() + 30
            while body is None and time.monotonic() < deadline:
                body = client.get(INSTANCE_ACTION)
        finally:
            client.close()
    assert body is not None
    now = datetime.now(UTC)
    notice = parse_instance_action(body, now=now)
    assert notice.action == "hibernate"
    assert notice.deadline == parse_time(json.loads(body)["time"])
    assert abs((notice.deadline - now).total_seconds() - expected) <= 3
