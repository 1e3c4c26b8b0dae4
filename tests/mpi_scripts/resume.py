"""Under mpiexec -n 2: a fit interrupted mid-epoch on 2 ranks resumes on 1 process, and one
interrupted on 1 process resumes on 2 ranks, each exactly as the uninterrupted one-process fit."""

import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
import numpy as np
from _common import data, model, world
from mpi4py import MPI

import fastnn as fnn

out_dir = sys.argv[1]
comm = world()
rank = comm.Get_rank()
X, y = data()
two, one = os.path.join(out_dir, "two.safetensors"), os.path.join(out_dir, "one.safetensors")


class StopInSecondEpoch(fnn.callbacks.Callback):
    """Ctrl-C after the second step of epoch 2 (the step commits first: the cursor is mid-epoch)."""

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_batch_end(self, batch, logs=None):
        if self.epoch == 1 and batch == 1:
            raise KeyboardInterrupt


def interrupted(net):
    try:
        net.fit(X, y, epochs=3, batch_size=8, verbose=0, callbacks=[StopInSecondEpoch()])
    except KeyboardInterrupt:
        pass
    assert net.state.cursor is not None and net.epochs_done == 1
    return net


def finish(net):
    net.fit(X, y, epochs=2, batch_size=8, verbose=0)
    assert net.epochs_done == 3
    return net


net = interrupted(model())  # 2 ranks
if rank == 0:
    net.save(two)
    world(MPI.COMM_SELF)
    reference = model()
    reference.fit(X, y, epochs=3, batch_size=8, verbose=0)
    np.testing.assert_allclose(finish(fnn.load(two)).params, reference.params, rtol=1e-11, atol=1e-13)  # 2 -> 1
    interrupted(model()).save(one)
world(MPI.COMM_WORLD)
comm.Barrier()
net = finish(fnn.load(one) if rank == 0 else model(seed=3))  # 1 -> 2: rank 1's fresh model gets rank 0's state
everyone = comm.allgather(net.params.tobytes())
assert all(p == everyone[0] for p in everyone)
if rank == 0:
    np.testing.assert_allclose(net.params, reference.params, rtol=1e-11, atol=1e-13)
print(f"rank {rank}: ok", flush=True)
