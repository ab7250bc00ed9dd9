"""Hashing data: numpy and pandas by their values (Arrow in ``_hash_arrow``; large buffers,
in parallel pieces, in ``_hash_buffers``).

Libraries are only looked at when already imported: hashing never imports them.
"""

from __future__ import annotations

import functools
import sys
from typing import TYPE_CHECKING, Any

from ._hash_arrow import chunked, walk_arrow

if TYPE_CHECKING:
    from ._hashing import Walker


# ------------------------------------------------------------------ dispatch
def walk_data(w: Walker, value: Any) -> bool:
    """Hash ``value`` if it is numpy, pandas or Arrow data; False otherwise."""
    np = sys.modules.get("numpy")
    if np is not None:
        if type(value) is np.ndarray:
            ndarray(w, value)
            return True
        if isinstance(value, np.generic):
            _scalar(w, np, value)
            return True
        ma = sys.modules.get("numpy.ma")
        if ma is not None and isinstance(value, ma.MaskedArray):
            _masked(w, ma, value)
            return True
    pd = sys.modules.get("pandas")
    if pd is not None and _pandas(w, pd, value):
        return True
    pa = sys.modules.get("pyarrow")
    return pa is not None and walk_arrow(w, pa, value)


# ------------------------------------------------------------------ library objects
# Attributes that are not content: back-links keyed by id() (they differ in every process
# and between two equal figures); the artists they point to are reached from the figure.
_VOLATILE = {
    "matplotlib.transforms.TransformNode": frozenset({"_parents", "_inverted"}),
    # pyplot's figure number and whether pyplot still holds it: which window, not what's drawn
    "matplotlib.figure.Figure": frozenset({"_number", "_restore_to_pylab"}),
    # pandas' copy-on-write marks an array handed out as a view read-only (a sparse column
    # of ``s.iloc[1:3]``): like a numpy array's writeable flag, not its values (pandas 3
    # names the class by its public module)
    "pandas.api.extensions.ExtensionArray": frozenset({"_readonly"}),
    "pandas.core.arrays.base.ExtensionArray": frozenset({"_readonly"}),
}


def volatile_attributes(cls: type) -> frozenset[str]:
    found: frozenset[str] = frozenset()
    for klass in cls.__mro__:
        names = _VOLATILE.get(f"{klass.__module__}.{klass.__qualname__}")
        if names:
            found |= names
    return found


def library_stand_in(value: Any) -> Any:
    """What to hash instead of an object whose pickled state is not its content, or None.

    matplotlib's CallbackRegistry advances a counter each time it is pickled, and its
    callback ids count every connection ever made: its content is the picklable callbacks.
    """
    artist = sys.modules.get("matplotlib.artist")
    if artist is not None and isinstance(value, artist.Artist):
        # Drawing fills caches (text layout, ticks, transforms), and the inline backend draws
        # every figure its cell made: hash artists as drawn, so drawn or not is one key.
        # Nothing is rendered to pixels, and drawing again leaves the same state. The
        # figure is drawn before any of its artists is hashed, whichever is met first.
        figure: Any = getattr(value, "figure", None)
        while getattr(figure, "figure", figure) is not figure:  # a subfigure's root figure
            figure = figure.figure
        draw = getattr(figure, "draw_without_rendering", None)
        if draw is not None and figure.stale:
            draw()
    transforms = sys.modules.get("matplotlib.transforms")
    if transforms is not None and isinstance(value, transforms.TransformNode) and value._invalid:
        # A transform or box caches its matrix or points until asked: ask, so the cache
        # holds what it would compute now, whatever was drawn before.
        refresh = getattr(value, "get_matrix", None) or getattr(value, "get_points", None)
        if refresh is not None:
            refresh()
    cbook = sys.modules.get("matplotlib.cbook")
    if cbook is not None and isinstance(value, cbook.CallbackRegistry):
        kept = value._pickled_cids
        return {
            signal: [proxy() for cid, proxy in sorted(callbacks.items()) if cid in kept]
            for signal, callbacks in sorted(value.callbacks.items())
        }
    return None


# ------------------------------------------------------------------ numpy
def _scalar(w: Walker, np: Any, value: Any) -> None:
    """A numpy scalar by its dtype and bytes; a structured one (``np.void``) as the 0-d
    array it is an item of, so its field names and types count (its ``dtype.str`` is only
    ``|V4``) and its padding doesn't."""
    w.tag(b"np.scalar")
    w.text(value.dtype.str)
    if value.dtype.names is not None:
        ndarray(w, np.asarray(value))
    elif value.dtype.hasobject:
        w.walk(value.item())
    else:
        w.blob(value.tobytes())


def _masked(w: Walker, ma: Any, value: Any) -> None:
    """A masked array by what it shows, not by its lazily filled attributes.

    ``repr`` and ``filled()`` set ``_fill_value`` on first use and a pickle round trip
    turns ``nomask`` into an array of False: so its class, data, mask (no masked item is
    one frame, however stored), fill value (the property: the default when unset, as
    ``repr`` would set it) and ``hardmask``. The data under the mask counts: ``.data`` is
    public and results read it (``m.data.sum()``), so it is part of the value.
    """
    w.tag(b"np.ma")
    w.walk(type(value))
    w.walk(ma.getdata(value))
    mask = ma.getmask(value)
    if mask is ma.nomask or (mask.dtype.names is None and not mask.any()):
        w.tag(b"nomask")
    else:
        w.walk(ma.getmaskarray(value))
    w.walk(value.fill_value)
    w.walk(bool(value.hardmask))


