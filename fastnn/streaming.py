"""``fit`` on data that is not one in-memory array (Keras-compatible):

- a :class:`fastnn.data.ArrayDataset` (in-memory or memory-mapped arrays, or a raw file mapped a
  block at a time; sample weights optional): batches of ``batch_size`` in an order shuffled by
  block, ``steps_per_epoch`` optional (at most the batches of one pass); exact resume mid-epoch,
  as for arrays; ``validation_split`` holds out its last rows;
- a callable returning a fresh iterator of (X, y) or (X, y, sample_weight) batches per epoch, or
  a re-iterable (a list of batches, any object whose ``iter()`` is new each time): an epoch ends
  when it is exhausted, or after ``steps_per_epoch`` batches; on resume, the batches an
  interrupted epoch trained on are skipped (exact when the callable gives the same batches again);
- an iterator or generator (``iter(g) is g``): one stream shared by all epochs, so
  ``steps_per_epoch`` is required (it may be endless); if it runs out, training stops with a
  warning (Keras does the same). On resume it continues where it stands: the batches a stopped fit
  took but did not train on come first, and the epoch keeps its ``steps_per_epoch`` batches.

``batch_size`` and ``shuffle`` apply to datasets only (batches of iterables are used as they
come). Each batch is checked at the boundary like fit's arrays; errors name the batch and epoch.
``class_weight`` weights each batch by its labels; ``sample_weight=`` is for arrays (a dataset
carries its own, batches may come with theirs). Validation data may be (X_val, y_val[, w_val]), an
ArrayDataset or a re-iterable/callable of batches (:func:`validation`). The epochs themselves run
in :func:`fastnn.training.fit`'s loop, the same for arrays and streams: metrics, callbacks, the
progress bar, Ctrl-C, the training state (cursor, epochs) and ``accumulate`` work alike.
"""

from __future__ import annotations

import collections
import warnings
import weakref
from collections.abc import Iterable, Iterator

import numpy as np

from . import _fit_options as options
from . import _validation as V
from . import metrics as metrics_mod
from .datasets import ArrayDataset, EpochOrder
from .layers.sequence import TimeDistributed

STREAM_FINGERPRINT = "stream"


def is_stream(X) -> bool:
    """True for the data this module trains on: an ArrayDataset, a callable or an iterable that
    is not an array (nor a list of numbers: a list whose first item is a 2- or 3-tuple of batches is)."""
    if isinstance(X, ArrayDataset) or (callable(X) and not hasattr(X, "__array__")):
        return True
    if isinstance(X, np.ndarray) or hasattr(X, "__array__") or isinstance(X, (str, bytes)):
        return False
    if isinstance(X, Iterator):
        return True
    if isinstance(X, (list, tuple)):
        return bool(X) and isinstance(X[0], tuple) and len(X[0]) in (2, 3) and np.ndim(X[0][0]) >= 1
    return isinstance(X, Iterable)


def check_array_fit(y, steps_per_epoch) -> None:
    """fit on arrays: y is required, steps_per_epoch is not for them."""
    if y is None:
        raise ValueError(
            "fit(X, y): y is missing. Pass targets with X (one per sample), or pass X as a "
            "fastnn.data.ArrayDataset(X, y) or an iterable/callable of (X, y) batches"
        )
    if steps_per_epoch is not None:
        raise ValueError(
            "steps_per_epoch applies to datasets, iterables and generators; with arrays an epoch is "
            "one pass over X: leave steps_per_epoch=None, or wrap the arrays: "
            "fit(fastnn.data.ArrayDataset(X, y), steps_per_epoch=...)"
        )


def _check_steps(steps_per_epoch):
    if steps_per_epoch is None:
        return None
    if isinstance(steps_per_epoch, bool) or not isinstance(steps_per_epoch, (int, np.integer)):
        raise TypeError(
            f"steps_per_epoch must be a positive integer (batches per epoch) or None, got "
            f"{type(steps_per_epoch).__name__} {steps_per_epoch!r}"
        )
    return V.check_int(steps_per_epoch, "steps_per_epoch", minimum=1)


def _rows_per_sample(layers, rows: int = 1):
    """(layer, rows) of every layer of ``layers`` and, depth first, of the layers inside them:
    ``rows`` is how many rows of the layer's batch one sample of the model's batch makes (a layer
    inside :class:`TimeDistributed` runs on batch * time rows; a nested one multiplies again)."""
    for layer in layers:
        yield layer, rows
        inner = rows
        if isinstance(layer, TimeDistributed) and layer.input_shape is not None:
            inner = rows * layer.input_shape[0]
        yield from _rows_per_sample([child for _, child in layer.sublayers()], inner)


