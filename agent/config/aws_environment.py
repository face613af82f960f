"""The AWS SDK's own settings, checked before anything runs.

boto3 reads these itself; a mistake in one would surface as a traceback at the first
client, or (a region in capitals) as a request to a host that cannot exist. ``config``
checks them at start, so each is one line naming the variable, and exit 2.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from .parsers import ConfigError

_AWS_ENDPOINT_VARIABLES = (
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
    "AWS_ENDPOINT_URL_CLOUDWATCH_LOGS",
    "AWS_ENDPOINT_URL_BATCH",
)
_ENDPOINT_URL = re.compile(r"https?://[^/\s?#]+(/[^\s]*)?\Z")
#: what AWS names its regions: us-east-1, ap-southeast-2, us-gov-west-1, eu-isoe-west-1
_AWS_REGION = re.compile(r"[a-z]{2}(-[a-z]+)+-\d{1,2}\Z")
#: what botocore accepts as a region at all (a host label): S3-compatible servers name
#: their regions freely ("garage", "local")
_ANY_REGION = re.compile(r"(?![0-9]+\Z)(?!-)[a-zA-Z0-9-]{1,63}(?<!-)\Z")


def check_aws_environment(environ: Mapping[str, str]) -> None:
    """Raise ConfigError for an SDK setting that cannot work: an endpoint URL without its
    scheme, a malformed region, a profile that no config file defines."""
    for name in _AWS_ENDPOINT_VARIABLES:
        raw = environ.get(name)
        if raw and not _ENDPOINT_URL.match(raw):
            raise ConfigError(
                name,
                f"expected a URL with its scheme, like https://s3.example.com or "
                f"http://127.0.0.1:9000, got {raw!r}",
            )
    custom_endpoint = any(environ.get(n) for n in _AWS_ENDPOINT_VARIABLES)
    for name in ("AWS_DEFAULT_REGION", "AWS_REGION"):
        raw = environ.get(name)
        if not raw:
            continue
        if not _ANY_REGION.match(raw):
            raise ConfigError(name, f"{raw!r} is not a region name (like us-east-1)")
        if not custom_endpoint and not _AWS_REGION.match(raw):
            raise ConfigError(
                name, f"{raw!r} is not an AWS region name (lower case, like us-east-1)"
            )
    profile = environ.get("AWS_PROFILE") or environ.get("AWS_DEFAULT_PROFILE")
    if profile:
        _check_profile(
            profile, "AWS_PROFILE" if environ.get("AWS_PROFILE") else "AWS_DEFAULT_PROFILE"
        )


def _check_profile(profile: str, variable: str) -> None:
    import botocore.session
    from botocore.exceptions import BotoCoreError

    try:
        known = botocore.session.Session().available_profiles
    except BotoCoreError as exc:
        raise ConfigError(variable, f"cannot read the AWS config files: {exc}") from None
    if profile not in known:
        shown = ", ".join(sorted(known)[:8]) or "none"
        raise ConfigError(
            variable,
            f"no profile {profile!r} in the AWS config files (AWS_CONFIG_FILE, "
            f"AWS_SHARED_CREDENTIALS_FILE); profiles there: {shown}",
        )


def sdk_region(environ: Mapping[str, str]) -> tuple[str | None, str]:
    """The region the agent's AWS clients use, and where it came from, in the SDKs' order:
    ``AWS_REGION``, then ``AWS_DEFAULT_REGION``, then the profile's ``region`` (AWS CLI v2
    and the Java, Go and JavaScript SDKs read them so; the Batch and ECS agents set both
    variables in the container).

    botocore reads only the last two, so the clients get the first as ``region_name``;
    None lets botocore go on to the others (it reads them itself), named by the source.
    """
    if environ.get("AWS_REGION"):
        return environ["AWS_REGION"], "AWS_REGION"
    if environ.get("AWS_DEFAULT_REGION"):
        return None, "AWS_DEFAULT_REGION"
    return None, "the profile's config"


def uses_aws(uri: str, log_group: str | None = None, continue_jobs: bool = False) -> bool:
    """Whether a run with these settings makes AWS SDK calls at all."""
    return uri.lower().startswith("s3:") or bool(log_group) or continue_jobs
