"""The copy machinery of :class:`fastnn.Sequential`: what ``copy.deepcopy``, pickle and joblib of a
model (and the estimators that copy one) rebuild, and how.

A copy is rebuilt from the model's description (its layers' configs, its checkpoint record), not
copied object by object, so two things need care, and this module does both:

- identity of parts: a layer, the optimizer, the loss or a metric object copied (or pickled) in the
  same call as its model, before or after it (``copy.deepcopy([model.layers[0], model])``), is the
  copy's own part, as torch keeps ``copies[0] is copies[1][0]``; a user's attributes that refer to
  the model's parts or to views of its memory refer to the copy's (:func:`anchors`,
  :class:`AnchoredPickler`, :class:`ViewFinder`);
- complete copies or refusals: a user's container layer whose ``get_config`` leaves a child out
  would come back with a child of its defaults (or none) in its place; the copy puts the model's
  child back where it can (the "fills" of :func:`described_children`) and otherwise refuses with a
  TypeError naming the container and the child, never a copy that silently differs. The same
  rebuilt-structure comparison gives :func:`structure_fingerprint` /
  :func:`structure_difference`, which ``Sequential.from_config`` and ``from_snapshot`` use.

``Sequential``'s own methods (``_copy_state``, ``_put_copy_state``, ``__deepcopy__``,
``__reduce_ex__``, ``__getstate__``/``__setstate__``) stay in :mod:`fastnn.model` and call these; this
module knows no Sequential (it sits below the model): what it needs of one it reads from the object
it is given.
"""

from __future__ import annotations

import contextlib
import copy
import copyreg
import hashlib
import json
import pickle
import types

import numpy as np

from . import freezing
from . import losses as losses_mod
from . import metrics as metrics_mod
from ._ownership import PartsPickling, all_in_dict, transplantable
from .layers import layer_from_config, layer_to_config, using_layer_classes
from .layers.base import layer_tree


def anchors(model) -> dict[tuple, object]:
    """The objects of ``model`` that the attributes a copy carries over (the user's tags, a
    subclass's own attributes) refer to as the copy's own, by key: the model itself, each layer by
    path, the layers' parameter views and buffers, the flat buffers, the optimizer, the loss, the
    metrics list and the training state (``self.head = self.layers[-1]`` in a subclass's ``__init__``: the copy's last layer, not a
    detached copy of the original's).

    Parameters
    ----------
    model : Sequential
        The model (or its copy, once rebuilt).

    Returns
    -------
    dict
        ``{key: object}``; the same keys name the same parts in a model and its copy.
    """
    found: dict[tuple, object] = {("model",): model}
    for path, layer in freezing.layer_paths(model).items():
        found[("layer", path)] = layer
        for name, view in layer.parameter_views.items():
            found[("parameter", path, name)] = view
        if layer.output_shape is not None:
            for name, buffer in layer.buffers().items():
                if buffer is not None:
                    found[("buffer", path, name)] = buffer
    for name in ("layers", "params", "grads", "optimizer", "loss", "metrics", "state"):
        if vars(model).get(name) is not None:
            found[(name,)] = vars(model)[name]
    for i, metric in enumerate(vars(model).get("metrics") or ()):
        if isinstance(metric, metrics_mod.Metric):  # (self.f1 = self.metrics[0]: the copy's metric object)
            found[("metric", i)] = metric
    return found


def copy_parts(model) -> dict[tuple, object]:
    """The parts of ``model`` that a copy rebuilds and that a copy of them made earlier in the same
    ``copy.deepcopy`` call or pickle becomes (:func:`adopted`): its layers by path, nested ones too
    (``("layer", "1")``, ``("layer", "1.block.0")``: ``model.layer(path)``'s paths), and, built, its
    optimizer and its loss (an unbuilt model's optimizer and loss are copied as themselves already;
    under a weighted fit's :class:`~fastnn.losses.SampleWeighted` loss, the plain loss it wraps,
    which is the copy's loss).

    Parameters
    ----------
    model : Sequential
        The model being copied or pickled.

    Returns
    -------
    dict
        ``{key: part}`` of the parts that can be transplanted (see ``fastnn._ownership``).
    """
    held = vars(model)
    parts: dict[tuple, object] = {("layer", path): layer for path, layer, _ in layer_tree(held.get("layers") or ())}
    if held.get("built"):
        if held.get("optimizer") is not None:
            parts[("optimizer",)] = held["optimizer"]
        if held.get("loss") is not None:
            parts[("loss",)] = losses_mod.base_of(held["loss"])
    return {key: part for key, part in parts.items() if transplantable(part)}


