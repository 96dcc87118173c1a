// Schema and argument checks of meanspot_fused::meanspot_net, the whole
// MEAN-Spot network in one op: three branches (conv + ReLU + BN [+ CBAM] +
// pool), concatenation, each head's conv + ReLU [+ CBAM] + pool + Dense, and
// the recog softmax. Only u, v, os are read and the outputs written; every
// intermediate stays in per-thread scratch (CPU) or on chip. Parameter
// layout: csrc/net_layout.h.
#include <torch/library.h>

#include "../net_layout.h"
#include "ops.h"

namespace meanspot {

NetConfig parse_net_config(at::IntArrayRef config) {
  constexpr const char* op = "meanspot_fused.meanspot_net";
  TORCH_CHECK(config.size() == NetConfig::kConfigLen, op, ": config must have ", NetConfig::kConfigLen,
              " entries, got ", config.size());
  for (int i = 0; i < 4; ++i)
    TORCH_CHECK(config[i] == 0 || config[i] == 1, op, ": config[", i, "] must be 0 or 1, got ", config[i]);
  NetConfig c{};
  c.cbam_branches = config[0];
  c.cbam_merged = config[1];
  c.has_spot = config[2];
  c.has_recog = config[3];
  TORCH_CHECK(c.has_spot || c.has_recog, op, ": config must enable at least one head (spot or recog)");
  TORCH_CHECK(config[4] >= 1 && config[4] <= 4096, op, ": recog_classes (config[4]) must be in [1, 4096], got ",
              config[4]);
  c.recog_classes = int(config[4]);
  for (int b = 0; b < 3; ++b) {
    TORCH_CHECK(config[5 + b] >= 1 && config[5 + b] <= NetConfig::branch_filters(b), op, ": hidden width config[",
                5 + b, "] must be in [1, ", NetConfig::branch_filters(b), "], got ", config[5 + b]);
    c.hidden[b] = int(config[5 + b]);
  }
  TORCH_CHECK(config[8] >= 1 && config[8] <= NetConfig::kHeadFilters, op,
              ": head hidden width config[8] must be in [1, 8], got ", config[8]);
  c.hidden_head = int(config[8]);
  TORCH_CHECK(config[9] >= 1 && config[9] % 2 == 1 && config[9] <= 41, op,
              ": spatial_kernel config[9] must be odd and in [1, 41], got ", config[9]);
  c.spatial_kernel = int(config[9]);
  return c;
}

NetConfig check_meanspot_net_args(const at::Tensor& u, const at::Tensor& v, const at::Tensor& os,
                                  const at::Tensor& params, at::IntArrayRef config) {
  constexpr const char* op = "meanspot_fused.meanspot_net";
  const NetConfig c = parse_net_config(config);
  const char* names[3] = {"u", "v", "os"};
  const at::Tensor* inputs[3] = {&u, &v, &os};
  for (int i = 0; i < 3; ++i) {
    const at::Tensor& t = *inputs[i];
    TORCH_CHECK(t.defined(), op, ": ", names[i], " must be a defined tensor");
    TORCH_CHECK(t.dim() == 4 && t.size(1) == 1 && t.size(2) == NetConfig::kInput && t.size(3) == NetConfig::kInput,
                op, ": ", names[i], " must have shape (N, 1, 42, 42), got ", t.sizes());
    TORCH_CHECK(t.size(0) == u.size(0), op, ": ", names[i], " has batch size ", t.size(0), " but u has ", u.size(0));
  }
  check_same_dtype_device(u, op, {{"v", &v}, {"os", &os}, {"params", &params}});
  TORCH_CHECK(params.dim() == 1, op, ": params must be a 1-D packed tensor, got shape ", params.sizes());
  const int64_t expected = layout_net(c).total;
  TORCH_CHECK(params.numel() == expected, op, ": params must have ", expected,
              " elements for this config (see csrc/net_layout.h), got ", params.numel());
  return c;
}

TORCH_LIBRARY_FRAGMENT(meanspot_fused, m) {
  m.def("meanspot_net(Tensor u, Tensor v, Tensor os, Tensor params, int[] config) -> Tensor");
}

}  // namespace meanspot
