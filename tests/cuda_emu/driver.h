// The emulator's command-line driver: arrays in and out as .npy files, one
// function per CUDA op that launches the op's kernels as its host wrapper
// does (same launch plan functions, csrc/cuda/kernels).
#pragma once

#include "emu.h"  // first: the CUDA built-ins of the kernel headers

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "../../csrc/cuda/kernels/common.cuh"

namespace emu {

// A C-ordered array in its own exact-size heap block (ASan red zones around
// it in memcheck mode), registered as global memory for the race mode.
struct Array {
  std::string dtype;  // numpy descr: <f4, <f8, <f2, |u1, <i8; <u2 holds bfloat16 bits
  std::vector<int64_t> shape;
  unsigned char* data = nullptr;
  std::size_t bytes = 0;
  int64_t numel() const;
  template <typename T>
  T* as() const {
    return reinterpret_cast<T*>(data);
  }
};

struct Io {
  std::map<std::string, Array> in;
  std::map<std::string, std::string> params;
  std::map<std::string, Array> out;
  // The emulated device: "sms" SMs (default 1) and "max_blocks" blocks at
  // most per grid-stride launch (default 2): small, so that every grid-stride
  // loop over samples or pairs takes several turns.
  meanspot::gpu::DeviceLimits device() const;
  const Array& input(const std::string& name) const;
  bool has(const std::string& name) const { return in.count(name) != 0; }
  double num(const std::string& name) const;
  std::string str(const std::string& name) const;
  // A new output filled with 0xff bytes (NaN for floats): an element no thread
  // writes shows in the comparison.
  Array& output(const std::string& name, const std::string& dtype, std::vector<int64_t> shape);
  // Scratch global memory (a workspace), registered like the outputs.
  Array& scratch(const std::string& name, std::size_t bytes);
  std::map<std::string, Array> scratches;
};

using OpFn = std::function<void(Io&)>;
std::map<std::string, OpFn>& ops();
struct Register {
  Register(const char* name, OpFn fn) { ops()[name] = std::move(fn); }
};

}  // namespace emu
