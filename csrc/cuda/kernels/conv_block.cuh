// Device code of meanspot_fused::conv_block (float16, bfloat16, float32, float64;
// accumulation in acc_t):
//   out[n][co][oh][ow] = max over the pool x pool window of
//                        scale[co] * relu(bias[co] + conv_same(x, weight)[n][co][h][w]) + shift[co]
// (max with NaN propagation, scale/shift 1 and 0 when absent).
//
// Work split (tiled kernel): one block per (sample n, block of COB output
// channels, tile of `tile_rows` pooled rows): blockIdx.x is the (channel
// block, tile) pair, blockIdx.y a grid-stride over the samples.
// The block stages in shared memory the zero-padded input rows its tile needs
// (Cin x (tile_rows * pool + K - 1) x (W + K - 1), halo included) and the
// COB x Cin x K x K weights, then each thread produces one pooled pixel for all
// COB channels: it runs the pool x pool conv outputs of its window with COB
// accumulators in registers (blocks.cuh's conv_window, which the network
// kernel's convs use too: one shared-memory input read feeds COB FMAs,
// weights are warp-wide broadcasts), applies relu_affine and folds them with
// nan_max. tile_rows is the whole height unless shared memory (48 KB) or too
// few blocks for the device ask for less.
// Fallback kernel, when even one pooled row of input does not fit in shared
// memory: one thread per pooled output (n, co, oh, ow), reading x and weight
// from global memory (L1/L2).
// x is read through its strides (any layout, expanded batches included; see
// gpu::Strides4); the weights are made contiguous (they are small). Taps on the
// 'same' zero padding are multiplied like any other, as the CPU kernel does on
// its zero-padded copy: a NaN or inf weight gives NaN at the borders on both.
// Host wrapper: ../conv_block_cuda.cu; plan() below picks the kernel and its
// launch for both the wrapper and the SIMT emulator (tests/cuda_emu).
#pragma once

#include <algorithm>
#include <cstdint>
#include <type_traits>

#include "blocks.cuh"
#include "common.cuh"

