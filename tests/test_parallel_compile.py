"""A cold process compiles a step's uncached kernels in worker processes (fastnn._parallel_compile):
the same results as compiling in-process, a cache the next process loads whole, and the fallback."""

import json
import multiprocessing
import os
import subprocess
import sys
import time
from types import ModuleType

import numpy as np
import pytest
from numba.core import types

from fastnn import _compiling, _fused, _parallel_compile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# one step of a small MLP: dense forward/backward, cross-entropy and the Adam update in the step's call
STEP = """
import json, sys
import numpy as np
import fastnn as fnn
from fastnn import _compiling, _parallel_compile
rng = np.random.default_rng(0)
X, y = rng.standard_normal((16, 5)).astype(np.float32), rng.integers(0, 3, 16)
model = fnn.Sequential([fnn.Dense(5, 8, activation="relu"), fnn.Dense(8, 3)], seed=0, dtype="float32")
model.compile("cross_entropy", "adam")
model.plan_ahead(16)  # predict's plan for 16 rows: its kernels compile with the first step's
before = _compiling.compiles()
losses = [model.train_step(X, y) for _ in range(3)]
predicted = model.predict(X).tolist()
print(json.dumps({"losses": losses, "params": model.params.tolist(), "predicted": predicted,
                  "step_compiles": _compiling.compiles() - before,
                  "compiled": _compiling.compiled()[before:],
                  "last": {k: v for k, v in _parallel_compile.last.items() if k != "seconds"}}))
"""


def _run(tmp_path, caches="a", **env):
    environment = dict(
        os.environ,
        PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
        NUMBA_CACHE_DIR=str(tmp_path / caches / "numba"),
        FASTNN_CACHE_DIR=str(tmp_path / caches / "fastnn"),
        FASTNN_FUSE="never",
        **env,
    )
    proc = subprocess.run([sys.executable, "-c", STEP], env=environment, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1]), proc.stderr


def test_a_cold_step_compiled_in_workers_equals_one_compiled_in_process_and_its_cache_loads_whole(tmp_path, capsys):
    parallel, parallel_err = _run(tmp_path, "a", FASTNN_PARALLEL_COMPILE="2")
    assert parallel["last"]["processes"] == 2 and parallel["last"]["failed"] == 0, parallel["last"]
    # the input checks' compile started a spare worker (on Linux a fork of the process, with no
    # other Python thread), which got the step's other share
    assert parallel["last"]["spare"] is True, parallel["last"]
    assert parallel["last"]["forked"] == int(sys.platform.startswith("linux")), parallel["last"]
    assert all(parallel["last"]["shares"]), parallel["last"]  # both processes compiled a share
    # the inference plan's kernels were shared too, and loaded when the step's first run ended
    assert parallel["last"]["later"] >= 1 and "dense_infer" in sum(parallel["last"]["shares"], []), parallel["last"]
    assert "in 2 processes" in parallel_err
    # the worker's kernels were loaded, not compiled again here (the other share compiled here), dense_infer too
    here = {name.rsplit(".", 1)[-1] for name in parallel["compiled"]}
    worker = set(parallel["last"]["shares"][1])
    assert set(parallel["last"]["shares"][0]) <= here and not here & worker, (here, worker)
    # the same training as kernels compiled in one process (this one: the cold in-process compile
    # is tests/test_startup.py's; a second cold subprocess here would double the test's time)
    exec(compile(STEP, "<step>", "exec"), {})
    alone = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert parallel["losses"] == alone["losses"] and parallel["params"] == alone["params"]
    assert parallel["predicted"] == alone["predicted"]
    # the next process finds every kernel in its own cache (copied from the worker's folder): no compile
    warm, warm_err = _run(tmp_path, "a", FASTNN_PARALLEL_COMPILE="2")
    assert warm["step_compiles"] == 0 and warm["last"] == {}, warm
    assert warm["losses"] == alone["losses"] and warm["params"] == alone["params"]
    assert warm["predicted"] == alone["predicted"]
    assert "compiling" not in warm_err
    # the workers' temporary folders are gone
    assert not [name for name in os.listdir(tmp_path / "a" / "numba") if name.startswith("fastnn-compile-")]


