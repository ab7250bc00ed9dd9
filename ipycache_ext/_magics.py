"""The IPython front end: ``%%cache_data``, ``%%cache_resource``, ``%cache_info``, ``%cache_clear``.

This is the only module that imports IPython. It parses arguments, turns a cell into a key
(analysis + hashing), and asks the kernel-wide store for the entry; the store decides
whether the cell runs. Settings are traitlets, so they work from ``ipython_config.py``
(``c.CacheMagics.memory_budget = 8_000_000_000``) and from ``%config``.
"""

from __future__ import annotations

import copy
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell
from IPython.core.magic import Magics, cell_magic, line_magic, magics_class, no_var_expand
from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring
from IPython.utils.process import arg_split  # type: ignore[attr-defined]  # what parse_argstring splits with
from traitlets import Bool, Float, Int, List, TraitError, Unicode, Union, observe, validate

from ._cached_function import CachedFunction
from ._cellrun import UserCodeError
from ._cells import CachedCells, CellOptions, parse_options
from ._engine import Outcome, engine_for
from ._errors import CacheError
from ._format import unnumbered
from ._persist import DEFAULT_DISK_BUDGET, configure, open_if_present
from ._report import DEFAULT_LIMIT, module_test, render_info
from ._report import PREFIX as _PREFIX
from ._store import (
    CacheStore,
    Kind,
    checked_max_entries,
    checked_memory_budget,
    default_memory_budget,
    get_store,
)
from ._team import team_settings
from ._ttl import parse_ttl


def _common_arguments(func: Callable[..., Any]) -> Callable[..., Any]:
    for decorate in reversed(
        [
            argument(
                "--ttl", metavar="TTL", help="expire after TTL: seconds (3600) or '90s', '10m', '1h', '1d'"
            ),
            argument(
                "--max-entries", type=int, metavar="N", help="keep at most N entries of this cell (LRU)"
            ),
            argument(
                "--ignore",
                action="append",
                default=[],
                metavar="NAME",
                help="leave input NAME out of the key (repeatable)",
            ),
            argument(
                "--depends-on",
                action="append",
                default=[],
                metavar="PATH_OR_GLOB",
                help="a file (or glob) the result depends on that can't be seen being read, e.g. one a "
                "subprocess reads; its content is part of the entry's validity (repeatable)",
            ),
            argument("--refresh", action="store_true", help="recompute now and replace the entry"),
            argument("--quiet", action="store_true", help="no line on a cache hit"),
            argument(
                "names",
                nargs="*",
                metavar="NAME",
                help="the variables that make the result (default: every name the cell binds)",
            ),
        ]
    ):
        func = decorate(func)
    return func


