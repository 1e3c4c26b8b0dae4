"""Synchronous data-parallel training over MPI (extra ``distributed``: mpi4py + mpich).

Launch the same script on N processes (``mpiexec -n N python train.py``; on several hosts with a
hostfile or ``srun``, README "Training on several processes"). ``fit`` notices the launch (or
call :func:`init` first) and then, on every rank:

* at the start of each ``fit``, checks that every rank has the same model, data (shapes and a
  fingerprint), batch size and epochs, and gives every rank rank 0's weights, buffers, optimizer
  state and training state (so a checkpoint read on rank 0 only is enough);
* each epoch shuffles with the same seeded order (it depends on the seed and the epoch only),
  cuts every global batch of ``batch_size`` rows into N contiguous shards (sizes differ by at most
  one row) and trains each rank on its shard; every dropout (Dropout, between the layers of
  RNN/LSTM/GRU, attention and TransformerEncoderBlock) numbers its samples by their position in
  the global batch, so the masks are those of one process;
* after the backward pass, scales the local gradient by ``shard rows / batch rows`` (mean losses;
  with sample or class weights: the shard's sum of weights / the batch's; with padded steps left
  out or ignored targets, ``CrossEntropy(ignore_index=...)``: the shard's counted positions / the
  batch's, or their weights' sums) and sums it over the
  ranks with one in-place Allreduce of the flat gradient buffer (or, with ``bucket_bytes``, one
  per bucket of layers, started during the backward: :class:`Buckets`), together with a small
  Allreduce of (loss, correct count); compiled metrics see the global batch's outputs
  (gathered), so AUC and the like are those of one process; the gradient norm (clipping, divergence
  check) is then computed from the summed gradient and the optimizer runs unchanged on every
  rank, so the weights stay identical (``check_every``: assert it with a checksum);
* only rank 0 prints progress and runs the callbacks that write (ModelCheckpoint, CSVLogger,
  TensorBoard, or any callback with ``main_process_only = True``); the others run the rest on the
  same epoch logs (rank 0's, broadcast), so EarlyStopping and schedules decide alike;
* ``model.stop_training = True`` set in a batch hook ends the epoch after that batch (Keras 3) on
  every rank, rank 0's decision (:meth:`Session.batch_ended`): when a callback on some rank has an
  ``on_batch_begin`` hook (a per-batch LearningRateScheduler, a freeze...), a one-byte broadcast
  after each batch's hooks, so the next batch's ``on_batch_begin`` runs only if training goes on,
  as in one process; otherwise the decision rides on the next step's small Allreduce (no
  collective of its own) and that step, which every rank has computed by then, is undone
  (:class:`StopRequested`). At an epoch's end rank 0's decision is broadcast.

So N ranks with global batch B train as one process with batch B (float64: equal to rounding;
float32: to float32 rounding), and two runs with the same N are bit-identical. Checkpoints hold
global state only, so they resume on any number of ranks. Not equal to one process: BatchNorm
(each rank normalises with its own shard's statistics, like torch DDP without SyncBatchNorm; the
running statistics saved are rank 0's; ``sync_batchnorm=True`` makes it equal; a frozen BatchNorm
trains in inference mode, with its running statistics, so it is equal and takes no part in the
synchronisation). The fused step (``fastnn._fused``) is unchanged: it ends with the gradient
norm, before the optimizer, which is where the Allreduce goes; the norm is recomputed after it.

Only ``fit`` is distributed: ``train_step``, ``predict`` and ``evaluate`` run on each rank alone.
fit's validation is shared (:meth:`Session.sharded`): each rank evaluates its shard of the
validation rows (or every N-th validation batch) and the loss sums and correct counts are summed
over the ranks. Refused with a clear error: a dataset or batches as training data, ``accumulate
> 1``. The model must be on the CPU.

Faults: every collective of the training loop is non-blocking and polled against a deadline
(``timeout`` seconds, default ``$FASTNN_MPI_TIMEOUT`` or 300): a rank that raised or died makes the
others raise :class:`DistributedError` and abort the job instead of waiting forever; an uncaught
exception on any rank aborts the whole job at once (``MPI.COMM_WORLD.Abort``).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from typing import Any

import numpy as np

from . import backend, losses
from .layers.base import walk_layers

_LAUNCH_SIZE_VARIABLES = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE", "PMIX_SIZE")
_DEFAULT_TIMEOUT = 300.0
_ABORT_GRACE_S = 0.5  # seconds an uncaught error waits before MPI Abort (see _abort_on_uncaught)


class DistributedError(RuntimeError):
    """The ranks of a data-parallel run disagree, or one stopped answering.

    Raised on every rank that notices (then the job aborts): ranks with different models, data or
    arguments at the start of ``fit``, weights that differ across ranks (``check_every``), a rank
    that does not reach a collective within the timeout, or a model not on the CPU.

    Examples
    --------
    >>> import fastnn as fnn
    >>> issubclass(fnn.distributed.DistributedError, RuntimeError)
    True
    """


class StopRequested(Exception):
    """Raised by :meth:`Session.reduce` on every rank when rank 0 stopped training after the previous
    batch (``model.stop_training = True`` in a batch hook, Keras 3's rule) and no callback has an
    ``on_batch_begin`` hook (:meth:`Session.batch_ended`): the step that carried the decision is not
    applied (``Sequential.run_step`` undoes it), and ``fit`` ends the epoch after the batch rank 0
    stopped at.

    Examples
    --------
    >>> import fastnn as fnn
    >>> issubclass(fnn.distributed.StopRequested, RuntimeError)
    False
    """


class _World:
    comm: Any = None  # an mpi4py communicator once init ran (mpi4py is optional)
    timeout = _DEFAULT_TIMEOUT
    check_every = 0
    sync_batchnorm = False
    bucket_bytes: int | None = None


def launched() -> bool:
    """Whether this process was started by an MPI launcher with more than one rank.

    It reads the launchers' environment (``PMI_SIZE``, ``OMPI_COMM_WORLD_SIZE``,
    ``MV2_COMM_WORLD_SIZE``, ``PMIX_SIZE``); ``FASTNN_DISTRIBUTED=0`` turns it off (each rank then
    trains alone).

    Returns
    -------
    bool
        True under ``mpiexec -n N`` with N > 1.

    Examples
    --------
    >>> import fastnn as fnn
    >>> fnn.distributed.launched()  # a plain ``python`` process
    False
    """
    if os.environ.get("FASTNN_DISTRIBUTED", "").strip() == "0":
        return False
    return any(int(os.environ.get(name, "1") or 1) > 1 for name in _LAUNCH_SIZE_VARIABLES)


def init(
    comm: Any = None,
    *,
    timeout: float | None = None,
    check_every: int = 0,
    sync_batchnorm: bool = False,
    bucket_bytes: int | None = None,
) -> Any:
    """Join the data-parallel group and set how it trains.

    Call again to change the settings; ``fit`` calls it with the defaults when :func:`launched`
    and it was not called. With more than one rank, an uncaught exception on any rank then aborts
    the whole job (``MPI.COMM_WORLD.Abort``).

    Parameters
    ----------
    comm : mpi4py.MPI.Comm, optional
        The ranks that train together (default ``MPI.COMM_WORLD``).
    timeout : float, optional
        Seconds a rank waits for the others at any collective of the training loop before it
        raises :class:`DistributedError` and aborts the job (default ``$FASTNN_MPI_TIMEOUT``,
        else 300).
    check_every : int, default=0
        Every that many steps, check that the weights are bit-identical on all ranks (a checksum
        gathered from every rank; 0: never).
    sync_batchnorm : bool, default=False
        BatchNorm layers normalise with the statistics of the global batch (:class:`SyncBatchNorm`);
        frozen ones (inference mode, ``fastnn.freezing``) use their running statistics.
    bucket_bytes : int, optional
        None sums the gradient with one Allreduce after the backward; a number of bytes starts a
        non-blocking Allreduce of each bucket of layers (about that many gradient bytes, in
        backward order) as soon as the backward has passed them, overlapping the rest of the
        backward (:class:`Buckets`; such steps run unfused).

    Returns
    -------
    mpi4py.MPI.Comm
        The communicator.

    Raises
    ------
    ImportError
        Without mpi4py (``pip install 'fastnn[distributed]'``).
    ValueError
        For a timeout that is not positive, a negative ``check_every`` or a ``bucket_bytes``
        that is not positive.

    Examples
    --------
    One process (``MPI.COMM_SELF``, a group of one rank, trains alone):

    >>> from mpi4py import MPI
    >>> import fastnn as fnn
    >>> comm = fnn.distributed.init(MPI.COMM_SELF)
    >>> comm.Get_size(), fnn.distributed.active() is None
    (1, True)

    In a script started as ``mpiexec -n 2 python train.py`` (two processes, so not run here):

    >>> comm = fnn.distributed.init(timeout=60, check_every=100)  # doctest: +SKIP
    >>> fnn.distributed.world_size(), fnn.distributed.rank()  # doctest: +SKIP
    (2, 0)
    """
    try:
        from mpi4py import MPI
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError(
            "fastnn.distributed needs mpi4py and an MPI library: pip install 'fastnn[distributed]' "
            "(mpi4py and the mpich wheel)"
        ) from error
    if timeout is None:
        timeout = float(os.environ.get("FASTNN_MPI_TIMEOUT", _DEFAULT_TIMEOUT))
    if not timeout > 0:
        raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")
    check_every = int(check_every)
    if check_every < 0:
        raise ValueError(f"check_every must be >= 0 (0: no weight checks), got {check_every!r}")
    if bucket_bytes is not None and not (isinstance(bucket_bytes, (int, np.integer)) and bucket_bytes > 0):
        raise ValueError(
            f"bucket_bytes must be a positive number of bytes (e.g. 1 << 20), or None for one Allreduce "
            f"per step, got {bucket_bytes!r}"
        )
    _World.comm = comm if comm is not None else MPI.COMM_WORLD
    _World.timeout, _World.check_every, _World.sync_batchnorm = float(timeout), check_every, bool(sync_batchnorm)
    _World.bucket_bytes = None if bucket_bytes is None else int(bucket_bytes)
    if _World.comm.Get_size() > 1 and not getattr(sys.excepthook, "_fastnn_abort", False):
        sys.excepthook = _abort_on_uncaught(sys.excepthook)
    return _World.comm


def _abort_on_uncaught(previous):
    def hook(kind, value, tb):
        previous(kind, value, tb)
        sys.stderr.flush()
        sys.stdout.flush()
        # the launcher forwards each rank's output through pipes; Abort tears the job down at
        # once, and on a loaded machine the traceback just written was lost (seen in CI): give
        # the forwarding a moment first
        time.sleep(_ABORT_GRACE_S)
        from mpi4py import MPI

        MPI.COMM_WORLD.Abort(1)  # the whole job: the other ranks would wait in their next collective

    hook._fastnn_abort = True
    return hook


def active() -> Any:
    """The communicator of a multi-rank run (initialising it when :func:`launched`).

    Returns
    -------
    mpi4py.MPI.Comm or None
        The communicator when it has more than one rank, else None.

    Examples
    --------
    >>> import fastnn as fnn
    >>> fnn.distributed.active() is None  # one process: not distributed
    True
    """
    if _World.comm is None and launched():
        init()
    comm = _World.comm
    return comm if comm is not None and comm.Get_size() > 1 else None


def rank() -> int:
    """This process's rank.

    Returns
    -------
    int
        Its rank in the group, 0 when not distributed.

    Examples
    --------
    >>> import fastnn as fnn
    >>> fnn.distributed.rank()
    0
    """
    comm = active()
    return 0 if comm is None else comm.Get_rank()


def world_size() -> int:
    """Number of ranks that train together.

    Returns
    -------
    int
        The group's size, 1 when not distributed.

    Examples
    --------
    >>> import fastnn as fnn
    >>> fnn.distributed.world_size()
    1
    """
    comm = active()
    return 1 if comm is None else comm.Get_size()


def is_main() -> bool:
    """Whether this is rank 0, the rank that prints, logs and checkpoints.

    Returns
    -------
    bool
        True on rank 0 and when not distributed.

    Examples
    --------
    >>> import fastnn as fnn
    >>> if fnn.distributed.is_main():  # write files on one rank only
    ...     print("saving")
    saving
    """
    return rank() == 0


def shard_bounds(rows: int, ranks: int, index: int) -> tuple[int, int]:
    """The rows of one shard of a batch cut into contiguous shards whose sizes differ by at most
    one (the first ``rows % ranks`` shards have the extra row).

    Parameters
    ----------
    rows : int
        Rows of the batch.
    ranks : int
        Number of shards, at least 1.
    index : int
        The shard, in [0, ranks).

    Returns
    -------
    tuple of (int, int)
        [start, stop) of the shard's rows.

    Examples
    --------
    >>> import fastnn as fnn
    >>> [fnn.distributed.shard_bounds(7, 3, r) for r in range(3)]
    [(0, 3), (3, 5), (5, 7)]
    """
    base, extra = divmod(rows, ranks)
    start = index * base + min(index, extra)
    return start, start + base + (index < extra)


def wait(requests: list, what: str, timeout: float | None = None) -> None:
    """Wait for MPI requests, polling, up to a deadline.

    Parameters
    ----------
    requests : list of mpi4py.MPI.Request
        Non-blocking operations (``Iallreduce``, ``Ibarrier`` ...).
    what : str
        What they are, for the error message.
    timeout : float, optional
        Seconds to wait (default: :func:`init`'s timeout).

    Raises
    ------
    DistributedError
        When they are not done within ``timeout`` (another rank raised or died).

    Examples
    --------
    >>> from mpi4py import MPI
    >>> import fastnn as fnn
    >>> total = np.ones(3)
    >>> fnn.distributed.wait([MPI.COMM_SELF.Iallreduce(MPI.IN_PLACE, total, MPI.SUM)], "a sum")
    >>> total  # one rank: the sum is its own values
    array([1., 1., 1.])
    """
    from mpi4py import MPI

    deadline = time.monotonic() + (_World.timeout if timeout is None else timeout)
    spins = 0
    while not MPI.Request.Testall(requests):
        spins += 1
        if spins > 2000:  # past the first ~ms: stop burning the core the other ranks may need
            time.sleep(0.0002)
            if time.monotonic() > deadline:
                comm = _World.comm
                raise DistributedError(
                    f"rank {comm.Get_rank()} of {comm.Get_size()}: no answer from the other ranks within "
                    f"{_World.timeout:g} s during {what}; a rank raised an error or died (see its output). "
                    f"Raise the limit with fastnn.distributed.init(timeout=...) or FASTNN_MPI_TIMEOUT if "
                    f"ranks legitimately take longer (a long validation on slow hosts)"
                )


def _agree_object(comm, value, what: str):
    """Rank 0's ``value`` on every rank (pickled broadcast), guarded by a polled barrier."""
    wait([comm.Ibarrier()], what)
    return comm.bcast(value, root=0)


def _digest(array) -> str:
    return hashlib.blake2b(np.ascontiguousarray(backend.to_host(array)).data, digest_size=16).hexdigest()


def _begins_batches(callback) -> bool:
    """True for callbacks with an ``on_batch_begin`` hook (fastnn's name or Keras's), as
    ``CallbackList`` calls them."""
    from .callbacks import Callback

    kind = type(callback)
    return kind.on_batch_begin is not Callback.on_batch_begin or (
        kind.on_train_batch_begin is not Callback.on_train_batch_begin
    )


def _writes(callback) -> bool:
    """True for callbacks that write files (run on rank 0 only)."""
    flag = getattr(callback, "main_process_only", None)
    if flag is not None:
        return bool(flag)
    from .callbacks import CSVLogger, ModelCheckpoint

    return isinstance(callback, (CSVLogger, ModelCheckpoint)) or type(callback).__name__ == "TensorBoard"


_ABSENT = "(absent)"


def _first_difference(a, b, path: str = "") -> tuple[str, Any, Any]:
    """Where two JSON values first differ: (path such as ``"layers[0].trainable"``, a's value, b's)."""
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b)):
            if a.get(key, _ABSENT) != b.get(key, _ABSENT):
                return _first_difference(a.get(key, _ABSENT), b.get(key, _ABSENT), f"{path}.{key}" if path else key)
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, z) in enumerate(zip(a, b)):
            if x != z:
                return _first_difference(x, z, f"{path}[{i}]")
    return path or "the configuration", a, b


