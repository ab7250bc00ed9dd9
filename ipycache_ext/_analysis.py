"""Static analysis of a cell's Python code: what it reads, what it binds, and its normal form.

An *input* is a name the cell reads before it has bound it; its value comes from the
namespace and so belongs in the key. An *output* is a name the cell binds at top level
(assignment, augmented assignment, ``for`` and ``with`` targets, imports, ``def``,
``class``, ``del``, ``global`` in a function it defines). The analysis follows the order
of execution and is conservative where control flow is not known: a name bound only in a
branch, a loop body or a ``try`` body is not "bound" for the reads that follow, so its
namespace value stays an input. Names read inside functions and lambdas are read when
they are *called*, so they are inputs unless the cell binds them somewhere.

The normal form is the AST without positions: comments, blank lines and formatting do not
change it; any change to what the code does does.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import xxhash

_Scope = ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda | ast.ClassDef
_Comprehension = ast.ListComp | ast.SetComp | ast.DictComp | ast.GeneratorExp
_COMPREHENSIONS = (ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp)


@dataclass(frozen=True)
class CellAnalysis:
    """What a cell reads and binds."""

    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    code_digest: str
    star_import: bool = False
    definite: frozenset[str] = frozenset()  # outputs bound on every path through the cell
    # (module, fromlist) of every absolute import statement anywhere in the cell: the cell
    # depends on those modules' code although it binds, not reads, their names.
    imports: tuple[tuple[str, tuple[str, ...]], ...] = ()


def analyze(source: str) -> CellAnalysis:
    """Analyze plain Python source (IPython syntax already transformed). Raises SyntaxError."""
    return analyze_tree(ast.parse(source))


def analyze_tree(tree: ast.Module) -> CellAnalysis:
    flow = _Flow()
    flow.block(tree.body)
    # A name a function reads when called is the cell's own if it was bound before the
    # function was defined, or if the cell defines it (def, class, import): the helper pattern.
    late = [name for name, safe in flow.late.items() if not safe and name not in flow.definitions]
    inputs = list(dict.fromkeys([*flow.inputs, *late]))
    return CellAnalysis(
        inputs=tuple(inputs),
        outputs=tuple(flow.outputs),
        code_digest=code_digest(tree),
        star_import=flow.star_import,
        definite=frozenset(flow.bound) & frozenset(flow.outputs),
        imports=imports_of(tree),
    )


def imports_of(tree: ast.AST) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """Every absolute ``import``/``from ... import`` in the tree, nested ones included."""
    found: dict[tuple[str, tuple[str, ...]], None] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                found.setdefault((alias.name, ()), None)
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            found.setdefault((node.module, tuple(alias.name for alias in node.names)), None)
    return tuple(found)


def code_digest(tree: ast.AST) -> str:
    """Digest of the code's normal form (the AST without line and column numbers)."""
    dumped = ast.dump(tree, annotate_fields=False, include_attributes=False)
    return xxhash.xxh3_128_hexdigest(dumped.encode("utf-8", "surrogatepass"))


