// Argument checks of every meanspot_fused op, shared by the CPU and CUDA
// entry points so that both reject bad input with the same message.
//
// Each check validates ranks, shapes, dtypes and devices of the arguments
// against each other; the device-specific entry points add only the dtype set
// their kernels support.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Optional.h>

namespace meanspot {

// x: (N, Cin, H, W); weight: (Cout, Cin, K, K), K odd; bias, scale, shift: (Cout);
// pool >= 1 divides H and W.
void check_conv_block_args(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias,
                           const c10::optional<at::Tensor>& scale, const c10::optional<at::Tensor>& shift,
                           int64_t pool);

// x: (N, C, H, W) with C, H, W >= 1.
void check_pool_input(const at::Tensor& x, const char* op);

// The CPU entries' own guard: x on the CPU, float32 or float64 (what the CPU kernels take).
void check_cpu_float_input(const at::Tensor& x, const char* op);

// x: (N, C, H, W); mlp_w1: (hidden, C); mlp_b1: (hidden); mlp_w2: (C, hidden);
// mlp_b2: (C); spatial_weight: (1, 2, K, K), K odd; pool >= 1 divides H and W.
void check_cbam_args(const at::Tensor& x, const at::Tensor& mlp_w1, const at::Tensor& mlp_b1,
                     const at::Tensor& mlp_w2, const at::Tensor& mlp_b2, const at::Tensor& spatial_weight,
                     int64_t pool);

// Every tensor in `params` has x's dtype and device; `names` name them in errors.
void check_same_dtype_device(const at::Tensor& x, const char* op,
                             std::initializer_list<std::pair<const char*, const at::Tensor*>> params);

}  // namespace meanspot

#include "../net_layout.h"

namespace meanspot {

// Parses and validates the meanspot_net config (see net_layout.h).
NetConfig parse_net_config(at::IntArrayRef config);

// u, v, os: (N, 1, 42, 42) of one dtype and device; params: 1-D with exactly
// layout_net(config).total elements. Returns the parsed config.
NetConfig check_meanspot_net_args(const at::Tensor& u, const at::Tensor& v, const at::Tensor& os,
                                  const at::Tensor& params, at::IntArrayRef config);

namespace tvl1 {
struct Params;  // tvl1_math.h; declared here so the other ops do not rebuild with it
}

// Largest frame side tvl1_flow accepts.
constexpr int kTvl1MaxSide = 1024;

// prev, next: (N, H, W) uint8 or float32 of one device, 16 <= H, W <= 1024;
// the solver parameters in OpenCV's admissible ranges. Returns them packed.
tvl1::Params check_tvl1_flow_args(const at::Tensor& prev, const at::Tensor& next, double tau, double lambda,
                                  double theta, int64_t scales, int64_t warps, double epsilon, int64_t inner,
                                  int64_t outer, double scale_step, int64_t median, c10::string_view remap);

}  // namespace meanspot
