"""File helpers: atomic writes (a crash while saving never leaves a corrupt file, and only
regular files are ever replaced) and a checked safetensors reader and writer."""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import re
import secrets
import stat
import struct
import time
from collections.abc import Iterator
from typing import IO

import numpy as np

from ._validation import check_path

_TMP_PREFIX = ".fastnn-tmp-"
# .fastnn-tmp-<pid>-<16 hex digits>-<name>: only files of exactly this form are ever cleaned up
_TMP_NAME = re.compile(r"\.fastnn-tmp-[0-9]+-[0-9a-f]{16}-.")
_STALE_AFTER_S = 24 * 3600  # a temporary this old was left by a killed process
_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a named pipe (FIFO)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def _save_target(path: str) -> tuple[str, os.stat_result | None]:
    """(the file a save of ``path`` replaces, through symlinks; its stat, None when it is new).

    Refuses targets that are not regular files: replacing a pipe or a device would silently
    swap it for an ordinary file."""
    target = os.path.realpath(path)
    shown = repr(path) if target == os.path.abspath(path) else f"{path!r} (a link to {target!r})"
    directory = os.path.dirname(target)
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"cannot save to {shown}: directory {directory!r} does not exist; create it first")
    try:
        st = os.stat(target)
    except FileNotFoundError:
        return target, None
    if not stat.S_ISREG(st.st_mode):
        kind = next((name for test, name in _KINDS if test(st.st_mode)), "not a regular file")
        raise ValueError(
            f"cannot save to {shown}: it is {kind}, not a regular file; saving would replace it. "
            f"Choose the path of a regular file (or of a new one)"
        )
    return target, st


def _create_temporary(target: str) -> tuple[int, str]:
    """(fd, path) of a new file beside ``target`` named .fastnn-tmp-<pid>-<random>-<name>; created
    with mode 0o666 so the kernel applies the umask (and default ACLs) exactly as open() would."""
    directory, name = os.path.split(target)
    name = os.fsdecode(os.fsencode(name)[:160])  # the whole name stays under the 255-byte limit
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0) | getattr(os, "O_CLOEXEC", 0)
    while True:
        tmp = os.path.join(directory, f"{_TMP_PREFIX}{os.getpid()}-{secrets.token_hex(8)}-{name}")
        try:
            return os.open(tmp, flags, 0o666), tmp
        except FileExistsError:  # pragma: no cover - 64 random bits
            continue


def _remove_stale_temporaries(directory: str) -> None:
    """Delete this module's temporaries older than a day in ``directory`` (left by killed saves)."""
    cutoff = time.time() - _STALE_AFTER_S
    with contextlib.suppress(OSError), os.scandir(directory) as entries:
        for entry in entries:
            if not _TMP_NAME.match(entry.name):
                continue
            with contextlib.suppress(OSError):
                st = entry.stat(follow_symlinks=False)
                if stat.S_ISREG(st.st_mode) and st.st_mtime < cutoff:
                    os.unlink(entry.path)


def _fsync_directory(directory: str) -> None:
    """Make a rename in ``directory`` durable (best effort: not every platform can)."""
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO]:
    """Open a temporary file beside ``path``; on success fsync it and rename it over ``path``.

    ``path`` may be a symlink: its final target is replaced and the link kept. A new file gets
    the mode open() would give (0o666 minus the umask); a replaced file keeps its mode. Targets
    that are not regular files (directories, pipes, devices, sockets) are refused with a
    ValueError. On any failure (KeyboardInterrupt included) the temporary file is removed and
    ``path`` is untouched; temporaries over a day old that killed saves left are cleaned up.

    Parameters
    ----------
    path : str or path-like
        The file to write.
    mode : str, default "wb"
        The ``open()`` mode of the temporary file (a writing mode).

    Yields
    ------
    file object
        The open temporary file; write everything inside the ``with`` block.

    Raises
    ------
    ValueError
        When ``path`` is a directory, a pipe, a device or a socket.

    Examples
    --------
    >>> from fastnn.io import atomic_write
    >>> with atomic_write("notes.txt", "w") as handle:
    ...     _ = handle.write("all or nothing")
    >>> open("notes.txt").read()
    'all or nothing'
    """
    path = check_path(path)
    target, existing = _save_target(path)
    directory = os.path.dirname(target)
    _remove_stale_temporaries(directory)
    fd, tmp = _create_temporary(target)
    try:
        if existing is not None and hasattr(os, "fchmod"):  # POSIX (Windows has no owners or modes to keep)
            if (existing.st_uid, existing.st_gid) != (os.geteuid(), os.getegid()):
                with contextlib.suppress(OSError):  # only root (or the group's members) may
                    os.fchown(fd, existing.st_uid, existing.st_gid)
            os.fchmod(fd, stat.S_IMODE(existing.st_mode))
        handle = os.fdopen(fd, mode)
    except BaseException:
        os.close(fd)
        os.unlink(tmp)
        raise
    try:
        with handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_directory(directory)


