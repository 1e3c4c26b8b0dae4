"""Inference plans (fastnn._inference): predict/evaluate run recorded calls at every batch size,
eval-mode batch norm folded into the Dense / convolution before it, dropout skipped.

The reference is the layer-by-layer forward in evaluation mode (``model.forward(x, training=False)``:
each layer's own kernels, batch norm unfolded)."""

import numba
import numpy as np
import pytest

import fastnn as fnn
from fastnn import _config, _fused, _inference
from fastnn.kernels.activations import ACTIVATION_TABLE, ROWWISE_CODES

ACTIVATIONS = [row.name for row in ACTIVATION_TABLE]
TOLERANCE = {"float64": 1e-12, "float32": 2e-5}


def _close(actual, expected, dtype):
    """Equal up to rounding: relative to each value, or to the output's scale where values cancel."""
    tol = TOLERANCE[dtype]
    np.testing.assert_allclose(actual, expected, rtol=tol, atol=tol * float(np.abs(expected).max()))


def _randomise_batchnorm(model, rng):
    """Running statistics and affine parameters away from their initial 0/1 (a fold of the
    initial state would hide a wrong formula)."""
    for layer in model.layers:
        if isinstance(layer, fnn.BatchNorm1d):
            layer.running_mean[...] = rng.standard_normal(layer.num_features)
            layer.running_var[...] = rng.uniform(0.5, 2.0, layer.num_features)
            if layer.affine:
                layer.weight[...] = rng.uniform(0.5, 1.5, layer.num_features)
                layer.bias[...] = rng.standard_normal(layer.num_features)
    return model


def _dense_bn(activation, dtype, rng, dropout=0.3):
    model = fnn.Sequential(
        [fnn.Dense(5, 9), fnn.BatchNorm1d(9), fnn.Activation(activation), fnn.Dropout(dropout), fnn.Dense(9, 4)],
        seed=3,
        dtype=dtype,
    )
    return _randomise_batchnorm(model, rng)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_dense_batchnorm_folded_equals_unfolded(activation, dtype, rng):
    model = _dense_bn(activation, dtype, rng)
    for batch in (1, 7):
        x = rng.standard_normal((batch, 5))
        _close(model.predict(x), model.forward(x, training=False), dtype)
    plan = _inference.plan(model, 7)
    kernels = [fn.__name__ for fn, _ in plan.runner.calls]
    # BN, activation, dropout folded away; softmax rows run after the GEMM (dense_infer is elementwise only)
    code = next(row.code for row in ACTIVATION_TABLE if row.name == activation)
    rowwise = ["activation_forward"] if code >= ROWWISE_CODES else []
    # 7 rows (at most CHECKED_ROWS): the input's finite check runs first, inside the plan's call
    assert kernels == ["all_finite", "batchnorm_fold", "dense_infer", *rowwise, "dense_infer"]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("activation", ["relu", "tanh", "sigmoid", "elu"])
