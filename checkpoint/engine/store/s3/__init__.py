"""The checkpoint store on Amazon S3 (or any S3-compatible service): ``s3://bucket/prefix``.

How it works. :class:`S3Store` makes one botocore client (:mod:`.client`), shared by all
threads (botocore clients are thread-safe), its connection pool sized for
:attr:`S3Store.concurrency` transfers at once. Every request goes through a
:class:`~.bucket.Bucket`, which joins the prefix, adds the encryption asked for and turns
any failure into a one-line :class:`StoreError` naming the object, the IAM action and what
to check (:mod:`.explain`), marked transient or not so the agent knows whether to retry.

botocore retries a request until its response headers arrive (throttling and 5xx, with
back-off in its standard mode); a body cut short after them is retried once more by
:func:`.reads.read_body`, the one body-read loop of every GET. Writes carry their SHA-256
for S3 to check (:mod:`.writes`); the commit's create-only PUT uses ``If-None-Match: *``.
Listing, batched deletes and the bucket check are :mod:`.listing`.
"""

from checkpoint.errors import ConditionalWritesUnsupported

from .client import check_bucket_name
from .store import S3Store

__all__ = ["ConditionalWritesUnsupported", "S3Store", "check_bucket_name"]
