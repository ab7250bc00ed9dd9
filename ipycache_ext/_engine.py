"""The cache protocol, once, under every front end: request -> key -> fetch -> serve.

The cell magics and the decorators describe what they want cached as a ``Request`` (kind,
origin, code, the values read from outside, the arguments, options) and a ``compute``
callable; the engine owns everything between: the key schema, input digests (a cached
resource by which one it is, an unhashable outside value by identity, an unhashable
argument as an error), the explanation of a miss, what is kept (the object for a
resource, its pickle for data), the files and random state the computation depended on,
serving a fresh copy, and the fallback for a stored value that no longer loads.

Nothing here imports IPython or names a front end: the front ends turn ``CacheError``
into their own way of saying it (a one-line ``UsageError``, an exception).
"""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any

# The dynamic-dependency layer: files read, listings, random state, environment, namespace.
from . import _deps as deps
from ._errors import UnhashableInputError, warn
from ._explain import KeyRecord, MissExplainer, describe_miss
from ._flight import NotStored
from ._format import format_size
from ._hashing import IMMUTABLE_TYPES, MISSING, HashFuncs, Unhashable, combine, digest
from ._identity import IdentityTokens, ResourceIndex
from ._persist import ensure_persistence
from ._progress import progress
from ._serialize import SerializedValue
from ._store import CacheStore, EntryInfo, Kind, Lookup

__all__ = ["CacheEngine", "Outcome", "Plan", "Request", "engine_for"]

_SHOW_PROGRESS_FROM = 256 << 20  # inputs this large may take a second to hash: say so then
_TOO_DEEP = "recursion limit"  # in the reason of the Unhashable raised for too deeply nested data
_IMMUTABLE = IMMUTABLE_TYPES
# Digests of immutable inputs (numbers, short strings) kept by identity: a small cell's hit
# hashed each of them again (~5 µs apiece). Long strings are not held (nor memory for them).
_ATOM_MEMORY = 1024
_ATOM_MAX_LENGTH = 4096


@dataclass(slots=True)
class Request:
    """What a front end asks to be cached; everything the key and the entry are made of.

    Read-only by convention, not frozen: a frozen dataclass sets each of these fields
    through ``object.__setattr__`` (3.2 µs, made anew for every cell run).

    ``outside`` are values read from outside the computation (a cell's inputs, nothing for
    a function: its globals are in its ``code``): a cached resource is keyed by which one it
    is and anything else that can't be hashed by its identity. ``arguments`` are values passed
    in: one that can't be hashed is an error (``unhashable_argument`` says how to get out).
    """

    kind: Kind
    origin: str  # what the caller is across runs: a cell id, a function's qualified name
    label: str
    code: str  # digest of the code (a cell's normal form; a function with what it reads)
    group: str  # the entries that share max_entries
    scope: str = ""  # part of the key: a function's qualified name; "" for cells (same code, same entry)
    options: str = ""  # digest of options that change the result (a cell's NAME list)
    outside: Mapping[str, Any] = field(default_factory=dict)
    arguments: Mapping[str, Any] = field(default_factory=dict)
    hash_funcs: HashFuncs | None = None
    unhashable_argument: Callable[[str, Any, Unhashable], Exception] | None = None
    unhashable_outside: Callable[[str, Any, Unhashable], Exception] | None = None
    names: tuple[str, ...] = ()
    ttl: float | None = None
    max_entries: int | None = None
    validate: Callable[[Any], Any] | None = None
    on_release: Callable[[Any], Any] | None = None
    persist: bool | str = False
    depends_on: tuple[str, ...] = ()
    # Code that reads variables by name at run time (exec, globals()...): the construct found,
    # the namespace it may read, the names left out, and how the user narrows it.
    dynamic: str | None = None
    namespace: Mapping[str, Any] | None = None
    exclude: frozenset[str] = frozenset()
    narrow_hint: str = ""
    # how to say what identifies a value keyed by identity, in the front end's own terms
    identity_hint: str = "Make its value hashable, or make it a cached resource, to find it again."
    # Values read from outside that are not inputs by name (a function's globals): the files
    # behind them (a sqlite connection's database, an open file, a lazy frame) are dependencies.
    sources: tuple[Any, ...] = ()


