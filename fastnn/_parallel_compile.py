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

``FASTNN_PARALLEL_COMPILE``: ``0`` compiles in this process only; a number N uses N processes
(default: one per idle CPU, :func:`idle_cpus`). Also in-process only: inside a daemon process, under
MPI (every rank would start workers), for less than :data:`MIN_SECONDS` of estimated compile.
"""

from __future__ import annotations

import contextlib
import inspect
import multiprocessing
import os
import pickle
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Any, Callable, Iterator, NamedTuple, Sequence

from numba.core import types
from numba.core.registry import CPUDispatcher

from . import _compiling, _shipped_cache

#: compile CPU seconds of a kernel with its callees, measured with empty caches on the project's
#: 2-core machine (``benchmarks/compile_profile.py demo``); other kernels count DEFAULT_COST
COSTS = {
    "dense_backward": 5.8,
    "dense_forward": 5.6,
    "dense_infer": 3.2,
    "adam_step": 2.6,  # 3.2 with value clipping compiled in (an optimizer with clip_value)
    "adam_update": 2.0,
    "gather_batch": 2.1,  # with its row prefetch (1.3 without; 1.9-2.2 measured, 2026-12-03)
    "cross_entropy_forward_backward": 1.5,
    "fill_normal": 1.1,
    "fill_uniform": 0.9,
    "clip_by_value": 0.7,
    "grad_global_norm": 0.5,
}
DEFAULT_COST = 0.5
#: seconds a worker needs before it compiles (interpreter, numba and fastnn imports)
WORKER_START_SECONDS = 1.0
#: below this estimated compile time (seconds) workers cost more than they save
MIN_SECONDS = 3.0
#: a worker still running after this many seconds plus its share's estimate x 10 is stopped
TIMEOUT_SECONDS = 120.0
ENV = "FASTNN_PARALLEL_COMPILE"
_MPI_ENV = ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK", "MPI_LOCALNRANKS", "SLURM_PMIX_MAPPING_SERV")


def processes() -> int:
    """How many processes compile a cold start's kernels (1: this one only, no workers)."""
    setting = os.environ.get(ENV, "").strip()
    if setting:
        try:
            wanted = int(setting)
        except ValueError:
            raise ValueError(
                f"{ENV}={setting!r}: expected 0 (compile in this process only) or a number of processes"
            ) from None
        if wanted <= 1:
            return 1
    else:
        wanted = idle_cpus()
    if multiprocessing.current_process().daemon or any(name in os.environ for name in _MPI_ENV):
        return 1
    if "mpi4py.MPI" in sys.modules:
        return 1
    return max(1, wanted)


