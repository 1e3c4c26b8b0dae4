"""Compile float32 CUDA kernels to PTX without a GPU (run as a script, NOT under the simulator).

Prints one JSON object: {"skip": reason} when the NVVM toolchain is missing, else
{kernel name: "ok" | "f64" | "error: ..."}. Device functions called from a kernel need a
compute capability, which numba-cuda 0.30.4 asks of the current device: that lookup is patched to
answer (7, 5), an internal detail (hence a separate, optional check).
"""
from __future__ import annotations

import json
import os
import types

os.environ["NUMBA_ENABLE_CUDASIM"] = "0"

from numba import boolean, cuda, float32, float64, int64, uint8, uint64, void

CC = (7, 5)
A1, A2 = float32[::1], float32[:, ::1]
D1, D2 = float64[::1], float64[:, ::1]
M2 = uint8[:, ::1]
A3, I1 = float32[:, :, ::1], int64[::1]


def main():
    try:
        cuda.compile_ptx(lambda a: None, void(A1), cc=CC)
    except Exception as exc:  # noqa: BLE001 - any toolchain failure means "skip"
        print(json.dumps({"skip": f"{type(exc).__name__}: {exc}".splitlines()[0]}))
        return
    from numba.cuda import dispatcher

    dispatcher.get_current_device = lambda: types.SimpleNamespace(compute_capability=CC)

    from fastnn.kernels.cuda import activations, batchnorm, dense, dropout, layernorm, losses, optim, recurrent, rng

    gemm, bias_activate, grad_z_partials = dense._kernels("float32")
    moments, sums2 = batchnorm.column_kernels("float32")
    ln_forward, ln_backward = layernorm._kernels("float32")
    f, i, b = float32, int64, boolean
    kernels = {
        "activations.forward_elementwise": (activations._forward_elementwise, (A2, A2, i, f)),
        "activations.backward_elementwise": (activations._backward_elementwise, (A2, A2, A2, A2, i, f)),
        "activations.forward_rows": (activations._forward_rows, (A2, A2, i)),
        "activations.backward_rows": (activations._backward_rows, (A2, A2, A2, i)),
        "dense.gemm": (gemm, (A2, A2, A2, b, b, A1, A2, i, i, f)),
        "dense.bias_activate": (bias_activate, (A2, A1, A2, i, i, f)),
        "dense.grad_z_partials": (grad_z_partials, (A2, A2, A2, A2, A2, i, f)),
        "dropout.forward": (dropout._forward, (A2, A2, M2, uint64, uint64, f)),
        "dropout.backward": (dropout._backward, (A2, M2, A2, f)),
        "optim.sgd": (optim._sgd, (A1, A1, A1, i, f, f, f, f, f, b, b, f)),
        "optim.rmsprop": (optim._rmsprop, (A1, A1, A1, A1, A1, i, f, f, f, f, f, f, f, b, f)),
        "optim.adagrad": (optim._adagrad, (A1, A1, A1, i, f, f, f, f, f)),
        "optim.adam": (optim._adam, (A1, A1, A1, A1, A1, i, f, f, f, f, f, f, f, f, f, f, b, f)),
        "optim.lion": (optim._lion, (A1, A1, A1, i, f, f, f, f, f, f, f, f)),
        "optim.clip": (optim._clip, (A1, f, f)),
        "batchnorm.chunk_moments": (moments, (A2, float32[:, :, ::1])),
        "batchnorm.chunk_sums2": (sums2, (A2, A2, float32[:, :, ::1])),
        "batchnorm.merge_moments": (batchnorm._merge_moments,
                                    (A2, float32[:, :, ::1], A1, A1, A1, A1, i, i, f, f, b)),
        "batchnorm.normalize": (batchnorm._normalize, (A2, A1, A1, A1, A1, A2, A2, b)),
        "batchnorm.eval": (batchnorm._eval, (A2, A1, A1, A1, A1, A2, f, b)),
        "batchnorm.grad_x": (batchnorm._grad_x, (A2, A2, A1, A1, A1, A1, A2, b, f)),
        "batchnorm.eval_hat": (batchnorm._eval_hat, (A2, A1, A1, A2, f)),
        "batchnorm.eval_grad_x": (batchnorm._eval_grad_x, (A2, A1, A1, A2, f, b)),
        "layernorm.forward": (ln_forward, (A2, A1, A1, A2, A2, A1, f, b)),
        "layernorm.backward_rows": (ln_backward, (A2, A2, A1, A1, A2, b)),
        "rng.fill_uniform": (rng._fill_uniform, (A1, uint64, f, f)),
        "rng.fill_normal": (rng._fill_normal, (A1, uint64, f, f)),
        "recurrent.forward_step": (recurrent._forward_step, (i, i, A3, A3, A2, A1, A1, A2, A2, A3, A3, A3, I1, i)),
        "recurrent.backward_step": (recurrent._backward_step, (i, i, A3, A3, A3, A3, A3, A3, A3, A2, A2, I1, i)),
        "recurrent.broadcast_rows": (recurrent._broadcast_rows, (A2, A2)),
        "recurrent.swap": (recurrent._swap, (A3, A3)),
        # float64 accumulation by design: compiled, not checked for .f64
        "losses.cross_entropy_rows": (losses._cross_entropy_rows, (A2, int64[::1], A2, D1, f, b)),
        "losses.elementwise_rows": (losses._elementwise_rows, (A2, A2, A2, D1, i, f, f, b)),
        "optim.sum_squares": (optim._sum_squares, (A1, D1)),
    }
    results = {}
    for name, (kernel, args) in kernels.items():
        try:
            ptx, _ = cuda.compile_ptx(kernel.py_func, void(*args), cc=CC)
        except Exception as exc:  # noqa: BLE001 - reported per kernel
            results[name] = f"error: {type(exc).__name__}: {exc}".splitlines()[0][:300]
            continue
        results[name] = "f64" if ".f64" in ptx else "ok"
    print(json.dumps(results))


if __name__ == "__main__":
    main()
