"""Shared pieces of the scripts that tests/test_distributed.py runs under ``mpiexec``."""

from __future__ import annotations

import numpy as np

import fastnn as fnn


def data(n: int = 22, dtype=np.float64):
    """Three classes in 5 features: 22 rows give batches of 8, 8 and a ragged 6 (shards 3 + 3)."""
    rng = np.random.default_rng(7)
    X = rng.standard_normal((n, 5)).astype(dtype)
    y = (X[:, 0] + X[:, 1] > 0).astype(np.int64) + (X[:, 2] > 0.5)
    return X, y


def model(dtype="float64", seed: int = 3, norm: bool = False, frozen: bool = False):
    """Dense, ReLU, Dropout (its masks must match one process), Dense; Adam with clipping (the
    norm must be the global one). ``norm``: a BatchNorm1d after the first Dense; ``frozen``: that
    BatchNorm frozen (inference mode: its running statistics, set away from (0, 1), normalise)."""
    layers = [fnn.Dense(5, 8, bias=not norm), fnn.ReLU(), fnn.Dropout(0.3), fnn.Dense(8, 3)]
    if norm:  # (a bias before it would get a gradient of pure rounding noise, which Adam amplifies)
        layers.insert(1, fnn.BatchNorm1d(8))
    net = fnn.Sequential(layers, seed=seed, dtype=dtype, input_shape=(5,))
    if frozen:
        net.layers[1].running_mean[...] = np.linspace(-0.5, 0.5, 8)
        net.layers[1].running_var[...] = np.linspace(0.5, 2.0, 8)
        net.freeze(1)
    return net.compile("cross_entropy", fnn.optim.Adam(lr=0.05, clip_norm=0.5))


def world(comm=None, sync_batchnorm: bool = False, bucket_bytes: int | None = None):
    """Use ``comm`` (COMM_WORLD if None) for the following fits; returns it."""
    return fnn.distributed.init(
        comm, timeout=20, check_every=1, sync_batchnorm=sync_batchnorm, bucket_bytes=bucket_bytes
    )


def sequence_data(n: int = 19, dtype=np.float64):
    """(n, 4 steps, 5 features) sequences in three classes: batches of 8, 8 and a ragged 3."""
    rng = np.random.default_rng(11)
    X = rng.standard_normal((n, 4, 5)).astype(dtype)
    y = (X[:, -1, 0] > 0).astype(np.int64) + (X[:, :, 1].mean(axis=1) > 0.3)
    return X, y


def sequence_model(dtype="float64", seed: int = 5):
    """LSTM (two layers, dropout between them), TransformerEncoderBlock (attention and
    feed-forward dropout), LastStep, Dense: every dropout inside layers (masks by global sample)."""
    layers = [
        fnn.LSTM(5, 6, num_layers=2, dropout=0.3),
        fnn.TransformerEncoderBlock(6, 2, 8, dropout=0.2),
        fnn.LastStep(),
        fnn.Dense(6, 3),
    ]
    net = fnn.Sequential(layers, seed=seed, dtype=dtype, input_shape=(4, 5))
    return net.compile("cross_entropy", fnn.optim.Adam(lr=0.02, clip_norm=1.0))


def masked_sequences(n: int = 22, dtype=np.float64):
    """(n, 4 steps, 3 features) sequences of 1 to 4 valid steps (then zeros: Masking(0.0)) and a
    label per step; batches of 8 hold different numbers of valid steps per shard."""
    rng = np.random.default_rng(5)
    lengths = rng.integers(1, 5, n)
    X = rng.standard_normal((n, 4, 3)).astype(dtype)
    X[np.arange(4)[None, :] >= lengths[:, None]] = 0.0
    return X, rng.integers(0, 3, (n, 4))


def masked_model(metrics=None, dtype="float64"):
    """Masking, then per-step Dense layers: the loss and metrics leave padded steps out."""
    layers = [fnn.Masking(0.0), fnn.Dense(3, 6, activation="tanh"), fnn.Dense(6, 3)]
    net = fnn.Sequential(layers, input_shape=(4, 3), seed=3, dtype=dtype)
    return net.compile("cross_entropy", fnn.optim.Adam(lr=0.05, clip_norm=0.5), metrics=metrics)


def sequence_weights_model(masking: bool = True, last_step: bool = False, metrics=None, loss="cross_entropy"):
    """[Masking], a per-step Dense, [LastStep: a 2-D output], Dense (sequence_weights.py's cases);
    ``loss`` "ignore": CrossEntropy(ignore_index=-100)."""
    first = [fnn.Masking(0.0)] if masking else []
    middle = [fnn.LastStep()] if last_step else []
    layers = [*first, fnn.Dense(3, 6, activation="tanh"), *middle, fnn.Dense(6, 3)]
    net = fnn.Sequential(layers, input_shape=(4, 3), seed=3, dtype="float64")
    loss = fnn.losses.CrossEntropy(ignore_index=-100) if loss == "ignore" else loss
    return net.compile(loss, fnn.optim.Adam(lr=0.05, clip_norm=0.5), metrics=metrics)


def masked_norm_model(variant: str = "per step", dtype="float64", loss="cross_entropy"):
    """Masking, then a BatchNorm over the padded steps (its statistics over the valid steps only):
    "per step": TimeDistributed(BatchNorm1d), ReLU and a per-step Dense (the loss over the valid
    steps); "nested": TimeDistributed(Residual([Dense, BatchNorm1d, Tanh])), LastStep and Dense
    (one label per sample). Momentum None: the running statistics' cumulative average."""
    if variant == "per step":
        layers = [fnn.Masking(0.0), fnn.TimeDistributed(fnn.BatchNorm1d(3, momentum=None)), fnn.ReLU(), fnn.Dense(3, 3)]
    else:
        block = fnn.Residual([fnn.Dense(3, 3, bias=False), fnn.BatchNorm1d(3), fnn.Tanh()])
        layers = [fnn.Masking(0.0), fnn.TimeDistributed(block), fnn.LastStep(), fnn.Dense(3, 3)]
    net = fnn.Sequential(layers, input_shape=(4, 3), seed=3, dtype=dtype)
    return net.compile(loss, fnn.optim.Adam(lr=0.05, clip_norm=0.5))
