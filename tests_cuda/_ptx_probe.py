"""Compile float32 CUDA kernels to PTX without a GPU (run as a script, NOT under the simulator).

Prints one JSON object: {"skip": reason} when the NVVM toolchain is missing, else
{kernel name: "ok" | "f64" | "error: ..."} plus "uncovered": the kernels of fastnn.kernels.cuda
(module-level ``@cuda.jit`` kernels and those of the ``per_dtype`` factories) that the probe lacks. Device functions called from a kernel need a
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
A4, I2, I4 = float32[:, :, :, ::1], int64[:, ::1], int64[:, :, :, ::1]


def all_kernels():
    """(module.name, kernel) for every non-device kernel defined in a fastnn.kernels.cuda module."""
    import importlib
    import pkgutil

    from numba.cuda.dispatcher import CUDADispatcher

    import fastnn.kernels.cuda as package
    from fastnn.kernels.cuda._common import per_dtype

    factory_code = per_dtype(lambda dtype: None).__code__
    for info in pkgutil.iter_modules(package.__path__):
        module = importlib.import_module(f"{package.__name__}.{info.name}")
        for attr, obj in vars(module).items():
            if getattr(obj, "__module__", None) != module.__name__:
                continue  # imported from elsewhere
            if getattr(obj, "__code__", None) is factory_code:
                built = obj("float32")
                for kernel in built if isinstance(built, tuple) else (built,):
                    yield f"{info.name}.{attr}.{kernel.py_func.__name__}", kernel
            elif isinstance(obj, CUDADispatcher) and not obj.targetoptions.get("device"):
                yield f"{info.name}.{attr}", obj


def main():
    try:
        cuda.compile_ptx(lambda a: None, void(A1), cc=CC)
    except Exception as exc:  # noqa: BLE001 - any toolchain failure means "skip"
        print(json.dumps({"skip": f"{type(exc).__name__}: {exc}".splitlines()[0]}))
        return
    from numba.cuda import dispatcher

    dispatcher.get_current_device = lambda: types.SimpleNamespace(compute_capability=CC)

    from fastnn.kernels.cuda import (
        _common,
        activations,
        attention,
        batchnorm,
        batchnorm_act,
        conv,
        dense,
        dropout,
        elementwise,
        embedding,
        layernorm,
        layout,
        losses,
        masking,
        optim,
        pooling,
        recurrent,
        rng,
        sequence,
        sparse_update,
    )

    gemm, bias_activate, grad_z_partials = dense._kernels("float32")
    moments, sums2 = batchnorm.column_kernels("float32")
    ln_forward, ln_backward = layernorm._kernels("float32")
    conv_grad_b, conv_grad_w = conv._reductions("float32")
    f, i, b = float32, int64, boolean
    kernels = {
        "activations.forward_elementwise": (activations._forward_elementwise, (A2, A2, i, f)),
        "activations.backward_elementwise": (activations._backward_elementwise, (A2, A2, A2, A2, i, f)),
        "activations.forward_rows": (activations._forward_rows, (A2, A2, i)),
        "activations.backward_rows": (activations._backward_rows, (A2, A2, A2, i)),
        "dense.gemm": (gemm, (A2, A2, A2, b, b, A1, A2, i, i, f)),
        "dense.bias_activate": (bias_activate, (A2, A1, A2, i, i, f)),
        "dense.grad_z_partials": (grad_z_partials, (A2, A2, A2, A2, A2, i, f)),
        "dropout.forward": (dropout._forward, (A2, A2, M2, uint64, uint64, f, i)),
        "dropout.backward": (dropout._backward, (A2, M2, A2, f)),
        "batchnorm_act.act_dropout": (batchnorm_act._act_dropout, (A2, M2, uint64, uint64, f, i, f, b)),
        "batchnorm_act.grad_z": (batchnorm_act._grad_z, (A2, M2, A2, A1, A1, A2, f, i, f, b, b)),
        "optim.sgd": (optim._sgd, (A1, A1, A1, i, f, f, f, f, f, b, b, f)),
        "optim.rmsprop": (optim._rmsprop, (A1, A1, A1, A1, A1, i, f, f, f, f, f, f, f, b, f)),
        "optim.adagrad": (optim._adagrad, (A1, A1, A1, i, f, f, f, f, f)),
        "optim.adam": (optim._adam, (A1, A1, A1, A1, A1, i, f, f, f, f, f, f, f, f, f, f, b, f)),
        "optim.lion": (optim._lion, (A1, A1, A1, i, f, f, f, f, f, f, f, f)),
        "optim.clip": (optim._clip, (A1, f, f)),
        "batchnorm.chunk_moments": (moments, (A2, float32[:, :, ::1], I1, i, i)),
        "batchnorm.chunk_sums2": (sums2, (A2, A2, float32[:, :, ::1])),
        "batchnorm.merge_moments": (
            batchnorm._merge_moments,
            (A2, float32[:, :, ::1], A1, A1, A1, A1, i, i, f, f, b, I1, i, i),
        ),
        "batchnorm.normalize": (batchnorm._normalize, (A2, A1, A1, A1, A1, A2, A2, b)),
        "batchnorm.eval": (batchnorm._eval, (A2, A1, A1, A1, A1, A2, f, b)),
        "batchnorm.grad_x": (batchnorm._grad_x, (A2, A2, A1, A1, A1, A1, A2, b, f, I1, i, i)),
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
        "common.combine_rows": (_common.combine_rows, (A2, i, A1)),
        "elementwise.add": (elementwise._add, (A2, A2, A2)),
        "conv.forward": (conv._forward, (A4, A4, A1, A4, A4, i, i, i, i, i, i, i, i, f)),
        "conv.grad_b": (conv_grad_b, (A4, A4, A4, A1, i, f)),
        "conv.grad_w": (conv_grad_w, (A4, A4, A4, A4, A4, i, i, i, i, i, i, i, i, f)),
        "conv.grad_x": (conv._grad_x, (A4, A4, A4, A4, A4, i, i, i, i, i, i, i, i, f)),
        # max pooling passes its int64 argmax, average pooling passes y / grad_y in that slot
        "pooling.forward_max": (pooling._forward, (A4, A4, I4, i, i, i, i, i, i, i)),
        "pooling.forward_avg": (pooling._forward, (A4, A4, A4, i, i, i, i, i, i, i)),
        "pooling.backward_max": (pooling._backward, (I4, A4, A4, i, i, i, i, i, i, i)),
        "pooling.backward_avg": (pooling._backward, (A4, A4, A4, i, i, i, i, i, i, i)),
        "pooling.global": (pooling._global, (A4, A2, b)),
        "embedding.forward": (embedding._forward, (I1, A2, A2)),
        "embedding.backward": (embedding._backward, (I1, A2, A2, i, i)),
        "embedding.mark": (embedding._mark, (I1, i, uint8[::1])),
        "embedding.collect": (embedding._collect, (uint8[::1], I1)),
        "sparse_update.sgd_rows": (sparse_update._sgd_rows, (A1, A1, I1, i, i, f, f, f)),
        "sparse_update.adam_rows": (sparse_update._adam_rows, (A1, A1, A1, A1, I1, i, i, f, f, f, f, f, f, f)),
        "layout.transpose": (layout._transpose, (A3, A2, b)),
        "masking.from_values": (masking._from_values, (A3, f, I1)),
        "masking.from_indices": (masking._from_indices, (I2, i, I1)),
        "sequence.samples": (sequence._samples, (A3, A2, I1, b, b)),
        "attention.add_bias": (attention._add_bias, (A2, A1)),
        "attention.scores": (attention._scores, (A2, i, A2, i, A3, i, i)),
        "attention.mix": (attention._mix, (A3, b, A2, i, A2, i, i, i)),
        "attention.softmax_rows": (attention._softmax_rows, (A3, A3, I1, i, b, f, uint64, uint64, f, b)),
        "attention.softmax_grad_rows": (attention._softmax_grad_rows, (A3, A3, A3, f)),
        "attention.mask_rows": (attention._mask_rows, (A2, I1, i, A2)),
        "attention.add_table": (attention._add_table, (A2, A1, A2)),
        "rng.permutation": (rng._permutation, (i, uint64, I1)),
        # float64 accumulation by design: compiled, not checked for .f64
        **{
            f"losses.{name}{'_masked' if masked else ''}": (kernel, args)
            for masked in (False, True)
            for name, kernel, args in zip(
                ("cross_entropy_rows", "elementwise_elements"),
                losses._stage_one(masked),
                ((A2, int64[::1], A2, D1, f, b, I1, i, i), (A2, A2, A2, D1, i, f, f, b, I1, i)),
            )
        },
        "optim.sum_squares": (optim._sum_squares, (A1, D1)),
        "common.finish_sum": (_common.finish_sum, (D1, i, float64, b)),
        "common.finish_sums": (_common.finish_sums, (D1, i, float64, b) * 3 + (D1,)),
        "losses.accuracy_rows": (losses._accuracy_rows, (A2, I1, A2, D1, b, I1, i, b, i)),
    }
    probed = {id(kernel) for kernel, _ in kernels.values()}
    results = {"uncovered": [name for name, kernel in all_kernels() if id(kernel) not in probed]}
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
