"""Data that is not one in-memory array: :class:`ArrayDataset` over in-memory or memory-mapped
arrays (``np.memmap``, ``np.load(..., mmap_mode="r")``) or a raw file mapped one block at a time
(:meth:`ArrayDataset.from_file`, :class:`MappedFile`), and its epoch order, shuffled by block.

Shuffling by block: the rows are cut into blocks of ``block_rows`` consecutive rows; an epoch
visits the blocks in a seeded random order and the rows of each block in a seeded random order,
so each block is read from storage in one sequential pass. Both orders are counter-based (a hash
of (seed, stream, epoch, block), :func:`fastnn.kernels.rng.permutation`), so the order of any
epoch and position is known without replaying the ones before: a resumed fit reads exactly the
rows the uninterrupted one would have read. With one block the order is the one ``fit`` gives
in-memory arrays.
"""

from __future__ import annotations

import hashlib
import mmap
import os

import numpy as np

from . import _validation as V
from .kernels.rng import permutation

SHUFFLE_STREAM = 1 << 40  # the rows' order inside a block (training.py's stream of the epoch order)
BLOCK_STREAM = (1 << 40) + 1  # the order of the blocks
DEFAULT_BLOCK_BYTES = 8 << 20  # rows per block: about 8 MiB of X (at least one row)
_FINGERPRINT_ROWS = 256


class MappedFile:
    """Rows of a raw C-ordered binary file, (rows, *sample_shape) of ``dtype`` from byte ``offset``,
    read by mapping only the bytes of the rows asked for (``mmap`` of that range, copied out and
    unmapped): the process never maps the whole file, so a file larger than the address space works.

    Indexing: ``f[lo:hi]`` (consecutive rows, one mapping) or an integer array (one row each).
    """

    def __init__(self, path, dtype, shape, offset: int = 0):
        self.path = os.fspath(path)
        self.dtype = np.dtype(dtype)
        self.shape = tuple(int(d) for d in shape)
        if not self.shape or any(d < 0 for d in self.shape):
            raise ValueError(f"shape must be (rows, *sample_shape) with non-negative sizes, got {shape!r}")
        self.offset = V.check_int(offset, "offset", minimum=0)
        self.row_bytes = self.dtype.itemsize * int(np.prod(self.shape[1:], dtype=np.int64))
        need = self.offset + self.row_bytes * self.shape[0]
        size = os.path.getsize(self.path)
        if size < need:
            raise ValueError(
                f"{self.path} has {size} bytes, but {self.shape[0]} rows of shape {self.shape[1:]} "
                f"{self.dtype} from offset {self.offset} need {need}: check dtype, shape and offset"
            )

    ndim = property(lambda self: len(self.shape))

    def __len__(self) -> int:
        return self.shape[0]

    def _read(self, lo: int, hi: int) -> np.ndarray:
        out = np.empty((hi - lo, *self.shape[1:]), self.dtype)
        if hi <= lo or self.row_bytes == 0:
            return out
        start = self.offset + lo * self.row_bytes
        aligned = start - start % mmap.ALLOCATIONGRANULARITY
        with (
            open(self.path, "rb") as handle,
            mmap.mmap(handle.fileno(), start - aligned + out.nbytes, access=mmap.ACCESS_READ, offset=aligned) as mapped,
        ):
            view = np.frombuffer(mapped, self.dtype, out.size, start - aligned)
            out.reshape(-1)[...] = view
            del view  # the mapping closes only when no array looks at it
        return out

    def __getitem__(self, key):
        if isinstance(key, slice):
            lo, hi, step = key.indices(self.shape[0])
            if step != 1:
                raise IndexError("MappedFile takes slices of consecutive rows (step 1) or integer row arrays")
            return self._read(lo, max(lo, hi))
        rows = np.asarray(key)
        if rows.dtype.kind not in "iu":
            raise IndexError(f"MappedFile takes a slice or integer rows, got {key!r}")
        flat = rows.reshape(-1)
        out = np.empty((flat.size, *self.shape[1:]), self.dtype)
        for i, r in enumerate(flat):
            out[i] = self._read(int(r), int(r) + 1)[0]
        return out.reshape((*rows.shape, *self.shape[1:]))

    def rows(self, lo: int, hi: int) -> MappedFile:
        """Rows [lo, hi) as a MappedFile of their own (nothing is read)."""
        return MappedFile(self.path, self.dtype, (hi - lo, *self.shape[1:]), self.offset + lo * self.row_bytes)

    def __repr__(self) -> str:
        return f"MappedFile({self.path!r}, dtype={self.dtype.name}, shape={self.shape}, offset={self.offset})"