def test_conv_batchnorm_folded_equals_unfolded(activation, dtype, rng):
    model = _randomise_batchnorm(
        fnn.Sequential(
            [
                fnn.Conv2d(2, 3, 3, padding=1),
                fnn.BatchNorm2d(3),
                fnn.Activation(activation),
                fnn.Flatten(),
                fnn.Dense(3 * 5 * 4, 2),
            ],
            seed=1,
            dtype=dtype,
            input_shape=(2, 5, 4),
        ),
        rng,
    )
    conv1d = _randomise_batchnorm(
        fnn.Sequential(
            [fnn.Conv1d(2, 4, 3), fnn.BatchNorm1d(4, affine=False), fnn.Activation(activation), fnn.Flatten()],
            seed=2,
            dtype=dtype,
            input_shape=(2, 6),
        ),
        rng,
    )
    for net, shape in ((model, (2, 5, 4)), (conv1d, (2, 6))):
        for batch in (1, 5):
            x = rng.standard_normal((batch, *shape))
            _close(net.predict(x), net.forward(x, training=False), dtype)
        kernels = [fn.__name__ for fn, _ in _inference.plan(net, 5).runner.calls]
        assert kernels[:4] == ["all_finite", "batchnorm_fold", "scale_rows", "conv2d_forward"]
        assert "batchnorm_forward_eval" not in kernels and "activation_forward" not in kernels


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_conv_pool_pairs_fuse_with_the_layers_bits(dtype, rng):
    """A convolution whose activation's derivative needs y alone and the max pooling over tiling
    ``k x 2`` windows (or the global average pooling) after it, dropout between them or not, run as
    the training step's fused forward (kernels/conv_pool.py, conv_gap.py) with the layers' bits,
    NaN included; other pairs keep the layers' calls."""
    one_d = fnn.Sequential(
        [
            fnn.Conv1d(3, 4, 3, padding=1, activation="relu"),
            fnn.Dropout(0.5),
            fnn.MaxPool1d(2),
            fnn.Conv1d(4, 5, 3, activation="tanh"),
            fnn.GlobalAvgPool(),
            fnn.Dense(5, 2),
        ],
        seed=0,
        dtype=dtype,
        input_shape=(3, 13),
    )
    two_d = fnn.Sequential(
        [
            fnn.Conv2d(2, 3, 3, activation="sigmoid"),
            fnn.MaxPool2d(2),
            fnn.Conv2d(3, 4, 2, padding=1, activation="elu"),  # its derivative needs z: not fused
            fnn.MaxPool2d(2),
            fnn.Flatten(),
        ],
        seed=1,
        dtype=dtype,
        input_shape=(2, 9, 11),
    )
    cases = (
        (one_d, (3, 13), ["conv2d_maxpool_forward", "conv2d_gap_forward", "dense_infer"]),
        (two_d, (2, 9, 11), ["conv2d_maxpool_forward", "conv2d_forward", "maxpool2d_forward"]),
    )
    for net, shape, fused in cases:
        assert [fn.__name__ for fn, _ in _inference.plan(net, 6).runner.calls] == ["all_finite", *fused]
        for batch in (1, 6):
            x = rng.standard_normal((batch, *shape)).astype(dtype)
            np.testing.assert_array_equal(net.predict(x), net.forward(x, training=False))
        net.layers[0].bias[1] = np.nan
        np.testing.assert_array_equal(net.predict(x), net.forward(x, training=False))


def test_large_inputs_run_in_chunks_with_a_remainder(rng, monkeypatch):
    monkeypatch.setattr(_inference, "CHUNK_ROWS", 16)
    model = _dense_bn("relu", "float64", rng)
    x = rng.standard_normal((37, 5))  # 16 + 16 + 5
    _close(model.predict(x), model.forward(x, training=False), "float64")
    _close(model.predict(x, batch_size=3), model.forward(x, training=False), "float64")
    assert ("fused-infer", 16) in model.plan_keys() and ("fused-infer", 5) in model.plan_keys()


def test_batch_statistics_in_evaluation_see_the_whole_pass(rng, monkeypatch):
    """BatchNorm(track_running_stats=False) normalises with its batch's statistics in evaluation
    too (torch's convention): predict passes ``batch_size`` rows together, not CHUNK_ROWS chunks."""
    monkeypatch.setattr(_inference, "CHUNK_ROWS", 16)
    model = fnn.Sequential(
        [fnn.Dense(3, 4), fnn.Residual([fnn.BatchNorm1d(4, track_running_stats=False)]), fnn.Dense(4, 2)],
        seed=0,
        dtype="float64",
    )
    x = rng.standard_normal((40, 3))
    _close(model.predict(x), model.forward(x, training=False), "float64")
    by_ten = model.predict(x, batch_size=10)
    for lo in (0, 30):
        _close(by_ten[lo : lo + 10], model.forward(x[lo : lo + 10], training=False), "float64")


def test_predictions_follow_training_steps_loads_and_direct_writes(rng, tmp_path):
    """The fold reads the live weights and running statistics at every call: never stale."""
    model = _dense_bn("relu", "float64", rng)
    model.compile(loss="cross_entropy", optimizer=fnn.optim.Adam(lr=0.05))
    x, y = rng.standard_normal((12, 5)), np.arange(12) % 4
    before = model.predict(x)
    model.train_step(x, y)  # changes the weights and the running statistics
    after = model.predict(x)
    assert not np.allclose(before, after)
    _close(after, model.forward(x, training=False), "float64")
    path = tmp_path / "w.npz"
    model.save_weights(path)
    other = _dense_bn("relu", "float64", np.random.default_rng(99))
    other.predict(x)  # its plan exists before the load
    other.load_weights(path)
    np.testing.assert_array_equal(other.predict(x), after)
    model.layers[1].running_var[...] *= 4.0  # a write straight into a buffer
    _close(model.predict(x), model.forward(x, training=False), "float64")


