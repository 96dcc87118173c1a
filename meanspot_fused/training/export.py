"""Trained models in the formats the project and MEAN read.

* :func:`save_keras_weights`: a TF 2.x ``model.save_weights`` HDF5 file, the
  layout of MEAN's published ``MEAN_Weights/*/*.hdf5`` (root attributes
  ``backend``, ``keras_version``, ``layer_names``; one group per layer with a
  ``weight_names`` attribute, arrays at ``<layer>/<layer>/<var>:0``).
  MEAN's ``model.load_weights(path)`` (TF 2.4, and Keras 3 for a ``.h5`` /
  ``.hdf5`` name) matches layers WITH weights by position, so the weighted
  layers are listed in the order of MEAN's ``define_model`` ``model.layers``;
  :func:`meanspot_fused.io.keras.load_keras` reads it back to the same model.
* :func:`save_keras3_weights`: a Keras 3 ``model.save_weights`` file
  (``.weights.h5``: ``layers/<class_snake>[_n]/vars/<i>``, layers numbered
  per class in ``model.layers`` order), what Keras 3's ``load_weights``
  reads; checked against files written by real Keras 3.
* :func:`export_model`: the project's checkpoint (``io.checkpoints.save_model``)
  and both Keras files side by side.

Every file is written to a temporary file beside the target and then moved
into place, so an interrupted export never leaves a partial file.
"""
from __future__ import annotations

import os
import re
from typing import Dict, List, Tuple, Union

import h5py
import numpy as np
import torch

from ..errors import InputError, InputTypeError
from ..io.atomic import replace_atomically
from ..io.checkpoints import save_model
from ..network.reference import BRANCH_NAMES, CBAM, MeanSpot

__all__ = ["save_keras_weights", "save_keras3_weights", "export_model", "KERAS_VERSION"]

#: What the file says wrote it: MEAN's Keras (TRAINING.md: TF 2.4, Keras 2.4.0, as its published weights).
KERAS_VERSION = "2.4.0"

# (layer name, [(weight name, Keras-layout array)]), in the file's order.
_Layer = Tuple[str, List[Tuple[str, np.ndarray]]]


def _conv(conv: torch.nn.Conv2d) -> List[Tuple[str, np.ndarray]]:
    # torch (out, in, kh, kw) -> Keras (kh, kw, in, out): a transpose, no kernel flip.
    out = [("kernel", conv.weight.detach().cpu().permute(2, 3, 1, 0).numpy())]
    if conv.bias is not None:
        out.append(("bias", conv.bias.detach().cpu().numpy()))
    return out


def _dense(lin: torch.nn.Linear) -> List[Tuple[str, np.ndarray]]:
    # torch (out, in) -> Keras (in, out); both flatten the pooled map in (h, w, c) order.
    return [("kernel", lin.weight.detach().cpu().t().numpy()), ("bias", lin.bias.detach().cpu().numpy())]


def _bn(bn: torch.nn.BatchNorm2d) -> List[Tuple[str, np.ndarray]]:
    return [(k, t.detach().cpu().numpy()) for k, t in (("gamma", bn.weight), ("beta", bn.bias),
                                                        ("moving_mean", bn.running_mean),
                                                        ("moving_variance", bn.running_var))]


class _Names:
    """Keras's automatic layer names: ``conv2d``, ``conv2d_1``, ... per class, in creation order."""

    def __init__(self):
        self.counts: Dict[str, int] = {}

    def __call__(self, cls: str) -> str:
        n = self.counts.get(cls, 0)
        self.counts[cls] = n + 1
        return cls if n == 0 else f"{cls}_{n}"


def _layers(model: MeanSpot) -> List[_Layer]:
    """The layers in MEAN's ``model.layers`` order (TRAINING.md 5, 7; the published files' ``layer_names``).

    MEAN's network: inputs, branch convs, BNs, pools, dropouts (u, v, os each),
    concatenate, then per stage every head (spot, recog): conv, pool, flatten,
    dropout, the output Dense named after the head. With CBAM, the weighted
    blocks sit by depth as Keras's ``cbam_block`` puts them: after the BNs the
    branch blocks' first MLP Dense layers, their second ones, their spatial
    convs; after the head convs the same for the heads.
    """
    name = _Names()
    heads = [model.heads[h] for h in model.head_names]
    branches = [model.branches[b] for b in BRANCH_NAMES]
    empty: List[Tuple[str, np.ndarray]] = []
    out: List[_Layer] = [(name("input"), empty) for _ in branches]
    out += [(name("conv2d"), _conv(b.conv)) for b in branches]
    out += [(name("batch_normalization"), _bn(b.bn)) for b in branches]
    out += _cbam_layers([b.cbam for b in branches], name)
    out += [(name("max_pooling2d"), empty) for _ in branches]
    out += [(name("dropout"), empty) for _ in branches]
    out.append((name("concatenate"), empty))
    out += [(name("conv2d"), _conv(h.conv)) for h in heads]
    out += _cbam_layers([h.cbam for h in heads], name)
    for cls in ("max_pooling2d", "flatten", "dropout"):
        out += [(name(cls), empty) for _ in heads]
    out += [(h, _dense(model.heads[h].dense)) for h in model.head_names]
    return out


