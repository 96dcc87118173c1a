"""The CUDA kernels' own cases against the float64 references (tests/helpers.py); skipped without a GPU.

Every op in float32 and float64, in every layout, with NaN and inf, is
tests/network/test_ops.py's (one definition, run on each device); here the
cases only CUDA has: kernels chosen by shared-memory size, half precision,
fused networks, streams, graphs, compile, several GPUs. float32 and float64 results are compared with the float64 reference computed on
the CPU, with the tolerances stated beside each assertion. float16 and bfloat16
results are judged as flash-attention judges its kernels: the kernel's error
against the float64 result (of the same rounded inputs and parameters) must be
at most twice the error of the reference ops run in the same precision on the
GPU, plus one unit in the last place at the output's scale.
"""
import copy

import pytest
import torch

import meanspot_fused as mf
from meanspot_fused import ops
from meanspot_fused.network.fuse import MODES

from helpers import (CBAM_SHAPES, CONV_SHAPES, HEAD_SETS, POOL_SHAPES, as_tuple, assert_low_precision_close, cbam_ref,
                     channel_pool_ref, conv_block_ref, random_inputs, random_model, run_concurrently, spatial_pool_ref)

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]

DEVICE = torch.device("cuda")
OPS = ("conv_block", "channel_pool", "spatial_pool", "cbam")
# float64 kernels match the float64 reference to rounding; float32 kernels
# accumulate in float32 (up to 64 * 9 terms per conv output here).
TOL = {torch.float64: dict(atol=1e-12, rtol=1e-12), torch.float32: dict(atol=2e-5, rtol=2e-5)}
# Whole network: float64 differs from the reference in summation order only;
# float32 carries rounding through about ten layers.
TOL_NET = {torch.float64: dict(atol=1e-10, rtol=1e-10), torch.float32: dict(atol=1e-4, rtol=1e-4)}
DTYPES = [torch.float32, torch.float64]
LOW_DTYPES = [torch.float16, torch.bfloat16]
BATCHES = [0, 1, 17, 64]


def _rand(*shape, lo=-1.0, hi=1.0):
    return torch.rand(*shape, dtype=torch.float64) * (hi - lo) + lo


def _to(args, dtype, device=DEVICE):
    """Tensors of `args` cast to dtype and moved to device; other arguments (None, pool, floats) as they are."""
    return tuple(a.to(device=device, dtype=dtype) if isinstance(a, torch.Tensor) else a for a in args)


# --- the ops' argument sets, float64 on the CPU ------------------------------------------------------------------

# Too wide for the tiled kernel's 48 KB of shared memory: the global-memory kernel.
CONV_GLOBAL_SHAPE = (64, 4, 70, 3, 1, True)


def conv_args(n, cin, cout, hw, k, pool, affine):
    scale, shift = (_rand(cout, lo=-2, hi=2), _rand(cout)) if affine else (None, None)
    return _rand(n, cin, hw, hw), _rand(cout, cin, k, k), _rand(cout), scale, shift, pool


CBAM_BIG_SHAPES = [
    (64, 64, 8, 7, 2, True),   # x too big for shared memory: x from global memory, scratch in shared memory
    (2, 256, 1, 7, 4, False),  # spatial maps too big for shared memory: global workspace
]


def cbam_args(n, c, hw, hidden, k, pool, bn):
    scale, shift = (-1.3, 0.4) if bn else (1.0, 0.0)
    return (_rand(n, c, hw, hw, lo=-2, hi=2), _rand(hidden, c), _rand(hidden), _rand(c, hidden), _rand(c),
            _rand(1, 2, k, k), scale, shift, pool)


def test_build_has_cuda_kernels():
    missing = [op for op in OPS
               if not torch._C._dispatch_has_kernel_for_dispatch_key(f"meanspot_fused::{op}", "CUDA")]
    assert not missing, (f"meanspot_fused was built without CUDA kernels for {missing}; rebuild with a CUDA "
                         "toolkit (FORCE_CUDA=1 to force)")


