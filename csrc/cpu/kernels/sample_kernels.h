// Per-sample CPU building blocks of MEAN-Spot, shared by the per-op kernels
// and the whole-network kernel (network_kernel.cpp), compiled once per
// instruction-set level (simd.h).
//
// Layout invariants: every activation is one sample's contiguous (C, H, W)
// plane stack; weights are PyTorch-contiguous (Cout, Cin, K, K). The inner
// loops run along a row (W contiguous) so that the compiler vectorizes them;
// all scratch is caller-provided so a parallel region allocates once per
// thread, not once per sample.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>

#include "../../meanspot_math.h"
#include "simd.h"

namespace meanspot {
namespace cpu {
namespace CPU_CAPABILITY {

template <typename T>
inline typename Vec<T>::type load_vec(const T* p) {
  typename Vec<T>::type v;
  std::memcpy(&v, p, sizeof(v));  // unaligned load
  return v;
}

// Row stride of a padded conv input: the width is rounded up to whole vectors
// (plus the K - 1 halo) so that the conv kernel can read full vectors past the
// last valid column; those lanes only feed outputs that are never stored.
template <typename T>
inline int padded_stride(int width, int kernel) {
  const int lanes = Vec<T>::kLanes;
  return (width + lanes - 1) / lanes * lanes + kernel - 1;
}

// Elements of a padded buffer for `channels` planes of height x width.
template <typename T>
inline int64_t padded_size(int channels, int height, int width, int kernel) {
  return int64_t(channels) * (height + kernel - 1) * padded_stride<T>(width, kernel);
}

// One (H, W) plane read through element strides: any layout, expanded included.
template <typename T>
struct StridedPlane {
  const T* data;
  int64_t stride_h, stride_w;
};

// Zero-padded copy of one strided plane into (H + K - 1, padded_stride), data at offset K / 2.
template <typename T>
inline void pad_plane_strided(const StridedPlane<T>& in, int height, int width, int kernel, T* __restrict__ out) {
  const int pad = same_pad(kernel), hp = height + kernel - 1, wp = padded_stride<T>(width, kernel);
  std::fill(out, out + int64_t(hp) * wp, T(0));
  for (int h = 0; h < height; ++h) {
    T* dst = out + int64_t(h + pad) * wp + pad;
    const T* src = in.data + h * in.stride_h;
    if (in.stride_w == 1) {
      std::memcpy(dst, src, sizeof(T) * width);
    } else {
      for (int w = 0; w < width; ++w) dst[w] = src[w * in.stride_w];
    }
  }
}

// Zero-padded copy of (C, H, W) planes into (C, H + K - 1, padded_stride) with
// the data at row/column offset K / 2.
template <typename T>
inline void pad_planes(const T* __restrict__ in, int channels, int height, int width, int kernel,
                       T* __restrict__ out) {
  const int64_t padded_plane = int64_t(height + kernel - 1) * padded_stride<T>(width, kernel);
  for (int c = 0; c < channels; ++c)
    pad_plane_strided(StridedPlane<T>{in + int64_t(c) * height * width, width, 1}, height, width, kernel,
                      out + c * padded_plane);
}

// CB output channels x RB output rows, one vector of columns starting at w0:
// the CB * RB accumulators stay in registers across all cin * K * K taps; each
// tap is RB vector loads and CB * RB broadcast FMAs (see conv_rows for RB).
template <typename T, int CB, int RB>
inline void conv_tile(const T* __restrict__ padded, int cin, int hp, int wp, int h, int w0,
                      const T* __restrict__ weight, const T* __restrict__ bias, int co0, int kernel, int width,
                      int height, T* __restrict__ out) {
  using V = typename Vec<T>::type;
  V acc[RB][CB];
  for (int r = 0; r < RB; ++r)
    for (int j = 0; j < CB; ++j) acc[r][j] = V{} + (bias ? bias[co0 + j] : T(0));
  const int64_t taps = int64_t(cin) * kernel * kernel;
  for (int ci = 0; ci < cin; ++ci) {
    for (int kh = 0; kh < kernel; ++kh) {
      const T* irow = padded + (int64_t(ci) * hp + h + kh) * wp + w0;
      const T* wrow = weight + (int64_t(co0) * cin + ci) * kernel * kernel + kh * kernel;
      for (int kw = 0; kw < kernel; ++kw) {
        V x[RB];
        for (int r = 0; r < RB; ++r) x[r] = load_vec(irow + r * wp + kw);
        for (int j = 0; j < CB; ++j) {
          const T wv = wrow[j * taps + kw];
          for (int r = 0; r < RB; ++r) acc[r][j] += wv * x[r];
        }
      }
    }
  }
  // A fixed-size copy is one vector store; a variable-size memcpy would be a
  // library call that forces the accumulators through memory (a third of the
  // conv time when measured), so only the ragged last vector takes the loop.
  const int valid = std::min(Vec<T>::kLanes, width - w0);
  for (int r = 0; r < RB; ++r)
    for (int j = 0; j < CB; ++j) {
      T* o = out + (int64_t(co0 + j) * height + h + r) * width + w0;
      if (valid == Vec<T>::kLanes) {
        std::memcpy(o, &acc[r][j], sizeof(V));
      } else {
        for (int l = 0; l < valid; ++l) o[l] = acc[r][j][l];
      }
    }
}

// Output rows per conv tile for CB output channels: enough that CB * RB >= 8
// independent FMA chains hide the FMA latency (2 units x 4 cycles), at most
// what leaves a quarter of the registers to the RB loaded rows and the
// broadcast weight (16 registers on AVX2 and SSE: CB * RB <= 12; 32 on AVX-512).
template <int CB>
constexpr int conv_rows() {
  constexpr int want = CB >= 8 ? 2 : (8 + CB - 1) / CB;
  constexpr int fit = (kVectorRegisters * 3 / 4) / CB;
  return want < fit ? want : (fit > 0 ? fit : 1);
}

template <typename T, int CB>
inline void conv_block_of_channels(const T* padded, int cin, int height, int width, const T* weight,
                                   const T* bias, int co0, int kernel, T* out) {
  constexpr int RB = conv_rows<CB>();
  const int hp = height + kernel - 1, wp = padded_stride<T>(width, kernel);
  int h = 0;
  for (; h + RB <= height; h += RB)
    for (int w0 = 0; w0 < width; w0 += Vec<T>::kLanes)
      conv_tile<T, CB, RB>(padded, cin, hp, wp, h, w0, weight, bias, co0, kernel, width, height, out);
  for (; h < height; ++h)
    for (int w0 = 0; w0 < width; w0 += Vec<T>::kLanes)
      conv_tile<T, CB, 1>(padded, cin, hp, wp, h, w0, weight, bias, co0, kernel, width, height, out);
}

// 'same' stride-1 convolution of one padded sample (see pad_planes):
//   out[co][h][w] = bias[co] + sum_{ci,kh,kw} weight[co][ci][kh][kw] * padded[ci][h + kh][w + kw]
// out: (cout, H, W) dense; bias may be null (0). Output channels go in blocks
// of up to 8 so each input vector load feeds up to 8 FMAs.
template <typename T>
inline void conv_same(const T* __restrict__ padded, int cin, int height, int width, const T* __restrict__ weight,
                      const T* __restrict__ bias, int cout, int kernel, T* __restrict__ out) {
  int co = 0;
  for (; co + 8 <= cout; co += 8) conv_block_of_channels<T, 8>(padded, cin, height, width, weight, bias, co, kernel, out);
  switch (cout - co) {
    case 7: conv_block_of_channels<T, 7>(padded, cin, height, width, weight, bias, co, kernel, out); break;
    case 6: conv_block_of_channels<T, 6>(padded, cin, height, width, weight, bias, co, kernel, out); break;
    case 5: conv_block_of_channels<T, 5>(padded, cin, height, width, weight, bias, co, kernel, out); break;
    case 4: conv_block_of_channels<T, 4>(padded, cin, height, width, weight, bias, co, kernel, out); break;
    case 3: conv_block_of_channels<T, 3>(padded, cin, height, width, weight, bias, co, kernel, out); break;
    case 2: conv_block_of_channels<T, 2>(padded, cin, height, width, weight, bias, co, kernel, out); break;
    case 1: conv_block_of_channels<T, 1>(padded, cin, height, width, weight, bias, co, kernel, out); break;
    default: break;
  }
}

// In place: v[i] = sigmoid(scale * v[i] + shift). Generic scalar version;
// float has a vectorized one below (the spatial gate is 1764 sigmoids per
// 42 x 42 CBAM, as many as the scalar exp can do in the time of the conv).
template <typename T>
inline void sigmoid_affine_inplace(T* v, int64_t n, T scale, T shift) {
  for (int64_t i = 0; i < n; ++i) v[i] = T(sigmoid(acc_t<T>(scale * v[i] + shift)));
}

// exp(x) on a float vector: Cephes expf (range reduction by ln 2, degree-5
// polynomial, exponent by bit shift), about 1 ulp; NaN stays NaN, x above
// 88.376 gives +inf and x below -88.376 gives 0 (as expf overflows and
// underflows, so sigmoid(-inf) is exactly 0 and inf * 0 gates give NaN as in
// the reference).
inline Vec<float>::type exp_vec(Vec<float>::type x) {
  using V = Vec<float>::type;
  typedef int32_t VI __attribute__((vector_size(kVectorBytes)));
  const V in = x;
  x = x > 88.3762626647949f ? V{} + 88.3762626647949f : x;
  x = x < -88.3762626647949f ? V{} - 88.3762626647949f : x;
  V fx = x * 1.44269504088896341f + 0.5f;
  V tf = __builtin_convertvector(__builtin_convertvector(fx, VI), V);
  tf = tf > fx ? tf - 1.0f : tf;  // floor
  x = x - tf * 0.693359375f - tf * -2.12194440e-4f;
  const V z = x * x;
  V y = 1.9875691500E-4f * x + 1.3981999507E-3f;
  y = y * x + 8.3334519073E-3f;
  y = y * x + 4.1665795894E-2f;
  y = y * x + 1.6666665459E-1f;
  y = y * x + 5.0000001201E-1f;
  y = y * z + x + 1.0f;
  VI bits = (__builtin_convertvector(tf, VI) + 127) << 23;
  V pow2n;
  std::memcpy(&pow2n, &bits, sizeof(pow2n));
  V r = y * pow2n;
  r = in > 88.3762626647949f ? V{} + __builtin_inff() : r;
  r = in < -88.3762626647949f ? V{} : r;
  return in != in ? in : r;
}

template <>
inline void sigmoid_affine_inplace<float>(float* v, int64_t n, float scale, float shift) {
  constexpr int L = Vec<float>::kLanes;
  int64_t i = 0;
  for (; i + L <= n; i += L) {
    const Vec<float>::type x = load_vec(v + i) * scale + shift;
    const Vec<float>::type s = 1.0f / (1.0f + exp_vec(-x));
    std::memcpy(v + i, &s, sizeof(s));
  }
  for (; i < n; ++i) v[i] = sigmoid(scale * v[i] + shift);
}

// Epilogue of the conv block: out = maxpool_k(scale * relu(conv) + shift).
// conv: (C, H, W); out: (C, H / k, W / k). scale/shift null means 1 and 0.
template <typename T>
inline void relu_affine_pool(const T* __restrict__ conv, int channels, int height, int width,
                             const T* __restrict__ scale, const T* __restrict__ shift, int pool,
                             T* __restrict__ out) {
  const int ho = height / pool, wo = width / pool;
  for (int c = 0; c < channels; ++c) {
    const T s = scale ? scale[c] : T(1);
    const T t = shift ? shift[c] : T(0);
    const T* plane = conv + int64_t(c) * height * width;
    T* oplane = out + int64_t(c) * ho * wo;
    if (pool == 1) {
      for (int i = 0; i < height * width; ++i) oplane[i] = relu_affine(plane[i], s, t);
      continue;
    }
    for (int oh = 0; oh < ho; ++oh) {
      for (int ow = 0; ow < wo; ++ow) {
        const T* win = plane + int64_t(oh * pool) * width + ow * pool;
        T m = relu_affine(win[0], s, t);
        for (int i = 0; i < pool; ++i)
          for (int j = 0; j < pool; ++j) m = nan_max(m, relu_affine(win[i * width + j], s, t));
        oplane[int64_t(oh) * wo + ow] = m;
      }
    }
  }
}

// Mean and max over H x W of each of `channels` planes of `x`, in one read.
// Vector lanes accumulate strided partial sums and maxima, reduced at the end.
template <typename T>
inline void channel_pool(const T* __restrict__ x, int channels, int64_t plane, T* __restrict__ mean,
                         T* __restrict__ max) {
  using V = typename Vec<T>::type;
  constexpr int L = Vec<T>::kLanes;
  for (int c = 0; c < channels; ++c) {
    const T* p = x + c * plane;
    acc_t<T> sum = 0;
    T m = p[0];
    int64_t i = 0;
    if (plane >= L) {
      V vs = load_vec(p), vm = vs;
      for (i = L; i + L <= plane; i += L) {
        const V v = load_vec(p + i);
        vs += v;
        vm = nan_max(vm, v);
      }
      for (int l = 0; l < L; ++l) {
        sum += vs[l];
        m = nan_max(m, vm[l]);
      }
    }
    for (; i < plane; ++i) {
      sum += p[i];
      m = nan_max(m, p[i]);
    }
    mean[c] = T(sum / acc_t<T>(plane));
    max[c] = m;
  }
}

// Mean and max over channels of (x * gate[c]) for each of the `plane` pixels,
// in one read of x; gate may be null (1). mean/max are dense planes. Explicit
// vectors over the whole plane (a 42-wide row would leave a ragged vector on
// every row).
template <typename T>
inline void spatial_pool(const T* __restrict__ x, int channels, int64_t plane, const T* __restrict__ gate,
                         T* __restrict__ mean, T* __restrict__ max) {
  using V = typename Vec<T>::type;
  constexpr int L = Vec<T>::kLanes;
  const T inv = T(1) / T(channels);
  int64_t i = 0;
  for (; i + L <= plane; i += L) {
    V s = load_vec(x + i) * (gate ? gate[0] : T(1));
    V m = s;
    for (int c = 1; c < channels; ++c) {
      const V y = load_vec(x + c * plane + i) * (gate ? gate[c] : T(1));
      s += y;
      m = nan_max(m, y);
    }
    s *= inv;
    std::memcpy(mean + i, &s, sizeof(V));
    std::memcpy(max + i, &m, sizeof(V));
  }
  for (; i < plane; ++i) {
    T s = x[i] * (gate ? gate[0] : T(1));
    T m = s;
    for (int c = 1; c < channels; ++c) {
      const T y = x[c * plane + i] * (gate ? gate[c] : T(1));
      s += y;
      m = nan_max(m, y);
    }
    mean[i] = s * inv;
    max[i] = m;
  }
}

// Parameters of one CBAM block, as raw pointers into contiguous tensors.
template <typename T>
struct CbamParams {
  const T* mlp_w1;          // (hidden, C)
  const T* mlp_b1;          // (hidden)
  const T* mlp_w2;          // (C, hidden)
  const T* mlp_b2;          // (C)
  const T* spatial_weight;  // (1, 2, K, K): channel 0 sees the mean, 1 the max
  T spatial_scale, spatial_shift;
  int hidden, kernel;
};

// Scratch elements cbam_sample<T> needs for C channels of H x W.
template <typename T>
inline int64_t cbam_scratch_size(int channels, int hidden, int height, int width, int kernel) {
  return 4 * int64_t(channels) + 2 * int64_t(hidden) + padded_size<T>(2, height, width, kernel) +
         3 * int64_t(height) * width;
}

// CBAM on one (C, H, W) sample, then a k x k max pool:
//   out = maxpool_k((x * g_c) * sigmoid(scale * conv([mean_c, max_c](x * g_c)) + shift)).
// The gated tensor x * g_c is recomputed in the last pass instead of stored:
// one multiply is cheaper than a (C, H, W) round trip through memory.
template <typename T>
inline void cbam_sample(const T* __restrict__ x, int channels, int height, int width, const CbamParams<T>& p,
                        int pool, T* __restrict__ out, T* __restrict__ scratch) {
  const int64_t plane = int64_t(height) * width;
  const int hp = height + p.kernel - 1, wp = padded_stride<T>(width, p.kernel);
  T* avg = scratch;
  T* mx = avg + channels;
  T* logits = mx + channels;
  T* gate = logits + channels;
  T* hid = gate + channels;  // 2 * hidden: avg path, max path
  T* padded = hid + 2 * p.hidden;
  T* sgate = padded + 2 * int64_t(hp) * wp;
  T* pooled = sgate + plane;  // (2, H, W) channel mean and max

  channel_pool(x, channels, plane, avg, mx);
  for (int j = 0; j < p.hidden; ++j) {
    acc_t<T> ha = p.mlp_b1[j], hm = p.mlp_b1[j];
    for (int c = 0; c < channels; ++c) {
      ha += acc_t<T>(p.mlp_w1[j * channels + c]) * avg[c];
      hm += acc_t<T>(p.mlp_w1[j * channels + c]) * mx[c];
    }
    hid[j] = relu(T(ha));
    hid[p.hidden + j] = relu(T(hm));
  }
  for (int c = 0; c < channels; ++c) {
    acc_t<T> la = p.mlp_b2[c], lm = p.mlp_b2[c];
    for (int j = 0; j < p.hidden; ++j) {
      la += acc_t<T>(p.mlp_w2[c * p.hidden + j]) * hid[j];
      lm += acc_t<T>(p.mlp_w2[c * p.hidden + j]) * hid[p.hidden + j];
    }
    gate[c] = T(sigmoid(acc_t<T>(T(la) + T(lm))));
  }

  // Pool into dense planes, then pad (full vectors instead of ragged rows).
  spatial_pool(x, channels, plane, gate, pooled, pooled + plane);
  pad_planes(pooled, 2, height, width, p.kernel, padded);
  conv_same<T>(padded, 2, height, width, p.spatial_weight, nullptr, 1, p.kernel, sgate);
  sigmoid_affine_inplace(sgate, plane, p.spatial_scale, p.spatial_shift);

  const int ho = height / pool, wo = width / pool;
  for (int c = 0; c < channels; ++c) {
    const T g = gate[c];
    const T* xp = x + c * plane;
    T* op = out + c * int64_t(ho) * wo;
    if (pool == 1) {
      for (int64_t i = 0; i < plane; ++i) op[i] = (xp[i] * g) * sgate[i];
      continue;
    }
    for (int oh = 0; oh < ho; ++oh) {
      for (int ow = 0; ow < wo; ++ow) {
        const int64_t base = int64_t(oh * pool) * width + ow * pool;
        T m = (xp[base] * g) * sgate[base];
        for (int i = 0; i < pool; ++i)
          for (int j = 0; j < pool; ++j) {
            const int64_t k = base + int64_t(i) * width + j;
            m = nan_max(m, (xp[k] * g) * sgate[k]);
          }
        op[int64_t(oh) * wo + ow] = m;
      }
    }
  }
}

}  // namespace CPU_CAPABILITY
}  // namespace cpu
}  // namespace meanspot