# -- safetensors ------------------------------------------------------------------------------
# The format (https://github.com/huggingface/safetensors): an 8-byte little-endian header length,
# a JSON header {name: {dtype, shape, data_offsets}, "__metadata__": {str: str}}, then the raw
# little-endian tensor bytes. Written here directly (no pickle, no extra dependency); files are
# readable by the safetensors package and vice versa.

_DTYPES = {
    "F64": np.float64,
    "F32": np.float32,
    "F16": np.float16,
    "I64": np.int64,
    "I32": np.int32,
    "I16": np.int16,
    "I8": np.int8,
    "U64": np.uint64,
    "U32": np.uint32,
    "U16": np.uint16,
    "U8": np.uint8,
    "BOOL": np.bool_,
}
_CODES = {np.dtype(v): k for k, v in _DTYPES.items()}
_MAX_HEADER = 100 * 1024 * 1024
_MAX_NDIM = 32


class CorruptFileError(ValueError):
    """A file that is truncated, tampered with, or not in the expected format (a ValueError).

    Examples
    --------
    >>> from fastnn.io import CorruptFileError, read_safetensors
    >>> _ = open("not-a-model.safetensors", "wb").write(b"hello")
    >>> try:
    ...     read_safetensors("not-a-model.safetensors")
    ... except CorruptFileError as error:
    ...     print(type(error).__name__)
    CorruptFileError
    """


def _digest(header_without_digest: bytes, payload) -> str:
    digest = hashlib.sha256(header_without_digest)
    digest.update(payload)
    return digest.hexdigest()


def _signed_header(header: dict, meta: dict) -> bytes:
    """The canonical bytes the checksum covers together with the payload (meta without "sha256")."""
    return json.dumps({**header, "__metadata__": meta}, sort_keys=True).encode()


def write_safetensors(
    path: str | os.PathLike, tensors: dict[str, np.ndarray], metadata: dict[str, str] | None = None
) -> None:
    """Write tensors and string metadata atomically to a safetensors file.

    A SHA-256 of the header and data is stored in the metadata ("sha256", replacing any given)
    and checked by :func:`read_safetensors`, so edited or damaged files are refused.

    Parameters
    ----------
    path : str or path-like
        The file (written through :func:`atomic_write`).
    tensors : dict of str to ndarray
        Name -> array (bool, integer or float dtypes, any shape).
    metadata : dict of str to str, optional
        Extra metadata (strings only).

    Examples
    --------
    >>> from fastnn.io import read_safetensors, write_safetensors
    >>> write_safetensors("t.safetensors", {"w": np.eye(2, dtype=np.float32)}, {"note": "identity"})
    >>> tensors, meta = read_safetensors("t.safetensors")
    >>> tensors["w"].dtype, tensors["w"].shape, meta
    (dtype('float32'), (2, 2), {'note': 'identity'})
    """
    header: dict = {}
    chunks, offset = [], 0
    for name in sorted(tensors):
        arr = np.ascontiguousarray(tensors[name])
        if arr.dtype not in _CODES:
            raise TypeError(f"tensor {name!r} has dtype {arr.dtype}, which safetensors cannot store")
        data = arr.astype(arr.dtype.newbyteorder("<"), copy=False).tobytes()
        header[name] = {
            "dtype": _CODES[arr.dtype],
            "shape": list(arr.shape),
            "data_offsets": [offset, offset + len(data)],
        }
        chunks.append(data)
        offset += len(data)
    payload = b"".join(chunks)
    meta = {str(k): str(v) for k, v in (metadata or {}).items() if k != "sha256"}
    meta["sha256"] = _digest(_signed_header(header, meta), payload)
    raw = json.dumps({**header, "__metadata__": meta}, sort_keys=True).encode()
    raw += b" " * (-len(raw) % 8)
    with atomic_write(path) as handle:
        handle.write(struct.pack("<Q", len(raw)))
        handle.write(raw)
        handle.write(payload)


