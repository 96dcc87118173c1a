// Host and device helpers shared by the CUDA kernels of meanspot_fused.
//
// Host side: the dtype check and dispatch of every CUDA entry point, cached
// device attributes, 1-D grid sizing for grid-stride loops, the once-per-kernel
// opt-in to more than 48 KB of dynamic shared memory, and strided views of the
// activations (the entry points never copy their inputs). Device side: warp reductions with
// the NaN-propagating maximum of meanspot_math.h.
//
// Deliberately free of <ATen/cuda/CUDAContext.h> (it pulls in cuBLAS and
// cuSPARSE headers that a minimal toolkit lacks); device attributes come from
// the CUDA runtime directly.
#pragma once

#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <c10/cuda/CUDAException.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <limits>
#include <mutex>

#include "../meanspot_math.h"

namespace meanspot {
namespace gpu {

// The dtypes every CUDA kernel is instantiated for; accumulation is in
// acc_t<scalar_t> (float for the 16-bit types and float, double for double).
#define MSF_DISPATCH_CUDA_TYPES(TYPE, NAME, ...) \
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, TYPE, NAME, __VA_ARGS__)

// `x` (the data argument of `op`) is a CUDA tensor of a dtype MSF_DISPATCH_CUDA_TYPES covers.
inline void check_cuda_input(const at::Tensor& x, const char* op) {
  TORCH_CHECK(x.is_cuda(), op, ": x must be a CUDA tensor here, got ", x.device());
  const auto t = x.scalar_type();
  TORCH_CHECK(t == at::kFloat || t == at::kHalf || t == at::kBFloat16 || t == at::kDouble, op,
              ": on CUDA x must be float16, bfloat16, float32 or float64, got ", t);
}

// The dtype of a tensor holding acc_t<scalar_t> (scratch workspaces).
template <typename scalar_t>
inline at::ScalarType acc_scalar_type() {
  return c10::CppTypeToScalarType<acc_t<scalar_t>>::value;
}

// cudaDeviceGetAttribute, cached per device and attribute (attributes never
// change at run time; the cache keeps the runtime call off the launch path).
template <cudaDeviceAttr kAttr>
inline int device_attribute(int device) {
  constexpr int kMaxDevices = 64;
  static std::atomic<int> cache[kMaxDevices];  // static storage: 0 = not read yet
  int v = 0;
  if (device < 0 || device >= kMaxDevices) {
    C10_CUDA_CHECK(cudaDeviceGetAttribute(&v, kAttr, device));
    return v;
  }
  v = cache[device].load(std::memory_order_relaxed);
  if (v == 0) {
    C10_CUDA_CHECK(cudaDeviceGetAttribute(&v, kAttr, device));
    cache[device].store(v, std::memory_order_relaxed);
  }
  return v;
}

inline int sm_count(int device) { return device_attribute<cudaDevAttrMultiProcessorCount>(device); }

// Largest dynamic shared memory one block may opt in to (227 KB on H100).
inline int max_smem_optin(int device) { return device_attribute<cudaDevAttrMaxSharedMemoryPerBlockOptin>(device); }

// Shared memory any kernel gets without opting in.
constexpr int64_t kDefaultSmemBytes = 48 * 1024;

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Blocks for a grid-stride loop over `work` items of `per_block` each: enough
// to fill the device many times over, never more than the grid allows. Every
// kernel loops, so any count is correct; at least 1 so a launch is valid.
inline unsigned int grid_size(int64_t work, int64_t per_block, int device) {
  const int64_t cap = std::min<int64_t>(int64_t(sm_count(device)) * 64, std::numeric_limits<int>::max());
  return static_cast<unsigned int>(std::max<int64_t>(1, std::min(ceil_div(work, per_block), cap)));
}

// Largest dynamic shared memory kKernel may be launched with on `device` (the
// current device), after raising the kernel's limit to that once.
//
// cudaFuncAttributeMaxDynamicSharedMemorySize is one value per kernel and
// device shared by every host thread. Setting it to each launch's own size
// let two threads launching the same kernel with different sizes interleave
// (set A, set B < A, launch A: "invalid argument"). So it is set exactly once
// per (kernel, device), under std::call_once, to the most the device allows
// (the opt-in maximum less the kernel's static shared memory), and never
// changed afterwards; a launch then only needs its size to be within the
// returned limit. The attribute is an upper bound, not a reservation:
// occupancy still follows each launch's actual size. Legal during CUDA graph
// capture (not a stream operation). kKernel is a template argument so that
// each kernel instantiation owns its once-flags.
template <auto kKernel>
inline int64_t dynamic_smem_limit(int device) {
  constexpr int kMaxDevices = 64;
  static std::once_flag once[kMaxDevices];
  static int64_t limit[kMaxDevices];
  TORCH_CHECK(device >= 0 && device < kMaxDevices, "meanspot_fused: CUDA device index ", device,
              " is outside the supported range [0, ", kMaxDevices, ")");
  // An exception (a failing CUDA call) leaves the flag unset: the next launch retries.
  std::call_once(once[device], [device] {
    cudaFuncAttributes attributes;
    C10_CUDA_CHECK(cudaFuncGetAttributes(&attributes, kKernel));
    // The CUDA runtime's bound: dynamic plus static shared memory <= the opt-in maximum.
    const int bytes = std::max(0, max_smem_optin(device) - int(attributes.sharedSizeBytes));
    C10_CUDA_CHECK(cudaFuncSetAttribute(kKernel, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes));
    limit[device] = bytes;
  });
  return limit[device];
}

// Makes sure kKernel can be launched with `bytes` of dynamic shared memory on
// `device` (the current device); a clear error naming `op` when it cannot.
template <auto kKernel>
inline void require_dynamic_smem(int64_t bytes, int device, const char* op) {
  const int64_t limit = dynamic_smem_limit<kKernel>(device);
  TORCH_CHECK(bytes <= limit, op, ": the CUDA kernel needs ", bytes, " bytes of dynamic shared memory per block, "
              "but CUDA device ", device, " allows at most ", limit, " for it");
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

inline Strides4 strides_of(const at::Tensor& x) { return {x.stride(0), x.stride(1), x.stride(2), x.stride(3)}; }

// Geometry of x for the pooling kernels (channel_pool, spatial_pool): `channels` planes of height x width per
// sample, element strides `stride`.
struct PoolShape {
  int channels, height, width;
  gpu::Strides4 stride;
};


// Position (n, c, h, w) of the linear indices first, first + step, first +
// 2 step, ... of a row-major (N, C, H, W) index space (N unbounded), advanced
// without a division per step. The grid-, block- and warp-stride loops of the
// kernels use it to address strided tensors and to split work indices.
// Why: a 64-bit division or modulo is a call of a division subroutine (tens of
// instructions per element; in the tiled conv kernel ptxas also spilled
// registers around it). These walks divide only 32-bit values, once per loop:
// first and step are thread, block or grid indices and grid strides (below
// 2^31 for every launch here: see grid_size).
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
