"""``fit`` on shuffled in-memory arrays: each step's batch gathered, its correct classifications
counted and its metrics accumulated inside the step plan's own call into compiled code
(:mod:`fastnn.kernels.step_feed`, :mod:`fastnn.kernels.metric_sums`).

Per fit, a :class:`StepFeed` holds the whole data set (each sample flattened to a row), the epoch's
order and a one-element count. For a step, the batch source arms the plan with the batch's rows
(:meth:`StepFeed.arm`) and hands on the plan's own buffers as the batch; ``Sequential.run_step``
then runs the plan's *gathering* runner: the gather kernel first (rows ``order[lo:hi]`` into the
plan's ``x`` and ``y``), then the plan's calls as ``train_step`` runs them (forward, loss, backward,
norm and the optimizer's update), then the loss's count kernel added to the count, then the
kernels of the fit's built-in metrics (:meth:`fastnn.metrics.Tracker.accumulate_inside`: class
counts, hit counts, regression sums, the epoch's AUC rows) on their state arrays. The data set,
order, rows, count and metric arrays are :class:`fastnn._fused.Given` arguments, so one runner per plan serves
every fit and tiers up (fuses) as the plan's own does; unfused (``FASTNN_FUSE=never``) the same
calls run one by one. The results are those of the Python-side gather (``np.take``) and count, bit
for bit: a copy, and the same count and metric kernels (the tracker runs those from Python on a
batch its step's call did not add). Function metrics stay in Python: a step of a fit with one reads
the batch back in Python (a crossing and NumPy's work).

On a device (:class:`DeviceStepFeed`) the batch comes through ``fastnn.training.BatchFeeder``'s
copies; the step's correct count is queued into the free slot of its scalars
(``kernels.cuda._common.StepScalars``) and read with its loss and gradient norm, and the outputs a
fit's metrics read are copied out queued before that read: the step's one wait covers all.
"""

from __future__ import annotations

import functools

import numpy as np

from . import _dense_chain as dense_chain
from . import backend, losses
from ._fused import CallRunner, Given, Result
from .kernels import losses as loss_kernels
from .kernels.step_feed import add_to_total, gather_batch

#: the count kernel of each built-in ``Loss.correct_count`` (a subclass overriding it counts in
#: Python): ``losses.COUNT_KERNELS``'s, the CPU functions
_COUNT_KERNELS = {method: getattr(loss_kernels, name) for method, name in losses.COUNT_KERNELS.items()}


#: the count kernel of a loss's weighted targets (label, weight) / (k targets, weight), by its base's
_WEIGHTED_COUNT_KERNELS = {
    loss_kernels.accuracy_count: loss_kernels.weighted_accuracy_count,
    loss_kernels.binary_accuracy_count: loss_kernels.binary_accuracy_count,  # reads the first k columns only
}


def count_kernel(loss):
    """The kernel counting ``loss``'s correct classifications inside the step's call: a built-in
    ``correct_count`` (cross-entropy, binary cross-entropy, or either under sample weights); None
    when the count comes from Python (a subclass overriding it) or there is none."""
    base = losses.base_of(loss)
    kernel = _COUNT_KERNELS.get(type(base).correct_count)
    if loss is base or kernel is None:
        return kernel
    if type(loss).correct_count is not losses.SampleWeighted.correct_count:
        return None
    return _WEIGHTED_COUNT_KERNELS[kernel]


def counts_inside(loss) -> bool:
    """Whether ``loss``'s correct count has a kernel the step's call can run (:func:`count_kernel`)."""
    return count_kernel(loss) is not None


def _shifted(calls, by: int) -> list:
    """``calls`` with each :class:`Result` argument pointing ``by`` calls later (calls put before them)."""
    return [(fn, tuple(Result(v.index + by) if isinstance(v, Result) else v for v in args)) for fn, args in calls]