# --- float32 / float64 beyond the tiled kernels' shared memory ---------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
def test_conv_block_global_memory_kernel(dtype):
    x, *params = conv_args(2, *CONV_GLOBAL_SHAPE)
    got = ops.conv_block(x.to(DEVICE, dtype), *_to(params, dtype))
    torch.testing.assert_close(got.cpu().double(), conv_block_ref(x, *params), **TOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", CBAM_BIG_SHAPES, ids=str)
def test_cbam_without_room_in_shared_memory(dtype, shape):
    x, *params = cbam_args(3, *shape)
    got = ops.cbam(x.to(DEVICE, dtype), *_to(params, dtype))
    torch.testing.assert_close(got.cpu().double(), cbam_ref(x, *params), **TOL[dtype])


# --- float16 / bfloat16: at most twice the error of the reference ops in that precision -------------------------

def _low_precision_check(kernel, reference, args64, dtype, what):
    low = _to(args64, dtype)
    exact = as_tuple(reference(*_to(low, torch.float64, "cpu")))
    ref_low = as_tuple(reference(*low))
    got = as_tuple(kernel(*low))
    assert len(got) == len(exact)
    for i, (g, r, e) in enumerate(zip(got, ref_low, exact)):
        assert g.device.type == DEVICE.type and g.dtype == dtype
        assert_low_precision_close(g, r, e, f"{what} output {i}")


@pytest.mark.parametrize("dtype", LOW_DTYPES)
@pytest.mark.parametrize("n", [1, 17])
@pytest.mark.parametrize("shape", CONV_SHAPES + [CONV_GLOBAL_SHAPE], ids=str)
def test_conv_block_low_precision(dtype, n, shape):
    _low_precision_check(ops.conv_block, conv_block_ref, conv_args(n, *shape), dtype, "conv_block")


@pytest.mark.parametrize("dtype", LOW_DTYPES)
@pytest.mark.parametrize("n", [1, 17])
@pytest.mark.parametrize("shape", POOL_SHAPES, ids=str)
def test_pools_low_precision(dtype, n, shape):
    args = (_rand(n, *shape, lo=-3, hi=3),)
    _low_precision_check(ops.channel_pool, channel_pool_ref, args, dtype, "channel_pool")
    _low_precision_check(ops.spatial_pool, spatial_pool_ref, args, dtype, "spatial_pool")


@pytest.mark.parametrize("dtype", LOW_DTYPES)
@pytest.mark.parametrize("n", [1, 17])
@pytest.mark.parametrize("shape", CBAM_SHAPES + CBAM_BIG_SHAPES, ids=str)
def test_cbam_low_precision(dtype, n, shape):
    _low_precision_check(ops.cbam, cbam_ref, cbam_args(n, *shape), dtype, "cbam")


# --- fuse(model) on the GPU ----------------------------------------------------------------------------------------

def _seed(*key):
    return sum(ord(ch) * (i + 1) for i, ch in enumerate(repr(key))) % 2**31


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("cbam", mf.PLACEMENTS)
@pytest.mark.parametrize("heads", HEAD_SETS, ids="+".join)
@pytest.mark.parametrize("n", BATCHES)
def test_fuse_matches_reference(mode, cbam, heads, n):
    ref = random_model(cbam, heads, seed=_seed(cbam, heads, n), recog_classes=5)
    inputs = random_inputs(n)  # fresh inputs every run: no seed
    expected = as_tuple(ref(*inputs))
    for dtype in DTYPES:
        fused = mf.fuse(copy.deepcopy(ref).to(dtype), mode=mode).to(DEVICE)
        got = as_tuple(fused(*_to(inputs, dtype)))
        assert len(got) == len(expected)
        for g, e in zip(got, expected):
            assert g.device.type == DEVICE.type and g.dtype == dtype and g.shape == e.shape
            torch.testing.assert_close(g.cpu().double(), e, **TOL_NET[dtype])


@pytest.mark.parametrize("dtype", LOW_DTYPES)
@pytest.mark.parametrize("cbam", mf.PLACEMENTS)
@pytest.mark.parametrize("n", [17, 64])
def test_fuse_low_precision(dtype, cbam, n):
    # The model and inputs rounded to dtype; "exact" is the float64 run of those rounded values.
    model_low = random_model(cbam, ("spot", "recog"), seed=_seed(cbam, n), recog_classes=5).to(dtype)
    exact_model = copy.deepcopy(model_low).double()
    inputs_low = _to(random_inputs(n), dtype, "cpu")
    exact = as_tuple(exact_model(*_to(inputs_low, torch.float64, "cpu")))
    ref_low = as_tuple(copy.deepcopy(model_low).to(DEVICE)(*_to(inputs_low, dtype)))
    fused = mf.fuse(exact_model).to(device=DEVICE, dtype=dtype)
    got = as_tuple(fused(*_to(inputs_low, dtype)))
    for i, (g, r, e) in enumerate(zip(got, ref_low, exact)):
        assert_low_precision_close(g, r, e, f"fused MeanSpot({cbam}) head {i}")


@pytest.mark.parametrize("mode", MODES)
def test_fuse_spatial_batchnorm_and_ratio(mode):
    """Official-CBAM BatchNorm after the spatial conv, ratio 2 (hidden 1 and 4), 5x5 spatial kernel."""
    ref = random_model("all", ("spot", "recog"), cbam_spatial_bn=True, cbam_ratio=2, spatial_kernel=5, seed=3)
    inputs = random_inputs(9)
    got = as_tuple(mf.fuse(ref, mode=mode).to(DEVICE)(*_to(inputs, torch.float64)))
    for g, e in zip(got, as_tuple(ref(*inputs))):
        torch.testing.assert_close(g.cpu(), e, **TOL_NET[torch.float64])


@pytest.mark.parametrize("mode", MODES)
def test_torch_compile_fullgraph(mode):
    ref = random_model("all", ("spot", "recog"), dtype=torch.float32, seed=5)
    fused = mf.fuse(ref, mode=mode).to(DEVICE)
    ref64 = copy.deepcopy(ref).double()
    compiled = torch.compile(fused, fullgraph=True, backend="inductor")
    for n in (3, 8):
        inputs = random_inputs(n, dtype=torch.float32, device=DEVICE)
        got = compiled(*inputs)
        for g, e in zip(got, fused(*inputs)):
            torch.testing.assert_close(g, e, atol=1e-6, rtol=1e-6)  # same kernels, float32
        for g, e in zip(got, ref64(*_to(inputs, torch.float64, "cpu"))):
            torch.testing.assert_close(g.cpu().double(), e, **TOL_NET[torch.float32])


@pytest.mark.parametrize("mode", MODES)
def test_cuda_graph_capture_and_replay(mode):
    ref = random_model("all", ("spot", "recog"), seed=7)
    fused = mf.fuse(copy.deepcopy(ref).float(), mode=mode).to(DEVICE)
    static = [t.clone() for t in random_inputs(8, dtype=torch.float32, device=DEVICE)]
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm-up outside the capture, as torch.cuda.graphs asks
        for _ in range(2):
            fused(*static)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = fused(*static)
    for _ in range(2):  # each replay reads the current contents of the static inputs
        fresh = random_inputs(8)
        for s, f in zip(static, fresh):
            s.copy_(f)
        graph.replay()
        torch.cuda.synchronize()
        for g, e in zip(out, ref(*fresh)):
            torch.testing.assert_close(g.cpu().double(), e, **TOL_NET[torch.float32])


def test_cuda_graph_capture_of_workspace_path():
    """cbam's global-workspace path allocates during capture (graph-private pool)."""
    x, *params = cbam_args(2, *CBAM_BIG_SHAPES[1])
    xs, ps = x.float().to(DEVICE), _to(params, torch.float32)
    ops.cbam(xs, *ps)  # warm-up
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = ops.cbam(xs, *ps)
    x2 = _rand(*x.shape, lo=-2, hi=2)
    xs.copy_(x2)
    graph.replay()
    torch.cuda.synchronize()
    torch.testing.assert_close(out.cpu().double(), cbam_ref(x2, *params), **TOL[torch.float32])


# --- streams and devices -----------------------------------------------------------------------------------------

def _op_call(op):
    """(call, reference) of `op` on fresh float32 GPU arguments x, params."""
    if op == "conv_block":
        x, *p = conv_args(3, 14, 8, 14, 5, 2, True)
        return x, p, ops.conv_block, conv_block_ref
    if op == "cbam":
        x, *p = cbam_args(3, 8, 42, 1, 7, 3, False)
        return x, p, ops.cbam, cbam_ref
    x = _rand(3, 8, 42, 42)
    return x, [], getattr(ops, op), {"channel_pool": channel_pool_ref, "spatial_pool": spatial_pool_ref}[op]


@pytest.mark.parametrize("op", OPS)
def test_runs_on_the_current_stream(op):
    """Work queued on a side stream behind a long sleep: a kernel on any other stream would read stale x."""
    if not hasattr(torch.cuda, "_sleep"):
        pytest.skip("torch.cuda._sleep is not available")
    x, params, call, reference = _op_call(op)
    x_new = x.flip(0) * 0.5 + 0.25
    xs, x_new_dev = x.float().to(DEVICE), x_new.float().to(DEVICE)
    params32 = _to(params, torch.float32)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        torch.cuda._sleep(100_000_000)  # about 50 ms of GPU time before the copy
        xs.copy_(x_new_dev)  # device to device: queued behind the sleep, the host does not wait
        got = as_tuple(call(xs, *params32))
    torch.cuda.current_stream().wait_stream(side)
    for g, e in zip(got, as_tuple(reference(x_new, *params))):
        torch.testing.assert_close(g.cpu().double(), e, **TOL[torch.float32])


def test_cpu_input_with_cuda_weights_rejected():
    x, w, b, scale, shift, pool = conv_args(2, 3, 4, 12, 5, 3, True)
    x, w, b, scale, shift = (t.float() for t in (x, w, b, scale, shift))
    wc, bc, sc, hc = (t.to(DEVICE) for t in (w, b, scale, shift))
    cuda = str(wc.device)
    with pytest.raises(RuntimeError, match=rf"weight must be on the device of x \(cpu\), got {cuda}"):
        torch.ops.meanspot_fused.conv_block(x, wc, bc, sc, hc, pool)
    with pytest.raises(RuntimeError, match=rf"weight must be on the device of x \({cuda}\), got cpu"):
        torch.ops.meanspot_fused.conv_block(x.to(DEVICE), w, b, scale, shift, pool)
    with pytest.raises(RuntimeError, match="scale must be on the device of x"):
        torch.ops.meanspot_fused.conv_block(x.to(DEVICE), wc, bc, scale, hc, pool)
    with pytest.raises(ValueError, match="weight must be on the device of x"):
        ops.conv_block(x, wc, bc, sc, hc, pool)
    xq, *p = cbam_args(2, 8, 14, 1, 7, 2, False)
    with pytest.raises(RuntimeError, match=rf"mlp_w1 must be on the device of x \(cpu\), got {cuda}"):
        torch.ops.meanspot_fused.cbam(xq, *_to(p[:5], torch.float64), *p[5:])
    fused = mf.fuse(random_model("all", ("spot",), dtype=torch.float32)).to(DEVICE)
    with pytest.raises(ValueError, match="are on cpu but the fused model is on cuda"):
        fused(*random_inputs(2, dtype=torch.float32))


def test_unsupported_cuda_dtype_rejected():
    x = torch.rand(2, 3, 4, 4, device=DEVICE).to(torch.float8_e4m3fn)
    for op in ("channel_pool", "spatial_pool"):
        with pytest.raises(RuntimeError, match="on CUDA x must be float16, bfloat16, float32 or float64"):
            getattr(torch.ops.meanspot_fused, op)(x)


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA devices")
def test_two_gpus():
    x, *params = conv_args(3, 14, 8, 14, 5, 2, True)
    x1 = x.float().to("cuda:1")
    with pytest.raises(RuntimeError, match=r"weight must be on the device of x \(cuda:1\), got cuda:0"):
        torch.ops.meanspot_fused.conv_block(x1, *_to(params, torch.float32, "cuda:0"))
    xq, *p = cbam_args(3, 8, 14, 1, 7, 2, False)
    with pytest.raises(RuntimeError, match=r"mlp_w1 must be on the device of x \(cuda:1\), got cuda:0"):
        torch.ops.meanspot_fused.cbam(xq.to("cuda:1"), *_to(p, torch.float64, "cuda:0"))
    # Everything on cuda:1 while cuda:0 is current: the device guard runs the kernel on cuda:1.
    with torch.cuda.device(0):
        got = ops.conv_block(x1, *_to(params, torch.float32, "cuda:1"))
        got_cbam = ops.cbam(xq.to("cuda:1"), *_to(p, torch.float64, "cuda:1"))
        ref = random_model("all", ("spot", "recog"), seed=11)
        inputs = random_inputs(5)
        got_net = mf.fuse(ref).to("cuda:1")(*_to(inputs, torch.float64, "cuda:1"))
    assert got.device == torch.device("cuda:1") and got_cbam.device == torch.device("cuda:1")
    torch.testing.assert_close(got.cpu().double(), conv_block_ref(x, *params), **TOL[torch.float32])
    torch.testing.assert_close(got_cbam.cpu(), cbam_ref(xq, *p), **TOL[torch.float64])
    for g, e in zip(got_net, ref(*inputs)):
        torch.testing.assert_close(g.cpu(), e, **TOL_NET[torch.float64])


# --- two host threads, strided inputs without copies, non-finite weights ------------------------------------------

def test_cbam_concurrent_launches_with_different_shared_memory():
    """Two threads launch cbam with different shapes (82 KB and 117 KB of dynamic shared memory in float32).

    Setting the kernel's shared-memory limit per launch let one thread lower it
    between the other's set and launch ("invalid argument"). Every result must
    equal the serial one bitwise: same kernel, same inputs, no atomics.
    """
    cases = [cbam_args(4, 8, 42, 1, 7, 3, False), cbam_args(4, 12, 42, 2, 15, 3, True)]
    cases = [_to(args, torch.float32) for args in cases]
    serial = [ops.cbam(*args) for args in cases]
    results = run_concurrently([lambda args=args: ops.cbam(*args) for args in cases], repeats=200)
    for expected, got in zip(serial, results):
        for g in got:
            assert torch.equal(g, expected)


@pytest.mark.parametrize("op", OPS)
def test_expanded_batch_is_not_copied(op):
    """An expanded (stride-0) batch of 2**15 samples: no batch-sized copy of x, every row equals the one sample."""
    n = 1 << 15
    x, params, call, _ = _op_call(op)
    x1 = x[:1].float().to(DEVICE)
    params32 = _to(params, torch.float32)
    single = as_tuple(call(x1, *params32))
    xe = x1.expand(n, *x1.shape[1:])
    copy_bytes = n * x1.numel() * x1.element_size()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    got = as_tuple(call(xe, *params32))
    torch.cuda.synchronize()
    growth = torch.cuda.max_memory_allocated() - before
    out_bytes = sum(g.numel() * g.element_size() for g in got)
    # The outputs are the only batch-sized allocation; a copy of x would add copy_bytes.
    assert growth < out_bytes + copy_bytes // 2, (f"{op}: {growth} bytes allocated for {out_bytes} bytes of output; "
                                                  f"a copy of the expanded x would be {copy_bytes}")
    for g, s in zip(got, single):
        for i in (0, n // 2, n - 1):
            assert torch.equal(g[i], s[0])  # per-sample work is identical whatever the batch and layout


@pytest.mark.parametrize("shape", [CONV_SHAPES[2], CONV_SHAPES[4], CONV_GLOBAL_SHAPE],
                         ids=["tiled", "tiled-odd", "global-memory"])
def test_conv_block_nonfinite_weights_match_cpu(shape):
    """NaN and inf weights: the same NaN/inf pattern as the CPU op, borders included (0 * inf on the padding is NaN)."""
    x, w, b, scale, shift, pool = conv_args(2, *shape)
    cout, cin, k = w.shape[0], w.shape[1], w.shape[2]
    w[0, 0, 0, 0] = float("nan")
    w[1 % cout, cin - 1, k - 1, k - 1] = float("inf")
    w[2 % cout, cin // 2, 0, k - 1] = -float("inf")
    expected = ops.conv_block(x, w, b, scale, shift, pool)  # the CPU op, float64
    got = ops.conv_block(*_to((x, w, b, scale, shift), torch.float64), pool).cpu()
    assert torch.equal(got.isnan(), expected.isnan()) and torch.equal(got.isinf(), expected.isinf())
    torch.testing.assert_close(got, expected, equal_nan=True, atol=1e-12, rtol=1e-12)  # float64, finite values


@pytest.mark.parametrize("where,value", [((0, 0, 0, 0), float("nan")), ((0, 1, 6, 6), float("inf")),
                                         ((0, 0, 3, 3), -float("inf")), ((0, 1, 0, 5), -float("inf"))],
                         ids=["nan-corner", "inf-corner", "-inf-centre", "-inf-edge"])
@pytest.mark.parametrize("shape", [CBAM_SHAPES[2], CBAM_SHAPES[1], CBAM_BIG_SHAPES[1]], ids=str)
def test_cbam_nonfinite_spatial_weight_matches_cpu(where, value, shape):
    """A NaN/inf spatial weight: the same NaN/inf pattern as the CPU op (which multiplies its zero padding too)."""
    x, w1, b1, w2, b2, sw, scale, shift, pool = cbam_args(2, *shape)
    sw[where] = value
    args = (x, w1, b1, w2, b2, sw, scale, shift, pool)
    expected = ops.cbam(*args)  # the CPU op, float64
    got = ops.cbam(*_to(args, torch.float64)).cpu()
    assert torch.equal(got.isnan(), expected.isnan()) and torch.equal(got.isinf(), expected.isinf())
    torch.testing.assert_close(got, expected, equal_nan=True, atol=1e-12, rtol=1e-12)  # float64, finite values


# --- opcheck -------------------------------------------------------------------------------------------------------

OPCHECK_CASES = [
    ("conv_block", lambda: _to(conv_args(3, 2, 4, 12, 5, 3, True), torch.float32)),
    ("conv_block", lambda: _to(conv_args(2, 14, 8, 14, 5, 2, False), torch.float64)),
    ("conv_block", lambda: _to(conv_args(2, 1, 8, 42, 5, 1, True), torch.float16)),
    ("channel_pool", lambda: _to((_rand(3, 8, 14, 14),), torch.float32)),
    ("channel_pool", lambda: _to((_rand(2, 3, 64, 64),), torch.bfloat16)),
    ("spatial_pool", lambda: _to((_rand(3, 8, 14, 14),), torch.float64)),
    ("spatial_pool", lambda: _to((_rand(3, 8, 14, 14),), torch.float16)),
    ("cbam", lambda: _to(cbam_args(2, 8, 14, 1, 7, 2, False), torch.float32)),
    ("cbam", lambda: _to(cbam_args(2, 3, 42, 1, 7, 3, True), torch.float64)),
    ("cbam", lambda: _to(cbam_args(2, 8, 42, 1, 7, 1, False), torch.bfloat16)),
]


@pytest.mark.parametrize("op,make_args", OPCHECK_CASES, ids=[c[0] for c in OPCHECK_CASES])
def test_opcheck(op, make_args):
    torch.library.opcheck(getattr(torch.ops.meanspot_fused, op), make_args())


# --- more than 2**31 elements --------------------------------------------------------------------------------------

@pytest.mark.stress
def test_int64_indexing():
    """N * C * H * W > 2**31 (float16, 14 x 14 x 14 samples): the last samples equal the same samples run alone."""
    if torch.cuda.get_device_properties(DEVICE).total_memory < 32 * 2**30:
        pytest.skip("needs 32 GB of GPU memory")
    n = 2**31 // (14 * 14 * 14) + 64
    x = torch.empty(n, 14, 14, 14, dtype=torch.float16, device=DEVICE)
    for chunk in x.split(1 << 16):
        chunk.uniform_(-1, 1)
    tail = x[-16:].clone()
    conv = _to(conv_args(1, 14, 8, 14, 5, 2, False)[1:], torch.float16)
    cbam = _to(cbam_args(1, 14, 14, 1, 7, 2, False)[1:], torch.float16)
    for name, call in [("conv_block", lambda t: ops.conv_block(t, *conv)), ("cbam", lambda t: ops.cbam(t, *cbam)),
                       ("channel_pool", ops.channel_pool), ("spatial_pool", ops.spatial_pool)]:
        full = as_tuple(call(x))
        alone = as_tuple(call(tail))
        for f, a in zip(full, alone):
            assert torch.equal(f[-16:], a), name  # per-sample work is identical whatever the batch
        del full
        torch.cuda.empty_cache()
