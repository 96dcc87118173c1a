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
  const int64_t n = flow.size(0);
  at::Tensor out = at::empty({n, features::kChannels, features::kOutSize, features::kOutSize}, flow.options());
  if (n == 0) return out;
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  // The boxes are checked on the host, with the CPU op's message, before the launch (the contract of both
  // devices; see ../ops/mean_roi_features.cpp).
  at::Tensor boxes;
  cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
  C10_CUDA_CHECK(cudaStreamIsCapturing(stream, &capture));
  if (boxes_in.is_cpu()) {
    const at::Tensor host = boxes_in.contiguous();
    check_mean_roi_boxes(host.const_data_ptr<int64_t>(), n, flow.size(2), flow.size(3));
    // From pinned memory the copy is queued on the stream and returns at once: no device synchronisation.
    // The caching host allocator keeps the pinned block until the copy has run.
    boxes = host.pin_memory().to(flow.device(), /*non_blocking=*/true);
  } else if (capture == cudaStreamCaptureStatusNone) {
    const at::Tensor host = boxes_in.to(at::kCPU);  // one synchronisation: pass CPU boxes to avoid it
    check_mean_roi_boxes(host.contiguous().const_data_ptr<int64_t>(), n, flow.size(2), flow.size(3));
    boxes = boxes_in.contiguous();
  } else {
    // Capturing a CUDA graph: no read back is allowed; the kernel writes NaN for a pair with a bad box.
    boxes = boxes_in.contiguous();
  }
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
