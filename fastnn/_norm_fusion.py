"""BatchNorm1d -> activation (-> Dropout) in a recorded training step, as one fused kernel pair.

A step plan (``Sequential.step_plan``) records each layer's kernel calls. Where three adjacent
layers recorded exactly the CPU kernels of batch norm over (batch, features), an elementwise
activation and dropout over the same rows (or the first two, with no dropout after them, one
that is the identity, or one over other rows: after ``TimeDistributed(BatchNorm1d)`` dropout
sees (batch, time * features)), :func:`fuse_forward` and :func:`fuse_backward` replace their
calls by ``kernels.batchnorm_act``'s pair, built from the recorded arguments: the same buffers,
parameters, running statistics and dropout counters, so the step computes what the layers' own
calls compute (within float rounding) with two fewer sweeps over the activations forward and
one backward (benchmarks/RESULTS.md, session 7, has the measurements).

Two kinds of batch norm calls fuse: training mode (``batchnorm_forward_train_counted``, its
masked statistics over padded sequence steps included: the recorded lengths go to the fused
pair) and the evaluation mode a frozen batch norm trains in (``batchnorm_forward_eval`` in a
training step, with ``batchnorm_backward_eval``): ``batchnorm_act_forward_eval`` and
``batchnorm_act_backward_eval``, whose column scratch (1 / sqrt(running_var + eps) forward,
the gradient's scale backward) is allocated here, once per plan.

Recognising the group by the recorded calls leaves everything else as it was: synchronised
or channels-first batch norm, a device other than the CPU, softmax rows
and user layers record other calls and are not fused. The layers stay separate objects.
Set :data:`ENABLED` to False (then ``model.clear_plans()``) for the layer-by-layer plan.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from . import backend
from ._fused import only_call
from .kernels.activations import ROWWISE_CODES
from .kernels.batchnorm_act import (
    batchnorm_act_backward,
    batchnorm_act_backward_eval,
    batchnorm_act_forward_eval,
    batchnorm_act_forward_train,
)

#: whether step plans fuse the groups (tests compare against False)
ENABLED = True

Calls = list  # [(kernel, args), ...] of one layer


@dataclass
class Group:
    """Layers ``start`` (batch norm), ``start + 1`` (activation) and, if ``dropout`` is not None,
    ``start + 2`` (dropout), with the arguments of their recorded forward calls; ``frozen``: the
    batch norm recorded its evaluation-mode calls (``columns``: the fused pair's (2, features)
    scratch)."""

    start: int
    norm: tuple
    act: tuple
    dropout: tuple | None
    frozen: bool = False
    columns: Any = None

    @property
    def stop(self) -> int:
        """One past the group's last layer."""
        return self.start + (2 if self.dropout is None else 3)


def find_groups(forward: list[Calls]) -> list[Group]:
    """The fusible groups in the per-layer forward calls of a training step plan, in order."""
    if not ENABLED:
        return []
    K = backend.kernels("cpu")
    groups: list[Group] = []
    i = 0
    while i + 1 < len(forward):
        norm = only_call(forward[i], K.batchnorm_forward_train_counted)
        frozen = norm is None
        if frozen:
            norm = only_call(forward[i], K.batchnorm_forward_eval)
        act = only_call(forward[i + 1], K.activation_forward)
        if norm is None or act is None or act[2] >= ROWWISE_CODES or norm[0].ndim != 2 or act[0].shape != norm[0].shape:
            i += 1
            continue
        drop = only_call(forward[i + 2], K.dropout_forward_counted_from) if i + 2 < len(forward) else None
        if drop is not None and drop[0].shape != norm[0].shape:  # dropout over other rows: its own calls
            drop = None
        columns = np.zeros((2, norm[0].shape[1]), norm[0].dtype) if frozen else None
        groups.append(Group(i, norm, act, drop, frozen, columns))
        i = groups[-1].stop
    return groups


def _dropout_args(group: Group) -> tuple:
    """(out, mask, counter, first_row, p, seed, stream) of the group's dropout, or placeholders."""
    if group.dropout is None:
        out = group.act[1]
        return out, np.zeros((1, 1), np.uint8), np.zeros(1, np.int64), np.zeros(1, np.int64), 0.0, 0, 0
    _, out, mask, p, seed, stream, counter, first_row = group.dropout
    return out, mask, counter, first_row, p, seed, stream


