"""The layer protocol and the per-batch-size workspace every layer draws its buffers from."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .. import backend


@dataclass(frozen=True)
class ParamSpec:
    """One trainable parameter: its name in the layer, shape, whether weight decay applies, and
    ``init(view, seed, stream)`` that fills a view of the model's flat parameter buffer."""

    name: str
    shape: tuple[int, ...]
    decay: bool
    init: Callable[[np.ndarray, int, int], None]


class Workspace:
    """Buffers of shape (batch, *trailing) allocated once at the largest batch seen and handed
    out as contiguous row views, memoised per batch size: steady-state steps allocate nothing.
    ``device``: "cpu" (NumPy arrays) or "cuda" (device arrays)."""

    def __init__(self, dtype, device: str = "cpu", **trailing: tuple[int, ...]):
        self.dtype = np.dtype(dtype)
        self.device = device
        self.trailing = trailing
        self.capacity = 0
        self._full: dict[str, np.ndarray] = {}
        self._views: dict[int, dict[str, np.ndarray]] = {}

    def __call__(self, batch: int) -> dict[str, np.ndarray]:
        views = self._views.get(batch)
        if views is None:
            if batch > self.capacity:
                self.capacity = batch
                self._full = {name: backend.zeros((batch, *shape), self.dtype, self.device)
                              for name, shape in self.trailing.items()}
                self._views.clear()
            views = self._views[batch] = {name: arr[:batch] for name, arr in self._full.items()}
        return views

    def nbytes(self) -> int:
        return sum(arr.nbytes for arr in self._full.values())


def run_calls(calls) -> None:
    """Run a list of (kernel, args) in order."""
    for fn, args in calls:
        fn(*args)


class Layer:
    """Base of every layer.

    Life cycle: ``build(in_features, dtype) -> out_features`` (checks sizes and allocates the
    layer's buffers on ``self.device``, through :meth:`zeros` / :meth:`workspace`), then the model
    allocates one flat buffer for all ``parameter_specs()`` and calls ``bind(params, grads)``
    with views into it. ``forward(x, training)`` returns a view of the layer's own output
    buffer (valid until its next forward); ``backward(grad_y, need_grad_x)`` writes parameter
    gradients (overwriting, not accumulating) and returns the gradient of the input.

    Devices: ``self.device`` ("cpu" or "cuda") and ``self.K``, that device's kernel namespace
    (:func:`fastnn.backend.kernels`), are set by the model through :meth:`set_device` before
    ``build``; ``model.to(device)`` sets the new device, runs ``build`` again (re-allocating every
    buffer there), re-binds the parameter views and copies ``buffers()`` back. Layers take their
    kernels from ``self.K`` when they build calls, so one code path serves both devices.
    """

    in_features: int | None = None
    out_features: int | None = None
    #: the constructor argument that fixes the input width (named in size-mismatch errors)
    input_argument = "in_features"
    device = "cpu"
    K = backend.kernels("cpu")

    def __init__(self):
        self.dtype = None
        self.training = True
        self.last_output: np.ndarray | None = None
        self.last_grad_input: np.ndarray | None = None
        self.K = Layer.K  # an instance attribute: found without walking the class hierarchy

    # -- construction -------------------------------------------------------------------
    def set_device(self, device: str) -> None:
        """Use ``device``'s kernels and allocate there from the next ``build`` on."""
        self.device = device
        self.K = backend.kernels(device)
        self.last_output = self.last_grad_input = None

    def zeros(self, shape, dtype=None):
        """A zero array on this layer's device (dtype: the layer's by default)."""
        return backend.zeros(shape, self.dtype if dtype is None else dtype, self.device)

    def workspace(self, dtype=None, **trailing: tuple[int, ...]) -> Workspace:
        """A :class:`Workspace` on this layer's device (dtype: the layer's by default)."""
        return Workspace(self.dtype if dtype is None else dtype, self.device, **trailing)

    def build(self, in_features: int, dtype) -> int:
        self.in_features = in_features
        self.out_features = in_features if self.out_features is None else self.out_features
        self.dtype = np.dtype(dtype)
        return self.out_features

    def parameter_specs(self) -> list[ParamSpec]:
        return []

    def bind(self, params: dict[str, np.ndarray], grads: dict[str, np.ndarray]) -> None:
        """Receive views of the model's flat parameter and gradient buffers."""

    def buffers(self) -> dict[str, np.ndarray]:
        """Non-trainable state saved with the model (e.g. running statistics)."""
        return {}

    # -- computation ---------------------------------------------------------------------
    # A layer describes its work as kernel calls [(function, args)] on fixed buffers. The
    # model runs them directly (forward/backward below) or records them once per batch size
    # as a plan, so a steady-state training step is a flat list of kernel calls.
    def forward_calls(self, x: np.ndarray, training: bool) -> tuple[list, np.ndarray]:
        """([(kernel, args)], output view) computing this layer's output from ``x``."""
        raise NotImplementedError

    def backward_calls(self, grad_y: np.ndarray, need_grad_x: bool) -> tuple[list, np.ndarray | None]:
        """([(kernel, args)], grad_x view or None) for the last ``forward_calls``."""
        raise NotImplementedError

    def plannable(self) -> bool:
        """True when forward/backward are fully described by forward_calls/backward_calls
        (user layers that override forward/backward instead run through them directly)."""
        cls = type(self)
        return cls.forward is Layer.forward and cls.backward is Layer.backward

    def forward(self, x: np.ndarray, training: bool) -> np.ndarray:
        calls, y = self.forward_calls(x, training)
        run_calls(calls)
        self.last_output = y
        return y

    def backward(self, grad_y: np.ndarray, need_grad_x: bool = True) -> np.ndarray | None:
        calls, grad_x = self.backward_calls(grad_y, need_grad_x)
        run_calls(calls)
        self.last_grad_input = grad_x
        return grad_x

    # -- description --------------------------------------------------------------------
    def get_config(self) -> dict:
        return {}

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.extra_repr()})"
