// Device code of meanspot_fused::spatial_pool (float16, bfloat16, float32,
// float64; accumulation in acc_t): one thread per pixel (n, h, w), grid-stride
// over N * H * W; the thread walks the C channels (coalesced across the warp's
// adjacent pixels) and writes the mean to channel 0 and the NaN-propagating
// max to channel 1 of (N, 2, H, W). x is read through its strides (see
// gpu::Strides4): no copy of the input is made.
// Host wrapper: ../spatial_pool_cuda.cu; grid() below is the launch both the
// wrapper and the SIMT emulator (tests/cuda_emu) use.
#pragma once

#include <cstdint>

#include "common.cuh"

namespace meanspot {
namespace gpu {
namespace spatial_pool {

constexpr int kThreads = 256;

// Thread of pixel i = (n, p) of N * H * W: channel walk at stride `plane`.
// The mean is the sum times 1 / C, as the CPU kernel computes it.
template <typename scalar_t>
__global__ void __launch_bounds__(kThreads)
spatial_pool_kernel(const scalar_t* __restrict__ x, PoolShape shape, int64_t pixels,
                    acc_t<scalar_t> inv_channels, scalar_t* __restrict__ out) {
  using acc = acc_t<scalar_t>;
  const int64_t plane = int64_t(shape.height) * shape.width;
  const unsigned int first = blockIdx.x * kThreads + threadIdx.x, step = gridDim.x * kThreads;
  gpu::NchwWalk at(first, step, 1, shape.height, shape.width);  // pixel i = (n, h, w)
  for (int64_t i = first; i < pixels; i += step, at.next()) {
    const int64_t n = at.n, p = int64_t(at.h) * shape.width + at.w;
    const scalar_t* __restrict__ px = x + n * shape.stride.n + at.h * shape.stride.h + at.w * shape.stride.w;
    acc sum = static_cast<acc>(px[0]);
    acc max = sum;
    for (int c = 1; c < shape.channels; ++c) {
      const acc y = static_cast<acc>(px[c * shape.stride.c]);
      sum += y;
      max = nan_max(max, y);
    }
    scalar_t* __restrict__ po = out + 2 * n * plane + p;
    po[0] = static_cast<scalar_t>(sum * inv_channels);
    po[plane] = static_cast<scalar_t>(max);
  }
}

// Blocks of kThreads threads over `pixels` = N * H * W.
inline dim3 grid(int64_t pixels, const DeviceLimits& d) {
  return dim3(grid_blocks(pixels, kThreads, d.max_blocks));
}

}  // namespace spatial_pool
}  // namespace gpu
}  // namespace meanspot
