// CUDA entry of meanspot_fused::meanspot_net: checks, allocation, stream and
// launch. The whole-network kernel (its CBAM steps from kernels/blocks.cuh),
// its work split and launch plan are in kernels/meanspot_net.cuh (torch-free,
// also run by the SIMT emulator, tests/cuda_emu).
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "../net_layout.h"
#include "../ops/ops.h"
#include "cuda_utils.cuh"
#include "kernels/meanspot_net.cuh"

namespace meanspot {
namespace {

using namespace gpu::meanspot_net;

template <typename scalar_t>
void meanspot_net_cuda_impl(const at::Tensor& u, const at::Tensor& v, const at::Tensor& os, const at::Tensor& params,
                            const NetConfig& c, at::Tensor& out) {
  using acc = acc_t<scalar_t>;
  constexpr const char* op = "meanspot_fused.meanspot_net";
  const NetOffsets o = layout_net(c);
  const NetSmem l = net_smem_layout<acc>(c.spatial_kernel);
  const int64_t batch = u.size(0);
  const int device = u.get_device();
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  NetInputs<scalar_t> inputs;
  const at::Tensor* maps[3] = {&u, &v, &os};
  for (int b = 0; b < 3; ++b) {
    inputs.data[b] = maps[b]->const_data_ptr<scalar_t>();
    inputs.stride_n[b] = maps[b]->stride(0);
    inputs.stride_h[b] = maps[b]->stride(2);
    inputs.stride_w[b] = maps[b]->stride(3);
  }
  const scalar_t* pp = params.const_data_ptr<scalar_t>();
  scalar_t* outp = out.mutable_data_ptr<scalar_t>();
  const Plan p = plan(l, sizeof(acc), batch, gpu::dynamic_smem_limit<meanspot_net_kernel<scalar_t, false>>(device),
                      gpu::limits(device));
  if (!p.global_scratch) {
    gpu::require_dynamic_smem<meanspot_net_kernel<scalar_t, false>>(p.smem, device, op);
    meanspot_net_kernel<scalar_t, false><<<p.blocks, kThreads, p.smem, stream>>>(inputs, pp, c, o, l, batch,
                                                                                c.outputs(), nullptr, outp);
  } else {
    at::Tensor workspace = at::empty({p.workspace}, u.options().dtype(gpu::acc_scalar_type<scalar_t>()));
    meanspot_net_kernel<scalar_t, true><<<p.blocks, kThreads, 0, stream>>>(
        inputs, pp, c, o, l, batch, c.outputs(), workspace.mutable_data_ptr<acc>(), outp);
  }
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

at::Tensor meanspot_net_cuda(const at::Tensor& u_in, const at::Tensor& v_in, const at::Tensor& os_in,
                             const at::Tensor& params_in, at::IntArrayRef config) {
  constexpr const char* op = "meanspot_fused.meanspot_net";
  const NetConfig c = check_meanspot_net_args(u_in, v_in, os_in, params_in, config);
  TORCH_CHECK(u_in.is_cuda(), op, ": u must be a CUDA tensor here, got ", u_in.device());
  const auto t = u_in.scalar_type();
  TORCH_CHECK(t == at::kFloat || t == at::kHalf || t == at::kBFloat16 || t == at::kDouble, op,
              ": on CUDA u, v, os must be float16, bfloat16, float32 or float64, got ", t);
  c10::cuda::CUDAGuard device_guard(u_in.device());
  // u, v, os are read through their strides (no copy of expanded or strided
  // batches); the kernel indexes the packed parameters as a dense vector.
  const at::Tensor params = params_in.contiguous();
  at::Tensor out = at::empty({u_in.size(0), c.outputs()}, u_in.options());
  if (out.numel() == 0) return out;
  MSF_DISPATCH_CUDA_TYPES(t, op, [&] { meanspot_net_cuda_impl<scalar_t>(u_in, v_in, os_in, params, c, out); });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(meanspot_fused, CUDA, m) {
  m.impl("meanspot_net", &meanspot_net_cuda);
}

}  // namespace meanspot
