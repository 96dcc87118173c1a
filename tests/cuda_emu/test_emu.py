"""The CUDA kernels (csrc/cuda/kernels) run on the CPU by the SIMT emulator, held to the CPU ops.

Every case runs under the three schedules of the plain build (outputs must not
depend on the order the threads run in between barriers), once in race mode
(any shared- or global-memory hazard fails the case, see README.md) and once
in memcheck mode (ASan + UBSan, NaN-filled shared memory). The emulated device
has 1 SM and grids of at most 2 blocks, so every grid-stride loop over samples
or pairs takes several turns. Shapes are tiny: the whole module runs in a few
minutes on 2 cores. Tolerances sit beside the cases; they only allow for
summation order and FMA contraction (GCC and nvcc contract a * b + c in
different places), except tvl1_flow, which must be bit-exact.
"""
import copy
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

import meanspot_fused as mf
from meanspot_fused.network.fuse import pack_network

import emu_build
from helpers import (HEAD_SETS, as_tuple, assert_low_precision_close, cbam_ref, channel_pool_ref, conv_block_ref,
                     random_inputs, random_model, spatial_pool_ref)

OPS = torch.ops.meanspot_fused
SCHEDULES = ("forward", "reverse", "random:7")
RUNS = [("plain", s) for s in SCHEDULES] + [("race", "random:3"), ("memcheck", "forward")]
RUN_IDS = [f"{m}-{s.replace(':', '')}" for m, s in RUNS]

# float32 / float64 tolerances (summation order, FMA contraction).
TOL = {torch.float32: dict(atol=2e-5, rtol=2e-5), torch.float64: dict(atol=1e-12, rtol=1e-12)}
TOL_NET = {torch.float32: dict(atol=1e-4, rtol=1e-4), torch.float64: dict(atol=1e-10, rtol=1e-10)}
TOL_ROI = dict(atol=1e-5, rtol=1e-5)  # float32 only; strain and resize taps contract differently
DTYPES = (torch.float32, torch.float64)

_BUILT = {}


@pytest.fixture(scope="module")
def emu():
    """emu(mode) -> the emulator binary of that mode (built once per source hash)."""
    try:
        emu_build.compiler()
    except emu_build.NoCompiler as e:
        pytest.skip(str(e))

    def get(mode):
        if mode not in _BUILT:
            _BUILT[mode] = emu_build.build(mode)
        return _BUILT[mode]
    return get


def _to_numpy(t):
    """bfloat16 travels as its raw bits (numpy has no bfloat16; the emulator reads <u2 as bfloat16)."""
    if isinstance(t, torch.Tensor) and t.dtype == torch.bfloat16:
        return t.view(torch.int16).numpy().view(np.uint16)
    return t.numpy() if isinstance(t, torch.Tensor) else t


