"""Device availability: is CUDA usable here, and if not, exactly why (and how to fix it).

fastnn's CUDA kernels (``fastnn.kernels.cuda``) need three things: the ``numba-cuda``
package (installed by ``pip install "fastnn[cuda]"``), an NVIDIA driver, and at least one GPU.
:func:`cuda_available` probes them without raising; :func:`require_cuda` raises one clear
``RuntimeError`` naming the first that is missing. Numba's CUDA simulator
(``NUMBA_ENABLE_CUDASIM=1`` set before Numba is imported) counts as available: it runs the same
kernels on the CPU, slowly, for tests.

It is also the one place the object layer gets its kernels and buffers from: :func:`kernels`
returns a namespace of the kernel functions of a device (``"cpu"``: ``fastnn.kernels``,
``"cuda"``: ``fastnn.kernels.cuda``, the same names and arguments), and :func:`zeros`,
:func:`to_device`, :func:`to_host`, :func:`host_copy` and :func:`copy_into` allocate and move
arrays. Layers, losses and optimizers look kernels up when they *build* their calls, so a step
plan holds the plain kernel functions (no per-call dispatch). ``numba.cuda`` is imported only
when the "cuda" device is asked for.
"""

from __future__ import annotations

import importlib
import importlib.util
from types import SimpleNamespace
from typing import Any

import numpy as np
from numpy.typing import DTypeLike

#: the command that installs what CUDA needs (quoted in error messages)
INSTALL_HINT = 'pip install "fastnn[cuda]"'


def _probe() -> tuple[bool, str]:
    """(available, reason): reason is empty when available, else a sentence saying what is missing."""
    import numba

    if numba.config.ENABLE_CUDASIM:
        return True, ""
    if importlib.util.find_spec("numba_cuda") is None:
        return False, (
            f"the numba-cuda package is not installed. Install fastnn's cuda extra: {INSTALL_HINT} "
            "(it pins numba-cuda with the CUDA 12 toolkit libraries)"
        )
    try:
        from numba import cuda
        from numba.cuda.cudadrv import driver as cuda_driver
    except Exception as exc:  # noqa: BLE001 - a broken install is reported, not raised from deep inside
        return False, (
            f"numba-cuda is installed but could not be imported ({type(exc).__name__}: {exc}). "
            f"Reinstall it: {INSTALL_HINT}"
        )
    try:
        driver_ok = cuda_driver.driver.is_available
    except Exception:  # noqa: BLE001
        driver_ok = False
    if not driver_ok:
        detail = getattr(cuda_driver.driver, "initialization_error", None) or "driver library not found"
        detail = " ".join(str(detail).split()).rstrip(":")
        return False, (
            f"no usable NVIDIA driver was found ({detail}). Install the NVIDIA driver for your GPU "
            "(libcuda.so on Linux, nvcuda.dll on Windows, must be loadable), then check with `nvidia-smi`"
        )
    try:
        n_gpus = len(cuda.gpus)
    except Exception:  # noqa: BLE001
        n_gpus = 0
    if n_gpus == 0:
        return False, (
            "the NVIDIA driver loaded but reports no GPU (is CUDA_VISIBLE_DEVICES empty, or is the "
            "GPU in use by another container?). Check with `nvidia-smi`"
        )
    return True, ""


def cuda_available() -> bool:
    """Whether fastnn's CUDA kernels can run here, without raising.

    Returns
    -------
    bool
        True with numba-cuda, a driver and a GPU, or under Numba's CUDA simulator.

    Examples
    --------
    >>> from fastnn import backend
    >>> isinstance(backend.cuda_available(), bool)
    True
    """
    return _probe()[0]


def require_cuda() -> None:
    """Check that CUDA can be used; return quietly when it can.

    Raises
    ------
    RuntimeError
        Saying what is missing (numba-cuda, the driver or a GPU) and how to install it.

    Examples
    --------
    >>> from fastnn import backend
    >>> try:
    ...     backend.require_cuda()
    ... except RuntimeError as error:
    ...     assert "numba-cuda" in str(error)
    """
    available, reason = _probe()
    if not available:
        raise RuntimeError(
            f'device="cuda" is not available: {reason}. GPU training needs numba-cuda '
            f'({INSTALL_HINT}), an NVIDIA driver and a GPU; use device="cpu" meanwhile.'
        )