@dataclass(slots=True)
class Plan:
    """A request turned into its key: reusable for as long as its inputs are the same objects
    (read-only by convention, like ``Request``)."""

    key: str
    record: KeyRecord
    digests: Mapping[str, str]  # every input and argument, by name
    by_identity: tuple[str, ...] = ()  # names keyed by identity: found again only in this kernel


@dataclass(slots=True)
class Outcome:
    """What ``fetch`` gives back to the front end to present (read it; don't change it).

    Not frozen: a frozen dataclass sets each field through ``object.__setattr__``, which
    was a tenth of a decorator hit.
    """

    value: Any  # the resource itself, a fresh copy of the data, or what compute() produced
    hit: bool
    computed: bool  # compute() ran in this call
    entry: EntryInfo | None
    key: str
    reason: str | None = None  # why it was computed (None on a hit)
    stored: Any = None  # what the store keeps (a pickle for data): ``CacheEngine.load`` copies it
    seconds: float = 0.0  # how long computing (and preparing) took in this call: 0 on a hit


class _Context:
    """The hashing context of one plan: resources by token, other unhashables by identity."""

    def __init__(self, engine: CacheEngine) -> None:
        self._engine = engine
        self.by_identity: list[str] = []

    def identity_of(self, value: Any) -> str | None:
        return self._engine.resources.token(value)

    def unhashable(self, name: str, value: Any, error: Unhashable) -> str | None:
        self.by_identity.append(name)
        return self._engine.identities.token(value)


