"""Running a cached cell for real: exec in the user namespace, what it bound, the user's traceback.

The magics decide *whether* a cell runs (the engine does); this module runs it the way
IPython would — live output, last expression's value, line numbers of the cell itself —
and works out what it produced: the names it bound, the names it deleted, and the inputs
it changed in place. The shell is passed in (anything with IPython's ``compile`` and
``user_ns``); IPython itself is not imported.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from ._capture import CellResult, OutputRecorder
from ._errors import CacheError
from ._hashing import MISSING


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
    filename = shell.compile.cache("\n" + cell.source, shell.execution_count)
    last: ast.expr | None = None
    body = list(tree.body)
    if body and isinstance(body[-1], ast.Expr):
        last = body.pop().value
    value = None
    with OutputRecorder(shell) as recorder:
        try:
            exec(shell.compile(ast.Module(body, type_ignores=[]), filename, "exec"), namespace)
            if last is not None:
                value = eval(shell.compile(ast.Expression(last), filename, "eval"), namespace)
        except BaseException as exc:  # the user's error, even KeyboardInterrupt: pass it on
            raise UserCodeError(exc, filename) from None
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
    deleted = tuple(n for n in cell.outputs if before.get(n, MISSING) is not MISSING and n not in namespace)
    current = {n: namespace[n] for n in inputs if n in namespace and n not in bindings}
    for name in changed_inputs(current):
        bindings[name] = current[name]
    return CellResult(bindings, deleted, value, recorder.events)


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
