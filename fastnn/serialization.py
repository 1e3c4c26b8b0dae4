"""Checkpoint files: a model's snapshot record (:meth:`fastnn.Sequential.snapshot`: architecture,
weights, buffers, optimizer and training state) as one safetensors file, and back. Works on plain
records only (it imports nothing above it); ``fastnn.load`` rebuilds the model. Nothing is ever
unpickled."""

from __future__ import annotations

import json
import os
import warnings

import numpy as np

from .io import CorruptFileError, read_safetensors, write_safetensors

FORMAT = "fastnn"
FORMAT_VERSION = 2


def _split_state(state: dict) -> tuple[dict, dict]:
    arrays = {k: v for k, v in state.items() if isinstance(v, np.ndarray)}
    scalars = {k: (v.item() if isinstance(v, np.generic) else v) for k, v in state.items() if k not in arrays}
    return arrays, scalars


def save_model(model, path, *, model_class: str | None = None) -> None:
    """Write ``model.snapshot()`` (the checkpoint record) to ``path`` as one safetensors file;
    ``model_class``: the import path of a user's subclass of Sequential the model is of, kept in the
    file so that ``fastnn.load`` can say what it does not rebuild."""
    record = model.snapshot()
    _warn_unregistered(model)
    _warn_unregistered_layers(model, record["config"])
    tensors, meta = record_to_file(record)
    if model_class is not None:
        meta["model_class"] = model_class
    write_safetensors(path, tensors, meta)


def _warn_unregistered(model) -> None:
    """Warn when the loss or optimizer is a user's class not registered under its ``name``: a file
    holds the name only, so fnn.load would rebuild another class (a subclass inherits its base's
    name) or refuse the file."""
    from .losses import LOSSES, base_of
    from .optim import OPTIMIZERS

    for kind, obj, table, decorator in (
        ("loss", base_of(model.loss), LOSSES, "@fastnn.register_loss"),  # (a weighted fit's: its plain loss)
        ("optimizer", model.optimizer, OPTIMIZERS, "@fastnn.optim.register_optimizer"),
    ):
        registered = None if obj is None else table.get(obj.name)
        if obj is not None and registered is not type(obj):
            outcome = "refuse the file" if registered is None else f"rebuild {registered.__name__} in its place"
            warnings.warn(
                f"save: the {kind} {type(obj).__name__} is not registered under its name {obj.name!r}, the "
                f"name the file holds: fnn.load would {outcome}; give the class its own name and "
                f"decorate it with {decorator}",
                UserWarning,
                stacklevel=4,
            )


def _named_classes(entry) -> set[str]:
    """The layer class names a model configuration holds (its layers' and, at any depth, those of
    the layer descriptions inside a container's config: Residual's block, TimeDistributed's layer)."""
    names: set[str] = set()
    if isinstance(entry, dict):
        if isinstance(entry.get("class"), str) and isinstance(entry.get("config", {}), dict):
            names.add(entry["class"])
        for value in entry.values():
            names |= _named_classes(value)
    elif isinstance(entry, (list, tuple)):
        for value in entry:
            names |= _named_classes(value)
    return names


def _warn_unregistered_layers(model, config: dict) -> None:
    """Warn, once per class, when a layer the file names (at the top or inside a container, at any
    depth) is a user's class not registered under its name: fnn.load would refuse the file, or
    rebuild another class of that name (a subclass of Dense named Dense)."""
    from .layers import LAYERS
    from .layers.base import layer_tree

    named = _named_classes(config.get("layers", []))
    seen: dict[type, list[str]] = {}
    for path, layer, _ in layer_tree(model.layers):
        cls = type(layer)
        if cls.__name__ in named and LAYERS.get(cls.__name__) is not cls:
            seen.setdefault(cls, []).append(path)
    for cls, paths in seen.items():
        registered = LAYERS.get(cls.__name__)
        if registered is None:
            outcome, fix = "refuse the file (Unknown layer class)", "decorate it with @fastnn.register_layer"
        else:
            outcome = f"rebuild {registered.__module__}.{registered.__qualname__} in its place"
            fix = "give the class its own name and decorate it with @fastnn.register_layer"
        warnings.warn(
            f"save: the layer class {cls.__name__} (at {', '.join(paths)}) is not registered under its "
            f"name {cls.__name__!r}, the name the file holds: fnn.load would {outcome}; {fix} (and import "
            f"it before fnn.load); copy.deepcopy and pickle keep the class without registering it",
            UserWarning,
            stacklevel=4,
        )


