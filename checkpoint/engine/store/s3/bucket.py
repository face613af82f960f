"""One client on one bucket under one prefix: full keys, encryption arguments, explanations.

Every request module (:mod:`.reads`, :mod:`.writes`, :mod:`.listing`) works through a
:class:`Bucket`, so the prefix is joined, the encryption asked for is sent and a failure is
explained in one place each.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from checkpoint.errors import StoreError

from .explain import Context, explain


@dataclass(frozen=True)
class Bucket:
    client: Any  # a botocore S3 client: shared by all threads (botocore clients are safe)
    name: str
    #: '/'-separated, no leading or trailing '/'; "" for the whole bucket
    prefix: str = ""
    #: None: no header (the bucket's default encryption applies), "AES256" or "aws:kms"
    sse: str | None = None
    kms_key_id: str | None = None

    def key(self, key: str) -> str:
        """The full S3 key of a store key."""
        key = key.lstrip("/")
        return f"{self.prefix}/{key}" if self.prefix else key

    def relative(self, full_key: str) -> str:
        """The store key of a full S3 key under the prefix."""
        return full_key[len(self.prefix) + 1 :] if self.prefix else full_key

    def sse_args(self) -> dict[str, str]:
        """The encryption arguments of a PutObject."""
        if self.sse is None:
            return {}
        args = {"ServerSideEncryption": self.sse}
        if self.sse == "aws:kms" and self.kms_key_id:
            args["SSEKMSKeyId"] = self.kms_key_id
        return args

    def explain(
        self, exc: Exception, action: str, full_key: str | None, *, attempts: int = 1
    ) -> StoreError:
        """See :func:`.explain.explain`; ``full_key`` None names the bucket."""
        meta = self.client.meta
        at = Context(self.name, self.prefix, meta.region_name, meta.endpoint_url, self.sse)
        return explain(exc, action, full_key, at, attempts=attempts)
