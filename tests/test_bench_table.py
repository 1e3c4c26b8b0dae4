"""The benchmark table's target column and the spread over several runs, and its warm-up and
calibration (fastnn.bench)."""

import time

from fastnn.bench import format_spread_table, spread_rows, target_status


def _row(config, phase, batch, fast_ms, over_floor, torch_over):
    return {
        "config": config,
        "phase": phase,
        "batch": batch,
        "threads": 1,
        "impls": {"fastnn": {"median_s": fast_ms / 1e3}},
        "fastnn_over_floor": over_floor,
        "torch_over_fastnn": torch_over,
    }


def test_each_row_says_whether_its_targets_are_met():
    assert target_status(_row("mlp", "infer", 128, 0.5, 1.05, 1.2)) == "met"
    assert (
        target_status(_row("mlp", "infer", 128, 0.5, 1.20, 0.9))
        == "not met: torch/fastnn 0.900 < 1; fastnn/floor 1.200 > 1.1"
    )
    assert target_status(_row("mlp", "infer", 1, 0.02, 1.9, 2.0)) == "not met: torch/fastnn 2.000 < 3"
    assert target_status(_row("tiny", "infer", 32, 0.01, 2.0, 3.0)) == "-"  # no target for that row


def test_the_spread_table_gives_median_and_range_over_runs():
    runs = [[_row("mlp", "train", 128, ms, ratio, 2.0)] for ms, ratio in ((1.0, 1.12), (1.2, 1.08), (1.1, 1.30))]
    (row,) = spread_rows(runs)
    assert row["fastnn_over_floor"] == 1.12 and row["fastnn_over_floor_range"] == [1.08, 1.30]
    table = format_spread_table([row])
    assert (
        "| mlp | train | 128 | 1.100 (1.000-1.200) | 1.12 (1.08-1.30) | 2.00 (2.00-2.00) | not met: "
        "fastnn/floor 1.120 > 1.1 |" in table
    )


def test_bench_options_refuse_values_that_would_be_ignored_or_misread(capsys):
    """--repeats 0 ran 7 repeats, --min-time -1 and --runs 0 were taken; each is now an argparse error
    naming the option."""
    import argparse

    import pytest

    from fastnn import bench

    parser = bench.add_arguments(argparse.ArgumentParser(prog="fastnn bench"))
    for argv, message in [
        (["--repeats", "0"], "--repeats takes a positive int, got '0'"),
        (["--min-time", "-1"], "--min-time takes a positive float"),
        (["--runs", "0"], "--runs takes a positive int"),
        (["--pause", "-1"], "--pause takes a non-negative float"),
        (["--threads", "0"], "--threads takes a positive int"),
        (["--optim-sizes", "0"], "--optim-sizes takes parameter counts of at least 1000"),
    ]:
        with pytest.raises(SystemExit):
            parser.parse_args(argv)
        assert message in capsys.readouterr().err
    assert parser.parse_args(["--pause", "0"]).pause == 0.0


def test_the_warm_up_reaches_the_tier_up_however_long_the_first_calls_took():
    # a cold process's first call compiles for seconds: the warm-up must still run the calls a
    # recorded step needs to tier up, not stop at its time limit with the compile counted in it
    from fastnn import _config
    from fastnn.bench import warm_up

    calls = []

    def step():
        if not calls:
            time.sleep(0.3)  # the first call's compile
        calls.append(1)

    warm_up(step, 2, settle_s=0.25)
    assert len(calls) > _config.FUSE_AFTER_CALLS


def test_a_one_time_cost_during_calibration_does_not_shrink_the_timed_blocks():
    from fastnn.bench import calibrate

    calls = []

    def step():
        calls.append(1)
        if len(calls) == 3:
            time.sleep(0.2)  # a late tier-up's compile inside the first measure
        else:
            time.sleep(1e-4)

    per_block = calibrate(step, 0.2)
    assert per_block > 200  # ~0.2 s / ~0.1-0.2 ms a call: not ~0.2 s / 0.2 s
