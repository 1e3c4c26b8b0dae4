"""Frozen layers: which parts of the flat parameter buffer the optimizer updates.

``layer.trainable = False`` (or ``model.freeze(...)``) excludes a layer's parameters (and those of
the layers inside it) from the optimizer: no update, no weight decay, and their optimizer state
(Adam's moments ...) stays as it is. Gradients are still computed and still flow through the
frozen layer to the layers before it. The optimizer's step count is global (one per update), as
``optimizer.iterations`` in Keras; a parameter unfrozen later continues with that count (PyTorch
keeps a step count per parameter and would start its bias correction at 1).

A frozen BatchNorm (``trainable = False`` on it or on a layer containing it: ``Layer.frozen``) runs
in inference mode in every training step, as Keras's BatchNormalization with ``trainable=False``
and PyTorch's fine-tuning recipe (``bn.eval(); bn.requires_grad_(False)``): the forward is its
evaluation-mode forward, y = (x - running_mean) / sqrt(running_var + eps) * gamma + beta, its
running statistics and ``num_batches_tracked`` stay as they are, and the gradient is that map's,
dx = dy * gamma / sqrt(running_var + eps). This holds in ``fit`` (fused or not, with ``accumulate=k``,
on "cuda", under MPI: such a layer takes no part in SyncBatchNorm's statistics), ``train_step``,
``loss_and_grads`` and the diagnostics that run training-mode passes; a last batch of one sample is
not skipped for it. Unfreezing returns it to training mode (changing ``trainable`` records the
step plans again). A BatchNorm without running statistics (``track_running_stats=False``) has
none to use: frozen, it keeps normalising with each batch's statistics, as PyTorch's eval mode.
Other layers keep their mode (a frozen Dropout still drops).

The model hands the optimizer the trainable parameters as contiguous ``[lo, hi)`` ranges of the
flat buffer (:func:`trainable_ranges`); the optimizer runs its fused kernel on each range.
"""

from __future__ import annotations

import numpy as np

from .layers.base import Layer, layer_tree, parameter_owners


def layer_paths(model) -> dict[str, Layer]:
    """Every layer of ``model`` by path: "0", "2", and for layers inside others "2.block.0"
    (:func:`fastnn.layers.base.layer_tree`'s paths)."""
    return {path: layer for path, layer, _ in layer_tree(model.layers)}


def _flat_items(items) -> list:
    """``items`` with lists, tuples, ranges and integer arrays opened one level (``model.freeze([0,
    1])`` as ``model.freeze(0, 1)``, as Keras users loop over ``model.layers[:2]``)."""
    flat: list = []
    for item in items:
        if isinstance(item, (list, tuple, range)) or (isinstance(item, np.ndarray) and item.ndim == 1):
            flat.extend(item)
        else:
            flat.append(item)
    return flat


def resolve_layers(model, items) -> list[Layer]:
    """The layers named by ``items``: Layer objects of the model, indices (ints, NumPy's too; negative
    ones count from the last layer, as ``model.layers[-1]``), paths ("0", "2.block.0"), or lists of
    those; ValueError naming the valid paths for anything else."""
    paths = layer_paths(model)
    by_id = {id(layer): layer for layer in paths.values()}
    layers = []
    for item in _flat_items(items):
        if isinstance(item, np.integer):
            item = int(item)
        if isinstance(item, int) and not isinstance(item, bool) and -len(model.layers) <= item < 0:
            item += len(model.layers)  # (Python's negative index of model.layers)
        if isinstance(item, Layer):
            if id(item) not in by_id:
                raise ValueError(
                    f"{item!r} is not a layer of this model; pass one of its layers, an index or a path "
                    f"({', '.join(paths)})"
                )
            layers.append(item)
            continue
        key = str(item) if isinstance(item, int) and not isinstance(item, bool) else item
        if isinstance(key, int) or not isinstance(key, str) or key not in paths:
            raise ValueError(
                f"unknown layer {item!r}: expected a layer of this model, an index or one of the paths "
                f"{', '.join(repr(p) for p in paths)}"
            )
        layers.append(paths[key])
    return layers


def frozen_paths(model) -> list[str]:
    """Paths of the layers with ``trainable = False`` (their sublayers are frozen with them)."""
    return [path for path, layer, _ in layer_tree(model.layers) if not layer.trainable]


def _parameters(model):
    """``(lo, shape, owner, owner's name, frozen)`` of each parameter in ``model.parameter_layout``:
    the layer owning it (:func:`fastnn.layers.base.parameter_owners`) and whether that layer is
    frozen (:attr:`Layer.frozen`'s rule, :func:`fastnn.layers.base.layer_tree`)."""
    frozen = {id(layer) for _, layer, is_frozen in layer_tree(model.layers) if is_frozen}
    owners = [parameter_owners(layer) for layer in model.layers]
    for i, name, lo, shape in model.parameter_layout:
        owner, own_name = owners[i][name]
        yield lo, shape, owner, own_name, id(owner) in frozen


def trainable_ranges(model) -> list[tuple[int, int]] | None:
    """Sorted, merged ``[lo, hi)`` ranges of the flat buffer holding trainable parameters (those of
    layers that are not :attr:`Layer.frozen`); None when every parameter is trainable (the
    optimizer then runs over the whole buffer)."""
    parameters = list(_parameters(model))
    if not any(frozen for *_, frozen in parameters):
        return None
    spans = sorted((lo, lo + _size(shape)) for lo, shape, _, _, frozen in parameters if not frozen)
    merged: list[tuple[int, int]] = []
    for lo, hi in spans:
        if merged and merged[-1][1] == lo:
            merged[-1] = (merged[-1][0], hi)
        elif hi > lo:
            merged.append((lo, hi))
    return merged


def sparse_table(model, frozen_too: bool = False) -> tuple | None:
    """(lo, hi, row width, touched rows buffer) of the model's trainable ``Embedding(sparse=True)``
    table (at any depth: its range of the flat buffer; the rows its backward looked up), for
    ``fastnn.optim.SparseRows``; None: no such layer, or it is frozen (then it gets no update) and
    not ``frozen_too``."""
    for lo, shape, owner, name, frozen in _parameters(model):
        if getattr(owner, "sparse", False) and name == "weight" and (frozen_too or not frozen):
            return lo, lo + _size(shape), int(shape[1]), owner.touched_rows
    return None


def parameter_counts(model) -> tuple[int, int]:
    """(trainable, non-trainable) parameter counts of a built model."""
    ranges = trainable_ranges(model)
    total = int(model.params.size)
    trainable = total if ranges is None else sum(hi - lo for lo, hi in ranges)
    return trainable, total - trainable


def _size(shape) -> int:
    n = 1
    for d in shape:
        n *= int(d)
    return n
