"""A cold process compiles the kernels of a recorded call list in several processes at once.

Numba's compiler holds the GIL and a process-wide LLVM lock, so one process compiles one kernel
at a time. When a :class:`fastnn._fused.CallRunner` runs for the first time and kernels of its
calls are in no cache, :func:`compiled_in_workers` shares those kernels (by their measured compile
cost, :data:`COSTS`) between this process and ``processes - 1`` worker processes
(:data:`_WORKER`, which runs :func:`main`). Each worker compiles its share with explicit signatures
into a private temporary ``NUMBA_CACHE_DIR`` (disjoint folders: two processes never write the
same cache entry, even for a callee both compile); this process compiles its own share meanwhile,
then runs the calls, loading the workers' kernels from their folders and copying each into its
own cache (``fastnn._shipped_cache``: the next run loads them from there). Anything a worker did
not deliver (it failed, timed out, or typed a signature differently) compiles here at its first
call, as without workers: the result is the same either way.

A worker's start is paid ahead: the first compile of a fastnn kernel in a process that may use
workers (a cold cache: the model's input checks) starts one spare worker (:func:`prestart`), which
gets ready and waits for a job; the step's compile then hands it a share at once. Unused, it exits
with this process. On Linux, while this process has no other Python thread, a worker is a fork of
this process (:class:`Forked`): everything imported, it is ready after Numba's first compile
(0.2-0.3 s). Elsewhere it is a new interpreter (:func:`_spawn`), ready after its imports too
(about 1 s).

``FASTNN_PARALLEL_COMPILE``: ``0`` compiles in this process only; a number N uses N processes
(default: one per idle CPU, :func:`idle_cpus`). Also in-process only: inside a daemon process, under
MPI (every rank would start workers), for less than :data:`MIN_SECONDS` of estimated compile.
"""

from __future__ import annotations

import atexit
import contextlib
import inspect
import multiprocessing
import os
import pickle
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from typing import Any, Callable, Iterator, NamedTuple, Sequence

import numba
import numpy as np
from numba.core import event, types
from numba.core.registry import CPUDispatcher

from . import _compiling, _shipped_cache

#: compile seconds of a kernel with its callees, measured with empty caches on the project's 2-core
#: machine (``benchmarks/compile_profile.py demo``; the first 'mlp' step's kernels re-measured
#: in-process on 2026-12-04); other kernels count DEFAULT_COST
COSTS = {
    "dense_backward": 5.5,  # alone; 4.3-5.0 after dense_forward compiled their shared callees
    "dense_forward": 4.0,
    "dense_infer": 3.2,
    "adam_step": 3.3,  # 3.9 with value clipping compiled in (an optimizer with clip_value)
    "adam_update": 2.0,
    "gather_batch": 2.1,  # with its row prefetch (1.3 without; 1.9-2.2 measured, 2026-12-03)
    "cross_entropy_forward_backward": 1.5,
    "dense_chain_cross_entropy": 15.0,  # its row functions (GEMM blocks, epilogues, loss) and region (2026-12-07)
    "dense_chain_elementwise": 15.0,
    "clip_by_value": 0.7,
    "grad_global_norm": 0.6,
}
DEFAULT_COST = 0.5
#: seconds a worker needs before it compiles (interpreter, numba and fastnn imports, Numba's first
#: compile); a spare started ahead (:func:`prestart`) needs none
WORKER_START_SECONDS = 1.0
#: below this estimated compile time (seconds) workers cost more than they save
MIN_SECONDS = 3.0
#: a spare worker given no job for this many seconds ends (a notebook's process may live for hours)
SPARE_IDLE_SECONDS = 300.0
#: a worker still running after this many seconds plus its share's estimate x 10 is stopped
TIMEOUT_SECONDS = 120.0
ENV = "FASTNN_PARALLEL_COMPILE"
_MPI_ENV = ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK", "MPI_LOCALNRANKS", "SLURM_PMIX_MAPPING_SERV")


def processes() -> int:
    """How many processes compile a cold start's kernels (1: this one only, no workers)."""
    wanted = _setting()
    if wanted is None:  # the default: by the idle CPUs
        wanted = idle_cpus()
        if _own_spare():
            wanted = max(2, wanted)  # a spare is ready, its start paid (getting ready, it looked busy)
    return wanted


