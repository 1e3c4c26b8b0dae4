"""Optimizers: thin objects holding hyper-parameters and flat state buffers over fused kernels.

A model keeps all its parameters in one contiguous 1-D buffer and the gradients in another of
the same layout, decayed parameters first (indices ``[0, n_decay)``; biases and norm parameters
after them). An optimizer is bound to those buffers once::

    opt = fastnn.optim.Adam(lr=1e-3, clip_norm=1.0)
    opt.bind(params, grads, n_decay)   # allocates the state buffers (params' size and dtype)
    opt.step()                         # clip + one fused pass over the buffers; no allocation
    opt.lr = 5e-4                      # schedules and callbacks set the learning rate

Each ``step()`` is one kernel call from ``fastnn.kernels.optim`` (plus one norm pass when
clipping by norm), or from ``fastnn.kernels.cuda.optim`` when the buffers are device arrays:
the state lives on the device of the parameters (``rebind`` moves it there). Semantics are those of ``torch.optim`` (SGD, RMSprop, Adagrad, Adam, AdamW)
and of the Lion paper; clipping by norm matches ``torch.nn.utils.clip_grad_norm_``.
:data:`OPTIMIZERS` is the one table of optimizers, used by :func:`get` and by the tests.
"""

from __future__ import annotations

import math
import struct
from typing import Any, ClassVar, NamedTuple

import numpy as np

from . import backend
from ._ownership import Owned
from ._validation import check_bool as _check_bool
from ._validation import check_choice, check_float, check_int
from .kernels import step_update

#: writes the step scalars ARMED, LR, STEP, CLIP_NORM, CLIP_VALUE (positions 0-4, in that order:
#: tests/test_optim.py checks it) as native float64, in one call
_pack_begin = struct.Struct("=5d").pack_into
_ARMED, _LR, _STEP, _CLIP_NORM, _CLIP_VALUE = (  # the indices of the scalars
    step_update.ARMED,
    step_update.LR,
    step_update.STEP,
    step_update.CLIP_NORM,
    step_update.CLIP_VALUE,
)
_NAN = math.nan


class SparseRows(NamedTuple):
    """A table of the flat buffers updated row by row (``Embedding(sparse=True)``; the model sets
    :attr:`Optimizer.sparse_rows` from such a layer).

    Parameters
    ----------
    lo : int
        Where the table starts in the flat buffers.
    hi : int
        Where it ends (``lo`` + rows x ``width``).
    width : int
        Elements per row.
    rows : ndarray
        int64 (V + 1,), on the buffers' device: the count of rows the last backward looked up,
        then those rows, sorted (``fastnn.kernels.embedding.embedding_rows`` writes it).

    Examples
    --------
    >>> import fastnn as fnn
    >>> model = fnn.Sequential([fnn.Embedding(5, 2, sparse=True)], input_shape=(3,)).compile("mse", "adam")
    >>> table = model.optimizer.sparse_rows
    >>> table.lo, table.hi, table.width, table.rows.shape
    (0, 10, 2, (6,))
    """

    lo: int
    hi: int
    width: int
    rows: Any


def _check_betas(betas, argument: str = "betas") -> tuple[float, float]:
    if isinstance(betas, (str, bytes)) or not hasattr(betas, "__len__") or len(betas) != 2:
        raise TypeError(f"{argument} must be a pair (beta1, beta2) of numbers in [0, 1), got {betas!r}")
    return (
        check_float(betas[0], f"{argument}[0]", 0.0, 1.0, high_inclusive=False),
        check_float(betas[1], f"{argument}[1]", 0.0, 1.0, high_inclusive=False),
    )


def _check_positive_or_none(value, argument: str) -> float | None:
    if value is None:
        return None
    return check_float(value, argument, 0.0, None, low_inclusive=False)


def _check_one_clip(clip_norm: float | None, clip_value: float | None) -> None:
    if clip_norm is not None and clip_value is not None:
        raise ValueError(
            "clip_norm and clip_value were both given; clip by one of them: pass "
            "clip_norm (global norm, like torch.nn.utils.clip_grad_norm_) or clip_value "
            "(set the other to None first)"
        )


def _has_any(hyper: dict, **plain) -> str | None:
    """The hyper-parameters of ``hyper`` that differ from their ``plain`` values, as "has a=1, b=2"
    (None when none does): why an optimizer has no sparse update."""
    changed = [f"{name}={hyper[name]}" for name, value in plain.items() if hyper[name] != value]
    return f"has {', '.join(changed)}" if changed else None


