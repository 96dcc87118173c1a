// Device code of meanspot_fused::meanspot_net, the whole MEAN-Spot network in
// one launch (float16, bfloat16, float32, float64; accumulation in acc_t):
//   branch b in (u, v, os), F = 3, 3, 8 filters:
//     a = scale * relu(conv5x5_same(x_b) + bias) + shift        (BN after ReLU)
//     [CBAM: g_c = sigmoid(MLP(mean_hw a) + MLP(max_hw a)), y = a * g_c,
//            s = sigmoid(sp_scale * conv_KxK([mean_c y, max_c y]) + sp_shift), a = y * s]
//     pooled_b = maxpool3(a)                                     -> (F, 14, 14)
//   merged = concat(pooled_u, pooled_v, pooled_os)               -> (14, 14, 14)
//   each head (spot, recog): relu(conv5x5_same(merged) + bias) [-> CBAM] -> maxpool2
//     -> Dense over the NCHW-flattened 392 features [-> max-subtracted softmax]
// with the operation order of the CPU kernel (cpu/meanspot_net_cpu.cpp and the
// per-sample blocks of cpu/sample_kernels.h); parameter layout: net_layout.h.
//
// Work split: one block of kThreads threads per sample, grid-stride over the
// batch; only u, v, os (read through their strides: any layout, expanded
// batches included, never copied), the packed parameters and the outputs touch
// global memory. Every intermediate lives in the block's scratch (NetSmem), in acc_t:
//   act     (8, 42, 42)  a branch's activations; in the heads: the head's
//                        activations (8, 14, 14) and its conv weights
//   map     (46, 46) zero-padded input map of the branch conv, then (2, H, W)
//           channel mean/max of CBAM (see blocks.cuh, cbam_spatial_gate: no
//           padded map, no K-sized halo)
//   sgate   (H, W) spatial gate of CBAM
//   merged  (14, 18, 18) the concat, zero-padded for the head conv; its border
//           is zeroed once per block and never written
//   small   spatial weight (2, K, K), branch conv weights/bias/scale/shift,
//           CBAM channel statistics, reduction slots, head features (392)
// About 99 KB in float32 with K = 7 (112 KB with K = 41), so two blocks fit on
// an SM of H100 (dynamic shared memory above 48 KB is opted in); twice that in
// float64. Where the device cannot give that much to one block, the scratch is
// a per-block slice of a global workspace instead (same kernel, fewer blocks).
// Besides, a small static NetTable (offsets, inputs) in shared memory.
// Registers: __launch_bounds__(kThreads, 2) matches the two blocks per SM that
// shared memory allows and lets ptxas use up to 128 registers (it chose 64 and
// spilled without the second argument); nothing is indexed at run time in
// registers or kernel parameters (see NetTable), so there is no stack frame.
// Steps of one sample, separated by __syncthreads():
//   per branch: stage the padded input and the conv parameters; conv with F
//   accumulators per thread (thread per pixel); [CBAM]; thread per pooled
//   output into merged.
//   per head: stage the conv weights; conv (thread per pixel and group of 4
//   output channels); [CBAM]; max pool 2 into the features; Dense (warp per
//   output, shuffle sum) written to the output row; softmax in place on that
//   row with block-wide max and sum.
// The conv windows, the CBAM steps and the max pools are blocks.cuh's, the
// code the per-op conv_block and cbam kernels run too.
// Host wrapper: ../meanspot_net_cuda.cu; plan() below is the launch both the
// wrapper and the SIMT emulator (tests/cuda_emu) use.
#pragma once

#include <algorithm>
#include <cstdint>

#include "../../net_layout.h"
#include "blocks.cuh"
#include "common.cuh"

