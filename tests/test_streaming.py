"""fit on data that is not one in-memory array: ArrayDataset (memory-mapped, shuffled by block,
exact resume), iterables/callables/generators of batches with steps_per_epoch, and the address
space test (a memory-mapped file larger than RLIMIT_AS)."""

import os
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest

import fastnn as fnn
from fastnn import callbacks as cb_mod
from fastnn.data import ArrayDataset, MappedFile
from fastnn.datasets import EpochOrder
from tests._helpers import InterruptAt


def _data(n=90, features=5, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, features))
    y = (X[:, 0] + X[:, 1] > 0).astype(np.int64) + (X[:, 2] > 1)
    return X, y


def _model(features=5, **compile_kwargs):
    model = fnn.Sequential([fnn.Dense(features, 8, activation="tanh"), fnn.Dense(8, 3)], dtype="float64", seed=3)
    return model.compile("cross_entropy", fnn.optim.Adam(lr=0.01), **compile_kwargs)


def _memmap(tmp_path, X, name="x.f64"):
    mm = np.memmap(tmp_path / name, X.dtype, "w+", shape=X.shape)
    mm[:] = X
    mm.flush()
    return tmp_path / name


def test_a_dataset_of_in_memory_arrays_trains_as_the_arrays_do():
    X, y = _data()
    reference = _model()
    reference.fit(X, y, epochs=3, batch_size=16, verbose=0)
    model = _model()
    model.fit(ArrayDataset(X, y), epochs=3, batch_size=16, verbose=0)
    np.testing.assert_array_equal(model.params, reference.params)


def test_steps_per_epoch_of_a_dataset_may_be_all_its_batches_or_fewer():
    X, y = _data()  # 90 rows: 6 batches of 16
    reference = _model()
    reference.fit(X, y, epochs=2, batch_size=16, verbose=0)
    model = _model()
    model.fit(ArrayDataset(X, y), epochs=2, batch_size=16, steps_per_epoch=6, verbose=0)
    np.testing.assert_array_equal(model.params, reference.params)
    assert model.optimizer.step_count == 12
    model.fit(ArrayDataset(X, y), epochs=1, batch_size=16, steps_per_epoch=5, verbose=0)
    assert model.optimizer.step_count == 17
    with pytest.raises(ValueError, match="steps_per_epoch=7 is more than the 6 batches"):
        model.fit(ArrayDataset(X, y), batch_size=16, steps_per_epoch=7, verbose=0)


def test_the_epoch_order_permutes_blocks_then_rows_within_each_block():
    n, block = 50, 8
    ds = ArrayDataset(np.arange(n, dtype=np.float64)[:, None], np.arange(n), block_rows=block)
    orders = []
    for epoch in range(2):
        x_out, y_out = np.empty((n, 1)), np.empty(n, np.int64)
        order = EpochOrder(ds, seed=5, epoch=epoch, shuffle=True, check=lambda x, y: (x, y))
        for lo in range(0, n, 7):  # batches that straddle blocks
            order.gather(lo, min(n, lo + 7), x_out[lo : lo + 7], y_out[lo : lo + 7])
        np.testing.assert_array_equal(x_out[:, 0], y_out)
        assert sorted(y_out) == list(range(n))  # every row once
        blocks = y_out // block
        runs = [blocks[0]] + [b for a, b in zip(blocks, blocks[1:]) if a != b]
        assert len(runs) == ds.blocks and len(set(runs)) == ds.blocks  # each block read in one run
        assert runs != sorted(runs) and list(y_out) != sorted(y_out)
        orders.append(y_out)
    assert not np.array_equal(*orders)  # another order each epoch


