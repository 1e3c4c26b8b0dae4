"""``fit`` on shuffled in-memory arrays: each step's batch gathered, and its correct classifications
counted, inside the step plan's own call into compiled code (:mod:`fastnn.kernels.step_feed`).

Per fit, a :class:`StepFeed` holds the whole data set (each sample flattened to a row), the epoch's
order and a one-element count. For a step, the batch source arms the plan with the batch's rows
(:meth:`StepFeed.arm`) and hands on the plan's own buffers as the batch; ``Sequential.run_step``
then runs the plan's *gathering* runner: the gather kernel first (rows ``order[lo:hi]`` into the
plan's ``x`` and ``y``), then the plan's calls as ``train_step`` runs them (forward, loss, backward,
norm and the optimizer's update), then the loss's count kernel added to the count. The data set,
order, rows and count are :class:`fastnn._fused.Given` arguments, so one runner per plan serves
every fit and tiers up (fuses) as the plan's own does; unfused (``FASTNN_FUSE=never``) the same
calls run one by one. The results are those of the Python-side gather (``np.take``) and count, bit
for bit: a copy, and the same count kernel.
"""

from __future__ import annotations

import numpy as np

from . import losses
from ._fused import CallRunner, Given, Result
from .kernels import losses as loss_kernels
from .kernels.step_feed import add_to_total, gather_batch

#: the count kernel of each built-in ``Loss.correct_count`` (a subclass overriding it counts in Python)
_COUNT_KERNELS = {
    losses.CrossEntropy.correct_count: loss_kernels.accuracy_count,
    losses.BinaryCrossEntropy.correct_count: loss_kernels.binary_accuracy_count,
}


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


def gathering_runner(model, plan, count: bool) -> CallRunner:
    """The runner of ``plan``'s calls with the gather kernel before them and, with ``count``, the
    loss's count kernel after them: arguments ``(x_all, y_all, order, lo, hi)``, then ``totals``
    with ``count``; returns
    (loss, gradient norm) as ``plan.run`` does.

    Parameters
    ----------
    model : Sequential
        The plan's model.
    plan : _StepPlan
        A step plan of the model, its ``run`` built.
    count : bool
        Add the correct count of the batch to ``totals[0]`` (the loss has a count kernel).

    Returns
    -------
    CallRunner
        The runner (it tiers up on its own).
    """
    run = plan.run
    m = plan.x.shape[0]
    gather = (gather_batch, (*(Given(i) for i in range(5)), plan.x.reshape(m, -1), plan.y.reshape(m, -1)))
    calls = [gather, *_shifted(run.calls, 1)]
    if count:
        out, target, _ = model.loss_rows(plan.out, plan.y)
        calls.append((count_kernel(model.loss), (out, target)))
        calls.append((add_to_total, (Result(len(calls) - 1), Given(5))))
    returns = tuple(i + 1 for i in run.returns)
    return CallRunner(calls, returns=returns)


def counting_runner(model, plan) -> CallRunner:
    """The runner of ``plan``'s calls on a batch read in place (its slots, or copied into its
    buffers) with the loss's count kernel after them, added to ``totals[0]``: arguments as
    ``plan.run``'s, then ``totals``; returns (loss, gradient norm) as ``plan.run`` does.

    Parameters
    ----------
    model : Sequential
        The plan's model (its loss has a count kernel: :func:`count_kernel`).
    plan : _StepPlan
        A step plan of the model, its ``run`` built.

    Returns
    -------
    CallRunner
        The runner (it tiers up on its own).
    """
    run = plan.run
    out, target, _ = model.loss_rows(plan.out, plan.y)
    calls = [*run.calls, (count_kernel(model.loss), (out, target))]
    calls.append((add_to_total, (Result(len(calls) - 1), Given(0))))
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

    def __init__(self, model, X: np.ndarray, y: np.ndarray, order: np.ndarray | None, count: bool):
        self.model = model
        self.x_all, self.y_all = X.reshape(X.shape[0], -1), y.reshape(y.shape[0], -1)
        self.order = order
        self.count = count
        self.totals = np.zeros(1, np.int64)
        self.rows: tuple[int, int] | None = None  # (lo, hi) of the armed step
        self.plan = None  # the armed plan
        self.counted = False  # the last step's count is in totals
        self.classifies = True  # the loss counts correct classifications (False: its count is None)

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
        counts = type(self.model.loss).correct_count
        base_counts = type(losses.base_of(self.model.loss)).correct_count  # (a weighted MSE counts nothing)
        self.counted = False
        self.classifies = counts is not losses.Loss.correct_count and base_counts is not losses.Loss.correct_count
        if rows is None and self.count and counts_inside(self.model.loss):  # the batch as given, counted inside
            cached = plan.counting
            if cached is None or cached[0] is not plan.run:
                cached = plan.counting = (plan.run, counting_runner(self.model, plan))
            result = cached[1](*plan.inputs(xb, yb), self.totals)
            self.counted = True
            return result
        if rows is None or xb is not plan.x or yb is not plan.y:
            return plan.run(*plan.inputs(xb, yb))
        count = self.count and counts_inside(self.model.loss)
        cached = plan.gathering
        if cached is None or cached[0] is not plan.run or cached[1] != count:
            self._check_rows(plan)
            cached = plan.gathering = (plan.run, count, gathering_runner(self.model, plan, count))
        totals = (self.totals,) if count else ()  # (the runner takes it only when it counts)
        result = cached[2](self.x_all, self.y_all, self.order, rows[0], rows[1], *totals)
        self.counted = count
        return result

    def _check_rows(self, plan) -> None:
        """Refuse data whose rows are not the plan's (fit checks the data first: a bug if they are not)."""
        for name, whole, buf in (("X", self.x_all, plan.x), ("y", self.y_all, plan.y)):
            if whole.dtype != buf.dtype or whole.shape[1] != buf.size // buf.shape[0]:
                raise RuntimeError(
                    f"fit: the rows of {name} ({whole.shape[1]} values of {whole.dtype}) are not those of the "
                    f"step's batch ({buf.shape[1:]} of {buf.dtype}); pass data checked by model.check_data"
                )

    def correct_count(self, out, yb) -> int | None:
        """The last step's correct count: counted inside its call, else by ``model.correct_count``.

        Parameters
        ----------
        out, yb : numpy.ndarray
            The step's output and targets.

        Returns
        -------
        int or None
            The count; None for losses that do not classify.
        """
        if not self.counted:
            return self.model.correct_count(out, yb) if self.classifies else None
        count = int(self.totals[0])
        self.totals[0] = 0
        return count
