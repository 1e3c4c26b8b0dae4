"""A Sequential model on "cuda" (the simulator) trains, predicts, moves and saves like its CPU twin.

Tiny shapes: every simulated CUDA thread is an OS thread, so a training step of this model (~23
kernel launches of 256 threads) takes seconds. The expensive runs (two training steps on each
device, one fit) are module fixtures shared by the tests.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest

import fastnn as fnn
from fastnn import backend
from fastnn import training as training_mod

RTOL, ATOL = 1e-4, 1e-5
STEPS = 2


def _model(device, seed=3):
    # no bias before batch norm: its gradient is ~0 (rounding noise), which Adam would amplify to +-lr
    layers = [fnn.Dense(5, 8, bias=False), fnn.BatchNorm1d(8), fnn.ReLU(), fnn.Dropout(0.25), fnn.Dense(8, 3)]
    model = fnn.Sequential(layers, seed=seed, device=device)
    return model.compile("cross_entropy", fnn.optim.Adam(lr=0.05))


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(7)
    X = rng.standard_normal((12, 5)).astype(np.float32)
    y = rng.integers(0, 3, 12)
    return X, y


@pytest.fixture(scope="module")
def trained(data):
    """(cpu model, cuda model, cpu losses, cuda losses) after STEPS identical train_steps."""
    X, y = data
    cpu, gpu = _model("cpu"), _model("cuda")
    cpu_losses = [cpu.train_step(X, y) for _ in range(STEPS)]
    gpu_losses = [gpu.train_step(X, y) for _ in range(STEPS)]
    return cpu, gpu, cpu_losses, gpu_losses


def _state(model):
    """Host copies of everything that defines a trained model: parameters, buffers, optimizer state."""
    state = {f"param.{k}": backend.host_copy(v) for k, v in model.state_arrays().items()}
    state.update({f"opt.{k}": np.asarray(v) for k, v in model.optimizer.state_dict().items() if k != "name"})
    return state


def _assert_states_close(a, b):
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_allclose(b[key], a[key], rtol=RTOL, atol=ATOL, err_msg=key)


def test_model_lives_on_the_device(trained):
    _, gpu, _, _ = trained
    assert gpu.device == "cuda"
    assert gpu.optimizer.device == "cuda"
    assert not isinstance(gpu.params, np.ndarray) and not isinstance(gpu.grads, np.ndarray)
    assert not isinstance(gpu.layers[1].running_mean, np.ndarray)
    assert isinstance(gpu.layers[3].step, np.ndarray)  # step counters stay on the host
    assert all(layer.K is backend.kernels("cuda") for layer in gpu.layers)
    assert gpu.layers[0].K.dense_forward.__module__ == "fastnn.kernels.cuda.dense"


def test_train_steps_match_the_cpu(trained):
    cpu, gpu, cpu_losses, gpu_losses = trained
    np.testing.assert_allclose(gpu_losses, cpu_losses, rtol=RTOL)
    _assert_states_close(_state(cpu), _state(gpu))
    assert gpu.optimizer.step_count == cpu.optimizer.step_count == STEPS
    assert int(gpu.layers[1].num_batches_tracked[0]) == STEPS
    assert int(gpu.layers[3].step[0]) == STEPS


def test_dropout_masks_equal_the_cpu(trained, data):
    cpu, gpu, _, _ = trained
    m = data[0].shape[0]
    cpu_mask = cpu.layers[3]._masks(m)["mask"]
    gpu_mask = backend.to_host(gpu.layers[3]._masks(m)["mask"])
    assert cpu_mask.any() and np.array_equal(gpu_mask, cpu_mask)


def test_predict_and_evaluate_return_numpy_and_match(trained, data):
    cpu, gpu, _, _ = trained
    X, y = data
    out = gpu.predict(X, batch_size=7)  # two batches: copies in and out per batch
    assert isinstance(out, np.ndarray) and out.dtype == np.float32 and out.shape == (12, 3)
    np.testing.assert_allclose(out, cpu.predict(X), rtol=RTOL, atol=ATOL)
    gpu_metrics, cpu_metrics = gpu.evaluate(X, y), cpu.evaluate(X, y)
    assert gpu_metrics.keys() == cpu_metrics.keys()
    assert gpu_metrics["loss"] == pytest.approx(cpu_metrics["loss"], rel=RTOL)
    assert gpu_metrics["accuracy"] == cpu_metrics["accuracy"]


def test_to_cpu_and_back_keeps_everything(trained, data):
    _, gpu, _, _ = trained
    before = _state(gpu)
    assert gpu.to("cpu") is gpu and gpu.device == "cpu"
    assert isinstance(gpu.params, np.ndarray) and gpu.optimizer.device == "cpu"
    assert isinstance(gpu.layers[1].running_var, np.ndarray)
    assert gpu.layers[0].weight.base is gpu.params or np.shares_memory(gpu.layers[0].weight, gpu.params)
    on_cpu = _state(gpu)
    gpu.to("cuda")
    assert gpu.device == "cuda"
    for key in before:
        assert np.array_equal(on_cpu[key], before[key]), key
        assert np.array_equal(_state(gpu)[key], before[key]), key


def test_save_on_cuda_load_on_cpu(trained, data, tmp_path):
    cpu, gpu, _, _ = trained
    path = tmp_path / "model.safetensors"
    gpu.save(path)
    loaded = fnn.load(path)
    assert loaded.device == "cpu"
    before = _state(gpu)
    after = _state(loaded)
    for key in before:
        assert np.array_equal(after[key], before[key]), key
    np.testing.assert_allclose(loaded.predict(data[0]), cpu.predict(data[0]), rtol=RTOL, atol=ATOL)
    on_gpu = fnn.load(path, device="cuda")
    assert on_gpu.device == "cuda" and on_gpu.optimizer.device == "cuda"
    assert np.array_equal(backend.to_host(on_gpu.params), _flat_params(before, on_gpu))


def _flat_params(state, model):
    """The flat parameter vector of ``state`` in ``model``'s layout."""
    flat = np.empty(model.params.size, model.dtype)
    for i, name, lo, shape in model.parameter_layout:
        flat[lo : lo + int(np.prod(shape))] = state[f"param.{i}.{name}"].ravel()
    return flat


