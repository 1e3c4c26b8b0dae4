"""Loss objects: thin wrappers that pick a fused kernel, hold the reduction and check targets.

Each loss computes its value and the gradient with respect to the model's output in one
kernel pass (``forward_backward``). A loss holds no device: it runs on the device of the arrays
it is given (NumPy arrays on the CPU, device arrays on the GPU), choosing the kernels when it
builds the call. Names: ``cross_entropy`` (from logits, integer labels,
softmax fused), ``binary_cross_entropy`` (from logits), ``mse``, ``mae``, ``huber``.
:class:`SampleWeighted` puts per-sample weights on one of these (``fit(sample_weight=...)``).
"""

from __future__ import annotations

from typing import overload

import numpy as np

from . import _validation as V
from . import backend
from ._ownership import Owned
from .kernels import losses as K
from .kernels.activations import SIGMOID, SOFTMAX


def _kernels(array):
    """The kernel namespace of the device ``array`` lives on (losses follow their arrays)."""
    return _CPU if isinstance(array, np.ndarray) else backend.kernels("cuda")


_CPU = backend.kernels("cpu")

LOSSES: dict[str, type] = {}  # name -> Loss subclass; filled by register_loss, the one table


def register_loss(cls: type) -> type:
    """Make a Loss subclass usable by its ``name`` (``compile(loss=name)``) and loadable from
    saved models; use as a class decorator. The class must rebuild from its get_config()
    (``cls(**config)`` without "name")."""
    if not (isinstance(cls, type) and issubclass(cls, Loss)):
        raise TypeError(f"register_loss expects a subclass of fastnn.losses.Loss, got {cls!r}")
    name = cls.__dict__.get("name")
    if not isinstance(name, str) or not name:
        raise ValueError(
            f"{cls.__name__} needs its own class attribute `name` (a non-empty str) to be "
            f"registered, e.g. name = {cls.__name__.lower()!r}"
        )
    if LOSSES.get(name, cls) is not cls and LOSSES[name].__module__ == __name__:
        raise ValueError(f"loss name {name!r} belongs to fastnn's {LOSSES[name].__name__}; choose another name")
    LOSSES[name] = cls
    return cls


class Loss(Owned):
    """Base class. ``reduction`` is "mean" (over samples, or over elements for elementwise
    losses, as in PyTorch) or "sum"."""

    name = "loss"
    is_classification = False

    def __init__(self, *, reduction: str = "mean"):
        self.reduction = V.check_choice(reduction, ("mean", "sum"), "reduction")
        self._partials: dict = {}  # device -> float64 scratch of the reductions

    def _scratch(self, n_rows: int, kernels=_CPU):
        chunks = kernels.n_partials(n_rows)
        partials = self._partials.get(kernels.device)
        if partials is None or partials.shape[0] < chunks:
            partials = self._partials[kernels.device] = backend.zeros(max(chunks, 1), np.float64, kernels.device)
        return partials

    def check_targets(self, y, n_samples: int, n_outputs: int, dtype) -> np.ndarray:
        return V.check_targets(y, n_samples, n_outputs, dtype)

    def target_spec(self, n_outputs: int, dtype) -> tuple[tuple[int, ...], np.dtype]:
        """(trailing shape, dtype) of one batch's checked targets."""
        return (n_outputs,), np.dtype(dtype)

    def call(self, output: np.ndarray, target: np.ndarray, grad: np.ndarray, compute_grad: bool = True):
        """(kernel, args): the kernel returns the loss and writes the gradient (see forward_backward)."""
        raise NotImplementedError

    def forward_backward(
        self, output: np.ndarray, target: np.ndarray, grad: np.ndarray, compute_grad: bool = True
    ) -> float:
        """Loss of ``output`` (batch, outputs) against checked ``target``; writes d loss / d output
        into ``grad`` (same shape and dtype as ``output``) when ``compute_grad``."""
        fn, args = self.call(output, target, grad, compute_grad)
        return fn(*args)

    def correct_count(self, output: np.ndarray, target: np.ndarray) -> int | None:
        """Number of correctly classified samples (accuracy = this / samples), or None for
        regression losses. ``output`` (batch, outputs) and checked ``target`` on one device."""
        return None

    def predict_classes(self, output: np.ndarray) -> np.ndarray:
        """Class labels (int64) of host ``output`` (batch, outputs), the ones ``correct_count`` scores."""
        raise TypeError(
            f"predict_classes needs a classification loss (cross_entropy or "
            f"binary_cross_entropy); this model was compiled with {self.name!r}"
        )

    def probabilities(self, output: np.ndarray) -> np.ndarray:
        raise TypeError(
            f"predict_proba needs a classification loss (cross_entropy or "
            f"binary_cross_entropy); this model was compiled with {self.name!r}"
        )

    def get_config(self) -> dict:
        return {"name": self.name, "reduction": self.reduction}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items() if k != "name")
        return f"{type(self).__name__}({args})"


