"""The cell front end's logic: a cached cell turned into an engine request, and its result served.

``CacheMagics`` parses the magic line; this module does the rest of what a ``%%cache_data``
or ``%%cache_resource`` cell means: analyze the cell (once per distinct text), gather the
inputs from the namespace, ask the engine, and present the outcome as a real run would
(bind, delete, replay output, return the last value). Errors are ``CacheError`` (the magics
turn them into one-line ``UsageError``) or the user's own exception.
"""

from __future__ import annotations

import ast
import builtins
import io
import keyword
import re
import sys
import tokenize
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ._analysis import CellAnalysis, analyze_tree
from ._capture import CellResult, replay
from ._cellrun import CellCode, has_top_level_await, run_cell
from ._deps import dynamic_reads
from ._engine import CacheEngine, Outcome, Plan, Request, changed_inputs, unhashable_input
from ._errors import CacheError, UnhashableInputError, UnserializableResultError
from ._fidelity import serve, unreproducible
from ._format import cell_label
from ._hashing import MISSING, Unhashable, combine, import_inputs
from ._report import PREFIX, hit_line
from ._serialize import SerializedValue, serialize
from ._store import Kind

_PREPARED_MEMORY = 256  # distinct cell texts whose analysis is remembered


@dataclass(frozen=True)
class CellOptions:
    """A cached cell's magic line, parsed and checked."""

    names: tuple[str, ...] = ()
    ignore: frozenset[str] = frozenset()
    ttl: float | None = None
    max_entries: int | None = None
    refresh: bool = False
    quiet: bool = False
    persist: bool | str = False
    validate: str | None = None
    depends_on: tuple[str, ...] = ()
    # NAMEs written right after a one-value option and its value (``--ignore a b``): (NAME,
    # "--ignore a"); a slip for a second value unless the cell assigns NAME
    stray: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class PreparedCell:
    """Everything about a cached cell that depends on its text alone."""

    code: CellCode
    analysis: CellAnalysis
    label: str
    options_digest: str
    validate: Callable[[CellResult], Any] | None
    dynamic: str | None = None  # how the cell may read variables by name at run time (exec, globals()...)
    group: str = ""  # the entries of this cell and NAME list (what --max-entries counts)
    quiet: bool = False  # the cell ends with `;`: its value is not shown, nor kept in Out


