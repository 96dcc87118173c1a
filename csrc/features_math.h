// Math of MEAN's features after the flow, shared by the CPU and CUDA kernels
// of meanspot_fused::mean_roi_features (the one definition; the kernels only
// loop). Every function is float32 and follows the step of MEAN's preProcess
// it names (see shared/design/PIPELINE.md, section 2):
//
//   flow (2, H, W) --cartToPolar + pol2cart--> u, v --strain--> os
//   --min-max over H x W per channel--> [0, 1] --ROI crop + INTER_LINEAR--> (3, 42, 42)
//
// The normalisation is affine and the resize linear, so the kernels
// normalise each resize tap instead of storing normalised maps.
#pragma once

#include <cmath>
#include <cstdint>

#include "meanspot_math.h"  // MSF_HOST_DEVICE

namespace meanspot {
namespace features {

// Output layout: (3, 42, 42) per pair, channels (u, v, os); rows
// [0, 21) the eyes ROI, rows [21, 42) the mouth ROI, each 42 columns wide.
constexpr int kChannels = 3;
constexpr int kRois = 2;
constexpr int kRoiRows = 21;
constexpr int kOutSize = 42;
// A box is 4 int64 [top, bottom, left, right): rows [top, bottom), columns [left, right).
constexpr int kBoxFields = 4;

// cartToPolar's angle. OpenCV (modules/core/src/mathfuncs_core.simd.hpp)
// approximates atan(c), c = min(|x|, |y|) / max(|x|, |y|) in [0, 1], by an odd
// degree-7 polynomial in degrees, then unfolds the octant. Its SIMD path,
// which serves every full vector of a row (all of a 128-wide map), evaluates
// the polynomial with fused multiply-adds and divides by max + DBL_EPSILON
// (as a float), so 0/0 gives angle 0. Coefficients: float(c_k) * float(180/pi).
constexpr float kRadToDeg = float(180.0 / 3.14159265358979323846);
constexpr float kDegToRad = float(3.14159265358979323846 / 180.0);
constexpr float kAtanP1 = 0.9997878412794807f * kRadToDeg;
constexpr float kAtanP3 = -0.3258083974640975f * kRadToDeg;
constexpr float kAtanP5 = 0.1555786518463281f * kRadToDeg;
constexpr float kAtanP7 = -0.04432655554792128f * kRadToDeg;
// (float)DBL_EPSILON: OpenCV's guard in the atan division and in cv2.normalize's range test.
constexpr float kDblEpsilon = float(2.220446049250313e-16);

// OpenCV's float atan2(y, x) in radians, in [0, 2 pi]; bitwise equal to
// cv2.cartToPolar's angle where both use FMA (checked in the tests).
MSF_HOST_DEVICE float opencv_atan2(float y, float x) {
  const float ax = ::fabsf(x), ay = ::fabsf(y);
  const float c = ::fminf(ax, ay) / (::fmaxf(ax, ay) + kDblEpsilon);
  const float cc = c * c;
  float a = ::fmaf(::fmaf(::fmaf(cc, kAtanP7, kAtanP5), cc, kAtanP3), cc, kAtanP1) * c;
  if (!(ax >= ay)) a = 90.f - a;
  if (x < 0.f) a = 180.f - a;
  if (y < 0.f) a = 360.f - a;
  return a * kDegToRad;
}

struct UV {
  float u, v;
};

// MEAN's u, v of one flow vector (fx, fy): magnitude and angle from
// cartToPolar (magnitude sqrt(fma(x, x, y * y)) as its SIMD path), then
// NumPy's pol2cart in float32: u = rho cos(phi), v = rho sin(phi).
MSF_HOST_DEVICE UV polar_round_trip(float fx, float fy) {
  const float rho = ::sqrtf(::fmaf(fx, fx, fy * fy));
  const float phi = opencv_atan2(fy, fx);
  return {rho * ::cosf(phi), rho * ::sinf(phi)};
}

// MEAN's optical strain at a pixel from u, v there (c), at the pixel on its
// left and the one above. pandas shift(1) leaves NaN in column 0 (for u_x,
// v_x) and row 0 (for u_y, v_y), and fillna(0) makes those differences 0.
// Evaluated in pandas' order: (u_x^2 + v_y^2) + 1/2 (u_y + v_x)^2, in float32
// as MEAN's float32 frames make it.
MSF_HOST_DEVICE float mean_strain(UV c, UV left, UV up, bool has_left, bool has_up) {
  const float u_x = has_left ? c.u - left.u : 0.f;
  const float v_x = has_left ? c.v - left.v : 0.f;
  const float u_y = has_up ? c.u - up.u : 0.f;
  const float v_y = has_up ? c.v - up.v : 0.f;
  const float s = u_y + v_x;
  return ::sqrtf(u_x * u_x + v_y * v_y + 0.5f * (s * s));
}

// One pair's flow, (2, H, W) float32 read through its strides (in elements;
// a stride may be 0 for an expanded tensor). Channel 0 is x, channel 1 is y.
struct FlowView {
  const float* data;
  int64_t stride_c, stride_y, stride_x;
  int height, width;

