"""CUDA twins of :mod:`fastnn.kernels`: the same module and function names, on device arrays.

Each launcher takes numba device arrays (or any ``__cuda_array_interface__`` array Numba
accepts) with the CPU kernel's arguments, in the same order, and runs ``@cuda.jit`` kernels that
call the CPU modules' scalar ``@njit`` functions, so both backends share one formula per op.
Kernels compile lazily on first launch: importing this package needs numba-cuda, not a GPU.
Check :func:`fastnn.backend.require_cuda` before launching anything. The modules are imported
by name (:func:`fastnn.backend.kernels` imports those that ``fastnn.kernels`` lists in
``DEVICE_API``), so a new one needs no line here.
"""