@pytest.mark.parametrize("kind", ["memmap", "np.load", "file", "npy"])
@pytest.mark.parametrize("accumulate", [1, 2])
def test_an_interrupted_fit_on_mapped_data_resumes_bit_for_bit(kind, accumulate, tmp_path):
    X, y = _data()
    path = _memmap(tmp_path, X)
    np.save(tmp_path / "x.npy", X)

    def dataset():
        if kind == "memmap":
            return ArrayDataset(np.memmap(path, X.dtype, "r", shape=X.shape), y, block_rows=16)
        if kind == "np.load":
            return ArrayDataset(np.load(tmp_path / "x.npy", mmap_mode="r"), y, block_rows=16)
        if kind == "npy":
            return ArrayDataset.from_npy(tmp_path / "x.npy", y, block_rows=16)
        return ArrayDataset.from_file(path, X.dtype, X.shape, y, block_rows=16)

    reference = _model()
    reference.fit(dataset(), epochs=2, batch_size=8, verbose=0, accumulate=accumulate)
    model = _model()
    with pytest.raises(KeyboardInterrupt):
        model.fit(dataset(), epochs=2, batch_size=8, verbose=0, accumulate=accumulate, callbacks=[InterruptAt(1, 4)])
    assert model.state.cursor is not None and model.state.cursor.epoch == 1
    model.save(tmp_path / "m.safetensors")
    resumed = fnn.load(tmp_path / "m.safetensors")
    resumed.fit(dataset(), epochs=1, batch_size=8, verbose=0, accumulate=accumulate)
    np.testing.assert_array_equal(resumed.params, reference.params)
    np.testing.assert_array_equal(
        resumed.optimizer.state_dict()["exp_avg"], reference.optimizer.state_dict()["exp_avg"]
    )


def test_a_callable_of_batches_resumes_bit_for_bit_by_skipping_the_batches_done():
    X, y = _data()

    def batches():
        return ((X[i : i + 10], y[i : i + 10]) for i in range(0, len(X), 10))

    reference = _model()
    reference.fit(batches, epochs=2, verbose=0)
    model = _model()
    with pytest.raises(KeyboardInterrupt):
        model.fit(batches, epochs=2, verbose=0, callbacks=[InterruptAt(0, 3)])
    model.fit(batches, epochs=2, verbose=0)
    np.testing.assert_array_equal(model.params, reference.params)
    unshuffled = _model()
    unshuffled.fit(X, y, epochs=2, batch_size=10, shuffle=False, verbose=0)
    np.testing.assert_array_equal(model.params, unshuffled.params)


def test_a_generator_needs_steps_per_epoch_and_is_shared_by_the_epochs():
    X, y = _data()

    def endless():
        while True:
            for i in range(0, len(X), 10):
                yield X[i : i + 10], y[i : i + 10]

    with pytest.raises(ValueError, match="steps_per_epoch"):
        _model().fit(endless(), epochs=1, verbose=0)
    seen = []

    class Count(cb_mod.Callback):
        def on_batch_end(self, batch, logs=None):
            seen.append((batch, logs["size"]))

    model = _model()
    history = model.fit(endless(), epochs=3, steps_per_epoch=3, verbose=0, callbacks=[Count()])
    assert len(history.history["loss"]) == 3 and model.epochs_done == 3
    assert seen == [(b, 10) for _ in range(3) for b in range(3)]
    reference = _model()  # 9 batches of one stream == the first 90 rows in order
    reference.fit(X, y, epochs=1, batch_size=10, shuffle=False, verbose=0)
    np.testing.assert_array_equal(model.params, reference.params)


class _StopBefore(cb_mod.Callback):
    """KeyboardInterrupt before batch ``batch`` of epoch ``epoch`` (once): that batch was taken
    from the data but not trained on."""

    def __init__(self, epoch, batch):
        self.at, self.epoch = (epoch, batch), None

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_batch_begin(self, batch, logs=None):
        if (self.epoch, batch) == self.at:
            self.at = None
            raise KeyboardInterrupt