@magics_class
class CacheMagics(Magics):
    """Cell magics that cache a cell's results by its code and the values it reads."""

    default_ttl = Union(
        [Float(), Unicode()],
        default_value=None,
        allow_none=True,
        config=True,
        help="TTL used when a cell gives no --ttl: seconds or a duration like '1h' (None: no expiry).",
    )
    memory_budget = Int(
        None,
        allow_none=True,
        config=True,
        help="Bytes that cached data may hold in all; least recently used entries are evicted "
        "beyond it (None: a quarter of physical memory).",
    )
    max_entries = Int(
        None,
        allow_none=True,
        config=True,
        help="At most this many entries in the whole store (None: no limit).",
    )
    show_hit_line = Bool(True, config=True, help="Print one line when a cell is served from the cache.")
    show_status = Bool(
        True,
        config=True,
        help="Show a status under each cached cell in a notebook (from cache / computed, TTL, Recompute).",
    )
    cache_dir = Unicode(
        None,
        allow_none=True,
        config=True,
        help="Directory of persisted entries (None: $IPYCACHE_EXT_CACHE_DIR, else ~/.cache/ipycache_ext).",
    )
    disk_budget = Int(
        DEFAULT_DISK_BUDGET,
        config=True,
        help="Bytes that persisted entries may take on disk; least recently used go first.",
    )
    team_store = Unicode(
        None,
        allow_none=True,
        config=True,
        help="The team store (redis://host:6379/0 or file:///srv/team-cache); None: "
        "$IPYCACHE_EXT_TEAM_STORE, else no team tier. Set in ipython_config.py, never from a notebook.",
    )
    team_namespace = Unicode(
        None,
        allow_none=True,
        config=True,
        help="The team's (or project's) namespace in the team store; None: $IPYCACHE_EXT_TEAM_NAMESPACE "
        "or 'default'.",
    )
    team_trusted_keys = List(
        Unicode(),
        default_value=None,
        allow_none=True,
        config=True,
        help="Public keys ('[name] ed25519:...') or files of them whose entries are trusted; None: "
        "$IPYCACHE_EXT_TEAM_TRUSTED_KEYS. Set in ipython_config.py, never from a notebook.",
    )

    def __init__(self, shell: InteractiveShell, store: CacheStore | None = None) -> None:
        # Before super().__init__: loading config there already calls the observers below.
        self.store = get_store() if store is None else store
        self._shell = shell  # typed, never None (Magics.shell may be None)
        self._cell_id: str | None = None
        self._parsed: dict[tuple[str, str, Any], CellOptions] = {}
        self._cells = CachedCells(shell, engine_for(self.store))
        self._team_fixed = False
        self._settled = False  # True once loaded: a refused setting then keeps the value it had
        self._kept: dict[str, Any] = {}  # the last value each checked setting took (for messages)
        super().__init__(shell=shell, parent=shell)
        self._apply_store_settings()
        self._configure_disk()
        self._team_fixed = True  # from now on (a notebook cell), the team settings can't change
        self._settled = True

    # ---------------------------------------------------------------- settings
    # A bad value is refused by its validator (TraitError) before it is set, so the trait
    # and the store keep what they had; %config logs the message. Each observer then
    # applies only its own trait: one bad or unrelated setting never blocks another.
    @validate("memory_budget")
    def _check_memory_budget(self, proposal: Any) -> int | None:
        value = proposal["value"]
        try:  # the store's own check (None here: a quarter of RAM)
            return None if value is None else checked_memory_budget(value)
        except (TypeError, ValueError):
            accepted = "a positive number of bytes, or None for a quarter of RAM"
            raise self._refusal("memory_budget", value, accepted) from None

    @validate("max_entries")
    def _check_max_entries(self, proposal: Any) -> int | None:
        try:
            return checked_max_entries(proposal["value"])
        except (TypeError, ValueError):
            accepted = "a positive number of entries, or None for no limit"
            raise self._refusal("max_entries", proposal["value"], accepted) from None

    @validate("disk_budget")
    def _check_disk_budget(self, proposal: Any) -> int:
        value = proposal["value"]
        if isinstance(value, bool) or value <= 0:
            raise self._refusal("disk_budget", value, "a positive number of bytes")
        return value  # type: ignore[no-any-return]

    @validate("default_ttl")
    def _check_default_ttl(self, proposal: Any) -> Any:
        """Parsed here with the cells' own parser: a bad default must fail where it is set,
        not later in every cell without --ttl (which would blame an option never given)."""
        value = proposal["value"]
        try:
            parse_ttl(value)
        except ValueError:
            accepted = (
                "a positive number of seconds (3600), a duration such as '90s', '10m', '1h', '1d' "
                "or '1 hour 30 min', or None for no expiry"
            )
            raise self._refusal("default_ttl", value, accepted) from None
        return value

    def _refusal(self, name: str, value: Any, accepted: str) -> TraitError:
        """The message names the setting, the value, what is accepted and what happens now."""
        if getattr(self, "_settled", False):
            # Not getattr(self, name): under %config the bad value is already in place while
            # traitlets cross-validates it, and is rolled back when this error is raised.
            kept = self._kept[name] if name in self._kept else self.trait_defaults(name)
            now = f"CacheMagics.{name} stays {kept!r}"
        else:  # from ipython_config.py, while the extension loads
            now = "the extension is not loaded; fix the configuration (ipython_config.py) and load it again"
        return TraitError(f"CacheMagics.{name} = {value!r} refused: give {accepted}; {now}")

    @observe("memory_budget", "max_entries", "disk_budget", "default_ttl")
    def _keep(self, change: Any) -> None:
        self._kept[change["name"]] = change["new"]

    @observe("memory_budget")
    def _memory_budget_changed(self, change: Any) -> None:
        new = change["new"]
        self.store.memory_budget = default_memory_budget() if new is None else new

    @observe("max_entries")
    def _max_entries_changed(self, change: Any) -> None:
        self.store.max_entries = change["new"]

    def _apply_store_settings(self) -> None:
        """At load: the configured limits (an unset budget keeps the store's own)."""
        if self.memory_budget is not None:
            self.store.memory_budget = self.memory_budget
        self.store.max_entries = self.max_entries

    def close(self) -> None:
        """The extension is being unloaded (the store and its engine stay, entries too).

        The shell's configuration gets back our section as we accepted it. ``%config`` gives
        every line to the shell too, which keeps it even when we refused it; left there, a
        refused value would be loaded by the next ``%reload_ext`` (a refused team store
        included: the very redirect its refusal is for).
        """
        accepted = self.config.get("CacheMagics")
        if accepted is None:
            self._shell.config.pop("CacheMagics", None)
        else:
            self._shell.config["CacheMagics"] = copy.deepcopy(accepted)

    @observe("cache_dir", "disk_budget")
    def _disk_settings_changed(self, change: Any) -> None:
        self._configure_disk()

    @observe("team_store", "team_namespace", "team_trusted_keys")
    def _team_settings_changed(self, change: Any) -> None:
        """Refused once the extension is loaded: a notebook must not redirect the team store or
        add a trusted signer (opening someone's notebook would then trust their pickles)."""
        if not self._team_fixed:
            return
        self._team_fixed = False
        try:
            self.set_trait(change["name"], change["old"])
        finally:
            self._team_fixed = True
        message = (
            f"CacheMagics.{change['name']} can't be changed from a notebook: set it in ipython_config.py "
            "(c.CacheMagics.team_store = ...) or in the environment (IPYCACHE_EXT_TEAM_*) and restart "
            "the kernel"
        )
        print(f"{_PREFIX} {message}", file=sys.stderr)  # %config only logs what its target raises
        raise UsageError(message)

    def _configure_disk(self) -> None:
        """The store keeps these, so decorators persist to the same place as cells."""
        directory = Path(self.cache_dir).expanduser() if self.cache_dir else None
        team = None
        if self.team_store or self.team_namespace or self.team_trusted_keys:
            team = team_settings(self.team_store, self.team_namespace, self.team_trusted_keys)
        configure(self.store, directory, self.disk_budget, team=team)

    def pre_run_cell(self, info: Any) -> None:
        """Remember the running cell's id (Jupyter sends one) so misses can be explained per cell."""
        self._cell_id = getattr(info, "cell_id", None)

    # ---------------------------------------------------------------- cell magics
    @magic_arguments()
    @argument(
        "--persist",
        action="store_true",
        help="also keep the entry on disk: found again after a kernel restart (signed, TTL kept)",
    )
    @argument(
        "--share",
        action="store_true",
        help="also keep the entry in the team store (CacheMagics.team_store), signed by you",
    )
    @_common_arguments
    @no_var_expand
    @cell_magic
    def cache_data(self, line: str, cell: str) -> Any:
        """Run the cell once per distinct inputs; every hit binds fresh copies of its results.

        The key is the cell's code plus the values of the variables it reads. The results
        (the names it binds, its output and its last value) are pickled with cloudpickle,
        so mutating them later never changes the cache.
        """
        __tracebackhide__ = True
        return self._run_magic("data", line, cell)

    @magic_arguments()
    @argument("--persist", action="store_true", help="not possible: resources are not serialized")
    @argument(
        "--validate",
        metavar="EXPR",
        help="checked on every hit with the cached names bound; falsy or raising recomputes",
    )
    @_common_arguments
    @no_var_expand
    @cell_magic
    def cache_resource(self, line: str, cell: str) -> Any:
        """Run the cell once per distinct inputs; every hit binds the very same objects.

        For things that can't or shouldn't be copied: database connections, models, clients.
        """
        __tracebackhide__ = True
        return self._run_magic("resource", line, cell)

    # ---------------------------------------------------------------- line magics
    @magic_arguments()
    @argument("--data", action="store_true", help="clear only cache_data entries")
    @argument("--resource", action="store_true", help="clear only cache_resource entries")
    @argument(
        "target",
        nargs="*",
        metavar="KEY_OR_LABEL",
        help="a key (or its first characters, as %%cache_info shows) or a label",
    )
    @line_magic
    def cache_clear(self, line: str) -> None:
        """Drop cached entries: all, one kind, or the ones matching a key or label."""
        args = _parse(self.cache_clear, line)
        if args.data and args.resource:
            args.data = args.resource = False
        kind: Kind | None = "data" if args.data else "resource" if args.resource else None
        if not args.target:
            if kind != "resource":
                open_if_present(self.store)  # after a restart: persisted entries go too
            cleared = self.store.clear(kind)
            count, on_disk = int(cleared), getattr(cleared, "in_tiers", 0)
        else:
            keys = self._match(" ".join(args.target), kind)
            count, on_disk = self.store.delete_where(lambda e: e.key in keys, "cleared"), 0
        where = f" ({on_disk} of them persisted, not loaded in this kernel)" if on_disk else ""
        print(f"{_PREFIX} cleared {count} entr{'y' if count == 1 else 'ies'}{where}")

    @magic_arguments()
    @argument("--explain", action="store_true", help="show why each entry was computed")
    @argument("--all", action="store_true", help="list every entry (by default the first 50)")
    @line_magic
    def cache_info(self, line: str) -> None:
        """A table of the cached entries: label, kind, names, size, age, TTL left, hits."""
        args = _parse(self.cache_info, line)
        limit = None if args.all else DEFAULT_LIMIT
        print(render_info(self.store, explain=args.explain, limit=limit, is_module=self._is_module))

    @line_magic
    def cache_panel(self, line: str) -> Any:
        """Show the live cache panel (in a terminal, which has no widgets: the %cache_info table)."""
        if getattr(self._shell, "kernel", None) is None:
            print(render_info(self.store, is_module=self._is_module))
            return None
        from ._panel import CachePanel

        return CachePanel(self.store)

    # ---------------------------------------------------------------- the work
    def _run_magic(self, kind: Kind, line: str, cell: str) -> Any:
        """Run a cached cell; errors come out as the user's own traceback or one line."""
        __tracebackhide__ = True
        try:
            options = self._options(kind, line)
            prepared = self._cells.prepare(kind, line, cell, options)
            outcome = self._cells.run(kind, prepared, options, self._cell_id, self.show_hit_line)
        except UserCodeError as failure:
            error: BaseException = failure.error.with_traceback(failure.user_traceback())
        except CacheError as exc:
            error = UsageError(str(exc))
            error.__cause__ = exc
        else:
            self._publish_status(kind, line, cell, outcome)
            return None if prepared.quiet else outcome.value.value
        raise error  # outside the except blocks: no "during handling..." chain of ours

    def _options(self, kind: Kind, line: str) -> CellOptions:
        """The magic line parsed and checked, once per distinct line (argparse costs ~100 µs,
        a third of a small cell's hit); the default TTL is part of what it depends on."""
        memo = (kind, line, self.default_ttl)
        options = self._parsed.get(memo)
        if options is None:
            magic = self.cache_data if kind == "data" else self.cache_resource
            options = parse_options(_parse(magic, line), kind, self._ttl, _words(line))
            if len(self._parsed) >= 256:
                self._parsed.clear()
            self._parsed[memo] = options
        return options

    def _publish_status(self, kind: Kind, line: str, cell: str, outcome: Outcome) -> None:
        """The cell's status line under its output (notebooks only; never recorded in the entry)."""
        if not self.show_status or getattr(self._shell, "kernel", None) is None:
            return
        try:
            from ._status import publish_status
        except ImportError:  # the status is optional: a terminal shell has no widgets
            return

        def recompute() -> Any:
            magic = "cache_data" if kind == "data" else "cache_resource"
            return self._shell.run_cell_magic(magic, f"--refresh {line}", cell)

        entry = outcome.entry
        publish_status(
            self._shell, self.store, outcome.key, hit=outcome.hit, entry=entry,
            compute_seconds=entry.compute_seconds if entry is not None else outcome.seconds,
            recompute=recompute,
        )  # fmt: skip

    @property
    def _is_module(self) -> Callable[[str], bool]:
        return module_test(self._shell.user_ns)

    def _ttl(self, text: str | None) -> float | None:
        value = text if text is not None else self.default_ttl
        try:
            return parse_ttl(value)
        except ValueError as exc:
            raise CacheError(f"--ttl: {exc}") from None

    def _match(self, target: str, kind: Kind | None) -> set[str]:
        entries = [e for e in self.store.entries() if kind in (None, e.kind)]
        exact = {e.key for e in entries if target in (e.key, e.label, unnumbered(e.label))}
        if exact:
            return exact
        prefixed = {e.key for e in entries if len(target) >= 4 and e.key.startswith(target)}
        if not prefixed:
            named = self._shell.user_ns.get(target)
            if isinstance(named, CachedFunction):  # %cache_clear fetch, for @cache_data def fetch
                raise UsageError(f"{target} is a cached function: {target}.clear() clears its entries")
            raise UsageError(f"no cache entry has the key or label {target!r}; %cache_info lists them")
        return prefixed


# -------------------------------------------------------------------- helpers
def _words(line: str) -> list[str]:
    """The magic line split into words as ``_parse`` splits it (empty if its quotes don't close)."""
    try:
        return [_unquote(word) for word in arg_split(line)]
    except ValueError:
        return []


def _parse(magic: Callable[..., Any], line: str) -> Any:
    """Parse a magic line; quotes group words and are removed, as in a shell.

    IPython's splitter keeps the quotes (``--ttl "1 hour"`` would arrive as ``'"1 hour"'``)
    and raises ValueError on an unclosed one; both are mended here.
    """
    try:
        args = parse_argstring(magic, line)
    except ValueError as exc:
        raise UsageError(f"cannot parse {line.strip()!r}: {exc} (check the quotes)") from None
    for name, value in vars(args).items():
        if isinstance(value, str):
            setattr(args, name, _unquote(value))
        elif isinstance(value, list):
            setattr(args, name, [_unquote(v) if isinstance(v, str) else v for v in value])
    return args


def _unquote(text: str) -> str:
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1]
    return text
