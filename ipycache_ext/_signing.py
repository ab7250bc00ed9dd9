"""Who wrote an entry: HMAC-SHA256 with a per-user secret (local tier), Ed25519 per user (team).

Pickles run code when loaded, so an entry is unpickled only after its signature verifies:

- the local tier signs with a 32-byte secret only its user can read: HMAC-SHA256 over the
  whole entry. Nobody else can make a file that verifies.
- the team tier signs with the user's Ed25519 private key (``cryptography``; never
  hand-written) over SHA-256 of the whole entry; a reader accepts it only if the signer's
  public key is in the team's trusted list, configured outside the notebook.

Key files are created atomically: the key is written to a temporary file and ``os.link``ed
into place, which fails if someone else got there first. So kernels starting at once all end
up with the one key that won, and no reader ever sees a half-written key.
"""

from __future__ import annotations

import base64
import contextlib
import errno
import getpass
import hashlib
import hmac
import os
import secrets
import socket
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

SCHEME_HMAC = 1
SCHEME_ED25519 = 2
_DOMAIN = b"ipycache_ext team entry v1\x00"  # what an Ed25519 signature here can mean, and nothing else
NO_SIGNER = bytes(32)
ENV_TEAM_KEY = "IPYCACHE_EXT_TEAM_KEY"


ENV_USER = "IPYCACHE_EXT_USER"


def whoami() -> str:
    """``user@host``: recorded in every entry as who computed it.

    ``$IPYCACHE_EXT_USER`` names the user instead (a shared service account, or two "users"
    on one machine in the demo); the signature, not this name, is what is trusted.
    """
    user = os.environ.get(ENV_USER)
    if not user:
        try:
            user = getpass.getuser()
        except (KeyError, OSError):
            user = str(os.getuid())
    return f"{user}@{socket.gethostname()}"


def private_directory(directory: Path) -> None:
    """Create ``directory`` owner-only, or refuse one that others could write into.

    Anyone who can write into the directory could plant entries or swap the key file, so a
    directory that is not ours, or that group or others may write to, turns persistence off.
    """
    if directory.exists() and not directory.is_dir():
        raise NotADirectoryError(f"the cache directory {directory} is a file, not a directory")
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    info = os.lstat(directory)
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
        raise PermissionError(f"the cache directory {directory} must be a directory that belongs to you")
    if info.st_mode & 0o077:
        try:
            os.chmod(directory, 0o700)
        except OSError as exc:
            if info.st_mode & 0o022:
                raise PermissionError(
                    f"others can write into the cache directory {directory} (chmod 700 it)"
                ) from exc


