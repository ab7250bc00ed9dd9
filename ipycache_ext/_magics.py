"""The IPython front end: ``%%cache_data``, ``%%cache_resource``, ``%cache_info``, ``%cache_clear``.

This is the only module that imports IPython. It parses arguments, turns a cell into a key
(analysis + hashing), and asks the kernel-wide store for the entry; the store decides
whether the cell runs. Settings are traitlets, so they work from ``ipython_config.py``
(``c.CacheMagics.memory_budget = 8_000_000_000``) and from ``%config``.
"""

from __future__ import annotations

import ast
import builtins
import keyword
import sys
import threading
import types
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell
from IPython.core.magic import Magics, cell_magic, line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring
from traitlets import Bool, Float, Int, Unicode, Union, observe

from ._analysis import CellAnalysis, analyze_tree
from ._capture import CellResult, OutputRecorder, replay
from ._errors import CacheError, UnhashableInputError, UnserializableResultError
from ._explain import KeyRecord, MissExplainer, describe_miss
from ._hashing import MISSING, Unhashable, combine, digest
from ._persist import DEFAULT_DISK_BUDGET, configure, ensure_persistence, open_if_present
from ._report import PREFIX as _PREFIX
from ._report import hit_line as _hit_line
from ._report import render_info
from ._serialize import SerializedValue, serialize
from ._store import CacheStore, Kind, Lookup, StoreEvent, get_store
from ._ttl import parse_ttl