class CachedCells:
    """Runs cached cells of one shell through the engine."""

    def __init__(self, shell: Any, engine: CacheEngine) -> None:
        self.shell = shell
        self.engine = engine
        self._prepared: OrderedDict[tuple[str, str, str], PreparedCell] = OrderedDict()
        self._last_after: dict[tuple[str, str], str] = {}  # (origin, input) -> digest after its last run
        self._refused: set[str] = set()  # cells whose hits can't be reproduced, said once each

    # ------------------------------------------------------------------ preparing
    def prepare(self, kind: Kind, line: str, cell: str, options: CellOptions) -> PreparedCell:
        """Analyze the cell, once per distinct text (a hit should cost little more than hashing
        the inputs, and tokenizing, parsing and analyzing the same text again is most of the rest)."""
        memo_key = (kind, line, cell)
        prepared = self._prepared.get(memo_key)
        if prepared is not None:
            self._prepared.move_to_end(memo_key)
            return prepared
        source = self.shell.transform_cell(cell)
        tree = self.shell.transform_ast(self.shell.compile.ast_parse(source))
        if has_top_level_await(tree):
            raise CacheError(
                "top-level await can't be cached in a cell: put it in an async function and "
                "cache that with @ipycache_ext.cache_data"
            )
        analysis = analyze_tree(tree)
        dynamic = dynamic_reads(cell)
        if options.stray:
            _refuse_stray_names(options, analysis, tree, dynamic)
        outputs = options.names or analysis.outputs
        parts = [("names", "\x00".join(options.names))]
        if dynamic and options.ignore:  # what the namespace's record leaves out
            parts.append(("ignore", "\x00".join(sorted(options.ignore))))
        options_digest = combine(parts)
        prepared = PreparedCell(
            code=CellCode(source, outputs, analysis.definite, bool(options.names)),
            analysis=analysis,
            label=cell_label(cell),
            options_digest=options_digest,
            validate=self._validator(options.validate) if options.validate else None,
            dynamic=dynamic,
            group=combine([("kind", kind), ("code", analysis.code_digest), ("options", options_digest)]),
            quiet=ends_with_semicolon(source),
        )
        self._prepared[memo_key] = prepared
        while len(self._prepared) > _PREPARED_MEMORY:
            self._prepared.popitem(last=False)
        return prepared

    # ------------------------------------------------------------------ running
    def run(self, kind: Kind, prepared: PreparedCell, options: CellOptions, origin: str | None,
            show_hit_line: bool) -> Outcome:  # fmt: skip
        """Serve the cell from the cache or run it; the namespace ends as after a real run."""
        __tracebackhide__ = True
        analysis = prepared.analysis
        inputs = self._input_values(analysis, options.ignore)
        if analysis.imports:  # `import helpers` in the cell: helpers' code is an input too
            inputs.update(import_inputs(analysis.imports))
            for name in _star_imported(analysis.imports):
                inputs.pop(name, None)  # bound by the cell's `from m import *`: m is the input
        number = getattr(self.shell, "execution_count", None)
        request = Request(
            kind=kind,
            origin=origin or prepared.label,
            # prepared.label is already cell_label(cell): only the execution number is new
            label=f"[{number}] {prepared.label}" if isinstance(number, int) else prepared.label,
            code=analysis.code_digest,
            group=prepared.group,
            options=prepared.options_digest,
            outside=inputs,
            names=prepared.code.outputs,
            ttl=options.ttl,
            max_entries=options.max_entries,
            validate=prepared.validate,
            persist=options.persist if kind == "data" else False,
            depends_on=options.depends_on,
            unhashable_outside=_unhashable_input,
            dynamic=prepared.dynamic,
            namespace=self.shell.user_ns,
            exclude=options.ignore | frozenset(self.shell.user_ns_hidden),
            narrow_hint="Leave variables that don't matter out with --ignore NAME.",
            identity_hint="If it doesn't change the result, leave it out with --ignore NAME; if it "
            "is a connection or a model, create it in a %%cache_resource cell.",
        )
        plan = self.engine.plan(request)

        def compute() -> CellResult:
            __tracebackhide__ = True
            return run_cell(self.shell, prepared.code, inputs, lambda now: self._changed(request, plan, now))

        def on_miss(reason: str, repeated: bool) -> None:
            if repeated and not options.quiet and not options.refresh:
                print(f"{PREFIX} recomputing: {reason}")

        outcome = self.engine.fetch(
            request, plan, compute, refresh=options.refresh, on_miss=on_miss, copy_computed=False,
            prepare=_keep_resource if kind == "resource" else _serialize_result,
        )  # fmt: skip
        served = outcome.computed or self._serve(outcome, quiet=options.quiet, show_hit_line=show_hit_line)
        if not served:
            outcome = self.engine.fetch(  # it can't reproduce what the cell did: run it (said once)
                request, plan, compute, refresh=True, copy_computed=False,
                prepare=_keep_resource if kind == "resource" else _serialize_result,
            )  # fmt: skip
        return outcome

    def _serve(self, outcome: Outcome, *, quiet: bool, show_hit_line: bool) -> bool:
        """Leave the namespace and the kernel as the cell's run did; False: this hit can't.

        See ``_fidelity.serve``: functions and classes rehomed into the namespace, inputs
        changed in place replayed onto the namespace's objects, module and class attributes
        set again. When an effect can't be reproduced, nothing is bound: that is said once
        (per cell) and the caller runs the cell instead.
        """
        result: CellResult = outcome.value
        problems = unreproducible(result, self.shell.user_ns)
        if problems:
            said = outcome.entry.group if outcome.entry is not None else outcome.key  # once per cell
            if said not in self._refused:
                self._refused.add(said)
                print(f"{PREFIX} not served from the cache, running the cell: a hit can't reproduce "
                      + "; ".join(problems))  # fmt: skip
            return False
        serve(result, self.shell.user_ns, outcome.stored)
        if show_hit_line and not quiet and outcome.entry is not None:
            print(hit_line(outcome.entry))
        replay(result.outputs, self.shell)
        return True

    def _changed(self, request: Request, plan: Plan, values: Mapping[str, Any]) -> list[str]:
        """The inputs the cell changed in place; say once when that means it can never hit."""
        changed = changed_inputs(self.engine, values, plan.digests)
        for name in changed:
            before = plan.digests[name]
            slot = (request.origin, name)
            if self._last_after.get(slot) == before:  # changed last run too, from what it is now
                self.engine.warn_once(
                    request.origin,
                    f"self-changing:{name}",
                    f"{request.label}: the cell changes `{name}`, which it also reads, on every run, "
                    f"so it can never be served from the cache. Leave `{name}` out of the key "
                    f"(--ignore {name}) or change a copy of it.",
                )
            self._last_after[slot] = self.engine.digest_outside(name, values[name])
        return changed

    def _input_values(self, analysis: CellAnalysis, ignore: frozenset[str]) -> dict[str, Any]:
        namespace = self.shell.user_ns
        hidden = self.shell.user_ns_hidden
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
                if _OUTPUT_HISTORY.fullmatch(name):
                    self._history_read(name)
                continue  # IPython's own In, Out, get_ipython, exit...
            values[name] = value
        return values

    def _history_read(self, name: str) -> None:
        """``_``, ``Out[3]``: IPython's history moves on every cell, so it is no input; say so."""
        self.engine.warn_once(
            f"history:{name}",
            "history",
            f"the cell reads `{name}`, IPython's output or input history, which is not part of its "
            "key: a hit gives the result computed from what it held then. Bind it to a name of "
            f"your own in a cell of its own (value = {name}) and read that instead.",
        )

    def _validator(self, expression: str) -> Callable[[CellResult], Any]:
        try:
            code = compile(expression, "<--validate>", "eval")
        except SyntaxError as exc:
            raise CacheError(f"--validate {expression!r} is not a Python expression: {exc.msg}") from None

        def validate(result: CellResult) -> Any:
            return eval(code, self.shell.user_ns, dict(result.bindings))

        return validate


