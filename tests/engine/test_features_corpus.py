"""`features` over many videos and `spot --save-features`: the feature files `train` reads.

The corpus of test_local (three short 128x128 synthetic face videos). Each
video's features.npz must hold exactly what :func:`video_features` computes
from the crops spot makes (bit for bit: same op, same pairs), be the same from
one process, a pool and Ray, and from `spot --save-features`; reruns skip
up-to-date folders; bad usage exits 2 and writes nothing.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from meanspot_fused.cli import main
from meanspot_fused.features import video_features
from meanspot_fused.io.feature_files import open_features
from meanspot_fused.io.frames import crop_faces

from test_local import corpus, manifest, serial, spot  # noqa: F401  (shared fixtures)


def features(corpus, out, *extra, inputs=None):
    return main(["features", *(inputs or [str(corpus / "videos")]), "--k", "3", "--landmarks",
                 str(corpus / "lm.npy"), "--out", str(out), "--quiet", *map(str, extra)])


def expected(corpus, i):
    """video_features of the crops spot makes of video i (128x128 input: MEAN's JPEG round trip only)."""
    frames = np.load(corpus / "videos" / f"v{i}.npy")
    crops = crop_faces(frames, None, jpeg_roundtrip=True)
    lm = np.load(corpus / "lm.npy")
    return video_features(torch.from_numpy(np.ascontiguousarray(crops)), 3, lm).numpy(), len(frames), lm


def read(path):
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


@pytest.fixture(scope="module")
def serial_features(corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("features")
    assert features(corpus, out) == 0
    return out


def test_features_of_videos_equal_video_features(corpus, serial_features):
    for i in range(3):
        folder = serial_features / f"v{i}"
        assert sorted(p.name for p in folder.iterdir()) == ["features.npz", "summary.json"]
        got = read(folder / "features.npz")
        want, frames, lm = expected(corpus, i)
        stacked = np.concatenate([got["u"], got["v"], got["os"]], axis=1)
        assert stacked.dtype == np.float32 and np.array_equal(stacked, want), i  # bit for bit: one op
        assert int(got["k"]) == 3 and int(got["frames"]) == frames and str(got["remap"]) == "opencv4"
        assert np.array_equal(got["landmarks"], lm)
        assert open_features(folder / "features.npz").n == frames - 3  # what predict and train read
        summary = json.loads((folder / "summary.json").read_text())
        assert summary["model"] is None and summary["intervals"] is None and summary["features"] is True
    assert sorted((r["video"], r["status"]) for r in manifest(serial_features)) == [
        ("v0", "done"), ("v1", "done"), ("v2", "done")]


def test_features_rerun_skips_and_pool_writes_the_same(corpus, serial_features, tmp_path):
    assert features(corpus, serial_features) == 0
    assert [r["status"] for r in manifest(serial_features)[3:]] == ["skipped"] * 3
    out = tmp_path / "pool"
    assert features(corpus, out, "--workers", 2, "--threads", 1) == 0
    for i in range(3):
        assert read(out / f"v{i}" / "features.npz").keys() == read(serial_features / f"v{i}" / "features.npz").keys()
        for key, value in read(out / f"v{i}" / "features.npz").items():
            assert np.array_equal(value, read(serial_features / f"v{i}" / "features.npz")[key]), (i, key)


def test_spot_save_features_writes_the_same_features(corpus, serial, serial_features, tmp_path):
    out = tmp_path / "spot"
    assert spot(corpus, out, "--save-features") == 0
    for i in range(3):
        for key, value in read(out / f"v{i}" / "features.npz").items():
            assert np.array_equal(value, read(serial_features / f"v{i}" / "features.npz")[key]), (i, key)
        # the spot outputs themselves do not change
        assert np.array_equal(np.load(out / f"v{i}" / "scores.npy"), np.load(serial / f"v{i}" / "scores.npy"))
    # --save-features changes what is written, so it is part of the run key: no skip against the plain run
    rows = manifest(out)
    assert spot(corpus, out) == 0 and [r["status"] for r in manifest(out)[len(rows):]] == ["done"] * 3


@pytest.mark.parametrize("argv, message", [
    (["--k", "3", "--out", "OUT"], "either INPUT videos"),
    (["VIDEOS", "--k", "3"], "--out DIR"),
    (["VIDEOS", "--out", "OUT"], "--k K"),
    (["VIDEOS", "--k", "3", "--out", "OUT", "--output", "x.npz"], "--output OUT.npz goes with --frames"),
    (["--frames", "F.npy", "--k", "3"], "--frames needs --output"),
    (["VIDEOS", "--k", "3", "--out", "OUT", "--workers", "0"], "workers must be an int >= 1"),
])
def test_features_bad_usage_exits_2_and_writes_nothing(corpus, tmp_path, capsys, argv, message):
    out = tmp_path / "out"
    argv = [str(corpus / "videos") if a == "VIDEOS" else str(out) if a == "OUT" else a for a in argv]
    assert main(["features", "--quiet", "--landmarks", str(corpus / "lm.npy"), *argv]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_features_on_ray_equal_the_local_engine(corpus, serial_features, tmp_path):
    ray = pytest.importorskip("ray", reason='needs Ray: pip install ".[ray]"')
    pytest.importorskip("ray.data")
    ray.init(num_cpus=2, object_store_memory=256 << 20, include_dashboard=False, log_to_driver=False)
    try:
        out = tmp_path / "ray"
        assert features(corpus, out, "--engine", "ray", "--workers", 2, "--threads", 1) == 0
    finally:
        ray.shutdown()
    for i in range(3):
        for key, value in read(out / f"v{i}" / "features.npz").items():
            assert np.array_equal(value, read(serial_features / f"v{i}" / "features.npz")[key]), (i, key)


def test_frame_pairs_are_saved_and_a_pair_outside_the_video_fails_it(corpus, tmp_path):
    from meanspot_fused.features import mean_features
    from meanspot_fused.pipeline import SpotSettings, spot_videos
    pairs = {"v0": [(2, 9), (0, 23)], "v1": [(5, 40)]}  # v0 has 24 frames, v1 30: (5, 40) is outside
    settings = SpotSettings(k=3, k_p=None, landmarks=str(corpus / "lm.npy"), save_features=True, pairs=pairs,
                            chunk=8)  # pairs spanning chunks
    rows = spot_videos([corpus / "videos" / "v0.npy", corpus / "videos" / "v1.npy"], None, tmp_path, settings,
                       log=lambda msg: None)
    assert [r["status"] for r in rows] == ["done", "failed"]
    assert "[40] outside the video's 30 frames" in rows[1]["error"]
    got = read(tmp_path / "v0" / "features.npz")
    crops = crop_faces(np.load(corpus / "videos" / "v0.npy"), None, jpeg_roundtrip=True)
    lm = torch.from_numpy(np.load(corpus / "lm.npy")).expand(2, -1, -1)
    want = mean_features(torch.from_numpy(crops[[2, 0]]), torch.from_numpy(crops[[9, 23]]), lm).numpy()
    assert np.array_equal(got["pairs"], [[2, 9], [0, 23]])
    assert np.array_equal(np.concatenate([got["pair_u"], got["pair_v"], got["pair_os"]], axis=1), want)
    # the (i, i + 3) maps are untouched by the extra pairs
    assert np.array_equal(got["u"], read(tmp_path / "v0" / "features.npz")["u"])
    assert not (tmp_path / "v1").exists()
