"""The structure rules of the code (issue 13, docs/architecture.md "Layers of the code"), read from
the source with :mod:`ast`; each rule is also tested on planted violations.

(a) Private means private to the module that defines it: no module touches another module's private
    attribute (``obj._name``; ``self._name``, ``cls._name`` and dunders are fine) nor imports a
    private name from another module (``from .x import _y``; private *modules*, ``from . import
    _validation``, are the package's own and fine). A private attribute belongs to the module that
    assigns it on ``self``/``cls`` or defines it in a class body or at module level, so a module may
    touch ``other._x`` of its own classes. Kernel convention: the modules of ``fastnn/kernels`` (CPU
    and CUDA twins) are one unit that offers the layers its ``DEVICE_API``; inside it they may
    import each other's private ``@njit`` helpers (``dense._block``, the GEMM tiling), nobody
    outside may. Checked over fastnn/, tests/ and benchmarks/; the exceptions are
    :data:`PRIVATE_ALLOWED`, each with its reason.
(b) Imports point downwards: :data:`LAYERS` lists the layers top to bottom; a module imports from
    its own layer and the ones below (function-level imports count), except :data:`UPWARD_ALLOWED`.
    Every module of fastnn/ must be placed in a layer.
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Top to bottom. A name covers the package's submodules ("fastnn.layers" is fastnn/layers/*) but
# "fastnn" is the package's __init__ only.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("fastnn.__main__", "fastnn.cli", "fastnn.bench", "fastnn.warmup"),  # applications of the public API
    ("fastnn",),  # the public API, re-exported
    ("fastnn.diagnostics", "fastnn.plot", "fastnn.tensorboard", "fastnn.sklearn", "fastnn.interop"),
    ("fastnn.model",),  # the graph and the engine API
    ("fastnn.training",),  # the fit loop (uses the engine API of the model it is given)
    (  # beside the loop, and the model's own helpers
        "fastnn.streaming",
        "fastnn.accumulation",
        "fastnn.distributed",
        "fastnn.freezing",
        "fastnn._inference",
        "fastnn._norm_fusion",
        "fastnn._conv_pool_fusion",
        "fastnn._dense_chain",
        "fastnn._fit_options",
        "fastnn._progress",
        "fastnn._step_feed",
        "fastnn._copies",
    ),
    ("fastnn.callbacks", "fastnn.metrics", "fastnn.serialization"),
    ("fastnn.layers", "fastnn.losses", "fastnn.optim", "fastnn.schedules"),
    (
        "fastnn.data",
        "fastnn.datasets",
        "fastnn.init",
        "fastnn.io",
        "fastnn._fused",
        "fastnn._ownership",
        "fastnn._parallel_compile",
    ),
    ("fastnn.backend", "fastnn._validation", "fastnn._compiling", "fastnn._shipped_cache", "fastnn._blas_probe"),
    ("fastnn.kernels",),
    ("fastnn._config", "fastnn._cache_file"),
)

UPWARD_ALLOWED: dict[tuple[str, str], str] = {
    ("fastnn.model", "fastnn.interop"): "Sequential.export_onnx/to_torch: one-line conveniences over "
    "fastnn.interop, imported when called (interop builds models, so it sits above the model)",
    ("fastnn.callbacks", "fastnn.tensorboard"): "fastnn.callbacks.TensorBoard: a lazy re-export (module "
    "__getattr__) of the callback that needs the tensorboardX extra",
    ("fastnn.serialization", "fastnn"): "__version__, the package's one version string, written into "
    "each file's metadata (read when a file is written)",
}

# (file, private name) -> why. Third-party internals have no public equivalent; white-box tests
# test a module's private helpers on purpose.
PRIVATE_ALLOWED: dict[tuple[str, str], str] = {
    ("fastnn/kernels/_lazy_ir.py", "_engine"): "Numba's JIT engine of the codegen, to register a loaded "
    "library's defined names (what Numba's own loading does after parsing the module)",
    ("fastnn/kernels/_lazy_ir.py", "_tm"): "Numba's JIT target machine, to compile a library's module to the "
    "object code the JIT would make, which the JIT then loads as it loads a cached library",
    ("fastnn/kernels/_lazy_ir.py", "_rtlinker"): "Numba's record of the functions defined in this process (for "
    "recursive calls across libraries), filled from a module the JIT never sees",
    ("fastnn/kernels/_lazy_ir.py", "_create_empty_module"): "the empty module Numba gives a library loaded "
    "from its cache, for one compiled to object code",
    ("fastnn/kernels/_lazy_ir.py", "_defined_symbols"): "the JIT engine's set of defined names, which "
    "Numba fills from the parsed module on a load; filled here from the names cached with the object code",
    (
        "fastnn/kernels/_linkage.py",
        "_finalize_final_module",
    ): "Numba's code library hands its optimised module to the JIT in this method only: the linked-in "
    "copies are compiled as local symbols around it",
    (
        "tests/kernels/test_linkage.py",
        "_final_module",
    ): "a compiled library's LLVM module, to read its functions' linkage (Numba has no public accessor)",
    ("fastnn/kernels/_step_calls.py", "_final_module"): "a fused step's LLVM module before Numba links its "
    "callees in: its calls of fastnn's kernels are renamed there (Numba has no public accessor)",
    ("fastnn/kernels/_step_calls.py", "_linking_libraries"): "the libraries Numba links into a fused step's: "
    "those of the kernels it now calls by name are left out",
    ("fastnn/kernels/_step_calls.py", "_reload_init"): "what a library must run when reloaded, which a caller "
    "inherits from each library it links (Numba's finalize does the same for the ones it links)",
    ("fastnn/_config.py", "_is_initialized"): "Numba's threading layer has no public 'already started' query",
    ("fastnn/_parallel_compile.py", "_exit"): "os._exit: a forked worker ends without unwinding into the frames "
    "it was forked in, or running its parent's exit handlers",
    ("tests/test_parallel_compile.py", "_exit"): "os._exit ends the test's forked child (see _parallel_compile)",
    ("fastnn/backend.py", "_stream_finalizer"): "numba-cuda: a stream's finalizer is not public",
    ("fastnn/kernels/_cache.py", "_locator_classes"): "Numba's cache has no public way to add a locator",
    ("fastnn/_shipped_cache.py", "_load_index"): "Numba's cache file has no public index lookup",
    ("fastnn/_shipped_cache.py", "_index_key"): "Numba's function cache makes an entry's key only in this method",
    ("fastnn/sklearn.py", "_check_partial_fit_first_call"): "scikit-learn's own partial_fit protocol helper",
    ("fastnn/sklearn.py", "_check_sample_weight"): "scikit-learn's sample_weight check, as its estimators use it",
    ("fastnn/interop/torch_convert.py", "_qkv_same_embed_dim"): "torch's MultiheadAttention says only there "
    "whether q, k, v share one packed weight",
    ("fastnn/distributed.py", "_fastnn_abort"): "a marker on distributed's own excepthook function (found by "
    "getattr on sys.excepthook)",
    ("fastnn/interop/torch_convert.py", "_torch_dim"): "a note from_torch leaves on a layer it has just made "
    "and takes back (popped) before returning it",
    ("benchmarks/memory.py", "_nrt_python"): "Numba's NRT allocation statistics (a module of numba)",
    # white-box tests and profiles: "*" is the whole file
    ("tests/test_blas_loading.py", "*"): "tests kernels/blas.py's library search by replacing its platform probes",
    ("tests/test_cache_file.py", "_save_index"): "checks the order of the two writes of a cache entry from "
    "inside (the index written after the data it names)",
    ("tests/kernels/test_cache.py", "*"): "tests the cache stamp and locator of kernels/_cache.py from inside",
    ("benchmarks/fused_views_ab.py", "_Arguments"): "times a fused step generated the old way (its view lines "
    "replaced) beside today's, in one process",
    ("tests/test_processes.py", "*"): "reloads _fused's step files and _config's tbb loader as a new process would",
    ("tests/test_startup.py", "_fallback_targets"): "the shipped-cache lookup order, tested directly",
    ("tests/test_sklearn_dask.py", "_dask_worker_share"): "the thread share of a Dask worker, tested directly",
    ("tests/test_fused.py", "*"): "tests _fused's tier-up decision (its call counter and timings) from inside",
    ("tests/test_lifecycle.py", "_update"): "injects a failure inside the optimizer's update (rollback test)",
    ("tests/test_callbacks.py", "_improved"): "EarlyStopping's comparison with min_delta, tested directly",
    ("tests/test_conv_layers.py", "_fans"): "the fan-in/fan-out the init uses, compared with torch's",
    ("tests/test_recurrent_layers.py", "_check_initial_state"): "runs a recurrent layer's calls by hand with "
    "an initial state, as the layer's own forward does",
    ("tests/test_model.py", "_workspace"): "checks that steps reuse the layers' own workspace buffers",
    ("tests/test_cli.py", "_class_labels"): "the CLI's label reading, tested directly",
    ("tests_cuda/_ptx_probe.py", "*"): "compiles every CUDA kernel to PTX, private helpers included, by name",
    ("tests_cuda/_fake_cupy.py", "_ary"): "the host array behind a simulator device array (no public accessor)",
    ("tests_cuda/_cuda_counts.py", "*"): "counts kernel launches by patching numba-cuda's launch classes (the "
    "simulator's kernel and its launch context, the real launch configuration): numba-cuda has no public hook",
    ("tests_cuda/test_model_cuda.py", "_masks"): "compares the dropout masks the GPU and CPU layers drew",
    ("benchmarks/profile_step.py", "*"): "profiles the pieces of a step (the optimizer kernel, a plan's slots)",
    ("benchmarks/blas_versions.py", "_candidate_libraries"): "compares the BLAS libraries kernels/blas.py would pick",
    ("benchmarks/embed_step.py", "_stream_floor_kernel"): "the optimizer update's memory floor of fastnn.bench, "
    "measured beside the embedding step's parts",
}

PROJECT_DIRS = ("fastnn", "tests", "tests_cuda", "benchmarks")


# -- reading the source ---------------------------------------------------------------------------
def module_name(path: Path) -> str:
    """Dotted name of a file under ROOT: fastnn/layers/dense.py -> fastnn.layers.dense."""
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


@functools.cache
def is_project_module(name: str) -> bool:
    """Whether a dotted name is a module or package of this checkout."""
    base = ROOT.joinpath(*name.split("."))
    return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()


def imported_module(node: ast.ImportFrom, importer: str, is_package: bool) -> str:
    """The absolute module a ``from ... import`` reads from."""
    if not node.level:
        return node.module or ""
    parts = importer.split(".")
    if not is_package:
        parts.pop()
    parts = parts[: len(parts) - (node.level - 1)]
    return ".".join(parts + ([node.module] if node.module else []))


def own_private_names(nodes: list[ast.AST]) -> set[str]:
    """Private names a module (all its nodes) defines: at module level, in class bodies, on ``self``/``cls``."""
    names: set[str] = set()
    for node in nodes:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            if isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"):
                names.add(node.attr)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, ast.alias):
            names.add((node.asname or node.name).split(".")[0])
    return {n for n in names if is_private(n)}


def private_reaches(source: str, path: str, importer: str, is_package: bool = False) -> list[tuple[str, int, str]]:
    """(path, line, what) for each private attribute of another module touched and each private
    name imported from another module, in one file's source."""
    nodes = list(ast.walk(ast.parse(source)))
    own = own_private_names(nodes)
    found = []
    for node in nodes:
        if isinstance(node, ast.Attribute) and is_private(node.attr):
            if isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"):
                continue
            if node.attr in own or _names_private_module(node.attr):
                continue
            found.append((path, node.lineno, node.attr))
        elif isinstance(node, ast.ImportFrom):
            source_module = imported_module(node, importer, is_package)
            for alias in node.names:
                if not is_private(alias.name) or is_project_module(f"{source_module}.{alias.name}"):
                    continue
                if importer.startswith("fastnn.kernels") and source_module.startswith("fastnn.kernels"):
                    continue  # the kernel convention (module docstring)
                found.append((path, node.lineno, alias.name))
    return found


