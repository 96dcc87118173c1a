// CUDA kernel of meanspot_fused::cbam, the whole CBAM block in one launch
// (float16, bfloat16, float32, float64; accumulation in acc_t):
//   g_c = sigmoid(MLP(mean_hw x) + MLP(max_hw x)),  MLP(t) = W2 relu(W1 t + b1) + b2
//   s   = conv_same([mean_c (x * g_c), max_c (x * g_c)], spatial_weight)
//   out = maxpool_k((x * g_c) * sigmoid(spatial_scale * s + spatial_shift))
// with the operation order of the CPU kernel (cpu::cbam_sample).
//
// Work split: one block per sample, grid-stride over the batch. The block's
// steps, separated by __syncthreads():
//   0. stage the sample's (C, H, W) tile and the spatial weight, zero the
//      padded (2, H + K - 1, W + K - 1) spatial map;
//   1. channel mean and max: one warp per channel, shuffle reductions;
//   2. hidden layer of both MLP passes: one thread per (pass, hidden unit);
//   3. channel gate: one thread per channel;
//   4. spatial mean and max of x * g_c into the padded map: thread per pixel;
//   5. K x K spatial conv and sigmoid gate: thread per pixel;
//   6. (x * g_c) * s_gate, max-pooled: thread per output element (coalesced).
// Where the scratch lives (CbamMode): all in shared memory when the x tile fits
// (8 x 42 x 42 float32 = 56 KB: dynamic shared memory above 48 KB); else x is
// read from global memory (L2) with the scratch in shared memory; else (huge
// planes) the scratch is a per-block slice of a global workspace.
// x is read through its strides in every mode (any layout, expanded batches
// included; see gpu::Strides4): the entry point never copies it. The staged
// tile of kAllShared is dense.
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "../ops/ops.h"
#include "cuda_utils.cuh"

namespace meanspot {
namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
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
  gpu::Strides4 x;  // element strides of x
};

// Offsets (in acc_t elements) of one sample's scratch regions, each rounded up
// to 16 bytes; `total` is the scratch size. In kAllShared the x tile
// (scalar_t) follows at offset `total`.
struct CbamLayout {
  int64_t avg, max, gate, hidden, weight, padded, sgate, total;
};

