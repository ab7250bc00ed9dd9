"""Entries as files in a directory, with a small SQLite index beside them.

The index (``index.sqlite``, WAL mode, shared by every kernel that opens the directory)
keeps, per key, the entry's size, last use, and generation tag, plus the writes in flight
and a running total of bytes. So a save costs O(log n) (no listing of the directory for
the budget), the budget evicts by an ordered index, usage is one row, writes in flight and
leftovers of killed writers are counted, and an entry file copied back over a newer one (a
rollback) is recognised by its tag. A write:

1. registers itself (temporary name, key, tag, pid, host, size) in ``writes``;
2. writes ``.tmp-<pid>-<random>.entry``, fsync;
3. in one index transaction: ``os.replace`` into ``<key>.entry`` and make its tag current.

A reader sees the old file or the new one; a writer killed anywhere leaves at most its
temporary file and its ``writes`` row, which the next write (or open) removes once its pid
is gone. Entries are opened only if they are regular files (``O_NONBLOCK|O_NOFOLLOW``, so a
FIFO can't hang a reader). Leases are ``flock`` locks on ``leases/<key>.lease``: the kernel
releases them when the holder dies, so there is nothing to renew and nothing to lapse.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import secrets
import socket
import sqlite3
import stat
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from .base import Blob, Buffer, Landed, write_all

SUFFIX = ".entry"
_TOMBSTONE = ""  # the tag of a deleted key: any file of it that turns up again is an old copy
_TOMBSTONE_DAYS = 30.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS entries(
    key TEXT PRIMARY KEY, nbytes INTEGER NOT NULL, last_used REAL NOT NULL, tag TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS entries_by_use ON entries(last_used);
CREATE TABLE IF NOT EXISTS writes(
    tmp TEXT PRIMARY KEY, key TEXT NOT NULL, tag TEXT NOT NULL, pid INTEGER NOT NULL,
    host TEXT NOT NULL, nbytes INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS writes_by_key ON writes(key);
CREATE TABLE IF NOT EXISTS totals(id INTEGER PRIMARY KEY CHECK (id = 0), nbytes INTEGER NOT NULL);
INSERT OR IGNORE INTO totals VALUES (0, 0);
CREATE TRIGGER IF NOT EXISTS entries_in AFTER INSERT ON entries BEGIN
    UPDATE totals SET nbytes = nbytes + NEW.nbytes; END;
CREATE TRIGGER IF NOT EXISTS entries_out AFTER DELETE ON entries BEGIN
    UPDATE totals SET nbytes = nbytes - OLD.nbytes; END;
CREATE TRIGGER IF NOT EXISTS entries_re AFTER UPDATE OF nbytes ON entries BEGIN
    UPDATE totals SET nbytes = nbytes - OLD.nbytes + NEW.nbytes; END;
CREATE TRIGGER IF NOT EXISTS writes_in AFTER INSERT ON writes BEGIN
    UPDATE totals SET nbytes = nbytes + NEW.nbytes; END;
CREATE TRIGGER IF NOT EXISTS writes_out AFTER DELETE ON writes BEGIN
    UPDATE totals SET nbytes = nbytes - OLD.nbytes; END;
"""


class NotARegularFile(OSError):
    """An entry path that is a FIFO, device, directory or link: never opened for reading."""


def _host() -> str:
    return socket.gethostname()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's live process
    return True