def _setting() -> int | None:
    """1 where workers are off (``FASTNN_PARALLEL_COMPILE`` 0 or 1, a daemon process, MPI), the
    setting's number of processes, or None for the default (:func:`idle_cpus`)."""
    setting = os.environ.get(ENV, "").strip()
    wanted = None
    if setting:
        try:
            wanted = max(1, int(setting))
        except ValueError:
            raise ValueError(
                f"{ENV}={setting!r}: expected 0 (compile in this process only) or a number of processes"
            ) from None
    if multiprocessing.current_process().daemon or any(name in os.environ for name in _MPI_ENV):
        return 1
    if "mpi4py.MPI" in sys.modules:
        return 1
    return wanted


def idle_cpus() -> int:
    """The CPUs this process may run on that other processes leave idle now, this process's own
    included (at least 1): on a machine busy with other work, more processes only add the
    workers' start-up and the callees they each compile (measured: +20% CPU, no shorter wall).

    "Now" is :func:`busy_cpus`, a 0.05 s sample of the CPUs' counters, where Linux has them; else
    the last minute's load average, which also counts what this process and those before it
    just did (a cold run right after another saw a load of 1-1.5 on an idle 2-core machine, and
    compiled alone)."""
    cpus = _allowed_cpus()
    busy = busy_cpus()
    if busy is None:
        try:
            busy = max(0.0, os.getloadavg()[0] - 1.0)  # the load average counts this process too
        except (AttributeError, OSError):  # Windows: no load average
            return len(cpus)
    return max(1, min(len(cpus), int(len(cpus) - busy + 0.5)))


def _allowed_cpus() -> set[int]:
    if hasattr(os, "sched_getaffinity"):
        return set(os.sched_getaffinity(0))
    return set(range(os.cpu_count() or 1))


def _cpu_counters(cpus: set[int]) -> tuple[int, int] | None:
    """(busy, all) time counters of ``cpus`` summed from ``/proc/stat``, or None without it."""
    try:
        with open("/proc/stat") as handle:
            lines = handle.read().splitlines()
    except OSError:
        return None
    busy = everything = 0
    for line in lines:
        name, _, rest = line.partition(" ")
        if name.startswith("cpu") and name[3:].isdigit() and int(name[3:]) in cpus:
            values = [int(v) for v in rest.split()[:8]]  # user nice system idle iowait irq softirq steal
            everything += sum(values)
            busy += sum(values) - values[3] - values[4]
    return (busy, everything) if everything else None


def busy_cpus(seconds: float = 0.05) -> float | None:
    """How many of this process's CPUs other processes keep busy now: ``/proc/stat`` read twice,
    ``seconds`` apart, while this process sleeps; None where there is no ``/proc/stat``."""
    cpus = _allowed_cpus()
    before = _cpu_counters(cpus)
    if before is None:
        return None
    time.sleep(seconds)
    after = _cpu_counters(cpus)
    if after is None or after[1] <= before[1]:
        return None
    return len(cpus) * (after[0] - before[0]) / (after[1] - before[1])


class Item(NamedTuple):
    """One kernel signature to compile: the call's index in its list, the kernel, its argument
    types (an earlier call's result as ("result", that call's index)), and its measured cost."""

    call: int
    kernel: Any
    argtypes: tuple
    cost: float


def _is_kernel(fn) -> bool:
    return isinstance(fn, CPUDispatcher) and (fn.py_func.__module__ or "").startswith("fastnn.kernels.")


def _is_result(value) -> bool:
    return isinstance(value, tuple) and value[:1] == ("result",)


def _argument_types(fn, args: Sequence, given: Sequence) -> tuple | None:
    """Numba's types of ``fn(*args)`` as its dispatcher would type them (omitted defaults as
    ``types.Omitted``); ``("result", i)`` for a ``Result`` argument; None when not knowable."""
    out: list = []
    for value in args:
        kind = getattr(type(value), "CALL_ARGUMENT", None)  # fastnn._fused's Result and Given
        if kind == "result":
            out.append(("result", value.index))
            continue
        if kind == "given":
            if value.index >= len(given):
                return None
            value = given[value.index]
        try:
            out.append(fn.typeof_pyval(value))
        except Exception:  # a value Numba cannot type: the call will say so itself
            return None
    parameters = list(inspect.signature(fn.py_func).parameters.values())
    for parameter in parameters[len(out) :]:
        if parameter.default is inspect.Parameter.empty:
            return None
        out.append(types.Omitted(parameter.default))  # type: ignore[attr-defined]
    return tuple(out)


