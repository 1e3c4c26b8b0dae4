"""Saving and loading whole models (architecture, weights, optimizer and training state) as
one safetensors file; nothing is ever unpickled."""
from __future__ import annotations

import json

import numpy as np

from . import backend
from .io import CorruptFileError, read_safetensors, write_safetensors

FORMAT = "fastnn"
FORMAT_VERSION = 1


def _split_state(state: dict) -> tuple[dict, dict]:
    arrays = {k: v for k, v in state.items() if isinstance(v, np.ndarray)}
    scalars = {k: (v.item() if isinstance(v, np.generic) else v) for k, v in state.items() if k not in arrays}
    return arrays, scalars


def save_model(model, path) -> None:
    from . import __version__

    # host copies of device arrays when the model is on a GPU (the file is the same from any device)
    tensors = {f"param.{name}": backend.to_host(value) for name, value, _ in model.named_parameters()}
    for i, layer in enumerate(model.layers):
        tensors.update({f"buffer.{i}.{name}": backend.to_host(buf) for name, buf in layer.buffers().items()})
    meta = {"format": FORMAT, "format_version": str(FORMAT_VERSION), "fastnn_version": __version__,
            "architecture": json.dumps(model.get_config())}
    if model.loss is not None:
        meta["loss"] = json.dumps(model.loss.get_config())
    if model.optimizer is not None:
        arrays, scalars = _split_state(model.optimizer.state_dict())
        tensors.update({f"optimizer.{k}": v for k, v in arrays.items()})
        meta["optimizer"] = json.dumps({"config": model.optimizer.get_config(), "state": scalars})
    meta["training"] = json.dumps({"epochs_done": model.epochs_done, "cursor": model._cursor,
                                   "decay_bias_and_norm": model.decay_bias_and_norm})
    callbacks = []
    for i, cb in enumerate(model._callbacks):
        arrays = cb.arrays() if hasattr(cb, "arrays") else {}
        tensors.update({f"callback.{i}.{k}": v for k, v in arrays.items()})
        callbacks.append({"class": type(cb).__name__, "state": cb.state_dict()})
    meta["callbacks"] = json.dumps(callbacks)
    write_safetensors(path, tensors, meta)


def load_model(path, device: str = "cpu", *, verify: bool = True):
    """Rebuild a model saved by ``model.save(path)``, ready to predict or to continue fit(), on
    ``device`` ("cpu" or "cuda"; a file saved from either device loads on either).

    Raises CorruptFileError (a ValueError) for a damaged, tampered or foreign file. ``verify=False``
    skips the checksum (for a file whose checksum was removed); the structure, dtypes and shapes
    are checked against the architecture either way."""
    from . import losses, optim
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
        model = Sequential.from_config(json.loads(meta["architecture"]))
        for name, value, _ in model.named_parameters():
            value[...] = _take(tensors, f"param.{name}", value, path)
        for i, layer in enumerate(model.layers):
            for name, buf in layer.buffers().items():
                buf[...] = _take(tensors, f"buffer.{i}.{name}", buf, path)
        if "optimizer" in meta:
            saved = json.loads(meta["optimizer"])
            loss = losses.from_config(json.loads(meta["loss"])) if "loss" in meta else None
            training = json.loads(meta.get("training", "{}"))
            model.compile(loss if loss is not None else "mse", optim.optimizer_from_config(saved["config"]),
                          decay_bias_and_norm=training.get("decay_bias_and_norm", False))
            if loss is None:
                model.loss = None
            state = dict(saved["state"])
            state.update({k[len("optimizer."):]: _of_dtype(tensors, k, model.dtype, path)
                          for k in tensors if k.startswith("optimizer.")})
            model.optimizer.load_state_dict(state)
        elif "loss" in meta:
            model.loss = losses.from_config(json.loads(meta["loss"]))
        training = json.loads(meta.get("training", "{}"))
        model.epochs_done = int(training.get("epochs_done", 0))
        cursor = training.get("cursor")
        model._cursor = tuple(cursor) if cursor else None
        callbacks = json.loads(meta.get("callbacks", "[]"))
        for i, entry in enumerate(callbacks):
            prefix = f"callback.{i}."
            entry["arrays"] = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
        model._pending_callback_states = callbacks or None
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
