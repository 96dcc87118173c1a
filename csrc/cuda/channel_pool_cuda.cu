// CUDA entry of meanspot_fused::channel_pool: checks, allocation, stream and launch.
// The kernels, their work split and launch plan are in kernels/channel_pool.cuh
// (torch-free, also run by the SIMT emulator, tests/cuda_emu).
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <tuple>

#include "../ops/ops.h"
#include "cuda_utils.cuh"
#include "kernels/channel_pool.cuh"

namespace meanspot {
namespace {

std::tuple<at::Tensor, at::Tensor> channel_pool_cuda(const at::Tensor& x_in) {
  constexpr const char* op = "meanspot_fused.channel_pool";
  check_pool_input(x_in, op);
  gpu::check_cuda_input(x_in, op);
  c10::cuda::CUDAGuard device_guard(x_in.device());
  const at::Tensor& x = x_in;  // read through its strides, never copied
  const int64_t planes = x.size(0) * x.size(1), plane = x.size(2) * x.size(3);
  const gpu::PoolShape shape{int(x.size(1)), int(x.size(2)), int(x.size(3)), gpu::strides_of(x)};
  at::Tensor mean = at::empty({x.size(0), x.size(1)}, x.options());
  at::Tensor max = at::empty({x.size(0), x.size(1)}, x.options());
  if (x.numel() == 0) return {mean, max};
  const int device = x.get_device();
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const gpu::channel_pool::Plan p = gpu::channel_pool::plan(planes, plane, gpu::limits(device));
  MSF_DISPATCH_CUDA_TYPES(x.scalar_type(), op, [&] {
    const scalar_t* xp = x.const_data_ptr<scalar_t>();
    scalar_t* mp = mean.mutable_data_ptr<scalar_t>();
    scalar_t* xq = max.mutable_data_ptr<scalar_t>();
    if (p.block_per_plane) {
      gpu::channel_pool::channel_pool_block_kernel<scalar_t><<<p.grid, p.threads, 0, stream>>>(xp, shape, planes, mp, xq);
    } else {
      gpu::channel_pool::channel_pool_warp_kernel<scalar_t><<<p.grid, p.threads, 0, stream>>>(xp, shape, planes, mp, xq);
    }
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return {mean, max};
}

}  // namespace

TORCH_LIBRARY_IMPL(meanspot_fused, CUDA, m) {
  m.impl("channel_pool", &channel_pool_cuda);
}

}  // namespace meanspot
