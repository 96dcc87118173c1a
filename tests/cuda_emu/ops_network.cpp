// The network ops under the emulator: conv_block, channel_pool, spatial_pool,
// cbam, meanspot_net (float32, float64, float16, bfloat16), launched as their host wrappers (csrc/cuda/*_cuda.cu)
// launch them, from the same plan functions. Built with -ffp-contract=fast
// (and -mfma on x86) so that a * b + c contracts into an FMA as nvcc's
// default -fmad=true does; the tolerances in test_emu.py allow for the
// places where GCC and nvcc contract differently.
#include "emu.h"  // first: the CUDA built-ins of the kernel headers

#include "../../csrc/cuda/kernels/cbam.cuh"
#include "../../csrc/cuda/kernels/channel_pool.cuh"
#include "../../csrc/cuda/kernels/conv_block.cuh"
#include "../../csrc/cuda/kernels/meanspot_net.cuh"
#include "../../csrc/cuda/kernels/spatial_pool.cuh"
#include "driver.h"
#include "emu_half.h"

namespace emu {
namespace {

using namespace meanspot;

gpu::Strides4 contiguous_strides(const Array& x) {
  const int64_t w = 1, h = x.shape[3], c = h * x.shape[2], n = c * x.shape[1];
  return {n, c, h, w};
}

template <typename scalar_t>
void conv_block(Io& io) {
  namespace k = gpu::conv_block;
  const Array& x = io.input("x");
  const Array& weight = io.input("weight");
  const int pool = int(io.num("pool"));
  const k::ConvShape s{x.shape[0],     int(x.shape[1]),      int(x.shape[2]),        int(x.shape[3]),
                       int(weight.shape[0]), int(weight.shape[2]), pool, int(x.shape[2]) / pool,
                       int(x.shape[3]) / pool, contiguous_strides(x)};
  Array& out = io.output("out", x.dtype, {s.batch, s.cout, s.out_height, s.out_width});
  if (out.numel() == 0) return;
  const scalar_t* scale = io.has("scale") ? io.input("scale").as<scalar_t>() : nullptr;
  const scalar_t* shift = io.has("shift") ? io.input("shift").as<scalar_t>() : nullptr;
  const k::Plan p = k::plan<acc_t<scalar_t>>(s, io.device());
  const auto args = std::make_tuple(x.as<scalar_t>(), weight.as<scalar_t>(), io.input("bias").as<scalar_t>(), scale,
                                    shift);
  if (p.cob == 0) {
    launch(p.grid, p.threads, 0, k::conv_block_global_kernel<scalar_t>, std::get<0>(args), std::get<1>(args),
           std::get<2>(args), scale, shift, s, out.as<scalar_t>());
    return;
  }
  k::with_cob(p.cob, [&](auto cob) {
    launch(p.grid, p.threads, p.smem, k::conv_block_tiled_kernel<scalar_t, decltype(cob)::value>, std::get<0>(args),
           std::get<1>(args), std::get<2>(args), scale, shift, s, p.tile_rows, p.tiles, out.as<scalar_t>());
  });
}

template <typename scalar_t>
void channel_pool(Io& io) {
  namespace k = gpu::channel_pool;
  const Array& x = io.input("x");
  const gpu::PoolShape shape{int(x.shape[1]), int(x.shape[2]), int(x.shape[3]), contiguous_strides(x)};
  const int64_t planes = x.shape[0] * x.shape[1], plane = x.shape[2] * x.shape[3];
  Array& mean = io.output("mean", x.dtype, {x.shape[0], x.shape[1]});
  Array& max = io.output("max", x.dtype, {x.shape[0], x.shape[1]});
  if (x.numel() == 0) return;
  const k::Plan p = k::plan(planes, plane, io.device());
  if (p.block_per_plane) {
    launch(p.grid, p.threads, 0, k::channel_pool_block_kernel<scalar_t>, x.as<scalar_t>(), shape, planes,
           mean.as<scalar_t>(), max.as<scalar_t>());
  } else {
    launch(p.grid, p.threads, 0, k::channel_pool_warp_kernel<scalar_t>, x.as<scalar_t>(), shape, planes,
           mean.as<scalar_t>(), max.as<scalar_t>());
  }
}

template <typename scalar_t>
void spatial_pool(Io& io) {
  namespace k = gpu::spatial_pool;
  using acc = acc_t<scalar_t>;
  const Array& x = io.input("x");
  const gpu::PoolShape shape{int(x.shape[1]), int(x.shape[2]), int(x.shape[3]), contiguous_strides(x)};
  const int64_t pixels = x.shape[0] * x.shape[2] * x.shape[3];
  Array& out = io.output("out", x.dtype, {x.shape[0], 2, x.shape[2], x.shape[3]});
  if (x.numel() == 0) return;
  launch(k::grid(pixels, io.device()), k::kThreads, 0, k::spatial_pool_kernel<scalar_t>, x.as<scalar_t>(), shape, pixels,
         acc(1) / acc(x.shape[1]), out.as<scalar_t>());
}

// The device's dynamic shared memory limit per kernel ("smem_limit", bytes;
// default H100's 227 KB): small values select the fallback modes.
int64_t smem_limit(const Io& io) { return io.params.count("smem_limit") ? int64_t(io.num("smem_limit")) : 232448; }

template <typename scalar_t>
void cbam(Io& io) {
  namespace k = gpu::cbam;
  using acc = acc_t<scalar_t>;
  const Array& x = io.input("x");
  const Array& w1 = io.input("mlp_w1");
  const Array& sw = io.input("spatial_weight");
  const int pool = int(io.num("pool"));
  const k::CbamShape s{x.shape[0], int(x.shape[1]), int(w1.shape[0]), int(x.shape[2]), int(x.shape[3]),
                       int(sw.shape[2]), pool, contiguous_strides(x)};
  Array& out = io.output("out", x.dtype, {x.shape[0], x.shape[1], x.shape[2] / pool, x.shape[3] / pool});
  if (out.numel() == 0) return;
  const k::CbamLayout l = k::make_layout<acc>(s);
  // "scratch_limit": the limit the kScratchShared mode sees (the same as
  // smem_limit on a device); smaller than smem_limit, it selects kScratchShared.
  const int64_t all_limit = smem_limit(io);
  const int64_t scratch_limit = io.params.count("scratch_limit") ? int64_t(io.num("scratch_limit")) : all_limit;
  const k::Plan p = k::plan<scalar_t>(s, l, all_limit, scratch_limit, io.device());
  acc* workspace = p.workspace > 0 ? io.scratch("workspace", p.workspace * sizeof(acc)).as<acc>() : nullptr;
  const auto run = [&](auto mode) {
    launch(dim3(p.blocks), k::kThreads, p.smem, k::cbam_kernel<scalar_t, decltype(mode)::value>, x.as<scalar_t>(),
           w1.as<scalar_t>(), io.input("mlp_b1").as<scalar_t>(), io.input("mlp_w2").as<scalar_t>(),
           io.input("mlp_b2").as<scalar_t>(), sw.as<scalar_t>(), acc(io.num("spatial_scale")),
           acc(io.num("spatial_shift")), s, l, workspace, out.as<scalar_t>());
  };
  k::with_mode(p.mode, run);
}

template <typename scalar_t>
void meanspot_net(Io& io) {
  namespace k = gpu::meanspot_net;
  using acc = acc_t<scalar_t>;
  const Array& config = io.input("config");  // int64 (10,), as the op's config list
  const int64_t* cf = config.as<int64_t>();
  NetConfig c;
  c.cbam_branches = cf[0];
  c.cbam_merged = cf[1];
  c.has_spot = cf[2];
  c.has_recog = cf[3];
  c.recog_classes = int(cf[4]);
  for (int b = 0; b < 3; ++b) c.hidden[b] = int(cf[5 + b]);
  c.hidden_head = int(cf[8]);
  c.spatial_kernel = int(cf[9]);
  const Array* maps[3] = {&io.input("u"), &io.input("v"), &io.input("os")};
  const int64_t batch = maps[0]->shape[0];
  Array& out = io.output("out", maps[0]->dtype, {batch, c.outputs()});
  if (out.numel() == 0) return;
  k::NetInputs<scalar_t> inputs;
  for (int b = 0; b < 3; ++b) {
    inputs.data[b] = maps[b]->as<scalar_t>();
    inputs.stride_n[b] = k::kPlane;
    inputs.stride_h[b] = k::kS;
    inputs.stride_w[b] = 1;
  }
  const NetOffsets o = layout_net(c);
  const k::NetSmem l = k::net_smem_layout<acc>(c.spatial_kernel);
  const k::Plan p = k::plan(l, sizeof(acc), batch, smem_limit(io), io.device());
  const scalar_t* params = io.input("params").as<scalar_t>();
  if (!p.global_scratch) {
    launch(dim3(p.blocks), k::kThreads, p.smem, k::meanspot_net_kernel<scalar_t, false>, inputs, params, c, o, l,
           batch, c.outputs(), static_cast<acc*>(nullptr), out.as<scalar_t>());
  } else {
    acc* workspace = io.scratch("workspace", p.workspace * sizeof(acc)).as<acc>();
    launch(dim3(p.blocks), k::kThreads, 0, k::meanspot_net_kernel<scalar_t, true>, inputs, params, c, o, l, batch,
           c.outputs(), workspace, out.as<scalar_t>());
  }
}

// Runs op<T> for the dtype of input `name`: float64, float16, bfloat16 (its
// raw bits as uint16) or float32.
#define EMU_FLOAT_OP(op, name)                        \
  Register register_##op(#op, [](Io& io) {           \
    const std::string& t = io.input(name).dtype;      \
    if (t == "<f8") {                                 \
      op<double>(io);                                 \
    } else if (t == "<f2") {                          \
      op<Half>(io);                                   \
    } else if (t == "<u2") {                          \
      op<BFloat16>(io);                               \
    } else {                                          \
      op<float>(io);                                  \
    }                                                 \
  });

EMU_FLOAT_OP(conv_block, "x")
EMU_FLOAT_OP(channel_pool, "x")
EMU_FLOAT_OP(spatial_pool, "x")
EMU_FLOAT_OP(cbam, "x")
EMU_FLOAT_OP(meanspot_net, "u")

}  // namespace
}  // namespace emu
