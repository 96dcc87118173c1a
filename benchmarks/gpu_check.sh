#!/usr/bin/env bash
# The one GPU check: on a fresh GPU machine with PyTorch preinstalled and no
# network, build the extension, run the CUDA tests, a compute-sanitizer subset
# and the GPU benchmark, and write everything under $OUT (default
# benchmarks/results). Sized for about 8 minutes on one H100:
#   build ~2-3 min (nvcc, sm_90 only), tests ~2 min, sanitizers ~2 min, bench ~2 min.
# Usage (device tool): bash benchmarks/gpu_check.sh   (OUT is set by the tool)
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-benchmarks/results}
mkdir -p "$OUT"
LOG="$OUT/gpu_check.log"
step() { echo "== $(date -u +%H:%M:%S) $*" | tee -a "$LOG"; }
export CUDA_HOME=${CUDA_HOME:-/usr/local/cuda}
export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0}
export MAX_JOBS=${MAX_JOBS:-16}

step "device"
{ nvidia-smi; python -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name())"; } >> "$LOG" 2>&1

step "build (FORCE_CUDA=1, TORCH_CUDA_ARCH_LIST=$TORCH_CUDA_ARCH_LIST)"
if ! FORCE_CUDA=1 timeout 300 pip install --no-build-isolation --no-deps -e . >> "$LOG" 2>&1; then
  step "build FAILED"; tail -40 "$LOG"; exit 1
fi

step "CUDA tests"
timeout 200 python -m pytest -q -x -p no:cacheprovider -m "not stress" tests/network/test_cuda.py tests/network/test_cuda_network.py tests/features/test_cuda_tvl1.py \
  tests/features/test_features_mean.py tests/features/test_features_e2e.py tests/pipeline/test_spot.py > "$OUT/gpu_tests.txt" 2>&1
echo "rc=$?" >> "$OUT/gpu_tests.txt"; tail -3 "$OUT/gpu_tests.txt" | tee -a "$LOG"

step "compute-sanitizer (memcheck, racecheck, initcheck, synccheck) on an op subset"
for tool in memcheck racecheck initcheck synccheck; do
  timeout 60 compute-sanitizer --tool "$tool" --error-exitcode 9 \
    python -m pytest -q -x -p no:cacheprovider tests/network/test_cuda.py tests/network/test_cuda_network.py tests/features/test_cuda_tvl1.py \
    -k "opcheck or tvl1 and 128" \
    > "$OUT/sanitizer_$tool.txt" 2>&1
  echo "$tool rc=$?" | tee -a "$LOG"
done

step "GPU benchmark"
timeout 240 python benchmarks/bench.py --device cuda --min-time 0.5 --out "$OUT" > "$OUT/gpu_bench.txt" 2>&1
echo "bench rc=$?" | tee -a "$LOG"
step "GPU features benchmark"
timeout 240 python benchmarks/bench_features.py --device cuda --data synthetic --batches 1,64,1024,4096 --min-time 1 --out "$OUT" \
  > "$OUT/gpu_bench_features.txt" 2>&1
echo "features bench rc=$?" | tee -a "$LOG"
step "GPU pipeline benchmark (spot end to end; needs opencv-contrib and scikit-image like the features one)"
timeout 240 python benchmarks/bench_pipeline.py --device cuda --data synthetic --frames 2000 --mean-pairs 20 --out "$OUT" \
  > "$OUT/gpu_bench_pipeline.txt" 2>&1
echo "pipeline bench rc=$?" | tee -a "$LOG"
step "done"
