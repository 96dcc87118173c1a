// The one place that chooses the CPU kernels' instruction-set level.
//
// The level copies exist as `meanspot::cpu::<LEVEL>::kernels` (built by
// setup.py: DEFAULT everywhere, AVX2 and AVX512 on x86-64 when
// MEANSPOT_CPU_X86_LEVELS is defined). This file is compiled for the
// baseline, so it runs on any CPU; it calls into a level only after checking
// the CPU runs that level's instructions (__builtin_cpu_supports, which also
// checks that the OS saves the wider registers).
#include "dispatch.h"

#include <c10/util/Exception.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cstdlib>

namespace meanspot {
namespace cpu {

namespace DEFAULT {
extern const CpuKernels kernels;
}
#if defined(MEANSPOT_CPU_X86_LEVELS)
namespace AVX2 {
extern const CpuKernels kernels;
}
namespace AVX512 {
extern const CpuKernels kernels;
}
#endif

namespace {

constexpr const char* kEnv = "MEANSPOT_CPU_CAPABILITY";

struct Level {
  const char* name;  // lower case, as the variable takes it
  const CpuKernels* table;
  bool (*cpu_runs)();
};

#if defined(MEANSPOT_CPU_X86_LEVELS)
// x86-64-v3: AVX2, FMA, BMI1/2, F16C, LZCNT, MOVBE (what -march=x86-64-v3 may use);
// x86-64-v4 adds AVX-512 F, BW, CD, DQ, VL.
bool runs_avx2() {
  __builtin_cpu_init();
  return __builtin_cpu_supports("x86-64-v3");
}
bool runs_avx512() {
  __builtin_cpu_init();
  return __builtin_cpu_supports("x86-64-v4");
}
#endif
bool runs_default() { return true; }

// Lowest first.
const Level kLevels[] = {
    {"default", &DEFAULT::kernels, &runs_default},
#if defined(MEANSPOT_CPU_X86_LEVELS)
    {"avx2", &AVX2::kernels, &runs_avx2},
    {"avx512", &AVX512::kernels, &runs_avx512},
#endif
};
constexpr int kNumLevels = sizeof(kLevels) / sizeof(kLevels[0]);

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return char(std::tolower(c)); });
  return s;
}

std::string names(bool runnable_only) {
  std::string out;
  for (const Level& l : kLevels) {
    if (runnable_only && !l.cpu_runs()) continue;
    out += (out.empty() ? "" : ", ") + std::string(l.name);
  }
  return out;
}

// The level called `name` (any case), checked against the build and the CPU;
// `source` names where the name came from, for the error.
const CpuKernels* level_named(const std::string& name, const char* source) {
  const std::string want = lower(name);
  for (const Level& l : kLevels) {
    if (want != l.name) continue;
    TORCH_CHECK_VALUE(l.cpu_runs(), source, "=", name, ": this CPU cannot run the ", l.name,
                      " kernels; it runs: ", names(true));
    return l.table;
  }
  TORCH_CHECK_VALUE(false, source, "=", name, ": expected one of ", names(false),
                    " (the instruction-set levels of this build)");
  return nullptr;
}

const CpuKernels* choose() {
  const char* env = std::getenv(kEnv);
  if (env != nullptr && env[0] != '\0') return level_named(env, kEnv);
  for (int i = kNumLevels - 1; i >= 0; --i)
    if (kLevels[i].cpu_runs()) return kLevels[i].table;
  return kLevels[0].table;
}

std::atomic<const CpuKernels*> g_chosen{nullptr};

}  // namespace

const CpuKernels& kernels() {
  const CpuKernels* k = g_chosen.load(std::memory_order_acquire);
  if (k == nullptr) {
    // Racing first calls choose the same table; a bad variable throws and
    // leaves nothing chosen, so every op call reports it.
    k = choose();
    g_chosen.store(k, std::memory_order_release);
  }
  return *k;
}

std::vector<std::string> supported_levels() {
  std::vector<std::string> out;
  for (const Level& l : kLevels)
    if (l.cpu_runs()) out.emplace_back(l.name);
  return out;
}

void force_level(const std::string& level) { g_chosen.store(level_named(level, "level"), std::memory_order_release); }

}  // namespace cpu
}  // namespace meanspot
