"""Under mpiexec -n N, one launch: a per-step (sequence) model fit with temporal sample weights
(batch, time) and class weights trains on N ranks as one process with the same global batch; the
loss is sum w l / sum w over the GLOBAL batch's positions (each rank's gradient weighs by its
shard's summed weights, not a mean of per-rank means), padded steps (Masking) left out of both
sums. Cases: temporal weights with Masking (labels -100 at padded steps), the same with
class_weight, one weight per sequence (n,) with Masking and class_weight, and without Masking
temporal weights with class_weight and compiled metrics (F1, gathered outputs), each with
weighted validation; weights, history and validation equal one
process's (float64, to 1e-10)."""

import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
import numpy as np
from _common import masked_sequences, world
from mpi4py import MPI

import fastnn as fnn

comm = world()
rank = comm.Get_rank()
X, y = masked_sequences()
padded = ~(X != 0).any(axis=2)
temporal = np.random.default_rng(9).uniform(0.0, 3.0, y.shape)
temporal[::5, 1] = 0.0  # some zero weights
temporal[3] *= 10.0  # one heavy sample: per-rank means would weigh the shards differently
labels = np.where(padded, -100, y)  # torch's ignore_index at padded steps: not read
per_sample = np.linspace(0.1, 4.0, len(X))
CASES = {  # (Masking, sample_weight, class_weight, compiled metrics)
    "masked": (True, temporal, None, None),
    "masked, class_weight": (True, temporal, {0: 2.0, 2: 0.25}, None),
    "masked, one weight per sequence": (True, per_sample, {1: 0.5}, None),
    "class_weight, f1": (False, temporal, {1: 3.0}, ["f1"]),
}


def train(case):
    masking, weights, class_weight, metrics = CASES[case]
    first = [fnn.Masking(0.0)] if masking else []
    layers = [*first, fnn.Dense(3, 6, activation="tanh"), fnn.Dense(6, 3)]
    net = fnn.Sequential(layers, input_shape=(4, 3), seed=3, dtype="float64")
    net.compile("cross_entropy", fnn.optim.Adam(lr=0.05, clip_norm=0.5), metrics=metrics)
    target = labels if masking else y
    history = net.fit(
        X, target, epochs=2, batch_size=8, sample_weight=weights, class_weight=class_weight,
        validation_data=(X[:7], target[:7], weights[:7]), verbose=0,
    )  # fmt: skip
    return net, history.history


runs = {case: train(case) for case in CASES}
for case, (net, _) in runs.items():
    everyone = comm.allgather(net.params.tobytes())
    assert all(p == everyone[0] for p in everyone), f"{case}: the ranks' weights differ"
if rank == 0:
    world(MPI.COMM_SELF)  # one process, same global batch
    for case, (net, history) in runs.items():
        reference, reference_history = train(case)
        np.testing.assert_allclose(net.params, reference.params, rtol=1e-10, atol=1e-12, err_msg=case)
        assert sorted(history) == sorted(reference_history), (case, history, reference_history)
        for key, values in reference_history.items():
            np.testing.assert_allclose(history[key], values, rtol=1e-10, err_msg=f"{case}: {key}")
comm.Barrier()
print(f"rank {rank}: ok", flush=True)
