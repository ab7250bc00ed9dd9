"""The live entries, ordered by last use, under a memory budget and entry limits.

Every operation costs O(1), or O(log n) for entries that expire, per entry it touches: the
least recently used entry of the store, of the data entries (for the memory budget) and
of each group (for ``max_entries``) is the head of an ordered index kept for that
purpose, so a miss under a limit evicts without looking at the other entries. Only
``remove_where`` (clear, delete by predicate) walks the entries, as it must.

Not thread-safe: the store holds its lock around every call.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterator

from ._entry import Entry, Kind
from ._expiry import ExpiryQueue
from ._stats import Counters

Removed = list[tuple[Entry, str]]  # entries that left, and why: released by the store afterwards
_REMOVAL_MEMORY = 4096  # how many removal reasons are remembered to explain later misses


class EntryTable:
    """Entries by key with their LRU indexes (global, data-only, per group) and expiry heap."""

    def __init__(self, memory_budget: int, max_entries: int | None, counters: Counters) -> None:
        self.memory_budget = memory_budget
        self.max_entries = max_entries
        self.data_bytes = 0
        self.expiry = ExpiryQueue()
        self._counters = counters
        self._lru: OrderedDict[str, Entry] = OrderedDict()  # every entry, least recently used first
        self._data: OrderedDict[str, Entry] = OrderedDict()  # data entries only (the budget's order)
        self._groups: dict[str, OrderedDict[str, Entry]] = {}
        self._kinds: dict[Kind, int] = {"data": 0, "resource": 0}
        self._reasons: OrderedDict[str, str] = OrderedDict()

    # ------------------------------------------------------------ reading
    def __len__(self) -> int:
        return len(self._lru)

    def __iter__(self) -> Iterator[Entry]:
        """Entries, least recently used first."""
        return iter(list(self._lru.values()))

    def get(self, key: str) -> Entry | None:
        return self._lru.get(key)

    def count(self, kind: Kind) -> int:
        return self._kinds[kind]

    def removal_reason(self, key: str) -> str | None:
        return self._reasons.get(key)

    # ------------------------------------------------------------ changing
    def insert(self, entry: Entry, group_limit: int | None, removed: Removed) -> None:
        """Add ``entry`` as the most recently used (replacing its key), then enforce the limits."""
        self.remove(entry.key, "replaced", removed)
        self._lru[entry.key] = entry
        if entry.kind == "data":
            self._data[entry.key] = entry
            self.data_bytes += entry.data_size
        self._groups.setdefault(entry.group, OrderedDict())[entry.key] = entry
        self._kinds[entry.kind] += 1
        if entry.expires is not None:
            self.expiry.push(entry.key, entry.expires)
        self._reasons.pop(entry.key, None)
        self.enforce(entry, group_limit, removed)

    def touch(self, entry: Entry) -> None:
        """Make ``entry`` the most recently used in every index it is in."""
        self._lru.move_to_end(entry.key)
        if entry.kind == "data":
            self._data.move_to_end(entry.key)
        self._groups[entry.group].move_to_end(entry.key)

    def remove(self, key: str, reason: str, removed: Removed) -> Entry | None:
        """Take the entry out (noting why); None when there is none."""
        entry = self._lru.pop(key, None)
        if entry is None:
            return None
        if entry.kind == "data":
            del self._data[key]
            self.data_bytes -= entry.data_size
        group = self._groups[entry.group]
        del group[key]
        if not group:
            del self._groups[entry.group]
        self._kinds[entry.kind] -= 1
        self.expiry.discard(key)
        self._reasons[key] = reason
        self._reasons.move_to_end(key)
        if len(self._reasons) > _REMOVAL_MEMORY:
            self._reasons.popitem(last=False)
        self._counters.removed(reason)
        removed.append((entry, reason))
        return entry

    def remove_where(self, predicate: Callable[[Entry], bool], reason: str, removed: Removed) -> int:
        doomed = [entry.key for entry in self._lru.values() if predicate(entry)]
        for key in doomed:
            self.remove(key, reason, removed)
        return len(doomed)

    def expire_due(self, now: float, removed: Removed, limit: int | None = None) -> int:
        """Remove the entries due at ``now`` (at most ``limit``), earliest first."""
        due = self.expiry.pop_due(now, limit)
        for key in due:
            self.remove(key, "expired", removed)
        return len(due)

    def enforce(self, added: Entry | None, group_limit: int | None, removed: Removed) -> None:
        """The group's limit, then the store's ``max_entries``, then the budget; LRU first each time.

        ``added`` (the entry just inserted, the most recently used) is never evicted for them.
        """
        if added is not None and group_limit is not None:
            group = self._groups[added.group]
            while len(group) > group_limit and self._evict_head(group, added, removed):
                pass
        if self.max_entries is not None:
            while len(self._lru) > self.max_entries and self._evict_head(self._lru, added, removed):
                pass
        while self.data_bytes > self.memory_budget and self._evict_head(self._data, added, removed):
            pass

    def _evict_head(self, index: OrderedDict[str, Entry], added: Entry | None, removed: Removed) -> bool:
        head = next(iter(index.values()), None)
        if head is None or head is added:
            return False  # only the new entry is left: it stays (the caller checked its size)
        self.remove(head.key, "evicted", removed)
        return True
