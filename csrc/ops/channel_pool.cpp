// Schema of meanspot_fused::channel_pool (checks: check_pool_input in checks.cpp).
//
// channel_pool(x) -> (mean, max): mean and max over H x W of each (n, c)
//   plane, in one read of x; both outputs (N, C).
#include <torch/library.h>

namespace meanspot {

TORCH_LIBRARY_FRAGMENT(meanspot_fused, m) {
  m.def("channel_pool(Tensor x) -> (Tensor, Tensor)");
}

}  // namespace meanspot