def check_names(names: list[str], what: str) -> tuple[str, ...]:
    """The NAME or --ignore list, each a variable name, without repeats."""
    for name in names:
        if not name.isidentifier() or keyword.iskeyword(name):
            raise CacheError(f"{what} {name!r} is not a variable name")
    return tuple(dict.fromkeys(names))


def _star_imported(imports: tuple[tuple[str, tuple[str, ...]], ...]) -> set[str]:
    """The names the cell's ``from m import *`` binds (m's ``__all__``, else its public names).

    The analysis can't know them from the text; without this, after the first run they would
    exist in the namespace and be taken for inputs: one needless miss.
    """
    names: set[str] = set()
    for module_name, fromlist in imports:
        module = sys.modules.get(module_name) if "*" in fromlist else None
        if module is None:
            continue
        public = getattr(module, "__all__", None)
        if not isinstance(public, (list, tuple)):
            public = [n for n in vars(module) if not n.startswith("_")]
        names.update(n for n in public if isinstance(n, str))
    return names


def _unhashable_input(name: str, value: Any, exc: Unhashable) -> UnhashableInputError:
    return unhashable_input(
        name,
        value,
        exc,
        f"If it does not change the result, leave it out of the key with --ignore {name}.",
    )


def _keep_resource(result: CellResult) -> tuple[Any, int | None]:
    return result, None


def _serialize_result(result: CellResult) -> tuple[SerializedValue, int]:
    try:
        payload = serialize(result, "the cell's results")
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
    return payload, payload.nbytes