class Optimizer(Owned):
    """Base class: learning rate, clipping, binding, step counting, state (de)serialisation.

    Subclasses set the class attribute ``name``, store their validated hyper-parameters in
    ``self._hyper``, say which state buffers they need (``_state_init``) and call their kernel
    (``_update``).

    Parameters
    ----------
    lr : float
        The learning rate, >= 0 (schedules and callbacks change :attr:`lr` later).
    clip_norm : float, optional
        Scale the gradients so their global L2 norm is at most this
        (``torch.nn.utils.clip_grad_norm_``).
    clip_value : float, optional
        Clip each gradient to [-clip_value, clip_value] (not with ``clip_norm``).

    Raises
    ------
    ValueError
        For a negative learning rate, a non-positive clip, or both clips given.

    Examples
    --------
    An optimizer on flat buffers of its own (a model binds it to its buffers in ``compile``):

    >>> import fastnn as fnn
    >>> params = np.array([1.0, -2.0], np.float32)
    >>> grads = np.array([0.5, 0.5], np.float32)
    >>> opt = fnn.optim.SGD(lr=0.1)
    >>> opt.bind(params, grads, n_decay=2)
    >>> opt.step()
    >>> params, opt.step_count
    (array([ 0.95, -2.05], dtype=float32), 1)
    """

    name: ClassVar[str] = ""

    def __init__(self, lr: float, *, clip_norm: float | None = None, clip_value: float | None = None):
        # a dict of its own, not the one CPython 3.11 materialises from the instance's inline values
        # at the first ``__dict__`` read (fused_step_token and others read it): attribute reads on
        # that split dict are not specialised, ~4x slower (15 ns each, several per step)
        self.__dict__ = dict(self.__dict__)
        self.lr = lr
        self._clip_norm = _check_positive_or_none(clip_norm, "clip_norm")
        self._clip_value = _check_positive_or_none(clip_value, "clip_value")
        _check_one_clip(self._clip_norm, self._clip_value)
        self._hyper: dict[str, Any] = {}
        self.step_count = 0
        self.last_grad_norm: float | None = None
        self._params: np.ndarray | None = None
        self._grads: np.ndarray | None = None
        self._n_decay = 0
        self._state: dict[str, np.ndarray] = {}
        self._empty: np.ndarray | None = None
        self._partials: np.ndarray | None = None
        self._pending: dict | None = None
        self._K = backend.kernels("cpu")
        self._trainable: list[tuple[int, int]] | None = None
        self._sparse: SparseRows | None = None

    @property
    def trainable(self) -> list[tuple[int, int]] | None:
        """Sorted, disjoint ``[lo, hi)`` ranges of the flat buffers to update (None: all); the model
        sets it from its frozen layers (``fastnn.freezing``): the rest gets no update, no decay and
        keeps its state. Setting it renews :meth:`fused_step_token` (the step plans rebuild).

        Examples
        --------
        >>> import fastnn as fnn
        >>> params, grads = np.array([1.0, -2.0], np.float32), np.array([0.5, 0.5], np.float32)
        >>> opt = fnn.optim.SGD(lr=0.1)
        >>> opt.bind(params, grads, n_decay=2)
        >>> opt.trainable = [(1, 2)]  # the first parameter frozen
        >>> opt.step()
        >>> params
        array([ 1.  , -2.05], dtype=float32)
        """
        return self._trainable

    @trainable.setter
    def trainable(self, ranges: list[tuple[int, int]] | None) -> None:
        self._trainable = None if ranges is None else [(int(lo), int(hi)) for lo, hi in ranges]
        self._renew_fused_token()  # plans built with the old ranges are stale

    @property
    def sparse_rows(self) -> SparseRows | None:
        """The table updated lazily, only on the rows each step looked up (None: none), as PyTorch
        updates ``Embedding(sparse=True)``: the model sets it from such a layer (``fastnn.freezing``).
        Its range is left out of the dense update; after it, the touched rows step with this
        optimizer's rule (plain SGD: the dense step's result; Adam: ``torch.optim.SparseAdam``).
        Setting it checks that this configuration has such an update (ValueError naming the fix)
        and renews :meth:`fused_step_token`.

        Examples
        --------
        >>> import fastnn as fnn
        >>> params, grads = np.ones(6, np.float32), np.full(6, 0.5, np.float32)
        >>> opt = fnn.optim.SGD(lr=0.1)
        >>> opt.bind(params, grads, n_decay=6)
        >>> rows = np.array([1, 2, 0, 0], np.int64)  # one touched row: row 2 of a 3 x 2 table
        >>> opt.sparse_rows = fnn.optim.SparseRows(lo=0, hi=6, width=2, rows=rows)
        >>> opt.step()
        >>> params
        array([1.  , 1.  , 1.  , 1.  , 0.95, 0.95], dtype=float32)
        """
        return self._sparse

    @sparse_rows.setter
    def sparse_rows(self, table: SparseRows | None) -> None:
        if table is not None:
            self._check_sparse()
        self._sparse = table
        self._renew_fused_token()

    def _check_sparse(self) -> None:
        """ValueError unless this configuration can update a table's touched rows only."""
        reason = self._sparse_unsupported()
        if reason is None and (self.clip_norm is not None or self.clip_value is not None):
            reason = "clips gradients (clip_norm / clip_value)"
        if reason is not None:
            raise ValueError(
                f"Embedding(sparse=True) is updated on the rows a step looked up, which needs plain SGD "
                f"(no momentum, no weight decay) or Adam without weight decay and amsgrad (PyTorch's "
                f"SparseAdam), without gradient clipping; {self!r} {reason}. Use one of those, or "
                f"sparse=False"
            )

    def _sparse_unsupported(self) -> str | None:
        """Why this configuration has no update of a table's touched rows only (None: it has)."""
        return "has no such update"

    # ---------------------------------------------------------------- learning rate
    @property
    def lr(self) -> float:
        """Current learning rate (a float >= 0); schedules and callbacks set it.

        Examples
        --------
        >>> import fastnn as fnn
        >>> opt = fnn.optim.Adam(lr=0.01)
        >>> opt.lr = 0.005  # what a schedule does before a step
        >>> opt.lr
        0.005
        """
        return self._lr

    @lr.setter
    def lr(self, value: float) -> None:
        self._lr = check_float(value, "lr", 0.0, None)

    def _write_clips(self) -> None:
        """Write the clips into the step kernels' scalars (once bound), at each change of them: what
        :meth:`arm_fused_step` leaves out of its write (the armed flag, the rate and the step number)."""
        slots = self.__dict__.get("_scalar_slots")
        if slots is not None:
            clip_norm, clip_value = self._clip_norm, self._clip_value
            slots[_CLIP_NORM] = _NAN if clip_norm is None else clip_norm
            slots[_CLIP_VALUE] = _NAN if clip_value is None else clip_value

    # ---------------------------------------------------------------- subclass hooks
    def _state_init(self) -> dict[str, float]:
        """Name -> initial value of each state buffer this configuration uses."""
        raise NotImplementedError

    def _update(self, grad_scale: float) -> None:
        raise NotImplementedError

    @property
    def clip_norm(self) -> float | None:
        """The gradients are scaled so that their global L2 norm is at most clip_norm (None: not).

        Setting it checks the value as the constructor does (positive, and not together with
        ``clip_value``).

        Examples
        --------
        >>> import fastnn as fnn
        >>> opt = fnn.optim.SGD(lr=0.1)
        >>> opt.clip_norm = 1.0
        >>> opt.clip_norm = -1.0
        Traceback (most recent call last):
        ...
        ValueError: clip_norm must be in (0.0, inf], got -1.0
        """
        return self._clip_norm

    @clip_norm.setter
    def clip_norm(self, value: float | None) -> None:
        value = _check_positive_or_none(value, "clip_norm")
        _check_one_clip(value, self._clip_value)
        self._clip_norm = value
        self._write_clips()

    @property
    def clip_value(self) -> float | None:
        """Each gradient is clipped to [-clip_value, clip_value] before the update (None: not).

        Setting it checks the value as the constructor does; a step plan built without value clipping
        (whose step kernel has none compiled) is rebuilt with it at the next step.

        Examples
        --------
        >>> import fastnn as fnn
        >>> params, grads = np.array([1.0, -2.0], np.float32), np.array([0.5, 3.0], np.float32)
        >>> opt = fnn.optim.SGD(lr=0.1)
        >>> opt.bind(params, grads, n_decay=0)
        >>> token = opt.fused_step_token()
        >>> opt.clip_value = 1.0
        >>> opt.fused_step_token() is token  # plans holding the old token rebuild
        False
        >>> opt.begin_fused_step(True)
        >>> kernel, args = opt.fused_step_call(0.25, 1.0)
        >>> kernel(*args), params
        (True, array([ 0.95, -2.1 ], dtype=float32))
        """
        return self._clip_value

    @clip_value.setter
    def clip_value(self, value: float | None) -> None:
        value = _check_positive_or_none(value, "clip_value")
        _check_one_clip(self._clip_norm, value)
        if (value is None) != (self._clip_value is None):
            self._renew_fused_token()  # the step kernels compiled without value clipping (or with) rebuild
        self._clip_value = value
        self._write_clips()

    def _renew_fused_token(self) -> None:
        """A new :meth:`fused_step_token` (step plans holding the old one rebuild), once bound with one."""
        if self.__dict__.get("_binding") is not None:
            self._binding = object()

    def _step_call(self, loss, norm) -> tuple | None:
        """(kernel of ``fastnn.kernels.step_update``, arguments) doing what :meth:`_update`
        does after ``loss`` and ``norm`` (``fastnn._fused.Result`` references); None: no such kernel.
        The arguments start with :meth:`_step_head`."""
        return None

    def _step_head(self, loss, norm) -> tuple:
        """The first arguments of every ``fastnn.kernels.step_update`` kernel: loss, norm, the
        scalars, ``by_value`` (None when not clipping by value: the compiled kernel then has no value
        clipping; True), the trainable ranges ((k, 2) int64; ``[[0, n]]`` with nothing frozen), the
        norm's scratch, the parameters and the gradients."""
        if self._params is None:
            raise RuntimeError(f"{type(self).__name__} is not bound: call bind(params, grads, n_decay) first")
        dense = self._dense_ranges()
        ranges = np.array([(0, self._params.size)] if dense is None else dense, np.int64).reshape(-1, 2)
        by_value = None if self._clip_value is None else True
        return loss, norm, self._step_scalars, by_value, ranges, self._partials, self._params, self._grads

    def _dense_ranges(self) -> list[tuple[int, int]] | None:
        """The ranges the dense update covers: :attr:`trainable` less the :attr:`sparse_rows`
        table (None: the whole buffers; an empty list: none of them)."""
        table = self._sparse
        if table is None:
            return self._trainable
        whole = [(0, self._params.size if self._params is not None else 0)]
        ranges = []
        for lo, hi in whole if self._trainable is None else self._trainable:
            if lo < table.lo:
                ranges.append((lo, min(hi, table.lo)))
            if hi > table.hi:
                ranges.append((max(lo, table.hi), hi))
        return ranges

    def _buffer(self, name: str) -> np.ndarray:
        """A bound state buffer, or an empty array of the right dtype where it is unused."""
        return self._state.get(name, self._empty)  # type: ignore[return-value]  # bound before any update

    # ---------------------------------------------------------------- binding and stepping
    @property
    def is_bound(self) -> bool:
        """Whether :meth:`bind` attached this optimizer to a model's flat buffers.

        Examples
        --------
        >>> import fastnn as fnn
        >>> opt = fnn.optim.SGD()
        >>> opt.is_bound
        False
        >>> _ = fnn.Sequential([fnn.Dense(2, 1)]).compile("mse", opt)
        >>> opt.is_bound
        True
        """
        return self._params is not None

    def bind(self, params: np.ndarray, grads: np.ndarray, n_decay: int) -> None:
        """Attach to the flat buffers and allocate the state buffers (resets the step count, unless a
        state was loaded while unbound: then its buffers, with the step count and rate as they are).

        Parameters
        ----------
        params : ndarray
            C-contiguous 1-D float32 or float64 parameters, updated in place by :meth:`step`
            (a CUDA device array puts the state on the device).
        grads : ndarray
            The gradients, same size, dtype and device.
        n_decay : int
            Parameters ``[0, n_decay)`` get weight decay.

        Raises
        ------
        TypeError, ValueError
            For buffers that are not matching flat float arrays on one device.

        Examples
        --------
        >>> import fastnn as fnn
        >>> params, grads = np.array([1.0, -2.0], np.float32), np.array([0.5, 0.5], np.float32)
        >>> opt = fnn.optim.SGD(lr=0.1)
        >>> opt.bind(params, grads, n_decay=2)
        >>> opt.step()
        >>> params
        array([ 0.95, -2.05], dtype=float32)
        """
        device = self._check_buffers(params, grads)
        self._n_decay = check_int(n_decay, "n_decay", 0, params.size)
        self._attach(params, grads, device)
        pending, self._pending = self._pending, None
        if pending is not None:  # loaded while unbound: its buffers, the step count and rate as they are now
            pending = {**pending, "step_count": self.step_count, "lr": self.lr}
        self._state = {
            name: backend.full(params.size, value, params.dtype, device) for name, value in self._state_init().items()
        }
        self.step_count = 0
        self.last_grad_norm = None
        if pending is not None:
            self.load_state_dict(pending)

    @staticmethod
    def _check_buffers(params, grads) -> str:
        """The device of params and grads after checking they are matching flat float buffers."""
        device = backend.device_of(params)
        for argument, arr in (("params", params), ("grads", grads)):
            if (
                not isinstance(arr, np.ndarray)
                and not hasattr(arr, "__cuda_array_interface__")
                and not hasattr(arr, "copy_to_host")
            ):
                raise TypeError(f"{argument} must be a numpy array (or a CUDA device array), got {type(arr).__name__}")
            if backend.device_of(arr) != device:
                raise ValueError(
                    f"params and grads must be on one device, got params on {device} and "
                    f"{argument} on {backend.device_of(arr)}"
                )
            contiguous = arr.is_c_contiguous() if device != "cpu" else arr.flags.c_contiguous
            if arr.ndim != 1 or not contiguous or arr.dtype not in (np.float32, np.float64):
                raise ValueError(
                    f"{argument} must be a contiguous 1-D float32 or float64 buffer, got "
                    f"shape {arr.shape}, dtype {arr.dtype}, contiguous={contiguous}"
                )
        if grads.shape != params.shape or grads.dtype != params.dtype:
            raise ValueError(
                f"grads must match params: params {params.shape} {params.dtype}, grads {grads.shape} {grads.dtype}"
            )
        return device

    def _attach(self, params, grads, device: str) -> None:
        self._K = backend.kernels(device)
        self._params, self._grads = params, grads
        self._empty = backend.zeros(0, params.dtype, device)
        self._partials = backend.zeros(self._K.norm_partials_size(params.size), np.float64, device)
        self._step_scalars = np.zeros(step_update.N_SCALARS)  # what begin_fused_step writes
        self._scalar_slots: Any = self._step_scalars.data  # a memoryview: its item writes cost 2/3 of ndarray's
        self._write_clips()
        # a new token at every (re)binding (plans holding the old buffers rebuild); None: no step kernel
        self._binding = object() if device == "cpu" and _has_step_kernel(type(self)) else None

    def rebind(self, params, grads, n_decay: int | None = None) -> None:
        """Attach to new flat buffers of the same size and layout, keeping the state and step count.

        Used after ``model.to(device)``: the state buffers move to the device of ``params``; and
        when the decayed prefix changes (``compile(decay_bias_and_norm=...)`` on a trained model):
        the moments and the step count go on, only the weight decay covers the new prefix.

        Parameters
        ----------
        params : ndarray or device array
            The new parameter buffer (same size and dtype as the bound one).
        grads : ndarray or device array
            The new gradient buffer.
        n_decay : int, optional
            The new weight-decay prefix ``[0, n_decay)``; None keeps the bound one.

        Raises
        ------
        RuntimeError
            When the optimizer was never bound.
        ValueError
            When the buffers differ in size or dtype from the bound ones, or ``n_decay`` is
            outside ``[0, size]``.

        Examples
        --------
        >>> import fastnn as fnn
        >>> params, grads = np.array([1.0, -2.0], np.float32), np.array([0.5, 0.5], np.float32)
        >>> opt = fnn.optim.SGD(lr=0.1)
        >>> opt.bind(params, grads, n_decay=2)
        >>> opt.step()
        >>> params2, grads2 = params.copy(), grads.copy()  # e.g. the buffers after model.to(device)
        >>> opt.rebind(params2, grads2)
        >>> opt.step()
        >>> params2, params, opt.step_count  # the old buffer is no longer updated
        (array([ 0.9, -2.1], dtype=float32), array([ 0.95, -2.05], dtype=float32), 2)
        """
        if self._params is None:
            raise RuntimeError(f"{type(self).__name__} is not bound: call bind(params, grads, n_decay)")
        device = self._check_buffers(params, grads)
        if params.shape != self._params.shape or params.dtype != self._params.dtype:
            raise ValueError(
                f"rebind needs buffers like the bound ones ({self._params.shape} "
                f"{self._params.dtype}), got {params.shape} {params.dtype}"
            )
        if n_decay is not None:
            self._n_decay = check_int(n_decay, "n_decay", 0, params.size)
        self._attach(params, grads, device)
        self._state = {name: backend.to_device(buf, device) for name, buf in self._state.items()}

    @property
    def device(self) -> str:
        """Where the bound buffers and the state live: "cpu" or "cuda".

        Examples
        --------
        >>> import fastnn as fnn
        >>> params, grads = np.array([1.0, -2.0], np.float32), np.array([0.5, 0.5], np.float32)
        >>> opt = fnn.optim.SGD(lr=0.1)
        >>> opt.bind(params, grads, n_decay=2)
        >>> opt.device
        'cpu'
        """
        return self._K.device

    def step(self, grad_norm: float | None = None) -> None:
        """Clip the gradients (if asked) and update the parameters in place: one fused pass.

        Parameters
        ----------
        grad_norm : float, optional
            The gradients' global norm when the caller computed it already (the model's step
            plans do, to detect non-finite gradients), saving the clipping its own pass.

        Raises
        ------
        RuntimeError
            When the optimizer is not bound to parameters.

        Examples
        --------
        >>> import fastnn as fnn
        >>> params, grads = np.array([1.0, -2.0], np.float32), np.array([3.0, 4.0], np.float32)
        >>> opt = fnn.optim.SGD(lr=0.1, clip_norm=1.0)
        >>> opt.bind(params, grads, n_decay=2)
        >>> opt.step()  # the gradient's norm 5 is clipped to 1
        >>> params, round(opt.last_grad_norm, 4)  # (0.6, 0.8) times lr 0.1 subtracted
        (array([ 0.94, -2.08], dtype=float32), 5.0)
        """
        if self._params is None:
            raise RuntimeError(
                f"{type(self).__name__} is not bound to parameters: call "
                f"optimizer.bind(params, grads, n_decay) (model.compile does it)"
            )
        if self._sparse is not None:
            self._check_sparse()  # (clipping may have been switched on since)
        dense = self._dense_ranges()
        if dense is not None:
            self._step_ranges(dense)
            if self._sparse is not None:
                self._update_rows(self._sparse)
            return
        scale = 1.0
        if self.clip_norm is not None:
            norm = self._K.grad_global_norm(self._grads, self._partials) if grad_norm is None else grad_norm
            self.last_grad_norm = norm
            scale = min(1.0, self.clip_norm / (norm + 1e-6))
        elif self.clip_value is not None:
            self._K.clip_by_value(self._grads, self.clip_value)
        self.step_count += 1
        self._update(scale)

    # ---------------------------------------------------------------- the step inside a compiled call
    def fused_step_token(self) -> object | None:
        """A token of the bound buffers when this optimizer can step inside a model's compiled
        step (:meth:`fused_step_call`; a plan built with another token is stale), else None
        (buffers on a device, a class or instance with its own ``step`` or ``_update``: it steps
        through :meth:`step`). Frozen layers step inside too, on the :attr:`trainable` ranges.

        Returns
        -------
        object or None
            The token (compared by identity; a new one at every :meth:`bind`, :meth:`rebind` and
            change of :attr:`trainable`), or None.

        Examples
        --------
        >>> import fastnn as fnn
        >>> params, grads = np.array([1.0, -2.0], np.float32), np.array([0.5, 0.5], np.float32)
        >>> opt = fnn.optim.SGD(lr=0.1)
        >>> opt.bind(params, grads, n_decay=2)
        >>> opt.fused_step_token() is not None  # SGD on CPU buffers steps inside the compiled step
        True
        >>> token = opt.fused_step_token()
        >>> opt.trainable = [(0, 1)]  # frozen layers: still inside, on the ranges; plans rebuild
        >>> opt.fused_step_token() not in (None, token)
        True
        """
        if "_update" in self.__dict__:
            return None
        return self.__dict__.get("_binding")  # (unbound: none yet)

    def fused_step_call(self, loss, norm) -> tuple | None:
        """(kernel, arguments) of this optimizer's step after a training step's ``loss`` and gradient
        ``norm`` (``fastnn._fused.Result`` references to the calls returning them): clipping and the
        update in one call of ``fastnn.kernels.step_update``, made only when armed by
        :meth:`begin_fused_step` and when the step is finite (Adam's also steps the touched rows of
        :attr:`sparse_rows`: see :meth:`fused_rows_call`). Only while :meth:`fused_step_token` is
        not None.

        Parameters
        ----------
        loss : Result or float
            The step's loss (the kernel updates nothing when it is not finite).
        norm : Result or float
            The gradients' global norm (for ``clip_norm``, and the same finiteness check).

        Returns
        -------
        tuple or None
            ``(kernel, arguments)``; the kernel returns True when it updated the parameters.
            None: this optimizer has no step kernel.

        Examples
        --------
        >>> import fastnn as fnn
        >>> params, grads = np.array([1.0, -2.0], np.float32), np.array([0.5, 0.5], np.float32)
        >>> opt = fnn.optim.SGD(lr=0.1)
        >>> opt.bind(params, grads, n_decay=2)
        >>> opt.begin_fused_step(True)  # armed: the kernel updates
        >>> kernel, args = opt.fused_step_call(0.25, 1.0)  # plain loss and norm here; Result references in a plan
        >>> kernel(*args)  # True: the step was finite and applied
        True
        >>> opt.end_fused_step(1.0)
        >>> params, opt.step_count
        (array([ 0.95, -2.05], dtype=float32), 1)
        """
        return self._step_call(loss, norm)

    def fused_rows_call(self, updated) -> tuple | None:
        """(kernel, arguments) of the lazy update of :attr:`sparse_rows` inside a model's compiled
        step, right after :meth:`fused_step_call`'s kernel: it steps the touched rows when
        ``updated`` (that kernel's result: armed and finite) is True. None without such a table, or
        when :meth:`fused_step_call`'s kernel steps the touched rows itself (Adam: one parallel
        sweep over the dense chunks and the rows).

        Parameters
        ----------
        updated : Result or bool
            Whether the dense update ran (``fastnn._fused.Result`` of its call in a plan).

        Returns
        -------
        tuple or None
            ``(kernel, arguments)``; the kernel returns ``updated``. None: no such call.

        Examples
        --------
        >>> import fastnn as fnn
        >>> params, grads = np.ones(4, np.float32), np.full(4, 0.5, np.float32)
        >>> opt = fnn.optim.SGD(lr=0.1)
        >>> opt.bind(params, grads, n_decay=4)
        >>> opt.sparse_rows = fnn.optim.SparseRows(lo=0, hi=4, width=2, rows=np.array([1, 0, 0], np.int64))
        >>> opt.begin_fused_step(True)
        >>> kernel, args = opt.fused_rows_call(True)
        >>> kernel(*args), params  # row 0 stepped, row 1 untouched
        (True, array([0.95, 0.95, 1.  , 1.  ], dtype=float32))
        """
        if self._sparse is None:
            return None
        self._check_sparse()
        return self._rows_step_call(updated, self._sparse)

    def _update_rows(self, table: SparseRows) -> None:
        """The lazy update of ``table``'s touched rows from Python (after the dense update, whose
        step this is: ``step_count`` already counts it)."""
        raise NotImplementedError

    def _rows_step_call(self, updated, table: SparseRows) -> tuple | None:
        """(kernel of ``fastnn.kernels.step_update``, arguments) of that update inside a step (None:
        :meth:`fused_step_call`'s kernel steps the rows too)."""
        raise NotImplementedError

    def begin_fused_step(self, update: bool) -> None:
        """Write the scalars of the next call of :meth:`fused_step_call`'s kernel: armed to update
        (``update``) with this step's learning rate, number and clipping, or not armed.

        Parameters
        ----------
        update : bool
            True: the next call updates the parameters; False: it leaves them alone (a step that only
            computes gradients, or whose gradients are summed over ranks first).

        Examples
        --------
        >>> import fastnn as fnn
        >>> params, grads = np.array([1.0, -2.0], np.float32), np.array([0.5, 0.5], np.float32)
        >>> opt = fnn.optim.SGD(lr=0.1)
        >>> opt.bind(params, grads, n_decay=2)
        >>> opt.begin_fused_step(False)  # not armed: the kernel leaves the parameters alone
        >>> kernel, args = opt.fused_step_call(0.25, 1.0)
        >>> kernel(*args), params
        (False, array([ 1., -2.], dtype=float32))
        """
        # one pack of the five scalars through the memoryview, the clip values read without their
        # properties: 0.29 -> 0.13 us, a twentieth of a tiny network's train_step
        clip_norm, clip_value = self._clip_norm, self._clip_value
        _pack_begin(
            self._scalar_slots,
            0,
            1.0 if update else 0.0,
            self._lr,
            self.step_count + 1,
            _NAN if clip_norm is None else clip_norm,
            _NAN if clip_value is None else clip_value,
        )

    def arm_fused_step(self, token: object) -> bool:
        """:meth:`begin_fused_step` armed (``True``) when :meth:`fused_step_token` is still ``token``
        (the one a caller's compiled step was made with); else nothing written.

        One call for the check and the write, on the path of a small network's step where each
        call counts (``Sequential.train_step``'s fast lane).

        Parameters
        ----------
        token : object
            A token :meth:`fused_step_token` returned.

        Returns
        -------
        bool
            True: armed, the next call of the kernel updates; False: the token is stale (a new
            binding, :attr:`trainable`, ...) or None, or this optimizer steps through :meth:`step`,
            and nothing was written.

        Examples
        --------
        >>> import fastnn as fnn
        >>> params, grads = np.array([1.0, -2.0], np.float32), np.array([0.5, 0.5], np.float32)
        >>> opt = fnn.optim.SGD(lr=0.1)
        >>> opt.bind(params, grads, n_decay=2)
        >>> token = opt.fused_step_token()
        >>> opt.arm_fused_step(token)
        True
        >>> opt.trainable = [(0, 1)]  # a new token: a step made with the old one is stale
        >>> opt.arm_fused_step(token)
        False
        """
        state = self.__dict__  # fused_step_token() and begin_fused_step(True), inlined
        if token is None or state.get("_binding") is not token or "_update" in state:
            return False
        slots = self._scalar_slots  # three item writes (~40 ns less than the pack of five)
        slots[_ARMED] = 1.0
        slots[_LR] = self._lr
        slots[_STEP] = self.step_count + 1
        return True  # (the clips are there: written when they were set, _write_clips)

    def end_fused_step(self, norm: float) -> None:
        """Count a step the kernel of :meth:`fused_step_call` made (armed and finite).

        Parameters
        ----------
        norm : float
            The step's gradient norm (kept as ``last_grad_norm`` when clipping by norm).

        Examples
        --------
        >>> import fastnn as fnn
        >>> params, grads = np.array([1.0, -2.0], np.float32), np.array([0.5, 0.5], np.float32)
        >>> opt = fnn.optim.SGD(lr=0.1)
        >>> opt.bind(params, grads, n_decay=2)
        >>> opt.begin_fused_step(True)  # armed: the kernel updates
        >>> kernel, args = opt.fused_step_call(0.25, 1.0)  # plain loss and norm here; Result references in a plan
        >>> kernel(*args)  # True: the step was finite and applied
        True
        >>> opt.end_fused_step(1.0)
        >>> params, opt.step_count
        (array([ 0.95, -2.05], dtype=float32), 1)
        """
        if self._clip_norm is not None:  # the norm clipping used: of the trainable parameters only
            self.last_grad_norm = norm if self._trainable is None else float(self._step_scalars[step_update.USED_NORM])
        self.step_count += 1

    def _step_ranges(self, ranges) -> None:
        """The step over ``ranges`` of the buffers only (frozen layers elsewhere): clipping sees the
        trainable gradients only (like clip_grad_norm_ over the parameters that have gradients), and
        the fused update runs once per range on views, its decay prefix cut to each range."""
        if self._params is None or self._grads is None:  # step() checks the binding first
            raise RuntimeError("the optimizer is not bound to a model: compile the model with it first")
        full = self._params, self._grads, self._state, self._n_decay
        scale = 1.0
        if self.clip_norm is not None:
            parts = [self._K.grad_global_norm(full[1][lo:hi], self._partials) for lo, hi in ranges]
            norm = math.sqrt(sum(part * part for part in parts))  # as kernels/step_update.trainable_norm
            self.last_grad_norm = norm
            scale = min(1.0, self.clip_norm / (norm + 1e-6))
        self.step_count += 1
        try:
            for lo, hi in ranges:
                self._params, self._grads = full[0][lo:hi], full[1][lo:hi]
                self._state = {name: buf[lo:hi] for name, buf in full[2].items()}
                self._n_decay = min(max(full[3] - lo, 0), hi - lo)
                if self.clip_value is not None:
                    self._K.clip_by_value(self._grads, self.clip_value)
                self._update(scale)
        finally:
            self._params, self._grads, self._state, self._n_decay = full

    def __getstate__(self):
        state = dict(self.__dict__)
        state.pop("_owner", None)  # a copy belongs to no model
        state.pop("_scalar_slots", None)  # a memoryview does not pickle: made again from the array
        state["_K"] = None
        return state

    def __setstate__(self, state):
        if "trainable" in state:  # pickled before trainable became a property
            state = dict(state)
            state["_trainable"] = state.pop("trainable")
        self.__dict__ = {**self.__dict__, **state}  # a dict of its own (see __init__)
        if "_step_scalars" in state:
            self._scalar_slots = self._step_scalars.data
            self._write_clips()  # (a state pickled by an older version may hold others)
        self._K = backend.kernels(backend.device_of(self._params) if self._params is not None else "cpu")

    # ---------------------------------------------------------------- saving and loading
    def get_config(self) -> dict[str, Any]:
        """The hyper-parameters; :func:`optimizer_from_config` rebuilds the optimizer from them.

        Returns
        -------
        dict
            JSON-able: ``name``, ``lr``, the hyper-parameters, ``clip_norm``, ``clip_value``.

        Examples
        --------
        >>> import fastnn as fnn
        >>> config = fnn.optim.Adam(lr=0.01, clip_norm=1.0).get_config()
        >>> config["name"], config["lr"], config["betas"], config["clip_norm"]
        ('adam', 0.01, [0.9, 0.999], 1.0)
        >>> fnn.optim.optimizer_from_config(config)
        Adam(lr=0.01, betas=[0.9, 0.999], eps=1e-08, weight_decay=0.0, amsgrad=False, clip_norm=1.0)
        """
        config = {"name": self.name, "lr": self.lr}
        for key, value in self._hyper.items():
            config[key] = list(value) if isinstance(value, tuple) else value
        config["clip_norm"] = self.clip_norm
        config["clip_value"] = self.clip_value
        return config

    def state_dict(self) -> dict[str, np.ndarray | float | int | str]:
        """Everything needed to continue exactly.

        Returns
        -------
        dict
            ``name``, ``step_count``, ``lr`` and a host copy of each state buffer (1-D arrays of
            the parameters' size and dtype).

        Examples
        --------
        >>> import fastnn as fnn
        >>> opt = fnn.optim.SGD(lr=0.1, momentum=0.9)
        >>> opt.bind(np.ones(2, np.float32), np.full(2, 0.5, np.float32), n_decay=2)
        >>> opt.step()
        >>> opt.state_dict()
        {'name': 'sgd', 'step_count': 1, 'lr': 0.1, 'momentum_buffer': array([0.5, 0.5], dtype=float32)}
        """
        state: dict[str, np.ndarray | float | int | str] = {
            "name": self.name,
            "step_count": self.step_count,
            "lr": self.lr,
        }
        for key, buf in self._state_buffers().items():
            state[key] = backend.host_copy(buf)
        return state

    def _state_buffers(self) -> dict:
        """The state buffers by name: the bound ones, or those of a state loaded while unbound."""
        if self._pending is None:
            return self._state
        scalars = ("name", "step_count", "lr")
        return {key: np.asarray(value) for key, value in self._pending.items() if key not in scalars}

    def load_state_dict(self, state: dict) -> None:
        """Restore a :meth:`state_dict`: copied into the bound buffers; unbound, the step count and
        learning rate are taken at once and the buffers at :meth:`bind`.

        Parameters
        ----------
        state : dict
            What :meth:`state_dict` returned.

        Raises
        ------
        ValueError
            When the state belongs to another optimizer, lacks ``step_count`` or ``lr``, or its
            buffers do not fit; everything is checked before anything is copied, so a refused
            state leaves this optimizer as it was.

        Examples
        --------
        >>> import fastnn as fnn
        >>> opt = fnn.optim.SGD(lr=0.1, momentum=0.9)
        >>> opt.bind(np.ones(2, np.float32), np.full(2, 0.5, np.float32), n_decay=2)
        >>> opt.step()
        >>> fresh = fnn.optim.SGD(lr=0.1, momentum=0.9)
        >>> fresh.load_state_dict(opt.state_dict())  # not bound yet: applied at bind
        >>> fresh.bind(np.ones(2, np.float32), np.zeros(2, np.float32), n_decay=2)
        >>> fresh.step_count, fresh.state_dict()["momentum_buffer"]
        (1, array([0.5, 0.5], dtype=float32))
        """
        if state.get("name") != self.name:
            raise ValueError(
                f"this optimizer state was saved by {state.get('name')!r}, not {self.name!r}; "
                f"load it into a {state.get('name')!r} optimizer"
            )
        step_count, lr = self._checked_scalars(state)
        if self._params is None:  # the buffers are copied in at bind
            self._pending = dict(state)
            self.step_count, self.lr = step_count, lr
            return
        buffers = {key: self._checked_buffer(state, key, buf) for key, buf in self._state.items()}
        for key, saved in buffers.items():  # all checked first: a refused state changes nothing
            backend.copy_into(self._state[key], saved)
        self.step_count = step_count
        self.lr = lr

    def _checked_scalars(self, state: dict) -> tuple[int, float]:
        """``state``'s step count and learning rate, checked (ValueError naming the key)."""
        missing = [key for key in ("step_count", "lr") if key not in state]
        if missing:
            raise ValueError(
                f"optimizer state lacks {', '.join(repr(key) for key in missing)}: pass what "
                f"{type(self).__name__}.state_dict() returned"
            )
        step_count = check_int(np.asarray(state["step_count"]).item(), "step_count", 0)
        return step_count, check_float(np.asarray(state["lr"]).item(), "lr", 0.0, None)

    def _checked_buffer(self, state: dict, key: str, buf) -> np.ndarray:
        """``state[key]`` as a float array of ``buf``'s shape (ValueError naming the buffer)."""
        if key not in state:
            raise ValueError(
                f"optimizer state lacks the buffer {key!r} that this {self.name} "
                f"configuration needs (saved with other hyper-parameters?)"
            )
        saved = np.asarray(state[key])
        if saved.shape != buf.shape:
            raise ValueError(
                f"optimizer state buffer {key!r} has shape {saved.shape}, but the "
                f"bound parameters need {buf.shape}; was it saved from another model?"
            )
        if saved.dtype.kind not in "fiu":
            raise ValueError(f"optimizer state buffer {key!r} must hold numbers, got dtype {saved.dtype}")
        return saved

    def __repr__(self) -> str:
        items = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items() if k != "name" and v is not None)
        return f"{type(self).__name__}({items})"


