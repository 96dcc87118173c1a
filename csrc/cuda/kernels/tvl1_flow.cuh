// Device code of meanspot_fused::tvl1_flow (schema in csrc/ops/tvl1_flow.cpp,
// algorithm and all shared math in csrc/tvl1_math.h, reference implementation
// in csrc/cpu/tvl1_flow_cpu.cpp, which this kernel reproduces value for value:
// same flow bits, same iteration counts).
//
// Design:
// - One thread block (kThreads = 1024 threads) per frame pair; the whole
//   coarse-to-fine solve of a pair (pyramid build, every level, warp, outer and
//   inner iteration, the upsampling between levels) runs inside ONE kernel
//   launch: no host loop per level or iteration. Blocks grid-stride over the
//   pairs; the grid is capped by the SM count and by a workspace budget.
// - Workspace in global memory, one tensor allocated by the host entry, one
//   slice per block: the pyramids of I0, I1, u1, u2 (Pyramid::total floats
//   each) and level-0-sized planes p11, p12, p21, p22, warped I1x, I1y, grad,
//   rho_c, term, I1x, I1y and two median scratch planes (kPlanes planes).
// - Phases carry the names of the CPU kernel's (csrc/cpu/kernels/
//   tvl1_flow_kernel.cpp: resize_linear, centered_gradient, warp_level,
//   median_filter, primal_row, dual_row, update_above), per pixel here.
// - Phases are separated by __syncthreads(): an inner iteration is a primal
//   pass (every pixel, OLD duals for the divergence; writes u and term), a
//   barrier, the dual pass (forward gradient of the NEW flow), a barrier; the
//   squared updates are summed during the primal pass (per thread in double,
//   then a fixed warp-shuffle tree, then the 32 warp sums read by every thread
//   in the same fixed order, so every thread takes the same decision without a
//   third barrier; the warp sums are double-buffered by iteration parity).
// - Stopping rule: OpenCV compares its serial float sum (row-major) of the
//   squared updates with eps^2 * pixels. The double sum decides unless it lies
//   within the worst-case error of the serial float sum from the threshold
//   (the CPU kernel's update_above, same bound); then thread 0 computes the
//   serial float sum of `term` itself and broadcasts the decision through
//   shared memory (rare; one more barrier). The decision is OpenCV's either way.
// - Exact rounding: every float operation of the solver goes through the _rn
//   intrinsics of tvl1_math.h (never contracted into FMAs), the explicit FMAs of
//   OpenCV's resize and remap through __fmaf_rn, so the device computes the
//   CPU kernel's values bit for bit. The median network's min/max are written
//   as std::min/std::max are ((b < a) ? b : a and (a < b) ? b : a), not
//   fminf/fmaxf, so signed zeros (and NaN) come out as on the CPU.
// - Frames are read through their strides (uint8 as is, float32 times 255, as
//   OpenCV); the flow and the iteration counts are written once at the end.
//
// Performance intent (not measured yet: this was written without a GPU): the
// target is batches of 128x128 pairs, one block per pair. A pair's workspace
// (~1.6 MB at 128x128) stays in L2 (50 MB on H100/H200) but not in L1, so the
// inner iterations are L2-bandwidth bound; the next steps are a
// shared-memory-resident version (the finest level's u, p, warped gradient and
// rho_c of a 128x128 pair do not fit in 227 KB as float32; a cluster of blocks
// with distributed shared memory does), fewer global writes of `term` and
// several pairs per block for small frames.
// Host wrapper: ../tvl1_flow_cuda.cu; plan() below is the launch both the
// wrapper and the SIMT emulator (tests/cuda_emu) use.
#pragma once

#include <algorithm>
#include <cstdint>
#include <type_traits>
#include <utility>

#include "../../tvl1_math.h"
#include "common.cuh"

