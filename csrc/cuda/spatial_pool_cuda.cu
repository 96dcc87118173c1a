// CUDA kernel of meanspot_fused::spatial_pool (float16, bfloat16, float32,
// float64; accumulation in acc_t): one thread per pixel (n, h, w), grid-stride
// over N * H * W; the thread walks the C channels (coalesced across the warp's
// adjacent pixels) and writes the mean to channel 0 and the NaN-propagating
// max to channel 1 of (N, 2, H, W). x is read through its strides (see
// gpu::Strides4): no copy of the input is made.
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "../ops/ops.h"
#include "cuda_utils.cuh"

namespace meanspot {
namespace {

using gpu::PoolShape;

constexpr int kThreads = 256;

// Thread of pixel i = (n, p) of N * H * W: channel walk at stride `plane`.
// The mean is the sum times 1 / C, as the CPU kernel computes it.
template <typename scalar_t>
__global__ void __launch_bounds__(kThreads)
spatial_pool_kernel(const scalar_t* __restrict__ x, PoolShape shape, int64_t pixels,
                    acc_t<scalar_t> inv_channels, scalar_t* __restrict__ out) {
  using acc = acc_t<scalar_t>;
  const int64_t plane = int64_t(shape.height) * shape.width;
  const unsigned int first = blockIdx.x * kThreads + threadIdx.x, step = gridDim.x * kThreads;
  gpu::NchwWalk at(first, step, 1, shape.height, shape.width);  // pixel i = (n, h, w)
  for (int64_t i = first; i < pixels; i += step, at.next()) {
    const int64_t n = at.n, p = int64_t(at.h) * shape.width + at.w;
    const scalar_t* __restrict__ px = x + n * shape.stride.n + at.h * shape.stride.h + at.w * shape.stride.w;
    acc sum = static_cast<acc>(px[0]);
    acc max = sum;
    for (int c = 1; c < shape.channels; ++c) {
      const acc y = static_cast<acc>(px[c * shape.stride.c]);
      sum += y;
      max = nan_max(max, y);
    }
    scalar_t* __restrict__ po = out + 2 * n * plane + p;
    po[0] = static_cast<scalar_t>(sum * inv_channels);
    po[plane] = static_cast<scalar_t>(max);
  }
}

at::Tensor spatial_pool_cuda(const at::Tensor& x_in) {
  constexpr const char* op = "meanspot_fused.spatial_pool";
  check_pool_input(x_in, op);
  gpu::check_cuda_input(x_in, op);
  c10::cuda::CUDAGuard device_guard(x_in.device());
  const at::Tensor& x = x_in;  // read through its strides, never copied
  const int64_t n = x.size(0), plane = x.size(2) * x.size(3);
  const int channels = x.size(1);
  const PoolShape shape{channels, int(x.size(2)), int(x.size(3)), gpu::strides_of(x)};
  at::Tensor out = at::empty({n, 2, x.size(2), x.size(3)}, x.options());
  if (x.numel() == 0) return out;
  const int device = x.get_device();
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  MSF_DISPATCH_CUDA_TYPES(x.scalar_type(), op, [&] {
    using acc = acc_t<scalar_t>;
    spatial_pool_kernel<scalar_t><<<gpu::grid_size(n * plane, kThreads, device), kThreads, 0, stream>>>(
        x.const_data_ptr<scalar_t>(), shape, n * plane, acc(1) / acc(channels),
        out.mutable_data_ptr<scalar_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(meanspot_fused, CUDA, m) {
  m.impl("spatial_pool", &spatial_pool_cuda);
}

}  // namespace meanspot