class _Flow:
    """Walks top-level statements in execution order, tracking definitely-bound names."""

    def __init__(self, bound: set[str] | None = None, shared: _Flow | None = None) -> None:
        self.bound: set[str] = set() if bound is None else set(bound)
        root = shared or self
        # Results are shared by every branch of one analysis.
        self.inputs: dict[str, None] = root.inputs if shared else {}
        self.outputs: dict[str, None] = root.outputs if shared else {}
        # late reads: name -> bound already at every place it was read from a function
        self.late: dict[str, bool] = root.late if shared else {}
        self.definitions: set[str] = root.definitions if shared else set()
        self.star_import = False
        self._root = root

    # names
    def read(self, name: str) -> None:
        if name not in self.bound:
            self._root.inputs.setdefault(name, None)

    def ipython_text(self, text: str) -> None:
        """The text of a line magic or shell command: code (``%time y = n * 2``) is analyzed as
        code; anything else (``!wc -l {path}``, ``$name``) reads every name-like word in it."""
        try:
            tree = ast.parse(text)
        except SyntaxError:
            for name in _IDENTIFIER.findall(text):
                self.read(name)
            return
        self.block(tree.body)

    def read_late(self, names: Iterable[str]) -> None:
        """Names read when a function defined here is called: safe if bound by now."""
        for name in names:
            self._root.late[name] = self._root.late.get(name, True) and name in self.bound

    def bind(self, name: str) -> None:
        self.bound.add(name)
        self._root.outputs.setdefault(name, None)

    def branch(self, body: Iterable[ast.stmt], start: set[str] | None = None) -> set[str]:
        sub = _Flow(self.bound if start is None else start, shared=self._root)
        sub.block(body)
        return sub.bound

    # statements
    def block(self, body: Iterable[ast.stmt]) -> None:
        for stmt in body:
            self.stmt(stmt)

    def stmt(self, node: ast.stmt) -> None:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            self.exprs([*node.decorator_list, *_defaults_and_annotations(node.args)])
            if node.returns is not None:
                self.expr(node.returns)
            self.scope(node)
            self.bind(node.name)
            self._root.definitions.add(node.name)
        elif isinstance(node, ast.ClassDef):
            self.exprs([*node.decorator_list, *node.bases, *(k.value for k in node.keywords)])
            self.scope(node)
            self.bind(node.name)
            self._root.definitions.add(node.name)
        elif isinstance(node, ast.Assign):
            self.expr(node.value)
            for target in node.targets:
                self.target(target)
        elif isinstance(node, ast.AugAssign):
            if isinstance(node.target, ast.Name):
                self.expr(node.value)
                self.read(node.target.id)
                self.bind(node.target.id)
            else:
                self.expr(node.target)
                self.expr(node.value)
        elif isinstance(node, ast.AnnAssign):
            if node.value is not None:
                self.expr(node.value)
            self.expr(node.annotation)
            if isinstance(node.target, ast.Name):
                if node.value is not None:
                    self.bind(node.target.id)
            else:
                self.expr(node.target)
        elif isinstance(node, (ast.For, ast.AsyncFor)):
            self.expr(node.iter)
            inner = _Flow(self.bound, shared=self._root)
            inner.target(node.target)
            inner.block(node.body)
            self.branch(node.orelse, inner.bound)
        elif isinstance(node, ast.While):
            self.expr(node.test)
            after_body = self.branch(node.body)
            self.branch(node.orelse, after_body)
        elif isinstance(node, ast.If):
            self.expr(node.test)
            then = self.branch(node.body)
            otherwise = self.branch(node.orelse)
            self.bound = then & otherwise
        elif isinstance(node, (ast.With, ast.AsyncWith)):
            for item in node.items:
                self.expr(item.context_expr)
                if item.optional_vars is not None:
                    self.target(item.optional_vars)
            self.block(node.body)
        elif isinstance(node, ast.Try) or type(node).__name__ == "TryStar":  # TryStar: 3.11+
            self.try_(node)
        elif isinstance(node, ast.Delete):
            for target in node.targets:
                self.delete(target)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                self.bind(alias.asname or alias.name.partition(".")[0])
                self._root.definitions.add(alias.asname or alias.name.partition(".")[0])
        elif isinstance(node, ast.ImportFrom):
            for alias in node.names:
                if alias.name == "*":
                    self._root.star_import = True
                else:
                    self.bind(alias.asname or alias.name)
                    self._root.definitions.add(alias.asname or alias.name)
        elif isinstance(node, ast.Match):
            self.expr(node.subject)
            for case in node.cases:
                sub = _Flow(self.bound, shared=self._root)
                for name in _pattern_names(case.pattern):
                    sub.bind(name)
                sub.exprs(n for n in ast.walk(case.pattern) if isinstance(n, ast.expr))
                if case.guard is not None:
                    sub.expr(case.guard)
                sub.block(case.body)
        elif isinstance(node, (ast.Global, ast.Nonlocal, ast.Pass, ast.Break, ast.Continue)):
            pass
        else:  # Expr, Return, Raise, Assert and anything newer: read what it contains
            self.exprs(child for child in ast.iter_child_nodes(node) if isinstance(child, ast.expr))

    def try_(self, node: Any) -> None:
        """Names bound in a try body are only sure after it if every handler binds them too."""
        before = set(self.bound)
        body = self.branch(node.body)
        done = self.branch(node.orelse, body)
        for handler in node.handlers:
            sub = _Flow(before, shared=self._root)
            if handler.type is not None:
                sub.expr(handler.type)
            if handler.name:
                sub.bind(handler.name)
            sub.block(handler.body)
            done &= sub.bound
        self.bound = done | self.branch(node.finalbody, before)

    def target(self, node: ast.expr) -> None:
        if isinstance(node, ast.Name):
            self.bind(node.id)
        elif isinstance(node, (ast.Tuple, ast.List)):
            for element in node.elts:
                self.target(element)
        elif isinstance(node, ast.Starred):
            self.target(node.value)
        else:  # attribute or subscript assignment reads the object it writes into
            self.expr(node)

    def delete(self, node: ast.expr) -> None:
        if isinstance(node, ast.Name):
            self.read(node.id)
            self.bound.discard(node.id)
            self._root.outputs.setdefault(node.id, None)
        elif isinstance(node, (ast.Tuple, ast.List)):
            for element in node.elts:
                self.delete(element)
        else:
            self.expr(node)

    # expressions, in evaluation order (ast fields are listed in that order)
    def exprs(self, nodes: Iterable[ast.AST]) -> None:
        for node in nodes:
            self.expr(node)

    def expr(self, node: ast.AST) -> None:
        texts = _ipython_texts(node)
        if texts is not None:  # %magic and !shell lines, as IPython rewrote them
            for text in texts:
                self.ipython_text(text)
            return
        if isinstance(node, ast.Name):
            if isinstance(node.ctx, ast.Load):
                self.read(node.id)
            return
        if isinstance(node, ast.NamedExpr):
            self.expr(node.value)
            self.bind(node.target.id)
            return
        if isinstance(node, ast.Lambda):
            self.exprs(_defaults_and_annotations(node.args))
            self.scope(node)
            return
        if isinstance(node, _COMPREHENSIONS):
            self.expr(node.generators[0].iter)  # evaluated here, before any loop variable exists
            immediate, late = _free_names(node)
            for name in immediate:
                self.read(name)
            self.read_late(late)
            for walrus in _walrus_targets(node):
                self.bind(walrus)
            return
        for child in ast.iter_child_nodes(node):
            self.expr(child)

    def scope(self, node: _Scope) -> None:
        immediate, late = _free_names(node)
        for name in immediate:
            self.read(name)
        self.read_late(late)
        for name in _declared_globals(node):
            self._root.outputs.setdefault(name, None)


