"""Data that is not one in-memory array: :class:`ArrayDataset` over in-memory or memory-mapped
arrays (``np.memmap``, ``np.load(..., mmap_mode="r")``) or a raw file mapped one block at a time
(:meth:`ArrayDataset.from_file`, :class:`MappedFile`), and its epoch order, shuffled by block.

Shuffling by block: the rows are cut into blocks of ``block_rows`` consecutive rows; an epoch
visits the blocks in a seeded random order and the rows of each block in a seeded random order,
so each block is read from storage in one sequential pass. Both orders are counter-based (a hash
of (seed, stream, epoch, block), ``fastnn.kernels.rng.permutation``), so the order of any
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
    """Rows of a raw C-ordered binary file, read by mapping only the bytes of the rows asked for.

    The file holds ``(rows, *sample_shape)`` values of ``dtype`` from byte ``offset``; each read maps
    that range (``mmap``), copies it out and unmaps it: the process never maps the whole file, so
    a file larger than the address space works. Indexing: ``f[lo:hi]`` (consecutive rows, one
    mapping) or an integer array (one row each); either returns a new array.

    Parameters
    ----------
    path : str or os.PathLike
        The file (``ndarray.tofile``'s or ``np.memmap``'s layout).
    dtype : numpy.dtype or str
        The values' dtype.
    shape : int or tuple of int
        ``(rows, *sample_shape)`` (an int: ``(rows,)``).
    offset : int, default 0
        Byte offset of the first row (a header's size).

    Raises
    ------
    ValueError
        If ``shape`` has a negative size, or the file is too short for ``shape`` from ``offset``.

    Examples
    --------
    >>> from fastnn.datasets import MappedFile
    >>> np.arange(12, dtype=np.float32).tofile("x.bin")
    >>> f = MappedFile("x.bin", np.float32, (4, 3))
    >>> len(f), f.ndim
    (4, 2)
    >>> f[1:3]
    array([[3., 4., 5.],
           [6., 7., 8.]], dtype=float32)
    >>> f[np.array([3, 0])][:, 0]
    array([9., 0.], dtype=float32)
    """

    def __init__(self, path, dtype, shape, offset: int = 0):
        self.path = os.fspath(path)
        self.dtype = np.dtype(dtype)
        self.shape = _file_shape(shape)
        self.offset = V.check_int(offset, "offset", minimum=0)
        self.row_bytes = self.dtype.itemsize * int(np.prod(self.shape[1:], dtype=np.int64))
        need = self.offset + self.row_bytes * self.shape[0]
        size = os.path.getsize(self.path)
        if size < need:
            raise ValueError(
                f"{self.path} has {size} bytes, but {self.shape[0]} rows of shape {self.shape[1:]} "
                f"{self.dtype} from offset {self.offset} need {need}: check dtype, shape and offset"
            )

    @property
    def ndim(self) -> int:
        """The number of axes: 1 + the sample's.

        Returns
        -------
        int
            ``len(self.shape)``.

        Examples
        --------
        >>> from fastnn.datasets import MappedFile
        >>> np.zeros((2, 3, 4), np.float32).tofile("x.bin")
        >>> MappedFile("x.bin", np.float32, (2, 3, 4)).ndim
        3
        """
        return len(self.shape)

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
        flat = self._row_numbers(rows.reshape(-1))
        out = np.empty((flat.size, *self.shape[1:]), self.dtype)
        for i, r in enumerate(flat):
            out[i] = self._read(int(r), int(r) + 1)[0]
        return out.reshape((*rows.shape, *self.shape[1:]))

    def _row_numbers(self, rows: np.ndarray) -> np.ndarray:
        """``rows`` with negative ones counted from the end (as NumPy); a row outside the file's
        ``shape`` is refused (reading it would map bytes past the rows, or past the file)."""
        n = self.shape[0]
        bad = (rows < -n) | (rows >= n)
        if bad.any():
            raise IndexError(f"row {int(rows[bad][0])} is out of range for a MappedFile of {n} rows")
        return np.where(rows < 0, rows + n, rows)

    def rows(self, lo: int, hi: int) -> MappedFile:
        """Rows [lo, hi) as a MappedFile of their own (nothing is read).

        Parameters
        ----------
        lo, hi : int
            The first row and one past the last, 0 <= lo <= hi <= len(self).

        Returns
        -------
        MappedFile
            Over the same file, from the byte of row ``lo``.

        Examples
        --------
        >>> from fastnn.datasets import MappedFile
        >>> np.arange(8, dtype=np.int64).tofile("x.bin")
        >>> MappedFile("x.bin", np.int64, (8,)).rows(2, 5)[:]
        array([2, 3, 4])
        """
        if not 0 <= lo <= hi <= self.shape[0]:
            raise IndexError(f"rows({lo}, {hi}) of a MappedFile of {self.shape[0]} rows; need 0 <= lo <= hi <= rows")
        return MappedFile(self.path, self.dtype, (hi - lo, *self.shape[1:]), self.offset + lo * self.row_bytes)

    def __repr__(self) -> str:
        return f"MappedFile({self.path!r}, dtype={self.dtype.name}, shape={self.shape}, offset={self.offset})"


def _file_shape(shape) -> tuple[int, ...]:
    """``shape`` (an int or a tuple of ints) as a tuple of non-negative ints, checked."""
    dims = (shape,) if isinstance(shape, (int, np.integer)) else shape
    try:
        checked = tuple(V.check_int(d, "shape", minimum=0) for d in dims)
    except (TypeError, ValueError):
        checked = ()
    if not checked:
        raise ValueError(f"shape must be (rows, *sample_shape) with non-negative integer sizes, got {shape!r}")
    return checked


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

    Nothing is copied up front. ``fit`` shuffles the blocks, then the rows within each block (see
    the module docstring), and ``model.fit(ArrayDataset(X, y), epochs=..., batch_size=...)``
    resumes exactly mid-epoch; ``evaluate`` takes one too.

    Parameters
    ----------
    X : array_like
        ``(n, *input_shape)``: a numpy array, ``np.memmap``, ``np.load(path, mmap_mode="r")`` or a
        :class:`MappedFile`.
    y : array_like
        (n, ...) targets, of the same kinds as ``X``.
    sample_weight : array_like, optional
        (n,) weights of the samples' loss, as ``fit(..., sample_weight=)`` takes them for arrays
        (checked block by block).
    block_rows : int, optional
        Rows per block, >= 1 (default: about 8 MiB of X, at least one row).

    Raises
    ------
    TypeError
        If ``X``, ``y`` or ``sample_weight`` is not an array with one row per sample.
    ValueError
        If their lengths differ, X has no rows, or ``block_rows`` < 1.

    Examples
    --------
    >>> from fastnn.datasets import ArrayDataset
    >>> X, y = np.arange(10.0).reshape(5, 2), np.arange(5)
    >>> ds = ArrayDataset(X, y, block_rows=2)
    >>> len(ds), ds.blocks
    (5, 3)
    >>> ds.block(2)
    (array([[8., 9.]]), array([4]))
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
        """A dataset whose X is a raw binary file, mapped a block at a time (:class:`MappedFile`).

        Parameters
        ----------
        path : str or os.PathLike
            The file, in ``np.memmap``'s or ``ndarray.tofile``'s layout (C order).
        dtype : numpy.dtype or str
            The dtype of X's values.
        shape : tuple of int
            ``(rows, *sample_shape)`` of X.
        y : array_like
            ``rows`` targets: an array or a :class:`MappedFile`.
        offset : int, default 0
            Byte offset of X's first row.
        sample_weight : array_like, optional
            (rows,) sample weights.
        block_rows : int, optional
            Rows per block (default: about 8 MiB of X).

        Returns
        -------
        ArrayDataset
            Over the mapped file.

        Raises
        ------
        ValueError
            If the file is too short for ``shape``, or as :class:`ArrayDataset` raises.

        Examples
        --------
        >>> from fastnn.datasets import ArrayDataset
        >>> np.arange(6, dtype=np.float32).tofile("x.bin")
        >>> ds = ArrayDataset.from_file("x.bin", np.float32, (3, 2), np.array([0, 1, 0]))
        >>> ds.block(0)[0]
        array([[0., 1.],
               [2., 3.],
               [4., 5.]], dtype=float32)
        """
        return cls(MappedFile(path, dtype, shape, offset), y, sample_weight=sample_weight, block_rows=block_rows)

    @classmethod
    def from_npy(cls, path, y, *, sample_weight=None, block_rows: int | None = None) -> ArrayDataset:
        """A dataset whose X is a ``.npy`` file, mapped a block at a time like :meth:`from_file`.

        ``np.load(path, mmap_mode="r")`` would map the whole file at once; this maps only the block
        being read.

        Parameters
        ----------
        path : str or os.PathLike
            A ``.npy`` file (``np.save``'s format) of a C-ordered numeric array ``(rows, *sample_shape)``.
        y : array_like
            One target per row: an array or a :class:`MappedFile`.
        sample_weight : array_like, optional
            (rows,) sample weights.
        block_rows : int, optional
            Rows per block (default: about 8 MiB of X).

        Returns
        -------
        ArrayDataset
            Over the mapped file.

        Raises
        ------
        ValueError
            If the file holds a Fortran-ordered, object or 0-d array.

        Examples
        --------
        >>> from fastnn.datasets import ArrayDataset
        >>> np.save("x.npy", np.ones((4, 2), np.float32))
        >>> ds = ArrayDataset.from_npy("x.npy", np.zeros(4), block_rows=3)
        >>> ds
        ArrayDataset(4 samples, block_rows=3)
        """
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
        """The number of blocks: ``ceil(len(self) / block_rows)``.

        Returns
        -------
        int
            Blocks, the last one possibly shorter.

        Examples
        --------
        >>> from fastnn.datasets import ArrayDataset
        >>> ArrayDataset(np.zeros((7, 1)), np.zeros(7), block_rows=3).blocks
        3
        """
        return -(-len(self) // self.block_rows)

    def block(self, j: int) -> tuple[np.ndarray, ...]:
        """The rows of block ``j``: X, y and, with sample weights, the weights.

        Parameters
        ----------
        j : int
            The block, 0 <= j < :attr:`blocks`.

        Returns
        -------
        tuple of numpy.ndarray
            (X rows, y rows), or (X rows, y rows, weights) with sample weights: views of in-memory
            arrays, copies read from files.

        Examples
        --------
        >>> from fastnn.datasets import ArrayDataset
        >>> ds = ArrayDataset(np.arange(3.0)[:, None], np.arange(3), sample_weight=np.ones(3), block_rows=2)
        >>> ds.block(1)
        (array([[2.]]), array([2]), array([1.]))
        """
        lo = j * self.block_rows
        hi = min(len(self), lo + self.block_rows)
        if self.sample_weight is None:
            return self.X[lo:hi], self.y[lo:hi]
        return self.X[lo:hi], self.y[lo:hi], self.sample_weight[lo:hi]

    def rows(self, lo: int, hi: int) -> ArrayDataset:
        """The samples [lo, hi) as a dataset of the same block size (views: nothing is read).

        Parameters
        ----------
        lo, hi : int
            The first sample and one past the last, 0 <= lo < hi <= len(self).

        Returns
        -------
        ArrayDataset
            Over the same arrays or files.

        Examples
        --------
        >>> from fastnn.datasets import ArrayDataset
        >>> ds = ArrayDataset(np.arange(6.0)[:, None], np.arange(6), block_rows=4).rows(2, 5)
        >>> ds, ds.block(0)[1]
        (ArrayDataset(3 samples, block_rows=4), array([2, 3, 4]))
        """

        def part(arr):
            return None if arr is None else arr.rows(lo, hi) if isinstance(arr, MappedFile) else arr[lo:hi]

        return ArrayDataset(
            part(self.X), part(self.y), sample_weight=part(self.sample_weight), block_rows=self.block_rows
        )

    def fingerprint(self) -> str:
        """A short hash of the shapes, dtypes, block size and evenly spaced rows of X, y and weights.

        A fit resumes mid-epoch only on a dataset with the same fingerprint.

        Returns
        -------
        str
            32 hexadecimal digits.

        Examples
        --------
        >>> from fastnn.datasets import ArrayDataset
        >>> a = ArrayDataset(np.zeros((4, 2)), np.zeros(4))
        >>> len(a.fingerprint()), a.fingerprint() == ArrayDataset(np.ones((4, 2)), np.zeros(4)).fingerprint()
        (32, False)
        """
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
    """The rows of one epoch of an :class:`ArrayDataset` in order, read block by block.

    ``gather(lo, hi, x_out, y_out)`` fills positions [lo, hi) of the epoch; blocks are loaded
    (and checked) as the positions reach them, one block held at a time.

    Parameters
    ----------
    dataset : ArrayDataset
        The samples.
    seed : int
        The model's seed: with ``epoch``, it fixes the order of the blocks and of their rows.
    epoch : int
        The epoch (0-based).
    shuffle : bool
        False: the rows in storage order.
    check : callable
        ``check(*block) -> (x, y)``: a block's rows (:meth:`ArrayDataset.block`'s pair, or
        triple with weights) as trained on.

    Examples
    --------
    >>> from fastnn.datasets import ArrayDataset, EpochOrder
    >>> ds = ArrayDataset(np.arange(5.0)[:, None], np.arange(5), block_rows=2)
    >>> order = EpochOrder(ds, seed=0, epoch=0, shuffle=False, check=lambda x, y: (x, y))
    >>> x, y = np.empty((3, 1)), np.empty(3, np.int64)
    >>> order.gather(1, 4, x, y); y
    array([1, 2, 3])
    """

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
        self.block: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None  # its (x, y, shuffled rows)

    def _load(self, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        j = int(self.order[k])
        self.loaded, self.block = -1, None  # the previous block is freed before the next is read
        x, y = self.check(*self.dataset.block(j))
        size = x.shape[0]
        rows = np.arange(size, dtype=np.int64)
        if self.shuffle:  # with one block: (seed, stream, epoch), the order fit gives in-memory arrays
            permutation(size, self.seed, SHUFFLE_STREAM, self.epoch * self.dataset.blocks + j, rows)
        self.loaded, self.block = k, (x, y, rows)
        return self.block

    def gather(self, lo: int, hi: int, x_out: np.ndarray, y_out: np.ndarray) -> None:
        """Fill ``x_out`` and ``y_out`` with the samples at positions [lo, hi) of the epoch's order.

        Parameters
        ----------
        lo, hi : int
            Positions in the epoch, 0 <= lo <= hi <= len(dataset).
        x_out : numpy.ndarray
            ``(hi - lo, *input_shape)``, receives the inputs (the dtype ``check`` gives).
        y_out : numpy.ndarray
            (hi - lo, ...), receives the targets.

        Examples
        --------
        >>> from fastnn.datasets import ArrayDataset, EpochOrder
        >>> ds = ArrayDataset(np.arange(4.0)[:, None], np.arange(4), block_rows=2)
        >>> order = EpochOrder(ds, 0, 0, True, lambda x, y: (x, y))
        >>> x, y = np.empty((4, 1)), np.empty(4, np.int64)
        >>> order.gather(0, 4, x, y); sorted(y.tolist())
        [0, 1, 2, 3]
        """
        p = lo
        while p < hi:
            k = int(np.searchsorted(self.ends, p, side="right"))
            x, y, rows = self.block if k == self.loaded and self.block is not None else self._load(k)
            start = self.ends[k] - rows.size
            stop = min(hi, int(self.ends[k]))
            picked = rows[p - start : stop - start]
            np.take(x, picked, axis=0, out=x_out[p - lo : stop - lo])
            np.take(y, picked, axis=0, out=y_out[p - lo : stop - lo])
            p = stop


__all__ = ["ArrayDataset", "EpochOrder", "MappedFile"]