def cuda_simulator() -> bool:
    """Whether Numba runs CUDA kernels on its CPU simulator.

    Returns
    -------
    bool
        True when ``NUMBA_ENABLE_CUDASIM=1`` was set before Numba was imported.

    Examples
    --------
    >>> from fastnn import backend
    >>> backend.cuda_simulator() in (True, False)
    True
    """
    import numba

    return bool(numba.config.ENABLE_CUDASIM)


#: the devices a model can live on
DEVICES = ("cpu", "cuda")

_KERNEL_NAMES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {}


def kernel_names() -> dict[str, tuple[tuple[str, ...], tuple[str, ...]]]:
    """The kernel functions each module of ``fastnn.kernels`` offers the object layer.

    Each module lists them beside its kernels (``DEVICE_API``); the CUDA module of the same
    name has the same functions with the same arguments, plus ``CUDA_ONLY_API`` (kernels the CPU
    has no twin of; no module lists any at present).

    Returns
    -------
    dict of str to (tuple of str, tuple of str)
        Module name -> (its DEVICE_API, its CUDA_ONLY_API).

    Examples
    --------
    >>> from fastnn import backend
    >>> backend.kernel_names()["dense"]
    (('dense_forward', 'dense_backward'), ())
    """
    if not _KERNEL_NAMES:
        import pkgutil

        from . import kernels as package

        for info in pkgutil.iter_modules(package.__path__):
            if info.ispkg or info.name.startswith("_"):
                continue
            module = importlib.import_module(f"{package.__name__}.{info.name}")
            api = getattr(module, "DEVICE_API", ())
            if api:
                _KERNEL_NAMES[info.name] = (tuple(api), tuple(getattr(module, "CUDA_ONLY_API", ())))
    return _KERNEL_NAMES


_NAMESPACES: dict[str, SimpleNamespace] = {}


def kernels(device: str = "cpu") -> SimpleNamespace:
    """The kernel functions of a device as attributes (``kernels("cuda").dense_forward`` ...).

    Built once per device and cached. Resolve functions from it when building kernel calls, not
    inside hot loops. For "cuda" call :func:`require_cuda` first (this does not).

    Parameters
    ----------
    device : {"cpu", "cuda"}, default "cpu"
        The device.

    Returns
    -------
    types.SimpleNamespace
        Kernel name -> function, and ``device``.

    Raises
    ------
    ValueError
        For an unknown device.

    Examples
    --------
    >>> from fastnn import backend
    >>> K = backend.kernels("cpu")
    >>> K.device, callable(K.dense_forward)
    ('cpu', True)
    """
    namespace = _NAMESPACES.get(device)
    if namespace is None:
        if device not in DEVICES:
            raise ValueError(f"device must be one of {list(DEVICES)}, got {device!r}")
        package = "fastnn.kernels" if device == "cpu" else "fastnn.kernels.cuda"
        functions = {"device": device}
        for module_name, (names, cuda_only) in kernel_names().items():
            module = importlib.import_module(f"{package}.{module_name}")
            functions.update({name: getattr(module, name) for name in names + (cuda_only if device != "cpu" else ())})
        namespace = _NAMESPACES[device] = SimpleNamespace(**functions)
    return namespace


def _cuda():
    from numba import cuda

    return cuda


def device_of(array: Any) -> str:
    """The device an array lives on.

    Parameters
    ----------
    array : ndarray or device array
        A NumPy array or a CUDA device array.

    Returns
    -------
    str
        ``"cpu"`` for a NumPy array, ``"cuda"`` otherwise.

    Examples
    --------
    >>> from fastnn import backend
    >>> backend.device_of(np.zeros(3))
    'cpu'
    """
    return "cpu" if isinstance(array, np.ndarray) else "cuda"


