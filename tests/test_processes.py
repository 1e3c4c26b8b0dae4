"""fastnn beside processes and threads: training in children after training in the parent (fork,
spawn, forkserver, joblib), models trained in several threads at once, and several processes
writing the fused-step cache at once (fastnn._config's threading layer, fastnn._fused's files).

Every case trains one tiny structure, so children load its kernels from the parent's Numba cache
(in-tree, or NUMBA_CACHE_DIR, which children inherit) instead of compiling them. It has 67,586
parameters: the optimizer update is a parallel kernel (over PARALLEL_MIN_ELEMENTS), so Numba's
threading layer really starts. Every wait has a timeout, so a hang fails instead of stalling CI.
"""

import io
import multiprocessing
import os
import platform
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest

import fastnn as fnn
from fastnn import _config, _fused

TIMEOUT_S = 120
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The tbb wheel (a core dependency where one exists) makes the layer fork- and thread-safe.
TBB_WHEEL = platform.machine().lower() in ("x86_64", "amd64") and sys.platform in ("linux", "win32", "darwin")


def _tiny(seed: int) -> fnn.Sequential:
    return fnn.Sequential(
        [fnn.Dense(4, 256, activation="tanh"), fnn.Dense(256, 256, activation="tanh"), fnn.Dense(256, 2)], seed=seed
    )


def train_tiny(seed: int, steps: int = 4) -> np.ndarray:
    """Train the tiny model ``steps`` SGD steps on seeded data; its flat parameters (float32)."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((8 * steps, 4)).astype(np.float32)
    y = (X[:, 0] * X[:, 1] > 0).astype(np.int64)
    model = _tiny(seed).compile(loss="cross_entropy", optimizer="sgd")
    for i in range(steps):
        model.train_step(X[8 * i : 8 * i + 8], y[8 * i : 8 * i + 8])
    return model.params.copy()


def _python(code: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter that imports this checkout's fastnn; fail on a timeout."""
    env = dict(os.environ if env is None else env)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [ROOT, env.get("PYTHONPATH")]))
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
    )


def test_fastnn_asks_for_tbb_when_the_wheel_is_installed():
    """The layer is chosen at import, before any parallel kernel: tbb when its runtime loads."""
    import numba

    if not _config._load_tbb():
        pytest.skip("the tbb wheel is not installed (pip install tbb)")
    train_tiny(0, steps=1)
    assert _config.THREADING_LAYER == "tbb"
    assert numba.threading_layer() == "tbb"


