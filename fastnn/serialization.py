"""Saving and loading whole models (architecture, weights, optimizer and training state) as
one safetensors file; nothing is ever unpickled."""
from __future__ import annotations

import json

import numpy as np

from . import backend
from .io import CorruptFileError, read_safetensors, write_safetensors

FORMAT = "fastnn"
FORMAT_VERSION = 2


def _split_state(state: dict) -> tuple[dict, dict]:
    arrays = {k: v for k, v in state.items() if isinstance(v, np.ndarray)}
    scalars = {k: (v.item() if isinstance(v, np.generic) else v) for k, v in state.items() if k not in arrays}
    return arrays, scalars


def save_model(model, path) -> None:
    """Write ``model.snapshot()`` (the checkpoint record) to ``path`` as one safetensors file."""
    write_safetensors(path, *record_to_file(model.snapshot()))


def record_to_file(record: dict) -> tuple[dict, dict]:
    """(tensors, string metadata) of a checkpoint record (:meth:`fastnn.Sequential.snapshot`)."""
    from . import __version__

    tensors = {f"param.{name}": value for name, value in record["params"].items()}
    tensors.update({f"buffer.{name}": value for name, value in record["buffers"].items()})
    meta = {"format": FORMAT, "format_version": str(FORMAT_VERSION), "fastnn_version": __version__,
            "architecture": json.dumps(record["config"])}
    if record.get("loss") is not None:
        meta["loss"] = json.dumps(record["loss"])
    if record.get("optimizer") is not None:
        arrays, scalars = _split_state(record["optimizer"]["state"])
        tensors.update({f"optimizer.{k}": v for k, v in arrays.items()})
        meta["optimizer"] = json.dumps({"config": record["optimizer"]["config"], "state": scalars})
    training = dict(record["training"])
    callbacks = {}
    for key, entry in training.pop("callbacks", {}).items():
        tensors.update({f"callback.{key}.{k}": v for k, v in entry.get("arrays", {}).items()})
        callbacks[key] = {"class": entry["class"], "state": entry["state"], "arrays": sorted(entry.get("arrays", {}))}
    training["decay_bias_and_norm"] = record.get("decay_bias_and_norm", False)
    meta["training"] = json.dumps(training)
    meta["callbacks"] = json.dumps(callbacks)
    return tensors, meta


def record_from_file(tensors: dict, meta: dict, path) -> dict:
    """The checkpoint record of a file written by :func:`save_model` (format 1 or 2)."""
    config = json.loads(meta["architecture"])
    if not isinstance(config, dict) or not isinstance(config.get("layers"), list):
        raise CorruptFileError(f"{path}: the architecture metadata is not a model configuration")
    version = int(meta.get("format_version", "0"))
    params = {k[len("param."):]: v for k, v in tensors.items() if k.startswith("param.")}
    buffers = {k[len("buffer."):]: v for k, v in tensors.items() if k.startswith("buffer.")}
    training = json.loads(meta.get("training", "{}"))
    if not isinstance(training, dict):
        raise CorruptFileError(f"{path}: the training metadata is not a JSON object")
    record = {"config": config, "params": params, "buffers": buffers, "optimizer": None,
              "loss": json.loads(meta["loss"]) if "loss" in meta else None,
              "decay_bias_and_norm": bool(training.pop("decay_bias_and_norm", False))}
    if "optimizer" in meta:
        saved = json.loads(meta["optimizer"])
        state = dict(saved["state"])
        state.update({k[len("optimizer."):]: v for k, v in tensors.items() if k.startswith("optimizer.")})
        record["optimizer"] = {"config": saved["config"], "state": state}
    callbacks = json.loads(meta.get("callbacks", "{}"))
    if version < 2 and isinstance(callbacks, list):  # by position
        callbacks = {f"#{i}": entry for i, entry in enumerate(callbacks)}
        prefix = "callback.{}."
        for i, key in enumerate(list(callbacks)):
            p = prefix.format(i)
            callbacks[key]["arrays"] = {k[len(p):]: v for k, v in tensors.items() if k.startswith(p)}
    else:
        for key, entry in callbacks.items():
            entry["arrays"] = {name: tensors[f"callback.{key}.{name}"] for name in entry.get("arrays", [])}
    training["callbacks"] = callbacks
    record["training"] = training
    return record


def load_model(path, device: str = "cpu", *, verify: bool = True):
    """Rebuild a model saved by ``model.save(path)``, ready to predict or to continue fit(), on
    ``device`` ("cpu" or "cuda"; a file saved from either device loads on either).

    Raises CorruptFileError (a ValueError) for a damaged, tampered or foreign file. ``verify=False``
    skips the checksum (for a file whose checksum was removed); the structure, dtypes and shapes
    are checked against the architecture either way."""
    from ._validation import check_choice
    from .model import Sequential

    check_choice(device, backend.DEVICES, "device")
    if device != "cpu":
        backend.require_cuda()

    tensors, meta = read_safetensors(path, verify=verify)
    if meta.get("format") != FORMAT:
        raise CorruptFileError(f"{path} is a safetensors file but not a fastnn model (format="
                               f"{meta.get('format')!r}); load its tensors with fastnn.io.read_safetensors")
    version = meta.get("format_version", "0")
    if not (version.isascii() and version.isdigit()):
        raise CorruptFileError(f"{path}: malformed format_version {version!r} in its metadata")
    version = int(version)
    if version > FORMAT_VERSION:
        raise ValueError(f"{path} was written by a newer fastnn (file format version {version}, this fastnn "
                         f"reads up to {FORMAT_VERSION}; written by fastnn {meta.get('fastnn_version')}); "
                         f"upgrade fastnn to load it")
    try:
        record = record_from_file(tensors, meta, path)
        model = Sequential.from_config(record["config"])
        for name, arr in model.state_arrays().items():
            key = f"param.{name}" if name in record["params"] else f"buffer.{name}"
            _take(tensors, key, arr, path)
        for key in tensors:
            if key.startswith("optimizer."):
                _of_dtype(tensors, key, model.dtype, path)
        model.restore(record)
    except CorruptFileError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError, IndexError, RecursionError) as exc:
        # metadata that passed the checksum only fails here for classes this process has not
        # registered (the message says so); with verify=False it may be anything
        raise CorruptFileError(f"{path}: cannot rebuild the model from its metadata, which is incomplete, "
                               f"malformed or names unknown classes ({type(exc).__name__}: {exc})") from None
    return model.to(device)
def _of_dtype(tensors: dict, key: str, dtype, path) -> np.ndarray:
    if tensors[key].dtype != dtype:
        raise CorruptFileError(f"{path}: tensor {key!r} has dtype {tensors[key].dtype}, its architecture "
                               f"needs {np.dtype(dtype)}; the file is damaged or was edited")
    return tensors[key]


def _take(tensors: dict, key: str, like: np.ndarray, path) -> np.ndarray:
    """tensors[key], refused unless it has the shape and dtype of the model's array ``like``."""
    if key not in tensors:
        raise CorruptFileError(f"{path} lacks tensor {key!r} required by its architecture")
    if tensors[key].shape != like.shape:
        raise CorruptFileError(f"{path}: tensor {key!r} has shape {tensors[key].shape}, expected {like.shape}")
    return _of_dtype(tensors, key, like.dtype, path)
