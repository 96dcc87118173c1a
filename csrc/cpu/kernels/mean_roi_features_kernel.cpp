// CPU kernel of meanspot_fused::mean_roi_features, one instruction-set level
// (simd.h); the op's host side is csrc/cpu/mean_roi_features_cpu.cpp, the math
// csrc/features_math.h.
//
// Per pair, one pass over the flow fills u, v, os planes in the thread's
// scratch (3 x H x W floats, cache-resident for 128 x 128) and their
// per-channel range; the 2 x 21 x 42 output pixels then read their resize
// taps from those planes.
#include "../../features_math.h"
#include "level.h"

namespace meanspot {
namespace cpu {
namespace CPU_CAPABILITY {
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

}  // namespace

void mean_roi_features_kernel(const RoiFeatureArgs& a, int64_t begin, int64_t end) {
  const int64_t plane = int64_t(a.height) * a.width;
  constexpr int64_t kOutPlane = int64_t(features::kOutSize) * features::kOutSize;
  const int width = a.width;
  Buffer<float> planes(features::kChannels * plane);
  const float* pl = planes.get();
  const auto sample = [pl, plane, width](int y, int x) {
    const int64_t j = int64_t(y) * width + x;
    return Maps{{pl[j], pl[plane + j], pl[2 * plane + j]}};
  };
  for (int64_t i = begin; i < end; ++i) {
    const FlowView view{a.flow + i * a.stride_n, a.stride_c, a.stride_h, a.stride_w, a.height, a.width};
    const Normaliser norm(fill_planes(view, planes.get()));
    const int64_t* box = a.boxes + i * features::kRois * features::kBoxFields;
    float* o = a.out + i * features::kChannels * kOutPlane;
    for (int oy = 0; oy < features::kOutSize; ++oy) {
      for (int ox = 0; ox < features::kOutSize; ++ox) {
        const Maps m = features::roi_pixel(sample, norm, box, oy, ox);
        for (int k = 0; k < features::kChannels; ++k) o[k * kOutPlane + oy * features::kOutSize + ox] = m.c[k];
      }
    }
  }
}

}  // namespace CPU_CAPABILITY
}  // namespace cpu
}  // namespace meanspot