def part_keys(earlier: dict | None) -> dict[tuple, object]:
    """``earlier`` (:meth:`Sequential._put_copy_state`'s) with a top-level layer's key as a path
    (``("layer", 0)`` of a model pickled by an earlier fastnn is ``("layer", "0")``).

    Parameters
    ----------
    earlier : dict or None
        ``{key: object}`` made earlier in the same copy (None: none).

    Returns
    -------
    dict
        The same objects, by today's keys.
    """
    return {
        (key[0], str(key[1])) if key[0] == "layer" and isinstance(key[1], int) else key: part
        for key, part in (earlier or {}).items()
    }


def adopted(fresh, earlier):
    """``earlier`` made the object ``fresh`` is (its ``__dict__`` moved over; a copy's own part, just
    made, that nothing else refers to yet), where ``earlier`` is a part of the copy made before
    the model: a free copy of the original's part (``copy.deepcopy([model.layers[0], model])``) or
    the bare object that part pickled as inside its model's state. Else ``fresh``.

    Parameters
    ----------
    fresh : object
        The copy's part, just rebuilt.
    earlier : object or None
        The object made of the original's part earlier in the same copy, if any.

    Returns
    -------
    object
        ``earlier`` holding ``fresh``'s state, or ``fresh``.
    """
    if earlier is None or earlier is fresh or type(earlier) is not type(fresh) or not transplantable(earlier):
        return fresh
    if earlier.owner is not None:
        return fresh  # (another live model's part: never taken)
    held = vars(earlier)
    held.clear()
    held.update(vars(fresh))
    return earlier


def _replace_child(parent, old, new) -> int:
    """Make ``parent`` (a container layer) hold ``new`` wherever its attributes hold ``old``: as an
    attribute, or an item at any depth of the lists, tuples and dicts they hold (Residual's
    ``block``, TimeDistributed's ``layer``, a Transformer block's ``(name, layer)`` pairs of
    ``parts``, a user's container's ``{name: layer}`` or list of lists). The number of places
    changed (0: ``parent`` holds it some other way, in an object of its own; nothing changed)."""

    def swapped(value, depth: int) -> tuple[object, int]:
        # (value with ``old`` replaced: a list or dict in place, a tuple anew; the places changed)
        if value is old:
            return new, 1
        kind = type(value)
        if depth > _HOLDING_DEPTH or kind not in (list, tuple, dict):
            return value, 0
        items = list(value.items()) if kind is dict else list(enumerate(value))
        count, out = 0, []
        for key, item in items:
            item, changed = swapped(item, depth + 1)
            out.append(item)
            if changed and kind is not tuple:
                value[key] = item
            count += changed
        if count and kind is tuple:
            return tuple(out), count
        return value, count

    count = 0
    held = vars(parent)
    for name, value in list(held.items()):
        value, changed = swapped(value, 0)
        if changed:
            held[name], count = value, count + changed
    return count


#: how deep in lists, tuples and dicts :func:`_replace_child` looks for a child (a cycle stops there)
_HOLDING_DEPTH = 8


def adopt_children(layer, path: str, earlier: dict[tuple, object]) -> None:
    """The layers inside ``layer`` (at ``path`` in its model, a copy being made), at any depth,
    that a copy of them made earlier in the same ``copy.deepcopy`` call or pickle becomes
    (``earlier``, by ``("layer", path)``): each takes the fresh child's state and its place in the
    container. A child the container holds in a way :func:`_replace_child` does not find is left
    as it is (the earlier object too: see :func:`fill_unadopted`).

    Parameters
    ----------
    layer : Layer
        A layer of the copy, just rebuilt.
    path : str
        Its path in the model (``"1"``, ``"1.block.0"``).
    earlier : dict
        ``{("layer", path): object}`` made earlier in the same copy.
    """
    for name, child in layer.sublayers():
        child_path = f"{path}.{name}"
        part = earlier.get(("layer", child_path))
        if part is not None and part is not child:
            kept = dict(vars(part)) if transplantable(part) else None
            if adopted(child, part) is part:
                if _replace_child(layer, child, part):
                    child = part
                else:  # (not held where it can be swapped: the earlier object as it was)
                    vars(part).clear()
                    vars(part).update(kept or {})
        adopt_children(child, child_path, earlier)


def fill_unadopted(model, earlier: dict[tuple, object]) -> None:
    """A part pickled inside its model as a bare object (:class:`~fastnn._ownership.PartsPickling`)
    that the copy could not adopt (a part the rebuilt model lacks, or holds in a way that cannot
    be swapped) becomes a free copy of the copy's part (its own memory, no owner), never an empty
    object nor one sharing the copy's arrays; an unknown one raises.

    Parameters
    ----------
    model : Sequential
        The copy, rebuilt.
    earlier : dict
        ``{key: object}`` made earlier in the same copy or pickle (no metrics).

    Raises
    ------
    pickle.UnpicklingError
        For a part the rebuilt model lacks.
    """
    mine = copy_parts(model)
    for key, part in earlier.items():
        if vars(part) or mine.get(key) is part:
            continue
        source = mine.get(key)
        if source is None or type(source) is not type(part):
            raise pickle.UnpicklingError(
                f"the pickled model holds a part {key!r} ({type(part).__name__}) that the rebuilt model "
                f"lacks: a container layer's get_config/from_config does not recreate it (describe every "
                f"child of sublayers() in get_config), or it was pickled by another version of fastnn "
                f"(pickle it again with this one)"
            )
        vars(part).update(vars(copy.deepcopy(source)))


