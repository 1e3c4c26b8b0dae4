"""Datasets and data files: toy generators, scikit-learn's digits, IDX/CSV/NPZ readers, splitting, scaling.

Toy problems (each ``(X, y)`` with ``X`` float64 ``(n_samples, 2)`` and ``y`` int64 ``(n_samples,)``):
:func:`make_xor`, :func:`make_spirals`, :func:`make_moons`. Every generator takes ``seed`` (an int,
``None`` or a :class:`numpy.random.Generator`): the same seed gives the same data.

Files: :func:`read_idx` / :func:`write_idx` (the MNIST format, optionally gzipped), :func:`read_csv`,
:func:`read_npz`, and :func:`load_file`, which picks the reader from the file's name and first bytes.
Nothing is ever unpickled.

Preparation: :func:`train_test_split` (seeded, optionally stratified), :class:`Standardizer` and
:func:`standardize`.

Plain NumPy: none of this is a hot path.
"""

from __future__ import annotations

import csv
import difflib
import gzip
import io
import math
import os
import re
import struct
import zipfile
import zlib
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from .datasets import ArrayDataset, MappedFile
from .io import atomic_write

__all__ = [
    "ArrayDataset",
    "MappedFile",
    "Standardizer",
    "load_digits",
    "load_file",
    "make_moons",
    "make_spirals",
    "make_xor",
    "read_csv",
    "read_idx",
    "read_npz",
    "standardize",
    "train_test_split",
    "write_idx",
]

_GZIP_MAGIC = b"\x1f\x8b"
_ZIP_MAGIC = b"PK\x03\x04"

# IDX type code -> big-endian dtype of the stored values
_IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
# numpy dtype (native byte order) -> IDX type code
_IDX_CODES = {dt.newbyteorder("="): code for code, dt in _IDX_DTYPES.items()}


# --------------------------------------------------------------------------------------------
# argument checks (user input is checked here, once)
# --------------------------------------------------------------------------------------------


def _check_int(name: str, value: Any, low: int, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} ({value!r})")
    value = int(value)
    if value < low or (high is not None and value > high):
        bounds = f">= {low}" if high is None else f"in [{low}, {high}]"
        raise ValueError(f"{name} must be {bounds}, got {value}")
    return value


def _check_noise(noise: Any) -> float:
    if isinstance(noise, bool) or not isinstance(noise, (int, float, np.integer, np.floating)):
        raise TypeError(f"noise must be a float >= 0, got {type(noise).__name__} ({noise!r})")
    noise = float(noise)
    if not (math.isfinite(noise) and noise >= 0.0):
        raise ValueError(f"noise must be a finite float >= 0 (the Gaussian standard deviation), got {noise}")
    return noise


def _rng(seed: Any) -> np.random.Generator:
    if isinstance(seed, np.random.Generator):
        return seed
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer))):
        raise TypeError(f"seed must be an int, None or a numpy.random.Generator, got {type(seed).__name__}")
    if seed is not None and seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    return np.random.default_rng(seed)


def _check_bool(name: str, value: Any) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {type(value).__name__} ({value!r})")
    return bool(value)


def _path(name: str, path: Any) -> str:
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"{name} must be a str or os.PathLike file path, got {type(path).__name__}")
    return os.fspath(path)


def _not_a_directory(path: str) -> None:
    if os.path.isdir(path):
        raise IsADirectoryError(
            f"{path!r} is a directory, not a data file; pass one of the files in it (.csv, .tsv, .npz or IDX)"
        )


def _head(path: str, n: int = 4) -> bytes:
    _not_a_directory(path)
    with open(path, "rb") as f:
        return f.read(n)


# --------------------------------------------------------------------------------------------
# toy problems
# --------------------------------------------------------------------------------------------

_XOR_CORNERS = np.array([[-1.0, -1.0], [-1.0, 1.0], [1.0, -1.0], [1.0, 1.0]])
_XOR_LABELS = np.array([0, 1, 1, 0], dtype=np.int64)


def make_xor(
    n_samples: int = 200, noise: float = 0.0, seed: Any = 0, *, shuffle: bool = True
) -> tuple[NDArray[np.float64], NDArray[np.int64]]:
    """Points at the four corners ``(+-1, +-1)``, labelled by the XOR of the coordinates' signs.

    Corners are used in turn (as balanced as ``n_samples`` allows), then Gaussian noise of standard
    deviation ``noise`` is added; a point's label is its corner's (so noise > 1 makes classes
    overlap). ``make_xor(4)`` (with ``noise=0``) is the classic truth table: each corner once, in
    the order ``(-1,-1), (-1,1), (1,-1), (1,1)`` with labels ``0, 1, 1, 0`` (``shuffle`` does not
    apply).

    Parameters
    ----------
    n_samples : int, default 200
        Number of points, >= 1.
    noise : float, default 0.0
        Standard deviation of the Gaussian noise, >= 0.
    seed : int, None or numpy.random.Generator, default 0
        The same seed gives the same data.
    shuffle : bool, default True
        Shuffle the corners' order.

    Returns
    -------
    X : numpy.ndarray
        float64 (n_samples, 2).
    y : numpy.ndarray
        int64 (n_samples,) in {0, 1}.

    Raises
    ------
    ValueError
        If ``n_samples`` < 1 or ``noise`` is negative or not finite.

    Examples
    --------
    >>> import fastnn as fnn
    >>> X, y = fnn.data.make_xor(4)
    >>> X
    array([[-1., -1.],
           [-1.,  1.],
           [ 1., -1.],
           [ 1.,  1.]])
    >>> y
    array([0, 1, 1, 0])
    """
    n = _check_int("n_samples", n_samples, 1)
    noise = _check_noise(noise)
    shuffle = _check_bool("shuffle", shuffle)
    rng = _rng(seed)
    corner = np.arange(n) % 4
    if shuffle and not (n == 4 and noise == 0.0):
        corner = rng.permutation(corner)
    X = _XOR_CORNERS[corner]
    if noise > 0.0:
        X = X + rng.normal(0.0, noise, size=X.shape)
    return X, _XOR_LABELS[corner]