template <typename acc>
CbamLayout make_layout(const CbamShape& s) {
  int64_t offset = 0;
  auto take = [&](int64_t count) {
    const int64_t at = offset;
    offset += gpu::smem_bytes<acc>(count) / int64_t(sizeof(acc));
    return at;
  };
  CbamLayout l;
  l.avg = take(s.channels);                                                            // (C) mean_hw x
  l.max = take(s.channels);                                                            // (C) max_hw x
  l.gate = take(s.channels);                                                           // (C) g_c
  l.hidden = take(2 * int64_t(s.hidden));                                              // mean pass, max pass
  l.weight = take(2 * int64_t(s.kernel) * s.kernel);                                   // (2, K, K)
  l.padded = take(2 * int64_t(s.height + s.kernel - 1) * (s.width + s.kernel - 1));   // (2, Hp, Wp)
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
  extern __shared__ __align__(16) unsigned char smem[];
  acc* scratch = kMode == kGlobalScratch ? workspace + int64_t(blockIdx.x) * l.total : reinterpret_cast<acc*>(smem);
  acc* avg = scratch + l.avg;
  acc* max = scratch + l.max;
  acc* gate = scratch + l.gate;
  acc* hid = scratch + l.hidden;
  acc* sw = scratch + l.weight;
  acc* padded = scratch + l.padded;
  acc* sgate = scratch + l.sgate;
  scalar_t* x_tile = reinterpret_cast<scalar_t*>(scratch + l.total);  // kAllShared only

  const int channels = s.channels, hidden = s.hidden, height = s.height, width = s.width, kernel = s.kernel;
  const int pad = same_pad(kernel), hp = height + kernel - 1, wp = width + kernel - 1;
  const int64_t plane = int64_t(height) * width, padded_plane = int64_t(hp) * wp;
  const int64_t sample = channels * plane;
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const acc inv_channels = acc(1) / acc(channels);
  const int out_height = height / s.pool, out_width = width / s.pool;
  const int64_t out_plane = int64_t(out_height) * out_width;

  for (int64_t n = blockIdx.x; n < s.batch; n += gridDim.x) {
    // 0. Stage x (kAllShared), the spatial weight; zero the padded map (its
    //    border stays zero, step 4 fills the interior).
    // xs/xst: the sample read by steps 1, 4, 6: global x through its strides,
    // or its dense staged copy.
    const scalar_t* xs = x + n * s.x.n;
    gpu::Strides4 xst = s.x;
    if constexpr (kMode == kAllShared) {
      gpu::NchwWalk at(threadIdx.x, kThreads, channels, height, width);  // at.n stays 0 below `sample`
      for (int64_t i = threadIdx.x; i < sample; i += kThreads, at.next()) x_tile[i] = xs[at.offset(s.x)];
      xs = x_tile;
      xst = gpu::Strides4{sample, plane, width, 1};
    }
    for (int i = threadIdx.x; i < 2 * kernel * kernel; i += kThreads) sw[i] = static_cast<acc>(spatial_weight[i]);
    for (int64_t i = threadIdx.x; i < 2 * padded_plane; i += kThreads) padded[i] = acc(0);
    __syncthreads();

    // 1. Mean and max over H x W of each channel: warp per channel.
    for (int c = warp; c < channels; c += kWarps) {
      const scalar_t* xc = xs + c * xst.c;
      acc sum = acc(0), m = gpu::lowest<acc>();
      gpu::NchwWalk at(lane, 32, 1, height, width);
      for (int64_t i = lane; i < plane; i += 32, at.next()) {
        const acc v = static_cast<acc>(xc[at.h * xst.h + at.w * xst.w]);
        sum += v;
        m = nan_max(m, v);
      }
      sum = gpu::warp_sum(sum);
      m = gpu::warp_nan_max(m);
      if (lane == 0) {
        avg[c] = sum / static_cast<acc>(plane);
        max[c] = m;
      }
    }
    __syncthreads();

    // 2. Hidden units relu(W1 t + b1) of t = avg (t < hidden) and t = max.
    for (int t = threadIdx.x; t < 2 * hidden; t += kThreads) {
      const int j = t % hidden;
      const acc* in = t < hidden ? avg : max;
      const scalar_t* w_row = mlp_w1 + int64_t(j) * channels;
      acc h = static_cast<acc>(mlp_b1[j]);
      for (int c = 0; c < channels; ++c) h += static_cast<acc>(w_row[c]) * in[c];
      hid[t] = relu(h);
    }
    __syncthreads();

    // 3. g_c = sigmoid(MLP(avg) + MLP(max)); b2 enters each of the two passes.
    for (int c = threadIdx.x; c < channels; c += kThreads) {
      const scalar_t* w_row = mlp_w2 + int64_t(c) * hidden;
      acc logit_avg = static_cast<acc>(mlp_b2[c]), logit_max = logit_avg;
      for (int j = 0; j < hidden; ++j) {
        const acc w = static_cast<acc>(w_row[j]);
        logit_avg += w * hid[j];
        logit_max += w * hid[hidden + j];
      }
      gate[c] = sigmoid(logit_avg + logit_max);
    }
    __syncthreads();

    // 4. Mean (padded channel 0) and max (channel 1) over channels of x * g_c.
    gpu::NchwWalk pixel(threadIdx.x, kThreads, 1, height, width);
    for (int64_t p = threadIdx.x; p < plane; p += kThreads, pixel.next()) {
      const int h = pixel.h, w = pixel.w;
      const scalar_t* xp = xs + h * xst.h + w * xst.w;
      acc y = static_cast<acc>(xp[0]) * gate[0];
      acc sum = y, m = y;
      for (int c = 1; c < channels; ++c) {
        y = static_cast<acc>(xp[c * xst.c]) * gate[c];
        sum += y;
        m = nan_max(m, y);
      }
      const int64_t q = int64_t(h + pad) * wp + w + pad;
      padded[q] = sum * inv_channels;
      padded[padded_plane + q] = m;
    }
    __syncthreads();

    // 5. Spatial gate sigmoid(scale * conv_same(padded, weight) + shift).
    pixel = gpu::NchwWalk(threadIdx.x, kThreads, 1, height, width);
    for (int64_t p = threadIdx.x; p < plane; p += kThreads, pixel.next()) {
      const int h = pixel.h, w = pixel.w;
      acc conv = acc(0);
      for (int ci = 0; ci < 2; ++ci) {
        for (int kh = 0; kh < kernel; ++kh) {
          const acc* in_row = padded + ci * padded_plane + int64_t(h + kh) * wp + w;
          const acc* w_row = sw + (ci * kernel + kh) * kernel;
          for (int kw = 0; kw < kernel; ++kw) conv += w_row[kw] * in_row[kw];
        }
      }
      sgate[p] = sigmoid(spatial_scale * conv + spatial_shift);
    }
    __syncthreads();

    // 6. out = maxpool((x * g_c) * s_gate): thread per output (c, oh, ow).
    scalar_t* __restrict__ on = out + n * channels * out_plane;
    gpu::NchwWalk at(threadIdx.x, kThreads, channels, out_height, out_width);  // at.n stays 0 below the bound
    for (int64_t o = threadIdx.x; o < channels * out_plane; o += kThreads, at.next()) {
      const int c = at.c, oh = at.h, ow = at.w;
      const acc g = gate[c];
      const scalar_t* xc = xs + c * xst.c;
      acc m = gpu::lowest<acc>();
      for (int i = 0; i < s.pool; ++i) {
        for (int j = 0; j < s.pool; ++j) {
          const int h = oh * s.pool + i, w = ow * s.pool + j;
          m = nan_max(m, (static_cast<acc>(xc[h * xst.h + w * xst.w]) * g) * sgate[int64_t(h) * width + w]);
        }
      }
      on[o] = static_cast<scalar_t>(m);
    }
    __syncthreads();  // the scratch is reused by the block's next sample
  }
}

