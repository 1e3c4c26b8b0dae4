"""File helpers: atomic writes, so a crash while saving never leaves a corrupt file."""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import struct
import tempfile

import numpy as np


@contextlib.contextmanager
def atomic_write(path, mode: str = "wb"):
    """Open a temporary file beside ``path``; on success fsync it and rename it over ``path``."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"cannot save to {path!r}: directory {directory!r} does not exist; create it first")
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=os.path.basename(path), dir=directory)
    try:
        with os.fdopen(fd, mode) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


# -- safetensors ------------------------------------------------------------------------------
# The format (https://github.com/huggingface/safetensors): an 8-byte little-endian header length,
# a JSON header {name: {dtype, shape, data_offsets}, "__metadata__": {str: str}}, then the raw
# little-endian tensor bytes. Written here directly (no pickle, no extra dependency); files are
# readable by the safetensors package and vice versa.

_DTYPES = {"F64": np.float64, "F32": np.float32, "F16": np.float16, "I64": np.int64, "I32": np.int32,
           "I16": np.int16, "I8": np.int8, "U64": np.uint64, "U32": np.uint32, "U16": np.uint16,
           "U8": np.uint8, "BOOL": np.bool_}
_CODES = {np.dtype(v): k for k, v in _DTYPES.items()}
_MAX_HEADER = 100 * 1024 * 1024


class CorruptFileError(ValueError):
    """A file that is truncated, tampered with, or not in the expected format."""


def _digest(header_without_digest: bytes, payload: bytes) -> str:
    return hashlib.sha256(header_without_digest + payload).hexdigest()


def write_safetensors(path, tensors: dict[str, np.ndarray], metadata: dict[str, str] | None = None,
                      checksum: bool = True) -> None:
    """Write ``tensors`` (name -> array) and string ``metadata`` atomically to ``path``.

    With ``checksum`` a SHA-256 of the header and data is stored in the metadata ("sha256") and
    checked by :func:`read_safetensors`, so edited or damaged files are refused.
    """
    header: dict = {}
    chunks, offset = [], 0
    for name in sorted(tensors):
        arr = np.ascontiguousarray(tensors[name])
        if arr.dtype not in _CODES:
            raise TypeError(f"tensor {name!r} has dtype {arr.dtype}, which safetensors cannot store")
        data = arr.astype(arr.dtype.newbyteorder("<"), copy=False).tobytes()
        header[name] = {"dtype": _CODES[arr.dtype], "shape": list(arr.shape),
                        "data_offsets": [offset, offset + len(data)]}
        chunks.append(data)
        offset += len(data)
    payload = b"".join(chunks)
    meta = {str(k): str(v) for k, v in (metadata or {}).items()}
    if checksum:
        unsigned = json.dumps({**header, "__metadata__": meta}, sort_keys=True).encode()
        meta["sha256"] = _digest(unsigned, payload)
    raw = json.dumps({**header, "__metadata__": meta}, sort_keys=True).encode()
    raw += b" " * (-len(raw) % 8)
    with atomic_write(path) as handle:
        handle.write(struct.pack("<Q", len(raw)))
        handle.write(raw)
        handle.write(payload)


def read_safetensors(path, verify: bool = True) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """(tensors, metadata) from a safetensors file; CorruptFileError when it is truncated, not
    safetensors, or (with a stored checksum and ``verify``) changed since it was written."""
    import os

    path = os.fspath(path)
    with open(path, "rb") as handle:
        blob = handle.read()
    if len(blob) < 8:
        raise CorruptFileError(f"{path} is not a safetensors file: only {len(blob)} bytes (truncated?)")
    (size,) = struct.unpack("<Q", blob[:8])
    if size > min(_MAX_HEADER, len(blob) - 8):
        raise CorruptFileError(f"{path} is not a valid safetensors file: the header length {size} exceeds the "
                               f"file ({len(blob)} bytes); the file is truncated or of another format")
    try:
        header = json.loads(blob[8:8 + size].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CorruptFileError(f"{path} is not a valid safetensors file: unreadable header ({exc})") from None
    if not isinstance(header, dict):
        raise CorruptFileError(f"{path} is not a valid safetensors file: the header is not a JSON object")
    meta = header.pop("__metadata__", {}) or {}
    payload = blob[8 + size:]
    tensors = {}
    for name, info in header.items():
        try:
            dtype = np.dtype(_DTYPES[info["dtype"]]).newbyteorder("<")
            begin, end = info["data_offsets"]
            shape = tuple(int(d) for d in info["shape"])
        except (KeyError, TypeError, ValueError):
            raise CorruptFileError(f"{path}: malformed entry for tensor {name!r}") from None
        if not 0 <= begin <= end <= len(payload) or end - begin != dtype.itemsize * int(np.prod(shape)):
            raise CorruptFileError(f"{path}: tensor {name!r} lies outside the file or has the wrong size "
                                   f"(the file is truncated or damaged)")
        tensors[name] = np.frombuffer(payload, dtype, int(np.prod(shape)), begin).reshape(shape).astype(
            dtype.newbyteorder("="))
    if verify and "sha256" in meta:
        stored = meta.pop("sha256")
        unsigned = json.dumps({**header, "__metadata__": meta}, sort_keys=True).encode()
        if _digest(unsigned, payload) != stored:
            raise CorruptFileError(f"{path} failed its integrity check: its contents changed after it was "
                                   f"written (tampered or damaged); refusing to load it")
    return tensors, meta