# Inputs of these types can't be changed in place, so a miss need not re-hash them.
_IMMUTABLE = (int, float, complex, str, bytes, bool, type(None), frozenset, type)


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

    def __init__(self, shell: InteractiveShell, store: CacheStore | None = None) -> None:
        # Before super().__init__: loading config there already calls the observers below.
        self.store = get_store() if store is None else store
        self._shell = shell  # typed, never None (Magics.shell may be None)
        self._explainer = MissExplainer()
        self._cell_id: str | None = None
        self._prepared: OrderedDict[tuple[str, str, str], _PreparedCell] = OrderedDict()
        self._resources = _ResourceIndex()
        self._unsubscribe = self.store.subscribe(self._resources.on_event)
        super().__init__(shell=shell, parent=shell)
        self._apply_store_settings()
        self._configure_disk()

    # ---------------------------------------------------------------- settings
    @observe("memory_budget", "max_entries")
    def _settings_changed(self, change: Any) -> None:
        self._apply_store_settings()

    def _apply_store_settings(self) -> None:
        if self.memory_budget is not None:
            if self.memory_budget <= 0:
                raise UsageError(
                    f"CacheMagics.memory_budget must be a positive number of bytes, not {self.memory_budget}"
                )
            self.store.memory_budget = self.memory_budget
        if self.max_entries is not None and self.max_entries <= 0:
            raise UsageError(f"CacheMagics.max_entries must be positive or None, not {self.max_entries}")
        self.store.max_entries = self.max_entries

    def close(self) -> None:
        """Stop listening to the store (the extension is being unloaded)."""
        self._unsubscribe()

    def _persistence(self) -> bool:
        """Open the disk cache on first need (creates the directory and the signing key)."""
        return ensure_persistence(self.store)

    @observe("cache_dir", "disk_budget")
    def _disk_settings_changed(self, change: Any) -> None:
        self._configure_disk()

    def _configure_disk(self) -> None:
        """The store keeps these, so decorators persist to the same place as cells."""
        directory = Path(self.cache_dir).expanduser() if self.cache_dir else None
        configure(self.store, directory, self.disk_budget)

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
    @_common_arguments
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
            count = self.store.clear(kind)
        else:
            keys = self._match(" ".join(args.target), kind)
            count = self.store.delete_where(lambda e: e.key in keys, "cleared")
        print(f"{_PREFIX} cleared {count} entr{'y' if count == 1 else 'ies'}")

    @magic_arguments()
    @argument("--explain", action="store_true", help="show why each entry was computed")
    @line_magic
    def cache_info(self, line: str) -> None:
        """A table of the cached entries: label, kind, names, size, age, TTL left, hits."""
        args = _parse(self.cache_info, line)
        print(render_info(self.store, explain=args.explain))

    @line_magic
    def cache_panel(self, line: str) -> Any:
        """Show the live cache panel (in a terminal, which has no widgets: the %cache_info table)."""
        if getattr(self._shell, "kernel", None) is None:
            print(render_info(self.store))
            return None
        from ._panel import CachePanel

        return CachePanel(self.store)

    # ---------------------------------------------------------------- the work
    def _run_magic(self, kind: Kind, line: str, cell: str) -> Any:
        """Run a cached cell; errors come out as the user's own traceback or one line."""
        __tracebackhide__ = True
        try:
            return self._run_cell(kind, self._prepare(kind, line, cell), cell)
        except _UserCodeError as failure:
            error: BaseException = failure.error.with_traceback(failure.user_traceback())
        except CacheError as exc:
            error = UsageError(str(exc))
            error.__cause__ = exc
        raise error  # outside the except blocks: no "during handling..." chain of ours

    def _prepare(self, kind: Kind, line: str, cell: str) -> _PreparedCell:
        """Parse the magic line and analyze the cell, once per distinct text.

        A hit should cost little more than hashing the inputs, and tokenizing, parsing and
        analyzing the same text again is most of the rest, so the result is remembered.
        """
        memo_key = (kind, line, cell)
        prepared = self._prepared.get(memo_key)
        if prepared is not None:
            self._prepared.move_to_end(memo_key)
            return prepared
        magic = self.cache_data if kind == "data" else self.cache_resource
        args = _parse(magic, line)
        if args.max_entries is not None and args.max_entries <= 0:
            raise UsageError(f"--max-entries must be a positive integer, not {args.max_entries}")
        names = tuple(_check_names(args.names, "NAME"))
        ignore = frozenset(_check_names(args.ignore, "--ignore"))
        self._ttl(args.ttl)  # a bad TTL fails now, before anything runs
        source = self._shell.transform_cell(cell)
        tree = self._shell.transform_ast(self._shell.compile.ast_parse(source))
        if _has_top_level_await(tree):
            raise UsageError(
                "top-level await can't be cached in a cell: put it in an async function and "
                "cache that with @ipycache_ext.cache_data"
            )
        if kind == "resource" and args.persist:
            raise UsageError(
                "%%cache_resource can't --persist: resources are kept as they are, not serialized. "
                "Persist the data they produce with %%cache_data --persist instead."
            )
        validate = self._validator(args.validate) if kind == "resource" and args.validate else None
        prepared = _PreparedCell(
            args=args,
            names=names,
            ignore=ignore,
            source=source,
            analysis=analyze_tree(tree),
            label=_label(cell),
            options=combine([("names", "\x00".join(names))]),
            validate=validate,
        )
        self._prepared[memo_key] = prepared
        while len(self._prepared) > _PREPARED_MEMORY:
            self._prepared.popitem(last=False)
        return prepared

    def _run_cell(self, kind: Kind, prepared: _PreparedCell, cell: str) -> Any:
        __tracebackhide__ = True
        args, names, ignore, analysis = prepared.args, prepared.names, prepared.ignore, prepared.analysis
        ttl = self._ttl(args.ttl)
        options, label, source = prepared.options, prepared.label, prepared.source
        inputs = self._input_values(analysis, ignore)
        digests = self._digests(inputs)
        key = combine(
            [
                ("kind", kind),
                ("code", analysis.code_digest),
                ("options", options),
                *((f"input:{n}", digests[n]) for n in sorted(digests)),
            ]
        )
        record = KeyRecord(key, analysis.code_digest, digests, options)
        previous = self._explainer.remember(self._cell_id or label, record)
        reasons: list[str] = []

        def explain() -> None:
            """On a miss only (a hit pays nothing): say why, before the cell runs."""
            if args.refresh:
                reasons.append("refresh requested")
                return
            removed = self.store.removal_reason(previous.key) if previous else None
            reasons.append(describe_miss(previous, record, removed))
            if previous is not None and not args.quiet:
                print(f"{_PREFIX} recomputing: {reasons[-1]}")

        produced: list[CellResult] = []
        outputs = tuple(names) or analysis.outputs

        def create() -> tuple[Any, int | None]:
            __tracebackhide__ = True
            explain()
            tree = self._shell.transform_ast(
                self._shell.compile.ast_parse(source)
            )  # fresh: _execute edits it
            result = self._execute(
                tree=tree,
                source=source,
                outputs=outputs,
                definite=analysis.definite,
                explicit=bool(names),
                inputs=inputs,
                digests=digests,
            )
            produced.append(result)
            if kind == "resource":
                return result, None
            payload = _serialize_result(result)
            return payload, payload.nbytes

        validate = prepared.validate
        group = combine([("kind", kind), ("code", analysis.code_digest), ("options", options)])
        lookup = self.store.get_or_create(
            key,
            create,
            kind=kind,
            label=label,
            names=outputs,
            group=group,
            ttl=ttl,
            max_entries=args.max_entries,
            validate=validate,
            refresh=args.refresh,
            miss_reason=lambda: reasons[-1] if reasons else None,
            inputs=digests,
            persist=kind == "data" and args.persist and self._persistence(),
        )
        if kind == "resource" and lookup.entry is not None:
            self._resources.add(key, lookup.value.bindings)
        if produced:  # this call ran the cell: the namespace already holds its results
            return produced[0].value
        try:
            result: CellResult = lookup.value.load() if kind == "data" else lookup.value
        except Exception as exc:  # stored, but no longer loads (a class it needs moved, say)
            self.store.delete_where(lambda e: e.key == key, "invalid")  # from disk too
            print(
                f"{_PREFIX} the cached result could not be loaded ({type(exc).__name__}: {exc}): "
                "dropped, running the cell again"
            )
            return self._run_cell(kind, prepared, cell)
        return self._serve(result, lookup, quiet=args.quiet)

    def _serve(self, result: CellResult, lookup: Lookup, *, quiet: bool) -> Any:
        namespace = self._shell.user_ns
        namespace.update(result.bindings)
        for name in result.deleted:
            namespace.pop(name, None)
        if self.show_hit_line and not quiet and lookup.entry is not None:
            print(_hit_line(lookup.entry))
        replay(result.outputs, self.shell)
        return result.value

    def _execute(
        self,
        *,
        tree: ast.Module,
        source: str,
        outputs: tuple[str, ...],
        definite: frozenset[str],
        explicit: bool,
        inputs: Mapping[str, Any],
        digests: Mapping[str, str],
    ) -> CellResult:
        """Run the cell in the user namespace, live, recording its output and its bindings."""
        __tracebackhide__ = True
        namespace = self._shell.user_ns
        before = {name: namespace.get(name, MISSING) for name in outputs}
        # One line up, so line numbers in tracebacks match the cell (its first line is %%magic).
        ast.increment_lineno(tree, 1)
        filename = self._shell.compile.cache("\n" + source, self._shell.execution_count)
        last: ast.expr | None = None
        body = list(tree.body)
        if body and isinstance(body[-1], ast.Expr):
            last = body.pop().value  # type: ignore[attr-defined]
        value = None
        with OutputRecorder(self.shell) as recorder:
            try:
                exec(self._shell.compile(ast.Module(body, type_ignores=[]), filename, "exec"), namespace)  # type: ignore[arg-type]
                if last is not None:
                    value = eval(self._shell.compile(ast.Expression(last), filename, "eval"), namespace)  # type: ignore[arg-type]
            except BaseException as exc:  # the user's error, even KeyboardInterrupt: pass it on
                raise _UserCodeError(exc, filename) from None
            _flush_inline_figures()
        if explicit:
            missing = [n for n in outputs if n not in namespace]
            if missing:
                raise UsageError(
                    f"the cell did not define {', '.join(missing)}: list only names it assigns "
                    "(nothing was cached)"
                )
            bindings = {n: namespace[n] for n in outputs}
        else:  # bound on every path: kept even when rebound to the same object (k = 5 when k was 5)
            bindings = {
                n: namespace[n]
                for n in outputs
                if n in namespace and (n in definite or namespace[n] is not before[n])
            }
        deleted = tuple(n for n in outputs if before.get(n, MISSING) is not MISSING and n not in namespace)
        # Inputs the cell changed in place (df["new"] = ...) are part of its result too.
        for name in inputs:
            current = namespace.get(name, MISSING)
            if name in bindings or current is MISSING or isinstance(current, _IMMUTABLE):
                continue
            if self._resources.identity(current) is not None:
                continue  # a shared resource: its state is not the cell's result
            try:
                changed = digest(current) != digests[name]
            except Unhashable:
                changed = False  # it was hashable before the run; it can't be stored now either
            if changed:
                bindings[name] = current
        return CellResult(bindings, deleted, value, recorder.events)

    def _input_values(self, analysis: CellAnalysis, ignore: frozenset[str]) -> dict[str, Any]:
        namespace = self._shell.user_ns
        hidden = self._shell.user_ns_hidden
        values: dict[str, Any] = {}
        for name in analysis.inputs:
            if name in ignore:
                continue
            if name not in namespace:
                if hasattr(builtins, name):
                    continue
                values[name] = MISSING
                continue
            value = namespace[name]
            if name in hidden and hidden[name] is value:
                continue  # IPython's own In, Out, get_ipython, exit...
            values[name] = value
        return values

    def _digests(self, inputs: Mapping[str, Any]) -> dict[str, str]:
        digests: dict[str, str] = {}
        for name, value in inputs.items():
            shared = self._resources.identity(value)
            if shared is not None:  # a cached resource: keyed by which one it is, not its state
                digests[name] = shared
                continue
            try:
                digests[name] = digest(value)
            except Unhashable as exc:
                raise UnhashableInputError(
                    name,
                    type(value),
                    f"{exc.value_type.__qualname__}: {exc.reason}",
                    f"If it does not change the result, leave it out of the key with "
                    f"--ignore {name}; otherwise cache the cell that creates it with %%cache_resource.",
                ) from None
        return digests

    def _validator(self, expression: str) -> Callable[[CellResult], Any]:
        try:
            code = compile(expression, "<--validate>", "eval")
        except SyntaxError as exc:
            raise UsageError(f"--validate {expression!r} is not a Python expression: {exc.msg}") from None

        def validate(result: CellResult) -> Any:
            return eval(code, self._shell.user_ns, dict(result.bindings))

        return validate

    def _ttl(self, text: str | None) -> float | None:
        value = text if text is not None else self.default_ttl
        try:
            return parse_ttl(value)
        except ValueError as exc:
            raise UsageError(f"--ttl: {exc}") from None

    def _match(self, target: str, kind: Kind | None) -> set[str]:
        entries = [e for e in self.store.entries() if kind in (None, e.kind)]
        exact = {e.key for e in entries if target in (e.key, e.label)}
        if exact:
            return exact
        prefixed = {e.key for e in entries if len(target) >= 4 and e.key.startswith(target)}
        if not prefixed:
            raise UsageError(f"no cache entry has the key or label {target!r}; %cache_info lists them")
        return prefixed


