// Schema and argument checks of meanspot_fused::conv_block.
//
// conv_block(x, weight, bias, scale, shift, pool) computes, in one pass,
//   y = maxpool_k( scale * relu(conv2d_same(x, weight) + bias) + shift )
// with a stride-1 'same' convolution (odd K, K // 2 zero padding each side)
// and a k x k max pool of stride k (pool == 1: no pooling). scale/shift are
// the BatchNorm that MEAN places after the ReLU; a BatchNorm before the
// activation is folded into weight and bias at fuse time instead.
#include <torch/library.h>

#include "ops.h"

namespace meanspot {

void check_conv_block_args(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias,
                           const c10::optional<at::Tensor>& scale, const c10::optional<at::Tensor>& shift,
                           int64_t pool) {
  constexpr const char* op = "meanspot_fused.conv_block";
  check_pool_input(x, op);
  TORCH_CHECK(weight.dim() == 4, op, ": weight must have shape (Cout, Cin, K, K), got ", weight.sizes());
  TORCH_CHECK(weight.size(1) == x.size(1), op, ": weight must have Cin = ", x.size(1),
              " input channels to match x, got shape ", weight.sizes());
  TORCH_CHECK(weight.size(0) >= 1, op, ": weight must have at least one output channel, got shape ",
              weight.sizes());
  TORCH_CHECK(weight.size(2) == weight.size(3) && weight.size(2) % 2 == 1, op,
              ": weight must have a square odd kernel (K, K) for 'same' padding, got shape ", weight.sizes());
  const int64_t cout = weight.size(0);
  TORCH_CHECK(bias.defined() && bias.dim() == 1 && bias.size(0) == cout, op, ": bias must have shape (",
              cout, "), got ", bias.defined() ? bias.sizes() : at::IntArrayRef{});
  check_same_dtype_device(x, op, {{"weight", &weight}, {"bias", &bias}});
  TORCH_CHECK(scale.has_value() == shift.has_value(), op,
              ": scale and shift must be given together (both or neither)");
  if (scale.has_value()) {
    TORCH_CHECK(scale->dim() == 1 && scale->size(0) == cout, op, ": scale must have shape (", cout, "), got ",
                scale->sizes());
    TORCH_CHECK(shift->dim() == 1 && shift->size(0) == cout, op, ": shift must have shape (", cout, "), got ",
                shift->sizes());
    check_same_dtype_device(x, op, {{"scale", &*scale}, {"shift", &*shift}});
  }
  TORCH_CHECK(pool >= 1, op, ": pool must be >= 1, got ", pool);
  TORCH_CHECK(x.size(2) % pool == 0 && x.size(3) % pool == 0, op, ": pool (", pool,
              ") must divide the height and width of x, got ", x.size(2), " x ", x.size(3));
}

TORCH_LIBRARY_FRAGMENT(meanspot_fused, m) {
  m.def("conv_block(Tensor x, Tensor weight, Tensor bias, Tensor? scale, Tensor? shift, int pool) -> Tensor");
}

}  // namespace meanspot