#: the :func:`_kinds` of call lists found with nothing pending: a signature compiled or cached stays
#: so for the process, so a new model of a structure seen before (a scikit-learn estimator's fit)
#: skips typing its calls' arguments again (~1.4 ms a digits MLPClassifier fit). A wrong memory could
#: only leave a kernel to compile at its first call, in this process, instead of in the workers.
_NOTHING_PENDING: set = set()


def _kind(value) -> object:
    """What Numba's type of ``value`` depends on, cheaply (None: not known here): an array's dtype,
    dimensions, layout, writeability and alignment, a tuple's items, a Result's or Given's index,
    a scalar's Python type."""
    kind = type(value)
    if kind is np.ndarray:
        flags = value.flags
        return value.dtype, value.ndim, flags.c_contiguous, flags.f_contiguous, flags.writeable, flags.aligned
    if kind is tuple:
        items = tuple(_kind(item) for item in value)
        return None if None in items else items
    call_argument = getattr(kind, "CALL_ARGUMENT", None)  # fastnn._fused's Result and Given
    if call_argument is not None:
        return call_argument, value.index
    if kind in (int, float, bool, type(None)) or isinstance(value, np.generic):
        return kind
    return None


def _kinds(calls: Sequence, given: Sequence) -> tuple | None:
    """:func:`_kind` of every call's kernel and arguments and of the ``given`` values, or None
    when one is not known here."""
    kinds = []
    for fn, args in calls:
        arg_kinds = tuple(_kind(v) for v in args)
        if None in arg_kinds:
            return None
        kinds.append((id(fn), arg_kinds))
    given_kinds = tuple(_kind(v) for v in given)
    return None if None in given_kinds else (tuple(kinds), given_kinds)


def pending(calls: Sequence, given: Sequence = ()) -> tuple[list[Item], set[int]]:
    """The kernel signatures of ``calls`` ((kernel, args) pairs) that neither this process nor a
    cache has, and the indices of the calls whose results their arguments take.

    A call that takes an earlier call's result is listed only when its kernel has no signature
    here or in a cache (one it has most likely fits) and every call it takes from can be typed
    here; otherwise its first run compiles it, if it must."""
    key = _kinds(calls, given)
    if key is not None and key in _NOTHING_PENDING:
        return [], set()
    items, referenced = _pending(calls, given)
    if key is not None and not items:
        _NOTHING_PENDING.add(key)
    return items, referenced


def _pending(calls: Sequence, given: Sequence) -> tuple[list[Item], set[int]]:
    """:func:`pending`, without its memory."""
    typed: dict[int, tuple] = {}  # every kernel call that can be typed: a result may come from any of them
    for index, (fn, args) in enumerate(calls):
        if _is_kernel(fn):
            argtypes = _argument_types(fn, args, given)
            if argtypes is not None:
                typed[index] = argtypes
    taking = {index for index, argtypes in typed.items() if any(_is_result(v) for v in argtypes)}
    with_results = {
        index
        for index in taking
        if not calls[index][0].overloads
        and not _shipped_cache.cached(calls[index][0])
        and all(v[1] in typed for v in typed[index] if _is_result(v))
    }
    referenced = {v[1] for index in with_results for v in typed[index] if _is_result(v)}
    items: list[Item] = []
    seen: set = set()
    for index, argtypes in typed.items():
        fn = calls[index][0]
        key = (id(fn), argtypes)
        if index in taking and index not in with_results:
            continue
        wanted = (
            index in with_results  # its argument types are known only once the calls it takes from compile (or load)
            or index in referenced
            or not (argtypes in fn.overloads or _shipped_cache.has_entry(fn, argtypes))
        )
        if wanted and (key not in seen or index in referenced):
            seen.add(key)
            items.append(Item(index, fn, argtypes, COSTS.get(fn.py_func.__name__, DEFAULT_COST)))
    return items, referenced


