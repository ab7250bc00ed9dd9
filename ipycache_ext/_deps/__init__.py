"""Dynamic dependencies: what a computation read while it ran, checked cheaply on every hit.

The key of an entry sees the values a computation is given; this package sees what it
reads on its own: files (Python opens through an audit hook, native readers through
wrappers), directory listings and globs, ``os.environ`` lookups, the global random
generators, and — for code that reads variables by name at run time — the namespace.
No IPython here: the engine wraps each computation in ``recording()``, stores
``dependencies()`` with the entry, asks ``first_change()`` before serving a hit and calls
``replay_effects()`` after. Our own code that runs inside a computation (a snapshot taken
for replaying its effects, say) wraps itself in ``not_recorded()`` so its reads are not the
computation's.
"""

from __future__ import annotations

from ._dynamic import dynamic_reads
from ._lazy import files_in, files_of
from ._recording import Recording, recording
from ._records import first_change, note, replay_effects
from ._state import suspended as not_recorded

__all__ = [
    "Recording", "dynamic_reads", "files_in", "files_of", "first_change", "not_recorded", "note",
    "recording", "replay_effects",
]  # fmt: skip
