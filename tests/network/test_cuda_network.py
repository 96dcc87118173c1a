"""The CUDA whole-network kernel meanspot_fused::meanspot_net (csrc/cuda/meanspot_net_cuda.cu); skipped without a GPU.

float32 and float64 outputs are compared with the float64 reference module run
on the CPU. float16 and bfloat16 are judged as in tests/network/test_cuda.py: the
kernel's error against the float64 result of the same rounded model and inputs
must be at most twice the error of the reference module run in that precision
on the GPU, plus one unit in the last place at the output's scale.
"""
import copy

import pytest
import torch

import meanspot_fused as mf
from meanspot_fused.network.fuse import pack_network

from helpers import HEAD_SETS, as_tuple, assert_low_precision_close, random_inputs, random_model, run_concurrently

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]

DEVICE = torch.device("cuda")
NET = torch.ops.meanspot_fused.meanspot_net
# float64 differs from the reference in summation order only; float32 carries
# rounding through about ten layers.
TOL = {torch.float64: dict(atol=1e-10, rtol=1e-10), torch.float32: dict(atol=1e-4, rtol=1e-4)}
BATCHES = [0, 1, 17, 64, 1000]
LOW_DTYPES = [torch.float16, torch.bfloat16]


def _seed(*key):
    return sum(ord(ch) * (i + 1) for i, ch in enumerate(repr(key))) % 2**31


def _to(tensors, dtype, device=DEVICE):
    return tuple(t.to(device=device, dtype=dtype) for t in tensors)


def _run_op(model, inputs, dtype):
    """The network op on the GPU in dtype, split into the model's heads (spot first, then recog)."""
    packed, config = pack_network(model, dtype)
    out = NET(*_to(inputs, dtype), packed.to(DEVICE), config)
    sizes = [1 if name == "spot" else model.recog_classes for name in model.head_names]
    return tuple(torch.split(out, sizes, dim=1)), out


def test_network_kernel_registered():
    assert torch._C._dispatch_has_kernel_for_dispatch_key("meanspot_fused::meanspot_net", "CUDA")


@pytest.mark.parametrize("cbam", mf.PLACEMENTS)
@pytest.mark.parametrize("heads", HEAD_SETS, ids="+".join)
@pytest.mark.parametrize("n", BATCHES)
def test_network_matches_float64_reference(cbam, heads, n):
    ref = random_model(cbam, heads, seed=_seed(cbam, heads, n), recog_classes=5)
    inputs = random_inputs(n, seed=_seed(n))
    with torch.no_grad():
        expected = as_tuple(ref(*inputs))
    for dtype in (torch.float32, torch.float64):
        got, out = _run_op(ref, inputs, dtype)
        assert out.device.type == "cuda" and out.dtype == dtype and out.is_contiguous()
        assert len(got) == len(expected)
        for g, e in zip(got, expected):
            assert g.shape == e.shape
            torch.testing.assert_close(g.cpu().double(), e, **TOL[dtype])


@pytest.mark.parametrize("kwargs", [dict(spatial_kernel=1), dict(spatial_kernel=3, cbam_ratio=2),
                                    dict(spatial_kernel=41, cbam_spatial_bn=True), dict(recog_classes=1000)],
                         ids=["k1", "k3-ratio2", "k41-bn", "classes1000"])
def test_network_other_shapes(kwargs):
    """Spatial kernels 1..41 (the spatial conv clamps its loops at the border), more classes than threads."""
    ref = random_model("all", ("spot", "recog"), seed=_seed(kwargs), **kwargs)
    inputs = random_inputs(9, seed=1)
    with torch.no_grad():
        expected = as_tuple(ref(*inputs))
    for dtype in (torch.float32, torch.float64):
        for g, e in zip(_run_op(ref, inputs, dtype)[0], expected):
            torch.testing.assert_close(g.cpu().double(), e, **TOL[dtype])


@pytest.mark.parametrize("dtype", LOW_DTYPES)
@pytest.mark.parametrize("cbam", mf.PLACEMENTS)
@pytest.mark.parametrize("heads", HEAD_SETS, ids="+".join)
@pytest.mark.parametrize("n", [17, 64])
def test_network_low_precision(dtype, cbam, heads, n):
    # The model and inputs rounded to dtype; "exact" is the float64 run of those rounded values.
    model_low = random_model(cbam, heads, seed=_seed(cbam, heads, n), recog_classes=5).to(dtype)
    exact_model = copy.deepcopy(model_low).double()
    inputs_low = _to(random_inputs(n, seed=_seed(n, 1)), dtype, "cpu")
    with torch.no_grad():
        exact = as_tuple(exact_model(*_to(inputs_low, torch.float64, "cpu")))
        ref_low = as_tuple(copy.deepcopy(model_low).to(DEVICE)(*_to(inputs_low, dtype)))
    got, out = _run_op(exact_model, inputs_low, dtype)
    assert out.dtype == dtype
    for i, (g, r, e) in enumerate(zip(got, ref_low, exact)):
        assert_low_precision_close(g, r, e, f"meanspot_net({cbam}, {heads}) head {i}", "reference module")


