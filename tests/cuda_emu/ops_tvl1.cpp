// tvl1_flow under the emulator, launched as csrc/cuda/tvl1_flow_cuda.cu
// launches it. Built with -ffp-contract=off: the kernel's float arithmetic
// goes through the _rn intrinsics (never contracted by nvcc), which emu.h
// maps to plain operations; with contraction off they round exactly as on
// the device, so the flow and the iteration counts must equal the CPU op's.
#include "emu.h"  // first: the CUDA built-ins of the kernel headers

#include "../../csrc/cuda/kernels/tvl1_flow.cuh"
#include "driver.h"

namespace emu {
namespace {

using namespace meanspot;

template <typename In>
void run(Io& io) {
  namespace k = gpu::tvl1_flow;
  const Array& prev = io.input("prev");
  const Array& next = io.input("next");
  const int64_t n = prev.shape[0];
  const int h = int(prev.shape[1]), w = int(prev.shape[2]);
  tvl1::Params p;
  p.tau = io.num("tau");
  p.lambda = io.num("lambda");
  p.theta = io.num("theta");
  p.epsilon = io.num("epsilon");
  p.scale_step = io.num("scale_step");
  p.scales = int(io.num("scales"));
  p.warps = int(io.num("warps"));
  p.inner = int(io.num("inner"));
  p.outer = int(io.num("outer"));
  p.median = int(io.num("median"));
  const std::string remap = io.str("remap");
  p.remap = remap == "opencv4" ? tvl1::kRemapOpenCV4 : remap == "opencv4.14" ? tvl1::kRemapOpenCV414
                                                                              : tvl1::kRemapOpenCV5;
  Array& flow = io.output("flow", "<f4", {n, 2, h, w});
  Array& counts = io.output("counts", "<i8", {n, 2});
  if (n == 0) return;
  const tvl1::Pyramid py = tvl1::make_pyramid(h, w, p);
  const k::Plan plan = k::plan(py, h, w, n, io.device());
  float* workspace = io.scratch("workspace", std::size_t(plan.blocks) * plan.slice * sizeof(float)).as<float>();
  const int64_t plane = int64_t(h) * w;
  launch(dim3(plan.blocks), k::kThreads, 0, k::tvl1_flow_kernel<In>, prev.as<In>(), next.as<In>(), plane,
         int64_t(w), int64_t(1), plane, int64_t(w), int64_t(1), n, p, k::constants(p), py, workspace, plan.slice,
         flow.as<float>(), counts.as<int64_t>());
}

Register register_tvl1("tvl1_flow", [](Io& io) {
  if (io.input("prev").dtype == "|u1") {
    run<uint8_t>(io);
  } else {
    run<float>(io);
  }
});

}  // namespace
}  // namespace emu
