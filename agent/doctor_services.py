"""doctor's checks of the services around the store: AWS credentials and region, the EC2
instance metadata service, the CloudWatch Logs group. Each returns one :class:`Check`."""

from __future__ import annotations

from dataclasses import dataclass

from .config import S3Settings, Settings
from .notices.imds import looks_like_ec2
from .notices.protocol import INSTANCE_ACTION


@dataclass(frozen=True)
class Check:
    name: str
    status: str  # "ok", "warn", "FAIL" or "skip"
    detail: str
    fix: str = ""

    def line(self) -> str:
        fix = f"; fix: {self.fix}" if self.fix and self.status in ("warn", "FAIL") else ""
        return f"{self.status:<4}  {self.name}: {self.detail}{fix}"


# -- credentials and region ---------------------------------------------------------------


def check_credentials(s3: S3Settings) -> Check:
    """Credentials, and the region the agent's clients use, found in the SDKs' order
    (AWS_REGION, AWS_DEFAULT_REGION, the profile's config: ``sdk_region``)."""
    import boto3

    session = boto3.session.Session(region_name=s3.aws_region)
    creds = session.get_credentials()
    if creds is None:
        return Check(
            "credentials",
            "FAIL",
            "no AWS credentials found",
            "give the job a role, or set AWS_PROFILE, or AWS_ACCESS_KEY_ID and "
            "AWS_SECRET_ACCESS_KEY",
        )
    if not session.region_name:
        return Check(
            "credentials",
            "warn",
            f"found ({creds.method}), but no region is set (not in AWS_REGION, "
            "AWS_DEFAULT_REGION or the profile's config)",
            "set AWS_REGION to the bucket's region (CloudWatch Logs needs it too)",
        )
    return Check(
        "credentials",
        "ok",
        f"found ({creds.method}); region {session.region_name} ({s3.aws_region_source})",
    )


# -- the metadata service, the log group ----------------------------------------------------


def check_imds(s: Settings) -> Check:
    name = "metadata service"
    if s.imds == "off" or s.imds_disabled:
        return Check(name, "skip", "--imds off: notices come from SIGTERM only")
    if not s.imds_endpoint_set and not looks_like_ec2():
        return Check(name, "skip", "not on EC2 (AWS_EC2_METADATA_SERVICE_ENDPOINT unset)")
    from .notices.client import ImdsClient  # requests: only when there is a service to ask

    client = ImdsClient(s.imds_endpoint, retries=0, allow_v1=s.imds_v1 == "allow")
    try:
        why = client.probe()
        if why:
            return Check(
                name,
                "FAIL" if s.imds == "on" else "warn",
                why,
                "in a container, the instance needs IMDSv2 with HttpPutResponseHopLimit 2 "
                "(launch template MetadataOptions); without it only SIGTERM gives notice",
            )
        instance = client.get("instance-id") or "?"
        notice = client.get(INSTANCE_ACTION)
    except Exception as exc:  # the probe says why; anything after it is reported the same way
        return Check(name, "warn", f"{s.imds_endpoint}: {exc}")
    finally:
        client.close()
    detail = f"{s.imds_endpoint} answers with an IMDSv2 token; instance {instance}"
    if notice:
        return Check(name, "warn", f"{detail}; an interruption notice is posted: {notice}")
    return Check(name, "ok", f"{detail}; no interruption notice")


def check_log_group(s: Settings) -> Check:
    """The calls the agent makes itself: create the group (already there is fine), then the
    job's stream; so the check needs no permission the agent does not."""
    import boto3
    from botocore.config import Config

    name = f"log group {s.log_group}"
    try:
        client = boto3.session.Session(region_name=s.s3.aws_region).client(
            "logs", config=Config(connect_timeout=3, read_timeout=10, retries={"max_attempts": 2})
        )
    except Exception as exc:
        return Check(name, "warn", f"no CloudWatch Logs client: {exc}", "set AWS_REGION")
    group_note = "exists"
    try:
        client.create_log_group(logGroupName=s.log_group)
        group_note = "created"
    except client.exceptions.ResourceAlreadyExistsException:
        pass
    except Exception as exc:
        group_note = f"not created ({_first_line(exc)})"
    try:
        client.create_log_stream(logGroupName=s.log_group, logStreamName=s.log_stream)
    except client.exceptions.ResourceAlreadyExistsException:
        pass
    except Exception as exc:
        return Check(
            name,
            "warn",
            f"group {group_note}; stream {s.log_stream}: {_first_line(exc)}",
            "create the group beforehand or grant logs:CreateLogGroup, and grant "
            "logs:CreateLogStream and logs:PutLogEvents (logs then go to stdout only)",
        )
    finally:
        client.close()
    return Check(name, "ok", f"group {group_note}; stream {s.log_stream} ready")


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
