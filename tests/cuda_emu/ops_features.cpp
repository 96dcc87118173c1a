// mean_roi_features under the emulator, launched as
// csrc/cuda/mean_roi_features_cuda.cu launches it. Built with
// -ffp-contract=fast (and -mfma on x86), as nvcc contracts by default.
#include "emu.h"  // first: the CUDA built-ins of the kernel headers

#include "../../csrc/cuda/kernels/mean_roi_features.cuh"
#include "driver.h"

namespace emu {
namespace {

using namespace meanspot;

Register register_mean_roi("mean_roi_features", [](Io& io) {
  namespace k = gpu::mean_roi_features;
  const Array& flow = io.input("flow");
  const Array& boxes = io.input("boxes");
  const int64_t n = flow.shape[0], h = flow.shape[2], w = flow.shape[3];
  Array& out = io.output("out", "<f4", {n, features::kChannels, features::kOutSize, features::kOutSize});
  if (n == 0) return;
  launch(k::grid(n, io.device()), k::kThreads, 0, k::mean_roi_features_kernel, flow.as<float>(), n, 2 * h * w, h * w, w,
         int64_t(1), int(h), int(w), boxes.as<int64_t>(), out.as<float>());
});

}  // namespace
}  // namespace emu