class _Unfillable(Exception):
    """A child's place in a rebuilt container that a copy cannot give the child it describes."""


def _layer_nodes(roots) -> dict[str, tuple]:
    """``{path: (layer, its parent's path or None, its name in the parent or None)}`` of ``roots``
    (``[(path, layer)]``) and, depth first, of the layers inside them (:meth:`Layer.sublayers`;
    ``model.layer(path)``'s paths)."""
    nodes: dict[str, tuple] = {}

    def walk(path: str, layer, parent: str | None, name: str | None) -> None:
        nodes[path] = (layer, parent, name)
        for child_name, child in layer.sublayers():
            walk(f"{path}.{child_name}", child, path, child_name)

    for path, layer in roots:
        walk(path, layer, None, None)
    return nodes


#: the config values :func:`_config_differs` compares (others, a function or an object of the
#: user's, it takes as equal: it never refuses what it cannot tell apart)
_PLAIN_VALUES = (str, bytes, bool, int, float, complex, type(None), np.generic, np.dtype, type)


def _config_differs(a, b, depth: int = 0) -> bool:
    """Whether two layer configs (``get_config()``'s) surely differ: dicts, lists and tuples item
    by item, arrays by value, numbers, strings and classes by equality (nan equals nan)."""
    if a is b or depth > _HOLDING_DEPTH:
        return False
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() != b.keys() or any(_config_differs(a[k], b[k], depth + 1) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) != len(b) or any(_config_differs(x, y, depth + 1) for x, y in zip(a, b))
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        try:
            return not np.array_equal(a, b, equal_nan=True)
        except TypeError:  # (an array of objects or strings: no nan)
            return not np.array_equal(a, b)
    if isinstance(a, _PLAIN_VALUES) and isinstance(b, _PLAIN_VALUES):
        with contextlib.suppress(TypeError, ValueError):
            if a != a and b != b:  # noqa: PLR0124  (nan)
                return False
            return bool(a != b)
    return False


def put_children(layer, path: str, fills: dict[str, dict]) -> None:
    """Give ``layer`` (a layer just rebuilt at ``path`` from its description) the children that
    ``fills`` describes (``{path: layer_to_config entry}``, in the order found: parents first), in
    the place of those its container rebuilt in their stead (:func:`_replace_child`).

    Parameters
    ----------
    layer : Layer
        The layer just rebuilt.
    path : str
        Its path in the model.
    fills : dict
        ``{path: layer_to_config entry}`` of :func:`described_children`.

    Raises
    ------
    _Unfillable
        Where the rebuilt container holds the child where it cannot be replaced.
    """
    for where, entry in fills.items():
        if not where.startswith(path + "."):
            continue
        nodes = _layer_nodes([(path, layer)])
        child, parent_path, name = nodes.get(where, (None, None, None))
        if parent_path is None:
            raise _Unfillable(where)
        parent = nodes[parent_path][0]
        replacement = layer_from_config(entry)
        try:
            swapped = _replace_child(parent, child, replacement)
        except TypeError:  # (no __dict__: a container of __slots__)
            swapped = 0
        if not swapped or dict(parent.sublayers()).get(name) is not replacement:
            raise _Unfillable(where)


def _rebuilt_nodes(model, entries: list, chosen: list[int], fills: dict, classes: dict) -> dict[str, tuple]:
    """:func:`_layer_nodes` of the layers ``chosen`` (indices) that a copy of ``model`` rebuilds
    from ``entries`` (``layer_to_config(layer, by_class=True)``'s) and ``fills``, built as the
    model's (a build may make children: Residual's projection), each from its own input shape (a
    child of another output width shows inside that layer); no model, no memory."""
    held = vars(model)
    nodes = {}
    for i in chosen:
        with using_layer_classes(classes):
            layer = layer_from_config(entries[i])
            put_children(layer, str(i), fills)
        if held.get("built"):
            own = held["layers"][i]
            shape = vars(own).get("input_shape") or (held["layers"][i - 1].output_shape if i else held["input_shape"])
            layer.build(shape, held["dtype"])
        nodes.update(_layer_nodes([(str(i), layer)]))
    return nodes


