// Run-time choice of the CPU kernels' instruction-set level (see
// csrc/cpu/kernels/simd.h for the levels and csrc/cpu/cpu_kernels.h for the
// table). The host side of every CPU op calls kernels() for its table.
#pragma once

#include <string>
#include <vector>

#include "cpu_kernels.h"

namespace meanspot {
namespace cpu {

// The table of the level in use. Chosen on first call: the best level this
// CPU supports, or the one MEANSPOT_CPU_CAPABILITY names (default, avx2 or
// avx512; case-insensitive), which may only lower it. A bad value raises a
// ValueError naming the variable on every call (nothing runs on a level the
// user did not intend).
const CpuKernels& kernels();

// Levels compiled into this build that this CPU can run, lowest first.
std::vector<std::string> supported_levels();

// Tests only: make `level` the one in use for every later op call of the
// process (raises for a level this build or CPU cannot run).
void force_level(const std::string& level);

}  // namespace cpu
}  // namespace meanspot
