"""The ``fastnn`` command: ``fastnn demo``, ``fastnn train --data FILE ...``, ``fastnn bench``, ``fastnn warmup``."""

from __future__ import annotations

import argparse
import os
import sys
import time
import traceback
from typing import Any

import numpy as np


def _parse_hidden(text: str) -> list[int]:
    try:
        sizes = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--hidden must be comma-separated integers like 256,128, got {text!r}")
    if any(s < 1 for s in sizes):
        raise argparse.ArgumentTypeError(f"--hidden sizes must be >= 1, got {text!r}")
    return sizes


def build_mlp(n_in: int, hidden: list[int], n_out: int, activation: str, seed: int, dtype: str):
    import fastnn as fnn

    layers, width = [], n_in
    for size in hidden:
        layers.append(fnn.Dense(width, size, activation=activation))
        width = size
    layers.append(fnn.Dense(width, n_out))
    return fnn.Sequential(layers, seed=seed, dtype=dtype)


# --------------------------------------------------------------------------- --arch specs

CONV_ARCH = "conv:16:3,pool:2,conv:32:3,pool:2,flatten,dense:64"

ARCH_HELP = (
    "comma-separated layers, applied in order to each sample; the output Dense (one unit per class, or "
    "per target) is appended. conv:OUT:K = a KxK convolution to OUT channels, padding 'same' "
    "(conv:OUT:K:valid = none), --activation fused (Conv2d on (channels, height, width) samples, Conv1d "
    "on (channels, length)); pool:K / avgpool:K = max / mean over KxK windows, stride K; gap = the mean "
    "over all positions (GlobalAvgPool); flatten; dense:N = N units with --activation (a flatten is added "
    "before it when needed); dropout:P; embed:VOCAB:DIM = integer token ids to DIM-vectors (first layer "
    "only; such data are not scaled; embed:VOCAB:DIM:sparse updates only the rows each step looks up). "
    f"Example (what --conv uses): {CONV_ARCH}"
)

# kind -> (argument converters, how many are required, an example)
_ARCH_ITEMS = {
    "conv": ((int, int, str), 2, "conv:16:3"),
    "pool": ((int,), 1, "pool:2"),
    "avgpool": ((int,), 1, "avgpool:2"),
    "gap": ((), 0, "gap"),
    "flatten": ((), 0, "flatten"),
    "dense": ((int,), 1, "dense:64"),
    "dropout": ((float,), 1, "dropout:0.2"),
    "embed": ((int, int, str), 2, "embed:10000:32"),
}


def parse_arch(text: str) -> list[tuple[str, tuple]]:
    """``"conv:16:3,pool:2,dense:64"`` -> ``[("conv", (16, 3)), ("pool", (2,)), ("dense", (64,))]``
    (the grammar is :data:`ARCH_HELP`); raises ``argparse.ArgumentTypeError`` naming the bad item."""
    items: list[tuple[str, tuple]] = []
    for part in (p.strip() for p in str(text).split(",")):
        if not part:
            continue
        kind, *raw = (field.strip() for field in part.split(":"))
        kind = kind.lower()
        if kind not in _ARCH_ITEMS:
            raise argparse.ArgumentTypeError(
                f"--arch item {part!r}: unknown layer {kind!r}; use {', '.join(_ARCH_ITEMS)} (e.g. {CONV_ARCH!r})"
            )
        converters, required, example = _ARCH_ITEMS[kind]
        try:
            if not required <= len(raw) <= len(converters):
                raise ValueError
            args: tuple[Any, ...] = tuple(convert(value) for convert, value in zip(converters, raw))
        except ValueError:
            counts = f"{required}" if required == len(converters) else f"{required} or {len(converters)}"
            raise argparse.ArgumentTypeError(
                f"--arch item {part!r}: {kind} takes {counts} values after the name, e.g. {example!r}"
            ) from None
        if (
            any(v < 1 for v in args if isinstance(v, int))
            or (kind == "dropout" and not 0 <= args[0] < 1)
            or (kind == "conv" and len(args) == 3 and args[2] not in ("same", "valid"))
            or (kind == "embed" and len(args) == 3 and args[2] != "sparse")
        ):
            raise argparse.ArgumentTypeError(
                f"--arch item {part!r}: sizes must be >= 1, a dropout rate in [0, 1), a conv padding 'same' or "
                f"'valid', an embed's third value 'sparse'"
            )
        if kind == "embed" and items:
            raise argparse.ArgumentTypeError(f"--arch item {part!r}: embed takes the token ids, so it must come first")
        items.append((kind, args))
    if not items:
        raise argparse.ArgumentTypeError(f"--arch is empty; e.g. {CONV_ARCH!r}")
    return items


