// Scalar math shared by the CPU and CUDA kernels of meanspot_fused.
//
// Everything here is the one definition of the network's elementwise numerics;
// the CPU loops (csrc/cpu) and the CUDA kernels (csrc/cuda) both include it, so
// the two devices cannot drift apart. Functions are templates on the
// accumulation type `acc_t` (float for float/half/bfloat16, double for double).
#pragma once

#include <cmath>
#include <cstdint>

#if defined(__CUDACC__) || defined(__HIPCC__)
#define MSF_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define MSF_HOST_DEVICE inline
#endif

namespace meanspot {

// Accumulation type: float for float and the 16-bit types, double for double.
template <typename scalar_t>
struct AccType { using type = float; };
template <>
struct AccType<double> { using type = double; };
template <typename scalar_t>
using acc_t = typename AccType<scalar_t>::type;

// Maximum that propagates NaN like torch.amax / max_pool2d: if either operand
// is NaN the result is NaN. Written as `a > b ? a : b` (one maxss / max
// instruction, no data-dependent branch: a compare-and-branch here
// mispredicts on every other pixel) followed by a NaN test that is almost
// never taken; the same expression works on GCC vector types on the host.
template <typename T>
MSF_HOST_DEVICE T nan_max(T a, T b) {
  const T m = a > b ? a : b;  // NaN in b propagates here
  return a != a ? a : m;      // NaN in a propagates here
}

// ReLU that keeps NaN (torch.relu(nan) == nan): `x < 0 ? 0 : x`, not `x > 0 ? x : 0`.
template <typename T>
MSF_HOST_DEVICE T relu(T x) {
  return x < T(0) ? T(0) : x;
}

MSF_HOST_DEVICE float sigmoid(float x) { return 1.0f / (1.0f + ::expf(-x)); }
MSF_HOST_DEVICE double sigmoid(double x) { return 1.0 / (1.0 + ::exp(-x)); }

// The MEAN branch epilogue: BatchNorm comes *after* the ReLU in MEAN, so it
// cannot be folded into the conv; it is applied as a per-channel affine
// `scale * relu(conv) + shift` with scale = gamma / sqrt(var + eps) and
// shift = beta - mean * scale (folded once at fuse time: network/fuse.py, fold_batchnorm).
template <typename T>
MSF_HOST_DEVICE T relu_affine(T conv, T scale, T shift) {
  return relu(conv) * scale + shift;
}

// 'same' padding of a stride-1 convolution with an odd kernel: k / 2 each side.
MSF_HOST_DEVICE int same_pad(int kernel) { return kernel / 2; }

}  // namespace meanspot
