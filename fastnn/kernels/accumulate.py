"""Gradient accumulation inside a training step's compiled call (``fit(..., accumulate=k)``).

A step plan of an accumulating fit (:mod:`fastnn.accumulation`) runs :func:`accumulate_gradients`
after the backward and the gradient norm: the batch's gradients, weighted by its sample count (a
mean loss) or by 1 (a sum), are added to the group's ``total``; on the group's last batch the total
is divided by the group's samples (or by 1) into ``grads`` and its norm computed, and the
optimizer's step kernel (:mod:`fastnn.kernels.step_update`, armed for that batch only) updates
with that norm. The arithmetic is NumPy's of the path it replaced, element by element: ``total =
grads * w`` for the group's first batch, else ``grads *= w; total += grads``, then ``grads = total
/ samples``, each rounded to the buffers' dtype (the float32 products and quotients computed in
float64 and rounded once are the correctly rounded float32 ones: 53 >= 2 * 24 + 2 bits), and the
norm is :func:`~fastnn.kernels.optim.grad_global_norm`'s (its chunk kernel, chunk sums in order).

The per-batch scalars come in ``scalars``, a float64 array of :data:`N_SCALARS` that
``fastnn.accumulation.GroupSum.arm`` writes before each step: 1.0 to arm the sum (the kernel disarms
it: each arming serves one step; an unarmed call leaves everything alone and hands on the batch's
norm, so a plan built for accumulation still takes plain steps), 1.0 for the group's first batch,
1.0 for its last, the batch's weight and the group's divisor; the kernel writes back the group's
norm.
"""

from __future__ import annotations

import math

from numba import njit

from .._config import JIT_EXACT
from ._scalar import n_chunks
from .optim import OPTIM_CHUNK, _sum_squares_chunk

#: positions in ``scalars``
ARMED, FIRST, LAST, WEIGHT, DIVISOR, GROUP_NORM = range(6)
N_SCALARS = 6


@njit(**JIT_EXACT)
def serial_norm(grads, partials):
    """The L2 norm of ``grads`` (n,) as :func:`~fastnn.kernels.optim.grad_global_norm` computes it
    (each chunk's sum of squares by its chunk kernel, combined in chunk order: the same bits),
    serially: a step kernel calls no parallel kernel (a cached one that did segfaulted when loaded
    in a fresh process, see :func:`fastnn.kernels.step_update.trainable_norm`)."""
    chunks = n_chunks(grads.size, OPTIM_CHUNK)
    for c in range(chunks):
        _sum_squares_chunk(grads, partials, c)
    total = 0.0
    for c in range(chunks):
        total += partials[c]
    return math.sqrt(total)


@njit(**JIT_EXACT)
def accumulate_gradients(norm, scalars, grads, total, partials):
    """Add the batch's weighted gradients ``grads`` (n,) to the group's ``total`` (n,); on the group's
    last batch put ``total / divisor`` in ``grads`` and return its norm (also written to
    ``scalars[GROUP_NORM]``). Returns ``norm`` (the batch's) otherwise, and when not armed (then it
    changes nothing) or when ``norm`` is not finite (the group is void: the caller restores it;
    the norm handed on keeps the optimizer's step kernel from updating). ``partials``: float64
    scratch of ``norm_partials_size(n)``."""
    armed = scalars[ARMED] != 0.0
    scalars[ARMED] = 0.0
    if not armed:
        return norm
    w = scalars[WEIGHT]
    if scalars[FIRST] != 0.0:
        for i in range(grads.size):
            total[i] = grads[i] * w
    else:
        for i in range(grads.size):
            grads[i] = grads[i] * w
            total[i] = total[i] + grads[i]
    if scalars[LAST] == 0.0:
        return norm
    if not math.isfinite(norm):
        scalars[GROUP_NORM] = norm
        return norm
    divisor = scalars[DIVISOR]
    for i in range(grads.size):
        grads[i] = total[i] / divisor
    group = serial_norm(grads, partials)
    scalars[GROUP_NORM] = group
    return group


__all__ = [
    "ARMED",
    "DIVISOR",
    "FIRST",
    "GROUP_NORM",
    "LAST",
    "N_SCALARS",
    "WEIGHT",
    "accumulate_gradients",
    "serial_norm",
]
