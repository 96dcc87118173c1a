// TV-L1 optical flow math shared by the CPU and CUDA kernels of
// meanspot_fused::tvl1_flow.
//
// The solver is OpenCV's DualTVL1OpticalFlow (opencv_contrib optflow,
// following Sanchez, Meinhardt-Llopis, Facciolo, IPOL 2013), step for step, so
// that the same frames give the same flow and the same early stops:
//   pyramid   level s+1 = resize(level s, factor scale_step, INTER_LINEAR);
//             levels under 16 px in either side are dropped;
//   per level p = 0; `warps` times: warp I1, I1x, I1y by the flow (bicubic,
//             A = -0.75, constant-0 border), then up to outer x inner
//             primal-dual iterations, the flow median-filtered before each
//             outer one; stop once the summed squared update of an inner
//             iteration (a serial float sum, row-major) is <= eps^2 * pixels;
//   between levels the flow is resized (INTER_LINEAR) and divided by scale_step.
// Everything here is a pure function of its arguments; the kernels own the
// loops, the memory layout and the parallel split.
#pragma once

#include <cmath>
#include <cstdint>

#ifdef __CUDACC__
#define TVL1_HD __host__ __device__ __forceinline__
#else
#define TVL1_HD inline
#endif

namespace meanspot {
namespace tvl1 {

// The solver's parameters, in OpenCV's names and meaning.
// Kept in double where OpenCV keeps them in double: its derived float
// constants (lambda * theta, tau / theta, eps^2 * pixels) are rounded once.
struct Params {
  double tau;         // time step of the dual update
  double lambda;      // weight of the data term
  double theta;       // coupling of u and v
  double epsilon;     // stopping threshold (per pixel, in px)
  double scale_step;  // pyramid factor, in (0, 1)
  int scales;         // requested pyramid levels (fewer when a side drops under 16 px)
  int warps;          // warpings per level
  int inner;          // inner iterations per outer iteration
  int outer;          // outer iterations per warping
  int median;         // median filter size: 0 or 1 (off), 3 or 5
  int remap;          // bicubic remap of the warps: a Remap
};

// Which OpenCV's cv::remap(INTER_CUBIC) the warps reproduce (PIPELINE.md
// section 3b); everything else in the solver is the same in every line.
//   kRemapOpenCV4:   4.0 to 4.13 (MEAN's 4.5.1): scalar remapBicubic;
//   kRemapOpenCV414: 4.14's x86-64 wheel on an FMA CPU: the same grid, weights
//                    and border, the interior of one-channel float images
//                    summed by its SIMD path (remapBicubicC1wp_run);
//   kRemapOpenCV5:   5.x: exact fractions, separable fused accumulation.
enum Remap : int { kRemapOpenCV4 = 0, kRemapOpenCV414 = 1, kRemapOpenCV5 = 2 };

// Smallest side a pyramid level may have (OpenCV drops smaller levels).
constexpr int kMinLevelSide = 16;
// 1024 * 0.8^18 < 16: no admissible frame size and step reach this many levels.
constexpr int kMaxLevels = 64;

// cvRound of a non-negative double: round half to even, as lrint.
TVL1_HD int round_half_even(double v) {
#ifdef __CUDA_ARCH__
  return __double2int_rn(v);
#else
  return static_cast<int>(std::nearbyint(v));
#endif
}

// Pyramid level sizes. Level 0 is H x W; level s is OpenCV's
// resize(level s-1, Size(), step, step): round(side * step) per side.
struct Pyramid {
  int levels;
  int height[kMaxLevels];
  int width[kMaxLevels];
  int64_t offset[kMaxLevels];  // start of level s in a buffer holding all levels back to back
  int64_t total;               // pixels of all levels
};

TVL1_HD Pyramid make_pyramid(int height, int width, const Params& p) {
  Pyramid py;
  py.levels = 1;
  py.height[0] = height;
  py.width[0] = width;
  py.offset[0] = 0;
  py.total = int64_t(height) * width;
  for (int s = 1; s < p.scales && s < kMaxLevels; ++s) {
    const int h = round_half_even(py.height[s - 1] * p.scale_step);
    const int w = round_half_even(py.width[s - 1] * p.scale_step);
    if (h < kMinLevelSide || w < kMinLevelSide) break;
    py.height[s] = h;
    py.width[s] = w;
    py.offset[s] = py.total;
    py.total += int64_t(h) * w;
    py.levels = s + 1;
  }
  return py;
}

// One output coordinate of OpenCV's INTER_LINEAR resize along an axis of n
// source samples: src = (d + 0.5) * scale - 0.5 in double, two taps s0, s1
// with weights 1 - t and t, clamped at both ends to the edge sample.
struct LinearTap {
  int s0, s1;
  float t;
};

TVL1_HD LinearTap linear_tap(int d, double scale, int n) {
#ifdef __CUDA_ARCH__
  // nvcc contracts a * b - c into an FMA unless the operations are spelled out.
  const double f = __dsub_rn(__dmul_rn(d + 0.5, scale), 0.5);
#else
  const double f = (d + 0.5) * scale - 0.5;
#endif
  int s = static_cast<int>(floor(f));
  float t = static_cast<float>(f - s);
  if (s < 0) {
    s = 0;
    t = 0.f;
  }
  if (s >= n - 1) {
    s = n - 1;
    t = 0.f;
  }
  return {s, s + 1 < n ? s + 1 : n - 1, t};
}

// Rounding-exact arithmetic. OpenCV's solver code is built without FMA
// contraction, while its resize and remap kernels use explicit FMAs; the
// iterations amplify any last-bit difference (a one-ulp change of the
// pyramid moves the flow by 0.02 px on average), so every operation below is
// spelled out. On the host the including file turns contraction off; on the
// device the _rn intrinsics are never contracted.
#ifdef __CUDA_ARCH__
TVL1_HD float mul(float a, float b) { return __fmul_rn(a, b); }
TVL1_HD float add(float a, float b) { return __fadd_rn(a, b); }
TVL1_HD float sub(float a, float b) { return __fsub_rn(a, b); }
TVL1_HD float div(float a, float b) { return __fdiv_rn(a, b); }
TVL1_HD float fma(float a, float b, float c) { return __fmaf_rn(a, b, c); }
#else
TVL1_HD float mul(float a, float b) { return a * b; }
TVL1_HD float add(float a, float b) { return a + b; }
TVL1_HD float sub(float a, float b) { return a - b; }
TVL1_HD float div(float a, float b) { return a / b; }
TVL1_HD float fma(float a, float b, float c) { return std::fma(a, b, c); }
#endif

// OpenCV's linear interpolation between two taps: a + t * (b - a), fused.
TVL1_HD float lerp_taps(float a, float b, float t) { return fma(t, sub(b, a), a); }

// OpenCV's bicubic weights (Keys, A = -0.75) for the taps at -1, 0, +1, +2
// around a sample at fractional offset t in [0, 1] (t = v - floor(v), not
// quantised), in OpenCV 5's order of operations (established bit for bit
// against cv2.remap): with s = 1 - t, the outer taps A * (t * s^2) and
// A * (s * t^2), the centre-left tap 1 + t^2 * ((A + 2) t - (A + 3)) with both
// steps fused, the centre-right one the remainder of 1.
TVL1_HD void cubic_weights(float t, float w[4]) {
  const float A = -0.75f;
  const float s = sub(1.f, t);
  const float tt = mul(t, t);
  const float ss = mul(s, s);
  w[0] = mul(A, mul(t, ss));
  w[3] = mul(A, mul(s, tt));
  w[1] = fma(tt, fma(A + 2.f, t, -(A + 3.f)), 1.f);
  w[2] = sub(sub(sub(1.f, w[0]), w[1]), w[3]);
}

// Four taps times their weights, accumulated as OpenCV's remap does: the
// first product rounded, the others fused in tap order (rows along x, then
// the four row results along y).
TVL1_HD float dot4(const float v[4], const float w[4]) {
  return fma(v[3], w[3], fma(v[2], w[2], fma(v[1], w[1], mul(v[0], w[0]))));
}

// Warp positions further than this outside the image have all 16 taps on the
// constant-0 border; clamping there keeps the int conversion defined.
TVL1_HD float clamp_warp(float v, int n) {
  return v < -8.f ? -8.f : (v > float(n + 8) ? float(n + 8) : v);
}

// Thresholding step of the primal-dual scheme (OpenCV's estimateV): given the
// flow u, the warped gradient (ix, iy), its squared norm grad and the constant
// part rho_c of the linearised residual, returns v = u + d.
TVL1_HD void threshold_step(float u1, float u2, float ix, float iy, float grad, float rho_c, float l_t,
                            float& v1, float& v2) {
  const float rho = add(rho_c, add(mul(ix, u1), mul(iy, u2)));
  float d1 = 0.f, d2 = 0.f;
  if (rho < mul(-l_t, grad)) {
    d1 = mul(l_t, ix);
    d2 = mul(l_t, iy);
  } else if (rho > mul(l_t, grad)) {
    d1 = mul(-l_t, ix);
    d2 = mul(-l_t, iy);
  } else if (grad > 1.1920928955078125e-07f) {  // FLT_EPSILON
    const float fi = div(-rho, grad);
    d1 = mul(fi, ix);
    d2 = mul(fi, iy);
  }
  v1 = add(u1, d1);
  v2 = add(u2, d2);
}

// Dual update of one (p_x, p_y) pair from the forward gradient (gx, gy) of
// its flow component: p = (p + taut * g) / (1 + taut * |g|), |g| as OpenCV's
// double-precision hypot rounded to float (squares of floats are exact in
// double, so one rounding of the sum and one of the root remain).
TVL1_HD void dual_step(float gx, float gy, float taut, float& px, float& py) {
#ifdef __CUDA_ARCH__
  const double sq = __dadd_rn(__dmul_rn(gx, gx), __dmul_rn(gy, gy));
#else
  const double sq = double(gx) * double(gx) + double(gy) * double(gy);
#endif
  const float ng = add(1.f, mul(taut, static_cast<float>(sqrt(sq))));
  px = div(add(px, mul(taut, gx)), ng);
  py = div(add(py, mul(taut, gy)), ng);
}

// Primal update of one pixel (OpenCV's estimateV then estimateU): the flow
// (u1, u2) moves to v + theta * div p; term is the squared update that the
// stopping rule sums.
TVL1_HD void primal_step(float ix, float iy, float grad, float rho_c, float div1, float div2, float l_t,
                         float theta, float& u1, float& u2, float& term) {
  float v1, v2;
  threshold_step(u1, u2, ix, iy, grad, rho_c, l_t, v1, v2);
  const float n1 = add(v1, mul(theta, div1)), n2 = add(v2, mul(theta, div2));
  const float d1 = sub(n1, u1), d2 = sub(n2, u2);
  u1 = n1;
  u2 = n2;
  term = add(mul(d1, d1), mul(d2, d2));
}

// OpenCV's calcGradRho for one pixel from the warped I1 (w, wx, wy).
TVL1_HD void grad_rho(float i1w, float wx, float wy, float u1, float u2, float i0, float& grad, float& rho_c) {
  grad = add(mul(wx, wx), mul(wy, wy));
  rho_c = sub(sub(sub(i1w, mul(wx, u1)), mul(wy, u2)), i0);
}

// Bicubic taps of the warp of pixel (x, y) by (u1, u2) on an h x w level:
// first tap (x0, y0) (possibly outside: those taps read the constant 0) and
// the weights along each axis.
TVL1_HD void warp_taps(int x, int y, float u1, float u2, int h, int w, int& x0, int& y0, float wx[4], float wy[4]) {
  const float mx = clamp_warp(add(float(x), u1), w);
  const float my = clamp_warp(add(float(y), u2), h);
  const float fx = floorf(mx), fy = floorf(my);
  x0 = int(fx) - 1;
  y0 = int(fy) - 1;
  cubic_weights(sub(mx, fx), wx);
  cubic_weights(sub(my, fy), wy);
}

// --- OpenCV 4.x's bicubic remap (imgproc/src/imgwarp.cpp, 4.x line) ------------------------------------------
// 4.x quantises each map coordinate to a 1/32-pixel grid, X = cvRound(x * 32)
// (half to even), takes the first tap at (X >> 5) - 1 and the weights from a
// 32 x 32 table of products of 1-D coefficients; it sums plain products (its
// generic code is built without FMA), row by row, and at the border adds the
// taps inside the image one by one onto 0 (BORDER_CONSTANT, value 0).

constexpr int kLegacyTabBits = 5;
constexpr int kLegacyTabSize = 1 << kLegacyTabBits;

// OpenCV 4's interpolateCubic at x = k / 32, k in [0, 32): the four 1-D
// coefficients in its order of operations, each step rounded to float.
TVL1_HD void legacy_cubic_coeffs(int k, float c[4]) {
  const float A = -0.75f;
  const float x = mul(1.f / kLegacyTabSize, float(k));
  const float x1 = add(x, 1.f);
  c[0] = sub(mul(add(mul(sub(mul(A, x1), 5.f * A), x1), 8.f * A), x1), 4.f * A);
  c[1] = add(mul(mul(sub(mul(A + 2.f, x), A + 3.f), x), x), 1.f);
  const float r = sub(1.f, x);
  c[2] = add(mul(mul(sub(mul(A + 2.f, r), A + 3.f), r), r), 1.f);
  c[3] = sub(sub(sub(1.f, c[0]), c[1]), c[2]);
}

// The 4.x warp position of pixel (x, y) by (u1, u2) on an h x w level: first
// tap (x0, y0), the quantised fractions fx, fy in [0, 32) and whether all 16
// taps lie inside the level (4.x's interior test; when false, taps outside
// must read 0 and the taps are summed in order by legacy_border_sum).
TVL1_HD bool legacy_warp_position(int x, int y, float u1, float u2, int h, int w, int& x0, int& y0, int& fx,
                                  int& fy) {
#ifdef __CUDA_ARCH__
  const int qx = __float2int_rn(mul(clamp_warp(add(float(x), u1), w), float(kLegacyTabSize)));
  const int qy = __float2int_rn(mul(clamp_warp(add(float(y), u2), h), float(kLegacyTabSize)));
#else
  const int qx = int(std::nearbyint(mul(clamp_warp(add(float(x), u1), w), float(kLegacyTabSize))));
  const int qy = int(std::nearbyint(mul(clamp_warp(add(float(y), u2), h), float(kLegacyTabSize))));
#endif
  x0 = (qx >> kLegacyTabBits) - 1;  // arithmetic shift: floor for negative positions too
  y0 = (qy >> kLegacyTabBits) - 1;
  fx = qx & (kLegacyTabSize - 1);
  fy = qy & (kLegacyTabSize - 1);
  return unsigned(x0) < unsigned(w > 3 ? w - 3 : 0) && unsigned(y0) < unsigned(h > 3 ? h - 3 : 0);
}

// 4.x's 2-D weights of the quantised fractions (fx, fy): wt[i * 4 + j] =
// cy[i] * cx[j] (row i, column j), one float product, as its table holds them.
TVL1_HD void legacy_weights(int fx, int fy, float wt[16]) {
  float cx[4], cy[4];
  legacy_cubic_coeffs(fx, cx);
  legacy_cubic_coeffs(fy, cy);
  for (int i = 0; i < 4; ++i)
    for (int j = 0; j < 4; ++j) wt[i * 4 + j] = mul(cy[i], cx[j]);
}

// 4.x's interior sum of one 4 x 4 patch v (row-major, as wt): each row
// ((v0 w0 + v1 w1) + v2 w2) + v3 w3 of rounded products, the rows added in order.
TVL1_HD float legacy_interior_sum(const float v[16], const float wt[16]) {
  float sum = 0.f;
  for (int i = 0; i < 4; ++i) {
    const float* a = v + 4 * i;
    const float* b = wt + 4 * i;
    const float row = add(add(add(mul(a[0], b[0]), mul(a[1], b[1])), mul(a[2], b[2])), mul(a[3], b[3]));
    sum = i == 0 ? row : add(sum, row);
  }
  return sum;
}

// 4.14's interior sum on FMA CPUs: one accumulator per column j, starting
// at 0, fused with row i = 0..3 (v[i][j] * w[i][j]), then the four column
// sums reduced as (c0 + c2) + (c1 + c3) (v_reduce_sum of 4 lanes).
TVL1_HD float legacy_simd_interior_sum(const float v[16], const float wt[16]) {
  float c[4];
  for (int j = 0; j < 4; ++j) {
    c[j] = 0.f;
    for (int i = 0; i < 4; ++i) c[j] = fma(v[4 * i + j], wt[4 * i + j], c[j]);
  }
  return add(add(c[0], c[2]), add(c[1], c[3]));
}

// 4.x's border sum: 0 plus each product in row-major order. Taps outside the
// level hold 0 in v: their products are +-0, which leave a sum that starts at
// +0 unchanged (x + -0 = x, +0 + -0 = +0), exactly as 4.x skipping them; a
// patch wholly outside gives 0, 4.x's early exit.
TVL1_HD float legacy_border_sum(const float v[16], const float wt[16]) {
  float sum = 0.f;
  for (int t = 0; t < 16; ++t) sum = add(sum, mul(v[t], wt[t]));
  return sum;
}

// Median-selection networks for OpenCV's medianBlur (k = 3 or 5, replicated
// border). Built at compile time from Batcher's odd-even merge sort of 32
// inputs: slots past k*k are +inf and never compared, and comparators that
// cannot reach the middle output are pruned. Applying (lo[i], hi[i]) in order
// as `a = min, b = max` leaves the median in slot `out`.
struct MedianNet {
  int size;  // number of comparators
  int out;   // slot holding the median afterwards
  unsigned char lo[256];
  unsigned char hi[256];
};

constexpr MedianNet make_median_net(int n) {
  MedianNet net{0, 0, {}, {}};
  // slot[i]: the value slot the sorter's position i holds; -1 is +inf.
  int slot[32] = {};
  for (int i = 0; i < 32; ++i) slot[i] = i < n ? i : -1;
  unsigned char lo[256] = {}, hi[256] = {};
  int count = 0;
  for (int p = 1; p < 32; p <<= 1) {
    for (int k = p; k >= 1; k >>= 1) {
      for (int j = k % p; j + k < 32; j += 2 * k) {
        for (int i = 0; i < k && i + j + k < 32; ++i) {
          if ((i + j) / (2 * p) != (i + j + k) / (2 * p)) continue;
          const int a = i + j, b = i + j + k;
          if (slot[b] < 0) continue;  // max(x, inf) = inf stays at b: nothing to do
          if (slot[a] < 0) {          // the +inf moves up: a relabelling, no work
            slot[a] = slot[b];
            slot[b] = -1;
            continue;
          }
          lo[count] = static_cast<unsigned char>(slot[a]);
          hi[count] = static_cast<unsigned char>(slot[b]);
          ++count;
        }
      }
    }
  }
  const int out = slot[n / 2];
  // Backward liveness: keep a comparator only if one of its outputs is used.
  bool live[32] = {};
  live[out] = true;
  bool keep[256] = {};
  for (int c = count - 1; c >= 0; --c) {
    if (live[lo[c]] || live[hi[c]]) {
      keep[c] = true;
      live[lo[c]] = live[hi[c]] = true;
    }
  }
  for (int c = 0; c < count; ++c) {
    if (!keep[c]) continue;
    net.lo[net.size] = lo[c];
    net.hi[net.size] = hi[c];
    ++net.size;
  }
  net.out = out;
  return net;
}

// The K x K network as a compile-time table, for kernels that unroll it with
// constant slot indices (so the K * K values stay in registers).
template <int K>
struct MedianTable {
  static constexpr MedianNet net = make_median_net(K * K);
};

}  // namespace tvl1
}  // namespace meanspot
