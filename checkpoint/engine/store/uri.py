"""A checkpoint URI (``file:///path``, ``s3://bucket/prefix``) and the store it names."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from checkpoint.errors import StoreURIError

from .base import LocalStore, Store


def parse_file_uri(uri: str) -> Path:
    parts = urlsplit(uri)
    if parts.netloc not in ("", "localhost"):
        host = parts.netloc.rpartition("@")[2]  # never echo a user name or password
        raise StoreURIError(
            f"{uri!r}: a file URI needs an absolute path, like file:///var/lib/checkpoints "
            f"(here {host!r} would be read as a host name)"
        )
    path = unquote(parts.path)
    if not path.startswith("/"):
        raise StoreURIError(f"{uri!r}: a file URI needs an absolute path, like file:///data/ckpt")
    return Path(path)


def open_store(uri: str, **options: Any) -> Store:
    """The store a checkpoint URI names. Raises :class:`StoreURIError` for a bad URI.

    ``options`` configure an S3 store (``sse``, ``kms_key_id``, ``addressing_style``; see
    :meth:`S3Store.from_uri`); a local store has none and ignores them.
    """
    scheme = urlsplit(uri).scheme.lower() if "://" in uri else ""
    if scheme == "file":
        return LocalStore(parse_file_uri(uri))
    if scheme == "s3":
        try:
            from .s3 import S3Store
        except ImportError as exc:  # pragma: no cover - depends on the build
            raise StoreURIError(f"{uri!r}: S3 support is not available: {exc}") from exc
        return S3Store.from_uri(uri, **options)
    if not scheme:
        raise StoreURIError(
            f"{uri!r} is not a URI: use file:///absolute/path or s3://bucket/prefix"
        )
    raise StoreURIError(
        f"{uri!r}: unknown scheme {scheme!r}; use file:///absolute/path or s3://bucket/prefix"
    )