_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_IPYTHON_CALLS = {"run_line_magic": 1, "run_cell_magic": 1, "system": 0, "getoutput": 0}


def _ipython_texts(node: ast.AST) -> list[str] | None:
    """For ``get_ipython().run_line_magic('time', 'y = n * 2')`` and kin, the string arguments
    after the magic's name; None for any other node."""
    if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
        return None
    owner, method = node.func.value, node.func.attr
    if not (
        method in _IPYTHON_CALLS
        and isinstance(owner, ast.Call)
        and isinstance(owner.func, ast.Name)
        and owner.func.id == "get_ipython"
    ):
        return None
    texts = [a.value for a in node.args[_IPYTHON_CALLS[method] :] if isinstance(a, ast.Constant)]
    return [t for t in texts if isinstance(t, str)]


def _defaults_and_annotations(args: ast.arguments) -> list[ast.expr]:
    found: list[ast.expr] = [*args.defaults, *(d for d in args.kw_defaults if d is not None)]
    for arg in [*args.posonlyargs, *args.args, *args.kwonlyargs, args.vararg, args.kwarg]:
        if arg is not None and arg.annotation is not None:
            found.append(arg.annotation)
    return found


def _params(args: ast.arguments) -> set[str]:
    every = [*args.posonlyargs, *args.args, *args.kwonlyargs, args.vararg, args.kwarg]
    return {a.arg for a in every if a is not None}