def _model_difference(configs: list[str]) -> str:
    """The first rank whose model configuration (JSON of ``get_config``) differs from rank 0's, and
    where it differs."""
    first = json.loads(configs[0])
    for r, config in enumerate(configs[1:], start=1):
        other = json.loads(config)
        if other != first:
            path, mine, theirs = _first_difference(first, other)
            return f"rank {r} differs from rank 0 at {path}: rank 0 has {str(mine)[:200]}, rank {r} has {str(theirs)[:200]}"
    return "their configurations are equal but their digests differ"


class Session:
    """One ``fit`` of a model on the ranks of ``comm`` (made by :func:`session`).

    The fit loop calls :meth:`start` once, :meth:`shard` and :meth:`reduce` each step,
    :meth:`agree` and :meth:`agree_stop` at each epoch's end and :meth:`close` at the end; after
    each batch's hooks :meth:`batch_ended` (rank 0's stop decides).

    Parameters
    ----------
    comm : mpi4py.MPI.Comm
        The ranks that train together.
    model : fastnn.Sequential
        The compiled model each rank trains (on the CPU).

    Examples
    --------
    A group of one rank (``MPI.COMM_SELF``) runs in one process; under ``mpiexec`` each rank
    gets its shard of every batch.

    >>> from mpi4py import MPI
    >>> import fastnn as fnn
    >>> model = fnn.Sequential([fnn.Dense(3, 1)], seed=0).compile("mse", "sgd")
    >>> run = fnn.distributed.Session(MPI.COMM_SELF, model)  # a group of one rank: runs here
    >>> X, y = np.ones((8, 3), np.float32), np.ones((8, 1), np.float32)
    >>> run.start(X, y, 4, [4, 4], True, 1, fingerprint="", needs_batch_over_one=False)
    >>> run.shard(0, 4), run.size
    ((0, 4), 1)
    >>> run.close()
    """

    def __init__(self, comm, model):
        from mpi4py import MPI

        self.comm, self.model, self.MPI = comm, model, MPI
        self.rank, self.size = comm.Get_rank(), comm.Get_size()
        self.first_rows = [
            layer.first_row
            for layer in walk_layers(model.layers)
            if isinstance(getattr(layer, "first_row", None), np.ndarray)
        ]
        self.norms = [layer for layer in walk_layers(model.layers) if hasattr(layer, "set_synchronizer")]
        self.batch_rows = 0
        self.shard_rows = 0
        self.samples = 0  # training samples of the fit (set by start, named in check_batches' error)
        self.correct: int | None = None
        self.scalars = np.zeros(3, np.float64)  # loss, correct count, rank 0's stop decision
        self.stop_after_batch = False  # rank 0: stop_training after the last batch's hooks (batch_ended)
        # some rank runs an on_batch_begin hook (set by callbacks): the stop is agreed after every batch
        self.agree_each_batch = False
        self.stop_flag = np.zeros(1, np.uint8)  # (batch_ended's broadcast)
        self.steps = 0
        self.buckets: Buckets | None = None
        self.weighted_source = None  # fit with sample or class weights: its ArrayBatches (weights in y[:, -1])
        self.batch_weight = self.shard_weight = 0.0
        # a model that leaves padded steps out: fit's ArrayBatches (its order), every sample's lengths
        # (set by start), and the global batch's and this shard's lengths and valid positions
        self.masked_source = None
        self.lengths_all: np.ndarray | None = None
        self.batch_lengths: np.ndarray | None = None
        self.shard_lengths: np.ndarray | None = None
        self.batch_valid = self.shard_valid = 0
        # a loss that ignores a label (CrossEntropy(ignore_index=...)): fit's ArrayBatches; the counts
        # above are then of the targets not ignored (of valid steps), the weights of those alone
        self.ignoring_source = None

    # -- start ---------------------------------------------------------------------------------
    def start(
        self,
        X,
        y,
        batch_size: int,
        batch_sizes: list[int],
        shuffle: bool,
        epochs: int,
        fingerprint: str,
        needs_batch_over_one: bool,
    ) -> None:
        """Check the ranks agree on model and data, then give all of them rank 0's state.

        Parameters
        ----------
        X, y : ndarray
            The training data (every rank passes the whole of it).
        batch_size : int
            Rows of each global batch.
        batch_sizes : list of int
            The rows of every batch of an epoch (the last may be smaller).
        shuffle : bool
            Whether each epoch shuffles.
        epochs : int
            Epochs of the fit.
        fingerprint : str
            A digest of the data's values (compared across ranks).
        needs_batch_over_one : bool
            Whether a layer needs shards of at least 2 rows (BatchNorm without sync).

        Raises
        ------
        DistributedError
            When the model is not on the CPU, the ranks disagree, or a batch has fewer rows than
            ranks.

        Examples
        --------
        >>> from mpi4py import MPI
        >>> import fastnn as fnn
        >>> model = fnn.Sequential([fnn.Dense(3, 1)], seed=0).compile("mse", "sgd")
        >>> run = fnn.distributed.Session(MPI.COMM_SELF, model)  # a group of one rank: runs here
        >>> X, y = np.ones((8, 3), np.float32), np.ones((8, 1), np.float32)
        >>> run.start(X, y, 4, [4, 4], True, 1, fingerprint="", needs_batch_over_one=False)
        >>> run.start(X, y, 7, [7, 1], True, 1, fingerprint="", needs_batch_over_one=True)
        Traceback (most recent call last):
        ...
        fastnn.distributed.DistributedError: a batch of 1 rows cannot be cut into 1 shards of at least 2 row(s) ...
        """
        model = self.model
        if model.device != "cpu":
            raise DistributedError(
                f"data-parallel fit runs on the CPU only for now; the model is on {model.device!r}: "
                f"model.to('cpu') first (or run one process per GPU without fastnn.distributed)"
            )
        config = json.dumps(model.get_config(), sort_keys=True, default=str)
        mine = {
            "model": hashlib.blake2b(config.encode(), digest_size=8).hexdigest(),
            "parameters": int(model.params.size),
            "dtype": str(model.dtype),
            "data": f"X {tuple(X.shape)} {X.dtype}, y {tuple(y.shape)} {y.dtype}",
            "data values": fingerprint,
            "batch_size": batch_size,
            "shuffle": shuffle,
            "epochs": epochs,
            "optimizer": type(model.optimizer).__name__,
            "loss": type(model.loss).__name__,
        }
        wait([self.comm.Ibarrier()], "the start of fit (every rank must call fit)")
        everyone = self.comm.allgather(mine)
        for key in mine:
            values = [entry[key] for entry in everyone]
            if any(v != values[0] for v in values):
                listing = "; ".join(f"rank {r}: {v}" for r, v in enumerate(values))
                if key == "model":  # digests say nothing: name the first setting that differs
                    listing = _model_difference(self.comm.allgather(config))
                raise DistributedError(
                    f"the ranks disagree on the {key} ({listing}); every rank must build the "
                    f"same model and fit it on the same data with the same arguments (each "
                    f"rank takes its shard of every batch itself)"
                )
        self.samples = X.shape[0]
        self.check_batches(batch_size, batch_sizes, needs_batch_over_one)
        self.lengths_all = model.output_lengths(X)  # (None unless the model leaves padded steps out)
        record = self.comm.bcast(model.snapshot() if self.rank == 0 else None, root=0)
        if self.rank != 0:
            model.restore(record)
        if _World.sync_batchnorm and self.norms:
            sync = SyncBatchNorm(self)
            for layer in self.norms:
                layer.set_synchronizer(sync)
            model.clear_plans()  # rebuilt with the synchronised calls
        if _World.bucket_bytes is not None:
            self.buckets = Buckets(self, _World.bucket_bytes)
            model.set_backward_hook(self.buckets.calls_after)  # step plans rebuilt with the buckets' calls

    def check_batches(self, batch_size: int, batch_sizes: list[int], needs_batch_over_one: bool) -> None:
        """Check every global batch cuts into one shard per rank, of 2 rows at least when a layer
        needs more than one sample (a BatchNorm, unless synchronised). ``fit`` checks at its start
        and again at each epoch's (a callback may have unfrozen a BatchNorm), on every rank alike.

        Parameters
        ----------
        batch_size : int
            Rows of each global batch.
        batch_sizes : list of int
            The rows of a full batch and of the epoch's last one.
        needs_batch_over_one : bool
            Whether a layer needs shards of at least 2 rows (BatchNorm without sync, not frozen).

        Raises
        ------
        DistributedError
            When a batch has fewer rows than that per rank.

        Examples
        --------
        >>> from mpi4py import MPI
        >>> import fastnn as fnn
        >>> model = fnn.Sequential([fnn.Dense(3, 1)], seed=0).compile("mse", "sgd")
        >>> run = fnn.distributed.Session(MPI.COMM_SELF, model)  # a group of one rank: runs here
        >>> run.check_batches(4, [4, 1], needs_batch_over_one=False)
        >>> run.check_batches(4, [4, 1], needs_batch_over_one=True)
        Traceback (most recent call last):
        ...
        fastnn.distributed.DistributedError: a batch of 1 rows cannot be cut into 1 shards of at least 2 row(s) ...
        """
        smallest = min(batch_sizes)
        need = 2 if needs_batch_over_one and not (_World.sync_batchnorm and self.norms) else 1
        if smallest < need * self.size:
            raise DistributedError(
                f"a batch of {smallest} rows cannot be cut into {self.size} shards of at least {need} row(s) "
                f"(batch_size={batch_size}, {self.samples} samples); use batch_size >= {need * self.size} and a "
                f"sample count whose last batch has >= {need * self.size} rows, or fewer ranks"
                + (
                    ""
                    if need == 1
                    else " (or fastnn.distributed.init(sync_batchnorm=True): statistics over the global batch; or "
                    "keep the BatchNorm layers frozen: they train in inference mode)"
                )
            )

    def close(self) -> None:
        """End of fit: the model trains on its own again.

        Examples
        --------
        >>> from mpi4py import MPI
        >>> import fastnn as fnn
        >>> model = fnn.Sequential([fnn.Dense(3, 1)], seed=0).compile("mse", "sgd")
        >>> run = fnn.distributed.Session(MPI.COMM_SELF, model)  # a group of one rank: runs here
        >>> run.close()
        """
        self.model.set_gradient_reducer(None)
        if self.buckets is not None:
            self.buckets.abandon()
            self.model.set_backward_hook(None)
        if any(layer.synchronizer is not None for layer in self.norms):
            for layer in self.norms:
                layer.set_synchronizer(None)
            self.model.clear_plans()

    def callbacks(self, callbacks: list) -> list:
        """The callbacks this rank runs: all on rank 0, those that do not write on the others. Every
        rank also learns whether some rank's callbacks have an ``on_batch_begin`` hook
        (``agree_each_batch``: :meth:`batch_ended`); a collective, called once per fit on every rank.

        Parameters
        ----------
        callbacks : list of fastnn.callbacks.Callback
            The fit's callbacks.

        Returns
        -------
        list of fastnn.callbacks.Callback
            All on rank 0; on the others those that write no files (not CSVLogger,
            ModelCheckpoint, TensorBoard, nor any with ``main_process_only = True``).

        Examples
        --------
        >>> from mpi4py import MPI
        >>> import fastnn as fnn
        >>> model = fnn.Sequential([fnn.Dense(3, 1)], seed=0).compile("mse", "sgd")
        >>> run = fnn.distributed.Session(MPI.COMM_SELF, model)  # a group of one rank: runs here
        >>> callbacks = [fnn.callbacks.CSVLogger("log.csv"), fnn.callbacks.EarlyStopping("loss")]
        >>> len(run.callbacks(callbacks))  # rank 0 runs both
        2
        >>> run.agree_each_batch  # no on_batch_begin hook on any rank: a stop rides on the next step
        False
        """
        kept = list(callbacks) if self.rank == 0 else [cb for cb in callbacks if not _writes(cb)]
        hooked = np.array([1 if any(_begins_batches(cb) for cb in kept) else 0], np.uint8)
        MPI = self.MPI
        wait([self.comm.Iallreduce(MPI.IN_PLACE, hooked, MPI.MAX)], "the start of fit (its callbacks' hooks)")
        self.agree_each_batch = bool(hooked[0])
        return kept

    def batch_ended(self) -> bool:
        """After a batch's ``on_batch_end`` (``fit``): rank 0's ``model.stop_training`` decides for
        every rank. When some rank runs an ``on_batch_begin`` hook (``agree_each_batch``) it is
        broadcast now (one byte), so that a stop skips the next batch's ``on_batch_begin`` and its
        side effects (a per-batch learning rate, a freeze), as in one process; otherwise it rides on
        the next step's reduction (no collective of its own, :meth:`reduce`), which then raises
        :class:`StopRequested`.

        Returns
        -------
        bool
            True when the ranks agreed now to stop (``model.stop_training`` is then rank 0's
            decision on every rank); False when they go on or decide at the next step.

        Raises
        ------
        DistributedError
            When another rank does not join the broadcast in time.

        Examples
        --------
        >>> from mpi4py import MPI
        >>> import fastnn as fnn
        >>> model = fnn.Sequential([fnn.Dense(3, 1)], seed=0).compile("mse", "sgd")
        >>> run = fnn.distributed.Session(MPI.COMM_SELF, model)  # a group of one rank: runs here
        >>> model.stop_training = True
        >>> run.batch_ended(), run.stop_after_batch  # no on_batch_begin hook: the next step carries it
        (False, True)
        >>> run.agree_each_batch = True
        >>> run.batch_ended(), model.stop_training  # an on_batch_begin hook somewhere: agreed now
        (True, True)
        """
        model = self.model
        if not self.agree_each_batch:
            self.stop_after_batch = model.stop_training  # (rank 0's counts: reduce)
            return False
        self.stop_flag[0] = 1 if self.rank == 0 and model.stop_training else 0
        wait([self.comm.Ibcast(self.stop_flag, root=0)], f"the stop decision after step {self.steps}")
        model.stop_training = bool(self.stop_flag[0])
        return model.stop_training

    # -- steps ---------------------------------------------------------------------------------
    def shard(self, lo: int, hi: int) -> tuple[int, int]:
        """This rank's rows of a global batch (and Dropout's row numbers set to match).

        Parameters
        ----------
        lo, hi : int
            The global batch: rows [lo, hi) of the epoch's order.

        Returns
        -------
        tuple of (int, int)
            [a, b): this rank's rows of the epoch's order.

        Examples
        --------
        >>> from mpi4py import MPI
        >>> import fastnn as fnn
        >>> model = fnn.Sequential([fnn.Dense(3, 1)], seed=0).compile("mse", "sgd")
        >>> run = fnn.distributed.Session(MPI.COMM_SELF, model)  # a group of one rank: runs here
        >>> run.shard(8, 12)  # one rank: the whole batch
        (8, 12)
        """
        if (hi - lo) // self.size < 2 and self.norms and not _World.sync_batchnorm:
            self._check_unfrozen_norms(hi - lo)  # (every rank alike: the smallest shard decides)
        start, stop = shard_bounds(hi - lo, self.size, self.rank)
        for first_row in self.first_rows:
            first_row[0] = start
        self.batch_rows, self.shard_rows = hi - lo, stop - start
        rows = slice(lo, hi)
        masked, counted = self.masked_source, None  # counted: (batch rows, positions) bool, or None (all count)
        if masked is not None and self.lengths_all is not None:  # the mean is over the global batch's valid steps
            lengths = self.lengths_all[rows if masked.order is None else masked.order[lo:hi]]
            self.batch_lengths, self.shard_lengths = lengths, lengths[start:stop]
            counted = self.model.valid_rows(lengths).reshape(hi - lo, -1)
        ignoring = self.ignoring_source
        if ignoring is not None:  # ... and over its targets not ignored (the kept ones of every rank)
            kept = losses.counted_rows(
                self.model.loss,
                ignoring.y[rows if ignoring.order is None else ignoring.order[lo:hi]],
                weighted=ignoring.weighted,  # (a weighted fit's targets: label, weight)
                valid=None if counted is None else counted.reshape(-1),
            )
            if kept is not None:
                counted = kept.reshape(hi - lo, -1)
        if counted is not None:
            per_sample = counted.sum(axis=1)
            self.batch_valid, self.shard_valid = int(per_sample.sum()), int(per_sample[start:stop].sum())
        source = self.weighted_source
        if source is not None:  # the weighted mean of the shard becomes its share of the batch's
            targets = source.y[rows if source.order is None else source.order[lo:hi]]
            weights = targets[..., -1].reshape(hi - lo, -1)  # (each sample's rows: one, or its positions)
            if counted is not None:  # (a per-step output's padded positions and ignored targets weigh nothing)
                weights = np.where(counted, weights, 0.0)
            weights = weights.sum(axis=1)
            self.batch_weight, self.shard_weight = float(weights.sum()), float(weights[start:stop].sum())
        return lo + start, lo + stop

    def _check_unfrozen_norms(self, rows: int) -> None:
        """A DistributedError, on every rank alike, when a global batch of ``rows`` rows gives some
        rank a shard of one row and an unsynchronised BatchNorm trains on one row per sample (a
        callback unfroze it during the epoch, after :meth:`check_batches` passed at its start);
        BatchNorm's own error on that rank alone would name a batch size the fit was not given."""
        from .streaming import needs_two

        norm = needs_two(self.model)
        if norm is not None:
            smallest = rows // self.size
            raise DistributedError(
                f"{norm!r} became trainable during the epoch (a callback unfroze it), and a batch of {rows} "
                f"rows cut into {self.size} shards gives a rank {smallest} row(s), on which it cannot train "
                f"(one value per channel); use a batch_size and a sample count whose last batch has >= "
                f"{2 * self.size} rows, fastnn.distributed.init(sync_batchnorm=True) (statistics over the "
                f"global batch), or keep it frozen in this fit"
            )

    def reduce(self, loss: float, norm: float, out, target) -> tuple[float, float]:
        """The step's hook between backward and optimizer (``Sequential.run_step``): sums the
        gradient over the ranks (as the mean over the global batch) and keeps the global correct
        count in ``self.correct``. The small Allreduce of (loss, correct count) also carries rank
        0's ``stop_after_batch`` (``stop_training`` after the previous batch's hooks, unless
        :meth:`batch_ended` agreed on it already), so every rank learns it at the same step without
        a collective of its own.

        Parameters
        ----------
        loss : float
            This rank's loss on its shard.
        norm : float
            This rank's gradient norm (replaced by the global one).
        out : ndarray of shape (shard rows, \\*output_shape)
            The shard's output.
        target : ndarray
            The shard's checked targets.

        Returns
        -------
        tuple of (float, float)
            (loss of the global batch, norm of the summed gradient).

        Raises
        ------
        DistributedError
            When another rank does not join the Allreduce in time, or the weights differ
            (``check_every``).
        StopRequested
            When rank 0 stopped training after the previous batch: this step must not be applied
            (``Sequential.run_step`` undoes it on every rank).

        Examples
        --------
        >>> from mpi4py import MPI
        >>> import fastnn as fnn
        >>> model = fnn.Sequential([fnn.Dense(3, 1)], seed=0).compile("mse", "sgd")
        >>> run = fnn.distributed.Session(MPI.COMM_SELF, model)  # a group of one rank: runs here
        >>> run.shard(0, 2)
        (0, 2)
        >>> model.grads[:] = 0.5  # the gradient after the backward pass
        >>> loss, norm = run.reduce(0.25, 0.0, np.zeros((2, 1), np.float32), np.zeros((2, 1), np.float32))
        >>> loss, round(norm, 4)  # one rank: its loss, the norm of its gradient (4 values of 0.5)
        (0.25, 1.0)
        """
        model = self.model
        weight, factor = self.weight(), self._gradient_factor()
        grads = model.grads
        count = model.correct_count(
            out, target, self.shard_lengths if self.masked_source is not None else None, checked=False
        )
        stop = self.rank == 0 and self.stop_after_batch  # (rides on the reduction every step makes)
        self.scalars[:] = (loss * weight, 0 if count is None else count, 1.0 if stop else 0.0)
        if _World.check_every and self.steps % _World.check_every == 0:
            self.check_weights()
        MPI = self.MPI
        if self.buckets is not None:  # those the backward has not started (a step that ran unplanned)
            gradient = self.buckets.finish()
        else:
            if factor != 1.0:
                np.multiply(grads, grads.dtype.type(factor), out=grads)
            gradient = [self.comm.Iallreduce(MPI.IN_PLACE, grads, MPI.SUM)]
        wait(
            [*gradient, self.comm.Iallreduce(MPI.IN_PLACE, self.scalars, MPI.SUM)],
            f"step {self.steps + 1}'s Allreduce",
        )
        self.steps += 1
        if self.scalars[2]:  # rank 0 stopped after the previous batch: this step is not applied anywhere
            raise StopRequested(f"rank 0 stopped training before step {self.steps}")
        self.correct = None if count is None else int(round(self.scalars[1]))
        norm = model.grad_norm()
        return float(self.scalars[0]), float(norm)

    def weight(self) -> float:
        """The factor of this rank's gradient in the global one: shard rows / batch rows for a
        mean loss (its gradient is of the shard's mean), the shard's sum of sample weights / the
        batch's for a weighted mean (sum w l / sum w), the shard's valid steps' positions / the
        batch's for a model that leaves padded steps out, its targets not ignored / the batch's for
        ``CrossEntropy(ignore_index=...)`` (both rules together, and the weights of those positions
        alone when weighted), 1 for a summed loss.

        Returns
        -------
        float
            The factor, in [0, 1] for a mean loss.

        Examples
        --------
        >>> from mpi4py import MPI
        >>> import fastnn as fnn
        >>> model = fnn.Sequential([fnn.Dense(3, 2), fnn.Dense(2, 1)], seed=0).compile("mse", "sgd")
        >>> run = fnn.distributed.Session(MPI.COMM_SELF, model)  # a group of one rank: runs here
        >>> run.shard(0, 4)  # one rank: the shard is the whole batch
        (0, 4)
        >>> run.weight()
        1.0
        """
        if getattr(self.model.loss, "reduction", "mean") != "mean":
            return 1.0
        if self.weighted_source is not None:
            return self.shard_weight / self.batch_weight if self.batch_weight else 0.0
        if self.masked_source is not None or self.ignoring_source is not None:
            return self.shard_valid / self.batch_valid if self.batch_valid else 0.0
        return self.shard_rows / self.batch_rows

    def _gradient_factor(self) -> float:
        """What this rank's gradient is multiplied by before the sum: :meth:`weight`, but 1 for a
        shard that counts for nothing (weight 0: every target ignored, every weight 0, or no valid
        step). Such a shard's loss gradient is exactly 0, so its gradient holds only what
        :class:`SyncBatchNorm`'s global sums give its rows (the batch's loss depends on them through
        the statistics), already of the batch's loss; weighing it by 0 would lose it. (Without
        SyncBatchNorm that gradient is 0 either way.)"""
        weight = self.weight()
        return weight if weight else 1.0

    def check_weights(self) -> None:
        """Check that every rank holds bit-identical weights.

        Raises
        ------
        DistributedError
            When some rank's weights differ from rank 0's.

        Examples
        --------
        >>> from mpi4py import MPI
        >>> import fastnn as fnn
        >>> model = fnn.Sequential([fnn.Dense(3, 1)], seed=0).compile("mse", "sgd")
        >>> run = fnn.distributed.Session(MPI.COMM_SELF, model)  # a group of one rank: runs here
        >>> run.check_weights()  # one rank agrees with itself
        """
        wait([self.comm.Ibarrier()], f"the weight check before step {self.steps + 1}")
        digests = self.comm.allgather(_digest(self.model.params))
        if any(d != digests[0] for d in digests):
            different = [r for r, d in enumerate(digests) if d != digests[0]]
            raise DistributedError(
                f"the weights differ across ranks before step {self.steps + 1} (ranks {different} "
                f"differ from rank 0); a rank changed its model outside fit, or the MPI "
                f"library's Allreduce is not reproducible across ranks"
            )

    # -- validation ----------------------------------------------------------------------------
    def sharded(self, validation):
        """fit's validation function (``fastnn.streaming.validation``) with the work shared: on
        arrays each rank evaluates its contiguous shard of the rows (:func:`shard_bounds`), on a
        dataset or batches every ``size``-th batch from its rank; the loss sums, weights and
        correct counts are then summed over the ranks, so every rank gets the logs of the whole
        set (equal to one process's to rounding). None stays None.

        Parameters
        ----------
        validation : callable or None
            What ``fastnn.streaming.validation`` returned for fit's ``validation_data``.

        Returns
        -------
        callable or None
            ``() -> dict`` of the validation logs, the same on every rank; None for None.

        Examples
        --------
        >>> from mpi4py import MPI
        >>> import fastnn as fnn
        >>> model = fnn.Sequential([fnn.Dense(3, 2), fnn.Dense(2, 1)], seed=0).compile("mse", "sgd")
        >>> run = fnn.distributed.Session(MPI.COMM_SELF, model)  # a group of one rank: runs here
        >>> from fastnn.streaming import validation
        >>> X, y = np.ones((4, 3), np.float32), np.ones((4, 1), np.float32)
        >>> logs = run.sharded(validation(model, (X, y)))()  # one rank: it evaluates every row
        >>> logs == model.validate(X, y)
        True
        >>> run.sharded(None) is None
        True
        """
        if validation is None:
            return None
        arrays = getattr(validation, "arrays", None)
        if arrays is not None:
            return lambda: self._shard_evaluation(*arrays).results()
        if self.model.metrics:  # compiled metrics of batches: every rank evaluates them all
            return validation
        return lambda: self._reduced(validation.evaluation(lambda b: b % self.size == self.rank)).results()

    def _shard_evaluation(self, X, y, w):
        """The Evaluation of the validation arrays: this rank predicts its shard; with compiled
        metrics the outputs are gathered and every rank evaluates them all (metrics such as AUC
        do not add up), else the loss sums and counts are reduced."""
        from .metrics import Evaluation

        lo, hi = shard_bounds(X.shape[0], self.size, self.rank)
        evaluation = Evaluation(self.model)
        model = self.model
        out = model.predict(X[lo:hi]) if hi > lo else np.empty((0, *model.output_shape), model.dtype)
        if evaluation.tracker is not None:
            (out,) = self.gathered(X.shape[0], out)
            lo, hi = 0, X.shape[0]
        if hi > lo:
            lengths = model.output_lengths(X[lo:hi])  # (a model that leaves padded steps out)
            with model.lock:  # (the loss's reduction scratch is the model's)
                evaluation.update(out, y[lo:hi], None if w is None else w[lo:hi], lengths)
        return evaluation if evaluation.tracker is not None else self._reduced(evaluation)

    def gathered(self, rows: int, *arrays) -> list:
        """The arrays of a batch of ``rows`` rows whole on every rank, from each rank's shard
        (:func:`shard_bounds`) of each (host arrays, rows first), in order.

        Parameters
        ----------
        rows : int
            The rows of the whole batch.
        *arrays : ndarray
            This rank's shard of each array, ``(shard rows, ...)``.

        Returns
        -------
        list of ndarray
            Each array whole, ``(rows, ...)``, in the order given.

        Examples
        --------
        >>> from mpi4py import MPI
        >>> import fastnn as fnn
        >>> model = fnn.Sequential([fnn.Dense(3, 2), fnn.Dense(2, 1)], seed=0).compile("mse", "sgd")
        >>> run = fnn.distributed.Session(MPI.COMM_SELF, model)  # a group of one rank: runs here
        >>> (whole,) = run.gathered(2, np.arange(6.0).reshape(2, 3))  # one rank: its shard is the whole
        >>> whole
        array([[0., 1., 2.],
               [3., 4., 5.]])
        """
        counts = [stop - start for start, stop in (shard_bounds(rows, self.size, r) for r in range(self.size))]
        wholes, requests = [], []
        for part in arrays:
            part = np.ascontiguousarray(backend.to_host(part))
            per_row = int(np.prod(part.shape[1:], dtype=np.int64))
            whole = np.empty((rows, *part.shape[1:]), part.dtype)
            requests.append(self.comm.Iallgatherv(part, [whole, [c * per_row for c in counts]]))
            wholes.append(whole)
        wait(requests, "the gathering of the outputs for the compiled metrics")
        return wholes

    def _reduced(self, evaluation):
        """``evaluation`` (a :class:`fastnn.metrics.Evaluation` of this rank's part, no compiled
        metrics) with its sums over every rank's part."""
        e = evaluation
        no_count = e.correct is None  # (a loss without accuracy; a rank without batches counts 0)
        sums = np.array([e.loss_sum, e.weight, e.correct or 0, e.rows, e.batches, no_count], np.float64)
        MPI = self.MPI
        wait([self.comm.Iallreduce(MPI.IN_PLACE, sums, MPI.SUM)], "the validation's reduction")
        e.loss_sum, e.weight, e.rows, e.batches = float(sums[0]), float(sums[1]), int(sums[3]), int(sums[4])
        e.correct = None if sums[5] else int(round(sums[2]))
        if e.batches == 1:  # the one batch was another rank's: its value from the sums
            e.value = e.loss_sum / e.weight if e.loss.reduction == "mean" and e.weight else e.loss_sum
        return e

    # -- epoch end -----------------------------------------------------------------------------
    def agree(self, logs: dict) -> dict:
        """Rank 0's epoch logs on every rank (validation ran on each; this rules out ulp-level
        differences between hosts deciding differently).

        Parameters
        ----------
        logs : dict
            This rank's epoch logs.

        Returns
        -------
        dict
            Rank 0's.

        Examples
        --------
        >>> from mpi4py import MPI
        >>> import fastnn as fnn
        >>> model = fnn.Sequential([fnn.Dense(3, 1)], seed=0).compile("mse", "sgd")
        >>> run = fnn.distributed.Session(MPI.COMM_SELF, model)  # a group of one rank: runs here
        >>> run.agree({"loss": 0.5})
        {'loss': 0.5}
        """
        return _agree_object(self.comm, logs if self.rank == 0 else None, "the end of the epoch")

    def agree_stop(self) -> None:
        """Rank 0's ``stop_training`` on every rank, after the epoch's callbacks.

        Examples
        --------
        >>> from mpi4py import MPI
        >>> import fastnn as fnn
        >>> model = fnn.Sequential([fnn.Dense(3, 1)], seed=0).compile("mse", "sgd")
        >>> run = fnn.distributed.Session(MPI.COMM_SELF, model)  # a group of one rank: runs here
        >>> model.stop_training = True
        >>> run.agree_stop(); model.stop_training
        True
        """
        self.model.stop_training = _agree_object(
            self.comm, self.model.stop_training if self.rank == 0 else None, "the epoch's stop decision"
        )


