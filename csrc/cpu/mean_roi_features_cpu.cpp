// CPU entry of meanspot_fused::mean_roi_features (float32; contract in
// csrc/ops/mean_roi_features.cpp): checks, output, threads over pairs; the
// kernel is kernels/mean_roi_features_kernel.cpp.
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include "../features_math.h"
#include "../ops/mean_roi_features.h"
#include "dispatch.h"

namespace meanspot {
namespace {

at::Tensor mean_roi_features_cpu(const at::Tensor& flow, const at::Tensor& boxes_in) {
  check_mean_roi_features_args(flow, boxes_in);
  TORCH_CHECK(flow.device().is_cpu(), "meanspot_fused.mean_roi_features: flow must be a CPU tensor here, got ",
              flow.device());
  const at::Tensor boxes = boxes_in.contiguous();
  const int64_t n = flow.size(0);
  const int height = int(flow.size(2)), width = int(flow.size(3));
  check_mean_roi_boxes(boxes.const_data_ptr<int64_t>(), n, height, width);
  at::Tensor out = at::empty({n, features::kChannels, features::kOutSize, features::kOutSize}, flow.options());
  if (n == 0) return out;
  const cpu::RoiFeatureArgs a{flow.const_data_ptr<float>(), flow.stride(0), flow.stride(1), flow.stride(2),
                              flow.stride(3), boxes.const_data_ptr<int64_t>(), out.mutable_data_ptr<float>(),
                              height, width};
  const auto kernel = cpu::kernels().mean_roi_features;
  at::parallel_for(0, n, 1, [&](int64_t begin, int64_t end) { kernel(a, begin, end); });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(meanspot_fused, CPU, m) {
  m.impl("mean_roi_features", &mean_roi_features_cpu);
}

}  // namespace meanspot