def _savable_metrics(configs: list) -> list[dict]:
    """The compiled metrics' configs that a file can hold: a metric that is a Python function is
    dropped with a warning (a file never holds code; compile it again after loading)."""
    for fn in (c for c in configs if not isinstance(c, dict)):
        warnings.warn(
            f"save: metric {getattr(fn, '__name__', fn)!r} is a Python function and is not saved; after "
            f"fnn.load, compile again with metrics=[...] to get it back",
            UserWarning,
            stacklevel=4,
        )
    return [c for c in configs if isinstance(c, dict)]


def record_to_file(record: dict) -> tuple[dict, dict]:
    """(tensors, string metadata) of a checkpoint record (:meth:`fastnn.Sequential.snapshot`)."""
    from . import __version__

    tensors = {f"param.{name}": value for name, value in record["params"].items()}
    tensors.update({f"buffer.{name}": value for name, value in record["buffers"].items()})
    meta = {
        "format": FORMAT,
        "format_version": str(FORMAT_VERSION),
        "fastnn_version": __version__,
        "architecture": json.dumps(record["config"]),
    }
    if record.get("loss") is not None:
        meta["loss"] = json.dumps(record["loss"])
    if record.get("metrics"):
        meta["metrics"] = json.dumps(_savable_metrics(record["metrics"]))
    if record.get("optimizer") is not None:
        arrays, scalars = _split_state(record["optimizer"]["state"])
        tensors.update({f"optimizer.{k}": v for k, v in arrays.items()})
        meta["optimizer"] = json.dumps({"config": record["optimizer"]["config"], "state": scalars})
    training = dict(record["training"])
    callbacks = {}
    for key, entry in training.pop("callbacks", {}).items():
        tensors.update({f"callback.{key}.{k}": v for k, v in entry.get("arrays", {}).items()})
        callbacks[key] = {"class": entry["class"], "state": entry["state"], "arrays": sorted(entry.get("arrays", {}))}
    cursor_metrics = {}
    for name, entry in (training.pop("cursor_metrics", None) or {}).items():  # the epoch's metric state
        arrays, values = _split_state(entry)  # arrays as tensors, the rest in JSON
        tensors.update({f"cursor_metric.{name}.{k}": v for k, v in arrays.items()})
        cursor_metrics[name] = {"values": values, "arrays": sorted(arrays)}
    if cursor_metrics:
        meta["cursor_metrics"] = json.dumps(cursor_metrics)
    training["decay_bias_and_norm"] = record.get("decay_bias_and_norm", False)
    for key in ("frozen", "training_mode"):  # the frozen layers' paths, train/eval mode
        if key in record:
            training[key] = record[key]
    meta["training"] = json.dumps(training)
    meta["callbacks"] = json.dumps(callbacks)
    return tensors, meta


