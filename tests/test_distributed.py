"""fastnn.distributed on loopback: scripts under tests/mpi_scripts run with ``mpiexec -n 2``."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time

import pytest

pytest.importorskip("mpi4py")
MPIEXEC = shutil.which("mpiexec") or os.path.join(os.path.dirname(sys.executable), "mpiexec")
if not os.path.exists(MPIEXEC):
    pytest.skip("no mpiexec (pip install mpich)", allow_module_level=True)

SCRIPTS = os.path.join(os.path.dirname(__file__), "mpi_scripts")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def mpirun(script: str, *args, ranks: int = 2, timeout: float = 120) -> subprocess.CompletedProcess:
    """``mpiexec -n ranks python script args`` (a script of mpi_scripts/, or "-m" and a module) with
    this checkout first on the path, one thread a rank."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]),
        "NUMBA_NUM_THREADS": "1",
        "OMP_NUM_THREADS": "1",
    }
    target = [script] if script == "-m" else [os.path.join(SCRIPTS, script)]
    command = [MPIEXEC, "-n", str(ranks), sys.executable, *target, *map(str, args)]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module", autouse=True)
def compiled_once():
    """Compile the scripts' kernels here, in one process, before any mpiexec: otherwise every rank
    compiles all of them at once (their saves into the one cache are safe, fastnn._cache_file, but
    the ranks' compile time would count against each mpiexec's timeout)."""
    sys.path.insert(0, SCRIPTS)
    try:
        from _common import data, model, sequence_data, sequence_model
    finally:
        sys.path.remove(SCRIPTS)
    for dtype, norm in (("float64", True), ("float64", False), ("float32", False)):
        X, y = data(dtype=dtype)
        model(dtype, norm=norm).fit(X, y, epochs=1, batch_size=8, validation_data=(X[:7], y[:7]), verbose=0)
    X, y = data()
    model(norm=True, frozen=True).fit(X, y, epochs=1, batch_size=8, verbose=0)  # evaluation-mode batch norm
    X, y = sequence_data()
    sequence_model().fit(X, y, epochs=1, batch_size=8, validation_data=(X[:9], y[:9]), verbose=0)


