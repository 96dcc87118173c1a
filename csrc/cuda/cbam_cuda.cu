// CUDA entry of meanspot_fused::cbam: checks, allocation, stream and launch.
// The kernel (made of the CBAM steps of kernels/blocks.cuh), its work split
// and launch plan are in kernels/cbam.cuh (torch-free, also run by the SIMT
// emulator, tests/cuda_emu).
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "../ops/ops.h"
#include "cuda_utils.cuh"
#include "kernels/cbam.cuh"

namespace meanspot {
namespace {

template <typename scalar_t>
void cbam_cuda_impl(const at::Tensor& x, const at::Tensor& w1, const at::Tensor& b1, const at::Tensor& w2,
                    const at::Tensor& b2, const at::Tensor& sw, double spatial_scale, double spatial_shift,
                    int pool, at::Tensor& out) {
  using acc = acc_t<scalar_t>;
  namespace k = gpu::cbam;
  const k::CbamShape s{x.size(0),       int(x.size(1)), int(w1.size(0)), int(x.size(2)), int(x.size(3)),
                       int(sw.size(2)), pool,           gpu::strides_of(x)};
  const k::CbamLayout l = k::make_layout<acc>(s);
  const int device = x.get_device();
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const k::Plan p = k::plan<scalar_t>(s, l, gpu::dynamic_smem_limit<k::cbam_kernel<scalar_t, k::kAllShared>>(device),
                                      gpu::dynamic_smem_limit<k::cbam_kernel<scalar_t, k::kScratchShared>>(device),
                                      gpu::limits(device));
  at::Tensor workspace;
  if (p.workspace > 0) workspace = at::empty({p.workspace}, x.options().dtype(gpu::acc_scalar_type<scalar_t>()));
  const auto launch = [&](auto mode) {
    constexpr int kMode = decltype(mode)::value;
    gpu::require_dynamic_smem<k::cbam_kernel<scalar_t, kMode>>(p.smem, device, "meanspot_fused.cbam");
    k::cbam_kernel<scalar_t, kMode><<<p.blocks, k::kThreads, p.smem, stream>>>(
        x.const_data_ptr<scalar_t>(), w1.const_data_ptr<scalar_t>(), b1.const_data_ptr<scalar_t>(),
        w2.const_data_ptr<scalar_t>(), b2.const_data_ptr<scalar_t>(), sw.const_data_ptr<scalar_t>(),
        acc(spatial_scale), acc(spatial_shift), s, l, workspace.defined() ? workspace.mutable_data_ptr<acc>() : nullptr,
        out.mutable_data_ptr<scalar_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  };
  k::with_mode(p.mode, launch);
}

at::Tensor cbam_cuda(const at::Tensor& x_in, const at::Tensor& mlp_w1_in, const at::Tensor& mlp_b1_in,
                     const at::Tensor& mlp_w2_in, const at::Tensor& mlp_b2_in, const at::Tensor& spatial_weight_in,
                     double spatial_scale, double spatial_shift, int64_t pool) {
  constexpr const char* op = "meanspot_fused.cbam";
  check_cbam_args(x_in, mlp_w1_in, mlp_b1_in, mlp_w2_in, mlp_b2_in, spatial_weight_in, pool);
  gpu::check_cuda_input(x_in, op);
  c10::cuda::CUDAGuard device_guard(x_in.device());
  // x is read through its strides (no copy of expanded or strided batches); the
  // kernel indexes the small parameter tensors as dense arrays.
  const at::Tensor& x = x_in;
  const at::Tensor w1 = mlp_w1_in.contiguous(), b1 = mlp_b1_in.contiguous(), w2 = mlp_w2_in.contiguous(),
                   b2 = mlp_b2_in.contiguous(), sw = spatial_weight_in.contiguous();
  at::Tensor out = at::empty({x.size(0), x.size(1), x.size(2) / pool, x.size(3) / pool}, x.options());
  if (out.numel() == 0) return out;
  MSF_DISPATCH_CUDA_TYPES(x.scalar_type(), op, [&] {
    cbam_cuda_impl<scalar_t>(x, w1, b1, w2, b2, sw, spatial_scale, spatial_shift, int(pool), out);
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(meanspot_fused, CUDA, m) {
  m.impl("cbam", &cbam_cuda);
}

}  // namespace meanspot
