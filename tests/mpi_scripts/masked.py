"""Under mpiexec -n N: a model that leaves padded steps out (Masking -> per-step Dense) trains on
N ranks as one process with the same global batch: each rank's gradient weighs by its shard's
valid steps, so the mean is over all ranks' valid steps; fit's loss, accuracy and f1 and the
validation's equal one process's (float64, to rounding). Argument: "metrics" for compiled
metrics (the outputs gathered) or nothing (the validation's sums reduced)."""

import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
import numpy as np
from _common import masked_model, masked_sequences, world
from mpi4py import MPI

metrics = ["f1"] if "metrics" in sys.argv[1:] else None
comm = world()
rank = comm.Get_rank()
X, y = masked_sequences()


def train():
    net = masked_model(metrics)
    history = net.fit(X, y, epochs=2, batch_size=8, validation_data=(X[:7], y[:7]), verbose=0)
    return net, history.history


net, history = train()
if rank == 0:
    world(MPI.COMM_SELF)  # one process, same global batch
    reference, reference_history = train()
    np.testing.assert_allclose(net.params, reference.params, rtol=1e-11, atol=1e-13)
    assert sorted(history) == sorted(reference_history), (history, reference_history)
    for key, values in reference_history.items():
        np.testing.assert_allclose(history[key], values, rtol=1e-11, err_msg=key)
comm.Barrier()
print(f"rank {rank}: ok", flush=True)
