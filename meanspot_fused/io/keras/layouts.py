"""Weights of the Keras file layouts, read into a :class:`_WeightStore`.

* :func:`_read_legacy`: the TF 2.x HDF5 group (``layer_names``, then each
  layer's ``weight_names``), as in ``save_weights`` files and under the
  ``model_weights`` group of ``model.save`` files (TF 2.x and Keras 3 ``.h5``).
* :func:`_read_keras3`: the Keras 3 ``layers/<class_snake>[_n]/vars/<i>`` tree
  (``.weights.h5``, and ``model.weights.h5`` inside a ``.keras`` zip).

The store holds every weight of the file and counts which ones the mapping
used, so that a weight left over is an error.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import h5py
import numpy as np

from ..errors import KerasFormatError

# Weight order inside a Keras 3 ``vars`` group (Keras's own ``build`` order).
_VAR_NAMES = {
    "conv": ("kernel", "bias"),
    "dense": ("kernel", "bias"),
    "bn": ("gamma", "beta", "moving_mean", "moving_variance"),
}
_KIND_OF_CLASS = {"Conv2D": "conv", "Dense": "dense", "BatchNormalization": "bn"}
_KIND_OF_SNAKE = {"conv2d": "conv", "dense": "dense", "batch_normalization": "bn"}
_KIND_TITLE = {"conv": "Conv2D", "dense": "Dense", "bn": "BatchNormalization"}
# Top-level groups of a Keras 3 weights file that hold training state, not the model's weights.
_NON_MODEL_GROUPS = ("optimizer", "compile_metrics", "metrics", "loss")


@dataclass
class _Var:
    path: str  # where the array sits in the file, for messages and the use-once count
    array: np.ndarray


@dataclass
class _LayerWeights:
    """The weights of one Keras layer, by variable name (``kernel``, ``bias``, ``gamma``...)."""

    name: str  # the Keras layer name (the group name where the file has no other)
    kind: Optional[str]  # "conv", "dense", "bn", or None when the variables fit none
    vars: Dict[str, _Var]
    group: str  # the HDF5 group, for messages

    def shape(self, var: str) -> Optional[Tuple[int, ...]]:
        v = self.vars.get(var)
        return None if v is None else tuple(v.array.shape)

    def describe(self) -> str:
        shapes = ", ".join(f"{k} {tuple(v.array.shape)}" for k, v in self.vars.items())
        return f"layer {self.name!r} ({self.group}: {shapes or 'no weights'})"


class _WeightStore:
    """All weights of a file, and the count of which ones the mapping used."""

    def __init__(self, source: str, layers: List[_LayerWeights], all_paths: Sequence[str]):
        self.source = source
        self.layers = layers  # weighted layers, in the file's order (see ``_read_*``)
        self.by_name = {lw.name: lw for lw in layers}
        self.all_paths = list(all_paths)
        self.used: Dict[str, str] = {}  # path -> role that used it

    def take(self, lw: _LayerWeights, var: str, keras_shape: Tuple[int, ...], role: str) -> np.ndarray:
        """Return ``var`` of ``lw`` after checking its shape; mark it used (once)."""
        v = lw.vars.get(var)
        if v is None:
            raise KerasFormatError(
                f"{self.source}: {role}: {lw.describe()} has no {var!r} weight "
                f"(expected {var} of shape {keras_shape})")
        if tuple(v.array.shape) != tuple(keras_shape):
            raise KerasFormatError(
                f"{self.source}: {role}: {v.path} has shape {tuple(v.array.shape)}, expected {tuple(keras_shape)}")
        if v.path in self.used:
            raise KerasFormatError(
                f"{self.source}: {v.path} would be used twice (as {self.used[v.path]} and as {role})")
        self.used[v.path] = role
        return v.array

    def check_all_used(self) -> None:
        unused = [p for p in self.all_paths if p not in self.used]
        if unused:
            shown = ", ".join(unused[:8]) + (f" and {len(unused) - 8} more" if len(unused) > 8 else "")
            raise KerasFormatError(
                f"{self.source}: {len(unused)} of {len(self.all_paths)} weights in the file fit no MEAN-Spot "
                f"parameter and would be ignored: {shown}")
        if len(self.used) != len(self.all_paths):  # a used path that the file does not list
            raise KerasFormatError(
                f"{self.source}: used {len(self.used)} weights but the file holds {len(self.all_paths)}")


def _str_list(value) -> List[str]:
    """An HDF5 string attribute (bytes or str, scalar or array) as a list of str."""
    if value is None:
        return []
    if isinstance(value, (bytes, str, np.bytes_, np.str_)):
        value = [value]
    return [v.decode("utf8") if isinstance(v, bytes) else str(v) for v in value]


def _float_array(ds: h5py.Dataset, source: str) -> np.ndarray:
    try:
        arr = ds[()]
    except (OSError, RuntimeError, ValueError) as e:  # truncated or corrupt data blocks
        raise KerasFormatError(f"{source}: cannot read {ds.name}: {e}") from e
    arr = np.asarray(arr)
    if arr.dtype.kind != "f":
        raise KerasFormatError(f"{source}: {ds.name} has dtype {arr.dtype}, expected floating-point weights")
    return arr


def _datasets_under(group: h5py.Group, skip=lambda name: False) -> List[str]:
    out: List[str] = []

    def visit(name, obj):
        if isinstance(obj, h5py.Dataset) and not skip(obj.name):
            out.append(obj.name)
    group.visititems(visit)
    return out


def _kind_from_vars(vars_: Dict[str, _Var]) -> Optional[str]:
    # Extra variables do not change the kind: they are reported as unused weights.
    if "kernel" in vars_:
        return {4: "conv", 2: "dense"}.get(vars_["kernel"].array.ndim)
    if {"moving_mean", "moving_variance"} <= set(vars_):
        return "bn"
    return None


def _read_legacy(group: h5py.Group, source: str) -> _WeightStore:
    """TF 2.x ``save_weights`` / legacy ``model.save`` h5: ``layer_names`` then ``weight_names``."""
    if "layer_names" not in group.attrs:
        raise KerasFormatError(f"{source}: {group.name} has no 'layer_names' attribute; not a Keras weights group")
    layers: List[_LayerWeights] = []
    for lname in _str_list(group.attrs["layer_names"]):
        if lname not in group:
            raise KerasFormatError(
                f"{source}: layer {lname!r} is listed in layer_names but its group is missing (truncated file?)")
        g = group[lname]
        if "weight_names" not in g.attrs:
            raise KerasFormatError(f"{source}: layer group {g.name} has no 'weight_names' attribute")
        vars_: Dict[str, _Var] = {}
        for wname in _str_list(g.attrs["weight_names"]):
            if wname not in g or not isinstance(g[wname], h5py.Dataset):
                raise KerasFormatError(
                    f"{source}: weight {wname!r} of layer {lname!r} is listed but missing (truncated file?)")
            # 'conv2d_18/kernel:0' (TF 2.x) or 'conv2d/kernel' (Keras 3) -> 'kernel'
            short = wname.rsplit("/", 1)[-1].split(":", 1)[0]
            if short in vars_:
                raise KerasFormatError(f"{source}: layer {lname!r} lists two weights named {short!r}")
            ds = g[wname]
            vars_[short] = _Var(ds.name, _float_array(ds, source))
        if vars_:
            layers.append(_LayerWeights(lname, _kind_from_vars(vars_), vars_, g.name))
    return _WeightStore(source, layers, _datasets_under(group))


def _keras3_groups(f: h5py.File, source: str) -> Dict[str, h5py.Group]:
    if "layers" not in f or not isinstance(f["layers"], h5py.Group):
        raise KerasFormatError(f"{source}: no 'layers' group; not a Keras 3 weights file")
    return dict(f["layers"].items())


def _is_rng_state(path: str) -> bool:
    # Keras 3 Dropout layers may save their SeedGenerator state: random-number
    # state, not a weight of the network.
    return "seed_generator" in path


def _read_keras3(f: h5py.File, source: str) -> _WeightStore:
    """Keras 3 weights tree: ``layers/<class_snake>[_n]/vars/<i>``, named by class, not by layer."""
    layers: List[_LayerWeights] = []
    for gname, g in _keras3_groups(f, source).items():
        for sub in g:
            if sub != "vars" and not _is_rng_state(sub):
                raise KerasFormatError(
                    f"{source}: {g.name}/{sub} is a nested layer or model; MEAN-Spot has none")
        vg = g.get("vars")
        if vg is None:
            continue
        keys = sorted(vg.keys(), key=lambda k: int(k) if k.isdigit() else -1)
        if any(not k.isdigit() for k in keys) or [int(k) for k in keys] != list(range(len(keys))):
            raise KerasFormatError(f"{source}: {vg.name} holds {keys}, expected datasets 0, 1, ...")
        if not keys:
            continue
        kind = _KIND_OF_SNAKE.get(re.sub(r"_\d+$", "", gname))
        names = _VAR_NAMES.get(kind, ())  # variables past these are extra and end up unused
        vars_ = {}
        for i, k in enumerate(keys):
            ds = vg[k]
            vname = names[i] if i < len(names) else f"var{k}"
            vars_[vname] = _Var(ds.name, _float_array(ds, source))
        lname = _str_list(vg.attrs.get("name"))[0] if "name" in vg.attrs else gname
        layers.append(_LayerWeights(lname, kind, vars_, g.name))
    # File order: Keras numbers the groups of one class in ``model.layers`` order
    # ('dense', 'dense_1', ..., 'dense_10'); HDF5 lists them alphabetically.
    layers.sort(key=_group_order)
    skip = lambda p: _is_rng_state(p) or p.split("/")[1] in _NON_MODEL_GROUPS  # noqa: E731
    return _WeightStore(source, layers, _datasets_under(f, skip))


def _group_order(lw: _LayerWeights) -> Tuple[str, int]:
    gname = lw.group.rsplit("/", 1)[-1]
    m = re.fullmatch(r"(.*?)(?:_(\d+))?", gname)
    return m.group(1), int(m.group(2) or 0)