def test_inputs_are_read_in_place_and_outputs_are_fresh(rng):
    model = _dense_bn("tanh", "float32", rng)
    x = rng.standard_normal((6, 5)).astype(np.float32)
    first = model.predict(x)
    second = model.predict(x + 1)
    assert first is not second and not np.shares_memory(first, second)
    np.testing.assert_array_equal(first, model.predict(x))  # not overwritten by the later call
    frozen = x.copy()
    frozen.flags.writeable = False  # copied into the plan's input buffer instead
    strided = np.asfortranarray(x)
    for variant in (frozen, strided):
        np.testing.assert_array_equal(model.predict(variant), first)


def test_evaluate_uses_the_plans(rng):
    model = _dense_bn("relu", "float64", rng).compile(loss="cross_entropy")
    x, y = rng.standard_normal((9, 5)), np.arange(9) % 4
    metrics = model.evaluate(x, y)
    assert ("fused-infer", 9) in model.plan_keys()
    logits = model.forward(x, training=False)
    shifted = logits - logits.max(axis=1, keepdims=True)
    expected = float(np.mean(np.log(np.exp(shifted).sum(axis=1)) - shifted[np.arange(9), y]))
    assert metrics["loss"] == pytest.approx(expected, rel=1e-12)


def test_a_model_without_calls_copies_its_input(rng):
    model = fnn.Sequential([fnn.Dropout(0.5)], input_shape=(3,), dtype="float64")
    x = rng.standard_normal((4, 3))
    np.testing.assert_array_equal(model.predict(x), x)


