"""The IAM policy in docs/batch.md against the API calls the agent really makes.

Real runs of ``spot-agent run`` (store on SeaweedFS, logs and Batch on moto_server) with
botocore's ``before-call`` event recording every operation of every client the agent
creates. The policy must grant exactly the IAM actions those operations need: nothing
missing (the job would fail on AWS), nothing extra (least privilege).
"""

from __future__ import annotations

import json
import re
import signal
import sys
import textwrap
from pathlib import Path
from typing import Any

from tests import servers
from tests.agentproc import REPO, agent_env, start_agent
from tests.integration.test_batch import (  # noqa: F401 - fixtures
    batch_env,
    client,
    queue,
    register,
    submit,
)

#: The IAM action each operation is authorized as (S3 authorizes HEAD and
#: DeleteObjects per the action of the object or bucket they touch).
IAM_ACTION = {
    ("s3", "HeadBucket"): "s3:ListBucket",
    ("s3", "ListObjectsV2"): "s3:ListBucket",
    ("s3", "GetObject"): "s3:GetObject",
    ("s3", "HeadObject"): "s3:GetObject",
    ("s3", "PutObject"): "s3:PutObject",
    ("s3", "DeleteObjects"): "s3:DeleteObject",
    ("s3", "DeleteObject"): "s3:DeleteObject",
    ("logs", "PutLogEvents"): "logs:PutLogEvents",
    ("logs", "CreateLogGroup"): "logs:CreateLogGroup",
    ("logs", "CreateLogStream"): "logs:CreateLogStream",
    ("batch", "DescribeJobs"): "batch:DescribeJobs",
    ("batch", "DescribeJobDefinitions"): "batch:DescribeJobDefinitions",
    ("batch", "SubmitJob"): "batch:SubmitJob",
}
#: Granted, but called by S3 on the role's behalf (SSE-KMS), not by the agent's clients.
CALLED_BY_S3_FOR_SSE_KMS = {"kms:GenerateDataKey", "kms:Decrypt"}

RECORDER = textwrap.dedent('''
    """Test hook: every botocore client records each operation before it is sent."""
    import os

    import botocore.session

    _create_client = botocore.session.Session.create_client

    def create_client(self, service_name, *args, **kwargs):
        client = _create_client(self, service_name, *args, **kwargs)
        path = os.environ["SPOT_AGENT_TEST_API_CALLS"]

        def record(model, **_):
            with open(path, "a") as out:
                out.write(f"{service_name} {model.name}\\n")

        client.meta.events.register("before-call", record)
        return client

    botocore.session.Session.create_client = create_client
''')

JOB = textwrap.dedent("""
    import checkpoint, os, signal, sys, time
    n = checkpoint.load_json("n.json", default=0) + 1
    checkpoint.save_json("n.json", n)
    checkpoint.save_bytes(f"part{n}.bin", os.urandom(100_000))
    assert checkpoint.request_sync(wait=30)
    checkpoint.save_bytes("more.bin", os.urandom(1000))
    assert checkpoint.request_sync(wait=30)
    if n == 1:
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        print("job running", flush=True)
        while True:
            time.sleep(0.05)
""")


def policy_actions() -> set[str]:
    text = (REPO / "docs" / "batch.md").read_text()
    blocks = [json.loads(b) for b in re.findall(r"```json\n(.*?)```", text, re.S)]
    policy = next(b for b in blocks if "Statement" in b)
    actions: set[str] = set()
    for statement in policy["Statement"]:
        found = statement["Action"]
        actions.update([found] if isinstance(found, str) else found)
    return actions


def test_the_policy_grants_exactly_what_the_agent_calls(
    tmp_path: Path,
    s3_bucket: tuple[str, str],
    moto_server: str,
    client: Any,  # noqa: F811
    queue: str,  # noqa: F811
    batch_env: dict[str, str],  # noqa: F811
) -> None:
    endpoint, bucket = s3_bucket
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(RECORDER)
    calls = tmp_path / "calls.txt"
    original = submit(client, queue, register(client, attempts=2))
    base = agent_env(tmp_path)
    env = {
        **base,
        **batch_env,
        "PYTHONPATH": f"{hook}:{base['PYTHONPATH']}",
        "SPOT_AGENT_TEST_API_CALLS": str(calls),
        "SPOT_AGENT_CHECKPOINT_URI": f"s3://{bucket}/ckpt",
        "SPOT_AGENT_CHECKPOINT_KEEP": "1",  # pruning deletes
        "SPOT_AGENT_LOG_GROUP": "/spot-agent/iam",  # missing: the agent creates it
        "SPOT_AGENT_CONTINUE_JOBS": "true",
        "AWS_ENDPOINT_URL_S3": endpoint,
        "AWS_ENDPOINT_URL_CLOUDWATCH_LOGS": moto_server,
        "AWS_ACCESS_KEY_ID": servers.ADMIN_KEY,  # moto accepts any key
        "AWS_SECRET_ACCESS_KEY": servers.ADMIN_SECRET,
        "AWS_CONFIG_FILE": str(tmp_path / "no-config"),
        "AWS_BATCH_JOB_ID": original,
        "AWS_BATCH_JQ_NAME": "spot-q",
        "AWS_BATCH_CE_NAME": "spot-ce",
    }
    # attempt 1 of 2: syncs, pruning, interrupted: Batch will retry it
    first = start_agent(
        tmp_path, [], [sys.executable, "-c", JOB], env={**env, "AWS_BATCH_JOB_ATTEMPT": "1"}
    )
    first.wait_for(lambda: first.has_line("job running"), what="the job to start", timeout=120)
    first.signal(signal.SIGTERM)
    assert first.wait(60) == 75, first.stdout + first.stderr
    # attempt 2 of 2: restores, interrupted on the last attempt: a continuation
    second = start_agent(
        tmp_path,
        [],
        [sys.executable, "-c", JOB.replace("n == 1", "True")],
        env={**env, "AWS_BATCH_JOB_ATTEMPT": "2"},
    )
    second.wait_for(
        lambda: second.has_line("job running"), what="the job to start again", timeout=120
    )
    second.signal(signal.SIGTERM)
    assert second.wait(60) == 75, second.stdout + second.stderr
    assert second.event("restore.done")["sequence"] >= 1
    second.event("batch.continuation_submitted")

    recorded = {tuple(line.split()) for line in calls.read_text().splitlines()}
    unknown = {c for c in recorded if c not in IAM_ACTION}
    assert not unknown, f"map these operations to IAM actions: {unknown}"
    needed = {IAM_ACTION[c] for c in recorded}  # type: ignore[index]
    granted = policy_actions() - CALLED_BY_S3_FOR_SSE_KMS
    assert needed - granted == set(), "missing from the policy"
    assert granted - needed == set(), "granted, but never called"
