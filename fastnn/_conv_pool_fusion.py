"""Conv -> max pooling, and conv -> global average pooling, in a recorded training step, each as
one fused kernel pair.

A step plan (``Sequential.step_plan``) records each layer's kernel calls. Where a convolution
recorded the CPU ``conv2d_forward`` with ``y`` as ``z`` (its activation's derivative needs y
alone: identity, relu, tanh, sigmoid), its whole batch in one pass, and the next layer recorded
``maxpool2d_forward`` of that output over ``kernel_h x 2`` windows that tile it (stride ==
kernel, no padding, ``kernel_h`` 1 or 2: MaxPool1d(2), MaxPool2d(2)), :func:`fuse_forward` and
:func:`fuse_backward` replace the two layers' calls by ``kernels.conv_pool``'s pair, built from
the recorded arguments (the same buffers): the pool reads the convolution's output plane from
cache, the full output is never stored, and the backward writes the convolution's grad_z
straight from the pooled gradient (benchmarks/RESULTS.md, session 8, has the measurements).
Bit for bit the layers' own calls for finite values. A convolution recorded so, followed by
``global_avgpool_forward`` of its output (GlobalAvgPool over space), runs as ``kernels.conv_gap``'s
pair: the plane means taken in the convolution's epilogue, f(z) kept in its ``zcol`` scratch
(which in a training step plan nothing else writes between the forward and the backward), and
the backward's grad_z written there from the mean's gradient; bit for bit the layers' calls,
NaN included (benchmarks/RESULTS.md, session 9).

Inference plans (:mod:`fastnn._inference`) fuse the same pairs' forward calls. Anything else
records other calls and is not fused: CUDA, other windows, a batch over one im2col pass,
activations whose derivative needs z. The layers stay separate objects.
Set :data:`ENABLED` to False (then ``model.clear_plans()``) for the layer-by-layer plan, or
:data:`GLOBAL_AVG_ENABLED` to False to leave the global average pools alone.
"""

from __future__ import annotations

from dataclasses import dataclass

from . import backend
from ._fused import only_call, same_array
from .kernels.activations import IDENTITY, RELU, SIGMOID, TANH
from .kernels.conv_gap import conv2d_gap_backward, conv2d_gap_forward
from .kernels.conv_pool import conv2d_maxpool_backward, conv2d_maxpool_forward

#: whether step plans fuse the pairs (tests compare against False)
ENABLED = True
#: whether (conv, global average pool) pairs fuse too (with ENABLED)
GLOBAL_AVG_ENABLED = True
#: activations whose derivative the fused backward takes from the pooled output alone (f' >= 0)
FUSED_CODES = (IDENTITY, RELU, TANH, SIGMOID)

Calls = list  # [(kernel, args), ...] of one layer


@dataclass
class Pair:
    """Layers ``start`` (convolution) and ``start + 1`` (max pooling, or global average pooling
    when ``mean``) with their recorded forward arguments."""

    start: int
    conv: tuple
    pool: tuple
    mean: bool = False

    @property
    def pool_h(self) -> int:
        """The pooling window's height (1 or 2; its width is 2)."""
        return int(self.pool[3])


