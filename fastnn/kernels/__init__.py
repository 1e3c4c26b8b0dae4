"""Pure @njit kernels: no classes, no validation, no allocation in hot paths.

mypy does not analyse this package ([tool.mypy] in pyproject.toml): Numba ships no type stubs,
so every @njit/@cuda.jit function is Any to a type checker; Numba types the kernels itself when
it compiles them, and each is tested against a float64 NumPy reference.
"""

from ._cache import install as _install_cache_locators
from ._cache import start_threading_layer as _start_threading_layer
from ._lazy_ir import install as _install_lazy_ir
from ._linkage import install as _install_own_copies
from ._step_calls import install as _install_step_calls

_install_cache_locators()
_start_threading_layer()

_install_own_copies()
_install_lazy_ir()
_install_step_calls()
