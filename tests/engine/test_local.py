"""Corpus runs on this machine (meanspot_fused.engine): inputs, the skip rule, the manifest, worker processes.

Three short synthetic face videos (.npy stacks, 128x128, so no face detection)
and a random spot model. The pool runs must write what a serial run writes,
file for file (summary.json but for its timings), survive a corrupt video and
a killed worker without losing or duplicating a video, and resume.
"""
from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
import torch

from meanspot_fused import save_model
from meanspot_fused.cli import main
from meanspot_fused.engine.manifest import (Manifest, expand_inputs, input_fingerprint, is_up_to_date, run_key,
                                            settings_hash)
from meanspot_fused.errors import InputError
from meanspot_fused.pipeline import SpotSettings

pytest.importorskip("cv2")
pytest.importorskip("skimage")
pytest.importorskip("matplotlib")
from meanspot_fused.features import synthetic as S  # noqa: E402

from helpers import random_model  # noqa: E402

FILES = ["intervals.csv", "scores.npy", "scores.png", "summary.json"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    d = tmp_path_factory.mktemp("corpus")
    videos = d / "videos"
    videos.mkdir()
    for i, n in enumerate((24, 30, 27)):
        frames, _ = S.face_video(n, events=((6, "brow", 5, 2.0),), seed=30 + i)
        np.save(videos / f"v{i}.npy", frames)
    np.save(d / "lm.npy", S.face_landmarks())
    save_model(random_model(dtype=torch.float32, seed=21), str(d / "spot.pt"))
    return d


def spot(corpus, out, *extra, inputs=None):
    return main(["spot", *(inputs or [str(corpus / "videos")]), "--model", str(corpus / "spot.pt"), "--k", "3",
                 "--k-p", "3", "--landmarks", str(corpus / "lm.npy"), "--out", str(out), "--quiet",
                 *map(str, extra)])


def folder_files(folder):
    """The files of one video's folder, summary.json without its timings (they differ run to run)."""
    out = {}
    for name in FILES:
        data = (folder / name).read_bytes()
        if name == "summary.json":
            summary = json.loads(data)
            summary.pop("seconds")
            data = summary
        out[name] = data
    return out


def manifest(out):
    return Manifest(str(out)).rows()


# --- plain functions ---------------------------------------------------------------------------------------------

def test_expand_inputs(tmp_path):
    (tmp_path / "a.mp4").write_bytes(b"x")
    (tmp_path / "b.npy").write_bytes(b"x")
    (tmp_path / "notes.md").write_text("not a video")
    frames = tmp_path / "frames"
    frames.mkdir()
    (frames / "0001.png").write_bytes(b"x")
    (tmp_path / "empty").mkdir()
    lst = tmp_path / "list.txt"
    lst.write_text("# the corpus\nb.npy\n\nframes\n")
    assert expand_inputs([tmp_path]) == [str(tmp_path / "a.mp4"), str(tmp_path / "b.npy"), str(frames)]
    assert expand_inputs([frames]) == [str(frames)]  # a folder of images is one video
    assert expand_inputs([str(tmp_path / "*.npy"), str(tmp_path / "b.npy")]) == [str(tmp_path / "b.npy")]
    assert expand_inputs([lst]) == [str(tmp_path / "b.npy"), str(frames)]
    for bad, match in [(tmp_path / "none.mp4", "no such file or folder"), (tmp_path / "*.avi", "matches nothing"),
                       (tmp_path / "empty", "no videos")]:
        with pytest.raises(InputError, match=match):
            expand_inputs([bad])


def test_run_key_follows_settings_model_and_input(corpus, tmp_path):
    s = SpotSettings(k=3, k_p=3, landmarks=str(corpus / "lm.npy"))
    model = corpus / "spot.pt"
    h = settings_hash(s, model)
    assert h == settings_hash(SpotSettings(k=3, k_p=3, landmarks=str(corpus / "lm.npy"), batch_size=7, chunk=50),
                              model)  # speed settings do not change the numbers
    assert h != settings_hash(SpotSettings(k=3, k_p=3, p=0.6, landmarks=str(corpus / "lm.npy")), model)
    assert h != settings_hash(SpotSettings(k=3, k_p=3, landmarks=str(corpus / "lm.npy"), remap="opencv5"), model)
    assert h != settings_hash(s, model, dataset="CASME_sq")
    other = tmp_path / "other.pt"
    save_model(random_model(dtype=torch.float32, seed=22), str(other))
    assert h != settings_hash(s, other)
    video = tmp_path / "v.npy"
    np.save(video, np.zeros((5, 128, 128), np.uint8))
    key = run_key(video, h)
    assert key["input"] == input_fingerprint(str(video))
    folder = tmp_path / "out"
    folder.mkdir()
    assert not is_up_to_date(str(folder), key)
    (folder / "summary.json").write_text(json.dumps({"run_key": key}))
    assert is_up_to_date(str(folder), key)
    os.utime(video, ns=(1, 1))
    assert not is_up_to_date(str(folder), run_key(video, h))


# --- the engine --------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def serial(corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("serial")
    assert spot(corpus, out) == 0
    return out


def test_workers_write_what_a_serial_run_writes(corpus, serial, tmp_path):
    out = tmp_path / "pool"
    assert spot(corpus, out, "--workers", 2, "--threads", 1) == 0
    for i in range(3):
        assert folder_files(out / f"v{i}") == folder_files(serial / f"v{i}"), i
    rows = manifest(out)
    assert sorted(r["video"] for r in rows) == ["v0", "v1", "v2"] and all(r["status"] == "done" for r in rows)


@pytest.mark.parametrize("workers", [1, 2])
def test_rerun_skips_what_is_up_to_date_and_redoes_the_rest(corpus, tmp_path, workers):
    videos = tmp_path / "videos"  # a copy: this test touches an input
    shutil.copytree(corpus / "videos", videos)
    out = tmp_path / "out"

    def run(*extra):
        return spot(corpus, out, "--workers", workers, *extra, inputs=[str(videos)])

    assert run() == 0
    stamp = {i: (out / f"v{i}" / "summary.json").stat().st_mtime_ns for i in range(3)}
    assert run() == 0  # nothing changed: all skipped
    assert [r["status"] for r in manifest(out)[3:]] == ["skipped"] * 3
    assert all((out / f"v{i}" / "summary.json").stat().st_mtime_ns == stamp[i] for i in range(3))
    os.utime(videos / "v1.npy")  # the input changed: only v1 again
    assert run() == 0
    assert sorted((r["video"], r["status"]) for r in manifest(out)[6:]) == [("v0", "skipped"), ("v1", "done"),
                                                                            ("v2", "skipped")]
    assert run("--p", 0.6) == 0  # other settings: all again
    assert [r["status"] for r in manifest(out)[9:]] == ["done"] * 3
    assert run("--p", 0.6, "--force") == 0
    assert [r["status"] for r in manifest(out)[12:]] == ["done"] * 3


@pytest.mark.parametrize("workers", [1, 2])
def test_corrupt_video_is_reported_and_the_others_finish(corpus, tmp_path, workers, capsys):
    bad = tmp_path / "bad.avi"
    bad.write_bytes(b"not a video at all")
    out = tmp_path / "out"
    code = spot(corpus, out, "--workers", workers, inputs=[str(corpus / "videos" / "v0.npy"), str(bad),
                                                         str(corpus / "videos" / "v2.npy")])
    assert code == 1  # some failed
    rows = {r["video"]: r for r in manifest(out)}
    assert rows["bad"]["status"] == "failed" and "cannot open as a video" in rows["bad"]["error"]
    assert rows["v0"]["status"] == rows["v2"]["status"] == "done"
    assert sorted(os.listdir(out)) == ["manifest.jsonl", "v0", "v2"]  # nothing half-written
    assert "bad: " in capsys.readouterr().err


def test_killed_worker_video_completes_exactly_once(corpus, serial, tmp_path, monkeypatch):
    markers = tmp_path / "markers"
    markers.mkdir()
    monkeypatch.setenv("MEANSPOT_FUSED_TEST_KILL_ONCE", str(markers))  # each video's first attempt dies
    out = tmp_path / "out"
    assert spot(corpus, out, "--workers", 2, "--threads", 1) == 0
    assert sorted(p.name for p in markers.iterdir()) == ["v0.kill", "v1.kill", "v2.kill"]
    rows = manifest(out)
    assert sorted(r["video"] for r in rows) == ["v0", "v1", "v2"] and all(r["status"] == "done" for r in rows)
    for i in range(3):
        assert folder_files(out / f"v{i}") == folder_files(serial / f"v{i}"), i
    assert not [n for n in os.listdir(out) if n.startswith(".")]  # no partial folder left


def test_a_video_that_always_kills_its_worker_fails_after_the_retries(corpus, tmp_path, monkeypatch):
    from meanspot_fused.engine import local
    markers = tmp_path / "markers"
    markers.mkdir()
    for name in ("v0.always", "v1.always"):  # every attempt at these videos dies
        (markers / name).write_text("")
    monkeypatch.setenv(local._KILL_ONCE, str(markers))
    out = tmp_path / "out"
    rows = local.run_corpus([str(corpus / "videos" / "v0.npy"), str(corpus / "videos" / "v1.npy")],
                            str(corpus / "spot.pt"), str(out), SpotSettings(k=3, k_p=3,
                                                                            landmarks=str(corpus / "lm.npy")),
                            workers=2, threads=1, retries=1, log=lambda msg: None)
    assert [r["status"] for r in rows] == ["failed", "failed"]
    assert all("died 2 times" in r["error"] for r in rows)
    assert not out.exists()  # nothing written, not even a manifest


def test_bad_engine_arguments(corpus, tmp_path, capsys):
    assert spot(corpus, tmp_path / "o", "--workers", 0) == 2
    assert "workers must be an int >= 1, got 0" in capsys.readouterr().err


def test_leftovers_of_a_killed_run_are_removed(corpus, serial, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(serial, out)
    (out / ".v0.partial-abc123").mkdir()  # a run killed while writing v0
    (out / ".v0.partial-abc123" / "scores.npy").write_bytes(b"half")
    (out / ".keep-me").write_text("not ours")
    assert spot(corpus, out) == 0
    assert sorted(n for n in os.listdir(out) if n.startswith(".")) == [".keep-me"]


def test_ray_engine_without_ray_names_the_extra(corpus, tmp_path, capsys, monkeypatch):
    import sys
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray fails as if it were not installed
    assert spot(corpus, tmp_path / "out", "--engine", "ray") == 3
    assert 'pip install "meanspot_fused[ray]"' in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_set_threads_sets_torch_opencv_and_the_decoder(tmp_path):
    import cv2

    from meanspot_fused.engine.local import set_threads
    from meanspot_fused.io import frames as F
    path = str(tmp_path / "clip.avi")
    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"MJPG"), 25, (64, 48))
    rng = np.random.default_rng(0)
    for _ in range(12):
        writer.write(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8))
    writer.release()
    before = (torch.get_num_threads(), cv2.getNumThreads(), F._decoder_threads)
    try:
        default = np.concatenate(list(F.iter_frames(path, chunk=5)))
        set_threads(1)
        assert (torch.get_num_threads(), cv2.getNumThreads(), F._decoder_threads) == (1, 1, 1)
        assert np.array_equal(np.concatenate(list(F.iter_frames(path, chunk=5))), default)  # the same frames
    finally:
        torch.set_num_threads(before[0])
        cv2.setNumThreads(before[1])
        F.set_decoder_threads(before[2])


def test_each_gpu_worker_gets_its_own_gpu_and_cpu_workers_none(monkeypatch):
    from meanspot_fused.engine import local
    assert [local.worker_gpu(i, ["3", "5"]) for i in range(5)] == ["3", "5", "3", "5", "3"]
    assert local.worker_gpu(0, []) == ""
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2, 7")
    assert local.visible_gpus() == ["2", "7"]
    seen = []
    monkeypatch.setattr("meanspot_fused.pipeline.load_spot_model",
                        lambda path, fuse, device: seen.append(os.environ["CUDA_VISIBLE_DEVICES"]))
    monkeypatch.setattr(local, "set_threads", lambda threads: None)
    import multiprocessing
    counter = multiprocessing.Value("i", 0)
    for device in ("cuda", "cuda", "cuda", "cpu"):
        local._init_worker(None, SpotSettings(k=3, k_p=3, device=device), "out", None, 1, None, ["2", "7"], counter)
    assert seen == ["2", "7", "2", ""]  # the env var as each worker's CUDA initialisation will read it