# -------------------------------------------------------------------- helpers
_PREPARED_MEMORY = 256  # distinct cell texts whose analysis is remembered


@dataclass(frozen=True)
class _PreparedCell:
    """A cell magic's parsed line and analyzed code: everything that depends on text alone."""

    args: Any
    names: tuple[str, ...]
    ignore: frozenset[str]
    source: str
    analysis: CellAnalysis
    label: str
    options: str
    validate: Callable[[CellResult], Any] | None


class _ResourceIndex:
    """Which live objects came from which ``%%cache_resource`` entry.

    A cell that reads a cached connection or model is keyed by *which* resource it reads
    (the resource cell's key and the variable name), not by its state, which often can't
    be hashed at all. When the resource entry goes, so does its identity.
    """

    _SKIP = (*_IMMUTABLE, tuple, types.ModuleType, types.FunctionType)

    def __init__(self) -> None:
        self._by_id: dict[int, tuple[str, str, Any]] = {}
        self._lock = threading.Lock()

    def add(self, key: str, bindings: Mapping[str, Any]) -> None:
        with self._lock:
            for name, obj in bindings.items():
                if not isinstance(obj, self._SKIP):
                    self._by_id[id(obj)] = (key, name, obj)

    def identity(self, value: Any) -> str | None:
        with self._lock:
            found = self._by_id.get(id(value))
        if found is None or found[2] is not value:
            return None
        return combine([("resource", found[0]), ("name", found[1])])

    def on_event(self, event: StoreEvent) -> None:
        if event.action == "removed" and event.kind == "resource":
            with self._lock:
                for ident in [i for i, (key, _, _) in self._by_id.items() if key == event.key]:
                    del self._by_id[ident]


