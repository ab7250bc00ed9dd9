"""Redis bulk replies read straight into a file: a team hit's transfer, past the client's parser.

redis-py's parser reads a reply in 64 KiB pieces into a ``BytesIO`` and joins them: about
0.4 GB/s on loopback here, against 2.5 GB/s for the socket itself. An entry's chunks have
lengths the manifest already gave, so their replies are read here instead:

- on a connection of the client's own pool, so connecting, authentication, TLS and the
  database stay redis-py's;
- the GETs pipelined a few deep (4 MiB chunks: a reply that fits the caches beats one
  that doesn't, 2.8 vs 1.1 GB/s measured with 16 MiB);
- each reply's header compared with the length the manifest promised, and its body moved
  into the caller's file with ``splice(2)`` (socket to page cache in one copy, no Python
  buffer), or ``recv_into`` a mapping of the file where splice can't (TLS).

Anything unexpected (a missing chunk, an error reply, another length, a timeout) stops the
read and drops the connection, so no later command ever reads the rest of a reply.
"""

from __future__ import annotations

import contextlib
import fcntl
import mmap
import os
import socket
import struct
from collections.abc import Callable, Iterator, Sequence
from typing import Any

_DEPTH = 4  # replies in flight: enough to keep the server writing while one is drained
_PIPE_SIZE = 1 << 20
_F_SETPIPE_SZ = 1031


class ChunkMissing(Exception):
    """A chunk the manifest names is gone or has another length (expired, evicted, rewritten)."""


class Unsupported(Exception):
    """This client's connections don't expose a socket: the caller reads through redis-py."""


def fetch_into(
    pool: Any,
    names: Sequence[str],
    sizes: Sequence[int],
    fd: int,
    *,
    timeout: float | None,
    advance: Callable[[int], None] = lambda n: None,
) -> None:
    """Write the values of ``names`` (of ``sizes`` bytes) one after another into ``fd`` from 0.

    ``ChunkMissing`` when one is not there as promised; ``OSError`` (``TimeoutError``
    included) for connection trouble. The connection goes back to ``pool`` only when every
    reply was read in full.
    """
    connection = pool.get_connection()
    clean = False
    try:
        sock = getattr(connection, "_sock", None)  # redis-py's own attribute: checked, not assumed
        if not isinstance(sock, socket.socket):
            clean = True  # nothing was sent on it
            raise Unsupported(type(connection).__name__)
        with _sink(sock, fd, sum(sizes), timeout) as body:
            offsets = [0]
            for size in sizes:
                offsets.append(offsets[-1] + size)
            sent = 0
            for index, size in enumerate(sizes):
                while sent < len(names) and sent < index + _DEPTH:
                    connection.send_packed_command(connection.pack_command("GET", names[sent]), False)
                    sent += 1
                _expect_header(sock, size)
                body(offsets[index], size)
                _expect(sock, b"\r\n")
                advance(size)
        clean = True
    finally:
        if not clean:
            connection.disconnect()  # replies may still be on their way: nobody may read them
        pool.release(connection)


def _expect_header(sock: socket.socket, size: int) -> None:
    line = bytearray()
    while not line.endswith(b"\r\n"):
        if len(line) > 64:
            raise ChunkMissing("a reply that is not a bulk string")
        got = sock.recv(1)
        if not got:
            raise ConnectionError("the server closed the connection")
        line += got
    if bytes(line) != b"$%d\r\n" % size:
        raise ChunkMissing(line[:-2].decode("ascii", "replace"))


def _expect(sock: socket.socket, data: bytes) -> None:
    got = b""
    while len(got) < len(data):
        more = sock.recv(len(data) - len(got))
        if not more:
            raise ConnectionError("the server closed the connection")
        got += more
    if got != data:
        raise ConnectionError("the reply is not framed as expected")


@contextlib.contextmanager
def _sink(
    sock: socket.socket, fd: int, total: int, timeout: float | None
) -> Iterator[Callable[[int, int], None]]:
    """A function that moves the next ``size`` bytes of ``sock`` to ``fd`` at ``offset``."""
    if type(sock) is socket.socket and hasattr(os, "splice"):
        splicer = _Splicer(sock, fd, timeout)
        try:
            yield splicer.move
        finally:
            splicer.close()
        return
    mapping = mmap.mmap(fd, total, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE) if total else None
    view = memoryview(mapping) if mapping is not None else memoryview(b"")
    try:
        yield lambda offset, size: _receive(sock, view[offset : offset + size])
    finally:
        view.release()
        if mapping is not None:
            mapping.close()


def _receive(sock: socket.socket, target: memoryview) -> None:
    done = 0
    with target:
        while done < len(target):
            got = sock.recv_into(target[done:], len(target) - done)
            if not got:
                raise ConnectionError("the server closed the connection")
            done += got


class _Splicer:
    """Socket -> pipe -> file: the page cache gets the socket's bytes without a Python buffer.

    Python runs a socket with a timeout non-blocking and polls; for splice that means an
    EAGAIN and a poll for every few pages (half the speed, measured). So while splicing the
    socket blocks, with the same timeout set in the kernel (``SO_RCVTIMEO``), and is put
    back as it was after.
    """

    def __init__(self, sock: socket.socket, fd: int, timeout: float | None) -> None:
        self.sock, self.source, self.fd = sock, sock.fileno(), fd
        self.read_end, self.write_end = os.pipe2(os.O_CLOEXEC)
        with contextlib.suppress(OSError):
            fcntl.fcntl(self.write_end, _F_SETPIPE_SZ, _PIPE_SIZE)
        self.timeout = sock.gettimeout()
        sock.settimeout(None)
        seconds = timeout or 0.0
        for option in (socket.SO_RCVTIMEO, socket.SO_SNDTIMEO):  # the sends of the GETs too
            sock.setsockopt(socket.SOL_SOCKET, option, _timeval(seconds))

    def move(self, offset: int, size: int) -> None:
        done = 0
        while done < size:
            try:
                moved = os.splice(self.source, self.write_end, min(_PIPE_SIZE, size - done))
            except BlockingIOError:  # SO_RCVTIMEO ran out
                raise TimeoutError("the team store stopped sending") from None
            if moved == 0:
                raise ConnectionError("the server closed the connection")
            written = 0
            while written < moved:
                at = offset + done + written
                written += os.splice(self.read_end, self.fd, moved - written, offset_dst=at)
            done += moved

    def close(self) -> None:
        os.close(self.read_end)
        os.close(self.write_end)
        with contextlib.suppress(OSError):
            for option in (socket.SO_RCVTIMEO, socket.SO_SNDTIMEO):
                self.sock.setsockopt(socket.SOL_SOCKET, option, _timeval(0.0))
            self.sock.settimeout(self.timeout)


def _timeval(seconds: float) -> bytes:
    whole = int(seconds)
    return struct.pack("@ll", whole, int((seconds - whole) * 1e6))