def _create_once(path: Path, content: bytes) -> None:
    """Put ``content`` at ``path`` unless a file is there already; atomic, whoever wins."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(content)
            handle.flush()
            os.fsync(handle.fileno())
        with contextlib.suppress(FileExistsError):
            os.link(temporary, path)  # never replaces: the first one stays
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)


def _read_private(path: Path, what: str) -> bytes:
    """A key file's bytes, if it is a regular file of ours that only we can read."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as exc:
        if isinstance(exc, FileNotFoundError):
            raise
        if exc.errno == errno.ELOOP:  # O_NOFOLLOW met a symbolic link
            raise PermissionError(f"{what} {path} must be a regular file, not a link") from exc
        raise PermissionError(
            f"{what} {path} can't be opened ({exc.strerror}): make it yours and readable by you "
            f"only (chmod 600 {path}), or delete it to make a new one"
        ) from exc
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(handle.fileno())
        if not stat.S_ISREG(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o077:
            raise PermissionError(
                f"{what} {path} must be a file that belongs to you and is readable by you only "
                f"(chmod 600 {path}); persistence is off until then"
            )
        return handle.read(1 << 16)


def load_or_create_key(path: Path) -> bytes:
    """The per-user HMAC secret: 32 random bytes in an owner-only file, made on first use."""
    private_directory(path.parent)
    with contextlib.suppress(FileNotFoundError):
        key = _read_private(path, "the signing key")
        if len(key) >= 32:
            return key
        raise PermissionError(f"the signing key {path} is damaged (too short): delete it to make a new one")
    _create_once(path, secrets.token_bytes(32))
    return _read_private(path, "the signing key")


class Signature(Protocol):
    """An incremental signature over an entry's bytes."""

    def update(self, data: bytes | memoryview) -> None: ...

    def finish(self) -> bytes: ...


class Signer(Protocol):
    scheme: int
    signer_id: bytes  # 32 bytes in the entry's prefix: the public key, or zeros for HMAC
    size: int  # bytes of signature at the end of the entry

    def start(self) -> Signature: ...


class Verifier(Protocol):
    def verify(self, scheme: int, signer_id: bytes, body: memoryview, signature: bytes) -> str | None:
        """None when ``signature`` is valid over ``body``; else why not, in a few words."""


class _Hmac:
    def __init__(self, secret: bytes) -> None:
        self._mac = hmac.new(secret, digestmod=hashlib.sha256)

    def update(self, data: bytes | memoryview) -> None:
        self._mac.update(data)

    def finish(self) -> bytes:
        return self._mac.digest()


class HmacSigner:
    """Signs and verifies with one user's secret: the local, single-user tier."""

    scheme = SCHEME_HMAC
    signer_id = NO_SIGNER
    size = 32

    def __init__(self, secret: bytes) -> None:
        self._secret = secret

    def start(self) -> Signature:
        return _Hmac(self._secret)

    def verify(self, scheme: int, signer_id: bytes, body: memoryview, signature: bytes) -> str | None:
        if scheme != SCHEME_HMAC:
            return "it is not signed with this user's key"
        expected = hmac.new(self._secret, body, hashlib.sha256).digest()
        return (
            None
            if hmac.compare_digest(expected, signature)
            else "its signature does not match this user's key"
        )


def sha256_of(body: memoryview, *, piece: int = 64 << 20) -> bytes:
    digest = hashlib.sha256()
    for start in range(0, len(body), piece):
        digest.update(body[start : start + piece])
    return digest.digest()


class _Ed25519:
    def __init__(self, key: Any) -> None:
        self._key = key
        self._digest = hashlib.sha256()

    def update(self, data: bytes | memoryview) -> None:
        self._digest.update(data)

    def finish(self) -> bytes:
        return bytes(self._key.sign(_DOMAIN + self._digest.digest()))


def public_key_text(raw: bytes) -> str:
    """How a public key is written in trusted-key lists: ``ed25519:<base64 of 32 bytes>``."""
    return "ed25519:" + base64.b64encode(raw).decode()


def fingerprint(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()[:16]


class Ed25519Signer:
    """A user's team identity: signs shared entries with their private key."""

    scheme = SCHEME_ED25519
    size = 64

    def __init__(self, private_key: Any) -> None:
        from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

        self._key = private_key
        self.signer_id: bytes = private_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)

    @property
    def public_key(self) -> str:
        return public_key_text(self.signer_id)

    def start(self) -> Signature:
        return _Ed25519(self._key)

    @classmethod
    def load_or_create(cls, path: Path | None = None) -> Ed25519Signer:
        """The user's key (``$IPYCACHE_EXT_TEAM_KEY``, else ``~/.config/ipycache_ext/team_ed25519.pem``).

        Made on first use, atomically, owner-only. Kept out of the cache directory so clearing
        the cache doesn't change who you are to your colleagues.
        """
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
        from cryptography.hazmat.primitives.serialization import (
            Encoding,
            NoEncryption,
            PrivateFormat,
            load_pem_private_key,
        )

        path = path or default_team_key_path()
        private_directory(path.parent)
        try:
            pem = _read_private(path, "the team signing key")
        except FileNotFoundError:
            fresh = Ed25519PrivateKey.generate()
            _create_once(path, fresh.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()))
            pem = _read_private(path, "the team signing key")
        key = load_pem_private_key(pem, password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise PermissionError(f"the team signing key {path} is not an Ed25519 key")
        return cls(key)


def default_team_key_path() -> Path:
    explicit = os.environ.get(ENV_TEAM_KEY)
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "ipycache_ext" / "team_ed25519.pem"


@dataclass(frozen=True)
class TrustedKey:
    name: str
    raw: bytes


def parse_public_key(text: str) -> bytes:
    """``ed25519:<base64>`` (what ``ipycache-team-key`` prints) to its 32 raw bytes."""
    scheme, _, encoded = text.strip().partition(":")
    if scheme != "ed25519" or not encoded:
        raise ValueError(f"a trusted key looks like 'ed25519:<base64>', not {text!r}")
    try:
        raw = base64.b64decode(encoded, validate=True)
    except ValueError:  # binascii.Error
        raise ValueError(
            f"a trusted key is 'ed25519:' and base64, and {text!r} is not (check the trusted keys)"
        ) from None
    if len(raw) != 32:
        raise ValueError(f"an Ed25519 public key has 32 bytes, not {len(raw)} ({text!r})")
    return raw


def read_trusted(items: Iterable[str]) -> dict[bytes, TrustedKey]:
    """Trusted signers from keys (``[name] ed25519:...``) and files of such lines (``#`` comments)."""
    trusted: dict[bytes, TrustedKey] = {}
    for given in items:
        item = given.strip()
        if not item:
            continue
        lines = [item] if "ed25519:" in item else Path(item).expanduser().read_text().splitlines()
        for text in lines:
            line = text.split("#", 1)[0].strip()
            if not line:
                continue
            *name, key = line.split()
            raw = parse_public_key(key)
            trusted[raw] = TrustedKey(" ".join(name) or fingerprint(raw), raw)
    return trusted


class TrustedSigners:
    """Verifies team entries: a valid Ed25519 signature by one of the trusted public keys."""

    def __init__(self, trusted: dict[bytes, TrustedKey]) -> None:
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

        self.trusted = trusted
        self._keys = {raw: Ed25519PublicKey.from_public_bytes(raw) for raw in trusted}

    def verify(self, scheme: int, signer_id: bytes, body: memoryview, signature: bytes) -> str | None:
        from cryptography.exceptions import InvalidSignature

        if scheme != SCHEME_ED25519:
            return "it is not signed with a team key"
        key = self._keys.get(bytes(signer_id))
        if key is None:
            return f"its signer (key {fingerprint(bytes(signer_id))}) is not in the trusted keys"
        try:
            key.verify(signature, _DOMAIN + sha256_of(body))
        except InvalidSignature:
            return f"its signature by {self.trusted[bytes(signer_id)].name} does not verify"
        return None
