"""Every public CPU kernel has a CUDA twin of the same name and arguments (or a stated reason not to)."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest
from numba.core.registry import CPUDispatcher

import fastnn.kernels

#: CPU kernel modules without a CUDA twin module
CPU_ONLY_MODULES = {
    "_lazy_ir": "how the CPU libraries are cached and loaded (their IR parsed when linked), no kernels",
    "_linkage": "the binding of the CPU libraries' linked-in copies (local symbols), no kernels",
    "_outline": "functions of LLVM IR compiled once a CPU process and called by name (the GEMM's register "
    "blocks, the batch-1 row kernel), no kernels of its own",
    "_step_calls": "how a CPU fused step calls its kernels (by a stable C name, not a copy), no kernels",
    "_cache": "the Numba cache locator for the CPU kernels, no kernels",
    "_scalar": "typed-scalar helpers (like, n_chunks) used by both backends' code, not kernels",
    "checks": "fast validation of user input (finite values, label range), done on the host before a batch "
    "is copied to the device",
    "blas": "binding of the CPU OpenBLAS; the CUDA GEMM is kernels.cuda.dense.gemm (tiled or cuBLAS)",
    "microgemm": "the CPU GEMM's register-blocked kernel in LLVM vector IR, called by kernels.blas for the "
    "larger products; the CUDA GEMM is kernels.cuda.dense.gemm (tiled or cuBLAS)",
    "gemv": "the CPU's batch-1 row-times-matrix kernel in LLVM vector IR, called by kernels.blas for one row "
    "of C; the CUDA GEMM is kernels.cuda.dense.gemm (tiled or cuBLAS)",
    "views": "views of a flat buffer for the CPU's fused steps (fastnn._fused), no kernels; CUDA step plans "
    "call their kernels one by one",
    "prefetch": "software prefetch hints (llvm.prefetch) for the CPU kernels' scattered row reads, no kernels; "
    "the CUDA kernels read rows in coalesced warps",
    "tiling": "the CPU GEMMs' tile count and OpenBLAS's small-kernel size, read at run time from C globals "
    "(no kernels); CUDA GEMMs tile "
    "by their own launch geometry",
    "step_update": "the optimizer's update inside the CPU's fused training steps (fastnn._fused); a model on "
    "CUDA steps through Optimizer.step and the twins in kernels.cuda.optim",
    "accumulate": "fit(..., accumulate=k)'s gradient sum inside the CPU's fused training steps "
    "(fastnn.accumulation); accumulate > 1 runs on the CPU only (fit refuses it on a device)",
    "step_feed": "fit's batch gather and correct count inside the CPU's fused training steps (fastnn._step_feed); "
    "a model on CUDA gets its batches through fastnn.training.BatchFeeder's device copies",
    "conv_pool": "conv -> activation -> max pooling fused for the CPU's training step plans "
    "(fastnn._conv_pool_fusion); CUDA step plans call the layers' own kernels, each with its twin",
    "conv_gap": "conv -> activation -> global average pooling fused for the CPU's training step plans "
    "(fastnn._conv_pool_fusion); CUDA step plans call the layers' own kernels, each with its twin",
    "metric_sums": "the metrics' sums inside the CPU's fused training steps (Tracker.accumulate_inside, "
    "fastnn._step_feed); a model on CUDA updates its metrics through Metric.update on the step's host output",
    "inference": "the CPU's inference plans (fastnn._inference: eval BatchNorm folded into the GEMM epilogue); "
    "a model on CUDA predicts through its layers' own kernels, each with its twin",
    "dense_chain": "a Dense chain's step with its batch rows split over the CPU's threads (fastnn._dense_chain); "
    "CUDA step plans call the layers' own kernels, each with its twin",
}

#: public @njit functions of the CPU modules that need no CUDA launcher, with the reason
CPU_ONLY_FUNCTIONS = {
    ("dropout", "row_spread"): "scratch of the CPU's vectorised mask rows (one flag byte a column); the CUDA "
    "kernels read a mask bit per thread",
    ("dropout", "spread_row"): "a mask row spread to flag bytes for the CPU's vectorised loops (see above)",
    ("activations", "sigmoid"): "scalar function, reached on the device through activate()",
    ("optim", "sign"): "scalar helper, reached on the device through lion_rule()",
    ("activations", "activate_const"): "activate() for a constant code inside the CPU's literal_unroll loops; "
    "the CUDA kernels call activate() per element",
    ("activations", "activate_grad_const"): "activate_grad() for a constant code (see above)",
    ("activations", "rows_activate"): "CPU loop over a chunk of rows; the CUDA row kernels call its row rule "
    "softmax_row (compiled from its py_func) per row",
    ("activations", "rows_activate_grad"): "CPU loop over a chunk of rows; the CUDA row kernels call "
    "softmax_row_grad per row (see above)",
    ("activations", "elementwise_rows"): "CPU loop over a chunk of rows (rows_activate without the softmax rows, "
    "for the dense kernels); the CUDA kernels call activate() per element",
    ("activations", "elementwise_rows_grad"): "CPU loop over a chunk of rows (see above); the CUDA kernels call "
    "activate_grad() per element",
    ("batchnorm", "batch_statistics"): "the statistics pass of the CPU forward, shared with kernels.batchnorm_act; "
    "the CUDA twin's forward runs its own chunk_moments and merge kernels",
    ("batchnorm", "batchnorm_grad_x"): "the last pass of the CPU backward, shared with kernels.batchnorm_act; the "
    "CUDA backward has its own elementwise grad_x kernel",
    ("batchnorm", "counted_momentum"): "host-side rule of the CPU counted forward (batches counter, momentum=None); "
    "the CUDA launcher does the same on the host counter",
    ("dropout", "draw_row_mask"): "CPU row loop (uint8 flags, then packed bytes), shared with "
    "kernels.batchnorm_act; the CUDA kernel packs one byte per thread",
    ("dropout", "row_flags"): "the CPU row loop's uint8 scratch (draw_row_mask); the CUDA kernel builds a "
    "thread's byte in a register",
    ("losses", "loss_value"): "scalar rule, reached on the device through loss_term()",
    ("losses", "loss_grad"): "scalar rule, reached on the device through loss_grad_term()",
    ("losses", "row_argmax"): "row helper of the CPU count kernels; the CUDA count kernel scans its row in its thread",
    ("losses", "weight_sum"): "NumPy's pairwise sum of a batch's weights, inside the CPU weighted loss kernels",
    ("losses", "weighted_cross_entropy"): "sample-weighted losses of a CUDA model run on the host "
    "(SampleWeighted._on_host copies the batch there, as before session 9); no device twin yet",
    ("losses", "weighted_elementwise_loss"): "host-only, as weighted_cross_entropy",
    ("losses", "weighted_accuracy_count"): "host-only, as weighted_cross_entropy",
    ("rng", "mix64"): "scalar hash, reached on the device through hash_at()",
    ("rng", "hash64"): "scalar convenience wrapper of key64 + hash_at, callable from device code as is",
    ("rng", "uniform"): "scalar convenience wrapper of key64 + uniform_at, callable from device code as is",
    ("rng", "normal"): "scalar convenience wrapper of key64 + normal_at, callable from device code as is",
    ("rng", "normal_at"): "scalar function; the CUDA fill uses normal_pair_at directly",
    ("losses", "cross_entropy_rows"): "per-sample losses of fastnn.sklearn's weighted loss, which runs on host "
    "copies of a device batch",
    ("losses", "elementwise_loss_rows"): "per-sample losses of fastnn.sklearn's weighted loss (see above)",
    ("losses", "cross_entropy_grad_rows"): "rows of a CPU thread's task in kernels.dense_chain (CPU only); the "
    "CUDA loss kernels take a row a thread",
    ("losses", "elementwise_rows"): "rows of a CPU thread's task in kernels.dense_chain (see above)",
    ("dense", "grad_z_rows"): "rows of a CPU thread's task in kernels.dense_chain and of the CPU's fixed row "
    "chunks (see above)",
    ("step_feed", "gather_rows"): "a CPU thread's rows of the batch's gather, inside a task of kernels.dense_chain "
    "(CPU only); the CUDA gather_batch takes a row a thread",
    ("masking", "length_from_values"): "per-sample rule, compiled as a device function by the CUDA launchers",
    ("masking", "length_from_indices"): "per-sample rule, compiled as a device function by the CUDA launchers",
    ("masking", "row_counts"): "the CPU batch norm's row test (None: every row); the CUDA batch norm kernels "
    "test row_is_valid, compiled as a device function, behind their per_step == 0 flag",
    ("masking", "counted_rows"): "the CPU batch norm backward's valid row count; the CUDA launcher counts on "
    "the host from the lengths read back once",
    ("recurrent", "lstm_state"): "scalar rule, reached on the device through lstm_cell()",
    ("conv", "thin_forward"): "the CPU forward's direct product for thin convolutions (instead of BLAS); the "
    "CUDA conv2d_forward has its own product kernel",
    ("conv", "is_thin_forward"): "the CPU forward's choice between thin_forward and BLAS (see above)",
    ("conv", "is_shifted_forward"): "the CPU's choice of shifted GEMMs instead of im2col for 1-D convolutions "
    "at stride 1; the CUDA conv2d_forward/backward have their own product kernels",
    ("recurrent", "chunk_rows"): "the CPU time loop's batch chunking; the CUDA twin runs one thread per (sample, unit)",
    ("recurrent", "gemm_tiled"): "the CPU recurrent kernels' GEMM on fixed output tiles; the CUDA twin calls "
    "kernels.cuda.dense.gemm",
    ("recurrent", "column_sums"): "the CPU bias-gradient column sums; the CUDA twin sums columns with "
    "kernels.cuda.dense's combine_rows",
}


def _cpu_kernel_modules():
    for info in pkgutil.iter_modules(fastnn.kernels.__path__):
        if info.name != "cuda":
            yield info.name


def _public_dispatchers(module):
    return {
        name: obj
        for name, obj in vars(module).items()
        if isinstance(obj, CPUDispatcher) and not name.startswith("_") and obj.py_func.__module__ == module.__name__
    }


def _positional_names(fn):
    return [
        p.name
        for p in inspect.signature(fn).parameters.values()
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]


@pytest.mark.parametrize("module_name", list(_cpu_kernel_modules()))
def test_every_cpu_kernel_has_a_cuda_twin(module_name):
    cpu = importlib.import_module(f"fastnn.kernels.{module_name}")
    if module_name in CPU_ONLY_MODULES:
        return
    gpu = importlib.import_module(f"fastnn.kernels.cuda.{module_name}")
    missing = []
    for name, cpu_fn in _public_dispatchers(cpu).items():
        twin = getattr(gpu, name, None)
        if twin is cpu_fn:
            continue  # a scalar rule the CUDA kernels call as is: one source for both backends
        if (module_name, name) in CPU_ONLY_FUNCTIONS:
            continue
        if twin is None or not callable(twin):
            missing.append(name)
            continue
        assert _positional_names(twin) == _positional_names(cpu_fn.py_func), (
            f"fastnn.kernels.cuda.{module_name}.{name} must take the CPU kernel's arguments in order"
        )
    assert not missing, (
        f"CPU kernels without a CUDA twin in fastnn/kernels/cuda/{module_name}.py: {missing} "
        "(add a launcher of the same name and arguments, or list it in CPU_ONLY_FUNCTIONS "
        "with the reason)"
    )


def test_allow_lists_name_existing_things():
    modules = set(_cpu_kernel_modules())
    assert set(CPU_ONLY_MODULES) <= modules
    for module_name, name in CPU_ONLY_FUNCTIONS:
        cpu = importlib.import_module(f"fastnn.kernels.{module_name}")
        assert name in _public_dispatchers(cpu), f"stale allow-list entry {module_name}.{name}"


def test_the_device_api_of_every_module_exists_on_both_devices():
    """kernels("cpu") and kernels("cuda") hold the same names: each module's DEVICE_API (and
    CUDA_ONLY_API on the device)."""
    from fastnn import backend

    cpu, gpu = backend.kernels("cpu"), backend.kernels("cuda")
    for module_name, (names, cuda_only) in backend.kernel_names().items():
        for name in names:
            assert callable(getattr(cpu, name)) and callable(getattr(gpu, name)), f"{module_name}.{name}"
        for name in cuda_only:
            assert callable(getattr(gpu, name)), f"{module_name}.{name}"
