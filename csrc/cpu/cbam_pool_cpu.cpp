// CPU kernels of meanspot_fused::channel_pool and ::spatial_pool (float32, float64).
// channel_pool: parallel over the N * C planes, one read of each plane.
// spatial_pool: parallel over the batch, one read of each sample.
#include <ATen/Dispatch.h>
#include <ATen/ops/empty.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <tuple>

#include "../ops/ops.h"
#include "sample_kernels.h"

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
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), op, [&] {
    const scalar_t* xp = x.data_ptr<scalar_t>();
    scalar_t* mp = mean.data_ptr<scalar_t>();
    scalar_t* xq = max.data_ptr<scalar_t>();
    at::parallel_for(0, planes, 16, [&](int64_t begin, int64_t end) {
      cpu::channel_pool(xp + begin * plane, int(end - begin), plane, mp + begin, xq + begin);
    });
  });
  return {mean, max};
}

at::Tensor spatial_pool_cpu(const at::Tensor& x_in) {
  constexpr const char* op = "meanspot_fused.spatial_pool";
  check_pool_input(x_in, op);
  check_cpu_float(x_in, op);
  const at::Tensor x = x_in.contiguous();
  const int64_t n = x.size(0);
  const int c = x.size(1), height = x.size(2), width = x.size(3);
  at::Tensor out = at::empty({n, 2, height, width}, x.options());
  if (n == 0) return out;
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), op, [&] {
    const scalar_t* xp = x.data_ptr<scalar_t>();
    scalar_t* op_ = out.data_ptr<scalar_t>();
    const int64_t plane = int64_t(height) * width;
    at::parallel_for(0, n, 1, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        scalar_t* o = op_ + i * 2 * plane;
        cpu::spatial_pool<scalar_t>(xp + i * c * plane, c, plane, nullptr, o, o + plane);
      }
    });
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(meanspot_fused, CPU, m) {
  m.impl("channel_pool", &channel_pool_cpu);
  m.impl("spatial_pool", &spatial_pool_cpu);
}

}  // namespace meanspot
