// Argument checks of meanspot_fused::mean_roi_features, shared by its CPU and
// CUDA entry points so that both reject bad input with the same message.
#pragma once

#include <ATen/core/Tensor.h>

namespace meanspot {

// flow: (N, 2, H, W) float32 with H, W >= 1; boxes: (N, 2, 4) int64 on
// flow's device. Box values are checked by check_mean_roi_boxes (host data).
void check_mean_roi_features_args(const at::Tensor& flow, const at::Tensor& boxes);

// Every box of `boxes` (contiguous (N, 2, 4) int64 in host memory) satisfies
// 0 <= top < bottom <= height and 0 <= left < right <= width.
void check_mean_roi_boxes(const int64_t* boxes, int64_t n, int64_t height, int64_t width);

}  // namespace meanspot
