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
        merged(M * M * M),
        padded_merged(cpu::padded_size<T>(M, M, M, NetConfig::kHeadKernel)),
        head_conv(F * M * M),
        head_act(F * M * M),
        feat(F * (M / 2) * (M / 2)) {}
};

// Branch b of one sample: input is its (1, 42, 42) map; writes the branch's
// F pooled (14, 14) planes to `merged_channels` (its slice of the concat).
template <typename T>
void branch_forward(const NetConfig& c, const NetOffsets& o, const T* p, int b, const cpu::StridedPlane<T>& input,
                    T* merged_channels, NetScratch<T>& s) {
  constexpr int S = NetConfig::kInput;
  const int k = NetConfig::kBranchKernel, f = NetConfig::branch_filters(b);
  const BranchOffsets& br = o.branch[b];
  cpu::pad_plane_strided(input, S, S, k, s.padded_in.data());
  cpu::conv_same(s.padded_in.data(), 1, S, S, p + br.weight, p + br.bias, f, k, s.conv.data());
  if (c.cbam_branches) {
    cpu::relu_affine_pool(s.conv.data(), f, S, S, p + br.scale, p + br.shift, 1, s.act.data());
    cpu::cbam_sample(s.act.data(), f, S, S, cbam_params(p, br.cbam, c.hidden[b], c.spatial_kernel),
                     NetConfig::kBranchPool, merged_channels, s.cbam.data());
  } else {
    cpu::relu_affine_pool(s.conv.data(), f, S, S, p + br.scale, p + br.shift, NetConfig::kBranchPool,
                          merged_channels);
  }
}

// Channel offset of branch b in the (14, 14, 14) concat (order u, v, os).
inline int branch_channel(int b) {
  int channel = 0;
  for (int i = 0; i < b; ++i) channel += NetConfig::branch_filters(i);
  return channel;
}

// Offset of head h's values in one sample's output row (spot first, then recog).
inline int head_output_offset(const NetOffsets& o, int h) {
  int offset = 0;
  for (int i = 0; i < h; ++i) offset += o.head[i].outputs;
  return offset;
}

// Head h of one sample from its (14, 14, 14) concat, zero-padded for the 5x5
// conv (see pad_planes); writes the head's outputs to `logits`.
template <typename T>
void head_forward(const NetConfig& c, const NetOffsets& o, const T* p, int h, const T* padded_merged, T* logits,
                  NetScratch<T>& s) {
  constexpr int M = NetConfig::kMerged, F = NetConfig::kHeadFilters;
  const HeadOffsets& hd = o.head[h];
  cpu::conv_same(padded_merged, M, M, M, p + hd.weight, p + hd.bias, F, NetConfig::kHeadKernel, s.head_conv.data());
  if (c.cbam_merged) {
    cpu::relu_affine_pool<T>(s.head_conv.data(), F, M, M, nullptr, nullptr, 1, s.head_act.data());
    cpu::cbam_sample(s.head_act.data(), F, M, M, cbam_params(p, hd.cbam, c.hidden_head, c.spatial_kernel),
                     NetConfig::kHeadPool, s.feat.data(), s.cbam.data());
  } else {
    cpu::relu_affine_pool<T>(s.head_conv.data(), F, M, M, nullptr, nullptr, NetConfig::kHeadPool, s.feat.data());
  }
  const int features = int(s.feat.size());
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
}

// One whole sample on one thread: inputs[b] is the (1, 42, 42) map of branch b;
// out has c.outputs() values.
template <typename T>
void forward_sample(const NetConfig& c, const NetOffsets& o, const T* p, const cpu::StridedPlane<T> inputs[3], T* out,
                    NetScratch<T>& s) {
  constexpr int M = NetConfig::kMerged;
  for (int b = 0; b < 3; ++b)
    branch_forward(c, o, p, b, inputs[b], s.merged.data() + int64_t(branch_channel(b)) * M * M, s);
  cpu::pad_planes(s.merged.data(), M, M, M, NetConfig::kHeadKernel, s.padded_merged.data());
  for (int h = 0; h < o.heads; ++h) head_forward(c, o, p, h, s.padded_merged.data(), out + head_output_offset(o, h), s);
}

