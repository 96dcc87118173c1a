// Device code of meanspot_fused::channel_pool (float16, bfloat16, float32,
// float64; accumulation in acc_t): mean and NaN-propagating max over H x W of
// every (n, c) plane, one read of x. Planes of fewer than kBlockPlane pixels
// go one warp per plane (8 planes per 256-thread block, shuffle reduction);
// larger planes one block per plane (shuffle within warps, then across warps
// in shared memory). Both grid-stride over the N * C planes and read x through
// its strides (any layout, expanded batches included, see gpu::Strides4): no
// copy of the input is made.
// Host wrapper: ../channel_pool_cuda.cu; plan() below is the launch both the wrapper
// and the SIMT emulator (tests/cuda_emu) use.
#pragma once

#include <cstdint>

#include "common.cuh"

namespace meanspot {
namespace gpu {
namespace channel_pool {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
// Planes of at least this many pixels get a whole block each.
constexpr int64_t kBlockPlane = 2048;

// Partial sum and max of the pixels first, first + step, ... (row-major order)
// of the plane at p (plane (n, c) of x).
template <typename scalar_t>
__device__ __forceinline__ void plane_partial(const scalar_t* __restrict__ p, const PoolShape& s, unsigned int first,
                                              unsigned int step, acc_t<scalar_t>& sum, acc_t<scalar_t>& max) {
  using acc = acc_t<scalar_t>;
  const int64_t plane = int64_t(s.height) * s.width;
  sum = acc(0);
  max = lowest<acc>();
  gpu::NchwWalk at(first, step, 1, s.height, s.width);
  for (int64_t i = first; i < plane; i += step, at.next()) {
    const acc v = static_cast<acc>(p[at.h * s.stride.h + at.w * s.stride.w]);
    sum += v;
    max = nan_max(max, v);
  }
}

// Warp w of the grid reduces planes w, w + warps_in_grid, ...; lane 0 writes.
// Six blocks per SM (40 registers): without a count ptxas aimed at eight and
// spilled for sm_80 in float64.
template <typename scalar_t>
__global__ void __launch_bounds__(kThreads, 6)
channel_pool_warp_kernel(const scalar_t* __restrict__ x, PoolShape shape, int64_t planes,
                         scalar_t* __restrict__ mean, scalar_t* __restrict__ max) {
  using acc = acc_t<scalar_t>;
  const int lane = threadIdx.x % 32;
  const int64_t plane = int64_t(shape.height) * shape.width;
  const unsigned int first = blockIdx.x * kWarps + threadIdx.x / 32, stride = gridDim.x * kWarps;
  gpu::NchwWalk at(first, stride, shape.channels, 1, 1);  // plane pi = (n, c)
  // The loop bound is uniform across a warp, so the full-mask shuffles are safe.
  for (int64_t pi = first; pi < planes; pi += stride, at.next()) {
    acc s, m;
    plane_partial(x + at.n * shape.stride.n + at.c * shape.stride.c, shape, lane, 32, s, m);
    s = warp_sum(s);
    m = warp_nan_max(m);
    if (lane == 0) {
      mean[pi] = static_cast<scalar_t>(s / static_cast<acc>(plane));
      max[pi] = static_cast<scalar_t>(m);
    }
  }
}

// Block b reduces planes b, b + gridDim.x, ...; thread 0 writes.
template <typename scalar_t>
__global__ void __launch_bounds__(kThreads)
channel_pool_block_kernel(const scalar_t* __restrict__ x, PoolShape shape, int64_t planes,
                          scalar_t* __restrict__ mean, scalar_t* __restrict__ max) {
  using acc = acc_t<scalar_t>;
  __shared__ acc warp_sums[kWarps], warp_maxes[kWarps];
  const int64_t plane = int64_t(shape.height) * shape.width;
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  gpu::NchwWalk at(blockIdx.x, gridDim.x, shape.channels, 1, 1);  // plane pi = (n, c)
  for (int64_t pi = blockIdx.x; pi < planes; pi += gridDim.x, at.next()) {
    acc s, m;
    plane_partial(x + at.n * shape.stride.n + at.c * shape.stride.c, shape, threadIdx.x, kThreads, s, m);
    s = warp_sum(s);
    m = warp_nan_max(m);
    if (lane == 0) {
      warp_sums[warp] = s;
      warp_maxes[warp] = m;
    }
    __syncthreads();
    if (warp == 0) {
      s = lane < kWarps ? warp_sums[lane] : acc(0);
      m = lane < kWarps ? warp_maxes[lane] : lowest<acc>();
      s = warp_sum(s);
      m = warp_nan_max(m);
      if (lane == 0) {
        mean[pi] = static_cast<scalar_t>(s / static_cast<acc>(plane));
        max[pi] = static_cast<scalar_t>(m);
      }
    }
    __syncthreads();  // warp_sums/warp_maxes are rewritten for the next plane
  }
}


// Launch of channel_pool over `planes` planes of `plane` pixels each: a block
// per plane for large planes, else a warp per plane.
struct Plan {
  bool block_per_plane;
  dim3 grid;
  int threads;
};

inline Plan plan(int64_t planes, int64_t plane, const DeviceLimits& d) {
  if (plane >= kBlockPlane) return {true, dim3(grid_blocks(planes, 1, d.max_blocks)), kThreads};
  return {false, dim3(grid_blocks(planes, kWarps, d.max_blocks)), kThreads};
}

}  // namespace channel_pool
}  // namespace gpu
}  // namespace meanspot
