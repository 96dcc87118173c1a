// The CPU kernel table: what one instruction-set level's copy of the kernels
// offers the host code, as plain function pointers over plain argument structs.
//
// Host files (csrc/cpu/<op>_cpu.cpp: checks, tensors, allocation, threads)
// fill an argument struct and call cpu_kernels().<kernel>(args, begin, end)
// inside at::parallel_for; the kernel runs items [begin, end) (samples, planes
// or frame pairs) on the calling thread. Each level (simd.h) defines one
// table, `meanspot::cpu::<LEVEL>::kernels`, constant-initialized (no code
// runs at load time); dispatch.cpp chooses one when an op first runs.
// No torch include: the level files include this header too.
#pragma once

#include <cstdint>

#include "../net_layout.h"
#include "../tvl1_math.h"

namespace meanspot {
namespace cpu {

// conv_block over samples: out = maxpool_pool(scale * relu(conv_same(x) + bias) + shift).
// x: (N, cin, H, W), out: (N, cout, H / pool, W / pool), both contiguous;
// weight (cout, cin, K, K); scale/shift may be null (1 and 0).
template <typename T>
struct ConvBlockArgs {
  const T *x, *weight, *bias, *scale, *shift;
  T* out;
  int cin, height, width, cout, kernel, pool;
};

// channel_pool over planes: mean[i] and max[i] of plane i of x ((N * C) planes of `plane` elements).
template <typename T>
struct ChannelPoolArgs {
  const T* x;
  T *mean, *max;
  int64_t plane;
};

// spatial_pool over samples: out (N, 2, H, W) = channel mean and max of x (N, C, H, W).
template <typename T>
struct SpatialPoolArgs {
  const T* x;
  T* out;
  int channels;
  int64_t plane;
};

// cbam over samples; x: (N, C, H, W), out: (N, C, H / pool, W / pool), contiguous.
template <typename T>
struct CbamArgs {
  const T *x, *mlp_w1, *mlp_b1, *mlp_w2, *mlp_b2, *spatial_weight;
  T* out;
  T spatial_scale, spatial_shift;
  int channels, height, width, hidden, kernel, pool;
};

// One (N, 1, 42, 42) input of meanspot_net, read through its strides.
template <typename T>
struct StridedBatch {
  const T* data;
  int64_t stride_n, stride_h, stride_w;
};

// meanspot_net. net_samples runs whole samples; for fewer samples than
// threads, net_branches runs tasks t = 3 * i + b (branch b of sample i) into
// `merged` ((N, 14, 14, 14) scratch: the concat) and then net_heads runs tasks
// t = heads * i + h from it. Both paths give the same bits.
template <typename T>
struct NetArgs {
  NetConfig config;
  NetOffsets offsets;
  const T* params;
  StridedBatch<T> inputs[3];  // u, v, os
  T* out;                     // (N, config.outputs())
  T* merged;
};

// tvl1_flow over frame pairs. prev/next: uint8 or float32 frames (per the
// kernel called) at pair i: base + i * stride_n + y * stride_h + x * stride_w
// (row and column strides shared by both); flow (N, 2, H, W) and counts (N, 2).
struct Tvl1Args {
  tvl1::Params params;
  tvl1::Pyramid pyramid;
  const void *prev, *next;
  int64_t prev_stride_n, next_stride_n, stride_h, stride_w;
  int height, width;
  float* flow;
  int64_t* counts;
};

// mean_roi_features over pairs; flow (N, 2, H, W) through its strides; boxes
// (N, 2, 4) contiguous and already checked; out (N, 3, 42, 42) contiguous.
struct RoiFeatureArgs {
  const float* flow;
  int64_t stride_n, stride_c, stride_h, stride_w;
  const int64_t* boxes;
  float* out;
  int height, width;
};

template <typename Args>
using RangeKernel = void (*)(const Args&, int64_t begin, int64_t end);

template <typename T>
struct NetKernels {
  RangeKernel<ConvBlockArgs<T>> conv_block;
  RangeKernel<ChannelPoolArgs<T>> channel_pool;
  RangeKernel<SpatialPoolArgs<T>> spatial_pool;
  RangeKernel<CbamArgs<T>> cbam;
  RangeKernel<NetArgs<T>> net_samples, net_branches, net_heads;
};

struct CpuKernels {
  const char* level;  // DEFAULT, AVX2 or AVX512
  NetKernels<float> f32;
  NetKernels<double> f64;
  RangeKernel<Tvl1Args> tvl1_flow_u8, tvl1_flow_f32;
  RangeKernel<RoiFeatureArgs> mean_roi_features;

  template <typename T>
  const NetKernels<T>& net() const;
};

template <>
inline const NetKernels<float>& CpuKernels::net<float>() const { return f32; }
template <>
inline const NetKernels<double>& CpuKernels::net<double>() const { return f64; }

}  // namespace cpu
}  // namespace meanspot
