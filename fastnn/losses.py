"""Loss objects: thin wrappers that pick a fused kernel, hold the reduction and check targets.

Each loss computes its value and the gradient with respect to the model's output in one
kernel pass (``forward_backward``). A loss holds no device: it runs on the device of the arrays
it is given (NumPy arrays on the CPU, device arrays on the GPU), choosing the kernels when it
builds the call. Names: ``cross_entropy`` (from logits, integer labels,
softmax fused), ``binary_cross_entropy`` (from logits), ``mse``, ``mae``, ``huber``.
:class:`SampleWeighted` puts per-sample weights on one of these (``fit(sample_weight=...)``).

Padded steps: given ``lengths`` (batch,) int64 and ``per_step`` (``call``, ``forward_backward``,
``correct_count``), the rows are those of a per-step output ``(batch, time, ..., k)`` and only the
rows of valid steps (step < the sample's length) count, as Keras leaves masked steps out: the mean
is over the valid rows (their elements for the elementwise losses), the other rows get a zero
gradient and are not counted (``fastnn.kernels.losses``). ``Sequential`` passes them for a model
whose input carries lengths (``Masking``, ``Embedding(..., mask_padding=True)``).

Ignored labels: ``CrossEntropy(ignore_index=-100)`` (torch's ``ignore_index``, Keras 3's
``ignore_class``) leaves the rows labelled ``-100`` out the same way: no loss, a zero gradient, not
in the mean's divisor nor in the accuracy and metrics; with padded steps, both rules apply.
"""

from __future__ import annotations

import inspect
from typing import overload