def test_fused_plans_equal_the_python_loop(rng, monkeypatch, tmp_path):
    monkeypatch.setattr(_config, "FUSE", "always")
    monkeypatch.setenv("FASTNN_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(_fused, "_LOADED", {})
    x = rng.standard_normal((7, 5)).astype(np.float32)
    fused = _dense_bn("gelu", "float32", np.random.default_rng(5))
    results = [fused.predict(x[:1]), fused.predict(x)]
    assert _inference.plan(fused, 7).runner.fused
    monkeypatch.setattr(_config, "FUSE", "never")
    loop = _dense_bn("gelu", "float32", np.random.default_rng(5))
    for result, rows in zip(results, (x[:1], x)):
        np.testing.assert_array_equal(result, loop.predict(rows))
    assert not _inference.plan(loop, 7).runner.fused


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_kernels_against_the_float64_reference(activation, dtype, rng):
    """dense_infer after batchnorm_fold is the reference Dense, eval batch norm and activation
    (softmax rows after it, as the plan calls them: dense_infer refuses row-wise codes)."""
    from fastnn.kernels import inference as K
    from fastnn.kernels.activations import ACTIVATIONS as CODES
    from fastnn.kernels.activations import IDENTITY, activation_forward
    from tests import reference as R

    code, alpha, _ = CODES[activation]
    for batch, k, n in ((1, 7, 5), (13, 6, 9), (1, 300, 257)):  # batch 1, odd shapes, a parallel batch-1 product
        x, w = rng.standard_normal((batch, k)), rng.standard_normal((k, n)) / np.sqrt(k)
        b, gamma, beta, mean = (rng.standard_normal(n) for _ in range(4))
        var = rng.uniform(0.5, 2.0, n)
        z, _ = R.dense_forward(x, w, b)
        expected = R.activation_forward(activation, R.batchnorm_forward_eval(z, gamma, beta, mean, var, 1e-5), alpha)
        c = [a.astype(dtype) for a in (x, w, b, gamma, beta, mean, var)]
        scale, shift, y = np.empty(n, dtype), np.empty(n, dtype), np.empty((batch, n), dtype)
        K.batchnorm_fold(c[2], c[3], c[4], c[5], c[6], scale, shift, 1e-5)
        if code >= ROWWISE_CODES:
            with pytest.raises(ValueError, match="activation_forward"):
                K.dense_infer(c[0], c[1], scale, shift, y, code, alpha)
            K.dense_infer(c[0], c[1], scale, shift, y, IDENTITY, alpha)
            activation_forward(y, y, code, alpha)
        else:
            K.dense_infer(c[0], c[1], scale, shift, y, code, alpha)
        assert y.dtype == dtype
        _close(y, expected, dtype)
        folded = np.empty_like(c[1].T)
        K.scale_rows(np.ascontiguousarray(c[1].T), scale, folded)
        np.testing.assert_allclose(folded, c[1].T * scale[:, None], rtol=TOLERANCE[dtype])


def test_repeated_small_predictions_keep_every_check(rng):
    """Once a plan exists, a repeated small predict takes predict_small (its checks inlined);
    any input it does not take unchanged goes the general way: converted, or refused."""
    model = _dense_bn("relu", "float32", rng)
    x = rng.standard_normal((1, 5)).astype(np.float32)
    assert _inference.predict_small(model, x, 1024) is None  # no plan yet: the general path builds it
    expected = model.predict(x)
    fast = _inference.predict_small(model, x, 1024)
    assert fast is not None
    np.testing.assert_array_equal(fast, expected)
    np.testing.assert_array_equal(model.predict(x), expected)
    converted = [x.astype(np.float64), np.repeat(x, 2, axis=1)[:, ::2], x.tolist()]
    for variant in converted:
        assert _inference.predict_small(model, variant, 1024) is None
        np.testing.assert_array_equal(model.predict(variant), expected)
    bad = x.copy()
    bad[0, 2] = np.nan
    with pytest.raises(ValueError, match="NaN or infinity"):
        model.predict(bad)
    with pytest.raises(ValueError, match="features per sample"):
        model.predict(np.zeros((1, 6), np.float32))
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        model.predict(x, batch_size=0)
    two = rng.standard_normal((2, 5)).astype(np.float32)
    model.predict(two)
    assert _inference.predict_small(model, two, 1) is None  # more rows than batch_size: chunked
    _close(model.predict(two, batch_size=1), model.forward(two, training=False), "float32")
    model.layers[3].p = 0.5  # a changed layer: the general path rebuilds the plans first
    assert _inference.predict_small(model, x, 1024) is None
    np.testing.assert_array_equal(model.predict(x), expected)  # the rebuild kept the running statistics


@pytest.mark.parametrize("fuse", ["always", "never"])
def test_small_plans_check_their_input_inside_the_call(rng, monkeypatch, tmp_path, fuse):
    """A plan of at most CHECKED_ROWS rows checks that its input is finite inside its (fused or
    not) call; non-finite rows then get no outputs and the general path raises its error. A larger
    plan leaves the check to its caller: predict_small checks before running it."""
    monkeypatch.setattr(_config, "FUSE", fuse)
    monkeypatch.setenv("FASTNN_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(_fused, "_LOADED", {})
    model = _dense_bn("tanh", "float32", rng)
    for rows in (1, _inference.CHECKED_ROWS, _inference.CHECKED_ROWS + 1):
        x = rng.standard_normal((rows, 5)).astype(np.float32)
        expected = model.predict(x)  # builds the plan
        plan = _inference.plan(model, rows)
        assert plan.checks_input == (rows <= _inference.CHECKED_ROWS)
        assert plan.runner.fused == (fuse == "always")
        np.testing.assert_array_equal(_inference.predict_small(model, x, 1024), expected)
        for value in (np.nan, np.inf, -np.inf):
            bad = x.copy()
            bad[rows - 1, 4] = value
            out = np.empty_like(expected)
            assert plan.run(bad, out) is not plan.checks_input  # False: the check inside found it
            assert _inference.predict_small(model, bad, 1024) is None
            with pytest.raises(ValueError, match="NaN or infinity"):
                model.predict(bad)
        np.testing.assert_array_equal(model.predict(x), expected)


def test_the_fused_small_call_takes_only_arrays_like_its_slots(rng, monkeypatch, tmp_path):
    """A fused small plan's lean call (the compiled version, no dispatch) runs on X itself only
    when X is like the slot it was made for; a read-only, misaligned, byte-swapped or
    Fortran-ordered X of the same shape gives the same outputs through the general path."""
    monkeypatch.setattr(_config, "FUSE", "always")
    monkeypatch.setenv("FASTNN_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(_fused, "_LOADED", {})
    model = _dense_bn("relu", "float32", rng)
    x = rng.standard_normal((2, 5)).astype(np.float32)
    expected = model.predict(x)
    np.testing.assert_array_equal(model.predict(x), expected)  # the lean call, once fused
    frozen = x.copy()
    frozen.flags.writeable = False
    raw = np.zeros(x.nbytes + 1, np.uint8)
    misaligned = raw[1:].view(np.float32).reshape(x.shape)
    misaligned[...] = x
    swapped = x.astype(x.dtype.newbyteorder())
    for variant in (frozen, misaligned, swapped, np.asfortranarray(x)):
        np.testing.assert_array_equal(model.predict(variant), expected)


def test_the_first_prediction_builds_a_model_without_an_input_shape():
    model = fnn.Sequential([fnn.Flatten(), fnn.Dense(12, 3)], seed=0)
    x = np.ones((2, 3, 4), np.float32)
    first = model.predict(x)  # not built yet: the general path builds it
    np.testing.assert_array_equal(_inference.predict_small(model, x, 1024), first)


def test_small_predictions_of_index_inputs_keep_their_checks():
    model = fnn.Sequential([fnn.Embedding(4, 3), fnn.Flatten(), fnn.Dense(6, 2)], input_shape=(2,), seed=0)
    ids = np.array([[0, 3]])
    model.predict(ids)
    assert _inference.predict_small(model, ids, 1024) is None  # indices are range-checked every call
    with pytest.raises(ValueError, match="num_embeddings|range"):
        model.predict(np.array([[0, 4]]))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_batch_one_predictions_of_the_mlp(dtype, rng):
    """The bench's mlp (784 -> 256 -> 128 -> 10) at batch 1, where every product is one row times the
    weights (kernels/gemv.py where it takes the shape, else OpenBLAS's gemv): the float64 reference
    of the network; the same row inside a batch (other kernels) up to rounding; the layer-by-layer
    forward's bits (every path takes the same kernel for the same shape)."""
    model = fnn.Sequential(
        [fnn.Dense(784, 256, activation="relu"), fnn.Dense(256, 128, activation="relu"), fnn.Dense(128, 10)],
        seed=0,
        dtype=dtype,
    )
    x = rng.standard_normal((5, 784)).astype(dtype)
    h = x.astype(np.float64)
    for i, layer in enumerate(model.layers):
        h = h @ layer.weight.astype(np.float64) + layer.bias
        h = np.maximum(h, 0.0) if i < 2 else h
    batch = model.predict(x)
    for i in range(5):
        for _ in range(2):  # the plan's first call, then the serving loop's (predict_small)
            one = model.predict(x[i : i + 1])
            assert one.shape == (1, 10) and one.dtype == dtype
            _close(one[0], h[i], dtype)
            _close(one[0], batch[i], dtype)
            np.testing.assert_array_equal(one, model.forward(x[i : i + 1], training=False))


@pytest.mark.parametrize("features", [784, 1040])
def test_batch_one_predictions_do_not_depend_on_the_threads(features, rng):
    """A batch-1 prediction gives the same bits on one and two threads, whether its first product
    runs on the calling thread (784x256 float32: 784 KiB, below ``_config.MATVEC_SPLIT_BYTES``) or
    splits its tiles over the threads (1040x256: 1040 KiB, above it on CPUs with up to 2 MiB of L2);
    the plan's first call and the serving loop's (predict_small) both."""
    model = fnn.Sequential(
        [fnn.Dense(features, 256, activation="relu"), fnn.Dense(256, 128, activation="relu"), fnn.Dense(128, 10)],
        seed=0,
    )
    x = rng.standard_normal((3, features)).astype(np.float32)
    threads = numba.get_num_threads()
    outputs = {}
    try:
        for n in (1, min(2, numba.config.NUMBA_NUM_THREADS), 1):
            numba.set_num_threads(n)
            outputs.setdefault(n, []).append([model.predict(x[i : i + 1]) for i in range(3) for _ in range(2)])
    finally:
        numba.set_num_threads(threads)
    runs = [run for per_count in outputs.values() for run in per_count]
    for run in runs[1:]:
        for a, b in zip(runs[0], run):
            np.testing.assert_array_equal(a, b)
    for i in range(3):
        np.testing.assert_array_equal(runs[0][2 * i], model.forward(x[i : i + 1], training=False))