class _UserCodeError(Exception):
    """Carries an exception raised by the cell's own code through the store and back out."""

    def __init__(self, error: BaseException, filename: str) -> None:
        super().__init__(repr(error))
        self.error = error
        self.filename = filename

    def user_traceback(self) -> TracebackType | None:
        """The error's traceback from the cell's first frame on, without ours before it."""
        tb = self.error.__traceback__
        while tb is not None and tb.tb_frame.f_code.co_filename != self.filename:
            tb = tb.tb_next
        return tb or self.error.__traceback__


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


def _check_names(names: list[str], what: str) -> list[str]:
    for name in names:
        if not name.isidentifier() or keyword.iskeyword(name):
            raise UsageError(f"{what} {name!r} is not a variable name")
    return list(dict.fromkeys(names))


def _has_top_level_await(tree: ast.Module) -> bool:
    scopes = (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)
    stack: list[ast.AST] = list(tree.body)
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.Await, ast.AsyncFor, ast.AsyncWith)):
            return True
        if not isinstance(node, scopes):
            stack.extend(ast.iter_child_nodes(node))
    return False


def _serialize_result(result: CellResult) -> SerializedValue:
    try:
        return serialize(result, "the cell's results")
    except UnserializableResultError as exc:
        for name, value in result.bindings.items():  # name the culprit, if one alone is
            try:
                serialize(value)
            except UnserializableResultError as inner:
                raise UnserializableResultError(
                    f"`{name}`",
                    inner.reason,
                    "Cache the cell with %%cache_resource (objects kept as they are, not copied), "
                    f"or list only the variables to keep after %%cache_data (leaving out {name}). "
                    "The cell's variables are set as after a normal run; nothing was cached.",
                ) from None
        raise UnserializableResultError(
            "the cell's output or last value",
            exc.reason,
            "Cache the cell with %%cache_resource, or end it with ';' and no expression. "
            "The cell's variables are set as after a normal run; nothing was cached.",
        ) from None


def _flush_inline_figures() -> None:
    """Plots made with the inline backend appear after the cell; make them part of its output."""
    backend = sys.modules.get("matplotlib_inline.backend_inline")
    if backend is not None and "matplotlib.pyplot" in sys.modules:
        import matplotlib

        if "inline" in str(matplotlib.get_backend()):
            backend.flush_figures()


def _label(cell: str) -> str:
    for line in cell.splitlines():
        text = line.strip()
        if text:
            return text if len(text) <= 60 else text[:57] + "..."
    return "(empty cell)"