def _check_rows(arr, argument: str):
    if isinstance(arr, MappedFile) or (isinstance(arr, np.ndarray) and arr.ndim >= 1):
        return arr
    if hasattr(arr, "__array__") or isinstance(arr, (list, tuple)):
        arr = np.asarray(arr)
        if arr.ndim >= 1:
            return arr
    raise TypeError(
        f"{argument} must be an array with one row per sample (a numpy array, np.memmap, "
        f"np.load(..., mmap_mode='r') or a fastnn.datasets.MappedFile), got {type(arr).__name__}"
    )


class ArrayDataset:
    """Samples ``X[i]``, ``y[i]`` of two row-aligned arrays, read a block of rows at a time.

    X, y: numpy arrays, ``np.memmap``, ``np.load(path, mmap_mode="r")`` or :class:`MappedFile`
    (nothing is copied up front); ``sample_weight``: optional (n,) weights of the samples' loss, as
    ``fit(..., sample_weight=)`` takes for arrays (checked block by block). ``block_rows``: rows per
    block (default: about 8 MiB of X); ``fit`` shuffles blocks, then rows within each block (see
    the module docstring), and ``model.fit(ArrayDataset(X, y), epochs=..., batch_size=...)``
    resumes exactly mid-epoch.
    """

    def __init__(self, X, y, *, sample_weight=None, block_rows: int | None = None):
        self.X, self.y = _check_rows(X, "X"), _check_rows(y, "y")
        self.sample_weight = None if sample_weight is None else _check_rows(sample_weight, "sample_weight")
        if len(self.X) != len(self.y):
            raise ValueError(f"X and y must have one row per sample: X has {len(self.X)} rows, y has {len(self.y)}")
        if self.sample_weight is not None and len(self.sample_weight) != len(self.X):
            raise ValueError(
                f"sample_weight must have one weight per sample: X has {len(self.X)} rows, "
                f"sample_weight has {len(self.sample_weight)}"
            )
        if len(self.X) == 0:
            raise ValueError("an ArrayDataset needs at least one sample; X has 0 rows")
        if block_rows is None:
            row_bytes = max(1, self.X.dtype.itemsize * int(np.prod(self.X.shape[1:], dtype=np.int64)))
            block_rows = max(1, DEFAULT_BLOCK_BYTES // row_bytes)
        self.block_rows = V.check_int(block_rows, "block_rows", minimum=1)

    @classmethod
    def from_file(
        cls, path, dtype, shape, y, *, offset: int = 0, sample_weight=None, block_rows: int | None = None
    ) -> ArrayDataset:
        """X from a raw binary file (``np.memmap``'s or ``ndarray.tofile``'s layout: C order,
        ``shape`` = (rows, *sample_shape) of ``dtype`` from byte ``offset``), mapped a block at a
        time (:class:`MappedFile`); y: an array (or a MappedFile) of ``rows`` targets."""
        return cls(MappedFile(path, dtype, shape, offset), y, sample_weight=sample_weight, block_rows=block_rows)

    @classmethod
    def from_npy(cls, path, y, *, sample_weight=None, block_rows: int | None = None) -> ArrayDataset:
        """X from a ``.npy`` file (``np.save``'s format, C order), mapped a block at a time like
        :meth:`from_file` (``np.load(path, mmap_mode="r")`` would map the whole file at once)."""
        fmt = np.lib.format
        with open(path, "rb") as handle:
            version = fmt.read_magic(handle)
            read_header = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
            shape, fortran_order, dtype = read_header(handle)
            offset = handle.tell()
        if fortran_order or dtype.hasobject or not shape:
            raise ValueError(
                f"{path} holds a {'Fortran-ordered' if fortran_order else 'object or 0-d'} array; "
                f"from_npy reads C-ordered numeric arrays with one row per sample"
            )
        return cls.from_file(path, dtype, shape, y, offset=offset, sample_weight=sample_weight, block_rows=block_rows)

    def __len__(self) -> int:
        return len(self.X)

    @property
    def blocks(self) -> int:
        return -(-len(self) // self.block_rows)

    def block(self, j: int) -> tuple[np.ndarray, ...]:
        """(X rows, y rows) of block ``j``, (X rows, y rows, weights) with sample weights (views of
        in-memory arrays, copies from files)."""
        lo = j * self.block_rows
        hi = min(len(self), lo + self.block_rows)
        if self.sample_weight is None:
            return self.X[lo:hi], self.y[lo:hi]
        return self.X[lo:hi], self.y[lo:hi], self.sample_weight[lo:hi]

    def rows(self, lo: int, hi: int) -> ArrayDataset:
        """The samples [lo, hi) as a dataset of the same block size (views: nothing is read)."""

        def part(arr):
            return None if arr is None else arr.rows(lo, hi) if isinstance(arr, MappedFile) else arr[lo:hi]

        return ArrayDataset(
            part(self.X), part(self.y), sample_weight=part(self.sample_weight), block_rows=self.block_rows
        )

    def fingerprint(self) -> str:
        """A short hash of the shapes, dtypes, block size and evenly spaced rows of X and y: a fit
        resumes mid-epoch only on a dataset with the same fingerprint."""
        h = hashlib.blake2b(digest_size=16)
        h.update(repr((self.X.shape, self.X.dtype.str, self.y.shape, self.y.dtype.str, self.block_rows)).encode())
        n = len(self)
        rows = np.unique(np.linspace(0, n - 1, min(n, _FINGERPRINT_ROWS)).astype(np.int64))
        h.update(np.ascontiguousarray(self.X[rows]).tobytes())
        h.update(np.ascontiguousarray(self.y[rows]).tobytes())
        if self.sample_weight is not None:
            h.update(np.ascontiguousarray(self.sample_weight[rows]).tobytes())
        return h.hexdigest()

    def __repr__(self) -> str:
        return f"ArrayDataset({len(self)} samples, block_rows={self.block_rows})"


class EpochOrder:
    """The rows of one epoch in order, read block by block: ``gather(lo, hi, x_out, y_out)`` fills
    positions [lo, hi) of the epoch (``check(*block)`` -> the block's (x, y) rows as trained on,
    as each block is loaded: :meth:`ArrayDataset.block`'s pair, or triple with weights)."""

    x: np.ndarray | None  # the loaded block's inputs, targets and its order of rows (None: no block)
    y: np.ndarray | None
    rows: np.ndarray | None

    def __init__(self, dataset: ArrayDataset, seed: int, epoch: int, shuffle: bool, check):
        self.dataset, self.seed, self.epoch, self.shuffle, self.check = dataset, seed, epoch, shuffle, check
        nb = dataset.blocks
        self.order = np.arange(nb, dtype=np.int64)
        if shuffle and nb > 1:
            permutation(nb, seed, BLOCK_STREAM, epoch, self.order)
        sizes = np.array(
            [min(len(dataset), (j + 1) * dataset.block_rows) - j * dataset.block_rows for j in self.order], np.int64
        )
        self.ends = np.cumsum(sizes)
        self.loaded = -1  # position k in self.order of the block held
        self.rows = None

    def _load(self, k: int) -> None:
        j = int(self.order[k])
        self.loaded, self.x, self.y = -1, None, None  # the previous block is freed before the next is read
        x, y = self.check(*self.dataset.block(j))
        size = x.shape[0]
        rows = np.arange(size, dtype=np.int64)
        if self.shuffle:  # with one block: (seed, stream, epoch), the order fit gives in-memory arrays
            permutation(size, self.seed, SHUFFLE_STREAM, self.epoch * self.dataset.blocks + j, rows)
        self.loaded, self.x, self.y, self.rows = k, x, y, rows

    def gather(self, lo: int, hi: int, x_out: np.ndarray, y_out: np.ndarray) -> None:
        p = lo
        while p < hi:
            k = int(np.searchsorted(self.ends, p, side="right"))
            if k != self.loaded:
                self._load(k)
            assert self.rows is not None and self.x is not None and self.y is not None  # _load set them
            start = self.ends[k] - self.rows.size
            stop = min(hi, int(self.ends[k]))
            picked = self.rows[p - start : stop - start]
            np.take(self.x, picked, axis=0, out=x_out[p - lo : stop - lo])
            np.take(self.y, picked, axis=0, out=y_out[p - lo : stop - lo])
            p = stop


__all__ = ["ArrayDataset", "EpochOrder", "MappedFile"]