def zeros(shape: int | tuple[int, ...], dtype: DTypeLike, device: str = "cpu") -> Any:
    """A zero-filled array on a device.

    Parameters
    ----------
    shape : int or tuple of int
        Its shape.
    dtype : dtype-like
        Its dtype.
    device : {"cpu", "cuda"}, default "cpu"
        Where it lives.

    Returns
    -------
    ndarray or device array
        The zeros.

    Examples
    --------
    >>> from fastnn import backend
    >>> backend.zeros((2, 3), np.float32).dtype
    dtype('float32')
    """
    host = np.zeros(shape, dtype)
    if device == "cpu":
        return host
    return _cuda().to_device(host) if host.size else _cuda().device_array(shape, dtype)  # no 0-byte copy


def full(shape: int | tuple[int, ...], value: float, dtype: DTypeLike, device: str = "cpu") -> Any:
    """An array filled with one value on a device.

    Parameters
    ----------
    shape : int or tuple of int
        Its shape.
    value : scalar
        The fill value.
    dtype : dtype-like
        Its dtype.
    device : {"cpu", "cuda"}, default "cpu"
        Where it lives.

    Returns
    -------
    ndarray or device array
        The filled array.

    Examples
    --------
    >>> from fastnn import backend
    >>> backend.full(3, 0.5, np.float64)
    array([0.5, 0.5, 0.5])
    """
    host = np.full(shape, value, dtype)
    if device == "cpu":
        return host
    return _cuda().to_device(host) if host.size else _cuda().device_array(shape, dtype)


def pinned_empty(shape: int | tuple[int, ...], dtype: DTypeLike) -> np.ndarray:
    """An uninitialised page-locked host array, for fast asynchronous copies to the GPU (needs CUDA).

    Parameters
    ----------
    shape : int or tuple of int
        Its shape.
    dtype : dtype-like
        Its dtype.

    Returns
    -------
    ndarray
        A NumPy array in pinned memory.

    Examples
    --------
    A staging buffer for batches on their way to a GPU (needs CUDA, so not run here):

    >>> from fastnn import backend
    >>> host = backend.pinned_empty((2, 3), np.float32)  # doctest: +SKIP
    >>> host.shape, host.dtype  # doctest: +SKIP
    ((2, 3), dtype('float32'))
    """
    return _cuda().pinned_array(shape, dtype)


def stream(device: str = "cuda", non_blocking: bool = False) -> Any:
    """A new CUDA stream (0, the default stream, on the CPU where none exists).

    Parameters
    ----------
    device : {"cuda", "cpu"}, default "cuda"
        The device.
    non_blocking : bool, default False
        The stream does not synchronise with the default stream, where fastnn's kernels run, so
        copies on it can overlap them (order work with :func:`event` instead). numba-cuda has no
        public call for that flag: where the internal one fails, a plain stream (correct,
        without overlap) is returned.

    Returns
    -------
    numba.cuda stream or int
        The stream; 0 for the CPU.

    Examples
    --------
    >>> from fastnn import backend
    >>> backend.stream("cpu")
    0
    """
    if device == "cpu":
        return 0
    if non_blocking and not cuda_simulator():
        try:
            return _non_blocking_stream()
        except Exception:  # noqa: BLE001 - internals of another numba-cuda version: no overlap, no crash
            pass
    return _cuda().stream()


def default_stream(device: str = "cuda") -> Any:
    """The default stream, where fastnn's kernels run (0 on the CPU, which has none).

    A copy between a device array and page-locked host memory passed to :func:`copy_into` on it is
    queued after the kernels before it and returns at once; the host's next wait on the default
    stream (a step reading its scalars) covers it.

    Parameters
    ----------
    device : {"cuda", "cpu"}, default "cuda"
        The device.

    Returns
    -------
    numba.cuda stream or int
        The stream; 0 for the CPU.

    Examples
    --------
    >>> from fastnn import backend
    >>> backend.default_stream("cpu")
    0
    """
    if device == "cpu":
        return 0
    return _cuda().default_stream()