class CacheEngine:
    """The one implementation of the cache protocol, one per store."""

    def __init__(self, store: CacheStore) -> None:
        self.store = store
        self.resources = ResourceIndex()
        self.identities = IdentityTokens()
        self._explainer = MissExplainer()
        self._atoms: dict[int, tuple[Any, str]] = {}  # id -> (immutable input, its digest)
        self._warned: set[tuple[str, str]] = set()
        self._warned_lock = threading.Lock()
        store.subscribe(self.resources.on_event)

    # ------------------------------------------------------------------ keys
    def digest_outside(self, name: str, value: Any, context: _Context | None = None) -> str:
        """The digest of a value read from outside: resource token, content, or identity.

        Data too deeply nested to hash is not keyed by identity: it is data, and an in-place
        change would go unseen; that stays an ``Unhashable`` for the front end to report.
        """
        token = self.resources.token(value)
        if token is not None:
            return token
        if type(value) in _IMMUTABLE:  # the same object is the same content: hashed once
            known = self._atoms.get(id(value))
            if known is not None and known[0] is value:
                return known[1]
            found = _digest(value, None, _Context(self))
            if len(self._atoms) >= _ATOM_MEMORY:
                self._atoms.clear()
            if not isinstance(value, (str, bytes)) or len(value) <= _ATOM_MAX_LENGTH:
                self._atoms[id(value)] = (value, found)  # holds it: its id can't be reused meanwhile
            return found
        context = _Context(self) if context is None else context
        try:
            size = _rough_size(value)
            if size < _SHOW_PROGRESS_FROM:
                return _digest(value, None, context)
            with progress(f"hashing `{name}` ({format_size(size)})"):  # shown if it takes > 1 s
                return _digest(value, None, context)
        except Unhashable as exc:
            if _TOO_DEEP in exc.reason:
                raise
            context.by_identity.append(name)
            return self.identities.token(value)

    def code_digest(self, code_object: Any, hash_funcs: HashFuncs | None, by_identity: list[str]) -> str:
        """The digest of a function with everything it reads (unhashable globals by identity)."""
        context = _Context(self)
        value = _digest(code_object, hash_funcs, context)
        by_identity.extend(context.by_identity)
        return value

    def plan(self, request: Request) -> Plan:
        """The key of a request, and what it was made of (for explaining a later miss)."""
        context = _Context(self)
        digests: dict[str, str] = {}
        for name, value in request.outside.items():
            try:
                digests[name] = "missing" if value is MISSING else self.digest_outside(name, value, context)
            except Unhashable as exc:
                if request.unhashable_outside is None:
                    raise
                raise request.unhashable_outside(name, value, exc) from None
        arguments: dict[str, str] = {}
        for name, value in request.arguments.items():
            try:
                arguments[name] = _digest(value, request.hash_funcs, context)
            except Unhashable as exc:
                if request.unhashable_argument is None:
                    raise
                raise request.unhashable_argument(name, value, exc) from None
        options = request.options
        if request.depends_on:  # an entry recorded without a declared file never checks it
            declared = "\x00".join(sorted(set(request.depends_on)))
            options = combine([("options", options), ("depends_on", declared)])
        key = combine(
            [
                ("kind", request.kind),
                ("scope", request.scope),
                ("code", request.code),
                ("options", options),
                *((f"input:{n}", digests[n]) for n in sorted(digests)),
                *((f"arg:{n}", d) for n, d in arguments.items()),
            ]
        )
        digests.update(arguments)
        record = KeyRecord(key, request.code, digests, options)
        return Plan(key, record, digests, tuple(dict.fromkeys(context.by_identity)))

    # ------------------------------------------------------------------ fetching
    def fetch(
        self,
        request: Request,
        plan: Plan,
        compute: Callable[[], Any],
        *,
        refresh: bool = False,
        on_miss: Callable[[str, bool], None] | None = None,
        copy_computed: bool = True,
        prepare: Callable[[Any], tuple[Any, int | None]] | None = None,
        recorded: tuple[Any, ...] | None = None,
    ) -> Outcome:
        """The entry for ``plan``: served if stored (and still valid), else computed and kept.

        ``on_miss(reason, repeated)`` is told why, before ``compute`` runs (``repeated``: the
        same origin ran before, so the reason is worth saying). ``prepare(value)`` turns what
        ``compute`` returned into what the store keeps and its size (default: the object for a
        resource, a pickle for data). ``copy_computed=False`` hands back what ``compute``
        produced itself (a cell's namespace already holds it) instead of a fresh copy.
        ``recorded``: the dependencies of a value ``compute`` only hands over, computed by the
        caller inside ``recording(request)`` (an awaited coroutine: the engine can't await).
        """
        __tracebackhide__ = True
        previous = self._explainer.remember(request.origin, plan.record)
        run = _Run(self, request, plan, compute, previous, on_miss, prepare, recorded)
        if refresh:
            run.reasons.append("refresh requested")
        tiers_only = compute is _raise_not_cached  # peek: never compute, nor claim the key
        try:
            lookup = self._get_or_create(request, plan, run, refresh, tiers_only)
        except NotStored:
            self._explainer.put_back(request.origin, previous)
            raise
        except BaseException:
            if run.reasons and not run.produced:  # this call's computation raised
                self._explainer.failed(request.origin, plan.key)
            raise
        if run.produced:
            self._explainer.failed(request.origin, None)
        entry = lookup.entry
        if request.dynamic:
            self.warn_once(
                request.origin,
                "dynamic",
                f"{request.label}: {request.dynamic} may read any variable, so every variable in the "
                "namespace is part of what the cached result depends on (a change to any of them "
                f"computes it again). {request.narrow_hint}".rstrip(),
            )
        # found again in a tier (the store checks the dependencies of hits from memory itself)
        unchecked = lookup.hit and entry is not None and entry.dependencies and not run.checked
        if unchecked and entry is not None and run.stale(entry.dependencies) is not None:
            lookup = self._get_or_create(request, plan, run, True, tiers_only)
        produced, reasons = run.produced, run.reasons
        if request.kind == "resource" or request.persist:
            self._after_fetch(request, plan, lookup)
        if produced and not copy_computed:
            reason = reasons[-1] if reasons else None
            return Outcome(
                produced[0], False, True, lookup.entry, plan.key, reason, lookup.value, run.seconds
            )
        try:
            value = self.load(request.kind, lookup.value)
        except Exception as exc:  # stored, but no longer loads (a class it needs moved, say)
            if produced or request.kind != "data":
                raise
            self.store.delete_where(lambda e: e.key == plan.key, "invalid")  # from disk too
            warn(
                f"the cached result of {request.label} could not be loaded ({type(exc).__name__}: "
                f"{exc}); it was dropped and computed again",
            )
            return self.fetch(request, plan, compute, refresh=True, on_miss=on_miss,
                              copy_computed=copy_computed, prepare=prepare, recorded=recorded)  # fmt: skip
        if lookup.hit and lookup.entry is not None and lookup.entry.dependencies:
            deps.replay_effects(_dependencies(lookup.entry))
        reason = None if lookup.hit else (reasons[-1] if reasons else None)
        return Outcome(
            value, lookup.hit, bool(produced), lookup.entry, plan.key, reason, lookup.value, run.seconds
        )

    def recording(
        self, request: Request, *, process_state: bool = True
    ) -> AbstractContextManager[deps.Recording]:
        """Note what the computation of ``request`` reads, in this context (see ``_deps``)."""
        namespace = request.namespace if request.dynamic else None
        # the files behind the inputs (a database a connection reads, a lazy frame's files)
        behind = deps.files_in(request.outside.values(), request.arguments.values(), request.sources)
        return deps.recording(declared=(*request.depends_on, *behind), namespace=namespace,
                              dynamic=request.dynamic, exclude=request.exclude,
                              process_state=process_state)  # fmt: skip

    def peek(self, request: Request, plan: Plan) -> Outcome | None:
        """Serve a stored entry, from memory or (persisted data) from disk or the team store,
        without computing anything; None when there is none to serve."""
        persisted = request.kind == "data" and bool(request.persist)
        if not persisted and self.store.get(plan.key) is None:
            return None
        try:
            return self.fetch(request, plan, _raise_not_cached)
        except NotStored:  # not there, removed meanwhile, validate said no, or stale
            return None

    def load(self, kind: Kind, stored: Any) -> Any:
        """What a caller gets: the resource itself, or a fresh copy of the data.

        Immutable results (numbers, strings, tuples of them) can't be corrupted by the
        caller, so their one unpickled copy is reused while the entry lives.
        """
        if kind == "resource" or not isinstance(stored, SerializedValue):
            return stored
        known = stored.immutable
        if known is not None:
            return known[0]
        loaded = stored.load()
        if _is_immutable(loaded):
            stored.immutable = (loaded,)
        return loaded

    def warn_once(self, origin: str, what: str, message: str) -> None:
        """One warning per origin and subject (a cell that can never hit, an identity key on disk)."""
        with self._warned_lock:
            if (origin, what) in self._warned:
                return
            self._warned.add((origin, what))
        warn(message)

    # ------------------------------------------------------------------ internals
    def _get_or_create(
        self, request: Request, plan: Plan, run: _Run, refresh: bool, tiers_only: bool = False
    ) -> Lookup:
        __tracebackhide__ = True
        persist: Any = request.persist if request.kind == "data" else False  # the store checks it
        if persist:
            persist = self._persistence(persist)
        return self.store.get_or_create(
            plan.key,
            run.create,
            kind=request.kind,
            label=request.label,
            names=request.names,
            group=request.group,
            ttl=request.ttl,
            max_entries=request.max_entries,
            on_release=request.on_release,
            validate=request.validate,
            refresh=refresh,
            miss_reason=run.reason,
            inputs=plan.digests,
            dependencies=run.dependencies,
            stale=run.stale,
            persist=persist,
            tiers_only=tiers_only,
        )

    def _persistence(self, persist: bool | str) -> bool | str:
        """Where a persisted request goes: nowhere if persistence is off, disk without a team store."""
        if not ensure_persistence(self.store):
            return False  # said once, by ensure_persistence
        if persist == "team" and getattr(self.store.persistence, "team", None) is None:
            if getattr(self.store.persistence, "team_configured", False):
                why = "the team store could not be opened (the warning above says why)"
            else:
                why = "no team store is configured"
            self.warn_once(
                "", "no-team",
                f"{why}, so shared entries are kept on this machine's disk only; an administrator "
                "sets one with team_store in ipython_config.py or IPYCACHE_EXT_TEAM_STORE",
            )  # fmt: skip
            return "disk"
        return persist

    def _after_fetch(self, request: Request, plan: Plan, lookup: Lookup) -> None:
        if request.kind == "resource" and lookup.entry is not None:
            value = lookup.value
            bindings = getattr(value, "bindings", None)  # a cell's results: each name is a resource
            self.resources.add(plan.key, bindings if isinstance(bindings, Mapping) else {None: value})
        if request.persist and plan.by_identity and not lookup.hit:
            names = ", ".join(f"`{n}`" for n in plan.by_identity)
            self.warn_once(
                request.origin,
                "identity-persist",
                f"{request.label}: {names} can't be hashed and is keyed by its identity, so the "
                f"persisted entry can't be found again after a restart. {request.identity_hint}",
            )

    @staticmethod
    def _prepare_default(kind: Kind) -> Callable[[Any], tuple[Any, int | None]]:
        if kind == "resource":
            return lambda value: (value, None)
        from ._serialize import serialize

        def pickle(value: Any) -> tuple[Any, int | None]:
            payload = serialize(value)
            return payload, payload.nbytes

        return pickle


