// CUDA entry of meanspot_fused::mean_roi_features: checks, allocation,
// stream and launch. The kernel, its work split and launch are in
// kernels/mean_roi_features.cuh (torch-free, also run by the SIMT emulator,
// tests/cuda_emu).
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "../features_math.h"
#include "../ops/mean_roi_features.h"
#include "cuda_utils.cuh"
#include "kernels/mean_roi_features.cuh"

namespace meanspot {
namespace {

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
  namespace k = gpu::mean_roi_features;
  k::mean_roi_features_kernel<<<k::grid(n, gpu::limits(flow.get_device())), k::kThreads, 0, stream>>>(
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