import numpy as np
from numpy.typing import ArrayLike

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
    """Make a Loss subclass usable by its ``name`` and loadable from saved models.

    Use as a class decorator: ``compile(loss=name)`` then finds the class, and a saved model
    with this loss loads again. The class must rebuild from its ``get_config()``
    (``cls(**config)`` without "name"). The one argument, ``cls``, is a subclass of
    :class:`Loss` with its own non-empty ``name`` class attribute (numpydoc does not list an
    argument named ``cls``).

    Returns
    -------
    type
        ``cls`` itself, now in ``LOSSES`` under its ``name``.

    Raises
    ------
    TypeError
        If ``cls`` is not a subclass of :class:`Loss`.
    ValueError
        If ``cls`` has no ``name`` of its own, or its name is one of fastnn's built-in losses.

    Examples
    --------
    >>> import fastnn as fnn
    >>> @fnn.register_loss
    ... class HalfMSE(fnn.losses.MSE):
    ...     name = "half_mse_example"
    >>> fnn.losses.get("half_mse_example")
    HalfMSE(reduction='mean')
    >>> del fnn.losses.LOSSES["half_mse_example"]  # (unregistered again)
    """
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
    """Base class of the losses: picks the fused kernel, holds the reduction and checks targets.

    Parameters
    ----------
    reduction : {"mean", "sum"}, default "mean"
        "mean" averages over samples (over elements for elementwise losses, as in PyTorch);
        "sum" adds them.

    Raises
    ------
    ValueError
        If ``reduction`` is neither "mean" nor "sum".

    Examples
    --------
    >>> import fastnn as fnn
    >>> loss = fnn.losses.MSE(reduction="sum")
    >>> out = np.array([[1.0], [2.0]])
    >>> grad = np.empty_like(out)
    >>> loss.forward_backward(out, np.array([[0.0], [0.0]]), grad)
    5.0
    >>> grad.ravel()
    array([2., 4.])
    """

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

    def check_targets(self, y: ArrayLike, n_samples: int, n_outputs: int, dtype) -> np.ndarray:
        """Targets ``y`` checked and converted for a batch of ``n_samples`` outputs.

        Parameters
        ----------
        y : array_like
            The targets: (n_samples, n_outputs) or (n_samples,) values for regression losses; labels
            (n_samples,) for :class:`CrossEntropy`.
        n_samples : int
            Rows of the output the targets go with.
        n_outputs : int
            Outputs per row (the last axis of the model's output).
        dtype : numpy.dtype
            The model's float dtype (float32 or float64), the targets' dtype for regression losses.

        Returns
        -------
        numpy.ndarray
            C-contiguous targets of shape ``(n_samples, *trailing)`` and the dtype of
            :meth:`target_spec`.

        Raises
        ------
        ValueError
            If ``y`` has the wrong shape or length, or values the loss cannot take.

        Examples
        --------
        >>> import fastnn as fnn
        >>> fnn.losses.MSE().check_targets([1, 2], 2, 1, np.float32)
        array([[1.],
               [2.]], dtype=float32)
        """
        return V.check_targets(y, n_samples, n_outputs, dtype)

    def target_spec(self, n_outputs: int, dtype) -> tuple[tuple[int, ...], np.dtype]:
        """The per-row shape and dtype of this loss's checked targets.

        Parameters
        ----------
        n_outputs : int
            Outputs per row (the last axis of the model's output).
        dtype : numpy.dtype
            The model's float dtype.

        Returns
        -------
        tuple of (tuple of int, numpy.dtype)
            (trailing shape, dtype): ``((n_outputs,), dtype)`` for regression losses, ``((), int64)``
            for labels.

        Examples
        --------
        >>> import fastnn as fnn
        >>> fnn.losses.MSE().target_spec(3, np.float32)
        ((3,), dtype('float32'))
        >>> fnn.losses.CrossEntropy().target_spec(3, np.float32)
        ((), dtype('int64'))
        """
        return (n_outputs,), np.dtype(dtype)

    def call(
        self,
        output: np.ndarray,
        target: np.ndarray,
        grad: np.ndarray,
        compute_grad: bool = True,
        lengths: np.ndarray | None = None,
        per_step: int = 1,
    ):
        """The loss as a kernel call ``(fn, args)``: ``fn(*args)`` is :meth:`forward_backward`.

        Step plans record this call once and run it every step.

        Parameters
        ----------
        output : numpy.ndarray
            (batch, outputs) float32 or float64, the model's output (host or device array).
        target : numpy.ndarray
            Checked targets (:meth:`check_targets`) on the same device.
        grad : numpy.ndarray
            Same shape and dtype as ``output``: receives d loss / d output.
        compute_grad : bool, default True
            False computes the value only (``grad`` is left unchanged).
        lengths : numpy.ndarray, optional
            (samples,) int64 on the same device: the rows are a per-step output's (``per_step`` rows
            a step) and only those of valid steps count (the module's docstring). A subclass that
            overrides ``call`` without this parameter cannot train models with masked sequences.
        per_step : int, default 1
            Rows of one step (the output's positions after the time axis).

        Returns
        -------
        tuple of (callable, tuple)
            The kernel and its arguments; the kernel returns the loss as a float.

        Raises
        ------
        NotImplementedError
            On the base class (every loss defines it).

        Examples
        --------
        >>> import fastnn as fnn
        >>> out = np.array([[1.0], [3.0]])
        >>> grad = np.empty_like(out)
        >>> fn, args = fnn.losses.MAE().call(out, np.zeros((2, 1)), grad)
        >>> fn(*args)
        2.0
        """
        raise NotImplementedError

    def forward_backward(
        self,
        output: np.ndarray,
        target: np.ndarray,
        grad: np.ndarray,
        compute_grad: bool = True,
        lengths: np.ndarray | None = None,
        per_step: int = 1,
    ) -> float:
        """The loss of ``output`` against ``target``, writing its gradient into ``grad``.

        Parameters
        ----------
        output : numpy.ndarray
            (batch, outputs) float32 or float64.
        target : numpy.ndarray
            Checked targets (:meth:`check_targets`) on the same device as ``output``.
        grad : numpy.ndarray or None
            Same shape and dtype as ``output``: receives d loss / d output when ``compute_grad``
            (None only with ``compute_grad=False``).
        compute_grad : bool, default True
            False computes the value only.
        lengths : numpy.ndarray, optional
            (samples,) int64 sequence lengths: ``output`` is ``samples * time * per_step`` rows of a
            per-step output and only the rows of valid steps count (the module's docstring).
        per_step : int, default 1
            Rows of one step.

        Returns
        -------
        float
            The loss, reduced as ``reduction`` says.

        Raises
        ------
        ValueError
            If ``target`` or ``grad`` does not match ``output``'s shape, or a label is outside
            [0, outputs), or ``lengths`` does not fit the rows.
        TypeError
            If ``output`` is not a 2-D float array, ``grad`` not a float array (None with
            ``compute_grad``), or labels are not integers.

        Examples
        --------
        >>> import fastnn as fnn
        >>> logits = np.array([[2.0, 0.0], [0.0, 2.0]])
        >>> grad = np.empty_like(logits)
        >>> print(round(fnn.losses.CrossEntropy().forward_backward(logits, np.array([0, 0]), grad), 4))
        1.1269
        """
        self._check_arrays(output, target, grad, compute_grad, lengths, per_step)
        if grad is None:  # compute_grad=False (checked): the kernels take an array they do not write
            grad = backend.zeros((1, 1), output.dtype, backend.device_of(output))
        if lengths is None:
            fn, args = self.call(output, target, grad, compute_grad)
        else:
            fn, args = self.call(output, target, grad, compute_grad, lengths, per_step)
        return fn(*args)

    def _check_arrays(self, output, target, grad, compute_grad: bool, lengths, per_step: int) -> None:
        """The checks of a direct call (:meth:`forward_backward`, a built-in :meth:`correct_count`),
        whose kernels index the arrays unchecked; step plans and fit skip them (:func:`count_correct`)."""
        trailing = self.target_spec(output.shape[-1] if getattr(output, "ndim", 0) == 2 else 1, np.float64)[0]
        ignore = ignore_index_of(self)
        valid = None
        if lengths is not None and getattr(output, "ndim", 0) == 2:  # padded steps' labels: not read, not checked
            check_lengths(lengths, output.shape[0], per_step)
            valid = _valid_rows(backend.to_host(lengths), output.shape[0], per_step)

        def labels_of(target):
            labels = self._labels(target)
            if not isinstance(labels, np.ndarray):  # (a device's: unchecked; or None: values)
                return labels
            keep = valid
            if ignore is not None:  # labels equal to ignore_index: not read, not checked
                keep = labels != ignore if keep is None else keep & (labels != ignore)
            return labels if keep is None else labels[keep]

        V.check_loss_arrays(output, target, grad, compute_grad, trailing, labels_of)
        if lengths is not None:
            check_lengths(lengths, output.shape[0], per_step)
            refuse_without_lengths(self)

    def _labels(self, target):
        """The class labels of checked ``target`` (kernels index the output by them), None for values."""
        return None

    def correct_count(
        self, output: np.ndarray, target: np.ndarray, lengths: np.ndarray | None = None, per_step: int = 1
    ) -> int | None:
        """The number of correctly classified samples (accuracy = this / samples).

        Parameters
        ----------
        output : numpy.ndarray
            (batch, outputs) float32 or float64.
        target : numpy.ndarray
            Checked targets on the same device as ``output``.
        lengths : numpy.ndarray, optional
            (samples,) int64 sequence lengths: only the rows of valid steps are counted (as in
            :meth:`forward_backward`).
        per_step : int, default 1
            Rows of one step.

        Returns
        -------
        int or None
            Samples (rows of valid steps) classified right; None for regression losses.

        Raises
        ------
        ValueError
            If ``target`` does not have one label (row of targets) per row of ``output``, a label
            is outside [0, outputs) or not an integer, or ``lengths`` does not fit the rows (the
            checks of :meth:`forward_backward`; fit's own counts skip them: :func:`count_correct`).
        TypeError
            If ``output`` is not a 2-D float array, or labels are not integers.

        Examples
        --------
        >>> import fastnn as fnn
        >>> logits = np.array([[2.0, 0.0], [0.0, 2.0]])
        >>> fnn.losses.CrossEntropy().correct_count(logits, np.array([0, 0]))
        1
        >>> fnn.losses.MSE().correct_count(logits, logits) is None
        True
        """
        return None

    def predict_classes(self, output: np.ndarray) -> np.ndarray:
        """The class labels of ``output``, the ones :meth:`correct_count` scores.

        Parameters
        ----------
        output : numpy.ndarray
            (batch, outputs) float32 or float64 host array.

        Returns
        -------
        numpy.ndarray
            int64 labels: (batch,) argmax for :class:`CrossEntropy`; ``logit > 0`` for
            :class:`BinaryCrossEntropy`, (batch,) for one output, (batch, k) for k outputs.

        Raises
        ------
        TypeError
            For a regression loss (no classes).

        Examples
        --------
        >>> import fastnn as fnn
        >>> fnn.losses.CrossEntropy().predict_classes(np.array([[0.1, 0.9], [2.0, -1.0]]))
        array([1, 0])
        """
        raise TypeError(
            f"predict_classes needs a classification loss (cross_entropy or "
            f"binary_cross_entropy); this model was compiled with {self.name!r}"
        )

    def probabilities(self, output: np.ndarray) -> np.ndarray:
        """Class probabilities from logits: softmax (cross-entropy) or sigmoid (binary cross-entropy).

        Parameters
        ----------
        output : numpy.ndarray
            (batch, outputs) float32 or float64 host array of logits.

        Returns
        -------
        numpy.ndarray
            Same shape and dtype as ``output``.

        Raises
        ------
        TypeError
            For a regression loss (no probabilities).

        Examples
        --------
        >>> import fastnn as fnn
        >>> fnn.losses.CrossEntropy().probabilities(np.array([[0.0, 0.0]]))
        array([[0.5, 0.5]])
        """
        raise TypeError(
            f"predict_proba needs a classification loss (cross_entropy or "
            f"binary_cross_entropy); this model was compiled with {self.name!r}"
        )

    def get_config(self) -> dict:
        """The loss as a JSON-able dict; :func:`from_config` rebuilds it.

        Returns
        -------
        dict
            ``{"name": ..., "reduction": ...}`` and the loss's own arguments (Huber's ``delta``).

        Examples
        --------
        >>> import fastnn as fnn
        >>> fnn.losses.Huber(delta=2.0).get_config()
        {'name': 'huber', 'reduction': 'mean', 'delta': 2.0}
        """
        return {"name": self.name, "reduction": self.reduction}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items() if k != "name")
        return f"{type(self).__name__}({args})"


