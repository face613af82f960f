"""docs/batch.md and docs/batch-spot.cfn.yaml say what the code does, and the template lints."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from agent.batch import jobdef
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
    assert json.loads(json.dumps(props["RetryStrategy"])) == pascal(jobdef.retry_strategy())
    container = props["ContainerProperties"]
    assert container["LinuxParameters"] == {"InitProcessEnabled": False}
    names = {e["Name"] for e in container["Environment"]}
    assert names <= AGENT_VARIABLES, names - AGENT_VARIABLES
    compute = template()["Resources"]["ComputeEnvironment"]["Properties"]["ComputeResources"]
    assert compute["Type"] == "SPOT"


def test_job_definition_sets_only_variables_the_agent_reads() -> None:
    req = jobdef.build_job_definition(
        jobdef.JobDefinitionSpec(
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


# -- the same setup as Terraform (docs/batch-spot.tf), parsed with python-hcl2 ---------------

TERRAFORM = REPO / "docs" / "batch-spot.tf"
#: what the module's references and variables evaluate to in this check
TF_VALUES = {
    "var.name": "train",
    "var.image": "img:1",
    "var.stop_timeout_seconds": "120",
    "var.checkpoint_bucket": "my-bucket",
    "var.checkpoint_prefix": "spot-agent",
    "aws_cloudwatch_log_group.jobs.name": "/spot-agent/train",
    "aws_batch_job_queue.on_demand.name": "train-on-demand",
    "tostring(var.fallback_after)": "3",
    "aws_iam_role.job.arn": "arn:aws:iam::123456789012:role/train-job",
}


def tf_value(value: Any) -> Any:
    """A parsed HCL value as Terraform would evaluate it with TF_VALUES."""
    if isinstance(value, dict):
        return {k: tf_value(v) for k, v in value.items() if k != "__is_block__"}
    if isinstance(value, list):
        return [tf_value(v) for v in value]
    if not isinstance(value, str):
        return value
    text = value[1:-1] if value.startswith('"') and value.endswith('"') else value
    return re.sub(r"\$\{([^}]*\)?)\}", lambda m: TF_VALUES[m[1]], text)


def tf_resources(kind: str) -> dict[str, Any]:
    import hcl2

    with open(TERRAFORM) as fh:
        parsed = hcl2.load(fh)
    found: dict[str, Any] = {}
    for block in parsed["resource"]:
        for rtype, named in block.items():
            if rtype.strip('"') == kind:
                found.update({name.strip('"'): body for name, body in named.items()})
    return found | {"locals": {k: v for b in parsed["locals"] for k, v in b.items()}}


def camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def test_terraform_job_definition_matches_the_tool() -> None:
    spec = jobdef.JobDefinitionSpec(
        "train-job", "img:1", vcpus="2", memory=4096, stop_timeout=120,
        checkpoint_uri="s3://my-bucket/spot-agent", log_group="/spot-agent/train",
        job_role_arn="arn:aws:iam::123456789012:role/train-job", continue_jobs=True,
        fallback_queue="train-on-demand", fallback_after=3,
    )  # fmt: skip
    want = jobdef.build_job_definition(spec)
    found = tf_resources("aws_batch_job_definition")
    resource = found["job"]
    assert tf_value(resource["name"]) == want["jobDefinitionName"]
    assert tf_value(resource["type"]) == want["type"]
    assert tf_value(resource["platform_capabilities"]) == want["platformCapabilities"]
    (strategy,) = tf_value(resource["retry_strategy"])
    assert strategy["attempts"] == want["retryStrategy"]["attempts"]
    rules = [{camel(k): v for k, v in rule.items()} for rule in strategy["evaluate_on_exit"]]
    assert rules == want["retryStrategy"]["evaluateOnExit"]
    assert resource["container_properties"] == "${jsonencode(local.container)}"
    container = tf_value(found["locals"]["container"])
    expected = want["containerProperties"]
    by_name = sorted(container.pop("environment"), key=lambda e: e["name"])
    assert by_name == sorted(expected["environment"], key=lambda e: e["name"])
    assert container == {k: v for k, v in expected.items() if k != "environment"}


def test_terraform_has_a_spot_and_an_on_demand_queue() -> None:
    envs = tf_resources("aws_batch_compute_environment")
    assert tf_value(envs["spot"]["compute_resources"][0]["type"]) == "SPOT"
    assert tf_value(envs["on_demand"]["compute_resources"][0]["type"]) == "EC2"
    queues = tf_resources("aws_batch_job_queue")
    for name in ("spot", "on_demand"):
        (order,) = queues[name]["compute_environment_order"]
        assert order["compute_environment"] == f"${{aws_batch_compute_environment.{name}.arn}}"


@pytest.mark.skipif(shutil.which("cfn-lint") is None, reason="cfn-lint is not installed")
def test_template_falls_back_to_its_on_demand_queue() -> None:
    resources = template()["Resources"]
    on_demand = resources["OnDemandComputeEnvironment"]["Properties"]["ComputeResources"]
    assert on_demand["Type"] == "EC2"
    order = resources["OnDemandJobQueue"]["Properties"]["ComputeEnvironmentOrder"]
    assert order[0]["ComputeEnvironment"] == {"Ref": "OnDemandComputeEnvironment"}
    env = resources["JobDefinition"]["Properties"]["ContainerProperties"]["Environment"]
    values = {e["Name"]: e["Value"] for e in env}
    assert values["SPOT_AGENT_FALLBACK_QUEUE"] == {"Ref": "OnDemandJobQueue"}
    assert values["SPOT_AGENT_FALLBACK_AFTER"] == {"Ref": "FallbackAfter"}