namespace meanspot {
namespace gpu {
namespace meanspot_net {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
// Cap of the global workspace of the fallback, in bytes.
constexpr int64_t kMaxWorkspaceBytes = int64_t(512) << 20;

// Fixed geometry of the network (net_layout.h).
constexpr int kS = NetConfig::kInput;                                   // 42
constexpr int kPlane = kS * kS;                                         // 1764
constexpr int kBK = NetConfig::kBranchKernel;                           // 5
constexpr int kSP = kS + kBK - 1;                                       // 46: padded branch input
constexpr int kM = NetConfig::kMerged;                                  // 14
constexpr int kHK = NetConfig::kHeadKernel;                             // 5
constexpr int kMP = kM + kHK - 1;                                       // 18: padded merged plane
constexpr int kMPlane = kMP * kMP;                                      // 324
constexpr int kHF = NetConfig::kHeadFilters;                            // 8
constexpr int kHPlane = kM * kM;                                        // 196
constexpr int kHO = kM / NetConfig::kHeadPool;                          // 7
constexpr int kFeatures = kHF * kHO * kHO;                              // 392
constexpr int kHeadTaps = kM * kHK * kHK;                               // 350 per output channel
constexpr int kMaxF = 8;                                                // widest branch (os)
constexpr int kHeadGroup = 4;                                           // head conv channels per thread
static_assert(kHF % kHeadGroup == 0, "head filters split into whole groups");
static_assert(kHF <= kMaxF, "act holds the widest block");

// Offsets (in acc_t elements, each region rounded up to 16 bytes) of one
// block's scratch; `total` is its size.
struct NetSmem {
  int64_t act, map, sgate, merged, sw, bw, stats, feat, total;
  // Inside bw: weights (F, 5, 5), then bias, scale, shift (F each).
  static constexpr int kBwBias = kMaxF * kBK * kBK, kBwScale = kBwBias + kMaxF, kBwShift = kBwScale + kMaxF,
                       kBwSize = kBwShift + kMaxF;
  // Inside stats: channel mean, channel max, gate (8 each), hidden (2 x 8), reduction slots.
  static constexpr int kAvg = 0, kMax = 8, kGate = 16, kHidden = 24, kRed = 40, kStatsSize = kRed + kWarps;
  // Inside act during a head: activations (8, 14, 14), conv weights (8, 14, 5, 5), bias (8).
  static constexpr int kHeadWeight = kHF * kHPlane, kHeadBias = kHeadWeight + kHF * kHeadTaps,
                       kHeadSize = kHeadBias + kHF;
};

template <typename acc>
NetSmem net_smem_layout(int spatial_kernel) {
  int64_t offset = 0;
  auto take = [&](int64_t count) {
    const int64_t at = offset;
    offset += smem_bytes<acc>(count) / int64_t(sizeof(acc));
    return at;
  };
  static_assert(NetSmem::kHeadSize <= kMaxF * kPlane, "head scratch fits in act");
  NetSmem l;
  l.act = take(int64_t(kMaxF) * kPlane);
  l.map = take(std::max<int64_t>(int64_t(kSP) * kSP, 2 * int64_t(kPlane)));
  l.sgate = take(kPlane);
  l.merged = take(int64_t(kM) * kMPlane);
  l.sw = take(2 * int64_t(spatial_kernel) * spatial_kernel);
  l.bw = take(NetSmem::kBwSize);
  l.stats = take(NetSmem::kStatsSize);
  l.feat = take(kFeatures);
  l.total = offset;
  return l;
}

// The three input maps u, v, os (index b of the branch): (N, 1, 42, 42) read
// through their element strides (the channel stride is irrelevant: C = 1).
template <typename scalar_t>
struct NetInputs {
  const scalar_t* data[3];
  int64_t stride_n[3], stride_h[3], stride_w[3];
};

// What the kernel selects with a run-time branch or head index. A kernel
// parameter (or register array) indexed at run time is copied to local memory:
// a stack frame and spill traffic in the hot loop. Copied once per block into
// static shared memory instead, where run-time indexing is an ordinary load.
template <typename scalar_t>
struct NetTable {
  NetOffsets offsets;
  NetInputs<scalar_t> inputs;
  int hidden[3];
};

MSF_HOST_DEVICE float exp_acc(float x) { return ::expf(x); }
MSF_HOST_DEVICE double exp_acc(double x) { return ::exp(x); }

// Block-wide sum (kMax false) or NaN-propagating maximum of v; every thread gets
// the result. All threads of the block must call it; `red` holds kWarps values.
template <bool kMax, typename acc>
__device__ __forceinline__ acc block_reduce(acc v, acc* red) {
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  v = kMax ? warp_nan_max(v) : warp_sum(v);
  if (lane == 0) red[warp] = v;
  __syncthreads();
  acc r = red[0];
  for (int i = 1; i < kWarps; ++i) r = kMax ? nan_max(r, red[i]) : r + red[i];
  __syncthreads();  // red may be reused right away
  return r;
}

// Branch conv with F filters: act[f] = scale[f] * relu(bias[f] + conv(padded, w[f])) + shift[f].
// padded: (46, 46) input; bw as laid out in NetSmem. Thread per pixel, F accumulators.
template <int F, typename acc>
__device__ __forceinline__ void branch_conv(const acc* padded, const acc* bw, acc* act) {
  for (int q = threadIdx.x; q < kPlane; q += kThreads) {
    const int h = q / kS, w = q - h * kS;
    acc a[F];
#pragma unroll
    for (int f = 0; f < F; ++f) a[f] = bw[NetSmem::kBwBias + f];
    blocks::conv_window<F, kBK>(padded + h * kSP + w, 0, kSP, 1, kBK, bw, kBK * kBK, a);
#pragma unroll
    for (int f = 0; f < F; ++f)
      act[f * kPlane + q] = relu_affine(a[f], bw[NetSmem::kBwScale + f], bw[NetSmem::kBwShift + f]);
  }
}

// Head conv: act[co] = relu(bias[co] + conv(merged, w[co])), thread per (group of
// kHeadGroup output channels, pixel). merged: (14, 18, 18) zero-padded.
template <typename acc>
__device__ __forceinline__ void head_conv(const acc* merged, const acc* weight, const acc* bias, acc* act) {
  constexpr int kGroups = kHF / kHeadGroup;
  for (int item = threadIdx.x; item < kGroups * kHPlane; item += kThreads) {
    const int g = item / kHPlane, q = item - g * kHPlane;
    const int h = q / kM, w = q - h * kM;
    const acc* wg = weight + g * kHeadGroup * kHeadTaps;
    acc a[kHeadGroup];
#pragma unroll
    for (int j = 0; j < kHeadGroup; ++j) a[j] = bias[g * kHeadGroup + j];
    blocks::conv_window<kHeadGroup, kHK>(merged + h * kMP + w, kMPlane, kMP, kM, kHK, wg, kHeadTaps, a);
#pragma unroll
    for (int j = 0; j < kHeadGroup; ++j) act[(g * kHeadGroup + j) * kHPlane + q] = relu(a[j]);
  }
}

// A CBAM block's parameters inside the packed vector p (offsets co).
template <typename scalar_t>
__device__ __forceinline__ blocks::CbamParams<scalar_t> cbam_params(const scalar_t* p, const CbamOffsets& co,
                                                                   int hidden, int kernel) {
  using acc = acc_t<scalar_t>;
  return {p + co.w1, p + co.b1, p + co.w2, p + co.b2, p + co.spatial, static_cast<acc>(p[co.scale]),
          static_cast<acc>(p[co.shift]), hidden, kernel};
}

template <typename scalar_t, bool kGlobalScratch>
__global__ void __launch_bounds__(kThreads, 2)
meanspot_net_kernel(NetInputs<scalar_t> inputs, const scalar_t* __restrict__ p, NetConfig cfg, NetOffsets o,
                    NetSmem l, int64_t batch, int outputs, acc_t<scalar_t>* __restrict__ workspace,
                    scalar_t* __restrict__ out) {
  using acc = acc_t<scalar_t>;
  __shared__ NetTable<scalar_t> table;
  acc* scratch = kGlobalScratch ? workspace + int64_t(blockIdx.x) * l.total : reinterpret_cast<acc*>(dynamic_smem());
  acc* act = scratch + l.act;
  acc* map = scratch + l.map;
  acc* sgate = scratch + l.sgate;
  acc* merged = scratch + l.merged;
  acc* sw = scratch + l.sw;
  acc* bw = scratch + l.bw;
  acc* stats = scratch + l.stats;
  acc* feat = scratch + l.feat;
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const blocks::CbamScratch<acc> cbam_scratch{stats + NetSmem::kAvg, stats + NetSmem::kMax, stats + NetSmem::kGate,
                                              stats + NetSmem::kHidden, sw, map, sgate};

  // The merged map's zero border: the branches write only its interior.
  for (int i = threadIdx.x; i < kM * kMPlane; i += kThreads) merged[i] = acc(0);
  if (threadIdx.x == 0) {
    table.offsets = o;
    table.inputs = inputs;
    table.hidden[0] = cfg.hidden[0];
    table.hidden[1] = cfg.hidden[1];
    table.hidden[2] = cfg.hidden[2];
  }
  __syncthreads();

  for (int64_t n = blockIdx.x; n < batch; n += gridDim.x) {
    // --- branches u, v, os -> merged channels [0, 3), [3, 6), [6, 14)
    int channel0 = 0;
    for (int b = 0; b < 3; ++b) {
      const int F = NetConfig::branch_filters(b);
      const BranchOffsets& br = table.offsets.branch[b];
      const NetInputs<scalar_t>& ins = table.inputs;
      const scalar_t* in = ins.data[b] + n * ins.stride_n[b];
      const int64_t stride_h = ins.stride_h[b], stride_w = ins.stride_w[b];
      for (int i = threadIdx.x; i < kSP * kSP; i += kThreads) {
        const int ih = i / kSP - same_pad(kBK), iw = i % kSP - same_pad(kBK);
        map[i] = ih >= 0 && ih < kS && iw >= 0 && iw < kS ? static_cast<acc>(in[ih * stride_h + iw * stride_w])
                                                          : acc(0);
      }
      for (int i = threadIdx.x; i < F * kBK * kBK; i += kThreads) bw[i] = static_cast<acc>(p[br.weight + i]);
      for (int f = threadIdx.x; f < F; f += kThreads) {
        bw[NetSmem::kBwBias + f] = static_cast<acc>(p[br.bias + f]);
        bw[NetSmem::kBwScale + f] = static_cast<acc>(p[br.scale + f]);
        bw[NetSmem::kBwShift + f] = static_cast<acc>(p[br.shift + f]);
      }
      __syncthreads();
      if (F == 3) {
        branch_conv<3>(map, bw, act);
      } else {
        branch_conv<8>(map, bw, act);
      }
      __syncthreads();
      acc* dst = merged + channel0 * kMPlane;
      auto store = [&](int64_t, int c, int oh, int ow, acc m) {
        dst[c * kMPlane + (oh + same_pad(kHK)) * kMP + ow + same_pad(kHK)] = m;
      };
      if (cfg.cbam_branches) {
        blocks::cbam<kThreads>(blocks::PlaneView<acc>{act, kPlane, kS, 1}, F, kS, kS, NetConfig::kBranchPool,
                               cbam_params(p, br.cbam, table.hidden[b], cfg.spatial_kernel), cbam_scratch, store);
      } else {
        blocks::max_pool<kThreads, acc>(F, kS, kS, NetConfig::kBranchPool,
                                        [&](int c, int h, int w) { return act[c * kPlane + h * kS + w]; }, store);
      }
      __syncthreads();
      channel0 += F;
    }

    // --- heads: spot (1 output), recog (softmax over recog_classes)
    int out0 = 0;
    for (int hi = 0; hi < o.heads; ++hi) {
      const HeadOffsets& hd = table.offsets.head[hi];
      acc* hweight = act + NetSmem::kHeadWeight;
      acc* hbias = act + NetSmem::kHeadBias;
      for (int i = threadIdx.x; i < kHF * kHeadTaps; i += kThreads) hweight[i] = static_cast<acc>(p[hd.weight + i]);
      for (int i = threadIdx.x; i < kHF; i += kThreads) hbias[i] = static_cast<acc>(p[hd.bias + i]);
      __syncthreads();
      head_conv(merged, hweight, hbias, act);
      __syncthreads();
      auto store = [&](int64_t, int c, int oh, int ow, acc m) { feat[(c * kHO + oh) * kHO + ow] = m; };
      if (cfg.cbam_merged) {
        blocks::cbam<kThreads>(blocks::PlaneView<acc>{act, kHPlane, kM, 1}, kHF, kM, kM, NetConfig::kHeadPool,
                               cbam_params(p, hd.cbam, cfg.hidden_head, cfg.spatial_kernel), cbam_scratch, store);
      } else {
        blocks::max_pool<kThreads, acc>(kHF, kM, kM, NetConfig::kHeadPool,
                                        [&](int c, int h, int w) { return act[c * kHPlane + h * kM + w]; }, store);
      }
      __syncthreads();

      // Dense: warp per output, lanes over the features; logits go to the output row.
      scalar_t* row = out + n * outputs + out0;
      for (int j = warp; j < hd.outputs; j += kWarps) {
        const scalar_t* wj = p + hd.dense_weight + int64_t(j) * kFeatures;
        acc sum = acc(0);
        for (int i = lane; i < kFeatures; i += 32) sum += static_cast<acc>(wj[i]) * feat[i];
        sum = warp_sum(sum);
        if (lane == 0) row[j] = static_cast<scalar_t>(static_cast<acc>(p[hd.dense_bias + j]) + sum);
      }
      __syncthreads();

      if (hd.softmax) {
        // Max-subtracted softmax in place (as torch.softmax and the CPU kernel):
        // exp never overflows; a NaN logit gives NaN probabilities.
        acc m = lowest<acc>();
        for (int j = threadIdx.x; j < hd.outputs; j += kThreads) m = nan_max(m, static_cast<acc>(row[j]));
        m = block_reduce<true>(m, stats + NetSmem::kRed);
        acc partial = acc(0);
        for (int j = threadIdx.x; j < hd.outputs; j += kThreads) {
          const scalar_t e = static_cast<scalar_t>(exp_acc(static_cast<acc>(row[j]) - m));
          row[j] = e;
          partial += static_cast<acc>(e);
        }
        const acc sum = block_reduce<false>(partial, stats + NetSmem::kRed);
        for (int j = threadIdx.x; j < hd.outputs; j += kThreads)
          row[j] = static_cast<scalar_t>(static_cast<acc>(row[j]) / sum);
      }
      // No barrier before the next head or sample: their first writes (the
      // head weights in act, the branch input in map, bw) go to regions last
      // read before the Dense's barrier, and block_reduce releases its slots
      // itself (the mutation check showed this barrier guarded nothing).
      out0 += hd.outputs;
    }
  }
}


// Launch of meanspot_net: the scratch in dynamic shared memory when
// `bytes` fit within `smem_limit` (what the device allows the kernel), else
// a global workspace slice per block.
struct Plan {
  bool global_scratch;
  unsigned int blocks;
  int64_t smem;       // dynamic shared memory, bytes
  int64_t workspace;  // acc_t elements of the workspace (global_scratch)
};

inline Plan plan(const NetSmem& l, int64_t acc_bytes, int64_t batch, int64_t smem_limit, const DeviceLimits& d) {
  const int64_t bytes = l.total * acc_bytes;
  if (bytes <= smem_limit) return {false, grid_blocks(batch, 1, d.max_blocks), bytes, 0};
  // One scratch slice per block: as many blocks as the SMs hold, within the workspace cap.
  const int64_t blocks =
      std::max<int64_t>(1, std::min<int64_t>({batch, 2 * int64_t(d.sm_count), kMaxWorkspaceBytes / bytes}));
  return {true, static_cast<unsigned int>(blocks), 0, blocks * l.total};
}

}  // namespace meanspot_net
}  // namespace gpu
}  // namespace meanspot
