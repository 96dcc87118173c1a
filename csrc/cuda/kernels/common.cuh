// Device helpers shared by the CUDA kernels of meanspot_fused, and the pure
// launch arithmetic their host wrappers and the SIMT emulator
// (tests/cuda_emu) both use. No torch, ATen or c10 include: the kernel
// headers of this folder compile with nvcc for the device and with a plain
// C++ compiler under the emulator's shim (tests/cuda_emu/emu.h, included
// first), which provides the CUDA built-ins.
#pragma once

#include <algorithm>
#include <cstdint>
#include <limits>

#include "../../meanspot_math.h"

namespace meanspot {
namespace gpu {

// The block's dynamic shared memory, 16-byte aligned: the one declaration of
// it, so that the emulator substitutes its own arena without rewriting kernels.
#if defined(__CUDACC__)
__device__ __forceinline__ unsigned char* dynamic_smem() {
  extern __shared__ __align__(16) unsigned char msf_dynamic_smem[];
  return msf_dynamic_smem;
}
#else
inline unsigned char* dynamic_smem() { return ::emu::dynamic_smem(); }
#endif

// Shared memory any kernel gets without opting in.
constexpr int64_t kDefaultSmemBytes = 48 * 1024;

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// What a launch plan needs to know of the device: its SM count, and the
// most blocks a grid-stride launch uses (64 per SM on a device, see
// cuda_utils.cuh's limits; the emulator uses a few, so that the grid-stride
// loops of the kernels take several turns).
struct DeviceLimits {
  int sm_count;
  int64_t max_blocks;
};

// Blocks for a grid-stride loop over `work` items of `per_block` each, at
// most `max_blocks`. Every kernel loops, so any count is correct; at least 1
// so a launch is valid.
inline unsigned int grid_blocks(int64_t work, int64_t per_block, int64_t max_blocks) {
  const int64_t cap = std::min<int64_t>(max_blocks, std::numeric_limits<int>::max());
  return static_cast<unsigned int>(std::max<int64_t>(1, std::min(ceil_div(work, per_block), cap)));
}

// Bytes of `count` elements of T, rounded up to 16 so the next region stays aligned.
template <typename T>
constexpr int64_t smem_bytes(int64_t count) {
  return (count * int64_t(sizeof(T)) + 15) / 16 * 16;
}

// Element strides of an (N, C, H, W) activation. The kernels read their
// inputs through these in any layout (contiguous, channels-last, sliced, or an
// expanded batch of stride 0) instead of the entry points copying them with
// .contiguous(): an expanded batch of 1M samples would be gigabytes of copies.
struct Strides4 {
  int64_t n, c, h, w;
};

// Geometry of x for the pooling kernels (channel_pool, spatial_pool): `channels` planes of height x width per
// sample, element strides `stride`.
struct PoolShape {
  int channels, height, width;
  Strides4 stride;
};

// Position (n, c, h, w) of the linear indices first, first + step, first +
// 2 step, ... of a row-major (N, C, H, W) index space (N unbounded), advanced
// without a division per step. The grid-, block- and warp-stride loops of the
// kernels use it to address strided tensors and to split work indices.
// Why: a 64-bit division or modulo is a call of a division subroutine (tens of
// instructions per element; in the tiled conv kernel ptxas also spilled
// registers around it). These walks divide only 32-bit values, once per loop:
// first and step are thread, block or grid indices and grid strides (below
// 2^31 for every launch here: see grid_blocks).
// Invariant: 0 <= w < width, 0 <= h < height, 0 <= c < channels; the step is
// split once into digits below those radices, so one carry per level restores
// the invariant after each advance.
struct NchwWalk {
  int64_t n, step_n;
  int c, h, w;
  int step_c, step_h, step_w;
  int channels, height, width;

  __device__ __forceinline__ NchwWalk(unsigned int first, unsigned int step, int channels_, int height_, int width_)
      : channels(channels_), height(height_), width(width_) {
    split(first, n, c, h, w);
    split(step, step_n, step_c, step_h, step_w);
  }
  __device__ __forceinline__ void split(unsigned int i, int64_t& ni, int& ci, int& hi, int& wi) const {
    wi = int(i % unsigned(width));
    i /= unsigned(width);
    hi = int(i % unsigned(height));
    i /= unsigned(height);
    ci = int(i % unsigned(channels));
    ni = int64_t(i / unsigned(channels));
  }
  __device__ __forceinline__ void next() {
    w += step_w;
    h += step_h;
    c += step_c;
    n += step_n;
    if (w >= width) {
      w -= width;
      ++h;
    }
    if (h >= height) {
      h -= height;
      ++c;
    }
    if (c >= channels) {
      c -= channels;
      ++n;
    }
  }
  // Offset of the current element in a tensor of strides s.
  __device__ __forceinline__ int64_t offset(const Strides4& s) const { return n * s.n + c * s.c + h * s.h + w * s.w; }
};

constexpr unsigned int kFullMask = 0xffffffffu;

// Sum over the 32 lanes of a warp; every lane gets the result.
template <typename T>
__device__ __forceinline__ T warp_sum(T v) {
  for (int offset = 16; offset > 0; offset /= 2) v += __shfl_xor_sync(kFullMask, v, offset);
  return v;
}

// NaN-propagating maximum over the 32 lanes of a warp; every lane gets the result.
template <typename T>
__device__ __forceinline__ T warp_nan_max(T v) {
  for (int offset = 16; offset > 0; offset /= 2) v = nan_max(v, __shfl_xor_sync(kFullMask, v, offset));
  return v;
}

// Identity of nan_max for a lane that saw no element.
template <typename T>
__device__ __forceinline__ T lowest() {
  return -std::numeric_limits<T>::infinity();
}

}  // namespace gpu
}  // namespace meanspot
