"""Recorded kernel calls compiled into one function, so a step costs one Python-to-Numba call.

A training step or a small prediction is a fixed list of ``(kernel, args)`` calls on fixed
buffers (``Sequential._plan``). Run from Python, every call pays Numba's dispatch and the
unboxing of each array argument: 3-6 us per call here, most of a small network's step. This
module writes the list out as the source of one ``@njit`` function whose parameters are the
distinct arguments, imports it and calls it once per step.

The generated source depends only on the *structure* of the list (which kernels, and which
argument positions share one buffer), never on sizes or values, so models of one structure
share it. Files are named by a hash of their source and of the kernels' cache stamp, so a
changed kernel never meets a stale compiled step; they live in fastnn's cache folder, and
Numba caches their compiled code beside them.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import hashlib
import importlib.util
import os
import sys
import tempfile
import threading
import time
import warnings
from typing import Any, Callable, Iterator, Sequence

import numpy as np
from numba import typeof
from numba.core.registry import CPUDispatcher

from . import _compiling, _config, _parallel_compile
from .kernels import _cache

Call = tuple[Any, tuple]  # (a kernel: a Numba dispatcher, Any to mypy; its arguments)


def cache_dir() -> str:
    """Folder of the generated step functions: ``$FASTNN_CACHE_DIR``, else under
    ``$NUMBA_CACHE_DIR``, else ``~/.cache/fastnn`` (a temporary folder if that is not writable)."""
    root = os.environ.get("FASTNN_CACHE_DIR")
    if not root:
        numba_dir = os.environ.get("NUMBA_CACHE_DIR")
        root = (
            os.path.join(numba_dir, "fastnn")
            if numba_dir
            else os.path.join(os.path.expanduser("~"), ".cache", "fastnn")
        )
    user = f"-{os.getuid()}" if hasattr(os, "getuid") else ""  # Windows' temporary folder is per-user already
    for candidate in (root, os.path.join(tempfile.gettempdir(), f"fastnn{user}")):
        try:
            os.makedirs(candidate, exist_ok=True)
            if os.access(candidate, os.W_OK):
                return candidate
        except OSError:
            continue
    raise OSError(
        f"no writable folder for fastnn's compiled steps (tried {root!r}); set FASTNN_CACHE_DIR to a writable folder"
    )


def fusible(calls: Sequence[Call]) -> bool:
    """True when every callable is a fastnn ``@njit`` kernel (user layers are not)."""
    return all(isinstance(fn, CPUDispatcher) and fn.py_func.__module__.startswith("fastnn.kernels") for fn, _ in calls)


class Result:
    """An argument that is the value returned by an earlier call of the same list (call number
    ``index``): a loss or a norm handed on to a later kernel inside the one compiled call."""

    __slots__ = ("index",)
    CALL_ARGUMENT = "result"  # what fastnn._parallel_compile types as the earlier call's return type

    def __init__(self, index: int):
        self.index = index

    def __repr__(self) -> str:
        return f"Result({self.index})"


class Given:
    """An argument given anew at every call (argument number ``index`` after the slots' arrays of
    :class:`CallRunner`/:class:`FusedCalls`), a parameter of its own of the compiled function: data
    whose size changes between uses of one recorded list (``fit``'s whole data set) or a scalar
    that changes per call (the rows of the batch)."""

    __slots__ = ("index",)
    CALL_ARGUMENT = "given"  # what fastnn._parallel_compile types as the value given at the call

    def __init__(self, index: int):
        self.index = index

    def __repr__(self) -> str:
        return f"Given({self.index})"


def only_call(calls: Sequence[Call], kernel) -> tuple | None:
    """The arguments of ``calls`` (one layer's recorded calls) when they are the one call of
    ``kernel``, else None: what the step plans' fusion passes recognise a layer by."""
    if len(calls) == 1 and calls[0][0] is kernel:
        return calls[0][1]
    return None


def same_array(a, b) -> bool:
    """Whether ``a`` and ``b`` are views of one buffer with one shape and strides: the test by
    which the fusion passes find one recorded call's output among the next call's arguments."""
    return (
        isinstance(a, np.ndarray)
        and isinstance(b, np.ndarray)
        and a.shape == b.shape
        and a.strides == b.strides
        and a.__array_interface__["data"][0] == b.__array_interface__["data"][0]
    )


def _n_given(calls: Sequence[Call]) -> int:
    """How many :class:`Given` arguments ``calls`` take (one past the highest index)."""
    return 1 + max((v.index for _, values in calls for v in values if isinstance(v, Given)), default=-1)


def _referenced(calls: Sequence[Call]) -> frozenset:
    """Indices of the calls whose results later calls take as :class:`Result` arguments."""
    return frozenset(v.index for _, values in calls for v in values if isinstance(v, Result))


def _root(arr: np.ndarray) -> np.ndarray:
    while isinstance(arr.base, np.ndarray):
        arr = arr.base
    return arr


def _scalar_expr(value, fv: list, iv: list) -> str:
    """Source that reads scalar ``value`` back, with its Numba type, from the packed arrays (None
    stays None: a kernel prunes what a None argument switches off, kernels.step_update)."""
    if value is None:
        return "None"
    if isinstance(value, (bool, np.bool_)):
        iv.append(int(value))
        return f"(iv[{len(iv) - 1}] != 0)"
    if isinstance(value, (int, np.integer)):
        iv.append(int(value))
        kind = "" if isinstance(value, int) or np.dtype(type(value)) == np.int64 else f"np.{np.dtype(type(value)).name}"
        return f"{kind}(iv[{len(iv) - 1}])" if kind else f"iv[{len(iv) - 1}]"
    if isinstance(value, (float, np.floating)):
        fv.append(float(value))
        kind = (
            ""
            if isinstance(value, float) or np.dtype(type(value)) == np.float64
            else f"np.{np.dtype(type(value)).name}"
        )
        return f"{kind}(fv[{len(fv) - 1}])" if kind else f"fv[{len(fv) - 1}]"
    raise TypeError(f"cannot fuse an argument of type {type(value).__name__}")


class _Arguments:
    """The distinct buffers of a list of calls: every C-contiguous array that is a view of a
    C-contiguous buffer becomes a view of that buffer inside the function (:meth:`view_line`), so
    one parameter serves all views of one buffer (a layer's workspace, the flat parameters);
    the other arrays are parameters of their own; scalars are packed into two arrays."""

    def __init__(self):
        self.buffers: list[np.ndarray] = []  # flat views of the root buffers, then loose arrays
        self._buffer_index: dict[int, int] = {}
        self.meta: list[int] = []
        self.fv: list[float] = []
        self.iv: list[int] = []
        self.views: list[tuple[str, int, int, np.ndarray]] = []  # (name, buffer index, meta start, the view)
        self._names: dict[int, str] = {}
        self._flats: dict[int, np.ndarray] = {}

    def _buffer(self, arr: np.ndarray) -> int:
        """The number of ``arr`` among the buffers (its parameter is ``b<number>``), added once."""
        if id(arr) not in self._buffer_index:
            self._buffer_index[id(arr)] = len(self.buffers)
            self.buffers.append(arr)
        return self._buffer_index[id(arr)]

    def array(self, arr: np.ndarray) -> str:
        name = self._names.get(id(arr))
        if name is not None:
            return name
        root = _root(arr)
        if (
            arr.flags.c_contiguous
            and root.flags.c_contiguous
            and root.dtype == arr.dtype
            and 1 <= arr.ndim <= 4
            and arr.size > 0
        ):
            flat = self._flat(root)
            start = (arr.__array_interface__["data"][0] - root.__array_interface__["data"][0]) // arr.itemsize
            m = len(self.meta)
            self.meta += [start, start + arr.size, *arr.shape]
            name = f"v{len(self._names)}"
            self.views.append((name, self._buffer(flat), m, arr))
        else:
            name = f"b{self._buffer(arr)}"
        self._names[id(arr)] = name
        return name

    def view_line(self, view: tuple[str, int, int, np.ndarray], table_entry: int | None, slot: int | None) -> str:
        """The source line that makes a view: for a buffer passed by address (its entry in the
        table, ``table_entry``), ``numba.carray`` at the view's own address (no slicing, no
        reshape checks: ~40 ns less a view, measured on the 50 views of a tiny step); for a slot's
        buffer (number ``slot``: its size and layout checked once at the top), ``numba.carray`` at
        the address in the array passed, of that array's dtype (no reference count: the caller
        holds the array; ~0.1 us less a tiny step's call); for a parameter, ``view<ndim>`` of it
        (:mod:`fastnn.kernels.views`)."""
        name, buffer, m, arr = view
        shape = ", ".join(f"meta[{m + 2 + axis}]" for axis in range(arr.ndim))
        if slot is not None:
            at = f"p{slot} + meta[{m}] * s{slot}.itemsize"
            return f"    {name} = carray(pointer({at}), ({shape},), s{slot}.dtype)"
        if table_entry is None:
            return f"    {name} = view{arr.ndim}(b{buffer}, meta[{m}:{m + 2 + arr.ndim}])"
        at = f"table[{2 * table_entry}] + meta[{m}] * {arr.itemsize}"
        return f"    {name} = carray(pointer({at}), ({shape},), np.{arr.dtype.name})"

    def _flat(self, root: np.ndarray) -> np.ndarray:
        """One flat view per root buffer (made once, so the parameter is shared)."""
        flat = self._flats.get(id(root))
        if flat is None:
            flat = self._flats[id(root)] = root.reshape(-1)
        return flat

    def value(self, value) -> str:
        if isinstance(value, Result):
            return f"r{value.index}"
        if isinstance(value, Given):
            return f"g{value.index}"
        if isinstance(value, tuple):  # (a Dense chain's per-layer arrays): built inside the function
            return f"({''.join(f'{self.value(v)}, ' for v in value)})"
        return self.array(value) if isinstance(value, np.ndarray) else _scalar_expr(value, self.fv, self.iv)


def _returned(returns) -> tuple[int, ...]:
    """``returns`` (None, an index or a tuple of indices) as a tuple of indices."""
    if returns is None:
        return ()
    return tuple(returns) if isinstance(returns, tuple) else (returns,)


def _by_address(flat: np.ndarray) -> bool:
    """Whether the flat view of a root buffer (not a slot's) goes into the step by address:
    writeable, of a plain numeric dtype."""
    return flat.flags.writeable and flat.dtype.isnative and flat.dtype.kind in "iuf"


def _source(calls: Sequence[Call], returns, slots: Sequence = ()) -> tuple[str, list, list]:
    """(source of ``run``, the values to pass to it, the arrays they point to) for ``calls``;
    ``run`` returns the result of call number ``returns`` (a tuple of results for a tuple of
    indices; nothing for None).

    ``run(address, *slots, *loose)``: ``address`` is that of an int64 table of ``(address, size)``
    pairs (the records, the scalars and the buffers that are neither slots nor read-only), which
    ``run`` takes back as ``numba.carray`` arrays (no unboxing, no reference counts; the caller
    keeps the arrays of the table alive); then one C-contiguous array per slot (see
    :class:`FusedCalls`; checked for layout and size at the top, then read by address as well,
    its views of its own dtype); then the other arrays (read-only or not C-contiguous); then the
    :class:`Given` arguments."""
    wanted = _returned(returns)
    names: dict[tuple[str, str], str]  # (module, function) -> its name in the generated source
    kept = set(wanted) | _referenced(calls)
    imports, names, body = [], {}, []
    args = _Arguments()
    for index, (fn, values) in enumerate(calls):
        key = (fn.py_func.__module__, fn.py_func.__name__)
        if key not in names:
            names[key] = f"k{len(names)}"
            imports.append(f"from {key[0]} import {key[1]} as {names[key]}")
        call = f"{names[key]}({', '.join(args.value(v) for v in values)})"
        body.append(f"    r{index} = {call}" if index in kept else f"    {call}")
    if returns is None:
        body.append("    return None")
    elif isinstance(returns, tuple):
        body.append(f"    return ({', '.join(f'r{i}' for i in wanted)},)")
    else:
        body.append(f"    return r{returns}")
    slot_roots = [_root(slot) for slot in slots]
    flats = list(args._flats.values())
    slot_of: dict[int, int] = {}  # buffer index -> the slot whose flat view it is
    for i, buffer in enumerate(args.buffers):
        if any(buffer is f for f in flats):
            slot = next((j for j, root in enumerate(slot_roots) if buffer.base is root), -1)
            if slot >= 0:
                slot_of[i] = slot
    # each slot taken by address: the array passed in its place must be C-contiguous, of the
    # slot's size (recorded in meta), as the views inside it were recorded
    checks = []
    for j, slot in enumerate(slots):
        checks += [
            f"    if not (s{j}.flags.c_contiguous and s{j}.size == meta[{len(args.meta)}]):",
            f'        raise ValueError("fastnn fused step: argument {j} must be a C-contiguous array of the '
            f'shape of the slot it stands for; pass one (numpy.ascontiguousarray) or call without arrays")',
            f"    p{j} = s{j}.ctypes.data",
        ]
        args.meta.append(np.asarray(slot).size)
    tables = [
        ("meta", np.array(args.meta, np.int64)),
        ("fv", np.array(args.fv, np.float64)),
        ("iv", np.array(args.iv, np.int64)),
    ]
    params, passed = ["address", *(f"s{j}" for j in range(len(slots)))], []
    table_entry: dict[int, int] = {}  # buffer index -> its entry in the table
    for i, buffer in enumerate(args.buffers):
        if i in slot_of:  # the flat view of a slot: the array passed in its place, by address (checks)
            continue
        if any(buffer is f for f in flats) and _by_address(buffer):
            table_entry[i] = len(tables)
            tables.append((f"b{i}", buffer))
        else:
            params.append(f"b{i}")
            passed.append(buffer)
    params += [f"g{i}" for i in range(_n_given(calls))]  # the Given arguments, last
    unpack = [
        f"    table = carray(pointer(address), {2 * len(tables)}, np.int64)",
        *(
            f"    {name} = carray(pointer(table[{2 * j}]), table[{2 * j + 1}], np.{arr.dtype.name})"
            for j, (name, arr) in enumerate(tables)
        ),
        *checks,
    ]
    source = "\n".join(
        [
            '"""Generated by fastnn._fused: one step of recorded kernel calls."""',
            "import numpy as np",
            "from numba import carray, njit",
            "from fastnn.kernels.views import pointer, view1, view2, view3, view4",
            *imports,
            "",
            "",
            "@njit(cache=True, nogil=True)",
            f"def run({', '.join(params)}):",
            *unpack,
            *(args.view_line(view, table_entry.get(view[1]), slot_of.get(view[1])) for view in args.views),
            *body,
            "",
        ]
    )
    pointed = [arr for _, arr in tables]
    table = np.array([v for arr in pointed for v in (arr.ctypes.data, arr.size)], np.int64)
    return source, [table.ctypes.data, *passed], [table, *pointed]


_LOADED: dict[str, Callable] = {}
#: runs measured unfused in this process per step structure (the digest of its generated source,
#: :func:`_step_file`'s: some 80 bytes a structure, whatever the size of its source), over every
#: runner of it: worth_fusing's runs before of a new model of a structure run before (``_others_runs``)
_STRUCTURE_RUNS: dict[str, int] = {}
_LOAD_LOCK = threading.Lock()  # threads fusing one structure import (and compile) it once


def _write_once(path: str, source: str) -> None:
    """Make ``path`` hold ``source``, safely against other processes and threads doing the same.

    The text goes to a temporary file of its own in the same folder, then is linked into place
    atomically: a reader never sees a partial file, and the first complete writer wins (later
    ones find the same text, named by its hash, and leave it be). A file left wrong by a crash
    of an older version is replaced.
    """
    try:
        with open(path, encoding="utf-8") as handle:
            if handle.read() == source:
                return
    except FileNotFoundError:
        pass
    folder, name = os.path.split(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(source)
        try:
            os.link(tmp, path)  # fails if another writer got there first: keep theirs
        except FileExistsError:
            with open(path, encoding="utf-8") as handle:
                if handle.read() != source:
                    os.replace(tmp, path)
        except OSError:  # no hard links on this file system
            os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _step_file(source: str) -> tuple[str, str]:
    """(digest, path) of the generated module of ``source``: named by the source and the kernels' stamp."""
    digest = hashlib.sha256(source.encode() + _cache.stamp()).hexdigest()[:24]
    return digest, os.path.join(cache_dir(), f"step_{digest}.py")


def _compiled_before(source: str) -> bool:
    """Whether the step of ``source`` was loaded in this process or written (and compiled, with
    Numba's cache beside it) by an earlier one: fusing it then costs a load, not a compile."""
    digest, path = _step_file(source)
    return digest in _LOADED or os.path.exists(path)


def _load(source: str) -> Callable:
    digest, path = _step_file(source)
    with _LOAD_LOCK:
        fn = _LOADED.get(digest)
        if fn is not None:
            return fn
        _write_once(path, source)
        name = f"{_compiling.FUSED_STEP_PREFIX}{digest}"
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None or spec.loader is None:
            raise ImportError(
                f"cannot load fastnn's generated step {path!r}: Python found no module loader for it; "
                f"set FASTNN_CACHE_DIR to a writable folder of ordinary files"
            )
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
        except BaseException:
            del sys.modules[name]
            raise
        fn = _LOADED[digest] = module.run
        return fn


def _offset(arr: np.ndarray, root: np.ndarray) -> int:
    """Elements from the start of ``root`` to the start of its view ``arr``."""
    return (arr.__array_interface__["data"][0] - root.__array_interface__["data"][0]) // arr.itemsize


def rebindable(calls: Sequence[Call], slot) -> bool:
    """Whether :class:`CallRunner`'s ``slots`` can swap ``slot`` per call for another array of its
    shape: a C-contiguous host array at the start of its buffer, that buffer used by ``calls`` only
    through C-contiguous views inside ``slot`` (so the views can be taken of the other array)."""
    if not (isinstance(slot, np.ndarray) and slot.flags.c_contiguous and slot.size > 0):
        return False
    root = _root(slot)
    if not root.flags.c_contiguous or root.dtype != slot.dtype or _offset(slot, root) != 0:
        return False
    if any(
        isinstance(v, np.ndarray) and _root(v) is root for _, a in calls for t in a if isinstance(t, tuple) for v in t
    ):
        return False  # (a view inside a tuple argument is not rebound per call)
    return all(
        arr.flags.c_contiguous and 1 <= arr.ndim <= 4 and arr.size > 0 and _offset(arr, root) + arr.size <= slot.size
        for _, args in calls
        for arr in args
        if isinstance(arr, np.ndarray) and _root(arr) is root
    )


class FusedCalls:
    """``calls`` compiled into one function; ``__call__`` runs them all and returns the result
    of call number ``returns`` (None if not given). The arguments are bound once: the calls
    must keep working on the same buffers, as recorded plans do, except the ``slots`` (see
    :func:`rebindable`): ``__call__(*arrays)`` runs the calls on ``arrays`` in their place, and the
    arguments after them are the :class:`Given` ones."""

    def __init__(
        self,
        calls: Sequence[Call],
        returns: int | tuple[int, ...] | None = None,
        slots: Sequence = (),
        generated: tuple | None = None,
    ):
        """``generated``: :func:`_source`'s result for these arguments, when the caller made it already."""
        generated = _source(calls, returns, slots) if generated is None else generated
        self.source, values, self._pointed = generated  # _pointed: kept alive
        self._address, self._loose = values[0], tuple(values[1:])
        self._slots = tuple(slots)
        self._n_given = _n_given(calls)
        self._fn = _load(self.source)

    def __call__(self, *arrays):
        """Run the calls; ``arrays``: one per slot (C-contiguous, of its shape: another raises
        ValueError before any call runs), or none for the slots themselves, then the :class:`Given`
        arguments."""
        n = len(self._slots)
        slots = arrays[:n] if arrays else self._slots
        return self._fn(self._address, *slots, *self._loose, *arrays[n:])

    def given_caller(self) -> Callable | None:
        """``f(*given)`` for calls without slots: the compiled function with its bound address and
        other arrays (a ``functools.partial``: no Python frame between the caller and Numba's
        dispatch), taking the :class:`Given` arguments; None when the calls have slots."""
        if self._slots:
            return None
        return functools.partial(self._fn, self._address, *self._loose)

    def slot_caller(self) -> Callable | None:
        """``f(*arrays)``, one array per slot, running the calls with as little as possible in between
        (the compiled function with its bound address and other arrays), or None when the calls
        take :class:`Given` arguments or have no slots (then call the object itself)."""
        if self._n_given or not self._slots:
            return None
        fn, address, loose = self._fn, self._address, self._loose
        if not loose:
            return functools.partial(fn, address)
        return lambda *arrays: fn(address, *arrays, *loose)

    def typed_slot_caller(self) -> Callable | None:
        """:meth:`slot_caller`, skipping Numba's dispatch (the typing of the arguments and the choice
        of the compiled version: ~0.15 us a call), or None when it has none (or the slots are not
        plain C-contiguous, aligned, writeable arrays of a native dtype). Made for arrays like the
        slots (compiled or loaded now if no call made it yet), its caller must pass arrays exactly
        like them: ``numpy.ndarray`` of the slot's dtype and number of dimensions, C-contiguous,
        aligned and writeable (``flags.carray``); anything else would be read as if it were, unchecked."""
        if self._n_given or not self._slots:
            return None
        if not all(type(slot) is np.ndarray and slot.flags.carray and slot.dtype.isnative for slot in self._slots):
            return None
        address, loose = self._address, self._loose
        compile_for = getattr(self._fn, "compile", None)  # a Numba dispatcher's (not with NUMBA_DISABLE_JIT)
        if compile_for is None:
            return None
        try:  # the compiled version for these types: the dispatcher's (made at its first call), else made now
            fn = compile_for(tuple(typeof(value) for value in (address, *self._slots, *loose)))
        except RuntimeError:  # compilation disabled on this dispatcher: its own calls still work
            return None
        if not loose:
            return functools.partial(fn, address)
        return lambda *arrays: fn(address, *arrays, *loose)

    def __reduce_ex__(self, protocol):
        """Refused: a copy would run on the original's memory (its table holds addresses)."""
        raise TypeError(
            "a fused step is bound to the memory of its model's buffers and cannot be copied or pickled; "
            "copy the model instead (copy.deepcopy(model) rebuilds its plans)"
        )


class RunBudget:
    """The runs a caller still expects of the recorded steps it drives (``fit``: its epochs times
    the batches per epoch); the tier-up fuses only when the rest of them pays for the compile.
    The caller counts ``done`` as it goes."""

    __slots__ = ("done", "total")

    def __init__(self, total: int):
        self.total = total
        self.done = 0

    @property
    def remaining(self) -> int:
        """Runs still expected."""
        return max(0, self.total - self.done)


_BUDGET: contextvars.ContextVar[RunBudget | None] = contextvars.ContextVar("fastnn_run_budget", default=None)


@contextlib.contextmanager
def expected_runs(total: int | None) -> Iterator[RunBudget | None]:
    """Within the block, the step plans run in this context expect ``total`` more runs (None:
    unknown, e.g. a stream without steps_per_epoch; then the tier-up decides as without a hint).
    Yields the :class:`RunBudget` whose ``done`` the caller advances."""
    budget = None if total is None else RunBudget(int(total))
    token = _BUDGET.set(budget)
    try:
        yield budget
    finally:
        _BUDGET.reset(token)


def fusing_cost(source: str) -> tuple[float, bool]:
    """(seconds, compiles) that fusing the step of ``source`` costs now: a build of its table when
    this process loaded it already (``_config.FUSE_BUILD_SECONDS``), a load of Numba's cache when an
    earlier process compiled it (``FUSE_LOAD_SECONDS``), else a compile (``FUSE_COMPILE_SECONDS``;
    ``compiles`` True)."""
    if _step_file(source)[0] in _LOADED:
        return _config.FUSE_BUILD_SECONDS, False
    if _compiled_before(source):
        return _config.FUSE_LOAD_SECONDS, False
    return _config.FUSE_COMPILE_SECONDS, True


def worth_fusing(saving_per_run: float, source: Callable[[], str], runs_before: int = 0) -> bool:
    """Whether fusing pays: the runs still expected (:func:`expected_runs`) times the saving of
    each exceed its cost (:func:`fusing_cost`). A step that needs no compile also counts the
    ``runs_before`` it ran unfused (earlier fits of the model: as many are taken to come, the rule
    of a JIT's hot counter), so a loop of short fits fuses once their runs pay for the load; a
    compile waits for a fit whose own runs pay for it (a short fit never waits for one).
    ``source()`` gives the generated source, asked for only when needed."""
    budget = _BUDGET.get()
    if budget is None:
        return True
    cost, compiles = fusing_cost(source())
    runs = budget.remaining if compiles else budget.remaining + runs_before
    return runs * saving_per_run > cost


#: what a call from Python costs beyond its kernel's work, in units of :func:`_dispatch_seconds` (a
#: one-array kernel's call from Python, ~0.2 us here): ``CallRunner._run_calls``' own Python per call
#: (its arguments gathered, the result kept) and the call's dispatch, the unboxing of each further
#: array argument (~0.05 us) and of each scalar (~0.02 us). Measured on fit's runners (fused against
#: unfused, same calls, 1-2 threads): a tiny network's step (9 calls, 51 arrays, 23 scalars) saved
#: 7.5 us a run (9 us a step of fit), estimated 8.1 (the old estimate, one 7-argument dispatch per
#: call: 9.8); a 64-100-10 Adam step saved 14.5 us, estimated 9.0 (fused, its kernels also run
#: closer together), so the estimate stays on the safe side for larger steps.
_LOOP_PER_CALL = 2.5
_PER_ARRAY = 0.25
_PER_SCALAR = 0.1


def estimated_saving(calls: Sequence[Call], slots: Sequence = (), unit: float | None = None) -> float:
    """Estimated seconds that fusing ``calls`` saves per run: each call's dispatch from Python
    (per argument: an array's unboxing costs more than a scalar's; a tuple's items count one by
    one) and the Python loop's own time per call, less the one call of the fused function (its
    slots and :class:`Given` arguments).
    ``unit``: the seconds of one unit (a one-array dispatch) in the step itself
    (:func:`cold_dispatch_seconds`); by default the warm one, :func:`_dispatch_seconds`."""
    arrays = scalars = 0
    for _, args in calls:
        for value in args:
            if isinstance(value, (np.ndarray, Given)):
                arrays += 1
            elif isinstance(value, tuple):  # a tuple of arrays (a Dense chain's layers): each unboxed
                arrays += sum(isinstance(item, np.ndarray) for item in value)
                scalars += sum(not isinstance(item, np.ndarray) for item in value)
            else:
                scalars += 1
    n = len(calls)
    units = n * (1 + _LOOP_PER_CALL) + _PER_ARRAY * max(0, arrays - n) + _PER_SCALAR * scalars
    units -= 1 + _PER_ARRAY * (len(slots) + _n_given(calls))  # the fused function's own call
    return max(0.0, units) * (_dispatch_seconds() if unit is None else unit)


#: the most :func:`cold_dispatch_seconds` makes of a unit, in warm units: one preempted probe (a
#: step of one or two calls has no median to hide it in) never makes a step look worth a compile
_COLD_MAX_UNITS = 8.0


def cold_dispatch_seconds(cold: Sequence[float], warm: Sequence[float]) -> float:
    """The unit of :func:`estimated_saving` as the step itself pays it: after a kernel that swept
    megabytes, the interpreter's and the dispatcher's code and data are out of the caches, and a
    dispatch costs several warm ones (``mlp-bn-do``: a one-array probe ~1 us after each kernel
    against ~0.25 us right after the probe itself; the fused step saved ~110-150 us a run, sessions
    10 and 31, where the warm unit estimated 14). ``cold[i]``: a probe's seconds right after call ``i``; ``warm[i]``: a
    second probe's right after the first (the probe's own overhead, cancelled). The unit is the warm
    one plus the median excess of the cold probes, at most ``_COLD_MAX_UNITS`` warm units; a step
    whose kernels leave the caches warm (a tiny network's) keeps the warm unit."""
    unit = _dispatch_seconds()
    if not cold:
        return unit
    excess = float(np.median([max(0.0, c - w) for c, w in zip(cold, warm)]))
    return min(unit + excess, _COLD_MAX_UNITS * unit)


class CallRunner:
    """Runs a recorded list of kernel calls, tiering up like a JIT.

    The calls first run one by one from Python. Once they have run ``FUSE_AFTER_CALLS``
    times, if what fusing saves (:func:`estimated_saving`: Python's dispatch of each call and its
    arguments, and its loop, in units of a dispatch measured inside the step on its second run:
    :meth:`_probed_run`) is more than ``FUSE_MIN_SHARE`` of their fastest measured run (small
    networks, small batches) and the runs still expected pay for it (:func:`worth_fusing`), they
    are compiled into one function (:class:`FusedCalls`: 3-7 s the first time for a new model
    structure, cached on disk after: a load of ~30 ms) and run as one call from then on. ``FASTNN_FUSE`` (see ``fastnn._config``) can force
    ``always`` or ``never``. ``returns``: index of the call whose result ``__call__`` returns (a tuple of
    indices: a tuple of their results). ``slots``: arrays the calls use through C-contiguous
    views only (:func:`rebindable`); ``__call__(*arrays)`` then runs the calls on ``arrays`` (each
    C-contiguous, of its slot's shape and dtype) in their place, without copying them; the
    arguments after those arrays are the calls' :class:`Given` arguments, in order.
    """

    __slots__ = (
        "_actions",
        "_cold",
        "_counted",
        "_direct",
        "_fastest",
        "_fused",
        "_kept",
        "_rebound",
        "_results_in",
        "_runs",
        "_step_digest",
        "_step_generated",
        "_tiering",
        "_total",
        "_unit",
        "calls",
        "returns",
        "slots",
    )

    def __init__(self, calls: Sequence[Call], returns: int | tuple[int, ...] | None = None, slots: Sequence = ()):
        self.calls = list(calls)
        self.returns = returns
        self.slots = tuple(slots)
        self._rebound = self._rebound_arguments()
        self._kept = frozenset(_returned(returns)) | _referenced(self.calls)
        self._results_in = {  # {call index: [(argument index, the Result or Given it takes)]}
            index: [(position, v) for position, v in enumerate(args) if isinstance(v, (Result, Given))]
            for index, (_, args) in enumerate(self.calls)
            if any(isinstance(v, (Result, Given)) for v in args)
        }
        self._actions = self._call_actions()
        self._fused: FusedCalls | None = None
        self._direct: Callable | None = None  # once fused without slots: its given_caller
        self._step_generated: tuple | None = None  # _source's result, made once (asked at every re-measure)
        self._step_digest: str | None = None  # its _step_file digest, once
        self._runs = 0
        # the fastest run of the window, the first and the probed one untimed (_decide's measure)
        self._fastest = float("inf")
        self._unit: float | None = None  # the dispatch unit measured in the step (_probed_run), once
        self._total = 0  # runs measured unfused, over every window (worth_fusing's runs_before)
        self._counted = 0  # of them, those counted into _STRUCTURE_RUNS
        self._cold = True  # the first run: its uncached kernels may compile in worker processes
        self._tiering = _config.FUSE != "never" and bool(self.calls) and fusible(self.calls)
        if self._tiering and _config.FUSE == "always":
            self._fuse()

    @property
    def fused(self) -> bool:
        """True once the calls run as one compiled function."""
        return self._fused is not None

    def slot_caller(self) -> Callable | None:
        """The fused function's :meth:`FusedCalls.slot_caller` once fused (None before, or when it has none)."""
        return None if self._fused is None else self._fused.slot_caller()

    def typed_slot_caller(self) -> Callable | None:
        """The fused function's :meth:`FusedCalls.typed_slot_caller` once fused (None before, or when it has none)."""
        return None if self._fused is None else self._fused.typed_slot_caller()

    def __call__(self, *arrays):
        direct = self._direct
        if direct is not None:  # fused, no slots: the compiled function's partial (~0.2 us less a call)
            return direct(*arrays)
        if self._fused is not None:
            return self._fused(*arrays)
        if self._cold:
            self._cold = False
            with _parallel_compile.compiled_in_workers(self.calls, arrays[len(self.slots) :]):
                return self(*arrays)
        if not self._tiering:
            return self._run_calls(arrays)
        if self._runs == 1 and self._unit is None:  # once, the first run after the kernels' load: not timed
            result = self._probed_run(arrays)
            if self._fuse_early():
                return result
        else:
            start = time.perf_counter()
            result = self._run_calls(arrays)
            if self._runs:  # the first run loads (or compiles) the kernels: it would hide the dispatch's share
                self._fastest = min(self._fastest, time.perf_counter() - start)
        self._runs += 1
        self._total += 1
        if self._runs >= _config.FUSE_AFTER_CALLS:
            self._decide()
        return result

    def _decide(self) -> None:
        """After the measured runs: fuse when what fusing saves (:func:`estimated_saving`) is a real
        share of a run and the runs still expected pay for the compile or load (:func:`worth_fusing`);
        when only the latter fails, measure again later (a longer fit of the same model may come).
        The estimate's unit is the dispatch as the step pays it (:meth:`_probed_run`).

        The share is of the fastest timed run, not of their mean: other processes on the machine
        only ever add time (a loaded machine's mean, up to twice the fastest run here, refused a
        step whose fusing saved 80-190 us of ~1.6 ms: the embed-10k-sparse bench)."""
        saving = estimated_saving(self.calls, self.slots, self._unit)
        if saving <= _config.FUSE_MIN_SHARE * self._fastest:
            self._tiering = False
        elif worth_fusing(saving, self._generated_source, self._total + self._others_runs()):
            self._tiering = False
            self._fuse()
        else:
            self._runs, self._fastest = 1, float("inf")

    def _others_runs(self) -> int:
        """Runs of this step's structure by other runners of this process (other models of the
        same structure: a scikit-learn estimator builds a new model per fit), and this runner's
        runs so far counted for them (:data:`_STRUCTURE_RUNS`)."""
        key = self._generated_digest()
        others = _STRUCTURE_RUNS.get(key, 0) - self._counted
        _STRUCTURE_RUNS[key] = others + self._total
        self._counted = self._total
        return others

    def _fuse_early(self) -> bool:
        """At the probed run: fuse now when this process already loaded the step of this
        structure (a table's build, ``FUSE_BUILD_SECONDS``) and the runs still expected pay for it,
        rather than after ``FUSE_AFTER_CALLS`` runs (a step plan of a fit's last batch runs once
        an epoch: it would never get there). True when fused."""
        budget = _BUDGET.get()
        if budget is None or not self._tiering:
            return False
        saving = estimated_saving(self.calls, self.slots, self._unit)
        if budget.remaining * saving <= _config.FUSE_BUILD_SECONDS:
            return False
        if self._generated_digest() not in _LOADED:
            return False
        self._tiering = False
        self._fuse()
        return True

    def _probed_run(self, arrays):
        """One run of the calls with, after each, two calls of a one-array kernel, each timed: the
        first pays the dispatch as the next call of the step would (its code and data evicted by the
        kernel just run), the second the probe's own cost; sets ``_unit``
        (:func:`cold_dispatch_seconds`)."""
        from .kernels.checks import all_finite

        probe = np.zeros((1, 1), np.float32)
        all_finite(probe)  # loaded before the run
        cold: list[float] = []
        warm: list[float] = []
        clock = time.perf_counter

        def probed(fn):
            def call(*args):
                value = fn(*args)
                start = clock()
                all_finite(probe)
                middle = clock()
                all_finite(probe)
                cold.append(middle - start)
                warm.append(clock() - middle)
                return value

            return call

        calls = self.calls
        self.calls = [(probed(fn), args) for fn, args in calls]
        try:
            result = self._run_calls(arrays)
        finally:
            self.calls = calls
        self._unit = cold_dispatch_seconds(cold, warm)
        return result

    def _generated_source(self) -> str:
        """The generated step's source (it depends on the calls' structure only): made at the
        first decision and kept, so a fit too short to fuse does not regenerate it at every
        re-measure window."""
        return self._generated()[0]

    def _generated(self) -> tuple:
        """:func:`_source`'s (source, values, arrays) for the calls, made once: the decisions read
        the source, :meth:`_fuse` builds on all of it (the calls' arrays are bound once)."""
        if self._step_generated is None:
            self._step_generated = _source(self.calls, self.returns, self.slots)
        return self._step_generated

    def _generated_digest(self) -> str:
        """The generated step's :func:`_step_file` digest (its structure's key), hashed once."""
        if self._step_digest is None:
            self._step_digest = _step_file(self._generated_source())[0]
        return self._step_digest

    def _fuse(self) -> None:
        """Compile the calls into one function; if that fails, keep running them one by one."""
        try:
            self._fused = FusedCalls(self.calls, self.returns, self.slots, generated=self._generated())
            self._direct = self._fused.given_caller()
        except Exception as error:  # a speed-up only: never let it stop training
            self._tiering = False
            warnings.warn(
                f"fastnn could not fuse a step's kernel calls into one function "
                f"({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}); "
                f"they keep running one by one. Set FASTNN_FUSE=never to skip the attempt.",
                RuntimeWarning,
                stacklevel=3,
            )

    def _rebound_arguments(self) -> dict[int, list[tuple[int, int, int, int, tuple]]]:
        """{call index: [(argument index, slot, start, stop, shape)]} of the arguments that are
        views of a slot: element offsets into the slot, to take the same views of another array."""
        rebound: dict[int, list] = {}
        for slot, root in enumerate(_root(s) for s in self.slots):
            for index, (_, args) in enumerate(self.calls):
                for position, arr in enumerate(args):
                    if isinstance(arr, np.ndarray) and _root(arr) is root:
                        start = _offset(arr, root)
                        rebound.setdefault(index, []).append((position, slot, start, start + arr.size, arr.shape))
        return rebound

    def _call_actions(self) -> tuple:
        """Per call, None when it runs on its recorded arguments alone and its result is not kept,
        else (index, its rebound arguments or None, its Result/Given arguments or None, whether its
        result is kept): what ``_run_calls`` does around each call, worked out once."""
        return tuple(
            None
            if not (index in self._rebound or index in self._results_in or index in self._kept)
            else (index, self._rebound.get(index), self._results_in.get(index), index in self._kept)
            for index in range(len(self.calls))
        )

    def _run_calls(self, arrays=()):
        results = {}
        given = arrays[len(self.slots) :]
        flats = [arr.reshape(-1) for arr in arrays[: len(self.slots)]]
        calls, actions = self.calls, self._actions
        if len(actions) != len(calls):  # (the list was changed in place: a test's injected call)
            actions = self._actions = self._call_actions()
        for (fn, args), action in zip(calls, actions):
            if action is None:  # most calls: no lookups around them (~0.1 us a call less)
                fn(*args)
                continue
            index, rebound, takes, kept = action
            if flats and rebound is not None:
                args = list(args)
                for position, slot, start, stop, shape in rebound:
                    args[position] = flats[slot][start:stop].reshape(shape)
            if takes is not None:
                args = list(args)
                for position, source in takes:
                    args[position] = results[source.index] if isinstance(source, Result) else given[source.index]
            value = fn(*args)
            if kept:
                results[index] = value
        if isinstance(self.returns, tuple):
            return tuple(results[i] for i in self.returns)
        return results.get(self.returns)


@functools.cache
def _dispatch_seconds() -> float:
    """Measured cost of calling a cached one-array kernel from Python (seconds, once per process):
    the unit of :func:`estimated_saving`."""
    from .kernels.checks import all_finite

    probe = np.zeros((1, 1), np.float32)
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(20):
            all_finite(probe)
        best = min(best, (time.perf_counter() - start) / 20)
    return best
