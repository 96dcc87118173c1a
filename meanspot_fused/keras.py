"""Import MEAN-Spot (with CBAM) weights from Keras files, with h5py only.

:func:`load_keras` reads the five Keras layouts described in
``shared/design/MODEL.md`` without TensorFlow:

========================  ==================================================
layout                    how it is recognised
========================  ==================================================
``tf2-weights``           HDF5, root attribute ``layer_names`` (``save_weights``)
``tf2-model``             HDF5, ``model_weights`` group + ``model_config``,
                          weight names ending in ``:0`` (TF 2.x ``model.save``)
``keras3-h5``             the same, weight names without ``:0`` (Keras 3)
``keras3-weights``        HDF5 with a ``layers/<class_snake>[_n]/vars/<i>`` tree
``keras3-zip``            a ``.keras`` zip: ``config.json`` + ``model.weights.h5``
========================  ==================================================

Two strategies map the file onto :class:`~meanspot_fused.reference.MeanSpot`:

* **graph** (the layouts with a model config): the functional graph is walked
  from the three inputs, layer by layer, and every layer must be where MEAN-Spot
  has one (conv -> ReLU -> BN -> [CBAM] -> pool -> [dropout] -> concat, and per
  head conv -> ReLU -> [CBAM] -> pool -> flatten -> [dropout] -> Dense).
  Branches come from the model's inputs (u, v, os), heads from the output
  Dense's activation (linear Dense(1): ``spot``, softmax: ``recog``), the
  concatenation order and the CBAM spatial input order (mean/max, read from the
  Lambda's code) from the graph itself.
* **weights only** (``save_weights`` and ``.weights.h5``): layers are
  classified by their weight shapes (branch conv ``(5,5,1,F)``, head conv
  ``(5,5,14,8)``, CBAM spatial conv ``(k,k,2,1)``, head Dense ``(392,n)``, CBAM
  MLP Dense) and assigned in Keras's ``model.layers`` order, which sorts layers
  by depth and breaks ties in the order u, v, os and then head by head. What
  ordering cannot tell is settled by keyword arguments (see :func:`load_keras`).

Either way every tensor's shape is checked, every weight in the file must be
used exactly once, and anything that does not fit raises
:class:`KerasFormatError` naming the layer and what was expected.
"""
from __future__ import annotations

import base64
import binascii
import io
import json
import os
import re
import zipfile
from dataclasses import dataclass
from typing import Dict, Iterator, List, Optional, Sequence, Tuple, Union

import h5py
import numpy as np
import torch

from .reference import BRANCH_FILTERS, BRANCH_NAMES, HEAD_FILTERS, HEADS, INPUT_SIZE, KERAS_BN_EPS, MeanSpot

__all__ = ["KerasFormatError", "load_keras", "LAYOUTS"]

#: Names of the Keras layouts :func:`load_keras` reads (see the module docstring).
LAYOUTS = ("tf2-weights", "tf2-model", "keras3-h5", "keras3-weights", "keras3-zip")

PathLike = Union[str, "os.PathLike[str]"]

_MERGED_CHANNELS = sum(BRANCH_FILTERS.values())  # 14
_POOLED = INPUT_SIZE // 3 // 2  # 7
_FLAT = _POOLED * _POOLED * HEAD_FILTERS  # 392
# Weight order inside a Keras 3 ``vars`` group (Keras's own ``build`` order).
_VAR_NAMES = {
    "conv": ("kernel", "bias"),
    "dense": ("kernel", "bias"),
    "bn": ("gamma", "beta", "moving_mean", "moving_variance"),
}
_KIND_OF_CLASS = {"Conv2D": "conv", "Dense": "dense", "BatchNormalization": "bn"}
_KIND_OF_SNAKE = {"conv2d": "conv", "dense": "dense", "batch_normalization": "bn"}
_KIND_TITLE = {"conv": "Conv2D", "dense": "Dense", "bn": "BatchNormalization"}
# Layers that are the identity at inference and may follow a pooling layer.
_DROPOUTS = ("Dropout", "SpatialDropout2D", "GaussianDropout", "AlphaDropout")
# Top-level groups of a Keras 3 weights file that hold training state, not the model's weights.
_NON_MODEL_GROUPS = ("optimizer", "compile_metrics", "metrics", "loss")


class KerasFormatError(ValueError):
    """A file is not a Keras file, or does not hold a MEAN-Spot network that maps exactly."""


# ----------------------------------------------------------------------------------------------
# Reading weights
# ----------------------------------------------------------------------------------------------

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


def _to_snake_case(name: str) -> str:
    """Keras 3's ``naming.to_snake_case``: the group name of a layer class ('Conv2D' -> 'conv2d')."""
    name = re.sub(r"\W+", "", name)
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()


def _bind_keras3_names(store: _WeightStore, graph: "_Graph") -> None:
    """Key a Keras 3 store by layer name, numbering groups per class in the config's layer order.

    That is how Keras 3 names them (saving_lib's ``_save_container_state``);
    where the file also records each layer's name (``vars`` attribute ``name``)
    the two must agree, so a file whose groups do not line up is rejected.
    """
    by_group = {lw.group.rsplit("/", 1)[-1]: lw for lw in store.layers}
    counters: Dict[str, int] = {}
    by_name: Dict[str, _LayerWeights] = {}
    for layer in graph.layers.values():
        snake = _to_snake_case(layer.cls)
        n = counters.get(snake, -1) + 1
        counters[snake] = n
        gname = snake if n == 0 else f"{snake}_{n}"
        lw = by_group.pop(gname, None)
        if lw is None:
            continue
        if lw.name != gname and lw.name != layer.name:
            raise KerasFormatError(
                f"{store.source}: weights group {lw.group} records layer {lw.name!r} but the config's layer "
                f"order puts {layer.name!r} ({layer.cls}) there; groups and config do not line up")
        if lw.kind is None and layer.cls in _KIND_OF_CLASS:
            raise KerasFormatError(f"{store.source}: {lw.describe()} does not hold {layer.cls} weights")
        lw.name = layer.name
        by_name[layer.name] = lw
    if by_group:
        raise KerasFormatError(
            f"{store.source}: weights groups {sorted(by_group)} belong to no layer of the config")
    store.by_name = by_name


# ----------------------------------------------------------------------------------------------
# The functional graph
# ----------------------------------------------------------------------------------------------

TensorRef = Tuple[str, int, int]  # (layer name, node index, tensor index), as in Keras configs


@dataclass
class _GLayer:
    name: str
    cls: str
    config: dict
    nodes: List[List[TensorRef]]  # the input tensors of each call, in argument order


