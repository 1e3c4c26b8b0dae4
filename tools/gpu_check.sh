#!/usr/bin/env bash
# One run on a machine with an NVIDIA GPU (issue 15, item 5): the versions, the CUDA unit costs, the
# host-side CUDA work counted per call and a profile of a step (benchmarks/gpu_profile.py), the CUDA
# test suite on the real GPU (each test's result logged as it ends, so a run cut by its time limit
# still names its failures), then
# benchmarks/gpu_compare.py beside PyTorch CUDA. Logs and tables go to $OUT (default
# /tmp/fastnn_gpu); the last lines printed are the failures and the benchmark table.
#   bash tools/gpu_check.sh          # PROFILE_S / TESTS_S / BENCH_S: time limits in seconds
# Wheels in .whl/ are installed first. The H200 image of session 18 paired numba 0.68.0 with NumPy
# 2.5.2, which that Numba cannot run (np.row_stack is gone); carry NumPy 2.4.6 for its Python 3.12:
#   echo /.whl/ >> .git/info/exclude
#   python -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#       --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 -d .whl numpy==2.4.6
# and name .whl in the run's carry.
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/fastnn_gpu}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
PY=${PY:-python3}
if [ -d .whl ]; then  # wheels carried for packages the machine lacks or has in another version
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        && export PYTHONPATH="/tmp/site:$PYTHONPATH"
fi
{
    date -u
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm,temperature.gpu --format=csv
    $PY -c "import sys, numpy, scipy, numba, torch; print(sys.version.split()[0], 'numpy', numpy.__version__, 'scipy', scipy.__version__, 'numba', numba.__version__, 'torch', torch.__version__, torch.cuda.is_available())"
    $PY -c "import numba_cuda; print('numba-cuda', numba_cuda.__version__)"
    $PY -c "import cupy; print('cupy', cupy.__version__, cupy.cuda.runtime.runtimeGetVersion())"
    $PY -c "import fastnn; from fastnn import backend; print('fastnn', fastnn.__version__, 'cuda_available', backend.cuda_available())"
} 2>&1 | tee "$OUT/info.txt"

timeout "${PROFILE_S:-60}" $PY benchmarks/gpu_profile.py > "$OUT/gpu_profile.txt" 2>&1
echo "gpu_profile: rc=$?" | tee -a "$OUT/info.txt"
head -10 "$OUT/gpu_profile.txt"
grep "ms per call" "$OUT/gpu_profile.txt"
grep -A12 "host-side CUDA work per call" "$OUT/gpu_profile.txt"  # beside the simulator's (RESULTS.md, session 23)

start=$(date +%s)
FASTNN_CUDA_TESTS_ON_GPU=1 NUMBA_ENABLE_CUDASIM=0 timeout "${TESTS_S:-300}" \
    $PY -m pytest tests_cuda -q -n "${WORKERS:-12}" --dist loadfile -p no:cacheprovider -p no:benchmark -v -rfE --durations=15 \
    > "$OUT/tests_cuda.log" 2>&1
echo "tests_cuda: rc=$? in $(( $(date +%s) - start )) s" | tee -a "$OUT/info.txt"
grep -E "(FAILED|ERROR) " "$OUT/tests_cuda.log" | cut -c1-220 | head -30
grep -cE "PASSED " "$OUT/tests_cuda.log"
tail -2 "$OUT/tests_cuda.log"

start=$(date +%s)
timeout "${BENCH_S:-240}" $PY benchmarks/gpu_compare.py --configs "${CONFIGS:-mlp,tiny,wide}" \
    --batches "${BATCHES:-512,4096}" --out "$OUT/gpu_bench.md" > /dev/null 2> "$OUT/gpu_bench.log"
echo "gpu_compare: rc=$? in $(( $(date +%s) - start )) s" | tee -a "$OUT/info.txt"
grep -A3 "failed:" "$OUT/gpu_bench.log" | head -20
cat "$OUT/gpu_bench.md"