def _holds_users_container(layer) -> bool:
    """Whether ``layer`` is, or holds at any depth, a container layer of a class not fastnn's own
    (fastnn's containers describe every child in their configs: only a user's may not)."""
    nodes = _layer_nodes([("", layer)])
    containers = {parent for _, parent, _ in nodes.values() if parent is not None}
    return any(type(nodes[path][0]).__module__.partition(".")[0] != "fastnn" for path in containers)


def _named_classes(value, depth: int = 0) -> set[str]:
    """The layer class names (not classes) in layer descriptions: a user's container's get_config
    that names its children's classes itself, not through ``layer_to_config``."""
    names: set[str] = set()
    if depth > _HOLDING_DEPTH:
        return names
    if isinstance(value, dict):
        if isinstance(value.get("class"), str) and isinstance(value.get("config", {}), dict):
            names.add(value["class"])
        for item in value.values():
            names |= _named_classes(item, depth + 1)
    elif isinstance(value, (list, tuple)):
        for item in value:
            names |= _named_classes(item, depth + 1)
    return names


def _first_difference(mine: dict, theirs: dict, fills: dict) -> tuple | None:
    """Where the rebuilt layers ``theirs`` differ from the model's ``mine`` (:func:`_layer_nodes`
    both): ``(path, the differing child's node, what the rebuilt container holds there, whether
    that place can take the child)``; None where they agree (a child's class, and its config
    where its container rebuilt it: a child a copy puts back, ``fills``, is rebuilt from its own
    config as a top-level layer is)."""
    for path, (layer, parent, name) in mine.items():
        if path not in theirs:
            return path, (layer, parent, name), "without it", False
        other = theirs[path][0]
        if type(other) is not type(layer):
            return path, (layer, parent, name), f"with a {type(other).__name__} in its place", parent is not None
        if parent is None:
            continue
        try:
            differs = path not in fills and _config_differs(layer.get_config(), other.get_config())
        except Exception:  # (a config that cannot be read now: not compared)
            differs = False
        if differs or _config_differs(getattr(layer, "output_shape", None), getattr(other, "output_shape", None)):
            return path, (layer, parent, name), f"as another {type(other).__name__} (of its defaults)", True
    for path, (layer, parent, name) in theirs.items():
        if path not in mine:
            return path, (layer, parent, name), None, False
    return None


def _undescribed(what: str, nodes: dict, found: tuple, why: str = "") -> str:
    """The message refusing a copy of a model whose user container does not describe a child."""
    path, (child, parent, name), outcome, _ = found
    container = type(nodes[parent][0]).__name__ if parent in nodes else "container"
    kind = type(child).__name__
    if outcome is None:
        problem = (
            f"its layer {container} (at {parent!r}) rebuilt from {container}.get_config() holds a child "
            f"{name!r} ({kind}) that the model's own {container} does not hold"
        )
    else:
        problem = (
            f"its layer {container} (at {parent!r}) holds the child {name!r} ({kind}, at {path!r}) that "
            f"{container}.get_config() does not describe: {container}.from_config rebuilds the "
            f"{container} {outcome}{why}"
        )
    result = "copy" if what.startswith("copy") else "model loaded from the file"
    return (
        f"cannot {what} this model: {problem}, so the {result} would silently differ from it; "
        f"describe every child of {container}.sublayers() in {container}.get_config() "
        f"(layer_to_config(child)) and rebuild each in from_config (layer_from_config(config[...]))"
    )