def _after_step(model, plan, count: bool, accumulators, first_given: int, first_call: int) -> list:
    """The calls after the plan's (the first of them call number ``first_call`` of the runner): with
    ``count`` the loss's count kernel added to ``totals[0]`` (Given ``first_given``), then each
    metric accumulator on the batch's rows, its state arrays the Given arguments after
    (:class:`fastnn.metrics.Accumulator`)."""
    out, target, _ = model.loss_rows(plan.out, plan.y)
    masked = losses.count_tail(model.loss, plan.lengths, model.per_step)  # padded steps, ignored labels: not counted
    calls: list = []
    if count:
        calls.append((count_kernel(model.loss), (out, target, *masked)))
        calls.append((add_to_total, (Result(first_call), Given(first_given))))
        first_given += 1
    rows = target.reshape(target.shape[0], -1)  # (labels (m,) as a column)
    for accumulator in accumulators:
        state = tuple(Given(first_given + j) for j in range(len(accumulator.state)))
        calls.append((accumulator.kernel, (out, rows, *accumulator.constants, *state)))
        first_given += len(accumulator.state)
    return calls


def signature(accumulators) -> tuple:
    """What a runner's metric calls depend on: each accumulator's kernel, constants and arrays."""
    return tuple((a.kernel, a.constants, len(a.state)) for a in accumulators)


def gathering_runner(model, plan, count: bool, accumulators=()) -> CallRunner:
    """The runner of ``plan``'s calls with the gather kernel before them (a Dense chain's call
    gathers its rows itself: :func:`fastnn._dense_chain.gathering_call`) and, with ``count``, the
    loss's count kernel after them, then the metric ``accumulators``' kernels: arguments
    ``(x_all, y_all, order, lo, hi)``, then ``totals`` with ``count``, then each accumulator's
    state arrays; returns (loss, gradient norm) as ``plan.run`` does.

    Parameters
    ----------
    model : Sequential
        The plan's model.
    plan : _StepPlan
        A step plan of the model, its ``run`` built.
    count : bool
        Add the correct count of the batch to ``totals[0]`` (the loss has a count kernel).
    accumulators : sequence of fastnn.metrics.Accumulator, optional
        Metrics to add the batch to (:meth:`fastnn.metrics.Tracker.accumulate_inside`).

    Returns
    -------
    CallRunner
        The runner (it tiers up on its own).
    """
    run = plan.run
    m = plan.x.shape[0]
    x, y = plan.x.reshape(m, -1), plan.y.reshape(m, -1)
    gathering = dense_chain.gathering_call(run.calls[0], x, y) if run.calls else None
    if gathering is not None:  # a Dense chain: each thread gathers the rows it computes on
        calls, returns = [gathering, *run.calls[1:]], run.returns
    else:
        calls = [(gather_batch, (*(Given(i) for i in range(dense_chain.GATHER_ARGS)), x, y)), *_shifted(run.calls, 1)]
        returns = tuple(i + 1 for i in run.returns)
    calls += _after_step(model, plan, count, accumulators, dense_chain.GATHER_ARGS, len(calls))
    return CallRunner(calls, returns=returns)


def counting_runner(model, plan, count: bool = True, accumulators=()) -> CallRunner:
    """The runner of ``plan``'s calls on a batch read in place (its slots, or copied into its
    buffers) with, with ``count``, the loss's count kernel after them, added to ``totals[0]``,
    then the metric ``accumulators``' kernels: arguments as ``plan.run``'s, then ``totals`` with
    ``count``, then each accumulator's state arrays; returns (loss, gradient norm) as ``plan.run`` does.

    Parameters
    ----------
    model : Sequential
        The plan's model.
    plan : _StepPlan
        A step plan of the model, its ``run`` built.
    count : bool, default=True
        Count the correct classifications (the loss has a count kernel: :func:`count_kernel`).
    accumulators : sequence of fastnn.metrics.Accumulator, optional
        Metrics to add the batch to.

    Returns
    -------
    CallRunner
        The runner (it tiers up on its own).
    """
    run = plan.run
    calls = run.calls + _after_step(model, plan, count, accumulators, 0, len(run.calls))
    return CallRunner(calls, returns=run.returns, slots=run.slots)


