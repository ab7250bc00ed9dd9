"""Byte-level backends for persisted entries; one contract (``base.Backend``), tested once for all.

``open_backend(url)`` picks one by URL: ``file:///path`` (a shared directory), ``redis://``
(``rediss://``, ``unix://``), and ``memory://`` for tests. An object store (fsspec: S3, GCS)
is one more module with the same seven methods and one more branch here.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote, urlparse

from .base import Backend, BackendUnavailable, Blob, Buffer, Lease, Leases
from .files import FileBackend
from .memory import MemoryBackend

__all__ = [
    "Backend",
    "BackendUnavailable",
    "Blob",
    "Buffer",
    "FileBackend",
    "Lease",
    "Leases",
    "MemoryBackend",
    "open_backend",
    "redacted",
]


def open_backend(url: str, *, namespace: str = "default", socket_timeout: float = 2.0) -> Backend:
    """The backend a team-store URL names (``ValueError`` for an unknown scheme)."""
    parsed = urlparse(url)
    if parsed.scheme == "file":
        if parsed.netloc not in ("", "localhost"):
            raise ValueError(
                f"a file:// team store is a local path (file:///srv/team-cache), not {redacted(url)!r}"
            )
        return FileBackend(Path(unquote(parsed.path)) / namespace, shared=True)
    if parsed.scheme in ("redis", "rediss", "unix"):
        from .redis_backend import RedisBackend

        return RedisBackend.from_url(url, namespace=namespace, socket_timeout=socket_timeout)
    if parsed.scheme == "memory":
        return MemoryBackend()
    raise ValueError(
        f"the team store must be a redis://, rediss://, unix:// or file:// URL, not {redacted(url)!r}"
    )


def redacted(url: str) -> str:
    """``url`` for messages, with its user, password and ``password=`` query hidden: warnings
    end up in saved notebooks."""
    parsed = urlparse(url)
    shown = url
    if "@" in parsed.netloc:
        shown = shown.replace(parsed.netloc, "***@" + parsed.netloc.rpartition("@")[2], 1)
    if parsed.query:
        fields = [field.partition("=") for field in parsed.query.split("&")]
        query = "&".join(
            f"{name}={'***' if name.lower() in _SECRET_FIELDS else value}" if sep else name
            for name, sep, value in fields
        )
        shown = shown.replace("?" + parsed.query, "?" + query, 1)
    return shown


_SECRET_FIELDS = ("password", "username", "user")
