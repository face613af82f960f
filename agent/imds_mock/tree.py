"""What the emulated instance serves: a fixed, fake identity and the metadata tree.

Every value is plausible and clearly fake (account 123456789012, ids of zeros and
``imds-mock`` in every credential), in the formats EC2 uses, so that botocore, NTH and
the ``ec2-metadata`` package find what they ask for.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

from agent.notices.protocol import (
    IDENTITY_PATHS,
    INSTANCE_ACTION,
    META_PREFIX,
    REBALANCE_PATH,
    SCHEDULED_PATH,
    TERMINATION_TIME,
    iso_time,
)

Tree = dict[str, Any]  # a directory: names to subtrees or leaf strings


class Listed(dict[str, Any]):
    """A directory EC2 lists in its own words: ``public-keys/`` answers ``0=key-name``."""

    def __init__(self, listing: str, items: Tree) -> None:
        super().__init__(items)
        self.listing = listing


INSTANCE_ID = "i-0123456789abcdef0"
INSTANCE_TYPE = "m5.large"
AMI_ID = "ami-0123456789abcdef0"
REGION = "us-east-1"
ZONE = "us-east-1a"
ACCOUNT_ID = "123456789012"
PRIVATE_IP = "10.0.0.12"
PUBLIC_IP = "198.51.100.12"  # TEST-NET-2: never a real address
MAC = "0e:00:00:00:00:01"
ROLE = "imds-mock-fake-role"
KERNEL_ID = "aki-00000000"
PRODUCT_CODE = "imdsmockfakeproductcode0"
PLACEMENT_GROUP = "imds-mock-placement-group"
#: instance tags, as served when the instance allows tags in metadata
TAGS = {"Name": "imds-mock-instance", "spot-agent": "imds-mock"}
KEY_NAME = "imds-mock-fake-key"
#: a well-formed ed25519 public key no one has the private half of (32 zero bytes)
PUBLIC_KEY = (
    f"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA {KEY_NAME}"
)
DEFAULT_USER_DATA = "#!/bin/sh\n# imds-mock: fake user data\n"
#: Credentials boto3 accepts and AWS refuses: marked fake in every field.
FAKE_ACCESS_KEY_ID = "ASIAIMDSMOCKFAKE0000"
FAKE_SECRET = "imds-mock-fake-secret-access-key-not-valid-anywhere"
FAKE_SESSION_TOKEN = "imds-mock-fake-session-token-not-valid-anywhere"


def identity_document(started: datetime) -> str:
    return json.dumps(
        {
            "accountId": ACCOUNT_ID,
            "architecture": "x86_64",
            "availabilityZone": ZONE,
            "billingProducts": None,
            "devpayProductCodes": None,
            "marketplaceProductCodes": None,
            "imageId": AMI_ID,
            "instanceId": INSTANCE_ID,
            "instanceType": INSTANCE_TYPE,
            "kernelId": None,
            "pendingTime": iso_time(started),
            "privateIp": PRIVATE_IP,
            "ramdiskId": None,
            "region": REGION,
            "version": "2017-09-30",
        },
        indent=2,
    )


def credentials(now: datetime) -> str:
    return json.dumps(
        {
            "Code": "Success",
            "LastUpdated": iso_time(now),
            "Type": "AWS-HMAC",
            "AccessKeyId": FAKE_ACCESS_KEY_ID,
            "SecretAccessKey": FAKE_SECRET,
            "Token": FAKE_SESSION_TOKEN,
            "Expiration": iso_time(now + timedelta(hours=6)),
        },
        indent=2,
    )


def _interface() -> Tree:
    return {
        "device-number": "0",
        "interface-id": "eni-0123456789abcdef0",
        "local-hostname": "ip-10-0-0-12.ec2.internal",
        "local-ipv4s": PRIVATE_IP,
        "mac": MAC,
        "owner-id": ACCOUNT_ID,
        "public-ipv4s": PUBLIC_IP,
        "security-group-ids": "sg-0123456789abcdef0",
        "security-groups": "default",
        "subnet-id": "subnet-0123456789abcdef0",
        "subnet-ipv4-cidr-block": "10.0.0.0/24",
        "vpc-id": "vpc-0123456789abcdef0",
        "vpc-ipv4-cidr-block": "10.0.0.0/16",
        "vpc-ipv4-cidr-blocks": "10.0.0.0/16",
    }


def metadata_tree(
    *,
    started: datetime,
    now: datetime,
    spot: dict[str, str] | None,
    rebalance: str | None,
    scheduled: list[dict[str, Any]],
    user_data: str | None,
    life_cycle: str = "spot",
) -> Tree:
    """/latest as a tree. ``spot`` is the instance-action (None: no notice). What the agent
    reads (notices, identity) is placed at the paths :mod:`agent.notices.protocol` names."""
    meta: Tree = {
        "ami-id": AMI_ID,
        "ami-launch-index": "0",
        "ami-manifest-path": "(unknown)",
        "block-device-mapping": {"ami": "/dev/xvda", "ebs0": "sdb", "root": "/dev/xvda"},
        "hostname": "ip-10-0-0-12.ec2.internal",
        "iam": {
            "info": json.dumps(
                {
                    "Code": "Success",
                    "LastUpdated": iso_time(now),
                    "InstanceProfileArn": f"arn:aws:iam::{ACCOUNT_ID}:instance-profile/{ROLE}",
                    "InstanceProfileId": "AIPAIMDSMOCKFAKE00000",
                },
                indent=2,
            ),
            "security-credentials": {ROLE: credentials(now)},
        },
        "instance-action": "none",
        "kernel-id": KERNEL_ID,
        "local-hostname": "ip-10-0-0-12.ec2.internal",
        "local-ipv4": PRIVATE_IP,
        "mac": MAC,
        "network": {"interfaces": {"macs": {MAC: _interface()}}},
        "placement": {
            "availability-zone-id": "use1-az1",
            "group-name": PLACEMENT_GROUP,
            "region": REGION,
        },
        "product-codes": PRODUCT_CODE,
        "profile": "default-hvm",
        "public-hostname": "ec2-198-51-100-12.compute-1.amazonaws.com",
        "public-ipv4": PUBLIC_IP,
        # EC2 lists a key as "0=name"; its items live under "0/"
        "public-keys": Listed(f"0={KEY_NAME}", {"0": {"openssh-key": PUBLIC_KEY}}),
        "reservation-id": "r-0123456789abcdef0",
        "security-groups": "default",
        "services": {"domain": "amazonaws.com", "partition": "aws"},
        "tags": {"instance": dict(TAGS)},
    }
    identity = {
        "instance_id": INSTANCE_ID,
        "instance_type": INSTANCE_TYPE,
        "availability_zone": ZONE,
        "lifecycle": life_cycle,
    }
    for name, value in identity.items():
        _place(meta, IDENTITY_PATHS[name], value)
    _place(meta, SCHEDULED_PATH, json.dumps(scheduled, indent=2))
    if rebalance is not None:
        _place(meta, REBALANCE_PATH, rebalance)
    if spot is not None:
        _place(meta, INSTANCE_ACTION, json.dumps(spot))
        if spot["action"] == "terminate":  # the legacy item: terminations only
            _place(meta, TERMINATION_TIME, spot["time"])
    version, meta_data = META_PREFIX.strip("/").split("/")  # latest, meta-data
    latest: Tree = {
        meta_data: meta,
        "dynamic": {"instance-identity": {"document": identity_document(started)}},
    }
    if user_data is not None:
        latest["user-data"] = user_data
    return {version: latest}


def _place(tree: Tree, path: str, value: str) -> None:
    """Put ``value`` at ``path`` (``a/b/c``), making the directories on the way."""
    *dirs, leaf = path.split("/")
    for name in dirs:
        tree = tree.setdefault(name, {})
    tree[leaf] = value


def lookup(tree: Tree, path: str) -> str | None:
    """The body at ``path``: a leaf's value, or a directory's listing; None for 404.

    As on EC2, a trailing slash is accepted on any item (botocore asks for
    ``placement/availability-zone/``), an empty directory does not exist, and listings
    mark sub-directories with a trailing ``/`` (except the version level, ``/latest/``).
    """
    node: Any = tree
    parts = [p for p in path.split("/") if p]
    for part in parts:
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    if isinstance(node, str):
        return node
    if isinstance(node, Listed):
        return node.listing
    names = [name for name, child in node.items() if child != {}]
    if not names:
        return None
    if len(parts) <= 1:  # "/" and "/latest": plain names, as EC2 lists them
        return "\n".join(sorted(names))
    return "\n".join(sorted(n + "/" if isinstance(node[n], dict) else n for n in names))
