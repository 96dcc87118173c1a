// CUDA entry of meanspot_fused::spatial_pool: checks, allocation, stream and
// launch. The kernel, its work split and launch are in kernels/spatial_pool.cuh
// (torch-free, also run by the SIMT emulator, tests/cuda_emu).
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "../ops/ops.h"
#include "cuda_utils.cuh"
#include "kernels/spatial_pool.cuh"

namespace meanspot {
namespace {

at::Tensor spatial_pool_cuda(const at::Tensor& x_in) {
  constexpr const char* op = "meanspot_fused.spatial_pool";
  check_pool_input(x_in, op);
  gpu::check_cuda_input(x_in, op);
  c10::cuda::CUDAGuard device_guard(x_in.device());
  const at::Tensor& x = x_in;  // read through its strides, never copied
  const int64_t n = x.size(0), plane = x.size(2) * x.size(3);
  const int channels = x.size(1);
  const gpu::PoolShape shape{channels, int(x.size(2)), int(x.size(3)), gpu::strides_of(x)};
  at::Tensor out = at::empty({n, 2, x.size(2), x.size(3)}, x.options());
  if (x.numel() == 0) return out;
  const int device = x.get_device();
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  MSF_DISPATCH_CUDA_TYPES(x.scalar_type(), op, [&] {
    using acc = acc_t<scalar_t>;
    namespace k = gpu::spatial_pool;
    k::spatial_pool_kernel<scalar_t><<<k::grid(n * plane, gpu::limits(device)), k::kThreads, 0, stream>>>(
        x.const_data_ptr<scalar_t>(), shape, n * plane, acc(1) / acc(channels),
        out.mutable_data_ptr<scalar_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(meanspot_fused, CUDA, m) {
  m.impl("spatial_pool", &spatial_pool_cuda);
}

}  // namespace meanspot