def _non_blocking_stream():
    """numba-cuda 0.30's ``Context.create_stream`` with CU_STREAM_NON_BLOCKING instead of the default flags."""
    from numba.cuda.cudadrv import driver as drv

    context = _cuda().current_context()
    handle = drv.driver.cuStreamCreate(drv.binding.CUstream_flags.CU_STREAM_NON_BLOCKING.value)
    return drv.Stream(handle, finalizer=drv._stream_finalizer(context.deallocations, handle))


def event(device: str = "cuda") -> Any:
    """A CUDA event without timing, to order streams (``record(stream)``, ``wait(stream)``,
    ``synchronize()``).

    Parameters
    ----------
    device : {"cuda"}, default "cuda"
        Must be "cuda".

    Returns
    -------
    numba.cuda event
        The event.

    Raises
    ------
    ValueError
        For device "cpu".

    Examples
    --------
    >>> from fastnn import backend
    >>> backend.event("cpu")
    Traceback (most recent call last):
        ...
    ValueError: event() needs device="cuda": the CPU has no streams to order

    With a GPU: the host waits for copies queued on another stream.

    >>> copies = backend.stream(non_blocking=True)  # doctest: +SKIP
    >>> copied = backend.event()  # doctest: +SKIP
    >>> copied.record(copies)  # doctest: +SKIP
    >>> copied.synchronize()  # doctest: +SKIP
    """
    if device == "cpu":
        raise ValueError('event() needs device="cuda": the CPU has no streams to order')
    return _cuda().event() if cuda_simulator() else _cuda().event(timing=False)


def to_device(array: Any, device: str) -> Any:
    """An array on a device: the array itself when it is there already, else a copy.

    Parameters
    ----------
    array : ndarray or device array
        The array.
    device : {"cpu", "cuda"}
        The target device.

    Returns
    -------
    ndarray or device array
        The array on ``device``.

    Examples
    --------
    >>> from fastnn import backend
    >>> x = np.ones(2)
    >>> backend.to_device(x, "cpu") is x
    True
    """
    if device == "cpu":
        return to_host(array)
    if isinstance(array, np.ndarray):
        return _cuda().to_device(np.ascontiguousarray(array))
    return array


def to_host(array: Any) -> np.ndarray:
    """A NumPy array with the contents of ``array``.

    Parameters
    ----------
    array : ndarray or device array
        The array.

    Returns
    -------
    ndarray
        A NumPy array itself; a device array copied to the host.

    Examples
    --------
    >>> from fastnn import backend
    >>> backend.to_host(np.arange(2))
    array([0, 1])
    """
    if isinstance(array, np.ndarray):
        return array
    return array.copy_to_host()


def host_copy(array: Any) -> np.ndarray:
    """A new NumPy array with the contents of ``array``.

    Parameters
    ----------
    array : ndarray or device array
        The array.

    Returns
    -------
    ndarray
        A copy on the host, never ``array`` itself.

    Examples
    --------
    >>> from fastnn import backend
    >>> x = np.arange(2)
    >>> backend.host_copy(x) is x
    False
    """
    return array.copy() if isinstance(array, np.ndarray) else array.copy_to_host()


def copy_into(dst: Any, src: Any, stream: Any = 0) -> None:
    """``dst[...] = src`` between any two of host and device arrays of one shape.

    Parameters
    ----------
    dst : ndarray or device array
        The destination, written in place.
    src : ndarray or device array
        The source, cast to ``dst``'s dtype (same kind).
    stream : numba.cuda stream or int, default 0
        The CUDA stream of device copies.

    Examples
    --------
    >>> from fastnn import backend
    >>> dst = np.zeros(3, np.float32)
    >>> backend.copy_into(dst, np.arange(3.0)); dst
    array([0., 1., 2.], dtype=float32)
    """
    if isinstance(dst, np.ndarray):
        if isinstance(src, np.ndarray):
            np.copyto(dst, src, casting="same_kind")
        elif dst.flags.c_contiguous and dst.dtype == src.dtype:
            src.copy_to_host(dst, stream=stream)
        else:
            np.copyto(dst, src.copy_to_host(stream=stream), casting="same_kind")
    elif isinstance(src, np.ndarray):
        if src.shape != tuple(dst.shape):
            src = np.broadcast_to(src, dst.shape)
        dst.copy_to_device(np.ascontiguousarray(src.astype(dst.dtype, casting="same_kind", copy=False)), stream=stream)
    else:
        dst.copy_to_device(src, stream=stream)


