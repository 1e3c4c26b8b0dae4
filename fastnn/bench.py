"""Side-by-side benchmark: fastnn beside its GEMM floor and PyTorch, printed as one table.

    python -m fastnn.bench                      # every config, all threads, 7 interleaved repeats
    python -m fastnn.bench --quick              # a fast look (3 repeats, short blocks)
    python -m fastnn.bench --configs tiny,mlp --threads 1 --repeats 11
    python -m fastnn.bench --configs tiny,mlp,mlp-bn-do --threads 1 --cpu-clock --runs 3   # a busy machine

(``fastnn bench`` once the CLI wires :func:`add_arguments` and :func:`main`.)

For each config of :data:`CONFIGS`, in one process and at one thread count (fastnn's Numba
pool, PyTorch's pool and NumPy's BLAS for the floor all set to ``--threads``), the cases are
timed in interleaved repeats (fastnn, floor, torch, fastnn, floor, torch, ...), each repeat a
block of calls long enough to time well:

Configs: the MLPs of :data:`CONFIGS` and the networks of :data:`NET_CONFIGS` (a LeNet-like CNN
on 1x28x28, a 1-D CNN on 16 channels x 256, an embedding of a 10k vocabulary under Dense
layers), written as ``fastnn train --arch`` specs; torch gets the same layers and weights. Their
floor is the matrix products of the Dense layers and of the convolutions in im2col form (each
on its own operands; the unfolding, pooling and embedding lookups are not counted as floor work).

- ``train``: ``model.train_step(xb, yb)`` (forward, loss, backward, optimizer update); the
  floor is the same forward and backward matrix products with NumPy's BLAS into preallocated
  outputs (x@W per layer, dW = x.T@dZ per layer, dX = dZ@W.T for all layers but the first);
  torch is zero_grad, forward, loss, backward, step.
- ``infer b=1`` / ``infer b=B``: ``model.predict(x)``; the floor is the forward products;
  torch runs under ``no_grad`` in eval mode.
- the optimizer update alone (:data:`OPTIMIZER_CASES`) beside the memory floor: a copy of the
  same bytes the update reads and writes (NumPy's ``copyto``, or torch's multi-threaded
  ``copy_`` when faster).

GFLOP/s counts 2*m*k*n per matrix product. Ratios: ``fastnn/floor`` (time; 1.0 is the floor)
and ``torch/fastnn`` (time; above 1 fastnn is faster). Results go to
``benchmarks/results/compare.{md,json}`` (``--out``) with the machine description.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import platform
import sys
import time
from collections.abc import Callable
from itertools import pairwise
from typing import ClassVar

import numpy as np

from . import _config

# ----------------------------------------------------------------------------- the configs


@dataclasses.dataclass(frozen=True)
class BenchConfig:
    """One benchmarked network: layer sizes, hidden activation, batch, optimizer and loss.

    ``batchnorm``/``dropout``: each hidden layer is Dense -> BatchNorm1d -> act -> Dropout(p)
    instead of Dense with the activation fused. ``heavy``: too slow for the default CI run.
    """

    name: str
    sizes: tuple[int, ...]
    activation: str
    batch: int
    optimizer: str
    optimizer_kwargs: tuple[tuple[str, float], ...]
    loss: str
    batchnorm: bool = False
    dropout: float = 0.0
    heavy: bool = False

    @property
    def layer_shapes(self) -> list[tuple[int, int]]:
        """(in, out) of each Dense layer."""
        return list(pairwise(self.sizes))

    def describe(self) -> str:
        hidden = "Dense-BN-ReLU-Dropout" if self.batchnorm else self.activation
        return (
            f"{'-'.join(map(str, self.sizes))} {hidden}, batch {self.batch}, {self.optimizer}"
            f"{dict(self.optimizer_kwargs)}, {self.loss}"
        )


CONFIGS: dict[str, BenchConfig] = {
    c.name: c
    for c in (
        BenchConfig("tiny", (2, 16, 16, 1), "tanh", 32, "sgd", (("lr", 0.01), ("momentum", 0.9)), "mse"),
        BenchConfig("mlp", (784, 256, 128, 10), "relu", 128, "adam", (("lr", 1e-3),), "cross_entropy"),
        BenchConfig(
            "mlp-bn-do",
            (784, 512, 256, 10),
            "relu",
            256,
            "adam",
            (("lr", 1e-3),),
            "cross_entropy",
            batchnorm=True,
            dropout=0.2,
        ),
        BenchConfig("wide", (1024, 4096, 4096, 1024), "relu", 512, "adam", (("lr", 1e-3),), "mse", heavy=True),
    )
}


@dataclasses.dataclass(frozen=True)
class NetConfig:
    """A network beyond the MLP, written as a ``fastnn train --arch`` spec (built by
    :func:`fastnn.cli.build_arch`, the output ``Dense(n_out)`` appended) on per-sample
    ``input_shape``; float32 inputs, or int64 token ids when it starts with ``embed``. torch gets
    the same layers and weights (:func:`torch_sequential`); the floor is the matrix products of
    its Dense and (im2col) convolution layers (:func:`model_gemms`)."""

    name: str
    arch: str
    input_shape: tuple[int, ...]
    n_out: int
    batch: int
    optimizer: str
    optimizer_kwargs: tuple[tuple[str, float], ...]
    loss: str = "cross_entropy"
    activation: str = "relu"
    heavy: bool = False

    @property
    def vocab(self) -> int | None:
        """The embedding's vocabulary when the network starts with one (the inputs are token ids)."""
        from .cli import parse_arch

        kind, args = parse_arch(self.arch)[0]
        return args[0] if kind == "embed" else None

    def describe(self) -> str:
        return (
            f"{self.arch} -> {self.n_out} on {'x'.join(map(str, self.input_shape))}, {self.activation}, batch "
            f"{self.batch}, {self.optimizer}{dict(self.optimizer_kwargs)}, {self.loss}"
        )


_ADAM = (("lr", 1e-3),)
NET_CONFIGS: dict[str, NetConfig] = {
    c.name: c
    for c in (
        # LeNet-5 with ReLU and max pooling: 6@28x28 (5x5, padding 2), pool, 16@10x10 (5x5), pool, 400-120-84-10
        NetConfig(
            "lenet",
            "conv:6:5,pool:2,conv:16:5:valid,pool:2,flatten,dense:120,dense:84",
            (1, 28, 28),
            10,
            64,
            "adam",
            _ADAM,
        ),
        NetConfig("cnn1d", "conv:32:5,pool:2,conv:64:5,pool:2,gap", (16, 256), 10, 64, "adam", _ADAM),
        NetConfig("embed-10k", "embed:10000:64,flatten,dense:128", (32,), 10, 64, "adam", _ADAM),
        # the same with sparse=True on both sides (torch: SparseAdam on the table, Adam on the rest)
        NetConfig("embed-10k-sparse", "embed:10000:64:sparse,flatten,dense:128", (32,), 10, 64, "adam", _ADAM),
    )
}

ALL_CONFIGS: dict[str, BenchConfig | NetConfig] = {**CONFIGS, **NET_CONFIGS}


