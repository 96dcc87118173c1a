// CPU entry of meanspot_fused::conv_block (float32, float64): checks, output,
// threads; the kernel (kernels/network_kernel.cpp) runs a range of samples,
// at the instruction-set level dispatch.cpp chose.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include "../ops/ops.h"
#include "dispatch.h"

namespace meanspot {
namespace {

at::Tensor conv_block_cpu(const at::Tensor& x_in, const at::Tensor& weight_in, const at::Tensor& bias_in,
                          const c10::optional<at::Tensor>& scale_in, const c10::optional<at::Tensor>& shift_in,
                          int64_t pool) {
  check_conv_block_args(x_in, weight_in, bias_in, scale_in, shift_in, pool);
  check_cpu_float_input(x_in, "meanspot_fused.conv_block");
  // Kernels index dense (C, H, W) planes: any input layout is made contiguous here.
  const at::Tensor x = x_in.contiguous(), weight = weight_in.contiguous(), bias = bias_in.contiguous();
  const at::Tensor scale = scale_in.has_value() ? scale_in->contiguous() : at::Tensor();
  const at::Tensor shift = shift_in.has_value() ? shift_in->contiguous() : at::Tensor();
  at::Tensor out = at::empty({x.size(0), weight.size(0), x.size(2) / pool, x.size(3) / pool}, x.options());
  if (x.size(0) == 0) return out;
  const cpu::CpuKernels& k = cpu::kernels();
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "meanspot_fused.conv_block", [&] {
    const cpu::ConvBlockArgs<scalar_t> a{x.data_ptr<scalar_t>(),
                                         weight.data_ptr<scalar_t>(),
                                         bias.data_ptr<scalar_t>(),
                                         scale.defined() ? scale.data_ptr<scalar_t>() : nullptr,
                                         shift.defined() ? shift.data_ptr<scalar_t>() : nullptr,
                                         out.data_ptr<scalar_t>(),
                                         int(x.size(1)),
                                         int(x.size(2)),
                                         int(x.size(3)),
                                         int(weight.size(0)),
                                         int(weight.size(2)),
                                         int(pool)};
    const auto kernel = k.net<scalar_t>().conv_block;
    // Grain 1: one sample is about a million FLOPs, plenty to amortize a task.
    at::parallel_for(0, x.size(0), 1, [&](int64_t begin, int64_t end) { kernel(a, begin, end); });
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(meanspot_fused, CPU, m) {
  m.impl("conv_block", &conv_block_cpu);
}

}  // namespace meanspot
