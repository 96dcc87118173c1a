"""``meanspot-fused predict``: end to end through ``main([...])`` and once through ``python -m``."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: shared helpers
import keras_files as kf  # noqa: E402

import meanspot_fused  # noqa: E402
from meanspot_fused.cli import main  # noqa: E402
from meanspot_fused.io.checkpoints import load_model, save_model  # noqa: E402
from meanspot_fused.io.errors import PredictError  # noqa: E402
from meanspot_fused.io.feature_files import open_features  # noqa: E402
from meanspot_fused.network.reference import MeanSpot  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
N, BATCH = 7, 3  # several batches and a short last one
CLASSES = 4


@pytest.fixture(scope="module")
def model():
    return kf.random_meanspot(1, cbam="all", heads=("spot", "recog"), recog_classes=CLASSES)


@pytest.fixture(scope="module")
def stacked():
    """MEAN's stacked features (N, 42, 42, 3), channels u, v, os."""
    return np.random.default_rng(0).random((N, 42, 42, 3), dtype=np.float32)


@pytest.fixture(scope="module")
def expected(model, stacked):
    maps = [torch.from_numpy(np.ascontiguousarray(stacked[..., c][:, None])).double() for c in range(3)]
    with torch.no_grad():
        spot, recog = model.double()(*maps)
    model.float()
    return {"spot": spot.numpy(), "recog": recog.numpy()}


@pytest.fixture
def model_file(tmp_path, model):
    path = tmp_path / "model.pt"
    save_model(model, path)
    return path


def write_features(folder: Path, layout: str, x: np.ndarray) -> Path:
    u, v, o = (x[..., c] for c in range(3))
    path = folder / ("features.npy" if layout == "stacked-npy" else "features.npz")
    if layout == "nchw":
        np.savez(path, u=u[:, None], v=v[:, None], os=o[:, None])
    elif layout == "nhwc":  # compressed: streamed through zlib
        np.savez_compressed(path, u=u[..., None], v=v[..., None], os=o[..., None])
    elif layout == "stacked":
        np.savez(path, x=x)
    elif layout == "stacked-sole":
        np.savez(path, features=x)
    elif layout == "stacked-npy":
        np.save(path, x)
    return path


def run(*args) -> int:
    return main(["predict", *map(str, args), "--quiet"])


def fuse_flags(fused: bool):
    if fused and not callable(getattr(meanspot_fused, "fuse", None)):
        pytest.skip("meanspot_fused.fuse is not available")
    return [] if fused else ["--no-fuse"]


@pytest.mark.parametrize("fused", [True, False], ids=["fused", "reference"])
@pytest.mark.parametrize("layout", ["nchw", "nhwc", "stacked", "stacked-sole", "stacked-npy"])
def test_input_layouts(tmp_path, model_file, stacked, expected, layout, fused):
    features = write_features(tmp_path, layout, stacked)
    out = tmp_path / "scores.npz"
    assert run("--model", model_file, "--input", features, "--output", out, "--batch-size", BATCH,
               *fuse_flags(fused)) == 0
    scores = np.load(out)
    assert sorted(scores.files) == ["recog", "spot"]
    for head in ("spot", "recog"):
        assert scores[head].dtype == np.float32 and scores[head].shape == expected[head].shape
        np.testing.assert_allclose(scores[head], expected[head], rtol=0, atol=1e-5)


def test_npy_output_of_one_head_in_float64(tmp_path, model_file, stacked, expected):
    out = tmp_path / "recog.npy"
    assert run("--model", model_file, "--input", write_features(tmp_path, "nchw", stacked), "--output", out,
               "--head", "recog", "--dtype", "float64", "--no-fuse") == 0
    scores = np.load(out)
    assert scores.dtype == np.float64
    np.testing.assert_allclose(scores, expected["recog"], rtol=0, atol=1e-12)


@pytest.mark.parametrize("layout", ["keras3-zip", "tf2-weights"])
def test_keras_model_file_and_npy_output(tmp_path, stacked, layout):
    model = kf.random_meanspot(2, cbam="branches")  # spot only: a .npy needs no --head
    path = kf.write(kf.meanspot_graph(model), layout, tmp_path)
    out = tmp_path / "spot.npy"
    assert run("--model", path, "--input", write_features(tmp_path, "stacked", stacked), "--output", out,
               "--no-fuse") == 0
    maps = [torch.from_numpy(np.ascontiguousarray(stacked[..., c][:, None])) for c in range(3)]
    with torch.no_grad():
        np.testing.assert_allclose(np.load(out), model(*maps).numpy(), rtol=0, atol=1e-6)


