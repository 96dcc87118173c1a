// Device code of meanspot_fused::mean_roi_features (float32; see
// csrc/ops/mean_roi_features.cpp for the contract, csrc/features_math.h for
// the math).
//
// One 256-thread block per pair, grid-stride over the pairs. Phase 1: the
// threads stride over the H x W pixels, each computing u, v, os from the flow
// (recomputing the left and upper neighbours the strain needs, rather than
// staging 3 x H x W maps), and the block reduces the per-channel min and max
// (warp shuffles, then the 8 warp results in shared memory). Phase 2: the
// threads stride over the 42 x 42 output pixels, recomputing u, v, os at their
// four resize taps. The flow is read through its strides and the output
// written once; no intermediate touches global memory.
// Host wrapper: ../mean_roi_features_cuda.cu; grid() below is the launch both
// the wrapper and the SIMT emulator (tests/cuda_emu) use.
#pragma once

#include <cstdint>

#include "../../features_math.h"
#include "common.cuh"

namespace meanspot {
namespace gpu {
namespace mean_roi_features {

using features::FlowView;
using features::Maps;
using features::Normaliser;
using features::Range;

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
constexpr int kOutPlane = features::kOutSize * features::kOutSize;

// Range of u, v, os over one pair's map; every thread of the block gets it.
// Must be reached by all threads of the block (it synchronises).
__device__ Range block_range(const FlowView& f, Range* warp_ranges) {
  Range r = Range::empty();
  const int64_t pixels = int64_t(f.height) * f.width;
  for (int64_t p = threadIdx.x; p < pixels; p += kThreads)
    r.add(features::maps_at(f, int(p / f.width), int(p % f.width)));
  for (int k = 0; k < features::kChannels; ++k) {
    for (int offset = 16; offset > 0; offset /= 2) {
      r.lo[k] = ::fminf(r.lo[k], __shfl_xor_sync(kFullMask, r.lo[k], offset));
      r.hi[k] = ::fmaxf(r.hi[k], __shfl_xor_sync(kFullMask, r.hi[k], offset));
    }
  }
  if (threadIdx.x % 32 == 0) warp_ranges[threadIdx.x / 32] = r;
  __syncthreads();
  Range total = Range::empty();
  for (int w = 0; w < kWarps; ++w) total.merge(warp_ranges[w]);
  __syncthreads();  // warp_ranges is rewritten for the next pair
  return total;
}

// flow: pair i at flow + i * stride_n, (2, H, W) at strides (stride_c,
// stride_y, stride_x); boxes: contiguous (N, 2, 4); out: contiguous (N, 3, 42, 42).
__global__ void __launch_bounds__(kThreads)
mean_roi_features_kernel(const float* __restrict__ flow, int64_t n, int64_t stride_n, int64_t stride_c,
                         int64_t stride_y, int64_t stride_x, int height, int width,
                         const int64_t* __restrict__ boxes, float* __restrict__ out) {
  __shared__ Range warp_ranges[kWarps];
  for (int64_t i = blockIdx.x; i < n; i += gridDim.x) {
    const FlowView f{flow + i * stride_n, stride_c, stride_y, stride_x, height, width};
    const int64_t* box = boxes + i * features::kRois * features::kBoxFields;
    float* o = out + i * features::kChannels * kOutPlane;
    // Uniform across the block, so no thread skips block_range's barriers.
    if (!features::box_valid(box, height, width) ||
        !features::box_valid(box + features::kBoxFields, height, width)) {
      for (int p = threadIdx.x; p < features::kChannels * kOutPlane; p += kThreads) o[p] = NAN;
      continue;
    }
    const Normaliser norm(block_range(f, warp_ranges));
    const auto sample = [&f](int y, int x) { return features::maps_at(f, y, x); };
    for (int p = threadIdx.x; p < kOutPlane; p += kThreads) {
      const Maps m = features::roi_pixel(sample, norm, box, p / features::kOutSize, p % features::kOutSize);
      for (int k = 0; k < features::kChannels; ++k) o[k * kOutPlane + p] = m.c[k];
    }
  }
}

// One block per pair, grid-stride.
inline dim3 grid(int64_t pairs, const DeviceLimits& d) { return dim3(grid_blocks(pairs, 1, d.max_blocks)); }

}  // namespace mean_roi_features
}  // namespace gpu
}  // namespace meanspot
