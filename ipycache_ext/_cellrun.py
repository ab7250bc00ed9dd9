"""Running a cached cell for real: exec in the user namespace, what it bound, the user's traceback.

The magics decide *whether* a cell runs (the engine does); this module runs it the way
IPython would — live output, last expression's value, line numbers and number (``In[10]``)
of the cell itself — and works out what it produced: the names it bound (also dynamically:
``exec``, ``%run``, a helper's ``global``), the names it deleted, the inputs it changed in
place, and its other effects on the kernel (``_effects``). A failure's traceback renders
from the cell's own first line, without the ``run_cell_magic`` wrapper frame. The shell is
passed in (anything with IPython's ``compile`` and ``user_ns``); IPython is not imported.
"""

from __future__ import annotations

import ast
import contextlib
import re
import sys
import types
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from ._analysis import imports_of
from ._capture import CellResult, OutputRecorder
from ._effects import EffectRecorder, namespace_changes
from ._errors import CacheError
from ._hashing import MISSING, import_inputs

# IPython's own bookkeeping in the namespace (_i, _ii, _i7, _, __, _7, In, Out, ...): never results.
_BOOKKEEPING = re.compile(r"_i*|_i\d+|_+|_\d+|_(oh|ih|dh|sh)|In|Out|get_ipython|exit|quit")


@dataclass(frozen=True)
class CellCode:
    """A cell's transformed source and what the analysis said it binds."""

    source: str
    outputs: tuple[str, ...]  # the names that make its result
    definite: frozenset[str]  # the names bound on every path
    explicit: bool  # the NAME list was given on the magic line


class UserCodeError(Exception):
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

    def render_with(self, shell: Any) -> None:
        """Make IPython show the error from the cell's own code on.

        Re-raised from the magic, the error passes the frames above it on the way out, and
        IPython would show the first: ``get_ipython().run_cell_magic(...)``, the line that
        called the magic. IPython asks an exception for ``_render_traceback_`` first (that is
        how ipyparallel shows remote errors): this one renders the user's traceback alone.
        """
        error, formatter = self.error, getattr(shell, "InteractiveTB", None)
        if formatter is None or hasattr(type(error), "_render_traceback_"):
            return
        user_tb = self.user_traceback()

        number = cell_number(shell)

        def render() -> list[str]:
            if cell_number(shell) != number:  # the same error raised again by a later cell
                return list(formatter.structured_traceback(type(error), error, error.__traceback__))
            return list(formatter.structured_traceback(type(error), error, user_tb, tb_offset=0))

        with contextlib.suppress(AttributeError, TypeError):  # an exception type without a __dict__
            error._render_traceback_ = render  # type: ignore[attr-defined]


