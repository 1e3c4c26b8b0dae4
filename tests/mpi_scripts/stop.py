"""Under mpiexec -n 2: ``stop_training = True`` set in on_batch_end by a callback that runs on rank 0
only (``main_process_only``) ends the epoch after that batch on every rank, exactly as one process
(float64 to 1e-11; Dropout counters, Adam with clipping); a stop set on rank 1 only changes nothing
(rank 0 decides). Epochs of 22 rows in batches of 8: 3 batches. Two ways, as Session.batch_ended:
no callback with an on_batch_begin hook on any rank: the decision rides on the next step's reduction
and that step is undone; an on_batch_begin hook on some rank (a counting one on rank 0 only; a
per-batch LearningRateScheduler on every rank): the ranks agree after each batch, so the next
batch's on_batch_begin never runs (the lr logged and left in the optimizer are one process's).
Argument "buckets": gradient buckets started during the backward (the undone step's too). Last: a
BatchNorm unfrozen during an epoch whose last batch gives a rank one row is refused on every rank
with a DistributedError naming it."""

import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
import numpy as np
from _common import data, model, world
from mpi4py import MPI

import fastnn as fnn

comm = world(bucket_bytes=256 if "buckets" in sys.argv[1:] else None)
rank = comm.Get_rank()
X, y = data()


class StopAt(fnn.callbacks.Callback):
    """stop_training after batch ``at`` of epoch ``epoch``, on rank ``on`` (None: on every rank where it runs)."""

    def __init__(self, epoch, at, on=None, main_process_only=True):
        self.epoch, self.at, self.on, self.main_process_only = epoch, at, on, main_process_only
        self.begun: list = []

    def on_epoch_begin(self, epoch, logs=None):
        self.current = epoch

    def on_batch_end(self, batch, logs=None):
        if (self.current, batch) == (self.epoch, self.at) and self.on in (None, fnn.distributed.rank()):
            self.model.stop_training = True


class CountingStopAt(StopAt):
    """StopAt that also records its on_batch_begin calls (a hook by Keras's name)."""

    def on_train_batch_begin(self, batch, logs=None):
        self.begun.append((self.current, batch))


def train(at, hooks="", on=None, main_process_only=True):
    """hooks "": no on_batch_begin anywhere; "count": CountingStopAt (rank 0 only, unless
    main_process_only=False); "schedule": that and a per-batch LearningRateScheduler on every rank."""
    net = model()
    stop = (CountingStopAt if hooks else StopAt)(1, at, on, main_process_only)
    schedule = fnn.schedules.StepDecay(0.05, step_size=1, gamma=0.8)
    callbacks = [stop] + ([fnn.callbacks.LearningRateScheduler(schedule, per="batch")] if hooks == "schedule" else [])
    history = net.fit(X, y, epochs=3, batch_size=8, validation_data=(X[:7], y[:7]), callbacks=callbacks, verbose=0)
    return net, history.history, stop


cases = [("", 0), ("", 2), ("count", 0), ("schedule", 0), ("schedule", 2)]  # mid-epoch, and the epoch's last batch
results = {case: train(case[1], case[0]) for case in cases}
# rank 1's own stop: ignored (carried and dropped by the reduction; or overruled after the batch)
local_only = {hooks: train(0, hooks, on=1, main_process_only=False)[0] for hooks in ("", "count")}
for (hooks, at), (net, history, stop) in results.items():
    assert net.epochs_done == 2 and net.state.cursor is None, (hooks, at, net.epochs_done)
    assert net.optimizer.step_count == 3 + at + 1, (hooks, at, net.optimizer.step_count)
    assert len(history["loss"]) == 2, history
    everyone = comm.allgather({k: v.tobytes() for k, v in net.state_arrays().items()})
    assert all(p == everyone[0] for p in everyone), f"the ranks' weights or buffers differ ({hooks!r}, stop at {at})"
    lrs = comm.allgather((net.optimizer.lr, history["lr"]))
    assert all(lr == lrs[0] for lr in lrs), (hooks, at, lrs)
for hooks, net in local_only.items():
    assert net.epochs_done == 3 and net.optimizer.step_count == 9, (hooks, net.epochs_done)
if rank == 0:
    world(MPI.COMM_SELF)  # one process, same global batch
    for (hooks, at), (net, history, stop) in results.items():
        reference, reference_history, reference_stop = train(at, hooks)
        # on_batch_begin is not called for a batch after the stop (no step undone behind the hooks' back)
        assert stop.begun == reference_stop.begun, (hooks, at, stop.begun, reference_stop.begun)
        assert net.optimizer.lr == reference.optimizer.lr, (hooks, at, net.optimizer.lr, reference.optimizer.lr)
        ours = net.state_arrays()
        for name, value in reference.state_arrays().items():  # weights, dropout counters
            np.testing.assert_allclose(ours[name], value, rtol=1e-11, atol=1e-13, err_msg=f"{hooks!r} {at} {name}")
        assert history.keys() == reference_history.keys(), (history.keys(), reference_history.keys())
        for key, values in reference_history.items():  # lr included
            np.testing.assert_allclose(history[key], values, rtol=1e-11, err_msg=f"{hooks!r} {at} {key}")
    reference = model()
    reference.fit(X, y, epochs=3, batch_size=8, validation_data=(X[:7], y[:7]), verbose=0)
    for net in local_only.values():
        np.testing.assert_allclose(net.params, reference.params, rtol=1e-11, atol=1e-13)
world(MPI.COMM_WORLD)


class Unfreeze(fnn.callbacks.Callback):
    def on_batch_begin(self, batch, logs=None):
        if batch == 1:
            self.model.unfreeze()


# a BatchNorm frozen at the start (shards of 4, 4, then 2 + 1 rows pass check_batches), unfrozen during
# the epoch: the last batch's 1-row shard is refused on every rank alike, naming the layer
try:
    model(norm=True, frozen=True).fit(X[:19], y[:19], epochs=1, batch_size=8, callbacks=[Unfreeze()], verbose=0)
except fnn.distributed.DistributedError as exc:
    assert "became trainable during the epoch" in str(exc) and "a batch of 3 rows cut into 2 shards" in str(exc), exc
else:
    raise AssertionError("a BatchNorm unfrozen mid-epoch trained on a shard of one row")
comm.Barrier()
print(f"rank {rank}: ok", flush=True)