class Buckets:
    """The gradient summed in buckets that overlap the backward (``init(bucket_bytes=...)``).

    The top-level layers are grouped in backward order (last layer first) into buckets of at
    least ``bucket_bytes`` gradient bytes (the last may be smaller); the step plan runs
    :meth:`start` right after the backward of a bucket's first layer (the one nearest the
    input), which weighs the bucket's gradient like :meth:`Session.reduce` and starts a
    non-blocking in-place Allreduce of it (one per contiguous range of the flat buffer: weights
    and biases lie in two sections). Each start also polls the Allreduces in flight, so that
    the MPI library moves them on while the backward continues (most MPI libraries progress a
    non-blocking collective only inside MPI calls). ``finish`` (in ``reduce``, before the
    optimizer) starts what the backward did not and returns every request, waited on against
    the deadline. Each element is the same sum of the ranks' values as in one Allreduce of the
    whole buffer: bit-identical with 2 ranks; with more, as long as the MPI library sums every
    message size in the same order (MPICH and Open MPI pick the algorithm by size, so the
    rounding may differ from the single Allreduce's while staying equal on all ranks). The step
    then contains Python calls, so it runs unfused (``fastnn._fused`` cannot stop between layers).

    Parameters
    ----------
    session : Session
        The fit's session (its communicator, model and the shard's share of the batch).
    bucket_bytes : int
        The least gradient bytes of a bucket.

    Examples
    --------
    >>> from mpi4py import MPI
    >>> import fastnn as fnn
    >>> model = fnn.Sequential([fnn.Dense(3, 2), fnn.Dense(2, 1)], seed=0).compile("mse", "sgd")
    >>> run = fnn.distributed.Session(MPI.COMM_SELF, model)  # a group of one rank: runs here
    >>> buckets = fnn.distributed.Buckets(run, bucket_bytes=8)  # layer 1's 12 bytes, then layer 0's
    >>> buckets.ranges  # [lo, hi) of the flat gradient per bucket: weights and biases
    [[(6, 8), (10, 11)], [(0, 6), (8, 10)]]
    >>> _ = run.shard(0, 4)  # a batch of 4 rows, all on this rank
    >>> model.grads[:] = 0.5
    >>> buckets.start(0)  # after layer 1's backward
    >>> fnn.distributed.wait(buckets.finish(), "the buckets")  # starts bucket 1, returns all requests
    >>> bool((model.grads == 0.5).all())  # one rank: the sums are its own gradient
    True
    """

    def __init__(self, session: Session, bucket_bytes: int):
        self.session = session
        model = session.model
        per_layer: dict[int, list[tuple[int, int]]] = {}
        for i, _name, lo, shape in model.parameter_layout:
            per_layer.setdefault(i, []).append((lo, lo + int(np.prod(shape, dtype=np.int64))))
        itemsize = model.grads.dtype.itemsize
        self.ranges: list[list[tuple[int, int]]] = []  # bucket -> merged [lo, hi) ranges of the flat gradient
        self.first_layer: dict[int, int] = {}  # layer whose backward completes a bucket -> bucket
        current: list[tuple[int, int]] = []
        layers = sorted(per_layer, reverse=True)
        for i in layers:
            current += per_layer[i]
            if sum(hi - lo for lo, hi in current) * itemsize >= bucket_bytes or i == layers[-1]:
                self.first_layer[i] = len(self.ranges)
                self.ranges.append(_merged(current))
                current = []
        self.requests: list = [None] * len(self.ranges)

    def calls_after(self, i: int) -> list:
        """The calls the step plan runs after layer ``i``'s backward (``Sequential.step_plan``).

        Parameters
        ----------
        i : int
            The index of a top-level layer.

        Returns
        -------
        list of (callable, tuple)
            ``[(self.start, (bucket,))]`` when layer ``i`` completes a bucket, else empty.

        Examples
        --------
        >>> from mpi4py import MPI
        >>> import fastnn as fnn
        >>> model = fnn.Sequential([fnn.Dense(3, 2), fnn.Dense(2, 1)], seed=0).compile("mse", "sgd")
        >>> run = fnn.distributed.Session(MPI.COMM_SELF, model)  # a group of one rank: runs here
        >>> buckets = fnn.distributed.Buckets(run, bucket_bytes=8)  # layer 1's 12 bytes, then layer 0's
        >>> [(call.__name__, args) for call, args in buckets.calls_after(1)]  # layer 1 starts bucket 0
        [('start', (0,))]
        >>> [(call.__name__, args) for call, args in buckets.calls_after(0)]
        [('start', (1,))]
        """
        bucket = self.first_layer.get(i)
        return [] if bucket is None else [(self.start, (bucket,))]

    def start(self, bucket: int) -> None:
        """Weigh bucket ``bucket``'s gradient and start its Allreduce; poll those in flight.

        Parameters
        ----------
        bucket : int
            The bucket's index (0: the one nearest the output).

        Examples
        --------
        >>> from mpi4py import MPI
        >>> import fastnn as fnn
        >>> model = fnn.Sequential([fnn.Dense(3, 2), fnn.Dense(2, 1)], seed=0).compile("mse", "sgd")
        >>> run = fnn.distributed.Session(MPI.COMM_SELF, model)  # a group of one rank: runs here
        >>> buckets = fnn.distributed.Buckets(run, bucket_bytes=8)  # layer 1's 12 bytes, then layer 0's
        >>> _ = run.shard(0, 4)
        >>> buckets.start(0)
        >>> len(buckets.requests[0]), buckets.requests[1]  # one Allreduce per range; bucket 1 not started
        (2, None)
        >>> fnn.distributed.wait(buckets.finish(), "the buckets")
        """
        MPI, comm, grads = self.session.MPI, self.session.comm, self.session.model.grads
        weight = self.session._gradient_factor()
        requests = []
        for lo, hi in self.ranges[bucket]:
            part = grads[lo:hi]
            if weight != 1.0:
                np.multiply(part, part.dtype.type(weight), out=part)
            requests.append(comm.Iallreduce(MPI.IN_PLACE, part, MPI.SUM))
        self.requests[bucket] = requests
        MPI.Request.Testall([r for started in self.requests if started for r in started])

    def finish(self) -> list:
        """Start the buckets not started yet; every request of the step (then reset).

        Returns
        -------
        list of mpi4py.MPI.Request
            The step's Allreduce requests, to :func:`wait` on.

        Examples
        --------
        >>> from mpi4py import MPI
        >>> import fastnn as fnn
        >>> model = fnn.Sequential([fnn.Dense(3, 2), fnn.Dense(2, 1)], seed=0).compile("mse", "sgd")
        >>> run = fnn.distributed.Session(MPI.COMM_SELF, model)  # a group of one rank: runs here
        >>> buckets = fnn.distributed.Buckets(run, bucket_bytes=8)  # layer 1's 12 bytes, then layer 0's
        >>> _ = run.shard(0, 4)
        >>> requests = buckets.finish()  # none started by a backward: starts both
        >>> len(requests), buckets.requests
        (4, [None, None])
        >>> fnn.distributed.wait(requests, "the buckets")
        """
        for bucket, started in enumerate(self.requests):
            if started is None:
                self.start(bucket)
        requests = [r for started in self.requests for r in started]
        self.requests = [None] * len(self.ranges)
        return requests

    def abandon(self) -> None:
        """Forget the requests of a step that failed before ``finish`` (the job aborts anyway).

        Examples
        --------
        >>> from mpi4py import MPI
        >>> import fastnn as fnn
        >>> model = fnn.Sequential([fnn.Dense(3, 2), fnn.Dense(2, 1)], seed=0).compile("mse", "sgd")
        >>> run = fnn.distributed.Session(MPI.COMM_SELF, model)  # a group of one rank: runs here
        >>> buckets = fnn.distributed.Buckets(run, bucket_bytes=8)  # layer 1's 12 bytes, then layer 0's
        >>> _ = run.shard(0, 4)
        >>> buckets.start(0)
        >>> buckets.abandon()
        >>> buckets.requests
        [None, None]
        """
        self.requests = [None] * len(self.ranges)


