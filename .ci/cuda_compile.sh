#!/usr/bin/env bash
# Compile-only check of the CUDA kernels, for machines without a GPU (CI).
#
# Builds meanspot_fused with FORCE_CUDA=1 in a throwaway copy of the tracked
# sources, inside a venv holding a CUDA build of torch whose CUDA major version
# matches nvcc (here: torch 2.14.1 cu130 and nvcc 13.0), then imports the
# module and checks that every op has a CUDA kernel registered. The CPU build
# and test run in the main environment are not touched.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
export CUDA_HOME=${CUDA_HOME:-/usr/local/cuda}
# A venv outside the checkout, reused across runs (a CUDA torch is ~5 GB).
VENV=${MEANSPOT_CUDA_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/meanspot_fused/venv-cuda}
TORCH_CUDA_SPEC=${TORCH_CUDA_SPEC:-torch==2.14.1}
export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-8.0;9.0}

nvcc_major=$("$CUDA_HOME/bin/nvcc" --version | sed -n 's/.*release \([0-9]*\)\..*/\1/p')
echo "cuda-check: nvcc major $nvcc_major, TORCH_CUDA_ARCH_LIST=$TORCH_CUDA_ARCH_LIST"
[ -x "$VENV/bin/python" ] || { mkdir -p "$(dirname "$VENV")" && python3 -m venv "$VENV"; }
if ! "$VENV/bin/python" -c "import h5py, tqdm, ninja, torch, sys; sys.exit(0 if (torch.version.cuda or '').split('.')[0] == '$nvcc_major' else 1)" 2>/dev/null; then
  "$VENV/bin/python" -m pip install -q "$TORCH_CUDA_SPEC" numpy h5py tqdm ninja "setuptools>=64" wheel
fi
"$VENV/bin/python" -c "import torch; print('cuda-check: torch', torch.__version__, 'CUDA', torch.version.cuda)"

BUILD=$(mktemp -d)
trap 'rm -rf "$BUILD"' EXIT
git ls-files -z | xargs -0 -I{} cp --parents {} "$BUILD"
cd "$BUILD"
FORCE_CUDA=1 MAX_JOBS=${MAX_JOBS:-2} "$VENV/bin/python" setup.py -q build_ext --inplace
"$VENV/bin/python" - <<'PY'
import torch
import meanspot_fused  # noqa: F401  (runs the op registrations)
ops = ["conv_block", "channel_pool", "spatial_pool", "cbam", "meanspot_net", "mean_roi_features", "tvl1_flow"]
missing = [op for op in ops
           if not torch._C._dispatch_has_kernel_for_dispatch_key(f"meanspot_fused::{op}", "CUDA")]
assert not missing, f"no CUDA kernel registered for {missing}"
print("cuda-check: CUDA kernels compiled and registered for", ", ".join(ops))
PY
