"""What the store keeps per entry, and the snapshots and answers it hands out (no IPython)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

Kind = Literal["data", "resource"]
KINDS: tuple[Kind, ...] = ("data", "resource")
Where = Literal["disk", "team"]  # "disk": this user's local tier; "team": also the shared team store
Dependencies = tuple[Mapping[str, Any], ...]


@dataclass(frozen=True, slots=True)
class EntryInfo:
    """A snapshot of one entry, safe to keep and show: it never changes after it is taken.

    ``dependencies`` are the JSON-able records of what the computation read (opaque to the
    store); ``computed_by`` says who computed an entry found in a shared tier ("alice@host",
    None when this kernel did); ``shared`` is True when the entry is in the team tier.
    """

    key: str
    kind: Kind
    label: str
    names: tuple[str, ...]
    size: int | None
    created: float
    expires: float | None
    hits: int
    compute_seconds: float
    last_used: float
    group: str
    miss_reason: str | None = None
    inputs: Mapping[str, str] = field(default_factory=dict)
    persisted: bool = False
    dependencies: Dependencies = ()
    computed_by: str | None = None
    shared: bool = False

    def ttl_left(self, now: float) -> float | None:
        """Seconds until expiry (0 when due), or None when the entry never expires."""
        return None if self.expires is None else max(0.0, self.expires - now)


@dataclass(frozen=True, slots=True)
class Lookup:
    """The answer of ``get_or_create``: the stored value, whether it was a hit, and the entry.

    ``entry`` is None when the value was computed (or found on disk) but could not be kept
    in memory (larger than the whole memory budget); the value is still good to hand out.
    """

    value: Any
    hit: bool
    entry: EntryInfo | None


@dataclass(eq=False)
class Entry:
    """One live entry (mutable, guarded by the store's lock); ``snapshot()`` is what leaves it."""

    key: str
    kind: Kind
    label: str
    names: tuple[str, ...]
    group: str
    value: Any
    size: int | None
    created: float
    expires: float | None
    compute_seconds: float
    on_release: Callable[[Any], Any] | None
    miss_reason: str | None
    inputs: Mapping[str, str]
    hits: int = 0
    last_used: float = 0.0
    persisted: bool = False
    dependencies: Dependencies = ()
    computed_by: str | None = None
    shared: bool = False

    @property
    def data_size(self) -> int:
        """Bytes this entry counts against the memory budget (resources count nothing)."""
        return (self.size or 0) if self.kind == "data" else 0

    def snapshot(self) -> EntryInfo:
        """The frozen ``EntryInfo`` of now. It is taken on every hit, so its fields are set
        straight, each named once (a frozen dataclass's ``__init__`` took 2.7 µs of a ~9 µs
        decorator hit, this 1.4; ``tests/test_store.py`` checks that every field is here)."""
        info = _new(EntryInfo)
        _set(info, "key", self.key)
        _set(info, "kind", self.kind)
        _set(info, "label", self.label)
        _set(info, "names", self.names)
        _set(info, "size", self.size)
        _set(info, "created", self.created)
        _set(info, "expires", self.expires)
        _set(info, "hits", self.hits)
        _set(info, "compute_seconds", self.compute_seconds)
        _set(info, "last_used", self.last_used)
        _set(info, "group", self.group)
        _set(info, "miss_reason", self.miss_reason)
        _set(info, "inputs", self.inputs)
        _set(info, "persisted", self.persisted)
        _set(info, "dependencies", self.dependencies)
        _set(info, "computed_by", self.computed_by)
        _set(info, "shared", self.shared)
        return info


_new = object.__new__
_set = object.__setattr__  # what a frozen dataclass's own __init__ uses