@pytest.mark.parametrize("cbam,heads,dtype", [("all", ("spot", "recog"), torch.float32),
                                              ("none", ("recog",), torch.float64),
                                              ("merged", ("spot",), torch.float16)])
def test_opcheck_cuda(cbam, heads, dtype):
    packed, config = pack_network(random_model(cbam, heads), dtype)
    u, v, os = (torch.rand(3, 1, 42, 42, dtype=dtype, device=DEVICE) for _ in range(3))
    torch.library.opcheck(NET, (u, v, os, packed.to(DEVICE), config))


def test_nan_and_inf_stay_in_their_sample():
    ref = random_model("all", ("spot", "recog"), seed=3, recog_classes=7)
    inputs = [t.clone() for t in random_inputs(6, seed=2)]
    with torch.no_grad():
        clean = as_tuple(ref(*inputs))
    inputs[0][1, 0, 10, 10] = float("nan")
    inputs[2][3, 0, 0, 41] = float("inf")
    got, _ = _run_op(ref, inputs, torch.float32)
    keep = [0, 2, 4, 5]
    for g, e in zip(got, clean):
        torch.testing.assert_close(g.cpu().double()[keep], e[keep], **TOL[torch.float32])
    assert not torch.isfinite(got[1][1]).all()  # the NaN reaches its own sample's softmax


def test_concurrent_launches_with_spatial_kernels_7_and_41():
    """Two host threads launch the op with spatial kernel 7 and 41 (99 KB and 112 KB of shared memory in float32).

    Setting the kernel's shared-memory limit per launch let one thread lower it
    between the other's set and launch ("invalid argument"). Every result must
    equal the serial one bitwise: same kernel, same inputs, no atomics.
    """
    calls, serial = [], []
    for k in (7, 41):
        packed, config = pack_network(random_model("all", ("spot", "recog"), spatial_kernel=k, seed=k), torch.float32)
        args = (*_to(random_inputs(8, seed=k), torch.float32), packed.to(DEVICE), config)
        serial.append(NET(*args))
        calls.append(lambda args=args: NET(*args))
    results = run_concurrently(calls, repeats=200)
    for expected, got in zip(serial, results):
        for g in got:
            assert torch.equal(g, expected)


def _net_layouts(x):
    """x (N, 1, 42, 42) on the GPU in several layouts: the op reads u, v, os through their strides."""
    x = x.to(DEVICE)
    yield "channels_last", x.contiguous(memory_format=torch.channels_last)
    wide = torch.zeros(x.shape[0] * 2, 1, 42, 84, dtype=x.dtype, device=DEVICE)
    wide[::2, :, :, ::2] = x
    yield "strided", wide[::2, :, :, ::2]
    yield "hw_transposed", x.transpose(2, 3).contiguous().transpose(2, 3)
    yield "expanded", x[:1].expand_as(x)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16])
def test_layouts_give_the_contiguous_result(dtype):
    """Non-contiguous u, v, os: bitwise the result of the same values made contiguous (same arithmetic per sample)."""
    ref = random_model("all", ("spot", "recog"), seed=4, recog_classes=5)
    packed, config = pack_network(ref, dtype)
    packed = packed.to(DEVICE)
    inputs = _to(random_inputs(9, seed=4), dtype)
    for i in range(3):  # one input at a time in each layout, the others contiguous
        for name, xl in _net_layouts(inputs[i]):
            args = list(inputs)
            args[i] = xl
            expected = NET(*[a.contiguous() for a in args], packed, config)
            assert torch.equal(NET(*args, packed, config), expected), (i, name)


