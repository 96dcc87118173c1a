// CUDA entry of meanspot_fused::tvl1_flow: checks, allocation, stream and
// launch. The kernel (one block per frame pair, the whole coarse-to-fine
// solve in one launch), its design and launch plan are in
// kernels/tvl1_flow.cuh (torch-free, also run by the SIMT emulator,
// tests/cuda_emu).
#include <ATen/ops/empty.h>
#include <ATen/ops/isfinite.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <cstdint>
#include <tuple>

#include "../ops/ops.h"
#include "../tvl1_math.h"
#include "cuda_utils.cuh"
#include "kernels/tvl1_flow.cuh"

namespace meanspot {
namespace {

using gpu::tvl1_flow::constants;
using gpu::tvl1_flow::kThreads;
using gpu::tvl1_flow::Plan;
using gpu::tvl1_flow::tvl1_flow_kernel;

std::tuple<at::Tensor, at::Tensor> tvl1_flow_cuda(const at::Tensor& prev, const at::Tensor& next, double tau,
                                                  double lambda, double theta, int64_t scales, int64_t warps,
                                                  double epsilon, int64_t inner, int64_t outer, double scale_step,
                                                  int64_t median, c10::string_view remap) {
  const tvl1::Params p = check_tvl1_flow_args(prev, next, tau, lambda, theta, scales, warps, epsilon, inner, outer,
                                        scale_step, median, remap);
  constexpr const char* op = "meanspot_fused.tvl1_flow";
  TORCH_CHECK(prev.is_cuda(), op, ": prev must be a CUDA tensor here, got ", prev.device());
  c10::cuda::CUDAGuard device_guard(prev.device());
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const int64_t n = prev.size(0);
  const int h = int(prev.size(1)), w = int(prev.size(2));
  at::Tensor flow = at::empty({n, 2, h, w}, prev.options().dtype(at::kFloat));
  at::Tensor counts = at::empty({n, 2}, prev.options().dtype(at::kLong));
  if (n == 0) return {flow, counts};
  if (prev.scalar_type() == at::kFloat) {
    // As the CPU entry; the check synchronizes, so it is skipped while the
    // stream is being captured into a CUDA graph (the kernel stays memory-safe
    // on NaN and inf: every tap is bounds-checked and every loop is bounded).
    cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
    C10_CUDA_CHECK(cudaStreamIsCapturing(stream, &capture));
    if (capture == cudaStreamCaptureStatusNone) {
      TORCH_CHECK(at::isfinite(prev).all().item<bool>() && at::isfinite(next).all().item<bool>(), op,
                  ": prev and next must hold finite values (NaN or inf found)");
    }
  }
  const tvl1::Pyramid py = tvl1::make_pyramid(h, w, p);
  const Plan plan = gpu::tvl1_flow::plan(py, h, w, n, gpu::limits(prev.get_device()));
  at::Tensor workspace = at::empty({int64_t(plan.blocks) * plan.slice}, prev.options().dtype(at::kFloat));
  auto launch = [&](auto tag) {
    using In = decltype(tag);
    tvl1_flow_kernel<In><<<plan.blocks, kThreads, 0, stream>>>(
        prev.const_data_ptr<In>(), next.const_data_ptr<In>(), prev.stride(0), prev.stride(1), prev.stride(2),
        next.stride(0), next.stride(1), next.stride(2), n, p, constants(p), py, workspace.mutable_data_ptr<float>(), plan.slice,
        flow.mutable_data_ptr<float>(), counts.mutable_data_ptr<int64_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  };
  if (prev.scalar_type() == at::kByte) {
    launch(uint8_t{});
  } else {
    launch(float{});
  }
  return {flow, counts};
}

}  // namespace

TORCH_LIBRARY_IMPL(meanspot_fused, CUDA, m) {
  m.impl("tvl1_flow", &tvl1_flow_cuda);
}

}  // namespace meanspot
