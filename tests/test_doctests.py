"""The Examples sections of the docstrings run as doctests (small and fast, float64 or float32
as each says)."""

import doctest
import importlib

import numpy as np
import pytest

MODULES = [
    "fastnn._config",  # get_num_threads, set_num_threads (documented as fastnn.*)
    "fastnn.backend",
    "fastnn.callbacks",
    "fastnn.data",
    "fastnn.datasets",
    "fastnn.diagnostics",
    "fastnn.init",
    "fastnn.io",
    "fastnn.losses",
    "fastnn.model",
    "fastnn.optim",
    "fastnn.plot",
    "fastnn.schedules",
    "fastnn.tensorboard",
    "fastnn.training",
    "fastnn._step_feed",  # fit's in-call batch gather (private; its example keeps it honest)
    "fastnn.layers",
    "fastnn.layers.activation",
    "fastnn.layers.attention",
    "fastnn.layers.base",
    "fastnn.layers.conv",
    "fastnn.layers.dense",
    "fastnn.layers.dropout",
    "fastnn.layers.embedding",
    "fastnn.layers.masking",
    "fastnn.layers.normalization",
    "fastnn.layers.pooling",
    "fastnn.layers.recurrent",
    "fastnn.layers.registry",
    "fastnn.layers.reshape",
    "fastnn.layers.residual",
    "fastnn.layers.sequence",
    "fastnn.metrics",
    "fastnn.distributed",
    "fastnn.sklearn",
]


def _registries() -> dict:
    """Copies of fastnn's name tables: an example that registers a class must take it out again."""
    import fastnn as fnn

    tables = {"losses": fnn.losses.LOSSES, "layers": fnn.layers.LAYERS, "optimizers": fnn.optim.OPTIMIZERS}
    return {name: dict(table) for name, table in tables.items()}


def test_the_module_list_has_no_repeats():
    assert len(MODULES) == len(set(MODULES))


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name, tmp_path, monkeypatch):
    if name in ("fastnn.plot",):
        pytest.importorskip("matplotlib")
        monkeypatch.setenv("MPLBACKEND", "Agg")
    if name == "fastnn.tensorboard":
        pytest.importorskip("tensorboardX")
    if name == "fastnn.sklearn":
        pytest.importorskip("sklearn")
    if name == "fastnn.distributed":
        pytest.importorskip("mpi4py")  # its examples train a group of one rank (MPI.COMM_SELF)
    monkeypatch.chdir(tmp_path)  # examples that write files write them here
    module = importlib.import_module(name)
    registries = _registries()
    options = {"precision": 4, "suppress": True}
    if int(np.__version__.split(".")[0]) >= 2:
        options["legacy"] = "1.25"  # scalars print as 0.5, not np.float64(0.5), as in the docstrings
    with np.printoptions(**options):
        result = doctest.testmod(
            module,
            optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE,
            extraglobs={"np": np},
            report=True,
            verbose=False,
        )
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples failed in {name} (output above)"
    assert result.attempted > 0, f"{name} has no Examples"
    assert _registries() == registries, f"an example in {name} left a class registered (del it at the end)"


@pytest.mark.parametrize(
    "module_name, qualified",
    [
        ("fastnn.interop.onnx_export", "export_onnx"),
        ("fastnn.interop.torch_convert", "from_torch"),
        ("fastnn.model", "Sequential.export_onnx"),
        ("fastnn.model", "Sequential.to_torch"),
    ],
)
def test_interop_examples_run_where_their_packages_are(module_name, qualified, tmp_path, monkeypatch):
    """The ONNX and torch examples are marked +SKIP (optional packages); with onnx, onnxruntime
    and torch installed they run as written."""
    for package in ("onnx", "onnxruntime", "torch"):
        pytest.importorskip(package)
    monkeypatch.chdir(tmp_path)
    function = importlib.import_module(module_name)
    for part in qualified.split("."):
        function = getattr(function, part)
    text = function.__doc__.replace("# doctest: +SKIP", "")
    test = doctest.DocTestParser().get_doctest(text, {"np": np}, qualified, None, 0)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    runner.run(test)
    assert runner.failures == 0 and runner.tries > 1, f"{runner.failures} of {runner.tries} examples failed"
