// Schema of meanspot_fused::spatial_pool (checks: check_pool_input in checks.cpp).
//
// spatial_pool(x) -> s: mean and max over channels of each pixel, in one read
//   of x; s is (N, 2, H, W) with the mean in channel 0 and the max in
//   channel 1 (the Keras cbam_block order, mean first).
#include <torch/library.h>

namespace meanspot {

TORCH_LIBRARY_FRAGMENT(meanspot_fused, m) {
  m.def("spatial_pool(Tensor x) -> Tensor");
}

}  // namespace meanspot