def _has_step_kernel(cls: type[Optimizer]) -> bool:
    """Whether ``cls`` steps as :meth:`Optimizer.step` with the update of its own ``_step_call``
    (a subclass overriding ``step`` or ``_update`` but not ``_step_call`` steps from Python)."""
    known = _STEP_KERNEL.get(cls)
    if known is None:
        owner = {name: next(c for c in cls.__mro__ if name in c.__dict__) for name in ("_update", "_step_call")}
        known = _STEP_KERNEL[cls] = cls.step is Optimizer.step and owner["_update"] is owner["_step_call"]
    return known


_STEP_KERNEL: dict[type, bool] = {}

#: The one table of optimizers: name -> class, filled by :func:`register_optimizer`. Drives
#: :func:`get`, loading, and the table-driven tests.
OPTIMIZERS: dict[str, type[Optimizer]] = {}


def register_optimizer(optimizer_class: type[Optimizer]) -> type[Optimizer]:
    """Make an Optimizer subclass usable by its ``name`` and loadable from saved models; a class
    decorator.

    Parameters
    ----------
    optimizer_class : type
        A subclass of :class:`Optimizer` with its own lower-case class attribute ``name``.

    Returns
    -------
    type
        ``optimizer_class`` itself, now in :data:`OPTIMIZERS`.

    Raises
    ------
    TypeError
        When it is not an Optimizer subclass.
    ValueError
        When it has no ``name`` of its own, or takes the name of one of fastnn's optimizers.

    Examples
    --------
    >>> import fastnn as fnn
    >>> @fnn.optim.register_optimizer
    ... class SignSGD(fnn.optim.SGD):
    ...     name = "signsgd"
    ...     def step(self, grad_norm=None):
    ...         np.sign(self._grads, out=self._grads)
    ...         super().step(grad_norm)
    >>> fnn.optim.get("signsgd", lr=0.1)  # by its name, as in compile(optimizer="signsgd")
    SignSGD(lr=0.1, momentum=0.0, dampening=0.0, nesterov=False, weight_decay=0.0)
    >>> del fnn.optim.OPTIMIZERS["signsgd"]  # (unregistered again)
    """
    cls = optimizer_class
    if not (isinstance(cls, type) and issubclass(cls, Optimizer)):
        raise TypeError(f"register_optimizer expects a subclass of fastnn.optim.Optimizer, got {cls!r}")
    name = cls.__dict__.get("name")
    if not isinstance(name, str) or not name or name != name.lower():
        raise ValueError(
            f"{cls.__name__} needs its own class attribute `name` (a non-empty lower-case str) to be "
            f"registered, e.g. name = {cls.__name__.lower()!r}"
        )
    if OPTIMIZERS.get(name, cls) is not cls and OPTIMIZERS[name].__module__ == __name__:
        raise ValueError(
            f"optimizer name {name!r} belongs to fastnn's {OPTIMIZERS[name].__name__}; choose another name"
        )
    OPTIMIZERS[name] = cls
    return cls