def _names_private_module(name: str) -> bool:
    """``package._module`` as an attribute: the package's private module, like importing it."""
    return name in _PRIVATE_MODULES


_PRIVATE_MODULES = {
    p.stem if p.name != "__init__.py" else p.parent.name
    for d in PROJECT_DIRS
    for p in (ROOT / d).rglob("*.py")
    if p.stem.startswith("_") and p.name != "__init__.py"
}


def _type_checking_only(tree: ast.AST) -> set[int]:
    """ids of the nodes inside ``if TYPE_CHECKING:`` blocks: names for annotations, never
    imported at run time, so they create no dependency between layers."""
    inside = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            inside.update(id(child) for stmt in node.body for child in ast.walk(stmt))
    return inside


def imports_of(source: str, importer: str, is_package: bool = False) -> set[str]:
    """Absolute names of the project modules (or packages) a file imports at run time, function
    level included (``if TYPE_CHECKING:`` imports are annotations only: not counted)."""
    targets = set()
    tree = ast.parse(source)
    annotation_only = _type_checking_only(tree)
    for node in ast.walk(tree):
        if id(node) in annotation_only:
            continue
        if isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = imported_module(node, importer, is_package)
            for alias in node.names:
                full = f"{base}.{alias.name}"
                targets.add(full if is_project_module(full) else base)
    return {t for t in targets if t == "fastnn" or t.startswith("fastnn.")}


