"""``spot-agent doctor``: before a multi-day job starts, will a launch with these settings
keep its work? One line per check, in seconds; exit 1 when one would lose work.

It takes the options and environment of ``spot-agent run`` and checks, with the calls the
agent itself makes (so the job role's policy is what is tested): credentials and region;
the store (reachable, put/get/delete of a probe object, conditional writes, the encryption
asked for); the instance metadata service; the log group; the clock against S3's; free
disk for the checkpoint dir.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

from checkpoint.engine.format.jobstore import JobStore
from checkpoint.engine.store.base import Store
from checkpoint.errors import CheckpointError, ConditionalWritesUnsupported

from .config import RUN_OPTIONS, Settings, add_options, load_settings
from .config.aws_environment import uses_aws
from .doctor_services import Check, check_credentials, check_imds, check_log_group
from .group.listing import check_group
from .stores import human_size, open_configured_store

EXIT_WOULD_LOSE_WORK = 1
#: S3 refuses requests signed more than 15 minutes off (RequestTimeTooSkewed); far less
#: already shifts an IMDS notice's deadline, which is an absolute time.
CLOCK_FAIL_SECONDS = 300.0
CLOCK_WARN_SECONDS = 5.0
LOW_DISK_BYTES = 1 << 30
PROBE_PREFIX = ".spot-agent-doctor"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_options(parser, RUN_OPTIONS)
    parser.add_argument(
        "--strict", action="store_true", help="exit non-zero on warnings too, not only failures"
    )


def main(args: argparse.Namespace) -> int:
    settings = load_settings(args, ["spot-agent", "doctor"], os.environ)
    failures = warnings = 0
    for check in run_checks(settings):
        print(check.line(), flush=True)
        failures += check.status == "FAIL"
        warnings += check.status == "warn"
    verdict = (
        "a launch with these settings would lose work"
        if failures
        else "a launch with these settings keeps its work"
    )
    print(f"doctor: {failures} failed, {warnings} warnings: {verdict}")
    if failures or (args.strict and warnings):
        return EXIT_WOULD_LOSE_WORK
    return 0


def run_checks(s: Settings) -> Iterator[Check]:
    if uses_aws(s.checkpoint_uri, s.log_group):
        yield check_credentials(s.s3)
    dates: list[float] = []  # (server time - local time) of each S3 answer
    store = open_configured_store(s, max_attempts=2, connect_timeout=3.0, read_timeout=10.0)
    try:
        client = getattr(store, "client", None)
        if client is not None:
            client.meta.events.register("after-call.s3", _clock_recorder(dates))
        store_checks = list(_store_checks(store, s))
        yield from store_checks
        store_ok = all(c.status != "FAIL" for c in store_checks)
        yield _clock(dates, is_s3=client is not None)
        yield _disk(s, store if store_ok else None)
        if s.group is not None:
            yield check_group(s.group, store if store_ok else None, s.job_id)
    finally:
        store.close()
    yield check_imds(s)
    if s.log_group:
        yield check_log_group(s)


# -- the store ----------------------------------------------------------------------------


def _store_checks(store: Store, s: Settings) -> Iterator[Check]:
    name = f"store {store.uri}"
    try:
        store.check()
    except CheckpointError as exc:
        yield Check(name, "FAIL", str(exc), "see the message; the job would exit 69 at start")
        return
    if store.uri.startswith("file:"):
        yield Check(
            name,
            "warn",
            "a local store: it survives only as long as this machine's disk",
            "in a container or on spot, use s3://bucket/prefix (or a shared volume)",
        )
    key = f"{PROBE_PREFIX}/{uuid.uuid4().hex}"
    data = os.urandom(1024)
    try:
        store.put_object(key, data, sha256=hashlib.sha256(data).hexdigest())
        if store.get_object(key) != data:
            raise CheckpointError(f"{key}: read back different bytes than were written")
        encryption = _encryption_applied(store, key)
        store.delete_objects([key])
        if store.exists(key):
            raise CheckpointError(f"{key}: still there after DeleteObjects")
    except CheckpointError as exc:
        yield Check(name, "FAIL", f"put/get/delete of a probe object: {exc}", _store_fix(s))
        return
    yield Check(name, "ok", f"reachable; put, get and delete of a probe object{encryption}")
    yield _conditional_writes(store)


def _store_fix(s: Settings) -> str:
    if s.s3.sse != "default":
        return f"check that the bucket accepts --sse {s.s3.sse}, or leave --sse at default"
    return "grant s3:PutObject, s3:GetObject and s3:DeleteObject on the prefix (docs/batch.md)"


def _encryption_applied(store: Store, key: str) -> str:
    client = getattr(store, "client", None)
    if client is None:
        return ""
    prefix = getattr(store, "prefix", "")
    head = client.head_object(
        Bucket=getattr(store, "bucket", ""), Key=f"{prefix}/{key}" if prefix else key
    )
    applied = head.get("ServerSideEncryption")
    asked = getattr(store, "sse", None) or "no header (the bucket's default)"
    return f"; encryption asked: {asked}, applied: {applied or 'none'}"


def _conditional_writes(store: Store) -> Check:
    key = f"{PROBE_PREFIX}/{uuid.uuid4().hex}"
    name = "conditional writes"
    try:
        first = store.put_object_if_absent(key, b"1")
        second = store.put_object_if_absent(key, b"2")
    except ConditionalWritesUnsupported as exc:
        return Check(
            name,
            "warn",
            f"not supported ({exc})",
            "use a store that honours If-None-Match (AWS S3 does); until then the agent "
            "relies on its attempt fence and a read-back",
        )
    except CheckpointError as exc:
        return Check(name, "FAIL", str(exc), "grant s3:PutObject on the prefix")
    finally:
        store.delete_objects([key])
    if first and not second:
        return Check(name, "ok", "create-only writes are honoured (a commit never overwrites)")
    return Check(
        name,
        "warn",
        "If-None-Match: * is ignored: a second create-only write replaced the first",
        "use a store that honours conditional writes; two attempts of a job could overwrite "
        "each other's commit",
    )


# -- clock, disk ----------------------------------------------------------------------------


def _clock_recorder(dates: list[float]) -> Callable[..., None]:
    def record(http_response: Any = None, **_: Any) -> None:
        header = getattr(http_response, "headers", {}).get("Date")
        if header:
            dates.append(parsedate_to_datetime(header).timestamp() - time.time())

    return record


def _clock(dates: list[float], *, is_s3: bool) -> Check:
    if not is_s3:
        return Check("clock", "skip", "no S3 store to compare with")
    if not dates:
        return Check("clock", "skip", "S3 gave no Date header")
    # A Date header has whole seconds: the smallest difference is the best estimate.
    skew = min(dates, key=abs)
    detail = f"{skew:+.0f} s against S3's Date header"
    if abs(skew) > CLOCK_FAIL_SECONDS:
        return Check("clock", "FAIL", detail, "sync the clock (chrony, NTP)")
    if abs(skew) > CLOCK_WARN_SECONDS:
        return Check("clock", "warn", detail, "sync the clock: notice deadlines are clock times")
    return Check("clock", "ok", detail)


def _disk(s: Settings, store: Store | None) -> Check:
    derived = s.job_id_source.startswith("derived")
    # without a job id the dir's name is made up: show where job dirs go instead
    target = Path(s.checkpoint_dir).parent.parent if derived else Path(s.checkpoint_dir)
    path = target
    while not path.exists() and path != path.parent:
        path = path.parent
    free = shutil.disk_usage(path).free
    need, what = 0, ""
    if store is not None and not derived:
        try:
            job = JobStore(store, s.job_id)
            seqs = job.sequences()
            if seqs:
                need = job.load_manifest(seqs[-1]).size
                what = f"; the newest checkpoint ({seqs[-1]}) is {human_size(need)}"
        except CheckpointError as exc:
            what = f"; newest checkpoint unreadable: {exc}"
    detail = f"{human_size(free)} free at {path} for {target}{what}"
    if need and free < need:
        return Check("disk", "FAIL", detail, "give the checkpoint dir a larger volume")
    if free < max(2 * need, LOW_DISK_BYTES):
        return Check("disk", "warn", detail, "leave room for the job's state to grow")
    return Check("disk", "ok", detail)


if __name__ == "__main__":  # pragma: no cover
    parser = argparse.ArgumentParser(prog="spot-agent doctor")
    add_arguments(parser)
    sys.exit(main(parser.parse_args()))