@register_optimizer
class SGD(Optimizer):
    """SGD with momentum, dampening, Nesterov and L2 weight decay, as ``torch.optim.SGD``.

    Parameters
    ----------
    lr : float, default 0.01
        The learning rate.
    momentum : float, default 0.0
        Momentum factor.
    dampening : float, default 0.0
        Dampening of the momentum, in [0, 1].
    nesterov : bool, default False
        Nesterov momentum (needs momentum > 0 and no dampening).
    weight_decay : float, default 0.0
        L2 penalty added to the gradients of the weights.
    clip_norm : float, optional
        Clip the gradients' global L2 norm to this before the update.
    clip_value : float, optional
        Clip each gradient to [-clip_value, clip_value] (not with ``clip_norm``).

    Raises
    ------
    ValueError
        For a hyper-parameter out of its range (the message names it).

    Examples
    --------
    >>> import fastnn as fnn
    >>> model = fnn.Sequential([fnn.Dense(2, 1)], seed=0)
    >>> model = model.compile(loss="mse", optimizer=fnn.optim.SGD(lr=0.1, momentum=0.9, nesterov=True))
    >>> model.optimizer
    SGD(lr=0.1, momentum=0.9, dampening=0.0, nesterov=True, weight_decay=0.0)
    """

    name = "sgd"

    def __init__(
        self,
        lr: float = 0.01,
        *,
        momentum: float = 0.0,
        dampening: float = 0.0,
        nesterov: bool = False,
        weight_decay: float = 0.0,
        clip_norm: float | None = None,
        clip_value: float | None = None,
    ):
        super().__init__(lr, clip_norm=clip_norm, clip_value=clip_value)
        momentum = check_float(momentum, "momentum", 0.0, None)
        dampening = check_float(dampening, "dampening", 0.0, 1.0)
        nesterov = _check_bool(nesterov, "nesterov")
        if nesterov and (momentum == 0 or dampening != 0):
            raise ValueError(
                f"nesterov=True needs momentum > 0 and dampening = 0, got momentum={momentum}, "
                f"dampening={dampening}; set momentum (e.g. 0.9) or nesterov=False"
            )
        self._hyper = {
            "momentum": momentum,
            "dampening": dampening,
            "nesterov": nesterov,
            "weight_decay": check_float(weight_decay, "weight_decay", 0.0, None),
        }

    def _state_init(self):
        return {"momentum_buffer": 0.0} if self._hyper["momentum"] != 0 else {}

    def _sparse_unsupported(self):
        return _has_any(self._hyper, momentum=0, weight_decay=0)

    def _update_rows(self, table):
        self._K.sgd_rows_update(self._params, self._grads, table.rows, table.lo, table.width, self.lr)

    def _rows_step_call(self, updated, table):
        arrays = (self._step_scalars, self._params, self._grads, table.rows)
        return step_update.sgd_rows_step, (updated, *arrays, table.lo, table.width)

    def _step_call(self, loss, norm):
        h = self._hyper
        hyper = (h["momentum"], h["dampening"], h["weight_decay"], self._n_decay, h["nesterov"])
        return step_update.sgd_step, (*self._step_head(loss, norm), self._buffer("momentum_buffer"), *hyper)

    def _update(self, grad_scale):
        h = self._hyper
        self._K.sgd_update(
            self._params,
            self._grads,
            self._buffer("momentum_buffer"),
            self.lr,
            h["momentum"],
            h["dampening"],
            h["weight_decay"],
            self._n_decay,
            h["nesterov"],
            grad_scale,
            self.step_count == 1,
        )


