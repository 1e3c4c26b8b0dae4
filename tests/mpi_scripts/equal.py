"""Under mpiexec -n N: N ranks with global batch 8 train exactly as one process with batch 8
(float64 to rounding, Dropout masks included), twice bit-identically; only rank 0 writes."""
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
import numpy as np
from _common import data, model, world
from mpi4py import MPI

import fastnn as fnn

out_dir = sys.argv[1]
dtype = sys.argv[2] if len(sys.argv) > 2 else "float64"
comm = world()
rank = comm.Get_rank()
X, y = data(dtype=dtype)


def train():
    net = model(dtype)
    csv = fnn.callbacks.CSVLogger(os.path.join(out_dir, f"log{rank}.csv"))
    stop = fnn.callbacks.EarlyStopping(monitor="val_loss", patience=1, min_delta=10.0)  # stops after epoch 2
    history = net.fit(X, y, epochs=4, batch_size=8, validation_data=(X[:7], y[:7]), callbacks=[csv, stop], verbose=2)
    return net, history.history


net, history = train()
again, history_again = train()
assert np.array_equal(net.params, again.params), "two runs on the same ranks differ"
assert history == history_again
assert len(history["loss"]) == 2, history  # EarlyStopping stopped every rank after epoch 2
everyone = comm.allgather(net.params.tobytes())
assert all(p == everyone[0] for p in everyone), "the ranks' weights differ"
if rank == 0:
    world(MPI.COMM_SELF)  # one process, same global batch
    reference, reference_history = train()
    tight = dtype == "float64"
    np.testing.assert_allclose(net.params, reference.params, rtol=1e-11 if tight else 2e-4, atol=1e-13 if tight else 1e-5)
    for key, values in reference_history.items():
        np.testing.assert_allclose(history[key], values, rtol=1e-11 if tight else 1e-4, err_msg=key)
    assert os.path.exists(os.path.join(out_dir, "log0.csv"))
comm.Barrier()
assert not os.path.exists(os.path.join(out_dir, f"log{comm.Get_size() - 1}.csv"))
print(f"rank {rank}: ok", flush=True)
