"""The fastnn command line: demo and train."""

import os
import re
import subprocess
import sys

import numpy as np
import pytest

import fastnn as fnn
from fastnn.cli import main
from fastnn.data import write_idx


def test_demo_reaches_95_percent(capsys):
    pytest.importorskip("sklearn")
    assert main(["demo", "--epochs", "20", "--verbose", "0"]) == 0
    out = capsys.readouterr().out
    accuracy = float(out.split("test accuracy ")[1].split()[0])
    assert accuracy >= 0.95 and "training time" in out


def test_train_on_csv_saves_weights(tmp_path, capsys):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((300, 4))
    label = np.where(X[:, 0] + X[:, 1] > 0, "yes", "no")
    path = tmp_path / "data.csv"
    with open(path, "w") as f:
        f.write("a,b,c,d,label\n")
        f.writelines(",".join(f"{v:.5f}" for v in row) + f",{lab}\n" for row, lab in zip(X, label))
    out_path = tmp_path / "w.npz"
    code = main(
        [
            "train",
            "--data",
            str(path),
            "--target",
            "label",
            "--hidden",
            "16,8",
            "--epochs",
            "30",
            "--verbose",
            "0",
            "--output",
            str(out_path),
        ]
    )
    assert code == 0
    out = capsys.readouterr().out
    assert "classification" in out and float(out.split("test accuracy ")[1].split(",")[0]) > 0.9
    weights = np.load(out_path)
    assert weights["0.weight"].shape == (4, 16) and weights["2.weight"].shape == (8, 2)
    model = fnn.Sequential([fnn.Dense(4, 16, activation="relu"), fnn.Dense(16, 8, activation="relu"), fnn.Dense(8, 2)])
    model.load_weights(out_path)


def test_train_on_npz_regression_and_idx(tmp_path, capsys):
    rng = np.random.default_rng(1)
    X = rng.standard_normal((200, 3))
    np.savez(tmp_path / "d.npz", X=X, y=X @ np.array([1.0, -2.0, 0.5]) + 0.3)
    assert (
        main(
            [
                "train",
                "--data",
                str(tmp_path / "d.npz"),
                "--target",
                "y",
                "--task",
                "regression",
                "--hidden",
                "16",
                "--epochs",
                "40",
                "--verbose",
                "0",
            ]
        )
        == 0
    )
    assert "regression" in capsys.readouterr().out
    images = rng.integers(0, 255, (120, 4, 4), dtype=np.uint8)
    labels = (images.reshape(120, -1).mean(axis=1) > 127).astype(np.uint8)
    write_idx(tmp_path / "img.idx.gz", images)
    write_idx(tmp_path / "lab.idx", labels)
    assert (
        main(
            [
                "train",
                "--data",
                str(tmp_path / "img.idx.gz"),
                "--target",
                str(tmp_path / "lab.idx"),
                "--hidden",
                "8",
                "--epochs",
                "3",
                "--verbose",
                "0",
            ]
        )
        == 0
    )


def test_bad_arguments_give_clear_errors(tmp_path, capsys):
    assert main(["train", "--data", str(tmp_path / "missing.csv"), "--target", "y"]) == 2
    assert "missing.csv" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["demo", "--hidden", "12,x"])
    assert "--hidden must be comma-separated integers" in capsys.readouterr().err


def _train(*argv):
    return main(["train", *map(str, argv), "--hidden", "4", "--epochs", "2", "--verbose", "0"])


def _error_line(capsys) -> str:
    """The one error line on stderr (a cold cache's one-line compile notice, "fastnn: compiling
    ...", may come before it: CI's clean clone printed one there)."""
    lines = [line for line in capsys.readouterr().err.splitlines() if not line.startswith("fastnn: compiling")]
    assert len(lines) == 1 and "Traceback" not in lines[0], lines
    return lines[0] + "\n"


