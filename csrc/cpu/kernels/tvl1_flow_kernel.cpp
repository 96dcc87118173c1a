// CPU kernel of meanspot_fused::tvl1_flow, one instruction-set level (simd.h);
// the op's host side is csrc/cpu/tvl1_flow_cpu.cpp, the algorithm csrc/tvl1_math.h.
//
// Work split: the host runs pairs in parallel; one call here runs a range of
// pairs on one thread, each the whole coarse-to-fine solve in the thread's own
// workspace (about 29 floats per pixel of the finest level, 1.9 MB at
// 128x128: the four pyramids, 12 planes, the median's padded copy and the
// warp's interleaved texels; an inner iteration streams 11 planes, 720 KB at
// 128x128, about one core's L2).
// Within a pair the loops run along rows so the compiler vectorizes them; the
// median network and the warp taps are vectorized by hand. One inner iteration
// is one sweep: for row y the thresholding step, divergence and primal update
// (OpenCV's estimateV, divergence, estimateU), and, one row behind, the
// forward gradient and dual update of row y - 1 (forwardGradient,
// estimateDualVariables) — the same values as OpenCV's whole-image passes,
// since row y - 1's dual update needs the new flow of rows y - 1 and y only,
// and row y's divergence reads row y - 1's duals before they change.
//
// Stopping rule: OpenCV stops when its serial float sum of the squared
// updates, row-major, is <= eps^2 * pixels. The sum is taken here in double
// (vectorized); only when it lies within the worst-case rounding error of a
// serial float sum from the threshold is the serial float sum itself
// computed, so the decision, and with it the iteration count, is OpenCV's.
// Exact float rounding as OpenCV's solver (see tvl1_math.h): no FMA
// contraction in this file; the fused operations are explicit std::fma calls.
// Every level gives the same bits: vector width changes how many pixels one
// instruction handles, never an operation's rounding. The primal row loop has
// a division in one branch of the thresholding; it vectorizes (both branches
// computed, one selected) because the levels are built with
// -fno-trapping-math, which changes no result.
#pragma GCC optimize("fp-contract=off")

#include <algorithm>
#ifdef __FMA__
#include <immintrin.h>
#endif
#include <cfloat>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <utility>

#include "level.h"