def run_cell(
    shell: Any,
    cell: CellCode,
    inputs: Mapping[str, Any],
    changed_inputs: Callable[[Mapping[str, Any]], list[str]],
) -> CellResult:
    """Run the cell in the user namespace, live, recording its output and its bindings.

    ``changed_inputs(values)`` names the inputs the run changed in place (``df["b"] = ...``):
    their new values are part of the result, so a hit leaves the namespace as this run did.
    """
    __tracebackhide__ = True
    namespace = shell.user_ns
    before = {name: namespace.get(name, MISSING) for name in cell.outputs}
    tree = shell.transform_ast(shell.compile.ast_parse(cell.source))  # fresh: edited below
    # One line up, so line numbers in tracebacks match the cell (its first line is %%magic).
    ast.increment_lineno(tree, 1)
    filename = shell.compile.cache("\n" + cell.source, cell_number(shell))
    last: ast.expr | None = None
    body = list(tree.body)
    if body and isinstance(body[-1], ast.Expr):
        last = body.pop().value
    value = None
    # A local module the cell imports is imported now, as its key does (import_inputs): so the
    # attributes the cell sets on it are effects the recorder sees, also on its first import.
    import_inputs(imports_of(tree))
    everything = dict(namespace)  # names bound dynamically (exec, %run) are found by the diff
    effects = EffectRecorder(namespace, getattr(shell, "user_ns_hidden", None))
    with OutputRecorder(shell) as recorder:
        try:
            exec(shell.compile(ast.Module(body, type_ignores=[]), filename, "exec"), namespace)
            if last is not None:
                value = eval(shell.compile(ast.Expression(last), filename, "eval"), namespace)
        except BaseException as exc:  # the user's error, even KeyboardInterrupt: pass it on
            failure = UserCodeError(exc, filename)
            failure.render_with(shell)
            raise failure from None
        _flush_inline_figures()
    if cell.explicit:
        missing = [n for n in cell.outputs if n not in namespace]
        if missing:
            raise CacheError(
                f"the cell did not define {', '.join(missing)}: list only names it assigns "
                "(nothing was cached)"
            )
        bindings = {n: namespace[n] for n in cell.outputs}
    else:  # bound on every path: kept even when rebound to the same object (k = 5 when k was 5)
        bindings = {
            n: namespace[n]
            for n in cell.outputs
            if n in namespace and (n in cell.definite or namespace[n] is not before[n])
        }
    # Gone at the end: deleted; also a name the cell deletes on every path (`tmp = ...` then a
    # top-level `del tmp`) while it was absent before: a real run leaves it absent either way.
    always_deleted = {
        target.id
        for statement in tree.body
        if isinstance(statement, ast.Delete)
        for target in statement.targets
        if isinstance(target, ast.Name)
    }
    deleted = tuple(
        n
        for n in cell.outputs
        if n not in namespace and (before.get(n, MISSING) is not MISSING or n in always_deleted)
    )
    if not cell.explicit:
        dynamic, gone = namespace_changes(everything, namespace, _skipped(shell, cell.outputs))
        bindings.update(dynamic)
        deleted += gone
    current = {n: namespace[n] for n in inputs if n in namespace and n not in bindings}
    changed = [n for n in changed_inputs(current) if not isinstance(current[n], (type, types.ModuleType))]
    for name in changed:  # classes and modules changed in place are attribute effects instead
        bindings[name] = current[name]
    # `a += 1` on an array rebinds `a` to the object it held: a hit changes that object too
    changed.extend(n for n, v in bindings.items() if n not in changed and inputs.get(n, MISSING) is v
                   and _mutable(v))  # fmt: skip
    result = CellResult(bindings, deleted, value, recorder.events, changed=tuple(changed))
    kernel = effects.finish()
    if kernel:
        result.effects = kernel
    return result


def _mutable(value: Any) -> bool:
    return not isinstance(value, (int, float, complex, str, bytes, bool, type(None), tuple, frozenset, range,
                                  type, types.ModuleType, types.FunctionType))  # fmt: skip


def _skipped(shell: Any, outputs: tuple[str, ...]) -> frozenset[str]:
    """Names the namespace diff leaves out: the analysed outputs, IPython's own, dunders."""
    hidden = getattr(shell, "user_ns_hidden", {})
    namespace = shell.user_ns
    own = {n for n in namespace if _BOOKKEEPING.fullmatch(n) or (n.startswith("__") and n.endswith("__"))}
    own.update(n for n in hidden if n in namespace and namespace[n] is hidden[n])
    return frozenset(own) | frozenset(outputs)


def cell_number(shell: Any) -> int:
    """The running cell's own number: IPython 9 counts the next cell's before running this one."""
    running = getattr(getattr(shell, "displayhook", None), "exec_result", None)
    count = getattr(running, "execution_count", None)
    return count if isinstance(count, int) else int(shell.execution_count)


def has_top_level_await(tree: ast.Module) -> bool:
    """True when the cell awaits at top level (it can't run inside a magic)."""
    scopes = (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)
    stack: list[ast.AST] = list(tree.body)
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.Await, ast.AsyncFor, ast.AsyncWith)):
            return True
        if not isinstance(node, scopes):
            stack.extend(ast.iter_child_nodes(node))
    return False


def _flush_inline_figures() -> None:
    """Plots made with the inline backend appear after the cell; make them part of its output."""
    backend = sys.modules.get("matplotlib_inline.backend_inline")
    if backend is not None and "matplotlib.pyplot" in sys.modules:
        import matplotlib

        if "inline" in str(matplotlib.get_backend()):
            backend.flush_figures()
