"""``imds-mock`` as a rehearsal target: botocore's own IMDS clients, the ``ec2-metadata``
package and NTH's start-up reads, against the emulator on 127.0.0.1."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import botocore.session
import pytest
import requests
from botocore.utils import IMDSRegionProvider, InstanceMetadataFetcher

from agent.imds_mock import ImdsMock, add_arguments, main
from agent.imds_mock import tree as served
from agent.notices.protocol import TTL_HEADER

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def mock() -> Iterator[ImdsMock]:
    with ImdsMock() as server:
        yield server


class Session:
    """Plain IMDSv2 requests against the mock."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.token = requests.put(
            url + "/latest/api/token", headers={TTL_HEADER: "300"}, timeout=2
        ).text

    def get(self, path: str) -> requests.Response:
        headers = {"X-aws-ec2-metadata-token": self.token}
        return requests.get(self.url + path, headers=headers, timeout=2)

    def text(self, path: str) -> str | None:
        reply = self.get(path)
        return reply.text if reply.status_code == 200 else None


def test_botocore_gets_the_region_and_fake_role_credentials(mock: ImdsMock) -> None:
    # base_url, always: botocore takes its endpoint from its config, not from ``env``.
    fetcher = InstanceMetadataFetcher(timeout=2, num_attempts=1, base_url=mock.url + "/")
    creds = fetcher.retrieve_iam_role_credentials()
    assert creds["role_name"] == served.ROLE
    assert creds["access_key"] == served.FAKE_ACCESS_KEY_ID
    assert "fake" in creds["secret_key"] and "fake" in creds["token"]
    session = botocore.session.Session()
    session.set_config_variable("ec2_metadata_service_endpoint", mock.url + "/")
    # botocore asks for placement/availability-zone/ (a trailing slash) and cuts the zone.
    provider = IMDSRegionProvider(session, environ={})
    assert provider._get_fetcher()._base_url == mock.url + "/"  # never the real address
    assert provider.provide() == served.REGION


def test_boto3_credentials_chain_accepts_the_fake_role(mock: ImdsMock) -> None:
    from botocore.credentials import InstanceMetadataProvider

    provider = InstanceMetadataProvider(
        iam_role_fetcher=InstanceMetadataFetcher(timeout=2, num_attempts=1, base_url=mock.url)
    )
    frozen = provider.load().get_frozen_credentials()
    assert frozen.access_key == served.FAKE_ACCESS_KEY_ID and frozen.token


def test_the_ec2_metadata_package_reads_what_it_needs(mock: ImdsMock) -> None:
    ec2_metadata = pytest.importorskip("ec2_metadata")
    # Its address is fixed in __init__, but kept in plain attributes we can point here.
    md = ec2_metadata.EC2Metadata()
    md.service_url = mock.url + "/latest/"
    md.dynamic_url = md.service_url + "dynamic/"
    md.metadata_url = md.service_url + "meta-data/"
    md.userdata_url = md.service_url + "user-data/"
    assert md.instance_id == served.INSTANCE_ID
    assert md.region == served.REGION and md.availability_zone == served.ZONE
    assert md.instance_life_cycle == "on-demand"  # no spot notice rehearsed yet
    assert md.private_ipv4 == served.PRIVATE_IP and md.mac == served.MAC
    assert md.user_data == served.DEFAULT_USER_DATA.encode()
    assert md.iam_info is not None and md.iam_info["InstanceProfileId"]
    assert md.network_interfaces[served.MAC].subnet_id.startswith("subnet-")
    assert md.security_groups == ["default"]
    assert md.spot_instance_action is None
    mock.post_interruption("stop", 120)
    assert md.spot_instance_action is not None and md.spot_instance_action.action == "stop"
    md.clear_all()  # it caches what it read
    assert md.instance_life_cycle == "spot"


def test_nth_startup_reads_answer(mock: ImdsMock) -> None:
    s = Session(mock.url)
    for path in (
        "/latest/meta-data/instance-life-cycle",
        "/latest/meta-data/local-hostname",
        "/latest/meta-data/public-hostname",
        "/latest/meta-data/public-ipv4",
        "/latest/meta-data/local-ipv4",
        "/latest/dynamic/instance-identity/document",
    ):
        assert s.get(path).status_code == 200, path


