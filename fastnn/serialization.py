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


def load_model(path, device: str = "cpu"):
    """Rebuild a model saved by ``model.save(path)``, ready to predict or to continue fit(), on
    ``device`` ("cpu" or "cuda"; a file saved from either device loads on either)."""
    from . import losses, optim
    from ._validation import check_choice
    from .model import Sequential

    check_choice(device, backend.DEVICES, "device")
    if device != "cpu":
        backend.require_cuda()

    tensors, meta = read_safetensors(path)
    if meta.get("format") != FORMAT:
        raise CorruptFileError(f"{path} is a safetensors file but not a fastnn model (format="
                               f"{meta.get('format')!r}); load its tensors with fastnn.io.read_safetensors")
    version = _meta_int(meta.get("format_version", "0"), "format_version", path)
    if version > FORMAT_VERSION:
        raise ValueError(f"{path} was written by a newer fastnn (file format version {version}, this fastnn "
                         f"reads up to {FORMAT_VERSION}; written by fastnn {meta.get('fastnn_version')}); "
                         f"upgrade fastnn to load it")
    try:
        model = Sequential.from_config(json.loads(meta["architecture"]))
        for name, value, _ in model.named_parameters():
            value[...] = _take(tensors, f"param.{name}", value.shape, path)
        for i, layer in enumerate(model.layers):
            for name, buf in layer.buffers().items():
                buf[...] = _take(tensors, f"buffer.{i}.{name}", buf.shape, path)
        if "optimizer" in meta:
            saved = json.loads(meta["optimizer"])
            loss = losses.from_config(json.loads(meta["loss"])) if "loss" in meta else None
            training = _meta_training(meta, path)
            model.compile(loss if loss is not None else "mse", optim.optimizer_from_config(saved["config"]),
                          decay_bias_and_norm=training["decay_bias_and_norm"])
            if loss is None:
                model.loss = None
            state = dict(saved["state"])
            state.update({k[len("optimizer."):]: v for k, v in tensors.items() if k.startswith("optimizer.")})
            model.optimizer.load_state_dict(state)
        elif "loss" in meta:
            model.loss = losses.from_config(json.loads(meta["loss"]))
        training = _meta_training(meta, path)
        model.epochs_done, model._cursor = training["epochs_done"], training["cursor"]
        callbacks = json.loads(meta.get("callbacks", "[]"))
        for i, entry in enumerate(callbacks):
            prefix = f"callback.{i}."
            entry["arrays"] = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
        model._pending_callback_states = callbacks or None
    except (KeyError, TypeError, AttributeError, json.JSONDecodeError) as exc:
        raise CorruptFileError(f"{path}: the fastnn metadata is incomplete or malformed ({exc!r})") from None
    return model.to(device)


def _meta_int(value, key: str, path) -> int:
    """A non-negative integer metadata field (an int, or a str of digits), else CorruptFileError."""
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise CorruptFileError(f"{path}: metadata field {key!r} must be a non-negative integer, got {value!r}; "
                               f"the file was edited or damaged (save the model again)")
    return value


def _meta_training(meta: dict, path) -> dict:
    """The "training" metadata: epochs_done, cursor (None or (epoch, sample, loss sum, correct)) and
    decay_bias_and_norm, each checked, with defaults for files that lack them."""
    training = json.loads(meta.get("training", "{}"))
    if not isinstance(training, dict):
        raise CorruptFileError(f"{path}: metadata field 'training' must be a JSON object, got {training!r}")
    cursor = training.get("cursor")
    if cursor is not None:
        if not (isinstance(cursor, list) and len(cursor) == 4 and isinstance(cursor[2], (int, float))
                and not isinstance(cursor[2], bool)):
            raise CorruptFileError(f"{path}: metadata field 'cursor' must be null or [epoch, sample, loss sum, "
                                   f"correct count], got {cursor!r}; the file was edited or damaged")
        epoch, sample, loss_sum, correct = cursor
        cursor = (_meta_int(epoch, "cursor[0]", path), _meta_int(sample, "cursor[1]", path), float(loss_sum),
                  None if correct is None else _meta_int(correct, "cursor[3]", path))
    decay = training.get("decay_bias_and_norm", False)
    if not isinstance(decay, bool):
        raise CorruptFileError(f"{path}: metadata field 'decay_bias_and_norm' must be true or false, got {decay!r}")
    return {"epochs_done": _meta_int(training.get("epochs_done", 0), "epochs_done", path), "cursor": cursor,
            "decay_bias_and_norm": decay}


def _take(tensors: dict, key: str, shape, path) -> np.ndarray:
    if key not in tensors:
        raise CorruptFileError(f"{path} lacks tensor {key!r} required by its architecture")
    if tensors[key].shape != tuple(shape):
        raise CorruptFileError(f"{path}: tensor {key!r} has shape {tensors[key].shape}, expected {tuple(shape)}")
    return tensors[key]
