"""What a cell reads before it binds (inputs) and what it binds (outputs)."""

from __future__ import annotations

import pytest

from ipycache_ext._analysis import analyze


@pytest.mark.parametrize(
    ("source", "inputs", "outputs"),
    [
        ("y = x + 1", {"x"}, {"y"}),
        ("x = 1\ny = x + n", {"n"}, {"x", "y"}),
        ("x += 1", {"x"}, {"x"}),
        ("df['b'] = df['a'] * 2", {"df"}, set()),
        ("obj.attr = value", {"obj", "value"}, set()),
        ("import numpy as np\nimport os.path\nfrom math import sqrt as s", set(), {"np", "os", "s"}),
        ("for i in range(n):\n    total = i", {"range", "n"}, {"i", "total"}),
        ("with open(p) as fh:\n    data = fh.read()", {"open", "p"}, {"fh", "data"}),
        ("if c:\n    x = 1\nelse:\n    x = 2\ny = x", {"c"}, {"x", "y"}),
        ("if c:\n    x = 1\ny = x", {"c", "x"}, {"x", "y"}),  # x may come from before
        ("r = [a * k for a in lst if a > t]", {"k", "t", "lst"}, {"r"}),
        ("(y := g(1)) + y", {"g"}, {"y"}),
        ("f = lambda q: q + zz", {"zz"}, {"f"}),
        ("del old", {"old"}, {"old"}),
        ("try:\n    v = risky()\nexcept E as e:\n    v = None\nw = v", {"risky", "E"}, {"v", "e", "w"}),
        ("def setup():\n    global conn\n    conn = connect()\nsetup()", {"connect"}, {"setup", "conn"}),
        ("match p:\n    case [a, *rest]:\n        z = a", {"p"}, {"a", "rest", "z"}),
        ("y = [row for row in row]", {"row"}, {"y"}),  # the first iterable is read outside
        ("class A:\n    x = x", {"x"}, {"A"}),  # a class body reads before it binds
        ("def f():\n    return x\nz = f()\nx = 1", {"x"}, {"f", "z", "x"}),  # x is read before bound
        ("x = 1\ndef f():\n    return x\nz = f()", set(), {"x", "f", "z"}),
    ],
)
def test_inputs_and_outputs(source: str, inputs: set[str], outputs: set[str]) -> None:
    analysis = analyze(source)
    assert set(analysis.inputs) == inputs
    assert set(analysis.outputs) == outputs


def test_functions_read_globals_when_called() -> None:
    analysis = analyze("def f():\n    return helper(n)\ndef helper(x):\n    return x + 1\ny = f()")
    assert set(analysis.inputs) == {"n"}  # helper is bound by the cell itself


def test_class_bodies_read_at_once_and_methods_later() -> None:
    analysis = analyze("class A(Base):\n    k = v\n    def m(self):\n        return g(self.k)\nobj = A()")
    assert set(analysis.inputs) == {"Base", "v", "g"}
    assert set(analysis.outputs) == {"A", "obj"}


def test_function_locals_are_not_inputs() -> None:
    analysis = analyze("def f(a, *args, b=dflt, **kw):\n    tmp = a + len(args)\n    return tmp\n")
    assert set(analysis.inputs) == {"dflt", "len"}


def test_definite_outputs_are_those_bound_on_every_path() -> None:
    analysis = analyze("a = 1\nif c:\n    b = 2\nfor i in r:\n    d = i")
    assert analysis.definite == {"a"}


def test_star_import_is_flagged() -> None:
    assert analyze("from os.path import *").star_import


def test_code_digest_ignores_comments_and_formatting_only() -> None:
    a = analyze("x = 1\ny = x + 2")
    b = analyze("# comment\nx = 1\n\ny = x+2   # more")
    c = analyze("x = 1\ny = x + 3")
    assert a.code_digest == b.code_digest != c.code_digest


def test_imports_anywhere_in_the_cell_are_listed_with_their_fromlist() -> None:
    source = (
        "import helpers\nimport pkg.sub as s\nfrom utils import f, g\nfrom stars import *\n"
        "from . import rel\ndef later():\n    import inner\n"
    )
    assert analyze(source).imports == (
        ("helpers", ()),
        ("pkg.sub", ()),
        ("utils", ("f", "g")),
        ("stars", ("*",)),
        ("inner", ()),
    )
    assert analyze("x = 1").imports == ()