namespace meanspot {
namespace gpu {
namespace tvl1_flow {

using tvl1::LinearTap;
using tvl1::Params;
using tvl1::Pyramid;

constexpr int kThreads = 1024;
constexpr int kWarps = kThreads / 32;
// Level-0-sized planes of a pair's workspace besides the four pyramids.
constexpr int kPlanes = 15;
// Workspace budget: fewer resident blocks for large frames (a 1024x1024 pair
// needs ~100 MB), never fewer than one.
constexpr int64_t kMaxWorkspaceBytes = int64_t(1) << 30;

// Floats of one pair's workspace slice, rounded up to 128 bytes.
inline int64_t workspace_floats(const Pyramid& py, int h, int w) {
  return (4 * py.total + kPlanes * int64_t(h) * w + 31) / 32 * 32;
}

// f(i, y, x) for the pixels i = threadIdx.x, threadIdx.x + kThreads, ... of an
// h x w plane (coordinates stepped incrementally: no division per pixel). Not
// unrolled: two pixels of the primal-dual passes at once do not fit in the 64
// registers of a 1024-thread block (the memory parallelism comes from the 32
// warps instead).
// Invariant the barriers rely on: on one level every pass gives pixel i to
// the same thread, so a pass that reads only its own pixel's values from the
// previous pass needs no barrier after it; barriers separate a write from a
// neighbour's read (stencils, the median, the resize) and the block-wide sums.
template <typename F>
__device__ __forceinline__ void for_pixels(int h, int w, F&& f) {
  const int n = h * w;
  const int step_y = kThreads / w, step_x = kThreads - step_y * w;
  int y = int(threadIdx.x) / w, x = int(threadIdx.x) - y * w;
#pragma unroll 1
  for (int i = threadIdx.x; i < n; i += kThreads) {
    f(i, y, x);
    x += step_x;
    y += step_y;
    if (x >= w) {
      x -= w;
      ++y;
    }
  }
}

// OpenCV's INTER_LINEAR resize, one destination pixel (x, y) of a plane of
// sw source columns: the two horizontal lerps of resize_linear's row buffers,
// then the vertical one.
__device__ __forceinline__ float resize_pixel(const float* __restrict__ src, int sw, const LinearTap& ty,
                                              const LinearTap& tx) {
  const float* r0 = src + int64_t(ty.s0) * sw;
  const float* r1 = src + int64_t(ty.s1) * sw;
  const float a = tvl1::lerp_taps(r0[tx.s0], r0[tx.s1], tx.t);
  const float b = tvl1::lerp_taps(r1[tx.s0], r1[tx.s1], tx.t);
  return tvl1::lerp_taps(a, b, ty.t);
}

// std::min / std::max exactly: the value kept on ties and NaNs is theirs.
__device__ __forceinline__ void sort2(float& a, float& b) {
  const float lo = (b < a) ? b : a, hi = (a < b) ? b : a;
  a = lo;
  b = hi;
}

// Comparator C of the K x K median network, its slots as compile-time indices.
template <int K, int C>
__device__ __forceinline__ void median_comparator(float (&v)[K * K]) {
  constexpr int lo = tvl1::MedianTable<K>::net.lo[C];
  constexpr int hi = tvl1::MedianTable<K>::net.hi[C];
  sort2(v[lo], v[hi]);
}

template <int K, int... C>
__device__ __forceinline__ void median_network(float (&v)[K * K], std::integer_sequence<int, C...>) {
  (median_comparator<K, C>(v), ...);
}

// OpenCV's medianBlur (replicated border) of pixel (x, y) of src (h x w).
template <int K>
__device__ __forceinline__ float median_pixel(const float* __restrict__ src, int h, int w, int y, int x) {
  constexpr int r = K / 2;
  float v[K * K];
#pragma unroll
  for (int dy = 0; dy < K; ++dy) {
    const int yy = min(max(y + dy - r, 0), h - 1);
    const float* row = src + int64_t(yy) * w;
#pragma unroll
    for (int dx = 0; dx < K; ++dx) v[dy * K + dx] = row[min(max(x + dx - r, 0), w - 1)];
  }
  median_network<K>(v, std::make_integer_sequence<int, tvl1::MedianTable<K>::net.size>{});
  return v[tvl1::MedianTable<K>::net.out];
}

// One pair's workspace slice: the four pyramids, then the level-0-sized planes.
// Plane addresses are computed where they are used (a base pointer and two
// sizes live in registers, not 17 pointers).
enum Plane { kP11, kP12, kP21, kP22, kIwx, kIwy, kGrad, kRhoC, kTerm, kI1x, kI1y, kMed1, kMed2 };
static_assert(kMed2 + 1 <= kPlanes, "workspace planes");

struct Work {
  float* base;
  int64_t total;  // Pyramid::total
  int n0;         // pixels of level 0
  __device__ __forceinline__ float* i0() const { return base; }
  __device__ __forceinline__ float* i1() const { return base + total; }
  __device__ __forceinline__ float* u1() const { return base + 2 * total; }
  __device__ __forceinline__ float* u2() const { return base + 3 * total; }
  __device__ __forceinline__ float* plane(Plane j) const { return base + 4 * total + int64_t(j) * n0; }
};

// The arrays of the level being solved, by slot: the planes, then the
// level's u1, u2, I0 and I1.
enum Slot { kU1 = kMed2 + 1, kU2, kI0, kI1, kSlots };

// One level's view. The array addresses are read from a shared-memory table
// (written once per level, before a barrier) at each use rather than kept in
// registers: barriers stop the compiler from hoisting the loads, so only the
// addresses of the pass at hand are live (17 hoisted 64-bit addresses spilled
// at 1024 threads).
struct Level {
  float* const* slot;  // shared memory, kSlots entries
  int h, w;
  __device__ __forceinline__ float* u1() const { return slot[kU1]; }
  __device__ __forceinline__ float* u2() const { return slot[kU2]; }
  __device__ __forceinline__ float* plane(int j) const { return slot[j]; }
};

// The 4 x 4 taps (row-major) of a level plane from (x0, y0); taps outside the
// level read OpenCV's constant-0 border (no test when `inside`).
__device__ __forceinline__ void load_patch(const float* __restrict__ src, int x0, int y0, int h, int w, bool inside,
                                           float v[16]) {
#pragma unroll
  for (int t = 0; t < 16; ++t) {
    const int yy = y0 + t / 4, xx = x0 + t % 4;
    v[t] = inside || (yy >= 0 && yy < h && xx >= 0 && xx < w) ? src[int64_t(yy) * w + xx] : 0.f;
  }
}

// warp_level (warp_level_legacy) of the CPU kernel at pixel (x, y): the
// bicubic warp of I1 and its gradients by the flow, then OpenCV's calcGradRho. remap (a tvl1::Remap): OpenCV 5.x's separable weights,
// rows along x then the rows along y (tvl1::dot4), or 4.x's 2-D weights with
// its interior and border sums.
__device__ __forceinline__ void warp_level_pixel(const Level& L, const float* __restrict__ i0, const float* __restrict__ i1,
                                           int i, int y, int x, int remap) {
  const int h = L.h, w = L.w;
  const float u1 = L.u1()[i], u2 = L.u2()[i];
  int x0, y0;
  float wt[16];  // 4.x: the 2-D weights; 5.x: wx in [0, 4), wy in [4, 8)
  bool inside;
  if (remap == tvl1::kRemapOpenCV5) {
    tvl1::warp_taps(x, y, u1, u2, h, w, x0, y0, wt, wt + 4);
    inside = x0 >= 0 && y0 >= 0 && x0 + 3 < w && y0 + 3 < h;
  } else {
    int fx, fy;
    inside = tvl1::legacy_warp_position(x, y, u1, u2, h, w, x0, y0, fx, fy);
    tvl1::legacy_weights(fx, fy, wt);
  }
  float warped[3];
#pragma unroll
  for (int c = 0; c < 3; ++c) {
    float v[16];
    load_patch(c == 0 ? i1 : L.plane(c == 1 ? kI1x : kI1y), x0, y0, h, w, inside, v);
    if (remap == tvl1::kRemapOpenCV5) {
      float rows[4];
#pragma unroll
      for (int r = 0; r < 4; ++r) rows[r] = tvl1::dot4(v + 4 * r, wt);
      warped[c] = tvl1::dot4(rows, wt + 4);
    } else {
      warped[c] = !inside                          ? tvl1::legacy_border_sum(v, wt)
                  : remap == tvl1::kRemapOpenCV414 ? tvl1::legacy_simd_interior_sum(v, wt)
                                                   : tvl1::legacy_interior_sum(v, wt);
    }
  }
  L.plane(kIwx)[i] = warped[1];
  L.plane(kIwy)[i] = warped[2];
  float grad, rho_c;
  tvl1::grad_rho(warped[0], warped[1], warped[2], u1, u2, i0[i], grad, rho_c);
  L.plane(kGrad)[i] = grad;
  L.plane(kRhoC)[i] = rho_c;
}

// primal_row of the CPU kernel at pixel (x, y): the thresholding, divergence
// (OLD duals) and primal update;
// returns the squared update (also stored in term for the serial sum).
__device__ __forceinline__ float primal_row_pixel(const Level& L, int i, int y, int x, float l_t, float theta) {
  using tvl1::add;
  using tvl1::sub;
  const int w = L.w;
  const float* p11 = L.plane(kP11);
  const float* p12 = L.plane(kP12);
  const float* p21 = L.plane(kP21);
  const float* p22 = L.plane(kP22);
  const float p12u = y > 0 ? p12[i - w] : 0.f;  // row 0: zero duals above
  const float p22u = y > 0 ? p22[i - w] : 0.f;
  float div1, div2;
  if (x == 0) {  // column 0 in OpenCV's order of operations: (p1 + p2) - p2_above
    div1 = y > 0 ? sub(add(p11[i], p12[i]), p12u) : add(p11[i], p12[i]);
    div2 = y > 0 ? sub(add(p21[i], p22[i]), p22u) : add(p21[i], p22[i]);
  } else {
    div1 = add(sub(p11[i], p11[i - 1]), sub(p12[i], p12u));
    div2 = add(sub(p21[i], p21[i - 1]), sub(p22[i], p22u));
  }
  float* pu1 = L.u1();
  float* pu2 = L.u2();
  float u1 = pu1[i], u2 = pu2[i], term;
  tvl1::primal_step(L.plane(kIwx)[i], L.plane(kIwy)[i], L.plane(kGrad)[i], L.plane(kRhoC)[i], div1, div2, l_t,
                    theta, u1, u2, term);
  pu1[i] = u1;
  pu2[i] = u2;
  L.plane(kTerm)[i] = term;
  return term;
}

// dual_row of the CPU kernel at pixel (x, y): the forward gradient of the NEW
// flow and the dual update.
__device__ __forceinline__ void dual_row_pixel(const Level& L, int i, int y, int x, float taut) {
  using tvl1::sub;
  const float* pu1 = L.u1();
  const float* pu2 = L.u2();
  const int below = y == L.h - 1 ? i : i + L.w;  // last row: zero vertical gradient
  const bool right = x < L.w - 1;                // last column: zero horizontal gradient
  const float u1 = pu1[i], u2 = pu2[i];
  const float g1x = right ? sub(pu1[i + 1], u1) : 0.f;
  const float g2x = right ? sub(pu2[i + 1], u2) : 0.f;
  float* q11 = L.plane(kP11);
  float* q12 = L.plane(kP12);
  float* q21 = L.plane(kP21);
  float* q22 = L.plane(kP22);
  float p11 = q11[i], p12 = q12[i], p21 = q21[i], p22 = q22[i];
  tvl1::dual_step(g1x, sub(pu1[below], u1), taut, p11, p12);
  tvl1::dual_step(g2x, sub(pu2[below], u2), taut, p21, p22);
  q11[i] = p11;
  q12[i] = p12;
  q21[i] = p21;
  q22[i] = p22;
}

// The solver's float constants, rounded once from the double parameters as
// OpenCV (and the CPU kernel) round them; kernel parameters, so they are read
// from the constant bank where used rather than held in registers.
struct Constants {
  float l_t;      // lambda * theta
  float taut;     // tau / theta
  float theta;
  float upscale;  // 1 / scale_step
  double down;    // 1 / scale_step, the pyramid's source-per-destination scale
};

inline Constants constants(const Params& p) {
  Constants c;
  c.l_t = static_cast<float>(p.lambda * p.theta);
  c.taut = static_cast<float>(p.tau / p.theta);
  c.theta = static_cast<float>(p.theta);
  c.down = 1.0 / p.scale_step;
  c.upscale = static_cast<float>(c.down);
  return c;
}

template <typename In>
__global__ void __launch_bounds__(kThreads, 1)
tvl1_flow_kernel(const In* __restrict__ prev, const In* __restrict__ next, int64_t prev_sn, int64_t prev_sh,
                 int64_t prev_sw, int64_t next_sn, int64_t next_sh, int64_t next_sw, int64_t pairs, const Params p,
                 const Constants c,
                 const __grid_constant__ Pyramid py, float* __restrict__ workspace, int64_t slice,
                 float* __restrict__ flow, int64_t* __restrict__ counts) {
  using tvl1::mul;
  using tvl1::sub;
  __shared__ double warp_sums[2][kWarps];  // by iteration parity (see the header)
  __shared__ int serial_above;
  __shared__ float* slots[kSlots];
  __shared__ int64_t iterations, pixel_iterations;  // written by thread 0 only

  const int h = py.height[0], w = py.width[0];
  const Work k{workspace + int64_t(blockIdx.x) * slice, py.total, h * w};
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  // OpenCV converts uint8 as is and float (taken in [0, 1]) times 255.
  const float gain = std::is_same<In, uint8_t>::value ? 1.f : 255.f;
  const float l_t = c.l_t, taut = c.taut, theta = c.theta, upscale = c.upscale;
  const double down = c.down;
  const int top = py.levels - 1;

  for (int64_t pair = blockIdx.x; pair < pairs; pair += gridDim.x) {
    // solve_pair: the frames as float (OpenCV's convertTo).
    {
      const In* a = prev + pair * prev_sn;
      const In* b = next + pair * next_sn;
      float* i0 = k.i0();
      float* i1 = k.i1();
      for_pixels(h, w, [&](int i, int y, int x) {
        i0[i] = mul(static_cast<float>(a[y * prev_sh + x * prev_sw]), gain);
        i1[i] = mul(static_cast<float>(b[y * next_sh + x * next_sw]), gain);
      });
    }
    __syncthreads();
    // The pyramids: resize_linear of each level from the one above.
    for (int s = 1; s < py.levels; ++s) {
      const int sh = py.height[s - 1], sw = py.width[s - 1];
      const float* a0 = k.i0() + py.offset[s - 1];
      const float* a1 = k.i1() + py.offset[s - 1];
      float* d0 = k.i0() + py.offset[s];
      float* d1 = k.i1() + py.offset[s];
      for_pixels(py.height[s], py.width[s], [&](int i, int y, int x) {
        const LinearTap ty = tvl1::linear_tap(y, down, sh), tx = tvl1::linear_tap(x, down, sw);
        d0[i] = resize_pixel(a0, sw, ty, tx);
        d1[i] = resize_pixel(a1, sw, ty, tx);
      });
      __syncthreads();
    }
    {
      float* u1 = k.u1() + py.offset[top];
      float* u2 = k.u2() + py.offset[top];
      for_pixels(py.height[top], py.width[top], [&](int i, int, int) {
        u1[i] = 0.f;
        u2[i] = 0.f;
      });
    }
    // (the barrier after the first level's gradient pass orders these stores)

    if (threadIdx.x == 0) {
      iterations = 0;
      pixel_iterations = 0;
    }
    int parity = 0;
    for (int s = top; s >= 0; --s) {
      if (threadIdx.x < kSlots) {
        const int j = threadIdx.x;
        const int64_t o = py.offset[s];
        slots[j] = j == kU1 ? k.u1() + o : j == kU2 ? k.u2() + o : j == kI0 ? k.i0() + o : j == kI1 ? k.i1() + o
                                                                                             : k.plane(Plane(j));
      }
      __syncthreads();
      const Level L{slots, py.height[s], py.width[s]};
      const int lh = L.h, lw = L.w;
      const int n = lh * lw;
      const float threshold = static_cast<float>(__dmul_rn(__dmul_rn(p.epsilon, p.epsilon), double(n)));

      // solve_level. centered_gradient: OpenCV's centeredGradient of I1 (one-sided, still halved, on the
      // border rows and columns); the duals start at 0 on every level.
      for_pixels(lh, lw, [&](int i, int y, int x) {
        const float* i1 = L.plane(kI1);
        const float* r = i1 + int64_t(y) * lw;
        const float* up = i1 + int64_t(y > 0 ? y - 1 : y) * lw;
        const float* dn = i1 + int64_t(y < lh - 1 ? y + 1 : y) * lw;
        const int xl = x > 0 ? x - 1 : x, xr = x < lw - 1 ? x + 1 : x;
        L.plane(kI1x)[i] = mul(0.5f, sub(r[xr], r[xl]));
        L.plane(kI1y)[i] = mul(0.5f, sub(dn[x], up[x]));
        L.plane(kP11)[i] = 0.f;
        L.plane(kP12)[i] = 0.f;
        L.plane(kP21)[i] = 0.f;
        L.plane(kP22)[i] = 0.f;
      });
      __syncthreads();

      for (int wi = 0; wi < p.warps; ++wi) {
        // warp_level (warp_level_legacy for the OpenCV 4 remaps).
        // No barrier after it: the median copy and the primal pass read the
        // warped planes and the flow at their own pixel only (see for_pixels).
        for_pixels(lh, lw, [&](int i, int y, int x) { warp_level_pixel(L, L.plane(kI0), L.plane(kI1), i, y, x, p.remap); });
        bool above = true;
        for (int outer = 0; above && outer < p.outer; ++outer) {
          if (p.median == 3 || p.median == 5) {  // median_filter of u1 and u2
            for_pixels(lh, lw, [&](int i, int, int) {
              L.plane(kMed1)[i] = L.u1()[i];
              L.plane(kMed2)[i] = L.u2()[i];
            });
            __syncthreads();
            // One plane per pass: the 5x5 network of both planes at once does
            // not fit in 64 registers.
            if (p.median == 3) {
              for_pixels(lh, lw, [&](int i, int y, int x) { L.u1()[i] = median_pixel<3>(L.plane(kMed1), lh, lw, y, x); });
              for_pixels(lh, lw, [&](int i, int y, int x) { L.u2()[i] = median_pixel<3>(L.plane(kMed2), lh, lw, y, x); });
            } else {
              for_pixels(lh, lw, [&](int i, int y, int x) { L.u1()[i] = median_pixel<5>(L.plane(kMed1), lh, lw, y, x); });
              for_pixels(lh, lw, [&](int i, int y, int x) { L.u2()[i] = median_pixel<5>(L.plane(kMed2), lh, lw, y, x); });
            }
            // No barrier: the primal pass reads the filtered flow at its own
            // pixel only; the dual pass, which reads neighbours, comes after
            // the primal pass's barrier.
          }
          for (int inner = 0; above && inner < p.inner; ++inner) {
            // primal_row, then dual_row, over the whole level.
            double part = 0.0;
            for_pixels(lh, lw, [&](int i, int y, int x) { part += double(primal_row_pixel(L, i, y, x, l_t, theta)); });
            part = warp_sum(part);
            if (lane == 0) warp_sums[parity][warp] = part;
            __syncthreads();
            for_pixels(lh, lw, [&](int i, int y, int x) { dual_row_pixel(L, i, y, x, taut); });
            __syncthreads();
            // update_above. Every thread sums the warp sums in the same order: one decision.
            double fast = 0.0;
#pragma unroll
            for (int j = 0; j < kWarps; ++j) fast = __dadd_rn(fast, warp_sums[parity][j]);
            parity ^= 1;
            // The CPU kernel's update_above: |serial float sum - exact sum| <=
            // (n - 1) * 2^-24 * sum for terms >= 0.
            const double bound = __dmul_rn(__dmul_rn(__dmul_rn(1.01, double(n)), 0x1p-24), fast);
            if (__dsub_rn(fast, bound) > double(threshold)) {
              above = true;
            } else if (__dadd_rn(fast, bound) < double(threshold)) {
              above = false;
            } else {  // too close to call: OpenCV's serial float sum (uniform branch)
              if (threadIdx.x == 0) {
                const float* term = L.plane(kTerm);
                float serial = 0.f;
                for (int i = 0; i < n; ++i) serial = tvl1::add(serial, term[i]);
                serial_above = serial > threshold;
              }
              __syncthreads();
              // No second barrier: thread 0 writes serial_above (and the block
              // term) again only after the next iteration's two barriers.
              above = serial_above != 0;
            }
            if (threadIdx.x == 0) {
              iterations += 1;
              pixel_iterations += n;
            }
          }
        }
      }
      if (s == 0) break;
      // Upsample the flow to the finer level (resize_linear), then divide by the step.
      const int dh = py.height[s - 1], dw = py.width[s - 1];
      const double sy = __ddiv_rn(1.0, __ddiv_rn(double(dh), double(lh)));
      const double sx = __ddiv_rn(1.0, __ddiv_rn(double(dw), double(lw)));
      const float* c1 = L.u1();
      const float* c2 = L.u2();
      float* f1 = k.u1() + py.offset[s - 1];
      float* f2 = k.u2() + py.offset[s - 1];
      for_pixels(dh, dw, [&](int i, int y, int x) {
        const LinearTap ty = tvl1::linear_tap(y, sy, lh), tx = tvl1::linear_tap(x, sx, lw);
        f1[i] = mul(resize_pixel(c1, lw, ty, tx), upscale);
        f2[i] = mul(resize_pixel(c2, lw, ty, tx), upscale);
      });
      __syncthreads();
    }
    {
      const int64_t n0 = k.n0;
      float* fx = flow + pair * 2 * n0;
      const float* u1 = k.u1();
      const float* u2 = k.u2();
      for_pixels(h, w, [&](int i, int, int) {
        fx[i] = u1[i];
        fx[n0 + i] = u2[i];
      });
    }
    if (threadIdx.x == 0) {
      counts[2 * pair] = iterations;
      counts[2 * pair + 1] = pixel_iterations;
    }
    // No barrier before the next pair: it first writes I0 and I1 of level 0
    // at the pixels each thread just copied out, then synchronises; the
    // counters are thread 0's own.
  }
}


// Launch of tvl1_flow over `pairs` frame pairs of h x w: one block per pair
// (grid-stride), at most one per SM and within the workspace budget; the
// workspace holds `slice` floats per block.
struct Plan {
  unsigned int blocks;
  int64_t slice;
};

inline Plan plan(const Pyramid& py, int h, int w, int64_t pairs, const DeviceLimits& d) {
  const int64_t slice = workspace_floats(py, h, w);
  const int64_t blocks = std::max<int64_t>(
      1, std::min<int64_t>({pairs, int64_t(d.sm_count), kMaxWorkspaceBytes / (slice * int64_t(sizeof(float)))}));
  return {static_cast<unsigned int>(blocks), slice};
}

}  // namespace tvl1_flow
}  // namespace gpu
}  // namespace meanspot
