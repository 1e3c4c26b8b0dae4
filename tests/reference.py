"""Float64 NumPy references of every kernel, gathered from the per-topic modules.

Tests compare each fastnn kernel (float32 and float64) against these plain formulas.
"""

from ._reference_attention import *  # noqa: F403
from ._reference_conv import *  # noqa: F403
from ._reference_core import *  # noqa: F403
from ._reference_feed import *  # noqa: F403
from ._reference_norm import *  # noqa: F403
from ._reference_optim import *  # noqa: F403
from ._reference_recurrent import *  # noqa: F403