def share(items: list[Item], referenced: set[int], n: int, ready: int = 0) -> list[list[Item]]:
    """``items`` in ``n`` bins that finish about together: longest first, each to the bin done
    first, then moves and swaps while they lower the last bin's finish. Bin 0 is this process's
    and holds the calls whose results others take (it sends their return types on); bins 1 to
    ``ready`` are spare workers, ready now, the others start :data:`WORKER_START_SECONDS` late."""
    bins: list[list[Item]] = [[] for _ in range(n)]
    load = [0.0] + [0.0 if b <= ready else WORKER_START_SECONDS for b in range(1, n)]
    for item in sorted(items, key=lambda item: (item.call not in referenced, -item.cost)):
        i = 0 if item.call in referenced else min(range(n), key=lambda b: load[b])
        bins[i].append(item)
        load[i] += item.cost
    while _rebalance_once(bins, load, referenced):
        pass
    return bins


def _rebalance_once(bins: list[list[Item]], load: list[float], referenced: set[int]) -> bool:
    """Apply the move or swap of items (never a referenced one) between the latest bin and
    another that most lowers the later of the two; False when none lowers it. Each step lowers
    the sum of squared loads, so repeating it ends."""
    worst = max(range(len(bins)), key=load.__getitem__)
    best: tuple | None = None  # (the pair's new finish, other bin, item out of worst, item back or None)
    for other in range(len(bins)):
        if other == worst:
            continue
        for out in (item for item in bins[worst] if item.call not in referenced):
            backs: list = [None] + [item for item in bins[other] if item.call not in referenced]
            for back in backs:
                shift = out.cost - (back.cost if back is not None else 0.0)
                finish = max(load[worst] - shift, load[other] + shift)
                if shift > 0 and finish < load[worst] - 1e-9 and (best is None or finish < best[0]):
                    best = (finish, other, out, back)
    if best is None:
        return False
    _, other, out, back = best
    bins[worst].remove(out)
    bins[other].append(out)
    shift = out.cost
    if back is not None:
        bins[other].remove(back)
        bins[worst].append(back)
        shift -= back.cost
    load[worst] -= shift
    load[other] += shift
    return True


def _job(items: list[Item]) -> list:
    """What a process compiles: [(call index, module, name, argument types)], in call order."""
    return [
        (item.call, item.kernel.py_func.__module__, item.kernel.py_func.__name__, item.argtypes)
        for item in sorted(items, key=lambda item: item.call)
    ]


def compile_job(
    job: list,
    results: Callable[[], dict] = dict,
    done: Callable[[dict], None] | None = None,
    provides: frozenset = frozenset(),
) -> list:
    """Compile each (call index, module, name, argument types) of ``job`` into this process's
    cache (a cached one only loads). A ("result", i) argument is the return type of call i:
    compiled here before, else from ``results()`` (asked once, after the rest). The calls
    ``provides`` compile first, then ``done({index: return type})`` is called with theirs. Returns
    None per call of ``job``, in order, or the error that stopped its compile."""
    import importlib

    mine = {entry[0] for entry in job}
    return_types: dict[int, Any] = {}
    outcome: dict[int, str | None] = {}
    waiting = [entry for entry in job if any(_is_result(v) and v[1] not in mine for v in entry[3])]
    first = [entry for entry in job if entry[0] in provides]
    order = first + [e for e in job if e not in waiting and e not in first] + waiting
    for position, (index, module, name, argtypes) in enumerate(order):
        if done is not None and position == len(first):
            done({i: return_types.get(i) for i in provides})
            done = None
        if waiting and (index, module, name, argtypes) == waiting[0]:
            return_types.update(results())
        try:
            fn = getattr(importlib.import_module(module), name)
            resolved = tuple(return_types.get(v[1]) if _is_result(v) else v for v in argtypes)
            if any(v is None for v in resolved):
                raise RuntimeError("a call whose result it takes did not compile")
            fn.compile(resolved)
            return_types[index] = fn.overloads[resolved].signature.return_type
            outcome[index] = None
        except Exception as error:  # reported; the caller compiles it at its first call
            outcome[index] = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
    if done is not None:
        done({i: return_types.get(i) for i in provides})
    return [outcome[entry[0]] for entry in job]


