"""The host-side CUDA work of a training step and a predict, counted on the simulator
(tests_cuda/_cuda_counts.py): a regression that allocates, copies, waits or launches more per
call fails here. On a real GPU these counts, not the arithmetic, are a small model's time
(benchmarks/RESULTS.md, sessions 18 and 23)."""

from __future__ import annotations

import numpy as np
import pytest
from numba import cuda

import fastnn as fnn
from fastnn import backend
from fastnn import model as model_mod
from fastnn import training as training_mod
from fastnn.kernels.cuda import _common
from fastnn.kernels.cuda import optim as cuda_optim

from ._cuda_counts import counting

RTOL, ATOL = 1e-4, 1e-5


def _model(device, loss="mse"):
    model = fnn.Sequential([fnn.Dense(3, 4, activation="tanh"), fnn.Dense(4, 2)], seed=1, device=device)
    return model.compile(loss, fnn.optim.Adam(lr=0.05))


@pytest.fixture(scope="module")
def batch():
    rng = np.random.default_rng(2)
    return rng.standard_normal((8, 3)).astype(np.float32), rng.standard_normal((8, 2)).astype(np.float32)


def test_a_steady_training_step_allocates_nothing_and_waits_once(batch):
    """Adam step of Dense -> Dense from host arrays: the batch copied in from pinned buffers
    (queued, no wait), the loss and gradient norm finished by one launch and read by one copy
    (the step's only wait), 11 launches (was 2 copies and 2 waits for the scalars, 2 waiting
    copies in, 15 launches); the losses and weights are the CPU's."""
    x, y = batch
    gpu, cpu = _model("cuda"), _model("cpu")
    losses = [gpu.train_step(x, y) for _ in range(2)]  # the first step makes the plan and pinned buffers
    with counting() as counts:
        losses.append(gpu.train_step(x, y))
    assert counts.row() == {
        "alloc": 0,
        "pinned": 0,
        "h2d": 2,
        "d2h": 1,
        "d2d": 0,
        "waits": 1,
        "launches": 11,
        "implicit": 0,
    }
    # forward 2 GEMMs; the loss; per layer the activation gradient with the bias sums (batch 8: one
    # chunk, no combining launch) and the weight (and input) gradient GEMMs; the norm's squares;
    # one launch finishing the loss and the norm; the update
    assert counts.kernels == {
        "gemm": 5,
        "elementwise_elements": 1,
        "grad_z_partials": 2,
        "_sum_squares": 1,
        "finish_sums": 1,
        "_adam": 1,
    }
    np.testing.assert_allclose(losses, [cpu.train_step(x, y) for _ in range(3)], rtol=RTOL)
    np.testing.assert_allclose(backend.to_host(gpu.params), cpu.params, rtol=RTOL, atol=ATOL)


def test_a_steady_predict_copies_in_once_without_waiting_and_out_once(batch):
    """predict on a device: the rows copied in from a kept pinned buffer (queued), one launch per
    Dense layer, the outputs copied out (the one wait); no allocation on the device."""
    gpu, cpu = _model("cuda"), _model("cpu")
    X = np.random.default_rng(3).standard_normal((40, 3)).astype(np.float32)
    gpu.predict(X)
    with counting() as counts:
        out = gpu.predict(X)
    assert counts.row() == {
        "alloc": 0,
        "pinned": 0,
        "h2d": 1,
        "d2h": 1,
        "d2d": 0,
        "waits": 1,
        "launches": 2,
        "implicit": 0,
    }
    np.testing.assert_allclose(out, cpu.predict(X), rtol=RTOL, atol=ATOL)


@pytest.fixture(scope="module")
def passes():
    """40 rows evaluated in passes of 12: 4 passes (12, 12, 12, 4)."""
    rng = np.random.default_rng(6)
    return rng.standard_normal((40, 3)).astype(np.float32), rng.standard_normal((40, 2)).astype(np.float32), 12


def _pass_by_pass(model, X, rows):
    """The outputs of X predicted one pass at a time (each call a single pass: its own wait)."""
    return np.concatenate([model.predict(X[lo : lo + rows], batch_size=rows) for lo in range(0, len(X), rows)])