def record_from_file(tensors: dict, meta: dict, path, version: int) -> dict:
    """The checkpoint record of a file written by :func:`save_model` (format 1 or 2)."""
    config = json.loads(meta["architecture"])
    if not isinstance(config, dict) or not isinstance(config.get("layers"), list):
        raise CorruptFileError(f"{path}: the architecture metadata is not a model configuration")
    params = {k[len("param.") :]: v for k, v in tensors.items() if k.startswith("param.")}
    buffers = {k[len("buffer.") :]: v for k, v in tensors.items() if k.startswith("buffer.")}
    training = _meta_training(json.loads(meta.get("training", "{}")), path)
    record = {
        "config": config,
        "params": params,
        "buffers": buffers,
        "optimizer": None,
        "loss": json.loads(meta["loss"]) if "loss" in meta else None,
        "metrics": json.loads(meta["metrics"]) if "metrics" in meta else [],
        "decay_bias_and_norm": bool(training.pop("decay_bias_and_norm", False)),
    }
    for key in ("frozen", "training_mode"):  # (files before session 19 have neither: restore's defaults)
        if key in training:
            record[key] = training.pop(key)
    if "model_class" in meta:  # saved from a user's subclass of Sequential
        record["model_class"] = str(meta["model_class"])
    if "optimizer" in meta:
        saved = json.loads(meta["optimizer"])
        state = dict(saved["state"])
        state.update({k[len("optimizer.") :]: v for k, v in tensors.items() if k.startswith("optimizer.")})
        record["optimizer"] = {"config": saved["config"], "state": state}
    callbacks = json.loads(meta.get("callbacks", "{}"))
    if version < 2 and isinstance(callbacks, list):  # by position
        callbacks = {f"#{i}": entry for i, entry in enumerate(callbacks)}
        prefix = "callback.{}."
        for i, key in enumerate(list(callbacks)):
            p = prefix.format(i)
            callbacks[key]["arrays"] = {k[len(p) :]: v for k, v in tensors.items() if k.startswith(p)}
    else:
        for key, entry in callbacks.items():
            entry["arrays"] = {name: tensors[f"callback.{key}.{name}"] for name in entry.get("arrays", [])}
    training["callbacks"] = callbacks
    cursor_metrics = json.loads(meta.get("cursor_metrics", "{}"))
    training["cursor_metrics"] = {
        name: {**entry["values"], **{k: tensors[f"cursor_metric.{name}.{k}"] for k in entry["arrays"]}}
        for name, entry in cursor_metrics.items()
    } or None
    record["training"] = training
    return record


def _refuse_weights_archive(path) -> None:
    """An .npz archive of ``save_weights`` (a zip file) is refused naming ``load_weights``, not
    misread as a safetensors header."""
    if not isinstance(path, (str, os.PathLike)) or not os.path.isfile(path):
        return  # read_safetensors says what is wrong with it
    with open(path, "rb") as handle:
        head = handle.read(4)
    if head in (b"PK\x03\x04", b"PK\x05\x06"):
        raise CorruptFileError(
            f"{os.fspath(path)} is not a valid model file of model.save: it is a zip archive (the .npz "
            f"of model.save_weights?); load such weights into a model of the same architecture with "
            f"model.load_weights(path)"
        )


def read_checkpoint(path, *, verify: bool = True) -> tuple[dict, dict]:
    """(checkpoint record, raw tensors) of a file written by :func:`save_model`.

    Raises CorruptFileError (a ValueError) for a damaged, tampered or foreign file. ``verify=False``
    skips the checksum (for a file whose checksum was removed); :func:`check_tensors` then checks
    structure, dtypes and shapes against the rebuilt architecture either way."""
    _refuse_weights_archive(path)
    tensors, meta = read_safetensors(path, verify=verify)
    if meta.get("format") != FORMAT:
        raise CorruptFileError(
            f"{path} is a safetensors file but not a fastnn model (format="
            f"{meta.get('format')!r}); load its tensors with fastnn.io.read_safetensors"
        )
    version = _meta_int(meta.get("format_version", "0"), "format_version", path)
    if version > FORMAT_VERSION:
        raise ValueError(
            f"{path} was written by a newer fastnn (file format version {version}, this fastnn "
            f"reads up to {FORMAT_VERSION}; written by fastnn {meta.get('fastnn_version')}); "
            f"upgrade fastnn to load it"
        )
    try:
        return record_from_file(tensors, meta, path, version), tensors
    except CorruptFileError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError, IndexError, RecursionError) as exc:
        raise CorruptFileError(
            f"{path}: the fastnn metadata is incomplete or malformed ({type(exc).__name__}: {exc})"
        ) from None