  MSF_HOST_DEVICE UV uv(int y, int x) const {
    const float* p = data + y * stride_y + x * stride_x;
    return polar_round_trip(p[0], p[stride_c]);
  }
};

// u, v, os of one pixel.
struct Maps {
  float c[kChannels];
};

// u, v, os at (y, x) straight from the flow, recomputing the two neighbours
// the strain needs (for kernels that keep no u, v planes).
MSF_HOST_DEVICE Maps maps_at(const FlowView& f, int y, int x) {
  const UV c = f.uv(y, x);
  const bool has_left = x > 0, has_up = y > 0;
  const UV left = has_left ? f.uv(y, x - 1) : c;
  const UV up = has_up ? f.uv(y - 1, x) : c;
  return {{c.u, c.v, mean_strain(c, left, up, has_left, has_up)}};
}

// Running minimum and maximum of each channel over the H x W map. fminf and
// fmaxf skip NaN; min and max are exact, so any reduction order gives the
// same result (the CUDA block reduction agrees with the CPU's serial loop).
struct Range {
  float lo[kChannels], hi[kChannels];

  MSF_HOST_DEVICE static Range empty() {
    Range r;
    for (int k = 0; k < kChannels; ++k) {
      r.lo[k] = INFINITY;
      r.hi[k] = -INFINITY;
    }
    return r;
  }
  MSF_HOST_DEVICE void add(const Maps& m) {
    for (int k = 0; k < kChannels; ++k) {
      lo[k] = ::fminf(lo[k], m.c[k]);
      hi[k] = ::fmaxf(hi[k], m.c[k]);
    }
  }
  MSF_HOST_DEVICE void merge(const Range& o) {
    for (int k = 0; k < kChannels; ++k) {
      lo[k] = ::fminf(lo[k], o.lo[k]);
      hi[k] = ::fmaxf(hi[k], o.hi[k]);
    }
  }
};

// cv2.normalize(NORM_MINMAX, alpha 0, beta 1) of each channel:
// (x - min) / (max - min), and 0 everywhere when max - min <= DBL_EPSILON
// (OpenCV's scale is then 0, so a constant channel becomes all 0). OpenCV
// computes x * scale + shift in float64; (x - min) * scale in float32 stays
// within about 2 ulp of it, where x * scale + shift in float32 would lose
// digits to cancellation.
struct Normaliser {
  float lo[kChannels], scale[kChannels];

  MSF_HOST_DEVICE explicit Normaliser(const Range& r) {
    for (int k = 0; k < kChannels; ++k) {
      const float span = r.hi[k] - r.lo[k];
      lo[k] = r.lo[k];
      scale[k] = span > kDblEpsilon ? 1.f / span : 0.f;
    }
  }
  MSF_HOST_DEVICE float operator()(int k, float x) const { return (x - lo[k]) * scale[k]; }
};

// The two source indices and weights of output index d when cv2.resize
// (INTER_LINEAR) maps `src` samples to `dst`: pixel centres at +0.5, so the
// source coordinate is f = (d + 0.5) * src / dst - 0.5, written as one
// correctly rounded division of exact integers ((2d + 1) src - dst) / (2 dst)
// (OpenCV rounds its float64 product to float; both give the nearest float).
// The weights are OpenCV's float 1 - frac and frac. Taps outside [0, src)
// clamp to the border, as OpenCV's x offsets (f < 0 or f >= src - 1: one tap
// of weight 1) and y row clamping do.
struct Tap {
  int i0, i1;
  float w0, w1;
};

MSF_HOST_DEVICE Tap linear_tap(int d, int dst, int src) {
  const float f = float((2 * d + 1) * src - dst) / float(2 * dst);
  int i = int(::floorf(f));
  float frac = f - float(i);
  if (i < 0) {
    i = 0;
    frac = 0.f;
  }
  if (i >= src - 1) {
    i = src - 1;
    frac = 0.f;
  }
  return {i, i + 1 < src ? i + 1 : i, 1.f - frac, frac};
}

// Whether a box lies inside an H x W map and is not empty.
MSF_HOST_DEVICE bool box_valid(const int64_t* box, int height, int width) {
  return 0 <= box[0] && box[0] < box[1] && box[1] <= height && 0 <= box[2] && box[2] < box[3] && box[3] <= width;
}

// Output pixel (oy, ox) of the (3, 42, 42) features: ROI oy / 21 of `boxes`
// ((2, 4) int64, eyes then mouth), resized to 21 x 42, its four taps
// normalised then blended in OpenCV's order (horizontal, then vertical).
// `sample(y, x)` returns the raw Maps of a source pixel; kernels differ only
// in where that comes from (stored planes on the CPU, recomputed on CUDA).
template <typename Sample>
MSF_HOST_DEVICE Maps roi_pixel(const Sample& sample, const Normaliser& norm, const int64_t* boxes, int oy, int ox) {
  const int64_t* box = boxes + (oy / kRoiRows) * kBoxFields;
  const int top = int(box[0]), left = int(box[2]);
  const Tap ty = linear_tap(oy % kRoiRows, kRoiRows, int(box[1] - box[0]));
  const Tap tx = linear_tap(ox, kOutSize, int(box[3] - box[2]));
  const Maps m00 = sample(top + ty.i0, left + tx.i0), m01 = sample(top + ty.i0, left + tx.i1);
  const Maps m10 = sample(top + ty.i1, left + tx.i0), m11 = sample(top + ty.i1, left + tx.i1);
  Maps out;
  for (int k = 0; k < kChannels; ++k) {
    const float r0 = norm(k, m00.c[k]) * tx.w0 + norm(k, m01.c[k]) * tx.w1;
    const float r1 = norm(k, m10.c[k]) * tx.w0 + norm(k, m11.c[k]) * tx.w1;
    out.c[k] = r0 * ty.w0 + r1 * ty.w1;
  }
  return out;
}

}  // namespace features
}  // namespace meanspot
