"""Sequential: a stack of layers over one flat parameter buffer, and the engine API (forward,
backward, step plans, loss_and_grads, validate, snapshot/restore) that the training loop
(:mod:`fastnn.training`), diagnostics and serialization use."""

from __future__ import annotations

import contextlib
import copy
import functools
import inspect
import io
import math
import os
import threading
import warnings
import zipfile
from collections.abc import Callable

import numpy as np
from numpy.typing import ArrayLike

from . import _conv_pool_fusion as conv_pool_fusion
from . import _copies as copies
from . import _dense_chain as dense_chain
from . import _fit_options as fit_options
from . import _inference as inference
from . import _norm_fusion as norm_fusion
from . import _validation as V
from . import backend, freezing
from . import losses as losses_mod
from . import metrics as metrics_mod
from . import optim as optim_mod
from . import training as training_mod
from ._fused import CallRunner, Result, rebindable
from ._ownership import PartsPickling
from .accumulation import GroupSum
from .kernels.checks import all_finite, all_finite_pair, labels_in_range, loss_if_finite
from .kernels.masking import valid_rows as count_valid_rows
from .kernels.sparse_update import norm_tasks
from .layers import layer_from_config, layer_to_config, using_layer_classes
from .layers.base import (
    Context,
    Layer,
    Workspace,
    flat_rows,
    keep_as_tag,
    misnamed_attribute,
    new_attribute_from_outside,
    normalize_shape,
    shape_str,
    size_of,
    user_tags,
    walk_layers,
    width_mismatch,
)

_PREDICT_BATCH = 1024
# On a device, predict/evaluate pass as many rows at once as keep the widest activation under this:
# a pass there costs its launches, copies and syncs whatever its rows (1.5 ms for a 3-layer MLP on
# an H200, 1024 or 4096 rows alike, session 18), so 1024-row passes made batched predict 4x slower.
_DEVICE_PASS_BYTES = 256 << 20
#: the pinned host bytes (rows in and outputs out) of the passes of a device predict/evaluate that
#: wait for the device once together (a wave); each wave has at least one pass. Waiting once per
#: pass cost a wait per ``batch_size`` rows (Sequential._device_predict). The staging keeps these
#: buffers for the model's next calls, so the cap is what a model may pin for good: 64 MiB is ~3 ms
#: of copying at PCIe speed per wave, where one more wait costs microseconds
DEVICE_WAVE_BYTES = 64 << 20
_MAX_PLANS = 8


class _LazyText:
    """A string computed only when formatted (error messages on the hot path cost nothing)."""

    __slots__ = ("make",)

    def __init__(self, make):
        self.make = make

    def __str__(self) -> str:
        return self.make()

    def __format__(self, spec: str) -> str:
        return format(self.make(), spec)


class _LayerList(list):
    """The model's layers: a list that refuses changes (a built model's buffers and plans follow
    its layers; a changed list would be silently ignored)."""

    def _refuse(self, *args, **kwargs):
        raise TypeError(
            "a Sequential's layers are fixed when it is built (its parameters and step plans "
            "follow them); build a new model, e.g. fnn.Sequential([...new layers...]), or "
            "copy.deepcopy(model) first to keep the trained one"
        )

    append = extend = insert = remove = pop = clear = sort = reverse = _refuse
    __setitem__ = __delitem__ = __iadd__ = __imul__ = _refuse

    def __reduce_ex__(self, protocol):
        # a copy of the list alone (copy.deepcopy, pickle; Python's rebuilds a list by appending): a
        # plain list of the copied layers, each free of any model, as Keras's model.layers is a new
        # list; inside a copy of its model (a subclass's self.blocks = self.layers) it is the copy's
        # own list (fastnn._copies.anchors)
        return (list, (list(self),))


class _StepPlan:
    """The kernel calls of one training step at one batch size, on fixed buffers: the input
    and target buffers are filled, then forward calls, the loss kernel, backward calls and the
    gradient norm run (``run()`` returns (loss, gradient norm)), then, when the optimizer can
    (``token`` not None: ``Optimizer.fused_step_token``), its update, armed per step by
    ``Optimizer.begin_fused_step``. ``lengths``: the sequence lengths buffer the loss reads (its
    padded steps left out), None when no lengths reach the output."""

    __slots__ = (
        "accumulator",
        "backward",
        "calls",
        "checks_batch",
        "contexts",
        "counting",
        "feed",
        "forward",
        "gathering",
        "lengths",
        "loss_args",
        "loss_fn",
        "out",
        "run",
        "scalars",
        "staging",
        "token",
        "x",
        "y",
    )

    def __init__(
        self, x, y, out, forward, loss_call, backward, norm_call, contexts, lengths=None, scalars=None, staging=None
    ):
        self.x, self.y, self.out, self.forward, self.backward = x, y, out, forward, backward
        self.lengths = lengths
        self.loss_fn, self.loss_args = loss_call
        self.contexts = contexts
        self.calls = [*forward, loss_call, *backward, norm_call]
        # on a device: the loss and norm finished by one launch and read by one copy (_read_scalars),
        # the batch copied in through pinned buffers (backend.Staging)
        self.scalars, self.staging = scalars, staging
        self.run, self.token, self.accumulator = None, None, None
        self.checks_batch = False  # whether run() checks the batch is finite (see _checkable_batch)
        self.feed = self.gathering = None  # fit's fastnn._step_feed: armed for a step; its runner of this plan
        self.counting = None  # fastnn._step_feed's runner of this plan that counts the batch read in place

    def with_optimizer(self, optimizer, token, accumulator=None) -> _StepPlan:
        """This plan with ``accumulator``'s gradient sum (``fastnn.accumulation.GroupSum``; none for
        None) after the gradient norm, then ``optimizer``'s update on the norm it hands on (none for
        a None ``token``); ``run`` is rebuilt when ``token`` or ``accumulator`` is not the one it was
        built with."""
        if self.run is None or token is not self.token or accumulator is not self.accumulator:
            calls = self.calls
            returns = (len(self.forward), len(calls) - 1)
            norm = Result(returns[1])
            if accumulator is not None:
                calls = [*calls, accumulator.call(norm)]
                norm = Result(len(calls) - 1)
            self.checks_batch = token is not None and _checkable_batch(self.x, self.y)
            if self.checks_batch:  # the batch checked inside the step, the loss NaN (not applied) if not finite
                calls = [*calls, (loss_if_finite, (flat_rows(self.x), self.y, Result(returns[0])))]
                returns = (len(calls) - 1, returns[1])
            if token is not None:
                calls = [*calls, optimizer.fused_step_call(Result(returns[0]), norm)]
                rows_call = optimizer.fused_rows_call(Result(len(calls) - 1))
                if rows_call is not None:  # Embedding(sparse=True): its touched rows step after
                    calls = [*calls, rows_call]
            slots = (self.x, self.y) if rebindable(calls, self.x) and rebindable(calls, self.y) else ()
            if self.scalars is not None:  # a device's plan (no fused update, no accumulation there)
                if token is not None or accumulator is not None:
                    raise RuntimeError("a device step plan cannot run an optimizer's fused update or accumulate")
                calls = [*calls, (_read_scalars, (self.scalars, self.staging, Result(returns[0]), Result(returns[1])))]
                returns = len(calls) - 1  # type: ignore[assignment]
            self.run, self.token = CallRunner(calls, returns=returns, slots=slots), token
            self.accumulator = accumulator
        return self

    def inputs(self, xb, yb) -> tuple:
        """The arrays to pass to ``run`` for the batch (xb, yb): themselves, read in place, when the
        plan can (C-contiguous host arrays of its dtypes), else copied into the plan's buffers."""
        if not self.run.slots:
            for buf, batch, role in ((self.x, xb, "x"), (self.y, yb, "y")):
                if batch is buf:
                    continue
                if self.staging is not None and isinstance(batch, np.ndarray):  # a queued copy from pinned memory
                    self.staging.upload(buf, batch, role)
                else:
                    backend.copy_into(buf, batch)
            return ()
        return _in_place(self.x, xb), _in_place(self.y, yb)


#: step plans whose batch (inputs and targets) holds at most this many values check that it is
#: finite inside their compiled call (well under a microsecond there), so that train_step's fast
#: lane crosses into compiled code once per step instead of twice (~0.5 us a crossing)
CHECKED_BATCH_VALUES = 4096


def _read_scalars(scalars, staging, loss, norm) -> tuple[float, float]:
    """A device step's (loss, norm): the values its deferred reductions left in ``scalars`` (one
    launch, one copy, which waits for the step), or ``loss``/``norm`` where a call returned its
    value itself (a loss of the user's, say). The staged input copies are done after that wait."""
    values = scalars.read()
    if staging is not None:
        staging.settled()
    return (float(values[0]) if loss is None else loss), (float(values[1]) if norm is None else norm)


def _deferred(call: tuple, scalars, slot: int) -> tuple:
    """``call`` with its reduction's second stage left to ``scalars`` (slot ``slot``) when its
    kernel can (a CUDA launcher with an ``into`` argument), else ``call`` itself."""
    fn, args = call
    try:
        takes = "into" in inspect.signature(fn).parameters
    except (TypeError, ValueError):  # a callable without a signature: run as it is
        takes = False
    return (functools.partial(fn, into=(scalars, slot)), args) if takes else call


def _checkable_batch(x: np.ndarray, y: np.ndarray) -> bool:
    """Whether a step plan on batch buffers (x, y) checks them inside its call: small, floating
    inputs and 2-D floating targets (labels are checked by their loss, in Python)."""
    return x.dtype.kind == "f" and y.dtype.kind == "f" and y.ndim == 2 and x.size + y.size <= CHECKED_BATCH_VALUES


def _in_place(buf: np.ndarray, batch: np.ndarray) -> np.ndarray:
    """``batch`` when a plan can read it in place of ``buf`` (C-contiguous, writeable, of buf's dtype), else buf holding a copy."""
    if batch is not buf:
        flags = batch.flags
        if not (flags.c_contiguous and flags.writeable and batch.dtype == buf.dtype):
            buf[...] = batch
            return buf
    return batch


class _TrainLane:
    """What :meth:`Sequential.train_step`'s fast lane needs of the last step it took the long way:
    the plan that ran fused with the optimizer's update inside, its compiled function called on
    the batch arrays directly (``fn(head, xb, yb)``), and what the batch looked like (shapes,
    dtypes) when its checks passed on the arrays themselves. The lane re-checks everything that can
    change per call: the arrays' type, shape, dtype, layout and values, and that the model, its
    loss, optimizer and plan are still the ones it was made for; anything else goes the long way
    (which raises the errors). ``index_limit``: for a model whose first layer takes int64 indices
    (``Embedding``), the bound n of their range [0, n), checked at every call (the values of an
    array may change between calls, the one given before too); None for float inputs (checked
    finite, in Python or inside the plan's call)."""

    __slots__ = (
        "base_loss",
        "batch",
        "checked",
        "fn",
        "head",
        "index_limit",
        "loss",
        "n_outputs",
        "optimizer",
        "plan",
        "plain_targets",
        "runner",
        "token",
        "x_dtype",
        "x_shape",
        "y_dtype",
        "y_shape",
    )

    def __init__(
        self,
        plan: _StepPlan,
        call: Callable,
        loss,
        optimizer: optim_mod.Optimizer,
        xb: np.ndarray,
        yb: np.ndarray,
        n_outputs: int,
        index_limit: int | None = None,
    ):
        self.plan, self.runner, self.token = plan, plan.run, plan.token
        self.index_limit = index_limit
        # call(xb, yb) as fn(head, xb, yb): a partial's function and its one bound argument (the
        # fused step's table address) called directly, without the partial's layer (~0.02 us)
        if type(call) is functools.partial and len(call.args) == 1 and not call.keywords:
            self.fn, self.head = call.func, call.args[0]
        else:
            self.fn, self.head = _call_without_head, call
        self.n_outputs = n_outputs
        self.loss, self.optimizer = loss, optimizer
        self.x_shape, self.x_dtype, self.y_shape, self.y_dtype = xb.shape, xb.dtype, yb.shape, yb.dtype
        self.batch = xb.shape[0]
        base = self.base_loss = losses_mod.base_of(loss)
        # the loss checks its targets as every real-valued loss does (finite values): checked here with
        # the inputs in one call; other losses (labels, ranges) check them themselves
        self.plain_targets = type(base).check_targets is losses_mod.Loss.check_targets and yb.ndim == 2
        # ... and inside the plan's own call when it checks its batch (then only a failed step looks again)
        self.checked = self.plain_targets and plan.checks_batch and index_limit is None


def _call_without_head(call: Callable, xb: np.ndarray, yb: np.ndarray):
    """``call(xb, yb)``: a lane's ``fn`` when its call is not a partial of one argument (``head`` is the call)."""
    return call(xb, yb)


#: the arrays :meth:`Sequential.train_step`'s fast lane takes (exactly this type: no subclass)
_NDARRAY = np.ndarray
_isfinite = math.isfinite
_get_ident = threading.get_ident


#: what a built model's buffers, layers and plans were made for: set by the model itself only
_FIXED_ATTRIBUTES = frozenset({"layers", "dtype", "seed", "params", "grads", "input_shape", "output_shape"})
_FIXED_ADVICE = {
    "dtype": "for another dtype build a new model, Sequential.from_config({**model.get_config(), 'dtype': "
    "'float32'}), and copy the weights over (save_weights / load_weights convert them)",
    "seed": "pass seed=... to Sequential(...) (it also fixed the initial weights and dropout masks)",
    "params": "write into the buffer in place instead: model.params[...] = values",
    "grads": "write into the buffer in place instead: model.grads[...] = values",
    "layers": "build a new Sequential with the new layers",
    "input_shape": "call model.build(input_shape) on a model not built yet, or build a new model",
    "output_shape": "it follows from the layers",
}


#: the key, in the ``__dict__`` of a model of a user's subclass of Sequential, of the names its own
#: code set (``self.hidden = hidden`` in its ``__init__``; see ``Sequential.__setattr__``): the
#: attributes a copy carries over besides the model's own state (``Sequential.__getstate__``)
_SUBCLASS_ATTRIBUTES = "_subclass_names"
#: fastnn's own source files: a new attribute set on a subclass's model by code elsewhere is the
#: subclass's (or the user's) own
_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep


def _set_by_fastnn(frame) -> bool:
    """Whether the attribute assignment made in ``frame`` (the caller of ``Sequential.__setattr__``)
    is fastnn's own code, looking past a subclass's ``__setattr__`` that passes it on."""
    while frame is not None:
        inside = os.path.abspath(frame.f_code.co_filename).startswith(_PACKAGE_DIR)
        if inside or frame.f_code.co_name != "__setattr__":
            return inside
        frame = frame.f_back
    return False


def _slot_names(cls) -> list[str]:
    """The ``__slots__`` a user's subclass of Sequential (and its bases below Sequential) declares,
    mangled as Python stores them (``__x`` of class ``Net``: ``_Net__x``)."""
    names = []
    for klass in cls.__mro__:
        if klass is Sequential or klass is object:
            continue
        slots = vars(klass).get("__slots__", ())
        for name in [slots] if isinstance(slots, str) else slots:
            if name in ("__dict__", "__weakref__"):
                continue
            if name.startswith("__") and not name.endswith("__"):
                name = f"_{klass.__name__.lstrip('_')}{name}"
            names.append(name)
    return names


def _takes_sequential_arguments(cls, layers, arguments: dict) -> bool:
    """Whether ``cls(layers, **arguments)`` (Sequential's arguments) is a call the constructor of
    ``cls``, a user's subclass of Sequential, takes as Sequential's: its own ``__init__`` passes
    ``layers`` (by that name, or through ``*args``) and the keywords on; a constructor of other
    arguments (``def __init__(self, hidden=8)``) is not called with them."""
    if cls.__init__ is Sequential.__init__:
        return True
    try:
        bound = inspect.signature(cls).bind(layers, **arguments)
    except (TypeError, ValueError):
        return False
    kinds = {p.name: p.kind for p in bound.signature.parameters.values()}
    return any(
        name == "layers" or kinds[name] is inspect.Parameter.VAR_POSITIONAL
        for name, value in bound.arguments.items()
        if value is layers or (isinstance(value, tuple) and len(value) > 0 and value[0] is layers)
    )


def _plain_twin(cls) -> type:
    """A class of ``cls``'s memory layout (``cls``, a user's subclass of Sequential, declares
    ``__slots__``) whose methods are Sequential's wherever ``cls`` overrides them."""
    below = cls.__mro__[: cls.__mro__.index(Sequential)]
    namespace = {
        name: value
        for name, value in vars(Sequential).items()
        if name not in ("__dict__", "__weakref__") and any(name in vars(klass) for klass in below)
    }
    namespace["__slots__"] = ()
    return type(cls)(f"Plain{cls.__name__}", (cls,), namespace)


@contextlib.contextmanager
def _as_sequential(model):
    """Run Sequential's own methods on ``model``, a new object being made from a copy's state: a
    user's subclass may override ``build``, ``compile``, ``to``, ``get_config`` ... with other
    arguments or meanings, which the copy's rebuilding must not call. The object is a
    ``Sequential`` meanwhile (for a subclass with ``__slots__``, another memory layout that Python
    does not let change class: a class of its layout with Sequential's methods), then its class
    again."""
    cls = type(model)
    if cls is Sequential:
        yield
        return
    try:
        model.__class__ = Sequential
    except TypeError:
        try:
            model.__class__ = _plain_twin(cls)
        except TypeError:  # (a metaclass or __init_subclass__ that refuses it: its own methods, then)
            pass
    try:
        yield
    finally:
        model.__class__ = cls


def _array_like_numbers(value) -> bool:
    """Whether ``value`` is a number or a (nested) list or tuple of them, not a bool or a string:
    what a user may assign to a free layer's parameter or buffer besides an array."""
    if isinstance(value, (bool, np.bool_, str, bytes)):
        return False
    if isinstance(value, (int, float, np.number)):
        return True
    if isinstance(value, (list, tuple)) and value:
        return all(_array_like_numbers(item) for item in value)
    return False


def checked_state_array(where: str, value, target):
    """``value`` checked for writing into ``target``, a parameter or buffer of a model (host or
    device array): the one rule and the messages of ``layer.weight = w`` on a built model, of an
    array set on a layer before its model was built, and of ``load_weights`` /
    ``load_state_arrays``. It must be numeric, have ``target``'s shape (or hold one value for a
    one-value target) and a dtype that converts to ``target``'s (NumPy's "same_kind").

    Parameters
    ----------
    where : str
        What is set, for the messages (``"Dense.weight"``, ``"weights.npz: 0.weight"``).
    value : array_like
        The new values (a device array is taken as it is).
    target : numpy.ndarray
        The array they will be copied into.

    Returns
    -------
    numpy.ndarray
        ``value`` as an array of ``target``'s shape (its dtype is converted by the copy).

    Raises
    ------
    ValueError
        If the shape differs (naming the transpose when it is one: torch's (out, in) Linear weight).
    TypeError
        If ``value`` is not numeric, or its dtype does not convert to ``target``'s.

    Examples
    --------
    >>> from fastnn.model import checked_state_array
    >>> checked_state_array("Dense.bias", [1, 2], np.zeros(2, np.float32))
    array([1, 2])
    >>> checked_state_array("Dense.weight", np.ones((3, 2)), np.zeros((2, 3)))
    Traceback (most recent call last):
    ...
    ValueError: Dense.weight has shape (2, 3), got an array of shape (3, 2); that is its transpose ...
    """
    array = value if hasattr(value, "__cuda_array_interface__") else V.as_numeric_array(value, where)
    got, shape = tuple(array.shape), tuple(target.shape)
    if got != shape and not (size_of(got) == 1 == size_of(shape)):
        hint = (
            "; that is its transpose (torch's Linear weight is (out, in), fastnn's Dense weight "
            "(in, out)): pass value.T"
            if got == shape[::-1]
            else ""
        )
        raise ValueError(f"{where} has shape {shape}, got an array of shape {got}{hint}")
    if not np.can_cast(array.dtype, target.dtype, casting="same_kind"):
        raise TypeError(f"{where} holds {target.dtype}, got {array.dtype}, which does not convert to it")
    return array if got == shape else array.reshape(shape)


def parameter_change(before, after) -> str | None:
    """What differs between two parameter lists ``[(name, shape, weight decay)]`` of a layer or a
    model, for a message; None when nothing does. The rule of a built model's layout: names and
    shapes place each parameter in the flat buffers and the decay flag orders them there (decayed
    ones first, the prefix the weight decay covers), so a change of any needs a new model.

    Parameters
    ----------
    before, after : list of (str, tuple of int, bool)
        The parameters as :meth:`fastnn.layers.Layer.parameter_specs` lists them.

    Returns
    -------
    str or None
        The change: the names and shapes, or the parameters whose weight decay would change.

    Examples
    --------
    >>> from fastnn.model import parameter_change
    >>> parameter_change([("weight", (3, 2), True)], [("weight", (3, 2), False)])
    "weight decay of 'weight': on -> off, by which the flat buffer orders them"
    >>> parameter_change([("weight", (3, 2), True)], [("weight", (3, 2), True)]) is None
    True
    """
    shapes_before = [(name, tuple(shape)) for name, shape, _ in before]
    shapes_after = [(name, tuple(shape)) for name, shape, _ in after]
    if shapes_before != shapes_after:
        return f"parameters {shapes_before} -> {shapes_after}"
    flags = {True: "on", False: "off"}
    decay = [
        f"{name!r}: {flags[bool(was)]} -> {flags[bool(now)]}"
        for (name, _, was), (_, _, now) in zip(before, after)
        if bool(was) != bool(now)
    ]
    return f"weight decay of {', '.join(decay)}, by which the flat buffer orders them" if decay else None


def _method_signature(func) -> inspect.Signature:
    """The signature of ``func(model, ...)`` as a method's: ``(self, ...)``."""
    signature = inspect.signature(func)
    first, *rest = signature.parameters.values()
    return signature.replace(parameters=[first.replace(name="self"), *rest])


def _without_lr(config: dict) -> dict:
    return {k: v for k, v in config.items() if k != "lr"}