def test_listings_and_trailing_slashes_at_every_level(mock: ImdsMock) -> None:
    s = Session(mock.url)
    assert s.text("/") == "latest"
    assert s.text("/latest/") == "dynamic\nmeta-data\nuser-data"
    top = (s.text("/latest/meta-data/") or "").splitlines()
    assert {"instance-id", "placement/", "events/", "iam/", "network/", "mac"} <= set(top)
    assert "spot/" not in top, "no spot directory without a notice"
    assert s.text("/latest/meta-data") == s.text("/latest/meta-data/")
    assert s.text("/latest/meta-data/placement/") == (
        "availability-zone\navailability-zone-id\ngroup-name\nregion"
    )
    assert s.text("/latest/meta-data/placement/availability-zone/") == served.ZONE
    assert s.text("/latest/meta-data/events/") == "maintenance/"
    assert s.text("/latest/meta-data/iam/security-credentials/") == served.ROLE
    assert s.text("/latest/dynamic/instance-identity/") == "document"
    assert s.text("/latest/meta-data/no/such/") is None
    mock.post_rebalance()
    assert s.text("/latest/meta-data/events/recommendations/") == "rebalance"


def test_get_replies_carry_the_tokens_remaining_ttl(mock: ImdsMock) -> None:
    reply = Session(mock.url).get("/latest/meta-data/instance-id")
    assert 290 <= int(reply.headers[TTL_HEADER]) <= 300


@pytest.mark.parametrize(("action", "lead", "legacy"), [
    ("terminate", 120, True), ("stop", 120, False), ("hibernate", 120, False),
])  # fmt: skip
def test_per_action_formats(mock: ImdsMock, action: str, lead: int, legacy: bool) -> None:
    from agent.notices.parsers import parse_time

    s = Session(mock.url)
    mock.post_interruption(action, in_seconds=120)
    notice = json.loads(s.text("/latest/meta-data/spot/instance-action") or "")
    when = parse_time(notice["time"])
    posted = parse_time(mock.state()["instance_action"]["time"])
    assert notice["action"] == action and when == posted
    listing = (s.text("/latest/meta-data/spot/") or "").splitlines()
    assert ("termination-time" in listing) is legacy
    assert (s.get("/latest/meta-data/spot/termination-time").status_code == 200) is legacy
    from datetime import UTC, datetime

    assert when is not None
    left = (when - datetime.now(UTC)).total_seconds()
    assert lead - 2 <= left <= lead + 1, "every action's time is the lead away, as in AEMM"


def test_canceled_and_completed_events_from_the_command_line(mock: ImdsMock) -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(
        ["--canceled-event", "instance-stop@60", "--completed-event", "system-reboot@-600"]
    )
    assert args.canceled_event == [("instance-stop", 60.0)]
    assert args.completed_event == [("system-reboot", -600.0)]
    assert callable(main)
    event = mock.add_scheduled_event("instance-stop", 60, state="canceled")
    assert event["State"] == "canceled" and event["Description"].startswith("[Canceled]")
    reply = requests.post(
        mock.url + "/spot-agent-mock/scheduled?code=system-reboot&in=-60&state=completed",
        timeout=2,
    )
    assert [e["State"] for e in reply.json()["scheduled"]] == ["canceled", "completed"]


def test_help_documents_the_control_api() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [sys.executable, "-m", "agent", "imds-mock", "--help"],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=60, check=True,
    ).stdout  # fmt: skip
    for command in ("interrupt", "rebalance", "scheduled", "fail", "outage", "throttle",
                    "delay", "hop-limit", "drop-tokens", "clear", "state"):  # fmt: skip
        assert f"/spot-agent-mock/{command}" in out, command
    assert "--canceled-event" in out and "--completed-event" in out


def test_fault_knobs(mock: ImdsMock) -> None:
    s = Session(mock.url)
    mock.throttle(3)
    statuses = [s.get("/latest/meta-data/instance-id").status_code for _ in range(6)]
    assert statuses == [200, 200, 429, 200, 200, 429]
    mock.throttle(0)
    mock.outage(30, 503)
    assert s.get("/latest/meta-data/instance-id").status_code == 503
    mock.outage(0)
    assert s.get("/latest/meta-data/instance-id").status_code == 200
    mock.hop_limit_1()
    with pytest.raises(requests.exceptions.ReadTimeout):
        requests.put(mock.url + "/latest/api/token", headers={TTL_HEADER: "60"}, timeout=0.3)
    assert (
        requests.post(mock.url + "/spot-agent-mock/clear", timeout=2).json()["hop_limit_1"] is False
    )


def test_the_docs_say_what_each_event_code_does_and_list_the_control_api() -> None:
    from agent.notices.protocol import EVENT_CODES

    docs = (ROOT / "docs" / "notices.md").read_text()
    for code in EVENT_CODES:
        assert f"`{code}`" in docs, code
    for command in ("interrupt", "rebalance", "scheduled", "fail", "outage", "throttle",
                    "delay", "hop-limit", "drop-tokens", "clear", "state"):  # fmt: skip
        assert f"/spot-agent-mock/{command}" in docs, command