class Staging:
    """Host-to-device copies through kept page-locked (pinned) host buffers, queued on the default
    stream without the host waiting for them.

    A copy from pageable memory makes the host wait (for the device's earlier work, then for the
    copy); from pinned memory on a stream it is queued and returns. :meth:`upload` copies the host
    array into a pinned buffer of its ``role`` (grown, never shrunk, to the largest rows seen, so a
    steady caller allocates nothing) and queues the copy into the device buffer; the kernels after
    it on the default stream see the data. A pinned buffer is rewritten only once its last copy is
    known to be done: the caller says so with :meth:`settled` after a wait on the default stream
    (reading a step's scalars, copying a prediction out), else the next upload of that role
    synchronises first.

    Examples
    --------
    >>> from fastnn import backend
    >>> staging = backend.Staging()  # a model on a device keeps one (needs CUDA to upload)
    >>> x = np.ones((4, 3), np.float32)
    >>> dev = backend.zeros((4, 3), np.float32, "cuda")  # doctest: +SKIP
    >>> staging.upload(dev, x, "x")  # doctest: +SKIP
    >>> staging.settled()
    """

    def __init__(self):
        self._pinned: dict[tuple, np.ndarray] = {}  # (role, trailing shape, dtype) -> (rows, *trailing)
        self._in_flight: set[tuple] = set()
        self._stream: Any = None

    def upload(self, dst: Any, src: np.ndarray, role: str) -> None:
        """``dst[...] = src`` (cast to ``dst``'s dtype, same kind; broadcast) by a queued copy.

        Parameters
        ----------
        dst : device array
            C-contiguous, at least 1-D; its first axis is the rows.
        src : ndarray
            Host values.
        role : str
            Which pinned buffer stages it: one per role (the two copies of one step take two).

        Examples
        --------
        >>> staging.upload(dev, np.zeros((4, 3)), "x")  # doctest: +SKIP
        """
        host = self.buffer(role, dst.shape[0], tuple(dst.shape[1:]), dst.dtype)
        np.copyto(host, src, casting="same_kind")
        copy_into(dst, host, self.stream)

    @property
    def stream(self) -> Any:
        """The default stream, where the copies are queued (fastnn's kernels run there).

        Examples
        --------
        >>> staging.stream  # doctest: +SKIP
        <Stream 0x0 (CUDA default stream)>
        """
        if self._stream is None:
            self._stream = _cuda().default_stream()
        return self._stream

    def buffer(self, role: str, rows: int, trailing: tuple[int, ...], dtype: DTypeLike) -> np.ndarray:
        """The pinned host buffer of ``role`` as ``rows`` rows, for copies the caller queues on
        :attr:`stream` itself (either way: a pass's rows in, its outputs out).

        It is the buffer :meth:`upload` stages that role's rows of that shape and dtype in (grown,
        never shrunk). The caller may write or read it now: when its last copy was not declared
        done (:meth:`settled`) this synchronises first. It counts as in flight from now on, until
        the caller's next wait on the default stream and :meth:`settled`.

        Parameters
        ----------
        role : str
            Which buffer: one per role.
        rows : int
            Its rows (first axis).
        trailing : tuple of int
            The shape of a row.
        dtype : dtype-like
            Its dtype.

        Returns
        -------
        numpy.ndarray
            ``(rows, *trailing)``, page-locked, its values left from before.

        Examples
        --------
        >>> host = staging.buffer("out", 256, (10,), np.float32)  # doctest: +SKIP
        >>> dev.copy_to_host(host, stream=staging.stream)  # doctest: +SKIP
        """
        dtype = np.dtype(dtype)
        key = (role, tuple(trailing), dtype.str)
        pinned = self._pinned.get(key)
        if key in self._in_flight:  # its last copy may still read or write it
            _cuda().synchronize()
            self._in_flight.clear()
        if pinned is None or pinned.shape[0] < rows:
            pinned = self._pinned[key] = pinned_empty((max(rows, 1), *trailing), dtype)
        self._in_flight.add(key)
        return pinned[:rows]

    def settled(self) -> None:
        """Declare the queued copies done (the caller waited on the default stream after them).

        Examples
        --------
        >>> from fastnn import backend
        >>> backend.Staging().settled()
        """
        self._in_flight.clear()