@pytest.mark.parametrize("layer", ["omp", "workqueue"])
def test_an_explicit_numba_threading_layer_is_kept(layer):
    result = _python(
        """
        import numba, fastnn
        from tests.test_processes import train_tiny
        train_tiny(0, steps=1)
        print(numba.threading_layer())
        """,
        env={**os.environ, "NUMBA_THREADING_LAYER": layer},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [layer]


@pytest.mark.parametrize("method", ["fork", "forkserver", "spawn"])
def test_children_train_after_the_parent_trained(method):
    """GNU OpenMP kills a child forked after a parallel region as soon as it runs one (the pool
    then waits for ever); tbb does not."""
    if method not in multiprocessing.get_all_start_methods():
        pytest.skip(f"no {method} start method here")
    if method == "fork" and not TBB_WHEEL:
        pytest.skip("no tbb wheel for this platform: fork after training needs tbb (docs/architecture.md)")
    expected = [train_tiny(seed) for seed in (1, 2)]  # the parent trains first
    with multiprocessing.get_context(method).Pool(2) as pool:
        results = pool.map_async(train_tiny, [1, 2]).get(timeout=TIMEOUT_S)
    for got, want in zip(results, expected):
        np.testing.assert_array_equal(got, want)


def test_joblib_loky_workers_train_after_the_parent_trained():
    joblib = pytest.importorskip("joblib")
    expected = [train_tiny(seed) for seed in (1, 2)]
    results = joblib.Parallel(n_jobs=2, timeout=TIMEOUT_S)(joblib.delayed(train_tiny)(seed) for seed in (1, 2))
    for got, want in zip(results, expected):
        np.testing.assert_array_equal(got, want)


def test_models_trained_in_threads_equal_models_trained_one_after_another(tmp_path):
    """Three threads, each its own model, fusing the same step structure at once (in-process
    writers of one cache file): the weights equal those of training one after another with the
    Python loop of kernel calls. In a child: a threading layer that is not thread-safe aborts
    the process (Numba's workqueue does)."""
    result = _python(
        """
        import threading
        import numpy as np
        from fastnn import _config, _fused
        from tests.test_processes import train_tiny

        seeds = (1, 2, 3)
        results, threads = {}, []
        start = threading.Barrier(len(seeds))

        def work(seed):
            start.wait()
            results[seed] = train_tiny(seed, steps=40)

        threads = [threading.Thread(target=work, args=(seed,)) for seed in seeds]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        _config.FUSE = "never"
        for seed in seeds:
            np.testing.assert_array_equal(results[seed], train_tiny(seed, steps=40))
        print("ok")
        """,
        env={**os.environ, "FASTNN_FUSE": "always", "FASTNN_CACHE_DIR": str(tmp_path)},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split() == ["ok"]
    assert "could not fuse" not in result.stderr
    assert [name for name in os.listdir(tmp_path) if name.endswith(".py")], "no step was fused"


def test_processes_fusing_one_structure_at_once_share_the_cache(tmp_path):
    """Four processes fuse the same step into one fresh FASTNN_CACHE_DIR at the same moment
    (a file barrier after import): all succeed, all equal the unfused parent, and the folder
    holds one complete source file and no temporary files."""
    go = tmp_path / "go"
    cache = tmp_path / "cache"
    code = f"""
        import os, sys, time, warnings
        import numpy as np
        warnings.simplefilter("error", RuntimeWarning)  # a failed fusion warns: make it fail
        from tests.test_processes import train_tiny
        open(os.path.join({str(tmp_path)!r}, f"ready{{os.getpid()}}"), "w").close()
        while not os.path.exists({str(go)!r}):
            time.sleep(0.01)
        np.save(sys.stdout.buffer, train_tiny(1, steps=4))
        """
    env = {
        **os.environ,
        "FASTNN_FUSE": "always",
        "FASTNN_CACHE_DIR": str(cache),
        "PYTHONPATH": os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")])),
    }
    children = [
        subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(code)],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for _ in range(4)
    ]
    try:
        deadline = time.monotonic() + TIMEOUT_S
        while len([p for p in tmp_path.iterdir() if p.name.startswith("ready")]) < len(children):
            assert time.monotonic() < deadline and all(c.poll() is None for c in children), [
                c.communicate()[1][-2000:] for c in children if c.poll() is not None
            ]
            time.sleep(0.05)
        go.touch()
        outputs = [child.communicate(timeout=TIMEOUT_S) for child in children]
    finally:
        for child in children:
            child.kill()
    for child, (out, err) in zip(children, outputs):
        assert child.returncode == 0, err.decode()[-3000:]
    expected = train_tiny(1, steps=4)  # the suite runs with FASTNN_FUSE=never: the Python loop
    for out, _ in outputs:
        np.testing.assert_array_equal(np.load(io.BytesIO(out)), expected)
    sources = [name for name in os.listdir(cache) if name.endswith(".py")]
    assert len(sources) == 1
    assert not [name for name in os.listdir(cache) if name.endswith(".tmp")]


def _load_in_threads(source: str, n: int = 8) -> list:
    """``_fused._load(source)`` from ``n`` threads released at once: what each got or raised."""
    start = threading.Barrier(n)
    results = [None] * n

    def work(i):
        start.wait()
        try:
            results[i] = _fused._load(source)
        except Exception as error:  # reported by the assertions of the caller
            results[i] = error

    threads = [threading.Thread(target=work, args=(i,)) for i in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(TIMEOUT_S)
    return results


def test_threads_loading_one_step_source_at_once_get_one_function(monkeypatch, tmp_path):
    """In-process writers of one cache file (models fused in several threads) neither collide
    on a temporary file nor import a partial one; no temporary file is left behind."""
    monkeypatch.setenv("FASTNN_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(_fused, "_LOADED", {})
    for k in range(10):  # a few rounds: the collision needs the threads to interleave
        source = "".join(f"def f{i}():\n    return {i}\n\n\n" for i in range(2000)) + f"def run():\n    return {k}\n"
        results = _load_in_threads(source)
        assert not [r for r in results if isinstance(r, Exception)], results
        assert len({id(r) for r in results}) == 1 and results[0]() == k
    assert sorted(os.listdir(tmp_path)) == sorted(n for n in os.listdir(tmp_path) if n.endswith(".py"))
    assert len(os.listdir(tmp_path)) == 10


def test_a_damaged_step_file_in_the_cache_is_rewritten(monkeypatch, tmp_path):
    """A step file cut short (a crash while writing, a full disk) is replaced, not imported."""
    monkeypatch.setenv("FASTNN_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(_fused, "_LOADED", {})
    source = "def run():\n    return 42\n"
    first = _fused._load(source)
    (path,) = tmp_path.glob("step_*.py")
    path.write_text(source[:12])
    monkeypatch.setattr(_fused, "_LOADED", {})
    assert _fused._load(source)() == first() == 42
    assert path.read_text() == source
