// The device blocks the per-op kernels (conv_block.cuh, cbam.cuh) and the
// whole-network kernel (meanspot_net.cuh) are made of, written once: the
// convolution window of a conv block, the CBAM steps (each a loop of the
// whole thread block ending with a barrier) and the max pool. Operation order of the CPU kernel (cpu::cbam_sample in
// csrc/cpu/kernels/sample_kernels.h):
//   g_c = sigmoid(MLP(mean_hw x) + MLP(max_hw x)),  MLP(t) = W2 relu(W1 t + b1) + b2
//   s   = sigmoid(scale * conv_same([mean_c (x * g_c), max_c (x * g_c)], spatial_weight) + shift)
//   out = maxpool_k((x * g_c) * s)
// kThreads is the block size (a multiple of 32); every thread of the block
// calls every step. x is one sample's (channels, height, width) activations
// read through element strides (a strided global tensor, a dense staged copy
// or the network's activations in shared memory).
#pragma once

#include <cstdint>

#include "common.cuh"

namespace meanspot {
namespace gpu {
namespace blocks {

// conv[j] += w[j * taps + (ci * K + kh) * K + kw] * in[ci * channel_stride + kh * row_stride + kw]
// over ci < cin, kh, kw < K, for the COB output channels j, in the CPU
// kernel's order (ci, kh, kw). `in` points at the window's top-left tap of
// channel 0 of a zero-padded input (no bounds tests); one input read feeds
// COB FMAs held in registers. kKernel > 0 fixes K at compile time (the tap
// loops unroll: the network's 5 x 5 convs); 0 takes `kernel` at run time
// (conv_block, any odd K; not unrolled).
template <int COB, int kKernel, typename acc>
__device__ __forceinline__ void conv_window(const acc* in, int channel_stride, int row_stride, int cin, int kernel,
                                            const acc* w, int taps, acc (&conv)[COB]) {
  const int k = kKernel > 0 ? kKernel : kernel;
  for (int ci = 0; ci < cin; ++ci) {
#pragma unroll(kKernel > 0 ? kKernel : 1)
    for (int kh = 0; kh < k; ++kh) {
      const acc* in_row = in + ci * channel_stride + kh * row_stride;
      const acc* w_row = w + (ci * k + kh) * k;
#pragma unroll(kKernel > 0 ? kKernel : 1)
      for (int kw = 0; kw < k; ++kw) {
        const acc v = in_row[kw];
#pragma unroll
        for (int j = 0; j < COB; ++j) conv[j] += w_row[j * taps + kw] * v;
      }
    }
  }
}

// One sample's (C, H, W) activations: element (c, h, w) at data[c * c_stride + h * h_stride + w * w_stride].
template <typename T>
struct PlaneView {
  const T* data;
  int64_t c_stride, h_stride, w_stride;
  __device__ __forceinline__ const T& operator()(int c, int h, int w) const {
    return data[c * c_stride + h * h_stride + w * w_stride];
  }
};

// CBAM parameters, dense: w1 (hidden, C), b1 (hidden), w2 (C, hidden), b2 (C), spatial (2, K, K).
template <typename scalar_t>
struct CbamParams {
  const scalar_t *w1, *b1, *w2, *b2, *spatial;
  acc_t<scalar_t> spatial_scale, spatial_shift;
  int hidden, kernel;
};

// The block's CBAM scratch (shared memory, or a global workspace slice).
template <typename acc>
struct CbamScratch {
  acc* avg;     // (C) mean over H x W
  acc* max;     // (C) max over H x W
  acc* gate;    // (C) g_c
  acc* hidden;  // (2 hidden) hidden units of the mean pass, then the max pass
  acc* sw;      // (2, K, K) spatial weight
  acc* smap;    // (2, H, W) mean and max over channels of x * g_c
  acc* sgate;   // (H, W) spatial gate
};

// Step 1: stage the spatial weight and reduce each channel over H x W (warp
// per channel, shuffle reductions). Returns, uniformly over the block,
// whether every spatial weight is finite (see cbam_spatial_gate): the
// closing barrier is __syncthreads_and of that.
template <int kThreads, typename scalar_t, typename T>
__device__ __forceinline__ bool cbam_channel_pools(const PlaneView<T>& x, int channels, int height, int width,
                                                   const CbamParams<scalar_t>& p,
                                                   const CbamScratch<acc_t<scalar_t>>& s) {
  using acc = acc_t<scalar_t>;
  constexpr int kWarps = kThreads / 32;
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int64_t plane = int64_t(height) * width;
  bool finite = true;
  for (int i = threadIdx.x; i < 2 * p.kernel * p.kernel; i += kThreads) {
    const acc w = static_cast<acc>(p.spatial[i]);
    s.sw[i] = w;
    finite = finite && isfinite(w);
  }
  for (int c = warp; c < channels; c += kWarps) {
    acc sum = acc(0), m = lowest<acc>();
    NchwWalk at(lane, 32, 1, height, width);
    for (int64_t i = lane; i < plane; i += 32, at.next()) {
      const acc v = static_cast<acc>(x(c, at.h, at.w));
      sum += v;
      m = nan_max(m, v);
    }
    sum = warp_sum(sum);
    m = warp_nan_max(m);
    if (lane == 0) {
      s.avg[c] = sum / static_cast<acc>(plane);
      s.max[c] = m;
    }
  }
  return __syncthreads_and(finite);
}

// Steps 2 and 3: the hidden units relu(W1 t + b1) of t = mean (t < hidden)
// and t = max, then g_c = sigmoid(MLP(mean) + MLP(max)) (b2 enters each of
// the two passes).
template <int kThreads, typename scalar_t>
__device__ __forceinline__ void cbam_channel_gate(int channels, const CbamParams<scalar_t>& p,
                                                  const CbamScratch<acc_t<scalar_t>>& s) {
  using acc = acc_t<scalar_t>;
  const int hidden = p.hidden;
  for (int t = threadIdx.x; t < 2 * hidden; t += kThreads) {
    const int j = t % hidden;
    const acc* in = t < hidden ? s.avg : s.max;
    const scalar_t* w_row = p.w1 + int64_t(j) * channels;
    acc h = static_cast<acc>(p.b1[j]);
    for (int c = 0; c < channels; ++c) h += static_cast<acc>(w_row[c]) * in[c];
    s.hidden[t] = relu(h);
  }
  __syncthreads();
  for (int c = threadIdx.x; c < channels; c += kThreads) {
    const scalar_t* w_row = p.w2 + int64_t(c) * hidden;
    acc logit_avg = static_cast<acc>(p.b2[c]), logit_max = logit_avg;
    for (int j = 0; j < hidden; ++j) {
      const acc w = static_cast<acc>(w_row[j]);
      logit_avg += w * s.hidden[j];
      logit_max += w * s.hidden[hidden + j];
    }
    s.gate[c] = sigmoid(logit_avg + logit_max);
  }
  __syncthreads();
}

// Step 4: mean (smap plane 0) and max (plane 1) over channels of x * g_c, thread per pixel.
template <int kThreads, typename scalar_t, typename T>
__device__ __forceinline__ void cbam_spatial_pools(const PlaneView<T>& x, int channels, int height, int width,
                                                   const CbamScratch<acc_t<scalar_t>>& s) {
  using acc = acc_t<scalar_t>;
  const int64_t plane = int64_t(height) * width;
  const acc inv_channels = acc(1) / acc(channels);
  NchwWalk pixel(threadIdx.x, kThreads, 1, height, width);
  for (int64_t q = threadIdx.x; q < plane; q += kThreads, pixel.next()) {
    const int h = pixel.h, w = pixel.w;
    acc y = static_cast<acc>(x(0, h, w)) * s.gate[0];
    acc sum = y, m = y;
    for (int c = 1; c < channels; ++c) {
      y = static_cast<acc>(x(c, h, w)) * s.gate[c];
      sum += y;
      m = nan_max(m, y);
    }
    s.smap[q] = sum * inv_channels;
    s.smap[plane + q] = m;
  }
  __syncthreads();
}

// Step 5: the spatial gate sigmoid(scale * conv_same(smap, sw) + shift),
// thread per pixel. The CPU kernel multiplies every weight, the ones on its
// zero padding included. With finite weights (sw_finite, from
// cbam_channel_pools) those taps add exact zeros, so the loops skip them
// (clamped to the image: no padded map, no K-sized halo in shared memory); a
// NaN or inf weight makes them NaN (0 * inf = NaN), so then every tap runs,
// with 0 for the padding, in the CPU's order.
template <int kThreads, typename scalar_t>
__device__ __forceinline__ void cbam_spatial_gate(int height, int width, const CbamParams<scalar_t>& p,
                                                  bool sw_finite, const CbamScratch<acc_t<scalar_t>>& s) {
  using acc = acc_t<scalar_t>;
  const int kernel = p.kernel, pad = same_pad(kernel);
  const int64_t plane = int64_t(height) * width;
  NchwWalk pixel(threadIdx.x, kThreads, 1, height, width);
  for (int64_t q = threadIdx.x; q < plane; q += kThreads, pixel.next()) {
    const int h = pixel.h, w = pixel.w;
    acc conv = acc(0);
    if (sw_finite) {
      const int kh0 = max(0, pad - h), kh1 = min(kernel, height + pad - h);
      const int kw0 = max(0, pad - w), kw1 = min(kernel, width + pad - w);
      for (int ci = 0; ci < 2; ++ci) {
        for (int kh = kh0; kh < kh1; ++kh) {
          const acc* in_row = s.smap + ci * plane + int64_t(h + kh - pad) * width + (w - pad);
          const acc* w_row = s.sw + (ci * kernel + kh) * kernel;
          for (int kw = kw0; kw < kw1; ++kw) conv += w_row[kw] * in_row[kw];
        }
      }
    } else {
      for (int ci = 0; ci < 2; ++ci) {
        for (int kh = 0; kh < kernel; ++kh) {
          const int ih = h + kh - pad;
          const bool row_inside = ih >= 0 && ih < height;
          const acc* w_row = s.sw + (ci * kernel + kh) * kernel;
          for (int kw = 0; kw < kernel; ++kw) {
            const int iw = w + kw - pad;
            const acc v = row_inside && iw >= 0 && iw < width ? s.smap[ci * plane + int64_t(ih) * width + iw] : acc(0);
            conv += w_row[kw] * v;
          }
        }
      }
    }
    s.sgate[q] = sigmoid(p.spatial_scale * conv + p.spatial_shift);
  }
  __syncthreads();
}

// Max pool of value(c, h, w) over pool x pool windows: thread per output
// o = (c, oh, ow) (ow fastest: coalesced stores), store(o, c, oh, ow, m).
// No closing barrier: the caller synchronises before reusing what value reads.
template <int kThreads, typename acc, typename Value, typename Store>
__device__ __forceinline__ void max_pool(int channels, int height, int width, int pool, Value value, Store store) {
  const int out_height = height / pool, out_width = width / pool;
  const int64_t outputs = int64_t(channels) * out_height * out_width;
  NchwWalk at(threadIdx.x, kThreads, channels, out_height, out_width);  // at.n stays 0 below `outputs`
  for (int64_t o = threadIdx.x; o < outputs; o += kThreads, at.next()) {
    const int c = at.c, oh = at.h, ow = at.w;
    acc m = lowest<acc>();
    for (int i = 0; i < pool; ++i)
      for (int j = 0; j < pool; ++j) m = nan_max(m, value(c, oh * pool + i, ow * pool + j));
    store(o, c, oh, ow, m);
  }
}

// The whole CBAM block on x, then the pool x pool max pool of (x * g_c) * s
// written through store(o, c, oh, ow, value). Every step but the pool ends
// with a barrier; the caller synchronises before reusing x or the scratch.
template <int kThreads, typename scalar_t, typename T, typename Store>
__device__ __forceinline__ void cbam(const PlaneView<T>& x, int channels, int height, int width, int pool,
                                     const CbamParams<scalar_t>& p, const CbamScratch<acc_t<scalar_t>>& s,
                                     Store store) {
  using acc = acc_t<scalar_t>;
  const bool sw_finite = cbam_channel_pools<kThreads>(x, channels, height, width, p, s);
  cbam_channel_gate<kThreads>(channels, p, s);
  cbam_spatial_pools<kThreads, scalar_t>(x, channels, height, width, s);
  cbam_spatial_gate<kThreads>(height, width, p, sw_finite, s);
  const acc* gate = s.gate;
  const acc* sgate = s.sgate;
  max_pool<kThreads, acc>(
      channels, height, width, pool,
      [&](int c, int h, int w) { return (static_cast<acc>(x(c, h, w)) * gate[c]) * sgate[int64_t(h) * width + w]; },
      store);
}

}  // namespace blocks
}  // namespace gpu
}  // namespace meanspot
