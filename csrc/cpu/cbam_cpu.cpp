// CPU entry of meanspot_fused::cbam (float32, float64): checks, output,
// threads; the kernel (kernels/network_kernel.cpp) runs one sample's whole
// CBAM block (channel pool, MLP, channel gate, spatial pool, 7x7 conv,
// spatial gate, optional max pool) at a time in per-thread scratch.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include "../ops/ops.h"
#include "dispatch.h"

namespace meanspot {
namespace {

at::Tensor cbam_cpu(const at::Tensor& x_in, const at::Tensor& mlp_w1_in, const at::Tensor& mlp_b1_in,
                    const at::Tensor& mlp_w2_in, const at::Tensor& mlp_b2_in, const at::Tensor& spatial_weight_in,
                    double spatial_scale, double spatial_shift, int64_t pool) {
  constexpr const char* op = "meanspot_fused.cbam";
  check_cbam_args(x_in, mlp_w1_in, mlp_b1_in, mlp_w2_in, mlp_b2_in, spatial_weight_in, pool);
  check_cpu_float_input(x_in, op);
  const at::Tensor x = x_in.contiguous(), w1 = mlp_w1_in.contiguous(), b1 = mlp_b1_in.contiguous(),
                   w2 = mlp_w2_in.contiguous(), b2 = mlp_b2_in.contiguous(),
                   sw = spatial_weight_in.contiguous();
  const int64_t n = x.size(0);
  at::Tensor out = at::empty({n, x.size(1), x.size(2) / pool, x.size(3) / pool}, x.options());
  if (n == 0) return out;
  const cpu::CpuKernels& k = cpu::kernels();
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), op, [&] {
    const cpu::CbamArgs<scalar_t> a{x.data_ptr<scalar_t>(),  w1.data_ptr<scalar_t>(), b1.data_ptr<scalar_t>(),
                                    w2.data_ptr<scalar_t>(), b2.data_ptr<scalar_t>(), sw.data_ptr<scalar_t>(),
                                    out.data_ptr<scalar_t>(), scalar_t(spatial_scale), scalar_t(spatial_shift),
                                    int(x.size(1)),          int(x.size(2)),          int(x.size(3)),
                                    int(w1.size(0)),         int(sw.size(2)),         int(pool)};
    const auto kernel = k.net<scalar_t>().cbam;
    at::parallel_for(0, n, 1, [&](int64_t begin, int64_t end) { kernel(a, begin, end); });
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(meanspot_fused, CPU, m) {
  m.impl("cbam", &cbam_cpu);
}

}  // namespace meanspot
