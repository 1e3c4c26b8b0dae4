"""Sphinx configuration of the fastnn documentation.

Build (from the repository root; warnings are errors, as in CI through tests/test_docs.py):

    python -m pip install -e ".[docs]"
    python -m sphinx -W --keep-going -b html docs docs/_build/html

Notebooks are rendered from the outputs stored in them (``nb_execution_mode = "off"``): the test
suite executes them already (tests/test_notebooks.py, several minutes), and ``python
notebooks/render.py`` stores fresh outputs, so the docs build never runs them again. A whole
build from scratch takes about 22 s of CPU (76-81 s wall on the 2-core machine shared by 8
jobs, session 5: ``/usr/bin/time -v python -m sphinx -W --keep-going -q -E -b html docs /tmp/h``). Intersphinx links to Python, NumPy,
Numba and scikit-learn need their inventories from the network: they are fetched only when
``FASTNN_DOCS_INTERSPHINX=1`` (CI machines reach PyPI only); offline, references to those
projects render as plain text and are not checked (``nitpick_ignore_regex`` below).
"""

from __future__ import annotations

import os
import pathlib
import re
import shutil
import sys

DOCS = pathlib.Path(__file__).resolve().parent
ROOT = DOCS.parent
sys.path[:0] = [str(ROOT), str(DOCS)]  # this checkout of fastnn, and apidoc.py

import apidoc  # noqa: E402

import fastnn  # noqa: E402

project = "fastnn"
author = "the fastnn authors"
copyright = "the fastnn authors"
release = version = fastnn.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.intersphinx",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "numpydoc",
    "myst_nb",
]
source_suffix = {".rst": "restructuredtext", ".md": "myst-nb", ".ipynb": "myst-nb"}
exclude_patterns = ["_build", "_templates", "apidoc.py", "**.ipynb_checkpoints"]
templates_path = ["_templates"]
html_theme = "pydata_sphinx_theme"
html_title = f"fastnn {release}"
html_theme_options = {"navigation_with_keys": False, "show_toc_level": 2}
html_static_path: list[str] = []

# -- cross-references: every fastnn target is checked; other projects' only with their inventories
nitpicky = True
nitpick_ignore_regex = [
    (r"py:.*", r"(numpy|np|numba|sklearn|scipy|matplotlib|tensorboardX|torch|cupy)(\..*)?"),
    (r"py:.*", r"(NDArray|ArrayLike|DTypeLike|Any|Callable|Iterable|Iterator|Sequence|Mapping|ClassVar)"),
    (r"py:.*", r"(collections\.abc|typing|os|pathlib|weakref|threading)\..*"),
    (r"py:class", r"fastnn(\.\w+)*\._\w+.*"),  # private bases shown by show-inheritance
    (r"py:class", r"fastnn\.layers\.base\.WeightAndBias"),
    (r"py:class", r"(array-like|array_like|ndarray|optional|default|callable|path-like|dtype|scalar|file-like)"),
]
if os.environ.get("FASTNN_DOCS_INTERSPHINX") == "1":
    intersphinx_mapping = {
        "python": ("https://docs.python.org/3", None),
        "numpy": ("https://numpy.org/doc/stable", None),
        "numba": ("https://numba.readthedocs.io/en/stable", None),
        "sklearn": ("https://scikit-learn.org/stable", None),
    }
else:
    intersphinx_mapping = {}