def test_fit_with_validation_on_cuda(data):
    """fit keeps the model on the device; batches are gathered into pinned buffers and copied in."""
    X, y = data
    Xv, yv = X[:4], y[:4]
    histories, models = [], []
    for device in ("cpu", "cuda"):  # a smaller model than the fixture's: fewer launches per step
        model = fnn.Sequential([fnn.Dense(5, 4, activation="tanh"), fnn.Dense(4, 3)], seed=5, device=device)
        model.compile("cross_entropy", fnn.optim.Adam(lr=0.05))
        history = model.fit(X, y, epochs=2, batch_size=12, validation_data=(Xv, yv), verbose=0)
        histories.append(history.history)
        models.append(model)
    cpu_hist, gpu_hist = histories
    assert models[1].device == "cuda"
    assert set(gpu_hist) == set(cpu_hist) >= {"loss", "accuracy", "val_loss", "val_accuracy"}
    for key in ("loss", "val_loss"):
        np.testing.assert_allclose(gpu_hist[key], cpu_hist[key], rtol=RTOL)
    assert gpu_hist["accuracy"] == cpu_hist["accuracy"]
    _assert_states_close(_state(models[0]), _state(models[1]))


class _LazyStream:
    """A copy stream whose copies run as late as the feeder's synchronisation allows: when an event
    recorded after them is waited for or synchronised, or the stream is synchronised. (The simulator
    copies at once, which would hide a missing wait.) A queued copy reads its source when it runs, as
    an asynchronous copy from pinned memory does."""

    def __init__(self):
        self.queue, self.enqueued, self.done = [], 0, 0

    def enqueue(self, copy):
        self.queue.append(copy)
        self.enqueued += 1

    def run_until(self, position):
        while self.done < position:
            self.queue.pop(0)()
            self.done += 1

    def synchronize(self):
        self.run_until(self.enqueued)


class _LazyEvent:
    def __init__(self):
        self.stream, self.position = None, 0

    def record(self, stream=0):
        lazy = isinstance(stream, _LazyStream)
        self.stream, self.position = (stream, stream.enqueued) if lazy else (None, 0)

    def wait(self, stream=0):
        if not isinstance(stream, _LazyStream):  # the default stream (synchronous here) runs on after it
            self.synchronize()

    def synchronize(self):
        if self.stream is not None:
            self.stream.run_until(self.position)


