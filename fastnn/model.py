"""Sequential: a stack of layers over one flat parameter buffer, trained with fit()."""
from __future__ import annotations

import math
import time

import numpy as np

from . import _validation as V
from . import backend
from . import losses as losses_mod
from . import optim as optim_mod
from ._config import PARALLEL_MIN_ELEMENTS
from ._fused import CallRunner
from ._progress import EpochProgress
from .callbacks import CallbackList, History
from .kernels.rng import permutation
from .layers import layer_from_config, layer_to_config
from .layers.base import Layer, Workspace

_PREDICT_BATCH = 1024
_SHUFFLE_STREAM = 1 << 40  # RNG stream of the epoch order (parameters and dropout use others)


class _LazyText:
    """A string computed only when formatted (error messages on the hot path cost nothing)."""

    __slots__ = ("make",)

    def __init__(self, make):
        self.make = make

    def __str__(self) -> str:
        return self.make()

    def __format__(self, spec: str) -> str:
        return format(self.make(), spec)


class _StepPlan:
    """The kernel calls of one training step at one batch size, on fixed buffers: the input
    and target buffers are filled, then forward calls, the loss kernel and backward calls run."""

    __slots__ = ("backward", "forward", "loss_args", "loss_fn", "out", "run", "x", "y")

    def __init__(self, x, y, out, forward, loss_call, backward):
        self.x, self.y, self.out, self.forward, self.backward = x, y, out, forward, backward
        self.loss_fn, self.loss_args = loss_call
        # forward, loss and backward as one runner that returns the loss (fused when small)
        self.run = CallRunner([*forward, loss_call, *backward], returns=len(forward))


_MAX_PLANS = 8


class _BatchFeeder:
    """Copies training batches from host arrays into a step plan's device buffers, one batch ahead.

    Two slots, each a page-locked (pinned) host pair (x, y) and a device pair of the full batch
    size. While the GPU runs step i, batch i+1 is gathered on the host into the other slot and
    copied to its device pair on a non-blocking stream of its own. At step i+1 the default stream
    (where the kernels run) waits for that copy (an event) and moves the batch into the plan's
    buffers device-to-device, after step i's kernels that still read them. A slot is refilled only
    when its last copy has finished (the host waits on its event) and was moved on (the copy stream
    waits on an event), so the results are those of synchronous copies. ``prefetch = False``
    copies each batch when its step starts (no overlap).
    """

    prefetch = True

    def __init__(self, model: Sequential, batch_size: int, X: np.ndarray, y: np.ndarray):
        trailing, y_dtype = model.loss.target_spec(model.out_features, model.dtype)
        specs = (((batch_size, model.in_features), model.dtype), ((batch_size, *trailing), y_dtype))
        self.X, self.y, self.n, self.batch_size = X, y, X.shape[0], batch_size
        self.host = [[backend.pinned_empty(shape, dtype) for shape, dtype in specs] for _ in range(2)]
        self.device = [[backend.zeros(shape, dtype, model.device) for shape, dtype in specs] for _ in range(2)]
        self.copied = [backend.event(model.device) for _ in range(2)]
        self.moved = [backend.event(model.device) for _ in range(2)]
        self.stream = backend.stream(model.device, non_blocking=True)
        self.slot = 0
        self.pending = None  # ((lo, hi), slot) of the batch being copied

    def _start(self, lo: int, hi: int, order) -> None:
        """Gather rows [lo, hi) (positions in ``order`` when shuffling) into the next slot; copy them in."""
        k = self.slot = 1 - self.slot
        self.copied[k].synchronize()  # the slot's previous copy has read its host buffers
        hx, hy = (a[:hi - lo] for a in self.host[k])
        if order is None:
            np.copyto(hx, self.X[lo:hi])
            np.copyto(hy, self.y[lo:hi])
        else:
            np.take(self.X, order[lo:hi], axis=0, out=hx)
            np.take(self.y, order[lo:hi], axis=0, out=hy)
        self.moved[k].wait(self.stream)  # ... and its device buffers were moved into a plan
        for dst, src in zip(self.device[k], (hx, hy)):
            backend.copy_into(dst[:hi - lo], src, self.stream)
        self.copied[k].record(self.stream)
        self.pending = ((lo, hi), k)

    def load(self, plan: _StepPlan, lo: int, hi: int, order) -> tuple:
        """Batch rows [lo, hi) in ``plan.x``/``plan.y`` (device); starts copying the epoch's next batch."""
        if self.pending is None or self.pending[0] != (lo, hi):
            self._start(lo, hi, order)
        k = self.pending[1]
        self.pending = None
        self.copied[k].wait(0)  # the default stream runs on after the copy only
        backend.copy_into(plan.x, self.device[k][0][:hi - lo])
        backend.copy_into(plan.y, self.device[k][1][:hi - lo])
        self.moved[k].record(0)
        if self.prefetch and hi < self.n:
            self._start(hi, min(self.n, hi + self.batch_size), order)
        return plan.x, plan.y

    def close(self) -> None:
        """Wait for a copy still in flight (its pinned host buffers must outlive it)."""
        self.stream.synchronize()