def described_children(model, entries: list, what: str, fillable: bool = True) -> tuple[dict, dict]:
    """Check that the layers a copy of ``model`` rebuilds from ``entries`` (its layers'
    ``layer_to_config(layer, by_class=True)``) are the model's, at any depth: the same children
    (:meth:`Layer.sublayers`) of the same classes and configs. A user's container whose
    ``get_config`` leaves a child out, rebuilt with a child of its defaults in that place, gets
    the model's child put back there (``fillable``: a copy carries these "fills", ``{path: entry}``;
    a file cannot); a child it rebuilds without, or one that cannot be put back, is refused with
    a TypeError naming the container and the child: a copy is complete or is not made. Returns
    ``(fills, classes)``: ``classes``, the model's layer classes by the names a container's
    ``get_config`` gives them itself (:func:`~fastnn.layers.using_layer_classes`).

    Parameters
    ----------
    model : Sequential
        The model to copy or save.
    entries : list of dict
        ``layer_to_config(layer, by_class=True)`` of each of its layers.
    what : str
        What is refused, for the message (``"copy or pickle"``, ``"save"``).
    fillable : bool, default True
        Whether a left-out child may be put back (a copy) or not (a file).

    Returns
    -------
    tuple of dict
        ``(fills, classes)``.

    Raises
    ------
    TypeError
        For a child the container's ``get_config`` leaves out that cannot be put back.
    """
    layers = vars(model).get("layers") or ()
    named = _named_classes(entries)
    by_name: dict[str, set] = {}
    for _, layer, _ in layer_tree(layers) if named else ():
        by_name.setdefault(type(layer).__name__, set()).add(type(layer))
    classes = {name: next(iter(kinds)) for name, kinds in by_name.items() if name in named and len(kinds) == 1}
    chosen = [i for i, layer in enumerate(layers) if _holds_users_container(layer)]
    if not chosen:
        return {}, classes
    mine = _layer_nodes([(str(i), layers[i]) for i in chosen])
    fills: dict[str, dict] = {}
    for _ in range(len(mine) + 1):
        try:
            theirs = _rebuilt_nodes(model, entries, chosen, fills, classes)
        except _Unfillable as exc:
            stuck = (exc.args[0], mine[exc.args[0]], "with another child in its place", False)
            raise TypeError(
                _undescribed(what, mine, stuck, ", which it holds where a copy cannot put the model's child back")
            ) from None
        except Exception as exc:
            if not fills:
                return {}, classes  # (the copy's own rebuilding raises its error)
            last = next(reversed(fills))
            stuck = (last, mine[last], "with another child in its place", False)
            raise TypeError(
                _undescribed(what, mine, stuck, f", and the model's child does not build there ({exc})")
            ) from exc
        found = _first_difference(mine, theirs, fills)
        if found is None:
            return fills, classes
        path, _, _, can_fill = found
        if not (fillable and can_fill and path not in fills):
            nodes = mine if found[2] is not None else theirs
            if not fillable and can_fill:
                found = (*found[:2], f"{found[2]} (a file holds descriptions only)", can_fill)
            raise TypeError(_undescribed(what, nodes, found))
        fills[path] = layer_to_config(mine[path][0], by_class=True)
    return fills, classes


def adopt_metrics(model, earlier: dict[tuple, object]) -> None:
    """The copy's metric objects (``model.metrics``: fresh copies of the original's) that the objects
    made of them earlier in the same copy become (``earlier``'s ``("metric", i)``: a free copy made
    before the model, or the metric object the model's pickled state held): ``copies[1] is
    copies[0].metrics[0]`` for ``copy.deepcopy([model, model.metrics[0]])`` in either order.

    Parameters
    ----------
    model : Sequential
        The copy, rebuilt.
    earlier : dict
        ``{("metric", i): object}`` made earlier in the same copy.
    """
    metrics = vars(model).get("metrics")
    if not metrics:
        return
    adopted = list(metrics)
    for i, metric in enumerate(metrics):
        part = earlier.get(("metric", i))
        if (
            part is None
            or part is metric
            or type(part) is not type(metric)
            or not isinstance(metric, metrics_mod.Metric)
            or not (all_in_dict(part) and all_in_dict(metric))
        ):
            continue
        held = vars(part)
        held.clear()
        held.update(vars(metric))
        adopted[i] = part
    vars(model)["metrics"] = type(metrics)(adopted) if isinstance(metrics, (list, tuple)) else metrics


def state_metrics(state: dict) -> list:
    """The metric objects a copy's state (:meth:`Sequential._copy_state`) holds.

    Parameters
    ----------
    state : dict
        A copy's state.

    Returns
    -------
    list
        Its metric objects (or configs).
    """
    if "unbuilt" in state:
        held = (state["unbuilt"].get("compiled") or {}).get("metrics")
    else:
        held = state["record"].get("metrics")
    return list(held or ())


def _memory_roots(anchors: dict[tuple, object]) -> list[tuple[tuple, np.ndarray]]:
    """The NumPy arrays among ``anchors`` (the flat parameter and gradient buffers, the layers'
    buffers and parameter views), largest first: the memory a view held by a copied attribute
    (``self.row = self.layers[0].weight[0]``, ``self.params[-10:]``) is rebuilt on in the copy."""
    arrays = [(key, obj) for key, obj in anchors.items() if type(obj) is np.ndarray and obj.flags.c_contiguous]
    return sorted(arrays, key=lambda item: -item[1].nbytes)


def _byte_bounds(array: np.ndarray) -> tuple[int, int]:
    """[low, high) addresses of the bytes ``array`` (a non-empty one) reaches (NumPy's byte_bounds,
    which moved between NumPy 1 and 2)."""
    low = high = array.__array_interface__["data"][0]
    for n, stride in zip(array.shape, array.strides):
        if stride < 0:
            low += (n - 1) * stride
        else:
            high += (n - 1) * stride
    return low, high + array.itemsize