#: the worker's entry: this fastnn, whatever the working folder holds (no '' on sys.path) and
#: without moving an install's site-packages ahead of the standard library
_WORKER = (
    "import sys; root = sys.argv[1]; sys.path[:] = [p for p in sys.path if p != '']; "
    "root in sys.path or sys.path.insert(0, root); from fastnn._parallel_compile import main; sys.exit(main())"
)


def _spawn(folder: str) -> subprocess.Popen:
    """A worker process compiling into ``folder``; it gets ready, then reads its job from stdin."""
    package_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ)
    env["NUMBA_CACHE_DIR"] = folder  # private: no other process writes here
    env[ENV] = "0"
    return subprocess.Popen(
        [sys.executable, "-c", _WORKER, package_root],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=env,
    )


class Forked:
    """A worker forked from this process: the parts of :class:`subprocess.Popen` that this module
    uses (``pid``, ``stdin``, ``stdout``, ``returncode``, ``poll``, ``wait``, ``kill``,
    ``communicate``), over two pipes."""

    def __init__(self, pid: int, stdin, stdout):
        self.pid, self.stdin, self.stdout = pid, stdin, stdout
        self.returncode: int | None = None
        self._read: list[bytes] = []

    def _reap(self, flags: int) -> int | None:
        if self.returncode is None:
            try:
                pid, status = os.waitpid(self.pid, flags)
            except ChildProcessError:  # reaped elsewhere (SIGCHLD ignored): it ended
                pid, status = self.pid, 256
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def poll(self) -> int | None:
        return self._reap(os.WNOHANG)

    def wait(self) -> int:
        return self._reap(0)  # type: ignore[return-value]

    def kill(self) -> None:
        if self.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)

    def communicate(self, timeout: float | None = None) -> tuple[bytes, None]:
        """Close stdin, read stdout to its end (``subprocess.TimeoutExpired`` after ``timeout``
        seconds; what was read is kept for the next call), wait for the process."""
        import select

        if self.stdin is not None:
            with contextlib.suppress(OSError):
                self.stdin.close()
            self.stdin = None
        deadline = None if timeout is None else time.perf_counter() + timeout
        while self.stdout is not None:
            left = None if deadline is None else max(0.0, deadline - time.perf_counter())
            if not select.select([self.stdout], [], [], left)[0]:
                raise subprocess.TimeoutExpired("fastnn compile worker", timeout or 0.0)
            chunk = os.read(self.stdout.fileno(), 1 << 16)
            if chunk:
                self._read.append(chunk)
            else:
                self.stdout.close()
                self.stdout = None
        self.wait()
        return b"".join(self._read), None


#: fork a worker where :func:`_can_fork` allows (tests set False to take the other path)
FORK = True


def _can_fork() -> bool:
    """Whether a worker may be a fork of this process: Linux (fork is unsafe with macOS's system
    libraries, absent on Windows) and no other Python thread (one holding a lock at the fork would
    leave it locked in the child). The native threads of the BLAS and of Numba's threading layer
    are no obstacle: the child only compiles (no parallel region, no BLAS call) and ends with
    ``os._exit``, running nobody's exit handlers."""
    return FORK and sys.platform.startswith("linux") and threading.active_count() == 1


def _fork(folder: str) -> Forked | None:
    """A worker forked from this process, compiling into ``folder``, or None where it cannot be."""
    if not _can_fork():
        return None
    job_read, job_write = os.pipe()
    out_read, out_write = os.pipe()
    try:
        with warnings.catch_warnings():  # Python 3.12+ warns of a fork with native threads (above)
            warnings.simplefilter("ignore", DeprecationWarning)
            pid = os.fork()
    except OSError:  # no memory or processes left for it: a new interpreter will try
        for fd in (job_read, job_write, out_read, out_write):
            os.close(fd)
        return None
    if pid == 0:  # the child: never returns into the frames it was forked in
        code = 1
        try:
            os.close(job_write)
            os.close(out_read)
            code = _forked_main(folder, job_read, out_write)
        finally:
            os._exit(code)
    os.close(job_read)
    os.close(out_write)
    return Forked(pid, os.fdopen(job_write, "wb"), os.fdopen(out_read, "rb"))