class Sequential:
    """Layers applied in order. ``dtype`` is "float32" (default) or "float64"; ``seed`` fixes the
    initial weights, the shuffling order and dropout masks.

    Parameters, gradients and optimizer states each live in one flat contiguous buffer
    (``model.params``, ``model.grads``); every layer's ``weight``/``bias`` is a view into them,
    weights (which get weight decay) first, then biases and normalisation parameters.

    ``device``: "cpu" (default) or "cuda" (an NVIDIA GPU through numba-cuda: ``pip install
    "fastnn[cuda]"``); :meth:`to` moves a model. On "cuda" the flat buffers, optimizer state,
    layer buffers and workspaces are device arrays (``model.params`` is a numba device array);
    fit/predict/evaluate take and return NumPy arrays and copy batches in and results out.
    """

    def __init__(self, layers, *, seed: int = 0, dtype="float32", device: str = "cpu",
                 input_features: int | None = None):
        layers = list(layers)
        if not layers:
            raise ValueError("layers is empty: pass a list of layers, e.g. [fnn.Dense(2, 16), fnn.Tanh(), "
                             "fnn.Dense(16, 1)]")
        for i, layer in enumerate(layers):
            if not isinstance(layer, Layer):
                raise TypeError(f"layers[{i}] must be a fastnn layer, got {type(layer).__name__} {layer!r}")
        self.layers = layers
        self.seed = V.check_int(seed, "seed", minimum=0)
        self.dtype = V.check_dtype(dtype)
        V.check_choice(device, backend.DEVICES, "device")
        if device != "cpu":
            backend.require_cuda()  # before building anything: a clear error, not a Numba traceback
        self._device = "cpu"
        self.loss: losses_mod.Loss | None = None
        self.decay_bias_and_norm = False
        self.optimizer = None
        self.training = True
        self.stop_training = False
        self.epochs_done = 0
        self._cursor = None  # (epoch, samples done, loss sum, correct) while inside an epoch
        self._callbacks: list = []
        self._pending_callback_states: list | None = None
        self._build(input_features)
        if device != "cpu":
            self.to(device)

    # -- construction -----------------------------------------------------------------------
    def _build(self, input_features):
        first = self.layers[0]
        width = input_features if input_features is not None else first.in_features
        if width is None:
            raise ValueError(f"the input size is unknown: give the first layer its input size "
                             f"(e.g. Dense({first.out_features and 'in_features'}, ...)) or pass "
                             f"Sequential(..., input_features=N)")
        self.in_features = V.check_int(width, "input_features", minimum=1)
        for i, layer in enumerate(self.layers):
            expected = layer.in_features
            if expected is not None and expected != width:
                prev = f"layer {i - 1} ({self.layers[i - 1]!r}) outputs {width} features" if i else \
                    f"the model's input has {width} features"
                raise ValueError(f"layer sizes do not chain: {prev}, but layer {i} ({layer!r}) expects "
                                 f"{expected}; set layer {i}'s {layer.input_argument} to {width}")
            width = layer.build(width, self.dtype)
            if hasattr(layer, "seed_rng"):
                layer.seed_rng(self.seed, 1_000_000 + i)
        self.out_features = width
        self._allocate_parameters()
        self._plans: dict = {}  # batch size -> _StepPlan; ("infer", batch size) -> inference calls
        self._make_workspaces()
        self._plannable = all(layer.plannable() for layer in self.layers)

    def _make_workspaces(self):
        self._grad_out = Workspace(self.dtype, self._device, grad=(self.out_features,))
        self._inputs = Workspace(self.dtype, self._device, x=(self.in_features,))  # the plans' inputs
        self._feed = Workspace(self.dtype, self._device, x=(self.in_features,))  # predict/forward on a device
        self._plans.clear()

    def _allocate_parameters(self):
        specs = [(i, spec) for i, layer in enumerate(self.layers) for spec in layer.parameter_specs()]
        ordered = sorted(range(len(specs)), key=lambda k: not specs[k][1].decay)  # stable: decayed first
        sizes = [int(np.prod(spec.shape)) for _, spec in specs]
        total = sum(sizes)
        self.params = np.zeros(total, self.dtype)
        self.grads = np.zeros(total, self.dtype)
        self.n_decay = sum(sizes[k] for k in range(len(specs)) if specs[k][1].decay)
        offsets = {}
        offset = 0
        for k in ordered:
            offsets[k] = offset
            offset += sizes[k]
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
            hi = lo + int(np.prod(shape))
            views[i][name] = self.params[lo:hi].reshape(shape)
            grad_views[i][name] = self.grads[lo:hi].reshape(shape)
        for layer, v, g in zip(self.layers, views, grad_views):
            layer.bind(v, g)

    # -- devices ----------------------------------------------------------------------------
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
        if device == self._device:
            return self
        if device != "cpu":
            backend.require_cuda()
            for i, layer in enumerate(self.layers):
                if not layer.plannable():
                    raise ValueError(f"layer {i} ({layer!r}) overrides forward/backward with host code, so the "
                                     f"model cannot run on {device!r}; describe its work as forward_calls/"
                                     f"backward_calls with kernels from self.K, or keep the model on 'cpu'")
        saved = [{name: backend.host_copy(buf) for name, buf in layer.buffers().items()} for layer in self.layers]
        self.params = backend.to_device(self.params, device)
        self.grads = backend.to_device(self.grads, device)
        width = self.in_features
        for layer in self.layers:  # build again: every layer buffer is allocated on the new device
            layer.set_device(device)
            width = layer.build(width, self.dtype)
            layer.training = self.training
        self._bind_views()
        for layer, state in zip(self.layers, saved):
            buffers = layer.buffers()
            for name, value in state.items():
                backend.copy_into(buffers[name], value)
        self._device = device
        self._make_workspaces()
        self._last_input = None
        if self.optimizer is not None and getattr(self.optimizer, "_params", None) is not None:
            self.optimizer.rebind(self.params, self.grads)
        return self

    def _rows_in(self, rows: np.ndarray, workspace: Workspace, name: str):
        """Host rows as the model's input: themselves on the CPU, copied into ``workspace`` on a device."""
        if self._device == "cpu":
            return rows
        buf = workspace(rows.shape[0])[name]
        backend.copy_into(buf, rows)
        return buf

    def named_parameters(self) -> list[tuple[str, np.ndarray, np.ndarray]]:
        """[(name, value_view, grad_view)] in layer order, e.g. ("0.weight", W, dW)."""
        return [(name, self.params[lo:lo + int(np.prod(shape))].reshape(shape),
                 self.grads[lo:lo + int(np.prod(shape))].reshape(shape))
                for name, lo, shape in self._param_index]

    def count_params(self) -> int:
        return int(self.params.size)

    # -- modes ------------------------------------------------------------------------------
    def train(self, mode: bool = True) -> Sequential:
        self.training = bool(mode)
        for layer in self.layers:
            layer.training = self.training
        return self

    def eval(self) -> Sequential:
        return self.train(False)

    # -- computation ------------------------------------------------------------------------
    def _forward(self, x: np.ndarray, training: bool) -> np.ndarray:
        for layer in self.layers:
            x = layer.forward(x, training)
        return x

    def _backward(self, grad: np.ndarray, need_grad_x: bool) -> np.ndarray | None:
        last = len(self.layers) - 1
        for i in range(last, -1, -1):
            grad = self.layers[i].backward(grad, need_grad_x or i > 0)
        return grad

    def _check_x(self, X, argument="X"):
        return V.check_array(X, argument, self.dtype, self.in_features, self._first_layer_name)

    @property
    def _first_layer_name(self) -> str:  # only formatted when an error message needs it
        return _LazyText(lambda: f"the first layer ({self.layers[0]!r})")

    def forward(self, x, training: bool | None = None) -> np.ndarray:
        """Output (batch, out_features) for input (batch, in_features); a new array.

        Keeps what :meth:`backward` needs. ``training`` (default: the model's mode, see
        :meth:`train`/:meth:`eval`) selects dropout and batch statistics.
        """
        self._last_input = self._rows_in(self._check_x(x, "x"), self._feed, "x")
        training = self.training if training is None else bool(training)
        return backend.host_copy(self._forward(self._last_input, training))

    def backward(self, grad_out) -> np.ndarray:
        """Gradient of the input from ``grad_out`` = d loss / d output of the last forward().

        Also writes every parameter's gradient (``model.grads``, ``named_parameters()``).
        """
        grad = V.check_array(grad_out, "grad_out", self.dtype, self.out_features, "the model's output")
        if grad.shape[0] != self._last_input.shape[0]:
            raise ValueError(f"grad_out has {grad.shape[0]} rows but the last forward() had "
                             f"{self._last_input.shape[0]}")
        return backend.host_copy(self._backward(self._rows_in(grad, self._grad_out, "grad"), True))

    __call__ = forward

    # -- training ---------------------------------------------------------------------------
    def compile(self, loss="cross_entropy", optimizer="sgd", *, decay_bias_and_norm: bool = False) -> Sequential:
        """Choose the loss (a name or a fastnn.losses.Loss) and optimizer (a name or instance).

        The optimizer's weight decay applies to weight matrices only; biases and normalisation
        parameters are excluded unless ``decay_bias_and_norm=True``.
        """
        self.loss = losses_mod.get(loss)
        self.optimizer = optim_mod.get(optimizer)
        self._plans.clear()
        self.decay_bias_and_norm = bool(decay_bias_and_norm)
        self.optimizer.bind(self.params, self.grads, self.params.size if self.decay_bias_and_norm else self.n_decay)
        return self

    def _require_compiled(self, what: str):
        if self.loss is None or self.optimizer is None:
            raise RuntimeError(f"{what} needs a loss and an optimizer: call model.compile(loss=..., "
                               f"optimizer=...) first, or pass them to fit()")

    def _check_xy(self, X, y, argument="X"):
        X = self._check_x(X, argument)
        y = self.loss.check_targets(y, X.shape[0], self.out_features, self.dtype)
        return X, y

    def _plan(self, m: int) -> _StepPlan | None:
        """The step plan for batch size ``m`` (built once), or None when a layer is not plannable."""
        plan = self._plans.get(m)
        if plan is None and self._plannable:
            if len(self._plans) >= _MAX_PLANS:
                self._plans.clear()
            x = self._inputs(m)["x"]
            trailing, dtype = self.loss.target_spec(self.out_features, self.dtype)
            y = backend.zeros((m, *trailing), dtype, self._device)
            forward, h = [], x
            for layer in self.layers:
                calls, h = layer.forward_calls(h, True)
                forward += calls
            grad = self._grad_out(m)["grad"]
            backward, g = [], grad
            for i in range(len(self.layers) - 1, -1, -1):
                calls, g = self.layers[i].backward_calls(g, i > 0)
                backward += calls
            plan = self._plans[m] = _StepPlan(x, y, h, forward, self.loss.call(h, y, grad), backward)
        return plan

    def _infer_plan(self, m: int) -> tuple[np.ndarray, list, np.ndarray]:
        """(input buffer, forward calls in evaluation mode, output view) for batch size ``m``."""
        plan = self._plans.get(("infer", m))
        if plan is None:
            if len(self._plans) >= _MAX_PLANS:
                self._plans.clear()
            x = self._inputs(m)["x"]
            calls, h = [], x
            for layer in self.layers:
                more, h = layer.forward_calls(h, False)
                calls += more
            plan = self._plans[("infer", m)] = (x, CallRunner(calls), h)
        return plan

    def _step(self, xb: np.ndarray, yb: np.ndarray) -> tuple[float, np.ndarray]:
        """One training step on checked arrays; returns (loss, output view)."""
        plan = self._plan(xb.shape[0])
        if plan is None:  # a user layer runs its own forward/backward
            out = self._forward(xb, True)
            grad = self._grad_out(xb.shape[0])["grad"]
            loss = self.loss.forward_backward(out, yb, grad, True)
            if not math.isfinite(loss):
                raise FloatingPointError(self._divergence_report(loss))
            self._backward(grad, False)
            self.optimizer.step()
            return loss, out
        if xb is not plan.x:
            np.copyto(plan.x, xb)
        if yb is not plan.y:
            np.copyto(plan.y, yb)
        loss = plan.run()
        if not math.isfinite(loss):  # the gradients are garbage then; the weights are not touched
            self._forward(plan.x, False)  # fills every layer's last_output for the report
            raise FloatingPointError(self._divergence_report(loss))
        self.optimizer.step()
        return loss, plan.out

    def train_step(self, xb, yb) -> float:
        """One forward, loss, backward and optimizer update on a batch; returns the loss."""
        self._require_compiled("train_step")
        xb, yb = self._check_xy(xb, yb, "xb")
        if self._device != "cpu":
            plan = self._plan(xb.shape[0])
            backend.copy_into(plan.x, xb)
            backend.copy_into(plan.y, yb)
            xb, yb = plan.x, plan.y
        return self._step(xb, yb)[0]

    def _divergence_report(self, loss: float) -> str:
        where = "the loss itself"
        for i, layer in enumerate(self.layers):
            if layer.last_output is not None and not np.isfinite(backend.to_host(layer.last_output)).all():
                where = f"the output of layer {i} ({layer!r})"
                break
        return (f"Training diverged: the loss is {loss} at step {getattr(self.optimizer, 'step_count', '?')}; "
                f"first non-finite value: {where}. Lower the learning rate, clip gradients "
                f"(clip_norm=1.0) or standardise the inputs.")

    def fit(self, X, y, *, loss=None, optimizer=None, epochs: int = 1, batch_size: int = 32,
            shuffle: bool = True, validation_data=None, callbacks=None, verbose: int = 1) -> History:
        """Train on (X, y) for ``epochs`` passes in mini-batches; returns a :class:`History`.

        X (n, in_features) numeric; y: integer labels (n,) for cross_entropy, else (n, outputs)
        or (n,) targets. ``validation_data=(X_val, y_val)`` adds val_loss/val_accuracy per epoch.
        ``verbose``: 0 silent, 1 progress bar per epoch, 2 one line per epoch.
        """
        if loss is not None or optimizer is not None or self.loss is None or self.optimizer is None:
            if (loss or self.loss) is None or (optimizer or self.optimizer) is None:
                self._require_compiled("fit")
            self.compile(loss or self.loss, optimizer or self.optimizer)
        epochs = V.check_int(epochs, "epochs", minimum=0)
        batch_size = V.check_int(batch_size, "batch_size", minimum=1)
        verbose = V.check_int(verbose, "verbose", minimum=0, maximum=2)
        X, y = self._check_xy(X, y)
        if validation_data is not None:
            if not isinstance(validation_data, (tuple, list)) or len(validation_data) != 2:
                raise ValueError("validation_data must be a tuple (X_val, y_val)")
            X_val, y_val = self._check_xy(*validation_data, argument="X_val")
        n = X.shape[0]
        batch_size = min(batch_size, n)
        batches = (n + batch_size - 1) // batch_size
        history = History()
        user_callbacks = list(callbacks or [])
        cbs = CallbackList([history, *user_callbacks], self)
        self._callbacks = user_callbacks
        self._restore_callback_states(user_callbacks)
        progress = EpochProgress(verbose, epochs, batches)
        order = np.empty(n, np.int64) if shuffle else None
        feeder = None if self._device == "cpu" else _BatchFeeder(self, batch_size, X, y)
        self._inputs(batch_size)  # grow the buffers to the full batch before any plan uses them
        self._grad_out(batch_size)
        was_training = self.training
        self.train()
        self.stop_training = False
        cbs.on_train_begin({})
        try:
            first_epoch = self.epochs_done
            for epoch in range(first_epoch, first_epoch + epochs):
                cbs.on_epoch_begin(epoch, {})
                progress.epoch_begin(epoch - first_epoch)
                start = time.perf_counter()
                if shuffle:  # counter-based: the order of epoch e depends only on (seed, e)
                    permutation(n, self.seed, _SHUFFLE_STREAM, epoch, order)
                total_loss, correct, start_sample = 0.0, 0, 0
                if self._cursor is not None and self._cursor[0] == epoch:  # resuming mid-epoch
                    _, start_sample, total_loss, correct = self._cursor
                for b in range(batches):
                    lo, hi = max(b * batch_size, start_sample), min(n, (b + 1) * batch_size)
                    if lo >= hi:
                        continue
                    cbs.on_batch_begin(b, {})
                    plan = self._plan(hi - lo)
                    if feeder is not None:  # copied into the plan's device buffers, the next batch's copy started
                        xb, yb = feeder.load(plan, lo, hi, order)
                    elif order is None:
                        xb, yb = X[lo:hi], y[lo:hi]
                    elif plan is not None:  # gather the batch straight into the plan's buffers
                        xb = np.take(X, order[lo:hi], axis=0, out=plan.x)
                        yb = np.take(y, order[lo:hi], axis=0, out=plan.y)
                    else:
                        xb, yb = X[order[lo:hi]], y[order[lo:hi]]
                    batch_loss, out = self._step(xb, yb)
                    total_loss += batch_loss * (hi - lo)
                    count = self.loss.correct_count(out, yb)
                    correct = None if count is None else correct + count
                    self._cursor = (epoch, hi, total_loss, correct)
                    progress.batch_end(total_loss / hi)
                    cbs.on_batch_end(b, {"loss": batch_loss, "batch": b, "size": hi - lo})
                logs = {"loss": total_loss / n}
                if correct is not None:
                    logs["accuracy"] = correct / n
                if validation_data is not None:
                    logs.update({f"val_{k}": v for k, v in self._evaluate(X_val, y_val, _PREDICT_BATCH).items()})
                logs["lr"] = float(self.optimizer.lr)
                self.epochs_done = epoch + 1
                self._cursor = None
                progress.epoch_end(epoch - first_epoch, logs, time.perf_counter() - start)
                cbs.on_epoch_end(epoch, logs)
                if self.stop_training:
                    break
        finally:
            progress.close()
            self.train(was_training)
            if feeder is not None:
                feeder.close()
        cbs.on_train_end({})
        return history

    # -- inference --------------------------------------------------------------------------
    def _predict(self, X: np.ndarray, batch_size: int) -> np.ndarray:
        out = np.empty((X.shape[0], self.out_features), self.dtype)
        was_training = self.training
        self.eval()
        try:
            if self._device == "cpu" and X.shape[0] <= batch_size and X.size <= PARALLEL_MIN_ELEMENTS and self._plannable:
                x, run, y = self._infer_plan(X.shape[0])  # small inputs: the recorded calls, no Python per layer
                x[...] = X
                run()
                out[...] = y
            elif self._device == "cpu":
                for lo in range(0, X.shape[0], batch_size):
                    out[lo:lo + batch_size] = self._forward(X[lo:lo + batch_size], False)
            else:  # each batch copied into the device input buffer, the output copied back
                for lo in range(0, X.shape[0], batch_size):
                    rows = self._rows_in(X[lo:lo + batch_size], self._feed, "x")
                    backend.copy_into(out[lo:lo + batch_size], self._forward(rows, False))
        finally:
            self.train(was_training)
        return out

    def predict(self, X, batch_size: int = _PREDICT_BATCH) -> np.ndarray:
        """The network's outputs (logits for classifiers) for X, in evaluation mode."""
        batch_size = V.check_int(batch_size, "batch_size", minimum=1)
        return self._predict(self._check_x(X), batch_size)

    def predict_proba(self, X, batch_size: int = _PREDICT_BATCH) -> np.ndarray:
        """Class probabilities: softmax of the logits (cross_entropy) or sigmoid (binary)."""
        self._require_compiled("predict_proba")
        return self.loss.probabilities(self.predict(X, batch_size))

    def predict_classes(self, X, batch_size: int = _PREDICT_BATCH) -> np.ndarray:
        """Predicted class labels (argmax of the logits, or logit > 0 for one binary output)."""
        out = self.predict(X, batch_size)
        return out.argmax(axis=1) if out.shape[1] > 1 else (out[:, 0] > 0).astype(np.int64)

    def _evaluate(self, X, y, batch_size) -> dict:
        out = self._predict(X, batch_size)
        grad = np.empty((1, 1), self.dtype)
        metrics = {"loss": float(self.loss.forward_backward(out, y, grad, False))}
        correct = self.loss.correct_count(out, y)
        if correct is not None:
            metrics["accuracy"] = correct / X.shape[0]
        return metrics

    def evaluate(self, X, y, batch_size: int = _PREDICT_BATCH) -> dict:
        """{"loss": ..., "accuracy": ...} (accuracy for classification losses), in evaluation mode."""
        self._require_compiled("evaluate")
        batch_size = V.check_int(batch_size, "batch_size", minimum=1)
        X, y = self._check_xy(X, y)
        return self._evaluate(X, y, batch_size)

    # -- weights ----------------------------------------------------------------------------
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
        expected = self.state_arrays()
        with np.load(path, allow_pickle=False) as data:
            missing = sorted(set(expected) - set(data.files))
            unexpected = sorted(set(data.files) - set(expected))
            if missing or unexpected:
                raise ValueError(f"{path} does not match this model: missing {missing}, unexpected {unexpected}")
            for name, target in expected.items():
                if data[name].shape != target.shape:
                    raise ValueError(f"{path}: {name} has shape {data[name].shape}, the model expects {target.shape}")
            for name, target in expected.items():
                backend.copy_into(target, data[name])

    # -- full save / load --------------------------------------------------------------------
    def get_config(self) -> dict:
        """JSON-able architecture: dtype, seed, input size and each layer's class and config."""
        return {"class": "Sequential", "dtype": self.dtype.name, "seed": self.seed,
                "input_features": self.in_features,
                "layers": [layer_to_config(layer) for layer in self.layers]}

    @classmethod
    def from_config(cls, config: dict, device: str = "cpu") -> Sequential:
        layers = [layer_from_config(entry) for entry in config["layers"]]
        return cls(layers, seed=config["seed"], dtype=config["dtype"], input_features=config["input_features"],
                   device=device)

    def save(self, path) -> None:
        """Write everything needed to resume training exactly to one safetensors file, atomically:
        architecture, weights and buffers, loss, optimizer state and step count, the position
        in the epoch, and the state of the callbacks of the last fit()."""
        from . import serialization

        serialization.save_model(self, path)

    def _restore_callback_states(self, callbacks) -> None:
        pending, self._pending_callback_states = self._pending_callback_states, None
        if not pending:
            return
        for cb, saved in zip(callbacks, pending):
            if type(cb).__name__ == saved["class"]:
                cb.load_state_dict(saved["state"])
                if hasattr(cb, "load_arrays"):
                    cb.load_arrays(saved.get("arrays", {}))

    # -- description ------------------------------------------------------------------------
    def summary(self, print_fn=print) -> str:
        """Table of layers, output shapes and parameter counts; printed and returned."""
        rows = [("#", "Layer", "Output shape", "Params")]
        counts = [sum(int(np.prod(s.shape)) for s in layer.parameter_specs()) for layer in self.layers]
        for i, (layer, count) in enumerate(zip(self.layers, counts)):
            rows.append((str(i), repr(layer), f"(batch, {layer.out_features})", f"{count:,}"))
        widths = [max(len(r[c]) for r in rows) for c in range(4)]
        line = "-" * (sum(widths) + 6)
        def fmt(r):
            return "  ".join(cell.ljust(w) if c < 3 else cell.rjust(w) for c, (cell, w) in enumerate(zip(r, widths)))

        text = "\n".join([f"Sequential (dtype={self.dtype.name}, device={self.device})", line, fmt(rows[0]),
                          line, *map(fmt, rows[1:]), line,
                          f"Total params: {sum(counts):,} ({self.params.nbytes / 1024:.1f} KiB)",
                          f"Input features: {self.in_features}"])
        if print_fn is not None:
            print_fn(text)
        return text

    def __repr__(self) -> str:
        inner = ",\n".join(f"  ({i}): {layer!r}" for i, layer in enumerate(self.layers))
        return f"Sequential(\n{inner}\n)"