@pytest.mark.parametrize("accumulate", [1, 2])
@pytest.mark.parametrize("save", [False, True])
def test_an_interrupted_generator_epoch_resumes_where_the_stream_stood(accumulate, save, tmp_path):
    X, y = _data()

    def endless():
        while True:
            for i in range(0, len(X), 10):
                yield X[i : i + 10], y[i : i + 10]

    sizes = []

    class Count(cb_mod.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            sizes.append([])

        def on_batch_end(self, batch, logs=None):
            sizes[-1].append(batch)

    reference = _model()
    expected = reference.fit(endless(), epochs=2, steps_per_epoch=5, accumulate=accumulate, verbose=0)
    model, stream = _model(), endless()
    with pytest.raises(KeyboardInterrupt):  # batch 3 of epoch 0 was taken from the stream, not trained on
        model.fit(stream, epochs=2, steps_per_epoch=5, accumulate=accumulate, verbose=0, callbacks=[_StopBefore(0, 3)])
    if save:
        model.save(tmp_path / "m.safetensors")
        model = fnn.load(tmp_path / "m.safetensors")
    history = model.fit(stream, epochs=2, steps_per_epoch=5, accumulate=accumulate, verbose=0, callbacks=[Count()])
    done = 3 - 3 % accumulate  # the batches of the epoch that committed before the interrupt
    assert sizes == [list(range(done, 5)), list(range(5))]  # the epoch keeps its 5 batches
    assert history.history["loss"] == expected.history["loss"]
    np.testing.assert_array_equal(model.params, reference.params)


def test_a_generator_interrupted_twice_mid_group_gives_its_batches_back_in_order():
    """The second interrupted fit took part of the batches the first gave back: what it gives
    back is those it took, then the rest, in the stream's order."""
    X, y = _data()

    def endless():
        while True:
            for i in range(0, len(X), 10):
                yield X[i : i + 10], y[i : i + 10]

    options = dict(epochs=2, steps_per_epoch=6, accumulate=3, verbose=0)
    reference = _model()
    reference.fit(endless(), **options)
    model, stream = _model(), endless()
    for stop in (_StopBefore(0, 5), _StopBefore(0, 4)):  # gives back batches 3, 4, 5; then 3, 4 and 5
        with pytest.raises(KeyboardInterrupt):
            model.fit(stream, callbacks=[stop], **options)
    model.fit(stream, **options)
    np.testing.assert_array_equal(model.params, reference.params)


def test_a_generator_that_runs_out_stops_training_with_a_warning():
    X, y = _data()
    model = _model()
    with pytest.warns(UserWarning, match="ran out"):
        history = model.fit(
            ((X[i : i + 10], y[i : i + 10]) for i in range(0, 50, 10)), epochs=3, steps_per_epoch=3, verbose=0
        )
    assert len(history.history["loss"]) == 2 and model.epochs_done == 2


def test_validation_progress_and_list_of_batches(capsys):
    X, y = _data()
    batches = [(X[i : i + 30], y[i : i + 30]) for i in range(0, len(X), 30)]
    model = _model()
    history = model.fit(batches, epochs=2, verbose=2, validation_data=ArrayDataset(X, y, block_rows=20))
    assert "Epoch 2/2" in capsys.readouterr().err
    expected = model.evaluate(X, y)
    assert history.history["val_loss"][-1] == pytest.approx(expected["loss"], rel=1e-12)
    assert history.history["val_accuracy"][-1] == pytest.approx(expected["accuracy"], rel=1e-12)
    history = model.fit(
        ArrayDataset(X, y), batch_size=32, epochs=1, verbose=0, steps_per_epoch=2, validation_data=lambda: iter(batches)
    )
    assert history.history["val_loss"][-1] == pytest.approx(model.evaluate(X, y)["loss"], rel=1e-12)


def test_a_mapped_file_reads_only_the_rows_asked_for(tmp_path):
    X = np.arange(60, dtype=np.float32).reshape(20, 3)
    (tmp_path / "x.bin").write_bytes(b"header--" + X.tobytes())
    f = MappedFile(tmp_path / "x.bin", np.float32, (20, 3), offset=8)
    np.testing.assert_array_equal(f[3:11], X[3:11])
    np.testing.assert_array_equal(f[np.array([19, 0, 7])], X[[19, 0, 7]])
    with pytest.raises(ValueError, match="need"):
        MappedFile(tmp_path / "x.bin", np.float32, (21, 3), offset=8)
    np.save(tmp_path / "f.npy", np.asfortranarray(X))
    with pytest.raises(ValueError, match="Fortran-ordered"):
        ArrayDataset.from_npy(tmp_path / "f.npy", np.arange(20))


@pytest.mark.parametrize(
    "data, steps, match",
    [
        (lambda X, y: [(X[:10], y[:10]), X[10:20]], None, "pair"),
        (lambda X, y: [(X[:10], y[:10]), (X[10:20, :4], y[10:20])], None, "batch 1 of epoch 1"),
        (lambda X, y: iter([(X[:10], y[:10])]), None, "steps_per_epoch"),
        (lambda X, y: ArrayDataset(X, y), 0, "steps_per_epoch"),
        (lambda X, y: ArrayDataset(X, y), 99, "at most"),
        (lambda X, y: lambda: iter([]), None, "no batches"),
    ],
)
def test_bad_streamed_input_is_refused_clearly(data, steps, match):
    X, y = _data()
    with pytest.raises((ValueError, TypeError), match=match):
        _model().fit(data(X, y), epochs=1, verbose=0, steps_per_epoch=steps, batch_size=16)


def test_bad_arguments_around_arrays_are_refused_clearly():
    X, y = _data()
    with pytest.raises(ValueError, match="steps_per_epoch"):
        _model().fit(X, y, steps_per_epoch=2, verbose=0)
    with pytest.raises(ValueError, match="y is missing"):
        _model().fit(X, verbose=0)
    model = _model()
    for call in (model.evaluate, model.validate, model.train_step, model.loss_and_grads):
        with pytest.raises(ValueError, match="y is missing.*predict"):  # not "y is ragged or holds objects"
            call(X, None)
    with pytest.raises(ValueError, match="y must be None"):
        _model().fit(ArrayDataset(X, y), y, verbose=0)
    with pytest.raises(TypeError, match="steps_per_epoch"):
        _model().fit(ArrayDataset(X, y), steps_per_epoch=1.5, verbose=0)
    with pytest.raises(ValueError, match="one row per sample"):
        ArrayDataset(X, y[:-1])


_CHILD = textwrap.dedent("""
    import os, resource, sys
    import numpy as np
    import fastnn as fnn
    from fastnn.data import ArrayDataset

    path, rows, features, headroom = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    y = np.load(path + ".y.npy")
    model = fnn.Sequential([fnn.Dense(features, 32, activation="relu"), fnn.Dense(32, 2)], seed=0)
    model.compile("cross_entropy", fnn.optim.Adam(lr=1e-2))
    # warm up at the training batch size: kernels load, TBB starts its threads, OpenBLAS and glibc
    # reserve their buffers, all before the limit
    model.fit(np.zeros((1024, features), np.float32), np.zeros(1024, np.int64), batch_size=512, verbose=0)
    vsize = next(int(line.split()[1]) * 1024 for line in open("/proc/self/status") if line.startswith("VmSize:"))
    resource.setrlimit(resource.RLIMIT_AS, (vsize + headroom, vsize + headroom))
    try:
        np.memmap(path, np.float32, "r", shape=(rows, features))
        print("mapped the whole file")
    except (OSError, ValueError, MemoryError):
        print("the whole file cannot be mapped")
    dataset = ArrayDataset.from_file(path, np.float32, (rows, features), y, block_rows=4096)
    history = model.fit(dataset, epochs=1, batch_size=512, verbose=0)
    print("loss", history.history["loss"][0], "accuracy", history.history["accuracy"][0])
""")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RLIMIT_AS and /proc are Linux's")
def test_training_on_a_file_larger_than_the_address_space_limit(tmp_path):
    """128 MiB of float32 rows against 96 MiB of address space left after a warm step: the
    dataset maps 8 MiB blocks one at a time. MALLOC_ARENA_MAX=1 (glibc reserves 64 MiB of address
    space per extra malloc arena, when a second thread allocates) and two Numba threads keep the
    headroom the process needs small and fixed: room for two blocks and one more OpenBLAS buffer
    (32 MiB, allocated by a TBB worker at its first GEMM tile)."""
    rows, features, headroom = 65536, 512, 96 << 20
    path = tmp_path / "big.f32"
    mm = np.memmap(path, np.float32, "w+", shape=(rows, features))
    rng = np.random.default_rng(0)
    try:
        for lo in range(0, rows, 8192):
            mm[lo : lo + 8192] = rng.standard_normal((8192, features), np.float32)
        mm.flush()
        np.save(f"{path}.y.npy", (np.asarray(mm[:, 0]) + np.asarray(mm[:, 1]) > 0).astype(np.int64))
        del mm
        assert os.path.getsize(path) > headroom
        env = {
            **os.environ,
            "MALLOC_ARENA_MAX": "1",
            "NUMBA_NUM_THREADS": str(min(2, os.cpu_count() or 1)),
            "PYTHONPATH": os.pathsep.join(
                [os.path.dirname(os.path.dirname(fnn.__file__)), os.environ.get("PYTHONPATH", "")]
            ),
        }
        result = subprocess.run(
            [sys.executable, "-c", _CHILD, str(path), str(rows), str(features), str(headroom)],
            capture_output=True,
            text=True,
            env=env,
            timeout=300,
        )
    finally:
        for name in (path, f"{path}.y.npy"):
            if os.path.exists(name):
                os.remove(name)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "the whole file cannot be mapped" in result.stdout
    loss, accuracy = (float(v) for v in result.stdout.split()[-3::2])
    assert np.isfinite(loss) and accuracy > 0.7, result.stdout


def test_no_warning_from_a_plain_dataset_fit():
    X, y = _data()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _model().fit(ArrayDataset(X, y, block_rows=32), epochs=1, batch_size=16, verbose=0)


# ------------------------------------------------------------------ one loop: the array options on streams
def _weights(n, seed=1):
    return np.random.default_rng(seed).uniform(0.2, 2.0, n)


def test_metrics_on_a_dataset_equal_those_on_the_arrays():
    X, y = _data()
    metrics = ["f1", "auc", fnn.metrics.Precision(average="micro", name="p_micro")]
    by_arrays = _model(metrics=metrics).fit(X, y, epochs=2, batch_size=16, verbose=0)
    by_dataset = _model(metrics=metrics).fit(ArrayDataset(X, y), epochs=2, batch_size=16, verbose=0)
    assert {"f1", "auc", "p_micro"} <= set(by_dataset.history)
    assert by_dataset.history == by_arrays.history


def test_sample_and_class_weights_of_a_dataset_train_as_those_of_the_arrays():
    X, y = _data()
    w, class_weight = _weights(len(X)), {0: 2.0, 2: 0.5}
    reference = _model()
    expected = reference.fit(X, y, epochs=2, batch_size=16, sample_weight=w, class_weight=class_weight, verbose=0)
    model = _model()
    history = model.fit(
        ArrayDataset(X, y, sample_weight=w), epochs=2, batch_size=16, class_weight=class_weight, verbose=0
    )
    np.testing.assert_array_equal(model.params, reference.params)
    assert history.history == expected.history
    assert type(model.loss) is fnn.losses.CrossEntropy  # the plain loss is back
    unweighted = _model()
    unweighted.fit(ArrayDataset(X, y), epochs=2, batch_size=16, verbose=0)
    assert not np.allclose(unweighted.params, model.params)


def test_class_weight_and_weighted_batches_of_a_generator_train_as_the_arrays():
    X, y = _data()
    w, class_weight = _weights(len(X)), {1: 3.0}
    reference = _model()
    reference.fit(X, y, epochs=2, batch_size=10, shuffle=False, sample_weight=w, class_weight=class_weight, verbose=0)

    def batches():
        return ((X[i : i + 10], y[i : i + 10], w[i : i + 10]) for i in range(0, len(X), 10))

    model = _model()
    model.fit(batches, epochs=2, class_weight=class_weight, verbose=0)
    np.testing.assert_array_equal(model.params, reference.params)
    only_classes = _model()
    only_classes.fit(X, y, epochs=1, batch_size=10, shuffle=False, class_weight=class_weight, verbose=0)
    model = _model()  # a one-shot generator, weights from the labels only
    model.fit(
        ((X[i : i + 10], y[i : i + 10]) for i in range(0, len(X), 10)),
        steps_per_epoch=9,
        class_weight=class_weight,
        verbose=0,
    )
    np.testing.assert_array_equal(model.params, only_classes.params)


def test_validation_split_of_a_dataset_holds_out_its_last_rows_as_for_arrays(tmp_path):
    X, y = _data()
    w = _weights(len(X))
    mapped = ArrayDataset.from_file(_memmap(tmp_path, X), X.dtype, X.shape, y, sample_weight=w)
    by_arrays = _model(metrics=["f1"]).fit(
        X, y, epochs=2, batch_size=16, validation_split=0.3, sample_weight=w, verbose=0
    )
    by_dataset = _model(metrics=["f1"]).fit(mapped, epochs=2, batch_size=16, validation_split=0.3, verbose=0)
    assert by_dataset.history.keys() == by_arrays.history.keys() and "val_f1" in by_dataset.history
    for key, values in by_arrays.history.items():
        assert by_dataset.history[key] == pytest.approx(values, rel=1e-12), key
    with pytest.raises(ValueError, match="validation_split needs data whose last samples can be held out"):
        _model().fit(lambda: iter([(X, y)]), validation_split=0.2, verbose=0)
    with pytest.raises(ValueError, match=r"sample_weight=\.\.\. is for arrays.*ArrayDataset\(X, y, sample_weight=w\)"):
        _model().fit(ArrayDataset(X, y), sample_weight=w, verbose=0)


def test_validation_on_batches_equals_validation_on_arrays():
    """A weighted validation set as arrays, an ArrayDataset of several blocks and a list of
    batches: the same loss (all samples together), accuracy and metrics."""
    X, y = _data()
    w = _weights(len(X))
    logs = []
    for validation_data in (
        (X, y, w),
        ArrayDataset(X, y, sample_weight=w, block_rows=20),
        [(X[i : i + 25], y[i : i + 25], w[i : i + 25]) for i in range(0, len(X), 25)],
    ):
        model = _model(metrics=["f1", "auc"])
        logs.append(model.fit(X, y, epochs=1, batch_size=30, validation_data=validation_data, verbose=0).history)
    for other in logs[1:]:
        for key in ("val_loss", "val_accuracy", "val_f1", "val_auc"):
            assert other[key] == pytest.approx(logs[0][key], rel=1e-12), key


def test_evaluate_on_a_dataset_or_batches_equals_evaluate_on_the_arrays():
    X, y = _data()
    w = _weights(len(X))
    model = _model(metrics=["f1", "auc"])
    model.fit(X, y, epochs=1, batch_size=30, verbose=0)
    expected = model.evaluate(X, y, sample_weight=w)
    for data in (
        ArrayDataset(X, y, sample_weight=w, block_rows=20),
        [(X[i : i + 25], y[i : i + 25], w[i : i + 25]) for i in range(0, len(X), 25)],
    ):
        got = model.evaluate(data)
        assert got.keys() == expected.keys()
        for key in expected:
            assert got[key] == pytest.approx(expected[key], rel=1e-12), key
    with pytest.raises(ValueError, match="evaluate on a dataset or batches takes no y, class_weight"):
        model.evaluate(ArrayDataset(X, y), y, class_weight={0: 2.0})


@pytest.mark.parametrize("weighted", [False, True])
def test_a_sum_loss_evaluated_on_batches_adds_the_batches_losses(weighted):
    """reduction="sum": the loss of all the batches together is their sum (weighted or not), as
    evaluate on the arrays computes it in one pass."""
    rng = np.random.default_rng(2)
    X, Y = rng.standard_normal((45, 5)), rng.standard_normal((45, 2))
    w = rng.uniform(0.5, 2.0, 45) if weighted else None
    model = fnn.Sequential([fnn.Dense(5, 2)], dtype="float64", seed=0).compile(fnn.losses.MSE(reduction="sum"), "sgd")
    expected = model.evaluate(X, Y, sample_weight=w)["loss"]
    batches = [(X[i : i + 10], Y[i : i + 10]) + (() if w is None else (w[i : i + 10],)) for i in range(0, 45, 10)]
    assert model.evaluate(batches)["loss"] == pytest.approx(expected, rel=1e-12)


def test_batches_must_all_carry_weights_or_none():
    X, y = _data()
    w = _weights(len(X))
    mixed = [(X[:30], y[:30]), (X[30:60], y[30:60], w[30:60])]
    with pytest.raises(ValueError, match="batch 1 of epoch 1 has sample weights but the first batch had none"):
        _model().fit(mixed, verbose=0)
    model = _model()  # weighted from the first batch on: a later batch without weights weighs 1 per sample
    model.fit(mixed[::-1], verbose=0, shuffle=False)
    reference = _model()
    reference.fit(
        np.concatenate([X[30:60], X[:30]]),
        np.concatenate([y[30:60], y[:30]]),
        batch_size=30,
        shuffle=False,
        sample_weight=np.concatenate([w[30:60], np.ones(30)]),
        verbose=0,
    )
    np.testing.assert_array_equal(model.params, reference.params)


def test_evaluate_takes_a_one_shot_iterator_and_predict_refuses_batches_clearly():
    """evaluate consumes a generator of batches once (as Keras); it was refused as validation_data.
    predict takes arrays: batches get a TypeError with the fix (it said "X is ragged")."""
    rng = np.random.default_rng(0)
    model = fnn.Sequential([fnn.Dense(3, 2)], input_shape=(3,), seed=0, dtype="float64")
    model.compile("cross_entropy", "sgd")
    batches = [(rng.standard_normal((4, 3)), rng.integers(0, 2, 4)) for _ in range(3)]
    X, y = np.concatenate([b[0] for b in batches]), np.concatenate([b[1] for b in batches])
    assert model.evaluate(iter(batches)) == model.evaluate(batches) == model.evaluate(X, y)
    assert model.evaluate((b for b in batches)) == model.evaluate(X, y)
    for stream in (iter(batches), lambda: iter(batches), (b[0] for b in batches)):
        with pytest.raises(TypeError, match=r"predict takes an array of inputs.*predict each one"):
            model.predict(stream)
    with pytest.raises(ValueError, match="not a one-shot iterator"):
        model.fit(X, y, validation_data=iter(batches), epochs=1, verbose=0)


def test_batch_size_none_is_keras_default_for_arrays_and_unused_for_batches():
    """``batch_size=None`` (Keras' default argument): 32 rows per step on arrays, and a list of
    batches trains as given (it was refused as "must be an integer")."""
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((70, 3)), rng.integers(0, 2, 70)

    def model():
        return fnn.Sequential([fnn.Dense(3, 2)], dtype="float64", seed=0).compile("cross_entropy", "sgd")

    default, none = model(), model()
    default.fit(X, y, epochs=1, batch_size=32, shuffle=False, verbose=0)
    none.fit(X, y, epochs=1, batch_size=None, shuffle=False, verbose=0)
    np.testing.assert_array_equal(none.params, default.params)
    assert none.optimizer.step_count == 3
    batches = [(X[i : i + 10], y[i : i + 10]) for i in range(0, 70, 10)]
    listed = model()
    listed.fit(batches, epochs=1, batch_size=None, verbose=0)
    assert listed.optimizer.step_count == 7