def needs_two(model):
    """The first layer of ``model`` that needs more than one sample per training batch *now*, or
    None: a BatchNorm that is not frozen and has one value per channel in a sample
    (``needs_batch_over_one``: one position) and not more rows per sample either (a BatchNorm inside
    ``TimeDistributed`` over more than one step sees batch * time rows, so a batch of one sample has
    ``time`` values per channel and trains, as in torch; with padded steps the layer takes the
    valid ones, Keras' masked BatchNormalization)."""
    return next(
        (
            layer
            for layer, rows in _rows_per_sample(model.layers)
            if rows == 1 and getattr(layer, "needs_batch_over_one", False)
        ),
        None,
    )


def batch_plan(model, n: int, batch_size: int, shuffle: bool, warn: bool = True) -> V.BatchPlan:
    """The batches of an epoch of ``n`` samples (``V.check_batch_plan``: no last batch of one for
    batch norm), its note warned about (``warn``)."""
    norm = needs_two(model)
    plan = V.check_batch_plan(
        n, batch_size, needs_batch_over_one=norm is not None, shuffle=shuffle, layer_name=repr(norm)
    )
    if plan.note and warn:
        warnings.warn(plan.note, stacklevel=6)  # (the caller of Sequential.fit)
    return plan


def replan(model, n: int, batch_size: int, shuffle: bool, samples: int, epoch: int) -> V.BatchPlan:
    """The plan of epoch ``epoch`` for the layers' trainability at its start (fit calls it after
    ``on_epoch_begin``): a BatchNorm a callback unfroze since the fit began cannot train on a last
    batch of one, so from this epoch on that sample is skipped, as in a fit where it was trainable
    from the start (and warned about once); one frozen since trains on every sample again.
    ``samples``: the samples the previous epoch used."""
    plan = batch_plan(model, n, batch_size, shuffle, warn=False)
    if plan.note and plan.samples != samples:
        warnings.warn(f"from epoch {epoch + 1} on: {plan.note}", stacklevel=6)  # (the caller of Sequential.fit)
    return plan


def skips_last_one(source, epoch: int, b: int, rows: int, last: bool) -> bool:
    """Whether batch ``b`` of ``source``'s epoch ``epoch`` (fit's arrays or a dataset's batches), of
    ``rows`` samples, is skipped: it is the last batch of the pass (``last``), has one sample, and
    a layer cannot train on it with the layers' trainability now (:func:`needs_two`). The source
    asks before ``on_batch_begin`` (a batch skipped then gets neither it nor ``on_batch_end``, as
    Keras pairs them) and again after it, so a BatchNorm a callback unfroze there skips the batch
    instead of failing (that batch's ``on_batch_begin`` then has no ``on_batch_end``). A skip that the epoch's
    plan did not announce (the layer was made trainable during the epoch) is warned about, once:
    ``source.planned`` (the samples the epoch is known to train on) then leaves that sample out,
    and :func:`replan` says nothing more while the layer stays trainable."""
    if rows != 1 or not last:
        return False
    norm = needs_two(source.model)
    if norm is None:
        return False
    if source.planned == source.n_used:  # the plan counted on this sample: say why it is not trained on
        plan = batch_plan(source.model, source.n_used, source.batch_size, source.shuffle, warn=False)
        warnings.warn(
            f"epoch {epoch + 1}: {norm!r} became trainable during the epoch (a callback unfroze it); {plan.note}",
            stacklevel=6,  # (the caller of Sequential.fit)
        )
        source.planned = plan.samples
    return True


def checked_batch(model, item, where: str):
    """(xb, yb, wb) of the batch ``item`` ((X, y) or (X, y, sample_weight)) checked and converted
    like fit's arrays (wb float64 (m,), or per step (m, time) for a per-step output, or None);
    errors start with ``where`` (which batch)."""
    if not isinstance(item, (tuple, list)) or len(item) not in (2, 3):
        raise TypeError(
            f"{where}: each item of the data must be a pair (X_batch, y_batch) or a triple "
            f"(X_batch, y_batch, sample_weight_batch), got {type(item).__name__}"
            + (f" of length {len(item)}" if hasattr(item, "__len__") else "")
        )
    try:
        xb, yb = model.check_data(item[0], item[1], argument="X_batch")
        wb = None
        if len(item) == 3 and item[2] is not None:
            wb = options.check_sample_weight(item[2], xb.shape[0], "sample_weight_batch", model)
    except (TypeError, ValueError) as exc:
        raise type(exc)(f"{where}: {exc}") from None
    if xb.shape[0] == 0:
        raise ValueError(f"{where} is empty (0 samples); every batch needs at least one sample")
    return xb, yb, wb