class _Run:
    """One fetch's computation: why it runs, what it read, what it produced."""

    __slots__ = ("_compute", "_engine", "_given", "_on_miss", "_plan", "_prepare", "_previous",
                 "_request", "checked", "produced", "reasons", "recorded", "seconds")  # fmt: skip

    def __init__(  # noqa: PLR0917 - one call site, in order
        self,
        engine: CacheEngine,
        request: Request,
        plan: Plan,
        compute: Callable[[], Any],
        previous: KeyRecord | None,
        on_miss: Callable[[str, bool], None] | None,
        prepare: Callable[[Any], tuple[Any, int | None]] | None,
        recorded: tuple[Any, ...] | None,
    ) -> None:
        self._engine, self._request, self._plan, self._compute = engine, request, plan, compute
        self._previous, self._on_miss, self._given = previous, on_miss, recorded
        self._prepare = prepare  # None: the default of the kind, made only on a miss
        self.reasons: list[str] = []
        self.produced: list[Any] = []
        self.recorded: list[tuple[Any, ...]] = []
        self.checked = False  # the store asked stale() about a hit
        self.seconds = 0.0  # how long create() took, when it ran

    def reason(self) -> str | None:
        return self.reasons[-1] if self.reasons else None

    def dependencies(self) -> tuple[Any, ...]:
        return self.recorded[-1] if self.recorded else ()

    def stale(self, dependencies: Sequence[Mapping[str, Any]]) -> str | None:
        """Why a stored entry is out of date (a file it read changed...), or None."""
        self.checked = True
        changed = deps.first_change(dependencies, namespace=self._request.namespace)
        if changed is not None:
            self.reasons.append(changed)
        return changed

    def create(self) -> tuple[Any, int | None]:
        __tracebackhide__ = True
        request, plan, previous = self._request, self._plan, self._previous
        known = bool(self.reasons)  # a changed dependency or a refresh: said even on a first run
        if not known:
            removed = self._engine.store.removal_reason(previous.key) if previous else None
            explainer = self._engine._explainer
            if removed is None and previous and explainer.failed_last(request.origin, previous.key):
                removed = "failed"
            reason = describe_miss(previous, plan.record, removed)
            if plan.by_identity:
                reason += " (" + ", ".join(f"`{n}`" for n in plan.by_identity) + " keyed by identity)"
            self.reasons.append(reason)
        if self._on_miss is not None:
            self._on_miss(self.reasons[-1], previous is not None or known)
        started = time.perf_counter()
        if self._given is not None:  # computed by the caller, inside engine.recording()
            value = self._compute()
            self.recorded.append(self._given)
        else:
            with self._engine.recording(request) as recording:
                value = self._compute()
            self.recorded.append(recording.dependencies())
        self.produced.append(value)
        prepare = self._prepare or self._engine._prepare_default(request.kind)
        prepared = prepare(value)
        self.seconds = time.perf_counter() - started
        return prepared


