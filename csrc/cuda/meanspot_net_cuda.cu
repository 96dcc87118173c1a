// CUDA kernel of meanspot_fused::meanspot_net, the whole MEAN-Spot network in
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
//           channel mean/max of CBAM (the spatial conv clamps its loops at the
//           border instead of reading a padded map: no K-sized halo; when a
//           spatial weight is not finite it runs every tap instead, so that
//           0 * NaN on the padding gives NaN as on the CPU)
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
//   accumulators per thread (thread per pixel); [CBAM: warp per channel for
//   mean/max with shuffle reductions, thread per hidden unit / channel for the
//   MLP, thread per pixel for the channel pool and the spatial conv]; thread
//   per pooled output into merged.
//   per head: stage the conv weights; conv (thread per pixel and group of 4
//   output channels); [CBAM]; max pool 2 into the features; Dense (warp per
//   output, shuffle sum) written to the output row; softmax in place on that
//   row with block-wide max and sum.
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "cuda_utils.cuh"  // first: defines MSF_HOST_DEVICE (meanspot_math.h)

#include "../net_layout.h"
#include "../ops/ops.h"

namespace meanspot {
namespace {

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
    offset += gpu::smem_bytes<acc>(count) / int64_t(sizeof(acc));
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
  v = kMax ? gpu::warp_nan_max(v) : gpu::warp_sum(v);
  if (lane == 0) red[warp] = v;
  __syncthreads();
  acc r = red[0];
  for (int i = 1; i < kWarps; ++i) r = kMax ? nan_max(r, red[i]) : r + red[i];
  __syncthreads();  // red may be reused right away
  return r;
}

// Max pool of `value(c, k)` (k: pixel index in a size x size plane) over
// pool x pool windows, for each (c, oh, ow); store(c, oh, ow, m) writes it.
template <typename acc, typename Value, typename Store>
__device__ __forceinline__ void pool_planes(int channels, int size, int pool, Value value, Store store) {
  const int out_size = size / pool, out_plane = out_size * out_size;
  for (int o = threadIdx.x; o < channels * out_plane; o += kThreads) {
    const int c = o / out_plane, r = o - c * out_plane;
    const int oh = r / out_size, ow = r - oh * out_size;
    acc m = gpu::lowest<acc>();
    for (int i = 0; i < pool; ++i)
      for (int j = 0; j < pool; ++j) m = nan_max(m, value(c, (oh * pool + i) * size + ow * pool + j));
    store(c, oh, ow, m);
  }
}

// CBAM on the (channels, size, size) activations x in scratch, then a pool x pool
// max pool written through store(c, oh, ow, value). Order of cpu::cbam_sample.
// Ends without a barrier: the caller synchronizes before reusing the scratch.
template <typename scalar_t, typename Store>
__device__ __forceinline__ void cbam_block(const acc_t<scalar_t>* x, int channels, int size, int pool,
                                           const scalar_t* __restrict__ p, const CbamOffsets& co, int hidden,
                                           int kernel, acc_t<scalar_t>* stats, acc_t<scalar_t>* smap,
                                           acc_t<scalar_t>* sgate, acc_t<scalar_t>* sw, Store store) {
  using acc = acc_t<scalar_t>;
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int plane = size * size;
  acc* avg = stats + NetSmem::kAvg;
  acc* mx = stats + NetSmem::kMax;
  acc* gate = stats + NetSmem::kGate;
  acc* hid = stats + NetSmem::kHidden;

  // Stage the spatial weight (noting whether all of it is finite, for the
  // spatial conv); mean and max over H x W of each channel (warp per channel).
  bool finite = true;
  for (int i = threadIdx.x; i < 2 * kernel * kernel; i += kThreads) {
    const acc wv = static_cast<acc>(p[co.spatial + i]);
    sw[i] = wv;
    finite = finite && isfinite(wv);
  }
  for (int c = warp; c < channels; c += kWarps) {
    const acc* xc = x + c * plane;
    acc sum = acc(0), m = gpu::lowest<acc>();
    for (int i = lane; i < plane; i += 32) {
      const acc v = xc[i];
      sum += v;
      m = nan_max(m, v);
    }
    sum = gpu::warp_sum(sum);
    m = gpu::warp_nan_max(m);
    if (lane == 0) {
      avg[c] = sum / static_cast<acc>(plane);
      mx[c] = m;
    }
  }
  const bool sw_finite = __syncthreads_and(finite);  // block-uniform

  // Hidden units relu(W1 t + b1) of t = mean (t < hidden) and t = max.
  for (int t = threadIdx.x; t < 2 * hidden; t += kThreads) {
    const int j = t % hidden;
    const acc* in = t < hidden ? avg : mx;
    acc h = static_cast<acc>(p[co.b1 + j]);
    for (int c = 0; c < channels; ++c) h += static_cast<acc>(p[co.w1 + int64_t(j) * channels + c]) * in[c];
    hid[t] = relu(h);
  }
  __syncthreads();

  // g_c = sigmoid(MLP(mean) + MLP(max)); b2 enters each of the two passes.
  for (int c = threadIdx.x; c < channels; c += kThreads) {
    acc logit_avg = static_cast<acc>(p[co.b2 + c]), logit_max = logit_avg;
    for (int j = 0; j < hidden; ++j) {
      const acc w = static_cast<acc>(p[co.w2 + int64_t(c) * hidden + j]);
      logit_avg += w * hid[j];
      logit_max += w * hid[hidden + j];
    }
    gate[c] = sigmoid(logit_avg + logit_max);
  }
  __syncthreads();

  // Mean (smap plane 0) and max (plane 1) over channels of x * g_c.
  const acc inv_channels = acc(1) / acc(channels);
  for (int q = threadIdx.x; q < plane; q += kThreads) {
    acc y = x[q] * gate[0];
    acc sum = y, m = y;
    for (int c = 1; c < channels; ++c) {
      y = x[c * plane + q] * gate[c];
      sum += y;
      m = nan_max(m, y);
    }
    smap[q] = sum * inv_channels;
    smap[plane + q] = m;
  }
  __syncthreads();

  // Spatial gate sigmoid(scale * conv_same(smap, sw) + shift). The CPU kernel
  // multiplies every weight, the ones on its zero padding included. With finite
  // weights those taps add exact zeros, so the loops skip them (clamped to the
  // image); a NaN or inf weight would make them NaN (0 * inf = NaN), so then
  // every tap runs, with 0 for the padding, in the CPU's order.
  const acc sp_scale = static_cast<acc>(p[co.scale]), sp_shift = static_cast<acc>(p[co.shift]);
  const int pad = same_pad(kernel);
  for (int q = threadIdx.x; q < plane; q += kThreads) {
    const int h = q / size, w = q - h * size;
    acc conv = acc(0);
    if (sw_finite) {
      const int kh0 = max(0, pad - h), kh1 = min(kernel, size + pad - h);
      const int kw0 = max(0, pad - w), kw1 = min(kernel, size + pad - w);
      for (int ci = 0; ci < 2; ++ci) {
        for (int kh = kh0; kh < kh1; ++kh) {
          const acc* in_row = smap + ci * plane + (h + kh - pad) * size + (w - pad);
          const acc* w_row = sw + (ci * kernel + kh) * kernel;
          for (int kw = kw0; kw < kw1; ++kw) conv += w_row[kw] * in_row[kw];
        }
      }
    } else {
      for (int ci = 0; ci < 2; ++ci) {
        for (int kh = 0; kh < kernel; ++kh) {
          const int ih = h + kh - pad;
          const bool row_inside = ih >= 0 && ih < size;
          const acc* w_row = sw + (ci * kernel + kh) * kernel;
          for (int kw = 0; kw < kernel; ++kw) {
            const int iw = w + kw - pad;
            const acc v = row_inside && iw >= 0 && iw < size ? smap[ci * plane + ih * size + iw] : acc(0);
            conv += w_row[kw] * v;
          }
        }
      }
    }
    sgate[q] = sigmoid(sp_scale * conv + sp_shift);
  }
  __syncthreads();

  // (x * g_c) * s, max-pooled.
  pool_planes<acc>(channels, size, pool, [&](int c, int k) { return (x[c * plane + k] * gate[c]) * sgate[k]; },
                   store);
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
#pragma unroll
    for (int kh = 0; kh < kBK; ++kh) {
#pragma unroll
      for (int kw = 0; kw < kBK; ++kw) {
        const acc v = padded[(h + kh) * kSP + w + kw];
#pragma unroll
        for (int f = 0; f < F; ++f) a[f] += bw[f * kBK * kBK + kh * kBK + kw] * v;
      }
    }
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
    for (int ci = 0; ci < kM; ++ci) {
#pragma unroll
      for (int kh = 0; kh < kHK; ++kh) {
        const acc* in_row = merged + ci * kMPlane + (h + kh) * kMP + w;
        const acc* w_row = wg + ci * kHK * kHK + kh * kHK;
#pragma unroll
        for (int kw = 0; kw < kHK; ++kw) {
          const acc v = in_row[kw];
#pragma unroll
          for (int j = 0; j < kHeadGroup; ++j) a[j] += w_row[j * kHeadTaps + kw] * v;
        }
      }
    }
#pragma unroll
    for (int j = 0; j < kHeadGroup; ++j) act[(g * kHeadGroup + j) * kHPlane + q] = relu(a[j]);
  }
}