def read_regular_file(path: Path) -> bytearray:
    """The file's bytes; refuses (``NotARegularFile``) anything but a regular file, without blocking."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise NotARegularFile(errno.ELOOP, "is a symbolic link", str(path)) from None
        raise
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise NotARegularFile(errno.EINVAL, "is not a regular file", str(path))
        data = bytearray(info.st_size)
        view = memoryview(data)
        done = 0
        while done < info.st_size:
            got = os.readv(fd, [view[done:]])
            if got == 0:
                del view
                del data[done:]  # shrank while we read: the signature check will refuse it
                break
            done += got
        return data
    finally:
        os.close(fd)


class FileBackend:
    """One file per entry in ``directory``, indexed by ``index.sqlite``.

    ``private`` (the per-user local tier) is checked by the caller; this class only
    chooses the file mode: 0600 entries, or 0644 in a team directory where colleagues read
    them (their trust comes from signatures, not from file permissions).
    """

    def __init__(self, directory: Path, *, shared: bool = False, stale_after: float = 600.0) -> None:
        self.directory = Path(directory)
        self.shared = shared
        self.directory.mkdir(mode=0o700 if not shared else 0o775, parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._connection: sqlite3.Connection | None = self._open_index()
        self._sweep(stale_after)

    @property
    def _db(self) -> sqlite3.Connection:
        """The index connection (kept open: WAL connections are cheap to keep, slow to reopen)."""
        if self._connection is None:  # used again after close()
            self._connection = self._open_index()
        return self._connection

    # the index
    def _open_index(self) -> sqlite3.Connection:
        path = self.directory / "index.sqlite"
        try:
            db = sqlite3.connect(path, timeout=30.0, isolation_level=None, check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.executescript(_SCHEMA)
        except sqlite3.Error as exc:
            raise OSError(errno.EIO, f"the cache index can't be opened ({exc})", str(path)) from exc
        with contextlib.suppress(OSError):
            os.chmod(path, 0o664 if self.shared else 0o600)
        return db

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction on the index (serialised with every other kernel's)."""
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise OSError(errno.EIO, f"the cache index is not writable ({exc})") from exc
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            try:
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                with contextlib.suppress(sqlite3.Error):
                    self._db.execute("ROLLBACK")
                raise OSError(errno.EIO, f"the cache index is not writable ({exc})") from exc

    def _query(self, sql: str, *args: object) -> list[tuple[object, ...]]:
        with self._lock:
            try:
                return self._db.execute(sql, args).fetchall()
            except sqlite3.Error as exc:
                raise OSError(errno.EIO, f"the cache index can't be read ({exc})") from exc

    def _sweep(self, stale_after: float | None = None) -> None:
        """Remove what killed writers left: their temporary files and their ``writes`` rows."""
        host = _host()
        dead = [
            str(tmp)
            for tmp, pid, row_host in self._query("SELECT tmp, pid, host FROM writes")
            if row_host == host and not _pid_alive(int(str(pid)))
        ]
        if dead:
            with self._transaction() as db:
                for tmp in dead:
                    try:
                        os.unlink(self.directory / tmp)
                    except FileNotFoundError:
                        # renamed into place, then killed before its transaction committed:
                        # the entry file carries this tag, so the row stays (a reader would
                        # take the file for an old copy put back) until the key is written again
                        continue
                    db.execute("DELETE FROM writes WHERE tmp = ?", (tmp,))
        if stale_after is not None:  # temporaries nobody registered (older versions): by age
            registered = {str(row[0]) for row in self._query("SELECT tmp FROM writes")}
            cutoff = time.time() - stale_after
            for path in self.directory.glob(f".tmp-*{SUFFIX}"):
                with contextlib.suppress(OSError):
                    if path.name not in registered and path.lstat().st_mtime <= cutoff:
                        path.unlink()
            with contextlib.suppress(OSError), self._transaction() as db:
                db.execute(
                    "DELETE FROM entries WHERE tag = ? AND last_used < ?",
                    (_TOMBSTONE, time.time() - _TOMBSTONE_DAYS * 86400),
                )

    def _renamed_by_the_dead(self, db: sqlite3.Connection, key: str) -> list[str]:
        """Rows of ``key``'s writers on this host that died after renaming (see ``_sweep``)."""
        host = _host()
        return [
            str(tmp)
            for tmp, pid, row_host in db.execute("SELECT tmp, pid, host FROM writes WHERE key = ?", (key,))
            if row_host == host and not _pid_alive(int(str(pid))) and not (self.directory / str(tmp)).exists()
        ]

    def path(self, key: str) -> Path:
        if not key.isalnum() or not key.isascii():
            raise ValueError(f"cache keys are hex digests, not {key!r}")
        return self.directory / f"{key}{SUFFIX}"

    # the Backend protocol
    def put(
        self, key: str, chunks: Iterable[Buffer], *, tag: str, size: int, ttl: float | None = None
    ) -> None:
        target = self.path(key)
        self._sweep()
        name = f".tmp-{os.getpid()}-{secrets.token_hex(6)}{SUFFIX}"
        temporary = self.directory / name
        with self._transaction() as db:
            db.execute(
                "INSERT INTO writes VALUES (?, ?, ?, ?, ?, ?)", (name, key, tag, os.getpid(), _host(), size)
            )
        try:
            written = 0
            fd = os.open(
                temporary,
                os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC,
                0o644 if self.shared else 0o600,
            )
            with os.fdopen(fd, "wb") as handle:
                for chunk in chunks:
                    written += handle.write(chunk)
                handle.flush()
                os.fsync(handle.fileno())
            with self._transaction() as db:
                os.replace(temporary, target)
                db.execute(
                    "INSERT INTO entries VALUES (?, ?, ?, ?) ON CONFLICT(key) DO UPDATE SET "
                    "nbytes = excluded.nbytes, last_used = excluded.last_used, tag = excluded.tag",
                    (key, written, time.time(), tag),
                )
                db.execute("DELETE FROM writes WHERE tmp = ?", (name,))
                for other in self._renamed_by_the_dead(db, key):  # their file is replaced now
                    db.execute("DELETE FROM writes WHERE tmp = ?", (other,))
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            with contextlib.suppress(OSError), self._transaction() as db:
                db.execute("DELETE FROM writes WHERE tmp = ?", (name,))
            raise
        with contextlib.suppress(OSError):  # make the rename itself durable
            directory_fd = os.open(self.directory, os.O_RDONLY)
            try:
                os.fsync(directory_fd)
            finally:
                os.close(directory_fd)

    def _current(self, key: str) -> frozenset[str] | None:
        rows = self._query(
            "SELECT tag FROM entries WHERE key = ? UNION ALL SELECT tag FROM writes WHERE key = ?", key, key
        )
        if not rows:
            return None  # the index never heard of it (lost index): can't tell
        return frozenset(str(row[0]) for row in rows if row[0] != _TOMBSTONE)

    def get(self, key: str) -> Blob | None:
        try:
            data = read_regular_file(self.path(key))
        except FileNotFoundError:
            return None
        with contextlib.suppress(OSError), self._transaction() as db:  # a read-only index still serves
            db.execute("UPDATE entries SET last_used = ? WHERE key = ?", (time.time(), key))
        return Blob(data, self._current(key))

    def open_file(self, key: str, *, touch: bool = True) -> tuple[int, frozenset[str] | None] | None:
        """An open read-only descriptor of the entry file (the caller closes it) and its current
        tags, for readers that map the file instead of reading it; None when there is none."""
        try:
            fd = os.open(self.path(key), os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise NotARegularFile(errno.ELOOP, "is a symbolic link", str(self.path(key))) from None
            raise
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise NotARegularFile(errno.EINVAL, "is not a regular file", str(self.path(key)))
            if touch:
                with contextlib.suppress(OSError), self._transaction() as db:
                    db.execute("UPDATE entries SET last_used = ? WHERE key = ?", (time.time(), key))
            return fd, self._current(key)
        except BaseException:
            os.close(fd)
            raise

    def get_into(self, key: str, open_file: Callable[[int], int]) -> Landed | None:
        """The entry file copied by the kernel (``sendfile``) into ``open_file(size)``, 16 MiB at a time."""
        opened = self.open_file(key)
        if opened is None:
            return None
        fd, current = opened
        try:
            size = os.fstat(fd).st_size
            out = open_file(size)
            done = 0
            while done < size:
                step = min(16 << 20, size - done)
                try:
                    os.lseek(out, done, os.SEEK_SET)
                    sent = os.sendfile(out, fd, done, step)
                except OSError:  # a target sendfile can't write to: read and write
                    data = os.pread(fd, step, done)
                    write_all(out, memoryview(data), done)
                    sent = len(data)
                if sent == 0:
                    break  # truncated under us: the signature check refuses it
                done += sent
            return Landed(size, current)
        finally:
            os.close(fd)

    def reread(self, key: str) -> Blob | None:
        """Read again without touching: a reader that raced a writer's rename retries once."""
        try:
            return Blob(read_regular_file(self.path(key)), self._current(key))
        except FileNotFoundError:
            return None

    def contains(self, key: str) -> bool:
        try:
            return stat.S_ISREG(os.lstat(self.path(key)).st_mode)
        except FileNotFoundError:
            return False

    def delete(self, key: str, tag: str | None = None) -> bool:
        path = self.path(key)
        with self._transaction() as db:  # a writer renames and records its tag in one of these
            if tag is not None:
                row = db.execute("SELECT tag FROM entries WHERE key = ?", (key,)).fetchone()
                if row is not None and row[0] != tag:
                    return False  # another kernel's newer file (or already deleted)
            try:
                path.unlink()
                existed = True
            except FileNotFoundError:
                existed = False
            db.execute(
                "INSERT INTO entries VALUES (?, 0, ?, ?) ON CONFLICT(key) DO UPDATE SET "
                "nbytes = 0, last_used = excluded.last_used, tag = excluded.tag",
                (key, time.time(), _TOMBSTONE),
            )
        return existed

    def keys(self) -> list[str]:
        indexed = {str(row[0]) for row in self._query("SELECT key FROM entries WHERE tag != ?", _TOMBSTONE)}
        on_disk = {
            path.name[: -len(SUFFIX)]
            for path in self.directory.glob(f"*{SUFFIX}")
            if not path.name.startswith(".tmp-")
        }
        return sorted(indexed | on_disk)

    def usage(self) -> int:
        rows = self._query("SELECT nbytes FROM totals WHERE id = 0")
        return int(str(rows[0][0])) if rows else 0

    def trim(self, budget: int, keep: str | None = None) -> list[str]:
        evicted: list[str] = []
        while self.usage() > budget:
            rows = self._query(
                "SELECT key FROM entries WHERE tag != ? AND key != ? ORDER BY last_used LIMIT 8",
                _TOMBSTONE,
                keep or "",
            )
            if not rows:
                break
            for (key,) in rows:
                self.delete(str(key))
                evicted.append(str(key))
                if self.usage() <= budget:
                    break
        return evicted

    def close(self) -> None:
        """Close the index connection (three descriptors with -wal and -shm); reopened if used again."""
        with self._lock:
            if self._connection is not None:
                self._connection.close()
                self._connection = None

    # leases
    def _lease_path(self, key: str) -> Path:
        directory = self.directory / "leases"
        directory.mkdir(mode=0o700 if not self.shared else 0o775, exist_ok=True)
        return directory / f"{self.path(key).stem}.lease"

    def acquire(self, key: str, holder: str, ttl: float) -> _FileLease | None:
        fd = os.open(
            self._lease_path(key), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o664 if self.shared else 0o600
        )
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        os.ftruncate(fd, 0)
        os.pwrite(fd, holder.encode(), 0)
        return _FileLease(fd)

    def holder(self, key: str) -> str | None:
        try:
            fd = os.open(self._lease_path(key), os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                return os.pread(fd, 4096, 0).decode(errors="replace") or "another kernel"
            return None  # we could lock it: nobody holds it
        finally:
            os.close(fd)


class _FileLease:
    """An ``flock`` held on an open descriptor: lapses only when its process dies."""

    def __init__(self, fd: int) -> None:
        self._fd: int | None = fd

    def renew(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, 0)
            os.close(self._fd)  # closing the last descriptor drops the lock
            self._fd = None
