// CPU entry of meanspot_fused::channel_pool (float32, float64): parallel over
// the N * C planes, one read of each plane; kernel in kernels/network_kernel.cpp.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <tuple>

#include "../ops/ops.h"
#include "dispatch.h"

namespace meanspot {
namespace {

std::tuple<at::Tensor, at::Tensor> channel_pool_cpu(const at::Tensor& x_in) {
  constexpr const char* op = "meanspot_fused.channel_pool";
  check_pool_input(x_in, op);
  check_cpu_float_input(x_in, op);
  const at::Tensor x = x_in.contiguous();
  const int64_t planes = x.size(0) * x.size(1), plane = x.size(2) * x.size(3);
  at::Tensor mean = at::empty({x.size(0), x.size(1)}, x.options());
  at::Tensor max = at::empty({x.size(0), x.size(1)}, x.options());
  if (planes == 0) return {mean, max};
  const cpu::CpuKernels& k = cpu::kernels();
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), op, [&] {
    const cpu::ChannelPoolArgs<scalar_t> a{x.data_ptr<scalar_t>(), mean.data_ptr<scalar_t>(),
                                           max.data_ptr<scalar_t>(), plane};
    const auto kernel = k.net<scalar_t>().channel_pool;
    at::parallel_for(0, planes, 16, [&](int64_t begin, int64_t end) { kernel(a, begin, end); });
  });
  return {mean, max};
}

}  // namespace

TORCH_LIBRARY_IMPL(meanspot_fused, CPU, m) {
  m.impl("channel_pool", &channel_pool_cpu);
}

}  // namespace meanspot
