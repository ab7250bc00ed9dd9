"""The one byte format of a persisted entry, for every tier and backend.

``prefix | header (JSON) | pickle stream | buffers... | signature`` where the prefix is
``MAGIC, format version, signature scheme, signer id (32 bytes), header length``. The
signature (see ``_signing``) covers everything before it, so nothing (not even the header)
is parsed before it verifies; the header is bounded in size and its parse guarded, so no
file can make a reader recurse or allocate without limit. The header's ``generation`` is a
fresh random tag per write: the backend's index says which tags are current, so an older
entry copied back over a newer one is refused (``stale``).

Format 3 (the local disk tier) lays the buffers out so that they can be mapped instead of
read: ``prefix | header | pickle stream | signature | padding | buffer | padding | buffer...``,
each buffer on a 4 KiB boundary. The signature covers the prefix (which says where the
buffers start), the header and the pickle stream; the header holds each buffer's offset,
length and xxh3-128 digest (``_serialize.buffer_digest``), so the pickle stream is still
verified before it is unpickled, and every buffer is checked against its signed digest
before any of it is handed out. xxh3 guards against damage, not forgery: a forger would
have to write into the owner's 0700 cache directory, so format 3 is accepted only under
the local HMAC scheme.

Format 4 (the team tier, whose store others can write to) is format 3's layout with each
buffer's digest BLAKE3-256 instead: the signature covers the digests, the digests cover
every byte, and no cheap hash stands between a forger and a buffer. Its entries are
received into a memory file, verified there and mapped by the hits, copied once.
"""

from __future__ import annotations

import json
import secrets
import struct
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, NamedTuple

import blake3

from ._serialize import buffer_digest
from ._signing import SCHEME_HMAC, Signer, Verifier

FORMAT_VERSION = 2
MAPPED_VERSION = 3  # buffers page-aligned, each with a digest in the signed header
STRONG_VERSION = 4  # format 3 with BLAKE3-256 buffer digests (any signature scheme)
MAGIC = b"IPYCACHE"
PREFIX = struct.Struct("<8sHB32sI")  # magic, format version, scheme, signer id, header length
# format 3: ... header length, signed length (prefix + header + pickle stream), start of the buffers
PREFIX_MAPPED = struct.Struct("<8sHB32sIQQ")
ALIGN = 4096
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
    offsets: tuple[int, ...] = ()  # format 3: each buffer's offset from the start of the buffers
    digests: tuple[str, ...] = ()  # format 3: each buffer's buffer_digest, in hex

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
            raw["offsets"] = tuple(int(offset) for offset in raw.get("offsets", ()))
            raw["digests"] = tuple(str(digest) for digest in raw.get("digests", ()))
            raw["dependencies"] = tuple(dict(item) for item in raw.get("dependencies", ()))
            header = cls(**raw)
        except (ValueError, TypeError, KeyError, RecursionError) as exc:
            raise Refused(f"its header can't be read ({type(exc).__name__})") from None
        if any(length < 0 for length in header.layout) or not header.layout:
            raise Refused("its header describes no value")
        return header


def seal(
    header: EntryHeader,
    meta: bytes | memoryview,
    buffers: list[memoryview],
    signer: Signer,
    *,
    mapped: bool = False,
) -> tuple[EntryHeader, int, Iterator[bytes | memoryview]]:
    """The signed entry as pieces to stream (nothing is joined), its header and total size.

    ``mapped``: format 3 (buffers aligned, digests in the header) instead of format 2.
    """
    if mapped:
        return _seal_mapped(header, meta, buffers, signer)
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