def check(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    return result.stdout


@pytest.mark.parametrize("dtype, sync", [("float64", "sync"), ("float32", ""), ("float64", "frozen")])
def test_two_ranks_train_as_one_process(tmp_path, dtype, sync):
    """Weights, buffers, losses, accuracies, validation metrics and EarlyStopping of 2 ranks equal
    one process with the same global batch (Dropout masks, a ragged last batch, and in float64
    SyncBatchNorm included, or a frozen BatchNorm, which trains in inference mode: no rank moves its
    statistics; float64 to 1e-11); two runs are bit-identical; only rank 0 prints and writes its
    CSV log. (Without BatchNorm in float64: test_resume_across_world_sizes.)"""
    result = mpirun("equal.py", tmp_path, dtype, sync)
    assert check(result).count("ok") == 2
    assert (result.stdout + result.stderr).count(
        "Epoch 1/4"
    ) == 3  # rank 0's two distributed fits and its one-process reference


@pytest.mark.parametrize("buckets", ["", "buckets"])
def test_a_stop_in_a_batch_hook_is_rank_0s_on_every_rank(buckets):
    """stop_training set in on_batch_end by a callback of rank 0 only ends the epoch after that batch
    on both ranks, as one process (weights, dropout counters, history with lr to 1e-11, optimizer.lr,
    on_batch_begin calls; epochs_done, no cursor): without on_batch_begin hooks the decision rides on
    the next step's (loss, correct) Allreduce and that step is undone everywhere; with one on some
    rank (rank 0's alone, Keras's name; a per-batch LearningRateScheduler on both) the ranks agree
    after each batch, so the next batch's on_batch_begin does not run; a stop set on rank 1 alone is
    ignored in both ways."""
    assert check(mpirun("stop.py", buckets)).count("ok") == 2


def test_dropout_in_layers_buckets_and_validation_as_one_process():
    """An LSTM with dropout between its layers and a TransformerEncoderBlock with attention and
    feed-forward dropout train on 2 ranks as one process (float64 to 1e-11; masks by global
    sample position); gradient buckets started during the backward give weights bit-identical to
    one Allreduce; each rank validates its shard of the rows and the logs equal one process's."""
    assert check(mpirun("buckets.py")).count("ok") == 2


@pytest.mark.parametrize("metrics", ["", "metrics"])
def test_padded_steps_are_left_out_over_all_ranks(metrics):
    """Masking -> per-step outputs on 2 ranks equal one process: the global mean, accuracy, f1 and
    validation are over every rank's valid steps."""
    sys.path.insert(0, SCRIPTS)
    try:
        from _common import masked_model, masked_sequences
    finally:
        sys.path.remove(SCRIPTS)
    X, y = masked_sequences()
    masked_model(["f1"]).fit(X, y, epochs=1, batch_size=8, validation_data=(X[:7], y[:7]), verbose=0)  # compile here
    assert check(mpirun("masked.py", metrics)).count("ok") == 2


def test_temporal_and_class_weights_of_per_step_outputs_weigh_over_all_ranks():
    """Per-step outputs fit with temporal weights (batch, time), one weight per sequence, and
    class_weight, with and without Masking (one launch, four cases): 2 ranks equal one process, the
    loss sum w l / sum w over the global batch's counted positions, not a mean of the ranks' means.
    The same launch: CrossEntropy(ignore_index=-100) with 2-D and per-step outputs, weighted or not,
    masked or not, a rank's shard of a batch (and a whole batch) only ignored targets: the mean over
    the global batch's kept targets (their weights' sum), accuracy, f1 and validation as one process."""
    sys.path.insert(0, SCRIPTS)
    try:
        from _common import masked_model, masked_sequences, sequence_weights_model
    finally:
        sys.path.remove(SCRIPTS)
    import numpy as np

    X, y = masked_sequences()
    weights = np.ones(y.shape)
    masked_model(["f1"]).fit(X, y, sample_weight=weights, class_weight={1: 2.0}, epochs=1, batch_size=8, verbose=0)
    ignored = np.where(y == 0, -100, y)
    for masking in (True, False):  # (the ignore_index kernels compiled here, before the ranks)
        for two_d in (True, False):
            target = ignored[:, 0] if two_d else ignored
            for weighted in (False, True):
                net = sequence_weights_model(masking, two_d, ["f1"], "ignore")
                w = np.ones(len(X)) if weighted else None
                net.fit(
                    X, target, sample_weight=w, validation_data=(X[:7], target[:7]), epochs=1, batch_size=8, verbose=0
                )
    assert check(mpirun("sequence_weights.py")).count("ok") == 2


@pytest.mark.parametrize("variant", ["per step", "nested"])
def test_a_synchronised_batch_norm_over_padded_steps_trains_as_one_process(variant):
    """sync_batchnorm=True with Masking -> TimeDistributed(BatchNorm1d) (per-step loss), or a
    BatchNorm in a Residual block inside TimeDistributed (LastStep): 2 ranks, whose shards hold
    different numbers of valid steps, equal one process's masked kernels on the whole batch
    (weights, running statistics, history; float64 to 1e-10); also with ignore_index where one
    rank's shard of a batch holds only ignored targets (its gradient through the statistics kept)."""
    sys.path.insert(0, SCRIPTS)
    try:
        from _common import masked_norm_model, masked_sequences
    finally:
        sys.path.remove(SCRIPTS)
    import fastnn as fnn

    X, y = masked_sequences()
    y = y if variant == "per step" else y[:, 0]
    masked_norm_model(variant).fit(X, y, epochs=1, batch_size=8, verbose=0)
    ignoring = masked_norm_model(variant, loss=fnn.losses.CrossEntropy(ignore_index=-100))
    ignoring.fit(X, y, validation_data=(X[:7], y[:7]), epochs=1, batch_size=8, verbose=0)  # (its kernels compiled)
    assert check(mpirun("masked_norm.py", *variant.split())).count("ok") == 2


def test_bucket_bytes_must_be_positive():
    from mpi4py import MPI

    import fastnn as fnn

    for bad in (0, -5, 1.5, "1MB"):
        with pytest.raises(ValueError, match=r"bucket_bytes must be a positive number of bytes .* got"):
            fnn.distributed.init(MPI.COMM_SELF, bucket_bytes=bad)


def test_a_shard_of_one_row_for_a_batchnorm_unfrozen_mid_epoch_is_refused_naming_it():
    """A global batch whose smallest shard has one row, while an unsynchronised BatchNorm trains on
    one row per sample (a callback unfroze it after the epoch's check_batches): a DistributedError on
    every rank naming the layer and the fixes, not BatchNorm's "got batch size 1" on one rank. A
    frozen BatchNorm, or shards of two rows, pass. (Under mpiexec: stop.py's last case.)"""
    from mpi4py import MPI

    import fastnn as fnn

    layers = [fnn.Dense(5, 4, bias=False), fnn.BatchNorm1d(4), fnn.Dense(4, 3)]
    net = fnn.Sequential(layers, input_shape=(5,), dtype="float64", seed=0).compile("cross_entropy", "sgd")
    run = fnn.distributed.Session(MPI.COMM_SELF, net)
    assert run.shard(8, 10) == (8, 10)
    with pytest.raises(
        fnn.distributed.DistributedError, match=r"BatchNorm1d\(4.* became trainable during the epoch"
    ) as info:
        run.shard(16, 17)
    assert "a batch of 1 rows cut into 1 shards gives a rank 1 row(s)" in str(info.value)
    assert "sync_batchnorm=True" in str(info.value) and "last batch has >= 2 rows" in str(info.value)
    net.freeze(1)
    assert run.shard(16, 17) == (16, 17)


def test_buckets_cover_the_gradient_once_in_backward_order():
    """Layers grouped from the last one into buckets of >= bucket_bytes; each bucket is its
    layers' weights and biases (two sections of the flat buffer), the whole buffer exactly once,
    and starts after the backward of its layer nearest the input."""
    import types

    import fastnn as fnn

    layers = [fnn.Dense(5, 8), fnn.ReLU(), fnn.Dense(8, 8), fnn.Dense(8, 3)]  # 48, 72, 27 parameters
    net = fnn.Sequential(layers, input_shape=(5,), dtype="float64", seed=0)
    buckets = fnn.distributed.Buckets(types.SimpleNamespace(model=net), bucket_bytes=480)
    assert buckets.first_layer == {2: 0, 0: 1}  # 216 + 576 bytes, then the first Dense's 384
    assert buckets.ranges == [[(40, 128), (136, 147)], [(0, 40), (128, 136)]]  # weights 0..127, biases 128..
    assert buckets.calls_after(1) == [] and buckets.calls_after(2) == [(buckets.start, (0,))]


def test_resume_across_world_sizes(tmp_path):
    """A fit interrupted mid-epoch on 2 ranks resumes on 1 process, and one interrupted on 1
    process resumes on 2 ranks (rank 1 starting from a fresh model), each equal to the
    uninterrupted one-process fit."""
    assert check(mpirun("resume.py", tmp_path)).count("ok") == 2


@pytest.mark.parametrize(
    "how, message",
    [
        ("raise", "ValueError: rank fault injected"),  # an uncaught error on one rank aborts the job at once
        ("kill", "Killed"),  # the launcher ends the job when a rank dies
        ("hang", "no answer from the other ranks within 3 s during "),  # the deadline (where depends on the load)
        ("data", "the ranks disagree on the data (rank 0: X (22, 5) float64, y (22,) int64; rank 1: X (21, 5)"),
        ("model", "the ranks disagree on the model (rank 1 differs from rank 0 at layers[0].trainable: rank 0 has"),
        ("diverge", "the weights differ across ranks before step 3 (ranks [1] differ from rank 0)"),  # check_every=2
    ],
)
def test_a_failing_rank_ends_the_job_with_a_clear_error(how, message):
    start = time.monotonic()
    result = mpirun("fault.py", how, timeout=60)
    assert result.returncode != 0
    assert message in result.stdout + result.stderr
    assert "fit finished" not in result.stdout
    assert time.monotonic() - start < 50  # ended by the fault handling, not by the test's timeout


def test_cli_train_under_mpiexec(tmp_path):
    """``mpiexec -n 2 python -m fastnn train`` trains as ``fastnn train`` on one process; rank 0
    alone prints and saves."""
    import numpy as np

    rng = np.random.default_rng(0)
    X = rng.standard_normal((40, 4))
    np.savez(tmp_path / "data.npz", X=X, y=(X[:, 0] > 0).astype(np.int64))
    args = [
        "train",
        "--data",
        tmp_path / "data.npz",
        "--target",
        "y",
        "--hidden",
        "6",
        "--epochs",
        "2",
        "--batch-size",
        "8",
        "--dtype",
        "float64",
        "--verbose",
        "0",
    ]
    env = {**os.environ, "PYTHONPATH": ROOT, "NUMBA_NUM_THREADS": "1"}
    one = subprocess.run(
        [sys.executable, "-m", "fastnn", *map(str, args), "-o", str(tmp_path / "one.npz")],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )  # first: it compiles what the ranks need
    assert one.returncode == 0, one.stderr
    two = check(mpirun("-m", "fastnn", *args, "-o", tmp_path / "two.npz"))
    assert two.count("test accuracy") == 1 and two.count("saved to") == 1
    with np.load(tmp_path / "two.npz") as a, np.load(tmp_path / "one.npz") as b:
        assert sorted(a) == sorted(b)
        for key in a:
            np.testing.assert_allclose(a[key], b[key], rtol=1e-10, atol=1e-12, err_msg=key)


@pytest.mark.parametrize("rows, ranks", [(8, 2), (7, 2), (6, 4), (5, 5), (130, 3)])
def test_shards_cover_the_batch_in_order(rows, ranks):
    """Contiguous shards, in rank order, sizes differing by at most one."""
    from fastnn.distributed import shard_bounds

    bounds = [shard_bounds(rows, ranks, r) for r in range(ranks)]
    assert bounds[0][0] == 0 and bounds[-1][1] == rows
    assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))
    sizes = [stop - start for start, stop in bounds]
    assert max(sizes) - min(sizes) <= 1 and min(sizes) >= 1


def test_a_single_process_is_not_distributed(monkeypatch):
    """Without a launcher (or with FASTNN_DISTRIBUTED=0) fit trains alone: no session."""
    import fastnn as fnn

    for name in ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE", "PMIX_SIZE"):
        monkeypatch.delenv(name, raising=False)
    assert not fnn.distributed.launched()
    monkeypatch.setenv("PMI_SIZE", "4")
    assert fnn.distributed.launched()
    monkeypatch.setenv("FASTNN_DISTRIBUTED", "0")
    assert not fnn.distributed.launched()