def _class_sizes(n: int, k: int) -> np.ndarray:
    """``n`` split into ``k`` near-equal parts (the first ``n % k`` one larger)."""
    return np.full(k, n // k) + (np.arange(k) < n % k)


def make_spirals(
    n_samples: int = 300, n_classes: int = 3, noise: float = 0.2, seed: Any = 0, *, shuffle: bool = True
) -> tuple[NDArray[np.float64], NDArray[np.int64]]:
    """Interleaved spiral arms, one per class (the CS231n toy problem).

    Class ``j``'s points have radius ``linspace(0, 1)`` and angle ``linspace(4j, 4(j+1))`` plus
    Gaussian noise of standard deviation ``noise`` (radians); ``X = r * (sin t, cos t)``.
    Classes are as balanced as ``n_samples`` allows.

    Parameters
    ----------
    n_samples : int, default 300
        Number of points, >= ``n_classes``.
    n_classes : int, default 3
        Number of arms (classes), >= 1.
    noise : float, default 0.2
        Standard deviation of the angle's Gaussian noise, >= 0.
    seed : int, None or numpy.random.Generator, default 0
        The same seed gives the same data.
    shuffle : bool, default True
        Shuffle the points (else class by class).

    Returns
    -------
    X : numpy.ndarray
        float64 (n_samples, 2), in the unit disc (before noise).
    y : numpy.ndarray
        int64 (n_samples,) in [0, n_classes).

    Raises
    ------
    ValueError
        If ``n_classes`` < 1, ``n_samples`` < ``n_classes`` or ``noise`` is invalid.

    Examples
    --------
    >>> import fastnn as fnn
    >>> X, y = fnn.data.make_spirals(6, n_classes=3, seed=0)
    >>> X.shape, X.dtype, np.bincount(y)
    ((6, 2), dtype('float64'), array([2, 2, 2]))
    """
    k = _check_int("n_classes", n_classes, 1)
    n = _check_int("n_samples", n_samples, k)
    noise = _check_noise(noise)
    shuffle = _check_bool("shuffle", shuffle)
    rng = _rng(seed)
    sizes = _class_sizes(n, k)
    r = np.concatenate([np.linspace(0.0, 1.0, m) for m in sizes])
    t = np.concatenate([np.linspace(4.0 * j, 4.0 * (j + 1), m) for j, m in enumerate(sizes)])
    if noise > 0.0:
        t = t + rng.normal(0.0, noise, size=n)
    X = np.column_stack([r * np.sin(t), r * np.cos(t)])
    y = np.repeat(np.arange(k, dtype=np.int64), sizes)
    if shuffle:
        order = rng.permutation(n)
        X, y = X[order], y[order]
    return X, y


def make_moons(
    n_samples: int = 200, noise: float = 0.1, seed: Any = 0, *, shuffle: bool = True
) -> tuple[NDArray[np.float64], NDArray[np.int64]]:
    """Two interleaving half circles (as scikit-learn's ``make_moons``).

    Class 0 is the upper moon ``(cos a, sin a)``, class 1 the lower one
    ``(1 - cos a, 0.5 - sin a)``, ``a`` in ``[0, pi]``; class 0 gets ``n_samples // 2`` points.
    Gaussian noise of standard deviation ``noise`` is added to every coordinate.

    Parameters
    ----------
    n_samples : int, default 200
        Number of points, >= 2.
    noise : float, default 0.1
        Standard deviation of the Gaussian noise, >= 0.
    seed : int, None or numpy.random.Generator, default 0
        The same seed gives the same data.
    shuffle : bool, default True
        Shuffle the points (else class 0 first).

    Returns
    -------
    X : numpy.ndarray
        float64 (n_samples, 2).
    y : numpy.ndarray
        int64 (n_samples,) in {0, 1}.

    Raises
    ------
    ValueError
        If ``n_samples`` < 2 or ``noise`` is invalid.

    Examples
    --------
    >>> import fastnn as fnn
    >>> X, y = fnn.data.make_moons(4, noise=0.0, shuffle=False)
    >>> X.round(2)
    array([[ 1. ,  0. ],
           [-1. ,  0. ],
           [ 0. ,  0.5],
           [ 2. ,  0.5]])
    >>> y
    array([0, 0, 1, 1])
    """
    n = _check_int("n_samples", n_samples, 2)
    noise = _check_noise(noise)
    shuffle = _check_bool("shuffle", shuffle)
    rng = _rng(seed)
    n_out = n // 2
    n_in = n - n_out
    a_out = np.linspace(0.0, np.pi, n_out)
    a_in = np.linspace(0.0, np.pi, n_in)
    X = np.vstack(
        [
            np.column_stack([np.cos(a_out), np.sin(a_out)]),
            np.column_stack([1.0 - np.cos(a_in), 0.5 - np.sin(a_in)]),
        ]
    )
    y = np.repeat(np.array([0, 1], dtype=np.int64), [n_out, n_in])
    if shuffle:
        order = rng.permutation(n)
        X, y = X[order], y[order]
    if noise > 0.0:
        X = X + rng.normal(0.0, noise, size=X.shape)
    return X, y


def load_digits(
    return_X_y: bool = True, *, images: bool = False
) -> tuple[NDArray[np.float64], NDArray[np.int64]] | dict[str, NDArray]:
    """scikit-learn's bundled 8x8 handwritten digits (no network needed).

    Needs scikit-learn: ``pip install "fastnn[datasets]"``.

    Parameters
    ----------
    return_X_y : bool, default True
        True: return ``(X, y)``; False: a dict.
    images : bool, default False
        ``X`` as images (1797, 1, 8, 8), channels first (the input of :class:`fastnn.layers.Conv2d`),
        instead of rows (1797, 64).

    Returns
    -------
    X : numpy.ndarray
        float64 (1797, 64) (or (1797, 1, 8, 8)) scaled to [0, 1] (pixel values / 16).
    y : numpy.ndarray
        int64 (1797,) in [0, 10).
    dataset : dict
        Instead of ``(X, y)`` when ``return_X_y=False``: ``"data"`` (that ``X``), ``"target"``,
        ``"images"`` (1797, 8, 8), scaled the same way, and ``"target_names"``.

    Raises
    ------
    ImportError
        If scikit-learn is not installed.

    Examples
    --------
    >>> import fastnn as fnn
    >>> X, y = fnn.data.load_digits()
    >>> X.shape, X.dtype, float(X.max()), y[:5]
    ((1797, 64), dtype('float64'), 1.0, array([0, 1, 2, 3, 4]))
    >>> fnn.data.load_digits(images=True)[0].shape
    (1797, 1, 8, 8)
    """
    return_X_y = _check_bool("return_X_y", return_X_y)
    images = _check_bool("images", images)
    try:
        from sklearn.datasets import load_digits as _sk_load_digits
    except ImportError as exc:
        raise ImportError(
            'load_digits needs scikit-learn, which is not installed: pip install "fastnn[datasets]" '
            "(or pip install scikit-learn)"
        ) from exc
    bunch = _sk_load_digits()
    X = np.asarray(bunch.data, dtype=np.float64) / 16.0
    y = np.asarray(bunch.target, dtype=np.int64)
    flat = X
    if images:
        X = X.reshape(-1, 1, 8, 8)
    if return_X_y:
        return X, y
    return {
        "data": X,
        "target": y,
        "images": flat.reshape(-1, 8, 8),
        "target_names": np.asarray(bunch.target_names, dtype=np.int64),
    }


# --------------------------------------------------------------------------------------------
# IDX (MNIST) files
# --------------------------------------------------------------------------------------------


def _read_bytes(path: str) -> bytes:
    """The file's content, gunzipped when it starts with the gzip magic bytes."""
    _not_a_directory(path)
    with open(path, "rb") as f:
        raw = f.read()
    if raw[:2] != _GZIP_MAGIC:
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as exc:
        raise ValueError(f"{path!r}: corrupt or truncated gzip data ({exc})") from exc


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (the MNIST format), gzipped or not (detected from its first bytes).

    Supports every IDX type (uint8, int8, int16, int32, float32, float64) and any number of
    dimensions.

    Parameters
    ----------
    path : str or os.PathLike
        The file, e.g. ``train-images-idx3-ubyte.gz``.

    Returns
    -------
    numpy.ndarray
        A new, writable array of the stored dtype in native byte order with the stored shape
        (MNIST images: uint8 (n, 28, 28); labels: uint8 (n,)).

    Raises
    ------
    ValueError
        Naming the file, when it is truncated, too long or not IDX.

    Examples
    --------
    >>> import fastnn as fnn
    >>> fnn.data.write_idx("labels.idx", np.array([3, 1, 4], np.uint8))
    >>> fnn.data.read_idx("labels.idx")
    array([3, 1, 4], dtype=uint8)
    """
    path = _path("path", path)
    data = _read_bytes(path)
    if len(data) < 4:
        raise ValueError(f"{path!r} is not an IDX file: {len(data)} bytes, shorter than the 4-byte magic number")
    zero, code, ndim = data[0] << 8 | data[1], data[2], data[3]
    if zero != 0 or code not in _IDX_DTYPES:
        raise ValueError(
            f"{path!r} is not an IDX file: magic number {data[:4].hex()} (expected 0000 followed by a "
            f"type byte in {{{', '.join(f'{c:02x}' for c in _IDX_DTYPES)}}} and the number of dimensions)"
        )
    header = 4 + 4 * ndim
    if len(data) < header:
        raise ValueError(
            f"{path!r}: truncated IDX header: {ndim} dimensions need {header} header bytes, file has {len(data)}"
        )
    shape = struct.unpack(f">{ndim}I", data[4:header])
    dtype = _IDX_DTYPES[code]
    count = math.prod(shape)
    expected = header + count * dtype.itemsize
    if len(data) != expected:
        what = "truncated" if len(data) < expected else "has trailing bytes"
        raise ValueError(
            f"{path!r}: IDX data {what}: shape {shape} of {dtype.newbyteorder('=').name} needs "
            f"{expected} bytes in all, file has {len(data)}"
        )
    values = np.frombuffer(data, dtype=dtype, count=count, offset=header)
    return values.astype(dtype.newbyteorder("="), copy=True).reshape(shape)


def write_idx(path: str | os.PathLike, array: ArrayLike) -> None:
    """Write ``array`` as an IDX file (gzipped when ``path`` ends with ``.gz``).

    The file is written atomically (a temporary file, then a rename).

    Parameters
    ----------
    path : str or os.PathLike
        The file to write.
    array : array_like
        dtype uint8, int8, int16, int32, float32 or float64; at most 255 dimensions, each below
        2**32.

    Raises
    ------
    TypeError
        If the dtype is not one IDX stores.
    ValueError
        If the array has too many or too large dimensions.

    Examples
    --------
    >>> import fastnn as fnn
    >>> images = np.arange(8, dtype=np.uint8).reshape(2, 2, 2)
    >>> fnn.data.write_idx("images.idx.gz", images)
    >>> fnn.data.read_idx("images.idx.gz").shape
    (2, 2, 2)
    """
    path = _path("path", path)
    a = np.asarray(array)
    key = a.dtype.newbyteorder("=") if a.dtype.byteorder in "<>" else a.dtype
    if key not in _IDX_CODES:
        raise TypeError(
            f"array has dtype {a.dtype}, which IDX cannot store; convert it first, e.g. "
            "array.astype(np.uint8), np.int32 or np.float32 (IDX holds uint8, int8, int16, int32, "
            "float32, float64)"
        )
    if a.ndim > 255 or any(d >= 2**32 for d in a.shape):
        raise ValueError(f"array of shape {a.shape} does not fit IDX (at most 255 dimensions, each < 2**32)")
    code = _IDX_CODES[key]
    header = struct.pack(f">BBBB{a.ndim}I", 0, 0, code, a.ndim, *a.shape)
    body = np.ascontiguousarray(a, dtype=_IDX_DTYPES[code])

    def write(f):
        if path.endswith(".gz"):
            # filename="" and mtime=0: the same array gives the same bytes
            with gzip.GzipFile(filename="", mode="wb", fileobj=f, compresslevel=6, mtime=0) as gz:
                gz.write(header)
                gz.write(memoryview(body).cast("B"))
        else:
            f.write(header)
            f.write(memoryview(body).cast("B"))

    with atomic_write(path) as handle:  # fsynced, through symlinks, the mode open() gives
        write(handle)


# --------------------------------------------------------------------------------------------
# CSV
# --------------------------------------------------------------------------------------------


def _is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


def _open_text(path: str):
    """Text handle on ``path``, gunzipping it when it starts with the gzip magic bytes."""
    if _head(path, 2) == _GZIP_MAGIC:
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8-sig", newline="")
    return open(path, encoding="utf-8-sig", newline="")


def _read_rows(path: str, delimiter: str, limit: int | None = None) -> tuple[list[list[str]], list[int]]:
    """The first ``limit`` (default: all) non-blank rows, cells stripped, and the line each ends on."""
    rows, lines = [], []
    try:
        with _open_text(path) as f:
            reader = csv.reader(f, delimiter=delimiter)
            for row in reader:
                cells = [c.strip() for c in row]
                if any(cells):
                    rows.append(cells)
                    lines.append(reader.line_num)
                    if len(rows) == limit:
                        break
    except (UnicodeDecodeError, csv.Error, EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise ValueError(f"{path!r} could not be read as delimited text: {exc}") from exc
    return rows, lines


def _index_text(target: Any) -> bool:
    """Whether ``target`` is a str spelling a column index, such as "0" or "-1"."""
    return isinstance(target, str) and re.fullmatch(r"[+-]?\d+", target.strip()) is not None


def _resolve_target(target: Any, names: list[str] | None, n_cols: int, path: str) -> int:
    if isinstance(target, str) and not (_index_text(target) and (names is None or target not in names)):
        if names is None:
            raise ValueError(
                f"target={target!r} is a column name but {path!r} has no header row; pass the column "
                "index instead (e.g. target=-1) or header=True if the first row is a header"
            )
        hits = [j for j, name in enumerate(names) if name == target]
        if not hits:
            close = difflib.get_close_matches(target, names, n=3)
            hint = f"; did you mean {' or '.join(map(repr, close))}?" if close else ""
            raise ValueError(f"target={target!r} is not a column of {path!r}; columns are {names}{hint}")
        if len(hits) > 1:
            raise ValueError(f"target={target!r} names several columns of {path!r} (indices {hits}); pass an index")
        return hits[0]
    if _index_text(target):
        target = int(target)
    if isinstance(target, bool) or not isinstance(target, (int, np.integer)):
        raise TypeError(
            f"target must be a column name (str), a column index (int) or None, got {type(target).__name__}"
        )
    if not -n_cols <= target < n_cols:
        raise ValueError(
            f"target={target} is out of range for {path!r}, which has {n_cols} columns "
            f"(valid indices: {-n_cols} to {n_cols - 1})"
        )
    return int(target) % n_cols


def _to_float(
    cells: np.ndarray, lines: list[int], columns: list[int], names: list[str] | None, path: str
) -> np.ndarray:
    """``cells`` (a 2-D str array) as float64; the first unparsable cell is named in the error."""
    try:
        return cells.astype(np.float64)
    except ValueError:
        pass
    for j in range(cells.shape[1]):
        try:
            cells[:, j].astype(np.float64)
            continue
        except ValueError:
            pass
        for i in range(cells.shape[0]):
            try:
                np.array(cells[i, j]).astype(np.float64)
            except ValueError:
                col = columns[j]
                label = f"column {col}" + (f" ({names[col]!r})" if names is not None else "")
                problem = (
                    "the cell is empty (a missing value); fill it in or drop the row"
                    if cells[i, j] == ""
                    else f"{str(cells[i, j])!r} is not a number; feature columns must be numeric (make it the "
                    "target column, or drop it)"
                )
                raise ValueError(f"{path!r}, line {lines[i]}, {label}: {problem}") from None
    raise ValueError(f"{path!r}: some feature cells are not numbers")  # pragma: no cover


def read_csv(
    path: str | os.PathLike,
    target: str | int | None = None,
    delimiter: str = ",",
    header: str | bool = "infer",
    *,
    return_classes: bool = False,
):
    """Read a delimited text file (optionally gzipped) of numbers into ``(X, y)``.

    Blank lines are skipped; cells are stripped of surrounding spaces.

    Parameters
    ----------
    path : str or os.PathLike
        The file (``.gz`` is decompressed).
    target : str, int or None, default None
        The label column, by name (needs a header) or index (negative counts from the end; a str
        of digits such as ``"0"`` or ``"-1"`` that names no column is an index too, for command
        lines); None means no labels (``y`` is None).
    delimiter : str, default ","
        One character.
    header : bool or "infer", default "infer"
        "infer": the first row is a header when it holds the ``target`` name, or when some column
        holds a non-number there and a number in the second row.
    return_classes : bool, default False
        Also return the class names.

    Returns
    -------
    X : numpy.ndarray
        float64 (n_rows, n_features).
    y : numpy.ndarray or None
        int64 when the target column holds integers or strings (strings become ``0..k-1`` in
        sorted order), float64 for other numbers; None without ``target``.
    classes : numpy.ndarray or None
        Only with ``return_classes=True``: the sorted class names (a str array) when the target
        held strings, else None.

    Raises
    ------
    ValueError
        Naming the file and line, for a malformed file, a non-numeric feature cell, an empty
        target cell or an unknown target column.

    Examples
    --------
    >>> import fastnn as fnn
    >>> _ = open("flowers.csv", "w").write("length,width,kind\\n1.5,0.2,rose\\n4.0,1.3,iris\\n")
    >>> X, y, classes = fnn.data.read_csv("flowers.csv", target="kind", return_classes=True)
    >>> X
    array([[1.5, 0.2],
           [4. , 1.3]])
    >>> y, classes
    (array([1, 0]), array(['iris', 'rose'], dtype='<U4'))
    """
    path = _path("path", path)
    if not isinstance(delimiter, str) or len(delimiter) != 1:
        raise ValueError(f"delimiter must be a single character, got {delimiter!r}")
    if not (isinstance(header, (bool, np.bool_)) or (isinstance(header, str) and header == "infer")):
        raise ValueError(f"header must be True, False or 'infer', got {header!r}")
    return_classes = _check_bool("return_classes", return_classes)
    lines: list[int] | None  # each row's line number (None after the fast parse)
    rows, lines = _read_rows(path, delimiter, limit=2)
    if not rows:
        raise ValueError(f"{path!r} is empty (no non-blank rows)")
    n_cols = len(rows[0])
    if n_cols == 1 and target is not None:
        raise ValueError(
            f"{path!r} reads as a single column with delimiter {delimiter!r} (its first row is "
            f"{rows[0][0][:60]!r}), which leaves no feature column besides the target; is the delimiter right?"
        )
    if header == "infer":
        header = (isinstance(target, str) and not _index_text(target) and target in rows[0]) or (
            len(rows) > 1
            and len(rows[1]) == n_cols
            and any(not _is_number(a) and _is_number(b) for a, b in zip(rows[0], rows[1]))
        )
    names = rows[0] if header else None
    if header and len(rows) == 1:
        raise ValueError(f"{path!r} has a header row but no data rows")
    t = None if target is None else _resolve_target(target, names, n_cols, path)
    feature_cols = [j for j in range(n_cols) if j != t]
    if not feature_cols:
        raise ValueError(f"{path!r} has no feature columns besides the target column")
    skip = lines[0] if header else 0
    parsed = _read_numeric_fast(path, delimiter, skip, n_cols, feature_cols, t)
    if parsed is not None:
        X, target_cells = parsed
        lines = None
    else:  # something is off: read cell by cell, to name the culprit
        rows, lines = _read_rows(path, delimiter)
        for row, line in zip(rows, lines):
            if len(row) != n_cols:
                raise ValueError(
                    f"{path!r}, line {line}: {len(row)} cells, but the first row has {n_cols} "
                    f"(is the delimiter {delimiter!r} right?)"
                )
        if header:
            rows, lines = rows[1:], lines[1:]
        cells = np.array(rows, dtype=str)
        X = _to_float(cells[:, feature_cols], lines, feature_cols, names, path)
        target_cells = None if t is None else cells[:, t]
    y, classes = None, None
    if t is not None:
        y, classes = _parse_target(target_cells, lines, path)
    return (X, y, classes) if return_classes else (X, y)


def _read_numeric_fast(path: str, delimiter: str, skip: int, n_cols: int, feature_cols: list[int], t: int | None):
    """``(X, target cells)`` through NumPy's C parser, or ``None`` when the file is not that simple."""
    options: dict[str, Any] = {"delimiter": delimiter, "comments": None, "skiprows": skip, "ndmin": 2, "quotechar": '"'}
    try:
        with _open_text(path) as f:
            table = np.loadtxt(f, dtype=np.float64, **options)
        if table.shape[1] != n_cols:
            return None
        if t is None:
            return table, None
        return table[:, feature_cols], table[:, t]
    except ValueError:
        if t is None:
            return None
    # a column of class names: features and labels parsed apart (usecols), the row widths checked
    # by counting delimiters (no quoted cells, so each row of n_cols cells has n_cols - 1 of them)
    raw = _read_bytes(path)
    if not delimiter.isascii() or b'"' in raw:
        return None
    try:
        with _open_text(path) as f:
            X = np.loadtxt(f, dtype=np.float64, usecols=feature_cols, **options)
        with _open_text(path) as f:
            labels = np.char.strip(np.loadtxt(f, dtype=str, usecols=[t], **options)[:, 0])
    except ValueError:
        return None
    n_rows = len(X) + (1 if skip else 0)
    if len(labels) != len(X) or np.any(labels == "") or raw.count(delimiter.encode()) != (n_cols - 1) * n_rows:
        return None
    return X, labels


def _parse_target(col: np.ndarray, lines: list[int] | None, path: str):
    """Labels from the target column: float64 or int64 numbers, or class names -> ``(codes, names)``."""
    if col.dtype.kind == "f":
        values = col
    else:
        empty = np.flatnonzero(col == "")
        if empty.size:
            where = f"line {lines[empty[0]]}" if lines is not None else f"row {empty[0]}"
            raise ValueError(f"{path!r}, {where}: the target cell is empty")
        try:
            values = col.astype(np.float64)
        except ValueError:
            classes, y = np.unique(col, return_inverse=True)
            return y.astype(np.int64), classes
    if np.all(np.isfinite(values)) and np.all(values == np.round(values)) and np.all(np.abs(values) < 2.0**63):
        return values.astype(np.int64), None
    return values, None


# --------------------------------------------------------------------------------------------
# NPZ
# --------------------------------------------------------------------------------------------


def read_npz(path: str | os.PathLike, x_key: str = "X", y_key: str | None = "y") -> tuple[NDArray, NDArray | None]:
    """Read ``(X, y)`` from a ``.npz`` archive (``np.savez``), never unpickling anything.

    Parameters
    ----------
    path : str or os.PathLike
        The archive.
    x_key : str, default "X"
        The key of X.
    y_key : str or None, default "y"
        The key of y; None reads no y. Left at "y", an archive without "y" gives ``y = None``.

    Returns
    -------
    X : numpy.ndarray
        The array stored under ``x_key``, as stored (dtype and shape).
    y : numpy.ndarray or None
        The array stored under ``y_key``, or None.

    Raises
    ------
    KeyError
        For a missing key (the message lists the archive's keys).
    TypeError
        If a key is not a str.
    ValueError
        If the file is not an ``.npz`` archive.

    Examples
    --------
    >>> import fastnn as fnn
    >>> np.savez("data.npz", X=np.ones((2, 3), np.float32), y=np.array([0, 1]))
    >>> X, y = fnn.data.read_npz("data.npz")
    >>> X.shape, X.dtype, y
    ((2, 3), dtype('float32'), array([0, 1]))
    """
    path = _path("path", path)
    for name, key in (("x_key", x_key), ("y_key", y_key)):
        if key is not None and not isinstance(key, str):
            raise TypeError(f"{name} must be a str{' or None' if name == 'y_key' else ''}, got {type(key).__name__}")
    if x_key is None:
        raise TypeError("x_key must be a str, got None")
    if _head(path) != _ZIP_MAGIC:
        raise ValueError(f"{path!r} is not an .npz archive (it does not start with the zip magic bytes)")
    try:
        archive = np.load(path, allow_pickle=False)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
        raise ValueError(f"{path!r} is not a readable .npz archive: {exc}") from exc
    with archive:
        keys = list(archive.files)

        def get(key):
            if key not in keys:
                raise KeyError(f"{path!r} has no array {key!r}; its arrays are {keys}")
            try:
                return archive[key]
            except (ValueError, OSError, zipfile.BadZipFile, EOFError, zlib.error) as exc:
                raise ValueError(
                    f"{path!r}: array {key!r} cannot be read without unpickling or is corrupt: {exc}"
                ) from exc

        X = get(x_key)
        y = None
        if y_key is not None and (y_key in keys or y_key != "y"):
            y = get(y_key)
    return X, y


# --------------------------------------------------------------------------------------------
# any file
# --------------------------------------------------------------------------------------------


def _guess_delimiter(path: str, default: str) -> str:
    """``default``, unless the first non-blank line lacks it and holds exactly one of ``;``, tab
    and ``|`` (a semicolon-separated export, say): then that one."""
    try:
        with _open_text(path) as f:
            line = next((text for text in f if text.strip()), "")
    except (UnicodeDecodeError, EOFError, zlib.error, gzip.BadGzipFile):
        return default  # read_csv names the problem
    found = [c for c in (";", "\t", "|") if c != default and c in line]
    return found[0] if default not in line and len(found) == 1 else default


def _looks_like_idx(head: bytes) -> bool:
    return len(head) == 4 and head[0] == 0 and head[1] == 0 and head[2] in _IDX_DTYPES


def _as_float(X: np.ndarray) -> np.ndarray:
    return X if np.issubdtype(X.dtype, np.floating) else X.astype(np.float64)


def _samples(X: np.ndarray, images: bool) -> np.ndarray:
    """``X`` as ``(n, features)``, or with ``images`` its per-sample shape kept, channels first:
    ``(n, rows, cols)`` -> ``(n, 1, rows, cols)``; 1-D data -> ``(n, 1)``."""
    if X.ndim == 0:
        raise ValueError(f"the data is a single value (a 0-dimensional array {X!r}), not samples; expected (n, ...)")
    if X.ndim == 1:
        return X.reshape(-1, 1)
    if not images:
        return X.reshape(len(X), -1)
    return X.reshape(len(X), 1, *X.shape[1:]) if X.ndim == 3 else X


def load_file(
    path: str | os.PathLike,
    target: Any = None,
    *,
    header: str | bool = "infer",
    images: bool = False,
    delimiter: str | None = None,
) -> tuple[NDArray, NDArray | None]:
    """Load ``(X, y)`` from a CSV/TSV, NPZ or IDX file, chosen by extension and first bytes.

    - ``.csv`` / ``.tsv`` / ``.txt`` (optionally ``.gz``): :func:`read_csv`; the delimiter is
      a tab for ``.tsv``, else a comma, or the ``;``, tab or ``|`` of a first line without commas.
    - ``.npz`` (or any zip): :func:`read_npz`.
    - IDX (``.idx``, ``*-ubyte``, ``.gz``, or IDX magic bytes): :func:`read_idx`; images
      (n, rows, cols) are flattened to (n, rows * cols).

    Parameters
    ----------
    path : str or os.PathLike
        The file.
    target : str, int or None, default None
        CSV: the label column's name or index (None: no labels). NPZ: the label array's key
        (default "y"). IDX: the path of the labels IDX file (or None).
    header : bool or "infer", default "infer"
        CSV/TSV only, as in :func:`read_csv`.
    delimiter : str, optional
        CSV/TSV only: one character (default: chosen as above).
    images : bool, default False
        Keep the per-sample shape of IDX and NPZ arrays for convolutions, channels first:
        (n, rows, cols) becomes (n, 1, rows, cols), (n, C, H, W) stays; 2-D data stays
        (n, features).

    Returns
    -------
    X : numpy.ndarray
        2-D (unless ``images``) and floating: integer data become float64 (not rescaled: divide
        MNIST by 255 yourself), float32 stays float32.
    y : numpy.ndarray or None
        As the reader gives it (IDX labels as int64), or None.

    Raises
    ------
    ValueError
        For an unknown or malformed file, or ``header`` given for a file that is not CSV/TSV.

    Examples
    --------
    >>> import fastnn as fnn
    >>> fnn.data.write_idx("images.idx", np.zeros((3, 2, 2), np.uint8))
    >>> fnn.data.write_idx("labels.idx", np.array([0, 1, 2], np.uint8))
    >>> X, y = fnn.data.load_file("images.idx", target="labels.idx")
    >>> X.shape, X.dtype, y
    ((3, 4), dtype('float64'), array([0, 1, 2]))
    >>> fnn.data.load_file("images.idx", images=True)[0].shape
    (3, 1, 2, 2)
    """
    path = _path("path", path)
    images = _check_bool("images", images)
    name = path.lower()
    inner = name.removesuffix(".gz")
    head = _head(path)
    if head[:2] == _GZIP_MAGIC and not inner.endswith((".csv", ".tsv", ".txt")):
        with gzip.open(path, "rb") as f:
            try:
                head = f.read(4)
            except (OSError, EOFError, zlib.error) as exc:
                raise ValueError(f"{path!r}: corrupt gzip data ({exc})") from exc
    if inner.endswith((".csv", ".tsv", ".txt")):
        if delimiter is None:
            delimiter = _guess_delimiter(path, "\t" if inner.endswith(".tsv") else ",")
        return read_csv(path, target=target, delimiter=delimiter, header=header)
    if not (isinstance(header, str) and header == "infer"):
        raise ValueError(f"header={header!r} applies to CSV/TSV files only, and {path!r} is not one")
    if delimiter is not None:
        raise ValueError(f"delimiter={delimiter!r} applies to CSV/TSV files only, and {path!r} is not one")
    if inner.endswith(".npz") or head == _ZIP_MAGIC:
        if target is not None and not isinstance(target, str):
            raise TypeError(
                f"target for an .npz file must be the label array's key (a str), got {type(target).__name__}"
            )
        X, y = read_npz(path, y_key="y" if target is None else target)
        return _as_float(_samples(X, images)), y
    if _looks_like_idx(head) or inner.endswith((".idx", "ubyte")) or "idx" in os.path.basename(inner):
        X = _samples(read_idx(path), images)
        y = None
        if target is not None:
            if not isinstance(target, (str, os.PathLike)):
                raise TypeError(
                    f"target for an IDX file must be the path of the labels IDX file, got {type(target).__name__}"
                )
            y = read_idx(target)
            if y.ndim == 2 and y.shape[1] == 1:
                y = y[:, 0]
            if y.ndim != 1 or len(y) != len(X):
                raise ValueError(
                    f"labels file {os.fspath(target)!r} holds shape {y.shape}; expected "
                    f"({len(X)},): one label per image of {path!r}"
                )
            if np.issubdtype(y.dtype, np.integer):
                y = y.astype(np.int64)
        return _as_float(X), y
    raise ValueError(
        f"cannot tell the format of {path!r}: expected .csv/.tsv, .npz or an IDX file (.idx, *-ubyte, optionally .gz)"
    )


# --------------------------------------------------------------------------------------------
# splitting and scaling
# --------------------------------------------------------------------------------------------


def _n_test(test_size: Any, n: int) -> int:
    msg = f"test_size must be in (0, 1) or an int in [1, n_samples-1] = [1, {n - 1}], got {test_size!r}"
    if isinstance(test_size, bool) or not isinstance(test_size, (int, float, np.integer, np.floating)):
        raise TypeError(msg)
    if isinstance(test_size, (int, np.integer)):
        if not 1 <= test_size <= n - 1:
            raise ValueError(msg)
        return int(test_size)
    if not 0.0 < test_size < 1.0:
        raise ValueError(msg)
    n_test = math.ceil(test_size * n)
    if not 1 <= n_test <= n - 1:
        raise ValueError(
            f"test_size={test_size} leaves {n_test} of {n} samples for the test set; both sets need at least one sample"
        )
    return n_test


def _stratified_test_counts(counts: np.ndarray, n_test: int, rng: np.random.Generator) -> np.ndarray:
    """Per-class test counts summing to ``n_test``, proportional to ``counts`` (largest remainder)."""
    ideal = counts * (n_test / counts.sum())
    take = np.floor(ideal).astype(np.int64)
    left = n_test - take.sum()
    if left:
        # largest fractional part first; ties broken at random (seeded)
        order = np.lexsort((rng.random(len(counts)), -(ideal - take)))
        take[order[:left]] += 1
    return take


def train_test_split(
    X: ArrayLike, y: ArrayLike | None, test_size: float = 0.2, seed: Any = 0, stratify: Any = False
) -> tuple[NDArray, NDArray, NDArray | None, NDArray | None]:
    """Shuffle and split into ``X_train, X_test, y_train, y_test``.

    The same ``seed`` gives the same split.

    Parameters
    ----------
    X : array_like
        (n_samples, ...), n_samples >= 2.
    y : array_like or None
        (n_samples, ...) targets; None gives None for both y parts.
    test_size : float or int, default 0.2
        A fraction in (0, 1) (rounded up to whole samples) or a count in [1, n_samples - 1].
    seed : int, None or numpy.random.Generator, default 0
        The shuffling's seed.
    stratify : bool or array_like, default False
        True keeps each class's share of ``y`` in both sets; an array of labels (n_samples,)
        stratifies on it instead.

    Returns
    -------
    X_train, X_test : numpy.ndarray
        Rows of ``X``, dtype kept.
    y_train, y_test : numpy.ndarray or None
        The matching rows of ``y``.

    Raises
    ------
    ValueError
        If X has fewer than 2 samples, X and y differ in length, ``test_size`` is out of range,
        or a stratified split cannot give every class a sample in both sets.

    Examples
    --------
    >>> import fastnn as fnn
    >>> X, y = np.arange(20.0).reshape(10, 2), np.array([0, 1] * 5)
    >>> X_train, X_test, y_train, y_test = fnn.data.train_test_split(X, y, test_size=0.4, stratify=True)
    >>> X_train.shape, X_test.shape, np.bincount(y_test)
    ((6, 2), (4, 2), array([2, 2]))
    """
    X = np.asarray(X)
    if X.ndim == 0:
        raise ValueError("X must be an array with one sample per row, got a scalar")
    n = len(X)
    if n < 2:
        raise ValueError(f"X must have at least 2 samples to split, got {n}")
    if y is not None:
        y = np.asarray(y)
        if y.ndim == 0 or len(y) != n:
            raise ValueError(
                f"X and y must have the same number of samples, got {n} and {'a scalar' if y.ndim == 0 else len(y)}"
            )
    n_test = _n_test(test_size, n)
    rng = _rng(seed)
    if isinstance(stratify, (bool, np.bool_)):
        labels = None
        if stratify:
            if y is None:
                raise ValueError("stratify=True needs labels y; pass y or stratify=False")
            labels = y
    else:
        labels = np.asarray(stratify)
        if labels.ndim != 1 or len(labels) != n:
            raise ValueError(f"stratify must be True, False or an array of {n} labels, got shape {labels.shape}")
    if labels is None:
        order = rng.permutation(n)
        test, train = order[:n_test], order[n_test:]
    else:
        if labels.ndim != 1:
            raise ValueError(f"stratify=True needs 1-D class labels y, got y of shape {labels.shape}")
        classes, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
        if counts.min() < 2:
            raise ValueError(
                f"stratify: class {classes[counts.argmin()]!r} has only 1 sample; every class "
                "needs at least 2 (or use stratify=False)"
            )
        take = _stratified_test_counts(counts, n_test, rng)
        test_parts, train_parts = [], []
        for c, k in enumerate(take):
            members = rng.permutation(np.flatnonzero(inverse == c))
            test_parts.append(members[:k])
            train_parts.append(members[k:])
        test = rng.permutation(np.concatenate(test_parts))
        train = rng.permutation(np.concatenate(train_parts))
    if y is None:
        return X[train], X[test], None, None
    return X[train], X[test], y[train], y[test]


class Standardizer:
    """Per-feature standardisation: ``(X - mean_) / std_``.

    ``fit`` computes ``mean_`` and ``std_`` (population std) of each column of a 2-D ``X``;
    constant columns get ``std_ = 1`` (they become 0, not NaN). Floating inputs keep their dtype
    (float32 stays float32; statistics are computed in float64); integer inputs give float64.

    Examples
    --------
    >>> import fastnn as fnn
    >>> scaler = fnn.data.Standardizer().fit([[1.0, 5.0], [3.0, 5.0]])
    >>> scaler.mean_, scaler.std_
    (array([2., 5.]), array([1., 1.]))
    >>> scaler.transform(np.array([[3.0, 6.0]], np.float32))
    array([[1., 1.]], dtype=float32)
    """

    def __init__(self) -> None:
        self.mean_: np.ndarray | None = None
        self.std_: np.ndarray | None = None

    @staticmethod
    def _check(X: Any, name: str = "X") -> np.ndarray:
        X = np.asarray(X)
        if X.dtype.kind not in "biuf":
            raise TypeError(f"{name} must hold numbers, got dtype {X.dtype}")
        if X.ndim != 2:
            hint = " (use X.reshape(-1, 1) for a single feature)" if X.ndim == 1 else ""
            raise ValueError(f"{name} must be 2-D (n_samples, n_features), got shape {X.shape}{hint}")
        if not np.issubdtype(X.dtype, np.floating):
            X = X.astype(np.float64)
        if not np.isfinite(X.sum()) and not np.isfinite(X).all():
            raise ValueError(f"{name} contains NaN or inf; remove or impute those values first")
        return X

    def fit(self, X: ArrayLike) -> Standardizer:
        """Compute each column's mean and population standard deviation.

        Parameters
        ----------
        X : array_like
            2-D (n_samples, n_features), finite, n_samples >= 1.

        Returns
        -------
        Standardizer
            ``self``, with float64 ``mean_`` and ``std_`` of shape (n_features,).

        Raises
        ------
        ValueError
            If ``X`` is not 2-D, has no samples, or holds NaN or inf.

        Examples
        --------
        >>> import fastnn as fnn
        >>> fnn.data.Standardizer().fit(np.array([[0.0], [2.0]])).std_
        array([1.])
        """
        X = self._check(X)
        if X.shape[0] == 0:
            raise ValueError("X must have at least one sample to fit, got shape (0, ...)")
        x64 = X.astype(np.float64, copy=False)
        mean = x64.mean(axis=0)
        var = x64.var(axis=0)
        # the statistics are float64 whatever X's dtype, so "within rounding" is float64's (float32's
        # eps called a float32 column of mean 1000 and std 0.1 over 1000 rows constant)
        n, eps = X.shape[0], np.finfo(np.float64).eps
        # constant columns: exactly equal values (their mean is that value, so they become exactly 0),
        # or a variance within rounding of zero (as scikit-learn)
        exact = np.ptp(x64, axis=0) == 0
        mean = np.where(exact, x64[0], mean)
        constant = exact | (var <= n * eps * var + (n * mean * eps) ** 2)
        std = np.where(constant, 1.0, np.sqrt(var))
        self.mean_, self.std_ = mean.astype(X.dtype), std.astype(X.dtype)
        return self

    def _fitted(self, X: Any, name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(X checked, mean, std) in X's dtype; refuses an unfitted scaler or another width."""
        if self.mean_ is None or self.std_ is None:
            raise ValueError("this Standardizer is not fitted yet; call fit(X_train) first")
        X = self._check(X, name)
        if X.shape[1] != self.mean_.shape[0]:
            raise ValueError(
                f"{name} has {X.shape[1]} features, but the Standardizer was fitted on {self.mean_.shape[0]}"
            )
        return X, self.mean_.astype(X.dtype), self.std_.astype(X.dtype)

    def transform(self, X: ArrayLike) -> np.ndarray:
        """``(X - mean_) / std_``, in ``X``'s floating dtype.

        Parameters
        ----------
        X : array_like
            2-D (n_samples, n_features) with the fitted number of features.

        Returns
        -------
        numpy.ndarray
            A new array of X's shape; float32 stays float32, integers give float64.

        Raises
        ------
        ValueError
            If the scaler is not fitted, or ``X`` has another number of features.

        Examples
        --------
        >>> import fastnn as fnn
        >>> fnn.data.Standardizer().fit([[0.0], [2.0]]).transform([[4.0]])
        array([[3.]])
        """
        X, mean, std = self._fitted(X, "X")
        return (X - mean) / std

    def fit_transform(self, X: ArrayLike) -> np.ndarray:
        """:meth:`fit` on ``X``, then :meth:`transform` it.

        Parameters
        ----------
        X : array_like
            2-D (n_samples, n_features).

        Returns
        -------
        numpy.ndarray
            ``X`` standardised, in its floating dtype.

        Examples
        --------
        >>> import fastnn as fnn
        >>> fnn.data.Standardizer().fit_transform([[0.0], [2.0]])
        array([[-1.],
               [ 1.]])
        """
        return self.fit(X).transform(X)

    def inverse_transform(self, X: ArrayLike) -> np.ndarray:
        """``X * std_ + mean_``: undoes :meth:`transform`.

        Parameters
        ----------
        X : array_like
            2-D (n_samples, n_features), standardised.

        Returns
        -------
        numpy.ndarray
            In the original units, in X's floating dtype.

        Raises
        ------
        ValueError
            If the scaler is not fitted, or ``X`` has another number of features.

        Examples
        --------
        >>> import fastnn as fnn
        >>> scaler = fnn.data.Standardizer().fit([[0.0], [2.0]])
        >>> scaler.inverse_transform(scaler.transform([[5.0]]))
        array([[5.]])
        """
        X, mean, std = self._fitted(X, "X")
        return X * std + mean

    def __repr__(self) -> str:
        fitted = "unfitted" if self.mean_ is None else f"n_features={self.mean_.shape[0]}"
        return f"Standardizer({fitted})"


def standardize(
    X_train: ArrayLike, X_test: ArrayLike | None = None
) -> tuple[NDArray, Standardizer] | tuple[NDArray, NDArray, Standardizer]:
    """Fit a :class:`Standardizer` on ``X_train`` and apply it (and to ``X_test``).

    Parameters
    ----------
    X_train : array_like
        2-D (n_samples, n_features): the statistics come from it.
    X_test : array_like, optional
        2-D (m, n_features), scaled with ``X_train``'s statistics.

    Returns
    -------
    X_train_scaled : numpy.ndarray
        ``X_train`` standardised.
    X_test_scaled : numpy.ndarray
        Only when ``X_test`` is given.
    scaler : Standardizer
        The fitted scaler (for new data: ``scaler.transform``).

    Examples
    --------
    >>> import fastnn as fnn
    >>> train, test, scaler = fnn.data.standardize([[0.0], [2.0]], [[1.0]])
    >>> train.ravel(), test.ravel()
    (array([-1.,  1.]), array([0.]))
    """
    scaler = Standardizer()
    train = scaler.fit_transform(X_train)
    if X_test is None:
        return train, scaler
    return train, scaler.transform(X_test), scaler