def _merged(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Sorted [lo, hi) ranges with the adjacent ones joined."""
    out: list[tuple[int, int]] = []
    for lo, hi in sorted(ranges):
        if out and out[-1][1] == lo:
            out[-1] = (out[-1][0], hi)
        else:
            out.append((lo, hi))
    return out


class SyncBatchNorm:
    """Batch statistics over the global batch for the BatchNorm layers of a fit under
    ``init(sync_batchnorm=True)`` (torch.nn.SyncBatchNorm's semantics): the mean and variance of
    each channel are those of all ranks' rows together, the running statistics are updated with
    them (identical on every rank), and the backward sums the two per-channel gradient sums over
    the ranks, so N ranks equal one process with BatchNorm too. Cost per layer and step: two
    small Allreduces (C + 1 and C values) in the forward and one (2C) in the backward; the step
    then runs unfused (these calls are NumPy, float64 sums).

    Over padded sequence steps (a BatchNorm inside ``TimeDistributed`` after masking: the layer
    passes the kernels' ``lengths, per_sample, per_step``), each rank's sums and count are those
    of its valid steps' rows (the counts differ between ranks, so sums and counts are added, not
    means), every row is normalised with the global statistics, and the backward gives a padded
    row the affine part alone, as the one-process kernels (``kernels.batchnorm``) do.

    Parameters
    ----------
    session : Session
        The fit's session (its communicator, and the shard's share of the batch).

    Examples
    --------
    The layers call it; here by hand, with one rank (``MPI.COMM_SELF``): plain batch
    normalisation.

    >>> from mpi4py import MPI
    >>> import fastnn as fnn
    >>> model = fnn.Sequential([fnn.BatchNorm1d(2)], seed=0, dtype="float64", input_features=2)
    >>> norm, run = model.layers[0], fnn.distributed.Session(MPI.COMM_SELF, model)
    >>> sync = fnn.distributed.SyncBatchNorm(run)
    >>> x = np.array([[1.0, 2.0], [3.0, 6.0], [5.0, 4.0]])
    >>> y, x_hat, stats = np.empty_like(x), np.empty_like(x), {"mean": np.zeros((1, 2)), "inv_std": np.zeros((1, 2))}
    >>> [(forward, args)] = sync.forward_calls(norm, x, y, x_hat, stats)
    >>> forward(*args); y
    array([[-1.2247, -1.2247],
           [ 0.    ,  1.2247],
           [ 1.2247,  0.    ]])
    """

    def __init__(self, session: Session):
        self.session = session
        self.rows = 0.0  # rows of the global batch counted at the last forward (batch rows * positions)
        self._counted: dict[int, float] = {}  # those of each layer's last forward, by id(layer)

    def _sum(self, values: np.ndarray, what: str) -> np.ndarray:
        MPI = self.session.MPI
        wait([self.session.comm.Iallreduce(MPI.IN_PLACE, values, MPI.SUM)], what)
        return values

    def forward_calls(self, layer, x, y, x_hat, stats, lengths=None, per_sample=1, per_step=1) -> list:
        """The calls of a BatchNorm layer's training forward with the global batch's statistics.

        Parameters
        ----------
        layer : fastnn.layers.BatchNorm1d or BatchNorm2d
            The layer (its weight, bias, eps and running statistics).
        x : ndarray of shape (rows, C)
            The layer's input rows (positions flattened into rows).
        y, x_hat : ndarray of shape (rows, C)
            Written: the output and the normalised input.
        stats : dict of str to ndarray
            The layer's arena of statistics: ``"mean"`` and ``"inv_std"`` (1, C), written.
        lengths : ndarray, optional
            int64 (samples,): the valid steps of each sample when the rows are padded sequence
            steps (the buffer the step fills); only the valid steps' rows enter the statistics.
        per_sample, per_step : int, default 1
            Rows per sample and per step (``kernels.masking.row_is_valid``), with ``lengths``.

        Returns
        -------
        list of (callable, tuple)
            The calls (function, arguments) the layer's plan runs.

        Examples
        --------
        >>> from mpi4py import MPI
        >>> import fastnn as fnn
        >>> model = fnn.Sequential([fnn.BatchNorm1d(2)], seed=0, dtype="float64", input_features=2)
        >>> norm, run = model.layers[0], fnn.distributed.Session(MPI.COMM_SELF, model)
        >>> sync = fnn.distributed.SyncBatchNorm(run)
        >>> x = np.array([[1.0, 2.0], [3.0, 6.0], [5.0, 4.0]])
        >>> y, x_hat, stats = np.empty_like(x), np.empty_like(x), {"mean": np.zeros((1, 2)), "inv_std": np.zeros((1, 2))}
        >>> [(forward, args)] = sync.forward_calls(norm, x, y, x_hat, stats)
        >>> forward(*args); stats["mean"], norm.running_mean
        (array([[3., 4.]]), array([0.3, 0.4]))
        """
        masked = (lengths, per_sample, per_step)
        return [(self._forward, (layer, x, y, x_hat, stats["mean"][0], stats["inv_std"][0], *masked))]

    def backward_calls(self, layer, grad_y, grad_x, x_hat, stats, lengths=None, per_sample=1, per_step=1) -> list:
        """The calls of a BatchNorm layer's backward with the global batch's gradient sums.

        Parameters
        ----------
        layer : fastnn.layers.BatchNorm1d or BatchNorm2d
            The layer (its weight; its gradients ``grad_weight``, ``grad_bias`` are written).
        grad_y : ndarray of shape (rows, C)
            The gradient of the loss with respect to the output rows.
        grad_x : ndarray of shape (rows, C)
            Written: the gradient with respect to the input rows.
        x_hat : ndarray of shape (rows, C)
            The normalised input of the forward.
        stats : dict of str to ndarray
            The forward's statistics (``"inv_std"`` (1, C)).
        lengths : ndarray, optional
            The forward's lengths (padded sequence steps): a padded row's gradient is the affine
            part alone, ``gamma * inv_std * grad_y``.
        per_sample, per_step : int, default 1
            The forward's rows per sample and per step.

        Returns
        -------
        list of (callable, tuple)
            The calls (function, arguments) the layer's plan runs.

        Examples
        --------
        >>> from mpi4py import MPI
        >>> import fastnn as fnn
        >>> model = fnn.Sequential([fnn.BatchNorm1d(2)], seed=0, dtype="float64", input_features=2)
        >>> norm, run = model.layers[0], fnn.distributed.Session(MPI.COMM_SELF, model)
        >>> sync = fnn.distributed.SyncBatchNorm(run)
        >>> x = np.array([[1.0, 2.0], [3.0, 6.0], [5.0, 4.0]])
        >>> y, x_hat, stats = np.empty_like(x), np.empty_like(x), {"mean": np.zeros((1, 2)), "inv_std": np.zeros((1, 2))}
        >>> [(forward, args)] = sync.forward_calls(norm, x, y, x_hat, stats)
        >>> forward(*args); run.shard(0, 3)
        (0, 3)
        >>> grad_y, grad_x = np.array([[1.0, 0.0], [0.0, 0.0], [0.0, 0.0]]), np.empty_like(x)
        >>> [(backward, args)] = sync.backward_calls(norm, grad_y, grad_x, x_hat, stats)
        >>> backward(*args); grad_x
        array([[ 0.1021,  0.    ],
               [-0.2041,  0.    ],
               [ 0.1021,  0.    ]])
        """
        masked = (lengths, per_sample, per_step)
        return [(self._backward, (layer, grad_y, grad_x, x_hat, stats["inv_std"][0], *masked))]

    @staticmethod
    def _valid(rows: int, lengths, per_sample: int, per_step: int) -> np.ndarray | None:
        """bool (rows,): the rows of valid sequence steps (``kernels.masking.row_is_valid``), None
        without ``lengths`` (every row counts); read when the step runs (the lengths are a buffer)."""
        if lengths is None:
            return None
        i = np.arange(rows)
        sample = i // per_sample
        return (i - sample * per_sample) // per_step < np.asarray(lengths)[sample]

    def _forward(self, layer, x, y, x_hat, mean, inv_std, lengths=None, per_sample=1, per_step=1) -> None:
        """x (rows, C) -> y, x_hat; mean, inv_std (C,) of the global batch (of its valid steps' rows)."""
        c = x.shape[1]
        valid = self._valid(x.shape[0], lengths, per_sample, per_step)
        counted = x if valid is None else x[valid]
        first = np.empty(c + 1)
        first[:c] = counted.sum(axis=0, dtype=np.float64)
        first[c] = counted.shape[0]
        self._sum(first, "SyncBatchNorm's mean")
        self.rows = self._counted[id(layer)] = total = first[c]
        n = total if total else 1.0  # no valid step in the global batch (the kernels' rule): mean 0, variance 0
        mu = first[:c] / n
        centred = x - mu
        counted = centred if valid is None else centred[valid]
        var = self._sum(np.einsum("ij,ij->j", counted, counted), "SyncBatchNorm's variance") / n
        inv = 1.0 / np.sqrt(var + layer.eps)
        np.multiply(centred, inv, out=x_hat, casting="same_kind")
        if layer.affine:
            np.multiply(x_hat, layer.weight, out=y)
            y += layer.bias
        else:
            y[...] = x_hat
        mean[...], inv_std[...] = mu, inv
        if layer.track_running_stats:
            layer.num_batches_tracked[0] += 1
            momentum = layer.momentum if layer.momentum is not None else 1.0 / layer.num_batches_tracked[0]
            if total:  # (a batch without a valid step leaves them, as the kernels do)
                layer.running_mean[...] = (1 - momentum) * layer.running_mean + momentum * mu
                layer.running_var[...] = (1 - momentum) * layer.running_var + momentum * var * (n / max(n - 1, 1))

    def _backward(self, layer, grad_y, grad_x, x_hat, inv_std, lengths=None, per_sample=1, per_step=1) -> None:
        """grad_x from grad_y (rows, C) with the global sums; the local parameter gradients.

        Gradients here are of the rank's own mean loss (``Session.reduce`` weighs them by
        ``w = shard rows / batch rows`` later), so the sums are weighed by ``w`` before they are
        added and grad_x is ``gamma * inv_std * (g - (sum g + x_hat * sum(g * x_hat)) / (N * w))``,
        N the rows the layer's forward counted over all ranks. The sums are over every row (each
        output depends on the statistics); with ``lengths`` a padded row, which the statistics
        left out, gets ``gamma * inv_std * g`` alone. A shard that counts for nothing in the loss
        (every target ignored or weighing 0) has ``g = 0`` from the loss and ``w = 1``
        (``Session._gradient_factor``): its grad_x is the global sums' part, of the batch's loss.
        """
        c = grad_y.shape[1]
        weight = self.session._gradient_factor()
        sums = np.empty(2 * c)
        sums[:c] = grad_y.sum(axis=0, dtype=np.float64)
        sums[c:] = np.einsum("ij,ij->j", grad_y, x_hat, dtype=np.float64)
        if layer.affine:
            layer.grad_bias[...], layer.grad_weight[...] = sums[:c], sums[c:]
        self._sum(np.multiply(sums, weight, out=sums), "SyncBatchNorm's backward")
        scale = inv_std * (layer.weight if layer.affine else 1.0)
        counted = max(self._counted.get(id(layer), self.rows), 1.0)
        grad_x[...] = scale * (grad_y - (sums[:c] + x_hat * sums[c:]) / (counted * weight))
        valid = self._valid(grad_y.shape[0], lengths, per_sample, per_step)
        if valid is not None:
            padded = ~valid
            grad_x[padded] = scale * grad_y[padded]


def session(model) -> Session | None:
    """A :class:`Session` for ``fit`` when this process is one of several ranks.

    Parameters
    ----------
    model : fastnn.Sequential
        The model ``fit`` trains.

    Returns
    -------
    Session or None
        A session when :func:`active`, else None (``fit`` trains alone).

    Examples
    --------
    >>> import fastnn as fnn
    >>> fnn.distributed.session(fnn.Sequential([fnn.Dense(2, 1)])) is None  # one process
    True
    """
    comm = active()
    return None if comm is None else Session(comm, model)


__all__ = [
    "Buckets",
    "DistributedError",
    "Session",
    "StopRequested",
    "SyncBatchNorm",
    "active",
    "init",
    "is_main",
    "launched",
    "rank",
    "session",
    "shard_bounds",
    "wait",
    "world_size",
]