@register_optimizer
class RMSProp(Optimizer):
    """RMSprop, optionally centered, with momentum and L2 weight decay, as ``torch.optim.RMSprop``.

    Parameters
    ----------
    lr : float, default 0.01
        The learning rate.
    alpha : float, default 0.99
        Smoothing constant of the squared-gradient average, in [0, 1).
    eps : float, default 1e-8
        Added to the denominator.
    momentum : float, default 0.0
        Momentum factor.
    centered : bool, default False
        Normalise by the gradient's estimated variance instead of its second moment.
    weight_decay : float, default 0.0
        L2 penalty added to the gradients of the weights.
    clip_norm : float, optional
        Clip the gradients' global L2 norm to this before the update.
    clip_value : float, optional
        Clip each gradient to [-clip_value, clip_value] (not with ``clip_norm``).

    Raises
    ------
    ValueError
        For a hyper-parameter out of its range (the message names it).

    Examples
    --------
    >>> import fastnn as fnn
    >>> fnn.optim.RMSProp(lr=1e-3, centered=True).get_config()["centered"]
    True
    """

    name = "rmsprop"

    def __init__(
        self,
        lr: float = 0.01,
        *,
        alpha: float = 0.99,
        eps: float = 1e-8,
        momentum: float = 0.0,
        centered: bool = False,
        weight_decay: float = 0.0,
        clip_norm: float | None = None,
        clip_value: float | None = None,
    ):
        super().__init__(lr, clip_norm=clip_norm, clip_value=clip_value)
        self._hyper = {
            "alpha": check_float(alpha, "alpha", 0.0, 1.0, high_inclusive=False),
            "eps": check_float(eps, "eps", 0.0, None, low_inclusive=False),
            "momentum": check_float(momentum, "momentum", 0.0, None),
            "centered": _check_bool(centered, "centered"),
            "weight_decay": check_float(weight_decay, "weight_decay", 0.0, None),
        }

    def _state_init(self):
        state = {"square_avg": 0.0}
        if self._hyper["centered"]:
            state["grad_avg"] = 0.0
        if self._hyper["momentum"] > 0:
            state["momentum_buffer"] = 0.0
        return state

    def _update(self, grad_scale):
        h = self._hyper
        self._K.rmsprop_update(
            self._params,
            self._grads,
            self._state["square_avg"],
            self._buffer("grad_avg"),
            self._buffer("momentum_buffer"),
            self.lr,
            h["alpha"],
            h["eps"],
            h["weight_decay"],
            self._n_decay,
            h["momentum"],
            h["centered"],
            grad_scale,
        )

    def _step_call(self, loss, norm):
        h = self._hyper
        state = (self._state["square_avg"], self._buffer("grad_avg"), self._buffer("momentum_buffer"))
        hyper = (h["alpha"], h["eps"], h["weight_decay"], self._n_decay, h["momentum"], h["centered"])
        return step_update.rmsprop_step, (*self._step_head(loss, norm), *state, *hyper)


