"""End to end: frames -> meanspot_fused features (our TV-L1 flow, then the
fused op) against MEAN's own preProcess (OpenCV's TV-L1, cartToPolar, pandas
strain, cv2.normalize, cv2.resize) on synthetic face videos and deformed pairs.

Our flow is OpenCV's bit for bit (tests/features/test_features_flow.py) and the fused
op equals MEAN's post-processing of a flow within float32 rounding
(tests/features/test_features_mean.py), so the features agree within float32 rounding
end to end. The issue's bounds are a mean |diff| <= 0.005 and a max <= 0.05
on the [0, 1] maps; measured here: mean below 1e-7 and max below 1e-5 (float32
against MEAN's float64 normalisation); the test holds them to the issue's bounds
and, tighter, to float32 rounding.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from meanspot_fused.features import mean_features, video_features

pytest.importorskip("cv2")
pytest.importorskip("pandas")
pytest.importorskip("skimage")
from meanspot_fused.features import reference as R  # noqa: E402
from meanspot_fused.features import synthetic as S  # noqa: E402

CV = R.installed_remap()  # MEAN's preProcess runs the installed cv2

MEAN_ABS = 0.005  # the bounds
MAX_ABS = 0.05
ROUNDING = 1e-5  # float32 maps in [0, 1] against MEAN's float64: a few float32 ulps


@pytest.fixture(scope="module")
def video():
    frames, truth = S.face_video(24, events=((4, "brow", 6, 2.0), (13, "mouth", 6, 2.5)), drift=0.03, seed=21)
    return frames, truth, S.face_landmarks()


@pytest.fixture(scope="module")
def reference(video):
    frames, _, lm = video
    k = 3
    return np.stack([R.mean_preprocess(frames[i], frames[i + k], lm) for i in range(len(frames) - k)])


def report(got, ref, label):
    diff = np.abs(got.transpose(0, 2, 3, 1) - ref)
    print(f"{label}: mean |diff| {diff.mean():.4g}, max |diff| {diff.max():.4g} over {len(ref)} pairs")
    assert diff.mean() <= MEAN_ABS and diff.max() <= MAX_ABS, (diff.mean(), diff.max())
    assert diff.max() <= ROUNDING, diff.max()


def test_video_features_match_mean(video, reference, device):
    frames, _, lm = video
    got = video_features(torch.from_numpy(frames).to(device), 3, lm, batch_size=8, remap=CV)
    assert got.device.type == device.type and got.shape == (len(frames) - 3, 3, 42, 42)
    report(got.cpu().numpy(), reference, f"video_features on {device}")


def test_mean_features_match_mean_on_deformed_pairs(device):
    lm = S.face_landmarks()
    pairs = [S.deformed_pair(m, kind, seed=s) for m, kind, s in ((0.8, "face", 0), (2.0, "face", 1),
                                                                    (1.5, "texture", 2))]
    a = torch.from_numpy(np.stack([p[0] for p in pairs])).to(device)
    b = torch.from_numpy(np.stack([p[1] for p in pairs])).to(device)
    got = mean_features(a, b, lm, remap=CV).cpu().numpy()
    ref = np.stack([R.mean_preprocess(p[0], p[1], lm) for p in pairs])
    report(got, ref, f"mean_features on {device}")


def test_video_features_batching_does_not_change_results(video):
    frames, _, lm = video
    a = video_features(frames, 3, lm, batch_size=5)
    b = video_features(frames, 3, lm, batch_size=256)
    assert torch.equal(a, b)
