"""Say in one line why a cell (or function) was computed again instead of served.

Each key is kept with the digest of the code and of every input it was built from, so a
new key can be compared with the previous one of the same cell: "`n` changed", "cell code
changed", or, when the key is the same, what removed the entry ("expired", "evicted").
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass

_FORGET_AFTER = 2048  # origins remembered; older ones just say "first run"


@dataclass(frozen=True)
class KeyRecord:
    """What a key was built from."""

    key: str
    code: str
    inputs: Mapping[str, str]
    options: str = ""


class MissExplainer:
    """Remembers the last key of each origin (a cell id, a label, a function)."""

    def __init__(self) -> None:
        self._last: OrderedDict[str, KeyRecord] = OrderedDict()
        self._failed: OrderedDict[str, str] = OrderedDict()  # origin -> key whose run failed

    def remember(self, origin: str, record: KeyRecord) -> KeyRecord | None:
        """Store ``record`` as the latest for ``origin``; return the one it replaces."""
        previous = self._last.pop(origin, None)
        self._last[origin] = record
        while len(self._last) > _FORGET_AFTER:
            self._last.popitem(last=False)
        return previous

    def failed(self, origin: str, key: str | None) -> None:
        """The computation of ``key`` for ``origin`` raised or was interrupted (None: it
        finished): the next miss of that key says so instead of "not in the cache"."""
        if key is None:
            self._failed.pop(origin, None)
            return
        self._failed[origin] = key
        while len(self._failed) > _FORGET_AFTER:
            self._failed.popitem(last=False)

    def failed_last(self, origin: str, key: str) -> bool:
        return self._failed.get(origin) == key

    def put_back(self, origin: str, previous: KeyRecord | None) -> None:
        """Undo ``remember`` (a look that served nothing must not hide why the run misses)."""
        if previous is None:
            self._last.pop(origin, None)
        else:
            self._last[origin] = previous


def describe_miss(previous: KeyRecord | None, current: KeyRecord, removed_because: str | None) -> str:
    """Why ``current`` has to be computed, given the ``previous`` key of the same origin."""
    if previous is None:
        return "first run"
    if previous.key == current.key:
        return {
            "expired": "expired (TTL)",
            "evicted": "evicted (least recently used, over the memory budget or max entries)",
            "cleared": "the cache was cleared",
            "deleted": "the entry was deleted",
            "invalid": "the cached value was invalid (validate said no, or it no longer loads)",
            "replaced": "refreshed",
            "failed": "the last run did not finish (it raised or was interrupted)",
            None: "not in the cache",
        }.get(removed_because, removed_because or "not in the cache")
    reasons: list[str] = []
    if previous.code != current.code:
        reasons.append("cell code changed")
    if previous.options != current.options:
        reasons.append("options changed")
    changed = [n for n, d in current.inputs.items() if n in previous.inputs and previous.inputs[n] != d]
    new = [n for n in current.inputs if n not in previous.inputs]
    gone = [n for n in previous.inputs if n not in current.inputs]
    if changed:
        reasons.append(_names(changed) + " changed")
    if new and not reasons:
        reasons.append("new input " + _names(new))
    if gone and not reasons:
        reasons.append("no longer reads " + _names(gone))
    return "; ".join(reasons) or "inputs changed"


def _names(names: list[str]) -> str:
    shown = ", ".join(f"`{n}`" for n in names[:5])
    return shown + (f" and {len(names) - 5} more" if len(names) > 5 else "")
