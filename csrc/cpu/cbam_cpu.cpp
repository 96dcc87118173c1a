// CPU kernel of meanspot_fused::cbam (float32, float64).
// Work split: at::parallel_for over the batch; one sample's whole CBAM block
// (channel pool, MLP, channel gate, spatial pool, 7x7 conv, spatial gate,
// optional max pool) runs in per-thread scratch (see cpu::cbam_sample).
#include <ATen/Dispatch.h>
#include <ATen/ops/empty.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <vector>

#include "../ops/ops.h"
#include "sample_kernels.h"

namespace meanspot {
namespace {

at::Tensor cbam_cpu(const at::Tensor& x_in, const at::Tensor& mlp_w1_in, const at::Tensor& mlp_b1_in,
                    const at::Tensor& mlp_w2_in, const at::Tensor& mlp_b2_in, const at::Tensor& spatial_weight_in,
                    double spatial_scale, double spatial_shift, int64_t pool) {
  constexpr const char* op = "meanspot_fused.cbam";
  check_cbam_args(x_in, mlp_w1_in, mlp_b1_in, mlp_w2_in, mlp_b2_in, spatial_weight_in, pool);
  TORCH_CHECK(x_in.device().is_cpu(), op, ": x must be a CPU tensor here, got ", x_in.device());
  TORCH_CHECK(x_in.scalar_type() == at::kFloat || x_in.scalar_type() == at::kDouble, op,
              ": on CPU x must be float32 or float64, got ", x_in.scalar_type());
  const at::Tensor x = x_in.contiguous(), w1 = mlp_w1_in.contiguous(), b1 = mlp_b1_in.contiguous(),
                   w2 = mlp_w2_in.contiguous(), b2 = mlp_b2_in.contiguous(),
                   sw = spatial_weight_in.contiguous();
  const int64_t n = x.size(0);
  const int c = x.size(1), height = x.size(2), width = x.size(3);
  at::Tensor out = at::empty({n, c, height / pool, width / pool}, x.options());
  if (n == 0) return out;
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), op, [&] {
    cpu::CbamParams<scalar_t> p{w1.data_ptr<scalar_t>(), b1.data_ptr<scalar_t>(), w2.data_ptr<scalar_t>(),
                                b2.data_ptr<scalar_t>(), sw.data_ptr<scalar_t>(), scalar_t(spatial_scale),
                                scalar_t(spatial_shift), int(w1.size(0)), int(sw.size(2))};
    const scalar_t* xp = x.data_ptr<scalar_t>();
    scalar_t* op_ = out.data_ptr<scalar_t>();
    const int64_t in_stride = int64_t(c) * height * width;
    const int64_t out_stride = int64_t(c) * (height / pool) * (width / pool);
    at::parallel_for(0, n, 1, [&](int64_t begin, int64_t end) {
      std::vector<scalar_t> scratch(cpu::cbam_scratch_size<scalar_t>(c, p.hidden, height, width, p.kernel));
      for (int64_t i = begin; i < end; ++i)
        cpu::cbam_sample(xp + i * in_stride, c, height, width, p, int(pool), op_ + i * out_stride, scratch.data());
    });
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(meanspot_fused, CPU, m) {
  m.impl("cbam", &cbam_cpu);
}

}  // namespace meanspot
