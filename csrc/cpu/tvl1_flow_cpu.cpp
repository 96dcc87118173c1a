// CPU entry of meanspot_fused::tvl1_flow (contract in csrc/ops/tvl1_flow.cpp):
// checks, outputs, threads over frame pairs (a thread solves whole pairs);
// the solver is kernels/tvl1_flow_kernel.cpp.
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/isfinite.h>
#include <torch/library.h>

#include <tuple>

#include "../ops/ops.h"
#include "../tvl1_math.h"
#include "dispatch.h"

namespace meanspot {
namespace {

std::tuple<at::Tensor, at::Tensor> tvl1_flow_cpu(const at::Tensor& prev, const at::Tensor& next, double tau,
                                                 double lambda, double theta, int64_t scales, int64_t warps,
                                                 double epsilon, int64_t inner, int64_t outer, double scale_step,
                                                 int64_t median, c10::string_view remap) {
  const tvl1::Params p = check_tvl1_flow_args(prev, next, tau, lambda, theta, scales, warps, epsilon, inner, outer,
                                              scale_step, median, remap);
  constexpr const char* op = "meanspot_fused.tvl1_flow";
  TORCH_CHECK(prev.device().is_cpu(), op, ": prev must be a CPU tensor here, got ", prev.device());
  if (prev.scalar_type() == at::kFloat && prev.numel() > 0) {
    TORCH_CHECK(at::isfinite(prev).all().item<bool>() && at::isfinite(next).all().item<bool>(), op,
                ": prev and next must hold finite values (NaN or inf found)");
  }
  // The kernel shares the row and column strides of both frames (the batch
  // strides may differ, e.g. an expanded prev): align other layouts first.
  if (prev.stride(1) != next.stride(1) || prev.stride(2) != next.stride(2)) {
    const at::Tensor a = prev.contiguous(), b = next.contiguous();
    return tvl1_flow_cpu(a, b, tau, lambda, theta, scales, warps, epsilon, inner, outer, scale_step, median, remap);
  }
  const int64_t n = prev.size(0);
  const int h = int(prev.size(1)), w = int(prev.size(2));
  at::Tensor flow = at::empty({n, 2, h, w}, prev.options().dtype(at::kFloat));
  at::Tensor counts = at::empty({n, 2}, prev.options().dtype(at::kLong));
  if (n == 0) return {flow, counts};
  // Frames are read through their strides (an expanded batch costs nothing).
  const cpu::Tvl1Args a{p,
                        tvl1::make_pyramid(h, w, p),
                        prev.data_ptr(),
                        next.data_ptr(),
                        prev.stride(0),
                        next.stride(0),
                        prev.stride(1),
                        prev.stride(2),
                        h,
                        w,
                        flow.data_ptr<float>(),
                        counts.data_ptr<int64_t>()};
  const cpu::CpuKernels& k = cpu::kernels();
  const auto kernel = prev.scalar_type() == at::kByte ? k.tvl1_flow_u8 : k.tvl1_flow_f32;
  // Grain 1: a pair is tens of MFLOP.
  at::parallel_for(0, n, 1, [&](int64_t begin, int64_t end) { kernel(a, begin, end); });
  return {flow, counts};
}

}  // namespace

TORCH_LIBRARY_IMPL(meanspot_fused, CPU, m) {
  m.impl("tvl1_flow", &tvl1_flow_cpu);
}

}  // namespace meanspot