def build_arch(arch, input_shape, n_out: int, activation: str = "relu") -> list:
    """The layers of an --arch spec (text or :func:`parse_arch` items) for per-sample
    ``input_shape``, with the output ``Dense(n_out)`` appended. Conv and pooling layers are 2-D
    on (channels, height, width) and 1-D on (channels, length)."""
    import fastnn as fnn

    items = parse_arch(arch) if isinstance(arch, str) else arch
    shape = tuple(input_shape)
    rank, channels = len(shape), shape[0]  # what the layers see: rank of the per-sample shape
    layers = []

    def flat():
        nonlocal rank
        if rank > 1:
            layers.append(fnn.Flatten())
            rank = 1

    for kind, args in items:
        if kind in ("conv", "pool", "avgpool", "gap") and rank not in (2, 3):
            raise ValueError(
                f"--arch {kind} needs per-sample (channels, height, width) or (channels, length), but "
                f"it receives {rank}-D samples; convolutions come before flatten/dense/gap, and flat "
                f"data need --input-shape (e.g. 1,28,28)"
            )
        two_d = rank == 3
        if kind == "embed":
            layers.append(fnn.Embedding(args[0], args[1], sparse=len(args) > 2))
            rank += 1
        elif kind == "conv":
            conv = fnn.Conv2d if two_d else fnn.Conv1d
            layers.append(
                conv(channels, args[0], args[1], padding=args[2] if len(args) > 2 else "same", activation=activation)
            )
            channels = args[0]
        elif kind in ("pool", "avgpool"):
            pools = {"pool": (fnn.MaxPool1d, fnn.MaxPool2d), "avgpool": (fnn.AvgPool1d, fnn.AvgPool2d)}
            layers.append(pools[kind][two_d](args[0]))
        elif kind == "gap":
            layers.append(fnn.GlobalAvgPool())
            rank = 1
        elif kind == "flatten":
            flat()
        elif kind == "dense":
            flat()
            layers.append(fnn.Dense(args[0], activation=activation))
        else:
            layers.append(fnn.Dropout(args[0]))
    flat()
    layers.append(fnn.Dense(n_out))
    return layers


def arch_text(items) -> str:
    """:func:`parse_arch` items back as a spec string."""
    return ",".join(kind + "".join(f":{a}" for a in args) for kind, args in items)