@register_loss
class CrossEntropy(Loss):
    """Softmax cross-entropy from logits (batch, classes) with integer labels (batch,).

    Accuracy: the fraction of samples whose argmax (the first maximum) equals the label.
    """

    name = "cross_entropy"
    is_classification = True

    def check_targets(self, y, n_samples, n_outputs, dtype):
        if n_outputs < 2:
            raise ValueError(
                "cross_entropy needs a last layer with at least 2 outputs (one per class); "
                "for a single output use loss='binary_cross_entropy'"
            )
        return V.check_labels(y, n_samples, n_outputs)

    def target_spec(self, n_outputs, dtype):
        return (), np.dtype(np.int64)

    def call(self, output, target, grad, compute_grad=True):
        kernels = _kernels(output)
        return kernels.cross_entropy_forward_backward, (
            output,
            target,
            grad,
            self._scratch(output.shape[0], kernels),
            self.reduction == "mean",
            compute_grad,
        )

    def correct_count(self, output, target):
        return int(_kernels(output).accuracy_count(output, target))

    def predict_classes(self, output):
        """(batch,) int64: the argmax of each row (the first maximum)."""
        return np.argmax(output, axis=1).astype(np.int64, copy=False)

    def probabilities(self, output):
        probs = np.empty_like(output)
        _CPU.activation_forward(output, probs, SOFTMAX, 0.0)
        return probs


class _Elementwise(Loss):
    code = -1

    def __init__(self, *, reduction: str = "mean", delta: float = 1.0):
        super().__init__(reduction=reduction)
        self.delta = V.check_float(delta, "delta", low=0.0, low_inclusive=False)

    def call(self, output, target, grad, compute_grad=True):
        kernels = _kernels(output)
        return kernels.elementwise_loss, (
            output,
            target,
            grad,
            self._scratch(output.shape[0], kernels),
            self.code,
            self.delta,
            self.reduction == "mean",
            compute_grad,
        )


@register_loss
class MSE(_Elementwise):
    """Mean squared error."""

    name, code = "mse", K.MSE

    def __init__(self, *, reduction: str = "mean"):
        super().__init__(reduction=reduction)


@register_loss
class MAE(_Elementwise):
    """Mean absolute error (L1)."""

    name, code = "mae", K.MAE

    def __init__(self, *, reduction: str = "mean"):
        super().__init__(reduction=reduction)


@register_loss
class Huber(_Elementwise):
    """Huber loss: quadratic for ``|error| < delta``, linear beyond (torch.nn.HuberLoss)."""

    name, code = "huber", K.HUBER

    def get_config(self):
        return dict(super().get_config(), delta=self.delta)


@register_loss
class BinaryCrossEntropy(_Elementwise):
    """Binary cross-entropy from logits (batch, k) against targets in [0, 1] (sigmoid fused).

    A logit > 0 predicts class 1, a target > 0.5 is class 1. With k = 1 output, accuracy is the
    fraction of samples classified right. With k > 1 (multi-label) it is the exact-match subset
    accuracy of sklearn's ``accuracy_score``: the fraction of samples whose k labels are all right
    (stricter than Keras' ``binary_accuracy``, the mean over the k * batch elements).
    """

    name, code = "binary_cross_entropy", K.BCE_LOGITS
    is_classification = True

    def __init__(self, *, reduction: str = "mean"):
        super().__init__(reduction=reduction)

    def check_targets(self, y, n_samples, n_outputs, dtype):
        target = V.check_targets(y, n_samples, n_outputs, dtype)
        if target.min() < 0 or target.max() > 1:
            raise ValueError(
                f"binary_cross_entropy targets must lie in [0, 1], got values in [{target.min()}, {target.max()}]"
            )
        return target

    def correct_count(self, output, target):
        return int(_kernels(output).binary_accuracy_count(output, target))

    def predict_classes(self, output):
        """int64 ``logit > 0``: (batch,) for one output, (batch, k) for k > 1 (multi-label)."""
        labels = (output > 0).astype(np.int64)
        return labels[:, 0] if labels.shape[1] == 1 else labels

    def probabilities(self, output):
        probs = np.empty_like(output)
        _CPU.activation_forward(output, probs, SIGMOID, 0.0)
        return probs


