"""The one-table comparison: fastnn beside its GEMM floor and PyTorch for every config.

    python benchmarks/compare.py                 # all configs, 7 interleaved repeats
    python benchmarks/compare.py --quick         # a fast look
    python benchmarks/compare.py --configs tiny,mlp --threads 1 --repeats 11

Same as ``python -m fastnn.bench`` (see :mod:`fastnn.bench` for what is measured). Writes
benchmarks/results/compare.md and compare.json.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from fastnn.bench import main

if __name__ == "__main__":
    sys.exit(main())