@register_loss
class CrossEntropy(Loss):
    """Softmax cross-entropy from logits (batch, classes) with integer labels (batch,).

    Accuracy: the fraction of samples whose argmax (the first maximum) equals the label.
    A per-step output (batch, time, ..., classes) takes one label per position.

    Parameters
    ----------
    reduction : {"mean", "sum"}, default "mean"
        Mean or sum over the samples.
    ignore_index : int, optional
        A label that marks targets to leave out, as torch's ``CrossEntropyLoss(ignore_index=-100)``
        and Keras 3's ``SparseCategoricalCrossentropy(ignore_class=...)``: such a target adds no loss
        and no gradient, and is not counted: "mean" divides by the targets not ignored (with
        ``sample_weight`` / ``class_weight``, by their weights' sum), and the accuracy and compiled
        metrics skip it. A batch whose targets are all ignored gives a loss of 0 and a zero gradient
        (torch gives nan there; Keras 0). Any other label outside [0, classes) is still refused.
        None (the default) ignores nothing. Padded steps of masked sequences are left out as well.

    Raises
    ------
    TypeError
        If ``ignore_index`` is neither None nor an integer (a bool or a float is refused).

    Examples
    --------
    >>> import fastnn as fnn
    >>> logits = np.array([[0.0, 0.0]], np.float32)
    >>> grad = np.empty_like(logits)
    >>> print(round(fnn.losses.CrossEntropy().forward_backward(logits, np.array([1]), grad), 4))
    0.6931
    >>> grad
    array([[ 0.5, -0.5]], dtype=float32)
    >>> loss = fnn.losses.CrossEntropy(ignore_index=-100)
    >>> logits = np.array([[2.0, 0.0], [0.0, 2.0]])
    >>> print(round(loss.forward_backward(logits, np.array([0, -100]), np.empty_like(logits)), 4))
    0.1269
    """

    name = "cross_entropy"
    is_classification = True

    def __init__(self, *, reduction: str = "mean", ignore_index: int | None = None):
        super().__init__(reduction=reduction)
        self.ignore_index = check_ignore_index(ignore_index)

    def check_targets(self, y, n_samples, n_outputs, dtype):
        if n_outputs < 2:
            raise ValueError(
                "cross_entropy needs a last layer with at least 2 outputs (one per class); "
                "for a single output use loss='binary_cross_entropy'"
            )
        return V.check_labels(y, n_samples, n_outputs, ignore_index=self.ignore_index)

    def target_spec(self, n_outputs, dtype):
        return (), np.dtype(np.int64)

    def _labels(self, target):
        return target

    def call(self, output, target, grad, compute_grad=True, lengths=None, per_step=1):
        kernels = _kernels(output)
        args = (output, target, grad, self._scratch(output.shape[0], kernels), self.reduction == "mean", compute_grad)
        return kernels.cross_entropy_forward_backward, _with_lengths(args, lengths, per_step, self.ignore_index)

    def correct_count(self, output, target, lengths=None, per_step=1):
        self._check_arrays(output, target, None, False, lengths, per_step)
        return count_correct(self, output, target, lengths, per_step)

    def predict_classes(self, output):
        """(batch,) int64: the argmax of each row (the first maximum)."""
        return np.argmax(output, axis=1).astype(np.int64, copy=False)

    def probabilities(self, output):
        probs = np.empty_like(output)
        _CPU.activation_forward(output, probs, SOFTMAX, 0.0)
        return probs

    def get_config(self):
        config = super().get_config()
        if self.ignore_index is not None:
            config["ignore_index"] = self.ignore_index
        return config


class _Elementwise(Loss):
    code = -1

    def __init__(self, *, reduction: str = "mean", delta: float = 1.0):
        super().__init__(reduction=reduction)
        self.delta = V.check_float(delta, "delta", low=0.0, low_inclusive=False)

    def call(self, output, target, grad, compute_grad=True, lengths=None, per_step=1):
        kernels = _kernels(output)
        args = (
            output,
            target,
            grad,
            self._scratch(output.shape[0], kernels),
            self.code,
            self.delta,
            self.reduction == "mean",
            compute_grad,
        )
        return kernels.elementwise_loss, _with_lengths(args, lengths, per_step)


