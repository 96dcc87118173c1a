// This level's kernel table (see ../cpu_kernels.h): constant-initialized, so
// loading the library runs no code compiled for any level.
#include "level.h"

namespace meanspot {
namespace cpu {
namespace CPU_CAPABILITY {

template <typename T>
constexpr NetKernels<T> net_kernels() {
  return NetKernels<T>{&conv_block_kernel<T>, &channel_pool_kernel<T>, &spatial_pool_kernel<T>, &cbam_kernel<T>,
                       &net_samples_kernel<T>, &net_branches_kernel<T>, &net_heads_kernel<T>};
}

constexpr CpuKernels kernels{kLevelName, net_kernels<float>(), net_kernels<double>(), &tvl1_flow_u8_kernel,
                             &tvl1_flow_f32_kernel, &mean_roi_features_kernel};

}  // namespace CPU_CAPABILITY
}  // namespace cpu
}  // namespace meanspot
