// Host helpers shared by the CUDA entry points of meanspot_fused: the dtype
// check and dispatch, cached device attributes and the device limits the
// launch plans of kernels/ take, the once-per-kernel opt-in to more than 48 KB
// of dynamic shared memory, and strided views of the activations (the entry
// points never copy their inputs). The device helpers and the launch
// arithmetic live in kernels/common.cuh (no torch include, shared with the
// SIMT emulator).
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

#include "kernels/common.cuh"

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

// What the launch plans of kernels/ need to know of `device`: its SMs, and
// 64 blocks per SM as the most a grid-stride launch uses (enough to fill the
// device many times over).
inline DeviceLimits limits(int device) {
  const int sms = sm_count(device);
  return {sms, 64 * int64_t(sms)};
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

inline Strides4 strides_of(const at::Tensor& x) { return {x.stride(0), x.stride(1), x.stride(2), x.stride(3)}; }

}  // namespace gpu
}  // namespace meanspot
