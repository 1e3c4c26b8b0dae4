"""Under mpiexec -n N, one launch: a per-step (sequence) model fit with temporal sample weights
(batch, time) and class weights trains on N ranks as one process with the same global batch; the
loss is sum w l / sum w over the GLOBAL batch's positions (each rank's gradient weighs by its
shard's summed weights, not a mean of per-rank means), padded steps (Masking) left out of both
sums. Cases: temporal weights with Masking (labels -100 at padded steps), the same with
class_weight, one weight per sequence (n,) with Masking and class_weight, and without Masking
temporal weights with class_weight and compiled metrics (F1, gathered outputs), each with
weighted validation.

Then CrossEntropy(ignore_index=-100), the ignored targets spread unevenly over the ranks: the mean
divides by the GLOBAL batch's count of kept targets (their weights' sum when weighted), accuracy
and F1 count the kept ones. 2-D outputs (LastStep) with and without class_weight (Masking too),
where rank 0's shard of batch 0 and the whole of batch 1 are ignored (and rank 0's validation
shard); per-step outputs masked (shuffled), masked with temporal and class weights where rank 1's
shard of batch 1 is all ignored or padded, and unmasked with one weight per sequence.

Every case: the ranks' weights bit-identical, rank 0's weights and history (loss, accuracy, f1,
val_*) equal one process's (float64, to 1e-10)."""

import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
import numpy as np
from _common import masked_sequences, sequence_weights_model, world
from mpi4py import MPI

comm = world()
rank = comm.Get_rank()
X, y = masked_sequences()
padded = ~(X != 0).any(axis=2)
temporal = np.random.default_rng(9).uniform(0.0, 3.0, y.shape)
temporal[::5, 1] = 0.0  # some zero weights
temporal[3] *= 10.0  # one heavy sample: per-rank means would weigh the shards differently
labels = np.where(padded, -100, y)  # torch's ignore_index at padded steps: not read
per_sample = np.linspace(0.1, 4.0, len(X))

# ignored targets (batches of 8 in order with shuffle=False; 2 ranks: shards of rows 0-3 | 4-7 ...)
last = y[:, 0].copy()  # one label per sequence (2-D outputs)
last[0:4] = -100  # rank 0's shard of batch 0: only ignored targets
last[8:16] = -100  # batch 1: every target ignored (loss 0, zero gradient on every rank)
last[[5, 17, 20]] = -100
steps = labels.copy()  # per step: -100 at padded steps and at some valid ones
steps[np.random.default_rng(4).random(y.shape) < 0.2] = -100
steps[12:16] = -100  # rank 1's shard of batch 1: only ignored (or padded) targets
steps_unmasked = np.where(np.random.default_rng(6).random(y.shape) < 0.3, -100, y)
steps_unmasked[0:4] = -100
for target, shard in ((last, slice(0, 4)), (last, slice(8, 16)), (steps, slice(12, 16))):
    assert (target[shard] == -100).all()  # (the spread the cases are about)

IGNORED = "ignore"  # CrossEntropy(ignore_index=-100), a fresh one for each model
CASES = {  # (Masking, sample_weight, class_weight, compiled metrics, targets, loss, 2-D output, shuffle)
    "masked": (True, temporal, None, None, labels, "cross_entropy", False, True),
    "masked, class_weight": (True, temporal, {0: 2.0, 2: 0.25}, None, labels, "cross_entropy", False, True),
    "masked, one weight per sequence": (True, per_sample, {1: 0.5}, None, labels, "cross_entropy", False, True),
    "class_weight, f1": (False, temporal, {1: 3.0}, ["f1"], y, "cross_entropy", False, True),
    "ignored, 2-D, f1": (False, None, None, ["f1"], last, IGNORED, True, False),
    "ignored, 2-D, masked, class_weight": (True, None, {0: 2.0, 2: 0.25}, None, last, IGNORED, True, False),
    "ignored per step, masked, f1": (True, None, None, ["f1"], steps, IGNORED, False, True),
    "ignored per step, masked, weights": (True, temporal, {0: 2.0, 1: 0.5}, None, steps, IGNORED, False, False),
    "ignored per step, one weight per sequence": (False, per_sample, None, None, steps_unmasked, IGNORED, False, True),
}


def train(case):
    masking, weights, class_weight, metrics, target, loss, two_d, shuffle = CASES[case]
    net = sequence_weights_model(masking, two_d, metrics, loss)
    validation = (X[:7], target[:7]) if weights is None else (X[:7], target[:7], weights[:7])
    history = net.fit(
        X, target, epochs=2, batch_size=8, sample_weight=weights, class_weight=class_weight,
        validation_data=validation, shuffle=shuffle, verbose=0,
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
        if CASES[case][5] == IGNORED:  # (what the ignored cases compare)
            assert {"loss", "accuracy", "val_loss", "val_accuracy"} <= set(history), (case, history)
        for key, values in reference_history.items():
            assert np.isfinite(values).all(), (case, key, values)
            np.testing.assert_allclose(history[key], values, rtol=1e-10, err_msg=f"{case}: {key}")
comm.Barrier()
print(f"rank {rank}: ok", flush=True)
