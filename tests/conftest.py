"""Shared pytest fixtures."""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests import servers, stores

if TYPE_CHECKING:
    from checkpoint.engine.store.base import Store

# ---------------------------------------------------------------------------------------
# Real local S3 servers (tests/servers.py). Each fixture stops what it started, also when
# a test fails. Nothing here talks to any address but 127.0.0.1 (each endpoint is checked).
# ---------------------------------------------------------------------------------------

#: environment variables that could point the SDK at real AWS or another setup
_AWS_VARIABLES = (
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AWS_ROLE_ARN",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_CONTAINER_AUTHORIZATION_TOKEN",
    "AWS_REGION",
    "AWS_ENDPOINT_URL",
    "AWS_MAX_ATTEMPTS",
    "AWS_RETRY_MODE",
    "AWS_CA_BUNDLE",
    "SPOT_AGENT_SSE",
    "SPOT_AGENT_SSE_KMS_KEY_ID",
    "SPOT_AGENT_S3_ADDRESSING_STYLE",
)


@pytest.fixture(scope="session")
def seaweedfs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[servers.SeaweedS3]:
    """SeaweedFS with its S3 gateway: ``.endpoint``, ``.access_key``, ``.secret_key``
    (and a read-only identity ``.reader_access_key``/``.reader_secret_key``). It has no
    key-encryption key, so it refuses SSE requests: the agent's default sends none."""
    yield from _seaweedfs(tmp_path_factory, sse_kek=False)


@pytest.fixture(scope="session")
def seaweedfs_sse(tmp_path_factory: pytest.TempPathFactory) -> Iterator[servers.SeaweedS3]:
    """A second SeaweedFS, with a key-encryption key: it serves SSE-S3 (AES256)."""
    yield from _seaweedfs(tmp_path_factory, sse_kek=True)


def _seaweedfs(
    tmp_path_factory: pytest.TempPathFactory, *, sse_kek: bool
) -> Iterator[servers.SeaweedS3]:
    try:
        servers.weed_binary()
    except FileNotFoundError as exc:
        pytest.fail(str(exc), pytrace=False)
    server = servers.start_seaweedfs(tmp_path_factory.mktemp("seaweedfs"), sse_kek=sse_kek)
    try:
        stores.loopback(server.endpoint)
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def moto_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The endpoint URL of a moto server (any credentials are accepted)."""
    server = servers.start_moto_server(tmp_path_factory.mktemp("moto"))
    try:
        yield stores.loopback(server.endpoint)
    finally:
        server.stop()


@pytest.fixture
def closed_endpoint() -> Iterator[str]:
    """``http://127.0.0.1:PORT`` that refuses connections for the whole test: the port is
    held bound (never listened on), so no other worker's server can take it meanwhile."""
    with servers.closed_port() as port:
        yield f"http://127.0.0.1:{port}"


def isolate_aws_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No profile, config file, role or instance metadata: only what the test sets."""
    for name in _AWS_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # never ask 169.254.169.254


@pytest.fixture
def no_aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """An SDK environment with no credentials, region, endpoint or profile at all."""
    isolate_aws_environment(monkeypatch, tmp_path)
    for name in (
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_DEFAULT_REGION",
        "AWS_ENDPOINT_URL_S3",
    ):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def s3_env(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, seaweedfs: servers.SeaweedS3
) -> servers.SeaweedS3:
    """The SDK's own environment pointed at SeaweedFS, as a job's container would have it."""
    isolate_aws_environment(monkeypatch, tmp_path)
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", stores.loopback(seaweedfs.endpoint))
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", seaweedfs.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", seaweedfs.secret_key)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    return seaweedfs


_bucket_numbers = itertools.count(1)


@pytest.fixture
def s3_bucket(seaweedfs: servers.SeaweedS3) -> tuple[str, str]:
    """A fresh, empty bucket on SeaweedFS: ``(endpoint, bucket)``."""
    import boto3
    from botocore.config import Config

    bucket = f"test-{os.getpid()}-{next(_bucket_numbers)}"
    client = boto3.session.Session().client(
        "s3",
        endpoint_url=stores.loopback(seaweedfs.endpoint),
        aws_access_key_id=seaweedfs.access_key,
        aws_secret_access_key=seaweedfs.secret_key,
        region_name="us-east-1",
        config=Config(s3={"addressing_style": "path"}),
    )
    try:
        client.create_bucket(Bucket=bucket)
    finally:
        client.close()
    return seaweedfs.endpoint, bucket


# ---------------------------------------------------------------------------------------
# One scenario, every kind of store (tests/stores.py).
# ---------------------------------------------------------------------------------------


@pytest.fixture(params=stores.KINDS)
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The URL of an empty store. A test that takes it runs once per kind of store, with
    ids ``local`` (``file://`` under ``tmp_path``) and ``s3`` (a fresh bucket on SeaweedFS,
    the SDK's environment pointed at its 127.0.0.1 endpoint by ``s3_env``, so clients made
    in this process and the processes it starts find it). Pick kinds, or pair each with
    other values, with ``@pytest.mark.parametrize("store_url", [...], indirect=True)``."""
    if request.param == "local":
        return (tmp_path / "store").as_uri()
    assert request.param == "s3", request.param
    weed: servers.SeaweedS3 = request.getfixturevalue("s3_env")
    endpoint, bucket = request.getfixturevalue("s3_bucket")
    assert os.environ["AWS_ENDPOINT_URL_S3"] == stores.loopback(endpoint) == weed.endpoint
    return f"s3://{bucket}/ckpt"


@pytest.fixture
def boot(tmp_path: Path) -> Path:
    """A boot id in a file the test can change (a reboot), for an engine config's
    ``boot_id_path``: the local index is trusted only in the boot it was written in."""
    path = tmp_path / "boot_id"
    path.write_text("11111111-2222-3333-4444-555555555555\n")
    return path


@pytest.fixture
def any_store(store_url: str) -> Iterator[Store]:
    """The store ``store_url`` names, opened in this process (closed after the test)."""
    from checkpoint.engine.store.uri import open_store

    store = open_store(store_url)
    try:
        yield store
    finally:
        store.close()


# ---------------------------------------------------------------------------------------
# Soak tests: a few cycles by default, the full run with --soak or SPOT_AGENT_SOAK=1.
# ---------------------------------------------------------------------------------------


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Long tests first (stable otherwise): the xdist workers then run the rest beside them
    instead of waiting on them at the end."""
    items.sort(key=lambda item: item.get_closest_marker("long") is None)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--soak",
        action="store_true",
        help="run @pytest.mark.soak(quick, full) tests at full length (or SPOT_AGENT_SOAK=1)",
    )


@pytest.fixture
def soak_cycles(request: pytest.FixtureRequest) -> int:
    """The ``soak(quick, full)`` marker's count for this run."""
    marker = request.node.get_closest_marker("soak")
    quick, full = marker.args if marker else (8, 30)
    full_run = request.config.getoption("--soak") or os.environ.get("SPOT_AGENT_SOAK") == "1"
    return int(full if full_run else quick)


@pytest.fixture(autouse=True)
def _no_agent_outlives_its_test() -> Iterator[None]:
    """A test that fails half way must not leave its agent (and job) running."""
    from tests import agentproc

    yield
    agentproc.stop_leftovers()
