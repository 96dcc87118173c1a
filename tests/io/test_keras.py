"""Keras import: ground truth from real Keras, round trips through every layout, and rejections.

The ground truth (``../shared/keras_cases`` beside the repository, or
``$MEANSPOT_KERAS_CASES``) is read, never copied; its tests skip when it is absent.
Everything else writes small Keras-layout files with ``tests/keras_files.py``.
"""
from __future__ import annotations

import json
import sys
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: shared helpers
import keras_files as kf  # noqa: E402

import meanspot_fused  # noqa: E402
from meanspot_fused.io.keras import LAYOUTS, KerasFormatError, load_keras  # noqa: E402

from helpers import KERAS_CASES  # noqa: E402

CASES = KERAS_CASES
# Keras (float32, XLA/cuDNN-free CPU) vs the reference in float32: agreement is within a few 1e-6.
KERAS_TOL = 1e-5
ROUND_TRIP_TOL = 1e-6


def _fuse():
    """``meanspot_fused.fuse``, or skip the test while the fused path is not importable."""
    fuse = getattr(meanspot_fused, "fuse", None)
    if not callable(fuse):
        pytest.skip("meanspot_fused.fuse is not available")
    return fuse


def _outputs(model, net, inputs):
    with torch.no_grad():
        out = net(*inputs)
    return dict(zip(model.head_names, out if isinstance(out, tuple) else (out,)))


