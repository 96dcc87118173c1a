// Schema and argument checks of meanspot_fused::mean_roi_features.
//
// mean_roi_features(flow, boxes) -> features: MEAN's features of each pair
// after the TV-L1 flow, in one read of the flow and one write of the output.
//   flow:     (N, 2, H, W) float32, channel 0 the x and channel 1 the y
//             displacement; any strides.
//   boxes:    (N, 2, 4) int64 on the CPU or on flow's device, per pair the
//             eyes then the mouth ROI as [top, bottom, left, right) in pixels
//             of the map (see meanspot_fused.features.mean.mean_rois).
//   features: (N, 3, 42, 42) float32, channels (u, v, os) min-max normalised
//             over the whole map; rows 0-20 the eyes ROI, 21-41 the mouth ROI,
//             each resized to 21 x 42 as cv2.resize INTER_LINEAR does.
// The math is csrc/features_math.h. A box outside the map or empty is an
// error naming it (check_mean_roi_boxes) on both devices, checked on the host
// before any work: for a CUDA flow, CPU boxes are checked and then copied
// from pinned memory without waiting for the device (what the feature stage
// passes: no synchronisation per batch); boxes on the device are read back
// first (one synchronisation), except while a CUDA graph is being captured,
// when no read back is allowed and the kernel writes NaN to every feature of
// a pair with such a box instead.
#include "mean_roi_features.h"

#include <c10/util/Exception.h>
#include <torch/library.h>

#include "../features_math.h"

namespace meanspot {
namespace {
constexpr int64_t kMaxSide = int64_t(1) << 20;
}  // namespace

void check_mean_roi_features_args(const at::Tensor& flow, const at::Tensor& boxes) {
  constexpr const char* op = "meanspot_fused.mean_roi_features";
  TORCH_CHECK(flow.defined(), op, ": flow must be a defined tensor");
  TORCH_CHECK(boxes.defined(), op, ": boxes must be a defined tensor");
  TORCH_CHECK(flow.dim() == 4 && flow.size(1) == 2, op, ": flow must have shape (N, 2, H, W), got ", flow.sizes());
  TORCH_CHECK(flow.size(2) >= 1 && flow.size(3) >= 1, op, ": flow must have H, W >= 1, got shape ", flow.sizes());
  // Resize coordinates are int32 products like 83 * W (features_math.h).
  TORCH_CHECK(flow.size(2) <= kMaxSide && flow.size(3) <= kMaxSide, op, ": flow's H and W must be at most ",
              kMaxSide, ", got shape ", flow.sizes());
  TORCH_CHECK(flow.scalar_type() == at::kFloat, op, ": flow must be float32, got ", flow.scalar_type());
  TORCH_CHECK(boxes.dim() == 3 && boxes.size(0) == flow.size(0) && boxes.size(1) == features::kRois &&
                  boxes.size(2) == features::kBoxFields,
              op, ": boxes must have shape (N, 2, 4) with N = ", flow.size(0), " (flow's batch), got ", boxes.sizes());
  TORCH_CHECK(boxes.scalar_type() == at::kLong, op, ": boxes must be int64, got ", boxes.scalar_type());
  // CPU boxes are checked on the host without touching the device (the CUDA op copies them without waiting);
  // boxes on flow's device cost the CUDA op one read back (mean_roi_features_cuda.cu).
  TORCH_CHECK(boxes.device() == flow.device() || boxes.is_cpu(), op, ": boxes must be on flow's device (",
              flow.device(), ") or on the CPU, got ", boxes.device());
}

void check_mean_roi_boxes(const int64_t* boxes, int64_t n, int64_t height, int64_t width) {
  static const char* const kRoiNames[features::kRois] = {"eyes", "mouth"};
  for (int64_t i = 0; i < n; ++i) {
    for (int r = 0; r < features::kRois; ++r) {
      const int64_t* b = boxes + (i * features::kRois + r) * features::kBoxFields;
      TORCH_CHECK(features::box_valid(b, int(height), int(width)), "meanspot_fused.mean_roi_features: boxes[", i,
                  ", ", r, "] (", kRoiNames[r], ") = [top ", b[0], ", bottom ", b[1], ", left ", b[2], ", right ",
                  b[3], "] must satisfy 0 <= top < bottom <= ", height, " and 0 <= left < right <= ", width,
                  " (a non-empty box inside the flow)");
    }
  }
}

TORCH_LIBRARY_FRAGMENT(meanspot_fused, m) {
  m.def("mean_roi_features(Tensor flow, Tensor boxes) -> Tensor");
}

}  // namespace meanspot
