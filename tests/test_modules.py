"""Your own modules: keyed by their live code, their file and the local modules they import,
transitively; edited, reloaded and autoreloaded on disk."""

from __future__ import annotations

import functools
import importlib
import os
import sys
import textwrap
import threading
import types
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from IPython.core.interactiveshell import InteractiveShell

from ipycache_ext import CacheStore, cache_data
from ipycache_ext._hash_code import ImportProblem, ModuleName, import_target
from ipycache_ext._hashing import digest, import_inputs

from .conftest import run

Write = Callable[[str, str], Path]


@pytest.fixture
def modules(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Write]:
    """Write module files under a fresh sys.path entry; forget them afterwards."""
    monkeypatch.syspath_prepend(str(tmp_path))
    written: list[str] = []
    stamp = [1_700_000_000]

    def write(relative: str, source: str) -> Path:
        path = tmp_path / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(source))
        stamp[0] += 10  # a later mtime each time, as an editor's save gives (autoreload compares them)
        os.utime(path, (stamp[0], stamp[0]))
        written.append(relative.removesuffix(".py").removesuffix("/__init__").replace("/", "."))
        importlib.invalidate_caches()
        return path

    yield write
    for name in list(sys.modules):
        if name.partition(".")[0] in {w.partition(".")[0] for w in written}:
            del sys.modules[name]


def test_a_local_module_changes_with_a_module_it_imports(modules: Write) -> None:
    modules("km_utils.py", "def g(x):\n    return x + 1\n")
    modules("km_helpers.py", "import km_utils\ndef f(x):\n    return km_utils.g(x) * 2\n")
    helpers = importlib.import_module("km_helpers")
    before = digest(helpers)
    assert digest(helpers) == before
    modules("km_utils.py", "def g(x):\n    return x + 2\n")
    importlib.reload(sys.modules["km_utils"])
    assert digest(helpers) != before


def test_from_imports_are_seen_through_the_function_they_bound(modules: Write) -> None:
    modules("km_futils.py", "def g(x):\n    return x + 1\n")
    modules("km_fhelpers.py", "from km_futils import g\ndef f(x):\n    return g(x)\n")
    helpers = importlib.import_module("km_fhelpers")
    before = digest(helpers)
    modules("km_futils.py", "def g(x):\n    return x - 1\n")
    importlib.reload(sys.modules["km_futils"])
    importlib.reload(helpers)  # helpers.g is the new g only once helpers is reloaded too
    assert digest(helpers) != before


def test_a_package_is_keyed_by_its_submodules(modules: Write) -> None:
    modules("km_pkg/__init__.py", "from . import sub\n")
    modules("km_pkg/sub.py", "def h():\n    return 1\n")
    package = importlib.import_module("km_pkg")
    before = digest(package)
    modules("km_pkg/sub.py", "def h():\n    return 2\n")
    importlib.reload(sys.modules["km_pkg.sub"])
    assert digest(package) != before


def test_a_same_size_edit_with_the_same_mtime_is_seen_after_a_reload(modules: Write) -> None:
    path = modules("km_same.py", "def f():\n    return 1\n")
    module = importlib.import_module("km_same")
    info = os.stat(path)
    before = digest(module)
    path.write_text("def f():\n    return 7\n")
    os.utime(path, ns=(info.st_atime_ns, info.st_mtime_ns))
    assert os.stat(path).st_size == info.st_size and os.stat(path).st_mtime_ns == info.st_mtime_ns
    sys.modules.pop("km_same")
    importlib.invalidate_caches()
    fresh = importlib.import_module("km_same")
    assert fresh.f() == 7
    assert digest(fresh) != before


def test_runtime_attributes_of_a_local_module_are_inputs(modules: Write) -> None:
    modules("km_config.py", "THRESHOLD = 1\nNAMES = ['a']\n")
    config = importlib.import_module("km_config")
    namespace: dict[str, Any] = {"__name__": "__main__", "km_config": config}
    exec("def above(x):\n    return x > km_config.THRESHOLD", namespace)
    before_module, before_function = digest(config), digest(namespace["above"])
    config.THRESHOLD = 2
    assert digest(config) != before_module
    assert digest(namespace["above"]) != before_function
    config.THRESHOLD = 1
    assert digest(config) == before_module
    config.NAMES.append("b")  # changed in place, not rebound
    assert digest(config) != before_module


def test_a_module_made_at_runtime_is_keyed_by_its_attributes() -> None:
    settings = types.ModuleType("km_runtime_settings")
    settings.width = 3  # type: ignore[attr-defined]
    before = digest(settings)
    settings.width = 4  # type: ignore[attr-defined]
    assert digest(settings) != before


