"""When a file's stat may stand for its content.

Checking a file by its stat (size, ``mtime_ns``, ``ctime_ns``) instead of reading it again
is sound only if every later change to the file moves that stat. Filesystems stamp times
from a clock that ticks every few milliseconds (Linux before 6.13), or from a file server's
clock, so a same-size rewrite within one tick of a read leaves the stat as it was. A stat is
therefore trusted for a digest only once it is *settled*: its change time (``mtime_ns``
where there is none) lies more than ``SETTLE_NS`` before the read began, so any change
made after the read began carries a later time.
"""

from __future__ import annotations

# Two seconds covers a coarse kernel clock's tick, FAT's two-second mtime and a modest skew
# between this machine and a file server. The price: a file changed less than that before
# it was read is read once more, on its first check in a session.
SETTLE_NS = 2_000_000_000


def settled(mtime_ns: int, ctime_ns: int, *, read_from_ns: int) -> bool:
    """Whether any change to the file after ``read_from_ns`` (``time.time_ns()``) would move
    its stat. ``ctime_ns`` is 0 where there is no change time (then ``mtime_ns``, which a
    program can set back, is all there is)."""
    return (ctime_ns or mtime_ns) < read_from_ns - SETTLE_NS
