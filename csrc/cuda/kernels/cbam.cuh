// Device code of meanspot_fused::cbam, the whole CBAM block in one launch
// (float16, bfloat16, float32, float64; accumulation in acc_t):
//   g_c = sigmoid(MLP(mean_hw x) + MLP(max_hw x)),  MLP(t) = W2 relu(W1 t + b1) + b2
//   s   = conv_same([mean_c (x * g_c), max_c (x * g_c)], spatial_weight)
//   out = maxpool_k((x * g_c) * sigmoid(spatial_scale * s + spatial_shift))
// with the operation order of the CPU kernel (cpu::cbam_sample).
//
// Work split: one block per sample, grid-stride over the batch. The block's
// steps, separated by __syncthreads():
//   0. (kAllShared) stage the sample's (C, H, W) tile;
//   1-6. the CBAM steps of blocks.cuh (the whole-network kernel runs the same
//      code): channel mean and max (warp per channel, shuffle reductions),
//      the MLP's hidden layer (thread per pass and unit) and channel gate
//      (thread per channel), spatial mean and max of x * g_c (thread per
//      pixel), the K x K spatial conv and sigmoid gate (thread per pixel),
//      (x * g_c) * s_gate max-pooled (thread per output element, coalesced).
// Where the scratch lives (CbamMode): all in shared memory when the x tile fits
// (8 x 42 x 42 float32 = 56 KB: dynamic shared memory above 48 KB); else x is
// read from global memory (L2) with the scratch in shared memory; else (huge
// planes) the scratch is a per-block slice of a global workspace.
// x is read through its strides in every mode (any layout, expanded batches
// included; see Strides4): the entry point never copies it. The staged
// tile of kAllShared is dense.
// Host wrapper: ../cbam_cuda.cu; plan() below picks the mode and launch for
// both the wrapper and the SIMT emulator (tests/cuda_emu).
#pragma once

#include <algorithm>
#include <cstdint>
#include <type_traits>

#include "blocks.cuh"
#include "common.cuh"