@register_optimizer
class Adagrad(Optimizer):
    """Adagrad with learning-rate decay and L2 weight decay, as ``torch.optim.Adagrad``.

    Parameters
    ----------
    lr : float, default 0.01
        The learning rate.
    lr_decay : float, default 0.0
        The step-t learning rate is ``lr / (1 + (t - 1) * lr_decay)``.
    weight_decay : float, default 0.0
        L2 penalty added to the gradients of the weights.
    initial_accumulator_value : float, default 0.0
        Starting value of the squared-gradient sums.
    eps : float, default 1e-10
        Added to the denominator.
    clip_norm : float, optional
        Clip the gradients' global L2 norm to this before the update.
    clip_value : float, optional
        Clip each gradient to [-clip_value, clip_value] (not with ``clip_norm``).

    Raises
    ------
    ValueError
        For a hyper-parameter out of its range (the message names it).

    Examples
    --------
    >>> import fastnn as fnn
    >>> fnn.optim.get("adagrad", lr=0.1)
    Adagrad(lr=0.1, lr_decay=0.0, weight_decay=0.0, initial_accumulator_value=0.0, eps=1e-10)
    """

    name = "adagrad"

    def __init__(
        self,
        lr: float = 0.01,
        *,
        lr_decay: float = 0.0,
        weight_decay: float = 0.0,
        initial_accumulator_value: float = 0.0,
        eps: float = 1e-10,
        clip_norm: float | None = None,
        clip_value: float | None = None,
    ):
        super().__init__(lr, clip_norm=clip_norm, clip_value=clip_value)
        self._hyper = {
            "lr_decay": check_float(lr_decay, "lr_decay", 0.0, None),
            "weight_decay": check_float(weight_decay, "weight_decay", 0.0, None),
            "initial_accumulator_value": check_float(initial_accumulator_value, "initial_accumulator_value", 0.0, None),
            "eps": check_float(eps, "eps", 0.0, None, low_inclusive=False),
        }

    def _state_init(self):
        return {"state_sum": self._hyper["initial_accumulator_value"]}

    def _update(self, grad_scale):
        h = self._hyper
        self._K.adagrad_update(
            self._params,
            self._grads,
            self._state["state_sum"],
            self.lr,
            h["lr_decay"],
            h["eps"],
            h["weight_decay"],
            self._n_decay,
            self.step_count,
            grad_scale,
        )

    def _step_call(self, loss, norm):
        h = self._hyper
        hyper = (h["lr_decay"], h["eps"], h["weight_decay"], self._n_decay)
        return step_update.adagrad_step, (*self._step_head(loss, norm), self._state["state_sum"], *hyper)


