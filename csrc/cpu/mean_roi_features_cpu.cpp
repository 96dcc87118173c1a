// CPU kernel of meanspot_fused::mean_roi_features (float32; see
// csrc/ops/mean_roi_features.cpp for the contract, csrc/features_math.h for
// the math).
//
// Parallel over pairs (at::parallel_for). Per pair, one pass over the flow
// fills u, v, os planes in a scratch buffer of the worker thread (3 x H x W
// floats, cache-resident for 128 x 128) and their per-channel range; the
// 2 x 21 x 42 output pixels then read their resize taps from those planes.
#include <ATen/ops/empty.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <vector>

#include "../features_math.h"
#include "../ops/mean_roi_features.h"

namespace meanspot {
namespace {

using features::FlowView;
using features::Maps;
using features::Normaliser;
using features::Range;
using features::UV;

// u, v, os planes of one pair, (3, H, W) contiguous in `planes`; returns their range.
Range fill_planes(const FlowView& flow, float* planes) {
  const int64_t plane = int64_t(flow.height) * flow.width;
  float* u = planes;
  float* v = planes + plane;
  float* os = planes + 2 * plane;
  Range range = Range::empty();
  for (int y = 0; y < flow.height; ++y) {
    for (int x = 0; x < flow.width; ++x) {
      const int64_t i = int64_t(y) * flow.width + x;
      const UV c = flow.uv(y, x);
      u[i] = c.u;
      v[i] = c.v;
      // The left and upper neighbours were stored earlier in this loop.
      const UV left = x > 0 ? UV{u[i - 1], v[i - 1]} : c;
      const UV up = y > 0 ? UV{u[i - flow.width], v[i - flow.width]} : c;
      os[i] = features::mean_strain(c, left, up, x > 0, y > 0);
      range.add(Maps{{c.u, c.v, os[i]}});
    }
  }
  return range;
}

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
  const float* fp = flow.const_data_ptr<float>();
  const int64_t* bp = boxes.const_data_ptr<int64_t>();
  float* op = out.mutable_data_ptr<float>();
  const int64_t plane = int64_t(height) * width;
  constexpr int64_t kOutPlane = int64_t(features::kOutSize) * features::kOutSize;
  at::parallel_for(0, n, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> planes(size_t(features::kChannels * plane));
    for (int64_t i = begin; i < end; ++i) {
      const FlowView view{fp + i * flow.stride(0), flow.stride(1), flow.stride(2), flow.stride(3), height, width};
      const Normaliser norm(fill_planes(view, planes.data()));
      const float* pl = planes.data();
      const auto sample = [pl, plane, width](int y, int x) {
        const int64_t j = int64_t(y) * width + x;
        return Maps{{pl[j], pl[plane + j], pl[2 * plane + j]}};
      };
      const int64_t* box = bp + i * features::kRois * features::kBoxFields;
      float* o = op + i * features::kChannels * kOutPlane;
      for (int oy = 0; oy < features::kOutSize; ++oy) {
        for (int ox = 0; ox < features::kOutSize; ++ox) {
          const Maps m = features::roi_pixel(sample, norm, box, oy, ox);
          for (int k = 0; k < features::kChannels; ++k) o[k * kOutPlane + oy * features::kOutSize + ox] = m.c[k];
        }
      }
    }
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(meanspot_fused, CPU, m) {
  m.impl("mean_roi_features", &mean_roi_features_cpu);
}

}  // namespace meanspot
