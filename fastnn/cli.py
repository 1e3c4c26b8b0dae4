"""The ``fastnn`` command: ``fastnn demo`` and ``fastnn train --data FILE ...``."""
from __future__ import annotations

import argparse
import os
import sys
import time
import traceback

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


def _train_and_report(X, y, args, task: str) -> tuple:
    import fastnn as fnn
    from fastnn.data import standardize, train_test_split

    classification = task == "classification"
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=args.test_size, seed=args.seed,
                                                        stratify=classification)
    X_train, X_test, _ = standardize(X_train, X_test)
    n_out = int(y.max()) + 1 if classification else (1 if y.ndim == 1 else y.shape[1])
    model = build_mlp(X.shape[1], args.hidden, n_out, args.activation, args.seed, args.dtype)
    if args.verbose:
        model.summary()
    optimizer = fnn.optim.get(args.optimizer, lr=args.lr) if args.lr is not None else fnn.optim.get(args.optimizer)
    start = time.perf_counter()
    model.fit(X_train, y_train, loss="cross_entropy" if classification else "mse", optimizer=optimizer,
              epochs=args.epochs, batch_size=args.batch_size, validation_data=(X_test, y_test),
              verbose=args.verbose)
    seconds = time.perf_counter() - start
    metrics = model.evaluate(X_test, y_test)
    return model, metrics, seconds


def cmd_demo(args) -> int:
    from fastnn.data import load_digits

    X, y = load_digits()
    args.test_size = 0.2
    model, metrics, seconds = _train_and_report(X, y, args, "classification")
    print(f"digits (8x8, {len(X)} images, 10 classes), MLP 64-{'-'.join(map(str, args.hidden))}-10, "
          f"{args.epochs} epochs: test accuracy {metrics['accuracy']:.4f} (held-out 20%), "
          f"test loss {metrics['loss']:.4f}, training time {seconds:.2f} s (the first run includes compiling "
          f"the kernels once; they are cached for the next runs)")
    return 0


# -o extension -> (what is saved, how to load it)
_OUTPUTS = {".npz": ("weights", "Sequential.load_weights"), ".safetensors": ("whole model", "fastnn.load")}


def _check_output(path: str) -> None:
    """-o checked before training, so a typo cannot lose the trained model: a known extension, in an
    existing, writable directory."""
    if os.path.isdir(path):
        raise ValueError(f"--output {path!r} is a directory; name a file in it, e.g. "
                         f"{os.path.join(path, 'model.npz')!r}")
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
    """--task auto: at most 100 distinct whole numbers within int32 (1e30-sized floats are all whole)."""
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
        raise ValueError(f"--target holds {found}; classification needs one integer label per row, 0..k-1 for "
                         f"k classes: re-encode them (e.g. np.unique(y, return_inverse=True)[1]), or pass "
                         f"--task regression to predict the values")
    return y.astype(np.int64)


def cmd_train(args) -> int:
    from fastnn.data import load_file

    if args.output:
        _check_output(args.output)
    X, y = load_file(args.data, target=args.target, header=False if args.no_header else "infer")
    if y is None:
        raise ValueError("--target is required (the label column of a CSV by name or index, the y key of an "
                         "NPZ, or the labels file of IDX images)")
    y = np.asarray(y)
    task = args.task
    if task == "auto":
        task = "classification" if _looks_like_classes(y) else "regression"
    if task == "classification":
        y = _class_labels(y)
    model, metrics, seconds = _train_and_report(X, y, args, task)
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

    demo = sub.add_parser("demo", help="train an MLP on scikit-learn's 8x8 digits and print test accuracy")
    common(demo, [128, 64], 30, 1e-3)
    demo.set_defaults(func=cmd_demo)

    train = sub.add_parser("train", help="train an MLP on your CSV, NPZ or IDX file")
    train.add_argument("--data", required=True, help="CSV, NPZ or IDX (MNIST format, .gz ok) file")
    train.add_argument("--target", help="CSV column name or 0-based index (-1: the last column), NPZ key, "
                                        "or IDX labels file")
    train.add_argument("--no-header", action="store_true",
                       help="the CSV's first row is data, not column names (default: inferred)")
    train.add_argument("--task", default="auto", choices=["auto", "classification", "regression"])
    train.add_argument("--test-size", type=float, default=0.2)
    train.add_argument("--output", "-o", help="where to save the weights (.npz) or the whole model "
                                              "(.safetensors); checked before training")
    common(train, [256, 128], 10, None)
    train.set_defaults(func=cmd_train)
    from . import bench

    bench_parser = sub.add_parser("bench", help="benchmark training steps beside the GEMM floor and PyTorch")
    bench.add_arguments(bench_parser)
    bench_parser.set_defaults(func=bench.run)
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