@register_optimizer
class Adam(Optimizer):
    """Adam with bias correction, L2 weight decay added to the gradient and AMSGrad, as
    ``torch.optim.Adam``.

    Parameters
    ----------
    lr : float, default 1e-3
        The learning rate.
    betas : tuple of float, default (0.9, 0.999)
        Decay rates of the first and second moment averages, each in [0, 1).
    eps : float, default 1e-8
        Added to the denominator.
    weight_decay : float, default 0.0
        L2 penalty added to the gradients of the weights.
    amsgrad : bool, default False
        Use the running maximum of the second moment (AMSGrad).
    clip_norm : float, optional
        Clip the gradients' global L2 norm to this before the update.
    clip_value : float, optional
        Clip each gradient to [-clip_value, clip_value] (not with ``clip_norm``).

    Raises
    ------
    ValueError
        For a hyper-parameter out of its range (the message names it).

    Examples
    --------
    >>> import fastnn as fnn
    >>> opt = fnn.optim.Adam(lr=3e-3, betas=(0.9, 0.99))
    >>> opt.lr = 1e-3                      # what schedules do
    >>> opt.get_config()["betas"], opt.lr
    ([0.9, 0.99], 0.001)
    """

    name = "adam"
    decoupled: ClassVar[bool] = False

    def __init__(
        self,
        lr: float = 1e-3,
        *,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        amsgrad: bool = False,
        clip_norm: float | None = None,
        clip_value: float | None = None,
    ):
        super().__init__(lr, clip_norm=clip_norm, clip_value=clip_value)
        self._hyper = {
            "betas": _check_betas(betas),
            "eps": check_float(eps, "eps", 0.0, None, low_inclusive=False),
            "weight_decay": check_float(weight_decay, "weight_decay", 0.0, None),
            "amsgrad": _check_bool(amsgrad, "amsgrad"),
        }

    def _state_init(self):
        state = {"exp_avg": 0.0, "exp_avg_sq": 0.0}
        if self._hyper["amsgrad"]:
            state["max_exp_avg_sq"] = 0.0
        return state

    def _sparse_unsupported(self):
        return _has_any(self._hyper, weight_decay=0, amsgrad=False)

    def _rows_arguments(self, table):
        """The lazy update's buffers and hyper-parameters, as both of its kernels take them."""
        h = self._hyper
        buffers = (self._params, self._grads, self._state["exp_avg"], self._state["exp_avg_sq"], table.rows)
        return buffers, (table.lo, table.width), (h["betas"][0], h["betas"][1], h["eps"])

    def _update_rows(self, table):
        buffers, where, hyper = self._rows_arguments(table)
        self._K.adam_rows_update(*buffers, *where, self.lr, *hyper, self.step_count)

    def _rows_step_call(self, updated, table):
        return None  # stepped by _step_call's kernel (adam_sparse_step), in its parallel sweep

    def _update(self, grad_scale):
        h = self._hyper
        self._K.adam_update(
            self._params,
            self._grads,
            self._state["exp_avg"],
            self._state["exp_avg_sq"],
            self._buffer("max_exp_avg_sq"),
            self.lr,
            h["betas"][0],
            h["betas"][1],
            h["eps"],
            h["weight_decay"],
            self._n_decay,
            self.decoupled,
            h["amsgrad"],
            self.step_count,
            grad_scale,
        )

    def _step_call(self, loss, norm):
        h = self._hyper
        state = (self._state["exp_avg"], self._state["exp_avg_sq"], self._buffer("max_exp_avg_sq"))
        hyper = (h["betas"][0], h["betas"][1], h["eps"], h["weight_decay"], self._n_decay, self.decoupled, h["amsgrad"])
        table = self._sparse
        if table is not None:  # the touched rows in the same parallel sweep (fused_rows_call: none)
            self._check_sparse()
            where = (table.rows, table.lo, table.width)
            return step_update.adam_sparse_step, (*self._step_head(loss, norm), *state, *hyper, *where)
        return step_update.adam_step, (*self._step_head(loss, norm), *state, *hyper)


