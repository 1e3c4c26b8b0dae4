"""Finding fastnn's OpenBLAS (kernels/blas.py) in the wheel layouts of Linux, macOS and Windows.

Each layout is simulated: empty files named as the wheels name them, a fake ``scipy_openblas32``
module with the wheel's API, SciPy's folder pointed at a temporary site-packages and
``sys.platform`` set to the platform under test. Only the last tests load a real library.
"""

from __future__ import annotations

import os
import sys
import types
from types import SimpleNamespace

import pytest

from fastnn.kernels import blas

# Files the wheels ship (basenames), per platform: the scipy-openblas32 wheel's lib/ folder and
# SciPy's vendored-library folders relative to site-packages. Decoys of other platforms and
# non-BLAS libraries sit beside them and must never be picked.
WHEEL_FILES = {
    "linux": ["libscipy_openblas.so", "libscipy_openblas.dylib", "libscipy_openblas.dll"],
    "darwin": ["libscipy_openblas.dylib", "libscipy_openblas.so"],
    "win32": ["libscipy_openblas.dll", "libscipy_openblas.lib", "libscipy_openblas.def", "libscipy_openblas.so"],
}
SCIPY_FILES = {
    "linux": {"scipy.libs": ["libgfortran-8f1e9814.so.5.0.0", "libscipy_openblas-6cdc3b4a.so"]},
    "darwin": {os.path.join("scipy", ".dylibs"): ["libgfortran.5.dylib", "libscipy_openblas.dylib"]},
    "win32": {
        "scipy.libs": [
            "libscipy_openblas-5b1ec8b915dfb81d11cebc0788069d2d.dll",
            "msvcp140-a4c2229bdc2a2a630acdc095b4d86008.dll",
        ],
        os.path.join("scipy", ".libs"): ["libopenblas.XWYDX2IKJW2NMTWSFYNGFUWKQU3LYTCZ.gfortran-win_amd64.dll"],
    },
}
WHEEL_EXPECTED = {
    "linux": "libscipy_openblas.so",
    "darwin": "libscipy_openblas.dylib",
    "win32": "libscipy_openblas.dll",
}
SCIPY_EXPECTED = {
    "linux": [os.path.join("scipy.libs", "libscipy_openblas-6cdc3b4a.so")],
    "darwin": [os.path.join("scipy", ".dylibs", "libscipy_openblas.dylib")],
    "win32": [
        os.path.join("scipy.libs", "libscipy_openblas-5b1ec8b915dfb81d11cebc0788069d2d.dll"),
        os.path.join("scipy", ".libs", "libopenblas.XWYDX2IKJW2NMTWSFYNGFUWKQU3LYTCZ.gfortran-win_amd64.dll"),
    ],
}
PLATFORMS = ["linux", "darwin", "win32"]


def _touch(folder, names):
    os.makedirs(folder, exist_ok=True)
    for name in names:
        with open(os.path.join(folder, name), "wb"):
            pass


def _fake_wheel(lib_dir: str, platform: str) -> types.ModuleType:
    """A ``scipy_openblas32`` module with the wheel's API (get_library names the .lib on Windows)."""
    wheel = types.ModuleType("scipy_openblas32")
    wheel.get_lib_dir = lambda: lib_dir.replace("\\", "/")

    def get_library(fullname=False):
        names = sorted(os.listdir(lib_dir))
        libs = (
            [n for n in names if n.endswith(".lib")]
            if platform == "win32"
            else [n for n in names if n.startswith("libscipy_openblas")]
        )
        name = libs[0]  # IndexError when none, as in the wheel
        if fullname:
            return name
        return os.path.splitext(name)[0] if platform == "win32" else os.path.splitext(name)[0][3:]

    wheel.get_library = get_library
    return wheel


@pytest.fixture
def layout(tmp_path, monkeypatch):
    """layout(platform, wheel=True, scipy=True) -> site-packages folder of a simulated install."""

    def make(platform, wheel=True, scipy=True):
        site = tmp_path / "site-packages"
        _touch(site / "scipy", ["__init__.py"])
        monkeypatch.setattr(blas, "_scipy_dir", lambda: str(site / "scipy"))
        if scipy:
            for sub, names in SCIPY_FILES[platform].items():
                _touch(site / sub, names)
        if wheel:
            lib_dir = site / "scipy_openblas32" / "lib"
            _touch(lib_dir, WHEEL_FILES[platform])
            (lib_dir / "pkgconfig").mkdir()
            monkeypatch.setitem(sys.modules, "scipy_openblas32", _fake_wheel(str(lib_dir), platform))
        else:
            monkeypatch.setitem(sys.modules, "scipy_openblas32", None)  # import raises ImportError
        monkeypatch.setattr(blas.sys, "platform", platform)
        return str(site)

    return make