def _fit_on_cuda(monkeypatch, X, y, prefetch=True, lazy=False):
    """(model, history, copies in flight at each step) of a small fit on "cuda" with shuffling."""
    monkeypatch.setattr(training_mod.BatchFeeder, "prefetch", prefetch)
    streams = []
    if lazy:
        copy_into = backend.copy_into

        def lazy_copy(dst, src, stream=0):
            if isinstance(stream, _LazyStream):
                stream.enqueue(lambda: copy_into(dst, src))
            else:
                copy_into(dst, src, stream)

        def lazy_stream(device="cuda", non_blocking=False):
            streams.append(_LazyStream())
            return streams[-1]

        monkeypatch.setattr(backend, "copy_into", lazy_copy)
        monkeypatch.setattr(backend, "event", lambda device="cuda": _LazyEvent())
        monkeypatch.setattr(backend, "stream", lazy_stream)
    model = _fit_model("cuda")
    in_flight = []
    step = model.run_step

    def counting_step(xb, yb):
        in_flight.append(len(streams[-1].queue) if streams else None)
        return step(xb, yb)

    model.run_step = counting_step
    history = model.fit(X, y, epochs=2, batch_size=4, shuffle=True, verbose=0)
    monkeypatch.undo()
    return model, history.history, in_flight


def _fit_model(device):
    model = fnn.Sequential([fnn.Dense(5, 4, activation="tanh"), fnn.Dense(4, 3)], seed=6, device=device)
    return model.compile("cross_entropy", fnn.optim.Adam(lr=0.05))


def test_fit_overlaps_copies_and_equals_the_synchronous_and_cpu_runs(data, monkeypatch):
    """7 samples in batches of 4 (the last one partial), shuffled, 2 epochs: the next batch's copy is
    in flight during each step but the last of an epoch, and the weights equal the synchronous run's
    bit for bit and the CPU's within rounding."""
    X, y = data[0][:7], data[1][:7]
    cpu = _fit_model("cpu")
    cpu_history = cpu.fit(X, y, epochs=2, batch_size=4, shuffle=True, verbose=0).history
    runs = {
        "overlap": _fit_on_cuda(monkeypatch, X, y),
        "sync": _fit_on_cuda(monkeypatch, X, y, prefetch=False),
        "lazy": _fit_on_cuda(monkeypatch, X, y, lazy=True),
    }
    assert runs["lazy"][2] == [2, 0, 2, 0]  # x and y of the next batch still queued while a step runs
    weights = {name: backend.host_copy(model.params) for name, (model, _, _) in runs.items()}
    assert np.array_equal(weights["overlap"], weights["sync"]) and np.array_equal(weights["lazy"], weights["sync"])
    for _, history, _ in runs.values():
        np.testing.assert_allclose(history["loss"], cpu_history["loss"], rtol=RTOL)
        assert history["accuracy"] == cpu_history["accuracy"]
    np.testing.assert_allclose(weights["overlap"], cpu.params, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("affine", [True, False])
def test_backward_through_batchnorm_in_eval_mode(data, affine):
    """Gradients through frozen running statistics on "cuda" equal the CPU's eval-mode backward."""
    X = data[0].astype(np.float64)
    model = fnn.Sequential(
        [fnn.Dense(5, 4), fnn.BatchNorm1d(4, momentum=0.5, affine=affine), fnn.Dense(4, 2)], seed=4, dtype="float64"
    )
    model.forward(X, training=True)  # running statistics away from (0, 1)
    if affine:
        backend.copy_into(model.layers[1].weight, np.array([0.5, -1.5, 2.0, 1.0]))
    g = np.random.default_rng(3).standard_normal((X.shape[0], 2))
    results = []
    for device in ("cpu", "cuda"):
        model.to(device)
        out = model.forward(X, training=False)
        grad_x = model.backward(g)
        results.append((out, grad_x, backend.host_copy(model.grads)))
    for got, want in zip(results[1], results[0]):
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)
    assert np.abs(results[1][1]).sum() > 0