def _view_key(obj, roots: list[tuple[tuple, np.ndarray]]) -> tuple | None:
    """``("view", root key, offset, shape, strides, dtype, writeable)`` when ``obj`` is a NumPy
    view inside the memory of one of ``roots`` (``_memory_roots``), else None."""
    if not isinstance(obj, np.ndarray) or obj.base is None or obj.size == 0:
        return None
    lo, hi = _byte_bounds(obj)
    for key, root in roots:
        start, stop = _byte_bounds(root)
        if start <= lo and hi <= stop:
            offset = obj.__array_interface__["data"][0] - start
            return ("view", key, offset, obj.shape, obj.strides, obj.dtype.str, obj.flags.writeable)
    return None


def view_from_key(pid: tuple, anchors: dict[tuple, object]) -> np.ndarray:
    """The view :func:`_view_key` described, on the memory of ``anchors``' array of its root key
    (``pid`` may go on: the number :class:`AnchoredPickler` gave the view, or an ``id()`` where an
    older fastnn pickled it).

    Parameters
    ----------
    pid : tuple
        The view's key (:func:`_view_key`'s, perhaps with a number after it).
    anchors : dict
        The copy's :func:`anchors`.

    Returns
    -------
    numpy.ndarray
        The view on the copy's memory.
    """
    _, key, offset, shape, strides, dtype, writeable = pid[:7]
    root = anchors[tuple(key)]
    if type(root) is not np.ndarray:
        raise TypeError(f"the copy's part {key!r} is no NumPy array")
    view = np.ndarray(tuple(shape), np.dtype(dtype), buffer=root, offset=offset, strides=tuple(strides))
    view.flags.writeable = bool(writeable) and root.flags.writeable
    return view


class ViewFinder(pickle.Pickler):
    """Walks what a deep copy of a model carries over as pickling would (the same ``__reduce_ex__``
    and ``__getstate__`` that ``copy.deepcopy`` follows), writing nothing, and notes the views of the
    model's memory it holds (``_view_key``): ``Sequential.__deepcopy__`` gives each the copy's
    memory. The model's own objects are not entered; arrays and what does not pickle are skipped.

    Parameters
    ----------
    anchors : dict
        The model's :func:`anchors`.
    """

    def __init__(self, anchors: dict[tuple, object]):
        super().__init__(_NullFile(), pickle.DEFAULT_PROTOCOL)
        self.anchored = {id(obj) for obj in anchors.values()}
        self.roots = _memory_roots(anchors)
        self.views: dict[int, tuple[np.ndarray, tuple]] = {}

    def persistent_id(self, obj):
        return "anchor" if id(obj) in self.anchored else None

    def reducer_override(self, obj):
        if isinstance(obj, PartsPickling):  # (a model's marks: they act only where really pickled)
            return (int, ())
        if isinstance(obj, np.ndarray):
            key = _view_key(obj, self.roots) if type(obj) is np.ndarray else None
            if key is not None:
                self.views[id(obj)] = (obj, key)
            return (int, ())  # (its bytes are not needed)
        if obj is int:  # (the stand-in's own callable)
            return NotImplemented
        if isinstance(obj, (type, types.FunctionType, types.BuiltinFunctionType, types.ModuleType)):
            return (int, ())  # (shared by a deep copy, not entered)
        try:
            reducer = copyreg.dispatch_table.get(type(obj))
            reduced = reducer(obj) if reducer is not None else obj.__reduce_ex__(pickle.DEFAULT_PROTOCOL)
        except Exception:  # (a lock, a file: the deep copy shares or refuses it itself)
            return (int, ())
        return reduced if isinstance(reduced, tuple) else (int, ())


class _NullFile:
    """A file that forgets what is written to it."""

    def write(self, data) -> int:
        return len(data)


class AnchoredPickler(pickle.Pickler):
    """Pickles the attributes a copy of a model carries over, the model's own objects (``anchors``)
    as their keys, and each view of the model's memory as its place there and its number in this
    pickling (one object per view; numbers, not ``id()``, so that equal models pickle to equal
    bytes).

    Parameters
    ----------
    file : file-like
        Where the pickle goes.
    anchors : dict
        The model's :func:`anchors`.
    """

    def __init__(self, file, anchors: dict[tuple, object]):
        super().__init__(file, pickle.DEFAULT_PROTOCOL)
        self.keys = {id(obj): key for key, obj in anchors.items()}
        self.roots = _memory_roots(anchors)
        self.view_numbers: dict[int, int] = {}  # id(view) -> its number (the views stay alive meanwhile)

    def persistent_id(self, obj):
        key = self.keys.get(id(obj))
        if key is None and type(obj) is np.ndarray:  # a view of the model's memory: the copy's memory
            key = _view_key(obj, self.roots)
            if key is not None:
                key = (*key, self.view_numbers.setdefault(id(obj), len(self.view_numbers)))
        return key