class Sequential:
    """Layers applied in order: a feed-forward network over one flat parameter buffer.

    Parameters, gradients and optimizer states each live in one flat contiguous buffer
    (``model.params``, ``model.grads``); every layer's ``weight``/``bias`` is a view into them,
    weights (which get weight decay) first, then biases and normalisation parameters.

    Life cycle guarantees: a layer, an optimizer and a loss belong to one model (a layer or an
    optimizer of another live model is refused; a shared loss is copied); ``copy.deepcopy`` and
    pickling give an independent model (its checkpoint record, like :meth:`save`; a model of a
    user's subclass comes back as that subclass with its own attributes, and its constructor is
    not called); predict and
    evaluate may be called from several threads (they take the model's lock); training one model
    from two threads at once raises RuntimeError.

    Parameters
    ----------
    layers : Layer or list of Layer
        The layers, in order; each layer object belongs to this model only.
    seed : int, default 0
        Fixes the initial weights, the shuffling order and dropout masks; 0 <= seed < 2**63.
    dtype : {"float32", "float64"}, default "float32"
        The dtype of parameters, activations and gradients.
    device : {"cpu", "cuda"}, default "cpu"
        "cuda": an NVIDIA GPU through numba-cuda (``pip install "fastnn[cuda]"``); :meth:`to`
        moves a model.
    input_shape : tuple of int, optional
        The per-sample input shape, e.g. ``(64,)`` or ``(1, 28, 28)``. Default: taken from the
        first layer when it fixes it (``Dense(64, ...)``), else from the first batch the model
        sees. The chain of shapes is checked when the model is built, naming both layers on a
        mismatch.
    input_features : int, optional
        ``input_features=N`` is ``input_shape=(N,)``; not together with ``input_shape``.

    Raises
    ------
    TypeError
        If ``layers`` is not a list of fastnn layers.
    ValueError
        If ``layers`` is empty, a layer appears twice or belongs to another model, an index-taking
        layer (Embedding) is not first, the shapes do not chain, or both ``input_shape`` and
        ``input_features`` are given.
    RuntimeError
        If ``device="cuda"`` and numba-cuda, a driver or a GPU is missing.

    Examples
    --------
    >>> import fastnn as fnn
    >>> model = fnn.Sequential([fnn.Dense(2, 4, activation="tanh"), fnn.Dense(4, 2)], seed=0)
    >>> X, y = fnn.data.make_xor(8, seed=0)
    >>> _ = model.compile(loss="cross_entropy", optimizer=fnn.optim.Adam(lr=0.05))
    >>> history = model.fit(X, y, epochs=3, batch_size=4, verbose=0)
    >>> len(history["loss"]), model.predict(X).shape, model.predict(X).dtype
    (3, (8, 2), dtype('float32'))
    >>> model.params.size, model.input_shape, model.output_shape
    (22, (2,), (2,))
    """

    #: other frameworks' names, ``{their name: fastnn's}``: Keras's ``model.trainable = False``
    #: freezes every layer, which is ``model.freeze()`` here (``= True``: ``model.unfreeze()``; see
    #: ``Sequential.__setattr__``)
    attribute_aliases = {"trainable": "freeze"}

    def __init__(
        self,
        layers,
        *,
        seed: int = 0,
        dtype="float32",
        device: str = "cpu",
        input_shape=None,
        input_features: int | None = None,
    ):
        if isinstance(layers, Layer):
            layers = [layers]
        try:
            layers = list(layers)
        except TypeError:
            raise TypeError(f"layers must be a list of fastnn layers, got {type(layers).__name__}") from None
        if not layers:
            raise ValueError(
                "layers is empty: pass a list of layers, e.g. [fnn.Dense(2, 16), fnn.Tanh(), fnn.Dense(16, 1)]"
            )
        for i, layer in enumerate(layers):
            if not isinstance(layer, Layer):
                raise TypeError(f"layers[{i}] must be a fastnn layer, got {type(layer).__name__} {layer!r}")
        self._check_ownership(layers)
        for i, layer in enumerate(layers[1:], 1):
            if getattr(layer, "input_dtype", None) is not None:
                raise ValueError(f"layer {i} ({layer!r}) takes integer indices, so it must be the model's first layer")
        self.seed = V.check_int(seed, "seed", minimum=0, maximum=2**63 - 1)
        self.dtype = V.check_dtype(dtype)
        V.check_choice(device, backend.DEVICES, "device")
        if device != "cpu":
            backend.require_cuda()  # before building anything: a clear error, not a Numba traceback
        self.layers = _LayerList(layers)
        self._device = "cpu"
        self._target_device = device
        self.loss: losses_mod.Loss | None = None
        self.metrics: list = []  # fastnn.metrics.Metric objects of compile(metrics=...)
        self.decay_bias_and_norm = False
        self.optimizer: optim_mod.Optimizer | None = None
        self.training = True
        self.stop_training = False
        self.history = None  # the History of the latest fit, set when it starts (Keras' model.history)
        from .training import TrainingState

        self.state = TrainingState()
        self._lock = threading.RLock()
        self._step_reduce: Callable[..., tuple] | None = (
            None  # fit under MPI: fastnn.distributed's hook between backward and optimizer
        )
        self._backward_hook: Callable[[int], list] | None = None  # set_backward_hook
        self._group_sum: GroupSum | None = None  # set_accumulation
        self._trainer: int | None = None
        self._lane: _TrainLane | None = None  # train_step's fast lane (set after a step)
        self._building = False
        self._stale = False
        self._eager: tuple | None = None  # (input, contexts) of the last eager forward()
        self.built = False
        self.input_shape: tuple[int, ...] | None = None
        self.output_shape: tuple[int, ...] | None = None
        if input_features is not None and input_shape is not None:
            raise ValueError("pass input_shape or input_features, not both")
        if input_features is not None:
            input_shape = (V.check_int(input_features, "input_features", minimum=1),)
        if input_shape is None:
            input_shape = layers[0].expected_input_shape()
        if input_shape is not None:
            self.build(input_shape)
        # only a model that was made owns its layers: after a failed build (shapes that do not
        # chain) they stay free for the corrected model, even while the error's traceback keeps
        # this half-made one alive (an except block, IPython's last traceback)
        for layer in walk_layers(layers):
            layer.set_owner(self)

    def __setattr__(self, name, value):
        if name in _FIXED_ATTRIBUTES and name in self.__dict__ and not self.__dict__.get("_building"):
            raise AttributeError(
                f"a model's {name} cannot be replaced once set: its buffers, layers and step plans "
                f"were made for it, so a new value would be ignored or misread; {_FIXED_ADVICE[name]}"
            )
        # a misspelling of one of the model's own (``model.stop_trainning = True``), set from
        # outside its methods, would change nothing: refused as a layer refuses one (Layer.__setattr__)
        if new_attribute_from_outside(self, name):
            # (Keras's model.trainable = True unfreezes every layer: model.unfreeze() here)
            aliases = {"trainable": "unfreeze"} if name == "trainable" and value else self.attribute_aliases
            error = misnamed_attribute(self, name, value, aliases=aliases, holder="model", ignore=_FIXED_ATTRIBUTES)
            if error is not None:
                raise error
            keep_as_tag(self, name)
        if (
            type(self) is not Sequential
            and name not in self.__dict__
            and not _set_by_fastnn(inspect.currentframe().f_back)
        ):
            # a user's subclass's own attribute (``self.hidden = hidden`` in its __init__): copies keep it
            self.__dict__.setdefault(_SUBCLASS_ATTRIBUTES, set()).add(name)
        object.__setattr__(self, name, value)

    # -- ownership ----------------------------------------------------------------------------
    @staticmethod
    def _check_ownership(layers) -> None:
        seen: dict[int, int] = {}
        for i, layer in enumerate(layers):
            for sub in walk_layers([layer]):
                if id(sub) in seen:
                    raise ValueError(
                        f"layer {sub!r} appears twice in this model (at positions {seen[id(sub)]} and {i}); "
                        f"fastnn has no weight tying: each position needs its own layer object (e.g. "
                        f"copy.deepcopy(layer) before the model is built, for equal initial weights; or a custom "
                        f"Layer that applies the shared block twice)"
                    )
                seen[id(sub)] = i
                if sub.owner is not None:
                    raise ValueError(
                        f"layers[{i}] ({sub!r}) already belongs to another model (it holds views of that model's "
                        f"parameters); create a new layer, or copy the other model with copy.deepcopy(model)"
                    )

    # -- construction -------------------------------------------------------------------------
    def build(self, input_shape) -> Sequential:
        """Check the chain of shapes from ``input_shape`` (per sample) and allocate everything.

        Allocates the flat parameter and gradient buffers (initialised from the seed), the layers'
        buffers and the workspaces. Called by the constructor when the input shape is known, else by
        the first ``fit``/``predict``/``forward``. Layers that arrive with weights (a deep copy of
        a trained layer, ``model[a:b]``) keep them where the shapes still match.

        Parameters
        ----------
        input_shape : tuple of int
            The per-sample input shape, e.g. ``(64,)`` or ``(1, 28, 28)``.

        Returns
        -------
        Sequential
            ``self``.

        Raises
        ------
        ValueError
            If a layer cannot take the shape of the layer before it (the message names both).

        Examples
        --------
        >>> import fastnn as fnn
        >>> model = fnn.Sequential([fnn.Dense(None, 3)])
        >>> model.built
        False
        >>> model.build((5,)).output_shape
        (3,)
        """
        shape = normalize_shape(input_shape, "input_shape")
        carried = [self._carried_state(layer) for layer in self.layers]
        self._building = True
        try:
            self._build_layers(shape)
            self.input_shape = shape
            self._allocate_parameters()
            self._carry_over(carried)
            self._make_workspaces()
            self._plannable = all(layer.plannable() for layer in self.layers)
            self.built = True
        finally:
            self._building = False
        if self._target_device != "cpu":
            self.to(self._target_device)
        return self

    @staticmethod
    def _carried_state(layer) -> tuple[dict, dict, dict]:
        """(parameters, buffers, assigned) a layer brings from an earlier model (a copy of a trained
        layer), and the arrays a user assigned to its attributes outside a model (``dense.weight =
        w`` on a free layer: kept as the parameter's values, not silently replaced)."""
        views = layer.parameter_views
        buffers = layer.buffers() if layer.output_shape is not None else {}
        # (numbers and lists too: ``dense.bias = [0.5, 0.5]``, ``dense.bias = 1`` on a free layer
        # are the user's values, checked against the parameter once built, never dropped)
        assigned = {
            name: value if hasattr(value, "shape") else np.asarray(value)
            for name, value in vars(layer).items()
            if name[0] != "_"
            and (hasattr(value, "shape") or _array_like_numbers(value))
            and value is not views.get(name)
            and value is not buffers.get(name)
        }
        return (
            {name: backend.host_copy(v) for name, v in views.items()},
            {name: backend.host_copy(b) for name, b in buffers.items() if b is not None},
            assigned,
        )

    def _carry_over(self, carried) -> None:
        """Layers that arrive with weights (``copy.deepcopy`` of a trained layer, ``model[a:b]``)
        keep them instead of a fresh initialisation, where the shapes still match; arrays assigned
        to a free layer's parameters must match their shapes."""
        for layer, (params, buffers, assigned) in zip(self.layers, carried):
            views = layer.parameter_views
            for name, value in params.items():
                if name in views and views[name].shape == value.shape:
                    backend.copy_into(views[name], value)
            current = layer.buffers()
            for name, value in buffers.items():
                if name in current and current[name].shape == value.shape:
                    backend.copy_into(current[name], value)
            for name, value in assigned.items():
                target = views.get(name, current.get(name))
                if target is not None:
                    where = f"{type(layer).__name__}.{name} (set before the model was built)"
                    backend.copy_into(target, checked_state_array(where, value, target))

    def _build_layers(self, shape):
        for i, layer in enumerate(self.layers):
            problem = width_mismatch(layer, shape, owner=f"layer {i}'s")
            if problem is not None:
                prev = (
                    f"layer {i - 1} ({self.layers[i - 1]!r}) outputs {shape_str(shape)}"
                    if i
                    else f"the model's input is {shape_str(shape)}"
                )
                raise ValueError(f"layer shapes do not chain: {prev}, but layer {i} ({layer!r}) {problem}")
            try:
                out = layer.build(shape, self.dtype)
            except ValueError as exc:
                prev = f"layer {i - 1} ({self.layers[i - 1]!r})" if i else "the model's input"
                raise ValueError(
                    f"layer {i} ({layer!r}) cannot take the output of {prev}, shape {shape_str(shape)}: {exc}"
                ) from None
            shape = normalize_shape(out)
            if hasattr(layer, "seed_rng"):
                layer.seed_rng(self.seed, 1_000_000 + i)
        self._check_lengths_chain()
        self.output_shape = shape

    def _check_lengths_chain(self, layers=None) -> None:
        """Sequence lengths (from Masking or Embedding(mask_padding=True), which must come first)
        may only reach layers that honour them, until a layer drops the time axis; ``layers``: the
        model's (default) or those it would have with one of them changed."""
        source = None
        for i, layer in enumerate(self.layers if layers is None else layers):
            if getattr(layer, "produces_lengths", False):
                if i:
                    raise ValueError(
                        f"layer {i} ({layer!r}) marks padded steps from the model's input, so it must "
                        f"be the model's first layer"
                    )
                source = layer
            elif source is not None:
                policy = layer.lengths_policy
                if policy is None:
                    why = getattr(layer, "lengths_refusal", None)  # (TimeDistributed: a BatchNorm inside)
                    raise ValueError(
                        f"layer {i} ({layer!r}) cannot honour the padded steps that layer 0 "
                        f"({source!r}) marks: "
                        + (
                            why
                            or "padded steps would change its valid outputs. Place it after a layer that "
                            "drops the time axis (LastStep(), GlobalAvgPool(axis='time'), a recurrent layer "
                            "with return_sequences=False), or remove the masking"
                        )
                    )
                if policy == "drop":
                    source = None

    @property
    def epochs_done(self) -> int:
        """Epochs completed by :meth:`fit` (saved with the model; settable, >= 0).

        Returns
        -------
        int
            The count; the next fit continues from it.

        Examples
        --------
        >>> import fastnn as fnn
        >>> model = fnn.Sequential([fnn.Dense(2, 4, activation="tanh"), fnn.Dense(4, 2)], seed=0)
        >>> X, y = fnn.data.make_xor(8, seed=0)
        >>> _ = model.compile(loss="cross_entropy", optimizer="sgd")
        >>> _ = model.fit(X, y, epochs=2, verbose=0)
        >>> model.epochs_done
        2
        """
        return self.state.epochs_done

    @epochs_done.setter
    def epochs_done(self, value: int) -> None:
        self.state.epochs_done = V.check_int(value, "epochs_done", minimum=0)

    @property
    def input_dtype(self) -> np.dtype:
        """The dtype of the model's input: its dtype, or int64 when the first layer takes indices.

        Returns
        -------
        numpy.dtype
            float32 or float64, or int64 (Embedding first).

        Examples
        --------
        >>> import fastnn as fnn
        >>> model = fnn.Sequential([fnn.Dense(2, 4, activation="tanh"), fnn.Dense(4, 2)], seed=0)
        >>> model.input_dtype
        dtype('float32')
        """
        return getattr(self.layers[0], "input_dtype", None) or self.dtype

    @property
    def in_features(self) -> int | None:
        """The last axis of the input shape (None before the model is built).

        Returns
        -------
        int or None
            ``input_shape[-1]``.

        Examples
        --------
        >>> import fastnn as fnn
        >>> model = fnn.Sequential([fnn.Dense(2, 4, activation="tanh"), fnn.Dense(4, 2)], seed=0)
        >>> model.in_features, model.out_features
        (2, 2)
        """
        return None if self.input_shape is None else self.input_shape[-1]

    @property
    def out_features(self) -> int | None:
        """The last axis of the output shape (None before the model is built).

        Returns
        -------
        int or None
            ``output_shape[-1]``.

        Examples
        --------
        >>> import fastnn as fnn
        >>> model = fnn.Sequential([fnn.Dense(2, 4, activation="tanh"), fnn.Dense(4, 2)], seed=0)
        >>> model.out_features
        2
        """
        return None if self.output_shape is None else self.output_shape[-1]

    # -- the loss over positions: an output (batch, *positions, k) is (batch * positions) rows --------
    @property
    def positions(self) -> int:
        """Loss rows per sample: 1 for outputs (batch, k), T for sequence outputs (batch, T, k).

        Returns
        -------
        int
            The product of the output shape's leading axes.

        Examples
        --------
        >>> import fastnn as fnn
        >>> model = fnn.Sequential([fnn.Dense(2, 4, activation="tanh"), fnn.Dense(4, 2)], seed=0)
        >>> model.positions
        1
        """
        return size_of(self._built_output_shape("positions")[:-1])

    def target_shape(self) -> tuple[tuple[int, ...], np.dtype]:
        """The per-sample shape and dtype of the checked targets of the compiled loss.

        Returns
        -------
        tuple of (tuple of int, numpy.dtype)
            (``(*positions, *the loss's per-row shape)``, dtype): ``((), int64)`` for cross-entropy labels
            of a (batch, k) output, ``((k,), float32)`` for mse on a float32 model.

        Examples
        --------
        >>> import fastnn as fnn
        >>> model = fnn.Sequential([fnn.Dense(2, 4, activation="tanh"), fnn.Dense(4, 2)], seed=0)
        >>> X, y = fnn.data.make_xor(8, seed=0)
        >>> _ = model.compile(loss="cross_entropy", optimizer="sgd")
        >>> model.target_shape()
        ((), dtype('int64'))
        """
        loss, shape = self._compiled_loss("target_shape"), self._built_output_shape("target_shape")
        trailing, dtype = loss.target_spec(shape[-1], self.dtype)
        return (*shape[:-1], *trailing), dtype

    def loss_rows(self, out, target, grad=None):
        """(output, target, grad) as the loss's rows (the engine's view of an N-D output).

        The leading per-sample axes of an N-D output are positions, each a row of k outputs with its
        own target (per-step classification); a (batch, k) output is returned as is.

        Parameters
        ----------
        out : numpy.ndarray
            ``(batch, *output_shape)``.
        target : numpy.ndarray
            Checked targets ``(batch, *target_shape()[0])``.
        grad : numpy.ndarray, optional
            Like ``out``: reshaped the same way (left alone when it is a placeholder of another size).

        Returns
        -------
        tuple of numpy.ndarray
            (output (rows, k), target (rows, ...), grad (rows, k) or as given), rows = batch *
            :attr:`positions`; views, not copies.

        Examples
        --------
        >>> import fastnn as fnn
        >>> model = fnn.Sequential([fnn.Dense(3, 2)], input_shape=(4, 3)).compile("cross_entropy")
        >>> out, target, _ = model.loss_rows(np.zeros((5, 4, 2)), np.zeros((5, 4), np.int64))
        >>> out.shape, target.shape
        ((20, 2), (20,))
        """
        if len(self.output_shape) == 1:
            return out, target, grad
        k = self.output_shape[-1]
        rows = out.size // k
        target = target.reshape((rows, *target.shape[len(self.output_shape) :]))
        if grad is not None and grad.size == out.size:  # (a placeholder when no gradient is computed)
            grad = grad.reshape((rows, k))
        return out.reshape((rows, k)), target, grad

    @property
    def masks_steps(self) -> bool:
        """Whether the loss and metrics leave padded steps out: the input carries sequence lengths
        (``Masking``, ``Embedding(..., mask_padding=True)``) and they reach the output (per-step
        outputs ``(batch, time, ..., k)``), as in Keras.

        Returns
        -------
        bool
            True when :meth:`loss_value`, :meth:`correct_count` and the metrics take each batch's
            :meth:`output_lengths`.

        Examples
        --------
        >>> import fastnn as fnn
        >>> model = fnn.Sequential([fnn.Masking(0.0), fnn.Dense(1, 2)], input_shape=(3, 1))
        >>> model.masks_steps
        True
        """
        return self._lengths_layer() is not None

    def _lengths_layer(self):
        """The first layer, when it marks padded steps whose lengths reach the output; else None."""
        source = None
        for layer in self.layers:
            if getattr(layer, "produces_lengths", False):
                source = layer
            elif source is not None and getattr(layer, "lengths_policy", None) == "drop":
                source = None
        return source

    @property
    def per_step(self) -> int:
        """Loss rows of one step of a per-step output: :attr:`positions` / time steps (1 for ``(batch, T, k)``).

        Returns
        -------
        int
            The product of the output shape's axes between time and the last.

        Examples
        --------
        >>> import fastnn as fnn
        >>> fnn.Sequential([fnn.Masking(0.0), fnn.Dense(2, 3)], input_shape=(4, 5, 2)).per_step
        5
        """
        shape = self._built_output_shape("per_step")
        return size_of(shape[1:-1]) if len(shape) > 1 else 1

    def output_lengths(self, X) -> np.ndarray | None:
        """The sequence lengths that reach the output for input ``X``: each sample's valid steps
        (what :meth:`loss_value`, :meth:`correct_count` and the metrics take), None when the model
        does not :attr:`masks_steps`.

        Parameters
        ----------
        X : numpy.ndarray
            Checked inputs ``(n, *input_shape)`` (:meth:`check_data`), on the host or the model's device.

        Returns
        -------
        numpy.ndarray or None
            int64 ``(n,)`` on the host.

        Examples
        --------
        >>> import fastnn as fnn
        >>> model = fnn.Sequential([fnn.Masking(0.0), fnn.Dense(1, 2)], input_shape=(3, 1))
        >>> model.output_lengths(np.array([[[1.0], [0.0], [0.0]], [[1.0], [2.0], [3.0]]], np.float32))
        array([1, 3])
        """
        source = self._lengths_layer()
        return None if source is None else source.sequence_lengths(X)

    def valid_rows(self, lengths) -> np.ndarray | None:
        """The loss rows of valid steps, for :meth:`output_lengths` ``lengths``.

        Parameters
        ----------
        lengths : numpy.ndarray or None
            int64 ``(n,)`` host lengths, or None.

        Returns
        -------
        numpy.ndarray or None
            bool ``(n * positions,)``: row ``i`` (sample ``i // positions``) is a valid step; None for None.

        Examples
        --------
        >>> import fastnn as fnn
        >>> model = fnn.Sequential([fnn.Masking(0.0), fnn.Dense(1, 2)], input_shape=(3, 1))
        >>> model.valid_rows(np.array([1, 3]))
        array([ True, False, False,  True,  True,  True])
        """
        if lengths is None:
            return None
        steps = self._built_output_shape("valid_rows")[0]
        valid = np.arange(steps)[None, :] < np.asarray(lengths)[:, None]
        return np.repeat(valid, self.per_step, axis=1).reshape(-1)

    def valid_count(self, lengths) -> int:
        """The number of loss rows of valid steps for :meth:`output_lengths` ``lengths``: the True
        rows of :meth:`valid_rows`, counted directly (``kernels.masking.valid_rows``, the count the
        masked loss kernels take) without building the mask.

        Parameters
        ----------
        lengths : numpy.ndarray
            int64 ``(n,)`` host lengths.

        Returns
        -------
        int
            The sum over samples of min(length, time steps), times :attr:`per_step`.

        Examples
        --------
        >>> import fastnn as fnn
        >>> model = fnn.Sequential([fnn.Masking(0.0), fnn.Dense(1, 2)], input_shape=(3, 1))
        >>> model.valid_count(np.array([1, 3]))
        4
        """
        steps = self._built_output_shape("valid_count")[0]
        return int(count_valid_rows(np.ascontiguousarray(lengths, np.int64), steps, self.per_step))

    def check_lengths_argument(self, lengths, what: str) -> None:
        """Refuse ``lengths`` missing for a model that :attr:`masks_steps` (its loss and metrics
        would count the padded steps) or given to one that does not.

        Parameters
        ----------
        lengths : numpy.ndarray or None
            The batch's :meth:`output_lengths`, or None.
        what : str
            The caller, for the message (``"loss_value"``, ``"Tracker.update"``).

        Raises
        ------
        ValueError
            Naming ``what`` and the fix.

        Examples
        --------
        >>> import fastnn as fnn
        >>> model = fnn.Sequential([fnn.Dense(2, 3)], input_shape=(2,))
        >>> model.check_lengths_argument(None, "example")  # no padded steps: none wanted
        """
        if lengths is None and self.masks_steps:
            raise ValueError(
                f"{what}: this model's per-step outputs carry padded steps (layer 0 is {self.layers[0]!r}), "
                f"which the loss and metrics leave out: pass lengths=model.output_lengths(X) for the batch X"
            )
        if lengths is not None and not self.masks_steps:
            raise ValueError(
                f"{what}: lengths given, but this model's output carries no padded steps (no Masking or "
                f"Embedding(mask_padding=True) whose lengths reach it): leave lengths out"
            )

    def _lengths_args(self, lengths, what: str) -> tuple:
        """(lengths, per_step) for a loss or count of a model that :attr:`masks_steps`, () otherwise
        (:meth:`check_lengths_argument` first)."""
        self.check_lengths_argument(lengths, what)
        if lengths is None:
            return ()
        if self._device != "cpu" and isinstance(lengths, np.ndarray):
            lengths = backend.to_device(lengths, self._device)
        return lengths, self.per_step

    def _lengths_reaching_output(self, contexts) -> np.ndarray | None:
        """The lengths buffer the last layer's forward (``contexts``: :meth:`_forward`'s) hands to
        the loss; None when none reaches the output."""
        if not self.masks_steps:
            return None
        return self.layers[-1].output_lengths(contexts[-1])

    def loss_value(self, out, target, grad, compute_grad: bool = True, lengths=None) -> float:
        """The compiled loss of ``out`` against checked ``target``, with its gradient.

        Parameters
        ----------
        out : numpy.ndarray
            ``(batch, *output_shape)`` of the model's dtype, on its device.
        target : numpy.ndarray
            Checked targets (:meth:`check_data`), on the model's device.
        grad : numpy.ndarray
            Like ``out``: receives d loss / d out when ``compute_grad``.
        compute_grad : bool, default True
            False computes the value only.
        lengths : numpy.ndarray, optional
            int64 ``(batch,)`` sequence lengths on the model's device (:meth:`output_lengths`):
            required when the model :attr:`masks_steps`, refused otherwise.

        Returns
        -------
        float
            The loss (the mean over every position with reduction "mean"; over the valid steps'
            positions for a model that :attr:`masks_steps`, whose padded positions get a zero gradient).

        Raises
        ------
        ValueError
            If ``lengths`` is missing for a model that masks steps, or given to one that does not.

        Examples
        --------
        >>> import fastnn as fnn
        >>> model = fnn.Sequential([fnn.Dense(2, 4, activation="tanh"), fnn.Dense(4, 2)], seed=0)
        >>> X, y = fnn.data.make_xor(8, seed=0)
        >>> _ = model.compile(loss="cross_entropy", optimizer="sgd")
        >>> X, y = model.check_data(X, y)
        >>> out = model.predict(X)
        >>> loss = model.loss_value(out, y, np.empty_like(out))
        >>> bool(loss > 0)
        True
        """
        loss = self._compiled_loss("loss_value")
        masked = self._lengths_args(lengths, "loss_value")
        out, target, grad = self.loss_rows(out, target, grad)
        return loss.forward_backward(out, target, grad, compute_grad, *masked)

    def correct_count(self, out, target, lengths=None, *, checked: bool = True) -> int | None:
        """Positions classified right (accuracy = this / (samples * positions), or / the valid
        steps' positions for a model that :attr:`masks_steps`).

        Parameters
        ----------
        out : numpy.ndarray
            ``(batch, *output_shape)``, on the model's device.
        target : numpy.ndarray
            Checked targets, on the model's device.
        lengths : numpy.ndarray, optional
            int64 ``(batch,)`` sequence lengths on the model's device (:meth:`output_lengths`):
            required when the model :attr:`masks_steps` (only valid steps count), refused otherwise.
        checked : bool, default True
            False skips the loss's checks of ``out`` and ``target`` (``fastnn.losses.count_correct``):
            for arrays the caller made itself, as fit's steps.

        Returns
        -------
        int or None
            The count; None for regression losses.

        Raises
        ------
        ValueError
            If ``lengths`` is missing for a model that masks steps, or given to one that does not.
            With ``checked``: as ``loss.correct_count`` for ``out`` and ``target`` that do not fit
            (a length or label mismatch).
        TypeError
            With ``checked``: if the labels are not integers (``loss.correct_count``).

        Examples
        --------
        >>> import fastnn as fnn
        >>> model = fnn.Sequential([fnn.Dense(2, 4, activation="tanh"), fnn.Dense(4, 2)], seed=0)
        >>> X, y = fnn.data.make_xor(8, seed=0)
        >>> _ = model.compile(loss="cross_entropy", optimizer="sgd")
        >>> X, y = model.check_data(X, y)
        >>> 0 <= model.correct_count(model.predict(X), y) <= 8
        True
        """
        loss = self._compiled_loss("correct_count")
        masked = self._lengths_args(lengths, "correct_count")
        out, target, _ = self.loss_rows(out, target)
        if checked:
            return loss.correct_count(out, target, *masked)
        return losses_mod.count_correct(loss, out, target, *masked)

    def require_built(self, what: str):
        """Raise a RuntimeError naming ``what`` unless the model knows its shapes.

        Parameters
        ----------
        what : str
            The caller's action, for the message (e.g. "summary").

        Raises
        ------
        RuntimeError
            If the model is not built yet (no input shape).

        Examples
        --------
        >>> import fastnn as fnn
        >>> fnn.Sequential([fnn.Dense(None, 2)]).require_built("export")
        Traceback (most recent call last):
        ...
        RuntimeError: export needs a built model, ...
        """
        if not self.built:
            raise RuntimeError(
                f"{what} needs a built model, and this one does not know its input shape yet: pass "
                f"Sequential(..., input_shape=(...)), call model.build(input_shape), or fit/predict "
                f"on data first"
            )

    def _built_output_shape(self, what: str) -> tuple[int, ...]:
        """The per-sample output shape; a RuntimeError naming ``what`` (and the fix) when unbuilt."""
        self.require_built(what)
        shape = self.output_shape
        if shape is None:  # built models know it (require_built passed): never reached
            raise RuntimeError(f"{what}: the model is built but has no output shape")
        return shape

    def _compiled_loss(self, what: str) -> losses_mod.Loss:
        """The compiled loss; a RuntimeError naming ``what`` and the fix when there is none."""
        if self.loss is None:
            raise RuntimeError(f"{what} needs a loss: call model.compile(loss=..., optimizer=...) first")
        return self.loss

    def _compiled_optimizer(self, what: str):
        """The compiled optimizer; a RuntimeError naming ``what`` and the fix when there is none."""
        if self.optimizer is None:
            raise RuntimeError(f"{what} needs an optimizer: call model.compile(loss=..., optimizer=...) first")
        return self.optimizer

    def _build_from(self, X) -> None:
        """Build from the first batch's per-sample shape (models created without an input shape)."""
        if not self.built:
            arr = np.asarray(X)
            if arr.ndim < 2:
                raise ValueError(
                    f"cannot infer the model's input shape from data of shape {arr.shape}: pass "
                    f"(samples, *per_sample_shape) data or Sequential(..., input_shape=(...))"
                )
            self.build(arr.shape[1:])

    def _parameter_layout(self):
        specs = [(i, spec) for i, layer in enumerate(self.layers) for spec in layer.parameter_specs()]
        return [(i, spec.name, tuple(spec.shape), spec.decay) for i, spec in specs], specs

    def _allocate_parameters(self):
        layout, specs = self._parameter_layout()
        ordered = sorted(range(len(specs)), key=lambda k: not specs[k][1].decay)  # stable: decayed first
        sizes = [size_of(spec.shape) for _, spec in specs]
        total = sum(sizes)
        self.params = np.zeros(total, self.dtype)
        self.grads = np.zeros(total, self.dtype)
        self.n_decay = sum(sizes[k] for k in range(len(specs)) if specs[k][1].decay)
        offsets = {}
        offset = 0
        for k in ordered:
            offsets[k] = offset
            offset += sizes[k]
        self._signature = layout
        self._param_index = []  # (name, offset, shape) in layer order
        self._layout = []  # (layer index, parameter name, offset, shape)
        for k, (i, spec) in enumerate(specs):
            lo, hi = offsets[k], offsets[k] + sizes[k]
            spec.init(self.params[lo:hi].reshape(spec.shape), self.seed, k)
            self._param_index.append((f"{i}.{spec.name}", lo, spec.shape))
            self._layout.append((i, spec.name, lo, spec.shape))
        self._bind_views()

    def _bind_views(self):
        """Give every layer views of the flat parameter and gradient buffers (on their device)."""
        views: list[dict] = [{} for _ in self.layers]
        grad_views: list[dict] = [{} for _ in self.layers]
        for i, name, lo, shape in self._layout:
            hi = lo + size_of(shape)
            views[i][name] = self.params[lo:hi].reshape(shape)
            grad_views[i][name] = self.grads[lo:hi].reshape(shape)
        for layer, v, g in zip(self.layers, views, grad_views):
            layer.bind(v, g)
            layer.keep_parameter_views(v)

    def reserve(self, batch_size: int) -> None:
        """Grow the training input and gradient buffers to ``batch_size`` rows before any plan uses them.

        Parameters
        ----------
        batch_size : int
            Rows of the largest batch to come.

        Examples
        --------
        >>> import fastnn as fnn
        >>> model = fnn.Sequential([fnn.Dense(2, 4, activation="tanh"), fnn.Dense(4, 2)], seed=0)
        >>> model.reserve(64)
        """
        self._inputs(batch_size)
        self._grad_out(batch_size)

    def _make_workspaces(self):
        self._grad_out = Workspace(self.dtype, self._device, grad=self.output_shape)
        self._inputs = Workspace(self.input_dtype, self._device, x=self.input_shape)  # the plans' inputs
        self._feed = Workspace(self.input_dtype, self._device, x=self.input_shape)  # predict/forward on a device
        self._plans: dict = {}  # batch size -> _StepPlan; ("fused-infer", rows) -> fastnn._inference plans
        self._lane = None  # train_step's fast lane (checked against _plans at each use)
        n = max(self.params.size, 1)
        size = backend.kernels(self._device).norm_partials_size(n)  # the device's grad_global_norm
        table = freezing.sparse_table(self, frozen_too=True)
        if table is not None:  # the CPU's sparse_grad_norm: those chunks and blocks of table rows
            size = max(size, norm_tasks(n, (table[1] - table[0]) // table[2]))
        self._norm_partials = backend.zeros(size, np.float64, self._device)
        self._scalars = backend.step_scalars(self._device)  # a device step's loss and norm, read together
        self._staging = None if self._device == "cpu" else backend.Staging()  # batches copied in from pinned memory
        self._group_sum = None  # (its buffers were the old ones)
        buffers = [buf for layer in self.layers for buf in layer.buffers().values()]
        self._guard = backend.StateGuard(buffers)
        self._eager = None

    # -- changes after build ------------------------------------------------------------------
    def layer_changed(self, layer: Layer, name: str) -> None:
        """Called by a layer of this model when one of its public attributes is set.

        The plans are rebuilt (or the change refused, when it changes the parameters) before the next
        use.

        Parameters
        ----------
        layer : Layer
            The changed layer.
        name : str
            The attribute set.

        Examples
        --------
        >>> import fastnn as fnn
        >>> model = fnn.Sequential([fnn.Dense(2, 4), fnn.Dropout(0.5), fnn.Dense(4, 1)])
        >>> model[1].p = 0.25  # calls model.layer_changed(model[1], "p"): the plans are rebuilt
        >>> model.predict(np.zeros((1, 2))).shape, model.get_config()["layers"][1]["config"]
        ((1, 1), {'p': 0.25})
        """
        if not self._building and self.built:
            self._stale = True

    def checked_layer_argument(self, layer: Layer, name: str, value):
        """The value a layer of this model keeps when its constructor argument ``name`` is set.

        A layer calls it before one of its public attributes is set. A constructor argument
        (a key of ``layer.get_config()``) is checked as the constructor checks it, with its errors,
        and kept as the constructor keeps it (``kernel_size=3`` as ``(3, 3)``); any other attribute,
        and any setting while the model builds, passes unchanged.

        Parameters
        ----------
        layer : Layer
            A layer of this model (at any depth).
        name : str
            The attribute being set.
        value : object
            The new value.

        Returns
        -------
        object
            The value to store.

        Raises
        ------
        ValueError, TypeError
            As the layer's constructor raises them for that argument; ValueError also when the
            value would change the layer's output shape or parameters, or is an argument of a layer
            with layers inside it (that needs a new model).
        AttributeError
            If the layer keeps that argument under another attribute (``LeakyReLU``'s
            ``negative_slope`` is its ``alpha``): setting the name would change nothing computed.

        Examples
        --------
        >>> import fastnn as fnn
        >>> model = fnn.Sequential([fnn.Dense(2, 3), fnn.ELU(), fnn.Dense(3, 1)])
        >>> model[1].alpha = 0.5  # checked as ELU(alpha=0.5) would be
        >>> model[1].alpha = -1.0
        Traceback (most recent call last):
        ...
        ValueError: alpha must be in [0.0, inf], got -1.0
        """
        if self._building or not self.built:
            return value
        config = layer.get_config()
        argument = type(layer).argument_attributes.get(name, name)  # Dense keeps out_features as units
        if argument not in config:
            return value
        if layer.sublayers() and not isinstance(getattr(type(layer), name, None), property):
            raise ValueError(
                f"{type(layer).__name__}.{name} cannot change on a built model: {type(layer).__name__} makes the "
                f"layers inside it from its arguments once; build a new model with "
                f"{type(layer).__name__}(..., {name}={value!r}) and copy the weights over (load_state_arrays)"
            )
        if name not in layer.__dict__ and not hasattr(type(layer), name):
            raise AttributeError(
                f"{type(layer).__name__} keeps its {name!r} argument under another attribute, so setting "
                f"{name!r} would change nothing it computes; make a new layer instead: "
                f"{type(layer).__name__}(**{{**layer.get_config(), {name!r}: ...}})"
            )
        configured = type(layer)(**{**config, argument: value})  # the constructor's checks and messages
        out = normalize_shape(configured.build(layer.input_shape, self.dtype))
        change = parameter_change(
            [(spec.name, spec.shape, spec.decay) for spec in layer.parameter_specs()],
            [(spec.name, spec.shape, spec.decay) for spec in configured.parameter_specs()],
        )
        if out != layer.output_shape or change is not None:
            raise ValueError(
                f"{type(layer).__name__}.{name} = {value!r} would change the layer's output shape or parameters "
                f"(output {shape_str(layer.output_shape)} -> {shape_str(out)}"
                f"{'' if change is None else '; ' + change}); that needs a new model: build a "
                f"new Sequential with the new layer (copy weights with named_parameters() if needed)"
            )
        if any(top is layer for top in self.layers):  # (Embedding.mask_padding = True before a Flatten)
            self._check_lengths_chain([configured if top is layer else top for top in self.layers])
        return configured.__dict__.get(name, value)  # (a property's value goes through its setter)

    def assign_layer_array(self, layer: Layer, name: str, value) -> bool:
        """Write ``value`` into a parameter or buffer of a built layer of this model, in place.

        A layer calls it when one of its attributes is set (``dense.weight = w``): the attribute
        is a view of the model's flat buffers (or a buffer its plans read), so replacing the
        object would be undone by the next rebuild; its values are written instead.

        Parameters
        ----------
        layer : Layer
            A layer of this model (at any depth).
        name : str
            The attribute being set.
        value : array_like
            The new values: the attribute's shape, a dtype that converts to its dtype.

        Returns
        -------
        bool
            True when ``name`` is a parameter or buffer and the values were written; False for any
            other attribute (the caller sets it as usual).

        Raises
        ------
        ValueError
            If ``value`` is None or has another shape.
        TypeError
            If ``value`` is not numeric or does not convert to the array's dtype.
        AttributeError
            If ``name`` is a parameter the layer keeps under no attribute of that name, or an array
            of the layer that is not a parameter or buffer (``grad_weight``, the ``weight`` of a
            ``BatchNorm1d(affine=False)``).

        Examples
        --------
        >>> import fastnn as fnn
        >>> model = fnn.Sequential([fnn.Dense(2, 3)], seed=0)
        >>> model[0].bias = [1.0, 2.0, 3.0]  # calls model.assign_layer_array(model[0], "bias", ...)
        >>> model[0].bias
        array([1., 2., 3.], dtype=float32)
        """
        if self._building or not self.built:
            return False
        params = {spec.name for spec in layer.parameter_specs()}
        if name not in params and name not in layer.buffers():
            if hasattr(layer.__dict__.get(name), "shape"):  # a placeholder or gradient view the layer owns
                raise AttributeError(
                    f"{type(layer).__name__}.{name} is not a parameter or buffer of {layer!r} (it is the "
                    f"layer's own array: a gradient view, or a placeholder of an option that is off), so a "
                    f"value set there would be ignored; the parameters are {sorted(params) or 'none'}"
                )
            return False
        current = layer.__dict__.get(name)
        if not hasattr(current, "shape"):  # kept elsewhere (LSTM.weight_ih_l0 ...): its view, if it has one
            current = layer.parameter_views.get(name) if name in params else None
        where = f"{type(layer).__name__}.{name}"
        if current is None:
            raise AttributeError(
                f"{where} is not an attribute of the layer; write its values into the array of "
                f"model.named_parameters() (or layer.parameter_arrays) in place, e.g. array[...] = value"
            )
        if value is None:
            raise ValueError(
                f"{where} cannot be set to None: it is an array of the model's state; build a new "
                f"layer without it (e.g. Dense(..., bias=False)) for a model without it"
            )
        array = checked_state_array(where, value, current)
        with self._lock:
            backend.copy_into(current, array)
        return True

    def _refresh(self) -> None:
        """Rebuild the layers' buffers and the plans after a layer's hyper-parameter changed; refuse
        changes that would change the parameters (they need a new model)."""
        with self._lock:
            self._building = True
            kept = [{k: backend.host_copy(v) for k, v in layer.buffers().items()} for layer in self.layers]
            try:
                try:
                    self._build_layers(self.input_shape)
                except ValueError as exc:
                    raise ValueError(
                        f"a layer of this built model was changed and the model no longer builds: "
                        f"{exc}. Undo the change, or build a new Sequential with the new layers"
                    ) from None
                layout, _ = self._parameter_layout()
                if layout != self._signature:
                    change = parameter_change(
                        [(f"{i}.{name}", shape, decay) for i, name, shape, decay in self._signature],
                        [(f"{i}.{name}", shape, decay) for i, name, shape, decay in layout],
                    )
                    raise ValueError(
                        f"a layer of this built model was changed in a way that changes its parameters ({change}); "
                        f"that needs a new model: build a new Sequential with the new layers (copy weights with "
                        f"named_parameters() if needed)"
                    )
                for layer in self.layers:
                    layer.training = self.training
                self._bind_views()
                self._make_workspaces()
                self._plannable = all(layer.plannable() for layer in self.layers)
                for layer, saved in zip(self.layers, kept):  # a rebuild keeps running statistics, counters
                    for name, buf in layer.buffers().items():
                        if name in saved and saved[name].shape == buf.shape:
                            backend.copy_into(buf, saved[name])
            finally:
                self._building = False
            self._stale = False

    def prepare(self, what: str) -> None:
        """Before computing: the model must be built; plans made stale by a changed layer are rebuilt.

        Parameters
        ----------
        what : str
            The caller's action, for the error message.

        Raises
        ------
        RuntimeError
            If the model is not built yet.
        ValueError
            If a changed layer no longer builds or changes the parameters' shapes.

        Examples
        --------
        >>> import fastnn as fnn
        >>> model = fnn.Sequential([fnn.Dense(2, 4, activation="tanh"), fnn.Dense(4, 2)], seed=0)
        >>> model.prepare("predict")
        """
        self.require_built(what)
        if self._stale:
            self._refresh()

    # -- devices --------------------------------------------------------------------------------
    @property
    def device(self) -> str:
        """Where the parameters, optimizer state and layer buffers live.

        Returns
        -------
        str
            "cpu" or "cuda".

        Examples
        --------
        >>> import fastnn as fnn
        >>> model = fnn.Sequential([fnn.Dense(2, 4, activation="tanh"), fnn.Dense(4, 2)], seed=0)
        >>> model.device
        'cpu'
        """
        return self._device

    def to(self, device: str) -> Sequential:
        """Move the model to ``device`` and return it.

        The flat parameter and gradient buffers and the optimizer state are copied once and every
        layer's views re-bound to them; layer buffers (running statistics ...) are copied,
        workspaces re-allocated there, step plans rebuilt. An unbuilt model moves when it is built.

        Parameters
        ----------
        device : {"cpu", "cuda"}
            The target device.

        Returns
        -------
        Sequential
            ``self``.

        Raises
        ------
        RuntimeError
            Moving to "cuda" where numba-cuda, a driver or a GPU is missing (the message says which;
            ``pip install "fastnn[cuda]"``); or moving while the model trains (from a callback of
            :meth:`fit`, whose batches and step plans stay on the old device).
        ValueError
            For an unknown device, or a layer with host-only forward/backward code.

        Examples
        --------
        >>> import fastnn as fnn
        >>> model = fnn.Sequential([fnn.Dense(2, 4, activation="tanh"), fnn.Dense(4, 2)], seed=0)
        >>> model.to("cpu").device
        'cpu'
        """
        V.check_choice(device, backend.DEVICES, "device")
        self._target_device = device
        if device == self._device or not self.built:
            return self
        self._refuse_move_while_training(device)
        if device != "cpu":
            backend.require_cuda()
            for i, layer in enumerate(self.layers):
                if not layer.plannable():
                    raise ValueError(
                        f"layer {i} ({layer!r}) overrides forward/backward with host code, so the "
                        f"model cannot run on {device!r}; describe its work as forward_calls/"
                        f"backward_calls with kernels from self.K, or keep the model on 'cpu'"
                    )
        with self._lock:
            self._trainer_of(threading.get_ident(), f"to({device!r})")  # not under another thread's fit
            saved = [{name: backend.host_copy(buf) for name, buf in layer.buffers().items()} for layer in self.layers]
            self._building = True
            try:
                self.params = backend.to_device(self.params, device)
                self.grads = backend.to_device(self.grads, device)
                for layer in self.layers:  # build again: every layer buffer is allocated on the new device
                    layer.set_device(device)
                self._build_layers(self.input_shape)
                for layer in self.layers:
                    layer.training = self.training
                self._bind_views()
            finally:
                self._building = False
            for layer, state in zip(self.layers, saved):
                buffers = layer.buffers()
                for name, value in state.items():
                    backend.copy_into(buffers[name], value)
            self._device = device
            self._make_workspaces()
            if self.optimizer is not None and self.optimizer.is_bound:
                self.optimizer.rebind(self.params, self.grads)
                self._set_trainable()  # the sparse table's rows buffer is on the new device
        return self

    def _refuse_move_while_training(self, device: str) -> None:
        """RuntimeError when this thread is training the model (a fit callback): the running fit
        keeps its batch feeder, step plans and counters on the current device."""
        if self._trainer == threading.get_ident():
            raise RuntimeError(
                f"model.to({device!r}) was called while this model trains on {self._device!r} (from a "
                f"callback of fit?): the running fit's batches and step plans stay on {self._device!r}. "
                f"Move the model before fit or after it returns (e.g. fit a few epochs, call "
                f"model.to({device!r}), then fit again: training continues where it stopped)"
            )

    def _rows_in(self, rows: np.ndarray, workspace: Workspace, name: str, arena: str = "infer"):
        """Host rows as the model's input: themselves on the CPU, copied into ``workspace`` on a device."""
        if self._device == "cpu":
            return rows
        buf = workspace(rows.shape[0], arena)[name]
        self._staging.upload(buf, rows, name)
        return buf

    def __getitem__(self, index):
        """``model[i]``: layer i; ``model[a:b]``: a new, independent model of copies of those layers
        with their trained weights and buffers (e.g. the encoder of an autoencoder)."""
        if isinstance(index, slice):
            layers = list(self.layers)[index]
            if not layers:
                raise ValueError(
                    f"model[{index.start}:{index.stop}] selects no layers; this model has {len(self.layers)}"
                )
            shape = layers[0].input_shape if self.built else None
            return Sequential(
                copy.deepcopy(layers), seed=self.seed, dtype=self.dtype, device=self._device, input_shape=shape
            )
        return self.layers[index]

    def __len__(self) -> int:
        return len(self.layers)

    def named_parameters(self) -> list[tuple[str, np.ndarray, np.ndarray]]:
        """Every parameter with its gradient, in layer order.

        Returns
        -------
        list of tuple of (str, numpy.ndarray, numpy.ndarray)
            ``(name, value, grad)``, e.g. ``("0.weight", W, dW)``: views into ``model.params`` and
            ``model.grads`` (writing a value changes the model).

        Raises
        ------
        RuntimeError
            If the model is not built yet (no input shape).

        Examples
        --------
        >>> import fastnn as fnn
        >>> model = fnn.Sequential([fnn.Dense(2, 4, activation="tanh"), fnn.Dense(4, 2)], seed=0)
        >>> [(name, w.shape) for name, w, _ in model.named_parameters()]
        [('0.weight', (2, 4)), ('0.bias', (4,)), ('1.weight', (4, 2)), ('1.bias', (2,))]
        """
        self.require_built("named_parameters")
        return [
            (
                name,
                self.params[lo : lo + size_of(shape)].reshape(shape),
                self.grads[lo : lo + size_of(shape)].reshape(shape),
            )
            for name, lo, shape in self._param_index
        ]

    def count_params(self) -> int:
        """The number of parameters (trainable or not).

        Returns
        -------
        int
            ``model.params.size``.

        Raises
        ------
        RuntimeError
            If the model is not built yet (no input shape).

        Examples
        --------
        >>> import fastnn as fnn
        >>> model = fnn.Sequential([fnn.Dense(2, 4, activation="tanh"), fnn.Dense(4, 2)], seed=0)
        >>> model.count_params()
        22
        """
        self.require_built("count_params")
        return int(self.params.size)

    # -- modes ----------------------------------------------------------------------------------
    def train(self, mode: bool = True) -> Sequential:
        """Set training mode (dropout active, batch statistics) or evaluation mode.

        Parameters
        ----------
        mode : bool, default True
            True: training mode; False: evaluation mode (as :meth:`eval`).

        Returns
        -------
        Sequential
            ``self``.

        Examples
        --------
        >>> import fastnn as fnn
        >>> model = fnn.Sequential([fnn.Dense(2, 4, activation="tanh"), fnn.Dense(4, 2)], seed=0)
        >>> model.train(False).training, model.train().training
        (False, True)
        """
        self.training = bool(mode)
        for layer in walk_layers(self.layers):
            layer.training = self.training
        return self

    def eval(self) -> Sequential:
        """Set evaluation mode (no dropout, running statistics): ``train(False)``.

        Returns
        -------
        Sequential
            ``self``.

        Examples
        --------
        >>> import fastnn as fnn
        >>> model = fnn.Sequential([fnn.Dense(2, 4, activation="tanh"), fnn.Dense(4, 2)], seed=0)
        >>> model.eval().training
        False
        """
        return self.train(False)

    # -- the engine: eager forward/backward on contexts ------------------------------------------
    def _forward(self, x: np.ndarray, training: bool, arena: str = "eager") -> tuple[np.ndarray, list]:
        """(output, contexts): every layer's forward in order; the contexts feed :meth:`_backward`."""
        contexts: list[Context | None] = []
        lengths = None
        for layer in self.layers:
            if layer.plannable():
                ctx = Context(training, arena, lengths)
                calls, x = layer.forward_calls(x, ctx)
                for fn, args in calls:
                    fn(*args)
                lengths = layer.output_lengths(ctx)
                layer.last_output = x
                contexts.append(ctx)
            else:
                x = self._user_result(layer, layer.forward(x, training), x.shape[0], layer.output_shape, "forward")
                contexts.append(None)
        return x, contexts

    def _user_result(self, layer: Layer, value, batch: int, sample_shape, method: str) -> np.ndarray:
        """A user layer's forward output or input gradient as the next layer's kernels read it: an
        ndarray of the model's dtype, C-contiguous (a float64 result in a float32 model, or a
        reversed or transposed view, was read as raw memory), of the per-sample shape the layer
        declared (``sample_shape``; None: a build() that does not record it, not checked)."""
        if not isinstance(value, np.ndarray):
            what = "a NumPy array" if sample_shape is None else f"a NumPy array of shape {shape_str(sample_shape)}"
            raise TypeError(f"{layer!r}.{method}() returned {type(value).__name__}, not {what}")
        if sample_shape is not None and value.shape != (batch, *sample_shape):
            raise ValueError(
                f"{layer!r}.{method}() returned shape {value.shape}, but the layer was built for "
                f"{shape_str(sample_shape)}; a layer that changes the shape overrides build()"
            )
        if value.dtype.kind not in "fiub":
            raise TypeError(f"{layer!r}.{method}() returned dtype {value.dtype}; expected real numbers ({self.dtype})")
        return np.ascontiguousarray(value, dtype=self.dtype)

    def _backward(self, grad: np.ndarray, contexts: list, need_grad_x: bool) -> np.ndarray | None:
        for i in range(len(self.layers) - 1, -1, -1):
            grad = self._layer_backward(i, grad, contexts[i], need_grad_x or i > 0)
        return grad

    def _layer_backward(self, i: int, grad, ctx, need_grad_x: bool):
        """Layer i's backward from the context of its forward (None: a user layer's own backward)."""
        layer = self.layers[i]
        if ctx is None:
            batch = grad.shape[0]
            grad = layer.backward(grad, need_grad_x)
            if grad is not None:
                grad = self._user_result(layer, grad, batch, layer.input_shape, "backward")
        else:
            calls, grad = layer.backward_calls(grad, ctx, need_grad_x)
            for fn, args in calls:
                fn(*args)
        layer.last_grad_input = grad
        return grad

    def _check_x(self, X, argument="X"):
        if self._plain_input and V.ready_rows(X, self.dtype, self.input_shape):
            return X  # the fast lane: already what the kernels take (small steps and predictions)
        if not self.built:
            self._build_from(X)
        check_indices = getattr(self.layers[0], "check_indices", None)
        if check_indices is not None:
            return check_indices(X, argument)
        X = V.check_input(X, argument, self.dtype, self.input_shape, self._first_layer_name)
        check_sequences = getattr(self.layers[0], "check_sequences", None)
        if check_sequences is not None:
            check_sequences(X, argument)
        return X

    @property
    def _plain_input(self) -> bool:
        """Built, and the first layer takes float rows with no checks of its own (indices, lengths)."""
        return (
            self.built
            and getattr(self.layers[0], "check_indices", None) is None
            and getattr(self.layers[0], "check_sequences", None) is None
        )

    @property
    def _first_layer_name(self) -> str:  # only formatted when an error message needs it
        return _LazyText(lambda: f"the first layer ({self.layers[0]!r})")  # type: ignore[return-value]

    def forward(self, x, training: bool | None = None) -> np.ndarray:
        """The model's output for ``x``, keeping what :meth:`backward` needs.

        The kept state is in buffers of its own: a predict in between does not change it.
        ``model(x)`` is ``model.forward(x)``.

        Parameters
        ----------
        x : array_like
            ``(batch, *input_shape)``; converted to the model's input dtype.
        training : bool, optional
            Dropout and batch statistics on (True) or off; default: the model's mode.

        Returns
        -------
        numpy.ndarray
            ``(batch, *output_shape)`` of the model's dtype, a new host array.

        Raises
        ------
        ValueError
            If ``x`` has the wrong shape or non-finite values.

        Examples
        --------
        >>> import fastnn as fnn
        >>> model = fnn.Sequential([fnn.Dense(2, 4, activation="tanh"), fnn.Dense(4, 2)], seed=0)
        >>> out = model.forward(np.ones((3, 2)))
        >>> out.shape, out.dtype
        ((3, 2), dtype('float32'))
        """
        x = self._check_x(x, "x")
        self.prepare("forward")
        training = self.training if training is None else bool(training)
        with self._lock:
            x = self._rows_in(x, self._feed, "x", "eager")
            out, contexts = self._forward(x, training)
            self._eager = (x.shape[0], contexts)
            return backend.host_copy(out)

    def backward(self, grad_out: ArrayLike) -> np.ndarray | None:
        """The gradient with respect to the input of the last :meth:`forward`.

        Also writes every parameter's gradient (``model.grads``, :meth:`named_parameters`).

        Parameters
        ----------
        grad_out : array_like
            d loss / d output, shaped like the last forward's output ``(batch, *output_shape)``.

        Returns
        -------
        numpy.ndarray or None
            ``(batch, *input_shape)`` host array of the model's dtype; None for a model whose input is
            integer indices.

        Raises
        ------
        RuntimeError
            If no forward() came first.
        ValueError
            If ``grad_out`` has another shape than that forward's output.

        Examples
        --------
        >>> import fastnn as fnn
        >>> model = fnn.Sequential([fnn.Dense(2, 4, activation="tanh"), fnn.Dense(4, 2)], seed=0)
        >>> out = model.forward(np.ones((3, 2)))
        >>> model.backward(np.ones_like(out)).shape
        (3, 2)
        """
        if self._eager is None:
            raise RuntimeError(
                "backward() needs a forward() first: call out = model.forward(x), then "
                "model.backward(d_loss/d_out) with an array shaped like out"
            )
        batch, contexts = self._eager
        grad = V.check_input(grad_out, "grad_out", self.dtype, self.output_shape, "the model's output")
        if grad.shape[0] != batch:
            raise ValueError(
                f"grad_out has {grad.shape[0]} rows but the last forward() had {batch}; pass the "
                f"gradient of that forward's output"
            )
        need_grad_x = self.input_dtype.kind == "f"  # no gradient with respect to integer indices
        with self._lock:
            grad_x = self._backward(self._rows_in(grad, self._grad_out, "grad", "eager"), contexts, need_grad_x)
            return None if grad_x is None else backend.host_copy(grad_x)

    __call__ = forward

    def layer_outputs(self, X, training: bool = False) -> list[np.ndarray]:
        """Every layer's output for input ``X``: the engine's view of the activations.

        For diagnostics and plots. Training mode draws dropout masks and batch statistics without
        changing running statistics or the model's state.

        Parameters
        ----------
        X : array_like
            ``(n, *input_shape)`` numeric inputs (int64 indices for an Embedding first layer); converted
            to the model's dtype.
        training : bool, default False
            Run the layers in training mode.

        Returns
        -------
        list of numpy.ndarray
            Host copies, in layer order: layer i's output ``(n, *layer i's output shape)``.

        Examples
        --------
        >>> import fastnn as fnn
        >>> model = fnn.Sequential([fnn.Dense(2, 4, activation="tanh"), fnn.Dense(4, 2)], seed=0)
        >>> [a.shape for a in model.layer_outputs(np.ones((3, 2)))]
        [(3, 4), (3, 2)]
        """
        X = self._check_x(X)
        self.prepare("layer_outputs")
        with self._lock, self._state_kept():
            _, contexts = self._forward(self._rows_in(X, self._feed, "x", "probe"), bool(training), "probe")
            return [backend.host_copy(layer.last_output) for layer in self.layers]

    def loss_and_grads(self, X, y, training: bool = True) -> tuple[float, dict[str, np.ndarray]]:
        """The loss and every parameter's gradient on one batch, without an update.

        Leaves ``model.grads`` filled; running statistics and dropout counters are left unchanged.

        Parameters
        ----------
        X : array_like
            ``(n, *input_shape)`` numeric inputs (int64 indices for an Embedding first layer); converted
            to the model's dtype.
        y : array_like
            The targets, as :meth:`fit` takes them.
        training : bool, default True
            Run the layers in training mode (dropout, batch statistics).

        Returns
        -------
        loss : float
            The batch's loss.
        grads : dict of str to numpy.ndarray
            Parameter name ("0.weight" ...) -> a host copy of its gradient.

        Raises
        ------
        RuntimeError
            If the model has no loss and optimizer (:meth:`compile`).

        Examples
        --------
        >>> import fastnn as fnn
        >>> model = fnn.Sequential([fnn.Dense(2, 4, activation="tanh"), fnn.Dense(4, 2)], seed=0)
        >>> X, y = fnn.data.make_xor(8, seed=0)
        >>> _ = model.compile(loss="cross_entropy", optimizer="sgd")
        >>> loss, grads = model.loss_and_grads(X, y)
        >>> sorted(grads), grads["0.weight"].shape
        (['0.bias', '0.weight', '1.bias', '1.weight'], (2, 4))
        """
        self.require_compiled("loss_and_grads")
        X, y = self._check_xy(X, y)
        y = self._weighed_by_the_fit(y)
        self.prepare("loss_and_grads")
        with self._lock, self._state_kept():
            out, contexts = self._forward(self._rows_in(X, self._feed, "x", "probe"), bool(training), "probe")
            grad = self._grad_out(X.shape[0], "probe")["grad"]
            loss = self.loss_value(out, self._target_in(y), grad, True, self._lengths_reaching_output(contexts))
            self._backward(grad, contexts, False)
            return float(loss), {name: backend.host_copy(g) for name, _, g in self.named_parameters()}

    def validate(self, X, y, batch_size: int | None = None, *, sample_weight=None) -> dict:
        """Metrics of the model on (X, y) in evaluation mode: the pass fit runs on validation data.

        Parameters
        ----------
        X : array_like
            ``(n, *input_shape)`` numeric inputs (int64 indices for an Embedding first layer); converted
            to the model's dtype.
        y : array_like
            The targets.
        batch_size : int, optional
            Rows per forward pass (memory, not results, unless a BatchNorm keeps no running statistics:
            it normalises each pass by its own): default 1024 on the CPU; on a GPU, as many as
            keep the widest activation under 256 MiB (each pass there costs launches and copies).
        sample_weight : array_like, optional
            (n,) weights of the loss.

        Returns
        -------
        dict
            ``{"loss": ..., "accuracy": ..., compiled metrics}`` (accuracy for classification
            losses).

        Raises
        ------
        RuntimeError
            If the model is not compiled.

        Examples
        --------
        >>> import fastnn as fnn
        >>> model = fnn.Sequential([fnn.Dense(2, 4, activation="tanh"), fnn.Dense(4, 2)], seed=0)
        >>> X, y = fnn.data.make_xor(8, seed=0)
        >>> _ = model.compile(loss="cross_entropy", optimizer="sgd")
        >>> sorted(model.validate(X, y))
        ['accuracy', 'loss']
        """
        self.require_compiled("validate")
        X, y = self._check_xy(X, y)
        rows = self._rows_per_pass(batch_size)
        return self._evaluate(X, y, rows, fit_options.training_weights(self, y, sample_weight, None))

    @contextlib.contextmanager
    def _state_kept(self):
        """The layers' buffers (running statistics, dropout counters) are restored on exit."""
        self._guard.save()
        try:
            yield
        finally:
            self._guard.restore()

    def _target_in(self, y):
        if self._device == "cpu":
            return y
        return backend.to_device(y, self._device)

    # -- snapshot / restore (checkpoint records) -------------------------------------------------
    def snapshot(self) -> dict:
        """Everything needed to continue exactly, as a plain record of host arrays and JSON-able values.

        Architecture, parameters, buffers, loss, optimizer config and state, training state (epochs
        done, position in the epoch, callback states). :meth:`restore` (or :meth:`from_snapshot`)
        rebuilds; :meth:`save` writes this record to a file.

        Returns
        -------
        dict
            The record (its arrays are copies).

        Raises
        ------
        RuntimeError
            If the model is not built yet (no input shape).

        Examples
        --------
        >>> import fastnn as fnn
        >>> model = fnn.Sequential([fnn.Dense(2, 4, activation="tanh"), fnn.Dense(4, 2)], seed=0)
        >>> X, y = fnn.data.make_xor(8, seed=0)
        >>> _ = model.compile(loss="cross_entropy", optimizer="sgd")
        >>> record = model.snapshot()
        >>> sorted(record["params"])
        ['0.bias', '0.weight', '1.bias', '1.weight']
        """
        self.require_built("snapshot")
        with self._lock:
            record = {
                "config": Sequential.get_config(self),  # (a subclass's get_config may describe its own arguments)
                "params": {name: backend.host_copy(v) for name, v, _ in self.named_parameters()},
                "buffers": {
                    f"{i}.{name}": backend.host_copy(buf)
                    for i, layer in enumerate(self.layers)
                    for name, buf in layer.buffers().items()
                },
                "loss": None if self.loss is None else self.loss.get_config(),
                "metrics": metrics_mod.to_config(self.metrics),
                "optimizer": None,
                "training": self.state.to_record(),
                "decay_bias_and_norm": self.decay_bias_and_norm,
                "training_mode": self.training,
                "frozen": freezing.frozen_paths(self),
            }
            if self.optimizer is not None:
                record["optimizer"] = {"config": self.optimizer.get_config(), "state": self.optimizer.state_dict()}
            return record

    def restore(self, record: dict) -> Sequential:
        """Load a :meth:`snapshot` record of a model of the same architecture into this one.

        Parameters
        ----------
        record : dict
            A :meth:`snapshot` record.

        Returns
        -------
        Sequential
            ``self``.

        Raises
        ------
        RuntimeError
            If the model is not built yet.
        ValueError
            If a parameter or buffer of the record does not match this model's, or another part of
            it (loss, optimizer and its state, metrics, training state) is refused; the model is
            then left as it was.

        Examples
        --------
        >>> import fastnn as fnn
        >>> model = fnn.Sequential([fnn.Dense(2, 4, activation="tanh"), fnn.Dense(4, 2)], seed=0)
        >>> X, y = fnn.data.make_xor(8, seed=0)
        >>> _ = model.compile(loss="cross_entropy", optimizer="sgd")
        >>> before, record = model.predict(X), model.snapshot()
        >>> _ = model.fit(X, y, epochs=1, verbose=0)
        >>> bool(np.array_equal(model.restore(record).predict(X), before))
        True
        """
        self.require_built("restore")
        with self._lock:
            self._trainer_of(threading.get_ident(), "restore")  # not under another thread's fit
            undo = self._undo_restore()
            try:
                self._restore_record(record)
            except BaseException:
                undo()
                raise
        return self

    def _undo_restore(self) -> Callable[[], None]:
        """A function putting back what :meth:`restore` changes (weights, buffers, frozen layers, loss,
        optimizer and its state, metrics, training state and mode), for a record refused half-way."""
        arrays = {name: backend.host_copy(a) for name, a in self.state_arrays().items()}
        trainable = [(layer, layer.trainable) for layer in freezing.layer_paths(self).values()]
        compiled = (self.loss, self.optimizer, self.metrics, self.decay_bias_and_norm)
        optimizer = self.optimizer
        optimizer_state = optimizer.state_dict() if optimizer is not None and optimizer.is_bound else None
        state, mode = dict(vars(self.state)), self.training

        def undo() -> None:
            for name, target in self.state_arrays().items():
                backend.copy_into(target, arrays[name])
            self.optimizer = None  # (no optimizer judges the flags while they go back)
            for layer, flag in trainable:
                layer.trainable = flag
            self.loss, self.optimizer, self.metrics, self.decay_bias_and_norm = compiled
            self._plans.clear()
            if optimizer is not None and optimizer_state is not None:
                optimizer.rebind(self.params, self.grads, self._decay_prefix())
                optimizer.load_state_dict(optimizer_state)
                self._set_trainable()
            vars(self.state).update(state)
            self.train(mode)

        return undo

    def _restore_record(self, record: dict) -> None:
        """:meth:`restore`'s work, in the model's lock (a refused part raises half-way)."""
        arrays = self.state_arrays()
        for name, value in record["params"].items():
            V.check_state_array(arrays, name, value)
        for name, value in record["buffers"].items():
            V.check_state_array(arrays, name, value)
        for name, value in {**record["params"], **record["buffers"]}.items():
            backend.copy_into(arrays[name], np.asarray(value))
        self._restore_frozen(record)
        if record.get("optimizer") is not None:
            loss = losses_mod.from_config(record["loss"]) if record.get("loss") is not None else None
            config = record["optimizer"]["config"]
            optimizer = self.optimizer
            if optimizer is None or _without_lr(optimizer.get_config()) != _without_lr(config):
                optimizer = optim_mod.optimizer_from_config(config)
            self.metrics = []  # the record's, below
            self.compile(
                loss if loss is not None else "mse",
                optimizer,
                decay_bias_and_norm=record.get("decay_bias_and_norm", False),
            )
            if loss is None:
                self.loss = None
            self._compiled_optimizer("restore").load_state_dict(record["optimizer"]["state"])
        elif record.get("loss") is not None:
            self.loss = losses_mod.from_config(record["loss"])
        self.metrics = metrics_mod.from_config(record.get("metrics"), self.loss)
        self.state.load_record(record.get("training") or {})
        self.train(record.get("training_mode", True))

    def _restore_frozen(self, record: dict) -> None:
        """Each layer's ``trainable`` as the record has it (its "frozen" paths; a record without them:
        the top-level layers its config marks untrainable)."""
        frozen = record.get("frozen")
        if frozen is None:
            entries = record.get("config", {}).get("layers", [])
            frozen = [str(i) for i, e in enumerate(entries) if isinstance(e, dict) and e.get("trainable") is False]
        for path, layer in freezing.layer_paths(self).items():
            if layer.trainable != (path not in frozen):
                layer.trainable = path not in frozen

    @classmethod
    def from_snapshot(cls, record: dict, device: str = "cpu") -> Sequential:
        """A new model rebuilt from a :meth:`snapshot` record.

        Parameters
        ----------
        record : dict
            A :meth:`snapshot` record.
        device : {"cpu", "cuda"}, default "cpu"
            Where the new model lives.

        Returns
        -------
        Sequential
            Equal to the snapshotted model (weights, optimizer state, training state).

        Raises
        ------
        ValueError
            As :meth:`from_config` (a container layer of the user's whose ``get_config`` leaves a
            child out is refused, naming both), or as :meth:`restore`.

        Examples
        --------
        >>> import fastnn as fnn
        >>> model = fnn.Sequential([fnn.Dense(2, 4, activation="tanh"), fnn.Dense(4, 2)], seed=0)
        >>> X, y = fnn.data.make_xor(8, seed=0)
        >>> _ = model.compile(loss="cross_entropy", optimizer="sgd")
        >>> clone = fnn.Sequential.from_snapshot(model.snapshot())
        >>> bool(np.array_equal(clone.predict(X), model.predict(X)))
        True
        """
        model = cls.from_config(record["config"])
        model.restore(record)
        return model.to(device)

    def _tags(self) -> dict:
        """The user's own attributes on the model and its layers (``model.note = ...``, kept as tags
        by ``__setattr__``): ``{"model": {name: value}, "layers": {path: {name: value}}}``, what a
        copy carries over (a copy's layers are rebuilt from their configs)."""
        layers = {path: tags for path, layer in freezing.layer_paths(self).items() if (tags := user_tags(layer))}
        return {"model": user_tags(self), "layers": layers}

    def _put_tags(self, tags: dict | None) -> None:
        """Set the :meth:`_tags` of the model copied (None: a copy pickled before tags were kept)."""
        if not tags:
            return
        paths = freezing.layer_paths(self)
        for obj, held in [(self, tags["model"]), *((paths[path], held) for path, held in tags["layers"].items())]:
            for name, value in held.items():
                object.__setattr__(obj, name, value)  # (a plain store: a tag is no argument or parameter)
                keep_as_tag(obj, name)

    def _copy_state(self) -> dict:
        """The model's own state a copy is rebuilt from (``{"record": ...}``, or ``{"unbuilt": ...}``
        before the input shape is known): Sequential's methods, whatever a subclass overrides. A
        user's container whose get_config leaves a child out: the child put back (``"fills"``), or
        a TypeError naming both (:func:`~fastnn._copies.described_children`); ``"classes"``: the model's layer
        classes by the names such a get_config gives them itself."""
        layers = [layer_to_config(layer, by_class=True) for layer in self.layers]
        fills, classes = copies.described_children(self, layers, "copy or pickle")
        extra = {key: value for key, value in (("fills", fills), ("classes", classes)) if value}
        if not self.built:
            state = {
                "layers": layers,
                "seed": self.seed,
                "dtype": self.dtype.name,
                "device": self._target_device,
                "compiled": {  # the objects themselves: an unbuilt optimizer holds no arrays
                    "loss": self.loss,
                    "optimizer": self.optimizer,
                    "metrics": list(self.metrics),
                    "decay_bias_and_norm": self.decay_bias_and_norm,
                    "training_mode": self.training,
                },
            }
            return {"unbuilt": state, **extra}
        record = Sequential.snapshot(self)
        record["config"]["layers"] = layers
        if record["loss"] is not None:  # by class, as the layers: a user's subclass comes back as itself
            record["loss"]["name"] = type(
                losses_mod.base_of(self.loss)
            )  # (a weighted fit's: its plain one, as the snapshot)
        if record["optimizer"] is not None:
            record["optimizer"]["config"]["name"] = type(self.optimizer)
        record["metrics"] = list(self.metrics)  # (restore copies them)
        record["device"] = self._device
        return {"record": record, **extra}

    def _subclass_attributes(self) -> dict:
        """The attributes a user's subclass of Sequential set on this model with its own code
        (``self.hidden = hidden`` in its ``__init__``, a property's setter; ``Sequential.__setattr__``
        notes their names), other than tags: ``{"dict": {name: value}, "slots": {name: value}}``
        (its ``__slots__`` that are set). Empty for a plain Sequential."""
        held, tags = vars(self), user_tags(self)
        names = sorted(held.get(_SUBCLASS_ATTRIBUTES, ()))
        own = {name: held[name] for name in names if name in held and name not in tags}
        slots = {}
        for name in _slot_names(type(self)):
            with contextlib.suppress(AttributeError):  # (a slot never set)
                slots[name] = object.__getattribute__(self, name)
        return {"dict": own, "slots": slots}

    def _carried(self) -> dict:
        """What a copy carries over besides the model's own state: the user's tags (on the model and
        its layers) and a subclass's own attributes."""
        return {"tags": self._tags(), "subclass": self._subclass_attributes()}

    def _pickled_carried(self) -> bytes:
        """:meth:`_carried`, pickled with the model's own objects as references (:func:`~fastnn._copies.anchors`): a
        subclass's ``self.head = self.layers[-1]`` is the unpickled model's layer."""
        carried, anchors = self._carried(), copies.anchors(self)
        buffer = io.BytesIO()
        try:
            copies.AnchoredPickler(buffer, anchors).dump(carried)
        except Exception as exc:
            values = {**carried["tags"]["model"], **carried["subclass"]["dict"], **carried["subclass"]["slots"]}
            for name, value in values.items():
                try:
                    copies.AnchoredPickler(io.BytesIO(), anchors).dump(value)
                except Exception:
                    raise TypeError(
                        f"cannot pickle this {type(self).__name__} model: its attribute {name!r} "
                        f"({type(value).__name__}) does not pickle ({type(exc).__name__}: {exc}); delete it "
                        f"or give it a value that pickles (a module-level function instead of a lambda, "
                        f"no open files or locks), or define __getstate__/__setstate__ in your subclass"
                    ) from exc
            raise
        return buffer.getvalue()

    def __getstate__(self):
        state = self._copy_state()
        state["carried"] = self._pickled_carried()
        return state

    def __reduce_ex__(self, protocol):
        # the state (__getstate__), then the model's parts themselves between two marks: each pickles
        # as a bare object there (a free copy if pickled before the model), which __setstate__ makes
        # the rebuilt model's part, so that pickle.dumps([model, model.layers[0]]) keeps them together
        reduced = super().__reduce_ex__(protocol)
        parts = copies.copy_parts(self)
        if not parts or not isinstance(reduced, tuple) or len(reduced) < 3 or not isinstance(reduced[2], dict):
            return reduced
        objects = list(parts.values())
        state = {
            **reduced[2],
            "parts_begin": PartsPickling(objects, True),
            "parts": parts,
            "parts_end": PartsPickling(objects, False),
        }
        return (*reduced[:2], state, *reduced[3:])

    def _restore_compiled(self, compiled: dict | None) -> None:
        """The loss, optimizer, metrics and mode of an unbuilt model's copy (``__getstate__``'s
        "compiled" objects, now the copy's own); None: a copy pickled before they were kept."""
        if compiled is None:
            return
        loss, optimizer, decay = compiled["loss"], compiled["optimizer"], compiled["decay_bias_and_norm"]
        if optimizer is not None:
            self.compile("mse" if loss is None else loss, optimizer, decay_bias_and_norm=decay)
        elif loss is not None:
            loss.set_owner(self)
        self.loss = loss  # (None: compiled above with a stand-in)
        self.metrics = metrics_mod.from_config(compiled["metrics"], loss)
        self.decay_bias_and_norm = decay
        self.train(compiled["training_mode"])

    def _put_copy_state(self, state: dict, earlier: dict | None = None) -> None:
        """Make this new object (no ``__init__`` run) the model :meth:`_copy_state` described, with
        Sequential's methods whatever a subclass overrides: a subclass's constructor, which may take
        other arguments, is never called (as torch and Keras copy a subclassed model). ``earlier``:
        objects of the copy made before it (``{key: object}`` of :func:`~fastnn._copies.copy_parts`'s keys, and
        ``("metric", i)``), which become its parts (:func:`~fastnn._copies.adopted`, :func:`~fastnn._copies.adopt_children`,
        :func:`~fastnn._copies.adopt_metrics`); a bare one that cannot be is filled as a free copy."""
        earlier = copies.part_keys(earlier)
        fills = state.get("fills") or {}

        def fresh(i: int, entry) -> Layer:
            layer = layer_from_config(entry)
            copies.put_children(layer, str(i), fills)  # (the children its container's get_config leaves out)
            layer = copies.adopted(layer, earlier.get(("layer", str(i))))
            copies.adopt_children(layer, str(i), earlier)  # (before the model: nothing else refers to them yet)
            return layer

        with _as_sequential(self), using_layer_classes(state.get("classes") or {}):
            if "unbuilt" in state:
                s = state["unbuilt"]
                layers = [fresh(i, e) for i, e in enumerate(s["layers"])]
                Sequential.__init__(self, layers, seed=s["seed"], dtype=s["dtype"], device=s.get("device", "cpu"))
                Sequential._restore_compiled(self, s.get("compiled"))
            else:
                record = state["record"]
                config = record["config"]
                Sequential.__init__(
                    self,
                    [fresh(i, e) for i, e in enumerate(config["layers"])],
                    seed=config["seed"],
                    dtype=config["dtype"],
                    input_shape=config["input_shape"],
                )
                Sequential.restore(self, record)
                Sequential.to(self, record.get("device", "cpu"))
        held = vars(self)
        if "record" in state:
            for i, layer in enumerate(held["layers"]):  # (the layers a build made: Residual's projection)
                copies.adopt_children(layer, str(i), earlier)
            # nothing else refers to the copy's optimizer and loss yet (their plans come later)
            for name in ("optimizer", "loss"):
                if held.get(name) is not None:
                    held[name] = copies.adopted(held[name], earlier.get((name,)))
        copies.adopt_metrics(self, earlier)
        copies.fill_unadopted(self, {key: part for key, part in earlier.items() if key[0] != "metric"})

    def _put_carried(self, carried: dict) -> None:
        """Set what :meth:`_carried` took from the model copied: its tags, and a subclass's own
        attributes (those the rebuilt model does not already have as its own state)."""
        self._put_tags(carried.get("tags"))
        own = carried.get("subclass") or {}
        for name, value in own.get("dict", {}).items():
            if name not in self.__dict__:
                self.__dict__[name] = value
                self.__dict__.setdefault(_SUBCLASS_ATTRIBUTES, set()).add(name)
        for name, value in own.get("slots", {}).items():
            object.__setattr__(self, name, value)

    def __setstate__(self, state):
        # the metric objects the state held are the unpickled ones a list pickled with the model
        # refers to (pickle.dumps([model, model.metrics[0]]), either order): the copy's metrics
        earlier = {**state.get("parts", {}), **{("metric", i): m for i, m in enumerate(copies.state_metrics(state))}}
        self._put_copy_state(state, earlier)
        if "carried" in state:
            carried = copies.AnchoredUnpickler(io.BytesIO(state["carried"]), copies.anchors(self)).load()
        else:  # a model pickled before subclasses' attributes were kept: its tags, if any
            carried = {"tags": state.get("tags")}
        self._put_carried(carried)

    def __deepcopy__(self, memo):
        cls = type(self)
        clone = cls.__new__(cls)
        memo[id(self)] = clone  # (what refers back to the model while it is copied: the copy)
        state = self._copy_state()
        # a layer or the optimizer copied earlier in this deepcopy (copy.deepcopy([model.layers[0],
        # model])): that copy becomes the copy's own, as torch's deepcopy keeps copies[0] is copies[1][0]
        earlier = {key: memo[id(part)] for key, part in copies.copy_parts(self).items() if id(part) in memo}
        if "unbuilt" in state:  # its loss, optimizer and metrics objects: copies of their own
            state = copy.deepcopy(state, memo)
            metrics = copies.state_metrics(state)  # (copies made earlier are among them: the memo's)
        else:  # (the state holds the model's own metric objects: copies made earlier are the memo's)
            metrics = [memo.get(id(metric)) for metric in vars(self).get("metrics") or ()]
        earlier.update({("metric", i): metric for i, metric in enumerate(metrics) if metric is not None})
        clone._put_copy_state(state, earlier)
        # what the tags and a subclass's attributes refer to: the copy's own model, layers, parameter
        # views, optimizer and loss (a tag that refers to the model refers to the copy)
        theirs, mine, carried = copies.anchors(clone), copies.anchors(self), self._carried()
        for key, obj in mine.items():
            if key in theirs and type(theirs[key]) is type(obj):  # (a weighted fit's loss: its base, below)
                memo[id(obj)] = theirs[key]
        loss = vars(self).get("loss")
        if isinstance(loss, losses_mod.SampleWeighted) and vars(clone).get("loss") is not None:
            memo.setdefault(id(loss.base), vars(clone)["loss"])  # (the wrapper copies as a free one around it)
        # views of the model's memory (self.row = self.layers[0].weight[0]): views of the copy's, as
        # torch's deepcopy keeps a view of a tensor's storage a view of the copied storage
        finder = copies.ViewFinder(mine)
        with contextlib.suppress(Exception):  # (what the walk cannot enter, the deep copy copies)
            finder.dump(carried)
        for view, key in finder.views.values():
            with contextlib.suppress(KeyError, TypeError, ValueError):  # (a root the copy lacks: copied)
                memo[id(view)] = copies.view_from_key(key, theirs)
        # the rest: deep copies, as torch's deepcopy of a module makes of its attributes
        clone._put_carried(copy.deepcopy(carried, memo))
        return clone

    def __copy__(self):
        raise TypeError(
            "a shallow copy of a model would share its parameters, buffers and layers, and a layer "
            "belongs to one model; use copy.deepcopy(model) for an independent copy (it keeps your "
            "own attributes, model.note = ..., on the model and its layers)"
        )

    # -- training ---------------------------------------------------------------------------------
    def compile(
        self, loss="cross_entropy", optimizer="sgd", *, metrics=None, decay_bias_and_norm: bool | None = None
    ) -> Sequential:
        """Choose the loss, the optimizer and the logged metrics.

        The optimizer's weight decay applies to weight matrices only; biases and normalisation
        parameters are excluded unless ``decay_bias_and_norm=True``. Compiling again with the
        optimizer already bound to this model keeps its state (moments, step count).

        Parameters
        ----------
        loss : str or Loss, default "cross_entropy"
            A name of ``fastnn.losses.LOSSES`` or a :class:`fastnn.losses.Loss` (a loss of
            another model is copied).
        optimizer : str or Optimizer, default "sgd"
            A name or an instance of :mod:`fastnn.optim`.
        metrics : list, optional
            Names ("f1", "auc", "r2", ...), :mod:`fastnn.metrics` objects or functions
            ``f(y_true, y_pred) -> float``, logged by fit (and ``"val_"`` ones) and evaluate; None keeps
            the current ones, [] removes them.
        decay_bias_and_norm : bool, optional
            Apply weight decay to biases and normalisation parameters too; None keeps the current
            choice (False at first).

        Returns
        -------
        Sequential
            ``self``.

        Raises
        ------
        ValueError
            For an unknown loss, optimizer or metric name, a metric that does not fit the loss, or an
            optimizer bound to another model.

        Examples
        --------
        >>> import fastnn as fnn
        >>> model = fnn.Sequential([fnn.Dense(2, 4, activation="tanh"), fnn.Dense(4, 2)], seed=0)
        >>> model = model.compile("cross_entropy", fnn.optim.SGD(lr=0.1), metrics=["f1"])
        >>> model.loss, [m.name for m in model.metrics]
        (CrossEntropy(reduction='mean'), ['f1'])
        """
        loss = losses_mod.get(loss)
        metrics = metrics_mod.check_metrics(self.metrics if metrics is None else metrics, loss)
        if loss.owner is not None and loss.owner is not self:
            import copy

            loss = copy.deepcopy(loss)  # a loss holds only scratch: each model gets its own
        optimizer = optim_mod.get(optimizer)
        if optimizer.owner is not None and optimizer.owner is not self:
            raise ValueError(
                f"this optimizer ({optimizer!r}) is already bound to another model; an optimizer "
                f"holds the state of one model's parameters: create a new one for this model, e.g. "
                f"fnn.optim.{type(optimizer).__name__}(...)"
            )
        if decay_bias_and_norm is not None:
            decay_bias_and_norm = V.check_bool(decay_bias_and_norm, "decay_bias_and_norm")
        with self._lock:
            self._trainer_of(threading.get_ident(), "compile")  # not under another thread's fit
            changed = decay_bias_and_norm is not None and decay_bias_and_norm != self.decay_bias_and_norm
            decay = self.decay_bias_and_norm if decay_bias_and_norm is None else decay_bias_and_norm
            keep = optimizer.is_bound and optimizer is self.optimizer
            if self.built and not keep:  # first: an optimizer this model refuses changes nothing of it
                self._bind_optimizer(optimizer, decay)
            self.loss = loss
            self.metrics = metrics
            loss.set_owner(self)
            self.decay_bias_and_norm = decay
            self.optimizer = optimizer
            optimizer.set_owner(self)
            if self.built:
                self._plans.clear()
                if keep and changed:  # the same optimizer goes on (moments, step count): only its decay range moves
                    optimizer.rebind(self.params, self.grads, self._decay_prefix())
                    self._set_trainable()
        return self

    def _decay_prefix(self, decay_bias_and_norm: bool | None = None) -> int:
        """The parameters the weight decay covers, ``params[:n]``: all with ``decay_bias_and_norm``
        (default: the model's choice), else the weight matrices."""
        decay_all = self.decay_bias_and_norm if decay_bias_and_norm is None else decay_bias_and_norm
        return self.params.size if decay_all else self.n_decay

    def _bind_optimizer(self, optimizer=None, decay_bias_and_norm: bool | None = None) -> None:
        """Bind ``optimizer`` (default: the model's) to the flat buffers (:meth:`_decay_prefix`)."""
        optimizer = self.optimizer if optimizer is None else optimizer
        optimizer.bind(self.params, self.grads, self._decay_prefix(decay_bias_and_norm))
        self._set_trainable(optimizer)

    def _set_trainable(self, optimizer=None) -> None:
        """The optimizer (default: the model's) learns the trainable ranges and the sparse table
        (``fastnn.freezing``); a ValueError if it cannot update that table."""
        optimizer = self.optimizer if optimizer is None else optimizer
        if optimizer is None:
            return
        optimizer.trainable = freezing.trainable_ranges(self)
        table = freezing.sparse_table(self)
        optimizer.sparse_rows = None if table is None else optim_mod.SparseRows(*table)

    def trainable_changed(self) -> None:
        """Called when a layer's ``trainable`` is set: the optimizer learns the new trainable ranges,
        and the step plans are recorded again (a frozen BatchNorm trains in inference mode).

        Examples
        --------
        >>> import fastnn as fnn
        >>> model = fnn.Sequential([fnn.Dense(2, 4), fnn.Dense(4, 1)]).compile("mse", "sgd")
        >>> model[0].trainable = False  # calls model.trainable_changed()
        >>> model.summary(print_fn=None).splitlines()[-2]
        'Non-trainable params: 12'
        """
        if self.built:
            self._plans.clear()
        if self.built and self.optimizer is not None:
            self._set_trainable()

    def freeze(self, *layers) -> Sequential:
        """Set ``trainable = False`` on the given layers (all layers when none is given).

        Frozen parameters get no updates (nor weight decay), and a frozen BatchNorm (or one inside
        a frozen layer) runs in inference mode in training steps, as in Keras: it normalises with
        its running statistics and leaves them unchanged; see ``fastnn.freezing``.

        Parameters
        ----------
        *layers : Layer, int or str
            Layer objects, indices or paths such as "2.block.0".

        Returns
        -------
        Sequential
            ``self``.

        Raises
        ------
        ValueError
            If a layer is not in this model.

        Examples
        --------
        >>> import fastnn as fnn
        >>> model = fnn.Sequential([fnn.Dense(2, 4, activation="tanh"), fnn.Dense(4, 2)], seed=0)
        >>> [layer.trainable for layer in model.freeze(0)]
        [False, True]
        """
        self._set_trainable_flags(freezing.resolve_layers(self, layers) if layers else self.layers, False)
        return self

    def unfreeze(self, *layers) -> Sequential:
        """Set ``trainable = True`` on the given layers (all layers, and those inside them, when none is
        given).

        Parameters
        ----------
        *layers : Layer, int or str
            Layer objects, indices or paths such as "2.block.0".

        Returns
        -------
        Sequential
            ``self``.

        Raises
        ------
        ValueError
            If a layer is not in this model, or the optimizer cannot train one of them (an
            ``Embedding(sparse=True)`` under an optimizer without its lazy update); then no layer
            changes.

        Examples
        --------
        >>> import fastnn as fnn
        >>> model = fnn.Sequential([fnn.Dense(2, 4, activation="tanh"), fnn.Dense(4, 2)], seed=0)
        >>> [layer.trainable for layer in model.freeze().unfreeze(1)]
        [False, True]
        """
        named = freezing.resolve_layers(self, layers) if layers else list(walk_layers(self.layers))
        self._set_trainable_flags(named, True)
        if layers:
            self._warn_still_frozen(named)
        return self

    def _warn_still_frozen(self, layers) -> None:
        """Warn for each of ``layers`` that stays frozen because a layer containing it is frozen
        (Keras's rule, which fastnn follows; torch's ``requires_grad_`` would train it)."""
        paths = freezing.layer_paths(self)
        where = {id(layer): path for path, layer in paths.items()}
        for layer in layers:
            path = where.get(id(layer))
            if path is None or not layer.frozen:
                continue
            parts = path.split(".")
            container = next(
                (".".join(parts[:i]) for i in range(1, len(parts)) if not paths[".".join(parts[:i])].trainable),
                None,
            )
            if container is not None:
                warnings.warn(
                    f"layer {path!r} ({type(layer).__name__}) stays frozen: the layer containing it at "
                    f"{container!r} has trainable=False, which freezes everything inside it; unfreeze "
                    f"that container too (model.unfreeze({container!r})) and freeze what should stay frozen",
                    UserWarning,
                    stacklevel=3,
                )

    def _set_trainable_flags(self, layers, value: bool) -> None:
        """``layer.trainable = value`` for each of ``layers``, all or none: when the optimizer refuses
        one (a sparse table it cannot update), the flags already set are put back."""
        done: list[tuple[Layer, bool]] = []
        try:
            for layer in layers:
                done.append((layer, layer.trainable))
                layer.trainable = value
        except BaseException:
            for layer, previous in reversed(done):
                layer.trainable = previous
            raise

    def require_compiled(self, what: str):
        """Raise a RuntimeError naming ``what`` unless the model has a loss and an optimizer.

        Binds the optimizer to the parameters if it is not yet.

        Parameters
        ----------
        what : str
            The caller's action, for the message.

        Raises
        ------
        RuntimeError
            If :meth:`compile` (or fit with ``loss=``/``optimizer=``) has not run.

        Examples
        --------
        >>> import fastnn as fnn
        >>> model = fnn.Sequential([fnn.Dense(2, 4, activation="tanh"), fnn.Dense(4, 2)], seed=0)
        >>> model.require_compiled("evaluate")
        Traceback (most recent call last):
        ...
        RuntimeError: evaluate needs a loss and an optimizer: ...
        """
        if self.loss is None or self.optimizer is None:
            raise RuntimeError(
                f"{what} needs a loss and an optimizer: call model.compile(loss=..., "
                f"optimizer=...) first, or pass them to fit()"
            )
        if self.built and not self.optimizer.is_bound:
            self._bind_optimizer()

    def check_data(self, X, y=None, argument: str = "X"):
        """(X, y) checked and converted as fit and evaluate take them: the public boundary other
        modules use before they call the engine.

        Parameters
        ----------
        X : array_like
            ``(n, *input_shape)`` numeric inputs (int64 indices for an Embedding first layer); converted
            to the model's dtype.
        y : array_like, optional
            The targets (needs a compiled model); None checks X alone.
        argument : str, default "X"
            X's name in error messages.

        Returns
        -------
        numpy.ndarray or tuple of numpy.ndarray
            X ``(n, *input_shape)`` C-contiguous of the input dtype; or (X, y), y as
            :meth:`target_shape` says.

        Raises
        ------
        ValueError
            If X or y has the wrong shape, dtype or non-finite values (the message names it).
        RuntimeError
            If y is given to a model without a loss.

        Examples
        --------
        >>> import fastnn as fnn
        >>> model = fnn.Sequential([fnn.Dense(2, 4, activation="tanh"), fnn.Dense(4, 2)], seed=0)
        >>> X, y = fnn.data.make_xor(8, seed=0)
        >>> _ = model.compile(loss="cross_entropy", optimizer="sgd")
        >>> Xc, yc = model.check_data(X, y)
        >>> Xc.dtype, yc.dtype, yc.shape
        (dtype('float32'), dtype('int64'), (8,))
        """
        if y is None:
            return self._check_x(X, argument)
        return self._check_xy(X, y, argument)

    def last_batch(self) -> np.ndarray | None:
        """A host copy of the input of the last training step.

        Returns
        -------
        numpy.ndarray or None
            ``(batch, *input_shape)``; None before any step.

        Examples
        --------
        >>> import fastnn as fnn
        >>> model = fnn.Sequential([fnn.Dense(2, 4, activation="tanh"), fnn.Dense(4, 2)], seed=0)
        >>> X, y = fnn.data.make_xor(8, seed=0)
        >>> _ = model.compile(loss="cross_entropy", optimizer="sgd")
        >>> model.last_batch() is None
        True
        >>> _ = model.train_step(X[:4], y[:4])
        >>> model.last_batch().shape
        (4, 2)
        """
        last = self.__dict__.get("_last_x")
        return None if last is None else backend.host_copy(last)

    def _check_xy(self, X, y, argument="X"):
        if y is None:
            raise ValueError(
                f"y is missing: the loss needs targets, one per sample of {argument}; for the model's "
                f"outputs alone use predict({argument})"
            )
        X = self._check_x(X, argument)
        self.require_compiled("training")
        if len(self.output_shape) == 1:
            return X, losses_mod.base_of(self.loss).check_targets(y, X.shape[0], self.output_shape[0], self.dtype)
        return X, self._check_position_targets(y, X.shape[0], self.output_lengths(X))

    def _weighed_by_the_fit(self, y: np.ndarray) -> np.ndarray:
        """Checked plain targets given while a weighted fit trains on the SampleWeighted loss (a
        callback calling train_step, loss_and_grads or a diagnostic): each sample weighs 1, which
        gives the plain loss and its gradients."""
        if isinstance(self.loss, losses_mod.SampleWeighted):
            return losses_mod.weighted_targets(y, np.ones(y.shape[: len(self._built_output_shape("training"))]))
        return y

    def _check_position_targets(self, y, n: int, lengths=None) -> np.ndarray:
        """Targets (n, *positions, ...) for an output (batch, *positions, k): one target per position.
        With the input's ``lengths`` (:meth:`output_lengths`) the targets of padded steps are not
        checked (torch's -100 there is fine) and come back as 0: the loss and metrics never read them."""
        loss, shape = losses_mod.base_of(self._compiled_loss("training")), self._built_output_shape("training")
        lead = shape[:-1]  # (the plain loss's targets: a weighted fit's weights come apart from them)
        arr = V.as_numeric_array(y, "y")
        if arr.shape[: 1 + len(lead)] != (n, *lead):
            per_row = "a label" if loss.target_spec(shape[-1], self.dtype)[0] == () else f"{shape[-1]} targets"
            raise ValueError(
                f"y has shape {arr.shape}, but the model's output is {shape_str(shape)}, "
                f"so y must start with ({n}, {', '.join(map(str, lead))}): {per_row} for each of the "
                f"{size_of(lead)} positions of each of the {n} samples"
            )
        arr = arr.reshape((n * size_of(lead), *arr.shape[1 + len(lead) :]))
        valid = self.valid_rows(lengths)
        if valid is not None and not valid.all():
            arr = np.array(arr)  # (a copy: the caller's y stays as given)
            arr[~valid] = 0
        rows = loss.check_targets(arr, n * size_of(lead), shape[-1], self.dtype)
        return rows.reshape((n, *lead, *rows.shape[1:]))

    def step_plan(self, m: int) -> _StepPlan | None:
        """The step plan for batch size ``m`` (built once, kept for reuse).

        A plan holds its input and target buffers ``x`` and ``y`` and the kernel calls of one
        training step: forward, the loss, backward and the gradient norm.

        Parameters
        ----------
        m : int
            The batch size.

        Returns
        -------
        _StepPlan or None
            The plan; None when a layer is not plannable (a user layer with NumPy code).

        Examples
        --------
        >>> import fastnn as fnn
        >>> model = fnn.Sequential([fnn.Dense(2, 4, activation="tanh"), fnn.Dense(4, 2)], seed=0)
        >>> X, y = fnn.data.make_xor(8, seed=0)
        >>> _ = model.compile(loss="cross_entropy", optimizer="sgd")
        >>> plan = model.step_plan(4)
        >>> plan.x.shape, plan.y.shape
        ((4, 2), (4,))
        """
        plan = self._plans.get(m)
        if plan is not None:
            return plan.with_optimizer(self.optimizer, self._step_token(), self._group_sum)
        if self._plannable:
            if len(self._plans) >= _MAX_PLANS:
                self._plans.clear()
            x = self._inputs(m)["x"]
            trailing, dtype = self.target_shape()
            y = backend.zeros((m, *trailing), dtype, self._device)
            forward, contexts, h, lengths = [], [], x, None
            for layer in self.layers:
                ctx = Context(True, "train", lengths)
                calls, h = layer.forward_calls(h, ctx)
                lengths = layer.output_lengths(ctx)
                forward.append(calls)
                contexts.append(ctx)
            pairs = conv_pool_fusion.find_pairs(forward)  # conv -> MaxPool (2 wide, tiling): one kernel pair
            forward = conv_pool_fusion.fuse_forward(forward, pairs)
            grad = self._grad_out(m)["grad"]
            backward: list = [None] * len(self.layers)
            g = grad
            after = self._backward_hook  # fastnn.distributed.Buckets: Allreduce starts
            for i in range(len(self.layers) - 1, -1, -1):
                calls, g = self.layers[i].backward_calls(g, contexts[i], i > 0)
                backward[i] = calls if after is None else [*calls, *after(i)]
            backward = conv_pool_fusion.fuse_backward(backward, pairs)
            K = backend.kernels(self._device)
            norm_call: tuple = (K.grad_global_norm, (self.grads, self._norm_partials))
            table = freezing.sparse_table(self, frozen_too=True)
            if table is not None:  # Embedding(sparse=True): its gradient is zero outside the rows it lists
                lo, _, width, rows = table
                norm_call = (K.sparse_grad_norm, (self.grads, self._norm_partials, lo, width, rows))
            loss = self._compiled_loss("step_plan")
            out_rows, y_rows, grad_rows = self.loss_rows(h, y, grad)
            if lengths is None:
                loss_call = loss.call(out_rows, y_rows, grad_rows)
            else:  # padded steps left out
                losses_mod.refuse_without_lengths(loss)
                loss_call = loss.call(out_rows, y_rows, grad_rows, True, lengths, self.per_step)
            chain = None if self._device != "cpu" else dense_chain.chain_call(forward, loss_call, backward, m)
            if chain is not None:  # Dense layers and their loss: one call, the batch's rows split over the threads
                flat_forward, loss_call, flat_backward = [], chain, []
            else:
                groups = norm_fusion.find_groups(forward)  # BatchNorm1d -> activation (-> Dropout): one kernel pair
                flat_forward = norm_fusion.fuse_forward(forward, groups)
                flat_backward = norm_fusion.fuse_backward(backward, groups)
            scalars = self._scalars
            if scalars is not None:  # a device: the loss and norm finished together, read with one copy
                loss_call, norm_call = _deferred(loss_call, scalars, 0), _deferred(norm_call, scalars, 1)
            plan = self._plans[m] = _StepPlan(
                x, y, h, flat_forward, loss_call, flat_backward, norm_call, contexts, lengths, scalars, self._staging
            )
            plan.with_optimizer(self.optimizer, self._step_token(), self._group_sum)
        return plan

    # -- engine hooks: what training, accumulation, distributed, streaming and freezing use ---------
    def set_gradient_reducer(self, reducer: Callable | None) -> None:
        """Install the function :meth:`run_step` calls between backward and the optimizer.

        Parameters
        ----------
        reducer : callable or None
            ``reducer(loss, grad_norm, output, target) -> (loss, grad_norm)``: may change
            ``model.grads`` in place (``fastnn.distributed`` sums them over the MPI ranks) and
            returns the loss and gradient norm the step goes on with. None removes it.

        Examples
        --------
        >>> import fastnn as fnn
        >>> model = fnn.Sequential([fnn.Dense(2, 3), fnn.Dense(3, 1)], seed=0).compile("mse", "sgd")
        >>> X, y = np.ones((4, 2), np.float32), np.ones((4, 1), np.float32)
        >>> seen = []
        >>> def reducer(loss, grad_norm, output, target):  # fastnn.distributed sums over the ranks here
        ...     seen.append((output.shape, target.shape))
        ...     return loss, grad_norm
        >>> model.set_gradient_reducer(reducer)
        >>> _ = model.run_step(*model.check_data(X, y))
        >>> model.set_gradient_reducer(None)
        >>> seen
        [((4, 1), (4, 1))]
        """
        if reducer is not None:
            self._refuse_sparse("gradients summed over processes (fastnn.distributed)")
        self._step_reduce = reducer

    def _refuse_sparse(self, what: str) -> None:
        """ValueError when a layer updates only the rows it looked up (``Embedding(sparse=True)``):
        ``what`` sums gradients from elsewhere, whose rows its update would miss."""
        for layer in self.layers:
            if getattr(layer, "sparse", False):
                raise ValueError(
                    f"{layer!r} updates only the rows this step looked up, so it cannot take {what}: "
                    f"build it with sparse=False"
                )

    def set_backward_hook(self, hook: Callable[[int], list] | None) -> None:
        """Install a function whose calls the step plans run right after each layer's backward.

        Parameters
        ----------
        hook : callable or None
            ``hook(i) -> list of (function, args)``: calls appended after layer ``i``'s backward
            calls (``fastnn.distributed`` starts a bucket's non-blocking Allreduce there). Python
            calls, so such steps run unfused. None removes it. The step plans are rebuilt.

        Examples
        --------
        >>> import fastnn as fnn
        >>> model = fnn.Sequential([fnn.Dense(2, 3), fnn.Dense(3, 1)], seed=0).compile("mse", "sgd")
        >>> X, y = np.ones((4, 2), np.float32), np.ones((4, 1), np.float32)
        >>> seen = []
        >>> model.set_backward_hook(lambda i: [(seen.append, (i,))])  # one call after layer i's backward
        >>> _ = model.run_step(*model.check_data(X, y))
        >>> model.set_backward_hook(None)
        >>> seen  # the backward runs from the last layer to the first
        [1, 0]
        """
        self._backward_hook = hook
        self.clear_plans()

    def set_accumulation(self, on: bool) -> GroupSum | None:
        """Make the step plans sum each step's gradients into a group (``fit(..., accumulate=k)``).

        Parameters
        ----------
        on : bool
            True: the step plans run the group sum's kernel after the gradient norm and hand its
            norm to the optimizer's update (``fastnn.accumulation.GroupSum``; a step it is not
            armed for is a plain step); False: they do not. The plans are rebuilt when this changes.

        Returns
        -------
        GroupSum or None
            The model's group sum (kept while on), or None.

        Examples
        --------
        >>> import fastnn as fnn
        >>> model = fnn.Sequential([fnn.Dense(2, 3), fnn.Dense(3, 1)], seed=0).compile("mse", "sgd")
        >>> group = model.set_accumulation(True)
        >>> group.total.shape == model.grads.shape, model.set_accumulation(True) is group
        (True, True)
        >>> model.set_accumulation(False) is None
        True
        """
        if on:
            self._refuse_sparse("gradients accumulated over batches (accumulate=k)")
        group = self._group_sum
        if not on:
            self._group_sum = None
        elif group is None or not group.bound_to(self.grads, self._norm_partials):
            self._group_sum = GroupSum(self.grads, self._norm_partials)
        return self._group_sum

    def state_guard(self) -> backend.StateGuard:
        """A new guard over the layers' state buffers (running statistics, dropout counters).

        Returns
        -------
        guard
            ``guard.save()`` copies the buffers, ``guard.restore()`` puts the copies back
            (``fastnn.accumulation`` makes a group of steps one transaction with it).

        Examples
        --------
        >>> import fastnn as fnn
        >>> model = fnn.Sequential([fnn.BatchNorm1d(2)], seed=0, input_features=2).compile("mse", "sgd")
        >>> guard = model.state_guard()
        >>> guard.save()
        >>> _ = model.fit(np.ones((4, 2), np.float32), np.ones((4, 2), np.float32), epochs=1, verbose=0)
        >>> model.layers[0].running_mean  # the epoch moved the running statistics
        array([0.1, 0.1], dtype=float32)
        >>> guard.restore(); model.layers[0].running_mean
        array([0., 0.], dtype=float32)
        """
        return backend.StateGuard([buf for buf, _ in self._guard.pairs])

    def grad_norm(self) -> float:
        """The global L2 norm of ``model.grads`` (fixed-chunk, deterministic).

        Returns
        -------
        float
            ``sqrt(sum(grads**2))`` accumulated in float64.

        Examples
        --------
        >>> import fastnn as fnn
        >>> model = fnn.Sequential([fnn.Dense(2, 3), fnn.Dense(3, 1)], seed=0).compile("mse", "sgd")
        >>> X, y = np.ones((4, 2), np.float32), np.ones((4, 1), np.float32)
        >>> _ = model.run_step(*model.check_data(X, y), update=False)
        >>> bool(np.isclose(model.grad_norm(), np.linalg.norm(model.grads.astype(np.float64))))
        True
        """
        return backend.kernels(self._device).grad_global_norm(self.grads, self._norm_partials)

    def plan_keys(self) -> tuple:
        """Keys of the recorded plans.

        Returns
        -------
        tuple
            Batch sizes of step plans and ``("fused-infer", rows)`` of inference plans.

        Examples
        --------
        >>> import fastnn as fnn
        >>> model = fnn.Sequential([fnn.Dense(2, 3), fnn.Dense(3, 1)], seed=0).compile("mse", "sgd")
        >>> X, y = np.ones((4, 2), np.float32), np.ones((4, 1), np.float32)
        >>> _ = model.fit(X, y, epochs=1, batch_size=4, verbose=0)
        >>> model.plan_keys()  # the step plan of batches of 4 rows
        (4,)
        """
        return tuple(self._plans)

    def clear_plans(self) -> None:
        """Forget the recorded step and inference plans; the next step records them again (after
        a layer's calls changed without a public attribute set, e.g. ``BatchNorm1d.set_synchronizer``).

        Examples
        --------
        >>> import fastnn as fnn
        >>> model = fnn.Sequential([fnn.Dense(2, 3), fnn.Dense(3, 1)], seed=0).compile("mse", "sgd")
        >>> X, y = np.ones((4, 2), np.float32), np.ones((4, 1), np.float32)
        >>> _ = model.fit(X, y, epochs=1, batch_size=4, verbose=0)
        >>> model.clear_plans()
        >>> model.plan_keys()
        ()
        """
        self._plans.clear()

    @property
    def plannable(self) -> bool:
        """Whether every layer describes its work as kernel calls (then steps run as recorded plans).

        Examples
        --------
        >>> import fastnn as fnn
        >>> model = fnn.Sequential([fnn.Dense(2, 3), fnn.Dense(3, 1)], seed=0).compile("mse", "sgd")
        >>> model.plannable  # Dense layers describe their work as kernel calls
        True
        """
        return self._plannable

    def recorded_plan(self, key: tuple):
        """The plan kept under ``key``, if one is and the model's buffers are current.

        Parameters
        ----------
        key : tuple
            As for :meth:`cached_plan`.

        Returns
        -------
        object or None
            The plan; None when none is kept, or a layer changed since (the next full call rebuilds).

        Examples
        --------
        >>> import fastnn as fnn
        >>> model = fnn.Sequential([fnn.Dense(2, 3), fnn.Dense(3, 1)], seed=0).compile("mse", "sgd")
        >>> X, y = np.ones((4, 2), np.float32), np.ones((4, 1), np.float32)
        >>> model.recorded_plan(4) is None  # no step of 4 rows ran yet
        True
        >>> _ = model.fit(X, y, epochs=1, batch_size=4, verbose=0)
        >>> model.recorded_plan(4) is None
        False
        """
        return None if self._stale else self._plans.get(key)

    def cached_plan(self, key: tuple, make: Callable, keep: int):
        """The plan kept under ``key`` among the model's plans, made on first use.

        Parameters
        ----------
        key : tuple
            (kind, ...), e.g. ("fused-infer", rows); plans are dropped when the buffers are rebuilt.
        make : callable
            ``make()`` builds the plan when none is kept under ``key``.
        keep : int
            At most this many plans of the kind ``key[0]`` stay (the oldest go).

        Returns
        -------
        object
            The plan.

        Examples
        --------
        >>> import fastnn as fnn
        >>> model = fnn.Sequential([fnn.Dense(2, 3), fnn.Dense(3, 1)], seed=0).compile("mse", "sgd")
        >>> model.cached_plan(("mine", 1), lambda: "plan of 1", keep=1)
        'plan of 1'
        >>> model.cached_plan(("mine", 2), lambda: "plan of 2", keep=1)  # keep=1: ("mine", 1) goes
        'plan of 2'
        >>> model.plan_keys()
        (('mine', 2),)
        """
        found = self._plans.get(key)
        if found is None:
            mine = [k for k in self._plans if isinstance(k, tuple) and k[0] == key[0]]
            for k in mine[: max(0, len(mine) - keep + 1)]:
                del self._plans[k]
            found = self._plans[key] = make()
        return found

    @property
    def lock(self) -> contextlib.AbstractContextManager:
        """The model's re-entrant lock: hold it around calls that share the model's scratch.

        Examples
        --------
        >>> import fastnn as fnn
        >>> model = fnn.Sequential([fnn.Dense(2, 3), fnn.Dense(3, 1)], seed=0).compile("mse", "sgd")
        >>> with model.lock:  # re-entrant: fit and predict may take it again inside
        ...     out = model.predict(np.ones((2, 2), np.float32))
        >>> out.shape
        (2, 1)
        """
        return self._lock

    @property
    def parameter_layout(self) -> tuple[tuple[int, str, int, tuple], ...]:
        """(layer index, parameter name, offset in ``model.params``, shape) of every parameter.

        Examples
        --------
        >>> import fastnn as fnn
        >>> model = fnn.Sequential([fnn.Dense(2, 3), fnn.Dense(3, 1)], seed=0).compile("mse", "sgd")
        >>> model.parameter_layout  # weights first (they get weight decay), then biases
        ((0, 'weight', 0, (2, 3)), (0, 'bias', 9, (3,)), (1, 'weight', 6, (3, 1)), (1, 'bias', 12, (1,)))
        """
        return tuple(self._layout)

    def _step_token(self):
        """The optimizer's ``fused_step_token`` (None: no optimizer, or it steps from Python)."""
        return None if self.optimizer is None else self.optimizer.fused_step_token()

    @contextlib.contextmanager
    def training_session(self, what: str):
        """A context in which the calling thread trains this model.

        One model is trained from one thread at a time; the same thread may nest sessions.

        Parameters
        ----------
        what : str
            The caller's action, for the message.

        Yields
        ------
        None
            Inside the block, this thread is the model's trainer.

        Raises
        ------
        RuntimeError
            If another thread is training the model.

        Examples
        --------
        >>> import fastnn as fnn
        >>> model = fnn.Sequential([fnn.Dense(2, 4, activation="tanh"), fnn.Dense(4, 2)], seed=0)
        >>> X, y = fnn.data.make_xor(8, seed=0)
        >>> _ = model.compile(loss="cross_entropy", optimizer="sgd")
        >>> with model.training_session("my loop"):
        ...     _ = model.train_step(X, y)
        """
        me = threading.get_ident()
        attrs = self.__dict__  # plain stores: Sequential.__setattr__ (the fixed names' guard) costs ~0.2 us a call
        with self._lock:
            previous = self._trainer_of(me, what)
            attrs["_trainer"] = me
        try:
            yield
        finally:
            attrs["_trainer"] = previous

    def _trainer_of(self, me: int, what: str) -> int | None:
        """The thread training this model now (None: none), to restore after ``me`` has trained it;
        refuses when that is another thread. Called under ``self._lock``."""
        previous = self._trainer
        if previous is not None and previous != me:
            raise RuntimeError(
                f"{what}: this model is being trained by another thread; train one model from "
                f"one thread at a time (copy.deepcopy(model) gives each thread its own)"
            )
        return previous

    def run_step(self, xb: np.ndarray, yb: np.ndarray, *, update: bool = True) -> tuple[float, np.ndarray]:
        """One training step on checked arrays: forward, loss, backward and (by default) the update.

        Transactional: if it fails (an exception, a non-finite loss or gradient), the model is left as
        before it.

        Parameters
        ----------
        xb : numpy.ndarray
            ``(batch, *input_shape)``, checked (:meth:`check_data`), or a step plan's own buffer.
        yb : numpy.ndarray
            The batch's checked targets.
        update : bool, default True
            False: the gradients only, in ``model.grads`` (no optimizer step). In an accumulating
            fit (:meth:`set_accumulation`, its group sum armed for the step) True marks the
            group's last batch: the update uses the group's gradients and norm.

        Returns
        -------
        loss : float
            The batch's loss.
        output : numpy.ndarray
            ``(batch, *output_shape)``: a view of the model's buffer, valid until the next step.

        Raises
        ------
        FloatingPointError
            If the loss or the gradient norm is not finite (naming the first layer that went
            non-finite); the step is not applied.

        Examples
        --------
        >>> import fastnn as fnn
        >>> model = fnn.Sequential([fnn.Dense(2, 4, activation="tanh"), fnn.Dense(4, 2)], seed=0)
        >>> X, y = fnn.data.make_xor(8, seed=0)
        >>> _ = model.compile(loss="cross_entropy", optimizer="sgd")
        >>> xb, yb = model.check_data(X, y)
        >>> loss, out = model.run_step(xb, yb, update=False)
        >>> out.shape
        (8, 2)
        """
        optimizer = self.optimizer
        if self.loss is None or optimizer is None or not optimizer.is_bound:  # (else nothing to do: fit's steps)
            self.require_compiled("run_step")  # raises, or binds the optimizer
            optimizer = self._compiled_optimizer("run_step")
        with self._lock:
            guard = self._guard
            if guard.pairs:
                guard.save()
            step_count = optimizer.step_count
            inside = False  # whether the optimizer's update ran inside the step's compiled call
            try:
                plan = self.step_plan(xb.shape[0])
                if plan is None:  # a user layer runs its own forward/backward
                    out, contexts = self._forward(xb, True, "train")
                    grad = self._grad_out(xb.shape[0])["grad"]
                    loss = self.loss_value(out, yb, grad, True, self._lengths_reaching_output(contexts))
                    self._backward(grad, contexts, False)
                    norm = backend.kernels(self._device).grad_global_norm(self.grads, self._norm_partials)
                    if self._group_sum is not None:
                        self._group_sum.run(norm)
                else:
                    if plan.token is not None:  # the update inside the call, unless ranks must sum first
                        inside = update and self._step_reduce is None
                        optimizer.begin_fused_step(inside)
                    if plan.feed is None:
                        loss, norm = plan.run(*plan.inputs(xb, yb))  # the batch read in place where it can be
                    else:  # fit on arrays: the batch gathered (and counted) inside the call
                        loss, norm = plan.feed.run(plan, xb, yb)
                    out = plan.out
                if self._step_reduce is not None:  # gradients summed over the ranks: global loss and norm
                    loss, norm = self._step_reduce(loss, norm, out, yb)
                if not (math.isfinite(loss) and math.isfinite(norm)):
                    guard.restore()
                    raise FloatingPointError(self._divergence_report(loss, norm, xb, yb))
                if self._group_sum is not None:  # an accumulating fit: the group's norm on its last batch
                    norm = self._group_sum.update_norm(norm, step_count + 1)
                if inside:
                    optimizer.end_fused_step(norm)
                elif update:
                    optimizer.step(grad_norm=norm)
                self.__dict__["_last_x"] = xb  # (a plain store: see training_session)
            except BaseException:
                if self._scalars is not None:  # a device: a reduction queued before the failure is not read later
                    self._scalars.clear()
                guard.restore()
                optimizer.step_count = step_count
                raise
            return loss, out

    def lane_ready(self, plan) -> bool:
        """Whether :meth:`lane_step` can run ``plan``'s steps: the optimizer's update inside the
        step's call, no gradient reduction over ranks, no accumulated group (what :meth:`run_step`
        then does is what :meth:`lane_step` does), and :meth:`run_step` is this class's own (a
        subclass's or an instance's replacement, a wrapper, is called by the step loop).

        Parameters
        ----------
        plan : _StepPlan or None
            A step plan of this model (``step_plan``).

        Returns
        -------
        bool
            True when the plan's steps can run in fit's lane.

        Examples
        --------
        >>> import numpy as np
        >>> import fastnn as fnn
        >>> X, y = np.random.default_rng(0).random((64, 3)).astype(np.float32), np.arange(64) % 2
        >>> model = fnn.Sequential([fnn.Dense(3, 2)], seed=0)
        >>> _ = model.compile(optimizer="adam", loss="cross_entropy")
        >>> model.lane_ready(None)
        False
        >>> _ = model.fit(X, y, epochs=1, batch_size=16, verbose=0)
        >>> model.lane_ready(model.step_plan(16))
        True
        """
        return (
            plan is not None
            and plan.token is not None
            and plan.scalars is None
            and self._step_reduce is None
            and self._group_sum is None
            and self.optimizer is not None
            and self.optimizer.is_bound
            and type(self).run_step is Sequential.run_step
            and "run_step" not in self.__dict__
        )

    def lane_step(self, plan, runner, args) -> float:
        """One step of fit's lane (``fastnn.training``: an epoch's steps back to back): what
        :meth:`run_step` does for a step whose batch ``plan``'s runner gathers inside its call
        (``runner(*args)``: the plan's armed step-feed runner), without its per-step lookups.
        Transactional as :meth:`run_step`; only where :meth:`lane_ready` holds. ``fit`` calls it.

        Parameters
        ----------
        plan : _StepPlan
            The step plan of the batch's size.
        runner : callable
            Its gathering runner (the step feed's ``lane_runner``).
        args : tuple
            The runner's arguments.

        Returns
        -------
        float
            The batch's loss.

        Raises
        ------
        FloatingPointError
            If the loss or the gradient norm is not finite (the step is not applied).

        Examples
        --------
        ``fit`` runs an epoch's steps through it when :meth:`lane_ready` holds for its plans:

        >>> import numpy as np
        >>> import fastnn as fnn
        >>> X, y = np.random.default_rng(0).random((64, 3)).astype(np.float32), np.arange(64) % 2
        >>> model = fnn.Sequential([fnn.Dense(3, 2)], seed=0)
        >>> _ = model.compile(optimizer="adam", loss="cross_entropy")
        >>> model.fit(X, y, epochs=2, batch_size=16, verbose=0).history["loss"][-1] > 0
        True
        """
        optimizer = self.optimizer
        if optimizer is None:  # (lane_ready holds: never here)
            raise RuntimeError("lane_step: the model has no optimizer; compile it first")
        with self._lock:
            guard = self._guard
            if guard.pairs:
                guard.save()
            step_count = optimizer.step_count
            try:
                optimizer.begin_fused_step(True)
                loss, norm = runner(*args)
                if not (math.isfinite(loss) and math.isfinite(norm)):
                    guard.restore()
                    raise FloatingPointError(self._divergence_report(loss, norm, plan.x, plan.y))
                optimizer.end_fused_step(norm)
                self.__dict__["_last_x"] = plan.x
            except BaseException:
                guard.restore()
                optimizer.step_count = step_count
                raise
            return loss

    def train_step(self, xb, yb) -> float:
        """One forward, loss, backward and optimizer update on a batch.

        Parameters
        ----------
        xb : array_like
            ``(batch, *input_shape)`` inputs.
        yb : array_like
            The batch's targets, as :meth:`fit` takes them.

        Returns
        -------
        float
            The batch's loss (before the update).

        Raises
        ------
        RuntimeError
            If the model is not compiled, or another thread is training it.
        FloatingPointError
            If the step diverged (the step is not applied).

        Examples
        --------
        >>> import fastnn as fnn
        >>> model = fnn.Sequential([fnn.Dense(2, 4, activation="tanh"), fnn.Dense(4, 2)], seed=0)
        >>> X, y = fnn.data.make_xor(8, seed=0)
        >>> _ = model.compile(loss="cross_entropy", optimizer="sgd")
        >>> first = model.train_step(X, y)
        >>> for _ in range(20):
        ...     last = model.train_step(X, y)
        >>> bool(last < first)
        True
        """
        # the fast lane: a batch like the last one that took the long way, through the compiled call
        # of its plan (forward, loss, backward, norm and update in one), as run_step's fused path and
        # transactional as it is; the long way (whose checks raise the errors) when the lane does not
        # take the arrays: of the lane's kind (type, shape, dtype, C-contiguous, aligned, writeable:
        # what its compiled function was made for), with values its loss accepts, and the model, its
        # loss, optimizer and plan unchanged since the lane was made. Inline, with the lock taken
        # once: each Python call and attribute read here is a share of a tiny network's step
        lane = self._lane
        if (
            lane is not None
            and type(xb) is _NDARRAY
            and type(yb) is _NDARRAY
            and xb.shape == lane.x_shape
            and yb.shape == lane.y_shape
            and xb.dtype is lane.x_dtype
            and yb.dtype is lane.y_dtype
            and xb.flags.carray  # C-contiguous, aligned and writeable (one flag test each)
            and yb.flags.carray
            and (lane.checked or self._lane_values_taken(lane, xb, yb))
        ):
            optimizer, plan = lane.optimizer, lane.plan
            lock = self._lock
            lock.acquire()
            try:
                # no trainer mark (as training_session sets) on the way through: the lock, held to the
                # end of the step, keeps every other thread out, and no layer's Python runs before it
                # is released (a divergence's report, which runs them, is marked)
                trainer = self._trainer
                if trainer is not None and trainer != _get_ident():
                    self._trainer_of(_get_ident(), "train_step")  # raises: another thread trains the model
                if not (
                    self._stale
                    or self.loss is not lane.loss
                    or self.optimizer is not optimizer
                    or self._step_reduce is not None
                    or self._plans.get(lane.batch) is not plan
                    or plan.run is not lane.runner
                    or plan.feed is not None
                ):
                    guard = self._guard
                    if guard.pairs:
                        guard.save()
                    step_count = optimizer.step_count
                    try:
                        if optimizer.arm_fused_step(lane.token):  # False: a new binding, trainable, ...
                            loss, norm = lane.fn(lane.head, xb, yb)
                            if _isfinite(loss) and _isfinite(norm):
                                optimizer.end_fused_step(norm)
                                self.__dict__["_last_x"] = xb  # (a plain store: see training_session)
                                return loss
                            guard.restore()
                            if not lane.checked or all_finite_pair(flat_rows(xb), yb):
                                attrs = self.__dict__  # marked the trainer while the report runs the layers
                                attrs["_trainer"] = _get_ident()
                                try:
                                    report = self._divergence_report(loss, norm, xb, yb)
                                finally:
                                    attrs["_trainer"] = trainer
                                raise FloatingPointError(report)
                            # a non-finite batch, not a divergence: the long way names it
                    except BaseException:
                        guard.restore()
                        optimizer.step_count = step_count
                        raise
            finally:
                lock.release()
        given_x, given_y = xb, yb
        xb, yb = self._check_xy(xb, yb, "xb")
        yb = self._weighed_by_the_fit(yb)
        if self._stale:
            self._refresh()
        # training_session, inlined: a generator-based context manager costs ~1 us, a tenth of a small step
        me = threading.get_ident()
        attrs = self.__dict__  # plain stores: Sequential.__setattr__ (the fixed names' guard) costs ~0.2 us a call
        with self._lock:
            previous = self._trainer_of(me, "train_step")
            attrs["_trainer"] = me
            try:
                loss = self.run_step(xb, yb)[0]
            finally:
                attrs["_trainer"] = previous
        self._lane = self._new_lane(xb is given_x and yb is given_y, xb, yb)
        return loss

    def _new_lane(self, given: bool, xb: np.ndarray, yb: np.ndarray) -> _TrainLane | None:
        """The fast lane for batches like (xb, yb), which just took the long way, or None when
        that step cannot be repeated with fewer checks: the arrays were converted (``given``
        False), or the step did not run as one compiled call with the update inside."""
        plan, shape = self._plans.get(xb.shape[0]), self.output_shape
        index_limit = self._lane_index_limit(xb)
        if not (
            given
            and shape is not None
            and plan is not None
            and plan.feed is None
            and plan.token is not None
            and self.optimizer is not None
            and self._step_reduce is None
            and len(shape) == 1
            and (self._plain_input or index_limit is not None)
            and xb.flags.writeable
            and yb.flags.writeable
            and (xb.shape, xb.dtype, yb.shape, yb.dtype) == (plan.x.shape, plan.x.dtype, plan.y.shape, plan.y.dtype)
        ):
            return None
        # the compiled function called without Numba's dispatch: the lane passes arrays of the slots' kind only
        call = plan.run.typed_slot_caller() or plan.run.slot_caller()
        if call is None:
            return None
        return _TrainLane(plan, call, self.loss, self.optimizer, xb, yb, shape[0], index_limit)

    def _lane_index_limit(self, xb: np.ndarray) -> int | None:
        """For checked int64 indices ``xb`` of a first layer whose whole check of such an array is
        the range of its values (``index_limit``: ``Embedding`` without ``mask_padding``), that
        range's bound, which the fast lane checks at every step; else None."""
        first = self.layers[0] if self.built else None
        if first is None or xb.dtype != np.int64 or getattr(first, "check_sequences", None) is not None:
            return None
        if getattr(first, "check_indices", None) is None:
            return None
        limit = getattr(first, "index_limit", None)
        return limit if type(limit) is int and limit > 0 else None

    def _lane_values_taken(self, lane: _TrainLane, xb: np.ndarray, yb: np.ndarray) -> bool:
        """Whether the lane's loss accepts the values of (xb, yb), arrays of the lane's kind, when its
        plan does not check them inside the call (finite, labels in range, ...), and, for index
        inputs, whether every index lies in the first layer's range (checked at every step: the
        array given may be the one of the step before, its values changed since). False sends the
        step the long way, whose checks raise the errors."""
        limit = lane.index_limit
        if limit is not None:
            if not labels_in_range(xb.reshape(-1), limit):
                return False
            if lane.plain_targets:
                return all_finite(yb)
            return lane.base_loss.check_targets(yb, xb.shape[0], lane.n_outputs, self.dtype) is yb
        x2 = xb if xb.ndim == 2 else xb.reshape(xb.shape[0], -1)
        if lane.plain_targets:
            return all_finite_pair(x2, yb)
        return all_finite(x2) and lane.base_loss.check_targets(yb, xb.shape[0], lane.n_outputs, self.dtype) is yb

    def _divergence_report(self, loss: float, norm: float, xb, yb) -> str:
        """Re-runs the failed step eagerly in training mode (same masks: the guard restored the
        counters) and names the first layer whose output, or gradient, went non-finite."""
        where = "the loss itself" if not math.isfinite(loss) else "the gradients"
        with self._state_kept():
            out, contexts = self._forward(xb, True, "probe")
            for i, layer in enumerate(self.layers):
                if layer.last_output is not None and not np.isfinite(backend.to_host(layer.last_output)).all():
                    where = f"the output of layer {i} ({layer!r})"
                    break
            else:
                if math.isfinite(loss):
                    grad = self._grad_out(out.shape[0], "probe")["grad"]
                    self.loss_value(out, yb, grad, True, self._lengths_reaching_output(contexts))
                    for i in range(len(self.layers) - 1, -1, -1):
                        layer = self.layers[i]
                        grad = self._layer_backward(i, grad, contexts[i], i > 0)
                        grads = [g for n, _, g in self.named_parameters() if n.startswith(f"{i}.")]
                        if any(not np.isfinite(backend.to_host(g)).all() for g in [grad, *grads] if g is not None):
                            where = f"the gradient of layer {i} ({layer!r})"
                            break
                    else:  # every gradient is finite, but their norm overflows: name the largest
                        largest = max(
                            (
                                (float(np.max(np.abs(backend.to_host(g)))), n)
                                for n, _, g in self.named_parameters()
                                if g.size
                            ),
                            default=None,
                        )
                        if largest is not None:
                            i = int(largest[1].split(".")[0])
                            where = (
                                f"none, but the gradients are too large for their norm: up to {largest[0]:.3g} "
                                f"in layer {i} ({self.layers[i]!r}, {largest[1]})"
                            )
        step = getattr(self.optimizer, "step_count", 0) + 1
        what = (
            f"the loss is {loss}"
            if not math.isfinite(loss)
            else f"the loss is finite ({loss:.4g}) but the gradient norm is {norm}"
        )
        return (
            f"Training diverged: {what} at step {step}; first non-finite value: {where}. The step was not "
            f"applied. Lower the learning rate, clip gradients (clip_norm=1.0) or standardise the inputs."
        )

    def fit(self, X, y=None, **options):
        """Train on (X, y) for ``epochs`` passes in mini-batches.

        A batch's loss with weights is ``sum w_i l_i / sum w_i``. Training can be interrupted
        (Ctrl-C stops after the current step) and resumed: see ``fastnn.training.fit``.

        Parameters
        ----------
        X : array_like, ArrayDataset or iterable of batches
            ``(n, *input_shape)`` numeric inputs; or a :class:`fastnn.data.ArrayDataset` (memory-mapped
            data, shuffled by block); or an iterable, iterator or callable of (X, y) batches, with y
            None and ``steps_per_epoch`` batches per epoch (``fastnn.streaming``).
        y : array_like, optional
            Integer labels (n,) for cross_entropy, else (n, outputs) or (n,) targets; None for a
            dataset or batches.
        loss : str or Loss, optional
            Compiles with it first (default: the compiled loss).
        optimizer : str or Optimizer, optional
            Compiles with it first (default: the compiled optimizer).
        epochs : int, default 1
            Passes over the data (counted in :attr:`epochs_done`).
        batch_size : int or None, default 32
            Samples per step (None: 32, Keras' default; batches given as an iterable are used as they come).
        shuffle : bool, default True
            Shuffle the samples each epoch (a seeded, counter-based order).
        validation_data : tuple, optional
            ``(X_val, y_val)`` or ``(X_val, y_val, w_val)``: adds val_loss, val_accuracy and the
            compiled metrics' ``"val_"`` values per epoch.
        callbacks : list of Callback, optional
            :mod:`fastnn.callbacks` objects. One that sets ``model.stop_training = True`` in a
            batch hook ends the epoch after that batch, as in Keras 3 (``fastnn.training``).
        verbose : {0, 1, 2}, default 1
            0 silent, 1 a progress bar per epoch, 2 one line per epoch.
        steps_per_epoch : int, optional
            Batches per epoch of a stream of batches.
        accumulate : int, default 1
            One update per ``accumulate`` batches, equal to one batch that many times larger
            (``fastnn.accumulation``).
        validation_split : float, default 0.0
            Hold out the last fraction of (X, y) (before shuffling) as validation data.
        sample_weight : array_like, optional
            (n,) float >= 0: weights of each sample's loss and its gradient; for a per-step output
            ``(n, time, ..., k)`` also ``(n, time)``, one per step (Keras' temporal weights), or one
            per position. The weighted mean is ``sum w l / sum w`` over the (valid) positions.
        class_weight : dict, optional
            ``{class: weight}``, multiplied into the sample weights (per position's label).

        Returns
        -------
        History
            The per-epoch logs: ``history["loss"]`` (the mean of the epoch's batch losses weighted
            by their rows, as Keras logs it), ``history["val_loss"]`` (:meth:`evaluate`'s loss of
            the validation set) ... Also ``model.history`` from the fit's start (Keras' attribute):
            an interrupted fit's holds the epochs it finished. Copies and files do not keep it.

        Raises
        ------
        ValueError
            For invalid data or arguments (the message names the argument and the fix).
        RuntimeError
            If no loss or optimizer is set, or another thread is training the model.
        FloatingPointError
            If training diverged (the failed step is not applied).

        Examples
        --------
        >>> import fastnn as fnn
        >>> model = fnn.Sequential([fnn.Dense(2, 4, activation="tanh"), fnn.Dense(4, 2)], seed=0)
        >>> X, y = fnn.data.make_xor(8, seed=0)
        >>> history = model.fit(X, y, loss="cross_entropy", optimizer="adam", epochs=2, batch_size=4,
        ...                     validation_split=0.25, verbose=0)
        >>> sorted(history.history)
        ['accuracy', 'loss', 'lr', 'val_accuracy', 'val_loss']
        """
        return training_mod.fit(self, X, y, **options)

    # the keywords are fastnn.training.fit's (their one source); help(model.fit) shows them
    fit.__signature__ = _method_signature(training_mod.fit)  # type: ignore[attr-defined]

    # -- inference --------------------------------------------------------------------------------
    def _predict(self, X: np.ndarray, batch_size: int) -> np.ndarray:
        self.prepare("predict")
        if inference.supported(self):  # recorded plans at every batch size, BatchNorm folded (fastnn._inference)
            with self._lock:
                return inference.predict(self, X, batch_size)
        if self.output_shape is None:  # prepare() refuses an unbuilt model first
            raise RuntimeError("predict needs a built model: call model.build(input_shape) or compile()")
        out = np.empty((X.shape[0], *self.output_shape), self.dtype)
        with self._lock:
            if self._staging is not None:
                return self._device_predict(X, batch_size, out)
            for lo in range(0, X.shape[0], batch_size):
                rows = self._rows_in(X[lo : lo + batch_size], self._feed, "x", "infer")
                result, _ = self._forward(rows, False, "infer")
                backend.copy_into(out[lo : lo + batch_size], result)  # (waits for the device)
                if self._staging is not None:
                    self._staging.settled()
        return out

    def _device_predict(self, X: np.ndarray, batch_size: int, out: np.ndarray) -> np.ndarray:
        """:meth:`_predict` on a device, into ``out``: one wait per wave of passes (all of them unless
        their rows in and outputs out pass :data:`DEVICE_WAVE_BYTES`), where each pass waited for its own.

        Each pass's rows go through their own rows of the staging's pinned "x" buffer and its outputs
        into their own rows of its "out" buffer, every copy queued on the default stream with the
        kernels (the stream orders them: a pass's buffers are rewritten by the next pass only after
        its copies), except the wave's last pass's outputs: copied straight into ``out`` by the copy
        that waits for the device, after which the others are on the host. The same kernels on the
        same rows: the outputs of one pass after another, bit for bit. The caller holds the lock."""
        staging, n = self._staging, X.shape[0]
        row_bytes = X[:1].nbytes + out[:1].nbytes
        wave = max(1, DEVICE_WAVE_BYTES // max(1, row_bytes) // batch_size) * batch_size
        for start in range(0, n, wave):
            stop = min(start + wave, n)
            last = start + (stop - 1 - start) // batch_size * batch_size  # the wave's last pass
            host_x = None
            host_out = staging.buffer("out", last - start, out.shape[1:], out.dtype) if last > start else None
            for lo in range(start, stop, batch_size):
                hi = min(lo + batch_size, stop)
                buf = self._feed(hi - lo, "infer")["x"]
                if host_x is None:
                    host_x = staging.buffer("x", stop - start, tuple(buf.shape[1:]), buf.dtype)
                rows = host_x[lo - start : hi - start]
                np.copyto(rows, X[lo:hi], casting="same_kind")
                backend.copy_into(buf, rows, staging.stream)  # queued
                result, _ = self._forward(buf, False, "infer")
                if lo == last or host_out is None:  # (None: a wave of one pass)
                    backend.copy_into(out[lo:hi], result)  # (waits for the device: the queued copies too)
                else:  # (into the rows out[start:last] takes from host_out below; a cast would copy at once)
                    backend.copy_into(host_out[lo - start : hi - start], result, staging.stream)  # queued
            staging.settled()
            if host_out is not None:
                out[start:last] = host_out
        return out

    def predict(self, X: ArrayLike, batch_size: int | None = None) -> np.ndarray:
        """The network's outputs (logits for classifiers) for X, in evaluation mode.

        Parameters
        ----------
        X : array_like
            ``(n, *input_shape)`` numeric inputs (int64 indices for an Embedding first layer); converted
            to the model's dtype.
        batch_size : int, optional
            Rows per forward pass (memory, not results, unless a BatchNorm keeps no running statistics:
            it normalises each pass by its own): default 1024 on the CPU; on a GPU, as many as
            keep the widest activation under 256 MiB (each pass there costs launches and copies).

        Returns
        -------
        numpy.ndarray
            ``(n, *output_shape)`` of the model's dtype.

        Raises
        ------
        ValueError
            If X has the wrong shape or non-finite values.
        TypeError
            If X is a dataset, generator or callable of batches (predict takes arrays).

        Examples
        --------
        >>> import fastnn as fnn
        >>> model = fnn.Sequential([fnn.Dense(2, 4, activation="tanh"), fnn.Dense(4, 2)], seed=0)
        >>> out = model.predict(np.zeros((3, 2)))
        >>> out.shape, out.dtype
        ((3, 2), dtype('float32'))
        """
        # a repeated small call: its checks inlined
        out = inference.predict_small(self, X, _PREDICT_BATCH if batch_size is None else batch_size)
        if out is not None:
            return out
        from . import streaming

        if streaming.is_stream(X):  # (it was read as an array of Python objects: "X is ragged")
            raise TypeError(
                f"predict takes an array of inputs (n, *input_shape), got {type(X).__name__}; for batches "
                f"from a generator or dataset predict each one: np.concatenate([model.predict(xb) for xb in "
                f"batches])"
            )
        rows = self._rows_per_pass(batch_size)
        return self._predict(self._check_x(X), rows)

    def _rows_per_pass(self, batch_size: int | None) -> int:
        """Rows per forward pass of predict/evaluate: ``batch_size`` when given (checked); else 1024
        on the CPU and, on a device, as many as keep the widest activation (input included) under
        ``_DEVICE_PASS_BYTES`` (at least 1024)."""
        if batch_size is not None:
            return V.check_int(batch_size, "batch_size", minimum=1)
        if self._device == "cpu" or not self.built:
            return _PREDICT_BATCH
        shapes = [self.input_shape, *(layer.output_shape for layer in walk_layers(self.layers))]
        widest = max(size_of(shape) for shape in shapes if shape is not None) * np.dtype(self.dtype).itemsize
        return max(_PREDICT_BATCH, _DEVICE_PASS_BYTES // max(1, widest))

    def plan_ahead(self, rows: int, batch_size: int | None = None) -> None:
        """Record now the inference plan that ``predict``/``validate`` will run on ``rows`` samples, so
        that its kernels compile along with the next first training step's (``fit`` does this for
        its validation data: on a cold start the step's compile workers take them too).

        Parameters
        ----------
        rows : int
            The number of samples that will be predicted.
        batch_size : int, optional
            Rows per forward pass (memory, not results, unless a BatchNorm keeps no running statistics:
            it normalises each pass by its own): default 1024 on the CPU; on a GPU, as many as
            keep the widest activation under 256 MiB. The ``batch_size`` of that ``predict`` call.

        Examples
        --------
        >>> import fastnn as fnn
        >>> model = fnn.Sequential([fnn.Dense(2, 4, activation="tanh"), fnn.Dense(4, 2)], seed=0)
        >>> model.plan_ahead(100)
        """
        rows = V.check_int(rows, "rows", minimum=1)
        batch_size = self._rows_per_pass(batch_size)
        self.prepare("plan_ahead")
        with self.lock:
            inference.expect(self, rows, batch_size)

    def predict_proba(self, X: ArrayLike, batch_size: int | None = None) -> np.ndarray:
        """Class probabilities: softmax of the logits (cross_entropy) or sigmoid (binary).

        Parameters
        ----------
        X : array_like
            ``(n, *input_shape)`` numeric inputs (int64 indices for an Embedding first layer); converted
            to the model's dtype.
        batch_size : int, optional
            Rows per forward pass (memory, not results, unless a BatchNorm keeps no running statistics:
            it normalises each pass by its own): default 1024 on the CPU; on a GPU, as many as
            keep the widest activation under 256 MiB (each pass there costs launches and copies).

        Returns
        -------
        numpy.ndarray
            ``(n, *output_shape)`` of the model's dtype; rows sum to 1 for cross_entropy.

        Raises
        ------
        RuntimeError
            If the model has no loss.
        TypeError
            If the loss is a regression loss.

        Examples
        --------
        >>> import fastnn as fnn
        >>> model = fnn.Sequential([fnn.Dense(2, 4, activation="tanh"), fnn.Dense(4, 2)], seed=0)
        >>> X, y = fnn.data.make_xor(8, seed=0)
        >>> _ = model.compile(loss="cross_entropy", optimizer="sgd")
        >>> proba = model.predict_proba(X)
        >>> proba.shape, bool(np.allclose(proba.sum(axis=1), 1))
        ((8, 2), True)
        """
        if self.loss is None:
            raise RuntimeError(
                "predict_proba needs a loss (it says how outputs become probabilities): call "
                "model.compile(loss=...) first"
            )
        out = self.predict(X, batch_size)
        return self.loss.probabilities(self.loss_rows(out, out)[0]).reshape(out.shape)

    def predict_classes(self, X: ArrayLike, batch_size: int | None = None) -> np.ndarray:
        """Predicted class labels: the ones accuracy compares.

        Argmax of the logits for cross_entropy, or (logit > 0) per output for binary and
        multi-label outputs.

        Parameters
        ----------
        X : array_like
            ``(n, *input_shape)`` numeric inputs (int64 indices for an Embedding first layer); converted
            to the model's dtype.
        batch_size : int, optional
            Rows per forward pass (memory, not results, unless a BatchNorm keeps no running statistics:
            it normalises each pass by its own): default 1024 on the CPU; on a GPU, as many as
            keep the widest activation under 256 MiB (each pass there costs launches and copies).

        Returns
        -------
        numpy.ndarray
            int64 ``(n, *positions)`` labels; ``(n, *positions, k)`` for k binary outputs.

        Examples
        --------
        >>> import fastnn as fnn
        >>> model = fnn.Sequential([fnn.Dense(2, 4, activation="tanh"), fnn.Dense(4, 2)], seed=0)
        >>> X, y = fnn.data.make_xor(8, seed=0)
        >>> _ = model.compile(loss="cross_entropy", optimizer="sgd")
        >>> labels = model.predict_classes(X)
        >>> labels.shape, labels.dtype
        ((8,), dtype('int64'))
        """
        out = self.predict(X, batch_size)
        rows = self.loss_rows(out, out)[0]
        if self.loss is not None and hasattr(self.loss, "predict_classes"):
            labels = self.loss.predict_classes(rows)
        else:
            labels = rows.argmax(axis=1) if rows.shape[1] > 1 else (rows[:, 0] > 0).astype(np.int64)
        return labels.reshape((*out.shape[:-1], *labels.shape[1:]))

    def _evaluate(self, X, y, batch_size, weights=None) -> dict:
        with self._lock:  # the loss's reduction scratch is shared: one evaluation at a time
            out = self._predict(X, batch_size)
            return metrics_mod.evaluate_outputs(self, out, y, weights, self.output_lengths(X))

    def evaluate(self, X, y=None, batch_size: int | None = None, *, sample_weight=None, class_weight=None) -> dict:
        """The loss, accuracy and compiled metrics on (X, y), in evaluation mode.

        The loss is that of all the samples as one batch: weighted, ``sum w_i l_i / sum w_i``; with
        ``reduction="sum"``, the sum over all samples. (The ``loss`` that :meth:`fit` logs is the
        mean of its batch losses weighted by their rows, as Keras logs it: the two differ for
        weighted fits and sum reductions.) Metrics are unweighted.

        Parameters
        ----------
        X : array_like, ArrayDataset or iterable of batches
            ``(n, *input_shape)`` inputs; or a :class:`fastnn.data.ArrayDataset`, or an iterable,
            iterator (consumed) or callable of (X, y[, w]) batches: the loss and metrics of all its
            samples together, equal to those of the same arrays.
        y : array_like, optional
            The targets (None for a dataset or batches: they come with the data).
        batch_size : int, optional
            Rows per forward pass (memory, not results, unless a BatchNorm keeps no running statistics:
            it normalises each pass by its own): default 1024 on the CPU; on a GPU, as many as
            keep the widest activation under 256 MiB (each pass there costs launches and copies).
        sample_weight : array_like, optional
            (n,) weights of the loss; (n, time) per step too for a per-step output, as in :meth:`fit`.
        class_weight : dict, optional
            ``{class: weight}``, multiplied into the sample weights.

        Returns
        -------
        dict
            ``{"loss": ..., "accuracy": ..., each compiled metric}`` (accuracy for classification
            losses), floats.

        Raises
        ------
        RuntimeError
            If the model is not compiled.
        ValueError
            For invalid data, or y or weights given beside a dataset or batches.

        Examples
        --------
        >>> import fastnn as fnn
        >>> model = fnn.Sequential([fnn.Dense(2, 4, activation="tanh"), fnn.Dense(4, 2)], seed=0)
        >>> X, y = fnn.data.make_xor(8, seed=0)
        >>> _ = model.compile(loss="cross_entropy", optimizer="sgd")
        >>> sorted(model.evaluate(X, y))
        ['accuracy', 'loss']
        """
        self.require_compiled("evaluate")
        from . import streaming

        if streaming.is_stream(X):
            given = [
                name
                for name, value in (("y", y), ("sample_weight", sample_weight), ("class_weight", class_weight))
                if value is not None
            ]
            if given:
                raise ValueError(
                    f"evaluate on a dataset or batches takes no {', '.join(given)}: the targets and "
                    f"weights come with the data (ArrayDataset(X, y, sample_weight=w), or (X, y, w) batches)"
                )
            return streaming.validation(self, X, once=True)()
        batch_size = self._rows_per_pass(batch_size)
        X, y = self._check_xy(X, y)
        return self._evaluate(X, y, batch_size, fit_options.training_weights(self, y, sample_weight, class_weight))

    # -- weights ----------------------------------------------------------------------------------
    def state_arrays(self) -> dict[str, np.ndarray]:
        """Every parameter and layer buffer by name.

        Returns
        -------
        dict of str to numpy.ndarray
            "0.weight" ..., "1.running_mean" ...: views on the model's device (device arrays on
            "cuda").

        Raises
        ------
        RuntimeError
            If the model is not built yet (no input shape).

        Examples
        --------
        >>> import fastnn as fnn
        >>> model = fnn.Sequential([fnn.Dense(2, 3), fnn.BatchNorm1d(3)])
        >>> sorted(model.state_arrays())
        ['0.bias', '0.weight', '1.bias', '1.num_batches_tracked', '1.running_mean', '1.running_var', '1.weight']
        """
        arrays = {name: value for name, value, _ in self.named_parameters()}
        for i, layer in enumerate(self.layers):
            arrays.update({f"{i}.{name}": buf for name, buf in layer.buffers().items()})
        return arrays

    def save_weights(self, path) -> None:
        """Write parameters and buffers to an .npz file (no pickle; written atomically).

        Parameters
        ----------
        path : str or os.PathLike
            The file (an .npz archive whatever its name, so a ``.safetensors`` name is refused).

        Raises
        ------
        ValueError
            For a path ending in ``.safetensors`` (:meth:`save` writes those).

        Examples
        --------
        >>> import fastnn as fnn
        >>> model = fnn.Sequential([fnn.Dense(2, 4, activation="tanh"), fnn.Dense(4, 2)], seed=0)
        >>> model.save_weights("weights.npz")
        >>> model.load_weights("weights.npz")
        """
        from .io import atomic_write

        if str(path).lower().endswith(".safetensors"):  # a file fnn.load would then misread
            raise ValueError(
                f"save_weights writes an .npz archive, not safetensors: got path {str(path)!r}; name it "
                f"'.npz', or use model.save(path) for a .safetensors file (weights and training state)"
            )
        with atomic_write(path) as handle:
            np.savez(handle, **{name: backend.to_host(arr) for name, arr in self.state_arrays().items()})  # type: ignore[arg-type]

    def load_weights(self, path) -> None:
        """Load parameters and buffers saved by :meth:`save_weights`; names and shapes must match.

        Parameters
        ----------
        path : str or os.PathLike
            An .npz file of :meth:`save_weights`.

        Raises
        ------
        ValueError
            If the file is not a readable .npz, or its arrays do not match this model's.
        TypeError
            If an array's dtype does not convert to the model's (complex values ...).

        Examples
        --------
        >>> import fastnn as fnn
        >>> model = fnn.Sequential([fnn.Dense(2, 4, activation="tanh"), fnn.Dense(4, 2)], seed=0)
        >>> model.save_weights("weights.npz")
        >>> other = fnn.Sequential([fnn.Dense(2, 4, activation="tanh"), fnn.Dense(4, 2)], seed=1)
        >>> other.load_weights("weights.npz")
        >>> bool(np.array_equal(other.params, model.params))
        True
        """
        from . import io

        expected = self.state_arrays()
        io.check_npz_file(path)
        try:  # every array read and checked before the first is copied: a bad file changes nothing
            with np.load(path, allow_pickle=False) as data:
                missing = sorted(set(expected) - set(data.files))
                unexpected = sorted(set(data.files) - set(expected))
                if missing or unexpected:
                    raise ValueError(f"{path} does not match this model: missing {missing}, unexpected {unexpected}")
                arrays = {name: data[name] for name in expected}
        except (zipfile.BadZipFile, EOFError, OSError) as exc:
            raise ValueError(
                f"{path} is not a readable .npz file of save_weights ({exc}); it may be truncated"
            ) from exc
        self.load_state_arrays(arrays, source=str(path))

    def load_state_arrays(self, arrays: dict, *, source: str = "arrays") -> None:
        """Copy ``arrays`` into the parameters and buffers of the same names (the checked inverse of
        :meth:`state_arrays`): every array is checked before the first is copied, so a refused set
        changes nothing.

        Parameters
        ----------
        arrays : dict of str to array_like
            One array per name of :meth:`state_arrays` (e.g. host copies of them kept earlier).
        source : str, default "arrays"
            What the arrays are, in error messages (a file's path).

        Raises
        ------
        ValueError
            If names are missing or unexpected, or an array's shape does not fit.
        TypeError
            If an array is not numeric or its dtype does not convert to the model's
            (``fastnn.model.checked_state_array``, the check of ``layer.weight = w``).
        RuntimeError
            If another thread is training the model (a fit's own callbacks may load).

        Examples
        --------
        >>> import fastnn as fnn
        >>> model = fnn.Sequential([fnn.Dense(2, 3), fnn.BatchNorm1d(3)], seed=0)
        >>> best = {name: a.copy() for name, a in model.state_arrays().items()}
        >>> model.params[:] = 0.0
        >>> model.load_state_arrays(best)
        >>> bool(np.array_equal(model.state_arrays()["0.weight"], best["0.weight"]))
        True
        """
        expected = self.state_arrays()
        missing = sorted(set(expected) - set(arrays))
        unexpected = sorted(set(arrays) - set(expected))
        if missing or unexpected:
            raise ValueError(f"{source} does not match this model: missing {missing}, unexpected {unexpected}")
        checked = {
            name: checked_state_array(f"{source}: {name}", arrays[name], target) for name, target in expected.items()
        }
        with self._lock:
            self._trainer_of(threading.get_ident(), "load_state_arrays")  # not under another thread's fit
            for name, target in expected.items():
                backend.copy_into(target, checked[name])

    # -- full save / load --------------------------------------------------------------------------
    def get_config(self) -> dict:
        """The JSON-able architecture: dtype, seed, input shape and each layer's class and config.

        Returns
        -------
        dict
            ``{"class": "Sequential", "dtype", "seed", "input_shape", "layers"}``;
            :meth:`from_config` rebuilds the model (with new weights). A model holding a container
            layer of the user's (at any depth) adds ``"structure"``: each such layer's children
            (paths, class names, parameter shapes, digests of their configs), by which
            :meth:`from_config` refuses to rebuild a container whose ``get_config`` leaves a child
            out, rather than rebuilding it without the child or with one of its defaults.

        Examples
        --------
        >>> import fastnn as fnn
        >>> model = fnn.Sequential([fnn.Dense(2, 4, activation="tanh"), fnn.Dense(4, 2)], seed=0)
        >>> config = model.get_config()
        >>> config["dtype"], config["input_shape"], len(config["layers"])
        ('float32', [2], 2)
        """
        entries = [layer_to_config(layer) for layer in self.layers]
        config = {
            "class": "Sequential",
            "dtype": self.dtype.name,
            "seed": self.seed,
            "input_shape": None if self.input_shape is None else list(self.input_shape),
            "layers": entries,
        }
        # a user's container whose get_config leaves a child out: from_config tells (its "structure")
        structure = copies.structure_fingerprint(self.layers, entries, self.input_shape, self.built)
        if structure is not None:
            config["structure"] = structure
        return config

    @classmethod
    def from_config(cls, config: dict, device: str = "cpu") -> Sequential:
        """A new model of the architecture :meth:`get_config` described (weights from its seed).

        Parameters
        ----------
        config : dict
            A :meth:`get_config` dict.
        device : {"cpu", "cuda"}, default "cpu"
            Where the new model lives.

        Returns
        -------
        Sequential
            A new, built model (when the config has an input shape).

        Raises
        ------
        ValueError
            If the config has no 'layers' list, a layer entry is malformed, or a layer class is
            unknown (custom layers must be registered first); if a container layer of the user's
            rebuilds without a child the configured model held, or with another in its place (its
            ``get_config`` leaves the child out: the message names the container and the child;
            checked against the config's ``"structure"``, where it has one).
        TypeError
            If a layer's config misses or has an unknown argument (the message names the layer).

        Examples
        --------
        >>> import fastnn as fnn
        >>> model = fnn.Sequential([fnn.Dense(2, 4, activation="tanh"), fnn.Dense(4, 2)], seed=0)
        >>> clone = fnn.Sequential.from_config(model.get_config())
        >>> bool(np.array_equal(clone.params, model.params))
        True
        """
        if not isinstance(config, dict) or not isinstance(config.get("layers"), (list, tuple)):
            raise ValueError(
                f"config must be a dict with a 'layers' list, as Sequential.get_config() gives, got {config!r:.200}"
            )
        layers = [layer_from_config(entry) for entry in config["layers"]]
        shape = config.get("input_shape")
        if shape is None and config.get("input_features") is not None:  # files of fastnn 0.1
            shape = (config["input_features"],)
        seed, dtype = config.get("seed", 0), config.get("dtype", "float32")  # (the constructor's defaults)
        arguments = {"seed": seed, "dtype": dtype, "input_shape": shape, "device": device}
        if cls is not Sequential and not _takes_sequential_arguments(cls, layers, arguments):
            raise TypeError(
                f"{cls.__name__}.from_config cannot make a {cls.__name__}: its constructor does not take "
                f"Sequential's arguments (layers, seed=, dtype=, input_shape=, device=), and the config "
                f"describes only the layers; override from_config in {cls.__name__} (as Keras asks of "
                f"subclassed models), or call fastnn.Sequential.from_config(config) for a plain Sequential"
            )
        # a user's container whose get_config left a child out (the config's "structure" tells): refused
        structure = config.get("structure")
        try:
            model = cls(layers, **arguments)
        except Exception as exc:  # (a child of its defaults in its place may not chain: that said first)
            problem = copies.structure_difference(structure, config["layers"], shape, layers, False, unfinished=True)
            if problem is not None:
                raise ValueError(problem) from exc
            raise
        problem = copies.structure_difference(structure, config["layers"], shape, layers, model.built)
        if problem is not None:
            raise ValueError(problem)
        return model

    def save(self, path) -> None:
        """Write everything needed to resume training exactly to one safetensors file, atomically.

        Architecture, weights and buffers, loss, optimizer state and step count, the position in the
        epoch, and the state of the callbacks of the last fit(); :func:`fastnn.load` reads it.

        A file holds no code (nothing in it is unpickled): a model of a user's subclass of Sequential
        is saved as its plain Sequential part, and :func:`fastnn.load` gives a ``Sequential`` with
        its layers, weights, optimizer and training state, without the subclass's methods and its
        own attributes, saying so with a UserWarning (here too). To get the subclass back, make
        one and restore the file's state into it, ``net = MyNet(...);
        net.restore(fnn.load(path).snapshot())``; pickling (or ``copy.deepcopy``) keeps the class and
        its attributes.

        Parameters
        ----------
        path : str or os.PathLike
            The file.

        Warns
        -----
        UserWarning
            For a model of a subclass of Sequential (see above); for a layer class, at any depth,
            not registered under its name (:func:`fastnn.layers.register_layer`), which ``fnn.load``
            would refuse or rebuild as another class.

        Raises
        ------
        RuntimeError
            If the model is not built yet.
        ValueError
            For a path ending in ``.npz`` (:meth:`save_weights` writes those; :meth:`load_weights`
            would misread this file).

        Examples
        --------
        >>> import fastnn as fnn
        >>> model = fnn.Sequential([fnn.Dense(2, 4, activation="tanh"), fnn.Dense(4, 2)], seed=0)
        >>> X, y = fnn.data.make_xor(8, seed=0)
        >>> _ = model.compile(loss="cross_entropy", optimizer="sgd")
        >>> model.save("model.safetensors")
        >>> bool(np.array_equal(fnn.load("model.safetensors").predict(X), model.predict(X)))
        True
        """
        from . import serialization

        if str(path).lower().endswith(".npz"):  # the weights archives' name: load_weights would misread it
            raise ValueError(
                f"save writes a safetensors file (weights and training state), not an .npz archive: got path "
                f"{str(path)!r}; name it '.safetensors', or use model.save_weights(path) for an .npz of the weights"
            )
        model_class = None
        if type(self) is not Sequential:  # a file holds no code: what fnn.load will give, said now
            model_class = f"{type(self).__module__}.{type(self).__qualname__}"
            attributes = self._subclass_attributes()
            own = sorted({**attributes["dict"], **attributes["slots"]})
            warnings.warn(
                f"save: {type(self).__name__} is a subclass of fastnn.Sequential, and a file holds no code: "
                f"fnn.load(path) will give a plain fastnn.Sequential with these layers, weights, optimizer "
                f"and training state, without {type(self).__name__}'s methods and own attributes "
                f"({', '.join(own) or 'none set'}); to get a {type(self).__name__} back, make one and "
                f"restore the file's state into it: net = {type(self).__name__}(...); "
                f"net.restore(fnn.load(path).snapshot()) (or pickle the model, which keeps its class)",
                UserWarning,
                stacklevel=2,
            )
        # a user's container whose get_config leaves a child out would load without it: refused.
        # Two descriptions of the layers on purpose, not one computed twice: this check rebuilds
        # the layers from descriptions *by class* (the model's own classes, registered or not, as
        # a copy does), so it asks only "does get_config describe every child?"; the file holds the
        # JSON description *by name* (snapshot -> get_config, with its "structure" record), whose
        # registry problems save_model warns about. Deriving one from the other is not safe: names
        # do not map back to classes (a user's Dense subclass named "Dense"), and turning classes
        # into names would rewrite values of a get_config that are not layer descriptions.
        copies.described_children(self, [layer_to_config(layer, by_class=True) for layer in self.layers], "save", False)
        serialization.save_model(self, path, model_class=model_class)

    # -- interop (fastnn/interop) --------------------------------------------------------------------
    def export_onnx(self, path, *, opset: int = 17):
        """Write this model as ONNX (needs onnx); see :func:`fastnn.export_onnx`.

        Parameters
        ----------
        path : str or os.PathLike
            The .onnx file.
        opset : int, default 17
            The ONNX opset version.

        Returns
        -------
        object
            What :func:`fastnn.export_onnx` returns.

        Raises
        ------
        ImportError
            If onnx is not installed.
        RuntimeError
            If the model is not built.
        NotImplementedError
            If a layer has no ONNX equivalent (a user subclass, for instance).
        ValueError
            If the opset is outside the supported range.

        Examples
        --------
        >>> import fastnn as fnn
        >>> model = fnn.Sequential([fnn.Dense(2, 3)])
        >>> _ = model.export_onnx("model.onnx")  # doctest: +SKIP
        """
        from .interop import export_onnx

        return export_onnx(self, path, opset=opset)

    def to_torch(self):
        """An equal ``torch.nn.Sequential`` (needs torch); see ``fastnn.interop.to_torch``.

        Returns
        -------
        torch.nn.Sequential
            With copies of this model's weights and buffers.

        Raises
        ------
        ImportError
            If torch is not installed.

        Examples
        --------
        >>> import fastnn as fnn
        >>> net = fnn.Sequential([fnn.Dense(2, 3)]).to_torch()  # doctest: +SKIP
        """
        from .interop import to_torch

        return to_torch(self)

    # -- description --------------------------------------------------------------------------------
    def summary(self, print_fn=print) -> str:
        """A table of the layers, their output shapes and parameter counts; printed and returned.

        Parameters
        ----------
        print_fn : callable or None, default print
            Called with the table; None prints nothing.

        Returns
        -------
        str
            The table, with the total, trainable and non-trainable parameter counts.

        Examples
        --------
        >>> import fastnn as fnn
        >>> model = fnn.Sequential([fnn.Dense(2, 4, activation="tanh"), fnn.Dense(4, 2)], seed=0)
        >>> text = model.summary(print_fn=None)
        >>> text.splitlines()[-4:]
        ['Total params: 22 (0.1 KiB)', 'Trainable params: 22', 'Non-trainable params: 0', 'Input shape: (batch, 2)']
        """
        rows = [("#", "Layer", "Output shape", "Params")]
        counts = [sum(size_of(s.shape) for s in layer.parameter_specs()) if self.built else 0 for layer in self.layers]
        for i, (layer, count) in enumerate(zip(self.layers, counts)):
            shape = shape_str(layer.output_shape) if layer.output_shape is not None else "?"
            rows.append((str(i), repr(layer), shape, f"{count:,}" if self.built else "?"))
        widths = [max(len(r[c]) for r in rows) for c in range(4)]
        line = "-" * (sum(widths) + 6)

        def fmt(r):
            return "  ".join(cell.ljust(w) if c < 3 else cell.rjust(w) for c, (cell, w) in enumerate(zip(r, widths)))

        total = (
            f"Total params: {sum(counts):,} ({self.params.nbytes / 1024:.1f} KiB)"
            if self.built
            else "Total params: unknown until the model is built (pass input_shape=...)"
        )
        if self.built:
            total += "\nTrainable params: {:,}\nNon-trainable params: {:,}".format(*freezing.parameter_counts(self))
        inputs = f"Input shape: {shape_str(self.input_shape)}" if self.built else "Input shape: not known yet"
        text = "\n".join(
            [
                f"Sequential (dtype={self.dtype.name}, device={self.device})",
                line,
                fmt(rows[0]),
                line,
                *map(fmt, rows[1:]),
                line,
                total,
                inputs,
            ]
        )
        if print_fn is not None:
            print_fn(text)
        return text

    def __repr__(self) -> str:
        inner = ",\n".join(f"  ({i}): {layer!r}" for i, layer in enumerate(self.layers))
        return f"Sequential(\n{inner}\n)"


def load(path, device: str = "cpu", *, verify: bool = True) -> Sequential:
    """Rebuild a model saved by ``model.save(path)``, ready to predict or to continue fit().

    A file saved from either device loads on either. The structure, dtypes and shapes are checked
    against the architecture whether or not the checksum is verified.

    Parameters
    ----------
    path : str or os.PathLike
        A file of :meth:`Sequential.save`.
    device : {"cpu", "cuda"}, default "cpu"
        Where the model lives.
    verify : bool, default True
        Check the file's checksum; False for a file whose checksum was removed.

    Returns
    -------
    Sequential
        The model, with its optimizer state and training position. Always a ``Sequential``: a file
        saved from a model of a user's subclass of Sequential holds no code, so the model comes
        back as its plain Sequential part, with a UserWarning naming the class (Keras likewise
        cannot rebuild a subclassed model from a file alone). To get the subclass back, make one
        and restore this state into it: ``net = MyNet(...); net.restore(fnn.load(path).snapshot())``.

    Raises
    ------
    fastnn.io.CorruptFileError
        (a ValueError) for a damaged, tampered or foreign file.
    RuntimeError
        If ``device="cuda"`` and CUDA is not available.

    Warns
    -----
    UserWarning
        For a file saved from a model of a subclass of Sequential (see Returns).

    Examples
    --------
    >>> import fastnn as fnn
    >>> model = fnn.Sequential([fnn.Dense(2, 3)], seed=0).compile("mse", "adam")
    >>> model.save("model.safetensors")
    >>> loaded = fnn.load("model.safetensors")
    >>> bool(np.array_equal(loaded.params, model.params)), loaded.loss
    (True, MSE(reduction='mean'))
    """
    from . import serialization
    from .io import CorruptFileError

    V.check_choice(device, backend.DEVICES, "device")
    if device != "cpu":
        backend.require_cuda()
    record, tensors = serialization.read_checkpoint(path, verify=verify)
    try:
        model = Sequential.from_config(record["config"])
        serialization.check_tensors(tensors, record, model.state_arrays(), model.dtype, path)
        model.restore(record)
    except CorruptFileError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError, IndexError, RecursionError) as exc:
        # metadata that passed the checksum only fails here for classes this process has not
        # registered (the message says so); with verify=False it may be anything
        raise CorruptFileError(
            f"{path}: cannot rebuild the model from its metadata, which is incomplete, "
            f"malformed or names unknown classes ({type(exc).__name__}: {exc})"
        ) from None
    model_class = record.get("model_class")
    if model_class is not None:
        short = model_class.rpartition(".")[2]
        warnings.warn(
            f"{os.fspath(path)} was saved from a model of {model_class}, a subclass of fastnn.Sequential; a "
            f"file holds no code, so this is a plain fastnn.Sequential with its layers, weights, optimizer "
            f"and training state, without {short}'s methods and own attributes; to get a {short} back, "
            f"make one and restore this state into it: net = {short}(...); net.restore(model.snapshot())",
            UserWarning,
            stacklevel=2,
        )
    return model.to(device)