def layer_of(module: str) -> int | None:
    """Index in LAYERS (0 = top) of a fastnn module; the longest matching name wins."""
    best, depth = None, -1
    for i, names in enumerate(LAYERS):
        for name in names:
            matches = module == name or (name != "fastnn" and module.startswith(name + "."))
            if matches and name.count(".") > depth:
                best, depth = i, name.count(".")
    return best


def upward_imports(source: str, importer: str, is_package: bool = False) -> list[tuple[str, str]]:
    """(importer, imported) for each import of a module in a higher layer."""
    mine = layer_of(importer)
    assert mine is not None, f"{importer} is in no layer of LAYERS: place it there"
    bad = []
    for target in sorted(imports_of(source, importer, is_package)):
        theirs = layer_of(target)
        assert theirs is not None, f"{target} (imported by {importer}) is in no layer of LAYERS: place it there"
        if theirs < mine and (importer, target) not in UPWARD_ALLOWED:
            bad.append((importer, target))
    return bad


def _allowed(path: str, name: str) -> bool:
    return (path, name) in PRIVATE_ALLOWED or (path, "*") in PRIVATE_ALLOWED


def files(*dirs: str) -> list[Path]:
    return sorted(p for d in dirs for p in (ROOT / d).rglob("*.py") if "_prebuilt" not in p.parts)


