// Schemas of CBAM's two pooling ops (checks: check_pool_input in checks.cpp).
//
// channel_pool(x) -> (mean, max): mean and max over H x W of each (n, c)
//   plane, in one read of x; both outputs (N, C).
// spatial_pool(x) -> s: mean and max over channels of each pixel, in one read
//   of x; s is (N, 2, H, W) with the mean in channel 0 and the max in
//   channel 1 (the Keras cbam_block order, mean first).
#include <torch/library.h>

namespace meanspot {

TORCH_LIBRARY_FRAGMENT(meanspot_fused, m) {
  m.def("channel_pool(Tensor x) -> (Tensor, Tensor)");
  m.def("spatial_pool(Tensor x) -> Tensor");
}

}  // namespace meanspot