class StepFeed:
    """The whole data set of a fit on arrays, gathered into each step plan inside its call.

    Parameters
    ----------
    model : Sequential
        The compiled model being fit (on the CPU).
    X : numpy.ndarray
        (n, *input_shape) checked inputs, C-contiguous.
    y : numpy.ndarray
        (n, ...) checked targets, C-contiguous.
    order : numpy.ndarray or None
        (n,) int64: the epoch's order of the rows, refilled each epoch by the caller; None for an
        unshuffled fit (its steps are armed by :meth:`arm_count` only).
    count : bool
        Count the correct classifications inside the call when the loss has a count kernel
        (False: under MPI, where the count is the global batch's).
    tracker : fastnn.metrics.Tracker, optional
        The fit's metrics: its :attr:`~fastnn.metrics.Tracker.accumulators` (if any, made before)
        add each batch inside the call.

    Examples
    --------
    >>> import fastnn as fnn
    >>> from fastnn._step_feed import StepFeed
    >>> model = fnn.Sequential([fnn.Dense(2, 4, activation="tanh"), fnn.Dense(4, 2)], seed=0)
    >>> _ = model.compile(loss="cross_entropy", optimizer="sgd")
    >>> X, y = model.check_data(*fnn.data.make_xor(8, seed=0))
    >>> feed = StepFeed(model, X, y, np.arange(8)[::-1].copy(), count=True)
    >>> plan = model.step_plan(4)
    >>> feed.arm(plan, 0, 4)
    >>> loss, out = model.run_step(plan.x, plan.y)
    >>> bool((plan.x == X[[7, 6, 5, 4]]).all()), 0 <= feed.correct_count(out, plan.y) <= 4
    (True, True)
    """

    def __init__(self, model, X: np.ndarray, y: np.ndarray, order: np.ndarray | None, count: bool, tracker=None):
        self.model = model
        accumulators = [] if tracker is None else tracker.accumulators  # (its arrays stay for the fit)
        self.accumulators, self.metric_key = accumulators, signature(accumulators)
        self.metric_arrays = tuple(array for accumulator in accumulators for array in accumulator.state)
        self.x_all, self.y_all = X.reshape(X.shape[0], -1), y.reshape(y.shape[0], -1)
        self.order = order
        self.count = count
        self.totals = np.zeros(1, np.int64)
        self.rows: tuple[int, int] | None = None  # (lo, hi) of the armed step
        self.plan = None  # the armed plan
        self.counted = False  # the last step's count is in totals
        self.tracked = False  # the last step's call added its batch to the tracker's accumulators
        self.classifies = True  # the loss counts correct classifications (False: its count is None)
        self._loss = None  # the loss _for_loss worked out the following for
        self._count = False  # its count kernel runs inside the step's call
        self._key: object = False  # what the runner adds after the step (the runners' cache key)
        self._extra: tuple = ()  # the Given arguments after the batch's

    def _for_loss(self, loss) -> None:
        """Work out what ``loss`` counts: whether it classifies, whether its count runs inside the
        call, the runners' key and the arrays after the batch's."""
        counts = type(loss).correct_count
        base_counts = type(losses.base_of(loss)).correct_count  # (a weighted MSE counts nothing)
        self.classifies = counts is not losses.Loss.correct_count and base_counts is not losses.Loss.correct_count
        count = self._count = self.count and counts_inside(loss)
        self._key = (count, self.metric_key) if self.accumulators else count
        self._extra = (self.totals, *self.metric_arrays) if count else self.metric_arrays
        self._loss = loss

    def arm_count(self, plan) -> None:
        """Make the next :meth:`run` of ``plan`` count its batch's correct classifications inside
        its call, the batch given as ``run_step`` takes it (an unshuffled fit: rows read in place).

        Parameters
        ----------
        plan : _StepPlan
            The step plan of the batch's size.
        """
        plan.feed, self.rows, self.plan = self, None, plan

    def arm(self, plan, lo: int, hi: int) -> None:
        """Make the next :meth:`run` of ``plan`` gather the rows ``order[lo:hi]`` into its buffers.

        Parameters
        ----------
        plan : _StepPlan
            The step plan of batch size ``hi - lo``.
        lo, hi : int
            Positions in the epoch's order.
        """
        plan.feed, self.rows, self.plan = self, (lo, hi), plan

    def disarm(self) -> None:
        """Forget an armed step that did not run (fit left early): its plan no longer holds the data.

        Examples
        --------
        >>> feed.disarm()  # doctest: +SKIP
        """
        if self.plan is not None:
            self.plan.feed = None
        self.rows = self.plan = None

    def run(self, plan, xb, yb) -> tuple[float, float]:
        """(loss, gradient norm) of ``plan``'s call for the batch (xb, yb): gathered inside the call
        when armed and the batch is the plan's own buffers, else as ``plan.run`` takes it.

        Parameters
        ----------
        plan : _StepPlan
            The step plan.
        xb, yb : numpy.ndarray
            The batch ``run_step`` got.

        Returns
        -------
        tuple of float
            (loss, gradient norm).
        """
        rows, self.rows, self.plan, plan.feed = self.rows, None, None, None
        self.counted = self.tracked = False
        loss = self.model.loss
        if loss is not self._loss:  # what the loss counts: worked out once per loss, not per step
            self._for_loss(loss)
        count, key, extra, accumulators = self._count, self._key, self._extra, self.accumulators
        if rows is None and (count or accumulators):  # the batch as given, counted inside
            cached = plan.counting
            if cached is None or cached[0] is not plan.run or cached[1] != key:
                cached = plan.counting = (plan.run, key, counting_runner(self.model, plan, count, accumulators))
            result = cached[2](*plan.inputs(xb, yb), *extra)
        elif rows is None or xb is not plan.x or yb is not plan.y:
            return plan.run(*plan.inputs(xb, yb))
        else:
            cached = plan.gathering
            if cached is None or cached[0] is not plan.run or cached[1] != key:
                self._check_rows(plan)
                cached = plan.gathering = (plan.run, key, gathering_runner(self.model, plan, count, accumulators))
            result = cached[2](self.x_all, self.y_all, self.order, rows[0], rows[1], *extra)
        self.counted, self.tracked = count, bool(accumulators)
        return result

    def lane_runner(self, plan):
        """The runner of ``plan``'s steps in fit's lane (:func:`fastnn.training._run_lane`), that
        :meth:`run` uses for an armed step (the same runner, cached on the plan), and the arguments
        after its batch's rows: ``runner(x_all, y_all, order, lo, hi, *extra)`` gathers, steps and
        counts the rows ``order[lo:hi]`` as an armed :meth:`run` does; None when the batch's count or
        the tracker's metrics would need Python after the step (counted outside, or accumulators).

        Parameters
        ----------
        plan : _StepPlan
            The step plan of the batch's size (its ``run`` built).

        Returns
        -------
        tuple or None
            ``(runner, extra)``, or None.
        """
        loss = self.model.loss
        if loss is not self._loss:
            self._for_loss(loss)
        if self.accumulators or self.order is None or (self.classifies and not self._count):
            return None
        key = self._key
        cached = plan.gathering
        if cached is None or cached[0] is not plan.run or cached[1] != key:
            self._check_rows(plan)
            cached = plan.gathering = (plan.run, key, gathering_runner(self.model, plan, self._count, ()))
        return cached[2], self._extra

    def take_count(self) -> int | None:
        """The correct count the lane's steps added up (:meth:`lane_runner`), then zero; None for
        a loss that does not classify.

        Returns
        -------
        int or None
            The count.
        """
        if not self._count:
            return None
        count = int(self.totals[0])
        self.totals[0] = 0
        return count

    def metrics_added(self) -> bool:
        """Whether the last step's call added its batch to the tracker's accumulators (read once).

        Returns
        -------
        bool
            True once per step that did.
        """
        added, self.tracked = self.tracked, False
        return added

    def _check_rows(self, plan) -> None:
        """Refuse data whose rows are not the plan's (fit checks the data first: a bug if they are not)."""
        for name, whole, buf in (("X", self.x_all, plan.x), ("y", self.y_all, plan.y)):
            if whole.dtype != buf.dtype or whole.shape[1] != buf.size // buf.shape[0]:
                raise RuntimeError(
                    f"fit: the rows of {name} ({whole.shape[1]} values of {whole.dtype}) are not those of the "
                    f"step's batch ({buf.shape[1:]} of {buf.dtype}); pass data checked by model.check_data"
                )

    def correct_count(self, out, yb, lengths=None) -> int | None:
        """The last step's correct count: counted inside its call, else by ``model.correct_count``.

        Parameters
        ----------
        out, yb : numpy.ndarray
            The step's output and targets.
        lengths : numpy.ndarray, optional
            The batch's sequence lengths, for a model that leaves padded steps out (counted
            inside, the step's call read its own).

        Returns
        -------
        int or None
            The count; None for losses that do not classify.
        """
        if not self.counted:
            return self.model.correct_count(out, yb, lengths, checked=False) if self.classifies else None
        count = int(self.totals[0])
        self.totals[0] = 0
        return count

    def host_batch(self, xb, yb) -> tuple:
        """The step's batch on the host, for the fit loop's own reads (sequence lengths, metrics).

        Parameters
        ----------
        xb, yb : numpy.ndarray
            The batch the step got (host arrays here).

        Returns
        -------
        tuple of numpy.ndarray
            ``(xb, yb)`` themselves.
        """
        return xb, yb

    def host_output(self, out):
        """The step's outputs on the host, for the fit's metrics.

        Parameters
        ----------
        out : numpy.ndarray
            The step's outputs (a host array here).

        Returns
        -------
        numpy.ndarray
            ``out`` itself.
        """
        return out


