// CPU kernels of the network ops, one instruction-set level (simd.h):
// conv_block, channel_pool, spatial_pool, cbam and the whole network
// (meanspot_net), float32 and float64, from the per-sample blocks of
// sample_kernels.h. Each call runs a range of samples on one thread with one
// set of scratch buffers (about 120 KB in float32 for the network: L2-resident).
#include <cmath>

#include "level.h"
#include "sample_kernels.h"

namespace meanspot {
namespace cpu {
namespace CPU_CAPABILITY {

template <typename T>
void conv_block_kernel(const ConvBlockArgs<T>& a, int64_t begin, int64_t end) {
  const int64_t in_stride = int64_t(a.cin) * a.height * a.width;
  const int64_t out_stride = int64_t(a.cout) * (a.height / a.pool) * (a.width / a.pool);
  Buffer<T> padded(padded_size<T>(a.cin, a.height, a.width, a.kernel));
  Buffer<T> conv(int64_t(a.cout) * a.height * a.width);
  for (int64_t i = begin; i < end; ++i) {
    pad_planes(a.x + i * in_stride, a.cin, a.height, a.width, a.kernel, padded.get());
    conv_same(padded.get(), a.cin, a.height, a.width, a.weight, a.bias, a.cout, a.kernel, conv.get());
    relu_affine_pool(conv.get(), a.cout, a.height, a.width, a.scale, a.shift, a.pool, a.out + i * out_stride);
  }
}

template <typename T>
void channel_pool_kernel(const ChannelPoolArgs<T>& a, int64_t begin, int64_t end) {
  channel_pool(a.x + begin * a.plane, int(end - begin), a.plane, a.mean + begin, a.max + begin);
}

template <typename T>
void spatial_pool_kernel(const SpatialPoolArgs<T>& a, int64_t begin, int64_t end) {
  for (int64_t i = begin; i < end; ++i) {
    T* o = a.out + i * 2 * a.plane;
    spatial_pool<T>(a.x + i * a.channels * a.plane, a.channels, a.plane, nullptr, o, o + a.plane);
  }
}

template <typename T>
void cbam_kernel(const CbamArgs<T>& a, int64_t begin, int64_t end) {
  const CbamParams<T> p{a.mlp_w1, a.mlp_b1, a.mlp_w2, a.mlp_b2, a.spatial_weight, a.spatial_scale,
                        a.spatial_shift, a.hidden, a.kernel};
  const int64_t in_stride = int64_t(a.channels) * a.height * a.width;
  const int64_t out_stride = int64_t(a.channels) * (a.height / a.pool) * (a.width / a.pool);
  Buffer<T> scratch(cbam_scratch_size<T>(a.channels, a.hidden, a.height, a.width, a.kernel));
  for (int64_t i = begin; i < end; ++i)
    cbam_sample(a.x + i * in_stride, a.channels, a.height, a.width, p, a.pool, a.out + i * out_stride,
                scratch.get());
}

// ---- meanspot_net: the whole network, one sample at a time per thread ----

template <typename T>
CbamParams<T> cbam_params(const T* p, const CbamOffsets& o, int hidden, int kernel) {
  return CbamParams<T>{p + o.w1, p + o.b1, p + o.w2, p + o.b2, p + o.spatial, p[o.scale], p[o.shift], hidden, kernel};
}

template <typename T>
struct NetScratch {
  static constexpr int S = NetConfig::kInput, M = NetConfig::kMerged, F = NetConfig::kHeadFilters;
  Buffer<T> padded_in, conv, act, cbam, merged, padded_merged, head_conv, head_act, feat;
  explicit NetScratch(int spatial_kernel)
      : padded_in(padded_size<T>(1, S, S, NetConfig::kBranchKernel)),
        conv(8 * S * S),
        act(8 * S * S),
        cbam(cbam_scratch_size<T>(8, 8, S, S, spatial_kernel)),
        merged(M * M * M),
        padded_merged(padded_size<T>(M, M, M, NetConfig::kHeadKernel)),
        head_conv(F * M * M),
        head_act(F * M * M),
        feat(F * (M / 2) * (M / 2)) {}
};

template <typename T>
StridedPlane<T> input_plane(const StridedBatch<T>& t, int64_t i) {
  return StridedPlane<T>{t.data + i * t.stride_n, t.stride_h, t.stride_w};
}

// Channel offset of branch b in the (14, 14, 14) concat (order u, v, os).
inline int branch_channel(int b) {
  int channel = 0;
  for (int i = 0; i < b; ++i) channel += NetConfig::branch_filters(i);
  return channel;
}

// Offset of head h's values in one sample's output row (spot first, then recog).
inline int head_output_offset(const NetOffsets& o, int h) {
  int offset = 0;
  for (int i = 0; i < h; ++i) offset += o.head[i].outputs;
  return offset;
}

// Branch b of one sample from its (1, 42, 42) map; writes the branch's F
// pooled (14, 14) planes to `merged_channels` (its slice of the concat).
template <typename T>
void branch_forward(const NetConfig& c, const NetOffsets& o, const T* p, int b, const StridedPlane<T>& input,
                    T* merged_channels, NetScratch<T>& s) {
  constexpr int S = NetConfig::kInput;
  const int k = NetConfig::kBranchKernel, f = NetConfig::branch_filters(b);
  const BranchOffsets& br = o.branch[b];
  pad_plane_strided(input, S, S, k, s.padded_in.get());
  conv_same(s.padded_in.get(), 1, S, S, p + br.weight, p + br.bias, f, k, s.conv.get());
  if (c.cbam_branches) {
    relu_affine_pool(s.conv.get(), f, S, S, p + br.scale, p + br.shift, 1, s.act.get());
    cbam_sample(s.act.get(), f, S, S, cbam_params(p, br.cbam, c.hidden[b], c.spatial_kernel),
                NetConfig::kBranchPool, merged_channels, s.cbam.get());
  } else {
    relu_affine_pool(s.conv.get(), f, S, S, p + br.scale, p + br.shift, NetConfig::kBranchPool, merged_channels);
  }
}

// Head h of one sample from its (14, 14, 14) concat, zero-padded for the 5x5
// conv (see pad_planes); writes the head's outputs to `logits`.
template <typename T>
void head_forward(const NetConfig& c, const NetOffsets& o, const T* p, int h, const T* padded_merged, T* logits,
                  NetScratch<T>& s) {
  constexpr int M = NetConfig::kMerged, F = NetConfig::kHeadFilters;
  const HeadOffsets& hd = o.head[h];
  conv_same(padded_merged, M, M, M, p + hd.weight, p + hd.bias, F, NetConfig::kHeadKernel, s.head_conv.get());
  if (c.cbam_merged) {
    relu_affine_pool<T>(s.head_conv.get(), F, M, M, nullptr, nullptr, 1, s.head_act.get());
    cbam_sample(s.head_act.get(), F, M, M, cbam_params(p, hd.cbam, c.hidden_head, c.spatial_kernel),
                NetConfig::kHeadPool, s.feat.get(), s.cbam.get());
  } else {
    relu_affine_pool<T>(s.head_conv.get(), F, M, M, nullptr, nullptr, NetConfig::kHeadPool, s.feat.get());
  }
  constexpr int features = F * (M / 2) * (M / 2);
  for (int j = 0; j < hd.outputs; ++j) {
    const T* w = p + hd.dense_weight + int64_t(j) * features;
    acc_t<T> acc = p[hd.dense_bias + j];
    for (int i = 0; i < features; ++i) acc += acc_t<T>(w[i]) * s.feat[i];
    logits[j] = T(acc);
  }
  if (hd.softmax) {
    // Max-subtracted, as torch.softmax: exp never overflows; a NaN logit gives NaN probabilities.
    T mx = logits[0];
    for (int j = 1; j < hd.outputs; ++j) mx = nan_max(mx, logits[j]);
    acc_t<T> sum = 0;
    for (int j = 0; j < hd.outputs; ++j) {
      logits[j] = T(std::exp(acc_t<T>(logits[j] - mx)));
      sum += logits[j];
    }
    for (int j = 0; j < hd.outputs; ++j) logits[j] = T(logits[j] / sum);
  }
}

template <typename T>
void net_samples_kernel(const NetArgs<T>& a, int64_t begin, int64_t end) {
  constexpr int M = NetConfig::kMerged;
  const NetConfig& c = a.config;
  const NetOffsets& o = a.offsets;
  const int outputs = c.outputs();
  NetScratch<T> s(c.spatial_kernel);
  for (int64_t i = begin; i < end; ++i) {
    for (int b = 0; b < 3; ++b)
      branch_forward(c, o, a.params, b, input_plane(a.inputs[b], i), s.merged.get() + int64_t(branch_channel(b)) * M * M,
                     s);
    pad_planes(s.merged.get(), M, M, M, NetConfig::kHeadKernel, s.padded_merged.get());
    for (int h = 0; h < o.heads; ++h)
      head_forward(c, o, a.params, h, s.padded_merged.get(), a.out + i * outputs + head_output_offset(o, h), s);
  }
}

// Branch tasks t = 3 * i + b: u + v on one thread and os on another hold
// about equal work, so two threads share one sample.
template <typename T>
void net_branches_kernel(const NetArgs<T>& a, int64_t begin, int64_t end) {
  constexpr int M = NetConfig::kMerged;
  NetScratch<T> s(a.config.spatial_kernel);
  for (int64_t t = begin; t < end; ++t) {
    const int64_t i = t / 3;
    const int b = int(t % 3);
    branch_forward(a.config, a.offsets, a.params, b, input_plane(a.inputs[b], i),
                   a.merged + (i * M + branch_channel(b)) * M * M, s);
  }
}

// Head tasks t = heads * i + h, from the concat net_branches wrote.
template <typename T>
void net_heads_kernel(const NetArgs<T>& a, int64_t begin, int64_t end) {
  constexpr int M = NetConfig::kMerged;
  const int heads = a.offsets.heads, outputs = a.config.outputs();
  NetScratch<T> s(a.config.spatial_kernel);
  for (int64_t t = begin; t < end; ++t) {
    const int64_t i = t / heads;
    const int h = int(t % heads);
    pad_planes(a.merged + i * M * M * M, M, M, M, NetConfig::kHeadKernel, s.padded_merged.get());
    head_forward(a.config, a.offsets, a.params, h, s.padded_merged.get(),
                 a.out + i * outputs + head_output_offset(a.offsets, h), s);
  }
}

#define MEANSPOT_INSTANTIATE(T)                                                         \
  template void conv_block_kernel<T>(const ConvBlockArgs<T>&, int64_t, int64_t);       \
  template void channel_pool_kernel<T>(const ChannelPoolArgs<T>&, int64_t, int64_t);   \
  template void spatial_pool_kernel<T>(const SpatialPoolArgs<T>&, int64_t, int64_t);   \
  template void cbam_kernel<T>(const CbamArgs<T>&, int64_t, int64_t);                  \
  template void net_samples_kernel<T>(const NetArgs<T>&, int64_t, int64_t);            \
  template void net_branches_kernel<T>(const NetArgs<T>&, int64_t, int64_t);           \
  template void net_heads_kernel<T>(const NetArgs<T>&, int64_t, int64_t);
MEANSPOT_INSTANTIATE(float)
MEANSPOT_INSTANTIATE(double)
#undef MEANSPOT_INSTANTIATE

}  // namespace CPU_CAPABILITY
}  // namespace cpu
}  // namespace meanspot