@pytest.mark.parametrize("call", ["predict", "evaluate"])
def test_a_multi_pass_predict_or_evaluate_waits_once(passes, call):
    """predict/evaluate of 4 passes on a device: each pass's rows copied in and its outputs copied
    out queued on the default stream, the last pass's copy out the one wait (was one wait per
    pass: 4); no allocation once warm; the outputs, loss and metrics those of the passes run one
    by one, bit for bit, and the CPU's within rounding."""
    X, y, rows = passes
    gpu, cpu = _model("cuda"), _model("cpu")
    run = (lambda: gpu.predict(X, batch_size=rows)) if call == "predict" else (lambda: gpu.evaluate(X, y, rows))
    run()
    with counting() as counts:
        result = run()
    assert counts.row() == {
        "alloc": 0,
        "pinned": 0,
        "h2d": 4,
        "d2h": 4,
        "d2d": 0,
        "waits": 1,
        "launches": 8,
        "implicit": 0,
    }
    alone = _pass_by_pass(gpu, X, rows)
    if call == "predict":
        assert np.array_equal(result, alone)
        np.testing.assert_allclose(result, cpu.predict(X, batch_size=rows), rtol=RTOL, atol=ATOL)
    else:
        assert result == fnn.metrics.evaluate_outputs(gpu, alone, y)
        np.testing.assert_allclose(result["loss"], cpu.evaluate(X, y, rows)["loss"], rtol=RTOL)


def test_multi_pass_predict_waits_once_per_wave_of_pinned_rows(passes, monkeypatch):
    """Passes whose rows in and out pass DEVICE_WAVE_BYTES of pinned memory wait once per wave:
    2 passes a wave here (4 waits for 7 passes, a last short one), the outputs those of one wave."""
    X, _, _ = passes
    gpu = _model("cuda")
    whole = gpu.predict(X, batch_size=6)
    monkeypatch.setattr(model_mod, "DEVICE_WAVE_BYTES", 12 * (X[:1].nbytes + whole[:1].nbytes) + 1)
    gpu.predict(X, batch_size=6)
    with counting() as counts:
        waved = gpu.predict(X, batch_size=6)
    assert (counts["waits"], counts["h2d"], counts["d2h"], counts["alloc"], counts["pinned"]) == (4, 7, 7, 0, 0)
    assert np.array_equal(waved, whole) and np.array_equal(whole, _pass_by_pass(gpu, X, 6))


def test_a_failed_multi_pass_predict_leaves_the_next_one_right(passes, monkeypatch):
    """A pass that raises after earlier passes' copies were queued: the next predict waits for
    those copies before reusing their pinned rows (one wait more, once), and gives the outputs
    of an untouched model."""
    X, _, rows = passes
    gpu = _model("cuda")
    expected = gpu.predict(X, batch_size=rows)
    forward_calls, calls = fnn.Dense.forward_calls, []

    def failing(layer, x, ctx):  # (on the class: a layer's own attribute set would rebuild the model)
        calls.append(x.shape[0])
        if len(calls) == 6:
            raise KeyboardInterrupt("injected in the third pass's second layer")
        return forward_calls(layer, x, ctx)

    monkeypatch.setattr(fnn.Dense, "forward_calls", failing)
    with pytest.raises(KeyboardInterrupt, match="injected"):
        gpu.predict(X, batch_size=rows)
    monkeypatch.undo()
    assert calls == [rows] * 6
    with counting() as counts:
        again = gpu.predict(X, batch_size=rows)
    assert counts["waits"] == 2  # the pinned buffers' queued copies first, then the one wait as ever
    assert np.array_equal(again, expected)


def test_step_scalars_finish_as_each_reduction_alone_bit_for_bit():
    """finish_sums (three reductions in one launch, the norm's square root) writes what
    finish_sum writes for each alone; a slot not queued keeps its value; one copy reads them."""
    rng = np.random.default_rng(4)
    parts = [rng.standard_normal(n) ** 2 for n in (37, 5, 70)]
    alone = []
    for p, scale, root in zip(parts, (0.125, 1.0, 1.0), (False, True, False)):
        alone.append(_common.reduce_partials(cuda.to_device(p), p.size, scale, root))
    scalars = _common.StepScalars()
    devices = [cuda.to_device(p) for p in parts]
    for slot, (d, p, scale, root) in enumerate(zip(devices, parts, (0.125, 1.0, 1.0), (False, True, False))):
        assert _common.reduce_partials(d, p.size, scale, root, into=(scalars, slot)) is None
    with counting() as counts:
        values = scalars.read()
    assert values.tolist() == alone  # bit for bit
    assert counts.row()["launches"] == 1 and counts.row()["d2h"] == 1 and counts.row()["waits"] == 1
    assert np.sqrt(parts[1].sum()) == pytest.approx(alone[1], rel=1e-15)
    _common.reduce_partials(devices[0], 3, 1.0, False, into=(scalars, 0))
    values = scalars.read()
    assert values[0] == pytest.approx(parts[0][:3].sum(), rel=1e-15) and values[1:].tolist() == alone[1:]