def _unique_keys(pairs: list) -> dict:
    keys = [key for key, _ in pairs]
    if len(set(keys)) != len(keys):
        raise CorruptFileError(f"duplicate keys {sorted({k for k in keys if keys.count(k) > 1})}")
    return dict(pairs)


def _parse_header(path: str, blob: bytes) -> tuple[dict, dict, memoryview]:
    """(tensor entries, metadata, payload) of a safetensors ``blob``; only the framing is checked."""
    if len(blob) < 8:
        raise CorruptFileError(f"{path} is not a safetensors file: only {len(blob)} bytes (truncated?)")
    (size,) = struct.unpack("<Q", blob[:8])
    if size > min(_MAX_HEADER, len(blob) - 8):
        raise CorruptFileError(
            f"{path} is not a valid safetensors file: the header length {size} exceeds the "
            f"file ({len(blob)} bytes); the file is truncated or of another format"
        )
    try:
        header = json.loads(blob[8 : 8 + size].decode("utf-8"), object_pairs_hook=_unique_keys)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:  # JSONDecodeError, duplicates
        raise CorruptFileError(f"{path} is not a valid safetensors file: unreadable header ({exc})") from None
    if not isinstance(header, dict):
        raise CorruptFileError(f"{path} is not a valid safetensors file: the header is not a JSON object")
    meta = header.pop("__metadata__", None) or {}
    if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
        raise CorruptFileError(f"{path} is not a valid safetensors file: __metadata__ must map strings to strings")
    return header, meta, memoryview(blob)[8 + size :]


def _is_count(value) -> bool:
    return type(value) is int and value >= 0


def _check_layout(path: str, header: dict, n_bytes: int) -> list[tuple[str, np.dtype, tuple, int]]:
    """[(name, dtype, shape, begin)] of valid entries that cover the ``n_bytes`` payload exactly,
    without gaps or overlaps (as the safetensors format requires)."""
    entries = []
    for name, info in header.items():
        if not isinstance(info, dict) or not {"dtype", "shape", "data_offsets"} <= set(info):
            raise CorruptFileError(f"{path}: malformed entry for tensor {name!r} (needs dtype, shape, data_offsets)")
        code, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
        if not isinstance(code, str) or code not in _DTYPES:
            raise CorruptFileError(
                f"{path}: tensor {name!r} has unknown or unsupported dtype {code!r}; "
                f"this reader knows {', '.join(_DTYPES)}"
            )
        if not isinstance(shape, list) or len(shape) > _MAX_NDIM or not all(map(_is_count, shape)):
            raise CorruptFileError(
                f"{path}: tensor {name!r} has an invalid shape {shape!r} (expected a list of "
                f"at most {_MAX_NDIM} non-negative integers)"
            )
        if (
            not isinstance(offsets, list)
            or len(offsets) != 2
            or not all(map(_is_count, offsets))
            or offsets[0] > offsets[1]
        ):
            raise CorruptFileError(f"{path}: tensor {name!r} has invalid data_offsets {offsets!r}")
        dtype = np.dtype(_DTYPES[code]).newbyteorder("<")
        if offsets[1] > n_bytes:
            raise CorruptFileError(
                f"{path}: tensor {name!r} lies outside the file (its data ends at byte "
                f"{offsets[1]} of a {n_bytes}-byte payload); the file is truncated or damaged"
            )
        if offsets[1] - offsets[0] != dtype.itemsize * math.prod(shape):
            raise CorruptFileError(
                f"{path}: tensor {name!r} of shape {shape} and dtype {code} needs "
                f"{dtype.itemsize * math.prod(shape)} bytes, its data_offsets give "
                f"{offsets[1] - offsets[0]}; the file is damaged"
            )
        entries.append((name, dtype, tuple(shape), offsets[0], offsets[1]))
    covered = 0
    for name, _, _, begin, end in sorted(entries, key=lambda e: (e[3], e[4])):
        if begin != covered:
            problem = "overlaps the previous tensor" if begin < covered else f"leaves a gap of {begin - covered} bytes"
            raise CorruptFileError(
                f"{path}: tensor {name!r} (bytes {begin}..{end}) {problem}; the data of a "
                f"safetensors file must be covered exactly once, in order"
            )
        covered = end
    if covered != n_bytes:
        raise CorruptFileError(
            f"{path}: {n_bytes - covered} bytes after the last tensor belong to none; the file is damaged"
        )
    return [entry[:4] for entry in entries]