template <typename scalar_t, bool kGlobalScratch>
__global__ void __launch_bounds__(kThreads, 2)
meanspot_net_kernel(NetInputs<scalar_t> inputs, const scalar_t* __restrict__ p, NetConfig cfg, NetOffsets o,
                    NetSmem l, int64_t batch, int outputs, acc_t<scalar_t>* __restrict__ workspace,
                    scalar_t* __restrict__ out) {
  using acc = acc_t<scalar_t>;
  extern __shared__ __align__(16) unsigned char smem[];
  __shared__ NetTable<scalar_t> table;
  acc* scratch = kGlobalScratch ? workspace + int64_t(blockIdx.x) * l.total : reinterpret_cast<acc*>(smem);
  acc* act = scratch + l.act;
  acc* map = scratch + l.map;
  acc* sgate = scratch + l.sgate;
  acc* merged = scratch + l.merged;
  acc* sw = scratch + l.sw;
  acc* bw = scratch + l.bw;
  acc* stats = scratch + l.stats;
  acc* feat = scratch + l.feat;
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;

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
      auto store = [&](int c, int oh, int ow, acc m) {
        dst[c * kMPlane + (oh + same_pad(kHK)) * kMP + ow + same_pad(kHK)] = m;
      };
      if (cfg.cbam_branches) {
        cbam_block<scalar_t>(act, F, kS, NetConfig::kBranchPool, p, br.cbam, table.hidden[b], cfg.spatial_kernel,
                             stats, map, sgate, sw, store);
      } else {
        pool_planes<acc>(F, kS, NetConfig::kBranchPool, [&](int c, int k) { return act[c * kPlane + k]; }, store);
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
      auto store = [&](int c, int oh, int ow, acc m) { feat[(c * kHO + oh) * kHO + ow] = m; };
      if (cfg.cbam_merged) {
        cbam_block<scalar_t>(act, kHF, kM, NetConfig::kHeadPool, p, hd.cbam, cfg.hidden_head, cfg.spatial_kernel,
                             stats, map, sgate, sw, store);
      } else {
        pool_planes<acc>(kHF, kM, NetConfig::kHeadPool, [&](int c, int k) { return act[c * kHPlane + k]; },
                         store);
      }
      __syncthreads();

      // Dense: warp per output, lanes over the features; logits go to the output row.
      scalar_t* row = out + n * outputs + out0;
      for (int j = warp; j < hd.outputs; j += kWarps) {
        const scalar_t* wj = p + hd.dense_weight + int64_t(j) * kFeatures;
        acc sum = acc(0);
        for (int i = lane; i < kFeatures; i += 32) sum += static_cast<acc>(wj[i]) * feat[i];
        sum = gpu::warp_sum(sum);
        if (lane == 0) row[j] = static_cast<scalar_t>(static_cast<acc>(p[hd.dense_bias + j]) + sum);
      }
      __syncthreads();

      if (hd.softmax) {
        // Max-subtracted softmax in place (as torch.softmax and the CPU kernel):
        // exp never overflows; a NaN logit gives NaN probabilities.
        acc m = gpu::lowest<acc>();
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
      out0 += hd.outputs;
      __syncthreads();  // the scratch is reused by the next head or sample
    }
  }
}