def test_expanded_batch_is_not_copied():
    """u, v, os expanded from one sample to 2**18: no batch-sized input copy, every row equals the one sample.

    A copy would be 3 x 1.85 GB in float32; the output is 2**18 x 6 values.
    """
    n = 1 << 18
    ref = random_model("all", ("spot", "recog"), seed=6, recog_classes=5)
    packed, config = pack_network(ref, torch.float32)
    packed = packed.to(DEVICE)
    one = _to(random_inputs(1, seed=6), torch.float32)
    single = NET(*one, packed, config)
    expanded = [t.expand(n, 1, 42, 42) for t in one]
    copy_bytes = 3 * n * 42 * 42 * 4
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    out = NET(*expanded, packed, config)
    torch.cuda.synchronize()
    growth = torch.cuda.max_memory_allocated() - before
    out_bytes = out.numel() * out.element_size()
    # The output and (only where shared memory is too small) a workspace of at
    # most 512 MB are the only allocations; copies would add copy_bytes.
    assert growth <= out_bytes + (512 << 20), (
        f"{growth} bytes allocated for {out_bytes} bytes of output; copies of the inputs would be {copy_bytes}")
    for i in (0, n // 2, n - 1):
        assert torch.equal(out[i], single[0])  # per-sample work is identical whatever the batch and layout


@pytest.mark.parametrize("where,value", [((0, 0, 0, 0), float("inf")), ((0, 1, 6, 0), -float("inf")),
                                         ((0, 0, 3, 3), float("inf")), ((0, 1, 2, 4), float("nan"))],
                         ids=["inf-corner", "-inf-edge", "inf-centre", "nan"])
@pytest.mark.parametrize("block", ["os", "spot"])
def test_nonfinite_spatial_weight_matches_cpu(block, where, value):
    """A NaN/inf CBAM spatial weight: the NaN/inf pattern of the CPU op, which multiplies its zero padding too.

    A weight off the centre falls on the padding at the border pixels: 0 * inf
    = NaN there on the CPU, so the CUDA kernel must not skip those taps.
    """
    ref = random_model("all", ("spot", "recog"), seed=8, recog_classes=5)
    module = ref.branches[block] if block in ref.branches else ref.heads[block]
    with torch.no_grad():
        module.cbam.spatial.weight[where] = value
    packed, config = pack_network(ref, torch.float64)
    inputs = random_inputs(5, seed=8)
    expected = NET(*inputs, packed, config)  # the CPU op, float64
    got = NET(*_to(inputs, torch.float64), packed.to(DEVICE), config).cpu()
    assert torch.equal(got.isnan(), expected.isnan()) and torch.equal(got.isinf(), expected.isinf())
    torch.testing.assert_close(got, expected, equal_nan=True, **TOL[torch.float64])  # finite values


# CUDA graph capture and replay of fuse(model) in network mode:
# tests/network/test_cuda.py::test_cuda_graph_capture_and_replay[network].


def test_runs_on_the_current_stream():
    """Inputs rewritten on a side stream behind a long sleep: a kernel on any other stream would read stale data."""
    if not hasattr(torch.cuda, "_sleep"):
        pytest.skip("torch.cuda._sleep is not available")
    ref = random_model("all", ("spot",), seed=9)
    packed, config = pack_network(ref, torch.float32)
    packed = packed.to(DEVICE)
    old, new = random_inputs(4, seed=1), random_inputs(4, seed=2)
    xs, new_dev = _to(old, torch.float32), _to(new, torch.float32)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        torch.cuda._sleep(100_000_000)
        for x, y in zip(xs, new_dev):
            x.copy_(y)
        got = NET(*xs, packed, config)
    torch.cuda.current_stream().wait_stream(side)
    with torch.no_grad():
        torch.testing.assert_close(got.cpu().double(), ref(*new), **TOL[torch.float32])


def test_device_mismatch_rejected():
    ref = random_model("all", ("spot",), dtype=torch.float32)
    packed, config = pack_network(ref, torch.float32)
    u, v, os = random_inputs(2, dtype=torch.float32)
    cuda = str(torch.empty(0, device=DEVICE).device)
    with pytest.raises(RuntimeError, match=rf"params must be on the device of x \({cuda}\), got cpu"):
        NET(*_to((u, v, os), torch.float32), packed, config)
    with pytest.raises(RuntimeError, match=rf"params must be on the device of x \(cpu\), got {cuda}"):
        NET(u, v, os, packed.to(DEVICE), config)
    with pytest.raises(RuntimeError, match=rf"os must be on the device of x \({cuda}\), got cpu"):
        NET(u.to(DEVICE), v.to(DEVICE), os, packed.to(DEVICE), config)
    fused = mf.fuse(ref).to(DEVICE)
    with pytest.raises(ValueError, match="are on cpu but the fused model is on cuda"):
        fused(u, v, os)


def test_unsupported_cuda_dtype_rejected():
    ref = random_model("none", ("spot",), dtype=torch.float32)
    packed, config = pack_network(ref, torch.float32)
    u, v, os = (torch.rand(2, 1, 42, 42, device=DEVICE).to(torch.float8_e4m3fn) for _ in range(3))
    with pytest.raises(RuntimeError, match="on CUDA u, v, os must be float16, bfloat16, float32 or float64"):
        NET(u, v, os, packed.to(DEVICE, torch.float8_e4m3fn), config)
