"""`meanspot-fused train` end to end on a synthetic corpus: video -> features -> train -> spot.

Four subjects with two synthetic face videos each (``features.synthetic``:
brow raises and mouth movements of known frames, labelled surprise and
positive), features made by the ``features`` command with the annotations'
(onset, apex) pairs, then MEAN's LOSO protocol at CASME_sq's settings (k 3,
every peak) with fewer epochs. Checked: training improves the pooled held-out
F1 over the untrained network (the same run with 0 epochs); a run interrupted
after a fold and resumed equals an uninterrupted one, bit for bit; each fold's
model reloads from both formats and spots with the CLI; bad inputs exit 2 and
write nothing.
"""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch

from meanspot_fused.cli import main
from meanspot_fused.io.checkpoints import load_model

pytest.importorskip("cv2")
pytest.importorskip("skimage")
pytest.importorskip("matplotlib")
from meanspot_fused.features import synthetic as S  # noqa: E402
from meanspot_fused.training.run import TrainSettings, train_run  # noqa: E402

SUBJECTS = ("s1", "s2", "s3", "s4")
FRAMES = 90
EMOTION = {"brow": "surprise", "mouth": "positive"}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Videos, landmarks, annotations (1-based frame numbers) and the features the CLI makes of them."""
    d = tmp_path_factory.mktemp("train_corpus")
    (d / "videos").mkdir()
    rng = np.random.default_rng(5)
    rows = []
    for s, subject in enumerate(SUBJECTS):
        for v in range(2):
            onsets = (int(rng.integers(8, 30)), int(rng.integers(50, 72)))
            kinds = ("brow", "mouth") if (s + v) % 2 == 0 else ("mouth", "brow")
            events = [(o, kind, 8, 2.5) for o, kind in zip(onsets, kinds)]
            frames, truth = S.face_video(FRAMES, events=events, seed=100 + 10 * s + v)
            name = f"{subject}_v{v}"
            np.save(d / "videos" / f"{name}.npy", frames)
            for (onset, offset, kind), (_, _, length, _) in zip(truth, events):
                rows.append(dict(subject=subject, video=name, onset=onset + 1, apex=onset + length // 2 + 1,
                                 offset=offset + 1, type="micro-expression", emotion=EMOTION[kind]))
    with open(d / "annotations.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    np.save(d / "lm.npy", S.face_landmarks())
    assert main(["features", str(d / "videos"), "--dataset", "CASME_sq", "--landmarks", str(d / "lm.npy"),
                 "--annotations", str(d / "annotations.csv"), "--out", str(d / "features"), "--quiet"]) == 0
    return d


def settings(**kw):
    base = dict(dataset="CASME_sq", spot_epochs=6, recog_epochs=4, seed=3)
    base.update(kw)
    return TrainSettings(**base)


def run(corpus, out, **kw):
    return train_run(corpus / "annotations.csv", corpus / "features", out, settings(**kw), log=lambda msg: None)


@pytest.fixture(scope="module")
def trained(corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    torch.set_num_threads(1)  # bitwise reproducibility is per thread count
    return out, run(corpus, out)


def test_features_hold_the_recognition_pairs(corpus):
    with np.load(corpus / "features" / "s1_v0" / "features.npz") as z:
        assert z["u"].shape == (FRAMES - 3, 1, 42, 42) and z["pairs"].shape == (2, 2)
        assert z["pair_u"].shape == (2, 1, 42, 42)


def test_training_improves_held_out_f1_over_the_untrained_network(corpus, trained, tmp_path):
    out, summary = trained
    untrained = run(corpus, tmp_path / "untrained", spot_epochs=0, recog_epochs=0)
    f1, f1_0 = summary["results"]["spotting"]["f1"], untrained["results"]["spotting"]["f1"]
    print(f"held-out F1: trained {f1:.3f}, untrained {f1_0:.3f}")
    # The margin: at least 0.25 F1 better (measured 2026-12-05: see the README's training section).
    assert f1 >= f1_0 + 0.25, (f1, f1_0)
    assert summary["complete"] and summary["folds_done"] == list(SUBJECTS)
    assert summary["results"]["spotting"]["tp"] + summary["results"]["spotting"]["fn"] == 16  # 8 videos x 2
    assert (out / "summary.md").read_text().startswith("# Training run: CASME_sq")
    assert not (out / ".cache").exists()  # removed once every fold is done


def test_resumed_run_equals_an_uninterrupted_one(corpus, trained, tmp_path):
    out_full, full = trained
    out = tmp_path / "resumed"
    torch.set_num_threads(1)
    first = train_run(corpus / "annotations.csv", corpus / "features", out, settings(), log=lambda msg: None,
                      stop_after=1)
    assert first["folds_done"] == ["s1"] and not first["complete"]
    with pytest.raises(Exception, match="already holds a training run"):
        run(corpus, out)
    resumed = train_run(corpus / "annotations.csv", corpus / "features", out, settings(), resume=True,
                        log=lambda msg: None)
    assert resumed["results"] == full["results"]
    for fold in ("00_s1", "01_s2", "02_s3", "03_s4"):
        a = torch.load(out / "folds" / fold / "model.pt", weights_only=True)["state_dict"]
        b = torch.load(out_full / "folds" / fold / "model.pt", weights_only=True)["state_dict"]
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), fold  # bit for bit
    with pytest.raises(Exception, match="other settings"):
        train_run(corpus / "annotations.csv", corpus / "features", out, settings(seed=4), resume=True,
                  log=lambda msg: None)


def test_fold_models_load_from_both_formats_and_spot(corpus, trained, tmp_path):
    out, _ = trained
    fold = out / "folds" / "00_s1"
    pt, keras = load_model(fold / "model.pt"), load_model(fold / "model.hdf5")
    assert pt.head_names == ("spot", "recog") and keras.head_names == ("spot", "recog")
    for name, t in pt.state_dict().items():
        if not name.endswith("num_batches_tracked"):  # torch's counter; Keras files have none
            assert torch.equal(t, keras.state_dict()[name]), name  # float32 both ways: exact
    assert main(["spot", str(corpus / "videos" / "s1_v0.npy"), "--model", str(fold / "model.hdf5"), "--k", "3",
                 "--k-p", "4", "--landmarks", str(corpus / "lm.npy"), "--out", str(tmp_path / "spot"),
                 "--quiet"]) == 0
    spotted = np.load(tmp_path / "spot" / "s1_v0" / "scores.npy")
    saved = np.load(fold / "scores" / "s1_s1_v0.npz")["spot"]
    # spot recomputes the features from the video: the same op on the same crops, the same fused network
    np.testing.assert_allclose(spotted, saved, rtol=0, atol=1e-5)
    fold_info = json.loads((fold / "fold.json").read_text())
    assert fold_info["recognition_trained"] and len(fold_info["history"]) == 6 + 4
    assert (fold / "plots" / "s1_s1_v0.png").stat().st_size > 0


@pytest.mark.parametrize("change, message", [
    ("missing_video", "no feature file for 1 annotated video"),
    ("outside", "lie outside the video's 90 frames"),
    ("no_pairs", "lacks the (onset, apex)"),
    ("bad_fix", "unknown name"),
    ("other_k", "holds pairs at distance k=3, the run uses k=4"),
])
def test_bad_inputs_exit_2_and_write_nothing(corpus, tmp_path, capsys, change, message):
    ann = tmp_path / "ann.csv"
    text = (corpus / "annotations.csv").read_text()
    argv = ["train", str(ann), str(corpus / "features"), "--out", str(tmp_path / "run"), "--dataset", "CASME_sq",
            "--quiet"]
    if change == "missing_video":
        text += "s4,s4_v9,10,12,14,micro-expression,positive\n"
    elif change == "outside":
        lines = text.splitlines()
        fields = lines[1].split(",")
        fields[4] = "95"
        text = "\n".join([lines[0], ",".join(fields)] + lines[2:]) + "\n"
    elif change == "no_pairs":
        lines = text.splitlines()
        fields = lines[1].split(",")
        fields[3] = str(int(fields[3]) + 1)  # another apex: a pair the features were not made for
        text = "\n".join([lines[0], ",".join(fields)] + lines[2:]) + "\n"
    elif change == "bad_fix":
        argv += ["--fix", "everything"]
    elif change == "other_k":
        argv += ["--k", "4"]
    ann.write_text(text)
    assert main(argv) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "run" / "folds").exists()


def test_each_fix_reaches_its_option(corpus, tmp_path, monkeypatch):
    """Every --fix name switches the option TRAINING.md section 9 names, and nothing else; default: MEAN's."""
    from meanspot_fused.training import run as R
    seen = {}
    real_plan, real_eval, real_rules = R.plan_folds, R.MeanEvaluation, R.apply_mean_rules
    monkeypatch.setattr(R, "plan_folds", lambda *a, **kw: seen.setdefault("plan", kw) and real_plan(*a, **kw))
    monkeypatch.setattr(R, "MeanEvaluation", lambda *a, **kw: seen.setdefault("eval", kw) and real_eval(*a, **kw))
    monkeypatch.setattr(R, "apply_mean_rules", lambda *a, **kw: seen.setdefault("rules", kw) and real_rules(*a, **kw))
    expected = {
        "optimizer-per-fold": ("config", "fresh_optimizer_per_fold"),
        "recog-folds": ("plan", "recognition_by_subject"),
        "others-shift": ("eval", "align_analysis_lists"),
        "no-peak-dummy": ("eval", "no_peak_dummy"),  # the option is "keep the dummy": fixed means False
        "downsample-guard": ("plan", "guard_counts_negatives"),
        "k-p-train-only": ("plan", "k_p_excludes_test_subject"),
        "emotion-pairing": ("rules", "emotion_pairing"),
        "uar-nan": ("eval", "uar_nan_to_zero"),
    }
    assert set(expected) == set(R.FIXES)

    def options(fixes):
        seen.clear()
        s = settings(fixes=fixes)
        corpus_ = R.load_corpus(corpus / "annotations.csv", corpus / "features", s, str(tmp_path / "cache"))
        R._Run(corpus_, s, torch.device("cpu"))
        return {**{f"{part}.{k}": v for part in ("plan", "eval", "rules") for k, v in seen[part].items()},
                "config.fresh_optimizer_per_fold": s.config().fresh_optimizer_per_fold}

    mean = options([])
    assert (mean["plan.recognition_by_subject"], mean["eval.no_peak_dummy"], mean["rules.emotion_pairing"],
            mean["config.fresh_optimizer_per_fold"]) == (False, True, "mean", False)
    for name, (where, key) in expected.items():
        got = options([name])
        changed = {k for k in got if got[k] != mean[k]}
        assert changed == {f"{where}.{key}"}, (name, changed)
