// CPU kernel of meanspot_fused::meanspot_net (float32, float64): the whole
// network in one parallel region.
// Work split: at::parallel_for over the batch; each thread owns one set of
// scratch buffers (about 120 KB in float32: L2-resident) and carries one
// sample at a time from the three input maps to its outputs, using the same
// per-sample building blocks as the per-op kernels (sample_kernels.h).
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <cmath>
#include <vector>

#include "../net_layout.h"
#include "../ops/ops.h"
#include "sample_kernels.h"

namespace meanspot {
namespace {

template <typename T>
cpu::CbamParams<T> cbam_params(const T* p, const CbamOffsets& o, int hidden, int kernel) {
  return cpu::CbamParams<T>{p + o.w1, p + o.b1, p + o.w2, p + o.b2, p + o.spatial, p[o.scale], p[o.shift],
                            hidden, kernel};
}

template <typename T>
struct NetScratch {
  static constexpr int S = NetConfig::kInput, M = NetConfig::kMerged, F = NetConfig::kHeadFilters;
  std::vector<T> padded_in, conv, act, cbam, merged, padded_merged, head_conv, head_act, feat;
  NetScratch(int spatial_kernel)
      : padded_in(cpu::padded_size<T>(1, S, S, NetConfig::kBranchKernel)),
        conv(8 * S * S),
        act(8 * S * S),
        cbam(cpu::cbam_scratch_size<T>(8, 8, S, S, spatial_kernel)),
        merged(M * (M) * (M)),
        padded_merged(cpu::padded_size<T>(M, M, M, NetConfig::kHeadKernel)),
        head_conv(F * M * M),
        head_act(F * M * M),
        feat(F * (M / 2) * (M / 2)) {}
};

// One sample: inputs[b] is the (1, 42, 42) map of branch b; out has c.outputs() values.
template <typename T>
void forward_sample(const NetConfig& c, const NetOffsets& o, const T* p, const T* const inputs[3], T* out,
                    NetScratch<T>& s) {
  constexpr int S = NetConfig::kInput, M = NetConfig::kMerged, F = NetConfig::kHeadFilters;
  const int k = NetConfig::kBranchKernel;
  int channel = 0;
  for (int b = 0; b < 3; ++b) {
    const int f = NetConfig::kBranchFilters[b];
    const BranchOffsets& br = o.branch[b];
    T* dst = s.merged.data() + int64_t(channel) * M * M;  // this branch's channels of the concat
    cpu::pad_planes(inputs[b], 1, S, S, k, s.padded_in.data());
    cpu::conv_same(s.padded_in.data(), 1, S, S, p + br.weight, p + br.bias, f, k, s.conv.data());
    if (c.cbam_branches) {
      cpu::relu_affine_pool(s.conv.data(), f, S, S, p + br.scale, p + br.shift, 1, s.act.data());
      cpu::cbam_sample(s.act.data(), f, S, S, cbam_params(p, br.cbam, c.hidden[b], c.spatial_kernel),
                       NetConfig::kBranchPool, dst, s.cbam.data());
    } else {
      cpu::relu_affine_pool(s.conv.data(), f, S, S, p + br.scale, p + br.shift, NetConfig::kBranchPool, dst);
    }
    channel += f;
  }
  cpu::pad_planes(s.merged.data(), M, M, M, NetConfig::kHeadKernel, s.padded_merged.data());
  int written = 0;
  for (int h = 0; h < o.heads; ++h) {
    const HeadOffsets& hd = o.head[h];
    cpu::conv_same(s.padded_merged.data(), M, M, M, p + hd.weight, p + hd.bias, F, NetConfig::kHeadKernel,
                   s.head_conv.data());
    if (c.cbam_merged) {
      cpu::relu_affine_pool<T>(s.head_conv.data(), F, M, M, nullptr, nullptr, 1, s.head_act.data());
      cpu::cbam_sample(s.head_act.data(), F, M, M, cbam_params(p, hd.cbam, c.hidden_head, c.spatial_kernel),
                       NetConfig::kHeadPool, s.feat.data(), s.cbam.data());
    } else {
      cpu::relu_affine_pool<T>(s.head_conv.data(), F, M, M, nullptr, nullptr, NetConfig::kHeadPool, s.feat.data());
    }
    const int features = int(s.feat.size());
    T* logits = out + written;
    for (int j = 0; j < hd.outputs; ++j) {
      const T* w = p + hd.dense_weight + int64_t(j) * features;
      acc_t<T> acc = p[hd.dense_bias + j];
      for (int i = 0; i < features; ++i) acc += acc_t<T>(w[i]) * s.feat[i];
      logits[j] = T(acc);
    }
    if (hd.softmax) {
      // Max-subtracted, as torch.softmax: exp never overflows; a NaN logit gives NaN probabilities.
      T mx = logits[0];
      for (int j = 1; j < hd.outputs; ++j) mx = nan_max(mx, logits[j]);
      acc_t<T> sum = 0;
      for (int j = 0; j < hd.outputs; ++j) {
        logits[j] = T(std::exp(acc_t<T>(logits[j] - mx)));
        sum += logits[j];
      }
      for (int j = 0; j < hd.outputs; ++j) logits[j] = T(logits[j] / sum);
    }
    written += hd.outputs;
  }
}

at::Tensor meanspot_net_cpu(const at::Tensor& u_in, const at::Tensor& v_in, const at::Tensor& os_in,
                            const at::Tensor& params_in, at::IntArrayRef config) {
  constexpr const char* op = "meanspot_fused.meanspot_net";
  const NetConfig c = check_meanspot_net_args(u_in, v_in, os_in, params_in, config);
  TORCH_CHECK(u_in.device().is_cpu(), op, ": u must be a CPU tensor here, got ", u_in.device());
  TORCH_CHECK(u_in.scalar_type() == at::kFloat || u_in.scalar_type() == at::kDouble, op,
              ": on CPU u, v, os must be float32 or float64, got ", u_in.scalar_type());
  const at::Tensor u = u_in.contiguous(), v = v_in.contiguous(), os = os_in.contiguous(),
                   params = params_in.contiguous();
  const NetOffsets o = layout_net(c);
  const int64_t n = u.size(0);
  at::Tensor out = at::empty({n, c.outputs()}, u.options());
  if (n == 0) return out;
  AT_DISPATCH_FLOATING_TYPES(u.scalar_type(), op, [&] {
    const scalar_t* up = u.data_ptr<scalar_t>();
    const scalar_t* vp = v.data_ptr<scalar_t>();
    const scalar_t* osp = os.data_ptr<scalar_t>();
    const scalar_t* pp = params.data_ptr<scalar_t>();
    scalar_t* outp = out.data_ptr<scalar_t>();
    constexpr int64_t plane = int64_t(NetConfig::kInput) * NetConfig::kInput;
    const int outputs = c.outputs();
    at::parallel_for(0, n, 1, [&](int64_t begin, int64_t end) {
      NetScratch<scalar_t> scratch(c.spatial_kernel);
      for (int64_t i = begin; i < end; ++i) {
        const scalar_t* inputs[3] = {up + i * plane, vp + i * plane, osp + i * plane};
        forward_sample(c, o, pp, inputs, outp + i * outputs, scratch);
      }
    });
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(meanspot_fused, CPU, m) {
  m.impl("meanspot_net", &meanspot_net_cpu);
}

}  // namespace meanspot