namespace meanspot {
namespace gpu {
namespace conv_block {

constexpr int kThreads = 256;

struct ConvShape {
  int64_t batch;
  int cin, height, width, cout, kernel, pool, out_height, out_width;
  gpu::Strides4 x;  // element strides of x
};

// Host-side sizes of the tiled kernel's shared memory, in bytes.
template <typename acc, int COB>
int64_t tiled_smem_bytes(const ConvShape& s, int tile_rows) {
  const int64_t rows = int64_t(tile_rows) * s.pool + s.kernel - 1, padded_width = s.width + s.kernel - 1;
  return gpu::smem_bytes<acc>(s.cin * rows * padded_width) +
         gpu::smem_bytes<acc>(int64_t(COB) * s.cin * s.kernel * s.kernel) + gpu::smem_bytes<acc>(3 * COB);
}

// Blocks of kThreads per SM that the tiled kernel's registers must allow (the
// second argument of __launch_bounds__; 65536 registers per SM). Without it
// ptxas aims at an occupancy step of its own and spills registers to reach it.
// Chosen per variant and architecture (ptxas for sm_80 needs more registers
// for the same code) as a count at which ptxas compiles the variant without
// spills or a stack frame (benchmarks/ptxas_report.sh 80 / 90 checks), tried
// from the occupancy ptxas aimed at downwards: the COB accumulators and pool
// maxima of a thread grow with COB, and are twice as wide in double (double
// with COB 8 on sm_80 needs 196 registers: one block per SM). __CUDA_ARCH__ is
// defined in each device pass only; the host pass ignores launch bounds.
template <typename acc, int COB>
constexpr int tiled_min_blocks() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 900
  if (sizeof(acc) == 8) return COB >= 8 ? 1 : COB >= 2 ? 4 : 6;
  return COB >= 8 ? 3 : COB >= 2 ? 4 : 8;
#else
  if (sizeof(acc) == 8) return COB >= 8 ? 2 : COB >= 2 ? 4 : 6;
  return COB >= 8 ? 3 : COB >= 4 ? 5 : COB >= 2 ? 6 : 8;
#endif
}

template <typename scalar_t, int COB>
__global__ void __launch_bounds__(kThreads, tiled_min_blocks<acc_t<scalar_t>, COB>())
conv_block_tiled_kernel(const scalar_t* __restrict__ x, const scalar_t* __restrict__ weight,
                        const scalar_t* __restrict__ bias, const scalar_t* __restrict__ scale,
                        const scalar_t* __restrict__ shift, ConvShape s, int tile_rows, int tiles,
                        scalar_t* __restrict__ out) {
  using acc = acc_t<scalar_t>;
  unsigned char* smem = gpu::dynamic_smem();
  const int kernel = s.kernel, pad = same_pad(kernel), kk = kernel * kernel, taps = s.cin * kk;
  const int rows = tile_rows * s.pool + kernel - 1;  // input rows staged per tile, halo included
  const int padded_width = s.width + kernel - 1;
  const int in_elems = s.cin * rows * padded_width;
  // Regions as sized by tiled_smem_bytes (each rounded up to 16 bytes).
  acc* s_in = reinterpret_cast<acc*>(smem);                                  // (cin, rows, padded_width)
  acc* s_w = s_in + gpu::smem_bytes<acc>(in_elems) / sizeof(acc);            // (COB, cin, K, K)
  acc* s_bias = s_w + gpu::smem_bytes<acc>(COB * taps) / sizeof(acc);        // (COB)
  acc* s_scale = s_bias + COB;                                               // (COB)
  acc* s_shift = s_scale + COB;                                              // (COB)

  // blockIdx.x = (channel block, tile), tile fastest: 32-bit, fixed per block;
  // only the sample index n changes (and lives in registers) across the loop.
  const int tile = int(blockIdx.x % unsigned(tiles)), co0 = int(blockIdx.x / unsigned(tiles)) * COB;
  for (int64_t n = blockIdx.y; n < s.batch; n += gridDim.y) {
    const int ph0 = tile * tile_rows;         // first pooled row of the tile
    const int row0 = ph0 * s.pool - pad;      // input row held in s_in row 0
    const scalar_t* __restrict__ xn = x + n * s.x.n;

    // Stage the input rows, zero outside the image ('same' padding, rows past
    // the last tile's end too: they only feed conv rows that are never pooled).
    for (int i = threadIdx.x; i < in_elems; i += blockDim.x) {
      const int ci = i / (rows * padded_width), rem = i - ci * rows * padded_width;
      const int ih = row0 + rem / padded_width, iw = rem % padded_width - pad;
      acc v = acc(0);
      if (ih >= 0 && ih < s.height && iw >= 0 && iw < s.width)
        v = static_cast<acc>(xn[ci * s.x.c + ih * s.x.h + iw * s.x.w]);
      s_in[i] = v;
    }
    // Weights of channels co0 .. co0 + COB - 1; channels past cout get zeros
    // (their results are computed and dropped, keeping the FMA loop uniform).
    for (int i = threadIdx.x; i < COB * taps; i += blockDim.x) {
      const int j = i / taps, co = co0 + j;
      s_w[i] = co < s.cout ? static_cast<acc>(weight[int64_t(co) * taps + (i - j * taps)]) : acc(0);
    }
    if (threadIdx.x < COB) {
      const int co = co0 + threadIdx.x;
      const bool valid = co < s.cout;
      s_bias[threadIdx.x] = valid ? static_cast<acc>(bias[co]) : acc(0);
      s_scale[threadIdx.x] = valid && scale != nullptr ? static_cast<acc>(scale[co]) : acc(1);
      s_shift[threadIdx.x] = valid && shift != nullptr ? static_cast<acc>(shift[co]) : acc(0);
    }
    __syncthreads();

    // Thread of pooled pixel (ph0 + lph, ow), all COB channels.
    const int items = min(tile_rows, s.out_height - ph0) * s.out_width;
    for (int it = threadIdx.x; it < items; it += blockDim.x) {
      const int lph = it / s.out_width, ow = it - lph * s.out_width;
      acc pooled[COB];
#pragma unroll
      for (int j = 0; j < COB; ++j) pooled[j] = gpu::lowest<acc>();
      for (int pi = 0; pi < s.pool; ++pi) {
        for (int pj = 0; pj < s.pool; ++pj) {
          // Conv output (lph * pool + pi, ow * pool + pj) of the tile reads
          // s_in rows lph * pool + pi + kh and padded columns ow * pool + pj + kw.
          const acc* in_win = s_in + (lph * s.pool + pi) * padded_width + ow * s.pool + pj;
          acc conv[COB];
#pragma unroll
          for (int j = 0; j < COB; ++j) conv[j] = s_bias[j];
          blocks::conv_window<COB, 0>(in_win, rows * padded_width, padded_width, s.cin, kernel, s_w, taps, conv);
#pragma unroll
          for (int j = 0; j < COB; ++j) pooled[j] = nan_max(pooled[j], relu_affine(conv[j], s_scale[j], s_shift[j]));
        }
      }
#pragma unroll
      for (int j = 0; j < COB; ++j) {
        if (co0 + j < s.cout)
          out[((n * s.cout + co0 + j) * s.out_height + ph0 + lph) * s.out_width + ow] = static_cast<scalar_t>(pooled[j]);
      }
    }
    __syncthreads();  // shared memory is restaged for the next work item
  }
}

// Thread of pooled output idx = (n, co, oh, ow) (ow fastest), grid-stride.
// Four blocks per SM: a register budget (64) that compiles without spills for
// sm_80 and sm_90 (ptxas otherwise spills to reach a higher occupancy step).
template <typename scalar_t>
__global__ void __launch_bounds__(kThreads, 4)
conv_block_global_kernel(const scalar_t* __restrict__ x, const scalar_t* __restrict__ weight,
                         const scalar_t* __restrict__ bias, const scalar_t* __restrict__ scale,
                         const scalar_t* __restrict__ shift, ConvShape s, scalar_t* __restrict__ out) {
  using acc = acc_t<scalar_t>;
  const int kernel = s.kernel, pad = same_pad(kernel);
  const int64_t total = s.batch * s.cout * s.out_height * s.out_width;
  const unsigned int first = blockIdx.x * blockDim.x + threadIdx.x, step = gridDim.x * blockDim.x;
  gpu::NchwWalk at(first, step, s.cout, s.out_height, s.out_width);
  for (int64_t idx = first; idx < total; idx += step, at.next()) {
    const int ow = at.w, oh = at.h, co = at.c;
    const int64_t n = at.n;
    const acc b = static_cast<acc>(bias[co]);
    const acc sc = scale != nullptr ? static_cast<acc>(scale[co]) : acc(1);
    const acc sh = shift != nullptr ? static_cast<acc>(shift[co]) : acc(0);
    const scalar_t* __restrict__ xn = x + n * s.x.n;
    const scalar_t* __restrict__ wc = weight + int64_t(co) * s.cin * kernel * kernel;
    acc pooled = gpu::lowest<acc>();
    for (int pi = 0; pi < s.pool; ++pi) {
      for (int pj = 0; pj < s.pool; ++pj) {
        const int h = oh * s.pool + pi, w = ow * s.pool + pj;
        acc conv = b;
        for (int ci = 0; ci < s.cin; ++ci) {
          for (int kh = 0; kh < kernel; ++kh) {
            const int ih = h - pad + kh;
            const bool row_inside = ih >= 0 && ih < s.height;
            const int64_t row = ci * s.x.c + ih * s.x.h;
            const scalar_t* w_row = wc + (ci * kernel + kh) * kernel;
            for (int kw = 0; kw < kernel; ++kw) {
              const int iw = w - pad + kw;
              // A tap on the zero padding still multiplies its weight (0 * NaN = NaN, as on the CPU).
              const bool inside = row_inside && iw >= 0 && iw < s.width;
              const acc v = inside ? static_cast<acc>(xn[row + iw * s.x.w]) : acc(0);
              conv += static_cast<acc>(w_row[kw]) * v;
            }
          }
        }
        pooled = nan_max(pooled, relu_affine(conv, sc, sh));
      }
    }
    out[idx] = static_cast<scalar_t>(pooled);
  }
}


// Launch of conv_block: the tiled kernel with `cob` output channels per block,
// or (cob 0) the global-memory kernel.
struct Plan {
  int cob;
  int tile_rows, tiles;
  dim3 grid;
  int threads;
  int64_t smem;        // dynamic shared memory, bytes
  int64_t per_sample;  // channel blocks x tiles of one sample (grid.x; the host checks it fits an int)
};

// The tiled kernel's launch with COB channels per block; false when one
// pooled row of input does not fit in shared memory.
template <typename acc, int COB>
bool tiled_plan(const ConvShape& s, const DeviceLimits& d, Plan& p) {
  constexpr int64_t kBudget = gpu::kDefaultSmemBytes;
  if (tiled_smem_bytes<acc, COB>(s, 1) > kBudget) return false;
  // Tallest tile that fits in shared memory (the size is linear in tile_rows
  // up to the 16-byte rounding of each region, which the loop absorbs) ...
  const int64_t per_row = int64_t(sizeof(acc)) * s.cin * s.pool * (s.width + s.kernel - 1);
  int tile_rows = int(std::max<int64_t>(
      1, std::min<int64_t>(s.out_height, (kBudget - tiled_smem_bytes<acc, COB>(s, 0)) / per_row)));
  while (tiled_smem_bytes<acc, COB>(s, tile_rows) > kBudget) --tile_rows;  // stops at 1 at the latest
  // ... and shorter when the batch alone would leave SMs idle.
  const int co_blocks = int(gpu::ceil_div(s.cout, COB));
  const int64_t samples_blocks = s.batch * co_blocks;
  const int64_t wanted_blocks = 4 * int64_t(d.sm_count);
  if (samples_blocks * gpu::ceil_div(s.out_height, tile_rows) < wanted_blocks) {
    const int64_t tiles_wanted = gpu::ceil_div(wanted_blocks, samples_blocks);
    tile_rows = int(std::max<int64_t>(1, std::min<int64_t>(tile_rows, gpu::ceil_div(s.out_height, tiles_wanted))));
  }
  p.cob = COB;
  p.tile_rows = tile_rows;
  p.tiles = int(gpu::ceil_div(s.out_height, tile_rows));
  p.threads = int(std::min<int64_t>(kThreads, gpu::ceil_div(int64_t(tile_rows) * s.out_width, 32) * 32));
  p.smem = tiled_smem_bytes<acc, COB>(s, tile_rows);
  // x: every (channel block, tile) of a sample; y: as many samples at a time
  // as keep the grid within grid_blocks' total (y <= 65535, the grid limit).
  p.per_sample = int64_t(co_blocks) * p.tiles;
  const int64_t samples_at_once =
      std::max<int64_t>(1, gpu::grid_blocks(samples_blocks * p.tiles, 1, d.max_blocks) / p.per_sample);
  p.grid = dim3(unsigned(p.per_sample), unsigned(std::min<int64_t>({s.batch, samples_at_once, 65535})));
  return true;
}

// Output channels per block: 8, or fewer (a power of two) for narrow convs;
// the global-memory kernel when even one pooled row does not fit.
template <typename acc>
Plan plan(const ConvShape& s, const DeviceLimits& d) {
  Plan p{};
  const bool tiled = s.cout >= 5   ? tiled_plan<acc, 8>(s, d, p)
                     : s.cout >= 3 ? tiled_plan<acc, 4>(s, d, p)
                     : s.cout == 2 ? tiled_plan<acc, 2>(s, d, p)
                                   : tiled_plan<acc, 1>(s, d, p);
  if (!tiled) {
    const int64_t outputs = s.batch * s.cout * s.out_height * s.out_width;
    p.cob = 0;
    p.threads = kThreads;
    p.smem = 0;
    p.grid = dim3(gpu::grid_blocks(outputs, kThreads, d.max_blocks));
  }
  return p;
}

// Calls launch(std::integral_constant<int, COB>) for the plan's COB (> 0).
template <typename Launch>
void with_cob(int cob, Launch&& launch) {
  switch (cob) {
    case 8: launch(std::integral_constant<int, 8>{}); break;
    case 4: launch(std::integral_constant<int, 4>{}); break;
    case 2: launch(std::integral_constant<int, 2>{}); break;
    default: launch(std::integral_constant<int, 1>{}); break;
  }
}

}  // namespace conv_block
}  // namespace gpu
}  // namespace meanspot