class _Graph:
    """A Keras functional model config (Keras 2 or Keras 3 serialisation)."""

    def __init__(self, config: dict, source: str):
        self.source = source
        cls = config.get("class_name")
        if cls not in ("Functional", "Model") or not isinstance(config.get("config"), dict):
            raise KerasFormatError(
                f"{source}: the model config describes a {cls!r}, not a functional model; MEAN-Spot is a "
                "functional model with three inputs")
        cfg = config["config"]
        self.layers: Dict[str, _GLayer] = {}
        for raw in cfg.get("layers", []):
            name = raw.get("name") or raw.get("config", {}).get("name")
            if name in self.layers:
                raise KerasFormatError(f"{source}: two layers named {name!r} in the model config")
            self.layers[name] = _GLayer(name, raw.get("class_name"), raw.get("config") or {},
                                        [_node_refs(n) for n in raw.get("inbound_nodes") or []])
        self.inputs = _flatten_refs(cfg.get("input_layers"))
        self.outputs = _flatten_refs(cfg.get("output_layers"))
        self.consumers: Dict[TensorRef, List[Tuple[_GLayer, int]]] = {}
        for layer in self.layers.values():
            for i, refs in enumerate(layer.nodes):
                for ref in refs:
                    if ref[0] not in self.layers:
                        raise KerasFormatError(f"{source}: layer {layer.name!r} takes input from unknown "
                                               f"layer {ref[0]!r}")
                    self.consumers.setdefault(ref, []).append((layer, i))


def _is_ref(x) -> bool:
    return isinstance(x, (list, tuple)) and len(x) >= 3 and isinstance(x[0], str)


def _flatten_refs(x) -> List[TensorRef]:
    # Keras 2 may nest the list ([[refs]]); Keras 3 writes a single output as one ref.
    if x is None:
        return []
    if _is_ref(x):
        return [(x[0], int(x[1]), int(x[2]))]
    return [r for item in x for r in _flatten_refs(item)]


def _node_refs(node) -> List[TensorRef]:
    if isinstance(node, dict):  # Keras 3: {"args": [...], "kwargs": {...}} with __keras_tensor__ leaves
        return list(_keras3_tensors(node.get("args", [])))
    return [(r[0], int(r[1]), int(r[2])) for r in node]  # Keras 2: [[name, node, tensor, kwargs], ...]


def _keras3_tensors(x) -> Iterator[TensorRef]:
    if isinstance(x, dict):
        if x.get("class_name") == "__keras_tensor__":
            h = x["config"]["keras_history"]
            yield (h[0], int(h[1]), int(h[2]))
        else:
            for v in x.values():
                yield from _keras3_tensors(v)
    elif isinstance(x, (list, tuple)):
        for v in x:
            yield from _keras3_tensors(v)


def _activation(cfg: dict) -> str:
    act = cfg.get("activation", "linear")
    if isinstance(act, dict):  # newer serialisations wrap built-in activations
        act = act.get("config", act.get("class_name"))
        if isinstance(act, dict):
            act = act.get("name", act)
    return "linear" if act in (None, "linear") else str(act)


def _pair(v) -> Tuple[int, ...]:
    if isinstance(v, int):
        return (v, v)
    return tuple(int(x) for x in v)


_MEAN_TOKENS = {"mean"}
_MAX_TOKENS = {"max", "amax"}


def _marshal_names(blob: bytes) -> set:
    """Identifiers stored as short strings in a marshalled code object.

    A Keras Lambda is saved as base64 of ``marshal.dumps(fn.__code__)``, whose
    layout changes across Python versions, so the names are scanned for
    instead of unmarshalled: type code 'z'/'Z' (short ASCII, possibly with the
    ref flag 0x80), a length byte, then the name.
    """
    names = set()
    for i in range(len(blob) - 1):
        if blob[i] & 0x7F in (0x7A, 0x5A):
            n = blob[i + 1]
            s = blob[i + 2:i + 2 + n]
            if len(s) == n and re.fullmatch(rb"[A-Za-z_][A-Za-z0-9_]*", s):
                names.add(s.decode("ascii"))
    return names


def _strings(x) -> Iterator[str]:
    if isinstance(x, str):
        yield x
    elif isinstance(x, dict):
        for v in x.values():
            yield from _strings(v)
    elif isinstance(x, (list, tuple)):
        for v in x:
            yield from _strings(v)


def _lambda_reduction(layer: _GLayer) -> Optional[str]:
    """'mean' or 'max' for a CBAM channel-reduction Lambda, None when its code does not tell."""
    names = set()
    for s in _strings(layer.config.get("function")):
        names.add(s)
        if len(s) > 16:
            try:
                names |= _marshal_names(base64.b64decode(s.encode("ascii"), validate=False))
            except (binascii.Error, ValueError, UnicodeEncodeError):
                pass
    tokens = {t for n in names for t in re.split(r"[._]", n)}
    has_mean, has_max = bool(tokens & _MEAN_TOKENS), bool(tokens & _MAX_TOKENS)
    if has_mean != has_max:
        return "mean" if has_mean else "max"
    return None


# ----------------------------------------------------------------------------------------------
# The mapping plan: which Keras layer feeds which MeanSpot parameter
# ----------------------------------------------------------------------------------------------

@dataclass
class _CbamPlan:
    where: str  # e.g. "branch u CBAM", for messages
    channels: int
    mlp1: _LayerWeights
    mlp2: _LayerWeights
    spatial: _LayerWeights
    spatial_bn: Optional[_LayerWeights] = None
    max_first: bool = False  # spatial input is [max, mean]: swap the conv's input channels


@dataclass
class _BranchPlan:
    conv: _LayerWeights
    bn: _LayerWeights
    cbam: Optional[_CbamPlan] = None


@dataclass
class _HeadPlan:
    conv: _LayerWeights
    dense: _LayerWeights
    cbam: Optional[_CbamPlan] = None


@dataclass
class _Plan:
    branches: Dict[str, _BranchPlan]
    heads: Dict[str, _HeadPlan]
    # Branch of each block of channels of the merged map, in the file's concatenation order.
    concat_order: Tuple[str, ...] = BRANCH_NAMES


@dataclass
class _Options:
    heads: Optional[Tuple[str, ...]]
    cbam: Optional[str]
    recog_classes: Optional[int]
    cbam_ratio: Optional[int]
    branch_order: Optional[Tuple[str, ...]]
    spatial_order: Optional[Tuple[str, str]]