def _cbam_layers(blocks: List[CBAM], name: _Names) -> List[_Layer]:
    if not any(b is not None for b in blocks):
        return []
    out = [(name("dense"), _dense(b.mlp1)) for b in blocks]
    out += [(name("dense"), _dense(b.mlp2)) for b in blocks]
    out += [(name("conv2d"), _conv(b.spatial)) for b in blocks]
    return out


def save_keras_weights(model: MeanSpot, path: Union[str, os.PathLike]) -> None:
    """Write ``model``'s weights as a TF 2.x ``save_weights`` HDF5 file (see the module docstring).

    Name it ``.hdf5`` or ``.h5``: TF 2.4 and Keras 3 read that name as this
    layout (Keras 3 expects its own layout from a ``.weights.h5`` name).
    CBAM models load into a Keras MEAN-Spot with the Keras ``cbam_block``
    and into ``load_keras``; MEAN's own ``define_model`` has no CBAM.
    """
    _check_exportable(model)
    layers = _layers(model)

    def write(tmp: str) -> None:
        with h5py.File(tmp, "w") as f:
            f.attrs["backend"] = "tensorflow"
            f.attrs["keras_version"] = KERAS_VERSION
            f.attrs["layer_names"] = np.array([n.encode("utf8") for n, _ in layers])
            for lname, weights in layers:
                g = f.create_group(lname)
                names = [f"{lname}/{var}:0" for var, _ in weights]
                # TF 2.x writes an empty float array for a layer without weights.
                g.attrs["weight_names"] = np.array([n.encode("utf8") for n in names]) if names else np.zeros(0)
                for wname, (_, arr) in zip(names, weights):
                    g.create_dataset(wname, data=np.ascontiguousarray(arr, dtype=np.float32))

    replace_atomically(os.fspath(path), write)


def _check_exportable(model) -> None:
    if not isinstance(model, MeanSpot):
        raise InputTypeError(f"model must be a MeanSpot, got {type(model).__name__}")
    if model.cbam_spatial_bn:
        raise InputError("model has a BatchNorm after the CBAM spatial conv (cbam_spatial_bn=True); the Keras "
                         "cbam_block that MEAN-with-CBAM uses has none, so there is no Keras layout to write")


def save_keras3_weights(model: MeanSpot, path: Union[str, os.PathLike]) -> None:
    """Write ``model``'s weights as Keras 3 ``model.save_weights`` does (name it ``.weights.h5``).

    Keras 3 names each layer by its class (``conv2d``, ``conv2d_1``, ...,
    ``dense``; the heads' output Dense layers too) in ``model.layers``
    order, which is the order of :func:`save_keras_weights`; a layer's
    variables are ``vars/0, 1, ...`` in build order. Layers without weights
    are left out (Keras 3 loads them from nothing).
    """
    _check_exportable(model)
    layers = [(lname, weights) for lname, weights in _layers(model) if weights]
    name = _Names()

    def write(tmp: str) -> None:
        with h5py.File(tmp, "w") as f:
            f.create_group("vars")
            top = f.create_group("layers")
            for lname, weights in layers:
                cls = "dense" if lname in model.head_names else re.sub(r"_\d+$", "", lname)
                g = top.create_group(name(cls)).create_group("vars")
                for i, (_, arr) in enumerate(weights):
                    g.create_dataset(str(i), data=np.ascontiguousarray(arr, dtype=np.float32))

    replace_atomically(os.fspath(path), write)


def export_model(model: MeanSpot, directory: Union[str, os.PathLike], stem: str) -> Dict[str, str]:
    """Write ``<stem>.pt`` (the project's checkpoint), ``<stem>.hdf5`` (TF 2.x ``save_weights``, MEAN's
    layout) and ``<stem>.weights.h5`` (Keras 3) into ``directory``.

    Returns ``{"checkpoint": path, "keras": path, "keras3": path}``. ``directory`` must exist.
    """
    directory = os.fspath(directory)
    if not os.path.isdir(directory):
        raise InputError(f"directory {directory!r} does not exist or is not a folder")
    if not stem or os.sep in stem or (os.altsep and os.altsep in stem):
        raise InputError(f"stem must be a non-empty file name without a folder, got {stem!r}")
    paths = {"checkpoint": os.path.join(directory, f"{stem}.pt"), "keras": os.path.join(directory, f"{stem}.hdf5"),
             "keras3": os.path.join(directory, f"{stem}.weights.h5")}
    save_model(model, paths["checkpoint"])
    save_keras_weights(model, paths["keras"])
    save_keras3_weights(model, paths["keras3"])
    return paths