def test_a_frozen_batchnorm_trains_in_inference_mode_on_cuda_as_on_the_cpu(data):
    """Frozen: the running statistics normalise and stay, on "cuda" as on the CPU (fastnn.freezing);
    Dense -> BatchNorm1d -> ReLU -> Dropout, two steps of Adam."""
    X, y = data
    models = {}
    for device in ("cpu", "cuda"):
        model = _model("cpu")  # running statistics and gamma away from (0, 1, 1):
        model.layers[1].running_mean[...] = np.linspace(-0.5, 0.5, 8)
        model.layers[1].running_var[...] = np.linspace(0.5, 2.0, 8)
        model.layers[1].weight[...] = np.linspace(0.5, 1.5, 8)
        model.freeze(1).to(device)
        losses = [model.train_step(X, y) for _ in range(STEPS)]
        models[device] = model.to("cpu"), losses
    (cpu, cpu_losses), (gpu, gpu_losses) = models["cpu"], models["cuda"]
    np.testing.assert_allclose(gpu_losses, cpu_losses, rtol=RTOL)
    np.testing.assert_allclose(gpu.params, cpu.params, rtol=RTOL, atol=ATOL)
    for model in (cpu, gpu):
        bn = model.layers[1]
        np.testing.assert_array_equal(bn.running_mean, np.linspace(-0.5, 0.5, 8).astype(np.float32))
        np.testing.assert_array_equal(bn.running_var, np.linspace(0.5, 2.0, 8).astype(np.float32))
        assert bn.num_batches_tracked[0] == 0
    assert not np.allclose(cpu.layers[0].weight, _model("cpu").layers[0].weight)  # the rest trained


def test_residual_forward_on_cuda(data):
    X = data[0]
    layers = [fnn.Residual([fnn.Dense(5, 6, activation="relu")]), fnn.Dense(6, 2)]
    cpu = fnn.Sequential(layers, seed=2)
    expected = cpu.predict(X)
    out = cpu.to("cuda").predict(X)
    np.testing.assert_allclose(out, expected, rtol=RTOL, atol=ATOL)


def test_host_layers_cannot_go_to_cuda():
    class HostLayer(fnn.Layer):
        def forward(self, x, training):
            return x

        def backward(self, grad_y, need_grad_x=True):
            return grad_y

    model = fnn.Sequential([fnn.Dense(2, 2), HostLayer()])
    with pytest.raises(ValueError, match="cannot run on 'cuda'"):
        model.to("cuda")
    assert model.device == "cpu"