def _seal_mapped(
    header: EntryHeader, meta: bytes | memoryview, buffers: list[memoryview], signer: Signer
) -> tuple[EntryHeader, int, Iterator[bytes | memoryview]]:
    layout = (memoryview(meta).nbytes, *(b.nbytes for b in buffers))
    offsets, end = [], 0
    for buffer in buffers:
        offsets.append(end)
        end += -(-buffer.nbytes // ALIGN) * ALIGN
    version = MAPPED_VERSION if signer.scheme == SCHEME_HMAC else STRONG_VERSION
    digest = digest_of(version)
    digests = tuple(digest(buffer).hex() for buffer in buffers)
    fields = {**asdict(header), "layout": layout, "size": sum(layout), "offsets": tuple(offsets)}
    header = EntryHeader(**{**fields, "digests": digests})
    encoded = header.to_json()
    if len(encoded) > MAX_HEADER:
        raise ValueError(f"the entry's header is {len(encoded)} bytes, over the {MAX_HEADER} limit")
    signed_length = PREFIX_MAPPED.size + len(encoded) + layout[0]
    start = signed_length + signer.size
    start = -(-start // ALIGN) * ALIGN if buffers else start
    prefix = PREFIX_MAPPED.pack(
        MAGIC, version, signer.scheme, signer.signer_id, len(encoded), signed_length, start
    )
    total = start + (offsets[-1] + buffers[-1].nbytes if buffers else 0)

    def pieces() -> Iterator[bytes | memoryview]:
        signature = signer.start()
        for piece in (prefix, encoded, meta):
            signature.update(piece)
            yield piece
        at = signed_length + signer.size
        yield signature.finish()
        for offset, buffer in zip(offsets, buffers, strict=True):
            if start + offset > at:
                yield bytes(start + offset - at)
            yield buffer
            at = start + offset + buffer.nbytes

    return header, total, pieces()


class MappedEntry(NamedTuple):
    """A verified format 3/4 entry whose buffers are still to be checked (and are not read yet)."""

    header: EntryHeader
    meta: memoryview  # the pickle stream (verified)
    spans: list[tuple[int, int]]  # each buffer's (file offset, length)
    digests: list[bytes]  # each buffer's signed digest
    digest: Callable[[memoryview], bytes]  # what those digests are of a buffer


def digest_of(version: int) -> Callable[[memoryview], bytes]:
    """How a mapped entry of ``version`` digests its buffers: xxh3 pieces (3) or BLAKE3-256 (4)."""
    return buffer_digest if version == MAPPED_VERSION else strong_digest


def strong_digest(buffer: memoryview) -> bytes:
    """BLAKE3-256 of ``buffer``, on every core for big ones (the GIL is released)."""
    threads = blake3.blake3.AUTO if buffer.nbytes >= 8 << 20 else 1
    return blake3.blake3(buffer, max_threads=threads).digest()


def open_mapped(read: Callable[[int, int], bytes | memoryview], size: int, verifier: Verifier) -> MappedEntry:
    """Formats 3 and 4: verify the signed part (read with ``read(offset, length)``), then parse it.

    Returns the header, the pickle stream, each buffer's (file offset, length) and its signed
    digest. The buffers themselves are not read: the caller checks them against the digests
    (``SerializedValue.from_file``) before handing any of them out.
    """
    head = memoryview(read(0, PREFIX_MAPPED.size))
    _refuse_short(head, PREFIX_MAPPED.size)
    magic, version, scheme, signer_id, header_length, signed_length, start = PREFIX_MAPPED.unpack(head)
    if magic != MAGIC or version not in (MAPPED_VERSION, STRONG_VERSION):
        raise Refused("it is not an ipycache_ext entry of format 3 or 4")
    if version == MAPPED_VERSION and scheme != SCHEME_HMAC:
        raise Refused("it is a format 3 entry not signed with a local key (xxh3 can't guard a shared one)")
    signature_size = _SIGNATURE_SIZES.get(scheme)
    if signature_size is None:
        raise Refused(f"it uses an unknown signature scheme ({scheme})")
    if (
        header_length > MAX_HEADER
        or signed_length < PREFIX_MAPPED.size + header_length
        or start < signed_length + signature_size
        or size < start
    ):
        raise Refused("it is truncated or its prefix is damaged")
    signed = memoryview(read(0, signed_length + signature_size))
    if len(signed) != signed_length + signature_size:
        raise Refused("it is truncated")
    why = verifier.verify(scheme, bytes(signer_id), signed[:signed_length], bytes(signed[signed_length:]))
    if why is not None:
        raise Refused(why)
    header = EntryHeader.from_json(bytes(signed[PREFIX_MAPPED.size : PREFIX_MAPPED.size + header_length]))
    meta = signed[PREFIX_MAPPED.size + header_length : signed_length]
    lengths = header.layout[1:]
    if (
        len(meta) != header.layout[0]
        or len(header.offsets) != len(lengths)
        or len(header.digests) != len(lengths)
    ):
        raise Refused("its header does not describe its buffers")
    spans = [(start + offset, length) for offset, length in zip(header.offsets, lengths, strict=True)]
    end = spans[-1][0] + spans[-1][1] if spans else start
    if end != size or any(offset % ALIGN for offset in header.offsets):
        raise Refused("its length does not match its header")
    try:
        digests = [bytes.fromhex(digest) for digest in header.digests]
    except ValueError:
        raise Refused("its header does not describe its buffers") from None
    return MappedEntry(header, meta, spans, digests, digest_of(version))


def _refuse_short(head: memoryview, needed: int) -> None:
    """What a file too short or not starting with our magic is (the magic is checked first:
    a foreign file is "not an entry", not "truncated")."""
    if not len(head):
        raise Refused("it is empty")
    if bytes(head[: len(MAGIC)]) != MAGIC[: len(head)]:
        raise Refused("it is not an ipycache_ext entry")
    if len(head) < needed:
        raise Refused("it is truncated")


def open_sealed(
    data: bytes | bytearray | memoryview, verifier: Verifier
) -> tuple[EntryHeader, memoryview, list[memoryview]]:
    """Verify, then parse: the header, the pickle stream and the buffers (views into ``data``)."""
    view = memoryview(data)
    _refuse_short(view, PREFIX.size)
    magic, version, scheme, signer_id, header_length = PREFIX.unpack_from(view)
    if magic != MAGIC:
        raise Refused("it is not an ipycache_ext entry")
    if version in (MAPPED_VERSION, STRONG_VERSION):
        entry = open_mapped(lambda at, n: view[at : at + n], len(view), verifier)
        buffers = [view[offset : offset + length] for offset, length in entry.spans]
        for index, (buffer, digest) in enumerate(zip(buffers, entry.digests, strict=True)):
            if entry.digest(buffer) != digest:
                raise Refused(damaged_buffer(index))
        return entry.header, entry.meta, buffers
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


def damaged_buffer(index: int) -> str:
    return (
        f"its buffer {index} does not match the digest in its signed header: it does not verify "
        "(damaged or tampered with)"
    )


def signer_of(data: bytes | bytearray | memoryview) -> bytes | None:
    """The (unverified) signer id in an entry's prefix, for messages only."""
    if len(data) < PREFIX.size:
        return None
    return bytes(PREFIX.unpack_from(data)[3])
