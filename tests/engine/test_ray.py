"""The Ray Data engine (meanspot_fused.engine.ray) on a local Ray: the local engine's outputs, resume, a
corrupt video, a killed actor. Skipped without Ray (pip install ".[ray]"); one local Ray per module
(num_cpus 2, a 256 MB object store), as PIPELINE.md section 7 advises for tests without a cluster."""
from __future__ import annotations

import os

import pytest

ray = pytest.importorskip("ray", reason='needs Ray: pip install ".[ray]"')
pytest.importorskip("ray.data")

from test_local import corpus, folder_files, manifest, serial, spot  # noqa: E402,F401  (shared fixtures)


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray.init(num_cpus=2, object_store_memory=256 << 20, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def ray_spot(corpus, out, *extra, inputs=None):
    return spot(corpus, out, "--engine", "ray", "--workers", 2, "--threads", 1, *extra, inputs=inputs)


def test_ray_writes_what_the_local_engine_writes_and_resumes(corpus, serial, tmp_path):
    out = tmp_path / "out"
    assert ray_spot(corpus, out) == 0
    for i in range(3):
        assert folder_files(out / f"v{i}") == folder_files(serial / f"v{i}"), i
    assert sorted((r["video"], r["status"]) for r in manifest(out)) == [("v0", "done"), ("v1", "done"),
                                                                      ("v2", "done")]
    assert ray_spot(corpus, out) == 0  # again: everything up to date
    assert [r["status"] for r in manifest(out)[3:]] == ["skipped"] * 3


def test_ray_corrupt_video_is_a_failed_row(corpus, tmp_path):
    bad = tmp_path / "bad.avi"
    bad.write_bytes(b"not a video at all")
    out = tmp_path / "out"
    assert ray_spot(corpus, out, inputs=[str(corpus / "videos" / "v0.npy"), str(bad)]) == 1
    rows = {r["video"]: r for r in manifest(out)}
    assert rows["bad"]["status"] == "failed" and "cannot open as a video" in rows["bad"]["error"]
    assert rows["v0"]["status"] == "done"
    assert sorted(os.listdir(out)) == ["manifest.jsonl", "v0"]


def test_ray_killed_actor_video_completes_exactly_once(corpus, serial, tmp_path, monkeypatch):
    markers = tmp_path / "markers"
    markers.mkdir()
    # Actors inherit the driver's environment on a local Ray started in this process.
    monkeypatch.setenv("MEANSPOT_FUSED_TEST_KILL_ONCE", str(markers))
    out = tmp_path / "out"
    assert ray_spot(corpus, out, inputs=[str(corpus / "videos" / "v1.npy")]) == 0
    assert (markers / "v1.kill").exists()  # the first attempt died
    assert [(r["video"], r["status"]) for r in manifest(out)] == [("v1", "done")]
    assert folder_files(out / "v1") == folder_files(serial / "v1")
    assert not [n for n in os.listdir(out) if n.startswith(".")]


def test_ray_video_that_always_kills_its_actor_fails_after_the_retries(corpus, tmp_path, monkeypatch):
    markers = tmp_path / "markers"
    markers.mkdir()
    (markers / "v2.always").write_text("")
    monkeypatch.setenv("MEANSPOT_FUSED_TEST_KILL_ONCE", str(markers))
    out = tmp_path / "out"
    code = ray_spot(corpus, out, "--retries", 1, inputs=[str(corpus / "videos" / "v0.npy"),
                                                       str(corpus / "videos" / "v2.npy")])
    assert code == 1
    rows = {r["video"]: r for r in manifest(out)}
    assert rows["v0"]["status"] == "done"
    assert rows["v2"]["status"] == "failed" and "died on each of 2 attempts" in rows["v2"]["error"]


def test_ray_gpu_run_on_a_cluster_without_gpus_fails_at_once(corpus, tmp_path, capsys):
    assert ray_spot(corpus, tmp_path / "out", "--device", "cuda") == 4  # a device problem, not a wait
    assert "the Ray cluster has no GPU" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
