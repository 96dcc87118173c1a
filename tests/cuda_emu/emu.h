// The CUDA built-ins the kernel headers of csrc/cuda/kernels use, for running
// them on the CPU in the SIMT emulator (tests/cuda_emu, see its README).
//
// Include this before any kernel header: it maps the CUDA keywords to plain
// C++, threadIdx/blockIdx/blockDim/gridDim to the running fiber's values, the
// barriers, warp intrinsics and atomics to the fiber scheduler of
// emu_runtime.cpp, and the math intrinsics to their nearest libm function
// (approximations listed beside each). Every synchronising call takes its
// call site through __builtin_FILE()/__builtin_LINE() default arguments, so a
// divergent barrier or a warp mismatch names the lines involved.
#pragma once

#include <math.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <type_traits>

struct dim3 {
  unsigned int x, y, z;
  constexpr dim3(unsigned int x_ = 1, unsigned int y_ = 1, unsigned int z_ = 1) : x(x_), y(y_), z(z_) {}
};

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __grid_constant__
#define __align__(n) alignas(n)
// Static __shared__ variables: function-local statics in one linker section,
// so the runtime knows their address range (emu_shared_begin/end) and resets
// them at every block (blocks run one at a time).
#define __shared__ static __attribute__((section("emu_shared")))

namespace emu {

// A call site of a synchronising intrinsic.
struct Site {
  const char* file;
  int line;
};

struct ThreadState {
  dim3 idx;
};

extern ThreadState* g_thread;  // the running fiber
extern dim3 g_block_idx, g_block_dim, g_grid_dim;
extern unsigned char* g_dynamic_smem;

// Kinds of warp meeting points.
enum WarpOp : int { kSyncWarp, kShflIdx, kShflUp, kShflDown, kShflXor, kBallot, kAny, kAll };

// Block barrier; returns the reduced predicate (kind 0: plain, 1: and, 2: or, 3: count).
int barrier(int kind, int predicate, Site site);
// A warp meeting point of the lanes in `mask`: value (bytes) in, result out;
// for ballot/any/all the predicate is value[0] as int.
void warp_op(WarpOp op, unsigned int mask, const void* value, void* result, std::size_t bytes, int param, int width,
             Site site);
// Race mode: an atomic access of `bytes` at p (never a hazard with another atomic).
void atomic_access(const void* p, std::size_t bytes, Site site);

// The block's dynamic shared memory (the launch's byte count, 16-aligned).
inline unsigned char* dynamic_smem() { return g_dynamic_smem; }

// Runs kernel(args...) over grid x block threads, `smem` bytes of dynamic shared memory.
void launch_impl(dim3 grid, dim3 block, std::size_t smem, const std::function<void()>& body);
template <typename Kernel, typename... Args>
void launch(dim3 grid, dim3 block, std::size_t smem, Kernel kernel, Args... args) {
  launch_impl(grid, block, smem, [&] { kernel(args...); });
}

// Global memory of a launch: tracked by the race mode (cross-block hazards
// included); in memcheck mode its own exact-size allocation.
void track_global(const void* p, std::size_t bytes);
void untrack_all_globals();

// Schedule of the fibers between two meeting points: "forward" (thread 0
// first), "reverse", or "random:<seed>" (a fresh permutation every round).
void set_schedule(const char* schedule);
// Hazards the race mode found so far (each printed once when found).
long hazards();

}  // namespace emu

#define threadIdx (::emu::g_thread->idx)
#define blockIdx (::emu::g_block_idx)
#define blockDim (::emu::g_block_dim)
#define gridDim (::emu::g_grid_dim)
constexpr int warpSize = 32;

#define EMU_SITE_ARGS const char *emu_file = __builtin_FILE(), int emu_line = __builtin_LINE()
#define EMU_SITE ::emu::Site{emu_file, emu_line}

inline void __syncthreads(EMU_SITE_ARGS) { ::emu::barrier(0, 0, EMU_SITE); }
inline int __syncthreads_and(int p, EMU_SITE_ARGS) { return ::emu::barrier(1, p != 0, EMU_SITE); }
inline int __syncthreads_or(int p, EMU_SITE_ARGS) { return ::emu::barrier(2, p != 0, EMU_SITE); }
inline int __syncthreads_count(int p, EMU_SITE_ARGS) { return ::emu::barrier(3, p != 0, EMU_SITE); }
inline void __syncwarp(unsigned int mask = 0xffffffffu, EMU_SITE_ARGS) {
  ::emu::warp_op(::emu::kSyncWarp, mask, nullptr, nullptr, 0, 0, 32, EMU_SITE);
}