def _parse_shape(text: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        shape = ()
    if not shape or any(d < 1 for d in shape):
        raise argparse.ArgumentTypeError(
            f"--input-shape must be positive integers like 1,28,28 (channels, height, "
            f"width) or 3,100 (channels, length), got {text!r}"
        )
    return shape


def _arch_of(args):
    """The parsed --arch (or --conv's) layers, or None for an MLP."""
    if getattr(args, "arch", None):
        return args.arch
    return parse_arch(CONV_ARCH) if getattr(args, "conv", False) else None


def _shape_samples(X: np.ndarray, args, arch) -> np.ndarray:
    """X with the per-sample shape the --arch layers take: the file's image shape, --input-shape,
    or a square single-channel image for flat data with a square number of features."""
    per_sample = args.input_shape
    if per_sample is None and X.ndim == 2 and arch[0][0] != "embed":
        side = int(round(np.sqrt(X.shape[1])))
        if side * side != X.shape[1]:
            raise ValueError(
                f"--arch/--conv needs images, and the data have {X.shape[1]} features per row, not a "
                f"square image; pass --input-shape C,H,W (or C,L for 1-D convolutions)"
            )
        per_sample = (1, side, side)
    if per_sample is None:
        return X
    if int(np.prod(per_sample)) != int(np.prod(X.shape[1:])):
        raise ValueError(
            f"--input-shape {','.join(map(str, per_sample))} holds {int(np.prod(per_sample))} values, but "
            f"each sample of the data has {int(np.prod(X.shape[1:]))} (shape {X.shape[1:]})"
        )
    return X.reshape(len(X), *per_sample)


def _scale(X_train, X_test, arch):
    """MLP: per-feature standardisation. Images: one mean and std over all training pixels (a
    per-pixel scale would blow up the constant border pixels of shifted images). Tokens: as they are."""
    from fastnn.data import standardize

    if arch is None:
        X_train, X_test, _ = standardize(X_train, X_test)
        return X_train, X_test
    if arch[0][0] == "embed":
        return X_train, X_test
    mean, std = float(X_train.mean()), float(X_train.std()) or 1.0
    return (X_train - mean) / std, (X_test - mean) / std


def _train_and_report(X, y, args, task: str) -> tuple:
    import fastnn as fnn
    from fastnn.data import train_test_split

    arch = _arch_of(args)
    classification = task == "classification"
    X_train, X_test, y_train, y_test = train_test_split(
        X, y, test_size=args.test_size, seed=args.seed, stratify=classification
    )
    X_train, X_test = _scale(X_train, X_test, arch)
    n_out = int(y.max()) + 1 if classification else (1 if y.ndim == 1 else y.shape[1])
    if arch is None:
        model = build_mlp(X.shape[1], args.hidden, n_out, args.activation, args.seed, args.dtype)
    else:
        model = fnn.Sequential(
            build_arch(arch, X.shape[1:], n_out, args.activation),
            seed=args.seed,
            dtype=args.dtype,
            input_shape=X.shape[1:],
        )
    if args.verbose and fnn.distributed.is_main():  # under mpiexec: rank 0 prints and saves
        model.summary()
    optimizer = fnn.optim.get(args.optimizer, lr=args.lr) if args.lr is not None else fnn.optim.get(args.optimizer)
    start = time.perf_counter()
    model.fit(
        X_train,
        y_train,
        loss="cross_entropy" if classification else "mse",
        optimizer=optimizer,
        epochs=args.epochs,
        batch_size=args.batch_size,
        validation_data=(X_test, y_test),
        verbose=args.verbose,
    )
    seconds = time.perf_counter() - start
    metrics = model.evaluate(X_test, y_test)
    return model, metrics, seconds


def cmd_demo(args) -> int:
    from fastnn import distributed
    from fastnn.data import load_digits

    arch = _arch_of(args)
    X, y = load_digits(images=arch is not None)
    args.test_size = 0.2
    model, metrics, seconds = _train_and_report(X, y, args, "classification")
    if not distributed.is_main():
        return 0
    what = (
        f"MLP 64-{'-'.join(map(str, args.hidden))}-10"
        if arch is None
        else f"CNN {arch_text(arch)} ({model.params.size:,} parameters)"
    )
    print(
        f"digits (8x8, {len(X)} images, 10 classes), {what}, {args.epochs} epochs: test accuracy {metrics['accuracy']:.4f} (held-out 20%), "
        f"test loss {metrics['loss']:.4f}, training time {seconds:.2f} s (the first run includes compiling "
        f"the kernels once; they are cached for the next runs)"
    )
    return 0


# -o extension -> (what is saved, how to load it)
_OUTPUTS = {".npz": ("weights", "Sequential.load_weights"), ".safetensors": ("whole model", "fastnn.load")}


def _test_size(text: str) -> float | int:
    """--test-size: a fraction (0.2) or a count of samples (50), as train_test_split takes them."""
    try:
        return int(text)
    except ValueError:
        return float(text)  # argparse turns a ValueError into "invalid _test_size value"


def _delimiter(text: str) -> str:
    """--delimiter: one character; "tab" or "\\t" (as a shell passes it unquoted) is a tab."""
    cell = "\t" if text.lower() in ("tab", "\\t") else text
    if len(cell) != 1:
        raise argparse.ArgumentTypeError(f"--delimiter must be one character (or 'tab'), got {text!r}")
    return cell


def _check_output(path: str) -> None:
    """-o checked before training, so a typo cannot lose the trained model: a known extension, in an
    existing, writable directory."""
    if os.path.isdir(path):
        raise ValueError(
            f"--output {path!r} is a directory; name a file in it, e.g. {os.path.join(path, 'model.npz')!r}"
        )
    if os.path.exists(path) and not os.path.isfile(path):  # a pipe, device or socket: saving would be refused
        raise ValueError(f"--output {path!r} exists and is not a regular file; name a file to write")
    extension = os.path.splitext(path)[1].lower()
    if extension not in _OUTPUTS:
        kinds = " or ".join(f"{ext} for the {what} ({load})" for ext, (what, load) in _OUTPUTS.items())
        raise ValueError(f"--output {path!r} has the extension {extension or '(none)'!r}; use {kinds}")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise ValueError(f"--output {path!r}: the directory {folder!r} does not exist; create it first")
    if not os.access(folder, os.W_OK):
        raise ValueError(f"--output {path!r}: the directory {folder!r} is not writable; choose another one")


def _is_whole(y: np.ndarray) -> bool:
    return y.dtype.kind in "biu" or (y.dtype.kind == "f" and bool(np.all(y == np.round(y))))


def _looks_like_classes(y: np.ndarray) -> bool:
    """--task auto: one label per row, at most 100 distinct whole numbers within int32 (1e30-sized
    floats are all whole). Several target columns are a multi-output regression."""
    if y.ndim > 1:
        return False
    if y.dtype.kind not in "biuf" or not _is_whole(y):
        return y.dtype.kind not in "biuf"  # text labels are classes (and refused with the fix)
    values = np.unique(y)
    return len(values) <= 100 and bool(np.abs(values).max() < 2**31)


def _class_labels(y: np.ndarray) -> np.ndarray:
    """Labels 0..k-1 as int64; other label sets are refused with the fix (they would ask for an output
    per value up to the largest label)."""
    values = np.unique(y) if y.ndim == 1 and y.dtype.kind in "biuf" else None
    if values is None or not _is_whole(values) or values[0] != 0 or values[-1] != len(values) - 1:
        if values is None:
            found = f"labels of shape {y.shape} and dtype {y.dtype}"
        else:
            shown = ", ".join(f"{v:g}" for v in values[:5].tolist()) + (", ..." if len(values) > 5 else "")
            found = f"the labels {{{shown}}} ({len(values)} distinct)"
        raise ValueError(
            f"--target holds {found}; classification needs one integer label per row, 0..k-1 for "
            f"k classes: re-encode them (e.g. np.unique(y, return_inverse=True)[1]), or pass "
            f"--task regression to predict the values"
        )
    if len(values) < 2:
        raise ValueError(
            f"--target holds one class only (label {values[0]:g}): a classifier needs at least 2; "
            f"check the target column, or pass --task regression to predict the values"
        )
    return y.astype(np.int64)


def cmd_train(args) -> int:
    from fastnn import distributed
    from fastnn.data import load_file

    if args.output:
        _check_output(args.output)
    arch = _arch_of(args)
    header = True if args.header else False if args.no_header else "infer"
    X, y = load_file(args.data, target=args.target, header=header, images=arch is not None, delimiter=args.delimiter)
    if y is None:
        raise ValueError(
            "--target is required (the label column of a CSV by name or index, the y key of an "
            "NPZ, or the labels file of IDX images)"
        )
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:  # one target column stored as (n, 1)
        y = y[:, 0]
    task = args.task
    if task == "auto":
        task = "classification" if _looks_like_classes(y) else "regression"
    if task == "classification":
        y = _class_labels(y)
    if arch is not None:
        X = _shape_samples(X, args, arch)
    model, metrics, seconds = _train_and_report(X, y, args, task)
    if not distributed.is_main():
        return 0
    print(f"{task}: " + ", ".join(f"test {k} {v:.4f}" for k, v in metrics.items()) + f", time {seconds:.2f} s")
    if args.output:
        if args.output.lower().endswith(".safetensors"):
            model.save(args.output)
        else:
            model.save_weights(args.output)
        what, load = _OUTPUTS[os.path.splitext(args.output)[1].lower()]
        print(f"{what} saved to {args.output} (load with {load})")
    return 0


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fastnn", description="Numba-fast neural networks.")
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p, hidden, epochs, lr):
        p.add_argument("--hidden", type=_parse_hidden, default=hidden, help="hidden sizes, e.g. 256,128")
        p.add_argument("--activation", default="relu")
        p.add_argument("--epochs", type=int, default=epochs)
        p.add_argument("--batch-size", type=int, default=32)
        p.add_argument("--optimizer", default="adam")
        p.add_argument("--lr", type=float, default=lr)
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--dtype", default="float32", choices=["float32", "float64"])
        p.add_argument("--verbose", type=int, default=1, choices=[0, 1, 2])
        layers = p.add_mutually_exclusive_group()
        layers.add_argument(
            "--arch",
            type=parse_arch,
            default=None,
            metavar="SPEC",
            help="train this network instead of an MLP (--hidden is then unused): " + ARCH_HELP,
        )
        layers.add_argument("--conv", action="store_true", help=f"train a small CNN on images: --arch {CONV_ARCH}")

    demo = sub.add_parser("demo", help="train an MLP on scikit-learn's 8x8 digits and print test accuracy")
    common(demo, [128, 64], 30, 1e-3)
    demo.set_defaults(func=cmd_demo)

    train = sub.add_parser("train", help="train an MLP (or a CNN: --conv, --arch) on your CSV, NPZ or IDX file")
    train.add_argument("--data", required=True, help="CSV, NPZ or IDX (MNIST format, .gz ok) file")
    train.add_argument(
        "--target", help="CSV column name or 0-based index (-1: the last column), NPZ key, or IDX labels file"
    )
    headers = train.add_mutually_exclusive_group()
    headers.add_argument(
        "--header",
        action="store_true",
        help="the CSV's first row is column names, even if they are numbers (default: inferred)",
    )
    headers.add_argument(
        "--no-header", action="store_true", help="the CSV's first row is data, not column names (default: inferred)"
    )
    train.add_argument(
        "--delimiter",
        type=_delimiter,
        default=None,
        help="the CSV's cell separator, one character, or 'tab' (default: a tab for .tsv, else a comma, or "
        "the ';', tab or '|' of a first line without commas)",
    )
    train.add_argument("--task", default="auto", choices=["auto", "classification", "regression"])
    train.add_argument(
        "--test-size", type=_test_size, default=0.2, help="held-out share (0.2) or number of samples (50)"
    )
    train.add_argument(
        "--input-shape",
        type=_parse_shape,
        default=None,
        metavar="C,H,W",
        help="per-sample shape for --arch/--conv when the file holds flat rows (CSV): C,H,W or C,L "
        "(default: the file's image shape, or 1,S,S for S*S features)",
    )
    train.add_argument(
        "--output",
        "-o",
        help="where to save the weights (.npz) or the whole model (.safetensors); checked before training",
    )
    common(train, [256, 128], 10, None)
    train.set_defaults(func=cmd_train)
    from . import bench

    bench_parser = sub.add_parser("bench", help="benchmark training steps beside the GEMM floor and PyTorch")
    bench.add_arguments(bench_parser)
    bench_parser.set_defaults(func=bench.run)
    from . import warmup

    warmup_parser = sub.add_parser(
        "warmup",
        help="compile every kernel (float32 and float64) into the cache now, so later runs start without compiling",
    )
    warmup.add_arguments(warmup_parser)
    warmup_parser.set_defaults(func=warmup.run)
    return parser


# a bad argument, file or value, or a diverging run: one line and status 2; anything else is a bug
# (status 1, with the traceback)
_USER_ERRORS = (ValueError, TypeError, OSError, ImportError, KeyError, FloatingPointError)


def _one_line(exc: BaseException) -> str:
    text = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
    if isinstance(exc, FloatingPointError):
        text += " From the command line: try a smaller --lr (e.g. --lr 1e-4), or rescale the --target values."
    return " ".join(line.strip() for line in str(text).splitlines() if line.strip())


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    try:
        return args.func(args)
    except _USER_ERRORS as exc:
        print(f"error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except Exception:
        traceback.print_exc()
        return 1