def ndarray(w: Walker, array: Any) -> None:
    """dtype, shape, memory order (C or Fortran: ``ravel(order="K")``, ``tobytes("A")`` and
    speed differ) and every byte (but a structured dtype's padding: see ``_padded``)."""
    np = sys.modules["numpy"]
    w.tag(b"ndarray")
    w.text(array.dtype.str if array.dtype.fields is None else repr(array.dtype.descr))
    w.walk(tuple(int(n) for n in array.shape))
    fortran = array.ndim > 1 and array.flags.f_contiguous and not array.flags.c_contiguous
    w.tag(b"F" if fortran else b"C")
    if array.dtype.hasobject:
        items = array.ravel(order="C").tolist()
        if all(type(item) is str for item in items):
            _strings(w, items)
        else:
            for item in items:
                w.walk(item)
        return
    if array.dtype.names is not None and _padded(array.dtype):
        # Padding bytes are whatever memory held (they differ between equal arrays and
        # processes): hash each field on its own, in the dtype's order, with the layout.
        w.tag(b"fields")
        w.text(str(array.dtype))
        for name in array.dtype.names:
            ndarray(w, array[name])
        return
    contiguous = array.T if fortran else np.ascontiguousarray(array)
    w.blob(memoryview(contiguous.reshape(-1).view(np.uint8)))


@functools.lru_cache(maxsize=256)
def _padded(dtype: Any) -> bool:
    """Whether a structured dtype has bytes no field covers (alignment padding, offset gaps,
    or fields that overlap), itself or in a nested structured or subarray field."""
    if dtype.subdtype is not None:
        return _padded(dtype.subdtype[0])
    if dtype.names is None:
        return False
    end = 0
    for name in sorted(dtype.names, key=lambda name: dtype.fields[name][1]):
        field, offset = dtype.fields[name][:2]
        if offset != end or _padded(field):
            return True
        end = offset + field.itemsize
    return bool(end != dtype.itemsize)


def _strings(w: Walker, items: list[str]) -> None:
    """Many strings at once: their concatenation plus every length, so the split is unique."""
    np = sys.modules["numpy"]
    w.tag(b"strings")
    lengths = np.fromiter(map(len, items), dtype=np.int64, count=len(items))
    w.blob(memoryview(lengths).cast("B"))
    w.blob("".join(items).encode("utf-8", "surrogatepass"))


# ------------------------------------------------------------------ pandas
def _frame_extras(w: Walker, value: Any) -> None:
    """What travels with a pandas object besides its values: ``attrs`` and its flags."""
    w.walk(dict(value.attrs))
    w.walk(bool(value.flags.allows_duplicate_labels))


def _pandas(w: Walker, pd: Any, value: Any) -> bool:
    if isinstance(value, pd.DataFrame):
        w.tag(b"pd.DataFrame")
        w.walk(type(value))
        _frame_extras(w, value)
        w.walk(value.columns)
        w.walk(value.index)
        w.u64(value.shape[1])
        for column in (value.iloc[:, i] for i in range(value.shape[1])):
            w.text(str(column.dtype))
            _array(w, column.array)
        return True
    if isinstance(value, pd.Series):
        w.tag(b"pd.Series")
        w.walk(type(value))
        _frame_extras(w, value)
        w.walk(value.name)
        w.walk(value.index)
        w.text(str(value.dtype))
        _array(w, value.array)
        return True
    if isinstance(value, pd.MultiIndex):
        w.tag(b"pd.MultiIndex")
        w.walk(list(value.names))
        w.walk(list(value.levels))
        w.walk([value.codes[i] for i in range(value.nlevels)])
        return True
    if isinstance(value, pd.RangeIndex):
        w.tag(b"pd.RangeIndex")
        w.walk(value.name)
        w.walk((value.start, value.stop, value.step))
        return True
    if isinstance(value, pd.Index):
        w.tag(b"pd.Index")
        w.walk(type(value))
        w.walk(value.name)
        w.text(str(value.dtype))
        w.walk(getattr(value, "freqstr", None))  # a DatetimeIndex's freq shows in shift(), +1
        _array(w, value.array)
        return True
    if isinstance(value, pd.api.extensions.ExtensionArray):
        _array(w, value)
        return True
    return False


def _array(w: Walker, array: Any) -> None:
    """The values of a pandas column or index, by their physical layout."""
    pd = sys.modules["pandas"]
    w.text(type(array).__qualname__)
    if isinstance(array, pd.Categorical):
        w.walk(array.categories)
        w.walk(bool(array.ordered))
        ndarray(w, array.codes)
        return
    inner = getattr(array, "_ndarray", None)  # numpy-backed: datetimes, python strings
    if inner is not None:
        w.text(str(array.dtype))
        ndarray(w, inner)
        return
    data, mask = getattr(array, "_data", None), getattr(array, "_mask", None)
    if data is not None and mask is not None:  # masked: Int64, Float64, boolean
        ndarray(w, _unmasked_zeroed(data, mask))
        ndarray(w, mask)
        return
    arrow = getattr(array, "_pa_array", None)
    if arrow is not None:
        chunked(w, arrow)
        return
    w.reduced(array)


def _unmasked_zeroed(data: Any, mask: Any) -> Any:
    """``data`` with its masked (NA) slots zeroed: what lies under them is left over from
    whatever was there (``s.iloc[1] = pd.NA`` keeps the old value; construction writes 1),
    not part of the value. Copied only when a masked slot holds a byte that isn't zero."""
    if not mask.any() or not data[mask].view(sys.modules["numpy"].uint8).any():
        return data
    zeroed = data.copy()
    zeroed[mask] = 0
    return zeroed
