"""benchmarks/sklearn_mlp.py at its smoke size: both classifiers fit and score, the searches run
on 1 and 2 joblib workers and choose the same candidate (the timings are the script's business)."""

import pytest

pytest.importorskip("sklearn")

import sklearn_mlp


def test_sklearn_mlp_smoke_run():
    result = sklearn_mlp.main(["--quick", "--repeats", "1", "--out", "-"])
    assert [row["case"].split()[0] for row in result["fits"]] == ["digits", "synthetic"]
    for row in result["fits"]:
        assert row["fastnn_s"] > 0 and row["sklearn_s"] > 0
        assert row["fastnn_accuracy"] > 0.15 and row["sklearn_accuracy"] > 0.15  # 10 classes: chance is 0.1
    scores = {row["best_score"] for row in result["searches"]}
    assert len(result["searches"]) == 3 and len(scores) == 1  # same candidates, same seeds: same winner


def test_sklearn_mlp_breakdown_runs_every_part():
    """--breakdown peels a fit down to its kernel calls (the update call among them takes the
    earlier calls' loss and norm): every part runs and takes time."""
    rows = sklearn_mlp.breakdown(1, epochs=2)
    assert [row["part"] for row in rows][-2:] == ["the step's kernel calls alone", "GEMM floor"]
    assert len(rows) == 6 and all(row["us_per_step"] > 0 for row in rows)
