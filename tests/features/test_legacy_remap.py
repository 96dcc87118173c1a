"""tests/tvl1_numpy.py's `legacy_remap` / `legacy_remap_simd` are OpenCV 4.x's bicubic remap, bit for bit.

OpenCV up to 4.13 (4.5.1 included) runs the scalar remapBicubic
(`legacy_remap`); 4.14 sums the interior of one-channel float images in
imgwarp.simd.hpp (`legacy_remap_simd`, fused multiply-adds on FMA CPUs).
The remap tests run only where the installed cv2 is 4.x (skipped under
5.x), e.g. in a side venv:

    python3 -m venv --system-site-packages /work/venv-cv4
    /work/venv-cv4/bin/pip install 'opencv-contrib-python-headless<5'
    /work/venv-cv4/bin/python -m pytest tests/features/test_legacy_remap.py

Checked with the opencv-contrib-python-headless 4.13.0.92 and 4.14.0.94
x86-64 wheels on an AVX-512 CPU, each also under OPENCV_CPU_DISABLE down to
the SSE3 baseline, and the remap tests with 4.5.1.48 (Python 3.9 venv,
`PYTHONPATH=tests pytest --noconftest -k "not transcription"`). With the matching remap in place of
cv2.remap the NumPy transcription of the solver is that OpenCV's DualTVL1 bit
for bit (PIPELINE.md section 3b: the only difference between the 4.x and 5.x
solvers is this remap). The stored-truth tests hold the NumPy solver with
these remaps to tests/data/tvl1_opencv4.npz (4.13) and tvl1_opencv4.14.npz
(4.14) under any cv2 >= 4.13, and the installed cv2 to its own stored file.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

cv2 = pytest.importorskip("cv2")

import tvl1_numpy as TN  # noqa: E402  (tests/ is on sys.path)

ROOT = Path(__file__).resolve().parent.parent.parent
DATA = ROOT / "tests" / "data"
VERSION = tuple(int(v) for v in cv2.__version__.split(".")[:2])
needs_cv4 = pytest.mark.skipif(VERSION[0] != 4, reason=f"needs OpenCV 4.x (cv2 is {cv2.__version__})")
if VERSION >= (4, 14):
    # v_fma fuses in the AVX2 and AVX-512 builds the wheel dispatches to; the
    # SSE4 build multiplies then adds (checked with OPENCV_CPU_DISABLE). CPU
    # feature ids: CV_CPU_AVX2 = 11, CV_CPU_FMA3 = 12, CV_CPU_AVX_512F = 13.
    FUSED = (cv2.checkHardwareSupport(11) and cv2.checkHardwareSupport(12)) or cv2.checkHardwareSupport(13)

    def OURS(img, mx, my):
        return TN.legacy_remap_simd(img, mx, my, fused=FUSED)
else:
    OURS = TN.legacy_remap


def cv_remap(img, mx, my):
    return cv2.remap(img, mx, my, cv2.INTER_CUBIC)


def random_case(rng, h, w, reach):
    img = ((rng.random((h, w)) - 0.3) * 255).astype(np.float32)  # negative values like gradients
    mx = (np.arange(w)[None, :] + rng.uniform(-reach, reach, (h, w))).astype(np.float32)
    my = (np.arange(h)[:, None] + rng.uniform(-reach, reach, (h, w))).astype(np.float32)
    return img, mx, my


@needs_cv4
@pytest.mark.parametrize("h,w", [(40, 50), (17, 23), (5, 4), (4, 5), (3, 7), (7, 3), (2, 2), (1, 9), (1, 1)])
@pytest.mark.parametrize("reach", [0.6, 3.0, 12.0])
def test_random_maps(h, w, reach):
    rng = np.random.default_rng(h * 1000 + w * 10 + int(reach))
    img, mx, my = random_case(rng, h, w, reach)
    ours, theirs = OURS(img, mx, my), cv_remap(img, mx, my)
    assert np.array_equal(ours, theirs), np.mean(ours == theirs)
    assert np.array_equal(np.signbit(ours), np.signbit(theirs))


@needs_cv4
@pytest.mark.parametrize("h,w", [(40, 50), (3, 3), (6, 2)])
def test_grid_positions_ties_and_far(h, w):
    """Every 1/64 position from -6 to n + 6 (exact 1/32 grid points and the .5/32 ties between them)."""
    rng = np.random.default_rng(1)
    img = ((rng.random((h, w)) - 0.5) * 1000).astype(np.float32)
    xs = np.arange(-6 * 64, (w + 6) * 64 + 1, dtype=np.float32) / np.float32(64)
    ys = np.arange(-6 * 64, (h + 6) * 64 + 1, 7, dtype=np.float32) / np.float32(64)
    mx, my = np.meshgrid(xs, ys)
    mx, my = mx.astype(np.float32), my.astype(np.float32)
    assert np.array_equal(OURS(img, mx, my), cv_remap(img, mx, my))
    # the transposed roles: y sweeps finely
    assert np.array_equal(OURS(img, my.T.copy(), mx.T.copy()), cv_remap(img, my.T.copy(), mx.T.copy()))


@needs_cv4
def test_special_values():
    rng = np.random.default_rng(2)
    img = ((rng.random((20, 30)) - 0.3) * 255).astype(np.float32)
    img[3, :] = -0.0
    special = np.array([-0.3, -1.7, -1e-8, 5 + 1e-7, 29.0, 29.5, 1 / 32, 3 / 64, -1 / 64, -3 / 64, 1e6, -1e6,
                        3e9, -3e9, np.inf, -np.inf, 28.99, 29.999, 30.0, 30.01, 31.0, 32.5, -2.0, -2.01, -3.0,
                        2.5 / 32, 1.5 / 32 + 4, 0.5 / 32, 31.5 / 32], np.float32)
    mx, my = np.meshgrid(special, np.concatenate([special, [3.0, 3.0 + 1 / 64]]).astype(np.float32))
    mx, my = mx.astype(np.float32), my.astype(np.float32)
    ours, theirs = OURS(img, mx, my), cv_remap(img, mx, my)
    assert np.array_equal(ours, theirs) and np.array_equal(np.signbit(ours), np.signbit(theirs))


def small_pair(seed, h, w, magnitude=1.5, kind="texture"):
    from meanspot_fused.features import synthetic as S
    a, b = S.deformed_pair(magnitude, kind, seed=seed)
    return cv2.resize(a, (w, h), interpolation=cv2.INTER_AREA), cv2.resize(b, (w, h), interpolation=cv2.INTER_AREA)


@needs_cv4
@pytest.mark.parametrize("seed,h,w,kind", [(0, 32, 32, "texture"), (1, 48, 40, "texture"), (2, 40, 48, "face")])
def test_transcription_with_legacy_remap_is_opencv4_tvl1(seed, h, w, kind):
    a, b = small_pair(seed, h, w, kind=kind)
    ours, _ = TN.dual_tvl1(a, b, remap=OURS)
    theirs = np.moveaxis(cv2.optflow.DualTVL1OpticalFlow_create().calc(a, b, None), -1, 0)
    assert np.array_equal(ours, theirs)


# The stored truths (scripts/make_tvl1_truth.py; its docstring says how each
# was made): flow_sha256 and flow_sample of each OpenCV's DualTVL1 on the 6
# pairs of tests/data/tvl1_pairs.npz.
STORED = {"tvl1_opencv4.npz": "4.13.", "tvl1_opencv4.14.npz": "4.14.", "tvl1_opencv5.npz": "5.1.",
          "tvl1_opencv4.5.1.npz": "4.5.1"}


def _load_truth_script():
    spec = importlib.util.spec_from_file_location("make_tvl1_truth", ROOT / "scripts" / "make_tvl1_truth.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


MT = _load_truth_script()
PREV, NEXT, KIND, PAIRS_SHA256 = MT.load_pairs(DATA / "tvl1_pairs.npz")


def load_truth(name):
    with np.load(DATA / name) as f:
        return {k: f[k] for k in f.files}


def fused_on(cpu_features):
    """Whether OpenCV 4.14's remap fuses on the CPU described (AVX2 + FMA3 or AVX-512 builds, as FUSED above)."""
    on = set(cpu_features.split(":")[-1].split())
    return {"AVX2", "FMA3"} <= on or "AVX_512F" in on