@register_loss
class MSE(_Elementwise):
    """Mean squared error: the mean over every element of ``(output - target) ** 2``.

    Parameters
    ----------
    reduction : {"mean", "sum"}, default "mean"
        Mean or sum over the elements.

    Examples
    --------
    >>> import fastnn as fnn
    >>> out = np.array([[1.0, 3.0]])
    >>> grad = np.empty_like(out)
    >>> fnn.losses.MSE().forward_backward(out, np.zeros((1, 2)), grad), grad
    (5.0, array([[1., 3.]]))
    """

    name, code = "mse", K.MSE

    def __init__(self, *, reduction: str = "mean"):
        super().__init__(reduction=reduction)


@register_loss
class MAE(_Elementwise):
    """Mean absolute error (L1): the mean over every element of ``|output - target|``.

    Parameters
    ----------
    reduction : {"mean", "sum"}, default "mean"
        Mean or sum over the elements.

    Examples
    --------
    >>> import fastnn as fnn
    >>> out = np.array([[1.0, -3.0]])
    >>> grad = np.empty_like(out)
    >>> fnn.losses.MAE().forward_backward(out, np.zeros((1, 2)), grad), grad
    (2.0, array([[ 0.5, -0.5]]))
    """

    name, code = "mae", K.MAE

    def __init__(self, *, reduction: str = "mean"):
        super().__init__(reduction=reduction)


@register_loss
class Huber(_Elementwise):
    """Huber loss: quadratic for ``|error| < delta``, linear beyond (torch.nn.HuberLoss).

    Parameters
    ----------
    reduction : {"mean", "sum"}, default "mean"
        Mean or sum over the elements.
    delta : float, default 1.0
        Where the loss turns from quadratic to linear; > 0.

    Raises
    ------
    ValueError
        If ``delta`` is not > 0.

    Examples
    --------
    >>> import fastnn as fnn
    >>> out = np.array([[0.5, 3.0]])
    >>> grad = np.empty_like(out)
    >>> fnn.losses.Huber(delta=1.0).forward_backward(out, np.zeros((1, 2)), grad)
    1.3125
    """

    name, code = "huber", K.HUBER

    def __init__(self, *, reduction: str = "mean", delta: float = 1.0):
        super().__init__(reduction=reduction, delta=delta)  # (its own: a wrong keyword names Huber)

    def get_config(self):
        return dict(super().get_config(), delta=self.delta)


@register_loss
class BinaryCrossEntropy(_Elementwise):
    """Binary cross-entropy from logits (batch, k) against targets in [0, 1] (sigmoid fused).

    A logit > 0 predicts class 1, a target > 0.5 is class 1. With k = 1 output, accuracy is the
    fraction of samples classified right. With k > 1 (multi-label) it is the exact-match subset
    accuracy of sklearn's ``accuracy_score``: the fraction of samples whose k labels are all right
    (stricter than Keras' ``binary_accuracy``, the mean over the k * batch elements).

    Parameters
    ----------
    reduction : {"mean", "sum"}, default "mean"
        Mean or sum over the elements.

    Examples
    --------
    >>> import fastnn as fnn
    >>> logits = np.array([[0.0], [2.0]])
    >>> grad = np.empty_like(logits)
    >>> print(round(fnn.losses.BinaryCrossEntropy().forward_backward(logits, np.array([[1.0], [1.0]]), grad), 4))
    0.41
    >>> fnn.losses.BinaryCrossEntropy().predict_classes(logits)
    array([0, 1])
    """

    name, code = "binary_cross_entropy", K.BCE_LOGITS
    is_classification = True

    def __init__(self, *, reduction: str = "mean"):
        super().__init__(reduction=reduction)

    def check_targets(self, y, n_samples, n_outputs, dtype):
        target = V.check_targets(y, n_samples, n_outputs, dtype)
        if target.size and (target.min() < 0 or target.max() > 1):
            raise ValueError(
                f"binary_cross_entropy targets must lie in [0, 1], got values in [{target.min()}, {target.max()}]"
            )
        return target

    def correct_count(self, output, target, lengths=None, per_step=1):
        self._check_arrays(output, target, None, False, lengths, per_step)
        return count_correct(self, output, target, lengths, per_step)

    def predict_classes(self, output):
        """int64 ``logit > 0``: (batch,) for one output, (batch, k) for k > 1 (multi-label)."""
        labels = (output > 0).astype(np.int64)
        return labels[:, 0] if labels.shape[1] == 1 else labels

    def probabilities(self, output):
        probs = np.empty_like(output)
        _CPU.activation_forward(output, probs, SIGMOID, 0.0)
        return probs