def _refuse_stray_names(
    options: CellOptions, analysis: CellAnalysis, tree: ast.Module, dynamic: str | None
) -> None:
    """``--ignore log bar`` ignores ``log`` and makes ``bar`` the one result: say so when the
    cell plainly only reads ``bar`` (it doesn't bind it, change it through an attribute, an
    item or a method, or bind names in ways the analysis can't see)."""
    if analysis.star_import or dynamic:
        return
    changed = _changed_in_place(tree)
    for name, after in options.stray:
        if name not in analysis.outputs and name not in changed:
            flag = after.split(" ", 1)[0]
            raise CacheError(
                f"{name} is taken as a result NAME (it follows {after}), but the cell doesn't assign "
                f"it: {flag} takes one value, so repeat it for each ({after} {flag} {name}); a result "
                f"the cell binds some other way goes before the options ({name} {after}). Nothing ran."
            )


def _changed_in_place(tree: ast.Module) -> set[str]:
    """Names the cell may change without rebinding: ``df["x"] = ...``, ``obj.a = ...``,
    ``del d[k]``, ``rows.append(...)`` (any method call: it may mutate its object)."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Subscript, ast.Attribute)) and isinstance(node.ctx, (ast.Store, ast.Del)):
            base: ast.expr = node.value
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            base = node.func.value
        else:
            continue
        while isinstance(base, (ast.Subscript, ast.Attribute, ast.Call)):
            base = base.func if isinstance(base, ast.Call) else base.value
        if isinstance(base, ast.Name):
            names.add(base.id)
    return names


# IPython's history names: _, __, ___, _7 (Out[7]), _i, _ii, _iii, _i7 (In[7]), In, Out...
_OUTPUT_HISTORY = re.compile(r"_{1,3}|_i{1,3}|_i?\d+|_oh|_ih|_dh|In|Out")
_ONE_VALUE = ("--ignore", "--depends-on")  # repeated options that take one value each


def one_value_strays(words: list[str], names: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    """The NAMEs among ``words`` (the split magic line) that directly follow the value of a
    repeated one-value option (``--ignore``, ``--depends-on``), with that option and value."""
    found: list[tuple[str, str]] = []
    for at, word in enumerate(words):
        given, _, inline = word.partition("=")
        # argparse takes any unambiguous prefix of an option (``--ign``)
        flag = next((o for o in _ONE_VALUE if len(given) > 2 and o.startswith(given)), None)
        if flag is None:
            continue
        value_at = at if inline else at + 1
        following = words[value_at + 1 : value_at + 2]
        if value_at < len(words) and following and following[0] in names:
            found.append((following[0], f"{flag} {inline or words[value_at]}"))
    return tuple(found)


def parse_options(
    args: Any, kind: Kind, ttl: Callable[[str | None], float | None], words: list[str] | None = None
) -> CellOptions:
    """The parsed magic line as options, checked (each error names the option and the way out).

    ``words``: the line split as the parser saw it, to find ``--ignore a b`` slips."""
    if args.max_entries is not None and args.max_entries <= 0:
        raise CacheError(f"--max-entries must be a positive integer, not {args.max_entries}")
    if kind == "resource" and args.persist:
        raise CacheError(
            "%%cache_resource can't --persist: resources are kept as they are, not serialized. "
            "Persist the data they produce with %%cache_data --persist instead."
        )
    share = bool(getattr(args, "share", False))
    names = check_names(args.names, "NAME")
    return CellOptions(
        names=names,
        stray=one_value_strays(words, names) if words else (),
        ignore=frozenset(check_names(args.ignore, "--ignore")),
        ttl=ttl(args.ttl),
        max_entries=args.max_entries,
        refresh=args.refresh,
        quiet=args.quiet,
        persist="team" if share else bool(args.persist),
        validate=getattr(args, "validate", None) or None,
        depends_on=tuple(getattr(args, "depends_on", None) or ()),
    )


def ends_with_semicolon(source: str) -> bool:
    """Whether the last token of ``source`` is ``;``, as IPython silences a cell's value."""
    try:
        tokens = list(tokenize.generate_tokens(io.StringIO(source).readline))
    except (tokenize.TokenError, SyntaxError):
        return False
    skipped = (tokenize.ENDMARKER, tokenize.NL, tokenize.NEWLINE, tokenize.COMMENT, tokenize.DEDENT)
    for token in reversed(tokens):
        if token.type not in skipped:
            return token.type == tokenize.OP and token.string == ";"
    return False