def test_processes_follows_the_setting_and_refuses_a_bad_one(monkeypatch):
    # an earlier test of the suite may have imported mpi4py.MPI (it means "under MPI": one process)
    monkeypatch.delitem(sys.modules, "mpi4py.MPI", raising=False)
    monkeypatch.setenv(_parallel_compile.ENV, "0")
    assert _parallel_compile.processes() == 1
    monkeypatch.setenv(_parallel_compile.ENV, "3")
    assert _parallel_compile.processes() == 3
    monkeypatch.setenv("OMPI_COMM_WORLD_SIZE", "2")  # under MPI every rank would start workers
    assert _parallel_compile.processes() == 1
    monkeypatch.delenv("OMPI_COMM_WORLD_SIZE")
    monkeypatch.setitem(sys.modules, "mpi4py.MPI", ModuleType("mpi4py.MPI"))  # MPI imported
    assert _parallel_compile.processes() == 1
    monkeypatch.delitem(sys.modules, "mpi4py.MPI")
    monkeypatch.delenv(_parallel_compile.ENV)
    monkeypatch.setattr(_parallel_compile, "busy_cpus", lambda: 50.0)  # a busy machine: no idle CPU
    assert _parallel_compile.processes() == 1
    monkeypatch.setattr(_parallel_compile, "busy_cpus", lambda: 0.0)
    assert _parallel_compile.processes() == _parallel_compile.idle_cpus() == len(os.sched_getaffinity(0))
    # without /proc/stat: the load average, less this process's own share of it
    monkeypatch.setattr(_parallel_compile, "busy_cpus", lambda: None)
    monkeypatch.setattr(os, "getloadavg", lambda: (50.0, 50.0, 50.0))
    assert _parallel_compile.processes() == 1
    monkeypatch.setattr(os, "getloadavg", lambda: (1.0, 1.0, 1.0))  # this process alone
    assert _parallel_compile.processes() == len(os.sched_getaffinity(0))
    monkeypatch.setenv(_parallel_compile.ENV, "many")
    with pytest.raises(ValueError, match="FASTNN_PARALLEL_COMPILE='many'"):
        _parallel_compile.processes()


def _daemon_processes(queue):
    queue.put(_parallel_compile.processes())


def test_busy_cpus_sees_a_process_that_spins():
    cpus = len(os.sched_getaffinity(0))
    assert 0.0 <= _parallel_compile.busy_cpus() <= cpus
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.3)
        busy = _parallel_compile.busy_cpus(0.2)
    finally:
        spinner.kill()
        spinner.wait()
    assert 0.5 <= busy <= cpus, busy


# a cold compile starts a spare worker; unused, it ends with the process (or when settings change)
SPARE = """
import json, os, sys, threading
import numpy as np
from fastnn import _parallel_compile
from fastnn.kernels.checks import all_finite
if sys.argv[1] == "thread":  # another Python thread: the spare is a new interpreter, not a fork
    threading.Thread(target=threading.Event().wait, daemon=True).start()
all_finite(np.ones((2, 2)))  # a cold compile of a fastnn kernel
first = _parallel_compile.spare()
os.environ["FASTNN_FUSE"] = "never"  # another setting than the spare started with: not used
dropped = _parallel_compile.take_spare()
all_finite(np.ones((2, 2), np.float32))  # another cold compile: another spare
print(json.dumps({"first": first, "dropped": dropped, "second": _parallel_compile.spare()}))
"""


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