def _random_maps(n=3, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return [torch.rand(n, 1, 42, 42, generator=g, dtype=dtype) for _ in range(3)]


# ---------------------------------------------------------------------------------------------
# Ground truth made by real Keras
# ---------------------------------------------------------------------------------------------

def _ground_truth_cases():
    if not CASES.is_dir():
        return [pytest.param(None, None, marks=pytest.mark.skip(
            reason=f"Keras ground truth not found at {CASES} (set MEANSPOT_KERAS_CASES)"))]
    cases = []
    for npz in sorted(CASES.glob("meanspot_*.npz")):
        for suffix in (".keras", ".h5", ".weights.h5"):
            f = CASES / (npz.stem + suffix)
            if f.exists():
                cases.append(pytest.param(npz, f, id=f.name))
    for f in sorted(CASES.glob("mean_weights/*/*/*.hdf5")):
        dataset, model, subject = f.parts[-3], f.parts[-2], f.stem
        npz = CASES / f"pretrained_{dataset}_{model}_{subject}.npz"
        if npz.exists():
            cases.append(pytest.param(npz, f, id=f"{dataset}/{model}/{f.name}"))
    return cases


@pytest.mark.parametrize("path", ["reference", "fused"])
@pytest.mark.parametrize("npz, model_file", _ground_truth_cases())
def test_matches_keras(npz, model_file, path):
    z = np.load(npz)
    model = load_keras(model_file)
    assert model.head_names == tuple(str(h) for h in z["outputs"])
    assert not model.training and all(p.dtype == torch.float32 for p in model.parameters())
    inputs = [torch.from_numpy(z[k]).permute(0, 3, 1, 2).contiguous() for k in ("u", "v", "os")]  # NHWC -> NCHW
    net = _fuse()(model) if path == "fused" else model
    for head, out in _outputs(model, net, inputs).items():
        err = (out - torch.from_numpy(z[head])).abs().max().item()
        assert err <= KERAS_TOL, f"{model_file.name} {head} ({path}): max abs error {err:.3g} vs Keras"


def test_every_ground_truth_case_has_a_model():
    if not CASES.is_dir():
        pytest.skip(f"Keras ground truth not found at {CASES}")
    covered = {p.values[0] for p in _ground_truth_cases()}
    # train_step_* cases are training ground truth (a training step, not a forward pass).
    assert {p for p in CASES.glob("*.npz") if not p.name.startswith("train_step_")} <= covered


def test_writer_reproduces_keras_layer_order():
    """tests/keras_files.py orders and names layers exactly as Keras 3 did for the ground truth."""
    real = CASES / "meanspot_cbam_all_seed0.h5"
    if not real.exists():
        pytest.skip(f"{real} not found")
    with h5py.File(real, "r") as f:
        config = json.loads(f.attrs["model_config"])
    expected = [(lay["name"], lay["class_name"]) for lay in config["config"]["layers"]]
    mine = [(lay.name, lay.cls) for lay in kf.meanspot_graph(kf.random_meanspot(cbam="all")).ordered()]
    assert mine == expected


# ---------------------------------------------------------------------------------------------
# Round trips: a random MeanSpot written in each layout loads back to the same network
# ---------------------------------------------------------------------------------------------

CONFIGS = {
    "all-spot": dict(cbam="all"),
    "branches-both-ratio2": dict(cbam="branches", heads=("spot", "recog"), recog_classes=5, cbam_ratio=2),
    "all-both-ratio1": dict(cbam="all", heads=("spot", "recog"), cbam_ratio=1),  # square MLP kernels
    "none-recog": dict(cbam="none", heads=("recog",), recog_classes=4),
    "merged-spatialbn-k5": dict(cbam="merged", heads=("spot", "recog"), spatial_kernel=5, cbam_spatial_bn=True),
}


def _assert_same(model, loaded, tol=ROUND_TRIP_TOL):
    assert loaded.config() == model.config()
    assert not loaded.training and all(p.dtype == torch.float32 for p in loaded.parameters())
    inputs = _random_maps()
    expected, got = _outputs(model, model, inputs), _outputs(loaded, loaded, inputs)
    for head in expected:
        assert (got[head] - expected[head]).abs().max().item() <= tol, head


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("config", CONFIGS)
def test_round_trip(tmp_path, layout, config):
    model = kf.random_meanspot(sorted(CONFIGS).index(config), **CONFIGS[config])
    loaded = load_keras(kf.write(kf.meanspot_graph(model), layout, tmp_path))
    _assert_same(model, loaded)
    for key, value in model.state_dict().items():  # not merely close: the same numbers
        assert torch.equal(loaded.state_dict()[key], value), key


@pytest.mark.parametrize("layout", LAYOUTS)
def test_max_first_spatial_order(tmp_path, layout):
    """The official CBAM concatenates [max, mean]: graph files say so; graph-less files need spatial_order."""
    model = kf.random_meanspot(3, cbam="all", heads=("spot", "recog"))
    path = kf.write(kf.meanspot_graph(model, spatial_order=("max", "mean")), layout, tmp_path)
    if layout in kf.GRAPH_LAYOUTS:
        _assert_same(model, load_keras(path))
        with pytest.raises(KerasFormatError, match="spatial_order"):
            load_keras(path, spatial_order=("mean", "max"))
    else:
        _assert_same(model, load_keras(path, spatial_order=("max", "mean")))


@pytest.mark.parametrize("layout", LAYOUTS)
def test_heads_in_other_order(tmp_path, layout):
    model = kf.random_meanspot(4, cbam="all", heads=("spot", "recog"))
    _assert_same(model, load_keras(kf.write(kf.meanspot_graph(model, head_order=("recog", "spot")), layout,
                                            tmp_path)))


@pytest.mark.parametrize("layout", kf.GRAPH_LAYOUTS)
def test_branches_concatenated_in_other_order(tmp_path, layout):
    model = kf.random_meanspot(5, cbam="branches")
    _assert_same(model, load_keras(kf.write(kf.meanspot_graph(model, concat_order=("os", "v", "u")), layout,
                                            tmp_path)))


@pytest.mark.parametrize("layout", ["keras3-zip", "tf2-weights"])
def test_spatial_conv_bias_folds_into_spatial_batchnorm(tmp_path, layout):
    model = kf.random_meanspot(6, cbam="merged", cbam_spatial_bn=True)
    g = kf.meanspot_graph(model)
    bias = np.array([0.25], np.float32)
    conv = next(lay for lay in g.of_class("Conv2D") if lay.config["filters"] == 1)
    conv.config["use_bias"] = True
    conv.weights.append(("bias", bias))
    bn = next(lay for lay in g.of_class("BatchNormalization") if lay.weights[0][1].shape == (1,))
    bn.weights[2] = ("moving_mean", bn.weights[2][1] + bias)  # BN(conv + b) with mean + b == BN(conv)
    _assert_same(model, load_keras(kf.write(g, layout, tmp_path)))


@pytest.mark.parametrize("layout", ["keras3-zip", "keras3-weights"])
def test_keras3_files_without_recorded_layer_names(tmp_path, layout):
    model = kf.random_meanspot(7, cbam="all", heads=("spot", "recog"))
    _assert_same(model, load_keras(kf.write(kf.meanspot_graph(model), layout, tmp_path, record_names=False)))


def test_ambiguous_heads_need_heads_argument(tmp_path):
    # Two one-unit output Dense layers and no layer names: nothing in the file tells spot from recog.
    model = kf.random_meanspot(8, cbam="none", heads=("spot", "recog"), recog_classes=1)
    path = kf.write(kf.meanspot_graph(model), "keras3-weights", tmp_path, record_names=False)
    with pytest.raises(KerasFormatError, match=r"heads=\("):
        load_keras(path)
    _assert_same(model, load_keras(path, heads=("spot", "recog")))
    swapped = load_keras(path, heads=("recog", "spot"))
    assert torch.equal(swapped.heads["recog"].dense.weight, model.heads["spot"].dense.weight)


def test_branch_order_settles_u_and_v_in_weights_only_files(tmp_path):
    model = kf.random_meanspot(9, cbam="none")
    loaded = load_keras(kf.write(kf.meanspot_graph(model), "tf2-weights", tmp_path), branch_order=("v", "u", "os"))
    assert torch.equal(loaded.branches["u"].conv.weight, model.branches["v"].conv.weight)
    assert torch.equal(loaded.branches["v"].bn.running_mean, model.branches["u"].bn.running_mean)
    with pytest.raises(KerasFormatError, match="branch_order"):
        load_keras(kf.write(kf.meanspot_graph(model), "tf2-weights", tmp_path, "b"), branch_order=("os", "u", "v"))


@pytest.mark.parametrize("layout", ["keras3-zip", "keras3-weights"])
def test_options_that_contradict_the_file_are_rejected(tmp_path, layout):
    model = kf.random_meanspot(10, cbam="branches", heads=("spot", "recog"), recog_classes=3)
    path = kf.write(kf.meanspot_graph(model), layout, tmp_path)
    with pytest.raises(KerasFormatError, match="placement 'branches'"):
        load_keras(path, cbam="all")
    with pytest.raises(KerasFormatError, match="3 units"):
        load_keras(path, recog_classes=4)
    with pytest.raises(KerasFormatError, match="cbam_ratio=1"):
        load_keras(path, cbam_ratio=1)
    assert load_keras(path, cbam="branches", recog_classes=3, cbam_ratio=6).config()["cbam_ratio"] == 6
    if layout in kf.GRAPH_LAYOUTS:
        with pytest.raises(KerasFormatError, match="heads="):
            load_keras(path, heads=("recog", "spot"))


def test_invalid_options_raise_value_error(tmp_path):
    path = kf.write(kf.meanspot_graph(kf.random_meanspot()), "keras3-zip", tmp_path)
    for kwargs in (dict(heads=("spot", "spot")), dict(branch_order=("u", "v")), dict(spatial_order=("mean",))):
        with pytest.raises(ValueError):
            load_keras(path, **kwargs)


# ---------------------------------------------------------------------------------------------
# Files that must be rejected, with a message naming what did not fit
# ---------------------------------------------------------------------------------------------

def _graph(**config):
    return kf.meanspot_graph(kf.random_meanspot(11, **(config or dict(cbam="all"))))


def test_error_is_a_value_error():
    assert issubclass(KerasFormatError, ValueError)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_truncated_file(tmp_path, layout):
    path = kf.write(_graph(), layout, tmp_path)
    data = path.read_bytes()
    for keep in (len(data) // 2, len(data) - 100):
        path.write_bytes(data[:keep])
        with pytest.raises(KerasFormatError, match=str(path.name)):
            load_keras(path)


@pytest.mark.parametrize("content", [b"this is not a model\n", b"", b"PK\x03\x04 broken zip"])
def test_not_a_keras_file(tmp_path, content):
    path = tmp_path / "model.h5"
    path.write_bytes(content)
    with pytest.raises(KerasFormatError, match="not a Keras file|corrupt"):
        load_keras(path)


def test_hdf5_and_zip_without_keras_content(tmp_path):
    with h5py.File(tmp_path / "other.h5", "w") as f:
        f["data"] = np.zeros(3)
    with pytest.raises(KerasFormatError, match="without Keras weights"):
        load_keras(tmp_path / "other.h5")
    with zipfile.ZipFile(tmp_path / "other.keras", "w") as zf:
        zf.writestr("readme.txt", "hello")
    with pytest.raises(KerasFormatError, match="config.json"):
        load_keras(tmp_path / "other.keras")


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_keras(tmp_path / "nothing.h5")


@pytest.mark.parametrize("layout", LAYOUTS)
def test_missing_batchnorm(tmp_path, layout):
    g = _graph()
    g.remove(g.of_class("BatchNormalization")[0].name)
    with pytest.raises(KerasFormatError, match="BatchNormalization"):
        load_keras(kf.write(g, layout, tmp_path))


@pytest.mark.parametrize("layout", LAYOUTS)
def test_wrong_kernel_size(tmp_path, layout):
    g = _graph()
    conv = g.of_class("Conv2D")[0]  # the u branch conv, 5x5 -> 3x3
    conv.config["kernel_size"] = [3, 3]
    conv.weights[0] = ("kernel", conv.weights[0][1][1:4, 1:4])
    with pytest.raises(KerasFormatError, match=r"3x3|\(3, 3, 1, 3\)"):
        load_keras(kf.write(g, layout, tmp_path))


@pytest.mark.parametrize("layout", LAYOUTS)
def test_extra_layer_with_weights(tmp_path, layout):
    g = _graph()
    bn = g.of_class("BatchNormalization")[0].name
    extra = g.insert_after(bn, "Conv2D", kf._conv_config(3, 5, "relu"),
                           [("kernel", np.zeros((5, 5, 3, 3), np.float32)), ("bias", np.zeros(3, np.float32))])
    with pytest.raises(KerasFormatError, match=f"{extra}|GlobalAveragePooling2D"):
        load_keras(kf.write(g, layout, tmp_path))


@pytest.mark.parametrize("layout", kf.GRAPH_LAYOUTS)
def test_extra_layer_without_weights(tmp_path, layout):
    g = _graph(cbam="none")
    extra = g.insert_after(g.of_class("MaxPooling2D")[0].name, "Activation", {"activation": "tanh"})
    with pytest.raises(KerasFormatError, match=extra):
        load_keras(kf.write(g, layout, tmp_path))


@pytest.mark.parametrize("layout", kf.GRAPH_LAYOUTS)
def test_extra_output(tmp_path, layout):
    g = _graph(cbam="none")
    flat = g.of_class("Flatten")[0].name
    g.outputs.append(g.add("Dense", [(flat, 0, 0)], {"units": 2, "activation": "linear"},
                           [("kernel", np.zeros((392, 2), np.float32)), ("bias", np.zeros(2, np.float32))]))
    with pytest.raises(KerasFormatError, match="dense"):
        load_keras(kf.write(g, layout, tmp_path))


@pytest.mark.parametrize("layout", LAYOUTS)
def test_unused_weight(tmp_path, layout):
    g = _graph()
    spot = g.layers["spot"]
    spot.unlisted.append(("extra", np.zeros(4, np.float32)))
    with pytest.raises(KerasFormatError, match="spot|dense_8"):
        load_keras(kf.write(g, layout, tmp_path))


@pytest.mark.parametrize("layout", ["keras3-zip", "tf2-weights"])
def test_spatial_conv_bias_without_batchnorm(tmp_path, layout):
    g = _graph(cbam="merged")
    conv = next(lay for lay in g.of_class("Conv2D") if lay.config["filters"] == 1)
    conv.config["use_bias"] = True
    conv.weights.append(("bias", np.ones(1, np.float32)))
    with pytest.raises(KerasFormatError, match="has a bias"):
        load_keras(kf.write(g, layout, tmp_path))


@pytest.mark.parametrize("layout", kf.GRAPH_LAYOUTS)
def test_batchnorm_before_relu_is_another_architecture(tmp_path, layout):
    g = _graph(cbam="none")
    conv, bn = g.of_class("Conv2D")[0], g.of_class("BatchNormalization")[0]
    conv.config["activation"] = "linear"
    g.insert_after(bn.name, "Activation", {"activation": "relu"})
    with pytest.raises(KerasFormatError, match="relu activation of branch u conv"):
        load_keras(kf.write(g, layout, tmp_path))


def test_other_batchnorm_epsilon_is_rejected(tmp_path):
    g = _graph(cbam="none")
    g.of_class("BatchNormalization")[1].config["epsilon"] = 1e-5
    with pytest.raises(KerasFormatError, match="epsilon"):
        load_keras(kf.write(g, "keras3-zip", tmp_path))
