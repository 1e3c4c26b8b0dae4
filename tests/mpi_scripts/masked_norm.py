"""Under mpiexec -n N with sync_batchnorm=True: a BatchNorm over padded sequence steps (Masking ->
TimeDistributed(BatchNorm1d) ..., or one nested in a Residual block inside TimeDistributed) trains
on N ranks as one process does on the whole global batch: each rank adds the sums and the count
of its valid steps' rows (the counts differ between the shards), the backward likewise; weights,
running statistics and the history equal the unsynchronised one-process fit (float64, to 1e-10),
and every rank ends with the same running statistics. Argument: "per step" or "nested".

Then the same with CrossEntropy(ignore_index=-100) where rank 1's shard of the first batch holds
only ignored targets (no shuffling): that rank's loss gradient is 0, and its gradient is what the
synchronised statistics give it (its rows still enter the batch's mean and variance)."""

import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
import numpy as np
from _common import masked_norm_model, masked_sequences, world
from mpi4py import MPI

import fastnn as fnn

variant = " ".join(sys.argv[1:]) or "per step"
comm = world(sync_batchnorm=True)
rank = comm.Get_rank()
X, y = masked_sequences()
if variant != "per step":
    y = y[:, 0]  # one label per sample (after LastStep)


ignored = y.copy()
ignored[4:8] = -100  # rank 1's shard of batch 0 (shuffle=False)
ignored[[1, 10, 19]] = -100
CASES = {"plain": (y, "cross_entropy", True), "ignored": (ignored, "ignore", False)}  # (targets, loss, shuffle)


def train(case):
    target, loss, shuffle = CASES[case]
    net = masked_norm_model(variant, loss=fnn.losses.CrossEntropy(ignore_index=-100) if loss == "ignore" else loss)
    validation = (X[:7], target[:7])
    history = net.fit(X, target, epochs=2, batch_size=8, validation_data=validation, shuffle=shuffle, verbose=0)
    return net, history.history


runs = {case: train(case) for case in CASES}
valid = (X != 0).any(axis=2).sum(axis=1)
assert valid[:4].sum() != valid[4:8].sum()  # the shards of a batch hold different numbers of valid steps
for case, (net, _) in runs.items():
    everyone = comm.allgather({k: v.tobytes() for k, v in net.state_arrays().items()})
    assert all(state == everyone[0] for state in everyone), f"{case}: the ranks' weights or running statistics differ"
if rank == 0:
    world(MPI.COMM_SELF)  # one process on the whole global batch: the masked kernels, no synchronisation
    for case, (net, history) in runs.items():
        reference, reference_history = train(case)
        ours = net.state_arrays()
        assert any("running_var" in name for name in ours), sorted(ours)
        for name, value in reference.state_arrays().items():  # weights, running statistics, batches counted
            np.testing.assert_allclose(ours[name], value, rtol=1e-10, atol=1e-12, err_msg=f"{case}: {name}")
        assert sorted(history) == sorted(reference_history), (case, history, reference_history)
        for key, values in reference_history.items():
            np.testing.assert_allclose(history[key], values, rtol=1e-10, err_msg=f"{case}: {key}")
comm.Barrier()
print(f"rank {rank}: ok", flush=True)