def _fusible(conv: tuple, pool: tuple) -> bool:
    x, _, _, col, _, z, y = conv[:7]
    code = conv[14]
    px, pooled, _, kh, kw, sh, sw, pt, pl = pool
    n, o, oh, ow = y.shape
    return (
        same_array(z, y)
        and code in FUSED_CODES
        and col.shape[1] == n * oh * ow  # the whole batch in one pass
        and px.ctypes.data == y.ctypes.data
        and px.size == y.size
        and kw == sw == 2
        and kh == sh
        and kh in (1, 2)
        and pt == pl == 0
        and pooled.shape == (n, o, oh // kh, ow // 2)
    )


def _mean_fusible(conv: tuple, pool: tuple) -> bool:
    x, _, _, col, _, z, y = conv[:7]
    px, mean = pool
    n, o, oh, ow = y.shape
    return (
        same_array(z, y)
        and conv[14] in FUSED_CODES
        and col.shape[1] == n * oh * ow  # the whole batch in one pass
        and px.ctypes.data == y.ctypes.data
        and px.size == y.size
        and mean.shape == (n, o)
    )


def find_pairs(forward: list[Calls]) -> list[Pair]:
    """The fusible (conv, max pool) and (conv, global average pool) pairs in the per-layer
    forward calls of a training step plan."""
    if not ENABLED:
        return []
    K = backend.kernels("cpu")
    pairs: list[Pair] = []
    i = 0
    while i + 1 < len(forward):
        conv = only_call(forward[i], K.conv2d_forward)
        pool = only_call(forward[i + 1], K.maxpool2d_forward)
        mean = only_call(forward[i + 1], K.global_avgpool_forward) if GLOBAL_AVG_ENABLED else None
        if conv is not None and pool is not None and _fusible(conv, pool):
            pairs.append(Pair(i, conv, pool))
            i += 2
        elif conv is not None and mean is not None and _mean_fusible(conv, mean):
            pairs.append(Pair(i, conv, mean, mean=True))
            i += 2
        else:
            i += 1
    return pairs


def fuse_forward(forward: list[Calls], pairs: list[Pair]) -> list[Calls]:
    """The per-layer forward calls with each pair's two calls replaced by its fused call (on the
    convolution's layer; the pooling layer then records none)."""
    calls = list(forward)
    for pair in pairs:
        x, w, b, col, zcol, _, y, *geometry = pair.conv  # geometry: strides, pads, dilations, groups, code, alpha
        if pair.mean:
            calls[pair.start] = [(conv2d_gap_forward, (x, w, b, col, zcol, y, pair.pool[1], *geometry))]
        else:
            _, pooled, argmax = pair.pool[:3]
            call = (conv2d_maxpool_forward, (x, w, b, col, zcol, y, pooled, argmax, *geometry, pair.pool_h))
            calls[pair.start] = [call]
        calls[pair.start + 1] = []
    return calls


def _first(calls: Calls, kernel, pair: Pair) -> tuple:
    """The arguments of the layer's first backward call, which must be ``kernel``'s (a fused plan
    built on another would compute the wrong gradients)."""
    if not calls or calls[0][0] is not kernel:
        raise RuntimeError(
            f"fastnn could not fuse the convolution and max pooling at layers {pair.start}-{pair.start + 1}: a "
            f"layer recorded {calls[0][0] if calls else 'no'} backward call where {kernel} was expected; "
            "set fastnn._conv_pool_fusion.ENABLED = False and call model.clear_plans() to train unfused"
        )
    return calls[0][1]


def _mean_backward(conv_b: tuple, pool_calls: Calls, pair: Pair) -> tuple:
    """The fused backward call of a (conv, global average pool) pair from the layers' recorded
    backward arguments (refused unless the pool feeds the convolution and its zcol lives from
    the forward to the backward: a training plan's arena)."""
    grad_mean, pool_grad_x = _first(pool_calls, backend.kernels("cpu").global_avgpool_backward, pair)
    x, w, _, y, grad_y, col, zcol, grad_x, grad_w, grad_b, partial_b, *rest = conv_b
    if not same_array(pool_grad_x, grad_y.reshape(pool_grad_x.shape)) or not rest[-1]:
        raise RuntimeError(
            f"fastnn could not fuse the convolution and global average pooling at layers {pair.start}-"
            f"{pair.start + 1}: the pooling's backward does not feed the convolution's, or the plan's scratch "
            "does not live from the forward to the backward; set fastnn._conv_pool_fusion.ENABLED = False "
            "and call model.clear_plans() to train unfused"
        )
    return (conv2d_gap_backward, (x, w, y, grad_mean, col, zcol, grad_x, grad_w, grad_b, partial_b, *rest))


def fuse_backward(backward: list[Calls], pairs: list[Pair]) -> list[Calls]:
    """The per-layer backward calls (``backward[i]``: layer i's kernel first, then any hook calls)
    with each pair's two kernels replaced by its fused call, put first on the pooling layer (it
    runs first); the hook calls stay where they were."""
    calls = list(backward)
    K = backend.kernels("cpu")
    for pair in pairs:
        conv_b = _first(backward[pair.start], K.conv2d_backward, pair)
        if pair.mean:
            calls[pair.start + 1] = [
                _mean_backward(conv_b, backward[pair.start + 1], pair),
                *backward[pair.start + 1][1:],
            ]
            calls[pair.start] = backward[pair.start][1:]
            continue
        pool_b = _first(backward[pair.start + 1], K.maxpool2d_backward, pair)
        argmax, grad_pooled, pool_grad_x = pool_b[:3]
        x, w, _, y, grad_y, col, zcol, grad_x, grad_w, grad_b, partial_b, *rest = conv_b
        if not same_array(pool_grad_x, grad_y.reshape(pool_grad_x.shape)) or not same_array(argmax, pair.pool[2]):
            raise RuntimeError(
                f"fastnn could not fuse the convolution and max pooling at layers {pair.start}-{pair.start + 1}: "
                "the pooling's backward does not feed the convolution's; set fastnn._conv_pool_fusion.ENABLED "
                "= False and call model.clear_plans() to train unfused"
            )
        pooled = pair.pool[1]
        args = (x, w, y, pooled, argmax, grad_pooled, col, zcol, grad_x, grad_w, grad_b, partial_b, *rest, pair.pool_h)
        calls[pair.start + 1] = [(conv2d_maxpool_backward, args), *backward[pair.start + 1][1:]]
        calls[pair.start] = backward[pair.start][1:]
    return calls


__all__ = ["ENABLED", "FUSED_CODES", "GLOBAL_AVG_ENABLED", "Pair", "find_pairs", "fuse_backward", "fuse_forward"]