#: the slot of a device step's scalars (``kernels.cuda._common.StepScalars``) its correct count takes
COUNT_SLOT = 2


def device_count_kernel(loss, device: str):
    """The device launcher counting ``loss``'s correct classifications inside a step (it takes
    ``into``): a plain built-in classification loss's; None where the count comes from Python (a
    subclass overriding ``correct_count``, sample weights) or there is none.

    Parameters
    ----------
    loss : fastnn.losses.Loss
        The model's loss.
    device : str
        The model's device (not "cpu").

    Returns
    -------
    callable or None
        ``accuracy_count`` or ``binary_accuracy_count`` of the device's kernels, or None.
    """
    name = losses.COUNT_KERNELS.get(type(loss).correct_count)
    if name is None or losses.base_of(loss) is not loss:
        return None
    return getattr(backend.kernels(device), name)


class DeviceStepFeed:
    """``fit`` on arrays on a device: each step's correct count and the outputs its metrics read
    come back with the step's one wait.

    The batch source arms the step plan with each batch (:meth:`arm`: the batch is already in the
    plan's device buffers, copied by the :class:`fastnn.training.BatchFeeder`, whose page-locked host
    rows of it are kept). ``Sequential.run_step`` then runs the plan's calls with, before its
    scalars' read, the loss's count launch queued into slot :data:`COUNT_SLOT` of those scalars (one
    more launch; its second stage joins the loss's and the norm's) and, when the fit reads outputs
    (``outputs``: metrics), a copy of the outputs into a page-locked host buffer queued on the
    default stream; the read (one launch, one copy, the step's one wait) covers both. The count
    is the one :meth:`fastnn.Sequential.correct_count` gives (the same kernels, a second stage summed
    in the same order), the outputs and targets the fit's metrics read are the device's values:
    results bit for bit as when read one by one. After the read the feeder knows its copies into the
    step's buffers are done (it does not wait for them again).

    Parameters
    ----------
    model : Sequential
        The compiled model being fit, on a device.
    feeder : fastnn.training.BatchFeeder
        The source's feeder.
    outputs : bool
        Copy each step's outputs to the host with its scalars (the fit has metrics).

    Examples
    --------
    >>> from fastnn._step_feed import DeviceStepFeed
    >>> feed = DeviceStepFeed(cuda_model, feeder, outputs=False)  # doctest: +SKIP
    >>> xb, yb = feeder.load(plan, 0, 32, None)  # doctest: +SKIP
    >>> feed.arm(plan)  # doctest: +SKIP
    >>> loss, out = cuda_model.run_step(xb, yb)  # doctest: +SKIP
    >>> feed.correct_count(out, yb)  # doctest: +SKIP
    """

    def __init__(self, model, feeder, outputs: bool):
        self.model, self.feeder, self.outputs = model, feeder, outputs
        self.plan = None  # the armed plan
        self.host: tuple | None = None  # (inputs, targets) on the host of the armed (then last) batch
        self.counted: int | None = None  # the last step's count, read with its scalars
        self.output = None  # the last step's outputs, copied to the host with its scalars

    def arm(self, plan) -> None:
        """Make the next :meth:`run` of ``plan`` count its batch and copy its outputs out with its
        scalars; the batch is the feeder's last loaded one (in ``plan.x``, ``plan.y``).

        Parameters
        ----------
        plan : _StepPlan
            The step plan of the batch's size.
        """
        plan.feed, self.plan = self, plan
        self.host, self.counted, self.output = self.feeder.host_batch, None, None

    def disarm(self) -> None:
        """Forget an armed step that did not run (fit left early).

        Examples
        --------
        >>> feed.disarm()  # doctest: +SKIP
        """
        if self.plan is not None:
            self.plan.feed = None
        self.plan = None

    def run(self, plan, xb, yb) -> tuple[float, float]:
        """(loss, gradient norm) of ``plan``'s call for the batch (xb, yb), its count and outputs
        read with its scalars when it is the plan's own buffers (else as ``plan.run`` takes it).

        Parameters
        ----------
        plan : _StepPlan
            The step plan.
        xb, yb : device arrays
            The batch ``run_step`` got.

        Returns
        -------
        tuple of float
            (loss, gradient norm).
        """
        self.plan, plan.feed = None, None
        self.counted = self.output = None
        scalars = plan.scalars
        if xb is not plan.x or yb is not plan.y or scalars is None or not _reads_scalars_last(plan.run, scalars):
            self.host = None
            result = plan.run(*plan.inputs(xb, yb))
            self.feeder.settled()
            return result
        kernel = device_count_kernel(self.model.loss, self.model.device)
        key = ("device", kernel, self.outputs)
        cached = plan.counting
        if cached is None or cached[0] is not plan.run or cached[1] != key:
            cached = plan.counting = (plan.run, key, self._runner(plan, kernel))
        host_out = self.feeder.pinned_output(plan.out) if self.outputs else None
        try:
            result = cached[2](*plan.inputs(xb, yb), *(() if host_out is None else (host_out,)))
        except BaseException:
            scalars.clear()  # (a reduction queued before the failure is not read with the next step)
            raise
        self.feeder.settled()  # the read waited for the step, after the batch's copies
        if kernel is not None:
            self.counted = int(scalars.host[COUNT_SLOT])
        self.output = host_out
        return result

    def _runner(self, plan, kernel) -> CallRunner:
        """``plan.run``'s calls with the count launch (into the scalars) and the queued output copy
        (to Given 0) before its last call, the scalars' read."""
        run, model = plan.run, self.model
        *calls, read = run.calls
        if kernel is not None:
            out, target, _ = model.loss_rows(plan.out, plan.y)
            masked = losses.count_tail(model.loss, plan.lengths, model.per_step)
            calls.append((functools.partial(kernel, into=(plan.scalars, COUNT_SLOT)), (out, target, *masked)))
        if self.outputs:
            calls.append((backend.copy_into, (Given(0), plan.out, backend.default_stream(model.device))))
        calls.append(read)
        return CallRunner(calls, returns=len(calls) - 1, slots=run.slots)

    def correct_count(self, out, yb, lengths=None) -> int | None:
        """The last step's correct count: read with its scalars, else by ``model.correct_count``.

        Parameters
        ----------
        out, yb : device arrays
            The step's output and targets.
        lengths : numpy.ndarray, optional
            The batch's sequence lengths, for a model that leaves padded steps out.

        Returns
        -------
        int or None
            The count; None for losses that do not classify.
        """
        if self.counted is not None:
            count, self.counted = self.counted, None
            return count
        if type(losses.base_of(self.model.loss)).correct_count is losses.Loss.correct_count:
            return None  # (a weighted regression loss: no labels to read back)
        return self.model.correct_count(out, yb, lengths, checked=False)

    def metrics_added(self) -> bool:
        """Whether the last step's call added its batch to the tracker's accumulators: never here
        (the fit's metrics run on the host, on :meth:`host_output` and :meth:`host_batch`).

        Returns
        -------
        bool
            False.
        """
        return False

    def host_batch(self, xb, yb) -> tuple:
        """The step's batch on the host: the feeder's page-locked rows of it (no copy back).

        Parameters
        ----------
        xb, yb : device arrays
            The batch the step got.

        Returns
        -------
        tuple
            ``(inputs, targets)`` on the host; ``(xb, yb)`` when the step did not run armed.
        """
        return (xb, yb) if self.host is None else self.host

    def host_output(self, out):
        """The step's outputs on the host: copied with its scalars when the feed was made with
        ``outputs``, else ``out`` as it is.

        Parameters
        ----------
        out : device array
            The step's outputs.

        Returns
        -------
        numpy.ndarray or device array
            The copy (valid until the next step), or ``out``.
        """
        return out if self.output is None else self.output


def _reads_scalars_last(run, scalars) -> bool:
    """Whether a device plan's runner ends with the read of ``scalars`` (its one wait)."""
    return bool(run.calls) and bool(run.calls[-1][1]) and run.calls[-1][1][0] is scalars
