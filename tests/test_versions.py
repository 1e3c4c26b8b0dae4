"""fastnn refuses, at import, a Numba and NumPy pair it cannot run, naming both and the fix.

Seen on a GPU machine's image (session 18): numba 0.68.0 with NumPy 2.5.2 imported, then every
kernel's first compile raised ``AttributeError: module 'numpy' has no attribute 'row_stack'``
from inside Numba.
"""

from __future__ import annotations

import pytest

from fastnn import _config


@pytest.mark.parametrize(("numba_version", "numpy_version"), [("0.68.0", "2.5.2"), ("0.61.2", "2.5.0rc1")])
def test_a_numba_that_cannot_compile_against_numpy_2_5_is_refused_with_the_fix(numba_version, numpy_version):
    with pytest.raises(ImportError, match=r"numba (\S+) with NumPy (\S+):.*numba>=0\.68\.1.*numpy<2\.5") as caught:
        _config.check_numba_numpy(numba_version, numpy_version)
    assert numba_version in str(caught.value) and numpy_version in str(caught.value)


@pytest.mark.parametrize(
    ("numba_version", "numpy_version"),
    [("0.68.1", "2.5.2"), ("0.68.0", "2.4.6"), ("0.69.0rc1", "2.5.0"), ("0.60.0", "1.26.4")],
)
def test_pairs_that_work_pass(numba_version, numpy_version):
    _config.check_numba_numpy(numba_version, numpy_version)  # raises for a refused pair
