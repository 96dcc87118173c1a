// CPU entry of meanspot_fused::spatial_pool (float32, float64): parallel over
// the batch, one read of each sample; kernel in kernels/network_kernel.cpp.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include "../ops/ops.h"
#include "dispatch.h"

namespace meanspot {
namespace {

at::Tensor spatial_pool_cpu(const at::Tensor& x_in) {
  constexpr const char* op = "meanspot_fused.spatial_pool";
  check_pool_input(x_in, op);
  check_cpu_float_input(x_in, op);
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
  m.impl("spatial_pool", &spatial_pool_cpu);
}

}  // namespace meanspot