class _GraphWalker:
    """Walks a functional graph along MEAN-Spot's structure, collecting a :class:`_Plan`.

    Every layer visited is recorded; a layer the walk never reaches is an extra
    layer and is rejected, so a file of another architecture cannot slip through.
    """

    def __init__(self, graph: _Graph, store: _WeightStore, opts: _Options):
        self.g = graph
        self.store = store
        self.opts = opts
        self.src = graph.source
        self.visited: set = set()

    # -- small helpers ---------------------------------------------------------------------
    def err(self, msg: str) -> KerasFormatError:
        return KerasFormatError(f"{self.src}: {msg}")

    def weights(self, layer: _GLayer) -> _LayerWeights:
        lw = self.store.by_name.get(layer.name)
        if lw is None:
            raise self.err(f"{layer.cls} layer {layer.name!r} has no weights in the file (truncated file?)")
        kind = _KIND_OF_CLASS.get(layer.cls)
        if lw.kind != kind:
            raise self.err(f"{lw.describe()} does not hold {layer.cls} weights")
        return lw

    def consumers(self, t: TensorRef) -> List[Tuple[_GLayer, int]]:
        return self.g.consumers.get(t, [])

    def next(self, t: TensorRef, what: str, classes: Sequence[str]) -> Tuple[_GLayer, int]:
        """The single layer consuming ``t``, which must be of one of ``classes``."""
        cons = self.consumers(t)
        if len(cons) != 1:
            found = ", ".join(f"{c.cls} {c.name!r}" for c, _ in cons) or "nothing"
            raise self.err(f"expected {self.what(what, classes)} after {t[0]!r}, found {found}")
        layer, node = cons[0]
        if layer.cls not in classes:
            raise self.err(f"expected {self.what(what, classes)} after {t[0]!r}, found {layer.cls} {layer.name!r}")
        self.visit(layer)
        return layer, node

    @staticmethod
    def what(what: str, classes: Sequence[str]) -> str:
        return what if any(c in what for c in classes) else f"{what} ({'/'.join(classes)})"

    def visit(self, layer: _GLayer) -> None:
        self.visited.add(layer.name)

    @staticmethod
    def out(layer: _GLayer, node: int) -> TensorRef:
        return (layer.name, node, 0)

    def activated(self, layer: _GLayer, node: int, want: str, what: str) -> TensorRef:
        """Output of ``layer`` after activation ``want``: fused in the layer or a following layer."""
        act = _activation(layer.config)
        if act == want:
            return self.out(layer, node)
        if act != "linear":
            raise self.err(f"{what} {layer.name!r} has activation {act!r}, expected {want!r}")
        nxt, n = self.next(self.out(layer, node), f"{want} activation of {what}", ("Activation", "ReLU"))
        if nxt.cls == "ReLU":
            c = nxt.config
            if want != "relu" or c.get("max_value") is not None or float(c.get("negative_slope") or 0) != 0 \
                    or float(c.get("threshold") or 0) != 0:
                raise self.err(f"ReLU layer {nxt.name!r} after {what} is not the plain {want!r}")
        elif _activation(nxt.config) != want:
            raise self.err(f"activation {nxt.name!r} after {what} is {_activation(nxt.config)!r}, expected {want!r}")
        return self.out(nxt, n)

    def skip_dropouts(self, t: TensorRef) -> TensorRef:
        while True:
            cons = self.consumers(t)
            if len(cons) != 1 or cons[0][0].cls not in _DROPOUTS:
                return t
            self.visit(cons[0][0])
            t = self.out(*cons[0])

    def check_conv(self, layer: _GLayer, what: str, filters: Optional[Sequence[int]], kernel: Optional[int],
                   bias: bool) -> Tuple[int, int]:
        c = layer.config
        f = int(c.get("filters", -1))
        k = _pair(c.get("kernel_size", -1))
        if filters is not None and f not in filters:
            raise self.err(f"{what} {layer.name!r} has {f} filters, expected {' or '.join(map(str, filters))}")
        if kernel is not None and k != (kernel, kernel):
            raise self.err(f"{what} {layer.name!r} has kernel {k[0]}x{k[1]}, expected {kernel}x{kernel}")
        if kernel is None and (len(k) != 2 or k[0] != k[1] or k[0] % 2 == 0):
            raise self.err(f"{what} {layer.name!r} has kernel {k}, expected a square odd kernel")
        for key, want in (("strides", (1, 1)), ("dilation_rate", (1, 1))):
            if key in c and _pair(c[key]) != want:
                raise self.err(f"{what} {layer.name!r} has {key} {_pair(c[key])}, expected {want}")
        if c.get("padding", "valid") != "same":
            raise self.err(f"{what} {layer.name!r} has padding {c.get('padding')!r}, expected 'same'")
        if int(c.get("groups", 1)) != 1:
            raise self.err(f"{what} {layer.name!r} has groups={c.get('groups')}, expected 1")
        if c.get("data_format", "channels_last") not in (None, "channels_last"):
            raise self.err(f"{what} {layer.name!r} is {c.get('data_format')}, expected channels_last")
        if bias and not c.get("use_bias", True):
            raise self.err(f"{what} {layer.name!r} has no bias, expected use_bias=True")
        return f, k[0]

    def check_bn(self, layer: _GLayer, what: str) -> None:
        c = layer.config
        axis = c.get("axis", -1)
        axis = axis if isinstance(axis, list) else [axis]
        if axis not in ([-1], [3]):
            raise self.err(f"{what} {layer.name!r} normalises axis {c.get('axis')}, expected the channel axis")
        eps = float(c.get("epsilon", KERAS_BN_EPS))
        if abs(eps - KERAS_BN_EPS) > 1e-12:
            raise self.err(f"{what} {layer.name!r} has epsilon {eps}, MeanSpot uses Keras's {KERAS_BN_EPS}")
        if not c.get("center", True) or not c.get("scale", True):
            raise self.err(f"{what} {layer.name!r} lacks beta or gamma (center/scale False)")

    def check_pool(self, layer: _GLayer, size: int, what: str) -> None:
        c = layer.config
        pool = _pair(c.get("pool_size", 2))
        strides = _pair(c["strides"]) if c.get("strides") is not None else pool
        # 42 and 14 are multiples of 3 and 2, so 'same' and 'valid' agree here.
        if pool != (size, size) or strides != (size, size):
            raise self.err(f"{what} {layer.name!r} has pool {pool} stride {strides}, expected {size}x{size} "
                           f"stride {size}")
        if c.get("data_format", "channels_last") not in (None, "channels_last"):
            raise self.err(f"{what} {layer.name!r} is {c.get('data_format')}, expected channels_last")

    def check_dense(self, layer: _GLayer, what: str, activation: Optional[str]) -> None:
        c = layer.config
        if not c.get("use_bias", True):
            raise self.err(f"{what} {layer.name!r} has no bias, expected use_bias=True")
        if activation is not None and _activation(c) != activation:
            raise self.err(f"{what} {layer.name!r} has activation {_activation(c)!r}, expected {activation!r}")

    # -- the walk --------------------------------------------------------------------------
    def walk(self) -> _Plan:
        if len(self.g.inputs) != 3:
            raise self.err(f"the model has {len(self.g.inputs)} inputs, MEAN-Spot has 3 (u, v, os)")
        order = self.opts.branch_order or BRANCH_NAMES
        branches: Dict[str, _BranchPlan] = {}
        ends: Dict[TensorRef, str] = {}
        for name, t in zip(order, self.g.inputs):
            layer = self.g.layers.get(t[0])
            if layer is None:
                raise self.err(f"model input {t[0]!r} is not among the config's layers")
            self.visit(layer)
            c = layer.config
            shape = c.get("batch_shape") or c.get("batch_input_shape")
            if layer.cls != "InputLayer" or shape is None or list(shape[1:]) != [INPUT_SIZE, INPUT_SIZE, 1]:
                raise self.err(f"input {layer.name!r} has shape {shape}, expected (None, {INPUT_SIZE}, "
                               f"{INPUT_SIZE}, 1)")
            plan, end = self.walk_branch(t, name)
            branches[name] = plan
            ends[end] = name
        concat, cnode = self.next(next(iter(ends)), "the Concatenate merging the branches", ("Concatenate",))
        refs = concat.nodes[cnode]
        if sorted(refs) != sorted(ends) or concat.config.get("axis", -1) not in (-1, 3):
            raise self.err(f"Concatenate {concat.name!r} must join the three branches on the channel axis; "
                           f"it joins {[r[0] for r in refs]} on axis {concat.config.get('axis')}")
        for end in ends:
            self.next(end, "the Concatenate merging the branches", ("Concatenate",))
        heads: Dict[str, _HeadPlan] = {}
        head_outputs = []
        for layer, node in self.consumers(self.out(concat, cnode)):
            name, plan, out = self.walk_head(layer, node)
            if name in heads:
                raise self.err(f"two {name} heads ({heads[name].dense.name!r} and {plan.dense.name!r})")
            heads[name] = plan
            head_outputs.append((out, name))
        if not heads:
            raise self.err(f"nothing consumes the merged branches ({concat.name!r}); MEAN-Spot has a head")
        outputs = set(self.g.outputs)
        if outputs != {o for o, _ in head_outputs}:
            raise self.err(f"the model outputs {[o[0] for o in self.g.outputs]}, expected the head Dense layers "
                           f"{[o[0] for o, _ in head_outputs]}")
        self.check_heads_option([name for out in self.g.outputs for o, name in head_outputs if o == out])
        extra = [f"{lay.cls} {lay.name!r}" for lay in self.g.layers.values() if lay.name not in self.visited]
        if extra:
            raise self.err(f"layers that are not part of MEAN-Spot: {', '.join(extra)}")
        return _Plan(branches, heads, tuple(ends[r] for r in refs))

    def check_heads_option(self, found: List[str]) -> None:
        if self.opts.heads is not None and tuple(self.opts.heads) != tuple(found):
            raise self.err(f"heads={self.opts.heads!r} given, but the graph's outputs are {tuple(found)!r}")

    def walk_branch(self, t: TensorRef, name: str) -> Tuple[_BranchPlan, TensorRef]:
        what = f"branch {name} conv"
        conv, node = self.next(t, what, ("Conv2D",))
        filters, _ = self.check_conv(conv, what, (BRANCH_FILTERS[name],), 5, True)
        t = self.activated(conv, node, "relu", what)
        bn, node = self.next(t, f"branch {name} BatchNormalization after the ReLU", ("BatchNormalization",))
        self.check_bn(bn, f"branch {name} BatchNormalization")
        t = self.out(bn, node)
        cbam = None
        if any(c.cls == "GlobalAveragePooling2D" for c, _ in self.consumers(t)):
            cbam, t = self.walk_cbam(t, filters, f"branch {name} CBAM")
        pool, node = self.next(t, f"branch {name} MaxPooling2D", ("MaxPooling2D",))
        self.check_pool(pool, 3, f"branch {name} MaxPooling2D")
        end = self.skip_dropouts(self.out(pool, node))
        return _BranchPlan(self.weights(conv), self.weights(bn), cbam), end

    def walk_head(self, conv: _GLayer, node: int) -> Tuple[str, _HeadPlan, TensorRef]:
        self.visit(conv)
        what = f"head conv {conv.name!r}"
        if conv.cls != "Conv2D":
            raise self.err(f"expected a head Conv2D after the merged branches, found {conv.cls} {conv.name!r}")
        self.check_conv(conv, "head conv", (HEAD_FILTERS,), 5, True)
        t = self.activated(conv, node, "relu", "head conv")
        cbam = None
        if any(c.cls == "GlobalAveragePooling2D" for c, _ in self.consumers(t)):
            cbam, t = self.walk_cbam(t, HEAD_FILTERS, f"CBAM after {what}")
        pool, n = self.next(t, f"MaxPooling2D after {what}", ("MaxPooling2D",))
        self.check_pool(pool, 2, f"MaxPooling2D after {what}")
        flat, n = self.next(self.out(pool, n), f"Flatten after {what}", ("Flatten",))
        if flat.config.get("data_format", "channels_last") not in (None, "channels_last"):
            raise self.err(f"Flatten {flat.name!r} is {flat.config.get('data_format')}; MeanSpot flattens "
                           "channels_last (H, W, C)")
        t = self.skip_dropouts(self.out(flat, n))
        dense, n = self.next(t, f"the output Dense after {what}", ("Dense",))
        self.check_dense(dense, "output Dense", None)
        act, units = _activation(dense.config), int(dense.config.get("units", -1))
        if act == "softmax":
            name = "recog"
        elif act == "linear" and units == 1:
            name = "spot"
        else:
            raise self.err(f"output Dense {dense.name!r} ({units} units, activation {act!r}) is neither "
                           "MEAN's spot head (Dense(1), linear) nor its recog head (Dense(classes), softmax)")
        return name, _HeadPlan(self.weights(conv), self.weights(dense), cbam), self.out(dense, n)

    def walk_cbam(self, x: TensorRef, channels: int, where: str) -> Tuple[_CbamPlan, TensorRef]:
        cons = self.consumers(x)
        by_cls: Dict[str, List[Tuple[_GLayer, int]]] = {}
        for c in cons:
            by_cls.setdefault(c[0].cls, []).append(c)
        if sorted(c[0].cls for c in cons) != ["GlobalAveragePooling2D", "GlobalMaxPooling2D", "Multiply"]:
            raise self.err(f"{where}: its input {x[0]!r} feeds {[f'{c.cls} {c.name!r}' for c, _ in cons]}; "
                           "expected GlobalAveragePooling2D, GlobalMaxPooling2D and the channel Multiply")
        mlp = []
        for cls in ("GlobalAveragePooling2D", "GlobalMaxPooling2D"):
            pool, n = by_cls[cls][0]
            self.visit(pool)
            t = self.out(pool, n)
            cons_t = self.consumers(t)
            if len(cons_t) == 1 and cons_t[0][0].cls == "Reshape":  # cbam_block without keepdims
                self.visit(cons_t[0][0])
                t = self.out(*cons_t[0])
            d1, n1 = self.next(t, f"{where}: first shared MLP Dense", ("Dense",))
            self.check_dense(d1, f"{where}: MLP Dense", None)
            t = self.activated(d1, n1, "relu", f"{where}: first MLP Dense")
            d2, n2 = self.next(t, f"{where}: second shared MLP Dense", ("Dense",))
            self.check_dense(d2, f"{where}: second MLP Dense", "linear")
            mlp.append((d1, d2, self.out(d2, n2)))
        (a1, a2, ta), (m1, m2, tm) = mlp
        if a1 is not m1 or a2 is not m2:
            raise self.err(f"{where}: the average and max paths use different MLPs ({a1.name}/{a2.name} vs "
                           f"{m1.name}/{m2.name}); CBAM shares one MLP")
        if int(a2.config.get("units", -1)) != channels:
            raise self.err(f"{where}: MLP output Dense {a2.name!r} has {a2.config.get('units')} units, expected "
                           f"{channels}")
        add, n = self.next(ta, f"{where}: Add of the two MLP outputs", ("Add",))
        self.next(tm, f"{where}: Add of the two MLP outputs", ("Add",))
        if sorted(add.nodes[n]) != sorted([ta, tm]):
            raise self.err(f"{where}: Add {add.name!r} does not add the average and max MLP outputs")
        act, n = self.next(self.out(add, n), f"{where}: sigmoid channel gate", ("Activation",))
        if _activation(act.config) != "sigmoid":
            raise self.err(f"{where}: channel gate {act.name!r} is {_activation(act.config)!r}, expected sigmoid")
        gate = self.out(act, n)
        mul, n = self.next(gate, f"{where}: channel Multiply", ("Multiply",))
        if sorted(mul.nodes[n]) != sorted([x, gate]):
            raise self.err(f"{where}: Multiply {mul.name!r} does not multiply the input by the channel gate")
        y = self.out(mul, n)
        # Spatial gate: Lambda(mean), Lambda(max) -> Concatenate -> Conv2D(1, k) -> [BN] -> sigmoid -> Multiply.
        cons = self.consumers(y)
        if sorted(c[0].cls for c in cons) != ["Lambda", "Lambda", "Multiply"]:
            raise self.err(f"{where}: channel-gated {y[0]!r} feeds {[f'{c.cls} {c.name!r}' for c, _ in cons]}; "
                           "expected two Lambda reductions (mean, max) and the spatial Multiply")
        lambdas = {}
        cat = None
        for layer, node in cons:
            if layer.cls != "Lambda":
                continue
            self.visit(layer)
            lambdas[self.out(layer, node)] = _lambda_reduction(layer)
            cat, cnode = self.next(self.out(layer, node), f"{where}: spatial Concatenate", ("Concatenate",))
        refs = cat.nodes[cnode]
        if sorted(refs) != sorted(lambdas) or cat.config.get("axis", -1) not in (-1, 3):
            raise self.err(f"{where}: Concatenate {cat.name!r} must join the two Lambda reductions on channels")
        kinds = tuple(lambdas[r] for r in refs)
        max_first = self.spatial_max_first(kinds, where, [r[0] for r in refs])
        sconv, n = self.next(self.out(cat, cnode), f"{where}: spatial Conv2D", ("Conv2D",))
        _, k = self.check_conv(sconv, f"{where}: spatial conv", (1,), None, False)
        sbn = None
        if _activation(sconv.config) == "sigmoid":
            gate = self.out(sconv, n)
        else:
            if _activation(sconv.config) != "linear":
                raise self.err(f"{where}: spatial conv {sconv.name!r} has activation "
                               f"{_activation(sconv.config)!r}, expected sigmoid")
            nxt, nn_ = self.next(self.out(sconv, n), f"{where}: sigmoid (or BatchNormalization) after the spatial "
                                 "conv", ("Activation", "BatchNormalization"))
            if nxt.cls == "BatchNormalization":
                self.check_bn(nxt, f"{where}: spatial BatchNormalization")
                sbn = nxt
                nxt, nn_ = self.next(self.out(nxt, nn_), f"{where}: sigmoid spatial gate", ("Activation",))
            if _activation(nxt.config) != "sigmoid":
                raise self.err(f"{where}: spatial gate {nxt.name!r} is {_activation(nxt.config)!r}, expected "
                               "sigmoid")
            gate = self.out(nxt, nn_)
        smul, n = self.next(gate, f"{where}: spatial Multiply", ("Multiply",))
        if sorted(smul.nodes[n]) != sorted([y, gate]):
            raise self.err(f"{where}: Multiply {smul.name!r} does not multiply by the spatial gate")
        plan = _CbamPlan(where, channels, self.weights(a1), self.weights(a2), self.weights(sconv),
                         self.weights(sbn) if sbn is not None else None, max_first)
        return plan, self.out(smul, n)

    def spatial_max_first(self, kinds: Tuple[Optional[str], ...], where: str, names: List[str]) -> bool:
        opt = self.opts.spatial_order
        if None not in kinds:
            if sorted(kinds) != ["max", "mean"]:
                raise self.err(f"{where}: spatial Lambdas {names} compute {kinds}, expected one mean and one max")
            if opt is not None and tuple(opt) != kinds:
                raise self.err(f"{where}: spatial_order={tuple(opt)!r} given, but the graph concatenates {kinds}")
            return kinds[0] == "max"
        if opt is None:
            raise self.err(f"{where}: cannot tell from the code of Lambdas {names} which is the channel mean "
                           "and which the max; pass spatial_order=('mean', 'max') or ('max', 'mean')")
        return tuple(opt) == ("max", "mean")


