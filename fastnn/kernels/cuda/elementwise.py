"""Small elementwise device kernels the object layer needs beyond the CPU twins.

``add(a, b, out)``: out = a + b for (batch, features) device arrays of one dtype (Residual's skip
connection; on the CPU it is ``np.add``). ``out`` may be ``a`` or ``b``.
"""

from __future__ import annotations

from numba import cuda

from ._common import BLOCK, blocks_for


@cuda.jit
def _add(a, b, out):
    n = a.shape[1]
    for e in range(cuda.grid(1), a.shape[0] * n, cuda.gridsize(1)):
        i = e // n
        j = e - i * n
        out[i, j] = a[i, j] + b[i, j]


def add(a, b, out):
    """out = a + b elementwise on the device; a, b, out (batch, features)."""
    _add[blocks_for(out.size), BLOCK](a, b, out)


__all__ = ["add"]