# -- the rules over the checkout ------------------------------------------------------------------
@functools.cache
def checkout_reaches() -> tuple[tuple[str, int, str], ...]:
    """Every private reach in fastnn/, tests/ and benchmarks/ (read once per test session)."""
    found: list[tuple[str, int, str]] = []
    for path in files(*PROJECT_DIRS):
        rel = path.relative_to(ROOT).as_posix()
        found += private_reaches(path.read_text(), rel, module_name(path), path.name == "__init__.py")
    return tuple(found)


@functools.cache
def checkout_imports() -> dict[str, tuple[str, bool]]:
    """{module: (source, is_package)} of fastnn/."""
    return {module_name(p): (p.read_text(), p.name == "__init__.py") for p in files("fastnn")}


def test_no_private_reach_across_modules():
    bad = [f"{p}:{line}: {name}" for p, line, name in checkout_reaches() if not _allowed(p, name)]
    assert not bad, "private attributes or names of another module (use or add a public API):\n" + "\n".join(bad)


def test_every_allowed_private_reach_is_still_there():
    found = {(p, n) for p, _, name in checkout_reaches() for n in (name, "*")}
    stale = sorted(set(PRIVATE_ALLOWED) - found)
    assert not stale, f"PRIVATE_ALLOWED entries no longer needed (remove them): {stale}"


