"""Under mpiexec -n 2, one launch for three checks on a model with dropout inside its layers (an
LSTM's between its layers, a TransformerEncoderBlock's attention and feed-forward):

* 2 ranks train as one process with the same global batch (float64 to rounding): the masks
  are drawn by global sample position;
* the gradient summed in buckets that start during the backward (bucket_bytes) gives weights
  bit-identical to the single Allreduce's, and every bucket was started by the backward;
* the validation is shared (each rank evaluates its shard of the rows, or every 2nd batch of a
  dataset) and equals one process's;
* and, on the MLP of _common, sample_weight, class_weight and compiled metrics (AUC, F1) train
  and validate as on one process.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
import numpy as np
from _common import data, model, sequence_data, sequence_model, world
from mpi4py import MPI

import fastnn as fnn

comm = world()
rank, size = comm.Get_rank(), comm.Get_size()
X, y = sequence_data()
started_in_backward, validated_rows = [], []
Buckets, Evaluation = fnn.distributed.Buckets, fnn.metrics.Evaluation
finish, update = Buckets.finish, Evaluation.update


def spy_finish(self):  # how many buckets the backward started before the step's wait
    started_in_backward.append(sum(r is not None for r in self.requests))
    return finish(self)


def spy_update(self, output, target, weights=None, lengths=None):
    validated_rows.append(output.shape[0])
    return update(self, output, target, weights, lengths)


Buckets.finish, Evaluation.update = spy_finish, spy_update


def train(comm, bucket_bytes=None, validation=(X[:9], y[:9])):
    world(comm, bucket_bytes=bucket_bytes)
    net = sequence_model()
    history = net.fit(X, y, epochs=2, batch_size=8, validation_data=validation, verbose=0)
    return net, history.history


single, history = train(comm)
assert validated_rows == [5, 4][rank : rank + 1] * 2, validated_rows  # its shard of the 9 rows, each epoch
validated_rows.clear()
blocks = fnn.data.ArrayDataset(X[:9], y[:9], block_rows=4)  # batches of 4, 4, 1: rank 0 the 1st and 3rd
bucketed, bucketed_history = train(comm, bucket_bytes=64, validation=blocks)
assert validated_rows == [[4, 1], [4]][rank] * 2, validated_rows
assert np.array_equal(single.params, bucketed.params), "bucketed Allreduce differs from the single one"
for key, values in history.items():  # the training logs bit-identical, the validation's to rounding
    np.testing.assert_allclose(bucketed_history[key], values, rtol=0 if "val" not in key else 1e-12, err_msg=key)
assert started_in_backward == [3] * 6, started_in_backward  # LSTM, block, Dense: 3 buckets x 6 steps
everyone = comm.allgather(single.params.tobytes())
assert all(p == everyone[0] for p in everyone), "the ranks' weights differ"
Xw, yw = data()
weights = np.linspace(0.2, 2.0, Xw.shape[0])


def train_weighted(comm):
    world(comm)
    net = model()
    net.compile(net.loss, net.optimizer, metrics=["auc", "f1"])  # gathered outputs: AUC does not add up
    history = net.fit(
        Xw, yw, epochs=2, batch_size=8, sample_weight=weights, class_weight={0: 1.0, 1: 3.0, 2: 0.5},
        validation_data=(Xw[:7], yw[:7], weights[:7]), verbose=0,
    )  # fmt: skip
    return net, history.history


weighted, weighted_history = train_weighted(comm)
if rank == 0:
    reference, reference_history = train_weighted(MPI.COMM_SELF)
    np.testing.assert_allclose(weighted.params, reference.params, rtol=1e-11, atol=1e-13)
    assert {"auc", "f1", "val_auc", "val_f1"} <= set(reference_history) == set(weighted_history)
    for key, values in reference_history.items():
        np.testing.assert_allclose(weighted_history[key], values, rtol=1e-11, err_msg=key)
    reference, reference_history = train(MPI.COMM_SELF)  # one process, same global batch
    # atol: the attention's key bias has a zero gradient (softmax ignores a score shift): rounding noise ~1e-13
    for name, value in reference.state_arrays().items():  # weights and dropout counters
        np.testing.assert_allclose(single.state_arrays()[name], value, rtol=1e-11, atol=1e-11, err_msg=name)
    for key, values in reference_history.items():
        np.testing.assert_allclose(history[key], values, rtol=1e-11, err_msg=key)
comm.Barrier()
print(f"rank {rank}: ok", flush=True)