def _raise_not_cached() -> Any:
    """The compute of ``peek``, which the store never calls (``tiers_only``): it marks the look."""
    raise NotStored


def _dependencies(entry: EntryInfo) -> tuple[Any, ...]:
    return tuple(entry.dependencies)


def _digest(value: Any, hash_funcs: HashFuncs | None, context: _Context) -> str:
    return digest(value, hash_funcs=hash_funcs, context=context)


def _rough_size(value: Any) -> int:
    """The bytes of an array or frame, cheaply (no deep walk), to decide on showing progress."""
    nbytes = getattr(value, "nbytes", None)
    if isinstance(nbytes, int):
        return nbytes
    usage = getattr(value, "memory_usage", None)
    if callable(usage) and type(value).__module__.startswith("pandas"):
        try:
            return int(usage(index=True, deep=False).sum())
        except Exception:  # a frame subclass with another signature: no progress, that's all
            return 0
    return 0


def _is_immutable(value: Any, depth: int = 0) -> bool:
    if type(value) in _IMMUTABLE:
        return True
    if type(value) in (tuple, frozenset) and depth < 3:
        return all(_is_immutable(item, depth + 1) for item in value)
    return False


def unhashable_input(name: str, value: Any, exc: Unhashable, way_out: str) -> UnhashableInputError:
    """The error for an input that can't be hashed, with the front end's way out."""
    return UnhashableInputError(name, type(value), f"{exc.value_type.__qualname__}: {exc.reason}", way_out)


