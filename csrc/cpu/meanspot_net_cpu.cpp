// CPU entry of meanspot_fused::meanspot_net (float32, float64): the whole
// network in one parallel region. Checks, output and threads here; the
// kernels (kernels/network_kernel.cpp) carry a sample from the three input
// maps to its outputs in per-thread scratch.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <vector>

#include "../net_layout.h"
#include "../ops/ops.h"
#include "dispatch.h"

namespace meanspot {
namespace {

at::Tensor meanspot_net_cpu(const at::Tensor& u, const at::Tensor& v, const at::Tensor& os,
                            const at::Tensor& params_in, at::IntArrayRef config) {
  constexpr const char* op = "meanspot_fused.meanspot_net";
  const NetConfig c = check_meanspot_net_args(u, v, os, params_in, config);
  TORCH_CHECK(u.device().is_cpu(), op, ": u must be a CPU tensor here, got ", u.device());
  TORCH_CHECK(u.scalar_type() == at::kFloat || u.scalar_type() == at::kDouble, op,
              ": on CPU u, v, os must be float32 or float64, got ", u.scalar_type());
  // The inputs are read through their strides (any layout, expanded batches
  // included) instead of copied: .contiguous() of an expanded 262,144-sample
  // batch would allocate 5.5 GB.
  const at::Tensor params = params_in.contiguous();
  const int64_t n = u.size(0);
  at::Tensor out = at::empty({n, c.outputs()}, u.options());
  if (n == 0) return out;
  const cpu::CpuKernels& k = cpu::kernels();
  AT_DISPATCH_FLOATING_TYPES(u.scalar_type(), op, [&] {
    auto batch = [](const at::Tensor& t) {
      return cpu::StridedBatch<scalar_t>{t.data_ptr<scalar_t>(), t.stride(0), t.stride(2), t.stride(3)};
    };
    cpu::NetArgs<scalar_t> a{c,  layout_net(c), params.data_ptr<scalar_t>(), {batch(u), batch(v), batch(os)},
                             out.data_ptr<scalar_t>(), nullptr};
    const cpu::NetKernels<scalar_t>& net = k.net<scalar_t>();
    if (n >= at::get_num_threads()) {
      // Enough samples for every thread: one sample at a time per thread.
      at::parallel_for(0, n, 1, [&](int64_t begin, int64_t end) { net.net_samples(a, begin, end); });
      return;
    }
    // Fewer samples than threads (streaming, batch 1): split each sample into
    // its three branches, then its heads; the concat of each sample is the
    // only intermediate shared between the two regions. Same arithmetic per
    // value as the path above, so results are bitwise identical.
    constexpr int M = NetConfig::kMerged;
    std::vector<scalar_t> merged(n * int64_t(M) * M * M);
    a.merged = merged.data();
    at::parallel_for(0, 3 * n, 1, [&](int64_t begin, int64_t end) { net.net_branches(a, begin, end); });
    at::parallel_for(0, a.offsets.heads * n, 1, [&](int64_t begin, int64_t end) { net.net_heads(a, begin, end); });
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(meanspot_fused, CPU, m) {
  m.impl("meanspot_net", &meanspot_net_cpu);
}

}  // namespace meanspot
