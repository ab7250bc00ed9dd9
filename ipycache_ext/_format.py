"""Human-readable sizes and durations for `%cache_info`, hit lines and the panel."""

from __future__ import annotations

from collections.abc import Callable


def format_duration(seconds: float) -> str:
    """Short human form of a duration: ``'40ms'``, ``'3.2s'``, ``'42s'``, ``'3m 05s'``, ``'2h 10m'``.

    Days as ``'3d 4h'``. One form everywhere: the panel, ``%cache_info``, the hit line and the cell status.
    """
    seconds = max(0.0, seconds)
    if seconds < 0.1:  # "computed in 0.0s" would read as if nothing ran
        return f"{round(seconds * 1000)}ms"
    if seconds < 10:
        return f"{seconds:.1f}s"
    whole = int(seconds)
    if whole < 60:
        return f"{whole}s"
    minutes, secs = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes}m {secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h {minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d {hours}h"


def format_size(size: int | None) -> str:
    """Bytes in binary units: ``'512 B'``, ``'1.5 KiB'``, ``'2.0 GiB'``; ``'?'`` when unknown."""
    if size is None:
        return "?"
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


# ---------------------------------------------------------------------------- one vocabulary
# The panel, `%cache_info`, the cell status and the hit line all describe entries with these
# words, so what a user reads in one place means the same in the others.


def plural(count: int, singular: str, many: str | None = None) -> str:
    """``'1 entry'``, ``'3 entries'``, ``'0 hits'``."""
    word = singular if count == 1 else (many if many is not None else singular + "s")
    return f"{count} {word}"


def format_clock(when: float, now: float) -> str:
    """The time of day an entry was computed: ``'14:02'`` today, ``'Nov 30 14:02'`` otherwise."""
    import time

    moment, today = time.localtime(when), time.localtime(now)
    return time.strftime("%H:%M" if moment[:3] == today[:3] else "%b %d %H:%M", moment)


def size_text(kind: str, size: int | None) -> str:
    """A data entry's size; a resource without a measured size is ``'shared'`` (kept as is, not copied)."""
    if size is None and kind == "resource":
        return "shared"
    return format_size(size)


def ttl_text(ttl_left: float | None) -> str:
    """The TTL column: ``'59m 12s'``, or ``'no expiry'``."""
    return "no expiry" if ttl_left is None else format_duration(ttl_left)


def where_text(persisted: bool, shared: bool) -> str:
    """Where an entry lives: ``'memory'``, ``'memory + disk'``, ``'memory + disk + team'``."""
    return "memory" + (" + disk" if persisted or shared else "") + (" + team" if shared else "")


def kind_text(kind: str, persisted: bool, shared: bool) -> str:
    """The kind column: ``'data'``, ``'data · disk'``, ``'data · team'``, ``'resource'``."""
    return kind + (" · team" if shared else " · disk" if persisted else "")


def names_text(names: tuple[str, ...] | list[str]) -> str:
    """The names column; an entry of a decorated function binds no names: it has a return value."""
    return ", ".join(names) if names else "return value"


REMOVED = {
    "expired": "expired",
    "evicted": "evicted (memory budget or max entries)",
    "deleted": "deleted",
    "cleared": "cleared",
    "invalid": "dropped (no longer valid)",
    "replaced": "replaced",
    "closed": "gone (the store was closed)",
}


def removed_text(reason: str | None) -> str:
    """Why an entry is no longer cached, in the words of the store's removal reasons."""
    if reason is None:
        return "no longer cached"
    return REMOVED.get(reason, reason)


def shown_names(names: tuple[str, ...], is_module: Callable[[str], bool] | None = None) -> tuple[str, ...]:
    """The names worth showing: those the cell *made*, not the modules it imported (``np``, ``time``).

    ``is_module(name)`` answers from the user's namespace (the front end knows it); without
    it every name is shown. If every name is a module, they are all shown, so a cell that
    only imports still says what it binds.
    """
    if is_module is None:
        return names
    kept = tuple(name for name in names if not is_module(name))
    return kept or names


def cell_label(cell: str, execution_count: int | None = None, width: int = 60) -> str:
    """An entry label for a cell: ``'[12] df = load(path)'``.

    The first *meaningful* line: blank lines, comments, ``import``/``from ... import`` lines
    and IPython ``%``/``!`` lines are skipped (every cell starts with ``import time`` and
    two rows reading ``import time`` can't be told apart). A cell of imports only is
    labelled by its first import. The execution number, when known, tells apart two
    entries of the same cell and points at it in the notebook.
    """
    lines = [line.strip() for line in cell.splitlines()]
    code = [line for line in lines if line and not line.startswith("#")]
    meaningful = [
        line for line in code if not line.startswith(("import ", "from ", "%", "!")) and line != "pass"
    ]
    text = (meaningful or code or ["(empty cell)"])[0]
    if len(text) > width:
        text = text[: width - 1] + "…"
    return text if execution_count is None else f"[{execution_count}] {text}"


def unnumbered(label: str) -> str:
    """A cell label without its execution number: ``'[12] df = load()'`` -> ``'df = load()'``.

    ``%cache_clear LABEL`` matches either form: the number changes with every run.
    """
    if label.startswith("["):
        number, _, rest = label[1:].partition("] ")
        if number.isdigit() and rest:
            return rest
    return label