class _DatasetBatches:
    """Batches of an ArrayDataset: positions [b * batch_size, ...) of each epoch's block order."""

    exhausted = None

    def __init__(self, model, dataset: ArrayDataset, batch_size: int, shuffle: bool, steps, class_weight):
        self.model, self.dataset, self.shuffle = model, dataset, shuffle
        model.check_data(*dataset.block(0)[:2])  # builds the model from the data's shape if needed
        self.weights = None
        if dataset.sample_weight is not None or class_weight is not None:
            self.weights = options.BatchWeights(model, class_weight)
        self.weighted = self.weights is not None
        plan = batch_plan(model, len(dataset), batch_size, shuffle)
        # every batch of the pass is offered: whether a last batch of one trains is decided right
        # before its step (skips_last_one); ``planned``: the samples the epoch's plan trains on
        self.batch_size, self.n_used, self.planned = plan.batch_size, len(dataset), plan.samples
        self.batches = -(-self.n_used // self.batch_size)
        if steps is not None and steps > self.batches:
            raise ValueError(
                f"steps_per_epoch={steps} is more than the {self.batches} batches of {self.batch_size} "
                f"in this dataset of {len(dataset)} samples; pass at most {self.batches} (or None)"
            )
        self.requested_steps = steps
        self.steps = self.batches if steps is None else steps
        self.fingerprint = dataset.fingerprint()

    @property
    def trained_steps(self) -> int:
        """The steps the epoch's plan expects: ``steps`` less a last batch of one it skips."""
        return self.steps - (self.planned < self.n_used and self.steps == self.batches)

    def replan(self, epoch: int) -> None:
        """The epoch's plan for the layers' trainability now (:func:`replan`): which samples it
        is expected to train on (its batches stay; a last batch of one is decided at its step)."""
        self.planned = replan(self.model, self.n_used, self.batch_size, self.shuffle, self.planned, epoch).samples

    def _block(self, *block):
        """A block's (x, y) as trained on: checked, its weights in y's last column when weighted."""
        x, y, w = checked_batch(self.model, block, "a block of the dataset")
        return x, y if self.weights is None else self.weights.targets(y, w)

    def epoch(self, epoch: int, start: int, batches: int | None = 0, begin=None):
        """(b, xb, yb) of each batch b of ``epoch`` after the first ``start`` samples (``batches``
        unused: ``start`` places the epoch's rows); ``begin(b)`` (fit's ``on_batch_begin``) runs
        before each batch is read, and a last batch of one is then kept or skipped (:func:`skips_last_one`)."""
        model = self.model
        order = EpochOrder(self.dataset, model.seed, epoch, self.shuffle, self._block)
        trailing, y_dtype = model.target_shape()
        for b in range(self.steps):
            lo, hi = max(b * self.batch_size, start), min(self.n_used, (b + 1) * self.batch_size)
            if lo >= hi:
                continue
            last = b == self.batches - 1
            if skips_last_one(self, epoch, b, hi - lo, last):
                continue  # (a batch skipped as planned: no on_batch_begin, no on_batch_end)
            if begin is not None:
                begin(b)
                if skips_last_one(self, epoch, b, hi - lo, last):
                    continue  # (the hook unfroze a BatchNorm that cannot train on it: warned)
            plan = model.step_plan(hi - lo) if model.device == "cpu" else None
            if plan is not None:  # gathered straight into the step's buffers
                xb, yb = plan.x, plan.y
            else:  # host rows, copied in by the step (a device model, or layers without plans)
                xb = np.empty((hi - lo, *model.input_shape), model.input_dtype)
                yb = np.empty((hi - lo, *trailing), y_dtype)
            order.gather(lo, hi, xb, yb)
            yield b, xb, yb

    def committed(self) -> None:
        pass

    def close(self) -> None:
        pass


_UNDECIDED = object()


# {one-shot iterator: its items taken by a fit that stopped before their steps committed}: the
# next fit on the same iterator takes them first, so it resumes exactly where the stream stood
_GIVEN_BACK: weakref.WeakKeyDictionary[Iterator, list] = weakref.WeakKeyDictionary()
# (iterators that take no weak reference keep the items here, by id, while they live)
_GIVEN_BACK_BY_ID: dict[int, tuple[Iterator, list]] = {}


def _give_back(stream: Iterator, items: list) -> None:
    try:
        _GIVEN_BACK[stream] = items
    except TypeError:  # no weak references to it
        _GIVEN_BACK_BY_ID[id(stream)] = (stream, items)


def _given_back(stream: Iterator) -> list:
    try:
        return _GIVEN_BACK.pop(stream, [])
    except TypeError:
        kept = _GIVEN_BACK_BY_ID.pop(id(stream), None)
        return [] if kept is None or kept[0] is not stream else kept[1]


class _IterableBatches:
    """Batches from a callable (a fresh iterator per epoch), a re-iterable or a one-shot iterator.
    Weighted (the loss's targets carry a weight column) when ``class_weight`` is given or the
    first batch has sample weights; then a batch without weights weighs 1 per sample.

    A one-shot iterator cannot replay batches: those it gave whose steps did not commit (an
    interrupt, an error) are kept for the next fit on it (:func:`_give_back`), and a resumed
    epoch counts on from the batches it had done."""

    def __init__(self, model, data, steps, class_weight):
        self.model, self.data, self.steps = model, data, steps
        self.restartable = not isinstance(data, Iterator)
        if not self.restartable and steps is None:
            raise ValueError(
                f"X is an iterator ({type(data).__name__}): it cannot restart each epoch and may be "
                f"endless, so fit needs steps_per_epoch=... (batches per epoch). Or pass a callable "
                f"returning a fresh iterator per epoch, a list of (X, y) batches, or a "
                f"fastnn.data.ArrayDataset"
            )
        self.fingerprint = STREAM_FINGERPRINT
        self.stream = data if not self.restartable else None
        # the stream's items taken since the last commit, and those a stopped fit gave back
        self.uncommitted: list = []
        self.replay = collections.deque(_given_back(data) if self.stream is not None else ())
        self.exhausted = None
        self.first = None  # the batch taken to build the model, given back as the first batch
        self.weights, self.class_weight = _UNDECIDED, class_weight  # (the first batch decides, in _next)
        item = self._next(self._fresh(), 0, 0)
        if item is None:
            raise ValueError("the training data yielded no batches")
        self.first = item
        self.batch_size = item[0].shape[0]

    @property
    def weighted(self) -> bool:
        return self.weights is not None

    def _fresh(self):
        if self.stream is not None:
            return self.stream
        it = self.data() if callable(self.data) else iter(self.data)
        if not isinstance(it, Iterator):
            it = iter(it)
        self.iterator = it
        return it

    def _take(self, it):
        """The next item of ``it`` (a stream: items given back first, each kept until a commit)."""
        if self.stream is None:
            return next(it)
        item = self.replay.popleft() if self.replay else next(it)
        self.uncommitted.append(item)
        return item

    def _next(self, it, b, epoch):
        try:
            item = self._take(it)
        except StopIteration:
            return None
        xb, yb, wb = checked_batch(self.model, item, f"batch {b} of epoch {epoch + 1}")
        if self.weights is _UNDECIDED:  # the first batch: weighted if it has weights, or class weights
            self.weights = (
                None
                if wb is None and self.class_weight is None
                else options.BatchWeights(self.model, self.class_weight)
            )
        if self.weights is not None:
            return xb, self.weights.targets(yb, wb)
        if wb is not None:
            raise ValueError(
                f"batch {b} of epoch {epoch + 1} has sample weights but the first batch had none: "
                f"give every batch weights (X, y, w), or none"
            )
        return xb, yb

    def epoch(self, epoch: int, start: int, batches: int | None = 0, begin=None):
        """(b, xb, yb) of each batch b of ``epoch`` after the first ``start`` samples (``batches``
        batches): a restartable source skips them, a stream goes on from batch ``batches``;
        ``begin(b)`` (fit's ``on_batch_begin``) runs before each batch is given (batches are used
        as they come: none is skipped)."""
        it = self.iterator if self.first is not None and self.stream is None else self._fresh()
        done, b = 0, 0
        if self.stream is not None and start:  # the stream stands after them: the epoch counts on
            b = batches if batches is not None else -(-start // self.batch_size)
        while self.steps is None or b < self.steps:
            if self.first is not None:
                batch, self.first = self.first, None
            else:
                batch = self._next(it, b, epoch)
            if batch is None:
                if self.stream is not None or (self.steps is not None and b < self.steps):
                    self.exhausted = (epoch, b)
                return
            b += 1
            if self.restartable and done < start:  # resuming: this batch was trained on before the interrupt
                done += batch[0].shape[0]
                continue
            if begin is not None:
                begin(b - 1)
            yield (b - 1, *batch)

    def replan(self, epoch: int) -> None:
        """Nothing to plan: batches are used as they come."""

    def committed(self) -> None:
        """The items taken so far were trained on for good."""
        self.uncommitted.clear()

    def close(self) -> None:
        """Give the stream's items not trained on for good back to the next fit on it."""
        if self.stream is not None and (self.uncommitted or self.replay):
            _give_back(self.stream, [*self.uncommitted, *self.replay])
        self.uncommitted, self.replay = [], collections.deque()


def open_stream(
    model,
    data,
    y,
    *,
    batch_size,
    shuffle,
    steps_per_epoch,
    validation_split,
    validation_data,
    sample_weight,
    class_weight,
):
    """(batch source, validation) of fit on a dataset or on batches (this module's docstring) for
    :func:`fastnn.training.fit`'s loop; the other arguments were checked there."""
    if y is not None:
        raise ValueError(
            f"y must be None when X is a {type(data).__name__}: the targets come with the data "
            f"(ArrayDataset(X, y), or (X, y) batches)"
        )
    if sample_weight is not None:
        raise ValueError(
            f"sample_weight=... is for arrays X, y; with a {type(data).__name__} the weights come with "
            f"the data: fastnn.data.ArrayDataset(X, y, sample_weight=w), or (X, y, w) batches"
        )
    steps = _check_steps(steps_per_epoch)
    if isinstance(data, ArrayDataset):
        if validation_split:
            at = options.split_point(validation_split, len(data))
            data, validation_data = data.rows(0, at), data.rows(at, len(data))
        source = _DatasetBatches(model, data, batch_size, shuffle, steps, class_weight)
    else:
        if validation_split:
            raise ValueError(
                f"validation_split needs data whose last samples can be held out: arrays or a "
                f"fastnn.data.ArrayDataset, not a {type(data).__name__} of batches (Keras refuses it "
                f"too); pass validation_data=(X_val, y_val) or a callable of validation batches"
            )
        source = _IterableBatches(model, data, steps, class_weight)
    return source, validation(model, validation_data)


def validation(model, data, once=False):
    """A function giving the validation logs (loss, accuracy, compiled metrics) of ``data``:
    (X_val, y_val) or (X_val, y_val, w_val) arrays (``model.validate``), an ArrayDataset or a
    re-iterable/callable of (X, y[, w]) batches (one pass over its batches: the loss and metrics
    of all its samples together, as for arrays); None for None. ``once``: the function runs once
    (``evaluate``), so a one-shot iterator of batches is taken too."""
    if data is None:
        return None
    if isinstance(data, (tuple, list)) and not is_stream(data):
        X_val, y_val, w_val = options.check_validation_data(model, data)

        def on_arrays():
            return model.validate(X_val, y_val, sample_weight=w_val)

        on_arrays.arrays = (X_val, y_val, w_val)  # fastnn.distributed evaluates a shard of the rows
        return on_arrays
    if (isinstance(data, Iterator) and not once) or not is_stream(data):
        raise ValueError(options.VALIDATION_DATA_FORMS)

    def batches():
        if isinstance(data, ArrayDataset):
            return (data.block(j) for j in range(data.blocks))
        return data() if callable(data) else iter(data)

    def evaluation(mine=lambda b: True):  # fastnn.distributed: each rank evaluates its batches
        evaluation = metrics_mod.Evaluation(model)
        for b, item in enumerate(batches()):
            if not mine(b):
                continue
            xb, yb, wb = checked_batch(model, item, f"validation batch {b}")
            with model.lock:  # (the loss's reduction scratch is the model's)
                evaluation.update(model.predict(xb), yb, wb, model.output_lengths(xb))
        return evaluation

    def run():
        return evaluation().results()

    run.evaluation = evaluation
    return run
