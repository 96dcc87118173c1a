// Host and device helpers shared by the CUDA kernels of meanspot_fused.
//
// Host side: the dtype check and dispatch of every CUDA entry point, cached
// device attributes, 1-D grid sizing for grid-stride loops, and the opt-in to
// more than 48 KB of dynamic shared memory. Device side: warp reductions with
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

// Allows `kernel` to be launched with `bytes` of dynamic shared memory (needed
// above 48 KB). Legal during CUDA graph capture: it is not a stream operation.
template <typename Kernel>
inline void allow_dynamic_smem(Kernel kernel, int64_t bytes) {
  if (bytes > kDefaultSmemBytes)
    C10_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(bytes)));
}

// Bytes of `count` elements of T, rounded up to 16 so the next region stays aligned.
template <typename T>
constexpr int64_t smem_bytes(int64_t count) {
  return (count * int64_t(sizeof(T)) + 15) / 16 * 16;
}

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
