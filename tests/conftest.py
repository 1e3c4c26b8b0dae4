import os

# Fused steps (fastnn._fused) compile each model structure once (seconds); the suite tests
# them in tests/test_fused.py and keeps the Python loop of kernel calls everywhere else.
# Notebooks run by tests/test_notebooks.py inherit this through the kernel's environment.
os.environ.setdefault("FASTNN_FUSE", "never")

import numpy as np
import pytest


@pytest.fixture
def rng():
    return np.random.default_rng(1234)
