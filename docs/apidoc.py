"""The public API of fastnn, module by module: one list drives the API reference pages
(docs/conf.py writes them) and the docstring check (tests/test_docs.py).

A module's public names are its ``__all__``; a module without one offers the classes and
functions it defines whose names do not start with an underscore.
"""

from __future__ import annotations

import importlib
import inspect
import re
from types import ModuleType

#: (module, title) of every page of the API reference, in reading order
MODULES = [
    ("fastnn", "fastnn: models, loading, threads"),
    ("fastnn.layers", "fastnn.layers"),
    ("fastnn.losses", "fastnn.losses"),
    ("fastnn.optim", "fastnn.optim"),
    ("fastnn.schedules", "fastnn.schedules"),
    ("fastnn.callbacks", "fastnn.callbacks"),
    ("fastnn.init", "fastnn.init"),
    ("fastnn.data", "fastnn.data"),
    ("fastnn.io", "fastnn.io"),
    ("fastnn.diagnostics", "fastnn.diagnostics"),
    ("fastnn.plot", "fastnn.plot"),
    ("fastnn.tensorboard", "fastnn.tensorboard"),
    ("fastnn.metrics", "fastnn.metrics"),
    ("fastnn.datasets", "fastnn.datasets"),
    ("fastnn.sklearn", "fastnn.sklearn"),
    ("fastnn.distributed", "fastnn.distributed"),
    ("fastnn.backend", "fastnn.backend"),
]

#: names that ``fastnn`` re-exports from a module with its own page (documented there once)
REEXPORTED_FROM = (
    "fastnn.layers",
    "fastnn.callbacks",
    "fastnn.data",
    "fastnn.diagnostics",
    "fastnn.init",
    "fastnn.losses",
    "fastnn.optim",
    "fastnn.schedules",
)


def public_names(module: ModuleType) -> list[str]:
    """The public names of ``module``: ``__all__``, else what it defines (classes, functions)."""
    names = getattr(module, "__all__", None)
    if names is None:
        names = [
            name
            for name, obj in vars(module).items()
            if not name.startswith("_")
            and (inspect.isclass(obj) or inspect.isfunction(obj))
            and getattr(obj, "__module__", None) == module.__name__
        ]
    return sorted(names, key=str.lower)


def documented_names(module_name: str) -> list[str]:
    """The public names documented on ``module_name``'s page (fully qualified): the top-level
    package lists only what no other page documents; submodules and ``__version__`` are left out."""
    module = importlib.import_module(module_name)
    out = []
    for name in public_names(module):
        obj = getattr(module, name)
        if inspect.ismodule(obj) or name.startswith("__"):
            continue
        if module_name == "fastnn" and any(name in public_names(importlib.import_module(m)) for m in REEXPORTED_FROM):
            continue
        out.append(f"{module_name}.{name}")
    return out


def is_data(qualified_name: str) -> bool:
    """True for a constant or table (documented as data, not as a class or function)."""
    module_name, _, name = qualified_name.rpartition(".")
    obj = getattr(importlib.import_module(module_name), name)
    return not (inspect.isclass(obj) or callable(obj))


#: names whose docstrings are still prose (their files were being edited in parallel when the
#: numpydoc check landed): shown as preformatted text and not validated. Remove a line once its
#: module's docstrings have numpydoc sections.
PROSE_DOCSTRINGS = [
    # scikit-learn's generated metadata-routing setters (set_fit_request ...): their docstrings
    # refer to scikit-learn's glossary and labels
    r"^fastnn\.sklearn\.\w+\.set_\w+_request$",
]

#: numpydoc checks every documented name must pass: GL08 a docstring, PR01/PR02 every parameter
#: documented and none unknown, RT01 a Returns section when the function returns a value, EX01 an
#: Examples section (run as a doctest by tests/test_doctests.py)
CHECKS = {"GL08", "PR01", "PR02", "RT01", "EX01"}


def is_prose(qualified_name: str) -> bool:
    """True for a name matched by :data:`PROSE_DOCSTRINGS`."""
    return any(re.match(pattern, qualified_name) for pattern in PROSE_DOCSTRINGS)


def documented_members(cls: type) -> tuple[list[str], list[str]]:
    """The public members of ``cls`` its page documents: those it defines, except overrides of a
    fastnn base class's member (a layer's ``build``, a callback's ``on_epoch_end``: documented
    once, on the base).

    Returns (methods and properties, whose docstrings are checked; class attributes, documented
    by their ``#:`` comments)."""
    fastnn_bases = [base for base in cls.__mro__[1:] if base.__module__.startswith("fastnn")]
    public_bases = [base for base in fastnn_bases if not base.__name__.startswith("_")]
    private_bases = [base for base in fastnn_bases if base.__name__.startswith("_")]  # shown with cls
    methods: list[str] = []
    attributes: list[str] = []
    for klass in [cls, *private_bases]:
        for name, value in vars(klass).items():
            if name.startswith("_") or name in methods or name in attributes:
                continue
            if any(name in vars(base) for base in public_bases):
                continue
            if klass is cls and any(name in vars(base) for base in private_bases):
                continue  # an override of a private base's member: listed from there
            func = value.__func__ if isinstance(value, (staticmethod, classmethod)) else getattr(value, "fget", value)
            if inspect.isfunction(func):
                methods.append(name)
            elif not callable(value) and not isinstance(value, type):
                attributes.append(name)
    return methods, attributes


def class_members() -> dict[str, list[str]]:
    """Qualified class name -> the members its page lists (:func:`documented_members`)."""
    out = {}
    for module_name, _ in MODULES:
        for qualified in documented_names(module_name):
            module_path, _, name = qualified.rpartition(".")
            obj = getattr(importlib.import_module(module_path), name)
            if inspect.isclass(obj):
                methods, attributes = documented_members(obj)
                out[qualified] = attributes + methods
    return out


def docstring_problems(modules: list[str] | None = None) -> list[str]:
    """Every documented name (functions, classes, their methods) of ``modules`` (default: every
    page's) failing a check of :data:`CHECKS`, as "name: CODE message" lines."""
    from numpydoc.validate import validate

    problems = []
    for module_name in modules or [name for name, _ in MODULES]:
        for qualified in documented_names(module_name):
            if is_data(qualified) or is_prose(qualified):
                continue
            obj = getattr(importlib.import_module(qualified.rpartition(".")[0]), qualified.rpartition(".")[2])
            home = f"{obj.__module__}.{obj.__qualname__}"
            targets = [(qualified, home)]
            if inspect.isclass(obj):
                targets += [(f"{qualified}.{m}", f"{home}.{m}") for m in documented_members(obj)[0]]
            for shown, real in targets:
                for code, message in validate(real)["errors"]:
                    if code in CHECKS:
                        problems.append(f"{shown}: {code} {message}")
    return problems


def resolve(qualified_name: str):
    """The object a qualified name such as ``"fastnn.layers.Dense"`` names."""
    module_name, _, name = qualified_name.rpartition(".")
    return getattr(importlib.import_module(module_name), name)