template <typename scalar_t>
void meanspot_net_cuda_impl(const at::Tensor& u, const at::Tensor& v, const at::Tensor& os, const at::Tensor& params,
                            const NetConfig& c, at::Tensor& out) {
  using acc = acc_t<scalar_t>;
  constexpr const char* op = "meanspot_fused.meanspot_net";
  const NetOffsets o = layout_net(c);
  const NetSmem l = net_smem_layout<acc>(c.spatial_kernel);
  const int64_t batch = u.size(0);
  const int device = u.get_device();
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const int64_t bytes = l.total * int64_t(sizeof(acc));
  NetInputs<scalar_t> inputs;
  const at::Tensor* maps[3] = {&u, &v, &os};
  for (int b = 0; b < 3; ++b) {
    inputs.data[b] = maps[b]->const_data_ptr<scalar_t>();
    inputs.stride_n[b] = maps[b]->stride(0);
    inputs.stride_h[b] = maps[b]->stride(2);
    inputs.stride_w[b] = maps[b]->stride(3);
  }
  const scalar_t* pp = params.const_data_ptr<scalar_t>();
  scalar_t* outp = out.mutable_data_ptr<scalar_t>();
  if (bytes <= gpu::dynamic_smem_limit<meanspot_net_kernel<scalar_t, false>>(device)) {
    gpu::require_dynamic_smem<meanspot_net_kernel<scalar_t, false>>(bytes, device, op);
    meanspot_net_kernel<scalar_t, false><<<gpu::grid_size(batch, 1, device), kThreads, bytes, stream>>>(
        inputs, pp, c, o, l, batch, c.outputs(), nullptr, outp);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  } else {
    // One scratch slice per block: as many blocks as the SMs hold, within the workspace cap.
    const int64_t blocks = std::max<int64_t>(
        1, std::min<int64_t>({batch, 2 * int64_t(gpu::sm_count(device)), kMaxWorkspaceBytes / bytes}));
    at::Tensor workspace = at::empty({blocks * l.total}, u.options().dtype(gpu::acc_scalar_type<scalar_t>()));
    meanspot_net_kernel<scalar_t, true><<<static_cast<unsigned int>(blocks), kThreads, 0, stream>>>(
        inputs, pp, c, o, l, batch, c.outputs(), workspace.mutable_data_ptr<acc>(), outp);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
}

at::Tensor meanspot_net_cuda(const at::Tensor& u_in, const at::Tensor& v_in, const at::Tensor& os_in,
                             const at::Tensor& params_in, at::IntArrayRef config) {
  constexpr const char* op = "meanspot_fused.meanspot_net";
  const NetConfig c = check_meanspot_net_args(u_in, v_in, os_in, params_in, config);
  TORCH_CHECK(u_in.is_cuda(), op, ": u must be a CUDA tensor here, got ", u_in.device());
  const auto t = u_in.scalar_type();
  TORCH_CHECK(t == at::kFloat || t == at::kHalf || t == at::kBFloat16 || t == at::kDouble, op,
              ": on CUDA u, v, os must be float16, bfloat16, float32 or float64, got ", t);
  c10::cuda::CUDAGuard device_guard(u_in.device());
  // u, v, os are read through their strides (no copy of expanded or strided
  // batches); the kernel indexes the packed parameters as a dense vector.
  const at::Tensor params = params_in.contiguous();
  at::Tensor out = at::empty({u_in.size(0), c.outputs()}, u_in.options());
  if (out.numel() == 0) return out;
  MSF_DISPATCH_CUDA_TYPES(t, op, [&] { meanspot_net_cuda_impl<scalar_t>(u_in, v_in, os_in, params, c, out); });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(meanspot_fused, CUDA, m) {
  m.impl("meanspot_net", &meanspot_net_cuda);
}

}  // namespace meanspot