def train_flops(sizes, batch: int) -> int:
    """Floating-point operations of the training step's matrix products (2*m*k*n each): the
    forward product and dW of every layer, dX of every layer but the first."""
    return sum(2 * batch * a * b * (2 if i == 0 else 3) for i, (a, b) in enumerate(pairwise(sizes)))


def infer_flops(sizes, batch: int) -> int:
    """Floating-point operations of the forward matrix products."""
    return sum(2 * batch * a * b for a, b in pairwise(sizes))


def make_batch(cfg: BenchConfig | NetConfig, batch: int | None = None, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Standard-normal float32 inputs (token ids for an embedding) and targets: int64 labels
    (cross-entropy) or float32 values."""
    batch = cfg.batch if batch is None else batch
    rng = np.random.default_rng(seed)
    if isinstance(cfg, NetConfig):
        shape, n_out = (batch, *cfg.input_shape), cfg.n_out
        vocab = cfg.vocab
        x = rng.integers(0, vocab, shape, dtype=np.int64) if vocab else rng.standard_normal(shape, dtype=np.float32)
    else:
        x, n_out = rng.standard_normal((batch, cfg.sizes[0]), dtype=np.float32), cfg.sizes[-1]
    if cfg.loss == "cross_entropy":
        y: np.ndarray = rng.integers(0, n_out, batch).astype(np.int64)
    else:
        y = rng.standard_normal((batch, n_out), dtype=np.float32)
    return x, y


def build_fastnn(cfg: BenchConfig | NetConfig, seed: int = 0):
    """The config as a compiled float32 fastnn Sequential."""
    import fastnn as fnn

    if isinstance(cfg, NetConfig):
        from .cli import build_arch

        model = fnn.Sequential(
            build_arch(cfg.arch, cfg.input_shape, cfg.n_out, cfg.activation),
            seed=seed,
            dtype="float32",
            input_shape=cfg.input_shape,
        )
        model.compile(loss=cfg.loss, optimizer=fnn.optim.get(cfg.optimizer, **dict(cfg.optimizer_kwargs)))
        return model
    layers: list[fnn.Layer] = []
    for i, (a, b) in enumerate(cfg.layer_shapes):
        last = i == len(cfg.layer_shapes) - 1
        if last:
            layers.append(fnn.Dense(a, b))
        elif cfg.batchnorm:
            layers += [fnn.Dense(a, b, init="he_normal"), fnn.BatchNorm1d(b), fnn.Activation(cfg.activation)]
            if cfg.dropout:
                layers.append(fnn.Dropout(cfg.dropout))
        else:
            layers.append(fnn.Dense(a, b, activation=cfg.activation))
            if cfg.dropout:
                layers.append(fnn.Dropout(cfg.dropout))
    model = fnn.Sequential(layers, seed=seed, dtype="float32")
    model.compile(loss=cfg.loss, optimizer=fnn.optim.get(cfg.optimizer, **dict(cfg.optimizer_kwargs)))
    return model


class TorchBench:
    """The config in PyTorch (float32, CPU): module, optimizer, loss and tensors of one batch.

    Built with the same weights as ``model`` (a fastnn Sequential of the config) when given.
    """

    _ACTIVATIONS: ClassVar[dict[str, str]] = {
        "relu": "ReLU",
        "tanh": "Tanh",
        "sigmoid": "Sigmoid",
        "gelu": "GELU",
        "elu": "ELU",
    }

    def __init__(self, cfg: BenchConfig | NetConfig, model=None, seed: int = 0):
        import torch
        from torch import nn

        self.torch = torch
        torch.manual_seed(seed)
        if isinstance(cfg, NetConfig):
            self._init_net(cfg, build_fastnn(cfg, seed) if model is None else model)
            return
        modules: list[nn.Module] = []
        for i, (a, b) in enumerate(cfg.layer_shapes):
            modules.append(nn.Linear(a, b))
            if i < len(cfg.layer_shapes) - 1:
                if cfg.batchnorm:
                    modules.append(nn.BatchNorm1d(b))
                modules.append(getattr(nn, self._ACTIVATIONS[cfg.activation])())
                if cfg.dropout:
                    modules.append(nn.Dropout(cfg.dropout))
        self.net = nn.Sequential(*modules)
        if model is not None:
            self.copy_weights(model)
        self._make_optimizer(cfg)

    def _init_net(self, cfg: NetConfig, model) -> None:
        self.net = torch_sequential(model)
        self._make_optimizer(cfg)

    def _make_optimizer(self, cfg) -> None:
        nn, torch = self.torch.nn, self.torch
        optimizers = {
            "sgd": torch.optim.SGD,
            "adam": torch.optim.Adam,
            "adamw": torch.optim.AdamW,
            "rmsprop": torch.optim.RMSprop,
            "adagrad": torch.optim.Adagrad,
        }
        kwargs = dict(cfg.optimizer_kwargs)
        sparse = [m for m in self.net if isinstance(m, nn.Embedding) and m.sparse]
        if sparse and cfg.optimizer == "adam":  # as fastnn: SparseAdam on the sparse tables, Adam on the rest
            tables = {id(p) for m in sparse for p in m.parameters()}
            rest = [p for p in self.net.parameters() if id(p) not in tables]
            self.optimizer = _OptimizerPair(
                torch.optim.SparseAdam([p for m in sparse for p in m.parameters()], **kwargs),
                torch.optim.Adam(rest, **kwargs),
            )
        else:
            self.optimizer = optimizers[cfg.optimizer](self.net.parameters(), **kwargs)
        self.loss_fn = nn.CrossEntropyLoss() if cfg.loss == "cross_entropy" else nn.MSELoss()

    def copy_weights(self, model) -> None:
        """Copy a fastnn model's Dense and BatchNorm1d parameters (same order of layers)."""
        torch = self.torch
        ours = [layer for layer in model.layers if type(layer).__name__ in ("Dense", "BatchNorm1d")]
        theirs = [m for m in self.net if isinstance(m, (torch.nn.Linear, torch.nn.BatchNorm1d))]
        if len(ours) != len(theirs):
            raise ValueError(f"cannot copy weights: {len(ours)} fastnn layers vs {len(theirs)} torch layers")
        with torch.no_grad():
            for src, dst in zip(ours, theirs):
                weight = src.weight.T if isinstance(dst, torch.nn.Linear) else src.weight
                dst.weight.copy_(torch.from_numpy(np.ascontiguousarray(weight)))
                dst.bias.copy_(torch.from_numpy(np.ascontiguousarray(src.bias)))

    def tensors(self, x: np.ndarray, y: np.ndarray | None = None):
        t = self.torch.from_numpy(np.ascontiguousarray(x))
        return t if y is None else (t, self.torch.from_numpy(np.ascontiguousarray(y)))

    def train_step(self, x, y):
        """One zero_grad, forward, loss, backward, step on tensors; returns the loss tensor."""
        self.net.train()
        self.optimizer.zero_grad(set_to_none=True)
        loss = self.loss_fn(self.net(x), y)
        loss.backward()
        self.optimizer.step()
        return loss

    def predict(self, x):
        """Eval-mode forward under no_grad (call :meth:`eval` once before timing)."""
        with self.torch.no_grad():
            return self.net(x)

    def eval(self) -> TorchBench:
        self.net.eval()
        return self


class _OptimizerPair:
    """Two torch optimizers stepped as one (torch.optim.SparseAdam for sparse embeddings, Adam
    for the other parameters: what fastnn's Adam does with ``Embedding(sparse=True)``)."""

    def __init__(self, *optimizers):
        self.optimizers = optimizers

    def zero_grad(self, set_to_none: bool = True) -> None:
        for optimizer in self.optimizers:
            optimizer.zero_grad(set_to_none=set_to_none)

    def step(self) -> None:
        for optimizer in self.optimizers:
            optimizer.step()


class GemmFloor:
    """The matrix products of a training step (or forward) with NumPy's BLAS into preallocated
    float32 outputs: the time no implementation of the network can beat.

    ``acts[i]`` is layer i's input (batch, in_i) and ``acts[i+1]`` its output; ``grads[i+1]``
    is dZ of layer i (the last one random, fixed) and ``grads[i]`` its dX (i > 0);
    ``grad_w[i]`` is dW of layer i. Weights are scaled by 1/sqrt(fan_in) so values stay O(1).

    ``convert`` and ``matmul`` put the arrays elsewhere: ``convert`` maps each float32 NumPy
    array to the other library's array (e.g. a CUDA tensor) and ``matmul(a, b, out=c)`` is that
    library's product (with ``torch.matmul`` on CUDA tensors the floor is cuBLAS's products).
    """

    def __init__(self, sizes, batch: int, seed: int = 0, convert: Callable = np.asarray, matmul: Callable = np.matmul):
        rng = np.random.default_rng(seed)
        self.sizes, self.batch, self._matmul = tuple(sizes), batch, matmul
        shapes = list(pairwise(sizes))
        weights = [(rng.standard_normal((a, b), dtype=np.float32) / np.float32(math.sqrt(a))) for a, b in shapes]
        acts = [rng.standard_normal((batch, sizes[0]), dtype=np.float32)]
        acts += [np.empty((batch, b), np.float32) for _, b in shapes]
        grads = [rng.standard_normal((batch, s), dtype=np.float32) for s in sizes[1:]]
        self.weights = [convert(w) for w in weights]
        self.acts = [convert(act) for act in acts]
        self.grad_w = [convert(np.empty((a, b), np.float32)) for a, b in shapes]
        self.grads: list = [None] + [convert(g) for g in grads]
        self.forward()

    def forward(self) -> None:
        for i, w in enumerate(self.weights):
            self._matmul(self.acts[i], w, out=self.acts[i + 1])

    def backward(self) -> None:
        for i in range(len(self.weights) - 1, -1, -1):
            self._matmul(self.acts[i].T, self.grads[i + 1], out=self.grad_w[i])
            if i > 0:
                self._matmul(self.grads[i + 1], self.weights[i].T, out=self.grads[i])

    def train_step(self) -> None:
        self.forward()
        self.backward()


_TORCH_ACTIVATIONS = {
    "identity": "Identity",
    "relu": "ReLU",
    "tanh": "Tanh",
    "sigmoid": "Sigmoid",
    "gelu": "GELU",
    "elu": "ELU",
    "selu": "SELU",
}


def torch_sequential(model):
    """A fastnn Sequential's layers as a ``torch.nn.Sequential`` holding the same weights: Dense,
    Conv1d/2d (with their fused activation as a module after them), Max/AvgPool1d/2d,
    GlobalAvgPool, Flatten, Dropout, Embedding and activation layers."""
    import torch
    from torch import nn

    from .layers import Activation

    def act(name):
        if name not in _TORCH_ACTIVATIONS:
            raise ValueError(f"no torch twin for the activation {name!r} in the benchmark")
        return getattr(nn, _TORCH_ACTIVATIONS[name])()

    def copy(param, value):
        param.copy_(torch.from_numpy(np.ascontiguousarray(value)))

    modules = []
    with torch.no_grad():
        for layer in model.layers:
            kind = type(layer).__name__
            one = kind.endswith("1d")
            if kind == "Dense":
                linear = nn.Linear(layer.input_shape[-1], layer.units, bias=layer.use_bias)
                copy(linear.weight, layer.weight.T)
                if layer.use_bias:
                    copy(linear.bias, layer.bias)
                modules += [linear, act(layer.activation)]
            elif kind in ("Conv1d", "Conv2d"):
                padding = (
                    layer.padding if isinstance(layer.padding, str) else (layer.padding[0] if one else layer.padding)
                )
                conv = getattr(nn, kind)(
                    layer.in_channels,
                    layer.out_channels,
                    layer.kernel_size,
                    layer.stride,
                    padding,
                    layer.dilation,
                    layer.groups,
                    layer.use_bias,
                )
                copy(conv.weight, layer.weight)
                if layer.use_bias:
                    copy(conv.bias, layer.bias)
                modules += [conv, act(layer.activation)]
            elif kind in ("MaxPool1d", "MaxPool2d"):
                modules.append(getattr(nn, kind)(layer.kernel_size, layer.stride, layer.padding))
            elif kind in ("AvgPool1d", "AvgPool2d"):
                modules.append(
                    getattr(nn, kind)(
                        layer.kernel_size, layer.stride, layer.padding, count_include_pad=layer.count_include_pad
                    )
                )
            elif kind == "GlobalAvgPool":
                pool = nn.AdaptiveAvgPool1d(1) if len(layer.input_shape) == 2 else nn.AdaptiveAvgPool2d(1)
                modules += [pool, nn.Flatten()]
            elif kind == "Flatten":
                modules.append(nn.Flatten())
            elif kind == "Dropout":
                modules.append(nn.Dropout(layer.p))
            elif kind == "Embedding":
                embedding = nn.Embedding(
                    layer.num_embeddings, layer.embedding_dim, layer.padding_idx, sparse=layer.sparse
                )
                copy(embedding.weight, layer.weight)
                modules.append(embedding)
            elif isinstance(layer, Activation):
                modules.append(act(layer.activation))
            else:
                raise ValueError(f"no torch twin for {layer!r} in the benchmark")
    return nn.Sequential(*modules)


def model_gemms(model, batch: int) -> list[tuple[int, int, int, bool]]:
    """(m, k, n, with_dx) of each matrix product a forward pass of ``model`` at ``batch`` needs:
    Dense layers (m = batch x leading positions), convolutions as im2col GEMMs (m = batch x output
    positions, k = in_channels/groups x kernel size, n = out_channels/groups, once per group).
    ``with_dx``: the training step also needs the input gradient (every layer but the first)."""
    gemms = []
    for i, layer in enumerate(model.layers):
        kind = type(layer).__name__
        if kind == "Dense":
            gemms.append((batch * math.prod(layer.input_shape[:-1]), layer.input_shape[-1], layer.units, i > 0))
        elif kind in ("Conv1d", "Conv2d"):
            k = layer.in_channels // layer.groups * math.prod(layer.kernel_size)
            m = batch * math.prod(layer.output_shape[1:])
            gemms += [(m, k, layer.out_channels // layer.groups, i > 0)] * layer.groups
    return gemms


class GemmListFloor:
    """The matrix products of :func:`model_gemms` with NumPy's BLAS, each on operands of its own
    into preallocated float32 outputs: forward ``y = x @ w``; backward ``dw = x.T @ dy`` and, where
    needed, ``dx = dy @ w.T``. (Unlike :class:`GemmFloor` the products do not chain: a
    convolution's GEMM reads its im2col matrix, whose unfolding is not matrix-product work.)"""

    def __init__(self, gemms, seed: int = 0):
        rng = np.random.default_rng(seed)
        self.gemms = list(gemms)
        normal: Callable[..., np.ndarray] = lambda *shape: rng.standard_normal(shape, dtype=np.float32)  # noqa: E731
        self.x: list[np.ndarray] = [normal(m, k) for m, k, _, _ in self.gemms]
        self.w = [normal(k, n) / np.float32(math.sqrt(k)) for _, k, n, _ in self.gemms]
        self.y = [np.empty((m, n), np.float32) for m, _, n, _ in self.gemms]
        self.dy = [normal(m, n) for m, _, n, _ in self.gemms]
        self.dw = [np.empty((k, n), np.float32) for _, k, n, _ in self.gemms]
        self.dx = [np.empty((m, k), np.float32) if dx else None for m, k, _, dx in self.gemms]

    @property
    def forward_flops(self) -> int:
        return sum(2 * m * k * n for m, k, n, _ in self.gemms)

    @property
    def train_flops(self) -> int:
        return sum(2 * m * k * n * (3 if dx else 2) for m, k, n, dx in self.gemms)

    def forward(self) -> None:
        for x, w, y in zip(self.x, self.w, self.y):
            np.matmul(x, w, out=y)

    def backward(self) -> None:
        for i in range(len(self.gemms) - 1, -1, -1):
            np.matmul(self.x[i].T, self.dy[i], out=self.dw[i])
            if self.dx[i] is not None:
                np.matmul(self.dy[i], self.w[i].T, out=self.dx[i])

    def train_step(self) -> None:
        self.forward()
        self.backward()


# ----------------------------------------------------------------------------- threads, machine


def _fastnn_blas_path() -> str | None:
    try:
        from .kernels import blas
    except ImportError:
        return None
    return os.path.realpath(getattr(blas, "LIBRARY_PATH", "")) or None


def numpy_blas_controllers() -> list:
    """threadpoolctl controllers of the BLAS libraries other than the one fastnn's kernels call
    (fastnn pins that one to 1 thread and must stay so): NumPy's, used by the floor."""
    from threadpoolctl import ThreadpoolController

    ours = _fastnn_blas_path()
    return [
        lib
        for lib in ThreadpoolController().lib_controllers
        if lib.user_api == "blas" and os.path.realpath(lib.filepath) != ours
    ]


def set_threads(n: int) -> None:
    """n threads for fastnn (Numba), NumPy's BLAS (the floor) and torch, if it is imported."""
    import fastnn

    fastnn.set_num_threads(n)
    for lib in numpy_blas_controllers():
        lib.set_num_threads(n)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(n)


def torch_or_none():
    """The torch module, or None when it is not installed (``FASTNN_BENCH_NO_TORCH=1`` hides it)."""
    if os.environ.get("FASTNN_BENCH_NO_TORCH") == "1":
        return None
    try:
        import torch
    except ImportError:
        return None
    return torch


def machine_info() -> dict:
    """CPU model, cores, library versions, BLAS libraries (threadpoolctl) and Numba's threads."""
    import numba
    from threadpoolctl import threadpool_info

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    info = {
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "numba": numba.__version__,
        "numba_num_threads": numba.config.NUMBA_NUM_THREADS,
    }
    if hasattr(os, "sched_getaffinity"):
        info["usable_cores"] = len(os.sched_getaffinity(0))
    try:
        import scipy

        info["scipy"] = scipy.__version__
    except ImportError:
        pass
    torch = torch_or_none()
    info["torch"] = torch.__version__ if torch is not None else None
    try:
        info["numba_threading_layer"] = numba.threading_layer()
    except ValueError:
        info["numba_threading_layer"] = None  # no parallel kernel has run yet
    ours = _fastnn_blas_path()
    info["threadpools"] = [
        {k: lib.get(k) for k in ("user_api", "internal_api", "architecture", "num_threads", "version", "filepath")}
        | {"used_by": _blas_user(lib, ours)}
        for lib in threadpool_info()
    ]
    return info


def _blas_user(lib: dict, ours: str | None) -> str:
    """Who uses a thread pool threadpoolctl reports: fastnn's kernels, NumPy (the floor), or another library."""
    if lib["user_api"] != "blas":
        return "openmp"
    path = os.path.realpath(lib["filepath"])
    if path == ours:
        return "fastnn kernels"
    if any(os.sep + folder + os.sep in path for folder in ("numpy.libs", os.path.join("numpy", ".dylibs"))):
        return "numpy (floor)"
    return "loaded by another library (SciPy), unused here"


# ----------------------------------------------------------------------------- timing


def warm_up(fn: Callable[[], object], calls: int, settle_s: float = 2.0) -> None:
    """Call ``fn`` ``calls`` times (compilation, first touches: however long they take), then on
    until fastnn's recorded calls have had the chance to tier up to a fused step
    (``FUSE_AFTER_CALLS`` runs, then a compile or a cache load), for ``settle_s`` seconds at most
    after those first calls: one-time costs must not leak into the calibration. (Counting the
    first calls' compile in ``settle_s`` stopped the warm-up of a cold process before the
    tier-up, which then fell into the calibration: a tiny step timed at 22 us in blocks of 29
    calls instead of 5 us.)"""
    for _ in range(calls):
        fn()
    start, done = time.perf_counter(), calls
    while done <= _config.FUSE_AFTER_CALLS and time.perf_counter() - start < settle_s:
        fn()
        done += 1


def _no_sync() -> None:
    pass


def calibrate(fn: Callable[[], object], min_time: float, sync: Callable[[], None] = _no_sync) -> int:
    """Calls per timed block so that a block lasts about ``min_time`` seconds (``sync`` after each
    call: an asynchronous call's work counted, not its launch). Measured twice, the faster kept:
    a one-time cost in the first measure (a late tier-up's compile) must not shrink the blocks
    to a few calls, whose time a wake-up after the pause would then decide."""
    per_call = math.inf
    for _ in range(2):
        calls, start = 0, time.perf_counter()
        while True:
            fn()
            sync()
            calls += 1
            elapsed = time.perf_counter() - start
            if elapsed >= min(0.05, min_time) or calls >= 1000:
                break
        per_call = min(per_call, elapsed / calls)
    return max(1, math.ceil(min_time / per_call))


# Seconds of rest before each timed block, so that the previous case's thread pool is asleep
# before the next case starts: otherwise two pools fight over the cores (PERF_NOTES.md). NumPy's
# OpenBLAS threads spin for 2^28 cycles after their last call: after 50 ms of NumPy products and a
# 0.1 s rest, Numba's second thread still took no tile in 121-142 of 200 two-tile regions on the
# 2-core VM, after 0.2 s in none (torch's OpenMP pool: none after 0.05 s); benchmarks/RESULTS.md,
# session 23.
PAUSE_S = 0.25


def interleaved(
    cases: dict[str, Callable[[], object]],
    repeats: int,
    min_time: float,
    warmup: int = 2,
    pause: float | None = None,
    clock: Callable[[], float] = time.perf_counter,
    sync: Callable[[], None] = _no_sync,
) -> dict[str, list[float]]:
    """Seconds per call of each case: ``repeats`` rounds, each timing every case in turn
    (round-robin) for a block of about ``min_time`` seconds after a ``pause`` (default
    :data:`PAUSE_S`). Each case is called ``warmup`` times first (compilation, first touch of
    memory, allocator warm-up). ``clock``: wall time, or e.g. ``time.thread_time`` for the
    calling thread's CPU time (1 thread on a loaded machine). ``sync``: waits for asynchronous
    work (a GPU's queue), before a block starts and before it is read, and after each
    calibration call."""
    pause = PAUSE_S if pause is None else pause
    calls = {}
    for name, fn in cases.items():
        warm_up(fn, warmup)
        calls[name] = calibrate(fn, min_time, sync)
    times: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(repeats):
        for name, fn in cases.items():
            n = calls[name]
            if pause > 0 and len(cases) > 1:
                time.sleep(pause)
            sync()
            start = clock()
            for _ in range(n):
                fn()
            sync()
            times[name].append((clock() - start) / n)
    return times


def median_seconds(
    cases: dict[str, Callable[[], object]],
    repeats: int,
    min_time: float,
    pause: float | None = None,
    clock: Callable[[], float] = time.perf_counter,
) -> dict[str, float]:
    """The median over :func:`interleaved`'s rounds of each case's seconds per call."""
    return {
        name: float(np.median(t)) for name, t in interleaved(cases, repeats, min_time, pause=pause, clock=clock).items()
    }


def summarize(seconds: list[float], flops: int | None = None) -> dict:
    """Median, quartiles, min/max (seconds), steps/s and GFLOP/s at the median."""
    q1, median, q3 = (float(v) for v in np.percentile(seconds, [25, 50, 75]))
    out = {
        "median_s": median,
        "q1_s": q1,
        "q3_s": q3,
        "min_s": float(min(seconds)),
        "max_s": float(max(seconds)),
        "steps_per_s": 1.0 / median,
        "repeats": len(seconds),
        "seconds": [float(s) for s in seconds],
    }
    if flops:
        out["flops"] = int(flops)
        out["gflops"] = flops / median / 1e9
    return out


# ----------------------------------------------------------------------------- the comparison


def _config_cases(cfg: BenchConfig | NetConfig, torch) -> list[tuple[str, int, int, dict[str, Callable]]]:
    """(phase, batch, flops, {impl: callable}) for the training step and both inference batches."""
    model = build_fastnn(cfg)
    x, y = make_batch(cfg)
    x1 = np.ascontiguousarray(x[:1])
    floor_train: GemmFloor | GemmListFloor
    floor_1: GemmFloor | GemmListFloor
    if isinstance(cfg, NetConfig):
        floor_train, floor_1 = GemmListFloor(model_gemms(model, cfg.batch)), GemmListFloor(model_gemms(model, 1))
        flops = (floor_train.train_flops, floor_1.forward_flops, floor_train.forward_flops)
    else:
        floor_train, floor_1 = GemmFloor(cfg.sizes, cfg.batch), GemmFloor(cfg.sizes, 1)
        flops = (train_flops(cfg.sizes, cfg.batch), infer_flops(cfg.sizes, 1), infer_flops(cfg.sizes, cfg.batch))
    train = {"fastnn": lambda: model.train_step(x, y), "floor": floor_train.train_step}
    infer_1 = {"fastnn": lambda: model.predict(x1), "floor": floor_1.forward}
    infer_b = {"fastnn": lambda: model.predict(x), "floor": floor_train.forward}
    if torch is not None:
        tb = TorchBench(cfg, model)
        tx, ty = tb.tensors(x, y)
        tx1 = tb.tensors(x1)
        tb_eval = TorchBench(cfg, model).eval()
        train["torch"] = lambda: tb.train_step(tx, ty)
        infer_1["torch"] = lambda: tb_eval.predict(tx1)
        infer_b["torch"] = lambda: tb_eval.predict(tx)
    return [
        ("train", cfg.batch, flops[0], train),
        ("infer", 1, flops[1], infer_1),
        ("infer", cfg.batch, flops[2], infer_b),
    ]


def _ratios(row: dict) -> None:
    impls = row["impls"]
    fast = impls["fastnn"]["median_s"]
    if "floor" in impls:
        row["fastnn_over_floor"] = fast / impls["floor"]["median_s"]
    if "torch" in impls:
        row["torch_over_fastnn"] = impls["torch"]["median_s"] / fast
    # paired per-repeat ratios (the repeats are interleaved): their spread
    for key, num, den in (("fastnn_over_floor", "fastnn", "floor"), ("torch_over_fastnn", "torch", "fastnn")):
        if num in impls and den in impls:
            pairs = [a / b for a, b in zip(impls[num]["seconds"], impls[den]["seconds"])]
            row[key + "_range"] = [float(min(pairs)), float(max(pairs))]


# Targets of issue 15 (the MLPs) and issue 13 (the nets' training steps: no slower than torch, within
# 1.3x of the floor), per (config, phase, batch: "b1" or "batch", the config's own): (ratio key,
# "min" or "max", bound). fastnn_over_floor: at most; torch_over_fastnn: at least.
_NET_TRAIN = (("fastnn_over_floor", "max", 1.30), ("torch_over_fastnn", "min", 1.0))
TARGETS: dict[tuple[str, str, str], tuple[tuple[str, str, float], ...]] = {
    **{(name, "train", "batch"): _NET_TRAIN for name in ("lenet", "cnn1d", "embed-10k", "embed-10k-sparse")},
    ("tiny", "train", "batch"): (("torch_over_fastnn", "min", 50.0),),
    ("mlp", "train", "batch"): (("fastnn_over_floor", "max", 1.10),),
    ("mlp-bn-do", "train", "batch"): (("fastnn_over_floor", "max", 1.15),),
    ("mlp", "infer", "b1"): (("torch_over_fastnn", "min", 3.0),),
    ("mlp", "infer", "batch"): (("torch_over_fastnn", "min", 1.0), ("fastnn_over_floor", "max", 1.10)),
    ("mlp-bn-do", "infer", "batch"): (("torch_over_fastnn", "min", 1.0), ("fastnn_over_floor", "max", 1.10)),
}
_SYMBOLS = {"fastnn_over_floor": "fastnn/floor", "torch_over_fastnn": "torch/fastnn"}


def target_status(row: dict) -> str:
    """ "met", "not met (...)" or "-" (no target) for a row of :func:`run_configs` (or of
    :func:`spread_rows`, judged on the median of the runs)."""
    kind = "b1" if row["batch"] == 1 else "batch"
    targets = TARGETS.get((row["config"], row["phase"], kind))
    if not targets:
        return "-"
    missed = []
    for key, how, bound in targets:
        value = row.get(key)
        if value is None:
            missed.append(f"no {_SYMBOLS[key]}")
        elif (value < bound) if how == "min" else (value > bound):
            missed.append(f"{_SYMBOLS[key]} {value:.3f} {'<' if how == 'min' else '>'} {bound:g}")
    return "met" if not missed else "not met: " + "; ".join(missed)


def spread_rows(runs: list[list[dict]]) -> list[dict]:
    """One row per case of several whole runs: the median and (min, max) over the runs of fastnn's
    time and of the two ratios."""
    rows = []
    for cases in zip(*runs):
        row = {k: cases[0][k] for k in ("config", "phase", "batch", "threads")}
        row["runs"] = len(cases)
        fast = [c["impls"]["fastnn"]["median_s"] for c in cases]
        row["fastnn_ms"] = [float(np.median(fast)) * 1e3, min(fast) * 1e3, max(fast) * 1e3]
        for key in _SYMBOLS:
            values = [c[key] for c in cases if key in c]
            if values:
                row[key] = float(np.median(values))
                row[key + "_range"] = [float(min(values)), float(max(values))]
        rows.append(row)
    return rows


def format_spread_table(rows: list[dict]) -> str:
    """The table of :func:`spread_rows`: median (min-max over the runs) and the targets."""
    lines = ["| config | phase | batch | fastnn ms | fastnn/floor | torch/fastnn | target |", "|" + "---|" * 7]

    def cell(row, key):
        if key not in row:
            return "-"
        lo, hi = row[key + "_range"]
        return f"{row[key]:.2f} ({lo:.2f}-{hi:.2f})"

    for r in rows:
        ms = r["fastnn_ms"]
        lines.append(
            f"| {r['config']} | {r['phase']} | {r['batch']} | {_ms(ms[0] / 1e3)} ({_ms(ms[1] / 1e3)}-"
            f"{_ms(ms[2] / 1e3)}) | {cell(r, 'fastnn_over_floor')} | {cell(r, 'torch_over_fastnn')} | "
            f"{target_status(r)} |"
        )
    return "\n".join(lines)


def run_configs(
    names,
    threads: int,
    repeats: int,
    min_time: float,
    log=print,
    pause: float | None = None,
    clock: Callable[[], float] = time.perf_counter,
) -> list[dict]:
    """Rows {config, phase, batch, impls: {fastnn|floor|torch: summary}, ratios} per phase; ``clock``
    as in :func:`interleaved`."""
    torch = torch_or_none()
    set_threads(threads)
    rows = []
    for name in names:
        cfg = ALL_CONFIGS[name]
        for phase, batch, flops, cases in _config_cases(cfg, torch):
            log(f"  {name:10s} {phase} batch {batch}: {', '.join(cases)} ...")
            times = interleaved(cases, repeats, min_time, pause=pause, clock=clock)
            row = {
                "config": name,
                "phase": phase,
                "batch": batch,
                "threads": threads,
                "impls": {impl: summarize(t, flops) for impl, t in times.items()},
            }
            _ratios(row)
            rows.append(row)
    return rows


# ----------------------------------------------------------------------------- optimizer update

# Optimizer cases (name, hyper-parameters) as in benchmarks/test_bench_optim.py.
OPTIMIZER_CASES: dict[str, tuple[str, dict]] = {
    "sgd momentum": ("sgd", {"momentum": 0.9, "weight_decay": 1e-4}),
    "rmsprop": ("rmsprop", {}),
    "adagrad": ("adagrad", {}),
    "adam": ("adam", {}),
    "adamw": ("adamw", {}),
    "lion": ("lion", {"weight_decay": 0.1}),
    "adam clip_norm": ("adam", {"clip_norm": 1.0}),
}
_TORCH_OPTIMIZERS = {"sgd": "SGD", "rmsprop": "RMSprop", "adagrad": "Adagrad", "adam": "Adam", "adamw": "AdamW"}


def optimizer_passes(opt) -> int:
    """Buffer passes of one step: read params, grads and each state, write params and each
    state (3 + 2k), plus one more read of the grads for the global norm when clipping by norm."""
    k = sum(isinstance(v, np.ndarray) for v in opt.state_dict().values())
    return 3 + 2 * k + (1 if opt.clip_norm is not None else 0)


def copy_bandwidth(n_bytes: int = 256 << 20, repeats: int = 5) -> dict:
    """Bytes/s (read + written) of a large copy: NumPy's single-threaded ``copyto`` and, when
    torch is installed, torch's multi-threaded ``copy_``; ``best`` is the higher."""
    src = np.ones(n_bytes // 4, np.float32)
    dst = np.empty_like(src)
    copies: dict[str, Callable[[], object]] = {"numpy": lambda: np.copyto(dst, src)}
    torch = torch_or_none()
    if torch is not None:
        ts, td = torch.from_numpy(src), torch.from_numpy(dst)
        copies["torch"] = lambda: td.copy_(ts)
    times = interleaved(copies, repeats, 0.1, warmup=1)
    out = {name: 2 * src.nbytes / float(np.median(t)) for name, t in times.items()}
    out["best"] = max(out.values())
    return out


def _stream_floor_kernel():
    """An update with the optimizer's exact memory traffic and no arithmetic to speak of: read
    params, grads and k state buffers, write params and the states in place (p += g, s += g),
    in the same fixed chunks over Numba's threads. Its time is the update's memory floor."""
    from numba import njit, prange

    from ._config import JIT_PARALLEL
    from .kernels.optim import OPTIM_CHUNK

    @njit(**JIT_PARALLEL)
    def stream(p, g, s1, s2, s3, k):
        n = p.size
        for c in prange((n + OPTIM_CHUNK - 1) // OPTIM_CHUNK):
            i0, i1 = c * OPTIM_CHUNK, min(n, (c + 1) * OPTIM_CHUNK)
            pp, gg = p[i0:i1], g[i0:i1]
            if k == 0:
                for i in range(pp.size):
                    pp[i] += gg[i]
            elif k == 1:
                a1 = s1[i0:i1]
                for i in range(pp.size):
                    a1[i] += gg[i]
                    pp[i] += gg[i]
            elif k == 2:
                a1, a2 = s1[i0:i1], s2[i0:i1]
                for i in range(pp.size):
                    a1[i] += gg[i]
                    a2[i] += gg[i]
                    pp[i] += gg[i]
            else:
                a1, a2, a3 = s1[i0:i1], s2[i0:i1], s3[i0:i1]
                for i in range(pp.size):
                    a1[i] += gg[i]
                    a2[i] += gg[i]
                    a3[i] += gg[i]
                    pp[i] += gg[i]

    return stream


def run_optimizers(sizes, repeats: int, min_time: float, log=print, pause: float | None = None) -> dict:
    """Each optimizer's update over n float32 params beside its streaming memory floor (the same
    buffers read and written in place, measured in the same run), the copy-bandwidth estimate
    and torch's step."""
    from . import optim

    stream = _stream_floor_kernel()

    bandwidth = copy_bandwidth()
    torch = torch_or_none()
    rows = []
    for n in sizes:
        rng = np.random.default_rng(0)
        params = rng.standard_normal(n, dtype=np.float32)
        grads = rng.standard_normal(n, dtype=np.float32) * np.float32(1e-3)
        for label, (name, hyper) in OPTIMIZER_CASES.items():
            log(f"  optimizer {label}, {n:,} params ...")
            opt = optim.get(name, lr=1e-4, **hyper)
            opt.bind(params, grads, n - 1000)
            passes = optimizer_passes(opt)
            k = sum(isinstance(v, np.ndarray) for v in opt.state_dict().values())
            fp, fg = params.copy(), np.zeros_like(grads)
            fs = [np.zeros_like(params) for _ in range(k)] + [np.empty(0, np.float32)] * (3 - k)
            floor = lambda fp=fp, fg=fg, fs=fs, k=k: stream(fp, fg, *fs, k)  # noqa: E731 (this round's arrays)
            cases: dict[str, Callable[[], object]] = {"fastnn": opt.step, "stream floor": floor}
            if torch is not None and name in _TORCH_OPTIMIZERS and opt.clip_norm is None:
                p = torch.nn.Parameter(torch.from_numpy(params.copy()))
                p.grad = torch.from_numpy(grads.copy())
                topt = getattr(torch.optim, _TORCH_OPTIMIZERS[name])([p], lr=1e-4, **hyper)
                cases["torch"] = topt.step
            times = interleaved(cases, repeats, min_time, pause=pause)
            floor_s = passes * params.nbytes / bandwidth["best"]
            row = {
                "optimizer": label,
                "n_params": n,
                "passes": passes,
                "bytes": passes * params.nbytes,
                "floor_s": floor_s,
                "impls": {k: summarize(v) for k, v in times.items()},
            }
            row["fastnn_over_floor"] = row["impls"]["fastnn"]["median_s"] / floor_s
            row["fastnn_over_stream_floor"] = (
                row["impls"]["fastnn"]["median_s"] / row["impls"]["stream floor"]["median_s"]
            )
            if "torch" in row["impls"]:
                row["torch_over_fastnn"] = row["impls"]["torch"]["median_s"] / row["impls"]["fastnn"]["median_s"]
            rows.append(row)
            del opt, cases
    return {"copy_bandwidth_bytes_per_s": bandwidth, "rows": rows}


# ----------------------------------------------------------------------------- reporting


def _ms(s: float) -> str:
    ms = s * 1e3
    return f"{ms:.4f}" if ms < 0.01 else f"{ms:.3f}" if ms < 10 else f"{ms:.1f}"


def _cell(impls: dict, name: str, spread: bool = False) -> str:
    if name not in impls:
        return "-"
    s = impls[name]
    return f"{_ms(s['median_s'])} ({_ms(s['q1_s'])}-{_ms(s['q3_s'])})" if spread else _ms(s["median_s"])


def _gflops(impls: dict, name: str) -> str:
    return f"{impls[name]['gflops']:.1f}" if name in impls and "gflops" in impls[name] else "-"


def _rate(per_s: float) -> str:
    return f"{per_s:,.0f}" if per_s >= 100 else f"{per_s:.2f}"


def _ratio(row: dict, key: str) -> str:
    return f"{row[key]:.2f}" if key in row else "-"


def format_table(rows: list[dict]) -> str:
    """The one markdown table: ms/step median (IQR), steps/s, GFLOP/s and the two ratios."""
    head = (
        "| config | phase | batch | fastnn ms (IQR) | floor ms (IQR) | torch ms (IQR) | fastnn steps/s "
        "| GFLOP/s fastnn / floor / torch | fastnn/floor | torch/fastnn | target |"
    )
    lines = [head, "|" + "---|" * 11]
    for r in rows:
        i = r["impls"]
        lines.append(
            f"| {r['config']} | {r['phase']} | {r['batch']} | {_cell(i, 'fastnn', True)} | "
            f"{_cell(i, 'floor', True)} | {_cell(i, 'torch', True)} | {_rate(i['fastnn']['steps_per_s'])} | "
            f"{_gflops(i, 'fastnn')} / {_gflops(i, 'floor')} / {_gflops(i, 'torch')} | "
            f"{_ratio(r, 'fastnn_over_floor')} | {_ratio(r, 'torch_over_fastnn')} | {target_status(r)} |"
        )
    return "\n".join(lines)


def format_optimizer_table(result: dict) -> str:
    bw = result["copy_bandwidth_bytes_per_s"]
    torch_bw = f", torch {bw['torch'] / 1e9:.1f} GB/s" if "torch" in bw else ""
    lines = [
        (
            f"Copy bandwidth (read + write): numpy {bw['numpy'] / 1e9:.1f} GB/s{torch_bw}; the copy floor uses "
            f"{bw['best'] / 1e9:.1f} GB/s. The stream floor is measured: the same buffers read and "
            f"written in place with no arithmetic, in the same run."
        ),
        "",
        "| optimizer | params | passes | copy floor ms | stream floor ms (IQR) | fastnn ms (IQR) | torch ms (IQR) "
        "| fastnn/stream floor | fastnn/copy floor | torch/fastnn |",
        "|" + "---|" * 10,
    ]
    for r in result["rows"]:
        i = r["impls"]
        lines.append(
            f"| {r['optimizer']} | {r['n_params'] / 1e6:g}M | {r['passes']} | {_ms(r['floor_s'])} | "
            f"{_cell(i, 'stream floor', True)} | {_cell(i, 'fastnn', True)} | {_cell(i, 'torch', True)} | "
            f"{_ratio(r, 'fastnn_over_stream_floor')} | {_ratio(r, 'fastnn_over_floor')} "
            f"| {_ratio(r, 'torch_over_fastnn')} |"
        )
    return "\n".join(lines)


def format_machine(info: dict) -> str:
    blas = "; ".join(
        f"{p['internal_api']} {p.get('version') or ''} {p.get('architecture') or ''} "
        f"{os.path.basename(p['filepath'])} ({p['num_threads']} threads, {p['used_by']})".replace("  ", " ")
        for p in info["threadpools"]
    )
    return (
        f"Machine: {info['cpu']}, {info.get('usable_cores', info['cpu_count'])} usable cores; "
        f"Python {info['python']}, numpy {info['numpy']}, numba {info['numba']} "
        f"(threading layer {info['numba_threading_layer']}), torch {info['torch']}. Thread pools: {blas}."
    )


def write_results(out_dir: str, report: dict, text: str) -> tuple[str, str]:
    os.makedirs(out_dir, exist_ok=True)
    md, js = os.path.join(out_dir, "compare.md"), os.path.join(out_dir, "compare.json")
    with open(md, "w") as handle:
        handle.write(text + "\n")
    with open(js, "w") as handle:
        json.dump(report, handle, indent=1)
    return md, js


# ----------------------------------------------------------------------------- command line


def _default_out() -> str:
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    bench = os.path.join(here, "benchmarks")
    return os.path.join(bench if os.path.isdir(bench) else os.getcwd(), "results")


def _parse_configs(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in ALL_CONFIGS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"--configs takes names from {', '.join(ALL_CONFIGS)} separated by commas, got {text!r}"
        )
    return names


def _parse_sizes(text: str) -> list[int]:
    try:
        sizes = [int(float(s)) for s in text.split(",") if s.strip()]
    except ValueError:
        sizes = []
    if not sizes or min(sizes) < 1000:
        raise argparse.ArgumentTypeError(
            f"--optim-sizes takes parameter counts of at least 1000 like 1e6,1e7, got {text!r}"
        )
    return sizes


def _positive(kind: type, option: str, zero: bool = False):
    """An argparse type: a number of ``kind`` above 0 (at least 0 with ``zero``), naming ``option``."""

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            value = None
        if value is None or value < 0 or (value == 0 and not zero):
            raise argparse.ArgumentTypeError(
                f"{option} takes a {'non-negative' if zero else 'positive'} {kind.__name__}, got {text!r}"
            )
        return value

    return parse


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the benchmark's options to ``parser`` (for ``fastnn bench``)."""
    parser.add_argument(
        "--configs",
        type=_parse_configs,
        default=None,
        help=f"comma-separated configs from {', '.join(ALL_CONFIGS)} (default: all; with "
        f"--quick all but the heavy ones: {', '.join(n for n, c in ALL_CONFIGS.items() if c.heavy)})",
    )
    parser.add_argument(
        "--threads",
        type=_positive(int, "--threads"),
        default=None,
        help="threads for fastnn, torch and the floor's BLAS (default: all of Numba's)",
    )
    parser.add_argument(
        "--repeats",
        type=_positive(int, "--repeats"),
        default=None,
        help="interleaved repeats (default 7; 3 with --quick)",
    )
    parser.add_argument(
        "--min-time",
        type=_positive(float, "--min-time"),
        default=None,
        help="seconds per timed block (default 0.2; 0.03 with --quick)",
    )
    parser.add_argument(
        "--pause",
        type=_positive(float, "--pause", zero=True),
        default=PAUSE_S,
        help=f"seconds of rest before each timed block, so the previous case's threads sleep (default {PAUSE_S})",
    )
    parser.add_argument(
        "--quick", action="store_true", help="few short repeats, no heavy configs, optimizers at 1M params only"
    )
    parser.add_argument(
        "--optim-sizes",
        type=_parse_sizes,
        default=None,
        help="parameter counts of the optimizer benchmark (default 1e6,1e7)",
    )
    parser.add_argument("--no-optim", action="store_true", help="skip the optimizer-update benchmark")
    parser.add_argument(
        "--runs",
        type=_positive(int, "--runs"),
        default=1,
        help="whole runs of the configs; above 1 a second table gives each row's median and range "
        "over the runs (one noisy run should not decide a target)",
    )
    parser.add_argument(
        "--cpu-clock",
        action="store_true",
        help="time the calling thread's CPU time, not wall time (needs --threads 1: then every "
        "case runs in that thread, and a busy machine's preemptions drop out)",
    )
    parser.add_argument(
        "--out",
        default=None,
        help="folder for compare.md/compare.json (default: benchmarks/results); '-' writes nothing",
    )
    return parser


def _command(argv: list[str] | None) -> str:
    given = sys.argv[1:] if argv is None else argv
    script = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    prog = {"compare.py": "python benchmarks/compare.py", "bench.py": "python -m fastnn.bench"}.get(
        script, "fastnn bench"
    )
    if prog == "fastnn bench" and given[:1] == ["bench"]:  # `fastnn bench ...`: the subcommand is in prog
        given = given[1:]
    return f"{prog} {' '.join(given)}".strip()


def run(args, argv: list[str] | None = None) -> int:
    import numba

    threads = args.threads or numba.config.NUMBA_NUM_THREADS
    if args.cpu_clock and threads != 1:
        raise SystemExit(
            "fastnn bench: --cpu-clock needs --threads 1 (other threads' work is not in the calling thread's CPU time)"
        )
    clock = time.thread_time if args.cpu_clock else time.perf_counter
    clock_name = "CPU time of the calling thread" if args.cpu_clock else "wall time"
    repeats = args.repeats or (3 if args.quick else 7)
    min_time = args.min_time or (0.03 if args.quick else 0.2)
    sizes = args.optim_sizes or ([1_000_000] if args.quick else [1_000_000, 10_000_000])

    def log(msg):
        print(msg, file=sys.stderr, flush=True)

    command = _command(argv)
    configs = args.configs or [n for n, c in ALL_CONFIGS.items() if not (args.quick and c.heavy)]
    log(f"fastnn bench: {threads} threads, {repeats} interleaved repeats of >= {min_time} s blocks")
    runs = [run_configs(configs, threads, repeats, min_time, log, args.pause, clock) for _ in range(max(1, args.runs))]
    rows = runs[-1]
    optim_result = None if args.no_optim else run_optimizers(sizes, repeats, min_time, log, args.pause)
    info = machine_info()
    parts = [
        f"## fastnn beside its GEMM floor and PyTorch ({threads} threads, {clock_name})",
        "",
        format_table(rows),
        "",
        (
            "ms per step: median of interleaved repeats (IQR). fastnn/floor: time over the bare matrix "
            "products (1.00 = the floor). torch/fastnn: above 1, fastnn is faster. target: the issue's bound "
            "for the row (TARGETS: issue 15 for the MLPs, 13 for the nets' training)."
        ),
        "",
    ]
    if len(runs) > 1:
        parts[-2:-1] = [
            parts[-2] + f" (the last of {len(runs)} runs)",
            "",
            f"### Median (min-max) over {len(runs)} whole runs",
            "",
            format_spread_table(spread_rows(runs)),
        ]
    if optim_result is not None:
        parts += ["## Optimizer update alone beside its memory floor", "", format_optimizer_table(optim_result), ""]
    parts += [format_machine(info), "", f"Command: `{command}`; repeats {repeats}, blocks >= {min_time} s."]
    text = "\n".join(parts)
    print(text)
    if args.out != "-":
        report = {
            "machine": info,
            "threads": threads,
            "repeats": repeats,
            "min_time_s": min_time,
            "pause_s": args.pause,
            "command": command,
            "configs": {n: dataclasses.asdict(ALL_CONFIGS[n]) for n in configs},
            "rows": rows,
            "runs": runs,
            "spread": spread_rows(runs),
            "optimizers": optim_result,
        }
        md, js = write_results(args.out or _default_out(), report, text)
        log(f"wrote {md} and {js}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """``fastnn bench`` / ``python -m fastnn.bench``: print the table, write the results."""
    parser = add_arguments(argparse.ArgumentParser(prog="fastnn bench", description=__doc__.split("\n")[0]))
    return run(parser.parse_args(argv), argv)


if __name__ == "__main__":
    sys.exit(main())