def check_tensors(tensors: dict, record: dict, expected: dict, dtype, path) -> None:
    """Every array the rebuilt model has (``expected``: name -> array) is in the file with its
    shape and dtype; optimizer state has the model's dtype. CorruptFileError otherwise."""
    for name, arr in expected.items():
        key = f"param.{name}" if name in record["params"] else f"buffer.{name}"
        _take(tensors, key, arr, path)
    for key in tensors:
        if key.startswith("optimizer."):
            _of_dtype(tensors, key, dtype, path)


def _of_dtype(tensors: dict, key: str, dtype, path) -> np.ndarray:
    if tensors[key].dtype != dtype:
        raise CorruptFileError(
            f"{path}: tensor {key!r} has dtype {tensors[key].dtype}, its architecture "
            f"needs {np.dtype(dtype)}; the file is damaged or was edited"
        )
    return tensors[key]


def _take(tensors: dict, key: str, like: np.ndarray, path) -> np.ndarray:
    """tensors[key], refused unless it has the shape and dtype of the model's array ``like``."""
    if key not in tensors:
        raise CorruptFileError(f"{path} lacks tensor {key!r} required by its architecture")
    if tensors[key].shape != like.shape:
        raise CorruptFileError(f"{path}: tensor {key!r} has shape {tensors[key].shape}, expected {like.shape}")
    return _of_dtype(tensors, key, like.dtype, path)


def _meta_int(value, key: str, path) -> int:
    """A non-negative integer metadata field (an int, or a str of digits), else CorruptFileError."""
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise CorruptFileError(
            f"{path}: metadata field {key!r} must be a non-negative integer, got {value!r}; "
            f"the file was edited or damaged (save the model again)"
        )
    return value


def _meta_training(training, path) -> dict:
    """The "training" metadata (epochs_done, cursor [epoch, sample, loss sum, correct, data
    fingerprint], decay_bias_and_norm), each field checked; CorruptFileError naming a bad one."""
    if not isinstance(training, dict):
        raise CorruptFileError(f"{path}: metadata field 'training' must be a JSON object, got {training!r}")
    cursor = training.get("cursor")
    if cursor is not None:
        if not (
            isinstance(cursor, list)
            and len(cursor) in (4, 5)
            and isinstance(cursor[2], (int, float))
            and not isinstance(cursor[2], bool)
        ):
            raise CorruptFileError(
                f"{path}: metadata field 'cursor' must be null or [epoch, sample, loss sum, "
                f"correct count, data], got {cursor!r}; the file was edited or damaged"
            )
        epoch, sample, loss_sum, correct, *data = cursor
        cursor = [
            _meta_int(epoch, "cursor[0]", path),
            _meta_int(sample, "cursor[1]", path),
            float(loss_sum),
            None if correct is None else _meta_int(correct, "cursor[3]", path),
            str(data[0]) if data else "",
        ]
    decay = training.get("decay_bias_and_norm", False)
    if not isinstance(decay, bool):
        raise CorruptFileError(f"{path}: metadata field 'decay_bias_and_norm' must be true or false, got {decay!r}")
    if not isinstance(training.get("training_mode", True), bool):
        raise CorruptFileError(
            f"{path}: metadata field 'training_mode' must be true or false, got {training['training_mode']!r}"
        )
    frozen = training.get("frozen", [])
    if not (isinstance(frozen, list) and all(isinstance(p, str) for p in frozen)):
        raise CorruptFileError(f"{path}: metadata field 'frozen' must be a list of layer paths, got {frozen!r}")
    return {
        **training,
        "epochs_done": _meta_int(training.get("epochs_done", 0), "epochs_done", path),
        "cursor": cursor,
        "decay_bias_and_norm": decay,
    }