class SampleWeighted(Loss):
    """``base`` loss with one weight per loss row (``fit(sample_weight=...)``, ``class_weight``).

    A row is a sample, or one position of a per-step output ``(batch, time, ..., k)`` (each with
    its own weight: a sample's weight repeated, or per time step, or per class of its label).
    "mean": ``sum_i w_i l_i / sum_i w_i`` over the batch's rows (PyTorch's normalisation with
    ``weight=``, not Keras' division by the batch size), where ``l_i`` is row i's base loss
    (divided by its k outputs for elementwise losses, so unit weights give exactly the base loss
    and its gradient); a batch whose weights are all zero contributes 0. "sum": ``sum_i w_i l_i``.
    With sequence ``lengths`` (masked per-step outputs) only the rows of valid steps count: the sums
    run over them alone, the padded rows' targets are not read and their gradient is 0.
    Targets are float64 rows (m, t + 1): the base target (a label, or k values) then the weight
    (:func:`weighted_targets`), so shuffling and batching keep each weight with its sample. The
    gradient is the base kernel's, each row scaled by its weight; the value comes from the
    per-sample loss kernels, all in one kernel (``kernels.losses.weighted_cross_entropy`` or
    ``weighted_elementwise_loss``), so a step plan with it still fuses. Runs on the host (a device's
    output is copied over and back).
    ``get_config`` is the base's: weights are data of one fit, a saved model keeps the plain loss.

    Parameters
    ----------
    base : Loss
        One of fastnn's built-in losses; its ``reduction`` is this loss's.

    Raises
    ------
    ValueError
        If ``base`` is not one of fastnn's built-in losses.

    Examples
    --------
    >>> import fastnn as fnn
    >>> loss = fnn.losses.SampleWeighted(fnn.losses.MSE())
    >>> out = np.array([[1.0], [3.0]])
    >>> target = fnn.losses.weighted_targets(np.zeros((2, 1)), np.array([1.0, 0.0]))
    >>> loss.forward_backward(out, target, np.empty_like(out))
    1.0
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
        self._workspace: dict = {}  # host scratch of the kernels, per batch size

    def target_spec(self, n_outputs, dtype):
        trailing, _ = self.base.target_spec(n_outputs, dtype)
        return (int(np.prod(trailing)) + 1,), np.dtype(np.float64)

    def check_targets(self, y, n_samples, n_outputs, dtype):
        y = np.ascontiguousarray(y, dtype=np.float64)
        shape = (n_samples, *self.target_spec(n_outputs, dtype)[0])
        if y.shape != shape:
            raise ValueError(f"weighted targets must have shape {shape} (the targets, then the weight), got {y.shape}")
        return y

    def _labels(self, target):
        return target[:, 0] if self._classes else None

    def split(self, target: np.ndarray, dtype) -> tuple[np.ndarray, np.ndarray]:
        """A batch of weighted targets split into the base loss's targets and the weights.

        Parameters
        ----------
        target : numpy.ndarray
            float64 (m, t + 1) host rows of :func:`weighted_targets`.
        dtype : numpy.dtype
            The output's dtype, the base targets' dtype for regression losses.

        Returns
        -------
        tuple of numpy.ndarray
            (base targets: int64 labels (m,) or contiguous (m, t) values of ``dtype``, weights
            float64 (m,)).

        Examples
        --------
        >>> import fastnn as fnn
        >>> loss = fnn.losses.SampleWeighted(fnn.losses.CrossEntropy())
        >>> loss.split(np.array([[2.0, 0.5], [1.0, 1.0]]), np.float32)
        (array([2, 1]), array([0.5, 1. ]))
        """
        weights = self.weights(target)
        if self._classes:
            return target[:, 0].astype(np.int64), weights
        return np.ascontiguousarray(target[:, :-1], dtype=dtype), weights

    @staticmethod
    def weights(target: np.ndarray) -> np.ndarray:
        """The weights of a batch of weighted targets: their last column.

        Parameters
        ----------
        target : numpy.ndarray
            float64 ``(m, t + 1)`` rows of :func:`weighted_targets`, or ``(m, *positions, t + 1)``
            for a per-step output (a weight per position).

        Returns
        -------
        numpy.ndarray
            float64 ``(m,)`` (``(m, *positions)``), a view.

        Examples
        --------
        >>> import fastnn as fnn
        >>> fnn.losses.SampleWeighted.weights(fnn.losses.weighted_targets(np.array([0, 1]), np.array([0.5, 2.0])))
        array([0.5, 2. ])
        """
        return target[..., -1]

    def call(self, output, target, grad, compute_grad=True, lengths=None, per_step=1):
        if not isinstance(output, np.ndarray):  # a device's output: weighed on the host
            return self._on_host, _with_lengths((output, target, grad, compute_grad), lengths, per_step)
        m = output.shape[0]
        rows = self._rows(m)
        if self._classes:
            args: tuple = (
                output,
                target,
                grad,
                self._work(("labels", m), (m,), np.int64),
                rows,
                self.reduction == "mean",
                compute_grad,
            )
            return K.weighted_cross_entropy, _with_lengths(args, lengths, per_step, ignore_index_of(self))
        base = self._elementwise_base()
        args = (
            output,
            target,
            grad,
            self._work(("targets", output.shape, output.dtype), output.shape, output.dtype),
            rows,
            base.code,
            base.delta,
            self.reduction == "mean",
            compute_grad,
        )
        return K.weighted_elementwise_loss, _with_lengths(args, lengths, per_step)

    def _rows(self, m: int) -> np.ndarray:
        """(m,) float64 scratch of the per-sample losses."""
        return self._work(("rows", m), (m,), np.float64)

    def _work(self, key, shape, dtype) -> np.ndarray:
        """A host scratch array kept per ``key`` (step plans record the call once and reuse it)."""
        work = self._workspace
        arr = work.get(key)
        if arr is None:
            if len(work) >= 32:  # many batch sizes (predict's chunks, a stream): start over
                work.clear()
            arr = work[key] = np.zeros(shape, dtype)
        return arr

    def _elementwise_base(self) -> _Elementwise:
        if not isinstance(self.base, _Elementwise):  # __init__ admits built-in losses only
            raise TypeError(f"SampleWeighted cannot weight {type(self.base).__name__}: use a built-in loss")
        return self.base

    def _on_host(self, output, target, grad, compute_grad, lengths=None, per_step=1):
        host_grad = np.empty(output.shape, output.dtype)
        masked = () if lengths is None else (backend.to_host(lengths), per_step)
        value = self._weighted(backend.to_host(output), backend.to_host(target), host_grad, compute_grad, *masked)
        if compute_grad:
            backend.copy_into(grad, host_grad)
        return value

    def _weighted(self, output, target, grad, compute_grad, *masked) -> float:
        fn, args = self.call(output, target, grad, compute_grad, *masked)
        return float(fn(*args))

    def correct_count(self, output, target, lengths=None, per_step=1):
        self._check_arrays(output, target, None, False, lengths, per_step)
        return count_correct(self, output, target, lengths, per_step)

    def predict_classes(self, output):
        return self.base.predict_classes(output)

    def probabilities(self, output):
        return self.base.probabilities(output)

    def get_config(self):
        return self.base.get_config()

    def __repr__(self) -> str:
        return f"SampleWeighted({self.base!r})"


#: the count kernel (its name in the CPU and CUDA kernel namespaces) of each built-in
#: ``correct_count``; a subclass overriding it counts in Python (fastnn._step_feed reads it too)
COUNT_KERNELS = {
    CrossEntropy.correct_count: "accuracy_count",
    BinaryCrossEntropy.correct_count: "binary_accuracy_count",
}


def count_correct(loss: Loss, output, target, lengths=None, per_step: int = 1) -> int | None:
    """``loss.correct_count`` of arrays the caller made itself (fit's steps, evaluation's rows after
    the loss's checked call): a built-in loss's count kernel without the argument checks of its
    public ``correct_count``, a subclass's own ``correct_count`` as it is.

    Parameters
    ----------
    loss : Loss
        The loss (a :class:`SampleWeighted` counts its base's way on the labels of its targets).
    output : numpy.ndarray
        (rows, outputs) float32 or float64, host or device.
    target : numpy.ndarray
        The loss's checked targets for those rows, on the same device.
    lengths : numpy.ndarray, optional
        (samples,) int64 sequence lengths on the same device (only valid steps count).
    per_step : int, default 1
        Rows of one step.

    Returns
    -------
    int or None
        The rows classified right; None for a loss that does not classify.

    Examples
    --------
    >>> import fastnn as fnn
    >>> logits = np.array([[2.0, 0.0], [0.0, 2.0]])
    >>> fnn.losses.count_correct(fnn.losses.CrossEntropy(), logits, np.array([0, 0]))
    1
    """
    method = type(loss).correct_count
    if method is SampleWeighted.correct_count:
        labels = loss.split(backend.to_host(target), output.dtype)[0]  # type: ignore[attr-defined]
        return count_correct(loss.base, output, labels, lengths, per_step)  # type: ignore[attr-defined]
    kernel = COUNT_KERNELS.get(method)
    if kernel is None:
        return loss.correct_count(output, target, *(() if lengths is None else (lengths, per_step)))
    args = _with_lengths((output, target), lengths, per_step, ignore_index_of(loss))
    return int(getattr(_kernels(output), kernel)(*args))


def check_ignore_index(ignore_index) -> int | None:
    """``ignore_index`` of :class:`CrossEntropy` checked: None, or an int (a NumPy integer too).

    Parameters
    ----------
    ignore_index : int or None
        The label that marks ignored targets.

    Returns
    -------
    int or None
        The label as a Python int, or None.

    Raises
    ------
    TypeError
        For a bool, a float or anything else not an integer, naming the fix.

    Examples
    --------
    >>> import fastnn as fnn
    >>> fnn.losses.check_ignore_index(np.int64(-100))
    -100
    >>> fnn.losses.check_ignore_index(-100.0)
    Traceback (most recent call last):
    ...
    TypeError: ignore_index must be None or an integer label (torch's default is -100), got float -100.0; ...
    """
    if ignore_index is None:
        return None
    if isinstance(ignore_index, (bool, np.bool_)) or not isinstance(ignore_index, (int, np.integer)):
        raise TypeError(
            f"ignore_index must be None or an integer label (torch's default is -100), got "
            f"{type(ignore_index).__name__} {ignore_index!r}; pass e.g. ignore_index=-100 and use "
            f"that label for the targets to leave out"
        )
    value = int(ignore_index)
    if not -(2**62) <= value < 2**62:
        raise ValueError(f"ignore_index must lie within +-2**62 (an int64 label), got {value}")
    return value


def ignore_index_of(loss: Loss | None) -> int | None:
    """The label whose targets ``loss`` leaves out (:class:`CrossEntropy`'s ``ignore_index``, under a
    :class:`SampleWeighted` one too), None when it ignores none.

    Parameters
    ----------
    loss : Loss or None
        A loss.

    Returns
    -------
    int or None
        The ignored label.

    Examples
    --------
    >>> import fastnn as fnn
    >>> fnn.losses.ignore_index_of(fnn.losses.SampleWeighted(fnn.losses.CrossEntropy(ignore_index=-1)))
    -1
    >>> fnn.losses.ignore_index_of(fnn.losses.MSE()) is None
    True
    """
    value = getattr(base_of(loss), "ignore_index", None)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def counted_rows(
    loss: Loss | None, target: np.ndarray, *, weighted: bool, valid: np.ndarray | None = None
) -> np.ndarray | None:
    """The loss rows that count in a batch's mean: those of ``valid`` (the valid steps' positions of a
    model that leaves padded steps out; None: every row) whose target ``loss`` does not ignore
    (``CrossEntropy(ignore_index=...)``, :func:`ignore_index_of`).

    The one rule fit's accuracy count, gradient accumulation's batch weights, the metrics' and
    evaluation's rows and an MPI shard's share of the global batch all use.

    Parameters
    ----------
    loss : Loss or None
        The loss (plain or :class:`SampleWeighted`) whose ignored label leaves rows out.
    target : numpy.ndarray
        Checked host targets: labels ``(n, *positions)`` or their loss rows ``(rows,)``; with
        ``weighted``, rows of (label, weight) ``(n, *positions, 2)`` or ``(rows, 2)``.
    weighted : bool
        Whether ``target`` carries a weight column (:func:`weighted_targets`: a weighted fit's
        targets, checked by its :class:`SampleWeighted` loss); its labels are the first column.
    valid : numpy.ndarray, optional
        bool ``(rows,)``: the rows of valid steps (``model.valid_rows(lengths)``); None: all rows.

    Returns
    -------
    numpy.ndarray or None
        bool ``(rows,)`` (the loss rows, in order): ``valid`` and the targets not ignored; None
        when every row counts.

    Raises
    ------
    TypeError
        If ``weighted`` is not a bool.
    ValueError
        If ``weighted`` targets have no (label, weight) last axis, or ``valid`` is not one bool
        per loss row.

    Examples
    --------
    >>> import fastnn as fnn
    >>> loss = fnn.losses.CrossEntropy(ignore_index=-100)
    >>> fnn.losses.counted_rows(loss, np.array([[1, -100], [0, 2]]), weighted=False)
    array([ True, False,  True,  True])
    >>> fnn.losses.counted_rows(loss, np.array([1, -100, 2]), weighted=False, valid=np.array([True, True, False]))
    array([ True, False, False])
    >>> y = fnn.losses.weighted_targets(np.array([-100, 1]), np.array([0.5, 2.0]))
    >>> fnn.losses.counted_rows(fnn.losses.SampleWeighted(loss), y, weighted=True)
    array([False,  True])
    >>> fnn.losses.counted_rows(fnn.losses.MSE(), np.zeros((2, 1)), weighted=False) is None
    True
    """
    if not isinstance(weighted, (bool, np.bool_)):
        raise TypeError(
            f"weighted must be True (the targets carry a weight column: label, weight) or False (labels "
            f"only), got {type(weighted).__name__} {weighted!r}"
        )
    ignore = ignore_index_of(loss)
    if ignore is None:
        kept = None
    else:
        labels = np.asarray(target)
        if weighted:
            if labels.ndim < 2 or labels.shape[-1] != 2:
                raise ValueError(
                    f"weighted targets must end in a (label, weight) axis of 2, got shape {labels.shape}; "
                    f"pass weighted=False for plain labels, or build them with fastnn.losses.weighted_targets"
                )
            labels = labels[..., 0]
        kept = labels.reshape(-1) != ignore
    if valid is None:
        return kept
    valid = np.asarray(valid)
    if valid.dtype != np.bool_ or valid.ndim != 1 or (kept is not None and valid.shape != kept.shape):
        rows = "one per loss row" if kept is None else f"{kept.shape[0]} (one per loss row)"
        raise ValueError(
            f"valid must be a 1D bool array of the rows of valid steps, {rows}, got {valid.dtype} "
            f"array of shape {valid.shape}; pass model.valid_rows(lengths) for the batch, or None"
        )
    return valid if kept is None else valid & kept


def count_tail(loss: Loss, lengths, per_step: int) -> tuple:
    """What a count kernel of ``loss`` takes after ``(output, target)``: ``(lengths, per_step)`` for
    padded steps and the ignored label (:func:`ignore_index_of`), () when neither applies.

    Parameters
    ----------
    loss : Loss
        The model's loss.
    lengths : numpy.ndarray or None
        The batch's sequence lengths (on the kernel's device), or None.
    per_step : int
        Rows of one step.

    Returns
    -------
    tuple
        The trailing arguments.

    Examples
    --------
    >>> import fastnn as fnn
    >>> fnn.losses.count_tail(fnn.losses.CrossEntropy(ignore_index=-100), None, 1)
    (None, 1, -100)
    """
    return _with_lengths((), lengths, per_step, ignore_index_of(loss))


def _valid_rows(lengths: np.ndarray, rows: int, per_step: int) -> np.ndarray:
    """bool ``(rows,)``: which loss rows are valid steps for host ``lengths`` (``kernels.masking.row_is_valid``)."""
    per_sample = rows // lengths.shape[0]
    steps = (np.arange(per_sample) // per_step)[None, :]
    return (steps < lengths[:, None]).reshape(rows)


def _with_lengths(args: tuple, lengths, per_step: int, ignore_index: int | None = None) -> tuple:
    """A kernel's arguments, with (lengths, per_step) after them for a masked call, and
    (lengths or None, per_step, ignore_index) for a call that ignores a label."""
    if ignore_index is not None:
        return (*args, lengths, int(per_step), ignore_index)
    return args if lengths is None else (*args, lengths, int(per_step))


def check_lengths(lengths, rows: int, per_step: int) -> None:
    """Refuse sequence ``lengths`` that do not describe ``rows`` loss rows of ``per_step`` rows a step.

    Parameters
    ----------
    lengths : numpy.ndarray
        (samples,) int64, on the host or a device.
    rows : int
        The loss rows (``samples * time * per_step``).
    per_step : int
        Rows of one step, >= 1.

    Raises
    ------
    ValueError
        Naming what does not fit and how to fix it.

    Examples
    --------
    >>> import fastnn as fnn
    >>> fnn.losses.check_lengths(np.array([2, 1]), 6, 1)  # 2 samples of 3 steps
    >>> fnn.losses.check_lengths(np.array([2, 1]), 5, 1)
    Traceback (most recent call last):
    ...
    ValueError: lengths has 2 samples, but the output's 5 rows are not 2 samples of per_step=1 rows a step ...
    """
    shape, dtype = getattr(lengths, "shape", None), getattr(lengths, "dtype", None)
    if shape is None or len(shape) != 1 or dtype != np.int64:
        raise ValueError(
            f"lengths must be a 1-D int64 array (the valid steps of each sample), got "
            f"{type(lengths).__name__} of shape {shape} and dtype {dtype}"
        )
    if isinstance(per_step, bool) or not isinstance(per_step, (int, np.integer)) or per_step < 1:
        raise ValueError(f"per_step must be an int >= 1 (loss rows of one step), got {per_step!r}")
    if shape[0] == 0 or rows % (shape[0] * per_step):
        raise ValueError(
            f"lengths has {shape[0]} samples, but the output's {rows} rows are not {shape[0]} samples of "
            f"per_step={per_step} rows a step (rows = samples * time * per_step): pass the lengths of this batch"
        )


def takes_lengths(loss: Loss) -> bool:
    """Whether ``loss.call`` takes sequence lengths (leaves padded steps out).

    Built-in losses do; a subclass that overrides ``call`` without a ``lengths`` parameter does not.

    Parameters
    ----------
    loss : Loss
        The loss.

    Returns
    -------
    bool
        True when ``call`` has a ``lengths`` parameter.

    Examples
    --------
    >>> import fastnn as fnn
    >>> fnn.losses.takes_lengths(fnn.losses.MSE())
    True
    """
    return "lengths" in inspect.signature(type(loss).call).parameters


def refuse_without_lengths(loss: Loss) -> None:
    """Refuse a loss that cannot leave padded steps out (:func:`takes_lengths` is False).

    Parameters
    ----------
    loss : Loss
        The loss of a model whose per-step outputs carry sequence lengths.

    Raises
    ------
    ValueError
        Naming the loss and the fix.

    Examples
    --------
    >>> import fastnn as fnn
    >>> fnn.losses.refuse_without_lengths(fnn.losses.CrossEntropy())  # built-in: takes them
    """
    if not takes_lengths(loss):
        raise ValueError(
            f"loss {loss!r} overrides call() without a `lengths` parameter, so it cannot leave the padded "
            f"steps of masked sequences out (Masking or Embedding(mask_padding=True) before per-step "
            f"outputs); add `lengths=None, per_step=1` to its call() and pass them to the kernel (see "
            f"fastnn.losses.CrossEntropy.call), or end the model with a layer that drops the time axis"
        )


def weighted_targets(targets: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Targets with each row's weight appended: the targets :class:`SampleWeighted` takes.

    Parameters
    ----------
    targets : numpy.ndarray
        Checked targets: (n,) labels or (n, t) values; for a per-step output ``(n, *positions)``
        labels or ``(n, *positions, t)`` values.
    weights : numpy.ndarray
        float weights of the rows, the leading axes of ``targets``: (n,) one per sample, or
        ``(n, *positions)`` one per position (:func:`row_weights` repeats a sample's weight).

    Returns
    -------
    numpy.ndarray
        float64 ``(*weights.shape, t + 1)``: each row's targets, then its weight.

    Raises
    ------
    ValueError
        If ``weights``' shape is not the leading axes of ``targets``' shape.

    Examples
    --------
    >>> import fastnn as fnn
    >>> fnn.losses.weighted_targets(np.array([0, 2]), np.array([1.0, 0.5]))
    array([[0. , 1. ],
           [2. , 0.5]])
    >>> fnn.losses.weighted_targets(np.array([[0, 1, 1]]), np.array([[1.0, 0.5, 0.0]])).shape  # per step
    (1, 3, 2)
    """
    weights = np.asarray(weights)
    shape = weights.shape
    if not shape or targets.shape[: len(shape)] != shape:
        raise ValueError(
            f"weights of shape {shape} do not fit targets of shape {targets.shape}: give one weight per "
            f"row, the targets' leading axes (fastnn.losses.row_weights repeats a sample's weight)"
        )
    rows = int(np.prod(shape))
    stacked = np.column_stack([targets.reshape(rows, -1), weights.reshape(rows)]).astype(np.float64, copy=False)
    return stacked.reshape((*shape, stacked.shape[1]))


def row_weights(weights: np.ndarray, positions: tuple[int, ...]) -> np.ndarray:
    """Weights ``(n,)``, ``(n, time)`` or ``(n, *positions)`` repeated to one per loss row.

    Parameters
    ----------
    weights : numpy.ndarray
        float64: one weight per sample ``(n,)``, per time step ``(n, time)`` (Keras' temporal
        weights; ``time`` is ``positions[0]``) or per position ``(n, *positions)``.
    positions : tuple of int
        The per-sample axes of the output before its last (``model.output_shape[:-1]``; ``()``
        for an output ``(batch, k)``).

    Returns
    -------
    numpy.ndarray
        float64 C-contiguous ``(n, *positions)``: a sample's weight repeated over its positions, a
        step's over the positions after the time axis.

    Raises
    ------
    ValueError
        If ``weights`` has none of those shapes.

    Examples
    --------
    >>> import fastnn as fnn
    >>> fnn.losses.row_weights(np.array([1.0, 2.0]), (3,))
    array([[1., 1., 1.],
           [2., 2., 2.]])
    """
    weights = np.asarray(weights, np.float64)
    if (
        weights.ndim < 1
        or weights.ndim > 1 + len(positions)
        or weights.shape[1:] != tuple(positions[: weights.ndim - 1])
    ):
        raise ValueError(
            f"weights of shape {weights.shape} do not fit {len(weights) if weights.ndim else '?'} samples of "
            f"positions {tuple(positions)}: give (n,) one per sample"
            + (
                f", (n, {positions[0]}) one per time step or (n, {', '.join(map(str, positions))}) one per position"
                if positions
                else ""
            )
        )
    trailing = (1,) * (len(positions) + 1 - weights.ndim)
    full = np.broadcast_to(weights.reshape((*weights.shape, *trailing)), (weights.shape[0], *positions))
    return np.ascontiguousarray(full)


@overload
def base_of(loss: Loss) -> Loss: ...
@overload
def base_of(loss: None) -> None: ...
def base_of(loss: Loss | None) -> Loss | None:
    """The plain loss under a :class:`SampleWeighted` one (``loss`` itself otherwise).

    Parameters
    ----------
    loss : Loss or None
        A loss, possibly weighted.

    Returns
    -------
    Loss or None
        ``loss.base`` for a :class:`SampleWeighted` loss, else ``loss``.

    Examples
    --------
    >>> import fastnn as fnn
    >>> fnn.losses.base_of(fnn.losses.SampleWeighted(fnn.losses.MAE()))
    MAE(reduction='mean')
    """
    return loss.base if isinstance(loss, SampleWeighted) else loss


def get(loss) -> Loss:
    """A Loss from a name in ``LOSSES`` or an instance (returned as is).

    Parameters
    ----------
    loss : str or Loss
        A registered name ("cross_entropy", "binary_cross_entropy", "mse", "mae", "huber", or a
        name given with :func:`register_loss`), or a Loss.

    Returns
    -------
    Loss
        A new loss with default arguments for a name; ``loss`` itself for an instance.

    Raises
    ------
    ValueError
        If ``loss`` is an unknown name (the message suggests the closest).

    Examples
    --------
    >>> import fastnn as fnn
    >>> fnn.losses.get("huber")
    Huber(reduction='mean', delta=1.0)
    """
    if isinstance(loss, Loss):
        return loss
    name = V.check_choice(loss, LOSSES, "loss")
    return LOSSES[name]()


def from_config(config: dict) -> Loss:
    """The Loss that ``config`` (a :meth:`Loss.get_config`) describes.

    Parameters
    ----------
    config : dict
        ``{"name": ..., **arguments}``; a user loss must be registered (:func:`register_loss`)
        first, unless ``"name"`` is the Loss subclass itself (as copies and pickles of a model
        hold it).

    Returns
    -------
    Loss
        A new loss.

    Raises
    ------
    ValueError
        If ``config`` is not a dict with a ``name``, or the name is not a registered loss.

    Examples
    --------
    >>> import fastnn as fnn
    >>> fnn.losses.from_config({"name": "mse", "reduction": "sum"})
    MSE(reduction='sum')
    """
    if not isinstance(config, dict) or "name" not in config:
        raise ValueError(f"a loss config must be a dict with a 'name' key (Loss.get_config()), got {config!r}")
    config = dict(config)
    name = config.pop("name")
    if isinstance(name, type) and issubclass(name, Loss):
        return name(**config)
    if isinstance(name, str) and name not in LOSSES:
        raise ValueError(
            f"Unknown loss {name!r}{V.suggest(name, LOSSES)}. A custom loss must be registered "
            f"before loading: decorate its class with @fastnn.register_loss. "
            f"Known: {', '.join(LOSSES)}."
        )
    return LOSSES[V.check_choice(name, LOSSES, "loss")](**config)