at::Tensor meanspot_net_cpu(const at::Tensor& u_in, const at::Tensor& v_in, const at::Tensor& os_in,
                            const at::Tensor& params_in, at::IntArrayRef config) {
  constexpr const char* op = "meanspot_fused.meanspot_net";
  const NetConfig c = check_meanspot_net_args(u_in, v_in, os_in, params_in, config);
  TORCH_CHECK(u_in.device().is_cpu(), op, ": u must be a CPU tensor here, got ", u_in.device());
  TORCH_CHECK(u_in.scalar_type() == at::kFloat || u_in.scalar_type() == at::kDouble, op,
              ": on CPU u, v, os must be float32 or float64, got ", u_in.scalar_type());
  // The inputs are read through their strides (any layout, expanded batches
  // included) instead of copied: .contiguous() of an expanded 262,144-sample
  // batch would allocate 5.5 GB.
  const at::Tensor &u = u_in, &v = v_in, &os = os_in;
  const at::Tensor params = params_in.contiguous();
  const NetOffsets o = layout_net(c);
  const int64_t n = u.size(0);
  at::Tensor out = at::empty({n, c.outputs()}, u.options());
  if (n == 0) return out;
  AT_DISPATCH_FLOATING_TYPES(u.scalar_type(), op, [&] {
    auto sample = [&](const at::Tensor& t, int64_t i) {
      return cpu::StridedPlane<scalar_t>{t.data_ptr<scalar_t>() + i * t.stride(0), t.stride(2), t.stride(3)};
    };
    const scalar_t* pp = params.data_ptr<scalar_t>();
    scalar_t* outp = out.data_ptr<scalar_t>();
    const int outputs = c.outputs();
    if (n >= at::get_num_threads()) {
      // Enough samples for every thread: one sample at a time per thread.
      at::parallel_for(0, n, 1, [&](int64_t begin, int64_t end) {
        NetScratch<scalar_t> scratch(c.spatial_kernel);
        for (int64_t i = begin; i < end; ++i) {
          const cpu::StridedPlane<scalar_t> inputs[3] = {sample(u, i), sample(v, i), sample(os, i)};
          forward_sample(c, o, pp, inputs, outp + i * outputs, scratch);
        }
      });
      return;
    }
    // Fewer samples than threads (streaming, batch 1): split each sample into
    // its three branches (u + v on one thread and os on another hold about
    // equal work), then its heads; the concat of each sample is the only
    // intermediate shared between the two regions. Same arithmetic per value
    // as the path above, so results are bitwise identical.
    constexpr int M = NetConfig::kMerged;
    const int64_t merged_size = cpu::padded_size<scalar_t>(M, M, M, NetConfig::kHeadKernel);
    std::vector<scalar_t> merged(n * int64_t(M) * M * M), padded(n * merged_size);
    at::parallel_for(0, 3 * n, 1, [&](int64_t begin, int64_t end) {
      NetScratch<scalar_t> scratch(c.spatial_kernel);
      for (int64_t t = begin; t < end; ++t) {
        const int64_t i = t / 3;
        const int b = int(t % 3);
        branch_forward(c, o, pp, b, sample(b == 0 ? u : b == 1 ? v : os, i), merged.data() + (i * M + branch_channel(b)) * M * M, scratch);
      }
    });
    for (int64_t i = 0; i < n; ++i)
      cpu::pad_planes(merged.data() + i * M * M * M, M, M, M, NetConfig::kHeadKernel, padded.data() + i * merged_size);
    at::parallel_for(0, o.heads * n, 1, [&](int64_t begin, int64_t end) {
      NetScratch<scalar_t> scratch(c.spatial_kernel);
      for (int64_t t = begin; t < end; ++t) {
        const int64_t i = t / o.heads;
        const int h = int(t % o.heads);
        head_forward(c, o, pp, h, padded.data() + i * merged_size, outp + i * outputs + head_output_offset(o, h),
                     scratch);
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
