// The SIMT emulator's runtime: one ucontext fiber per CUDA thread, the blocks
// of a launch one at a time, and the checks (see README.md).
//
// Scheduling: a round resumes every runnable fiber once, in the schedule's
// order; a fiber runs until it reaches a meeting point (a block barrier or a
// warp intrinsic) or exits. After a round every live fiber waits somewhere;
// complete warp meetings are resolved first, then, when every live thread
// waits at a block barrier, the barrier opens. Anything else is a
// synchronisation error (compute-sanitizer synccheck's rules, plus the warp
// rules of the *_sync intrinsics) and ends the process with status 3.
//
// Race mode (EMU_RACE): the kernel translation units are compiled with
// -fsanitize=thread but linked without libtsan; the __tsan_* hooks below
// receive every load and store of the kernels with its code address. Per
// byte of shared memory (the dynamic arena and the emu_shared section) and
// of global memory registered by the driver, the last write and the last two
// readers are kept with their thread, block, barrier epoch and warp epoch;
// compute-sanitizer racecheck's hazards (RAW, WAR, WAW between two threads
// in the same barrier interval, not separated by a warp meeting point of
// their warp, not both atomic) and cross-block global accesses (a byte
// written by one block and touched by another in the same launch) are
// reported once per pair of source lines, with both lines.
//
// Memcheck mode (EMU_MEMCHECK): the whole emulator is built with ASan and
// UBSan; fiber switches are annotated for ASan; the dynamic shared arena is
// an exact-size heap block per block (ASan red zones on both sides).
//
// In every mode the dynamic shared memory and the emu_shared section are
// filled with 0xff bytes at block start: NaN in float and double, so a read
// of a word no thread wrote shows in the results. Static __shared__ variables
// of templates (all of this project's) cannot be found to be filled; the race
// mode reports a read of one before any thread of the block wrote it.
#include <sys/mman.h>
#include <ucontext.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <random>
#include <set>
#include <string>
#include <tuple>
#include <unordered_map>
#include <vector>

#include "emu.h"

#ifdef EMU_MEMCHECK
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#endif

// Bounds of the emu_shared section (static __shared__ variables of plain
// functions), from the linker. GCC ignores the section attribute of a static
// local in a template instantiation (it goes to a COMDAT .bss section), so
// the race mode also tracks the whole writable data segment, __data_start to
// _end, as static shared memory (see static_region).
extern "C" {
extern unsigned char __start_emu_shared[] __attribute__((weak));
extern unsigned char __stop_emu_shared[] __attribute__((weak));
extern unsigned char __data_start[] __attribute__((weak));
extern unsigned char _end[] __attribute__((weak));
}

