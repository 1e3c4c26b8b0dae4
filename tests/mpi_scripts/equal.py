"""Under mpiexec -n N: N ranks with global batch 8 train exactly as one process with batch 8
(float64 to rounding, Dropout masks included; with "sync": BatchNorm too, synchronised; with
"frozen": a frozen BatchNorm, which trains in inference mode and so needs no synchronisation, and
whose running statistics stay as they were), twice bit-identically; only rank 0 writes.
Arguments: output folder, dtype, [sync] [frozen]."""

import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
import numpy as np
from _common import data, model, world
from mpi4py import MPI

import fastnn as fnn

out_dir = sys.argv[1]
dtype = sys.argv[2] if len(sys.argv) > 2 else "float64"
frozen = "frozen" in sys.argv[3:]
norm = "sync" in sys.argv[3:]
comm = world(sync_batchnorm=norm)
rank = comm.Get_rank()
X, y = data(dtype=dtype)


def train():
    net = model(dtype, norm=norm or frozen, frozen=frozen)
    csv = fnn.callbacks.CSVLogger(os.path.join(out_dir, f"log{rank}.csv"))
    stop = fnn.callbacks.EarlyStopping(monitor="val_loss", patience=1, min_delta=10.0)  # stops after epoch 2
    history = net.fit(X, y, epochs=4, batch_size=8, validation_data=(X[:7], y[:7]), callbacks=[csv, stop], verbose=2)
    return net, history.history


net, history = train()
again, history_again = train()
assert np.array_equal(net.params, again.params), "two runs on the same ranks differ"
assert history == history_again
assert len(history["loss"]) == 2, history  # EarlyStopping stopped every rank after epoch 2
everyone = comm.allgather({k: v.tobytes() for k, v in net.state_arrays().items()})
assert all(p == everyone[0] for p in everyone), "the ranks' weights or buffers differ"
if frozen:  # no rank moved (nor counted, nor synchronised) the frozen statistics
    untouched = model(dtype, norm=True, frozen=True).layers[1]
    for name in ("running_mean", "running_var", "num_batches_tracked"):
        assert np.array_equal(getattr(net.layers[1], name), getattr(untouched, name)), name
if rank == 0:
    world(MPI.COMM_SELF, norm)  # one process, same global batch
    reference, reference_history = train()
    tight = dtype == "float64"
    ours = net.state_arrays()
    for name, value in reference.state_arrays().items():  # weights, running statistics, dropout counters
        np.testing.assert_allclose(
            ours[name], value, rtol=1e-11 if tight else 2e-4, atol=1e-13 if tight else 1e-5, err_msg=name
        )
    for key, values in reference_history.items():
        np.testing.assert_allclose(history[key], values, rtol=1e-11 if tight else 1e-4, err_msg=key)
    assert os.path.exists(os.path.join(out_dir, "log0.csv"))
comm.Barrier()
assert not os.path.exists(os.path.join(out_dir, f"log{comm.Get_size() - 1}.csv"))
print(f"rank {rank}: ok", flush=True)