def _forked_main(folder: str, job_fd: int, out_fd: int) -> int:
    """A forked worker: quiet, no workers of its own, its cache in ``folder``; then :func:`serve`."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)  # Ctrl+C ends it, as it ends a new interpreter
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    os.environ[ENV] = "0"
    os.environ["NUMBA_CACHE_DIR"] = folder
    _spare.clear()
    _tried["pid"] = os.getpid()
    numba.config.CACHE_DIR = folder
    for module in [m for name, m in list(sys.modules.items()) if name.startswith("fastnn.kernels.")]:
        for value in list(vars(module).values()):
            if _is_kernel(value):  # every fastnn kernel caches (fastnn._config.JIT)
                value.enable_caching()  # a new cache object: its locator reads CACHE_DIR now
    _first_compile()
    return serve(os.fdopen(job_fd, "rb"), os.fdopen(out_fd, "wb"))


def _worker(folder: str) -> Forked | subprocess.Popen:
    """A worker compiling into ``folder``: forked where it can be, else a new interpreter."""
    return _fork(folder) or _spawn(folder)


def _send_job(proc: Forked | subprocess.Popen, job: list) -> bool:
    """Write ``job`` to the worker; False (the worker stopped: killed here) when it cannot take it."""
    try:
        if proc.stdin is not None:
            proc.stdin.write(pickle.dumps(job, protocol=pickle.HIGHEST_PROTOCOL))
            proc.stdin.flush()
            return True
    except (OSError, ValueError):  # a broken pipe: its kernels compile here at their first call
        pass
    _end(proc)
    return False


#: the spare worker :func:`prestart` started: {"proc", "folder", "pid" (of the process that owns
#: it), "env" (the settings it started with)}
_spare: dict = {}
#: how many :func:`compiled_in_workers` blocks are running (no spare starts inside one)
_windows = [0]
#: {"pid": the process that tried to start a spare}: one try (one CPU sample) per process and use
_tried: dict = {}


def _settings() -> dict:
    """The environment that decides how a worker compiles (fastnn's and Numba's settings)."""
    return {k: v for k, v in os.environ.items() if k.startswith(("FASTNN_", "NUMBA_"))}


def prestart() -> None:
    """Start one spare worker now, unless one is waiting or this process compiles alone
    (:func:`processes`): a compile of fastnn's kernels just missed the cache, so a step's kernels
    will most likely miss it too. The spare gets ready (imports, Numba's first compile) and waits
    for :func:`compiled_in_workers` to hand it a share; unused, it ends with this process."""
    if _windows[0] or _tried.get("pid") == os.getpid():
        return
    _tried["pid"] = os.getpid()  # once per process (and after each use, :func:`take_spare`)
    if processes() <= 1:
        return
    _spare.clear()  # a spare of the process this one was forked from: not ours to use
    folder = tempfile.mkdtemp(prefix="fastnn-compile-")
    try:
        proc = _worker(folder)
    except OSError:  # cannot start processes here
        shutil.rmtree(folder, ignore_errors=True)
        return
    _spare.update(proc=proc, folder=folder, pid=os.getpid(), env=_settings())


def _own_spare() -> bool:
    """Whether :data:`_spare` holds a spare this process started (not its parent's, after a fork)."""
    return bool(_spare) and _spare["pid"] == os.getpid()


def spare() -> tuple[int, str, bool] | None:
    """The waiting spare worker's process id, its compile folder and whether it is a fork of this
    process (:class:`Forked`), or None (for tests and benchmarks)."""
    if _own_spare():
        return _spare["proc"].pid, _spare["folder"], isinstance(_spare["proc"], Forked)
    return None


def take_spare() -> tuple[Forked | subprocess.Popen, str] | None:
    """The waiting spare worker and its folder (now the caller's to end), or None: none started,
    it ended (an import failed), or the settings changed since it started."""
    if not _own_spare():
        return None
    proc, folder, env = _spare.pop("proc"), _spare.pop("folder"), _spare.pop("env")
    _spare.clear()
    _tried.clear()  # the next cold compile may start another (a model's next plans)
    if proc.poll() is None and env == _settings():
        return proc, folder
    _end(proc)
    shutil.rmtree(folder, ignore_errors=True)
    return None


def _end(proc) -> None:
    """Stop a worker and close this process's ends of its pipes."""
    proc.kill()
    proc.wait()
    for stream in (proc.stdin, proc.stdout):
        if stream is not None:
            with contextlib.suppress(OSError):
                stream.close()


@atexit.register
def _end_spare() -> None:
    if _own_spare():
        _end(_spare["proc"])
        shutil.rmtree(_spare["folder"], ignore_errors=True)
    _spare.clear()


class _ColdCompile(event.Listener):
    """Starts the spare worker at the first compile of a fastnn kernel (not inside ``fastnn
    warmup``'s quiet compile, which runs its own processes)."""

    def on_start(self, ev):
        if _is_kernel(ev.data["dispatcher"]) and not _compiling.is_quiet():
            try:
                prestart()
            except ValueError:  # a bad FASTNN_PARALLEL_COMPILE: the step's compile says so, not any kernel
                pass

    def on_end(self, ev):
        pass


def _send_results(workers: list, return_types: dict) -> None:
    """The return types of this process's referenced calls, to every worker (its second message)."""
    for proc, _ in workers:
        try:
            proc.stdin.write(pickle.dumps(return_types, protocol=pickle.HIGHEST_PROTOCOL))
            proc.stdin.close()
        except (OSError, ValueError):  # a worker that stopped: its kernels compile at first call
            pass
        proc.stdin = None  # sent: communicate() only reads


#: what the last parallel compile of this process did (for tests and benchmarks)
last: dict = {}


#: the call list whose first run comes later (:func:`expect`): {"calls", "given"}, for the next window
_expected: dict = {}


def expect(calls: Sequence, given: Sequence = ()) -> None:
    """Have the next :func:`compiled_in_workers` window also compile the uncached kernels of
    ``calls`` ((kernel, args) pairs whose first run comes later: a fit's validation pass), shared
    with the window's own; it loads them into this process (and its cache) when its block ends.
    Calls that take another call's result are left to their first run. One list is kept (a new
    one replaces it), dropped when the next first run opens no window (nothing to compile, or no
    worker)."""
    _expected.update(calls=list(calls), given=tuple(given))


def _later(items: list[Item], offset: int) -> list[Item]:
    """The items of :func:`expect`'s list (taken) that ``items`` lacks, their call indices after ``offset``."""
    calls, given = _expected.pop("calls", []), _expected.pop("given", ())
    seen = {(id(item.kernel), item.argtypes) for item in items}
    later: list[Item] = []
    for item in pending(calls, given)[0]:
        key = (id(item.kernel), item.argtypes)
        if key not in seen and not any(_is_result(v) for v in item.argtypes):
            seen.add(key)
            later.append(Item(offset + item.call, item.kernel, item.argtypes, item.cost))
    return later


@contextlib.contextmanager
def compiled_in_workers(calls: Sequence, given: Sequence = ()) -> Iterator[None]:
    """Run the block (the first run of ``calls``) after their uncached kernels, and those of
    :func:`expect`'s list, were compiled in worker processes and this one; the workers' folders
    are readable inside the block."""
    if _setting() == 1:
        _expected.clear()
        yield
        return
    items, referenced = pending(calls, given)
    later = _later(items, len(calls))
    total = sum(item.cost for item in items + later)
    n = processes() if items and len(items) + len(later) >= 2 and total >= MIN_SECONDS else 1  # sampled when it counts
    if n <= 1:
        yield
        return
    _windows[0] += 1
    try:
        with _in_workers(items + later, referenced, n, total, later):
            yield
    finally:
        _windows[0] -= 1


@contextlib.contextmanager
def _in_workers(items: list[Item], referenced: set[int], n: int, total: float, later: list[Item]) -> Iterator[None]:
    """:func:`compiled_in_workers` once it chose workers: ``items`` (estimated ``total`` seconds)
    shared by ``n`` processes; ``later`` (among them) are loaded after the block."""
    spare = take_spare()
    ready = min(n, len(items)) - 1 if _can_fork() else int(spare is not None)  # a fork is ready at once
    bins = [b for b in share(items, referenced, min(n, len(items)), ready=ready) if b]
    start = time.perf_counter()
    folders: list[str] = []
    workers: list[tuple[Forked | subprocess.Popen, int]] = []
    unsent = 0  # kernels of workers that could not take their job: they compile at their first call
    try:
        if spare is not None:
            folders.append(spare[1])
            if len(bins) > 1:
                if _send_job(spare[0], _job(bins[1])):
                    workers.append((spare[0], len(bins[1])))
                else:
                    unsent += len(bins[1])
            else:  # nothing for it to do: let it go
                _end(spare[0])
        for b in bins[1 + int(spare is not None) :]:
            folder = tempfile.mkdtemp(prefix="fastnn-compile-")
            folders.append(folder)
            try:
                proc = _worker(folder)
            except OSError:  # cannot start processes here: those kernels compile at their first call
                break
            if _send_job(proc, _job(b)):
                workers.append((proc, len(b)))
            else:
                unsent += len(b)
        if workers:
            _compiling.announce(round(max(sum(item.cost for item in b) for b in bins)), len(workers) + 1)
        outcome = compile_job(
            _job(bins[0]), done=lambda types: _send_results(workers, types), provides=frozenset(referenced)
        )
        failed = unsent + sum(1 for error in outcome if error)
        deadline = time.perf_counter() + TIMEOUT_SECONDS + 10 * total
        for proc, count in workers:
            try:
                out, _ = proc.communicate(timeout=max(1.0, deadline - time.perf_counter()))
                failed += sum(1 for error in pickle.loads(out) if error) if proc.returncode == 0 else count
            except (subprocess.TimeoutExpired, pickle.UnpicklingError, EOFError):
                proc.kill()
                proc.communicate()
                failed += count
        last.clear()
        last.update(
            spare=spare is not None,
            forked=sum(isinstance(proc, Forked) for proc, _ in workers),
            processes=len(workers) + 1,
            kernels=len(items),
            failed=failed,
            seconds=time.perf_counter() - start,
            shares=[[item.kernel.py_func.__name__ for item in b] for b in bins],
            later=len(later),
        )
        with _shipped_cache.compiled_elsewhere(folders):
            yield
            for item in later:  # from a worker's folder into this process and its cache (compiled here: kept)
                try:
                    item.kernel.compile(item.argtypes)
                except Exception:  # its first run compiles it again and says what is wrong
                    pass
    finally:
        for proc, _ in workers:
            _end(proc)
        for folder in folders:
            shutil.rmtree(folder, ignore_errors=True)


def _first_compile() -> None:
    """Pay Numba's one-off set-up of a process's first compile (about 0.3 s) before a job arrives."""
    from numba import njit

    njit(lambda value: value + 1).compile("(int64,)")


def _job_arrives(jobs, seconds: float) -> bool:
    """Whether ``jobs`` has something to read (a job, or the end of the pipe) within ``seconds``
    (always True where ``select`` cannot wait on a pipe: Windows)."""
    import select

    try:
        ready, _, _ = select.select([jobs], [], [], seconds)
    except (OSError, ValueError):
        return True
    return bool(ready)


def serve(jobs, out) -> int:
    """Read a pickled job from ``jobs`` (a binary file), compile it, write the pickled outcome to
    ``out``. A spare worker whose process ended unused reads nothing: it ends quietly, as it does
    after :data:`SPARE_IDLE_SECONDS` without a job."""
    if not _job_arrives(jobs, SPARE_IDLE_SECONDS):
        return 0
    try:
        job = pickle.load(jobs)
    except EOFError:
        return 0
    with _compiling.quiet():
        outcome = compile_job(job, results=lambda: pickle.load(jobs))
    out.write(pickle.dumps(outcome))
    out.flush()
    return 0


def main() -> int:
    """A worker started as a new interpreter (:func:`_spawn`): get ready, then :func:`serve` on
    stdin and stdout."""
    _first_compile()
    return serve(sys.stdin.buffer, sys.stdout.buffer)


event.register("numba:compile", _ColdCompile())

if __name__ == "__main__":
    sys.exit(main())
