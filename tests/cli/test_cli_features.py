"""The `features` and `evaluate` subcommands: outputs equal the library's, bad input exits 2 with nothing written."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

from meanspot_fused import save_model
from meanspot_fused.cli import main
from meanspot_fused.features import video_features
from meanspot_fused.features.flow import DEFAULT_REMAP, REMAPS

pytest.importorskip("cv2")
pytest.importorskip("skimage")
from meanspot_fused.features import synthetic as S  # noqa: E402

from helpers import random_model  # noqa: E402


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    d = tmp_path_factory.mktemp("video")
    frames, _ = S.face_video(9, events=((3, "brow", 4, 2.0),), seed=4)
    np.save(d / "frames.npy", frames)
    np.save(d / "lm.npy", S.face_landmarks())
    return d, frames


def test_features_writes_what_video_features_computes_and_predict_reads(video, tmp_path):
    d, frames = video
    out = tmp_path / "feats.npz"
    assert main(["features", "--frames", str(d / "frames.npy"), "--landmarks", str(d / "lm.npy"), "--k", "3",
                 "--output", str(out), "--quiet"]) == 0
    with np.load(out) as z:
        got = np.concatenate([z["u"], z["v"], z["os"]], axis=1)
    assert got.shape == (6, 3, 42, 42)
    assert np.array_equal(got, video_features(frames, 3, S.face_landmarks()).numpy())  # same op, same pairs
    model = tmp_path / "model.pt"
    save_model(random_model(dtype=torch.float32), str(model))
    scores = tmp_path / "scores.npy"
    assert main(["predict", "--model", str(model), "--input", str(out), "--output", str(scores), "--quiet"]) == 0
    assert np.load(scores).shape[0] == 6


@pytest.mark.parametrize("remap", REMAPS)
def test_features_remap_option(video, tmp_path, remap):
    """--remap chooses the OpenCV the flow reproduces (default opencv4, MEAN's line); the file records it."""
    d, frames = video
    out = tmp_path / "feats.npz"
    extra = [] if remap == DEFAULT_REMAP else ["--remap", remap]
    assert main(["features", "--frames", str(d / "frames.npy"), "--landmarks", str(d / "lm.npy"), "--k", "3",
                 "--output", str(out), "--quiet", *extra]) == 0
    with np.load(out) as z:
        got = np.concatenate([z["u"], z["v"], z["os"]], axis=1)
        assert str(z["remap"]) == remap
    assert np.array_equal(got, video_features(frames, 3, S.face_landmarks(), remap=remap).numpy())
    other = [r for r in REMAPS if r != remap][0]
    assert not np.array_equal(got, video_features(frames, 3, S.face_landmarks(), remap=other).numpy())


def test_cli_remap_choices_are_the_ops():
    import argparse
    from meanspot_fused import cli
    parser = argparse.ArgumentParser()
    cli._add_remap_option(parser)
    (action,) = [a for a in parser._actions if a.dest == "remap"]
    assert tuple(action.choices) == REMAPS and action.default == DEFAULT_REMAP


@pytest.mark.parametrize("change,message", [
    (dict(frames="missing.npy"), "cannot read --frames"),
    (dict(k="9"), "k must be in"),
    (dict(k="0"), "k must be in"),
    (dict(landmarks="bad_lm.npy"), "68"),
    (dict(frames="float.npy"), "uint8"),
    (dict(output="out.txt"), ".npz"),
])
def test_features_bad_input_exits_2_and_writes_nothing(video, tmp_path, capsys, change, message):
    d, frames = video
    np.save(d / "bad_lm.npy", np.zeros((5, 2)))
    np.save(d / "float.npy", frames.astype(np.float32))
    args = dict(frames=str(d / "frames.npy"), landmarks=str(d / "lm.npy"), k="3", output=str(tmp_path / "o.npz"))
    for key, value in change.items():
        args[key] = value if key == "k" else (str(tmp_path / value) if key == "output" else str(d / value))
    argv = ["features", "--quiet"] + [x for key, value in args.items() for x in (f"--{key}", value)]
    assert main(argv) == 2
    assert message in capsys.readouterr().err
    assert os.listdir(tmp_path) == []


def test_evaluate_counts(tmp_path, capsys):
    (tmp_path / "pred" / "v1").mkdir(parents=True)
    (tmp_path / "pred" / "v1" / "intervals.csv").write_text("onset,offset,apex,score\n10,20,15,0.9\n50,60,55,0.8\n")
    (tmp_path / "gt.csv").write_text("video,onset,offset\nv1,11,20\nv1,100,110\nv2,5,9\n")
    out = tmp_path / "r.json"
    assert main(["evaluate", "--pred", str(tmp_path / "pred"), "--gt", str(tmp_path / "gt.csv"),
                 "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    # v1: [10, 20] vs [11, 20] IoU 10/11 -> TP; [50, 60] FP; [100, 110] FN. v2: no prediction -> FN.
    assert (result["tp"], result["fp"], result["fn"]) == (1, 1, 2)
    assert "total" in capsys.readouterr().out
    assert main(["evaluate", "--pred", str(tmp_path / "nope"), "--gt", str(tmp_path / "gt.csv")]) == 2
    assert result["strs"] is None  # no emotion labels on either side


def test_evaluate_strs_with_emotion_labels(tmp_path):
    (tmp_path / "pred" / "v1").mkdir(parents=True)
    (tmp_path / "pred" / "v1" / "intervals.csv").write_text(
        "onset,offset,apex,score,emotion\n10,20,15,0.9,positive\n50,60,55,0.8,negative\n100,110,105,0.7,surprise\n")
    (tmp_path / "gt.csv").write_text("video,onset,offset,emotion\nv1,11,20,positive\nv1,100,110,negative\n")
    out = tmp_path / "r.json"
    assert main(["evaluate", "--pred", str(tmp_path / "pred"), "--gt", str(tmp_path / "gt.csv"),
                 "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    # Two matched pairs: (positive, positive) and (surprise, negative). Spotting: TP 2, FP 1, FN 0 -> F1 0.8.
    # Classes positive, negative, surprise: precision (1, 0, 0) and recall (1, 0, 0) -> macro P = R = 1/3.
    assert (result["tp"], result["fp"], result["fn"]) == (2, 1, 0)
    assert result["f1"] == pytest.approx(0.8)
    assert result["recognition_f1"] == pytest.approx(1 / 3)
    assert result["strs"] == pytest.approx(0.8 / 3)


def test_evaluate_matching_option(tmp_path):
    # The case where the rules differ (tests/training/test_train_evaluation.py): MEGC 2 TP, MEAN's rule 1.
    (tmp_path / "pred" / "v").mkdir(parents=True)
    (tmp_path / "pred" / "v" / "intervals.csv").write_text("onset,offset,apex,score\n4,12,8,0.9\n8,14,11,0.8\n")
    (tmp_path / "gt.csv").write_text("video,onset,offset\nv,0,10\nv,4,13\n")
    counts = {}
    for rule in ("megc", "mean"):
        out = tmp_path / f"{rule}.json"
        assert main(["evaluate", "--pred", str(tmp_path / "pred"), "--gt", str(tmp_path / "gt.csv"), "--matching",
                     rule, "--json", str(out)]) == 0
        r = json.loads(out.read_text())
        counts[rule] = (r["tp"], r["fp"], r["fn"])
    assert counts == {"megc": (2, 0, 0), "mean": (1, 1, 1)}