class SampleWeighted(Loss):
    """``base`` loss with one weight per sample (``fit(sample_weight=...)``, ``class_weight``).

    "mean": ``sum_i w_i l_i / sum_i w_i`` over the batch (PyTorch's normalisation with
    ``weight=``, not Keras' division by the batch size), where ``l_i`` is sample i's base loss
    (divided by its k outputs for elementwise losses, so unit weights give exactly the base loss
    and its gradient); a batch whose weights are all zero contributes 0. "sum": ``sum_i w_i l_i``.
    Targets are float64 rows (m, t + 1): the base target (a label, or k values) then the weight
    (:func:`weighted_targets`), so shuffling and batching keep each weight with its sample. The
    gradient is the base kernel's, each row scaled by its weight; the value comes from the
    per-sample loss kernels. Runs on the host (a device's output is copied over and back).
    ``get_config`` is the base's: weights are data of one fit, a saved model keeps the plain loss.
    """

    name = "sample_weighted"

    def __init__(self, base: Loss):
        if not isinstance(base, Loss) or base.name not in K.LOSSES:
            raise ValueError(
                f"sample weights need one of fastnn's built-in losses ({', '.join(K.LOSSES)}), got {base!r}"
            )
        super().__init__(reduction=base.reduction)
        self.base = base
        self.is_classification = base.is_classification
        self._classes = K.LOSSES[base.name][1] == K.CLASSES

    def target_spec(self, n_outputs, dtype):
        trailing, _ = self.base.target_spec(n_outputs, dtype)
        return (int(np.prod(trailing)) + 1,), np.dtype(np.float64)

    def check_targets(self, y, n_samples, n_outputs, dtype):
        y = np.ascontiguousarray(y, dtype=np.float64)
        shape = (n_samples, *self.target_spec(n_outputs, dtype)[0])
        if y.shape != shape:
            raise ValueError(f"weighted targets must have shape {shape} (the targets, then the weight), got {y.shape}")
        return y

    def split(self, target: np.ndarray, dtype) -> tuple[np.ndarray, np.ndarray]:
        """(base targets: int64 labels or contiguous values of ``dtype``, weights float64) of host rows."""
        if self._classes:
            return target[:, 0].astype(np.int64), target[:, -1]
        return np.ascontiguousarray(target[:, :-1], dtype=dtype), target[:, -1]

    def call(self, output, target, grad, compute_grad=True):
        return self._on_host, (output, target, grad, compute_grad)

    def _on_host(self, output, target, grad, compute_grad):
        if isinstance(output, np.ndarray):
            return self._weighted(output, target, grad, compute_grad)
        host_grad = np.empty(output.shape, output.dtype)
        value = self._weighted(backend.to_host(output), backend.to_host(target), host_grad, compute_grad)
        if compute_grad:
            backend.copy_into(grad, host_grad)
        return value

    def _weighted(self, output, target, grad, compute_grad) -> float:
        labels, weights = self.split(target, output.dtype)
        m = output.shape[0]
        rows = np.empty(m)
        if self._classes:
            K.cross_entropy_rows(output, labels, rows)
            per_sample = 1
        else:
            assert isinstance(self.base, _Elementwise)  # the built-in losses without classes
            K.elementwise_loss_rows(output, labels, rows, self.base.code, self.base.delta)
            per_sample = output.shape[1]
        if self.reduction == "mean":  # the base divides by m (times k): divide by the weight sum instead
            total = float(weights.sum()) or np.inf  # a batch of zero weights contributes nothing
            grad_factor, value_divisor = m / total, total * per_sample  # m / m == 1: unit weights give the base's bits
        else:
            grad_factor, value_divisor = 1.0, 1.0
        if compute_grad:
            self.base.forward_backward(output, labels, grad, True)
            grad *= (weights * grad_factor).astype(grad.dtype)[:, None]
        return float(rows @ weights) / value_divisor

    def correct_count(self, output, target):
        return self.base.correct_count(output, self.split(backend.to_host(target), output.dtype)[0])

    def predict_classes(self, output):
        return self.base.predict_classes(output)

    def probabilities(self, output):
        return self.base.probabilities(output)

    def get_config(self):
        return self.base.get_config()

    def __repr__(self) -> str:
        return f"SampleWeighted({self.base!r})"


def weighted_targets(targets: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """float64 (n, t + 1): checked ``targets`` (n,) labels or (n, t) values, then ``weights`` (n,);
    the targets :class:`SampleWeighted` takes."""
    return np.column_stack([targets.reshape(targets.shape[0], -1), weights]).astype(np.float64, copy=False)


@overload
def base_of(loss: Loss) -> Loss: ...
@overload
def base_of(loss: None) -> None: ...
def base_of(loss: Loss | None) -> Loss | None:
    """The plain loss under a :class:`SampleWeighted` one (``loss`` itself otherwise)."""
    return loss.base if isinstance(loss, SampleWeighted) else loss


def get(loss) -> Loss:
    """A Loss from a name in :data:`LOSSES` or an instance (returned as is)."""
    if isinstance(loss, Loss):
        return loss
    name = V.check_choice(loss, LOSSES, "loss")
    return LOSSES[name]()


def from_config(config: dict) -> Loss:
    """The Loss that ``config`` (a get_config()) describes; user losses must be registered."""
    config = dict(config)
    name = config.pop("name")
    if isinstance(name, str) and name not in LOSSES:
        raise ValueError(
            f"Unknown loss {name!r}{V.suggest(name, LOSSES)}. A custom loss must be registered "
            f"before loading: decorate its class with @fastnn.register_loss. "
            f"Known: {', '.join(LOSSES)}."
        )
    return LOSSES[V.check_choice(name, LOSSES, "loss")](**config)