class AnchoredUnpickler(pickle.Unpickler):
    """Reads what :class:`AnchoredPickler` wrote, each key as the new model's object.

    Parameters
    ----------
    file : file-like
        The pickle.
    anchors : dict
        The new model's :func:`anchors`.
    """

    def __init__(self, file, anchors: dict[tuple, object]):
        super().__init__(file)
        self.anchors = anchors
        self.views: dict[tuple, np.ndarray] = {}

    def persistent_load(self, pid):
        try:
            if pid[0] == "view":  # (one object per view pickled: the same view again is that object)
                return self.views.setdefault(tuple(pid), view_from_key(pid, self.anchors))
            return self.anchors[tuple(pid)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"the pickled model's attributes refer to its part {pid!r}, which the rebuilt model lacks"
            ) from None


# -- the structure a config describes, checked by from_config / from_snapshot ----------------------
#: how deep in a config :func:`structure_fingerprint`'s digests look (nested containers' configs
#: nest a few levels each; a cycle stops here)
_CONFIG_DEPTH = 64


def _canonical(value, depth: int = 0):
    """``value`` (a layer config, or a value in one) as plain JSON values that stay the same through
    a JSON file: tuples as lists, NumPy scalars as Python's, arrays by dtype, shape and bytes, and
    any other object by its class (a digest never tells apart what JSON cannot hold)."""
    if depth > _CONFIG_DEPTH:
        return "<deep>"
    if isinstance(value, dict):
        return {str(key): _canonical(item, depth + 1) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_canonical(item, depth + 1) for item in value]
    if isinstance(value, np.ndarray):
        digest = hashlib.sha256(np.ascontiguousarray(value).tobytes()).hexdigest()[:16]
        return f"<array {value.dtype.str} {list(value.shape)} {digest}>"
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and value != value:  # noqa: PLR0124  (nan)
        return "<nan>"
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    if isinstance(value, type):
        return f"<class {value.__module__}.{value.__qualname__}>"
    return f"<{type(value).__module__}.{type(value).__qualname__}>"