def idle_cpus() -> int:
    """The CPUs this process may run on that the last minute's load average leaves idle, plus this
    process's own (at least 1): on a machine busy with other work, more processes only add the
    workers' start-up and the callees they each compile (measured: +20% CPU, no shorter wall)."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):  # Windows: no load average
        return cpus
    return max(1, min(cpus, 1 + int(cpus - load)))


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


def pending(calls: Sequence, given: Sequence = ()) -> tuple[list[Item], set[int]]:
    """The kernel signatures of ``calls`` ((kernel, args) pairs) that neither this process nor a
    cache has, and the indices of the calls whose results their arguments take."""
    typed: dict[int, tuple] = {}
    seen: set = set()
    for index, (fn, args) in enumerate(calls):
        if _is_kernel(fn):
            argtypes = _argument_types(fn, args, given)
            if argtypes is not None and (id(fn), argtypes) not in seen:
                seen.add((id(fn), argtypes))
                typed[index] = argtypes
    with_results = {  # a kernel with a cached signature most likely has this one
        index
        for index, argtypes in typed.items()
        if any(_is_result(v) for v in argtypes)
        and not calls[index][0].overloads
        and not _shipped_cache.cached(calls[index][0])
    }
    referenced = {v[1] for index in with_results for v in typed[index] if _is_result(v)}
    if not referenced <= set(typed):  # a result of a call that cannot be typed here: leave those calls
        with_results = {i for i in with_results if all(v[1] in typed for v in typed[i] if _is_result(v))}
        referenced = {v[1] for index in with_results for v in typed[index] if _is_result(v)}
    items = [
        Item(index, calls[index][0], argtypes, COSTS.get(calls[index][0].py_func.__name__, DEFAULT_COST))
        for index, argtypes in typed.items()
        if index in with_results  # its argument types are known only once the calls it takes from compile (or load)
        or index in referenced
        or not (argtypes in calls[index][0].overloads or _shipped_cache.has_entry(calls[index][0], argtypes))
    ]
    return items, referenced


def share(items: list[Item], referenced: set[int], n: int) -> list[list[Item]]:
    """``items`` in ``n`` bins of about equal cost (longest first, each to the bin done first);
    bin 0 is this process's and holds the calls whose results others take (it sends their return
    types on); the other bins start :data:`WORKER_START_SECONDS` late."""
    bins: list[list[Item]] = [[] for _ in range(n)]
    load = [0.0] + [WORKER_START_SECONDS] * (n - 1)
    for item in sorted(items, key=lambda item: (item.call not in referenced, -item.cost)):
        i = 0 if item.call in referenced else min(range(n), key=lambda b: load[b])
        bins[i].append(item)
        load[i] += item.cost
    return bins


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


def _start_worker(job: list, folder: str) -> subprocess.Popen:
    package_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ)
    env["NUMBA_CACHE_DIR"] = folder  # private: no other process writes here
    env[ENV] = "0"
    proc = subprocess.Popen(
        [sys.executable, "-c", _WORKER, package_root],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    if proc.stdin is not None:
        proc.stdin.write(pickle.dumps(job, protocol=pickle.HIGHEST_PROTOCOL))
        proc.stdin.flush()
    return proc


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


@contextlib.contextmanager
def compiled_in_workers(calls: Sequence, given: Sequence = ()) -> Iterator[None]:
    """Run the block (the first run of ``calls``) after their uncached kernels were compiled in
    worker processes and this one; the workers' folders are readable inside the block."""
    n = processes()
    items, referenced = pending(calls, given) if n > 1 else ([], set())
    total = sum(item.cost for item in items)
    if n <= 1 or len(items) < 2 or total < MIN_SECONDS:
        yield
        return
    bins = [b for b in share(items, referenced, min(n, len(items))) if b]
    start = time.perf_counter()
    folders: list[str] = []
    workers: list[tuple[subprocess.Popen, int]] = []
    try:
        for b in bins[1:]:
            folder = tempfile.mkdtemp(prefix="fastnn-compile-")
            folders.append(folder)
            try:
                workers.append((_start_worker(_job(b), folder), len(b)))
            except OSError:  # cannot start processes here: those kernels compile at their first call
                break
        if workers:
            _compiling.announce(round(max(sum(item.cost for item in b) for b in bins)), len(workers) + 1)
        outcome = compile_job(
            _job(bins[0]), done=lambda types: _send_results(workers, types), provides=frozenset(referenced)
        )
        failed = sum(1 for error in outcome if error)
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
            processes=len(workers) + 1,
            kernels=len(items),
            failed=failed,
            seconds=time.perf_counter() - start,
            shares=[[item.kernel.py_func.__name__ for item in b] for b in bins],
        )
        with _shipped_cache.compiled_elsewhere(folders):
            yield
    finally:
        for proc, _ in workers:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        for folder in folders:
            shutil.rmtree(folder, ignore_errors=True)


def main() -> int:
    """Worker: read a pickled job from stdin, compile it, write the pickled outcome to stdout."""
    job = pickle.load(sys.stdin.buffer)
    with _compiling.quiet():
        outcome = compile_job(job, results=lambda: pickle.load(sys.stdin.buffer))
    sys.stdout.buffer.write(pickle.dumps(outcome))
    return 0


if __name__ == "__main__":
    sys.exit(main())