def test_imports_point_downwards():
    bad = []
    for name, (source, is_package) in checkout_imports().items():
        bad += upward_imports(source, name, is_package)
    assert not bad, "upward imports (move code down, or pass what is needed in):\n" + "\n".join(
        f"{a} imports {b}" for a, b in bad
    )


def test_every_allowed_upward_import_is_still_there():
    used = {(name, t) for name, (source, pkg) in checkout_imports().items() for t in imports_of(source, name, pkg)}
    assert set(UPWARD_ALLOWED) <= used, f"stale UPWARD_ALLOWED entries: {sorted(set(UPWARD_ALLOWED) - used)}"


# -- the checkers find planted violations -----------------------------------------------------------
@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("def f(model):\n    return model._guard\n", ["_guard"]),
        ("def f(model, fn):\n    model._step_reduce = fn\n", ["_step_reduce"]),
        ("from .model import _StepGuard\n", ["_StepGuard"]),
        ("from fastnn.layers.conv import _ConvNd\n", ["_ConvNd"]),
        ("def f(m):\n    return m.a._b\n", ["_b"]),
        # fine: own attributes, dunders, private modules, another class of this module
        ("class A:\n    def f(self):\n        self._x = 1\n        return self._x + self.__dict__['y']\n", []),
        ("class A:\n    def __init__(self):\n        self._x = 1\n\ndef same(a, b):\n    return a._x == b._x\n", []),
        ("from . import _validation as V\nfrom fastnn import _fused\nimport fastnn\nfastnn._validation\n", []),
    ],
)
def test_private_checker_on_planted_code(source, expected):
    found = private_reaches(source, "fastnn/planted.py", "fastnn.planted")
    assert [name for _, _, name in found] == expected


def test_private_checker_keeps_the_kernel_convention():
    source = "from .dense import _block\n"
    assert private_reaches(source, "fastnn/kernels/conv.py", "fastnn.kernels.conv") == []
    assert private_reaches(source.replace(".dense", "..kernels.dense"), "fastnn/layers/x.py", "fastnn.layers.x")


@pytest.mark.parametrize(
    ("importer", "source", "expected"),
    [
        (
            "fastnn.accumulation",
            "def f():\n    from .model import Sequential\n",
            [("fastnn.accumulation", "fastnn.model")],
        ),
        ("fastnn.layers.dense", "from ..training import fit\n", [("fastnn.layers.dense", "fastnn.training")]),
        ("fastnn.kernels.dense", "from fastnn import backend\n", [("fastnn.kernels.dense", "fastnn.backend")]),
        ("fastnn.model", "from . import backend\nfrom .layers import Dense\nfrom .training import fit\n", []),
        ("fastnn.model", "def f():\n    from .interop import to_torch\n", []),  # UPWARD_ALLOWED
        (
            "fastnn.metrics",
            "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .model import Sequential\n",
            [],
        ),
        (
            "fastnn.metrics",
            "if TYPE_CHECKING:\n    pass\nelse:\n    from .model import Sequential\n",
            [("fastnn.metrics", "fastnn.model")],
        ),
    ],
)
def test_layer_checker_on_planted_code(importer, source, expected):
    assert upward_imports(source, importer) == expected


def test_layer_checker_refuses_an_unplaced_module():
    with pytest.raises(AssertionError, match="in no layer"):
        upward_imports("", "fastnn.newmodule")