def _plan_from_weights(store: _WeightStore, opts: _Options) -> _Plan:
    """Assign the weighted layers of a graph-less file by shape and by Keras's layer order.

    Keras lists layers (TF 2.x ``layer_names``) and numbers the groups of one
    class (Keras 3 ``layers/dense_<n>``) in ``model.layers`` order: by depth,
    ties in the order u, v, os and then head by head. For MEAN-Spot that puts,
    per layer class: the branch convs, the branch CBAM spatial convs, the head
    convs, the head CBAM spatial convs; the branch BNs before any spatial BN;
    the first MLP Dense of every branch CBAM, then their second ones, then the
    same for the heads, then the output Dense layers.
    """
    src = store.source

    def err(msg):
        return KerasFormatError(f"{src}: {msg}")

    by_kind: Dict[str, List[_LayerWeights]] = {"conv": [], "dense": [], "bn": []}
    for lw in store.layers:
        if lw.kind not in by_kind:
            raise err(f"{lw.describe()} fits no MEAN-Spot layer (Conv2D, BatchNormalization, Dense)")
        ndims = [lw.vars[k].array.ndim for k in _VAR_NAMES[lw.kind] if k in lw.vars]
        want = {"conv": [4, 1], "dense": [2, 1], "bn": [1, 1, 1, 1]}[lw.kind][:len(ndims)]
        if ndims != want or (lw.kind == "bn" and len({lw.shape(k) for k in _VAR_NAMES["bn"]}) != 1):
            raise err(f"{lw.describe()} does not have the shapes of a Keras {_KIND_TITLE[lw.kind]}")
        by_kind[lw.kind].append(lw)

    bconvs, hconvs, sconvs = [], [], []
    for lw in by_kind["conv"]:
        shape = lw.shape("kernel")
        cin, cout = shape[2], shape[3]
        if cin == 1:
            bconvs.append(lw)
        elif cin == _MERGED_CHANNELS and cout == HEAD_FILTERS:
            hconvs.append(lw)
        elif cin == 2 and cout == 1:
            sconvs.append(lw)
        else:
            raise err(f"{lw.describe()} fits none of: branch conv (5, 5, 1, 3|8), head conv (5, 5, 14, 8), "
                      "CBAM spatial conv (k, k, 2, 1)")
    filters = [lw.shape("kernel")[3] for lw in bconvs]
    if sorted(filters) != sorted(BRANCH_FILTERS.values()):
        raise err(f"found branch convs with {filters} filters ({[lw.name for lw in bconvs]}), expected three "
                  f"with {sorted(BRANCH_FILTERS.values())}")
    # Branch of each branch conv, in file order: the 8-filter conv is os, the
    # 3-filter ones are u then v unless branch_order says otherwise.
    if opts.branch_order is not None:
        order = tuple(opts.branch_order)
        for name, f, lw in zip(order, filters, bconvs):
            if BRANCH_FILTERS[name] != f:
                raise err(f"branch_order={order!r} makes {lw.name!r} ({f} filters) the {name} branch, which has "
                          f"{BRANCH_FILTERS[name]}")
    else:
        small = iter(n for n in BRANCH_NAMES if BRANCH_FILTERS[n] != BRANCH_FILTERS["os"])
        order = tuple("os" if f == BRANCH_FILTERS["os"] else next(small) for f in filters)

    branch_bns = [lw for lw in by_kind["bn"] if lw.shape("gamma") != (1,)]
    spatial_bns = [lw for lw in by_kind["bn"] if lw.shape("gamma") == (1,)]
    bn_sizes = [lw.shape("gamma")[0] for lw in branch_bns]
    if len(branch_bns) != 3:
        raise err(f"found {len(branch_bns)} branch BatchNormalization layers "
                  f"({[lw.name for lw in branch_bns]}), expected 3 (one after each branch conv)")
    # Pair BNs with convs of the same width, keeping the file order among equals.
    pool = {f: [lw for lw, s in zip(branch_bns, bn_sizes) if s == f] for f in set(bn_sizes)}
    bns = []
    for f, conv in zip(filters, bconvs):
        if not pool.get(f):
            raise err(f"no BatchNormalization of width {f} for branch conv {conv.name!r}; BN widths are {bn_sizes}")
        bns.append(pool[f].pop(0))

    head_denses = [lw for lw in by_kind["dense"] if lw.shape("kernel")[0] == _FLAT]
    mlps = [lw for lw in by_kind["dense"] if lw.shape("kernel")[0] != _FLAT]
    if not 1 <= len(head_denses) <= 2 or len(hconvs) != len(head_denses):
        raise err(f"found {len(hconvs)} head convs (5, 5, 14, 8) and {len(head_denses)} output Dense layers "
                  f"({_FLAT}, n); MEAN-Spot has one or two heads, each with one of both")
    head_names = _head_names(head_denses, opts, err)

    n_heads, n_sp = len(head_denses), len(sconvs)
    placements = {0: "none", 3: "branches", n_heads: "merged", 3 + n_heads: "all"}
    if n_sp not in placements:
        raise err(f"found {n_sp} CBAM spatial convs; with {n_heads} head(s) MEAN-Spot has 0 (none), 3 (branches), "
                  f"{n_heads} (merged) or {3 + n_heads} (all)")
    placement = placements[n_sp]
    if spatial_bns and len(spatial_bns) != n_sp:
        raise err(f"found {len(spatial_bns)} BatchNormalization layers of width 1 but {n_sp} CBAM spatial convs; "
                  "a spatial BN follows every spatial conv or none")
    if len(mlps) != 2 * n_sp:
        raise err(f"found {len(mlps)} CBAM MLP Dense layers ({[lw.name for lw in mlps]}), expected {2 * n_sp} "
                  f"for {n_sp} CBAM blocks")
    # CBAM blocks in Keras order, with their channel counts.
    blocks: List[Tuple[str, int]] = []
    if placement in ("all", "branches"):
        blocks += [(f"branch {name} CBAM", f) for name, f in zip(order, filters)]
    n_branch_blocks = len(blocks)
    if placement in ("all", "merged"):
        blocks += [(f"{h} head CBAM", HEAD_FILTERS) for h in head_names]
    # Dense order: first MLP layers of the branch blocks, their second layers, then the same for the heads.
    mlp_roles: List[Tuple[int, int]] = []  # (block index, first or second MLP layer), in file order
    for lo, hi in ((0, n_branch_blocks), (n_branch_blocks, len(blocks))):
        mlp_roles += [(i, 1) for i in range(lo, hi)] + [(i, 2) for i in range(lo, hi)]
    mlp_of: Dict[Tuple[int, int], _LayerWeights] = dict(zip(mlp_roles, mlps))
    for (i, which), lw in zip(mlp_roles, mlps):
        where, c = blocks[i]
        shape = lw.shape("kernel")
        if (which == 1 and shape[0] != c) or (which == 2 and shape[1] != c):
            raise err(f"{lw.describe()} is in the place of the {'first' if which == 1 else 'second'} MLP Dense of "
                      f"the {where} ({c} channels) but does not fit it")
    cbams = [_CbamPlan(where, c, mlp_of[(i, 1)], mlp_of[(i, 2)], sconvs[i],
                       spatial_bns[i] if spatial_bns else None,
                       opts.spatial_order is not None and tuple(opts.spatial_order) == ("max", "mean"))
             for i, (where, c) in enumerate(blocks)]
    branch_cbams = iter(cbams[:n_branch_blocks])
    head_cbams = iter(cbams[n_branch_blocks:])
    branches = {name: _BranchPlan(conv, bn, next(branch_cbams, None))
                for name, conv, bn in zip(order, bconvs, bns)}
    # A head's conv and output Dense sit at the same place among their kind (heads tie in the same order).
    heads = {h: _HeadPlan(conv, dense, next(head_cbams, None))
             for h, conv, dense in zip(head_names, hconvs, head_denses)}
    return _Plan(branches, heads)


