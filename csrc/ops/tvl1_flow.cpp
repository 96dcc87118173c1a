// Schema and argument checks of meanspot_fused::tvl1_flow.
//
// tvl1_flow(prev, next, tau, lambda_, theta, scales, warps, epsilon,
//           inner_iterations, outer_iterations, scale_step, median_filtering,
//           remap="opencv4") -> (flow, iterations)
// prev, next: (N, H, W) uint8 or float32 frames (float32 is taken to be in
// [0, 1] and multiplied by 255, as OpenCV does); 16 <= H, W <= 1024.
// flow: (N, 2, H, W) float32, channel 0 the x and channel 1 the y displacement
// of each pixel of prev into next (OpenCV's DualTVL1OpticalFlow::calc).
// iterations: (N, 2) int64 per pair: the inner iterations run over all levels
// and warps, and the same weighted by the level's pixels (the work done).
// remap: "opencv4" (4.0 to 4.13), "opencv4.14" (4.14 on FMA CPUs) or "opencv5",
// the OpenCV whose bicubic cv::remap the warps reproduce bit for bit
// (PIPELINE.md section 3b); "opencv4" by default: MEAN's OpenCV (4.5.1) and
// the features its published weights saw.
#include <torch/library.h>

#include <cmath>

#include "../tvl1_math.h"
#include "ops.h"

namespace meanspot {

tvl1::Params check_tvl1_flow_args(const at::Tensor& prev, const at::Tensor& next, double tau, double lambda,
                                  double theta, int64_t scales, int64_t warps, double epsilon, int64_t inner,
                                  int64_t outer, double scale_step, int64_t median, c10::string_view remap) {
  constexpr const char* op = "meanspot_fused.tvl1_flow";
  TORCH_CHECK(prev.defined() && next.defined(), op, ": prev and next must be defined tensors");
  TORCH_CHECK(prev.dim() == 3, op, ": prev must be a 3-D tensor (N, H, W), got shape ", prev.sizes());
  TORCH_CHECK(next.sizes() == prev.sizes(), op, ": next must have the shape of prev ", prev.sizes(), ", got ",
              next.sizes());
  TORCH_CHECK(prev.scalar_type() == at::kByte || prev.scalar_type() == at::kFloat, op,
              ": prev must be uint8 or float32, got ", prev.scalar_type());
  TORCH_CHECK(next.scalar_type() == prev.scalar_type(), op, ": next must have the dtype of prev (",
              prev.scalar_type(), "), got ", next.scalar_type());
  TORCH_CHECK(next.device() == prev.device(), op, ": next must be on the device of prev (", prev.device(),
              "), got ", next.device());
  const int64_t h = prev.size(1), w = prev.size(2);
  TORCH_CHECK(h >= tvl1::kMinLevelSide && h <= kTvl1MaxSide && w >= tvl1::kMinLevelSide && w <= kTvl1MaxSide, op,
              ": frames must be between ", tvl1::kMinLevelSide, " and ", kTvl1MaxSide,
              " pixels in height and width, got ", h, " x ", w);
  TORCH_CHECK(std::isfinite(tau) && tau > 0, op, ": tau must be a finite number > 0, got ", tau);
  TORCH_CHECK(std::isfinite(lambda) && lambda > 0, op, ": lambda_ must be a finite number > 0, got ", lambda);
  TORCH_CHECK(std::isfinite(theta) && theta > 0, op, ": theta must be a finite number > 0, got ", theta);
  TORCH_CHECK(std::isfinite(epsilon) && epsilon >= 0, op, ": epsilon must be a finite number >= 0, got ", epsilon);
  TORCH_CHECK(scales >= 1 && scales <= tvl1::kMaxLevels, op, ": scales must be in [1, ", tvl1::kMaxLevels,
              "], got ", scales);
  TORCH_CHECK(warps >= 1 && warps <= 1000, op, ": warps must be in [1, 1000], got ", warps);
  TORCH_CHECK(inner >= 1 && inner <= 100000, op, ": inner_iterations must be in [1, 100000], got ", inner);
  TORCH_CHECK(outer >= 1 && outer <= 100000, op, ": outer_iterations must be in [1, 100000], got ", outer);
  TORCH_CHECK(scale_step > 0 && scale_step < 1, op, ": scale_step must be in (0, 1), got ", scale_step);
  TORCH_CHECK(median == 0 || median == 1 || median == 3 || median == 5, op,
              ": median_filtering must be 0 or 1 (off), 3 or 5 (OpenCV's float median sizes), got ", median);
  TORCH_CHECK(remap == "opencv4" || remap == "opencv4.14" || remap == "opencv5", op,
              ": remap must be 'opencv4', 'opencv4.14' or 'opencv5' (the OpenCV whose bicubic remap the flow "
              "reproduces), got '",
              std::string(remap), "'");
  tvl1::Params p;
  p.tau = tau;
  p.lambda = lambda;
  p.theta = theta;
  p.epsilon = epsilon;
  p.scale_step = scale_step;
  p.scales = int(scales);
  p.warps = int(warps);
  p.inner = int(inner);
  p.outer = int(outer);
  p.median = int(median);
  p.remap = remap == "opencv4" ? tvl1::kRemapOpenCV4 : remap == "opencv4.14" ? tvl1::kRemapOpenCV414
                                                                              : tvl1::kRemapOpenCV5;
  return p;
}

TORCH_LIBRARY_FRAGMENT(meanspot_fused, m) {
  m.def(
      "tvl1_flow(Tensor prev, Tensor next, float tau, float lambda_, float theta, int scales, int warps, "
      "float epsilon, int inner_iterations, int outer_iterations, float scale_step, int median_filtering, "
      "str remap=\"opencv4\") -> (Tensor, Tensor)");
}

}  // namespace meanspot
