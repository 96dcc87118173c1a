// CPU entries of meanspot_fused::channel_pool and ::spatial_pool (float32,
// float64); kernels in kernels/network_kernel.cpp.
// channel_pool: parallel over the N * C planes, one read of each plane.
// spatial_pool: parallel over the batch, one read of each sample.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <tuple>

#include "../ops/ops.h"
#include "dispatch.h"

namespace meanspot {
namespace {

void check_cpu_float(const at::Tensor& x, const char* op) {
  TORCH_CHECK(x.device().is_cpu(), op, ": x must be a CPU tensor here, got ", x.device());
  TORCH_CHECK(x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble, op,
              ": on CPU x must be float32 or float64, got ", x.scalar_type());
}

std::tuple<at::Tensor, at::Tensor> channel_pool_cpu(const at::Tensor& x_in) {
  constexpr const char* op = "meanspot_fused.channel_pool";
  check_pool_input(x_in, op);
  check_cpu_float(x_in, op);
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

at::Tensor spatial_pool_cpu(const at::Tensor& x_in) {
  constexpr const char* op = "meanspot_fused.spatial_pool";
  check_pool_input(x_in, op);
  check_cpu_float(x_in, op);
  const at::Tensor x = x_in.contiguous();
  const int64_t n = x.size(0);
  at::Tensor out = at::empty({n, 2, x.size(2), x.size(3)}, x.options());
  if (n == 0) return out;
  const cpu::CpuKernels& k = cpu::kernels();
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), op, [&] {
    const cpu::SpatialPoolArgs<scalar_t> a{x.data_ptr<scalar_t>(), out.data_ptr<scalar_t>(), int(x.size(1)),
                                           x.size(2) * x.size(3)};
    const auto kernel = k.net<scalar_t>().spatial_pool;
    at::parallel_for(0, n, 1, [&](int64_t begin, int64_t end) { kernel(a, begin, end); });
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(meanspot_fused, CPU, m) {
  m.impl("channel_pool", &channel_pool_cpu);
  m.impl("spatial_pool", &spatial_pool_cpu);
}

}  // namespace meanspot