def _head_names(head_denses: List[_LayerWeights], opts: _Options, err) -> Tuple[str, ...]:
    """Which head each output Dense (in file order) is: from heads=, its width, or its layer name."""
    units = [lw.shape("kernel")[1] for lw in head_denses]
    if opts.heads is not None:
        heads = tuple(opts.heads)
        if len(heads) != len(head_denses):
            raise err(f"heads={heads!r} names {len(heads)} heads, the file has {len(head_denses)} output Dense "
                      f"layers ({[lw.name for lw in head_denses]})")
        for h, u, lw in zip(heads, units, head_denses):
            if h == "spot" and u != 1:
                raise err(f"heads={heads!r} makes {lw.name!r} ({u} units) the spot head, which has 1 unit")
        return heads
    hints = []
    for lw in head_denses:
        m = re.fullmatch(r"(spot|recog)(_\d+)?", lw.name)
        hints.append(m.group(1) if m else None)
    names = []
    for u, hint, lw in zip(units, hints, head_denses):
        if u > 1:
            if hint == "spot":
                raise err(f"output Dense {lw.name!r} is named like the spot head but has {u} units")
            names.append("recog")
        else:
            names.append(hint)
    if len(names) == 1 and names[0] is None:
        names = ["spot"]  # a lone Dense(1): MEAN's spot model (a 1-class recog head would output 1.0 always)
    elif len(names) == 2 and names.count(None) == 1:
        names[names.index(None)] = "spot" if "recog" in names else "recog"
    if None in names or len(set(names)) != len(names):
        raise err(f"cannot tell which output Dense is which head ({[lw.name for lw in head_denses]} with "
                  f"{units} units); pass heads=(...) naming them in file order, e.g. heads=('spot', 'recog')")
    return tuple(names)