@pytest.mark.parametrize("failure", [RuntimeError, KeyboardInterrupt])
def test_a_train_step_failing_before_its_scalars_read_leaves_none_queued(batch, monkeypatch, failure):
    """A plain train_step that fails after its loss's reduction was queued into the step's scalars
    and before their read (here the gradient norm's second stage raises) leaves nothing queued:
    the next step reads only its own loss and norm, and two good steps around the failed one give
    the bits of a fresh model's two steps (was: the stale loss reduction refused the next step's)."""
    x, y = batch
    model, fresh = _model("cuda"), _model("cuda")
    losses = [model.train_step(x, y)]
    scalars = model.step_plan(x.shape[0]).scalars

    def failing(*args, **kwargs):
        raise failure("injected between the step's reductions and their read")

    monkeypatch.setattr(cuda_optim, "reduce_partials", failing)
    with pytest.raises(failure, match="injected"):
        model.train_step(x, y)
    monkeypatch.undo()
    assert scalars.pending == 0
    losses.append(model.train_step(x, y))
    assert scalars.pending == 0
    assert losses == [fresh.train_step(x, y) for _ in range(2)]  # bit for bit
    assert np.array_equal(backend.host_copy(model.params), backend.host_copy(fresh.params))
    assert model.optimizer.step_count == fresh.optimizer.step_count == 2


def test_staging_waits_only_for_a_copy_not_known_done():
    """An upload into a role's pinned buffer whose last copy was not declared done (settled)
    synchronises first; after settled() it does not; a larger batch grows the buffer once, a
    smaller one reuses it; values, dtypes (cast) and broadcasting as backend.copy_into."""
    staging = backend.Staging()
    big, small = cuda.device_array((6, 2), np.float32), cuda.device_array((3, 2), np.float32)
    with counting() as first:
        staging.upload(big, np.arange(12.0).reshape(6, 2), "x")
    assert first.row()["pinned"] == 1 and first.row()["waits"] == 0
    with counting() as unsettled:
        staging.upload(small, np.ones((3, 2)), "x")
        staging.upload(small, np.full((1, 2), 2.0), "y")  # another role: its own buffer
    assert unsettled.row()["waits"] == 1 and unsettled.row()["pinned"] == 1
    staging.settled()
    with counting() as settled:
        staging.upload(small, np.full((1, 2), 3.0), "x")  # (broadcast over the rows)
    assert settled.row() == {**settled.row(), "pinned": 0, "waits": 0, "h2d": 1}
    np.testing.assert_array_equal(small.copy_to_host(), np.full((3, 2), 3.0, np.float32))
    np.testing.assert_array_equal(big.copy_to_host(), np.arange(12.0, dtype=np.float32).reshape(6, 2))
    with pytest.raises(TypeError):  # float into an integer buffer: refused as copy_into refuses it
        staging.upload(cuda.device_array(3, np.int64), np.ones(3), "ids")


def test_a_loss_without_deferred_reduction_still_steps_as_on_the_cpu(batch):
    """A loss whose kernel returns its value itself (a user's loss here: no ``into``) is taken as
    it returns; the gradient norm is still read with the step's one copy."""
    x, y = batch

    class Halved(fnn.losses.MSE):
        name = "halved_mse"

        def call(self, output, target, grad, compute_grad=True, lengths=None, per_step=1):
            fn, args = super().call(output, target, grad, compute_grad, lengths, per_step)
            return (lambda *a: fn(*a)), args

    losses = {}
    for device in ("cpu", "cuda"):
        model = fnn.Sequential([fnn.Dense(3, 2)], seed=1, device=device).compile(Halved(), fnn.optim.SGD(lr=0.1))
        losses[device] = [model.train_step(x, y) for _ in range(2)]
    np.testing.assert_allclose(losses["cuda"], losses["cpu"], rtol=RTOL)
    assert losses["cuda"][1] < losses["cuda"][0]


