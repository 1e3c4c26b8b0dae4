"""Sequential: a stack of layers over one flat parameter buffer, and the engine API (forward,
backward, step plans, loss_and_grads, validate, snapshot/restore) that the training loop
(:mod:`fastnn.training`), diagnostics and serialization use."""

from __future__ import annotations

import contextlib
import copy
import math
import threading

import numpy as np

from . import _fit_options as fit_options
from . import _inference as inference
from . import _validation as V
from . import backend, freezing
from . import losses as losses_mod
from . import metrics as metrics_mod
from . import optim as optim_mod
from ._fused import CallRunner, rebindable
from .layers import layer_from_config, layer_to_config
from .layers.base import Context, Layer, Workspace, normalize_shape, shape_str, size_of, walk_layers

_PREDICT_BATCH = 1024
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


class _StepPlan:
    """The kernel calls of one training step at one batch size, on fixed buffers: the input
    and target buffers are filled, then forward calls, the loss kernel, backward calls and the
    gradient norm run (``run()`` returns (loss, gradient norm))."""

    __slots__ = ("backward", "contexts", "forward", "loss_args", "loss_fn", "out", "run", "x", "y")

    def __init__(self, x, y, out, forward, loss_call, backward, norm_call, contexts):
        self.x, self.y, self.out, self.forward, self.backward = x, y, out, forward, backward
        self.loss_fn, self.loss_args = loss_call
        self.contexts = contexts
        calls = [*forward, loss_call, *backward, norm_call]
        slots = (x, y) if rebindable(calls, x) and rebindable(calls, y) else ()
        self.run = CallRunner(calls, returns=(len(forward), len(calls) - 1), slots=slots)

    def inputs(self, xb, yb) -> tuple:
        """The arrays to pass to ``run`` for the batch (xb, yb): themselves, read in place, when the
        plan can (C-contiguous host arrays of its dtypes), else copied into the plan's buffers."""
        if not self.run.slots:
            for buf, batch in ((self.x, xb), (self.y, yb)):
                if batch is not buf:
                    backend.copy_into(buf, batch)
            return ()
        return tuple(
            batch
            if batch is buf or (batch.flags.c_contiguous and batch.flags.writeable and batch.dtype == buf.dtype)
            else _copied(buf, batch)
            for buf, batch in ((self.x, xb), (self.y, yb))
        )


def _copied(buf: np.ndarray, batch: np.ndarray) -> np.ndarray:
    buf[...] = batch
    return buf


class _StepGuard:
    """Copies of the state a step changes before it commits (running statistics, dropout
    counters), restored when the step fails, so any exception or interrupt leaves the model at
    the last completed step."""

    def __init__(self, buffers: list):
        self.pairs = [
            (
                buf,
                backend.host_copy(buf) if isinstance(buf, np.ndarray) else backend.zeros(buf.shape, buf.dtype, "cuda"),
            )
            for buf in buffers
        ]

    def save(self) -> None:
        for buf, saved in self.pairs:
            backend.copy_into(saved, buf)

    def restore(self) -> None:
        for buf, saved in self.pairs:
            backend.copy_into(buf, saved)


def _without_lr(config: dict) -> dict:
    return {k: v for k, v in config.items() if k != "lr"}