# ----------------------------------------------------------------------------------------------
# Building the MeanSpot
# ----------------------------------------------------------------------------------------------

def _cbam_ratio(cbams: List[_CbamPlan], given: Optional[int], src: str) -> int:
    """The channel reduction ratio that yields the file's hidden widths, h = max(1, C // ratio)."""
    hidden: Dict[int, int] = {}
    for cp in cbams:
        h = cp.mlp1.shape("kernel")[1]
        if hidden.setdefault(cp.channels, h) != h:
            raise KerasFormatError(f"{src}: CBAM blocks of {cp.channels} channels have hidden widths "
                                   f"{hidden[cp.channels]} and {h}; MeanSpot uses one ratio for all")

    def fits(r):
        return all(max(1, c // r) == h for c, h in hidden.items())
    if given is not None:
        if not fits(given):
            raise KerasFormatError(f"{src}: cbam_ratio={given} gives hidden widths "
                                   f"{ {c: max(1, c // given) for c in hidden} }, the file has {hidden}")
        return given
    if fits(8):  # the Keras cbam_block default
        return 8
    for r in range(1, max(hidden, default=1) + 1):
        if fits(r):
            return r
    raise KerasFormatError(f"{src}: CBAM hidden widths {hidden} (channels: width) fit no cbam_ratio "
                           "(MeanSpot uses max(1, C // ratio))")


def _build(plan: _Plan, store: _WeightStore, opts: _Options) -> MeanSpot:
    src = store.source
    cbams = [b.cbam for b in plan.branches.values() if b.cbam] + [h.cbam for h in plan.heads.values() if h.cbam]
    in_branches = [b.cbam is not None for b in plan.branches.values()]
    in_heads = [h.cbam is not None for h in plan.heads.values()]
    if len(set(in_branches)) != 1 or len(set(in_heads)) != 1:
        raise KerasFormatError(f"{src}: CBAM in some branches or heads but not in all; MeanSpot places CBAM in "
                               "all branches and/or all heads")
    placement = {(True, True): "all", (True, False): "branches", (False, True): "merged",
                 (False, False): "none"}[(in_branches[0], in_heads[0])]
    if opts.cbam is not None and opts.cbam != placement:
        raise KerasFormatError(f"{src}: cbam={opts.cbam!r} given, but the file has CBAM placement {placement!r}")
    kernels = {cp.spatial.shape("kernel")[0] for cp in cbams}
    if len(kernels) > 1:
        raise KerasFormatError(f"{src}: CBAM spatial convs of different sizes {sorted(kernels)}")
    spatial_kernel = kernels.pop() if kernels else 7
    if cbams and len({cp.spatial_bn is not None for cp in cbams}) != 1:
        raise KerasFormatError(f"{src}: some CBAM spatial convs are followed by a BatchNormalization, others not")
    spatial_bn = bool(cbams) and cbams[0].spatial_bn is not None
    recog = plan.heads.get("recog")
    recog_classes = recog.dense.shape("kernel")[1] if recog else (opts.recog_classes or 3)
    if recog and opts.recog_classes is not None and opts.recog_classes != recog_classes:
        raise KerasFormatError(f"{src}: recog_classes={opts.recog_classes} given, but the recog head "
                               f"{recog.dense.name!r} has {recog_classes} units")
    model = MeanSpot(cbam=placement, heads=tuple(plan.heads), recog_classes=recog_classes,
                     cbam_ratio=_cbam_ratio(cbams, opts.cbam_ratio, src), spatial_kernel=spatial_kernel,
                     cbam_spatial_bn=spatial_bn)
    params = model.state_dict()
    state: Dict[str, torch.Tensor] = {}

    def put(key: str, lw: _LayerWeights, var: str, role: str, convert=None):
        shape = tuple(params[key].shape)
        # Keras layouts: Conv2D kernel (kh, kw, in, out), Dense kernel (in, out), vectors as they are.
        if len(shape) == 4:
            keras_shape = (shape[2], shape[3], shape[1], shape[0])
        elif len(shape) == 2:
            keras_shape = (shape[1], shape[0])
        else:
            keras_shape = shape
        arr = store.take(lw, var, keras_shape, role)
        if convert is not None:
            arr = convert(arr)
        t = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))
        if t.dim() == 4:
            t = t.permute(3, 2, 0, 1)  # (kh, kw, in, out) -> (out, in, kh, kw): no kernel flip
        elif t.dim() == 2:
            t = t.t()
        state[key] = t.contiguous()

    def put_conv(prefix, lw, role, convert=None):
        put(prefix + ".weight", lw, "kernel", role, convert)
        if prefix + ".bias" in params:
            put(prefix + ".bias", lw, "bias", role)

    def put_bn(prefix, lw, role):
        for key, var in (("weight", "gamma"), ("bias", "beta"), ("running_mean", "moving_mean"),
                         ("running_var", "moving_variance")):
            put(f"{prefix}.{key}", lw, var, role)
        state[f"{prefix}.num_batches_tracked"] = torch.zeros((), dtype=torch.long)

    def put_cbam(prefix, cp: _CbamPlan):
        put_conv(prefix + ".mlp1", cp.mlp1, f"{cp.where} first MLP Dense {cp.mlp1.name!r}")
        put_conv(prefix + ".mlp2", cp.mlp2, f"{cp.where} second MLP Dense {cp.mlp2.name!r}")
        # MeanSpot feeds the spatial conv [mean, max]; a [max, mean] file swaps its input channels.
        swap = (lambda k: k[:, :, ::-1, :]) if cp.max_first else None
        put_conv(prefix + ".spatial", cp.spatial, f"{cp.where} spatial conv {cp.spatial.name!r}", swap)
        if "bias" in cp.spatial.vars:
            if cp.spatial_bn is None:
                raise KerasFormatError(f"{src}: {cp.where}: spatial conv {cp.spatial.name!r} has a bias; MeanSpot's "
                                       "CBAM spatial conv has none (nor a BatchNormalization to absorb it)")
            bias = store.take(cp.spatial, "bias", (1,), f"{cp.where} spatial conv bias")
        if cp.spatial_bn is not None:
            put_bn(prefix + ".spatial_bn", cp.spatial_bn, f"{cp.where} spatial BatchNormalization")
            if "bias" in cp.spatial.vars:
                # BN(conv + b) = BN'(conv) with running_mean' = running_mean - b: exact, no new parameter.
                key = prefix + ".spatial_bn.running_mean"
                state[key] = (state[key].double() - torch.from_numpy(np.asarray(bias, np.float64))).float()

    for name in BRANCH_NAMES:
        bp = plan.branches[name]
        put_conv(f"branches.{name}.conv", bp.conv, f"branch {name} conv {bp.conv.name!r}")
        put_bn(f"branches.{name}.bn", bp.bn, f"branch {name} BatchNormalization {bp.bn.name!r}")
        if bp.cbam is not None:
            put_cbam(f"branches.{name}.cbam", bp.cbam)
    # Head conv input channels arrive in the file's concatenation order; MeanSpot's is u, v, os.
    offsets, start = {}, 0
    for name in plan.concat_order:
        offsets[name] = range(start, start + BRANCH_FILTERS[name])
        start += BRANCH_FILTERS[name]
    perm = [i for name in BRANCH_NAMES for i in offsets[name]]
    reorder = None if perm == list(range(_MERGED_CHANNELS)) else (lambda k: k[:, :, perm, :])
    for name, hp in plan.heads.items():
        put_conv(f"heads.{name}.conv", hp.conv, f"{name} head conv {hp.conv.name!r}", reorder)
        if hp.cbam is not None:
            put_cbam(f"heads.{name}.cbam", hp.cbam)
        # Keras flattens (H, W, C) and MeanSpot flattens in that same order, so the kernel maps as it is.
        put_conv(f"heads.{name}.dense", hp.dense, f"{name} head Dense {hp.dense.name!r}")
    missing = sorted(set(params) - set(state))
    if missing:  # an internal inconsistency between the plan and MeanSpot, never a file problem
        raise RuntimeError(f"load_keras: no weights mapped to {missing}")
    store.check_all_used()
    model.load_state_dict(state, strict=True)
    return model.eval()