def step_scalars(device: str) -> Any:
    """The float64 scalars of a device's training step, read with one copy (None on the CPU).

    Parameters
    ----------
    device : {"cpu", "cuda"}
        The device.

    Returns
    -------
    fastnn.kernels.cuda._common.StepScalars or None
        Device slots for the loss, the gradient norm and a count, and their pinned host mirror.

    Examples
    --------
    >>> from fastnn import backend
    >>> backend.step_scalars("cpu") is None
    True
    """
    if device == "cpu":
        return None
    from .kernels.cuda._common import StepScalars

    return StepScalars()


def _same_place_copy(array: Any) -> Any:
    """A new array with ``array``'s shape, dtype, device and contents."""
    if isinstance(array, np.ndarray):
        return host_copy(array)
    copy = zeros(array.shape, array.dtype, "cuda")
    copy_into(copy, array)
    return copy


class StateGuard:
    """Copies of buffers a step changes before it commits (running statistics, dropout
    counters), put back when the step fails, so an exception or interrupt leaves the model at
    the last completed step.

    Parameters
    ----------
    buffers : list of array
        Host or device arrays; each gets a copy of its own shape, dtype and device, holding its
        contents at construction until the first :meth:`save` (on every device: a ``restore``
        before any ``save`` puts back those contents, never zeros).

    Examples
    --------
    >>> import numpy as np
    >>> from fastnn.backend import StateGuard
    >>> running = np.zeros(3, np.float32)
    >>> guard = StateGuard([running])
    >>> running += 1.0
    >>> guard.restore()
    >>> running
    array([0., 0., 0.], dtype=float32)
    """

    def __init__(self, buffers: list):
        self.pairs = [(buf, _same_place_copy(buf)) for buf in buffers]

    def save(self) -> None:
        """Copy the buffers' current contents into the guard.

        Examples
        --------
        >>> from fastnn.backend import StateGuard
        >>> running = np.zeros(3, np.float32)
        >>> guard = StateGuard([running])
        >>> running += 1.0
        >>> guard.save()  # a step completed: the copies now hold its values
        >>> running += 5.0
        >>> guard.restore(); running
        array([1., 1., 1.], dtype=float32)
        """
        for buf, saved in self.pairs:
            copy_into(saved, buf)

    def restore(self) -> None:
        """Put the saved contents back into the buffers.

        Examples
        --------
        >>> from fastnn.backend import StateGuard
        >>> running = np.zeros(3, np.float32)
        >>> guard = StateGuard([running])
        >>> running += 1.0  # a step that fails half-way
        >>> guard.restore(); running
        array([0., 0., 0.], dtype=float32)
        """
        for buf, saved in self.pairs:
            copy_into(buf, saved)


__all__ = [
    "DEVICES",
    "INSTALL_HINT",
    "StateGuard",
    "Staging",
    "copy_into",
    "cuda_available",
    "cuda_simulator",
    "default_stream",
    "device_of",
    "event",
    "full",
    "host_copy",
    "kernel_names",
    "kernels",
    "pinned_empty",
    "require_cuda",
    "step_scalars",
    "stream",
    "to_device",
    "to_host",
    "zeros",
]