namespace meanspot {
namespace gpu {
namespace cbam {

constexpr int kThreads = 256;
// Cap of the global workspace of kGlobalScratch, in bytes.
constexpr int64_t kMaxWorkspaceBytes = int64_t(512) << 20;

enum CbamMode : int {
  kAllShared = 0,      // x tile and scratch in shared memory
  kScratchShared = 1,  // x from global memory, scratch in shared memory
  kGlobalScratch = 2,  // x from global memory, scratch in a global workspace
};

struct CbamShape {
  int64_t batch;
  int channels, hidden, height, width, kernel, pool;
  Strides4 x;  // element strides of x
};

// Offsets (in acc_t elements) of one sample's scratch regions, each rounded up
// to 16 bytes; `total` is the scratch size. In kAllShared the x tile
// (scalar_t) follows at offset `total`.
struct CbamLayout {
  int64_t avg, max, gate, hidden, weight, smap, sgate, total;
};

template <typename acc>
CbamLayout make_layout(const CbamShape& s) {
  int64_t offset = 0;
  auto take = [&](int64_t count) {
    const int64_t at = offset;
    offset += smem_bytes<acc>(count) / int64_t(sizeof(acc));
    return at;
  };
  CbamLayout l;
  l.avg = take(s.channels);                                                            // (C) mean_hw x
  l.max = take(s.channels);                                                            // (C) max_hw x
  l.gate = take(s.channels);                                                           // (C) g_c
  l.hidden = take(2 * int64_t(s.hidden));                                              // mean pass, max pass
  l.weight = take(2 * int64_t(s.kernel) * s.kernel);                                   // (2, K, K)
  l.smap = take(2 * int64_t(s.height) * s.width);                                     // (2, H, W)
  l.sgate = take(int64_t(s.height) * s.width);                                         // (H, W)
  l.total = offset;
  return l;
}

// Blocks per SM that the registers must allow (second argument of
// __launch_bounds__): in kAllShared the x tile and scratch take tens of KB, so
// few blocks fit an SM anyway (two at MEAN's 8 x 42 x 42 in float32); the other
// modes read x from global memory and keep three or four, as many as compile
// without spills for sm_80 and sm_90 (the global-workspace mode addresses
// its scratch with 64-bit pointers: more registers). Without it ptxas aims at
// an occupancy step of its own and spills registers to reach it.
template <int kMode>
constexpr int cbam_min_blocks() {
  return kMode == kAllShared ? 2 : kMode == kScratchShared ? 4 : 3;
}

template <typename scalar_t, int kMode>
__global__ void __launch_bounds__(kThreads, cbam_min_blocks<kMode>())
cbam_kernel(const scalar_t* __restrict__ x, const scalar_t* __restrict__ mlp_w1, const scalar_t* __restrict__ mlp_b1,
            const scalar_t* __restrict__ mlp_w2, const scalar_t* __restrict__ mlp_b2,
            const scalar_t* __restrict__ spatial_weight, acc_t<scalar_t> spatial_scale,
            acc_t<scalar_t> spatial_shift, CbamShape s, CbamLayout l, acc_t<scalar_t>* __restrict__ workspace,
            scalar_t* __restrict__ out) {
  using acc = acc_t<scalar_t>;
  acc* scratch =
      kMode == kGlobalScratch ? workspace + int64_t(blockIdx.x) * l.total : reinterpret_cast<acc*>(dynamic_smem());
  const blocks::CbamScratch<acc> sc{scratch + l.avg,    scratch + l.max,  scratch + l.gate, scratch + l.hidden,
                                    scratch + l.weight, scratch + l.smap, scratch + l.sgate};
  const blocks::CbamParams<scalar_t> p{mlp_w1, mlp_b1, mlp_w2, mlp_b2, spatial_weight, spatial_scale, spatial_shift,
                                       s.hidden, s.kernel};
  scalar_t* x_tile = reinterpret_cast<scalar_t*>(scratch + l.total);  // kAllShared only

  const int channels = s.channels, height = s.height, width = s.width;
  const int64_t plane = int64_t(height) * width, sample = channels * plane;
  const int64_t out_plane = int64_t(height / s.pool) * (width / s.pool);

  for (int64_t n = blockIdx.x; n < s.batch; n += gridDim.x) {
    // The sample read by every step: global x through its strides, or (kAllShared) its dense staged copy.
    const scalar_t* xs = x + n * s.x.n;
    Strides4 xst = s.x;
    if constexpr (kMode == kAllShared) {
      NchwWalk at(threadIdx.x, kThreads, channels, height, width);  // at.n stays 0 below `sample`
      for (int64_t i = threadIdx.x; i < sample; i += kThreads, at.next()) x_tile[i] = xs[at.offset(s.x)];
      xs = x_tile;
      xst = Strides4{sample, plane, width, 1};
      __syncthreads();
    }
    scalar_t* __restrict__ on = out + n * channels * out_plane;
    blocks::cbam<kThreads>(blocks::PlaneView<scalar_t>{xs, xst.c, xst.h, xst.w}, channels, height, width, s.pool, p,
                           sc, [&](int64_t o, int, int, int, acc m) { on[o] = static_cast<scalar_t>(m); });
    __syncthreads();  // the scratch is reused by the block's next sample
  }
}

// Where the scratch lives for this shape (kAllShared needs scratch_bytes +
// x_bytes of dynamic shared memory, kScratchShared scratch_bytes), given the
// dynamic shared memory the device allows each mode.
struct Plan {
  int mode;
  int64_t smem;         // dynamic shared memory, bytes
  unsigned int blocks;  // grid
  int64_t workspace;    // acc_t elements of the global workspace (kGlobalScratch)
};

template <typename scalar_t>
Plan plan(const CbamShape& s, const CbamLayout& l, int64_t all_shared_limit, int64_t scratch_shared_limit,
          const DeviceLimits& d) {
  using acc = acc_t<scalar_t>;
  const int64_t scratch_bytes = l.total * int64_t(sizeof(acc));
  const int64_t x_bytes = smem_bytes<scalar_t>(int64_t(s.channels) * s.height * s.width);
  const unsigned int grid = grid_blocks(s.batch, 1, d.max_blocks);
  if (scratch_bytes + x_bytes <= all_shared_limit) return {kAllShared, scratch_bytes + x_bytes, grid, 0};
  if (scratch_bytes <= scratch_shared_limit) return {kScratchShared, scratch_bytes, grid, 0};
  // One scratch slice per block: as many blocks as the SMs hold, within the workspace cap.
  const int64_t blocks = std::max<int64_t>(
      1, std::min<int64_t>({s.batch, 2 * int64_t(d.sm_count), kMaxWorkspaceBytes / scratch_bytes}));
  return {kGlobalScratch, 0, static_cast<unsigned int>(blocks), blocks * l.total};
}

// Calls launch(std::integral_constant<int, mode>) for the plan's mode.
template <typename Launch>
void with_mode(int mode, Launch&& launch) {
  if (mode == kAllShared) {
    launch(std::integral_constant<int, kAllShared>{});
  } else if (mode == kScratchShared) {
    launch(std::integral_constant<int, kScratchShared>{});
  } else {
    launch(std::integral_constant<int, kGlobalScratch>{});
  }
}

}  // namespace cbam
}  // namespace gpu
}  // namespace meanspot