namespace meanspot {
namespace cpu {
namespace CPU_CAPABILITY {
namespace {

using tvl1::LinearTap;
using tvl1::Params;
using tvl1::Pyramid;

// dst (dh x dw) = OpenCV's INTER_LINEAR resize of src (sh x sw) with the given
// source-per-destination scales; row0 and row1 hold one resized row (dw) each.
void resize_linear(const float* src, int sh, int sw, float* dst, int dh, int dw, double scale_y, double scale_x,
                   LinearTap* xtaps, float* row0, float* row1) {
  for (int x = 0; x < dw; ++x) xtaps[x] = tvl1::linear_tap(x, scale_x, sw);
  auto horizontal = [&](int sy, float* row) {
    const float* s = src + int64_t(sy) * sw;
    for (int x = 0; x < dw; ++x) row[x] = tvl1::lerp_taps(s[xtaps[x].s0], s[xtaps[x].s1], xtaps[x].t);
  };
  for (int y = 0; y < dh; ++y) {
    const LinearTap ty = tvl1::linear_tap(y, scale_y, sh);
    horizontal(ty.s0, row0);
    horizontal(ty.s1, row1);
    float* d = dst + int64_t(y) * dw;
    for (int x = 0; x < dw; ++x) d[x] = tvl1::lerp_taps(row0[x], row1[x], ty.t);
  }
}

// OpenCV's centeredGradient: central differences inside, one-sided (still
// halved) on the border rows and columns.
void centered_gradient(const float* src, int h, int w, float* dx, float* dy) {
  for (int y = 0; y < h; ++y) {
    const float* r = src + int64_t(y) * w;
    const float* up = src + int64_t(y > 0 ? y - 1 : y) * w;
    const float* dn = src + int64_t(y < h - 1 ? y + 1 : y) * w;
    float* gx = dx + int64_t(y) * w;
    float* gy = dy + int64_t(y) * w;
    gx[0] = 0.5f * (r[1] - r[0]);
    for (int x = 1; x < w - 1; ++x) gx[x] = 0.5f * (r[x + 1] - r[x - 1]);
    gx[w - 1] = 0.5f * (r[w - 1] - r[w - 2]);
    for (int x = 0; x < w; ++x) gy[x] = 0.5f * (dn[x] - up[x]);
  }
}

// One register of floats (simd.h): the median network below runs on kLanes
// pixels at once.
using VecF = Vec<float>::type;
constexpr int kLanes = Vec<float>::kLanes;

inline VecF load_lanes(const float* p) {
  VecF v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

// Comparator C of the K x K median network on kLanes lanes, with compile-time
// slots: lo = std::min(a, b), hi = std::max(a, b) lane by lane (for equal
// values both keep a, as std::min/std::max do).
template <int K, int C>
inline void median_comparator(VecF (&v)[K * K]) {
  constexpr int lo = tvl1::MedianTable<K>::net.lo[C];
  constexpr int hi = tvl1::MedianTable<K>::net.hi[C];
  const VecF a = v[lo], b = v[hi];
  v[lo] = b < a ? b : a;
  v[hi] = a < b ? b : a;
}

template <int K, int... C>
inline void median_network(VecF (&v)[K * K], std::integer_sequence<int, C...>) {
  (median_comparator<K, C>(v), ...);
}

// Floats of the padded copy median_filter<K> needs for an h x w plane, for
// K <= 5: K - 1 <= 4 replicated border rows and columns, and each row rounded
// up to whole kLanes blocks so that every load is a plain vector load.
constexpr int64_t median_pad_floats(int h, int w) {
  return int64_t(h + 4) * ((w + kLanes - 1) / kLanes * kLanes + 4);
}

// OpenCV's medianBlur (k = 3 or 5, replicated border) of an h x w float
// plane, in place; `pad` holds median_pad_floats(h, w) floats. Each 16-pixel
// block loads its K * K neighbours as K * K vectors and runs the unrolled
// network in registers; lanes past the row's end compute on replicated
// border values and are not stored.
template <int K>
void median_filter(float* plane, int h, int w, float* pad) {
  constexpr int r = K / 2;
  const int pw = (w + kLanes - 1) / kLanes * kLanes + 2 * r;
  for (int y = 0; y < h + 2 * r; ++y) {
    const float* s = plane + int64_t(std::min(std::max(y - r, 0), h - 1)) * w;
    float* d = pad + int64_t(y) * pw;
    for (int x = 0; x < r; ++x) d[x] = s[0];
    std::memcpy(d + r, s, sizeof(float) * w);
    for (int x = w + r; x < pw; ++x) d[x] = s[w - 1];
  }
  constexpr auto comparators = std::make_integer_sequence<int, tvl1::MedianTable<K>::net.size>{};
  for (int y = 0; y < h; ++y) {
    for (int x0 = 0; x0 < w; x0 += kLanes) {
      VecF v[K * K];
      for (int dy = 0; dy < K; ++dy)
        for (int dx = 0; dx < K; ++dx) v[dy * K + dx] = load_lanes(pad + int64_t(y + dy) * pw + x0 + dx);
      median_network<K>(v, comparators);
      std::memcpy(plane + int64_t(y) * w + x0, &v[tvl1::MedianTable<K>::net.out],
                  sizeof(float) * std::min(kLanes, w - x0));
    }
  }
}

// The warp reads I1, I1x and I1y through one interleaved copy with a border
// of zeros: pixel (y, x) at texels + ((y + kWarpPad) * row + x + kWarpPad) * 4
// holds (I1, I1x, I1y, 0), so one 4-float load fetches a tap of all three
// planes and taps outside the level read OpenCV's constant-0 border without a
// test. Warp positions are clamped to [-8, n + 8] (tvl1::clamp_warp), so taps
// lie in [-9, n + 10]: a border of 12 covers them.
constexpr int kWarpPad = 12;

constexpr int64_t warp_texel_floats(int h, int w) {
  return int64_t(h + 2 * kWarpPad) * (w + 2 * kWarpPad) * 4;
}

void interleave_texels(const float* i1, const float* i1x, const float* i1y, int h, int w, float* texels) {
  const int row = w + 2 * kWarpPad;
  std::fill(texels, texels + warp_texel_floats(h, w), 0.f);
  for (int y = 0; y < h; ++y) {
    float* t = texels + (int64_t(y + kWarpPad) * row + kWarpPad) * 4;
    const int64_t o = int64_t(y) * w;
    for (int x = 0; x < w; ++x) {
      t[4 * x] = i1[o + x];
      t[4 * x + 1] = i1x[o + x];
      t[4 * x + 2] = i1y[o + x];
    }
  }
}

// Four lanes (I1, I1x, I1y, unused) of one tap. Products and fused
// multiply-adds lane by lane, rounded exactly as tvl1::mul and tvl1::fma.
typedef float Vec4 __attribute__((vector_size(16)));

inline Vec4 load4(const float* p) {
  Vec4 v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

inline Vec4 fma4(Vec4 a, float b, Vec4 c) {
#ifdef __FMA__
  return _mm_fmadd_ps(a, _mm_set1_ps(b), c);
#else
  Vec4 r;
  for (int l = 0; l < 4; ++l) r[l] = std::fma(a[l], b, c[l]);
  return r;
#endif
}

// tvl1::dot4 of four taps, lane by lane: the first product rounded, the
// others fused in order.
inline Vec4 dot4_lanes(Vec4 v0, Vec4 v1, Vec4 v2, Vec4 v3, const float w[4]) {
  return fma4(v3, w[3], fma4(v2, w[2], fma4(v1, w[1], v0 * w[0])));
}

// Bicubic warp of I1 and its gradients by the flow (from the interleaved
// texels), then OpenCV's calcGradRho: per pixel the 4 x 4 taps of the three
// planes at once, rows along x then the rows along y, as tvl1::dot4.
void warp_level(const float* i0, const float* texels, const float* u1, const float* u2, int h, int w, float* iwx,
                float* iwy, float* grad, float* rho_c) {
  const int64_t row = (w + 2 * kWarpPad) * 4;
  for (int y = 0; y < h; ++y) {
    for (int x = 0; x < w; ++x) {
      const int64_t i = int64_t(y) * w + x;
      int x0, y0;
      float wx[4], wy[4];
      tvl1::warp_taps(x, y, u1[i], u2[i], h, w, x0, y0, wx, wy);
      const float* t = texels + (y0 + kWarpPad) * row + (x0 + kWarpPad) * 4;
      Vec4 rows[4];
      for (int k = 0; k < 4; ++k, t += row)
        rows[k] = dot4_lanes(load4(t), load4(t + 4), load4(t + 8), load4(t + 12), wx);
      const Vec4 warped = dot4_lanes(rows[0], rows[1], rows[2], rows[3], wy);
      iwx[i] = warped[1];
      iwy[i] = warped[2];
      tvl1::grad_rho(warped[0], warped[1], warped[2], u1[i], u2[i], i0[i], grad[i], rho_c[i]);
    }
  }
}

// OpenCV 4.x's 2-D bicubic weights of every quantised fraction, as its own
// table: at ((fy * 32 + fx) * 16) the 16 weights of tvl1::legacy_weights(fx,
// fy) (64 KB, built once per thread; a lookup in place of 24 dependent
// coefficient steps and 16 products per pixel).
constexpr int kLegacyTableFloats = tvl1::kLegacyTabSize * tvl1::kLegacyTabSize * 16;

void fill_legacy_table(float* table) {
  for (int fy = 0; fy < tvl1::kLegacyTabSize; ++fy)
    for (int fx = 0; fx < tvl1::kLegacyTabSize; ++fx)
      tvl1::legacy_weights(fx, fy, table + (fy * tvl1::kLegacyTabSize + fx) * 16);
}

// The warp as OpenCV 4.x's remap (tvl1::legacy_warp_position, weights from
// the table): the 16 taps of the three planes at once, each tap times its 2-D
// weight; the interior summed as tvl1::legacy_interior_sum (row by row,
// rounded products) or, for 4.14, as tvl1::legacy_simd_interior_sum (fused per
// column); the border tap by tap (taps outside read the zeros of the texel
// border, as tvl1::legacy_border_sum requires).
template <bool kSimd414>
void warp_level_legacy(const float* i0, const float* texels, const float* table, const float* u1, const float* u2,
                       int h, int w, float* iwx, float* iwy, float* grad, float* rho_c) {
  const int64_t row = (w + 2 * kWarpPad) * 4;
  for (int y = 0; y < h; ++y) {
    for (int x = 0; x < w; ++x) {
      const int64_t i = int64_t(y) * w + x;
      int x0, y0, fx, fy;
      const bool inside = tvl1::legacy_warp_position(x, y, u1[i], u2[i], h, w, x0, y0, fx, fy);
      const float* wt = table + (fy * tvl1::kLegacyTabSize + fx) * 16;
      const float* t = texels + (y0 + kWarpPad) * row + (x0 + kWarpPad) * 4;
      Vec4 warped;
      if (inside && kSimd414) {
        Vec4 col[4];
        for (int j = 0; j < 4; ++j) col[j] = fma4(load4(t + 4 * j), wt[j], Vec4{0.f, 0.f, 0.f, 0.f});
        for (int k = 1; k < 4; ++k)
          for (int j = 0; j < 4; ++j) col[j] = fma4(load4(t + k * row + 4 * j), wt[4 * k + j], col[j]);
        warped = (col[0] + col[2]) + (col[1] + col[3]);
      } else if (inside) {
        for (int k = 0; k < 4; ++k, t += row) {
          const float* q = wt + 4 * k;
          const Vec4 r = ((load4(t) * q[0] + load4(t + 4) * q[1]) + load4(t + 8) * q[2]) + load4(t + 12) * q[3];
          warped = k == 0 ? r : warped + r;
        }
      } else {
        warped = Vec4{0.f, 0.f, 0.f, 0.f};
        for (int k = 0; k < 4; ++k, t += row)
          for (int j = 0; j < 4; ++j) warped = warped + load4(t + 4 * j) * wt[4 * k + j];
      }
      iwx[i] = warped[1];
      iwy[i] = warped[2];
      tvl1::grad_rho(warped[0], warped[1], warped[2], u1[i], u2[i], i0[i], grad[i], rho_c[i]);
    }
  }
}

// Per-thread scratch for one pair, reused across the pairs of a thread.
struct Workspace {
  Buffer<float> data;
  Buffer<LinearTap> xtaps;
  Buffer<float> legacy;  // the 4.x weight table (fill_legacy_table) when a 4.x remap is asked for
  Workspace(int64_t floats, int width, bool legacy_remap)
      : data(floats), xtaps(width), legacy(legacy_remap ? kLegacyTableFloats : 0) {
    if (legacy_remap) fill_legacy_table(legacy.get());
  }
  float* take(int64_t& used, int64_t n) {
    float* p = data.get() + used;
    used += n;
    return p;
  }
};

// Floats of a pair's workspace (see solve_pair).
int64_t workspace_floats(int h, int w, const Pyramid& py) {
  return 4 * py.total + 12 * int64_t(h) * w + 2 * w + median_pad_floats(h, w) + warp_texel_floats(h, w) +
         2 * int64_t(w + 1);
}

struct Level {
  int h, w;
  float *u1, *u2, *p11, *p12, *p21, *p22, *iwx, *iwy, *grad, *rho_c, *term;
  const float* zero;  // a row of w zeros: the duals "above" row 0
};

// Row y of the thresholding, divergence and primal update; writes the squared
// update of each pixel to term.
inline void primal_row(const Level& L, int y, float l_t, float theta) {
  const int w = L.w;
  const int64_t o = int64_t(y) * w;
  const float* p11 = L.p11 + o;
  const float* p12 = L.p12 + o;
  const float* p21 = L.p21 + o;
  const float* p22 = L.p22 + o;
  const float* p12u = y > 0 ? L.p12 + o - w : L.zero;
  const float* p22u = y > 0 ? L.p22 + o - w : L.zero;
  float* u1 = L.u1 + o;
  float* u2 = L.u2 + o;
  const float* ix = L.iwx + o;
  const float* iy = L.iwy + o;
  const float* grad = L.grad + o;
  const float* rho = L.rho_c + o;
  float* term = L.term + o;
  auto update = [&](int x, float div1, float div2) {
    tvl1::primal_step(ix[x], iy[x], grad[x], rho[x], div1, div2, l_t, theta, u1[x], u2[x], term[x]);
  };
  // Column 0 in OpenCV's order of operations: (p1 + p2) - p2_above.
  update(0, y > 0 ? (p11[0] + p12[0]) - p12u[0] : p11[0] + p12[0],
         y > 0 ? (p21[0] + p22[0]) - p22u[0] : p21[0] + p22[0]);
#pragma omp simd
  for (int x = 1; x < w; ++x) {
    const float div1 = (p11[x] - p11[x - 1]) + (p12[x] - p12u[x]);
    const float div2 = (p21[x] - p21[x - 1]) + (p22[x] - p22u[x]);
    update(x, div1, div2);
  }
}

// Row y of the forward gradient of the new flow and the dual update.
inline void dual_row(const Level& L, int y, float taut) {
  const int w = L.w;
  const int64_t o = int64_t(y) * w;
  const bool last = y == L.h - 1;
  const float* u1 = L.u1 + o;
  const float* u2 = L.u2 + o;
  const float* u1d = last ? u1 : u1 + w;  // last row: zero vertical gradient
  const float* u2d = last ? u2 : u2 + w;
  float* p11 = L.p11 + o;
  float* p12 = L.p12 + o;
  float* p21 = L.p21 + o;
  float* p22 = L.p22 + o;
#pragma omp simd
  for (int x = 0; x < w - 1; ++x) {
    tvl1::dual_step(u1[x + 1] - u1[x], u1d[x] - u1[x], taut, p11[x], p12[x]);
    tvl1::dual_step(u2[x + 1] - u2[x], u2d[x] - u2[x], taut, p21[x], p22[x]);
  }
  const int x = w - 1;  // last column: zero horizontal gradient
  tvl1::dual_step(0.f, u1d[x] - u1[x], taut, p11[x], p12[x]);
  tvl1::dual_step(0.f, u2d[x] - u2[x], taut, p21[x], p22[x]);
}

// OpenCV's `error > scaledEpsilon` for error = the serial float sum of term.
bool update_above(const float* term, int64_t n, float threshold) {
  double fast = 0.0;
#pragma omp simd reduction(+ : fast)
  for (int64_t i = 0; i < n; ++i) fast += term[i];
  // |serial float sum - exact sum| <= (n - 1) * 2^-24 * sum for terms >= 0;
  // the double sum is exact to far better than the 1% margin.
  const double bound = 1.01 * double(n) * 0x1p-24 * fast;
  if (fast - bound > threshold) return true;
  if (fast + bound < threshold) return false;
  float serial = 0.f;
  for (int64_t i = 0; i < n; ++i) serial += term[i];
  return serial > threshold;
}

struct Counts {
  int64_t iterations = 0;
  int64_t pixel_iterations = 0;
};

// OpenCV's procOneScale on one level: the flow (u1, u2) is refined in place.
void solve_level(const float* i0, const float* i1, Level& L, const Params& p, float* i1x, float* i1y,
                 float* texels, float* median_pad, const float* legacy, Counts& counts) {
  const int h = L.h, w = L.w;
  const int64_t n = int64_t(h) * w;
  const float threshold = static_cast<float>(p.epsilon * p.epsilon * double(n));
  const float l_t = static_cast<float>(p.lambda * p.theta);
  const float taut = static_cast<float>(p.tau / p.theta);
  const float theta = static_cast<float>(p.theta);
  centered_gradient(i1, h, w, i1x, i1y);
  interleave_texels(i1, i1x, i1y, h, w, texels);
  for (float* d : {L.p11, L.p12, L.p21, L.p22}) std::fill(d, d + n, 0.f);
  for (int warp = 0; warp < p.warps; ++warp) {
    if (p.remap == tvl1::kRemapOpenCV4)
      warp_level_legacy<false>(i0, texels, legacy, L.u1, L.u2, h, w, L.iwx, L.iwy, L.grad, L.rho_c);
    else if (p.remap == tvl1::kRemapOpenCV414)
      warp_level_legacy<true>(i0, texels, legacy, L.u1, L.u2, h, w, L.iwx, L.iwy, L.grad, L.rho_c);
    else
      warp_level(i0, texels, L.u1, L.u2, h, w, L.iwx, L.iwy, L.grad, L.rho_c);
    bool above = true;
    for (int outer = 0; above && outer < p.outer; ++outer) {
      if (p.median == 3) {
        median_filter<3>(L.u1, h, w, median_pad);
        median_filter<3>(L.u2, h, w, median_pad);
      } else if (p.median == 5) {
        median_filter<5>(L.u1, h, w, median_pad);
        median_filter<5>(L.u2, h, w, median_pad);
      }
      for (int inner = 0; above && inner < p.inner; ++inner) {
        for (int y = 0; y < h; ++y) {
          primal_row(L, y, l_t, theta);
          if (y > 0) dual_row(L, y - 1, taut);
        }
        dual_row(L, h - 1, taut);
        above = update_above(L.term, n, threshold);
        counts.iterations += 1;
        counts.pixel_iterations += n;
      }
    }
  }
}

template <typename In>
void solve_pair(const In* prev, const In* next, int64_t stride_h, int64_t stride_w, int h, int w, const Params& p,
                const Pyramid& py, Workspace& ws, float* flow_x, float* flow_y, Counts& counts) {
  const int64_t n0 = int64_t(h) * w;
  int64_t used = 0;
  float* i0s = ws.take(used, py.total);
  float* i1s = ws.take(used, py.total);
  float* u1s = ws.take(used, py.total);
  float* u2s = ws.take(used, py.total);
  Level L;
  L.p11 = ws.take(used, n0);
  L.p12 = ws.take(used, n0);
  L.p21 = ws.take(used, n0);
  L.p22 = ws.take(used, n0);
  L.iwx = ws.take(used, n0);
  L.iwy = ws.take(used, n0);
  L.grad = ws.take(used, n0);
  L.rho_c = ws.take(used, n0);
  L.term = ws.take(used, n0);
  float* i1x = ws.take(used, n0);
  float* i1y = ws.take(used, n0);
  float* zero = ws.take(used, n0);
  float* row0 = ws.take(used, w);
  float* row1 = ws.take(used, w);
  float* median_pad = ws.take(used, median_pad_floats(h, w));
  float* texels = ws.take(used, warp_texel_floats(h, w));
  std::fill(zero, zero + w, 0.f);
  L.zero = zero;

  // OpenCV converts uint8 as is and float (taken in [0, 1]) times 255.
  const float gain = std::is_same<In, uint8_t>::value ? 1.f : 255.f;
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x) {
      const int64_t s = y * stride_h + x * stride_w;
      i0s[int64_t(y) * w + x] = static_cast<float>(prev[s]) * gain;
      i1s[int64_t(y) * w + x] = static_cast<float>(next[s]) * gain;
    }
  const double down = 1.0 / p.scale_step;
  for (int s = 1; s < py.levels; ++s) {
    const int sh = py.height[s - 1], sw = py.width[s - 1], dh = py.height[s], dw = py.width[s];
    resize_linear(i0s + py.offset[s - 1], sh, sw, i0s + py.offset[s], dh, dw, down, down, ws.xtaps.get(), row0, row1);
    resize_linear(i1s + py.offset[s - 1], sh, sw, i1s + py.offset[s], dh, dw, down, down, ws.xtaps.get(), row0, row1);
  }
  const int top = py.levels - 1;
  std::fill(u1s + py.offset[top], u1s + py.offset[top] + int64_t(py.height[top]) * py.width[top], 0.f);
  std::fill(u2s + py.offset[top], u2s + py.offset[top] + int64_t(py.height[top]) * py.width[top], 0.f);
  const float upscale = static_cast<float>(1.0 / p.scale_step);
  for (int s = top; s >= 0; --s) {
    L.h = py.height[s];
    L.w = py.width[s];
    L.u1 = u1s + py.offset[s];
    L.u2 = u2s + py.offset[s];
    solve_level(i0s + py.offset[s], i1s + py.offset[s], L, p, i1x, i1y, texels, median_pad, ws.legacy.get(), counts);
    if (s == 0) break;
    // Upsample to the finer level: resize to its size, then divide by the step.
    const int sh = L.h, sw = L.w, dh = py.height[s - 1], dw = py.width[s - 1];
    const double sy = 1.0 / (double(dh) / sh), sx = 1.0 / (double(dw) / sw);
    for (float* u : {u1s, u2s}) {
      float* dst = u + py.offset[s - 1];
      resize_linear(u + py.offset[s], sh, sw, dst, dh, dw, sy, sx, ws.xtaps.get(), row0, row1);
      const int64_t m = int64_t(dh) * dw;
      for (int64_t i = 0; i < m; ++i) dst[i] = dst[i] * upscale;
    }
  }
  std::memcpy(flow_x, u1s, sizeof(float) * n0);
  std::memcpy(flow_y, u2s, sizeof(float) * n0);
}

template <typename In>
void solve_pairs(const Tvl1Args& a, int64_t begin, int64_t end) {
  const In* prev = static_cast<const In*>(a.prev);
  const In* next = static_cast<const In*>(a.next);
  const int h = a.height, w = a.width;
  Workspace ws(workspace_floats(h, w, a.pyramid), w, a.params.remap != tvl1::kRemapOpenCV5);
  for (int64_t i = begin; i < end; ++i) {
    Counts c;
    float* fx = a.flow + i * 2 * int64_t(h) * w;
    solve_pair<In>(prev + i * a.prev_stride_n, next + i * a.next_stride_n, a.stride_h, a.stride_w, h, w, a.params,
                   a.pyramid, ws, fx, fx + int64_t(h) * w, c);
    a.counts[2 * i] = c.iterations;
    a.counts[2 * i + 1] = c.pixel_iterations;
  }
}

}  // namespace

void tvl1_flow_u8_kernel(const Tvl1Args& a, int64_t begin, int64_t end) { solve_pairs<uint8_t>(a, begin, end); }
void tvl1_flow_f32_kernel(const Tvl1Args& a, int64_t begin, int64_t end) { solve_pairs<float>(a, begin, end); }

}  // namespace CPU_CAPABILITY
}  // namespace cpu
}  // namespace meanspot
