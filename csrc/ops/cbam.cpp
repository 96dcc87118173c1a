// Schema and argument checks of meanspot_fused::cbam, the whole CBAM block.
//
// cbam(x, mlp_w1, mlp_b1, mlp_w2, mlp_b2, spatial_weight, spatial_scale,
//      spatial_shift, pool):
//   g_c = sigmoid(MLP(mean_hw x) + MLP(max_hw x)),  MLP(t) = W2 relu(W1 t + b1) + b2
//   y   = x * g_c                                    (per channel)
//   s   = conv2d_same([mean_c y, max_c y], spatial_weight)   (no bias)
//   out = maxpool_k(y * sigmoid(spatial_scale * s + spatial_shift))
// spatial_scale/shift fold a BatchNorm after the spatial conv (official CBAM,
// timm); 1 and 0 for the Keras cbam_block. pool == 1: no pooling.
#include <torch/library.h>

#include "ops.h"

namespace meanspot {

void check_cbam_args(const at::Tensor& x, const at::Tensor& mlp_w1, const at::Tensor& mlp_b1,
                     const at::Tensor& mlp_w2, const at::Tensor& mlp_b2, const at::Tensor& spatial_weight,
                     int64_t pool) {
  constexpr const char* op = "meanspot_fused.cbam";
  check_pool_input(x, op);
  const int64_t c = x.size(1);
  TORCH_CHECK(mlp_w1.dim() == 2 && mlp_w1.size(1) == c && mlp_w1.size(0) >= 1, op,
              ": mlp_w1 must have shape (hidden, ", c, "), got ", mlp_w1.sizes());
  const int64_t hidden = mlp_w1.size(0);
  TORCH_CHECK(mlp_b1.dim() == 1 && mlp_b1.size(0) == hidden, op, ": mlp_b1 must have shape (", hidden,
              "), got ", mlp_b1.sizes());
  TORCH_CHECK(mlp_w2.dim() == 2 && mlp_w2.size(0) == c && mlp_w2.size(1) == hidden, op,
              ": mlp_w2 must have shape (", c, ", ", hidden, "), got ", mlp_w2.sizes());
  TORCH_CHECK(mlp_b2.dim() == 1 && mlp_b2.size(0) == c, op, ": mlp_b2 must have shape (", c, "), got ",
              mlp_b2.sizes());
  TORCH_CHECK(spatial_weight.dim() == 4 && spatial_weight.size(0) == 1 && spatial_weight.size(1) == 2 &&
                  spatial_weight.size(2) == spatial_weight.size(3) && spatial_weight.size(2) % 2 == 1,
              op, ": spatial_weight must have shape (1, 2, K, K) with K odd, got ", spatial_weight.sizes());
  check_same_dtype_device(x, op,
                          {{"mlp_w1", &mlp_w1},
                           {"mlp_b1", &mlp_b1},
                           {"mlp_w2", &mlp_w2},
                           {"mlp_b2", &mlp_b2},
                           {"spatial_weight", &spatial_weight}});
  TORCH_CHECK(pool >= 1, op, ": pool must be >= 1, got ", pool);
  TORCH_CHECK(x.size(2) % pool == 0 && x.size(3) % pool == 0, op, ": pool (", pool,
              ") must divide the height and width of x, got ", x.size(2), " x ", x.size(3));
}

TORCH_LIBRARY_FRAGMENT(meanspot_fused, m) {
  m.def(
      "cbam(Tensor x, Tensor mlp_w1, Tensor mlp_b1, Tensor mlp_w2, Tensor mlp_b2, Tensor spatial_weight, "
      "float spatial_scale, float spatial_shift, int pool) -> Tensor");
}

}  // namespace meanspot