# -- API reference: autosummary pages from docs/apidoc.py, numpydoc sections validated
autosummary_generate = True
autosummary_imported_members = True
autodoc_default_options = {"show-inheritance": True}
autodoc_typehints = "none"  # numpydoc's Parameters/Returns sections carry the types
autodoc_member_order = "bysource"
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
numpydoc_xref_param_type = False
#: an undocumented public name, an undocumented parameter or a missing Returns section is a
#: warning, so an error in the -W build (the checks: apidoc.CHECKS)
numpydoc_validation_checks = apidoc.CHECKS
#: each class page lists the members apidoc.documented_members chooses (the docstring test checks
#: the same ones): overrides of a base class's member are documented once, on the base
autosummary_context = {"members_of": apidoc.class_members()}
#: prose docstrings are shown as preformatted text, unchecked; module constants (UPPER_CASE) and
#: class attributes are documented by their ``#:`` comments, which numpydoc cannot see
numpydoc_validation_exclude = (
    set(apidoc.PROSE_DOCSTRINGS)
    | {r"\.[A-Z][A-Z0-9_]*$"}
    | {
        rf"^{re.escape(cls)}\.{name}$"
        for cls, names in autosummary_context["members_of"].items()
        for name in names
        if name in apidoc.documented_members(apidoc.resolve(cls))[1]
    }
)

# -- notebooks: rendered with the outputs stored in them (see the module docstring)
nb_execution_mode = "off"
myst_enable_extensions = ["colon_fence", "dollarmath"]
myst_heading_anchors = 3
suppress_warnings = ["myst.header"]  # the notebooks' and RESULTS.md's own heading levels


def copy_notebooks() -> None:
    """notebooks/*.ipynb -> docs/notebooks/ (a build folder, ignored by git)."""
    target = DOCS / "notebooks"
    target.mkdir(exist_ok=True)
    sources = sorted((ROOT / "notebooks").glob("*.ipynb"))
    for stale in set(target.glob("*.ipynb")) - {target / s.name for s in sources}:
        stale.unlink()
    for source in sources:
        dest = target / source.name
        if not dest.exists() or dest.read_bytes() != source.read_bytes():
            shutil.copyfile(source, dest)


def write_api_pages() -> None:
    """docs/api/<module>.rst for every module of :data:`apidoc.MODULES` (generated, ignored by git)."""
    target = DOCS / "api"
    target.mkdir(exist_ok=True)
    for module_name, title in apidoc.MODULES:
        names = apidoc.documented_names(module_name)
        functions = [n for n in names if not apidoc.is_data(n)]
        data = [n for n in names if apidoc.is_data(n)]
        lines = [title, "=" * len(title), "", f".. automodule:: {module_name}", "   :no-members:", ""]
        if functions:
            lines += [".. autosummary::", "   :toctree: generated", "   :nosignatures:", ""]
            lines += [f"   {n.rpartition('.')[2]}" for n in functions] + [""]
        for name in data:
            lines += [f".. autodata:: {name}", "   :no-value:", ""]
        text = "\n".join(lines)
        write_if_changed(target / f"{module_name}.rst", text)
    pages = "\n".join(f"   {module_name}" for module_name, _ in apidoc.MODULES)
    intro = (
        "Every public name of fastnn, module by module (layers are also ``fastnn.<Name>``). The "
        "examples assume ``import numpy as np``; they run as doctests (tests/test_doctests.py)."
    )
    write_if_changed(
        target / "index.rst", f"API reference\n=============\n\n{intro}\n\n.. toctree::\n   :maxdepth: 1\n\n{pages}\n"
    )


def write_if_changed(path: pathlib.Path, text: str) -> None:
    """Write ``text`` unless ``path`` holds it already (unchanged pages are not rebuilt)."""
    if not path.exists() or path.read_text() != text:
        path.write_text(text)


copy_notebooks()
write_api_pages()


def preformat_prose(app, what, name, obj, options, lines):
    """Docstrings of ``apidoc.PROSE_DOCSTRINGS`` as a literal block (their reST is not checked).
    Runs after numpydoc, whose closing comment (".." and a tag) stays outside the block."""
    if not lines or not apidoc.is_prose(name):
        return
    tail = lines[-2:] if len(lines) >= 2 and lines[-2] == ".." else []
    body = lines[: len(lines) - len(tail)]
    lines[:] = ["::", ""] + ["    " + line for line in body] + [""] + tail


def setup(app):
    app.connect("autodoc-process-docstring", preformat_prose, priority=900)  # after numpydoc (500)