@register_optimizer
class AdamW(Adam):
    """Adam with decoupled weight decay ``p *= 1 - lr * weight_decay``, as ``torch.optim.AdamW``.

    Parameters
    ----------
    lr : float, default 1e-3
        The learning rate.
    betas : tuple of float, default (0.9, 0.999)
        Decay rates of the first and second moment averages, each in [0, 1).
    eps : float, default 1e-8
        Added to the denominator.
    weight_decay : float, default 1e-2
        Decoupled weight decay of the weights (biases and norm parameters are not decayed).
    amsgrad : bool, default False
        Use the running maximum of the second moment (AMSGrad).
    clip_norm : float, optional
        Clip the gradients' global L2 norm to this before the update.
    clip_value : float, optional
        Clip each gradient to [-clip_value, clip_value] (not with ``clip_norm``).

    Raises
    ------
    ValueError
        For a hyper-parameter out of its range (the message names it).

    Examples
    --------
    >>> import fastnn as fnn
    >>> fnn.optim.AdamW(weight_decay=0.05).get_config()["weight_decay"]
    0.05
    """

    name = "adamw"
    decoupled = True

    def __init__(
        self,
        lr: float = 1e-3,
        *,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
        amsgrad: bool = False,
        clip_norm: float | None = None,
        clip_value: float | None = None,
    ):
        super().__init__(
            lr,
            betas=betas,
            eps=eps,
            weight_decay=weight_decay,
            amsgrad=amsgrad,
            clip_norm=clip_norm,
            clip_value=clip_value,
        )


@register_optimizer
class Lion(Optimizer):
    """Lion (Chen et al. 2023, "Symbolic Discovery of Optimization Algorithms").

    p -= lr * sign(beta1 * m + (1 - beta1) * g), then m = beta2 * m + (1 - beta2) * g, with
    decoupled weight decay. One state buffer (half Adam's memory traffic); use a learning rate
    3-10x smaller and a weight decay 3-10x larger than AdamW's.

    Parameters
    ----------
    lr : float, default 1e-4
        The learning rate.
    betas : tuple of float, default (0.9, 0.99)
        The interpolation of the update and the decay of the momentum, each in [0, 1).
    weight_decay : float, default 0.0
        Decoupled weight decay of the weights.
    clip_norm : float, optional
        Clip the gradients' global L2 norm to this before the update.
    clip_value : float, optional
        Clip each gradient to [-clip_value, clip_value] (not with ``clip_norm``).

    Raises
    ------
    ValueError
        For a hyper-parameter out of its range (the message names it).

    Examples
    --------
    >>> import fastnn as fnn
    >>> params, grads = np.zeros(3, np.float32), np.array([1.0, -2.0, 0.0], np.float32)
    >>> opt = fnn.optim.Lion(lr=0.01)
    >>> opt.bind(params, grads, n_decay=3); opt.step()
    >>> params                              # lr times the sign of the update
    array([-0.01,  0.01,  0.  ], dtype=float32)
    """

    name = "lion"

    def __init__(
        self,
        lr: float = 1e-4,
        *,
        betas: tuple[float, float] = (0.9, 0.99),
        weight_decay: float = 0.0,
        clip_norm: float | None = None,
        clip_value: float | None = None,
    ):
        super().__init__(lr, clip_norm=clip_norm, clip_value=clip_value)
        self._hyper = {
            "betas": _check_betas(betas),
            "weight_decay": check_float(weight_decay, "weight_decay", 0.0, None),
        }

    def _state_init(self):
        return {"exp_avg": 0.0}

    def _update(self, grad_scale):
        h = self._hyper
        self._K.lion_update(
            self._params,
            self._grads,
            self._state["exp_avg"],
            self.lr,
            h["betas"][0],
            h["betas"][1],
            h["weight_decay"],
            self._n_decay,
            grad_scale,
        )

    def _step_call(self, loss, norm):
        h = self._hyper
        hyper = (h["betas"][0], h["betas"][1], h["weight_decay"], self._n_decay)
        return step_update.lion_step, (*self._step_head(loss, norm), self._state["exp_avg"], *hyper)


def get(optimizer: str | Optimizer = "sgd", **kwargs) -> Optimizer:
    """An optimizer from its name and hyper-parameters.

    Parameters
    ----------
    optimizer : str or Optimizer, default "sgd"
        A name of :data:`OPTIMIZERS` (case-insensitive: ``"adam"``, ``"SGD"`` ...), or an
        instance, returned as it is.
    **kwargs
        Hyper-parameters of the named optimizer (none with an instance).

    Returns
    -------
    Optimizer
        A new optimizer, or ``optimizer`` itself.

    Raises
    ------
    TypeError
        For keyword arguments with an instance, or an optimizer that is neither a name nor an instance.
    ValueError
        For an unknown name (the message suggests the closest).

    Examples
    --------
    >>> import fastnn as fnn
    >>> fnn.optim.get("Adam", lr=0.01).lr
    0.01
    """
    if isinstance(optimizer, Optimizer):
        if kwargs:
            raise TypeError(
                f"hyper-parameters {sorted(kwargs)} given with an optimizer instance; set them "
                f"when constructing it, e.g. fastnn.optim.{type(optimizer).__name__}(...)"
            )
        return optimizer
    if not isinstance(optimizer, str):
        raise TypeError(
            f"optimizer must be a name ({', '.join(OPTIMIZERS)}) or a fastnn.optim.Optimizer, "
            f"got {type(optimizer).__name__} {optimizer!r}"
        )
    name = check_choice(optimizer.lower(), OPTIMIZERS, "optimizer")
    return OPTIMIZERS[name](**kwargs)


def optimizer_from_config(config: dict[str, Any]) -> Optimizer:
    """Rebuild an optimizer from :meth:`Optimizer.get_config`.

    Parameters
    ----------
    config : dict
        The config, with its ``name`` (or, as copies and pickles of a model hold it, the
        Optimizer subclass itself: a user's subclass need not be registered then).

    Returns
    -------
    Optimizer
        A new, unbound optimizer with those hyper-parameters.

    Raises
    ------
    ValueError
        When ``config`` is not a dict with a ``name``.

    Examples
    --------
    >>> import fastnn as fnn
    >>> fnn.optim.optimizer_from_config(fnn.optim.AdamW(lr=0.002).get_config())
    AdamW(lr=0.002, betas=[0.9, 0.999], eps=1e-08, weight_decay=0.01, amsgrad=False)
    """
    if not isinstance(config, dict) or "name" not in config:
        raise ValueError(f"an optimizer config must be a dict with a 'name' key, got {config!r}")
    kwargs = {k: tuple(v) if k == "betas" else v for k, v in config.items() if k != "name"}
    if isinstance(config["name"], type) and issubclass(config["name"], Optimizer):
        optimizer_class: Any = config["name"]  # each subclass has its own constructor
        return optimizer_class(**kwargs)
    return get(config["name"], **kwargs)


__all__ = [
    "SparseRows",
    "OPTIMIZERS",
    "SGD",
    "Adagrad",
    "Adam",
    "AdamW",
    "Lion",
    "Optimizer",
    "RMSProp",
    "get",
    "optimizer_from_config",
    "register_optimizer",
]