def _frozen_forward_call(group: Group) -> tuple:
    x, gamma, beta, running_mean, running_var, _, eps, affine = group.norm
    out, mask, counter, first_row, p, seed, stream = _dropout_args(group)
    _, _, code, alpha = group.act
    args = (x, gamma, beta, running_mean, running_var, out, group.columns[0], mask, counter, first_row, eps, affine)
    return (batchnorm_act_forward_eval, (*args, code, alpha, p, seed, stream, group.dropout is not None))


def _forward_call(group: Group) -> tuple:
    if group.frozen:
        return _frozen_forward_call(group)
    (
        x,
        gamma,
        beta,
        running_mean,
        running_var,
        _,
        x_hat,
        mean,
        inv_std,
        partials,
        eps,
        momentum,
        affine,
        track,
        batches,
        *masked,  # (lengths, per_sample, per_step) of statistics over valid sequence steps, or none
    ) = group.norm
    _, _, code, alpha = group.act
    out, mask, counter, first_row, p, seed, stream = _dropout_args(group)
    arrays = (x, gamma, beta, running_mean, running_var, out, x_hat, mean, inv_std, partials, mask, batches, counter)
    rest = (first_row, eps, momentum, affine, track, code, alpha, p, seed, stream, group.dropout is not None)
    return (batchnorm_act_forward_train, arrays + rest + tuple(masked))


def fuse_forward(forward: list[Calls], groups: list[Group]) -> list:
    """The flat forward calls with each group's calls replaced by its fused call."""
    calls: list = []
    starts = {g.start: g for g in groups}
    i = 0
    while i < len(forward):
        group = starts.get(i)
        if group is None:
            calls += forward[i]
            i += 1
        else:
            calls.append(_forward_call(group))
            i = group.stop
    return calls


def _expect(calls: Calls, kernel, group: Group) -> None:
    """Refuse to fuse a group whose layer recorded another backward than its forward promised
    (a fused plan built on it would compute the wrong gradients)."""
    if not calls or calls[0][0] is not kernel:
        raise RuntimeError(
            f"fastnn could not fuse the batch norm group at layers {group.start}-{group.stop - 1}: a layer "
            f"recorded {calls[0][0] if calls else 'no'} backward call where {kernel} was expected"
        )


def _backward_call(group: Group, backward: list[Calls]) -> tuple:
    """The fused backward of ``group`` from its layers' recorded backward calls (first call each)."""
    K = backend.kernels("cpu")
    norm_calls, act_calls = backward[group.start], backward[group.start + 1]
    _expect(norm_calls, K.batchnorm_backward_eval if group.frozen else K.batchnorm_backward, group)
    _expect(act_calls, K.activation_backward, group)
    beta, code, alpha = group.norm[2], group.act[2], group.act[3]
    if group.dropout is None:
        grad_out, mask, p = act_calls[0][1][2], np.zeros((1, 1), np.uint8), 0.0
    else:
        drop_calls = backward[group.start + 2]
        _expect(drop_calls, K.dropout_backward, group)
        grad_out, mask, _, p = drop_calls[0][1]
    tail = (code, alpha, p, group.dropout is not None)
    if group.frozen:
        grad_z, x, gamma, running_mean, running_var, x_hat, grad_x, grad_gamma, grad_beta, partials, eps, affine = (
            norm_calls[0][1]
        )
        args: tuple = (grad_out, mask, x, gamma, beta, running_mean, running_var, x_hat, group.columns[1], grad_z)
        return (batchnorm_act_backward_eval, (*args, grad_x, grad_gamma, grad_beta, partials, eps, affine, *tail))
    grad_z, x_hat, inv_std, gamma, grad_x, grad_gamma, grad_beta, partials, affine, *masked = norm_calls[0][1]
    args = (grad_out, mask, x_hat, inv_std, gamma, beta, grad_z, grad_x, grad_gamma, grad_beta, partials, affine)
    return (batchnorm_act_backward, (*args, *tail, *masked))


def fuse_backward(backward: list[Calls], groups: list[Group]) -> list:
    """The flat backward calls (last layer first) from the per-layer ones (``backward[i]``: layer
    i's calls, its kernel first, then any hook calls), each group's kernels replaced by its fused
    call followed by the group's hook calls in the layers' order (last layer first)."""
    calls: list = []
    by_stop = {g.stop - 1: g for g in groups}
    i = len(backward) - 1
    while i >= 0:
        group = by_stop.get(i)
        if group is None:
            calls += backward[i]
            i -= 1
        else:
            calls.append(_backward_call(group, backward))
            for j in range(group.stop - 1, group.start - 1, -1):
                calls += backward[j][1:]
            i = group.start - 1
    return calls


__all__ = ["ENABLED", "Group", "find_groups", "fuse_backward", "fuse_forward"]
