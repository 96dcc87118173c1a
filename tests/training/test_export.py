"""Exported trained models: checkpoint and Keras HDF5 round trips, MEAN's file layout, fuse and predict."""
from __future__ import annotations

import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: shared helpers
from helpers import KERAS_CASES  # noqa: E402

import meanspot_fused  # noqa: E402
from meanspot_fused.errors import InputError  # noqa: E402
from meanspot_fused.io.checkpoints import load_model  # noqa: E402
from meanspot_fused.io.keras import load_keras  # noqa: E402
from meanspot_fused.network.reference import MeanSpot  # noqa: E402
from meanspot_fused.predict import predict_file  # noqa: E402
from meanspot_fused.training.export import export_model, save_keras3_weights, save_keras_weights  # noqa: E402
from meanspot_fused.training.keras_semantics import keras_init_  # noqa: E402
from meanspot_fused.training.loop import Samples, TrainConfig, Trainer  # noqa: E402

# The fused path runs the same float32 arithmetic in another order (folded BN, fused kernels):
# agreement is float32 rounding of O(1) outputs through five layers, as in tests/io/test_keras.py.
FUSED_TOL = 1e-5


def _trained(cbam: str, heads) -> MeanSpot:
    """A briefly trained model (non-trivial BN statistics and weights) with the given heads."""
    rng = np.random.default_rng(0)
    maps = lambda n: [rng.random((n, 1, 42, 42), dtype=np.float32) for _ in range(3)]  # noqa: E731
    y = (rng.random(40) < 0.2).astype(np.float32)
    recog = Samples(*maps(8), np.eye(3, dtype=np.float32)[rng.integers(0, 3, 8)]) if "recog" in heads else None
    trainer = Trainer(cbam, 3, TrainConfig(spot_epochs=1, recog_epochs=1, seed=1))
    return trainer.train_fold(0, Samples(*maps(40), y), recog).model


def _inputs(n=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.rand(n, 1, 42, 42, generator=g) for _ in range(3)]


def _same(a: MeanSpot, b: MeanSpot):
    assert a.config() == b.config()
    sa, sb = a.state_dict(), b.state_dict()
    for k in sa:
        if not k.endswith("num_batches_tracked"):
            assert torch.equal(sa[k].cpu(), sb[k].cpu()), k


@pytest.mark.parametrize("cbam", ["none", "all"])
@pytest.mark.parametrize("heads", [("spot",), ("spot", "recog")])
def test_round_trips_are_exact(tmp_path, cbam, heads):
    model = _trained(cbam, heads)
    paths = export_model(model, tmp_path, "s1")
    # no temporary files left
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s1.hdf5", "s1.pt", "s1.weights.h5"]
    _same(model, load_model(paths["checkpoint"]))
    _same(model, load_keras(paths["keras"]))
    _same(model, load_keras(paths["keras3"], cbam=cbam))
    _same(model, load_model(paths["keras"]))


def test_keras_file_has_the_layout_of_mean_published_weights(tmp_path):
    """Layer and weight names as MEAN's define_model makes them, in model.layers order (TF 2.4 load_weights)."""
    model = keras_init_(MeanSpot(cbam="none", heads=("spot", "recog")), torch.Generator().manual_seed(0))
    path = tmp_path / "s1.hdf5"
    save_keras_weights(model, path)
    with h5py.File(path, "r") as f:
        names = [n.decode() for n in f.attrs["layer_names"]]
        weighted = [n for n in names if len(f[n].attrs["weight_names"])]
        assert f.attrs["keras_version"] == "2.4.0" and f.attrs["backend"] == "tensorflow"
        assert [n.decode() for n in f["conv2d_3"].attrs["weight_names"]] == ["conv2d_3/kernel:0", "conv2d_3/bias:0"]
        assert f["spot/spot/kernel:0"].shape == (392, 1) and f["conv2d/conv2d/kernel:0"].shape == (5, 5, 1, 3)
    assert weighted == ["conv2d", "conv2d_1", "conv2d_2", "batch_normalization", "batch_normalization_1",
                        "batch_normalization_2", "conv2d_3", "conv2d_4", "spot", "recog"]
    published = KERAS_CASES / "mean_weights" / "CASME_sq" / "spot_recog" / "s1.hdf5"
    if published.is_file():
        # Same layer classes in the same order, so TF 2.4's positional load_weights pairs them alike.
        with h5py.File(published, "r") as f:
            theirs = [n.decode() for n in f.attrs["layer_names"]]
            shapes = [[f[n][w.decode()].shape for w in f[n].attrs["weight_names"]] for n in theirs]
        with h5py.File(path, "r") as f:
            ours = [[f[n][w.decode()].shape for w in f[n].attrs["weight_names"]] for n in names]
        strip = lambda n: n.rstrip("_0123456789").replace("input_", "input")  # noqa: E731
        assert [strip(n) for n in names] == [strip(n) for n in theirs]
        assert ours == shapes


@pytest.mark.parametrize("cbam", ["none", "all"])
def test_fuse_and_predict_match_the_trained_reference(tmp_path, cbam):
    model = _trained(cbam, ("spot", "recog")).eval()
    xs = _inputs()
    with torch.no_grad():
        want = model(*xs)
        got = meanspot_fused.fuse(model)(*xs)
    for w, g in zip(want, got):
        torch.testing.assert_close(g, w, rtol=FUSED_TOL, atol=FUSED_TOL)
    paths = export_model(model, tmp_path, "fold0")
    np.savez(tmp_path / "feats.npz", **{k: x.numpy() for k, x in zip(("u", "v", "os"), xs)})
    for path in (paths["checkpoint"], paths["keras"]):
        out = tmp_path / "scores.npz"
        predict_file(path, tmp_path / "feats.npz", out, progress=False)
        with np.load(out) as scores:
            for head, w in zip(model.head_names, want):
                np.testing.assert_allclose(scores[head], w.numpy(), rtol=FUSED_TOL, atol=FUSED_TOL)


def test_export_rejects_what_it_cannot_write(tmp_path):
    model = MeanSpot(cbam="all", cbam_spatial_bn=True)
    with pytest.raises(InputError, match="cbam_spatial_bn"):
        save_keras_weights(model, tmp_path / "x.hdf5")
    with pytest.raises(InputError, match="directory"):
        export_model(MeanSpot(cbam="none"), tmp_path / "missing", "s1")
    with pytest.raises(InputError, match="stem"):
        export_model(MeanSpot(cbam="none"), tmp_path, "a/b")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("cbam", ["none", "all"])
def test_keras3_file_equals_what_real_keras3_wrote(tmp_path, cbam):
    """train_step_<cbam>_seed0.weights.h5 was written by Keras 3.15.1's save_weights: loaded and written back,
    every weight sits at the same path with the same bytes, and nothing else is there."""
    real = KERAS_CASES / f"train_step_{cbam}_seed0.weights.h5"
    if not real.is_file():
        pytest.skip("needs ../shared/keras_cases (real Keras files)")
    mine = tmp_path / "model.weights.h5"
    save_keras3_weights(load_keras(real, cbam=cbam), mine)

    def datasets(path):
        out = {}
        with h5py.File(path, "r") as f:
            f.visititems(lambda name, obj: out.__setitem__(name, obj[()]) if isinstance(obj, h5py.Dataset) else None)
        return out
    want, got = datasets(real), datasets(mine)
    assert sorted(got) == sorted(want)
    for name in want:
        assert got[name].dtype == want[name].dtype and np.array_equal(got[name], want[name]), name
