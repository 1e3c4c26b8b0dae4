"""Embedding: integer indices of any shape -> rows of a (num_embeddings, embedding_dim) table."""

from __future__ import annotations

import numpy as np

from .. import _validation as V
from .. import backend
from .. import init as initializers
from ..kernels.checks import labels_in_range
from .base import Layer, ParamSpec, non_default_arguments, normalize_shape, shape_str
from .masking import refuse_empty_sequences
from .registry import register_layer


@register_layer
class Embedding(Layer):
    """Lookup table ``y[..., :] = weight[indices[...]]``, like ``torch.nn.Embedding``.

    Input ``(batch, *shape)`` of integer indices in [0, num_embeddings) (the model's input is
    then int64), output ``(batch, *shape, embedding_dim)`` of the model's dtype. Must be the
    model's first layer. The gradient is a scatter-add, bit-identical on any number of threads.

    Parameters
    ----------
    num_embeddings : int
        The vocabulary size.
    embedding_dim : int
        The width of each vector; ``weight`` is ``(num_embeddings, embedding_dim)``.
    padding_idx : int, optional
        That row gets no gradient and starts at zero.
    init : str, default "normal"
        Initialiser of the weight (N(0, 1), like torch).
    mask_padding : bool, default False
        For token sequences ``(batch, time)``: each sample's trailing ``padding_idx`` tokens are
        padding, skipped by the following layers as after :class:`Masking` (needs ``padding_idx``);
        per-step outputs then leave the padded steps out of the loss, its gradient, accuracy and
        metrics, as Keras does (the mean is over the valid steps).
    sparse : bool, default False
        Update only the rows each step looked up, as PyTorch does with ``sparse=True``: plain SGD
        then gives the dense result, and Adam becomes ``torch.optim.SparseAdam`` for this table
        (rows not looked up keep their moments; no other optimizer, clipping, weight decay,
        gradient accumulation or distributed training with it). The step's cost then follows
        the rows looked up, not the vocabulary. ``grad_weight`` is still the whole gradient.

    Raises
    ------
    ValueError
        For non-positive sizes, or ``padding_idx`` outside the vocabulary.

    Examples
    --------
    >>> import fastnn as fnn
    >>> model = fnn.Sequential([fnn.Embedding(10, 4, padding_idx=0)], input_shape=(3,), seed=0)
    >>> y = model.predict(np.array([[1, 2, 0]]))
    >>> y.shape, y.dtype, y[0, 2].tolist()          # the padding row is zero
    ((1, 3, 4), dtype('float32'), [0.0, 0.0, 0.0, 0.0])
    """

    input_argument = "num_embeddings"
    attribute_aliases = {  # Keras
        "input_dim": "num_embeddings",
        "output_dim": "embedding_dim",
        "embeddings": "weight",
        "embeddings_initializer": "init",
    }
    input_dtype = np.dtype(np.int64)

    def __init__(
        self,
        num_embeddings: int,
        embedding_dim: int,
        padding_idx: int | None = None,
        *,
        init: str = "normal",
        mask_padding: bool = False,
        sparse: bool = False,
    ):
        super().__init__()
        self.num_embeddings = V.check_int(num_embeddings, "num_embeddings", minimum=1)
        self.embedding_dim = V.check_int(embedding_dim, "embedding_dim", minimum=1)
        if padding_idx is not None:
            padding_idx = V.check_int(
                padding_idx, "padding_idx", minimum=-self.num_embeddings, maximum=self.num_embeddings - 1
            )
            padding_idx %= self.num_embeddings
        self.padding_idx = padding_idx
        self.mask_padding = V.check_bool(mask_padding, "mask_padding")
        if self.mask_padding and padding_idx is None:
            raise ValueError(
                "mask_padding=True needs padding_idx: the index that pads the sequences, e.g. "
                "Embedding(vocabulary, dim, padding_idx=0, mask_padding=True)"
            )
        self.init = V.check_choice(init, initializers.INITIALIZERS, "init")
        self.sparse = V.check_bool(sparse, "sparse")
        self.weight = self.grad_weight = None
        self.touched_rows = self._seen = None

    def expected_input_shape(self):
        return None

    @property
    def produces_lengths(self) -> bool:
        """Whether this layer marks padded steps (``mask_padding=True``).

        Returns
        -------
        bool
            True when the following layers receive per-sample lengths from it.

        Examples
        --------
        >>> import fastnn as fnn
        >>> fnn.Embedding(10, 4, padding_idx=0, mask_padding=True).produces_lengths
        True
        >>> fnn.Embedding(10, 4).produces_lengths
        False
        """
        return self.mask_padding

    def build(self, input_shape, dtype):
        shape = normalize_shape(input_shape)
        if self.mask_padding and len(shape) != 1:
            raise ValueError(
                f"{self!r} with mask_padding=True takes token sequences (batch, time), got {shape_str(shape)}"
            )
        super().build(shape, dtype)
        self._lengths = self.workspace(dtype=np.int64, lengths=())
        self.output_shape = (*shape, self.embedding_dim)
        self._workspace = self.workspace(y=self.output_shape)
        if self.sparse:  # the rows the last backward looked up (count first), read by the optimizer
            unknown = np.zeros(self.num_embeddings + 1, np.int64)
            unknown[0] = -1  # the gradient buffer may hold any rows (a new or moved model): zeroed whole once
            self.touched_rows = backend.to_device(unknown, self.device)
            self._seen = self.zeros(self.num_embeddings, np.uint8)
        return self.output_shape

    def parameter_specs(self):
        def init_weight(view, seed, stream):
            initializers.initialize(view, self.init, self.num_embeddings, self.embedding_dim, seed, stream)
            if self.padding_idx is not None:
                view[self.padding_idx] = 0

        # weight decay applies to the table as to any weight (torch decays every parameter it is given);
        # a sparse table steps only its looked-up rows and takes no weight decay (see ``sparse``)
        return [ParamSpec("weight", (self.num_embeddings, self.embedding_dim), not self.sparse, init_weight)]

    def bind(self, params, grads):
        self.weight, self.grad_weight = params["weight"], grads["weight"]

    def check_indices(self, X, argument: str = "X") -> np.ndarray:
        """Check the model's input for this layer (the model calls it).

        Parameters
        ----------
        X : array-like
            Integer indices ``(batch, *input_shape)`` (whole-valued floats are accepted).
        argument : str, default "X"
            The argument's name for messages.

        Returns
        -------
        ndarray
            C-contiguous int64 indices in [0, num_embeddings).

        Raises
        ------
        TypeError
            For non-integer values or a bool array.
        ValueError
            For indices out of range, or a sequence that is padding at every step.

        Examples
        --------
        >>> import fastnn as fnn
        >>> emb = fnn.Embedding(10, 4)
        >>> emb.check_indices([[1.0, 2.0, 9.0]])
        array([[1, 2, 9]])
        >>> emb.check_indices([[1, 10]])
        Traceback (most recent call last):
        ...
        ValueError: X holds index 10, outside [0, 10) of Embedding(10, 4); ...
        """
        if (  # the fast path: already what the kernels take (one pass for the range, as check_labels)
            type(X) is np.ndarray
            and X.dtype == np.int64
            and X.ndim >= 2
            and X.flags.c_contiguous
            and X.size > 0
            and not self.mask_padding
            and (self.input_shape is None or X.shape[1:] == self.input_shape)
            and labels_in_range(X.reshape(-1), self.num_embeddings)
        ):
            return X
        arr = V.as_numeric_array(X, argument)
        if arr.dtype.kind == "b":  # as torch: True/False are no token ids
            raise TypeError(
                f"{argument} must hold integer indices (int64) for {self!r}, got a bool array; "
                f"pass token ids as integers (e.g. {argument}.astype(np.int64) if 0/1 are meant)"
            )
        if arr.dtype.kind == "f":
            if not np.isfinite(arr).all() or np.any(arr != np.round(arr)):
                raise TypeError(
                    f"{argument} must hold integer indices for {self!r}, got non-integer values "
                    f"(dtype {arr.dtype}); pass token ids as integers"
                )
        if self.input_shape is not None and arr.shape[1:] != self.input_shape:
            raise ValueError(
                f"{argument} has shape {arr.shape}, {self!r} expects (samples, {', '.join(map(str, self.input_shape))})"
            )
        if arr.ndim < 2 or arr.shape[0] == 0:
            raise ValueError(f"{argument} must be (samples, *index_shape) integer indices, got shape {arr.shape}")
        low, high = arr.min(), arr.max()
        if low < 0 or high >= self.num_embeddings:
            bad = int(low if low < 0 else high)  # whole-valued here (floats were checked): the exact id
            raise ValueError(
                f"{argument} holds index {bad}, outside [0, {self.num_embeddings}) of {self!r}; "
                f"widen num_embeddings or remap the ids"
            )
        arr = np.ascontiguousarray(arr, dtype=np.int64)
        if self.mask_padding:
            refuse_empty_sequences(
                (arr != self.padding_idx).any(axis=1), argument, f"every index is padding_idx={self.padding_idx}"
            )
        return arr

    @property
    def index_limit(self) -> int | None:
        """The bound n when :meth:`check_indices` takes a C-contiguous int64 array of the input
        shape as it is once its values lie in [0, n): a model's fast training lane then checks
        its batches by that range alone, at every step. None with ``mask_padding`` (its
        sequences are checked too).

        Returns
        -------
        int or None
            ``num_embeddings``, or None.

        Examples
        --------
        >>> import fastnn as fnn
        >>> fnn.Embedding(10, 4).index_limit
        10
        >>> fnn.Embedding(10, 4, padding_idx=0, mask_padding=True).index_limit is None
        True
        """
        return None if self.mask_padding else self.num_embeddings

    def sequence_lengths(self, X) -> np.ndarray:
        """Each sample's valid steps with ``mask_padding=True``: one past its last index that is not
        ``padding_idx`` (the lengths the model's kernels compute in each step, here on the host).

        Parameters
        ----------
        X : ndarray
            Checked int64 token ids ``(batch, time)``, on the host or a device.

        Returns
        -------
        ndarray
            int64 ``(batch,)``.

        Raises
        ------
        ValueError
            Without ``mask_padding`` (no step is padding).

        Examples
        --------
        >>> import fastnn as fnn
        >>> fnn.Embedding(10, 4, padding_idx=0, mask_padding=True).sequence_lengths(np.array([[3, 0, 0], [1, 2, 0]]))
        array([1, 2])
        """
        if not self.mask_padding:
            raise ValueError(f"{self!r} marks no padded steps: sequence_lengths needs mask_padding=True")
        indices = np.ascontiguousarray(backend.to_host(X), dtype=np.int64)
        lengths = np.empty(indices.shape[0], np.int64)
        backend.kernels("cpu").lengths_from_indices(indices, self.padding_idx, lengths)
        return lengths

    def forward_calls(self, x, ctx):
        m = x.shape[0]
        ctx.indices = x.reshape(-1)
        y = self._workspace(m, ctx.arena)["y"]
        calls = [(self.K.embedding_forward, (ctx.indices, self.weight, y.reshape((-1, self.embedding_dim))))]
        if self.mask_padding:
            ctx.out_lengths = self._lengths(m, ctx.arena)["lengths"]
            calls.append((self.K.lengths_from_indices, (x, self.padding_idx, ctx.out_lengths)))
        return calls, y

    def output_lengths(self, ctx):
        return ctx.out_lengths if self.mask_padding else None

    def backward_calls(self, grad_y, ctx, need_grad_x):
        if need_grad_x:
            raise ValueError(
                f"{self!r} has no gradient with respect to its integer input: it must be the model's first layer"
            )
        padding = -1 if self.padding_idx is None else self.padding_idx
        args = (ctx.indices, grad_y.reshape((-1, self.embedding_dim)), self.grad_weight, padding)
        if self.sparse:  # zeroes the rows it listed last time, not the table; lists this step's rows
            return [(self.K.embedding_backward_rows, (*args, self._seen, self.touched_rows))], None
        return [(self.K.embedding_backward, args)], None

    def get_config(self):
        return {
            "num_embeddings": self.num_embeddings,
            "embedding_dim": self.embedding_dim,
            "padding_idx": self.padding_idx,
            "init": self.init,
            "mask_padding": self.mask_padding,
            "sparse": self.sparse,
        }

    def extra_repr(self):
        pad = "" if self.padding_idx is None else f", padding_idx={self.padding_idx}"
        if self.mask_padding:
            pad += ", mask_padding=True"
        if self.sparse:
            pad += ", sparse=True"
        shown = ("num_embeddings", "embedding_dim", "padding_idx", "mask_padding", "sparse")
        rest = "".join(f", {arg}" for arg in non_default_arguments(self, shown))
        return f"{self.num_embeddings}, {self.embedding_dim}{pad}{rest}"