template <typename T>
inline T emu_shuffle(::emu::WarpOp op, unsigned int mask, T v, int param, int width, ::emu::Site site) {
  static_assert(std::is_trivially_copyable<T>::value && sizeof(T) <= 16, "shuffle of a register value");
  T r;
  ::emu::warp_op(op, mask, &v, &r, sizeof(T), param, width, site);
  return r;
}
template <typename T>
inline T __shfl_sync(unsigned int mask, T v, int src, int width = 32, EMU_SITE_ARGS) {
  return emu_shuffle(::emu::kShflIdx, mask, v, src, width, EMU_SITE);
}
template <typename T>
inline T __shfl_up_sync(unsigned int mask, T v, unsigned int delta, int width = 32, EMU_SITE_ARGS) {
  return emu_shuffle(::emu::kShflUp, mask, v, int(delta), width, EMU_SITE);
}
template <typename T>
inline T __shfl_down_sync(unsigned int mask, T v, unsigned int delta, int width = 32, EMU_SITE_ARGS) {
  return emu_shuffle(::emu::kShflDown, mask, v, int(delta), width, EMU_SITE);
}
template <typename T>
inline T __shfl_xor_sync(unsigned int mask, T v, int lane_mask, int width = 32, EMU_SITE_ARGS) {
  return emu_shuffle(::emu::kShflXor, mask, v, lane_mask, width, EMU_SITE);
}
inline unsigned int __ballot_sync(unsigned int mask, int p, EMU_SITE_ARGS) {
  int v = p != 0;
  unsigned int r;
  ::emu::warp_op(::emu::kBallot, mask, &v, &r, sizeof(int), 0, 32, EMU_SITE);
  return r;
}
inline int __any_sync(unsigned int mask, int p, EMU_SITE_ARGS) {
  int v = p != 0, r;
  ::emu::warp_op(::emu::kAny, mask, &v, &r, sizeof(int), 0, 32, EMU_SITE);
  return r;
}
inline int __all_sync(unsigned int mask, int p, EMU_SITE_ARGS) {
  int v = p != 0, r;
  ::emu::warp_op(::emu::kAll, mask, &v, &r, sizeof(int), 0, 32, EMU_SITE);
  return r;
}

// Atomics: fibers switch only at barriers and warp intrinsics, so a
// read-modify-write here is atomic by construction; the race mode is told it
// is an atomic (no hazard against another atomic). Not instrumented itself.
#define EMU_ATOMIC(name, expr)                                                    \
  template <typename T>                                                           \
  __attribute__((no_sanitize_thread)) inline T name(T* p, T v, EMU_SITE_ARGS) {   \
    ::emu::atomic_access(p, sizeof(T), EMU_SITE);                                 \
    const T old = *p;                                                             \
    *p = (expr);                                                                  \
    return old;                                                                   \
  }
EMU_ATOMIC(atomicAdd, old + v)
EMU_ATOMIC(atomicSub, old - v)
EMU_ATOMIC(atomicExch, v)
EMU_ATOMIC(atomicMin, v < old ? v : old)
EMU_ATOMIC(atomicMax, old < v ? v : old)
EMU_ATOMIC(atomicAnd, old & v)
EMU_ATOMIC(atomicOr, old | v)
#undef EMU_ATOMIC
template <typename T>
__attribute__((no_sanitize_thread)) inline T atomicCAS(T* p, T compare, T v, EMU_SITE_ARGS) {
  ::emu::atomic_access(p, sizeof(T), EMU_SITE);
  const T old = *p;
  if (old == compare) *p = v;
  return old;
}
inline void __threadfence() {}
inline void __threadfence_block() {}

// Read-only cached load: an ordinary load here.
template <typename T>
inline T __ldg(const T* p) {
  return *p;
}

// Integer min/max of device code (unqualified calls).
inline int min(int a, int b) { return b < a ? b : a; }
inline int max(int a, int b) { return a < b ? b : a; }
inline unsigned int min(unsigned int a, unsigned int b) { return b < a ? b : a; }
inline unsigned int max(unsigned int a, unsigned int b) { return a < b ? b : a; }
inline long long min(long long a, long long b) { return b < a ? b : a; }
inline long long max(long long a, long long b) { return a < b ? b : a; }
inline long min(long a, long b) { return b < a ? b : a; }
inline long max(long a, long b) { return a < b ? b : a; }
using std::isfinite;
using std::isinf;
using std::isnan;

// Rounding-mode intrinsics: round-to-nearest-even is the host's mode, so the
// plain operations are exact equivalents provided the translation unit does
// not contract them (the TV-L1 driver is built with -ffp-contract=off).
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fsub_rn(float a, float b) { return a - b; }
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fdiv_rn(float a, float b) { return a / b; }
inline float __fmaf_rn(float a, float b, float c) { return std::fma(a, b, c); }
inline double __dadd_rn(double a, double b) { return a + b; }
inline double __dsub_rn(double a, double b) { return a - b; }
inline double __dmul_rn(double a, double b) { return a * b; }
inline double __ddiv_rn(double a, double b) { return a / b; }
inline double __fma_rn(double a, double b, double c) { return std::fma(a, b, c); }
// Approximate device intrinsics, mapped to the correctly rounded libm
// function: the device's results differ by a few ulp (__expf: 2 + 1.16|x| ulp,
// rsqrtf: 2 ulp, __fdividef: 2 ulp); expf, sinf, cosf, sqrtf and friends are
// the libm functions themselves (the device's full-precision versions are
// within 1-2 ulp of them).
inline float __expf(float x) { return ::expf(x); }
inline float __logf(float x) { return ::logf(x); }
inline float __sinf(float x) { return ::sinf(x); }
inline float __cosf(float x) { return ::cosf(x); }
inline float __fdividef(float a, float b) { return a / b; }
inline float rsqrtf(float x) { return 1.0f / ::sqrtf(x); }
inline double rsqrt(double x) { return 1.0 / std::sqrt(x); }
