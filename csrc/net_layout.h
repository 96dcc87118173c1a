// Layout of the packed parameter vector of meanspot_fused::meanspot_net, the
// whole-network op. One definition for the host-side checks, the CPU kernel
// and any device kernel; the Python packer (meanspot_fused/fuse.py,
// pack_network) writes the same order, and a size mismatch is rejected.
//
// config (int[10]): [cbam_branches, cbam_merged, has_spot, has_recog,
//   recog_classes, hidden_u, hidden_v, hidden_os, hidden_head, spatial_kernel]
// params, in order, for each branch b in (u: 3, v: 3, os: 8 filters F):
//   conv weight (F, 1, 5, 5), conv bias (F), bn scale (F), bn shift (F),
//   [cbam: mlp_w1 (h, F), mlp_b1 (h), mlp_w2 (F, h), mlp_b2 (F),
//          spatial_weight (2, K, K), spatial scale (1), spatial shift (1)]
// then for each present head in (spot, recog):
//   conv weight (8, 14, 5, 5), conv bias (8), [cbam as above with F = 8],
//   dense weight (outputs, 8 * 7 * 7) in NCHW flatten order, dense bias (outputs).
// Output: (N, has_spot + has_recog * recog_classes): spot first, then the
// recog softmax probabilities.
#pragma once

#include <cstdint>

#include "meanspot_math.h"

namespace meanspot {

struct NetConfig {
  static constexpr int kInput = 42, kBranchKernel = 5, kHeadKernel = 5, kHeadFilters = 8;
  static constexpr int kBranchPool = 3, kHeadPool = 2, kMerged = 14, kConfigLen = 10;
  // Filters of branch b (u, v, os). A function, not a static array: nvcc
  // cannot read a host static array from device code.
  static constexpr MSF_HOST_DEVICE int branch_filters(int b) { return b == 2 ? 8 : 3; }
  bool cbam_branches, cbam_merged, has_spot, has_recog;
  int recog_classes, hidden[3], hidden_head, spatial_kernel;

  MSF_HOST_DEVICE int outputs() const { return (has_spot ? 1 : 0) + (has_recog ? recog_classes : 0); }
};

// Offsets of one CBAM block's parameters inside the packed vector.
struct CbamOffsets {
  int64_t w1, b1, w2, b2, spatial, scale, shift;
};

struct BranchOffsets {
  int64_t weight, bias, scale, shift;
  CbamOffsets cbam;
};

struct HeadOffsets {
  int64_t weight, bias, dense_weight, dense_bias;
  int outputs;
  bool softmax;
  CbamOffsets cbam;
};

struct NetOffsets {
  BranchOffsets branch[3];
  HeadOffsets head[2];
  int heads;
  int64_t total;
};

MSF_HOST_DEVICE CbamOffsets layout_cbam(int64_t& at, int channels, int hidden, int kernel) {
  CbamOffsets o;
  o.w1 = at; at += int64_t(hidden) * channels;
  o.b1 = at; at += hidden;
  o.w2 = at; at += int64_t(channels) * hidden;
  o.b2 = at; at += channels;
  o.spatial = at; at += 2 * int64_t(kernel) * kernel;
  o.scale = at; at += 1;
  o.shift = at; at += 1;
  return o;
}

MSF_HOST_DEVICE NetOffsets layout_net(const NetConfig& c) {
  NetOffsets o{};
  int64_t at = 0;
  const int k = NetConfig::kBranchKernel;
  for (int b = 0; b < 3; ++b) {
    const int f = NetConfig::branch_filters(b);
    BranchOffsets& br = o.branch[b];
    br.weight = at; at += int64_t(f) * k * k;
    br.bias = at; at += f;
    br.scale = at; at += f;
    br.shift = at; at += f;
    if (c.cbam_branches) br.cbam = layout_cbam(at, f, c.hidden[b], c.spatial_kernel);
  }
  o.heads = 0;
  const int hf = NetConfig::kHeadFilters, hk = NetConfig::kHeadKernel;
  const int pooled = NetConfig::kMerged / NetConfig::kHeadPool;
  for (int h = 0; h < 2; ++h) {
    if ((h == 0 && !c.has_spot) || (h == 1 && !c.has_recog)) continue;
    HeadOffsets& hd = o.head[o.heads++];
    hd.outputs = h == 0 ? 1 : c.recog_classes;
    hd.softmax = h == 1;
    hd.weight = at; at += int64_t(hf) * NetConfig::kMerged * hk * hk;
    hd.bias = at; at += hf;
    if (c.cbam_merged) hd.cbam = layout_cbam(at, hf, c.hidden_head, c.spatial_kernel);
    hd.dense_weight = at; at += int64_t(hd.outputs) * hf * pooled * pooled;
    hd.dense_bias = at; at += hd.outputs;
  }
  o.total = at;
  return o;
}

}  // namespace meanspot