@pytest.mark.parametrize("thread", ["thread", "alone"])
def test_a_cold_compile_starts_a_spare_that_ends_unused(tmp_path, thread):
    environment = dict(
        os.environ,
        PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
        NUMBA_CACHE_DIR=str(tmp_path / "numba"),
        FASTNN_CACHE_DIR=str(tmp_path / "fastnn"),
        FASTNN_PARALLEL_COMPILE="2",
    )
    environment.pop("FASTNN_FUSE", None)
    proc = subprocess.run(
        [sys.executable, "-c", SPARE, thread], env=environment, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got["first"] is not None and got["dropped"] is None, got
    assert got["second"] is not None and got["second"][0] != got["first"][0], got
    forked = thread == "alone" and sys.platform.startswith("linux")
    for pid, folder, fork in (got["first"], got["second"]):  # both ended, their folders removed
        assert fork is forked and _gone(pid) and not os.path.exists(folder), (pid, folder, fork)


def test_a_daemon_process_compiles_in_process(monkeypatch):
    monkeypatch.setenv(_parallel_compile.ENV, "4")
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    proc = context.Process(target=_daemon_processes, args=(queue,), daemon=True)
    proc.start()
    got = queue.get(timeout=120)
    proc.join(timeout=120)
    assert got == 1


def test_disabled_runs_the_calls_without_workers(monkeypatch):
    from fastnn.kernels.checks import all_finite

    monkeypatch.setenv(_parallel_compile.ENV, "0")
    _parallel_compile.last.clear()
    runner = _fused.CallRunner([(all_finite, (np.ones((2, 2)),))], returns=0)
    assert runner() is True
    assert _parallel_compile.last == {}


def _fresh_kernel(name):
    """A kernel with no signature anywhere (no cache): what a cold process sees."""
    import numba

    def kernel(total, x):
        return total + x[0]

    kernel.__module__ = "fastnn.kernels.test_only"
    kernel.__name__ = kernel.__qualname__ = name
    return numba.njit(kernel)


def test_pending_leaves_a_loaded_kernel_that_takes_a_result_to_its_first_run():
    # a warm process: the kernel taking call 1's result has a signature, and call 1 repeats call 0's
    # (one typed key for both). Nothing is pending, so no window opens (it used to open one each fit).
    from fastnn.kernels.optim import grad_global_norm
    from fastnn.kernels.step_feed import add_to_total

    g = np.ones(3)
    total = np.zeros(1, dtype=np.int64)
    grad_global_norm(g, g)
    add_to_total(2, total)
    calls = [(grad_global_norm, (g, g)), (grad_global_norm, (g, g)), (add_to_total, (_fused.Result(1), total))]
    assert _parallel_compile.pending(calls) == ([], set())
    calls.append((add_to_total, (_fused.Result(5), total)))  # takes from a call that is not there
    assert _parallel_compile.pending(calls) == ([], set())


def test_pending_remembers_the_argument_kinds_it_found_nothing_pending_for(monkeypatch):
    """A new model of a structure seen before (a scikit-learn estimator's next fit) is not typed
    again: its calls' kernels and argument kinds (dtype, dimensions, layout, tuples, Given values)
    were found with nothing pending; another kind, or a list with something pending, is typed."""
    from fastnn.kernels.optim import grad_global_norm

    memory: set = set()
    monkeypatch.setattr(_parallel_compile, "_NOTHING_PENDING", memory)
    g = np.ones(3)
    grad_global_norm(g, g)
    calls = [(grad_global_norm, (g, _fused.Given(0)))]
    assert _parallel_compile.pending(calls, (g,)) == ([], set())
    assert len(memory) == 1
    cold = [(_fresh_kernel("cold_kernel_kinds"), (np.float64(1.0), g))]
    assert _parallel_compile.pending(cold)[0] and len(memory) == 1  # something to compile: not remembered
    typed = []
    monkeypatch.setattr(_parallel_compile, "_pending", lambda c, v: typed.append(c) or ([], set()))
    other = np.zeros(3)  # other arrays of the same kinds: remembered, not typed
    assert _parallel_compile.pending([(grad_global_norm, (other, _fused.Given(0)))], (other,)) == ([], set())
    assert not typed
    for values in [(np.ones(3, np.float32),), (np.ones(6)[::2],), (np.ones((1, 3)),)]:  # dtype, layout, rank
        _parallel_compile.pending(calls, values)
    assert len(typed) == 3


def test_pending_lists_a_cold_kernel_that_takes_a_result_and_the_call_it_takes_from():
    from fastnn.kernels.optim import grad_global_norm

    g = np.ones(3)
    grad_global_norm(g, g)
    taker = _fresh_kernel("takes_a_norm")
    calls = [(grad_global_norm, (g, g)), (grad_global_norm, (g, g)), (taker, (_fused.Result(1), g))]
    items, referenced = _parallel_compile.pending(calls)
    assert referenced == {1}
    assert sorted(item.call for item in items) == [1, 2]  # call 1 is typed here for its result; 0 is loaded
    assert items[-1].argtypes == (("result", 1), types.Array(types.float64, 1, "C"))
    untyped = [(print, ("not a kernel",)), (taker, (_fused.Result(0), g))]  # its source cannot be typed: left
    assert _parallel_compile.pending(untyped) == ([], set())


def test_share_balances_by_cost_and_keeps_referenced_calls_here():
    item = _parallel_compile.Item
    items = [item(0, None, (), 5.0), item(1, None, (), 5.0), item(2, None, (), 1.0), item(3, None, (), 3.0)]
    bins = _parallel_compile.share(items, {2}, 2)
    assert 2 in [i.call for i in bins[0]]  # another call takes its result: compiled here, its type sent on
    costs = [sum(i.cost for i in b) for b in bins]
    assert sorted(i.call for b in bins for i in b) == [0, 1, 2, 3]
    assert abs(costs[0] - (costs[1] + _parallel_compile.WORKER_START_SECONDS)) <= 3.0, costs


def test_share_swaps_to_finish_together():
    # the first 'mlp' step's kernels (measured costs); cross-entropy and the norm stay here. Longest
    # first alone gives this process 6.1 s and the spare 8.8 s; a swap makes it 7.6 and 7.3.
    item = _parallel_compile.Item
    items = [item(0, None, (), 4.0), item(1, None, (), 1.5), item(2, None, (), 5.5), item(3, None, (), 0.6)]
    items.append(item(4, None, (), 3.3))
    bins = _parallel_compile.share(items, {1, 3}, 2, ready=1)
    assert sorted(i.call for i in bins[0]) == [1, 2, 3] and sorted(i.call for i in bins[1]) == [0, 4], bins
    # three bins, none ready: every item placed once, no bin later than the longest item needs
    bins = _parallel_compile.share(items, {1, 3}, 3)
    assert sorted(i.call for b in bins for i in b) == [0, 1, 2, 3, 4]
    finish = [sum(i.cost for i in b) + (_parallel_compile.WORKER_START_SECONDS if k else 0) for k, b in enumerate(bins)]
    assert max(finish) <= 6.5 + 1e-9, finish


def test_compile_job_reports_what_did_not_compile_and_types_results():
    f64 = types.float64
    arr = types.Array(types.float64, 1, "C")
    job = [
        (0, "fastnn.kernels.optim", "grad_global_norm", (arr, arr)),
        (1, "fastnn.kernels.optim", "no_such_kernel", (arr,)),
        (2, "fastnn.kernels.step_feed", "add_to_total", (("result", 0), types.Array(types.float64, 1, "C"))),
        (3, "fastnn.kernels.step_feed", "add_to_total", (("result", 9), arr)),
    ]
    sent = {}
    outcome = _parallel_compile.compile_job(job, results=lambda: {9: None}, done=sent.update, provides=frozenset({0}))
    assert outcome[0] is None and outcome[2] is None
    assert outcome[1].startswith("AttributeError") and outcome[3].startswith("RuntimeError")
    assert sent == {0: f64}


def test_the_notice_names_the_processes():
    assert "for this CPU, once, in 3 processes, about 4 s" in _compiling.notice(4, processes=3)
    assert "processes" not in _compiling.notice(4)


def test_a_spare_given_no_job_ends_by_itself():
    # a notebook's process can live for hours: its spare does not wait for ever
    code = "import sys; from fastnn import _parallel_compile as p; p.SPARE_IDLE_SECONDS = 0.5; sys.exit(p.main())"
    environment = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, env=environment)
    try:
        assert proc.wait(timeout=120) == 0  # stdin still open: it stopped waiting by itself
    finally:
        proc.kill()
        proc.stdin.close()