def _relative(paths, site):
    return [os.path.relpath(os.path.normpath(p), site) for p in paths]


@pytest.mark.parametrize("platform", PLATFORMS)
def test_wheel_first_then_scipy(layout, platform):
    site = layout(platform)
    expected = [os.path.join("scipy_openblas32", "lib", WHEEL_EXPECTED[platform])] + SCIPY_EXPECTED[platform]
    assert _relative(blas._candidate_libraries(), site) == expected


@pytest.mark.parametrize("platform", PLATFORMS)
def test_scipy_fallback_without_the_wheel(layout, platform):
    site = layout(platform, wheel=False)
    assert _relative(blas._candidate_libraries(), site) == SCIPY_EXPECTED[platform]


@pytest.mark.parametrize("platform", PLATFORMS)
def test_broken_wheel_is_skipped(layout, platform, monkeypatch):
    site = layout(platform)
    lib_dir = os.path.join(site, "scipy_openblas32", "lib")
    for name in os.listdir(lib_dir):
        if name.startswith("libscipy_openblas"):
            os.remove(os.path.join(lib_dir, name))  # get_library raises IndexError, as in the wheel
    found, searched = blas._search()
    assert _relative(found, site) == SCIPY_EXPECTED[platform]
    assert any("scipy-openblas32 wheel: broken install" in line for line in searched)


def test_versioned_so_and_old_scipy_names_on_linux(layout):
    site = layout("linux", wheel=False, scipy=False)
    _touch(
        os.path.join(site, "scipy.libs"),
        [
            "libopenblasp-r0-23e5df77.3.21.dev.so",
            "libscipy_openblas.so.0",
            "libopenblas.dylib",
            "libquadmath-96973f99.so.0.0.0",
        ],
    )
    assert [os.path.basename(p) for p in blas._candidate_libraries()] == [
        "libopenblasp-r0-23e5df77.3.21.dev.so",
        "libscipy_openblas.so.0",
    ]


@pytest.mark.parametrize(
    "name,platform",
    [("linux", "linux"), ("freebsd14", "linux"), ("darwin", "darwin"), ("win32", "win32"), ("cygwin", "linux")],
)
def test_platform_layouts(monkeypatch, name, platform):
    monkeypatch.setattr(blas.sys, "platform", name)
    assert blas._platform() == platform


@pytest.mark.parametrize("platform", PLATFORMS)
def test_no_blas_error_says_what_was_searched_and_how_to_fix(layout, platform):
    site = layout(platform, wheel=False, scipy=False)
    with pytest.raises(ImportError) as info:
        blas._find_openblas()
    message = str(info.value)
    assert "pip install scipy-openblas32" in message
    assert "the scipy-openblas32 wheel: not installed" in message
    for sub in SCIPY_FILES[platform]:
        assert os.path.join(site, sub) in message
    assert platform in message


def test_no_scipy_is_reported(layout, monkeypatch):
    layout("linux", wheel=False, scipy=False)
    monkeypatch.setattr(blas, "_scipy_dir", lambda: None)
    assert blas._search() == (
        [],
        ["the scipy-openblas32 wheel: not installed", "SciPy's bundled OpenBLAS: SciPy is not installed"],
    )


def test_cblas_prefix():
    assert blas._cblas_prefix(SimpleNamespace(scipy_cblas_sgemm=1, cblas_sgemm=1)) == "scipy_"
    assert blas._cblas_prefix(SimpleNamespace(cblas_sgemm=1)) == ""
    assert blas._cblas_prefix(SimpleNamespace(scipy_cblas_dgemm=1)) is None


# -- real libraries ------------------------------------------------------------------------


def test_loaded_library_is_the_first_candidate():
    assert os.path.samefile(blas._candidate_libraries()[0], blas.LIBRARY_PATH)
    assert blas._PREFIX in blas._PREFIXES


@pytest.mark.skipif(sys.platform == "win32", reason="symbolic links need privileges on Windows")
def test_unloadable_candidate_falls_back_to_the_next(layout):
    platform = blas._platform()
    site = layout(platform, scipy=False)  # the wheel's files are empty: they fail to load
    scipy_libs = os.path.join(site, blas._SCIPY_LIB_DIRS[platform][0])
    os.makedirs(scipy_libs)
    link = os.path.join(scipy_libs, "libscipy_openblas-0123abcd" + blas._LIB_SUFFIX[platform])
    os.symlink(blas.LIBRARY_PATH, link)
    assert blas._find_openblas() == (link, blas._PREFIX)