def test_the_low_occupancy_warning_of_small_grids_is_silenced_and_no_other():
    """On a real GPU numba-cuda warns at every grid under 128 blocks, which fastnn's small layers
    launch by design (a dozen lines for an MLP on an H200); fastnn ignores that message only. In a
    fresh process: this suite's conftest ignores every performance warning."""
    import subprocess
    import sys

    code = (
        "import warnings\n"
        "import fastnn.kernels.cuda._common\n"
        "from numba.core.errors import NumbaPerformanceWarning as W\n"
        "with warnings.catch_warnings(record=True) as seen:\n"
        "    warnings.warn(W('Grid size 12 will likely result in GPU under-utilization due to low occupancy.'))\n"
        "    warnings.warn(W('Host array used in CUDA kernel will incur copy overhead to/from device.'))\n"
        "print(['Grid size' in str(w.message) for w in seen])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[False]"  # the copy-overhead warning only


def test_a_second_fit_reuses_the_feeders_pinned_buffers_and_equals_one_fit(data, monkeypatch):
    """Pinned host memory is slow to allocate: the batch feeder's buffers, events and stream are
    kept for the model's next fit of the same batch shape (made again for another), and two fits
    of one epoch train exactly as one fit of two epochs does."""
    X, y = data[0][:8], data[1][:8]
    pinned = []
    real = backend.pinned_empty
    monkeypatch.setattr(backend, "pinned_empty", lambda *a: pinned.append(a) or real(*a))
    once = _fit_model("cuda")
    once.fit(X, y, epochs=2, batch_size=4, shuffle=False, verbose=0)
    assert len(pinned) == 4  # two slots of (x, y)
    twice = _fit_model("cuda")
    twice.fit(X, y, epochs=1, batch_size=4, shuffle=False, verbose=0)
    twice.fit(X, y, epochs=1, batch_size=4, shuffle=False, verbose=0)
    assert len(pinned) == 8  # the second fit made none
    np.testing.assert_array_equal(backend.host_copy(twice.params), backend.host_copy(once.params))
    twice.fit(X, y, epochs=1, batch_size=8, shuffle=False, verbose=0)
    assert len(pinned) == 12  # another batch shape: new slots


def test_predict_on_a_device_passes_many_rows_at_once(monkeypatch):
    """A pass on a GPU costs its launches, copies and syncs whatever its rows (1.5 ms for a
    3-layer MLP on an H200, session 18): without a batch_size a device model passes as many rows
    as keep its widest activation under 256 MiB, not 1024; a given batch_size is kept."""
    X = np.random.default_rng(0).standard_normal((2500, 5)).astype(np.float32)
    gpu, cpu = _fit_model("cuda"), _fit_model("cpu")
    copies = []
    real = backend.copy_into
    monkeypatch.setattr(backend, "copy_into", lambda dst, src, *a: copies.append(src.shape[0]) or real(dst, src, *a))
    got = gpu.predict(X)
    assert copies == [2500, 2500]  # one pass: the rows in, the outputs out
    np.testing.assert_allclose(got, cpu.predict(X), rtol=RTOL, atol=ATOL)
    copies.clear()
    np.testing.assert_allclose(gpu.predict(X, batch_size=1000), got, rtol=RTOL, atol=ATOL)
    assert copies == [1000, 1000, 1000, 1000, 500, 500]
    copies.clear()
    assert gpu.evaluate(X, np.zeros(2500, np.int64))["loss"] > 0 and copies[0] == 2500


@pytest.mark.parametrize("shuffle", [True, False])
def test_fit_on_token_ids_feeds_int64_batches_as_the_cpu(shuffle):
    """The batch feeder's buffers take the model's input dtype (int64 ids before an Embedding),
    not its float dtype: fit on arrays crashed in the gather or the copy to the device."""
    X = np.random.default_rng(0).integers(0, 6, (6, 3))
    y = np.array([0, 1, 2, 0, 1, 2])
    losses = {}
    for device in ("cpu", "cuda"):
        model = fnn.Sequential([fnn.Embedding(6, 3), fnn.LastStep(), fnn.Dense(3, 3)], seed=4, device=device)
        model.compile("cross_entropy", "sgd")
        losses[device] = model.fit(X, y, epochs=2, batch_size=3, verbose=0, shuffle=shuffle)["loss"]
    np.testing.assert_allclose(losses["cuda"], losses["cpu"], rtol=RTOL)


def test_fits_between_moves_train_as_on_one_device_and_a_move_inside_fit_is_refused(data):
    """Fits with the model moved between them (running statistics, dropout counters,
    Adam's moments and step count, a per-batch schedule) equal one device's fits; a callback
    moving the model during fit is refused (the next step crashed in Numba, or after a move at an
    epoch's end the training accuracy counted 0: the fit's batch source stays on its first device)."""
    X, y = data[0][:8], data[1][:8]

    def fit_on(model, device):
        schedule = fnn.callbacks.LearningRateScheduler(
            fnn.schedules.StepDecay(0.05, step_size=3, gamma=0.5), per="batch"
        )
        return model.to(device).fit(X, y, epochs=2, batch_size=8, callbacks=[schedule], verbose=0).history

    moved, still = _model("cpu", seed=5), _model("cpu", seed=5)
    for device in ("cuda", "cpu"):
        moved_history, still_history = fit_on(moved, device), fit_on(still, "cpu")
        assert moved_history["accuracy"] == still_history["accuracy"]
        np.testing.assert_allclose(moved_history["loss"], still_history["loss"], rtol=RTOL)
    assert moved.optimizer.step_count == still.optimizer.step_count == 4 and moved.optimizer.lr == 0.025
    _assert_states_close(_state(still), _state(moved))

    class MoveAfterBatch(fnn.callbacks.Callback):
        def on_batch_end(self, batch, logs=None):
            self.model.to("cuda")

    with pytest.raises(RuntimeError, match=r"model.to\('cuda'\) was called while this model trains on 'cpu'"):
        moved.fit(X, y, epochs=2, batch_size=8, callbacks=[MoveAfterBatch()], verbose=0)
    assert moved.device == "cpu" and moved.optimizer.step_count == 5


def test_a_state_guard_restored_before_any_save_keeps_the_buffers_on_both_devices():
    """A device guard's copies were zeros until the first save: restore() before save() zeroed the
    running statistics on "cuda" (the CPU's put back the values at the guard's making)."""
    for device in ("cpu", "cuda"):
        running = backend.to_device(np.array([1.0, 2.0, 3.0], np.float32), device)
        guard = backend.StateGuard([running])
        backend.copy_into(running, np.full(3, 9.0, np.float32))  # a step that fails before any save
        guard.restore()
        np.testing.assert_array_equal(backend.to_host(running), [1.0, 2.0, 3.0], err_msg=device)


def test_a_masked_sequence_model_leaves_padded_steps_out_as_on_the_cpu():
    """Masking -> per-step Dense: the loss, its gradient (the steps), evaluate and fit's accuracy
    count the valid steps only, on the device as on the CPU."""
    rng = np.random.default_rng(5)
    lengths = np.array([3, 1, 2, 3])
    X = rng.standard_normal((4, 3, 2)).astype(np.float32)
    X[np.arange(3)[None, :] >= lengths[:, None]] = 0.0
    y = rng.integers(0, 3, (4, 3))
    models = [
        fnn.Sequential([fnn.Masking(0.0), fnn.Dense(2, 3)], input_shape=(3, 2), seed=1, device=device).compile(
            "cross_entropy", fnn.optim.SGD(lr=0.5)
        )
        for device in ("cpu", "cuda")
    ]
    losses = [[model.train_step(X, y) for _ in range(2)] for model in models]
    np.testing.assert_allclose(losses[1], losses[0], rtol=RTOL)
    np.testing.assert_allclose(backend.to_host(models[1].params), models[0].params, rtol=RTOL, atol=ATOL)
    logs = [model.evaluate(X, y) for model in models]
    assert logs[1] == pytest.approx(logs[0], rel=RTOL)
    valid = np.arange(3)[None, :] < lengths[:, None]
    assert logs[0]["accuracy"] == pytest.approx(np.mean((models[0].predict(X).argmax(-1) == y)[valid]))
    fits = [model.fit(X, y, epochs=1, batch_size=2, verbose=0).history for model in models]
    assert fits[1]["accuracy"] == pytest.approx(fits[0]["accuracy"])
    assert fits[1]["loss"] == pytest.approx(fits[0]["loss"], rel=RTOL)


@pytest.mark.parametrize("nested", [False, True], ids=["its layer", "nested: TimeDistributed(TimeDistributed)"])
def test_a_masked_time_distributed_batch_norm_trains_on_the_device_as_on_the_cpu(nested):
    """Masking -> TimeDistributed(BatchNorm1d) -> ReLU -> LastStep -> Dense: statistics over the
    valid steps (kernels.cuda.batchnorm with lengths), the same steps and running statistics; nested,
    each step is 2 rows of the inner TimeDistributed (per_step 2)."""
    rng = np.random.default_rng(6)
    lengths = np.array([3, 1, 2, 3])
    step = (2, 2) if nested else (2,)
    X = (rng.standard_normal((4, 3, *step)) * 2 + 1).astype(np.float32)
    X[np.arange(3)[None, :] >= lengths[:, None]] = 0.0
    y = np.array([0, 1, 2, 1])
    norm = fnn.TimeDistributed(fnn.BatchNorm1d(2)) if nested else fnn.BatchNorm1d(2)
    flat = [fnn.TimeDistributed(fnn.Flatten())] if nested else []  # (copied for each model)
    models = [
        fnn.Sequential(
            [
                fnn.Masking(0.0),
                fnn.TimeDistributed(copy.deepcopy(norm)),
                fnn.ReLU(),
                *copy.deepcopy(flat),
                fnn.LastStep(),
                fnn.Dense(2 * len(step), 3),
            ],
            input_shape=(3, *step),
            seed=1,
            device=device,
        ).compile("cross_entropy", fnn.optim.SGD(lr=0.5))
        for device in ("cpu", "cuda")
    ]
    losses = [[model.train_step(X, y) for _ in range(2)] for model in models]
    np.testing.assert_allclose(losses[1], losses[0], rtol=RTOL)
    np.testing.assert_allclose(backend.to_host(models[1].params), models[0].params, rtol=RTOL, atol=ATOL)
    bn = [model.layers[1].layer.layer if nested else model.layers[1].layer for model in models]
    np.testing.assert_allclose(backend.to_host(bn[1].running_var), bn[0].running_var, rtol=RTOL)
    valid = X[np.arange(3)[None, :] < lengths[:, None]].reshape(-1, 2)  # the same batch twice: 0.19 * mean
    np.testing.assert_allclose(backend.to_host(bn[1].running_mean), 0.19 * valid.mean(0), rtol=1e-5)
