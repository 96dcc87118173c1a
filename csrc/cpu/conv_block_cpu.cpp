// CPU kernel of meanspot_fused::conv_block (float32, float64).
// Work split: at::parallel_for over the batch; each thread keeps one padded
// input sample and one (Cout, H, W) conv plane stack as scratch, so a sample
// goes from x to the pooled output without an intermediate tensor.
#include <ATen/Dispatch.h>
#include <ATen/ops/empty.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <vector>

#include "../ops/ops.h"
#include "sample_kernels.h"

namespace meanspot {
namespace {

template <typename T>
void conv_block_cpu_impl(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias, const T* scale,
                         const T* shift, int pool, at::Tensor& out) {
  const int64_t n = x.size(0);
  const int cin = x.size(1), height = x.size(2), width = x.size(3);
  const int cout = weight.size(0), kernel = weight.size(2);
  const int64_t in_stride = int64_t(cin) * height * width;
  const int64_t out_stride = int64_t(cout) * (height / pool) * (width / pool);
  const T* xp = x.data_ptr<T>();
  const T* wp = weight.data_ptr<T>();
  const T* bp = bias.data_ptr<T>();
  T* op = out.data_ptr<T>();
  // Grain 1: one sample is about a million FLOPs, plenty to amortize a task.
  at::parallel_for(0, n, 1, [&](int64_t begin, int64_t end) {
    std::vector<T> padded(cpu::padded_size<T>(cin, height, width, kernel));
    std::vector<T> conv(int64_t(cout) * height * width);
    for (int64_t i = begin; i < end; ++i) {
      cpu::pad_planes(xp + i * in_stride, cin, height, width, kernel, padded.data());
      cpu::conv_same(padded.data(), cin, height, width, wp, bp, cout, kernel, conv.data());
      cpu::relu_affine_pool(conv.data(), cout, height, width, scale, shift, pool, op + i * out_stride);
    }
  });
}

at::Tensor conv_block_cpu(const at::Tensor& x_in, const at::Tensor& weight_in, const at::Tensor& bias_in,
                          const c10::optional<at::Tensor>& scale_in, const c10::optional<at::Tensor>& shift_in,
                          int64_t pool) {
  check_conv_block_args(x_in, weight_in, bias_in, scale_in, shift_in, pool);
  TORCH_CHECK(x_in.device().is_cpu(), "meanspot_fused.conv_block: x must be a CPU tensor here, got ",
              x_in.device());
  TORCH_CHECK(x_in.scalar_type() == at::kFloat || x_in.scalar_type() == at::kDouble,
              "meanspot_fused.conv_block: on CPU x must be float32 or float64, got ", x_in.scalar_type());
  // Kernels index dense (C, H, W) planes: any input layout is made contiguous here.
  const at::Tensor x = x_in.contiguous(), weight = weight_in.contiguous(), bias = bias_in.contiguous();
  const at::Tensor scale = scale_in.has_value() ? scale_in->contiguous() : at::Tensor();
  const at::Tensor shift = shift_in.has_value() ? shift_in->contiguous() : at::Tensor();
  at::Tensor out = at::empty({x.size(0), weight.size(0), x.size(2) / pool, x.size(3) / pool}, x.options());
  if (x.size(0) == 0) return out;
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "meanspot_fused.conv_block", [&] {
    conv_block_cpu_impl<scalar_t>(x, weight, bias, scale.defined() ? scale.data_ptr<scalar_t>() : nullptr,
                                  shift.defined() ? shift.data_ptr<scalar_t>() : nullptr, int(pool), out);
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(meanspot_fused, CPU, m) {
  m.impl("conv_block", &conv_block_cpu);
}

}  // namespace meanspot
