"""The fastnn command line: demo and train."""
import os
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
    code = main(["train", "--data", str(path), "--target", "label", "--hidden", "16,8", "--epochs", "30",
                 "--verbose", "0", "--output", str(out_path)])
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
    assert main(["train", "--data", str(tmp_path / "d.npz"), "--target", "y", "--task", "regression",
                 "--hidden", "16", "--epochs", "40", "--verbose", "0"]) == 0
    assert "regression" in capsys.readouterr().out
    images = rng.integers(0, 255, (120, 4, 4), dtype=np.uint8)
    labels = (images.reshape(120, -1).mean(axis=1) > 127).astype(np.uint8)
    write_idx(tmp_path / "img.idx.gz", images)
    write_idx(tmp_path / "lab.idx", labels)
    assert main(["train", "--data", str(tmp_path / "img.idx.gz"), "--target", str(tmp_path / "lab.idx"),
                 "--hidden", "8", "--epochs", "3", "--verbose", "0"]) == 0


def test_bad_arguments_give_clear_errors(tmp_path, capsys):
    assert main(["train", "--data", str(tmp_path / "missing.csv"), "--target", "y"]) == 2
    assert "missing.csv" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["demo", "--hidden", "12,x"])
    assert "--hidden must be comma-separated integers" in capsys.readouterr().err


def test_python_dash_m_fastnn_runs():
    root = os.path.dirname(os.path.dirname(os.path.abspath(fnn.__file__)))
    env = dict(os.environ, PYTHONPATH=root)
    result = subprocess.run([sys.executable, "-m", "fastnn", "--help"], capture_output=True, text=True, env=env)
    assert result.returncode == 0 and "demo" in result.stdout and "train" in result.stdout
