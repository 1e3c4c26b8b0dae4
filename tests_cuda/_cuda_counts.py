"""Count the host-side CUDA work of a call on Numba's CUDA simulator: device allocations, copies
each way, host waits and kernel launches.

On a real GPU a small model's step or predict costs its host-side CUDA work, not its arithmetic
(benchmarks/RESULTS.md, sessions 18 and 23): each allocation, copy, synchronisation and launch is
microseconds of driver and Python time. The simulator runs the same host code, so the counts it
gives are the GPU's (speed on it means nothing). ``with counting() as c: ...`` patches, for the
block only:

- ``numba.cuda.device_array``, ``device_array_like``, ``to_device`` (an allocation and a copy in),
  ``pinned_array``, ``mapped_array``: allocations (``alloc``: device; ``pinned``: page-locked host);
- the simulator's device array ``copy_to_device`` (``h2d`` from a host array, ``d2d`` from a device
  array) and ``copy_to_host`` (``d2h``); a copy between host and device without a stream is
  numba-cuda's synchronous one (the host waits for it and the device's earlier work): a wait too;
- ``numba.cuda.synchronize``, a stream's and an event's ``synchronize`` (``waits``);
- the simulator's kernel launch (``launches``, by kernel name in ``kernels``); a host NumPy array
  passed to a kernel is copied in and out by the launch (``implicit``: a hidden pair of copies and
  a wait on a GPU).

Only the calling thread is counted (a simulated kernel's threads run the kernel, not host code).
On a real GPU (``NUMBA_ENABLE_CUDASIM`` unset) the same calls of numba-cuda's own classes are
counted (``DeviceNDArrayBase``, the driver's ``Stream`` and ``Event``, a launch configuration's
call); CuPy's cuBLAS launches are not counted there.
"""

from __future__ import annotations

import contextlib
import threading
from collections import Counter
from collections.abc import Iterator

import numba
import numpy as np
from numba import cuda

#: whether the counts are the simulator's (else numba-cuda's real classes are patched: a GPU run)
SIMULATOR = bool(numba.config.ENABLE_CUDASIM)

#: the counts a table reports, in its column order
COLUMNS = ("alloc", "pinned", "h2d", "d2h", "d2d", "waits", "launches", "implicit")


class Counts(Counter):
    """A Counter of :data:`COLUMNS`, and ``kernels``: launches by kernel name."""

    def __init__(self):
        super().__init__({name: 0 for name in COLUMNS})
        self.kernels: Counter = Counter()

    def row(self) -> dict[str, int]:
        """The counts of :data:`COLUMNS`, in order."""
        return {name: self[name] for name in COLUMNS}

    def __repr__(self) -> str:
        return f"Counts({self.row()}, kernels={dict(self.kernels)})"


def _targets():
    """(device array class, [(owner, name) of the synchronising methods], launch owner, its method)."""
    if SIMULATOR:
        from numba.cuda.simulator import api as sim_api
        from numba.cuda.simulator import kernel as sim_kernel
        from numba.cuda.simulator.cudadrv import devicearray as sim_array

        waits = [(sim_api.stream, "synchronize"), (sim_api.Event, "synchronize")]
        return sim_array.FakeCUDAArray, waits, sim_kernel.FakeCUDAKernel
    from numba.cuda import dispatcher
    from numba.cuda.cudadrv import devicearray, driver

    waits = [(driver.Stream, "synchronize"), (driver.Event, "synchronize")]
    return devicearray.DeviceNDArrayBase, waits, dispatcher._LaunchConfiguration


def _launched(config, args) -> str | None:
    """The kernel's name when ``config(*args)`` launches a kernel from host code, else None."""
    if SIMULATOR:
        from numba.cuda.simulator import kernel as sim_kernel

        if config._device or sim_kernel._kernel_context is not None:
            return None
        return config.fn.__name__
    dispatcher = config.dispatcher
    return getattr(getattr(dispatcher, "py_func", None), "__name__", None) or type(dispatcher).__name__


@contextlib.contextmanager
def counting() -> Iterator[Counts]:
    """Count the CUDA work of the calling thread inside the block (see the module docstring)."""
    counts = Counts()
    me = threading.get_ident()
    patch = _Patcher()
    array_class, wait_methods, launcher = _targets()

    def _is_device(array) -> bool:
        return isinstance(array, array_class)

    def mine() -> bool:
        return threading.get_ident() == me

    def allocator(name, column, copies=False):
        real = getattr(cuda, name)

        def counted(*args, **kwargs):
            if mine():
                counts[column] += 1
                if copies and kwargs.get("to") is None:
                    counts["h2d"] += 1
                    counts["waits"] += 1
            return real(*args, **kwargs)

        patch.set(cuda, name, counted)

    for name in ("device_array", "device_array_like", "mapped_array"):
        allocator(name, "alloc")
    allocator("to_device", "alloc", copies=True)  # (a synchronous copy: counted a wait below)
    allocator("pinned_array", "pinned")

    copy_to_host = array_class.copy_to_host
    copy_to_device = array_class.copy_to_device

    def counted_to_host(self, ary=None, stream=0):
        if mine():
            counts["d2h"] += 1
            if not stream:  # a copy on the default stream returns when the data is on the host
                counts["waits"] += 1
        return copy_to_host(self, ary, stream)

    def counted_to_device(self, ary, stream=0):
        if mine():
            counts["d2d" if _is_device(ary) else "h2d"] += 1
            if not stream and not _is_device(ary):  # a host copy on the default stream returns when done
                counts["waits"] += 1
        return copy_to_device(self, ary, stream)

    patch.set(array_class, "copy_to_host", counted_to_host)
    patch.set(array_class, "copy_to_device", counted_to_device)

    def waiter(owner, name):
        real = getattr(owner, name)

        def counted(*args, **kwargs):
            if mine():
                counts["waits"] += 1
            return real(*args, **kwargs)

        patch.set(owner, name, counted)

    waiter(cuda, "synchronize")
    for owner, name in wait_methods:
        waiter(owner, name)

    launch = launcher.__call__

    def counted_launch(self, *args):
        name = _launched(self, args) if mine() else None
        if name is not None:
            counts["launches"] += 1
            counts.kernels[name] += 1
            counts["implicit"] += sum(isinstance(a, np.ndarray) and a.ndim > 0 for a in args)
        return launch(self, *args)

    patch.set(launcher, "__call__", counted_launch)
    try:
        yield counts
    finally:
        patch.undo()


