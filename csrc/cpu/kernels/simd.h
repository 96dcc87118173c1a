// The instruction-set level of a CPU kernel translation unit, in one place.
//
// Every file under csrc/cpu/kernels/ is compiled once per level by setup.py,
// with -DCPU_CAPABILITY=<level> -DCPU_CAPABILITY_<level> and that level's
// target flags, as ATen compiles aten/src/ATen/native/cpu/:
//   DEFAULT  the compiler's baseline (x86-64: SSE2; arm64: NEON)  16-byte vectors
//   AVX2     -march=x86-64-v3 (AVX2, FMA, BMI2, F16C)            32-byte vectors
//   AVX512   -march=x86-64-v4 (AVX-512 F/BW/DQ/VL)               64-byte vectors
// csrc/cpu/dispatch.cpp picks the best level the CPU supports on first use.
//
// Invariants this header holds for the kernels:
// - No vector type is wider than the level's registers. A 64-byte GCC vector
//   on an AVX2 target has no register: it lives on the stack, a scalar times
//   it is built element by element and `a < b ? x : y` is scalarized lane by
//   lane (one conv tap took 553 instructions instead of 32). The build adds
//   -Werror=psabi, which rejects a vector passed or returned wider than the
//   target's registers.
// - Each level's code lives in namespace meanspot::cpu::CPU_CAPABILITY. Inline
//   functions and template instantiations are weak symbols that the linker
//   merges across translation units by name: without a namespace per level the
//   AVX-512 copy of a function could serve the AVX2 path (an illegal
//   instruction on an AVX2-only CPU). setup.py checks every level object: all
//   its global symbols are in its level's namespace and it has no static
//   initializer (which would run at load time on any CPU).
// - No torch, ATen or c10 include: their inline functions would be emitted
//   here with this level's instructions under shared names (the same merging
//   hazard); allocation, threads and tensors stay in the host files
//   (csrc/cpu/<op>_cpu.cpp).
#pragma once

#if !defined(CPU_CAPABILITY)
#error "csrc/cpu/kernels/ is compiled once per level by setup.py with -DCPU_CAPABILITY=DEFAULT|AVX2|AVX512"
#endif

#include <cstddef>
#include <cstdint>

namespace meanspot {
namespace cpu {
namespace CPU_CAPABILITY {

#if defined(CPU_CAPABILITY_AVX512)
#if !defined(__AVX512F__) || !defined(__AVX512BW__) || !defined(__AVX512VL__) || !defined(__AVX512DQ__)
#error "the AVX512 level needs -march=x86-64-v4"
#endif
constexpr int kVectorBytes = 64;
// Vector registers of the level: conv tiles keep their accumulators in about
// three quarters of them (the rest hold the loaded inputs and broadcasts).
constexpr int kVectorRegisters = 32;
#elif defined(CPU_CAPABILITY_AVX2)
#if !defined(__AVX2__) || !defined(__FMA__)
#error "the AVX2 level needs -march=x86-64-v3"
#endif
constexpr int kVectorBytes = 32;
constexpr int kVectorRegisters = 16;
#elif defined(CPU_CAPABILITY_DEFAULT)
constexpr int kVectorBytes = 16;  // SSE2 on x86-64, NEON on arm64
constexpr int kVectorRegisters = 16;
#else
#error "unknown CPU_CAPABILITY"
#endif

// The level's name, as reported by meanspot_fused.cpu_capability().
#define MEANSPOT_STR2(x) #x
#define MEANSPOT_STR(x) MEANSPOT_STR2(x)
constexpr const char* kLevelName = MEANSPOT_STR(CPU_CAPABILITY);

// One register of T lanes.
template <typename T>
struct Vec {
  static constexpr int kLanes = kVectorBytes / sizeof(T);
  typedef T type __attribute__((vector_size(kVectorBytes)));
};

// Scratch owned by one kernel call (one thread's range of samples). A class
// of this namespace, not std::vector or std::unique_ptr: the level's code must
// not instantiate templates outside its namespace (see above; GCC emitted
// unique_ptr's destructor out of line here). Not zeroed.
template <typename T>
class Buffer {
 public:
  explicit Buffer(int64_t n) : data_(new T[n > 0 ? n : 1]) {}
  ~Buffer() { delete[] data_; }
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
  T* get() { return data_; }
  T& operator[](int64_t i) { return data_[i]; }

 private:
  T* data_;
};

}  // namespace CPU_CAPABILITY
}  // namespace cpu
}  // namespace meanspot