def read_safetensors(path: str | os.PathLike, *, verify: bool = True) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Read a safetensors file, checked.

    Parameters
    ----------
    path : str or path-like
        The file.
    verify : bool, default True
        Require fastnn's checksum and check it; False reads files of other programs.

    Returns
    -------
    tensors : dict of str to ndarray
        Name -> array, in native byte order.
    metadata : dict of str to str
        The metadata, without "sha256".

    Raises
    ------
    CorruptFileError
        When the file is truncated, not safetensors, or malformed (unknown dtypes, bad shapes,
        tensor data with gaps or overlaps); with ``verify``, also when it lacks fastnn's
        checksum or was changed since fastnn wrote it.

    Examples
    --------
    >>> from fastnn.io import read_safetensors, write_safetensors
    >>> write_safetensors("ids.safetensors", {"ids": np.arange(3)})
    >>> read_safetensors("ids.safetensors")[0]["ids"]
    array([0, 1, 2])
    """
    path = check_path(path)
    with open(path, "rb") as handle:
        blob = handle.read()
    header, meta, payload = _parse_header(path, blob)
    entries = _check_layout(path, header, len(payload))
    stored = meta.pop("sha256", None)
    if verify and stored is None:
        raise CorruptFileError(
            f"{path} carries no fastnn checksum ('sha256' in its metadata): it was not "
            f"written by fastnn, or the checksum was removed, so its integrity cannot be "
            f"checked. If you trust the file, load it with verify=False "
            f"(fnn.load(path, verify=False) or fastnn.io.read_safetensors(path, verify=False))"
        )
    if verify and _digest(_signed_header(header, meta), payload) != stored:
        raise CorruptFileError(
            f"{path} failed its integrity check: its contents changed after it was "
            f"written (tampered or damaged); refusing to load it"
        )
    tensors = {}
    for name, dtype, shape, begin in entries:
        try:
            flat = np.frombuffer(payload, dtype, math.prod(shape), begin)
            tensors[name] = flat.reshape(shape).astype(dtype.newbyteorder("="))
        except ValueError:
            raise CorruptFileError(f"{path}: tensor {name!r} has an impossible shape {shape}") from None
    return tensors, meta


def check_npz_file(path: str | os.PathLike | IO) -> None:
    """Refuse a file that is not an .npz archive with a clear message.

    Parameters
    ----------
    path : str, path-like or file object
        The file ``load_weights`` was given; file objects are left to NumPy.

    Raises
    ------
    CorruptFileError
        When it is not an .npz archive, e.g. a .safetensors model (the message says to use
        ``fnn.load``).

    Examples
    --------
    >>> from fastnn.io import check_npz_file
    >>> np.savez("w.npz", w=np.zeros(2))
    >>> check_npz_file("w.npz")             # an archive: no error
    """
    if hasattr(path, "read"):
        return
    path = check_path(path)
    with open(path, "rb") as handle:
        head = handle.read(16)
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        return
    if len(head) >= 9 and head[8:9] == b"{":
        raise CorruptFileError(
            f"{os.fspath(path)} is a safetensors file (as written by model.save), not the .npz "
            f"of model.save_weights; load the whole model with fnn.load(path)"
        )
    raise CorruptFileError(
        f"{os.fspath(path)} is not an .npz weights file written by model.save_weights "
        f"(it starts with {head[:8]!r}); load models written by model.save with fnn.load(path)"
    )


__all__ = ["CorruptFileError", "atomic_write", "check_npz_file", "read_safetensors", "write_safetensors"]