@pytest.mark.parametrize("name", sorted(STORED))
def test_stored_truth_files(name):
    """Small (no frames, no full flows), of the stored pairs, and self-consistent in shape."""
    assert (DATA / name).stat().st_size < 80_000
    t = load_truth(name)
    assert str(t["opencv"]).startswith(STORED[name]), str(t["opencv"])
    assert str(t["pairs_sha256"]) == PAIRS_SHA256
    assert t["kind"].tolist() == KIND.tolist()
    n, h, w = PREV.shape
    assert t["flow_shape"].tolist() == [n, 2, h, w] and int(t["sample_step"]) == 4
    assert t["flow_sample"].dtype == np.float32 and t["flow_sample"].shape == (n, 2, h // 4, w // 4)
    assert len(t["flow_sha256"]) == n and all(len(x) == 64 for x in t["flow_sha256"].tolist())
    assert "flow" not in t and "prev" not in t and "next" not in t


@pytest.mark.parametrize("i", range(len(PREV)))
@pytest.mark.parametrize("name", ["tvl1_opencv4.npz", "tvl1_opencv4.14.npz"])
def test_stored_opencv4_flow_is_transcription_with_legacy_remap(name, i):
    """tests/data/tvl1_opencv4.npz (4.13) and tvl1_opencv4.14.npz (4.14), pair i, any installed cv2 >= 4.13.

    The transcription with `legacy_remap` (4.13) or `legacy_remap_simd`
    (4.14, fused as on the CPU that made the file) reproduces the stored
    flow_sha256 and flow_sample. It takes resize and medianBlur from the
    installed cv2; those agree bit for bit between 4.13, 4.14 and 5.x (not
    4.5.1, whose float INTER_LINEAR resize differs in the last bit), so in the
    main environment too the remap is all that makes the flow 4.13's or 4.14's.
    About 0.5 s a pair.
    """
    if VERSION < (4, 13):
        pytest.skip(f"cv2 {cv2.__version__}: its resize differs from 4.13's")
    t = load_truth(name)
    if name == "tvl1_opencv4.npz":
        remap = TN.legacy_remap
    else:
        fused = fused_on(str(t["cpu_features"]))

        def remap(img, mx, my):
            return TN.legacy_remap_simd(img, mx, my, fused=fused)
    ours, _ = TN.dual_tvl1(PREV[i], NEXT[i], remap=remap)
    assert np.array_equal(MT.flow_sample(ours), t["flow_sample"][i])
    assert MT.flow_sha256(ours) == t["flow_sha256"][i]


def test_installed_cv2_reproduces_its_stored_truth():
    """The stored file of the installed OpenCV version (if any, and made on a CPU with the same features)."""
    mine = [name for name, v in STORED.items() if cv2.__version__.startswith(v)]
    if not mine:
        pytest.skip(f"no stored truth of OpenCV {cv2.__version__}")
    t = load_truth(mine[0])
    if str(t["opencv"]) != cv2.__version__ or str(t["cpu_features"]) != MT.cpu_features(cv2):
        pytest.skip(f"{mine[0]} is from OpenCV {t['opencv']} on {t['cpu_features']}")
    flow = MT.cv2_flows(PREV, NEXT)
    assert np.array_equal(MT.flow_sample(flow), t["flow_sample"])
    assert [MT.flow_sha256(f) for f in flow] == t["flow_sha256"].tolist()
