// CUDA kernel of meanspot_fused::mean_roi_features (float32; see
// csrc/ops/mean_roi_features.cpp for the contract, csrc/features_math.h for
// the math).
//
// One 256-thread block per pair, grid-stride over the pairs. Phase 1: the
// threads stride over the H x W pixels, each computing u, v, os from the flow
// (recomputing the left and upper neighbours the strain needs, rather than
// staging 3 x H x W maps), and the block reduces the per-channel min and max
// (warp shuffles, then the 8 warp results in shared memory). Phase 2: the
// threads stride over the 42 x 42 output pixels, recomputing u, v, os at their
// four resize taps. The flow is read through its strides and the output
// written once; no intermediate touches global memory.
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "../features_math.h"
#include "../ops/mean_roi_features.h"
#include "cuda_utils.cuh"

namespace meanspot {
namespace {

using features::FlowView;
using features::Maps;
using features::Normaliser;
using features::Range;

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
constexpr int kOutPlane = features::kOutSize * features::kOutSize;

// Range of u, v, os over one pair's map; every thread of the block gets it.
// Must be reached by all threads of the block (it synchronises).
__device__ Range block_range(const FlowView& f, Range* warp_ranges) {
  Range r = Range::empty();
  const int64_t pixels = int64_t(f.height) * f.width;
  for (int64_t p = threadIdx.x; p < pixels; p += kThreads)
    r.add(features::maps_at(f, int(p / f.width), int(p % f.width)));
  for (int k = 0; k < features::kChannels; ++k) {
    for (int offset = 16; offset > 0; offset /= 2) {
      r.lo[k] = ::fminf(r.lo[k], __shfl_xor_sync(gpu::kFullMask, r.lo[k], offset));
      r.hi[k] = ::fmaxf(r.hi[k], __shfl_xor_sync(gpu::kFullMask, r.hi[k], offset));
    }
  }
  if (threadIdx.x % 32 == 0) warp_ranges[threadIdx.x / 32] = r;
  __syncthreads();
  Range total = Range::empty();
  for (int w = 0; w < kWarps; ++w) total.merge(warp_ranges[w]);
  __syncthreads();  // warp_ranges is rewritten for the next pair
  return total;
}

// flow: pair i at flow + i * stride_n, (2, H, W) at strides (stride_c,
// stride_y, stride_x); boxes: contiguous (N, 2, 4); out: contiguous (N, 3, 42, 42).
__global__ void __launch_bounds__(kThreads)
mean_roi_features_kernel(const float* __restrict__ flow, int64_t n, int64_t stride_n, int64_t stride_c,
                         int64_t stride_y, int64_t stride_x, int height, int width,
                         const int64_t* __restrict__ boxes, float* __restrict__ out) {
  __shared__ Range warp_ranges[kWarps];
  for (int64_t i = blockIdx.x; i < n; i += gridDim.x) {
    const FlowView f{flow + i * stride_n, stride_c, stride_y, stride_x, height, width};
    const int64_t* box = boxes + i * features::kRois * features::kBoxFields;
    float* o = out + i * features::kChannels * kOutPlane;
    // Uniform across the block, so no thread skips block_range's barriers.
    if (!features::box_valid(box, height, width) ||
        !features::box_valid(box + features::kBoxFields, height, width)) {
      for (int p = threadIdx.x; p < features::kChannels * kOutPlane; p += kThreads) o[p] = NAN;
      continue;
    }
    const Normaliser norm(block_range(f, warp_ranges));
    const auto sample = [&f](int y, int x) { return features::maps_at(f, y, x); };
    for (int p = threadIdx.x; p < kOutPlane; p += kThreads) {
      const Maps m = features::roi_pixel(sample, norm, box, p / features::kOutSize, p % features::kOutSize);
      for (int k = 0; k < features::kChannels; ++k) o[k * kOutPlane + p] = m.c[k];
    }
  }
}

at::Tensor mean_roi_features_cuda(const at::Tensor& flow, const at::Tensor& boxes_in) {
  check_mean_roi_features_args(flow, boxes_in);
  TORCH_CHECK(flow.is_cuda(), "meanspot_fused.mean_roi_features: flow must be a CUDA tensor here, got ",
              flow.device());
  c10::cuda::CUDAGuard device_guard(flow.device());
  const at::Tensor boxes = boxes_in.contiguous();
  const int64_t n = flow.size(0);
  at::Tensor out = at::empty({n, features::kChannels, features::kOutSize, features::kOutSize}, flow.options());
  if (n == 0) return out;
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  mean_roi_features_kernel<<<gpu::grid_size(n, 1, flow.get_device()), kThreads, 0, stream>>>(
      flow.const_data_ptr<float>(), n, flow.stride(0), flow.stride(1), flow.stride(2), flow.stride(3),
      int(flow.size(2)), int(flow.size(3)), boxes.const_data_ptr<int64_t>(), out.mutable_data_ptr<float>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(meanspot_fused, CUDA, m) {
  m.impl("mean_roi_features", &mean_roi_features_cuda);
}

}  // namespace meanspot