# ----------------------------------------------------------------------------------------------
# Entry point
# ----------------------------------------------------------------------------------------------

def _open_h5(source: str, fileobj=None) -> h5py.File:
    try:
        return h5py.File(fileobj if fileobj is not None else source, "r")
    except (OSError, ValueError) as e:
        raise KerasFormatError(f"{source}: cannot read as HDF5 ({e}); truncated or not a Keras file") from e


def _load_json(text, what: str, source: str) -> dict:
    try:
        return json.loads(text)
    except (ValueError, TypeError) as e:
        raise KerasFormatError(f"{source}: {what} is not valid JSON ({e})") from e


def _read_file(path: str) -> Tuple[_WeightStore, Optional[_Graph]]:
    """Recognise the layout (:data:`LAYOUTS`) by content, not by file name; read weights and graph."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no such file")
    if os.path.isdir(path):
        raise KerasFormatError(f"{path}: is a directory, not a Keras file")
    if zipfile.is_zipfile(path):
        try:
            with zipfile.ZipFile(path) as zf:
                names = set(zf.namelist())
                if "config.json" not in names or "model.weights.h5" not in names:
                    raise KerasFormatError(f"{path}: not a Keras file: a zip without config.json and "
                                           f"model.weights.h5 (members: {sorted(names)[:6]})")
                config = _load_json(zf.read("config.json"), "config.json", path)
                blob = zf.read("model.weights.h5")
        except (zipfile.BadZipFile, OSError, EOFError) as e:
            raise KerasFormatError(f"{path}: corrupt .keras zip ({e})") from e
        with _open_h5(path, io.BytesIO(blob)) as f:  # keras3-zip
            store = _read_keras3(f, path)
        graph = _Graph(config, path)
        _bind_keras3_names(store, graph)
        return store, graph
    with open(path, "rb") as fh:
        head = fh.read(8)
    if head != b"\x89HDF\r\n\x1a\n":
        what = "a damaged or truncated zip" if head.startswith(b"PK") else "neither HDF5 nor a .keras zip"
        raise KerasFormatError(f"{path}: {what}; not a Keras file")
    with _open_h5(path) as f:
        try:
            if "layer_names" in f.attrs:  # tf2-weights
                return _read_legacy(f, path), None
            if "model_weights" in f:  # tf2-model ('kernel:0') or keras3-h5 ('kernel'): read alike
                store = _read_legacy(f["model_weights"], path)
                config = f.attrs.get("model_config")
                if config is None:  # a subclassed model: weights only
                    return store, None
                if isinstance(config, bytes):
                    config = config.decode("utf8")
                return store, _Graph(_load_json(config, "model_config", path), path)
            if "layers" in f:  # keras3-weights
                return _read_keras3(f, path), None
        except (KeyError, OSError, RuntimeError) as e:  # h5py's errors for objects lost to truncation
            raise KerasFormatError(f"{path}: incomplete Keras file ({e})") from e
        raise KerasFormatError(f"{path}: an HDF5 file without Keras weights (no layer_names, model_weights or "
                               f"layers; top level: {sorted(f.keys())[:6]})")


def load_keras(path: PathLike, *, heads: Optional[Sequence[str]] = None, cbam: Optional[str] = None,
               recog_classes: Optional[int] = None, cbam_ratio: Optional[int] = None,
               branch_order: Optional[Sequence[str]] = None,
               spatial_order: Optional[Sequence[str]] = None) -> MeanSpot:
    """Load a Keras MEAN-Spot (with or without CBAM) into a float32 :class:`MeanSpot` in eval mode.

    Reads any of :data:`LAYOUTS` with h5py only; the layout is recognised from
    the file's content. Heads, number of classes, CBAM placement, hidden widths
    (-> ``cbam_ratio``), spatial kernel and a BatchNorm after the spatial conv
    are all found from the file.

    The keyword arguments settle what a graph-less file (``save_weights``,
    ``.weights.h5``) cannot tell, and are checked against what the file does
    tell (a contradiction raises :class:`KerasFormatError`):

    * ``heads``: the head of each output Dense, in file order (graph files: in
      the model's output order), e.g. ``("spot", "recog")``. Needed when both
      output Dense layers have one unit, or a lone one-unit Dense is a recog head.
    * ``cbam``: expected CBAM placement (``all``/``branches``/``merged``/``none``).
    * ``recog_classes``: expected number of recog classes.
    * ``cbam_ratio``: the ratio to report when several give the file's hidden widths.
    * ``branch_order``: the branch of each model input (graph files) or of each
      branch conv in file order (graph-less files); default ``("u", "v", "os")``
      (graph-less: the 8-filter conv is os, the 3-filter ones u then v).
    * ``spatial_order``: CBAM spatial input order, ``("mean", "max")`` (the Keras
      ``cbam_block``, assumed for graph-less files) or ``("max", "mean")`` (the
      official CBAM); graph files tell it from their Lambda layers.

    Raises:
        KerasFormatError (a ``ValueError``): not a Keras file, a truncated file,
            another architecture, a shape that does not fit, a weight left unused.
        FileNotFoundError: ``path`` does not exist.
    """
    path = os.fspath(path)
    if heads is not None:
        heads = (heads,) if isinstance(heads, str) else tuple(heads)
        if not heads or any(h not in HEADS for h in heads) or len(set(heads)) != len(heads):
            raise ValueError(f"heads must name distinct heads from {HEADS}, got {heads!r}")
    if branch_order is not None:
        branch_order = tuple(branch_order)
        if sorted(branch_order) != sorted(BRANCH_NAMES):
            raise ValueError(f"branch_order must be a permutation of {BRANCH_NAMES}, got {branch_order!r}")
    if spatial_order is not None:
        spatial_order = tuple(spatial_order)
        if spatial_order not in (("mean", "max"), ("max", "mean")):
            raise ValueError(f"spatial_order must be ('mean', 'max') or ('max', 'mean'), got {spatial_order!r}")
    opts = _Options(heads, cbam, recog_classes, cbam_ratio, branch_order, spatial_order)
    try:
        store, graph = _read_file(path)
        if graph is not None:
            plan = _GraphWalker(graph, store, opts).walk()
        else:
            plan = _plan_from_weights(store, opts)
        return _build(plan, store, opts)
    except (KerasFormatError, FileNotFoundError):
        raise
    except (UnicodeDecodeError, TypeError, KeyError, AttributeError, IndexError, OSError, RuntimeError) as e:
        # A damaged file can break the reader anywhere (a garbled attribute, a
        # group where a dataset should be); say so instead of a traceback.
        raise KerasFormatError(f"{path}: not a readable Keras file (damaged or truncated?): "
                               f"{type(e).__name__}: {e}") from e
