// Small kernels that break one rule each, so that test_emu.py can check the
// emulator's own checks (a synchronisation error exits with status 3, a race
// with status 4), and a few that follow the rules with the warp intrinsics and
// atomics the project's kernels do not use yet (they must run clean).
// Run as `emu selftest <in_dir> <out_dir>` with "case <name>" in params.txt.
#include "emu.h"  // first: the CUDA built-ins

#include "driver.h"

namespace emu {
namespace {

__global__ void divergent_barrier(int* out) {
  if (threadIdx.x < 16) {
    __syncthreads();
  } else {
    __syncthreads();
  }
  out[threadIdx.x] = 1;
}

__global__ void mask_excludes_self(int* out) {
  out[threadIdx.x] = __shfl_xor_sync(0xfffffffeu, int(threadIdx.x), 1);
}

__global__ void mask_lane_exited(int* out) {
  if (threadIdx.x == 3) return;
  out[threadIdx.x] = __shfl_xor_sync(0xffffffffu, int(threadIdx.x), 1);
}

__global__ void shuffle_other_site(int* out) {
  int v;
  if (threadIdx.x % 2 == 0) {
    v = __shfl_xor_sync(0xffffffffu, int(threadIdx.x), 1);
  } else {
    v = __shfl_xor_sync(0xffffffffu, int(threadIdx.x), 1);
  }
  out[threadIdx.x] = v;
}

__global__ void shared_race(int* out) {
  __shared__ int slot[64];
  slot[threadIdx.x] = int(threadIdx.x);
  // No barrier: thread t reads what thread t + 1 writes.
  out[threadIdx.x] = slot[(threadIdx.x + 1) % blockDim.x];
}

__global__ void cross_block(int* data) {
  // Block 0 writes data[0]; block 1 reads it in the same launch.
  if (blockIdx.x == 0 && threadIdx.x == 0) data[0] = 7;
  if (blockIdx.x == 1 && threadIdx.x == 0) data[1] = data[0];
}

// Warp intrinsics and atomics used as documented: no error, no race.
__global__ void warp_and_atomics(int* out) {
  const int lane = threadIdx.x % 32;
  const unsigned int ballot = __ballot_sync(0xffffffffu, lane % 3 == 0);
  const int any = __any_sync(0xffffffffu, lane == 5), all = __all_sync(0xffffffffu, lane < 32);
  const int down = __shfl_down_sync(0xffffffffu, lane, 1), up = __shfl_up_sync(0xffffffffu, lane, 1);
  const int from0 = __shfl_sync(0xffffffffu, lane * 10, 0);
  __syncwarp();
  const int count = __syncthreads_count(lane < 4);
  atomicAdd(&out[0], 1);  // every thread of every block: a counter, no hazard
  out[1 + blockIdx.x * blockDim.x + threadIdx.x] = int(ballot == 0x49249249u) + any + all + (down == (lane < 31 ? lane + 1 : lane)) +
                         (up == (lane > 0 ? lane - 1 : lane)) + (from0 == 0) + (count == 4 * int(blockDim.x / 32));
}

Register register_selftest("selftest", [](Io& io) {
  const std::string c = io.str("case");
  const dim3 grid(c == "cross_block" || c == "warp_and_atomics" ? 2 : 1);
  const unsigned int threads = 64;
  Array& out = io.output("out", "<i8", {int64_t(threads) + 1});  // int64 slots, used as int pairs
  int* o = reinterpret_cast<int*>(out.data);
  std::memset(o, 0, out.bytes);
  if (c == "divergent_barrier") launch(grid, threads, 0, divergent_barrier, o);
  if (c == "mask_excludes_self") launch(grid, threads, 0, mask_excludes_self, o);
  if (c == "mask_lane_exited") launch(grid, threads, 0, mask_lane_exited, o);
  if (c == "shuffle_other_site") launch(grid, threads, 0, shuffle_other_site, o);
  if (c == "shared_race") launch(grid, threads, 0, shared_race, o);
  if (c == "cross_block") launch(grid, threads, 0, cross_block, o);
  if (c == "warp_and_atomics") launch(grid, threads, 0, warp_and_atomics, o);
});

}  // namespace
}  // namespace emu
