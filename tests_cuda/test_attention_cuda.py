"""CUDA attention and sequence kernels against their CPU twins, with lengths, causal masks and
attention dropout (the same counter-based masks on both backends)."""

from __future__ import annotations

import numpy as np
import pytest

from fastnn.kernels import attention as cpu_attn
from fastnn.kernels import sequence as cpu_seq
from fastnn.kernels.cuda import attention as gpu_attn
from fastnn.kernels.cuda import sequence as gpu_seq

from .conftest import to_device

TOL = {"rtol": 1e-10, "atol": 1e-12}


def _device(a):
    return to_device(a)[0]


def host(a):
    return a if isinstance(a, np.ndarray) else a.copy_to_host()


def _buffers(batch, steps, embed, heads, p, rng):
    x = rng.standard_normal((batch * steps, embed))
    params = [rng.uniform(-1, 1, s) for s in ((3 * embed, embed), (3 * embed,), (embed, embed), (embed,))]
    bufs = {
        "qkv": np.zeros((batch * steps, 3 * embed)),
        "probs": np.zeros((batch * heads, steps, steps)),
        "context": np.zeros((batch * steps, embed)),
        "y": np.zeros((batch * steps, embed)),
    }
    bufs["probs_drop"] = np.zeros_like(bufs["probs"]) if p > 0 else bufs["probs"]
    return x, params, bufs


@pytest.mark.parametrize(("causal", "lengths", "p"), [(False, None, 0.0), (True, [4, 0, 2], 0.3)])
def test_attention_forward_backward(causal, lengths, p, rng):
    batch, steps, embed, heads = 3, 4, 6, 2
    x, params, bufs = _buffers(batch, steps, embed, heads, p, rng)
    lengths = np.zeros(0, np.int64) if lengths is None else np.asarray(lengths, np.int64)
    grad_y = rng.standard_normal(x.shape)
    results = []
    for device, kernels in (("cpu", cpu_attn), ("cuda", gpu_attn)):
        move = (lambda a: a) if device == "cpu" else _device
        b = {name: move(v.copy()) for name, v in bufs.items()}
        if p == 0:
            b["probs_drop"] = b["probs"]
        counter = np.zeros(1, np.int64)
        args = [move(x), *map(move, params)]
        kernels.attention_forward(
            *args, b["qkv"], b["probs"], b["probs_drop"], b["context"], b["y"], lengths, heads, causal, p, 5, 9, counter
        )
        assert counter[0] == (1 if p > 0 else 0)
        grads = [
            move(np.zeros(s))
            for s in (
                (batch * steps, embed),
                (batch * steps, embed),
                bufs["probs"].shape,
                (batch * steps, 3 * embed),
                x.shape,
                params[0].shape,
                params[1].shape,
                params[2].shape,
                params[3].shape,
            )
        ]
        partials = move(np.zeros(cpu_attn.partials_shape(batch * steps, embed)))
        kernels.attention_backward(
            args[0],
            args[1],
            args[3],
            b["qkv"],
            b["probs"],
            b["probs_drop"],
            b["context"],
            move(grad_y),
            lengths,
            *grads,
            partials,
            heads,
            True,
        )
        results.append([host(b[name]) for name in ("y", "probs", "probs_drop")] + [host(g) for g in grads[4:]])
    for name, cpu, gpu in zip(
        ("y", "probs", "probs_drop", "grad_x", "grad_w_in", "grad_b_in", "grad_w_out", "grad_b_out"), *results
    ):
        np.testing.assert_allclose(gpu, cpu, err_msg=name, **TOL)


@pytest.mark.parametrize("name", ["last_step", "time_mean"])
def test_sequence_kernels(name, rng):
    x = rng.standard_normal((3, 4, 2))
    grad_y = rng.standard_normal((3, 2))
    lengths = np.array([4, 0, 3], np.int64)
    outs = []
    for module, move in ((cpu_seq, lambda a: a), (gpu_seq, _device)):
        y, grad_x = move(np.zeros((3, 2))), move(np.zeros_like(x))
        getattr(module, f"{name}_forward")(move(x), lengths, y)
        getattr(module, f"{name}_backward")(move(grad_y), lengths, grad_x)
        outs.append((host(y), host(grad_x)))
    np.testing.assert_allclose(outs[1][0], outs[0][0], **TOL)
    np.testing.assert_allclose(outs[1][1], outs[0][1], **TOL)


def test_attention_forward_from_matches_cpu(rng):
    """Samples numbered from first_row (fastnn.distributed's shards): the CPU's dropout and outputs."""
    batch, steps, embed, heads = 2, 3, 4, 2
    x, params, bufs = _buffers(batch, steps, embed, heads, 0.4, rng)
    lengths, first_row = np.array([3, 2], np.int64), np.array([5], np.int64)
    results = []
    for kernels, move in ((cpu_attn, lambda a: a), (gpu_attn, _device)):
        b = {name: move(v.copy()) for name, v in bufs.items()}
        counter = np.array([3], np.int64)
        kernels.attention_forward_from(
            move(x), *map(move, params), b["qkv"], b["probs"], b["probs_drop"], b["context"], b["y"], lengths,
            heads, False, 0.4, 5, 9, counter, first_row,
        )  # fmt: skip
        assert counter[0] == 4
        results.append([host(b[name]) for name in ("y", "probs_drop")])
    assert (results[0][1] == 0).any()
    for name, cpu, gpu in zip(("y", "probs_drop"), *results):
        np.testing.assert_allclose(gpu, cpu, err_msg=name, **TOL)