def _pattern_names(pattern: ast.pattern) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(pattern):
        if isinstance(node, (ast.MatchAs, ast.MatchStar)) and node.name:
            names.add(node.name)
        elif isinstance(node, ast.MatchMapping) and node.rest:
            names.add(node.rest)
    return names


def _walrus_targets(node: ast.AST) -> list[str]:
    return [n.target.id for n in ast.walk(node) if isinstance(n, ast.NamedExpr)]


def _declared_globals(node: ast.AST) -> set[str]:
    return {name for n in ast.walk(node) if isinstance(n, ast.Global) for name in n.names}


def _free_names(node: _Scope | _Comprehension) -> tuple[set[str], set[str]]:
    """Names a nested scope reads from outside it: (read when defined, read when called).

    A class body and a comprehension run at once; a function or lambda body runs later.
    """
    if isinstance(node, ast.ClassDef):
        # A class body runs at once, in order: `x = x` reads the outer x before binding its own.
        body = _Flow()
        body.block(node.body)
        return set(body.inputs), set(body.late)  # methods don't see class attributes
    local, loads, nested_late = _scope_contents(node)
    free = loads - local
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
        return set(), free | (nested_late - local)
    outer = _Flow()  # a comprehension's first iterable is evaluated outside it
    outer.expr(node.generators[0].iter)
    return free | set(outer.inputs), (nested_late - local) | set(outer.late)


def _scope_contents(node: _Scope | _Comprehension) -> tuple[set[str], set[str], set[str]]:
    """(names local to the scope, names it loads, free names of scopes nested in it)."""
    local: set[str] = set()
    loads: set[str] = set()
    nested_late: set[str] = set()
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
        local |= _params(node.args)
        body: list[ast.AST] = [node.body] if isinstance(node, ast.Lambda) else list(node.body)
    elif isinstance(node, ast.ClassDef):
        body = list(node.body)
    else:
        generators = node.generators
        body = [
            g for index, gen in enumerate(generators) for g in ((gen.iter,) if index else ()) + tuple(gen.ifs)
        ]
        body += [node.key, node.value] if isinstance(node, ast.DictComp) else [node.elt]
        for gen in generators:
            local |= {n.id for n in ast.walk(gen.target) if isinstance(n, ast.Name)}
    declared_global: set[str] = set()
    stack: list[ast.AST] = list(body)
    while stack:
        child = stack.pop()
        if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            local.add(child.name)
            stack.extend(child.decorator_list)
            if isinstance(child, ast.ClassDef):
                stack.extend([*child.bases, *(k.value for k in child.keywords)])
            else:
                stack.extend(_defaults_and_annotations(child.args))
            immediate, late = _free_names(child)
            loads |= immediate
            nested_late |= late
            continue
        if isinstance(child, (ast.Lambda, *_COMPREHENSIONS)):
            if isinstance(child, ast.Lambda):
                stack.extend(_defaults_and_annotations(child.args))
            immediate, late = _free_names(child)
            loads |= immediate
            nested_late |= late
            continue
        if isinstance(child, ast.Name):
            (loads if isinstance(child.ctx, ast.Load) else local).add(child.id)
        elif isinstance(child, (ast.Import, ast.ImportFrom)):
            local |= {(a.asname or a.name).partition(".")[0] for a in child.names if a.name != "*"}
        elif (isinstance(child, ast.ExceptHandler) and child.name) or (
            isinstance(child, (ast.MatchAs, ast.MatchStar)) and child.name
        ):
            local.add(child.name)
        elif isinstance(child, ast.Global):
            declared_global |= set(child.names)
        elif isinstance(child, ast.AugAssign) and isinstance(child.target, ast.Name):
            loads.add(child.target.id)
        stack.extend(ast.iter_child_nodes(child))
    local -= declared_global
    return local, loads, nested_late