class _Patcher:
    def __init__(self):
        self.saved: list = []

    def set(self, owner, name, value):
        self.saved.append((owner, name, owner.__dict__[name] if isinstance(owner, type) else getattr(owner, name)))
        setattr(owner, name, value)

    def undo(self):
        for owner, name, value in reversed(self.saved):
            setattr(owner, name, value)
        self.saved.clear()


def table(rows: dict[str, Counts]) -> str:
    """A Markdown table of ``{what: counts}``."""
    lines = ["| call | " + " | ".join(COLUMNS) + " |", "|---|" + "---|" * len(COLUMNS)]
    for what, counts in rows.items():
        lines.append(f"| {what} | " + " | ".join(str(v) for v in counts.row().values()) + " |")
    return "\n".join(lines)


# -- the calls the tables and tests_cuda/test_host_work_cuda.py count -------------------------------
#: the models counted: (layer sizes, activation, optimizer, loss, batch); "tiny" is fastnn.bench's
#: config; "mlp" is its shape in small (the simulator runs each GPU thread as an OS thread)
MODELS = {
    "tiny": ((2, 16, 16, 1), "tanh", ("sgd", {"lr": 0.01, "momentum": 0.9}), "mse", 32),
    "mlp": ((20, 16, 8, 4), "relu", ("adam", {"lr": 1e-3}), "cross_entropy", 16),
}


def model_and_batch(name: str, device: str = "cuda", seed: int = 0):
    """(compiled model, x, y) of :data:`MODELS`' ``name`` on ``device``."""
    import fastnn as fnn

    sizes, activation, (optimizer, kwargs), loss, batch = MODELS[name]
    layers = [fnn.Dense(a, b, activation=activation) for a, b in zip(sizes[:-2], sizes[1:-1])]
    layers.append(fnn.Dense(sizes[-2], sizes[-1]))
    model = fnn.Sequential(layers, seed=seed, device=device).compile(loss, fnn.optim.get(optimizer, **kwargs))
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch, sizes[0])).astype(np.float32)
    y = rng.integers(0, sizes[-1], batch) if loss == "cross_entropy" else rng.standard_normal((batch, sizes[-1]))
    return model, x, y.astype(np.int64 if loss == "cross_entropy" else np.float32)


def measure(name: str, warm: int = 2) -> dict[str, Counts]:
    """:func:`measure_model` of :data:`MODELS`' ``name`` on "cuda"."""
    model, x, y = model_and_batch(name)
    return measure_model(name, model, x, y, warm)


def measure_model(name: str, model, x, y, warm: int = 2, rows: int = 1024) -> dict[str, Counts]:
    """Counts of a steady-state ``train_step`` on (x, y), a ``predict`` and an ``evaluate`` of
    ``rows`` rows (one pass: the pass fit's validation makes per epoch), that ``evaluate`` in 4
    passes (``batch_size=rows // 4``: one wait for all) and one step of ``fit`` (the
    difference between fits of 2 and 1 batches, after a first fit made the feeder), and that
    1-batch fit, of a compiled device ``model``, labelled ``name``."""
    counted: dict[str, Counts] = {}
    for _ in range(warm):
        model.train_step(x, y)
    with counting() as counted[f"{name} train_step (batch {x.shape[0]})"]:
        model.train_step(x, y)
    big = np.random.default_rng(1).standard_normal((rows, *x.shape[1:])).astype(x.dtype)
    model.predict(big)
    with counting() as counted[f"{name} predict ({rows} rows)"]:
        model.predict(big)
    big_y = np.resize(y, (rows, *y.shape[1:]))
    model.evaluate(big, big_y)
    with counting() as counted[f"{name} evaluate ({rows} rows)"]:
        model.evaluate(big, big_y)
    model.evaluate(big, big_y, batch_size=rows // 4)
    with counting() as counted[f"{name} evaluate ({rows} rows, 4 passes)"]:
        model.evaluate(big, big_y, batch_size=rows // 4)
    xs, ys = np.concatenate([x, x]), np.concatenate([y, y])
    model.fit(xs, ys, epochs=1, batch_size=x.shape[0], shuffle=False, verbose=0)
    with counting() as one:
        model.fit(x, y, epochs=1, batch_size=x.shape[0], shuffle=False, verbose=0)
    with counting() as two:
        model.fit(xs, ys, epochs=1, batch_size=x.shape[0], shuffle=False, verbose=0)
    step = Counts()
    step.update(two)
    step.subtract(one)
    step.kernels = two.kernels - one.kernels
    counted[f"{name} fit, per step"] = step
    counted[f"{name} fit, 1 epoch of 1 batch"] = one
    return counted


def main() -> int:
    """Print the tables of :func:`measure` for every model of :data:`MODELS`."""
    rows: dict[str, Counts] = {}
    for name in MODELS:
        rows.update(measure(name))
    print(table(rows))
    for what, counts in rows.items():
        print(f"\n{what}: launches by kernel {dict(counts.kernels)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
