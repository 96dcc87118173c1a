"""tvl1_flow's CUDA kernel against its CPU kernel on the same frames; skipped without a GPU.

Both kernels evaluate the same rounding-exact math of csrc/tvl1_math.h (every
float operation an IEEE-rounded add, mul, div or explicit fma; the double-
precision steps, sqrt included, correctly rounded on both sides; no FMA
contraction, no flush-to-zero), and the stopping decision is OpenCV's serial
float sum on both, so the flow is expected to be equal BIT FOR BIT and the
iteration counts exactly: any difference is a bug, hence no tolerance below.

Frames are 2-D "face-like" synthetic textures (an ellipse, dark blobs and
smooth random fields made with NumPy) and the next frame is the first warped by
a small smooth random flow plus noise.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from meanspot_fused.features.flow import REMAPS, TVL1_DEFAULTS, tvl1_flow

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]

DEVICE = torch.device("cuda")
OP = torch.ops.meanspot_fused.tvl1_flow
# The op's positional parameters (schema order) at OpenCV's defaults.
PARAM_NAMES = ("tau", "lambda_", "theta", "scales", "warps", "epsilon", "inner_iterations", "outer_iterations",
               "scale_step", "median_filtering")
DEFAULTS = tuple(TVL1_DEFAULTS[k] for k in PARAM_NAMES)
SIZES = [(16, 16), (64, 48), (128, 128), (256, 256)]


# --- synthetic frames --------------------------------------------------------------------------------------------

def smooth_field(rng: np.random.Generator, h: int, w: int, sigma: float) -> np.ndarray:
    """White noise low-passed by a Gaussian of `sigma` px (in Fourier space), scaled to max |v| = 1."""
    noise = rng.standard_normal((h, w))
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.fftfreq(w)[None, :]
    f = np.real(np.fft.ifft2(np.fft.fft2(noise) * np.exp(-2 * (np.pi * sigma) ** 2 * (fx ** 2 + fy ** 2))))
    return f / (np.abs(f).max() + 1e-12)


def face_like(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A bright ellipse with two dark eye blobs and a mouth bar on a textured background, in [0, 255]."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    cy, cx = h * rng.uniform(0.45, 0.55), w * rng.uniform(0.45, 0.55)
    face = ((yy - cy) / (0.42 * h)) ** 2 + ((xx - cx) / (0.34 * w)) ** 2 < 1
    img = 80.0 + 70.0 * face
    for ex in (-0.13, 0.13):
        img -= 50 * np.exp(-(((yy - (cy - 0.1 * h)) / (0.05 * h)) ** 2 + ((xx - (cx + ex * w)) / (0.06 * w)) ** 2))
    img -= 40 * np.exp(-(((yy - (cy + 0.2 * h)) / (0.03 * h)) ** 2 + ((xx - cx) / (0.12 * w)) ** 2))
    s = max(h, w)
    img += 30 * smooth_field(rng, h, w, s / 20) + 15 * smooth_field(rng, h, w, s / 60)
    return np.clip(img, 0, 255)


def warp_bilinear(img: np.ndarray, dx: np.ndarray, dy: np.ndarray) -> np.ndarray:
    """img sampled at (y + dy, x + dx), bilinear, edges replicated."""
    h, w = img.shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    x = np.clip(xx + dx, 0, w - 1)
    y = np.clip(yy + dy, 0, h - 1)
    x0 = np.minimum(np.floor(x).astype(int), w - 2)
    y0 = np.minimum(np.floor(y).astype(int), h - 2)
    tx, ty = x - x0, y - y0
    top = img[y0, x0] * (1 - tx) + img[y0, x0 + 1] * tx
    bottom = img[y0 + 1, x0] * (1 - tx) + img[y0 + 1, x0 + 1] * tx
    return top * (1 - ty) + bottom * ty


def frames(n: int, h: int, w: int, dtype: torch.dtype, seed: int = 0, magnitude: float = 1.5):
    """n (prev, next) pairs as two (n, h, w) CPU tensors: uint8, or float32 in [0, 1]."""
    prev = np.empty((n, h, w))
    nxt = np.empty((n, h, w))
    for i in range(n):
        rng = np.random.default_rng(1000 * seed + i)
        a = face_like(rng, h, w)
        s = max(h, w) / 6
        b = warp_bilinear(a, magnitude * smooth_field(rng, h, w, s), magnitude * smooth_field(rng, h, w, s))
        prev[i] = a
        nxt[i] = np.clip(b + rng.normal(0, 1.0, (h, w)), 0, 255)
    if dtype == torch.uint8:
        return (torch.from_numpy(np.rint(prev).astype(np.uint8)), torch.from_numpy(np.rint(nxt).astype(np.uint8)))
    return torch.from_numpy((prev / 255).astype(np.float32)), torch.from_numpy((nxt / 255).astype(np.float32))


def assert_same(got, expected, what=""):
    """got (CUDA) equals expected (CPU): counts exactly, flow bit for bit (see the module docstring)."""
    flow, counts = (t.cpu() for t in got)
    ref_flow, ref_counts = expected
    assert flow.shape == ref_flow.shape and flow.dtype == torch.float32, what
    assert counts.dtype == torch.int64 and torch.equal(counts, ref_counts), (what, counts, ref_counts)
    # Bitwise (signed zeros and all): no tolerance, the kernels share their rounding.
    same = flow.view(torch.int32) == ref_flow.view(torch.int32)
    if not bool(same.all()):
        diff = (flow - ref_flow).abs()
        raise AssertionError(f"{what}: {int((~same).sum())} of {same.numel()} flow values differ from the CPU "
                             f"kernel's, max |diff| {float(diff.max()):.3g} px")


# --- CUDA vs CPU ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("remap", REMAPS)
@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
@pytest.mark.parametrize("size", SIZES)
def test_matches_cpu(size, dtype, remap):
    """Every OpenCV remap (csrc/tvl1_math.h: 5.x's separable warp, 4.x's table weights and sums)."""
    n = 1 if size == (256, 256) else 3
    a, b = frames(n, *size, dtype, seed=1)
    expected = OP(a, b, *DEFAULTS, remap)
    assert_same(OP(a.to(DEVICE), b.to(DEVICE), *DEFAULTS, remap), expected, f"{size} {dtype} {remap}")


@pytest.mark.parametrize("batch", [0, 1, 17])
@pytest.mark.parametrize("size", [(64, 48), (128, 128)])
def test_batches(batch, size):
    a, b = frames(batch, *size, torch.uint8, seed=2)
    flow, counts = tvl1_flow(a.to(DEVICE), b.to(DEVICE), return_iterations=True)
    assert flow.device.type == "cuda" and flow.shape == (batch, 2, *size) and counts.shape == (batch, 2)
    assert_same((flow, counts), OP(a, b, *DEFAULTS), f"batch {batch}")


def test_more_pairs_than_blocks():
    """More pairs than SMs: each block solves several pairs in turn, reusing its workspace."""
    n = 2 * torch.cuda.get_device_properties(DEVICE).multi_processor_count + 3
    a, b = frames(n, 16, 24, torch.uint8, seed=3)
    assert_same(OP(a.to(DEVICE), b.to(DEVICE), *DEFAULTS), OP(a, b, *DEFAULTS), f"{n} pairs")


@pytest.mark.parametrize("overrides", [
    dict(median_filtering=0), dict(median_filtering=3), dict(median_filtering=1),
    dict(epsilon=0.0, inner_iterations=7, outer_iterations=2),  # never stops early
    dict(epsilon=0.05), dict(epsilon=0.001),
    dict(scales=1, warps=1), dict(scales=3, scale_step=0.5, warps=2),
    dict(tau=0.1, lambda_=0.3, theta=0.5),
])
def test_parameters(overrides):
    params = tuple(overrides.get(k, TVL1_DEFAULTS[k]) for k in PARAM_NAMES)
    a, b = frames(2, 64, 48, torch.float32, seed=4, magnitude=2.5)
    assert_same(OP(a.to(DEVICE), b.to(DEVICE), *params), OP(a, b, *params), str(overrides))


@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
def test_identical_frames_give_zero_flow(dtype):
    a, _ = frames(3, 128, 128, dtype, seed=5)
    flow, counts = OP(a.to(DEVICE), a.to(DEVICE), *DEFAULTS)
    assert bool((flow == 0).all())
    # 128 x 128 at scale_step 0.8 keeps 5 levels; each warp stops after its first iteration.
    assert counts[:, 0].tolist() == [5 * TVL1_DEFAULTS["warps"]] * 3
    assert_same((flow, counts), OP(a, a, *DEFAULTS), "identical frames")


# --- layouts -------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
def test_expanded_prev(dtype):
    """One reference frame against many (a stride-0 batch, read in place)."""
    a, b = frames(5, 64, 48, dtype, seed=6)
    prev = a[:1].to(DEVICE).expand(5, -1, -1)
    assert prev.stride(0) == 0
    assert_same(OP(prev, b.to(DEVICE), *DEFAULTS), OP(a[:1].expand(5, -1, -1).contiguous(), b, *DEFAULTS),
                "expanded prev")


@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
def test_non_contiguous(dtype):
    a, b = frames(3, 48, 64, dtype, seed=7)
    # prev transposed (column-major frames), next a strided view of a larger buffer.
    prev = a.transpose(1, 2).contiguous().to(DEVICE).transpose(1, 2)
    wide = torch.zeros(3, 48 * 2, 64 * 3, dtype=dtype, device=DEVICE)
    wide[:, ::2, ::3] = b.to(DEVICE)
    nxt = wide[:, ::2, ::3]
    assert not prev.is_contiguous() and not nxt.is_contiguous()
    assert_same(OP(prev, nxt, *DEFAULTS), OP(a, b, *DEFAULTS), "non-contiguous")


# --- errors --------------------------------------------------------------------------------------------------------

def test_device_mismatch_errors():
    a, b = frames(1, 32, 32, torch.uint8)
    with pytest.raises(RuntimeError, match="device"):
        OP(a, b.to(DEVICE), *DEFAULTS)
    with pytest.raises(RuntimeError, match="device"):
        OP(a.to(DEVICE), b, *DEFAULTS)
    # The Python wrapper moves next to prev's device.
    flow, counts = tvl1_flow(a.to(DEVICE), b, return_iterations=True)
    assert flow.device.type == "cuda"
    assert_same((flow, counts), OP(a, b, *DEFAULTS), "wrapper, next moved to prev's device")


def test_dtype_and_value_errors():
    a, b = frames(1, 32, 32, torch.float32)
    a, b = a.to(DEVICE), b.to(DEVICE)
    with pytest.raises(RuntimeError, match="uint8 or float32"):
        OP(a.to(torch.int16), b.to(torch.int16), *DEFAULTS)
    with pytest.raises(RuntimeError, match="uint8 or float32"):
        OP(a.double(), b.double(), *DEFAULTS)
    with pytest.raises(RuntimeError, match="dtype of prev"):
        OP(a, (b * 255).to(torch.uint8), *DEFAULTS)
    with pytest.raises(TypeError):
        tvl1_flow(a.double(), b.double())
    with pytest.raises(RuntimeError, match="between"):
        OP(a[:, :15], b[:, :15], *DEFAULTS)
    with pytest.raises(RuntimeError, match="median_filtering"):
        OP(a, b, *DEFAULTS[:-1], 7)
    bad = a.clone()
    bad[0, 3, 4] = float("nan")
    with pytest.raises(RuntimeError, match="finite"):
        OP(bad, b, *DEFAULTS)
    with pytest.raises(ValueError, match="finite"):
        tvl1_flow(a, b.masked_fill(b > 0.5, float("inf")))


# --- capture, compile, determinism -----------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
def test_cuda_graph_capture_and_replay(dtype):
    """The op captures into a CUDA graph (workspace from the graph's pool; the
    finite check of float frames, a synchronizing one, is skipped while capturing)."""
    a, b = frames(4, 64, 48, dtype, seed=8)
    static_a, static_b = a.to(DEVICE), b.to(DEVICE)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm-up outside the capture, as torch.cuda.graphs asks
        OP(static_a, static_b, *DEFAULTS)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = OP(static_a, static_b, *DEFAULTS)
    for seed in (9, 10):  # each replay reads the current contents of the static inputs
        a2, b2 = frames(4, 64, 48, dtype, seed=seed)
        static_a.copy_(a2)
        static_b.copy_(b2)
        graph.replay()
        torch.cuda.synchronize()
        assert_same(out, OP(a2, b2, *DEFAULTS), f"replay {seed}")


@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
def test_torch_compile_fullgraph(dtype):
    """The op (its fake kernel in meanspot_fused/features/flow.py) in a fullgraph torch.compile."""
    compiled = torch.compile(lambda p, q: OP(p, q, *DEFAULTS), fullgraph=True)
    for n in (2, 3):
        a, b = frames(n, 64, 48, dtype, seed=11 + n)
        assert_same(compiled(a.to(DEVICE), b.to(DEVICE)), OP(a, b, *DEFAULTS), f"compiled, batch {n}")


def test_deterministic():
    a, b = frames(17, 128, 128, torch.float32, seed=12)
    a, b = a.to(DEVICE), b.to(DEVICE)
    f1, c1 = OP(a, b, *DEFAULTS)
    f2, c2 = OP(a, b, *DEFAULTS)
    assert torch.equal(c1, c2)
    assert torch.equal(f1.view(torch.int32), f2.view(torch.int32))
