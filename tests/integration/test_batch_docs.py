"""docs/batch.md and docs/batch-spot.cfn.yaml say what the code does, and the template lints."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from agent import batch
from agent.config import RUN_OPTIONS

REPO = Path(__file__).resolve().parents[2]
TEMPLATE = REPO / "docs" / "batch-spot.cfn.yaml"
AGENT_VARIABLES = {o.env for o in RUN_OPTIONS}


def pascal(value: Any) -> Any:
    if isinstance(value, dict):
        return {k[0].upper() + k[1:]: pascal(v) for k, v in value.items()}
    if isinstance(value, list):
        return [pascal(v) for v in value]
    return value


def template() -> dict[str, Any]:
    from cfnlint.decode import cfn_yaml

    loaded: dict[str, Any] = cfn_yaml.load(str(TEMPLATE))
    return loaded


@pytest.mark.skipif(shutil.which("cfn-lint") is None, reason="cfn-lint is not installed")
def test_template_passes_cfn_lint() -> None:
    out = subprocess.run(
        ["cfn-lint", str(TEMPLATE)], capture_output=True, text=True, timeout=120, check=False
    )
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.mark.skipif(shutil.which("cfn-lint") is None, reason="cfn-lint is not installed")
def test_template_job_definition_matches_the_tool() -> None:
    props = template()["Resources"]["JobDefinition"]["Properties"]
    assert json.loads(json.dumps(props["RetryStrategy"])) == pascal(batch.retry_strategy())
    container = props["ContainerProperties"]
    assert container["LinuxParameters"] == {"InitProcessEnabled": False}
    names = {e["Name"] for e in container["Environment"]}
    assert names <= AGENT_VARIABLES, names - AGENT_VARIABLES
    compute = template()["Resources"]["ComputeEnvironment"]["Properties"]["ComputeResources"]
    assert compute["Type"] == "SPOT"


def test_job_definition_sets_only_variables_the_agent_reads() -> None:
    req = batch.build_job_definition(
        batch.JobDefinitionSpec(
            "t", "i", checkpoint_uri="s3://bucket/p", log_group="g", continue_jobs=True
        )
    )
    names = {e["name"] for e in req["containerProperties"]["environment"]}
    assert names <= AGENT_VARIABLES, names - AGENT_VARIABLES


def test_iam_policy_in_the_docs_is_valid_json_with_each_needed_action() -> None:
    text = (REPO / "docs" / "batch.md").read_text()
    blocks = [json.loads(b) for b in re.findall(r"```json\n(.*?)```", text, re.S)]
    policy = next(b for b in blocks if "Statement" in b)
    actions: set[str] = set()
    for statement in policy["Statement"]:
        assert statement["Effect"] == "Allow"
        found = statement["Action"]
        actions.update([found] if isinstance(found, str) else found)
        assert statement["Resource"]
    assert actions == {
        "s3:GetObject",
        "s3:PutObject",
        "s3:DeleteObject",
        "s3:ListBucket",
        "logs:CreateLogGroup",
        "logs:CreateLogStream",
        "logs:PutLogEvents",
        "batch:DescribeJobs",
        "batch:DescribeJobDefinitions",
        "batch:SubmitJob",
        "kms:GenerateDataKey",
        "kms:Decrypt",
    }