template <typename scalar_t, int kMode>
void launch_cbam(const scalar_t* x, const scalar_t* w1, const scalar_t* b1, const scalar_t* w2, const scalar_t* b2,
                 const scalar_t* sw, double spatial_scale, double spatial_shift, const CbamShape& s,
                 const CbamLayout& l, int64_t smem, unsigned int grid, acc_t<scalar_t>* workspace, int device,
                 cudaStream_t stream, scalar_t* out) {
  using acc = acc_t<scalar_t>;
  gpu::require_dynamic_smem<cbam_kernel<scalar_t, kMode>>(smem, device, "meanspot_fused.cbam");
  cbam_kernel<scalar_t, kMode><<<grid, kThreads, smem, stream>>>(
      x, w1, b1, w2, b2, sw, acc(spatial_scale), acc(spatial_shift), s, l, workspace, out);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

template <typename scalar_t>
void cbam_cuda_impl(const at::Tensor& x, const at::Tensor& w1, const at::Tensor& b1, const at::Tensor& w2,
                    const at::Tensor& b2, const at::Tensor& sw, double spatial_scale, double spatial_shift,
                    int pool, at::Tensor& out) {
  using acc = acc_t<scalar_t>;
  const CbamShape s{x.size(0),       int(x.size(1)), int(w1.size(0)), int(x.size(2)), int(x.size(3)),
                    int(sw.size(2)), pool,           gpu::strides_of(x)};
  const CbamLayout l = make_layout<acc>(s);
  const int device = x.get_device();
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const int64_t scratch_bytes = l.total * int64_t(sizeof(acc));
  const int64_t x_bytes = gpu::smem_bytes<scalar_t>(int64_t(s.channels) * s.height * s.width);
  const scalar_t* xp = x.const_data_ptr<scalar_t>();
  const scalar_t* w1p = w1.const_data_ptr<scalar_t>();
  const scalar_t* b1p = b1.const_data_ptr<scalar_t>();
  const scalar_t* w2p = w2.const_data_ptr<scalar_t>();
  const scalar_t* b2p = b2.const_data_ptr<scalar_t>();
  const scalar_t* swp = sw.const_data_ptr<scalar_t>();
  scalar_t* op = out.mutable_data_ptr<scalar_t>();
  if (scratch_bytes + x_bytes <= gpu::dynamic_smem_limit<cbam_kernel<scalar_t, kAllShared>>(device)) {
    launch_cbam<scalar_t, kAllShared>(xp, w1p, b1p, w2p, b2p, swp, spatial_scale, spatial_shift, s, l,
                                      scratch_bytes + x_bytes, gpu::grid_size(s.batch, 1, device), nullptr,
                                      device, stream, op);
  } else if (scratch_bytes <= gpu::dynamic_smem_limit<cbam_kernel<scalar_t, kScratchShared>>(device)) {
    launch_cbam<scalar_t, kScratchShared>(xp, w1p, b1p, w2p, b2p, swp, spatial_scale, spatial_shift, s, l,
                                          scratch_bytes, gpu::grid_size(s.batch, 1, device), nullptr, device,
                                          stream, op);
  } else {
    // One scratch slice per block: as many blocks as the SMs hold, within the workspace cap.
    const int64_t blocks = std::max<int64_t>(
        1, std::min<int64_t>({s.batch, 2 * int64_t(gpu::sm_count(device)), kMaxWorkspaceBytes / scratch_bytes}));
    at::Tensor workspace = at::empty({blocks * l.total}, x.options().dtype(gpu::acc_scalar_type<scalar_t>()));
    launch_cbam<scalar_t, kGlobalScratch>(xp, w1p, b1p, w2p, b2p, swp, spatial_scale, spatial_shift, s, l, 0,
                                          static_cast<unsigned int>(blocks), workspace.mutable_data_ptr<acc>(),
                                          device, stream, op);
  }
}

at::Tensor cbam_cuda(const at::Tensor& x_in, const at::Tensor& mlp_w1_in, const at::Tensor& mlp_b1_in,
                     const at::Tensor& mlp_w2_in, const at::Tensor& mlp_b2_in, const at::Tensor& spatial_weight_in,
                     double spatial_scale, double spatial_shift, int64_t pool) {
  constexpr const char* op = "meanspot_fused.cbam";
  check_cbam_args(x_in, mlp_w1_in, mlp_b1_in, mlp_w2_in, mlp_b2_in, spatial_weight_in, pool);
  gpu::check_cuda_input(x_in, op);
  c10::cuda::CUDAGuard device_guard(x_in.device());
  // x is read through its strides (no copy of expanded or strided batches); the
  // kernel indexes the small parameter tensors as dense arrays.
  const at::Tensor& x = x_in;
  const at::Tensor w1 = mlp_w1_in.contiguous(), b1 = mlp_b1_in.contiguous(), w2 = mlp_w2_in.contiguous(),
                   b2 = mlp_b2_in.contiguous(), sw = spatial_weight_in.contiguous();
  at::Tensor out = at::empty({x.size(0), x.size(1), x.size(2) / pool, x.size(3) / pool}, x.options());
  if (out.numel() == 0) return out;
  MSF_DISPATCH_CUDA_TYPES(x.scalar_type(), op, [&] {
    cbam_cuda_impl<scalar_t>(x, w1, b1, w2, b2, sw, spatial_scale, spatial_shift, int(pool), out);
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(meanspot_fused, CUDA, m) {
  m.impl("cbam", &cbam_cuda);
}

}  // namespace meanspot
