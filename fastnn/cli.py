"""The ``fastnn`` command: ``fastnn demo`` and ``fastnn train --data FILE ...``."""
from __future__ import annotations

import argparse
import sys
import time

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


def cmd_train(args) -> int:
    from fastnn.data import load_file

    X, y = load_file(args.data, target=args.target)
    if y is None:
        print("error: --target is required (the label column of a CSV, the y key of an NPZ, or the "
              "labels file of IDX images)", file=sys.stderr)
        return 2
    task = args.task
    if task == "auto":
        task = "classification" if np.all(np.asarray(y) == np.round(y)) and len(np.unique(y)) <= 100 else "regression"
    if task == "classification":
        y = np.asarray(y).astype(np.int64)
    model, metrics, seconds = _train_and_report(X, y, args, task)
    print(f"{task}: " + ", ".join(f"test {k} {v:.4f}" for k, v in metrics.items()) + f", time {seconds:.2f} s")
    if args.output:
        model.save_weights(args.output)
        print(f"weights saved to {args.output}")
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
    train.add_argument("--target", help="CSV column name/index, NPZ key, or IDX labels file")
    train.add_argument("--task", default="auto", choices=["auto", "classification", "regression"])
    train.add_argument("--test-size", type=float, default=0.2)
    train.add_argument("--output", "-o", help="where to save the weights (.npz)")
    common(train, [256, 128], 10, None)
    train.set_defaults(func=cmd_train)
    from . import bench

    bench_parser = sub.add_parser("bench", help="benchmark training steps beside the GEMM floor and PyTorch")
    bench.add_arguments(bench_parser)
    bench_parser.set_defaults(func=bench.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, TypeError, FileNotFoundError, ImportError, KeyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