def test_help_lists_the_commands(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    out = capsys.readouterr().out
    assert exit_info.value.code == 0 and "demo" in out and "train" in out


def test_target_by_column_index_for_a_csv_without_header(tmp_path, capsys):
    rng = np.random.default_rng(2)
    X = rng.standard_normal((40, 3))
    y = (X[:, 0] > 0).astype(int)
    path = tmp_path / "d.csv"
    np.savetxt(path, np.column_stack([y, X, y]), delimiter=",", fmt="%.5f")
    for target in ("0", "-1"):
        assert _train("--data", path, "--target", target) == 0
        assert "classification" in capsys.readouterr().out
    assert _train("--data", path, "--target", "0", "--no-header") == 0
    assert _train("--data", path, "--target", "9") == 2
    assert "target=9 is out of range" in _error_line(capsys)


@pytest.mark.parametrize("labels", [[0, 5], [1, 2, 3]])
def test_labels_that_are_not_0_to_k_minus_1_are_refused(tmp_path, capsys, labels):
    y = np.resize(np.asarray(labels, float), 30)
    np.savez(tmp_path / "d.npz", X=np.random.default_rng(0).standard_normal((30, 2)), y=y)
    assert _train("--data", tmp_path / "d.npz", "--task", "classification") == 2
    err = _error_line(capsys)
    assert "classification needs one integer label per row, 0..k-1" in err and "re-encode" in err
    assert "{" + ", ".join(map(str, labels)) + "}" in err


def test_task_auto_reads_target_columns(tmp_path, capsys):
    """Several whole-valued target columns are a multi-output regression (classification takes one
    label per row); one column stored as (n, 1) is that column's classes."""
    rng = np.random.default_rng(2)
    X = rng.standard_normal((60, 3))
    np.savez(tmp_path / "multi.npz", X=X, y=np.round(2 * rng.standard_normal((60, 2))))
    assert _train("--data", tmp_path / "multi.npz", "--target", "y") == 0
    assert capsys.readouterr().out.startswith("regression: test loss")
    np.savez(tmp_path / "column.npz", X=X, y=(X[:, :1] > 0).astype(float))
    assert _train("--data", tmp_path / "column.npz", "--target", "y") == 0
    assert "test accuracy" in capsys.readouterr().out


def test_a_label_of_1e9_is_refused_not_built_into_1e9_outputs():
    from fastnn.cli import _class_labels

    with pytest.raises(ValueError, match=r"the labels \{0, 1e\+09\} \(2 distinct\).*--task regression"):
        _class_labels(np.array([0.0, 1e9, 0.0]))
    np.testing.assert_array_equal(_class_labels(np.array([1.0, 0.0, 2.0])), [1, 0, 2])


@pytest.mark.parametrize(
    "output, pattern",
    [
        ("missing_dir/w.npz", "the directory .*missing_dir' does not exist"),
        ("w.pt", "has the extension '.pt'; use .npz for the weights .* or .safetensors for the whole model"),
        (".", "is a directory; name a file in it"),
        ("fifo.npz", "exists and is not a regular file"),
    ],
)
def test_bad_output_is_refused_before_training(tmp_path, capsys, monkeypatch, output, pattern):
    import fastnn.cli

    monkeypatch.setattr(fastnn.cli, "_train_and_report", lambda *a: pytest.fail("trained before checking -o"))
    np.savez(tmp_path / "d.npz", X=np.zeros((10, 2)), y=np.arange(10) % 2)
    monkeypatch.chdir(tmp_path)
    os.mkfifo("fifo.npz")
    assert _train("--data", "d.npz", "-o", output) == 2
    assert re.search(pattern, _error_line(capsys))


def test_output_safetensors_saves_the_whole_model(tmp_path, capsys):
    X = np.random.default_rng(3).standard_normal((30, 2))
    np.savez(tmp_path / "d.npz", X=X, y=(X[:, 1] > 0).astype(np.int64))
    assert _train("--data", tmp_path / "d.npz", "-o", tmp_path / "m.safetensors") == 0
    assert "whole model saved to" in capsys.readouterr().out
    model = fnn.load(tmp_path / "m.safetensors")
    assert model.predict(X).shape == (30, 2)


def test_diverging_run_is_one_line_with_status_2(tmp_path, capsys):
    X = np.random.default_rng(0).standard_normal((40, 2))
    np.savez(tmp_path / "d.npz", X=X, y=X[:, 0] * 1e3)
    assert (
        main(
            [
                "train",
                "--data",
                str(tmp_path / "d.npz"),
                "--task",
                "regression",
                "--optimizer",
                "sgd",
                "--lr",
                "1e3",
                "--hidden",
                "4",
                "--epochs",
                "5",
                "--verbose",
                "0",
            ]
        )
        == 2
    )
    err = _error_line(capsys)
    assert "Training diverged" in err and "--lr" in err


def test_missing_npz_key_is_one_unquoted_line(tmp_path, capsys):
    np.savez(tmp_path / "d.npz", X=np.zeros((4, 2)))
    assert _train("--data", tmp_path / "d.npz", "--target", "labels") == 2
    assert _error_line(capsys).startswith("error: '")  # the message, not the KeyError's repr of it


def test_unexpected_errors_exit_1_with_the_traceback(monkeypatch, capsys):
    import fastnn.cli

    def broken(args):
        raise RuntimeError("a bug")

    monkeypatch.setattr(fastnn.cli, "cmd_train", broken)
    assert _train("--data", "x.csv") == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and "RuntimeError: a bug" in err


def test_python_dash_m_fastnn_gives_one_line_and_status_2(tmp_path):
    """The one subprocess: the real exit status and stderr of ``python -m fastnn``."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(fnn.__file__)))
    env = dict(os.environ, PYTHONPATH=root)
    result = subprocess.run(
        [sys.executable, "-m", "fastnn", "train", "--data", str(tmp_path)], capture_output=True, text=True, env=env
    )
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "is a directory, not a data file" in result.stderr


def _bar_images(n: int, side: int, seed: int = 0):
    """uint8 (n, side, side) images of a vertical (label 0) or horizontal (label 1) bar at a random
    place, with noise: a task for a CNN."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n).astype(np.uint8)
    images = rng.integers(0, 60, (n, side, side)).astype(np.uint8)
    where = rng.integers(1, side - 1, n)
    for image, label, k in zip(images, labels, where):
        if label:
            image[k, 1:-1] = 255
        else:
            image[1:-1, k] = 255
    return images, labels


def test_train_conv_on_idx_images(tmp_path, capsys):
    images, labels = _bar_images(160, 12)
    write_idx(tmp_path / "img-idx3-ubyte.gz", images)
    write_idx(tmp_path / "lab-idx1-ubyte", labels)
    out_path = tmp_path / "cnn.safetensors"
    assert (
        main(
            [
                "train",
                "--data",
                str(tmp_path / "img-idx3-ubyte.gz"),
                "--target",
                str(tmp_path / "lab-idx1-ubyte"),
                "--conv",
                "--epochs",
                "8",
                "--lr",
                "3e-3",
                "--verbose",
                "0",
                "-o",
                str(out_path),
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert float(out.split("test accuracy ")[1].split(",")[0]) > 0.9
    model = fnn.load(out_path)
    assert [type(layer).__name__ for layer in model.layers] == [
        "Conv2d",
        "MaxPool2d",
        "Conv2d",
        "MaxPool2d",
        "Flatten",
        "Dense",
        "Dense",
    ]
    assert model.input_shape == (1, 12, 12) and model.layers[2].weight.shape == (32, 16, 3, 3)


def test_train_arch_spec_on_flat_csv_rows_and_1d_shapes(tmp_path, capsys):
    images, labels = _bar_images(120, 6, seed=1)
    path = tmp_path / "bars.csv"
    np.savetxt(path, np.column_stack([images.reshape(120, -1), labels]), fmt="%d", delimiter=",")
    # 36 features: a 1x6x6 image inferred; avgpool, gap and a valid conv from the grammar
    assert (
        main(
            [
                "train",
                "--data",
                str(path),
                "--target",
                "-1",
                "--no-header",
                "--arch",
                "conv:4:3:valid,avgpool:2,conv:4:2,gap,dense:8",
                "--epochs",
                "2",
                "--verbose",
                "0",
            ]
        )
        == 0
    )
    assert "test accuracy" in capsys.readouterr().out
    # the same rows as 6 channels of length 6: Conv1d and MaxPool1d
    assert (
        main(
            [
                "train",
                "--data",
                str(path),
                "--target",
                "-1",
                "--no-header",
                "--input-shape",
                "6,6",
                "--arch",
                "conv:4:3,pool:2,flatten,dropout:0.1,dense:8",
                "--epochs",
                "1",
                "--verbose",
                "0",
            ]
        )
        == 0
    )
    assert "test accuracy" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv, pattern",
    [
        (["--arch", "conv:16"], "conv takes 2 or 3 values"),
        (["--arch", "conv:16:3,blur:2"], "unknown layer 'blur'"),
        (["--arch", "dense:8,embed:10:4"], "must come first"),
        (["--arch", "dropout:1.5"], "dropout rate"),
        (["--input-shape", "1,x"], "--input-shape must be positive integers"),
        (["--conv", "--arch", "dense:4"], "not allowed with argument"),
    ],
)
def test_bad_arch_arguments_are_refused_by_the_parser(argv, pattern, capsys):
    with pytest.raises(SystemExit) as info:
        main(["train", "--data", "x.csv", *argv])
    assert info.value.code == 2 and re.search(pattern, capsys.readouterr().err)


def test_conv_on_rows_that_are_not_images_names_the_fix(tmp_path, capsys):
    path = tmp_path / "d.csv"
    np.savetxt(path, np.column_stack([np.zeros((10, 5)), np.arange(10) % 2]), fmt="%g", delimiter=",")
    assert main(["train", "--data", str(path), "--target", "-1", "--no-header", "--conv"]) == 2
    assert "--input-shape" in capsys.readouterr().err
    assert main(["train", "--data", str(path), "--target", "-1", "--no-header", "--input-shape", "2,3", "--conv"]) == 2
    assert "holds 6 values" in capsys.readouterr().err


def test_test_size_takes_a_count_of_samples(tmp_path, capsys):
    """--test-size 5 holds out 5 samples (an int, as the range error says), 0.25 a quarter."""
    np.savez(tmp_path / "d.npz", X=np.random.default_rng(0).standard_normal((20, 2)), y=np.arange(20) % 2)
    assert _train("--data", tmp_path / "d.npz", "--test-size", "5") == 0
    assert _train("--data", tmp_path / "d.npz", "--test-size", "0.25") == 0
    assert _train("--data", tmp_path / "d.npz", "--test-size", "50") == 2
    assert "= [1, 19], got 50\n" in capsys.readouterr().err  # (it said "got 50.0", the int form unreachable)


def test_one_class_is_refused_with_what_the_cli_can_change(tmp_path, capsys):
    """(the loss' own message suggested loss='binary_cross_entropy', which the CLI cannot set)"""
    np.savez(tmp_path / "d.npz", X=np.zeros((10, 2)), y=np.zeros(10, np.int64))
    assert _train("--data", tmp_path / "d.npz") == 2
    assert "one class only (label 0)" in _error_line(capsys)


def test_header_of_numbers_and_semicolons(tmp_path, capsys):
    """--header reads a first row of numbers as column names (inferred, it was a sample of data:
    its target cell became a label); a semicolon file needs no option, and --delimiter names one."""
    rng = np.random.default_rng(3)
    X = rng.standard_normal((40, 3))
    y = (X[:, 0] > 0).astype(int)
    numbered = tmp_path / "n.csv"
    np.savetxt(numbered, np.column_stack([X, y]), delimiter=",", fmt="%.5f", header="0,1,2,7", comments="")
    assert _train("--data", numbered, "--target", "-1") == 2
    assert "the labels {0, 1, 7}" in _error_line(capsys)
    assert _train("--data", numbered, "--target", "7", "--header") == 0
    assert "classification" in capsys.readouterr().out
    semicolons = tmp_path / "s.csv"
    np.savetxt(semicolons, np.column_stack([X, y]), delimiter=";", fmt="%.5f", header="a;b;c;label", comments="")
    assert _train("--data", semicolons, "--target", "label") == 0
    assert "classification" in capsys.readouterr().out
    assert _train("--data", semicolons, "--target", "label", "--delimiter", ",") == 2
    assert "is the delimiter right?" in _error_line(capsys)
    tabs = tmp_path / "t.txt"
    np.savetxt(tabs, np.column_stack([X, y]), delimiter="\t", fmt="%.5f")
    assert _train("--data", tabs, "--target", "-1", "--delimiter", "tab", "--no-header") == 0
    with pytest.raises(SystemExit):
        main(["train", "--data", str(tabs), "--header", "--no-header"])
    with pytest.raises(SystemExit):
        main(["train", "--data", str(tabs), "--delimiter", ";;"])
