// Shared argument-check helpers (see ops.h).
#include "ops.h"

#include <c10/util/Exception.h>

namespace meanspot {

void check_same_dtype_device(const at::Tensor& x, const char* op,
                             std::initializer_list<std::pair<const char*, const at::Tensor*>> params) {
  for (const auto& p : params) {
    const at::Tensor& t = *p.second;
    TORCH_CHECK(t.defined(), op, ": ", p.first, " must be a defined tensor");
    TORCH_CHECK(t.scalar_type() == x.scalar_type(), op, ": ", p.first, " must have the dtype of x (",
                x.scalar_type(), "), got ", t.scalar_type());
    TORCH_CHECK(t.device() == x.device(), op, ": ", p.first, " must be on the device of x (", x.device(),
                "), got ", t.device());
  }
}

void check_pool_input(const at::Tensor& x, const char* op) {
  TORCH_CHECK(x.defined(), op, ": x must be a defined tensor");
  TORCH_CHECK(x.dim() == 4, op, ": x must be a 4-D tensor (N, C, H, W), got ", x.dim(), " dimensions");
  TORCH_CHECK(x.size(1) >= 1 && x.size(2) >= 1 && x.size(3) >= 1, op,
              ": x must have C, H, W >= 1, got shape ", x.sizes());
  TORCH_CHECK(at::isFloatingType(x.scalar_type()), op, ": x must be a floating-point tensor, got ",
              x.scalar_type());
}

void check_cpu_float_input(const at::Tensor& x, const char* op) {
  TORCH_CHECK(x.device().is_cpu(), op, ": x must be a CPU tensor here, got ", x.device());
  TORCH_CHECK(x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble, op,
              ": on CPU x must be float32 or float64, got ", x.scalar_type());
}

}  // namespace meanspot