# one engine per store, for as long as the store lives (it outlives %unload_ext)
_engines: weakref.WeakKeyDictionary[CacheStore, CacheEngine] = weakref.WeakKeyDictionary()
_engines_lock = threading.Lock()


def engine_for(store: CacheStore) -> CacheEngine:
    """The engine of ``store`` (created on first use)."""
    engine = _engines.get(store)
    if engine is None:
        with _engines_lock:
            engine = _engines.get(store)
            if engine is None:
                engine = _engines[store] = CacheEngine(store)
    return engine


def changed_inputs(engine: CacheEngine, values: Mapping[str, Any], digests: Mapping[str, str],
                   skip: Sequence[str] = ()) -> list[str]:  # fmt: skip
    """The inputs among ``values`` whose content is no longer what ``digests`` say."""
    changed = []
    for name, value in values.items():
        if name in skip or value is MISSING or type(value) in _IMMUTABLE:
            continue
        if engine.resources.token(value) is not None:
            continue  # a shared resource: its state is not the computation's result
        before = digests.get(name)
        if before is None or before.startswith("identity:"):
            continue
        try:
            now = _digest(value, None, _Context(engine))
        except Unhashable:
            continue  # it was hashable before the run; it can't be stored now either
        if now != before:
            changed.append(name)
    return changed
