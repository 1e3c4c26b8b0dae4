"""Pure @njit kernels: no classes, no validation, no allocation in hot paths."""
from ._cache import install as _install_cache_locators

_install_cache_locators()