def test_an_unhashable_module_attribute_counts_by_its_type(modules: Write) -> None:
    modules("km_locked.py", "import threading\n_lock = threading.Lock()\ndef f():\n    return 1\n")
    module = importlib.import_module("km_locked")
    assert digest(module) == digest(module)
    assert isinstance(module._lock, type(threading.Lock()))


def test_an_import_inside_a_function_is_part_of_its_key(modules: Write) -> None:
    modules("km_lazy.py", "def g():\n    return 1\n")
    namespace: dict[str, Any] = {"__name__": "__main__"}
    exec("def f():\n    import km_lazy\n    return km_lazy.g()", namespace)
    assert "km_lazy" not in sys.modules
    first = digest(namespace["f"])  # imports km_lazy, as calling f will
    assert "km_lazy" in sys.modules
    assert namespace["f"]() == 1
    assert digest(namespace["f"]) == first  # the same key before and after the first call
    modules("km_lazy.py", "def g():\n    return 2\n")
    importlib.reload(sys.modules["km_lazy"])
    assert digest(namespace["f"]) != first


def test_from_import_and_star_import_targets(modules: Write) -> None:
    modules("km_star.py", "__all__ = ['a']\na = 1\n")
    inputs = import_inputs([("km_star", ("*",)), ("json", ()), ("km_no_such_module", ())])
    assert set(inputs) == {"import km_star", "import json", "import km_no_such_module"}
    assert isinstance(inputs["import km_star"], types.ModuleType)
    assert isinstance(inputs["import km_no_such_module"], ImportProblem)
    before = digest(inputs["import km_star"])
    modules("km_star.py", "__all__ = ['a']\na = 2\n")
    importlib.reload(sys.modules["km_star"])
    assert digest(import_inputs([("km_star", ("*",))])["import km_star"]) != before


def test_an_installed_module_not_imported_yet_has_its_loaded_digest() -> None:
    name = "colorsys"
    if name in sys.modules:
        pytest.skip("colorsys is already imported in this process")
    target = import_target(name)
    assert isinstance(target, ModuleName) and name not in sys.modules
    before = digest(target)
    importlib.import_module(name)
    assert digest(import_target(name)) == before


def test_instances_and_partials_of_local_code_are_keyed_by_that_code(modules: Write) -> None:
    source = (
        "class Model:\n    def __init__(self):\n        self.w = 2\n"
        "    def predict(self, x):\n        return x * self.w\n"
        "def scale(x, k):\n    return x * k\n"
    )
    modules("km_model.py", source)
    module = importlib.import_module("km_model")
    old_class, old_scale = module.Model, module.scale
    model, scaled = old_class(), functools.partial(old_scale, k=3)
    before = digest(model), digest(scaled)
    # a patch in place, as %autoreload 2 does: the old objects now run the new code
    modules("km_model.py", source.replace("x * self.w", "x + self.w").replace("x * k", "x - k"))
    importlib.reload(module)
    old_class.predict.__code__ = module.Model.predict.__code__
    old_scale.__code__ = module.scale.__code__
    assert model.predict(1) == 3
    assert digest(model) != before[0]
    assert digest(scaled) != before[1]


@pytest.fixture
def autoreloading(shell: InteractiveShell) -> Iterator[InteractiveShell]:
    run(shell, "%load_ext autoreload\n%autoreload 2")
    yield shell
    run(shell, "%autoreload 0")


def test_autoreload_patches_are_seen_by_cached_cells(autoreloading: InteractiveShell, modules: Write) -> None:
    ip = autoreloading
    source = """
        class Model:
            def predict(self, x):
                return x * 2
        def helper(x):
            return x + 1
        """
    path = modules("km_auto.py", source)
    run(ip, "import km_auto\nfrom km_auto import helper\nmodel = km_auto.Model()\nran = []")
    cell = "%%cache_data --ignore ran\nran.append(1)\nout = (model.predict(10), helper(1))"
    run(ip, cell)
    run(ip, cell)
    assert ip.user_ns["ran"] == [1] and ip.user_ns["out"] == (20, 2)
    path.write_text(textwrap.dedent(source).replace("x * 2", "x * 3").replace("x + 1", "x + 5"))
    os.utime(path, (1_800_000_000, 1_800_000_000))
    run(ip, "pass")  # autoreload patches before this cell runs
    run(ip, cell)
    assert ip.user_ns["ran"] == [1, 1] and ip.user_ns["out"] == (30, 6)
    run(ip, cell)
    assert ip.user_ns["ran"] == [1, 1]


