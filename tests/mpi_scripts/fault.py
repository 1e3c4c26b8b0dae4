"""Under mpiexec -n 2: the last rank raises, is killed, hangs, has other data, another model (a
frozen layer) or other weights; the job must end with a clear error instead of waiting forever."""

import os
import signal
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
from _common import data, model

import fastnn as fnn

how = sys.argv[1]
comm = fnn.distributed.init(timeout=3, check_every=2)
last = comm.Get_rank() == comm.Get_size() - 1


class Fault(fnn.callbacks.Callback):
    def on_batch_end(self, batch, logs=None):
        if last and batch == 1:
            if how == "raise":
                raise ValueError("rank fault injected")
            if how == "kill":
                os.kill(os.getpid(), signal.SIGKILL)
            if how == "hang":
                time.sleep(600)
            if how == "diverge":  # weights changed outside the step: the next checksum catches it
                self.model.params[0] += 1.0


X, y = data()
if how == "data" and last:
    X, y = X[:-1], y[:-1]
net = model()
if how == "model" and last:  # a frozen layer on one rank only: its optimizer would skip it
    net.freeze(0)
net.fit(X, y, epochs=2, batch_size=8, callbacks=[Fault()], verbose=0)
print("fit finished", flush=True)
