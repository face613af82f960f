"""The stores a scenario runs against, and what a test needs to reach each of them.

A scenario that does not depend on where checkpoints live is written once and runs against
both kinds (:data:`KINDS`), through the ``store_url`` fixture of tests/conftest.py:

- ``local``: a directory store (``file://``) under the test's ``tmp_path``;
- ``s3``: SeaweedFS's S3 gateway on 127.0.0.1 (tests/servers.py, one per session), in a
  fresh bucket of the test's own, with the SDK's environment pointed at it (``s3_env``).

What only one kind can show stays with that kind's own fixtures: throttling, denied
requests, faults (tests/faultproxy.py) and a refused conditional put on S3; hard links and
the ``file://`` layout on a local store.
"""

from __future__ import annotations

import collections
import os
import re
import threading
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

from checkpoint.engine.store.base import ObjectInfo, Store
from tests.agentproc import agent_env
from tests.servers import SeaweedS3

#: the ids of a store-parametrized test, in the order it runs
KINDS = ("local", "s3")


def kind_of(store_url: str) -> str:
    """The kind of store (one of :data:`KINDS`) a ``store_url`` fixture value names."""
    return "s3" if store_url.startswith("s3://") else "local"


_LOOPBACK = re.compile(r"http://127\.0\.0\.1:[0-9]+/?")


def loopback(endpoint: str) -> str:
    """``endpoint``, once it is known to be ``http://127.0.0.1:PORT``: no client a test
    makes may talk to anything else (not AWS, not the instance metadata service)."""
    assert _LOOPBACK.fullmatch(endpoint), f"{endpoint!r} is not a 127.0.0.1 endpoint"
    return endpoint


def s3_agent_env(tmp: Path, weed: SeaweedS3, uri: str, *, reader: bool = False) -> dict[str, str]:
    """:func:`tests.agentproc.agent_env` for an agent whose store is ``uri`` on ``weed``,
    with the admin identity (or the read-only one) and no other AWS configuration."""
    return agent_env(
        tmp,
        {
            "SPOT_AGENT_CHECKPOINT_URI": uri,
            "AWS_ENDPOINT_URL_S3": loopback(weed.endpoint),
            "AWS_ACCESS_KEY_ID": weed.reader_access_key if reader else weed.access_key,
            "AWS_SECRET_ACCESS_KEY": weed.reader_secret_key if reader else weed.secret_key,
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_EC2_METADATA_DISABLED": "true",
            "AWS_CONFIG_FILE": str(tmp / "no-aws-config"),
            "AWS_SHARED_CREDENTIALS_FILE": str(tmp / "no-aws-credentials"),
        },
    )


def store_agent_env(
    tmp: Path, store_url: str, extra: Mapping[str, str] | None = None
) -> dict[str, str]:
    """:func:`tests.agentproc.agent_env` for an agent whose store is ``store_url`` (the
    ``store_url`` fixture's value). For an ``s3://`` URL the SDK's variables are the ones
    ``s3_env`` set in this process, carried over explicitly, endpoint checked."""
    env = {"SPOT_AGENT_CHECKPOINT_URI": store_url}
    if store_url.startswith("s3://"):
        sdk = (
            "AWS_ENDPOINT_URL_S3",
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
            "AWS_DEFAULT_REGION",
            "AWS_EC2_METADATA_DISABLED",
            "AWS_CONFIG_FILE",
            "AWS_SHARED_CREDENTIALS_FILE",
        )
        env.update({name: os.environ[name] for name in sdk})
        loopback(env["AWS_ENDPOINT_URL_S3"])
    return agent_env(tmp, {**env, **(extra or {})})


class Counted(Store):
    """Any store, with every call counted by method (a request each, on S3) and the keys
    it was asked to write kept in order: the agent's own counts, whatever the server."""

    def __init__(self, inner: Store) -> None:
        self.inner = inner
        self.uri = inner.uri
        self.concurrency = inner.concurrency
        self.calls: collections.Counter[str] = collections.Counter()
        self.puts: list[str] = []
        self._lock = threading.Lock()

    def _count(self, name: str, put: str | None = None) -> None:
        with self._lock:
            self.calls[name] += 1
            if put is not None:
                self.puts.append(put)

    def clear(self) -> None:
        with self._lock:
            self.calls.clear()
            self.puts.clear()

    def put_object(self, key: str, data: bytes, *, sha256: str | None = None) -> None:
        self._count("put_object", key)
        self.inner.put_object(key, data, sha256=sha256)

    def put_object_if_absent(self, key: str, data: bytes) -> bool:
        self._count("put_object_if_absent", key)
        return self.inner.put_object_if_absent(key, data)

    def get_object(self, key: str, *, max_bytes: int | None = None) -> bytes:
        self._count("get_object")
        return self.inner.get_object(key, max_bytes=max_bytes)

    def get_range(self, key: str, start: int, length: int) -> bytes:
        self._count("get_range")
        return self.inner.get_range(key, start, length)

    def exists(self, key: str) -> bool:
        self._count("exists")
        return self.inner.exists(key)

    def list_objects(self, prefix: str) -> Iterator[ObjectInfo]:
        self._count("list_objects")
        return self.inner.list_objects(prefix)

    def delete_objects(self, keys: Iterable[str]) -> None:
        self._count("delete_objects")
        self.inner.delete_objects(keys)

    def check(self) -> None:
        self.inner.check()

    def total(self) -> int:
        return sum(self.calls.values())
