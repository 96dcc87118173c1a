// The kernels one instruction-set level defines (simd.h), gathered into that
// level's table by table_kernel.cpp. Each runs items [begin, end) of its
// arguments on the calling thread (see ../cpu_kernels.h).
#pragma once

#include "../cpu_kernels.h"
#include "simd.h"

namespace meanspot {
namespace cpu {
namespace CPU_CAPABILITY {

// network_kernel.cpp
template <typename T>
void conv_block_kernel(const ConvBlockArgs<T>& a, int64_t begin, int64_t end);
template <typename T>
void channel_pool_kernel(const ChannelPoolArgs<T>& a, int64_t begin, int64_t end);
template <typename T>
void spatial_pool_kernel(const SpatialPoolArgs<T>& a, int64_t begin, int64_t end);
template <typename T>
void cbam_kernel(const CbamArgs<T>& a, int64_t begin, int64_t end);
template <typename T>
void net_samples_kernel(const NetArgs<T>& a, int64_t begin, int64_t end);
template <typename T>
void net_branches_kernel(const NetArgs<T>& a, int64_t begin, int64_t end);
template <typename T>
void net_heads_kernel(const NetArgs<T>& a, int64_t begin, int64_t end);

// tvl1_flow_kernel.cpp
void tvl1_flow_u8_kernel(const Tvl1Args& a, int64_t begin, int64_t end);
void tvl1_flow_f32_kernel(const Tvl1Args& a, int64_t begin, int64_t end);

// mean_roi_features_kernel.cpp
void mean_roi_features_kernel(const RoiFeatureArgs& a, int64_t begin, int64_t end);

extern const CpuKernels kernels;

}  // namespace CPU_CAPABILITY
}  // namespace cpu
}  // namespace meanspot