def test_a_worker_that_cannot_take_its_job_leaves_its_kernels_to_their_first_call(monkeypatch):
    # a worker that ended before its job was written (a broken pipe): no error, the calls still run
    from fastnn.kernels.checks import all_finite, labels_in_range

    x, y = np.ones((3, 2)), np.zeros(3, np.int64)
    calls = [(all_finite, (x,)), (labels_in_range, (y, 2))]
    items = [
        _parallel_compile.Item(i, fn, tuple(fn.typeof_pyval(a) for a in args), 2.0)
        for i, (fn, args) in enumerate(calls)
    ]

    def ended(folder):
        proc = subprocess.Popen([sys.executable, "-c", "pass"], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        proc.wait()
        return proc

    monkeypatch.delitem(sys.modules, "mpi4py.MPI", raising=False)  # an earlier test's import means "under MPI"
    monkeypatch.setenv(_parallel_compile.ENV, "2")
    _parallel_compile.last.clear()
    monkeypatch.setattr(_parallel_compile, "pending", lambda calls, given=(): (items, set()))
    monkeypatch.setattr(_parallel_compile, "take_spare", lambda: None)
    monkeypatch.setattr(_parallel_compile, "_worker", ended)
    with _parallel_compile.compiled_in_workers(calls):
        assert all_finite(x) and labels_in_range(y, 2)
    assert _parallel_compile.last["processes"] == 1 and _parallel_compile.last["failed"] == 1, _parallel_compile.last


# a forked worker compiles its job into its own folder, not the cache of the process it came from
FORKED = """
import json, os, pickle, sys
import numpy as np
from numba import typeof
from fastnn import _parallel_compile
from fastnn.kernels.checks import all_finite
folder = sys.argv[1]
worker = _parallel_compile._worker(folder)
job = [(0, "fastnn.kernels.checks", "labels_in_range", (typeof(np.zeros(3, np.int64)), typeof(2)))]
assert _parallel_compile._send_job(worker, job)
out, _ = worker.communicate(timeout=120)
all_finite(np.ones((2, 2)))  # compiled here after the fork: saved in this process's cache
print(json.dumps({"forked": isinstance(worker, _parallel_compile.Forked), "outcome": pickle.loads(out),
                  "code": worker.returncode}))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="workers are forked on Linux only")
def test_a_forked_worker_compiles_into_its_own_folder(tmp_path):
    environment = dict(
        os.environ,
        PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
        NUMBA_CACHE_DIR=str(tmp_path / "numba"),
        FASTNN_CACHE_DIR=str(tmp_path / "fastnn"),
    )
    folder = tmp_path / "worker"
    folder.mkdir()
    proc = subprocess.run(
        [sys.executable, "-c", FORKED, str(folder)], env=environment, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got == {"forked": True, "outcome": [None], "code": 0}, got

    def files(root, name):
        return [f for _, _, found in os.walk(root) for f in found if f.startswith(name) and f.endswith(".nbi")]

    assert files(folder, "checks.labels_in_range") and not files(folder, "checks.all_finite")
    assert files(tmp_path / "numba", "checks.all_finite") and not files(tmp_path / "numba", "checks.labels_in_range")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="workers are forked on Linux only")
def test_a_forked_worker_ends_on_a_timeout_and_on_kill():
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # a child that never writes
        try:
            os.close(read)
            time.sleep(60)
        finally:
            os._exit(0)
    os.close(write)
    worker = _parallel_compile.Forked(pid, None, os.fdopen(read, "rb"))
    with pytest.raises(subprocess.TimeoutExpired):
        worker.communicate(timeout=0.2)
    assert worker.poll() is None
    worker.kill()
    assert worker.communicate() == (b"", None) and worker.returncode == -9 and _gone(pid)


def test_fit_has_its_validation_plan_compiled_with_the_first_step(monkeypatch):
    import fastnn as fnn

    expected = []
    monkeypatch.setattr("fastnn._parallel_compile.expect", lambda calls, given=(): expected.append(calls))
    rng = np.random.default_rng(1)
    X, y = rng.standard_normal((40, 5)).astype(np.float32), rng.integers(0, 3, 40)
    model = fnn.Sequential([fnn.Dense(5, 8, activation="relu"), fnn.Dense(8, 3)], seed=0)
    model.compile("cross_entropy", "adam")
    model.fit(X[:30], y[:30], epochs=1, batch_size=8, validation_data=(X[30:], y[30:]), verbose=0)
    assert len(expected) == 1
    assert "dense_infer" in [fn.py_func.__name__ for fn, _ in expected[0]]
    # the plan recorded is the one the validation ran: its 10 rows
    assert any(args[0].shape[0] == 10 for fn, args in expected[0] if fn.py_func.__name__ == "dense_infer")
    expected.clear()
    model.fit(X[:30], y[:30], epochs=1, batch_size=8, verbose=0)  # no validation: nothing planned ahead
    assert expected == []