class Sequential:
    """Layers applied in order. ``dtype`` is "float32" (default) or "float64"; ``seed`` fixes the
    initial weights, the shuffling order and dropout masks.

    ``input_shape``: the per-sample input shape, e.g. ``(64,)`` or ``(1, 28, 28)``; taken from
    the first layer when it fixes it (``Dense(64, ...)``), else from the first batch the model
    sees. ``input_features=N`` is ``input_shape=(N,)``. The chain of shapes is checked when the
    model is built, naming both layers on a mismatch.

    Parameters, gradients and optimizer states each live in one flat contiguous buffer
    (``model.params``, ``model.grads``); every layer's ``weight``/``bias`` is a view into them,
    weights (which get weight decay) first, then biases and normalisation parameters.

    ``device``: "cpu" (default) or "cuda" (an NVIDIA GPU through numba-cuda: ``pip install
    "fastnn[cuda]"``); :meth:`to` moves a model.

    Life cycle guarantees: a layer, an optimizer and a loss belong to one model (a layer or an
    optimizer of another live model is refused; a shared loss is copied); ``copy.deepcopy`` and
    pickling give an independent model (its checkpoint record, like :meth:`save`); predict and
    evaluate may be called from several threads (they take the model's lock); training one model
    from two threads at once raises RuntimeError.
    """

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
        self.optimizer = None
        self.training = True
        self.stop_training = False
        from .training import TrainingState

        self.state = TrainingState()
        self._lock = threading.RLock()
        self._step_reduce = None  # fit under MPI: fastnn.distributed's hook between backward and optimizer
        self._trainer: int | None = None
        self._building = False
        self._stale = False
        self._eager: tuple | None = None  # (input, contexts) of the last eager forward()
        self.built = False
        self.input_shape = None
        self.output_shape = None
        for layer in walk_layers(layers):
            layer.set_owner(self)
        if input_features is not None and input_shape is not None:
            raise ValueError("pass input_shape or input_features, not both")
        if input_features is not None:
            input_shape = (V.check_int(input_features, "input_features", minimum=1),)
        if input_shape is None:
            input_shape = layers[0].expected_input_shape()
        if input_shape is not None:
            self.build(input_shape)

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
        """Check the chain of shapes from ``input_shape`` (per sample) and allocate everything."""
        shape = normalize_shape(input_shape)
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
    def _carried_state(layer) -> tuple[dict, dict]:
        """(parameters, buffers) a layer brings from an earlier model (a copy of a trained layer)."""
        views = layer.parameter_views
        buffers = layer.buffers() if layer.output_shape is not None else {}
        return (
            {name: backend.host_copy(v) for name, v in views.items()},
            {name: backend.host_copy(b) for name, b in buffers.items() if b is not None},
        )

    def _carry_over(self, carried) -> None:
        """Layers that arrive with weights (``copy.deepcopy`` of a trained layer, ``model[a:b]``)
        keep them instead of a fresh initialisation, where the shapes still match."""
        for layer, (params, buffers) in zip(self.layers, carried):
            views = layer.parameter_views
            for name, value in params.items():
                if name in views and views[name].shape == value.shape:
                    backend.copy_into(views[name], value)
            current = layer.buffers()
            for name, value in buffers.items():
                if name in current and current[name].shape == value.shape:
                    backend.copy_into(current[name], value)

    def _build_layers(self, shape):
        for i, layer in enumerate(self.layers):
            expected = layer.expected_input_shape()
            axis = layer.feature_axis
            if expected is not None and -len(shape) <= axis < len(shape) and expected[-1] != shape[axis]:
                prev = (
                    f"layer {i - 1} ({self.layers[i - 1]!r}) outputs {shape_str(shape)}"
                    if i
                    else f"the model's input is {shape_str(shape)}"
                )
                where = "the last axis" if axis == -1 else "the channel axis"
                raise ValueError(
                    f"layer shapes do not chain: {prev}, but layer {i} ({layer!r}) expects "
                    f"{expected[-1]} features on {where}; set layer {i}'s "
                    f"{layer.input_argument} to {shape[axis]}"
                )
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

    def _check_lengths_chain(self) -> None:
        """Sequence lengths (from Masking or Embedding(mask_padding=True), which must come first)
        may only reach layers that honour them, until a layer drops the time axis."""
        source = None
        for i, layer in enumerate(self.layers):
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
                    raise ValueError(
                        f"layer {i} ({layer!r}) cannot honour the padded steps that layer 0 "
                        f"({source!r}) marks: padded steps would change its valid outputs. Place it "
                        f"after a layer that drops the time axis (LastStep(), GlobalAvgPool(axis="
                        f"'time'), a recurrent layer with return_sequences=False), or remove the masking"
                    )
                if policy == "drop":
                    source = None

    @property
    def epochs_done(self) -> int:
        """Epochs completed by fit() (saved with the model)."""
        return self.state.epochs_done

    @epochs_done.setter
    def epochs_done(self, value: int) -> None:
        self.state.epochs_done = V.check_int(value, "epochs_done", minimum=0)

    @property
    def input_dtype(self) -> np.dtype:
        """dtype of the model's input: the model's dtype, or int64 when the first layer takes indices
        (Embedding)."""
        return getattr(self.layers[0], "input_dtype", None) or self.dtype

    @property
    def in_features(self) -> int | None:
        """The last axis of the input shape."""
        return None if self.input_shape is None else self.input_shape[-1]

    @property
    def out_features(self) -> int | None:
        """The last axis of the output shape."""
        return None if self.output_shape is None else self.output_shape[-1]

    # -- the loss over positions: an output (batch, *positions, k) is (batch * positions) rows --------
    @property
    def positions(self) -> int:
        """Loss rows per sample: 1 for outputs (batch, k), T for sequence outputs (batch, T, k)."""
        return size_of(self.output_shape[:-1])

    def target_shape(self) -> tuple[tuple[int, ...], np.dtype]:
        """(per-sample shape, dtype) of the checked targets: (*positions, *the loss's per-row shape)."""
        trailing, dtype = self.loss.target_spec(self.output_shape[-1], self.dtype)
        return (*self.output_shape[:-1], *trailing), dtype

    def loss_rows(self, out, target, grad=None):
        """(output, target, grad) as the loss's rows: the leading per-sample axes of an N-D output
        are positions, each a row of k outputs with its own target (per-step classification)."""
        if len(self.output_shape) == 1:
            return out, target, grad
        k = self.output_shape[-1]
        rows = out.size // k
        target = target.reshape((rows, *target.shape[len(self.output_shape) :]))
        if grad is not None and grad.size == out.size:  # (a placeholder when no gradient is computed)
            grad = grad.reshape((rows, k))
        return out.reshape((rows, k)), target, grad

    def loss_value(self, out, target, grad, compute_grad: bool = True) -> float:
        """The compiled loss of output ``out`` (batch, *output_shape) against checked ``target``
        (mean over every position), writing d loss / d out into ``grad`` when ``compute_grad``."""
        out, target, grad = self.loss_rows(out, target, grad)
        return self.loss.forward_backward(out, target, grad, compute_grad)

    def correct_count(self, out, target) -> int | None:
        """Positions classified right (accuracy = this / (samples * positions)); None for
        regression losses."""
        out, target, _ = self.loss_rows(out, target)
        return self.loss.correct_count(out, target)

    def require_built(self, what: str):
        """RuntimeError naming ``what`` (the caller's action) unless the model knows its shapes."""
        if not self.built:
            raise RuntimeError(
                f"{what} needs a built model, and this one does not know its input shape yet: pass "
                f"Sequential(..., input_shape=(...)), call model.build(input_shape), or fit/predict "
                f"on data first"
            )

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
        """Grow the training input and gradient buffers to ``batch_size`` rows before any plan uses them."""
        self._inputs(batch_size)
        self._grad_out(batch_size)

    def _make_workspaces(self):
        self._grad_out = Workspace(self.dtype, self._device, grad=self.output_shape)
        self._inputs = Workspace(self.input_dtype, self._device, x=self.input_shape)  # the plans' inputs
        self._feed = Workspace(self.input_dtype, self._device, x=self.input_shape)  # predict/forward on a device
        self._plans: dict = {}  # batch size -> _StepPlan; ("fused-infer", rows) -> fastnn._inference plans
        self._norm_partials = backend.zeros(
            backend.kernels(self._device).norm_partials_size(max(self.params.size, 1)), np.float64, self._device
        )
        buffers = [buf for layer in self.layers for buf in layer.buffers().values()]
        self._guard = _StepGuard(buffers)
        self._eager = None

    # -- changes after build ------------------------------------------------------------------
    def layer_changed(self, layer: Layer, name: str) -> None:
        """Called by a layer of this model when one of its public attributes is set: the plans are
        rebuilt (or the change refused) before the next use."""
        if not self._building and self.built:
            self._stale = True

    def _refresh(self) -> None:
        """Rebuild the layers' buffers and the plans after a layer's hyper-parameter changed; refuse
        changes that would change the parameters (they need a new model)."""
        with self._lock:
            self._building = True
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
                    raise ValueError(
                        "a layer of this built model was changed in a way that changes its parameters "
                        "(their shapes or names); that needs a new model: build a new Sequential with "
                        "the new layers (copy weights with named_parameters() if needed)"
                    )
                for layer in self.layers:
                    layer.training = self.training
                self._bind_views()
                self._make_workspaces()
                self._plannable = all(layer.plannable() for layer in self.layers)
            finally:
                self._building = False
            self._stale = False

    def prepare(self, what: str) -> None:
        """Before computing: the model must be built; plans made stale by a changed layer are rebuilt."""
        self.require_built(what)
        if self._stale:
            self._refresh()

    # -- devices --------------------------------------------------------------------------------
    @property
    def device(self) -> str:
        """Where the parameters, optimizer state and layer buffers live: "cpu" or "cuda"."""
        return self._device

    def to(self, device: str) -> Sequential:
        """Move the model to ``device`` ("cpu" or "cuda") and return it.

        The flat parameter and gradient buffers and the optimizer state are copied once and every
        layer's views re-bound to them; layer buffers (running statistics ...) are copied, workspaces
        re-allocated there, step plans rebuilt. Moving to "cuda" where numba-cuda, a driver or a GPU
        is missing raises RuntimeError saying which (``pip install "fastnn[cuda]"``).
        """
        V.check_choice(device, backend.DEVICES, "device")
        self._target_device = device
        if device == self._device or not self.built:
            return self
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
            saved = [{name: backend.host_copy(buf) for name, buf in layer.buffers().items()} for layer in self.layers]
            self.params = backend.to_device(self.params, device)
            self.grads = backend.to_device(self.grads, device)
            self._building = True
            try:
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
            if self.optimizer is not None and getattr(self.optimizer, "_params", None) is not None:
                self.optimizer.rebind(self.params, self.grads)
        return self

    def _rows_in(self, rows: np.ndarray, workspace: Workspace, name: str, arena: str = "infer"):
        """Host rows as the model's input: themselves on the CPU, copied into ``workspace`` on a device."""
        if self._device == "cpu":
            return rows
        buf = workspace(rows.shape[0], arena)[name]
        backend.copy_into(buf, rows)
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
        """[(name, value_view, grad_view)] in layer order, e.g. ("0.weight", W, dW)."""
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
        self.require_built("count_params")
        return int(self.params.size)

    # -- modes ----------------------------------------------------------------------------------
    def train(self, mode: bool = True) -> Sequential:
        self.training = bool(mode)
        for layer in walk_layers(self.layers):
            layer.training = self.training
        return self

    def eval(self) -> Sequential:
        return self.train(False)

    # -- the engine: eager forward/backward on contexts ------------------------------------------
    def _forward(self, x: np.ndarray, training: bool, arena: str = "eager") -> tuple[np.ndarray, list]:
        """(output, contexts): every layer's forward in order; the contexts feed :meth:`_backward`."""
        contexts, lengths = [], None
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
                x = layer.forward(x, training)
                contexts.append(None)
        return x, contexts

    def _backward(self, grad: np.ndarray, contexts: list, need_grad_x: bool) -> np.ndarray | None:
        for i in range(len(self.layers) - 1, -1, -1):
            grad = self._layer_backward(i, grad, contexts[i], need_grad_x or i > 0)
        return grad

    def _layer_backward(self, i: int, grad, ctx, need_grad_x: bool):
        """Layer i's backward from the context of its forward (None: a user layer's own backward)."""
        layer = self.layers[i]
        if ctx is None:
            grad = layer.backward(grad, need_grad_x)
        else:
            calls, grad = layer.backward_calls(grad, ctx, need_grad_x)
            for fn, args in calls:
                fn(*args)
        layer.last_grad_input = grad
        return grad

    def _check_x(self, X, argument="X"):
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
    def _first_layer_name(self) -> str:  # only formatted when an error message needs it
        return _LazyText(lambda: f"the first layer ({self.layers[0]!r})")

    def forward(self, x, training: bool | None = None) -> np.ndarray:
        """Output (batch, *output_shape) for input (batch, *input_shape); a new array.

        Keeps what :meth:`backward` needs (in buffers of its own: a predict in between does not
        change it). ``training`` (default: the model's mode) selects dropout and batch statistics.
        """
        x = self._check_x(x, "x")
        self.prepare("forward")
        training = self.training if training is None else bool(training)
        with self._lock:
            x = self._rows_in(x, self._feed, "x", "eager")
            out, contexts = self._forward(x, training)
            self._eager = (x.shape[0], contexts)
            return backend.host_copy(out)

    def backward(self, grad_out) -> np.ndarray | None:
        """Gradient of the input from ``grad_out`` = d loss / d output of the last forward() (None
        for a model whose input is integer indices).

        Also writes every parameter's gradient (``model.grads``, ``named_parameters()``).
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
        """Every layer's output for input X (host copies, in layer order); the engine's view of the
        activations (diagnostics, plots). Training mode draws dropout masks and batch statistics
        without changing running statistics or the model's state."""
        X = self._check_x(X)
        self.prepare("layer_outputs")
        with self._lock, self._state_kept():
            _, contexts = self._forward(self._rows_in(X, self._feed, "x", "probe"), bool(training), "probe")
            return [backend.host_copy(layer.last_output) for layer in self.layers]

    def loss_and_grads(self, X, y, training: bool = True) -> tuple[float, dict[str, np.ndarray]]:
        """(loss, {parameter name: gradient copy}) on one batch, without an update; leaves
        ``model.grads`` filled. Running statistics and dropout counters are left unchanged."""
        self.require_compiled("loss_and_grads")
        X, y = self._check_xy(X, y)
        self.prepare("loss_and_grads")
        with self._lock, self._state_kept():
            out, contexts = self._forward(self._rows_in(X, self._feed, "x", "probe"), bool(training), "probe")
            grad = self._grad_out(X.shape[0], "probe")["grad"]
            loss = self.loss_value(out, self._target_in(y), grad, True)
            self._backward(grad, contexts, False)
            return float(loss), {name: backend.host_copy(g) for name, _, g in self.named_parameters()}

    def validate(self, X, y, batch_size: int = _PREDICT_BATCH, *, sample_weight=None) -> dict:
        """Metrics of the model on (X, y) in evaluation mode: {"loss": ..., "accuracy": ..., compiled
        metrics} (the pass the fit loop runs on validation data; ``sample_weight`` (n,) weights the loss)."""
        self.require_compiled("validate")
        X, y = self._check_xy(X, y)
        return self._evaluate(X, y, batch_size, fit_options.training_weights(self, y, sample_weight, None))

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
        """Everything needed to continue exactly, as a plain record of host arrays and JSON-able
        values: architecture, parameters, buffers, loss, optimizer config and state, training state
        (epochs done, position in the epoch, callback states). :func:`restore` (or
        :meth:`from_snapshot`) rebuilds; ``save`` writes this record to a file."""
        self.require_built("snapshot")
        with self._lock:
            record = {
                "config": self.get_config(),
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
            }
            if self.optimizer is not None:
                record["optimizer"] = {"config": self.optimizer.get_config(), "state": self.optimizer.state_dict()}
            return record

    def restore(self, record: dict) -> Sequential:
        """Load a :meth:`snapshot` record of a model of the same architecture into this one."""
        self.require_built("restore")
        with self._lock:
            arrays = self.state_arrays()
            for name, value in record["params"].items():
                V.check_state_array(arrays, name, value)
            for name, value in record["buffers"].items():
                V.check_state_array(arrays, name, value)
            for name, value in {**record["params"], **record["buffers"]}.items():
                backend.copy_into(arrays[name], np.asarray(value))
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
                self.optimizer.load_state_dict(record["optimizer"]["state"])
            elif record.get("loss") is not None:
                self.loss = losses_mod.from_config(record["loss"])
            self.metrics = metrics_mod.from_config(record.get("metrics"), self.loss)
            self.state.load_record(record.get("training") or {})
            self.train(record.get("training_mode", True))
        return self

    @classmethod
    def from_snapshot(cls, record: dict, device: str = "cpu") -> Sequential:
        """A new model rebuilt from a :meth:`snapshot` record."""
        model = cls.from_config(record["config"])
        model.restore(record)
        return model.to(device)

    def __getstate__(self):
        if not self.built:
            state = {
                "layers": [layer_to_config(layer, by_class=True) for layer in self.layers],
                "seed": self.seed,
                "dtype": self.dtype.name,
            }
            return {"unbuilt": state}
        record = self.snapshot()
        record["config"]["layers"] = [layer_to_config(layer, by_class=True) for layer in self.layers]
        record["device"] = self._device
        return {"record": record}

    def __setstate__(self, state):
        if "unbuilt" in state:
            s = state["unbuilt"]
            self.__init__([layer_from_config(e) for e in s["layers"]], seed=s["seed"], dtype=s["dtype"])
            return
        record = state["record"]
        config = record["config"]
        self.__init__(
            [layer_from_config(e) for e in config["layers"]],
            seed=config["seed"],
            dtype=config["dtype"],
            input_shape=config["input_shape"],
        )
        self.restore(record)
        self.to(record.get("device", "cpu"))

    def __deepcopy__(self, memo):
        clone = Sequential.__new__(Sequential)
        clone.__setstate__(self.__getstate__())
        memo[id(self)] = clone
        return clone

    def __copy__(self):
        raise TypeError(
            "a shallow copy of a model would share its parameters and buffers; use copy.deepcopy(model) "
            "for an independent copy"
        )

    # -- training ---------------------------------------------------------------------------------
    def compile(
        self, loss="cross_entropy", optimizer="sgd", *, metrics=None, decay_bias_and_norm: bool | None = None
    ) -> Sequential:
        """Choose the loss (a name or a fastnn.losses.Loss) and optimizer (a name or instance).

        ``metrics``: a list of names ("f1", "auc", "r2", ...), :mod:`fastnn.metrics` objects or
        functions ``f(y_true, y_pred) -> float``, logged by fit (and "val_" ones) and evaluate;
        None keeps the current ones, [] removes them. See :mod:`fastnn.metrics`.

        The optimizer's weight decay applies to weight matrices only; biases and normalisation
        parameters are excluded unless ``decay_bias_and_norm=True`` (default: keep the current
        choice, False at first). Compiling again with the optimizer already bound to this model keeps
        its state (moments, step count). An optimizer bound to another live model is refused.
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
            decay_bias_and_norm = bool(decay_bias_and_norm)
        with self._lock:
            self.loss = loss
            self.metrics = metrics
            loss.set_owner(self)
            changed = decay_bias_and_norm is not None and decay_bias_and_norm != self.decay_bias_and_norm
            if decay_bias_and_norm is not None:
                self.decay_bias_and_norm = decay_bias_and_norm
            keep = optimizer is self.optimizer and not changed and getattr(optimizer, "_params", None) is not None
            self.optimizer = optimizer
            optimizer.set_owner(self)
            if self.built:
                self._plans.clear()
                if not keep:
                    self._bind_optimizer()
        return self

    def _bind_optimizer(self):
        n_decay = self.params.size if self.decay_bias_and_norm else self.n_decay
        self.optimizer.bind(self.params, self.grads, n_decay)
        self.optimizer.trainable = freezing.trainable_ranges(self)

    def trainable_changed(self) -> None:
        """Called when a layer's ``trainable`` is set: the optimizer learns the new trainable ranges."""
        if self.built and self.optimizer is not None:
            self.optimizer.trainable = freezing.trainable_ranges(self)

    def freeze(self, *layers) -> Sequential:
        """Set ``trainable = False`` on the given layers (Layer objects, indices or paths such as
        "2.block.0"; all layers when none is given): see :mod:`fastnn.freezing`."""
        for layer in freezing.resolve_layers(self, layers) if layers else self.layers:
            layer.trainable = False
        return self

    def unfreeze(self, *layers) -> Sequential:
        """Set ``trainable = True`` on the given layers (all layers, and those inside them, when none is given)."""
        for layer in freezing.resolve_layers(self, layers) if layers else walk_layers(self.layers):
            layer.trainable = True
        return self

    def require_compiled(self, what: str):
        if self.loss is None or self.optimizer is None:
            raise RuntimeError(
                f"{what} needs a loss and an optimizer: call model.compile(loss=..., "
                f"optimizer=...) first, or pass them to fit()"
            )
        if self.built and getattr(self.optimizer, "_params", None) is None:
            self._bind_optimizer()

    def check_data(self, X, y=None, argument: str = "X"):
        """(X, y) checked and converted as fit/evaluate take them (X alone when y is None): the
        public boundary other modules use before they call the engine."""
        if y is None:
            return self._check_x(X, argument)
        return self._check_xy(X, y, argument)

    def last_batch(self) -> np.ndarray | None:
        """A host copy of the input of the last training step (None before any)."""
        last = self.__dict__.get("_last_x")
        return None if last is None else backend.host_copy(last)

    def _check_xy(self, X, y, argument="X"):
        X = self._check_x(X, argument)
        self.require_compiled("training")
        if len(self.output_shape) == 1:
            return X, losses_mod.base_of(self.loss).check_targets(y, X.shape[0], self.output_shape[0], self.dtype)
        return X, self._check_position_targets(y, X.shape[0])

    def _check_position_targets(self, y, n: int) -> np.ndarray:
        """Targets (n, *positions, ...) for an output (batch, *positions, k): one target per position."""
        lead = self.output_shape[:-1]
        arr = V.as_numeric_array(y, "y")
        if arr.shape[: 1 + len(lead)] != (n, *lead):
            per_row = (
                "a label"
                if self.loss.target_spec(self.output_shape[-1], self.dtype)[0] == ()
                else f"{self.output_shape[-1]} targets"
            )
            raise ValueError(
                f"y has shape {arr.shape}, but the model's output is {shape_str(self.output_shape)}, "
                f"so y must start with ({n}, {', '.join(map(str, lead))}): {per_row} for each of the "
                f"{size_of(lead)} positions of each of the {n} samples"
            )
        rows = self.loss.check_targets(
            arr.reshape((n * size_of(lead), *arr.shape[1 + len(lead) :])),
            n * size_of(lead),
            self.output_shape[-1],
            self.dtype,
        )
        return rows.reshape((n, *lead, *rows.shape[1:]))

    def step_plan(self, m: int) -> _StepPlan | None:
        """The step plan for batch size ``m`` (built once): its input/target buffers ``x``/``y``
        and its calls; None when a layer is not plannable (user layers with NumPy code)."""
        plan = self._plans.get(m)
        if plan is None and self._plannable:
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
                forward += calls
                contexts.append(ctx)
            grad = self._grad_out(m)["grad"]
            backward, g = [], grad
            after = getattr(self, "_after_layer_backward", None)  # fastnn.distributed.Buckets: Allreduce starts
            for i in range(len(self.layers) - 1, -1, -1):
                calls, g = self.layers[i].backward_calls(g, contexts[i], i > 0)
                backward += calls if after is None else [*calls, *after(i)]
            K = backend.kernels(self._device)
            norm_call = (K.grad_global_norm, (self.grads, self._norm_partials))
            plan = self._plans[m] = _StepPlan(
                x, y, h, forward, self.loss.call(*self.loss_rows(h, y, grad)), backward, norm_call, contexts
            )
        return plan

    @contextlib.contextmanager
    def training_session(self, what: str):
        """The calling thread trains this model inside the block; RuntimeError if another thread
        is training it (one model is trained from one thread at a time)."""
        me = threading.get_ident()
        with self._lock:
            if self._trainer is not None and self._trainer != me:
                raise RuntimeError(
                    f"{what}: this model is being trained by another thread; train one model from "
                    f"one thread at a time (copy.deepcopy(model) gives each thread its own)"
                )
            previous, self._trainer = self._trainer, me
        try:
            yield
        finally:
            self._trainer = previous

    def run_step(self, xb: np.ndarray, yb: np.ndarray, *, update: bool = True) -> tuple[float, np.ndarray]:
        """One training step on checked arrays (:meth:`check_data`; or a step plan's own buffers);
        returns (loss, output view). Transactional: if it fails (an exception, a non-finite loss
        or gradient), the model is left as before it. ``update=False``: the gradients only, in
        ``model.grads`` (no optimizer step; :mod:`fastnn.accumulation`)."""
        with self._lock:
            guard = self._guard
            if guard.pairs:
                guard.save()
            step_count = self.optimizer.step_count
            try:
                plan = self.step_plan(xb.shape[0])
                if plan is None:  # a user layer runs its own forward/backward
                    out, contexts = self._forward(xb, True, "train")
                    grad = self._grad_out(xb.shape[0])["grad"]
                    loss = self.loss_value(out, yb, grad, True)
                    self._backward(grad, contexts, False)
                    norm = backend.kernels(self._device).grad_global_norm(self.grads, self._norm_partials)
                else:
                    loss, norm = plan.run(*plan.inputs(xb, yb))  # the batch read in place where it can be
                    out = plan.out
                if self._step_reduce is not None:  # gradients summed over the ranks: global loss and norm
                    loss, norm = self._step_reduce(loss, norm, out, yb)
                if not (math.isfinite(loss) and math.isfinite(norm)):
                    guard.restore()
                    raise FloatingPointError(self._divergence_report(loss, norm, xb, yb))
                if update:
                    self.optimizer.step(grad_norm=norm)
                self._last_x = xb
            except BaseException:
                guard.restore()
                self.optimizer.step_count = step_count
                raise
            return loss, out

    def train_step(self, xb, yb) -> float:
        """One forward, loss, backward and optimizer update on a batch; returns the loss."""
        xb, yb = self._check_xy(xb, yb, "xb")
        if self._stale:
            self._refresh()
        # training_session, inlined: a generator-based context manager costs ~1 us, a tenth of a small step
        me = threading.get_ident()
        with self._lock:
            previous = self._trainer
            if previous is not None and previous != me:
                raise RuntimeError(
                    "train_step: this model is being trained by another thread; train one model "
                    "from one thread at a time (copy.deepcopy(model) gives each thread its own)"
                )
            self._trainer = me
            try:
                return self.run_step(xb, yb)[0]
            finally:
                self._trainer = previous

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
                    self.loss_value(out, yb, grad, True)
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

    def fit(
        self,
        X,
        y=None,
        *,
        loss=None,
        optimizer=None,
        epochs: int = 1,
        batch_size: int = 32,
        shuffle: bool = True,
        validation_data=None,
        callbacks=None,
        verbose: int = 1,
        steps_per_epoch=None,
        accumulate: int = 1,
        validation_split: float = 0.0,
        sample_weight=None,
        class_weight=None,
    ):
        """Train on (X, y) for ``epochs`` passes in mini-batches; returns a :class:`History`.

        X (n, *input_shape) numeric; y: integer labels (n,) for cross_entropy, else (n, outputs)
        or (n,) targets. ``validation_data=(X_val, y_val)`` or ``(X_val, y_val, w_val)`` adds
        val_loss, val_accuracy and the compiled metrics' "val_" values per epoch;
        ``validation_split=f`` holds out the last fraction f of (X, y) instead (before shuffling).
        ``sample_weight`` (n,) float >= 0 and ``class_weight`` {class: weight} (multiplied) weight
        each sample's loss and its gradient: a batch's loss is sum w_i l_i / sum w_i.
        ``verbose``: 0 silent, 1 progress bar per epoch, 2 one line per epoch. See
        :func:`fastnn.training.fit` for interrupts and resuming.
        X may instead be a :class:`fastnn.data.ArrayDataset` (memory-mapped data, shuffled by
        block) or an iterable, iterator or callable of (X, y) batches, with y None and
        ``steps_per_epoch`` batches per epoch (:mod:`fastnn.streaming`). ``accumulate=k``: one
        update per k batches, equal to one batch k times larger (:mod:`fastnn.accumulation`).
        """
        from .training import fit

        return fit(
            self,
            X,
            y,
            loss=loss,
            optimizer=optimizer,
            epochs=epochs,
            batch_size=batch_size,
            shuffle=shuffle,
            validation_data=validation_data,
            callbacks=callbacks,
            verbose=verbose,
            steps_per_epoch=steps_per_epoch,
            accumulate=accumulate,
            validation_split=validation_split,
            sample_weight=sample_weight,
            class_weight=class_weight,
        )

    # -- inference --------------------------------------------------------------------------------
    def _predict(self, X: np.ndarray, batch_size: int) -> np.ndarray:
        self.prepare("predict")
        if inference.supported(self):  # recorded plans at every batch size, BatchNorm folded (fastnn._inference)
            with self._lock:
                return inference.predict(self, X, batch_size)
        out = np.empty((X.shape[0], *self.output_shape), self.dtype)
        with self._lock:
            for lo in range(0, X.shape[0], batch_size):
                rows = self._rows_in(X[lo : lo + batch_size], self._feed, "x", "infer")
                result, _ = self._forward(rows, False, "infer")
                backend.copy_into(out[lo : lo + batch_size], result)
        return out

    def predict(self, X, batch_size: int = _PREDICT_BATCH) -> np.ndarray:
        """The network's outputs (logits for classifiers) for X, in evaluation mode."""
        batch_size = V.check_int(batch_size, "batch_size", minimum=1)
        return self._predict(self._check_x(X), batch_size)

    def predict_proba(self, X, batch_size: int = _PREDICT_BATCH) -> np.ndarray:
        """Class probabilities: softmax of the logits (cross_entropy) or sigmoid (binary)."""
        if self.loss is None:
            raise RuntimeError(
                "predict_proba needs a loss (it says how outputs become probabilities): call "
                "model.compile(loss=...) first"
            )
        out = self.predict(X, batch_size)
        return self.loss.probabilities(self.loss_rows(out, out)[0]).reshape(out.shape)

    def predict_classes(self, X, batch_size: int = _PREDICT_BATCH) -> np.ndarray:
        """Predicted class labels: argmax of the logits, or (logit > 0) per output for binary and
        multi-label outputs (the labels the accuracy compares)."""
        out = self.predict(X, batch_size)
        rows = self.loss_rows(out, out)[0]
        if self.loss is not None and hasattr(self.loss, "predict_classes"):
            labels = self.loss.predict_classes(rows)
        else:
            labels = rows.argmax(axis=1) if rows.shape[1] > 1 else (rows[:, 0] > 0).astype(np.int64)
        return labels.reshape((*out.shape[:-1], *labels.shape[1:]))

    def _evaluate(self, X, y, batch_size, weights=None) -> dict:
        with self._lock:  # the loss's reduction scratch is shared: one evaluation at a time
            return metrics_mod.evaluate_outputs(self, self._predict(X, batch_size), y, weights)

    def evaluate(self, X, y=None, batch_size: int = _PREDICT_BATCH, *, sample_weight=None, class_weight=None) -> dict:
        """{"loss": ..., "accuracy": ..., each compiled metric} in evaluation mode (accuracy for
        classification losses). ``sample_weight`` (n,) and ``class_weight`` {class: weight} weight
        the loss as in :meth:`fit` (over the whole set: sum w_i l_i / sum w_i); metrics are unweighted.
        X may instead be a :class:`fastnn.data.ArrayDataset` or a re-iterable/callable of (X, y[, w])
        batches (y None; weights come with the data): the loss and metrics of all its samples
        together, equal to those of the same arrays."""
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
            return streaming.validation(self, X)()
        batch_size = V.check_int(batch_size, "batch_size", minimum=1)
        X, y = self._check_xy(X, y)
        return self._evaluate(X, y, batch_size, fit_options.training_weights(self, y, sample_weight, class_weight))

    # -- weights ----------------------------------------------------------------------------------
    def state_arrays(self) -> dict[str, np.ndarray]:
        """Every parameter ("0.weight" ...) and layer buffer ("1.running_mean" ...) by name
        (views on the model's device: device arrays on "cuda")."""
        arrays = {name: value for name, value, _ in self.named_parameters()}
        for i, layer in enumerate(self.layers):
            arrays.update({f"{i}.{name}": buf for name, buf in layer.buffers().items()})
        return arrays

    def save_weights(self, path) -> None:
        """Write parameters and buffers to an .npz file (no pickle; written atomically)."""
        from .io import atomic_write

        with atomic_write(path) as handle:
            np.savez(handle, **{name: backend.to_host(arr) for name, arr in self.state_arrays().items()})

    def load_weights(self, path) -> None:
        """Load parameters and buffers saved by :meth:`save_weights`; shapes must match."""
        from . import io

        expected = self.state_arrays()
        io.check_npz_file(path)
        with np.load(path, allow_pickle=False) as data:
            missing = sorted(set(expected) - set(data.files))
            unexpected = sorted(set(data.files) - set(expected))
            if missing or unexpected:
                raise ValueError(f"{path} does not match this model: missing {missing}, unexpected {unexpected}")
            for name, target in expected.items():
                if data[name].shape != target.shape:
                    raise ValueError(f"{path}: {name} has shape {data[name].shape}, the model expects {target.shape}")
            with self._lock:
                for name, target in expected.items():
                    backend.copy_into(target, data[name])

    # -- full save / load --------------------------------------------------------------------------
    def get_config(self) -> dict:
        """JSON-able architecture: dtype, seed, input shape and each layer's class and config."""
        return {
            "class": "Sequential",
            "dtype": self.dtype.name,
            "seed": self.seed,
            "input_shape": None if self.input_shape is None else list(self.input_shape),
            "layers": [layer_to_config(layer) for layer in self.layers],
        }

    @classmethod
    def from_config(cls, config: dict, device: str = "cpu") -> Sequential:
        layers = [layer_from_config(entry) for entry in config["layers"]]
        shape = config.get("input_shape")
        if shape is None and config.get("input_features") is not None:  # files of fastnn 0.1
            shape = (config["input_features"],)
        return cls(layers, seed=config["seed"], dtype=config["dtype"], input_shape=shape, device=device)

    def save(self, path) -> None:
        """Write everything needed to resume training exactly to one safetensors file, atomically:
        architecture, weights and buffers, loss, optimizer state and step count, the position
        in the epoch, and the state of the callbacks of the last fit()."""
        from . import serialization

        serialization.save_model(self, path)

    # -- interop (fastnn/interop) --------------------------------------------------------------------
    def export_onnx(self, path, *, opset: int = 17):
        """Write this model as ONNX to ``path`` (needs onnx); see :func:`fastnn.interop.export_onnx`."""
        from .interop import export_onnx

        return export_onnx(self, path, opset=opset)

    def to_torch(self):
        """An equal ``torch.nn.Sequential`` (needs torch); see :func:`fastnn.interop.to_torch`."""
        from .interop import to_torch

        return to_torch(self)

    # -- description --------------------------------------------------------------------------------
    def summary(self, print_fn=print) -> str:
        """Table of layers, output shapes and parameter counts; printed and returned."""
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
    """Rebuild a model saved by ``model.save(path)``, ready to predict or to continue fit(), on
    ``device`` ("cpu" or "cuda"; a file saved from either device loads on either).

    Raises CorruptFileError (a ValueError) for a damaged, tampered or foreign file. ``verify=False``
    skips the checksum (for a file whose checksum was removed); the structure, dtypes and shapes
    are checked against the architecture either way."""
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
    return model.to(device)