def as_torch(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(a.view(np.int16)).view(torch.bfloat16) if a.dtype == np.uint16 else torch.from_numpy(a)


def run_emu(exe: Path, op: str, inputs: dict, params: dict, schedule: str, tmp_path: Path) -> dict:
    """Runs `op` in the emulator on numpy/torch `inputs`; its outputs as numpy arrays."""
    d_in, d_out = tmp_path / "in", tmp_path / "out"
    d_in.mkdir(exist_ok=True)
    d_out.mkdir(exist_ok=True)
    for name, t in inputs.items():
        np.save(d_in / f"{name}.npy", np.ascontiguousarray(_to_numpy(t)))
    (d_in / "params.txt").write_text("".join(f"{k} {v}\n" for k, v in params.items()))
    r = subprocess.run([str(exe), op, str(d_in), str(d_out), schedule], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, f"emulator exit {r.returncode} ({op}, {exe.parent.name}, {schedule}):\n{r.stderr[-6000:]}"
    return {p.stem: np.load(p) for p in d_out.glob("*.npy")}


def run_raw(exe: Path, op: str, params: dict, tmp_path: Path):
    d = tmp_path / "raw"
    d.mkdir(exist_ok=True)
    (d / "params.txt").write_text("".join(f"{k} {v}\n" for k, v in params.items()))
    return subprocess.run([str(exe), op, str(d), str(d)], capture_output=True, text=True, timeout=120)


def close(got: np.ndarray, expected: torch.Tensor, tol: dict):
    torch.testing.assert_close(torch.from_numpy(got), expected, equal_nan=True, **tol)


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def _spiked(x: torch.Tensor, seed: int) -> torch.Tensor:
    """x with a NaN, an inf and a -inf at seeded places (NaN/inf must stay where the CPU puts them)."""
    x = x.clone()
    flat = x.view(-1)
    idx = torch.randperm(flat.numel(), generator=_gen(seed))[:3]
    for i, v in zip(idx.tolist(), (float("nan"), float("inf"), -float("inf"))):
        flat[i] = v
    return x


# --- the emulator's own checks ------------------------------------------------------------------------------------
# (case, mode, exit status, what the message must say); the kernels are in ops_selftest.cpp.
SELF_CASES = [
    ("divergent_barrier", "plain", 3, "divergent __syncthreads"),
    ("mask_excludes_self", "plain", 3, "excludes the calling lane"),
    ("mask_lane_exited", "plain", 3, "has exited"),
    ("shuffle_other_site", "plain", 3, "is at __shfl_xor_sync at tests/cuda_emu/ops_selftest.cpp:"),
    ("shared_race", "race", 4, "hazard on shared memory"),
    ("cross_block", "race", 4, "cross-block hazard on global memory"),
    ("warp_and_atomics", "race", 0, ""),
]


@pytest.mark.parametrize("case,mode,status,message", SELF_CASES, ids=[c[0] for c in SELF_CASES])
def test_emulator_checks(emu, case, mode, status, message, tmp_path):
    r = run_raw(emu(mode), "selftest", dict(case=case), tmp_path)
    assert r.returncode == status, r.stderr[-3000:]
    assert message in r.stderr, r.stderr[-3000:]
    if case == "shared_race":  # both source lines are named
        assert r.stderr.count("tests/cuda_emu/ops_selftest.cpp:") >= 2, r.stderr
    if case == "warp_and_atomics":
        out = np.load(tmp_path / "raw" / "out.npy").view(np.int32)  # int64 slots used as int pairs
        assert out[0] == 128 and (out[1:129] == 7).all(), out


# --- conv_block --------------------------------------------------------------------------------------------------
# (batch, cin, height, width, cout, kernel, pool): the smallest shape; odd batches;
# each output-channel split of the tiled kernel (8, 4, 2, 1); the global-memory
# fallback (one pooled row of input exceeds 48 KB: cin 8, width 400).
CONV_SHAPES = [(1, 1, 1, 1, 1, 1, 1), (5, 3, 12, 10, 4, 5, 2), (3, 2, 9, 6, 8, 3, 3), (2, 2, 8, 8, 2, 3, 2),
               (3, 1, 5, 6, 1, 3, 1), (1, 8, 2, 400, 3, 5, 1)]


@pytest.mark.parametrize("run", RUNS, ids=RUN_IDS)
@pytest.mark.parametrize("shape", CONV_SHAPES, ids=str)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_conv_block(emu, run, shape, dtype, tmp_path):
    n, cin, h, w, cout, k, pool = shape
    g = _gen(hash(shape) % 2**31)
    x = torch.randn(n, cin, h, w, generator=g, dtype=dtype)
    if n * h * w > 40:
        x = _spiked(x, n)
    wt, b = torch.randn(cout, cin, k, k, generator=g, dtype=dtype), torch.randn(cout, generator=g, dtype=dtype)
    scale, shift = torch.rand(cout, generator=g, dtype=dtype) + 0.5, torch.randn(cout, generator=g, dtype=dtype)
    affine = cin % 2 == 0  # with and without the BN affine
    inputs = dict(x=x, weight=wt, bias=b, **(dict(scale=scale, shift=shift) if affine else {}))
    out = run_emu(emu(run[0]), "conv_block", inputs, dict(pool=pool), run[1], tmp_path)
    expected = OPS.conv_block(x, wt, b, scale if affine else None, shift if affine else None, pool)
    close(out["out"], expected, TOL[dtype])


# --- channel_pool, spatial_pool ------------------------------------------------------------------------------------
# (N, C, H, W): the smallest; odd sizes; planes of >= 2048 pixels (block-per-plane kernel).
POOL_SHAPES = [(1, 1, 1, 1), (3, 5, 7, 9), (2, 3, 48, 48)]


@pytest.mark.parametrize("run", RUNS, ids=RUN_IDS)
@pytest.mark.parametrize("shape", POOL_SHAPES, ids=str)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_pools(emu, run, shape, dtype, tmp_path):
    x = torch.randn(*shape, generator=_gen(sum(shape)), dtype=dtype)
    if x.numel() > 40:
        x = _spiked(x, shape[0])
    out = run_emu(emu(run[0]), "channel_pool", dict(x=x), {}, run[1], tmp_path)
    mean, mx = OPS.channel_pool(x)
    close(out["mean"], mean, TOL[dtype])
    close(out["max"], mx, TOL[dtype])
    out = run_emu(emu(run[0]), "spatial_pool", dict(x=x), {}, run[1], tmp_path)
    close(out["out"], OPS.spatial_pool(x), TOL[dtype])


# --- cbam ----------------------------------------------------------------------------------------------------------
def _cbam_args(n, c, hidden, h, w, k, dtype, seed):
    g = _gen(seed)
    r = lambda *s: torch.randn(*s, generator=g, dtype=dtype)  # noqa: E731
    return dict(x=r(n, c, h, w), mlp_w1=r(hidden, c), mlp_b1=r(hidden), mlp_w2=r(c, hidden), mlp_b2=r(c),
                spatial_weight=r(1, 2, k, k))


def _cbam_expected(a, scale, shift, pool):
    return OPS.cbam(a["x"], a["mlp_w1"], a["mlp_b1"], a["mlp_w2"], a["mlp_b2"], a["spatial_weight"], scale, shift,
                    pool)


# (N, C, hidden, H, W, K, pool), and where the scratch lives: all in shared
# memory, x from global memory (scratch_limit 0 < the x tile), or a global
# workspace (no shared memory at all).
CBAM_CASES = [((3, 8, 2, 12, 12, 7, 2), {}), ((1, 3, 1, 9, 9, 3, 3), {}), ((1, 1, 1, 1, 1, 1, 1), {}),
              ((3, 4, 2, 10, 6, 5, 2), dict(smem_limit=0, scratch_limit=10**6)),
              ((3, 4, 2, 10, 6, 5, 2), dict(smem_limit=0, scratch_limit=0))]
CBAM_IDS = ["shared", "small", "smallest", "scratch-shared", "global-scratch"]


@pytest.mark.parametrize("run", RUNS, ids=RUN_IDS)
@pytest.mark.parametrize("case", CBAM_CASES, ids=CBAM_IDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_cbam(emu, run, case, dtype, tmp_path):
    shape, limits = case
    a = _cbam_args(*shape[:6], dtype, seed=sum(shape))
    if a["x"].numel() > 40:
        a["x"] = _spiked(a["x"], shape[0])
    pool = shape[6]
    out = run_emu(emu(run[0]), "cbam", a, dict(spatial_scale=0.7, spatial_shift=-0.2, pool=pool, **limits), run[1],
                  tmp_path)
    close(out["out"], _cbam_expected(a, 0.7, -0.2, pool), TOL[dtype])


# A NaN or inf spatial weight: the CPU op multiplies the zero padding too
# (0 * inf = NaN at the borders); blocks.cuh's cbam_spatial_gate then runs
# every tap instead of the clamped loops. Pinned here on both paths that use
# it: the per-op cbam kernel and the whole-network kernel.
NONFINITE = [((0, 0, 0, 0), float("nan")), ((0, 1, 4, 4), float("inf")), ((0, 0, 2, 2), -float("inf")),
             ((0, 1, 0, 4), -float("inf"))]


@pytest.mark.parametrize("where,value", NONFINITE, ids=["nan-corner", "inf-corner", "-inf-centre", "-inf-edge"])
@pytest.mark.parametrize("mode", ["plain", "race"])
def test_cbam_nonfinite_spatial_weight(emu, where, value, mode, tmp_path):
    a = _cbam_args(2, 4, 2, 9, 9, 5, torch.float64, seed=11)
    a["spatial_weight"][where] = value
    out = run_emu(emu(mode), "cbam", a, dict(spatial_scale=1.0, spatial_shift=0.0, pool=1), "forward", tmp_path)
    expected = _cbam_expected(a, 1.0, 0.0, 1)
    if where[2:] != (2, 2):  # a tap off the centre meets the padding: NaN at the borders
        assert not torch.isfinite(expected).all()
    close(out["out"], expected, TOL[torch.float64])


@pytest.mark.parametrize("value", [float("nan"), float("inf")], ids=["nan", "inf"])
def test_network_nonfinite_spatial_weight(emu, value, tmp_path):
    model = random_model("all", ("spot", "recog"), seed=5, recog_classes=3)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, mf.CBAM):
                conv = [c for c in m.modules() if isinstance(c, torch.nn.Conv2d)][-1]
                conv.weight[0, 0, 0, 0] = value  # a corner tap: it only meets the padding at the borders
    packed, config = pack_network(model, torch.float64)
    u, v, os = random_inputs(2, seed=5)
    out = run_emu(emu("plain"), "meanspot_net", dict(u=u, v=v, os=os, params=packed, config=np.array(config)), {},
                  "forward", tmp_path)
    close(out["out"], OPS.meanspot_net(u, v, os, packed, config), TOL_NET[torch.float64])


# --- float16 and bfloat16 ------------------------------------------------------------------------------------------
# The kernels' 16-bit instantiations (storage in 16 bits, arithmetic in
# float), judged as tests/network/test_cuda.py judges them on a GPU: the
# error against the float64 result of the same rounded inputs is at most twice
# the error of the plain PyTorch reference run in that precision (on the CPU
# here), plus one ulp at the output's scale.
def _low_args(op, dtype, seed):
    g = _gen(seed)
    r = lambda *s: (torch.rand(*s, generator=g, dtype=torch.float64) * 2 - 1).to(dtype)  # noqa: E731
    if op == "conv_block":
        return dict(x=r(3, 2, 9, 6), weight=r(5, 2, 3, 3), bias=r(5), scale=r(5) + 1.5, shift=r(5)), dict(pool=3)
    if op == "cbam":
        a = dict(x=r(3, 4, 8, 8) * 3, mlp_w1=r(2, 4), mlp_b1=r(2), mlp_w2=r(4, 2), mlp_b2=r(4), spatial_weight=r(1, 2, 5, 5))
        return a, dict(spatial_scale=1.0, spatial_shift=0.0, pool=2)
    return dict(x=r(3, 5, 7, 9) * 3), {}


def _low_reference(op, a, p):
    if op == "conv_block":
        return conv_block_ref(a["x"], a["weight"], a["bias"], a["scale"], a["shift"], p["pool"])
    if op == "cbam":
        return cbam_ref(a["x"], a["mlp_w1"], a["mlp_b1"], a["mlp_w2"], a["mlp_b2"], a["spatial_weight"],
                        p["spatial_scale"], p["spatial_shift"], p["pool"])
    return channel_pool_ref(a["x"]) if op == "channel_pool" else spatial_pool_ref(a["x"])


@pytest.mark.parametrize("run", [("plain", "random:5"), ("race", "forward")], ids=["plain", "race"])
@pytest.mark.parametrize("op", ["conv_block", "channel_pool", "spatial_pool", "cbam"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_low_precision(emu, run, op, dtype, tmp_path):
    a, p = _low_args(op, dtype, seed=len(op))
    out = run_emu(emu(run[0]), op, a, p, run[1], tmp_path)
    got = [as_torch(out[k]) for k in (("mean", "max") if op == "channel_pool" else ("out",))]
    exact = as_tuple(_low_reference(op, {k: v.double() for k, v in a.items()}, p))
    ref_low = as_tuple(_low_reference(op, a, p))
    for i, (g, r, e) in enumerate(zip(got, ref_low, exact)):
        assert g.dtype == dtype
        assert_low_precision_close(g, r, e, f"{op} output {i}", reference="PyTorch on the CPU")


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_network_low_precision(emu, dtype, tmp_path):
    # The model and inputs rounded to dtype; "exact" is the float64 run of those rounded values.
    model_low = random_model("all", ("spot", "recog"), seed=3, recog_classes=5).to(dtype)
    exact_model = copy.deepcopy(model_low).double()
    u, v, os = (t.to(dtype) for t in random_inputs(3, seed=3))
    packed, config = pack_network(exact_model, dtype)
    out = run_emu(emu("plain"), "meanspot_net", dict(u=u, v=v, os=os, params=packed, config=np.array(config)), {},
                  "random:3", tmp_path)
    got = torch.split(as_torch(out["out"]), [1, 5], dim=1)
    with torch.no_grad():
        exact = exact_model(u.double(), v.double(), os.double())
        ref_low = model_low(u, v, os)
    for i, (g, r, e) in enumerate(zip(got, ref_low, exact)):
        assert_low_precision_close(g, r, e, f"meanspot_net head {i}", "reference module on the CPU")


# --- meanspot_net --------------------------------------------------------------------------------------------------
NET_CASES = [(cbam, heads) for cbam in mf.PLACEMENTS for heads in HEAD_SETS]


@pytest.mark.parametrize("run", RUNS, ids=RUN_IDS)
@pytest.mark.parametrize("case", NET_CASES, ids=lambda c: f"{c[0]}-{'+'.join(c[1])}")
def test_meanspot_net(emu, run, case, tmp_path):
    cbam, heads = case
    # One dtype per case (alternating), to keep the module within its time budget.
    dtype = DTYPES[NET_CASES.index(case) % 2]
    model = random_model(cbam, heads, seed=NET_CASES.index(case), recog_classes=5)
    packed, config = pack_network(model, dtype)
    u, v, os = (t.to(dtype) for t in random_inputs(3, seed=NET_CASES.index(case)))
    u[1, 0, 7, 9] = float("nan")  # stays in its own sample
    inputs = dict(u=u, v=v, os=os, params=packed, config=np.array(config))
    # The global-workspace fallback for one placement.
    params = dict(smem_limit=0) if cbam == mf.PLACEMENTS[-1] else {}
    out = run_emu(emu(run[0]), "meanspot_net", inputs, params, run[1], tmp_path)
    close(out["out"], OPS.meanspot_net(u, v, os, packed, config), TOL_NET[dtype])


@pytest.mark.parametrize("run", [("race", "random:3"), ("plain", "reverse")], ids=["race", "plain"])
def test_meanspot_net_many_classes(emu, run, tmp_path):
    """More classes than threads in a warp times the warps: every warp's slot of the softmax's block reductions counts."""
    model = random_model("none", ("recog",), seed=7, recog_classes=300)
    packed, config = pack_network(model, torch.float64)
    u, v, os = random_inputs(2, seed=7)
    out = run_emu(emu(run[0]), "meanspot_net", dict(u=u, v=v, os=os, params=packed, config=np.array(config)), {},
                  run[1], tmp_path)
    close(out["out"], OPS.meanspot_net(u, v, os, packed, config), TOL_NET[torch.float64])


def test_meanspot_net_largest_spatial_kernel(emu, tmp_path):
    """K = 41, the largest spatial kernel the op accepts (plain build only: 6M taps per block)."""
    model = random_model("all", ("spot",), spatial_kernel=41, seed=41)
    packed, config = pack_network(model, torch.float32)
    u, v, os = (t.float() for t in random_inputs(1, seed=41))
    out = run_emu(emu("plain"), "meanspot_net", dict(u=u, v=v, os=os, params=packed, config=np.array(config)), {},
                  "random:41", tmp_path)
    close(out["out"], OPS.meanspot_net(u, v, os, packed, config), TOL_NET[torch.float32])


# --- mean_roi_features -----------------------------------------------------------------------------------------------
# (N, H, W): the smallest map (1 x 1, one-pixel boxes), odd batches, a face-like map.
ROI_SHAPES = [(1, 1, 1), (3, 16, 20), (2, 31, 17)]


@pytest.mark.parametrize("run", RUNS, ids=RUN_IDS)
@pytest.mark.parametrize("shape", ROI_SHAPES, ids=str)
def test_mean_roi_features(emu, run, shape, tmp_path):
    n, h, w = shape
    g = _gen(h * w)
    flow = torch.randn(n, 2, h, w, generator=g) * 3
    boxes = torch.empty(n, 2, 4, dtype=torch.int64)
    for i in range(n):
        for r in range(2):
            top = int(torch.randint(0, h, (1,), generator=g))
            left = int(torch.randint(0, w, (1,), generator=g))
            bottom = int(torch.randint(top + 1, h + 1, (1,), generator=g))
            right = int(torch.randint(left + 1, w + 1, (1,), generator=g))
            boxes[i, r] = torch.tensor([top, bottom, left, right])
    out = run_emu(emu(run[0]), "mean_roi_features", dict(flow=flow, boxes=boxes), {}, run[1], tmp_path)
    close(out["out"], OPS.mean_roi_features(flow, boxes), TOL_ROI)


# --- tvl1_flow -------------------------------------------------------------------------------------------------------
# Tiny pyramids and iteration counts (the kernel's 1024 threads are each a
# fiber); 16 is the smallest side the op accepts. Bit-exact against the CPU op.
# The last case: identical frames and epsilon 0. Every update is exactly 0,
# so the squared-update sum equals the threshold: the kernel's too-close-to-
# call branch (thread 0's serial float sum, broadcast through shared memory)
# decides every stop.
# 32 x 32 has three pyramid levels (32, 25, 20): a level built from a level
# built in the same launch.
TVL1_CASES = [((2, 16, 20), "opencv4", np.uint8, 5, False), ((1, 24, 24), "opencv5", np.float32, 3, False),
              ((2, 20, 17), "opencv4.14", np.uint8, 0, False), ((1, 32, 32), "opencv4", np.float32, 5, False),
              ((2, 16, 16), "opencv5", np.uint8, 3, True)]


def _frames(shape, dtype, seed):
    rng = np.random.default_rng(seed)
    n, h, w = shape
    yy, xx = np.mgrid[0:h, 0:w]
    base = 128 + 60 * np.sin(xx / 3.0) * np.cos(yy / 4.0)
    prev = np.stack([base + rng.normal(0, 4, (h, w)) for _ in range(n)])
    nxt = np.roll(prev, 1, axis=2) + rng.normal(0, 2, prev.shape)
    prev, nxt = np.clip(prev, 0, 255), np.clip(nxt, 0, 255)
    if dtype == np.uint8:
        return prev.astype(np.uint8), nxt.astype(np.uint8)
    return (prev / 255).astype(np.float32), (nxt / 255).astype(np.float32)


@pytest.mark.parametrize("run", RUNS, ids=RUN_IDS)
@pytest.mark.parametrize("case", TVL1_CASES, ids=lambda c: f"{c[0]}-{c[1]}{'-still' if c[4] else ''}")
def test_tvl1_flow(emu, run, case, tmp_path):
    shape, remap, dtype, median, still = case
    prev, nxt = _frames(shape, dtype, seed=shape[1])
    if still:
        nxt = prev.copy()
    p = dict(tau=0.25, **{"lambda": 0.15}, theta=0.3, scales=3, warps=2, epsilon=0.0 if still else 0.01, inner=6,
             outer=2, scale_step=0.8, median=median, remap=remap)
    out = run_emu(emu(run[0]), "tvl1_flow", dict(prev=prev, next=nxt), p, run[1], tmp_path)
    flow, counts = OPS.tvl1_flow(torch.from_numpy(prev), torch.from_numpy(nxt), p["tau"], p["lambda"], p["theta"],
                                 p["scales"], p["warps"], p["epsilon"], p["inner"], p["outer"], p["scale_step"],
                                 p["median"], remap)
    np.testing.assert_array_equal(out["counts"], counts.numpy())  # the same early stops
    np.testing.assert_array_equal(out["flow"].view(np.uint32), flow.numpy().view(np.uint32))  # bit for bit


@pytest.mark.parametrize("run", [("race", "random:3"), ("plain", "reverse")], ids=["race", "plain"])
def test_tvl1_flow_stop_rule(emu, run, tmp_path):
    """The early stop decided by the last warp's pixels: 16 x 64 frames (one pixel per thread) moving only in
    the right half of the last two rows, the rows of warps 28 to 31; epsilon 0.02 stops it after 17 iterations."""
    rng = np.random.default_rng(0)
    prev = np.full((1, 16, 64), 100, np.uint8)
    nxt = prev.copy()
    texture = rng.integers(0, 255, (2, 32)).astype(np.uint8)
    prev[0, 14:16, 32:64] = texture
    nxt[0, 14:16, 33:64] = texture[:, :31]
    p = dict(tau=0.25, **{"lambda": 0.15}, theta=0.3, scales=1, warps=1, epsilon=0.02, inner=30, outer=1,
             scale_step=0.8, median=0, remap="opencv4")
    out = run_emu(emu(run[0]), "tvl1_flow", dict(prev=prev, next=nxt), p, run[1], tmp_path)
    flow, counts = OPS.tvl1_flow(torch.from_numpy(prev), torch.from_numpy(nxt), *[p[k] for k in (
        "tau", "lambda", "theta", "scales", "warps", "epsilon", "inner", "outer", "scale_step", "median")], "opencv4")
    assert 1 < counts[0, 0] < 30  # the rule stops it, not the iteration cap
    np.testing.assert_array_equal(out["counts"], counts.numpy())
    np.testing.assert_array_equal(out["flow"].view(np.uint32), flow.numpy().view(np.uint32))