namespace emu {

ThreadState* g_thread = nullptr;
dim3 g_block_idx, g_block_dim, g_grid_dim;
unsigned char* g_dynamic_smem = nullptr;

namespace {

enum State { kRunnable, kAtBarrier, kAtWarp, kDone };

struct Fiber {
  ThreadState ts;
  ucontext_t ctx;
  int tid = 0;
  int state = kDone;
  Site site{"", 0};
  int kind = 0, predicate = 0;  // block barrier
  WarpOp op = kSyncWarp;        // warp meeting point
  unsigned int mask = 0;
  unsigned char value[16], result[16];
  std::size_t bytes = 0;
  int param = 0, width = 32;
  uint32_t warp_epoch = 0;
  void* stack = nullptr;
};

#ifdef EMU_MEMCHECK
constexpr std::size_t kStackBytes = std::size_t(512) << 10;  // ASan frames are larger
#else
constexpr std::size_t kStackBytes = std::size_t(128) << 10;
#endif

std::vector<Fiber> fibers;
std::vector<uint32_t> warp_counters;
ucontext_t scheduler_ctx;
const std::function<void()>* g_body = nullptr;
Fiber* cur = nullptr;
int schedule_kind = 0;  // 0 forward, 1 reverse, 2 random
std::mt19937_64 rng;
uint32_t block_epoch = 0;
int64_t block_linear = -1;
long hazard_count = 0;
#ifdef EMU_MEMCHECK
const void* main_stack_bottom = nullptr;
std::size_t main_stack_size = 0;
#endif

std::string hex(unsigned int v) {
  char buf[16];
  std::snprintf(buf, sizeof(buf), "0x%08x", v);
  return buf;
}

std::string where(const Site& s) { return std::string(s.file) + ":" + std::to_string(s.line); }

std::string thread_name(const Fiber& f) {
  return "thread (" + std::to_string(f.ts.idx.x) + "," + std::to_string(f.ts.idx.y) + "," +
         std::to_string(f.ts.idx.z) + ") of block (" + std::to_string(g_block_idx.x) + "," +
         std::to_string(g_block_idx.y) + "," + std::to_string(g_block_idx.z) + ")";
}

[[noreturn]] void fail(const std::string& msg) {
  std::fprintf(stderr, "emu: synchronisation error: %s\n", msg.c_str());
  std::fflush(stderr);
  std::_Exit(3);
}

const char* op_name(WarpOp op) {
  static const char* names[] = {"__syncwarp",   "__shfl_sync",   "__shfl_up_sync", "__shfl_down_sync",
                                "__shfl_xor_sync", "__ballot_sync", "__any_sync",     "__all_sync"};
  return names[op];
}

void switch_to(Fiber* f) {
  cur = f;
  g_thread = &f->ts;
#ifdef EMU_MEMCHECK
  void* fake = nullptr;
  __sanitizer_start_switch_fiber(&fake, f->stack, kStackBytes);
#endif
  swapcontext(&scheduler_ctx, &f->ctx);
#ifdef EMU_MEMCHECK
  __sanitizer_finish_switch_fiber(fake, nullptr, nullptr);
#endif
  cur = nullptr;
  g_thread = nullptr;
}

// From a fiber back to the scheduler; returns when the scheduler resumes it.
void yield(bool exiting = false) {
  Fiber* f = cur;
#ifdef EMU_MEMCHECK
  void* fake = nullptr;
  __sanitizer_start_switch_fiber(exiting ? nullptr : &fake, main_stack_bottom, main_stack_size);
#endif
  swapcontext(&f->ctx, &scheduler_ctx);
#ifdef EMU_MEMCHECK
  __sanitizer_finish_switch_fiber(fake, &main_stack_bottom, &main_stack_size);
#endif
}

void fiber_main() {
#ifdef EMU_MEMCHECK
  __sanitizer_finish_switch_fiber(nullptr, &main_stack_bottom, &main_stack_size);
#endif
  (*g_body)();
  cur->state = kDone;
  yield(true);
  std::abort();  // a finished fiber is never resumed
}

// ---- race tracking -------------------------------------------------------

#ifdef EMU_RACE
struct Access {
  int64_t block = -1;
  int tid = -1;
  uint32_t epoch = 0, warp_epoch = 0;
  uintptr_t pc = 0;
  bool atomic = false;
  bool valid() const { return tid >= 0; }
};
struct Cell {
  Access write, read1, read2;
};
struct Region {
  uintptr_t lo, hi;
  bool shared;
  std::vector<Cell> shadow;                      // per byte, or
  bool sparse = false;                           // the data segment: only the bytes touched
  std::unordered_map<uintptr_t, Cell> touched;   // (by address)
  Cell& cell(uintptr_t b) { return sparse ? touched[b] : shadow[b - lo]; }
};
std::vector<Region> regions;
std::set<std::tuple<int, uintptr_t, uintptr_t>> reported;

std::string symbolize(uintptr_t pc) {
  char exe[4096];
  const ssize_t len = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
  if (len <= 0) return "?";
  exe[len] = 0;
  char cmd[4300];
  std::snprintf(cmd, sizeof(cmd), "addr2line -C -e '%s' 0x%lx", exe, (unsigned long)(pc - 1));
  FILE* p = popen(cmd, "r");
  if (p == nullptr) return "?";
  char line[4096] = {0};
  if (std::fgets(line, sizeof(line), p) == nullptr) line[0] = 0;
  pclose(p);
  std::string s(line);
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  // " (discriminator N)" adds nothing for a reader.
  const auto d = s.find(" (discriminator");
  if (d != std::string::npos) s.erase(d);
  return s;
}

const char* kind_name(int kind) {
  static const char* names[] = {"read-after-write", "write-after-read", "write-after-write", "cross-block",
                                "uninitialised-read"};
  return names[kind];
}

void hazard(int kind, const Region& r, uintptr_t addr, const Access& before, const Access& now) {
  const auto key = std::make_tuple(kind, before.pc, now.pc);
  if (!reported.insert(key).second) return;
  ++hazard_count;
  if (reported.size() > 50) return;
  if (kind == 4) {
    std::fprintf(stderr,
                 "emu: race: uninitialised-read hazard on static shared memory (address %p): read by thread %d of "
                 "block %ld at %s before any thread of the block wrote it\n",
                 reinterpret_cast<void*>(addr), now.tid, (long)now.block, symbolize(now.pc).c_str());
    return;
  }
  std::fprintf(stderr,
               "emu: race: %s hazard on %s memory (byte %lu of a %lu-byte region):\n"
               "  earlier access by thread %d of block %ld at %s\n"
               "  later access by thread %d of block %ld at %s\n",
               kind_name(kind), r.shared ? "shared" : "global", (unsigned long)(addr - r.lo),
               (unsigned long)(r.hi - r.lo), before.tid, (long)before.block, symbolize(before.pc).c_str(), now.tid,
               (long)now.block, symbolize(now.pc).c_str());
}

// Is `before` unordered with `now` (no barrier, no warp meeting point between)?
int conflict(const Access& before, const Access& now, int same_block_kind) {
  if (!before.valid() || (before.block == now.block && before.tid == now.tid)) return -1;
  if (before.atomic && now.atomic) return -1;
  if (before.block != now.block) return 3;
  if (before.epoch != now.epoch) return -1;
  if (before.tid / 32 == now.tid / 32 && before.warp_epoch != now.warp_epoch) return -1;
  return same_block_kind;
}

// The emulator's own variables the kernels read (blockIdx and friends):
// inside the data segment, but not the kernels' shared memory.
bool emulator_variable(uintptr_t b) {
  const auto in = [b](const void* v, std::size_t n) {
    return b >= reinterpret_cast<uintptr_t>(v) && b < reinterpret_cast<uintptr_t>(v) + n;
  };
  return in(&g_thread, sizeof(g_thread)) || in(&g_block_idx, sizeof(dim3)) || in(&g_block_dim, sizeof(dim3)) ||
         in(&g_grid_dim, sizeof(dim3)) || in(&g_dynamic_smem, sizeof(g_dynamic_smem));
}

void on_access(const void* p, std::size_t size, bool write, uintptr_t pc, bool atomic) {
  if (cur == nullptr) return;
  const uintptr_t a = reinterpret_cast<uintptr_t>(p);
  for (Region& r : regions) {
    if (a + size <= r.lo || a >= r.hi) continue;
    const Access now{block_linear, cur->tid, block_epoch, cur->warp_epoch, pc, atomic};
    for (uintptr_t b = std::max(a, r.lo); b < std::min(a + size, r.hi); ++b) {
      if (r.sparse && emulator_variable(b)) continue;
      Cell& c = r.cell(b);
      // Static shared memory is not filled with NaN (its variables are not
      // all in one section): a read before any write of the block is reported.
      if (r.sparse && !write && !c.write.valid()) hazard(4, r, b, c.write, now);
      int k;
      if (write) {
        if ((k = conflict(c.write, now, 2)) >= 0) hazard(k, r, b, c.write, now);
        if ((k = conflict(c.read1, now, 1)) >= 0) hazard(k, r, b, c.read1, now);
        if ((k = conflict(c.read2, now, 1)) >= 0) hazard(k, r, b, c.read2, now);
        c.write = now;
        c.read1 = c.read2 = Access{};
      } else {
        if ((k = conflict(c.write, now, 0)) >= 0) hazard(k, r, b, c.write, now);
        // Keep the two latest distinct readers.
        if (!(c.read1.block == now.block && c.read1.tid == now.tid)) c.read2 = c.read1;
        c.read1 = now;
      }
    }
  }
}

void add_region(const void* p, std::size_t bytes, bool shared) {
  if (bytes == 0) return;
  const uintptr_t a = reinterpret_cast<uintptr_t>(p);
  Region r;
  r.lo = a;
  r.hi = a + bytes;
  r.shared = shared;
  r.shadow.resize(bytes);
  regions.push_back(std::move(r));
}

// The static __shared__ variables: the writable data segment (plus the
// emu_shared section wherever the linker put it), shadowed sparsely.
void add_static_region() {
  if (__data_start == nullptr || _end == nullptr) return;
  Region r;
  r.lo = reinterpret_cast<uintptr_t>(__data_start);
  r.hi = reinterpret_cast<uintptr_t>(_end);
  if (__start_emu_shared != nullptr) {
    r.lo = std::min(r.lo, reinterpret_cast<uintptr_t>(__start_emu_shared));
    r.hi = std::max(r.hi, reinterpret_cast<uintptr_t>(__stop_emu_shared));
  }
  r.shared = true;
  r.sparse = true;
  regions.push_back(std::move(r));
}

void drop_regions(bool shared) {
  std::vector<Region> kept;
  for (Region& r : regions)
    if (r.shared != shared) kept.push_back(std::move(r));
  regions = std::move(kept);
}
#else
void add_region(const void*, std::size_t, bool) {}
void add_static_region() {}
void drop_regions(bool) {}
#endif

// ---- warp meeting points ---------------------------------------------------

// Source lane of `lane` for a shuffle; the caller's own lane when out of range.
int shuffle_source(const Fiber& f, int lane) {
  const int width = f.width, base = lane & ~(width - 1), in = lane - base;
  switch (f.op) {
    case kShflIdx:
      return base + ((f.param % width) + width) % width;
    case kShflUp:
      return in >= f.param ? lane - f.param : lane;
    case kShflDown:
      return in + f.param < width ? lane + f.param : lane;
    case kShflXor: {
      const int src = lane ^ f.param;
      return (src & ~(width - 1)) == base ? src : lane;
    }
    default:
      return lane;
  }
}

// Resolves every warp meeting point whose lanes have all arrived; false when none could.
bool resolve_warps(int threads) {
  bool progressed = false;
  for (int t = 0; t < threads; ++t) {
    Fiber& f = fibers[t];
    if (f.state != kAtWarp) continue;
    const int warp0 = t / 32 * 32;
    bool complete = true;
    for (int lane = 0; lane < 32; ++lane) {
      if (!(f.mask >> lane & 1u)) continue;
      const int u = warp0 + lane;
      if (u >= threads)
        fail(std::string(op_name(f.op)) + " at " + where(f.site) + ": mask names lane " + std::to_string(lane) +
             ", which does not exist in a block of " + std::to_string(threads) + " threads");
      const Fiber& g = fibers[u];
      if (g.state == kDone)
        fail(std::string(op_name(f.op)) + " at " + where(f.site) + " by " + thread_name(f) + ": mask lane " +
             std::to_string(lane) + " has exited");
      if (g.state == kAtBarrier)
        fail(std::string(op_name(f.op)) + " at " + where(f.site) + " by " + thread_name(f) + ": mask lane " +
             std::to_string(lane) + " waits at __syncthreads at " + where(g.site));
      if (g.state != kAtWarp) {
        complete = false;
        continue;
      }
      if (g.op != f.op || g.site.line != f.site.line || std::strcmp(g.site.file, f.site.file) != 0)
        fail(std::string(op_name(f.op)) + " at " + where(f.site) + " by " + thread_name(f) + ": mask lane " +
             std::to_string(lane) + " is at " + op_name(g.op) + " at " + where(g.site));
      if (g.mask != f.mask)
        fail(std::string(op_name(f.op)) + " at " + where(f.site) + ": lanes disagree on the mask (" + hex(f.mask) +
             " vs " + hex(g.mask) + ")");
    }
    if (!complete) continue;
    const uint32_t epoch = ++warp_counters[t / 32];
    unsigned int ballot = 0;
    for (int lane = 0; lane < 32; ++lane)
      if (f.mask >> lane & 1u) {
        int pred;
        std::memcpy(&pred, fibers[warp0 + lane].value, sizeof(int));
        if (pred) ballot |= 1u << lane;
      }
    for (int lane = 0; lane < 32; ++lane) {
      if (!(f.mask >> lane & 1u)) continue;
      Fiber& g = fibers[warp0 + lane];
      if (g.op == kBallot) {
        std::memcpy(g.result, &ballot, sizeof(ballot));
      } else if (g.op == kAny || g.op == kAll) {
        const int r = g.op == kAny ? ballot != 0 : ballot == f.mask;
        std::memcpy(g.result, &r, sizeof(r));
      } else if (g.op != kSyncWarp) {
        const int src = shuffle_source(g, lane);
        if (!(f.mask >> src & 1u))
          fail(std::string(op_name(g.op)) + " at " + where(g.site) + ": lane " + std::to_string(lane) +
               " reads lane " + std::to_string(src) + ", outside the mask (undefined value)");
        std::memcpy(g.result, fibers[warp0 + src].value, g.bytes);
      }
      g.warp_epoch = epoch;
      g.state = kRunnable;
    }
    progressed = true;
  }
  return progressed;
}

// Opens the block barrier all live threads wait at.
void release_barrier(int threads) {
  const Fiber* first = nullptr;
  int all = 1, any = 0, count = 0;
  for (int t = 0; t < threads; ++t) {
    const Fiber& f = fibers[t];
    if (f.state == kDone) continue;
    if (f.state == kAtWarp)
      fail(std::string(op_name(f.op)) + " at " + where(f.site) + " by " + thread_name(f) +
           " waits for lanes that never arrive");
    if (first == nullptr) {
      first = &f;
    } else if (f.site.line != first->site.line || std::strcmp(f.site.file, first->site.file) != 0 ||
               f.kind != first->kind) {
      fail("divergent __syncthreads: " + thread_name(*first) + " waits at " + where(first->site) + ", " +
           thread_name(f) + " at " + where(f.site));
    }
    all &= f.predicate;
    any |= f.predicate;
    count += f.predicate;
  }
  ++block_epoch;
  for (int t = 0; t < threads; ++t) {
    Fiber& f = fibers[t];
    if (f.state == kDone) continue;
    f.predicate = f.kind == 1 ? all : f.kind == 2 ? any : count;
    f.state = kRunnable;
  }
}

void run_block(int threads, const dim3& block) {
  warp_counters.assign((threads + 31) / 32, 0);
  for (int t = 0; t < threads; ++t) {
    Fiber& f = fibers[t];
    f.ts.idx = dim3(t % block.x, t / block.x % block.y, t / (block.x * block.y));
    f.tid = t;
    f.state = kRunnable;
    f.warp_epoch = 0;
#ifdef EMU_MEMCHECK
    ASAN_UNPOISON_MEMORY_REGION(f.stack, kStackBytes);
#endif
    getcontext(&f.ctx);
    f.ctx.uc_stack.ss_sp = f.stack;
    f.ctx.uc_stack.ss_size = kStackBytes;
    f.ctx.uc_link = nullptr;
    makecontext(&f.ctx, fiber_main, 0);
  }
  ++block_epoch;
  std::vector<int> order(threads);
  for (;;) {
    order.clear();
    for (int t = 0; t < threads; ++t)
      if (fibers[t].state == kRunnable) order.push_back(t);
    if (schedule_kind == 1) std::reverse(order.begin(), order.end());
    if (schedule_kind == 2) std::shuffle(order.begin(), order.end(), rng);
    for (int t : order) switch_to(&fibers[t]);
    bool live = false;
    for (int t = 0; t < threads && !live; ++t) live = fibers[t].state != kDone;
    if (!live) return;
    if (resolve_warps(threads)) continue;
    release_barrier(threads);
  }
}

}  // namespace

int barrier(int kind, int predicate, Site site) {
  if (cur == nullptr) fail("__syncthreads outside a kernel at " + where(site));
  cur->state = kAtBarrier;
  cur->kind = kind;
  cur->predicate = predicate;
  cur->site = site;
  Fiber* f = cur;
  yield();
  return f->predicate;
}

void warp_op(WarpOp op, unsigned int mask, const void* value, void* result, std::size_t bytes, int param, int width,
             Site site) {
  Fiber* f = cur;
  if (f == nullptr) fail(std::string(op_name(op)) + " outside a kernel at " + where(site));
  const int lane = f->tid % 32;
  if (!(mask >> lane & 1u))
    fail(std::string(op_name(op)) + " at " + where(site) + " by " + thread_name(*f) + " (lane " +
         std::to_string(lane) + ") with mask " + hex(mask) + ", which excludes the calling lane");
  if (width <= 0 || width > 32 || (width & (width - 1)) != 0)
    fail(std::string(op_name(op)) + " at " + where(site) + ": width " + std::to_string(width) +
         " is not a power of two up to 32");
  f->op = op;
  f->mask = mask;
  f->bytes = bytes;
  f->param = param;
  f->width = width;
  f->site = site;
  if (bytes) std::memcpy(f->value, value, bytes);
  f->state = kAtWarp;
  yield();
  if (result != nullptr) std::memcpy(result, f->result, op == kBallot || op == kAny || op == kAll ? 4 : bytes);
}

#ifdef EMU_RACE
void atomic_access(const void* p, std::size_t bytes, Site) {
  on_access(p, bytes, true, reinterpret_cast<uintptr_t>(__builtin_return_address(0)), true);
}
#else
void atomic_access(const void*, std::size_t, Site) {}
#endif

void track_global(const void* p, std::size_t bytes) { add_region(p, bytes, false); }
void untrack_all_globals() { drop_regions(false); }

void set_schedule(const char* schedule) {
  const std::string s(schedule);
  if (s == "forward") {
    schedule_kind = 0;
  } else if (s == "reverse") {
    schedule_kind = 1;
  } else if (s.rfind("random:", 0) == 0) {
    schedule_kind = 2;
    rng.seed(std::stoull(s.substr(7)));
  } else {
    std::fprintf(stderr, "emu: unknown schedule '%s' (forward, reverse, random:<seed>)\n", schedule);
    std::exit(2);
  }
}

long hazards() { return hazard_count; }

void launch_impl(dim3 grid, dim3 block, std::size_t smem, const std::function<void()>& body) {
  const long threads = long(block.x) * block.y * block.z;
  if (threads <= 0 || threads > 1024 || grid.x == 0 || grid.y == 0 || grid.z == 0 || grid.y > 65535 ||
      grid.z > 65535)
    fail("invalid launch: block of " + std::to_string(threads) + " threads, grid (" + std::to_string(grid.x) + "," +
         std::to_string(grid.y) + "," + std::to_string(grid.z) + ")");
  if (fibers.size() < std::size_t(threads)) {
    fibers.resize(threads);  // before any fiber runs: no context is live
    for (Fiber& f : fibers) {
      if (f.stack != nullptr) continue;
      f.stack = mmap(nullptr, kStackBytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
      if (f.stack == MAP_FAILED) fail("out of memory for fiber stacks");
    }
  }
  g_grid_dim = grid;
  g_block_dim = block;
  g_body = &body;
#ifdef EMU_RACE
  for (Region& r : regions) std::fill(r.shadow.begin(), r.shadow.end(), Cell{});  // the globals
#endif
  unsigned char* static_lo = __start_emu_shared;
  const std::size_t static_bytes = static_lo != nullptr ? std::size_t(__stop_emu_shared - static_lo) : 0;
  for (unsigned int z = 0; z < grid.z; ++z) {
    for (unsigned int y = 0; y < grid.y; ++y) {
      for (unsigned int x = 0; x < grid.x; ++x) {
        g_block_idx = dim3(x, y, z);
        ++block_linear;
        // Exact size (ASan red zones around it in memcheck mode), at least
        // one byte so the pointer is valid; 0xff bytes read as NaN.
        g_dynamic_smem = static_cast<unsigned char*>(std::malloc(smem > 0 ? smem : 1));
        std::memset(g_dynamic_smem, 0xff, smem);
        if (static_bytes) std::memset(static_lo, 0xff, static_bytes);
        add_region(g_dynamic_smem, smem, true);
        add_static_region();
        run_block(int(threads), block);
        drop_regions(true);
        std::free(g_dynamic_smem);
        g_dynamic_smem = nullptr;
      }
    }
  }
}

}  // namespace emu

#ifdef EMU_RACE
// The hooks GCC's -fsanitize=thread instrumentation calls (libtsan is not linked).
#define EMU_PC reinterpret_cast<uintptr_t>(__builtin_return_address(0))
#define EMU_HOOKS(n)                                                                                         \
  void __tsan_read##n(void* p) { emu::on_access(p, n, false, EMU_PC, false); }                              \
  void __tsan_write##n(void* p) { emu::on_access(p, n, true, EMU_PC, false); }                              \
  void __tsan_unaligned_read##n(void* p) { emu::on_access(p, n, false, EMU_PC, false); }                    \
  void __tsan_unaligned_write##n(void* p) { emu::on_access(p, n, true, EMU_PC, false); }
extern "C" {
EMU_HOOKS(1)
EMU_HOOKS(2)
EMU_HOOKS(4)
EMU_HOOKS(8)
EMU_HOOKS(16)
void __tsan_read_range(void* p, unsigned long n) { emu::on_access(p, n, false, EMU_PC, false); }
void __tsan_write_range(void* p, unsigned long n) { emu::on_access(p, n, true, EMU_PC, false); }
void __tsan_init() {}
void __tsan_func_entry(void*) {}
void __tsan_func_exit() {}
void __tsan_vptr_update(void**, void*) {}
void __tsan_vptr_read(void**) {}
}
#endif
