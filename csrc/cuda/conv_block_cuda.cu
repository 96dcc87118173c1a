// CUDA entry of meanspot_fused::conv_block: checks, allocation, stream and
// launch. The kernels, their work split and launch plan are in
// kernels/conv_block.cuh (torch-free, also run by the SIMT emulator).
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <limits>

#include "../ops/ops.h"
#include "cuda_utils.cuh"
#include "kernels/conv_block.cuh"

namespace meanspot {
namespace {

template <typename scalar_t>
void conv_block_cuda_impl(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias,
                          const scalar_t* scale, const scalar_t* shift, int pool, at::Tensor& out) {
  const gpu::conv_block::ConvShape s{x.size(0),        int(x.size(1)),      int(x.size(2)),
                    int(x.size(3)),   int(weight.size(0)), int(weight.size(2)),
                    pool,             int(x.size(2)) / pool, int(x.size(3)) / pool,
                    gpu::strides_of(x)};
  const int device = x.get_device();
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const scalar_t* xp = x.const_data_ptr<scalar_t>();
  const scalar_t* wp = weight.const_data_ptr<scalar_t>();
  const scalar_t* bp = bias.const_data_ptr<scalar_t>();
  scalar_t* op = out.mutable_data_ptr<scalar_t>();
  const gpu::conv_block::Plan p = gpu::conv_block::plan<acc_t<scalar_t>>(s, gpu::limits(device));
  if (p.cob == 0) {
    gpu::conv_block::conv_block_global_kernel<scalar_t>
        <<<p.grid, p.threads, 0, stream>>>(xp, wp, bp, scale, shift, s, op);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    return;
  }
  TORCH_CHECK(p.per_sample <= std::numeric_limits<int>::max(), "meanspot_fused.conv_block: ", p.per_sample,
              " channel blocks x tiles per sample exceed the CUDA grid");
  gpu::conv_block::with_cob(p.cob, [&](auto cob) {
    gpu::conv_block::conv_block_tiled_kernel<scalar_t, decltype(cob)::value>
        <<<p.grid, p.threads, p.smem, stream>>>(xp, wp, bp, scale, shift, s, p.tile_rows, p.tiles, op);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

at::Tensor conv_block_cuda(const at::Tensor& x_in, const at::Tensor& weight_in, const at::Tensor& bias_in,
                           const c10::optional<at::Tensor>& scale_in, const c10::optional<at::Tensor>& shift_in,
                           int64_t pool) {
  constexpr const char* op = "meanspot_fused.conv_block";
  check_conv_block_args(x_in, weight_in, bias_in, scale_in, shift_in, pool);
  gpu::check_cuda_input(x_in, op);
  c10::cuda::CUDAGuard device_guard(x_in.device());
  // x is read through its strides (no copy of expanded or strided batches); the
  // kernels index the small parameter tensors as dense arrays.
  const at::Tensor& x = x_in;
  const at::Tensor weight = weight_in.contiguous(), bias = bias_in.contiguous();
  const at::Tensor scale = scale_in.has_value() ? scale_in->contiguous() : at::Tensor();
  const at::Tensor shift = shift_in.has_value() ? shift_in->contiguous() : at::Tensor();
  at::Tensor out = at::empty({x.size(0), weight.size(0), x.size(2) / pool, x.size(3) / pool}, x.options());
  if (out.numel() == 0) return out;
  MSF_DISPATCH_CUDA_TYPES(x.scalar_type(), op, [&] {
    conv_block_cuda_impl<scalar_t>(x, weight, bias, scale.defined() ? scale.const_data_ptr<scalar_t>() : nullptr,
                                   shift.defined() ? shift.const_data_ptr<scalar_t>() : nullptr, int(pool), out);
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(meanspot_fused, CUDA, m) {
  m.impl("conv_block", &conv_block_cuda);
}

}  // namespace meanspot