def test_python_dash_m(tmp_path, model_file, stacked, expected):
    out = tmp_path / "scores.npz"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p))
    proc = subprocess.run([sys.executable, "-m", "meanspot_fused", "predict", "--model", str(model_file),
                           "--input", str(write_features(tmp_path, "nhwc", stacked)), "--output", str(out),
                           "--batch-size", str(BATCH), "--no-fuse"],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "wrote spot, recog for 7 samples" in proc.stderr
    np.testing.assert_allclose(np.load(out)["spot"], expected["spot"], rtol=0, atol=1e-5)


def test_nan_input_warns_and_still_writes(tmp_path, model_file, stacked, capsys):
    x = stacked.copy()
    x[4, 10, 10, 2] = np.nan
    out = tmp_path / "scores.npz"
    assert main(["predict", "--model", str(model_file), "--input", str(write_features(tmp_path, "stacked", x)),
                 "--output", str(out), "--no-fuse", "--batch-size", str(BATCH)]) == 0
    err = capsys.readouterr().err
    assert "warning" in err and "first in sample 4" in err
    spot = np.load(out)["spot"]
    assert np.isnan(spot[4]).all() and np.isfinite(np.delete(spot, 4, axis=0)).all()


def _bad_features(folder: Path, case: str, x: np.ndarray) -> Path:
    path = folder / "features.npz"
    u, v, o = (x[..., c][:, None] for c in range(3))
    if case == "wrong shape":
        np.savez(path, u=u[:, :, :, :41], v=v, os=o)
    elif case == "missing key":
        np.savez(path, u=u, v=v)
    elif case == "mismatched N":
        np.savez(path, u=u, v=v[:-1], os=o)
    elif case == "not numeric":
        np.savez(path, u=u.astype(bool), v=v, os=o)
    elif case == "stacked wrong channels":
        np.savez(path, x=x[..., :2])
    elif case == "no arrays":
        np.savez(path, a=u, b=v)
    elif case == "not an array file":
        path.write_text("u,v,os\n1,2,3\n")
    elif case == "missing file":
        path = folder / "nothing.npz"
    return path


BAD = {
    "wrong shape": "has shape",
    "missing key": "not ['os']",
    "mismatched N": "same number of samples",
    "not numeric": "dtype bool",
    "stacked wrong channels": "stacked",
    "no arrays": "expected arrays u, v and os",
    "not an array file": "neither an .npz nor an .npy",
    "missing file": "does not exist",
}


def _assert_failed_cleanly(rc, capsys, folder: Path, before: set, message: str, code: int = 2):
    assert rc == code
    err = capsys.readouterr().err
    assert "error:" in err and message in err, err
    assert set(os.listdir(folder)) == before, "a (temporary) output file was left behind"


@pytest.mark.parametrize("case", BAD)
def test_bad_features(tmp_path, model_file, stacked, capsys, case):
    features = _bad_features(tmp_path, case, stacked)
    before = set(os.listdir(tmp_path))
    rc = run("--model", model_file, "--input", features, "--output", tmp_path / "scores.npz", "--no-fuse")
    _assert_failed_cleanly(rc, capsys, tmp_path, before, BAD[case])


@pytest.mark.parametrize("case, args, message", [
    ("missing model", ["--model", "{tmp}/nothing.pt"], "does not exist"),
    ("not a model", ["--model", "{tmp}/features.npz"], "not a Keras file"),
    ("bad output suffix", ["--output", "{tmp}/scores.csv"], "expected a .npy or .npz"),
    ("output folder missing", ["--output", "{tmp}/no/scores.npz"], "does not exist"),
    ("two heads into .npy", ["--output", "{tmp}/scores.npy"], "choose one with --head"),
    ("bad batch size", ["--batch-size", "0"], "--batch-size"),
    ("bad device", ["--device", "tpu"], "--device"),
])
def test_bad_options_and_models(tmp_path, model_file, stacked, capsys, case, args, message):
    features = write_features(tmp_path, "nchw", stacked)
    opts = {"--model": str(model_file), "--input": str(features), "--output": str(tmp_path / "scores.npz")}
    opts.update(zip(args[::2], (a.format(tmp=tmp_path) for a in args[1::2])))
    before = set(os.listdir(tmp_path))
    rc = run(*[t for kv in opts.items() for t in kv], "--no-fuse")
    _assert_failed_cleanly(rc, capsys, tmp_path, before, message)


def test_cuda_unavailable_is_a_clear_error(tmp_path, model_file, stacked, capsys):
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    features = write_features(tmp_path, "nchw", stacked)
    before = set(os.listdir(tmp_path))
    rc = run("--model", model_file, "--input", features, "--output", tmp_path / "scores.npz", "--device", "cuda")
    # An absent device is exit code 4 (meanspot_fused.errors.DeviceError).
    _assert_failed_cleanly(rc, capsys, tmp_path, before, "CUDA is not available", code=4)


def test_failure_mid_run_leaves_nothing(tmp_path, model_file, stacked, capsys, monkeypatch):
    calls = []
    forward = MeanSpot.forward

    def failing_forward(self, *args):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("simulated failure in batch 2")
        return forward(self, *args)
    monkeypatch.setattr(MeanSpot, "forward", failing_forward)
    features = write_features(tmp_path, "nchw", stacked)
    out = tmp_path / "scores.npz"
    out.write_bytes(b"previous result")  # an existing output stays untouched
    before = set(os.listdir(tmp_path))
    rc = run("--model", model_file, "--input", features, "--output", out, "--no-fuse", "--batch-size", BATCH)
    assert rc == 1 and "simulated failure" in capsys.readouterr().err
    assert set(os.listdir(tmp_path)) == before and out.read_bytes() == b"previous result"


def test_help_and_usage_errors(capsys):
    assert main(["predict", "--help"]) == 0
    assert main(["predict"]) == 2  # required options missing
    assert main([]) == 2
    capsys.readouterr()


def test_save_and_load_model(tmp_path, model):
    path = tmp_path / "model.pt"
    save_model(model, path)
    loaded = load_model(path)
    assert loaded.config() == model.config() and not loaded.training
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    torch.save({"weights": torch.zeros(3)}, tmp_path / "other.pt")
    with pytest.raises(PredictError, match="not a MeanSpot checkpoint"):
        load_model(tmp_path / "other.pt")


def test_features_are_read_batch_by_batch(tmp_path, stacked):
    with open_features(write_features(tmp_path, "nhwc", stacked)) as feats:
        assert (feats.n, feats.layout) == (N, "u/v/os")
        u, v, o = feats.batch(0, 4)
        assert u.shape == (4, 1, 42, 42)
        np.testing.assert_array_equal(o[:, 0], stacked[:4, :, :, 2])
        u, _, _ = feats.batch(4, N)
        np.testing.assert_array_equal(u[:, 0], stacked[4:, :, :, 0])