def test_a_decorated_function_importing_a_local_module_sees_its_edits(
    shell: InteractiveShell, store: CacheStore, modules: Write, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cache_data, "store", store)
    modules("km_dec.py", "def g():\n    return 1\n")
    run(
        shell,
        "from ipycache_ext import cache_data\nimport importlib, sys\n"
        "@cache_data\ndef load():\n    import km_dec\n    return km_dec.g()",
    )
    assert run(shell, "load()") == 1
    assert run(shell, "load()") == 1
    assert store.stats().misses == 1
    modules("km_dec.py", "def g():\n    return 2\n")
    run(shell, "importlib.reload(sys.modules['km_dec'])")
    assert run(shell, "load()") == 2
    assert store.stats().misses == 2


def test_a_relative_import_in_a_package_function_is_resolved_and_keyed(modules: Write) -> None:
    modules("km_rel/__init__.py", "")
    modules("km_rel/b.py", "def g():\n    return 1\n")
    modules("km_rel/a.py", "def f():\n    from . import b\n    return b.g()\n")
    a = importlib.import_module("km_rel.a")
    before = digest(a.f)
    assert a.f() == 1 and digest(a.f) == before
    modules("km_rel/b.py", "def g():\n    return 2\n")
    importlib.reload(sys.modules["km_rel.b"])
    assert digest(a.f) != before


def test_installed_versions_are_those_importlib_metadata_gives() -> None:
    """The quick read (the distribution beside the package, its header lines) agrees with
    ``importlib.metadata`` for every installed package this process has imported."""
    import importlib.metadata

    from ipycache_ext._hash_code import module_version

    checked = 0
    for top in sorted({name.partition(".")[0] for name in list(sys.modules)}):
        try:
            dist = importlib.metadata.distribution(top)
        except (importlib.metadata.PackageNotFoundError, ValueError):
            continue
        if not any(Path(str(dist.locate_file(f"{top}{end}"))).is_file() for end in ("/__init__.py", ".py")):
            continue  # not shipped under its own name: the full scan decides, as before
        assert module_version.__wrapped__(top) == f"{dist.metadata['Name']}=={dist.version}", top
        checked += 1
    assert checked >= 3  # numpy, pandas, xxhash at least


def test_version_of_a_distribution_with_an_unusual_name_and_header(tmp_path: Path) -> None:
    """``Foo.Bar`` installed as ``foo_bar-1.2.dist-info``, a folded field before Version."""
    from ipycache_ext._hash_code import module_version

    (tmp_path / "foo_bar").mkdir()
    (tmp_path / "foo_bar" / "__init__.py").write_text("")
    info = tmp_path / "Foo.Bar-1.2.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: Foo.Bar\nSummary: a summary\n  folded on: two lines\n"
        "Version: 1.2\n\nName: not a header\nVersion: 9\n"
    )
    sys.path.insert(0, str(tmp_path))
    try:
        importlib.import_module("foo_bar")
        assert module_version.__wrapped__("foo_bar") == "Foo.Bar==1.2"
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("foo_bar", None)


def test_a_module_file_rewritten_within_one_tick_of_the_clock_gets_a_new_digest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a clock that ticks once a second (Linux before 6.13 ticks every few ms; this
    machine's kernel stamps finer times), two saves in one tick leave the stat as it was."""
    from ipycache_ext import _hash_code

    class CoarseOs:
        def __getattr__(self, name: str) -> Any:
            return getattr(os, name)

        @staticmethod
        def stat(path: str) -> Any:
            info = os.stat(path)
            return types.SimpleNamespace(
                st_ino=info.st_ino,
                st_size=info.st_size,
                st_mtime_ns=info.st_mtime_ns // 10**9 * 10**9,
                st_ctime_ns=info.st_ctime_ns // 10**9 * 10**9,
            )

    monkeypatch.setattr(_hash_code, "os", CoarseOs())
    source = tmp_path / "saved_twice.py"
    for _attempt in range(3):  # a save that crossed a tick moves the stat anyway: try again
        source.write_text("X = 1\n")
        first = _hash_code.source_digest(str(source))
        stat = CoarseOs.stat(str(source))
        source.write_text("X = 2\n")
        if CoarseOs.stat(str(source)) == stat:
            break
    else:
        pytest.skip("no save landed within the same second")
    assert _hash_code.source_digest(str(source)) != first