def _classifier(device, metrics=None):
    model = fnn.Sequential([fnn.Dense(3, 4, activation="tanh"), fnn.Dense(4, 3)], seed=1, device=device)
    return model.compile("cross_entropy", fnn.optim.Adam(lr=0.05), metrics=metrics)


def _fit_counts(model, x, y, **kwargs):
    """(counts of one fit step: a 2-batch minus a 1-batch epoch, counts of the 1-batch fit), after
    a first fit made the feeder's buffers."""
    rows = x.shape[0] // 2
    fit = dict(epochs=1, batch_size=rows, shuffle=False, verbose=0, **kwargs)
    model.fit(x, y, **fit)
    with counting() as one:
        model.fit(x[:rows], y[:rows], **fit)
    with counting() as two:
        model.fit(x, y, **fit)
    step = {name: two[name] - one[name] for name in one.row()}
    return step, one


@pytest.fixture(scope="module")
def labelled():
    rng = np.random.default_rng(5)
    return rng.standard_normal((16, 3)).astype(np.float32), rng.integers(0, 3, 16)


def test_a_fit_step_with_accuracy_waits_once_and_copies_out_once(labelled):
    """fit with accuracy (cross-entropy) on a device: the count queued into the step's scalars and
    read with the loss and norm (was a launch, a copy and a wait of its own); the feeder's copies
    known done after that read (was a wait on the slot's event each step): one wait and one copy
    out per step, and one wait for a whole 1-batch fit (was 4)."""
    x, y = labelled
    step, one = _fit_counts(_classifier("cuda"), x, y)
    assert step == {
        "alloc": 0,
        "pinned": 0,
        "h2d": 2,
        "d2h": 1,
        "d2d": 2,
        "waits": 1,
        "launches": 12,
        "implicit": 0,
    }
    assert one.kernels["_accuracy_rows"] == 1 and one.kernels["finish_sums"] == 1 and "finish_sum" not in one.kernels
    assert one.row()["waits"] == 1 and one.row()["d2h"] == 1 and one.row()["alloc"] == 0


def test_a_fit_step_with_metrics_copies_the_outputs_out_before_its_one_wait(labelled):
    """fit with metrics on a device: the outputs copied out queued before the step's scalars'
    read and the targets taken from the feeder's host rows (were two waiting copies back): one
    wait, two copies out per step; validation adds one pass per epoch (a copy each way, one wait)."""
    x, y = labelled
    model = _classifier("cuda", metrics=["f1", "auc"])
    step, _ = _fit_counts(model, x, y)
    assert (step["d2h"], step["waits"], step["alloc"], step["pinned"], step["implicit"]) == (2, 1, 0, 0, 0)
    _, plain = _fit_counts(model, x, y)
    _, validated = _fit_counts(model, x, y, validation_data=(x[:5], y[:5]))
    extra = {name: validated[name] - plain[name] for name in plain.row()}
    assert (extra["h2d"], extra["d2h"], extra["waits"], extra["alloc"]) == (1, 1, 1, 0)


@pytest.mark.parametrize("metrics", [None, ["f1", "auc", "precision"]])
def test_fit_logs_as_when_each_count_and_batch_was_read_alone(labelled, monkeypatch, metrics):
    """The accuracy, metrics and validation logs of a shuffled 2-epoch fit (a last partial batch)
    and its weights are those of the fit that read each step's count, outputs and targets with
    copies of their own (the device feed not armed) bit for bit, and the CPU's within rounding."""
    x, y = labelled[0][:14], labelled[1][:14]
    fit = dict(epochs=2, batch_size=4, shuffle=True, verbose=0, validation_data=(x[:6], y[:6]))
    runs = {}
    for name in ("read with the scalars", "read alone"):
        if name == "read alone":
            monkeypatch.setattr(training_mod.DeviceStepFeed, "arm", lambda self, plan: None)
        model = _classifier("cuda", metrics)
        runs[name] = model.fit(x, y, **fit).history, backend.host_copy(model.params)
    monkeypatch.undo()
    (fed, fed_weights), (alone, alone_weights) = runs.values()
    assert fed == alone and np.array_equal(fed_weights, alone_weights)
    assert 0.0 < fed["accuracy"][1] <= 1.0 and {"val_accuracy", *(metrics or ())} <= fed.keys()
    cpu = _classifier("cpu", metrics).fit(x, y, **fit).history
    assert fed["accuracy"] == cpu["accuracy"]
    for key, values in cpu.items():
        np.testing.assert_allclose(fed[key], values, rtol=1e-5, err_msg=key)