def _digest(value) -> str:
    """A short digest of a config (:func:`_canonical`)."""
    text = json.dumps(_canonical(value), sort_keys=True, allow_nan=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _parameter_shapes(layer) -> dict[str, list[int]] | None:
    """``{name: shape}`` of a built layer's parameters (a container's: its children's too); None
    where it cannot tell."""
    try:
        return {spec.name: [int(n) for n in spec.shape] for spec in layer.parameter_specs()}
    except Exception:  # (a layer that cannot list them now: not compared)
        return None


def _node_record(layer, parent: str | None, name: str | None, built: bool) -> dict:
    """What :func:`structure_fingerprint` records of one layer of the tree (its parameter shapes
    where the model is ``built``)."""
    node: dict = {"class": type(layer).__name__, "parent": parent, "name": name}
    if built:
        node["params"] = _parameter_shapes(layer)
    if parent is not None:  # (a top-level layer's config is its entry's)
        with contextlib.suppress(Exception):  # (a config that cannot be read now: not compared)
            node["config"] = _digest(layer.get_config())
    return node


def structure_fingerprint(layers, entries: list, input_shape, built: bool) -> dict | None:
    """The structure of the layers that hold a user's container layer at any depth (fastnn's own
    containers describe every child in their configs), for a model's ``get_config``.

    A user's container whose ``get_config`` leaves a child out would be rebuilt by
    ``from_config`` without it, or with a child of its defaults in its place; this record lets
    :func:`structure_difference` tell.

    Parameters
    ----------
    layers : list of Layer
        The model's layers.
    entries : list of dict
        Their descriptions in the config (``layer_to_config(layer)`` of each).
    input_shape : tuple of int or None
        The model's input shape (the parameter shapes follow from it).
    built : bool
        Whether the model is built (its layers' parameter shapes are recorded then).

    Returns
    -------
    dict or None
        JSON-able: ``{"input_shape", "layers": {index: {"entry": digest, "tree": {path: node}}}}``
        where a node holds its layer's class name, parent path, name in its parent, parameter
        shapes and a digest of its config; None when no layer holds a user's container.
    """
    chosen = [i for i, layer in enumerate(layers) if _holds_users_container(layer)]
    if not chosen:
        return None
    recorded = {}
    for i in chosen:
        nodes = _layer_nodes([(str(i), layers[i])])
        tree = {path: _node_record(layer, parent, name, built) for path, (layer, parent, name) in nodes.items()}
        recorded[str(i)] = {"entry": _digest(entries[i]), "tree": tree}
    return {"input_shape": None if input_shape is None else [int(n) for n in input_shape], "layers": recorded}


def _node_difference(node: dict, layer, built: bool, kind: str) -> str | None:
    """How ``layer`` (rebuilt) differs from the recorded ``node`` in ``kind``: ``"class"``,
    ``"config"`` (a child's; a top-level layer's is its entry) or ``"params"`` (parameter shapes,
    where ``built``); None where it does not."""
    if kind == "class":
        return None if type(layer).__name__ == node.get("class") else f"with a {type(layer).__name__} in its place"
    if kind == "params":
        params, recorded = _parameter_shapes(layer), node.get("params")
        if built and isinstance(recorded, dict) and params is not None and params != recorded:
            return f"as another {type(layer).__name__} (of its defaults: parameters {params}, not {recorded})"
        return None
    if node.get("parent") is not None and "config" in node:
        try:
            config = _digest(layer.get_config())
        except Exception:  # (a config that cannot be read now: not compared)
            return None
        if config != node["config"]:
            return f"as another {type(layer).__name__} (of its defaults: another config)"
    return None


def structure_difference(
    structure, entries: list, input_shape, layers, built: bool, unfinished: bool = False
) -> str | None:
    """Where layers rebuilt from a config differ from the structure the config recorded
    (:func:`structure_fingerprint`), as the message of the ValueError ``from_config`` raises.

    Only what the config cannot explain is compared: a layer whose entry was edited since, or a
    config whose input shape was, is not checked (the user changed it on purpose).

    Parameters
    ----------
    structure : dict or None
        The config's ``"structure"`` record; None or malformed: nothing is checked.
    entries : list of dict
        The config's layer entries, as given to ``from_config``.
    input_shape : tuple of int or None
        The input shape the config gives.
    layers : list of Layer
        The layers rebuilt from ``entries``.
    built : bool
        Whether their model is built (parameter shapes are compared then).
    unfinished : bool, default False
        The layers' model could not be made (a child of another width does not chain): only the
        children both trees hold are compared (a build would have made some: Residual's projection).

    Returns
    -------
    str or None
        The message naming the container, the child and ``get_config``; None when they agree.
    """
    if not isinstance(structure, dict) or not isinstance(structure.get("layers"), dict):
        return None
    shape = None if input_shape is None else [int(n) for n in input_shape]
    if structure.get("input_shape") != shape:
        return None
    for index, recorded in structure["layers"].items():
        if not (isinstance(recorded, dict) and isinstance(recorded.get("tree"), dict) and str(index).isdigit()):
            continue
        i = int(index)
        if i >= len(layers) or i >= len(entries) or _digest(entries[i]) != recorded.get("entry"):
            continue
        mine, theirs = recorded["tree"], _layer_nodes([(str(i), layers[i])])
        nodes = [(path, node) for path, node in mine.items() if isinstance(node, dict)]
        for path, node in nodes:  # (parents first: a missing container, not its children)
            if path not in theirs:
                if unfinished:
                    continue
                return _unrebuilt(mine, path, node, "without it")
            outcome = _node_difference(node, theirs[path][0], built, "class")
            if outcome is not None:
                return _unrebuilt(mine, path, node, outcome)
        # configs parents first (a container's config holds only what it describes), parameter
        # shapes children first (a container's are its children's: the child that differs is named)
        for kind, order in (("config", nodes), ("params", nodes[::-1])):
            for path, node in order:
                outcome = _node_difference(node, theirs[path][0], built, kind) if path in theirs else None
                if outcome is not None:
                    return _unrebuilt(mine, path, node, outcome)
        for path, (layer, parent, name) in theirs.items():
            if path not in mine:
                container = type(theirs[parent][0]).__name__ if parent in theirs else "container"
                return _rebuilt_message(
                    container,
                    f"its layer {container} (at {parent!r}), rebuilt from {container}.get_config(), holds a "
                    f"child {name!r} ({type(layer).__name__}, at {path!r}) that the model the config was "
                    f"taken from does not hold",
                )
    return None


def _unrebuilt(mine: dict, path: str, node: dict, outcome: str) -> str:
    """The message of a child the model held (``node`` at ``path``) that the rebuilt container
    lacks or holds another way (``outcome``)."""
    parent = node.get("parent")
    if parent is None:
        return _rebuilt_message(
            str(node.get("class")), f"its layer at {path!r} ({node.get('class')}) rebuilds {outcome}"
        )
    container = str((mine.get(parent) or {}).get("class") or "container")
    problem = (
        f"its layer {container} (at {parent!r}) held the child {node.get('name')!r} ({node.get('class')}, at "
        f"{path!r}) that {container}.get_config() does not describe: {container}.from_config rebuilds the "
        f"{container} {outcome}"
    )
    return _rebuilt_message(container, problem)


def _rebuilt_message(container: str, problem: str) -> str:
    return (
        f"cannot rebuild the model this config describes: {problem}, so the rebuilt model would silently "
        f"differ from the one the config was taken from; describe every child of {container}.sublayers() "
        f"in {container}.get_config() (layer_to_config(child)) and rebuild each in from_config "
        f"(layer_from_config(config[...])). (A config edited on purpose: delete its 'structure' entry to "
        f"rebuild it unchecked.)"
    )
