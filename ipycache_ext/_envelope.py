"""The one byte format of a persisted entry, for every tier and backend.

``prefix | header (JSON) | pickle stream | buffers... | signature`` where the prefix is
``MAGIC, format version, signature scheme, signer id (32 bytes), header length``. The
signature (see ``_signing``) covers everything before it, so nothing (not even the header)
is parsed before it verifies; the header is bounded in size and its parse guarded, so no
file can make a reader recurse or allocate without limit. The header's ``generation`` is a
fresh random tag per write: the backend's index says which tags are current, so an older
entry copied back over a newer one is refused (``stale``).
"""

from __future__ import annotations

import json
import secrets
import struct
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from ._signing import Signer, Verifier

FORMAT_VERSION = 2
MAGIC = b"IPYCACHE"
PREFIX = struct.Struct("<8sHB32sI")  # magic, format version, scheme, signer id, header length
MAX_HEADER = 1 << 20  # bytes; a header is a few hundred (dependencies: a few KB)
_SIGNATURE_SIZES = {1: 32, 2: 64}


class Refused(Exception):
    """An entry that must not be unpickled; ``str()`` says why, for one warning line."""


class OtherVersion(Exception):
    """An entry of another format version: a quiet miss (it is replaced on the next save)."""


@dataclass(frozen=True)
class EntryHeader:
    """What is known of a persisted entry besides its value (signed with it)."""

    key: str
    kind: str
    label: str
    names: tuple[str, ...]
    created: float
    expires: float | None
    compute_seconds: float
    computed_by: str | None = None
    dependencies: tuple[Mapping[str, Any], ...] = ()
    generation: str = field(default_factory=lambda: secrets.token_hex(8))
    size: int = 0
    layout: tuple[int, ...] = ()  # length of the pickle stream, then of each buffer

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, data: bytes) -> EntryHeader:
        try:
            raw = json.loads(data)
            if not isinstance(raw, dict):
                raise TypeError("not an object")
            raw["names"] = tuple(str(name) for name in raw["names"])
            raw["layout"] = tuple(int(length) for length in raw["layout"])
            raw["dependencies"] = tuple(dict(item) for item in raw.get("dependencies", ()))
            header = cls(**raw)
        except (ValueError, TypeError, KeyError, RecursionError) as exc:
            raise Refused(f"its header can't be read ({type(exc).__name__})") from None
        if any(length < 0 for length in header.layout) or not header.layout:
            raise Refused("its header describes no value")
        return header


def seal(
    header: EntryHeader, meta: bytes | memoryview, buffers: list[memoryview], signer: Signer
) -> tuple[EntryHeader, int, Iterator[bytes | memoryview]]:
    """The signed entry as pieces to stream (nothing is joined), its header and total size."""
    layout = (memoryview(meta).nbytes, *(b.nbytes for b in buffers))
    header = EntryHeader(**{**asdict(header), "layout": layout, "size": sum(layout)})
    encoded = header.to_json()
    if len(encoded) > MAX_HEADER:
        raise ValueError(f"the entry's header is {len(encoded)} bytes, over the {MAX_HEADER} limit")
    prefix = PREFIX.pack(MAGIC, FORMAT_VERSION, signer.scheme, signer.signer_id, len(encoded))
    total = len(prefix) + len(encoded) + sum(layout) + signer.size

    def pieces() -> Iterator[bytes | memoryview]:
        signature = signer.start()
        parts: list[bytes | memoryview] = [prefix, encoded, meta, *buffers]
        for piece in parts:
            signature.update(piece)
            yield piece
        yield signature.finish()

    return header, total, pieces()


def open_sealed(
    data: bytes | bytearray | memoryview, verifier: Verifier
) -> tuple[EntryHeader, memoryview, list[memoryview]]:
    """Verify, then parse: the header, the pickle stream and the buffers (views into ``data``)."""
    view = memoryview(data)
    if len(view) < PREFIX.size:
        raise Refused("it is truncated")
    magic, version, scheme, signer_id, header_length = PREFIX.unpack_from(view)
    if magic != MAGIC:
        raise Refused("it is not an ipycache_ext entry")
    if version != FORMAT_VERSION:
        raise OtherVersion(version)
    signature_size = _SIGNATURE_SIZES.get(scheme)
    if signature_size is None:
        raise Refused(f"it uses an unknown signature scheme ({scheme})")
    if header_length > MAX_HEADER or len(view) < PREFIX.size + header_length + signature_size:
        raise Refused("it is truncated")
    body, signature = view[:-signature_size], bytes(view[-signature_size:])
    why = verifier.verify(scheme, bytes(signer_id), body, signature)
    if why is not None:
        raise Refused(why)
    start = PREFIX.size + header_length
    header = EntryHeader.from_json(bytes(view[PREFIX.size : start]))
    if sum(header.layout) != len(body) - start:
        raise Refused("its length does not match its header")
    pieces: list[memoryview] = []
    for length in header.layout:
        pieces.append(view[start : start + length])
        start += length
    return header, pieces[0], pieces[1:]


def signer_of(data: bytes | bytearray | memoryview) -> bytes | None:
    """The (unverified) signer id in an entry's prefix, for messages only."""
    if len(data) < PREFIX.size:
        return None
    return bytes(PREFIX.unpack_from(data)[3])
