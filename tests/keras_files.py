"""Write a MeanSpot's weights in the five Keras layouts with h5py, for tests (no TensorFlow).

The files mirror those real Keras writes (compare ``shared/keras_cases``):

* the functional graph is built in the creation order of MEAN's Keras code
  and the Keras ``cbam_block`` (GlobalAverage/MaxPooling2D -> shared Dense MLP
  -> Add -> sigmoid -> Multiply; Lambda mean/max -> Concatenate -> Conv2D(1, 7,
  sigmoid, no bias) -> Multiply), layers named per class in creation order
  (``conv2d``, ``conv2d_1``...), the output Dense layers named ``spot``/``recog``;
* ``model.layers`` is ordered as Keras orders it (``keras.src.ops.function.map_graph``:
  by node depth from the outputs, ties by discovery order), which decides
  ``layer_names`` and the Keras 3 group numbers;
* TF 2.x (Keras 2) and Keras 3 serialisations of the config and weight names.

Tests can edit a :class:`KerasGraph` (drop or insert a layer, change a config or
a weight) before writing it, to make files of another architecture.
"""
from __future__ import annotations

import base64
import io
import json
import marshal
import re
import zipfile
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import h5py
import numpy as np
import torch

from meanspot_fused.network.reference import BRANCH_NAMES, MeanSpot

Ref = Tuple[str, int, int]

# Lambda bodies as MEAN-with-CBAM users write them (Keras 3 ``ops``); only their
# code objects are marshalled into the config, they are never run.
_MEAN_FN = lambda t: ops.mean(t, axis=-1, keepdims=True)  # noqa: E731,F821
_MAX_FN = lambda t: ops.max(t, axis=-1, keepdims=True)  # noqa: E731,F821
# Layers whose call takes a list of tensors.
_LIST_INPUT = ("Concatenate", "Add", "Multiply")


@dataclass
class Layer:
    name: str
    cls: str
    config: dict
    nodes: List[List[Ref]] = field(default_factory=list)
    weights: List[Tuple[str, np.ndarray]] = field(default_factory=list)  # (variable name, Keras-layout array)
    # Datasets written into the layer's group but not listed as its weights (a stray weight).
    unlisted: List[Tuple[str, np.ndarray]] = field(default_factory=list)


def _snake(cls: str) -> str:
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", cls)
    return re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()


class KerasGraph:
    """A functional graph: layers in creation order, model inputs and outputs."""

    def __init__(self):
        self.layers: Dict[str, Layer] = {}
        self.inputs: List[Ref] = []
        self.outputs: List[Ref] = []
        self._count: Dict[str, int] = {}

    def add(self, cls: str, inputs: Sequence[Ref], config: Optional[dict] = None,
            weights: Sequence[Tuple[str, np.ndarray]] = (), name: Optional[str] = None) -> Ref:
        """Create a layer (named like Keras does) and call it on ``inputs``."""
        if name is None:
            snake = _snake(cls)
            n = self._count.get(snake, -1) + 1
            self._count[snake] = n
            name = snake if n == 0 else f"{snake}_{n}"
        self.layers[name] = Layer(name, cls, dict(config or {}), [], list(weights))
        return self.call(name, inputs)

    def call(self, name: str, inputs: Sequence[Ref]) -> Ref:
        """Call an existing layer again (a shared layer): a new node."""
        layer = self.layers[name]
        layer.nodes.append(list(inputs))
        return (name, len(layer.nodes) - 1, 0)

    def consumers(self, ref: Ref) -> List[Tuple[Layer, int, int]]:
        return [(lay, i, j) for lay in self.layers.values() for i, node in enumerate(lay.nodes)
                for j, r in enumerate(node) if r == ref]

    def remove(self, name: str) -> None:
        """Drop a one-input layer, wiring its consumers to its input (e.g. drop a BatchNormalization)."""
        layer = self.layers.pop(name)
        (src,), = layer.nodes
        for lay, i, j in self.consumers((name, 0, 0)):
            lay.nodes[i][j] = src
        self.outputs = [src if o == (name, 0, 0) else o for o in self.outputs]

    def insert_after(self, name: str, cls: str, config: dict, weights=()) -> str:
        """Insert a new layer on the output of ``name`` (node 0), before all its consumers."""
        old = (name, 0, 0)
        cons = self.consumers(old)
        new = self.add(cls, [old], config, weights)
        for lay, i, j in cons:
            lay.nodes[i][j] = new
        self.outputs = [new if o == old else o for o in self.outputs]
        return new[0]

    def of_class(self, cls: str) -> List[Layer]:
        return [lay for lay in self.layers.values() if lay.cls == cls]

    def ordered(self) -> List[Layer]:
        """``model.layers`` in Keras's order (keras.src.ops.function.map_graph)."""
        finished, order_nodes, indices = set(), [], {}

        def visit(ref: Ref):
            name, node, _ = ref
            if (name, node) in finished:
                return
            indices.setdefault(name, len(indices))
            if ref not in self.inputs:
                for parent in self.layers[name].nodes[node]:
                    visit(parent)
            finished.add((name, node))
            order_nodes.append((name, node))
        for out in self.outputs:
            visit(out)
        node_depth: Dict[Tuple[str, int], int] = {}
        layer_depth: Dict[str, int] = {}
        for key in reversed(order_nodes):
            depth = max(node_depth.setdefault(key, 0), layer_depth.get(key[0], 0))
            layer_depth[key[0]] = depth
            node_depth[key] = depth
            for p in self.layers[key[0]].nodes[key[1]]:
                pk = (p[0], p[1])
                node_depth[pk] = max(depth + 1, node_depth.get(pk, 0))
        for ref in self.inputs:  # inputs not connected to an output
            if ref[0] not in layer_depth:
                layer_depth[ref[0]], indices[ref[0]] = 0, -1
        names = sorted(layer_depth, key=lambda n: (-layer_depth[n], indices[n]))
        return [self.layers[n] for n in names]


# ---------------------------------------------------------------------------------------------
# MeanSpot -> KerasGraph
# ---------------------------------------------------------------------------------------------

def random_meanspot(seed: int = 0, **config) -> MeanSpot:
    """A MeanSpot with random weights and random BatchNorm statistics (so no mapping hides)."""
    torch.manual_seed(seed)
    model = MeanSpot(**config)
    with torch.no_grad():
        for mod in model.modules():
            if isinstance(mod, torch.nn.BatchNorm2d):
                mod.weight.uniform_(0.5, 1.5)
                mod.bias.uniform_(-0.5, 0.5)
                mod.running_mean.uniform_(-0.5, 0.5)
                mod.running_var.uniform_(0.5, 2.0)
    return model.eval()


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().to(torch.float32).numpy().copy()


def _conv_weights(conv: torch.nn.Conv2d) -> List[Tuple[str, np.ndarray]]:
    w = [("kernel", _np(conv.weight.permute(2, 3, 1, 0)))]  # (out, in, kh, kw) -> (kh, kw, in, out)
    if conv.bias is not None:
        w.append(("bias", _np(conv.bias)))
    return w


def _dense_weights(dense: torch.nn.Linear) -> List[Tuple[str, np.ndarray]]:
    return [("kernel", _np(dense.weight.t())), ("bias", _np(dense.bias))]


def _bn_weights(bn: torch.nn.BatchNorm2d) -> List[Tuple[str, np.ndarray]]:
    return [("gamma", _np(bn.weight)), ("beta", _np(bn.bias)), ("moving_mean", _np(bn.running_mean)),
            ("moving_variance", _np(bn.running_var))]


def _conv_config(filters: int, kernel: int, activation: str, use_bias: bool = True) -> dict:
    return {"filters": filters, "kernel_size": [kernel, kernel], "strides": [1, 1], "padding": "same",
            "data_format": "channels_last", "dilation_rate": [1, 1], "groups": 1, "activation": activation,
            "use_bias": use_bias}


def _bn_config() -> dict:
    return {"axis": -1, "momentum": 0.99, "epsilon": 0.001, "center": True, "scale": True}


def _pool_config(size: int) -> dict:
    return {"pool_size": [size, size], "padding": "same", "strides": [size, size], "data_format": "channels_last"}


def _add_cbam(g: KerasGraph, x: Ref, cbam, spatial_order: Tuple[str, str]) -> Ref:
    gap = g.add("GlobalAveragePooling2D", [x], {"data_format": "channels_last", "keepdims": True})
    gmp = g.add("GlobalMaxPooling2D", [x], {"data_format": "channels_last", "keepdims": True})
    a = g.add("Dense", [gap], {"units": cbam.hidden, "activation": "relu", "use_bias": True},
              _dense_weights(cbam.mlp1))
    m = g.call(a[0], [gmp])
    a = g.add("Dense", [a], {"units": cbam.channels, "activation": "linear", "use_bias": True},
              _dense_weights(cbam.mlp2))
    m = g.call(a[0], [m])
    gate = g.add("Activation", [g.add("Add", [a, m])], {"activation": "sigmoid"})
    y = g.add("Multiply", [x, gate])
    red = {"mean": g.add("Lambda", [y], {"function": _MEAN_FN}), "max": g.add("Lambda", [y], {"function": _MAX_FN})}
    s = g.add("Concatenate", [red[k] for k in spatial_order], {"axis": -1})
    kernel = cbam.spatial.weight.permute(2, 3, 1, 0)  # MeanSpot's input channels are [mean, max]
    if tuple(spatial_order) == ("max", "mean"):
        kernel = kernel.flip(2)
    bn = cbam.spatial_bn
    s = g.add("Conv2D", [s], _conv_config(1, cbam.spatial.kernel_size[0], "linear" if bn else "sigmoid", False),
              [("kernel", _np(kernel))])
    if bn is not None:  # the official CBAM: BatchNorm after the spatial conv
        s = g.add("Activation", [g.add("BatchNormalization", [s], _bn_config(), _bn_weights(bn))],
                  {"activation": "sigmoid"})
    return g.add("Multiply", [y, s])


def meanspot_graph(model: MeanSpot, spatial_order: Tuple[str, str] = ("mean", "max"),
                   head_order: Optional[Sequence[str]] = None,
                   concat_order: Sequence[str] = BRANCH_NAMES) -> KerasGraph:
    """The Keras functional graph of ``model`` with its weights (MEAN's code + Keras ``cbam_block``).

    ``spatial_order``: CBAM spatial input order (the spatial kernels are permuted
    to match, so the file computes the same function); ``head_order``: order of
    the heads (outputs); ``concat_order``: order of the branches in the merge
    (the head conv kernels are permuted to match).
    """
    g = KerasGraph()
    g.inputs = [g.add("InputLayer", [], {"shape": [None, 42, 42, 1]}) for _ in BRANCH_NAMES]
    ends = []
    for name, t in zip(BRANCH_NAMES, g.inputs):
        br = model.branches[name]
        t = g.add("Conv2D", [t], _conv_config(br.conv.out_channels, 5, "relu"), _conv_weights(br.conv))
        t = g.add("BatchNormalization", [t], _bn_config(), _bn_weights(br.bn))
        if br.cbam is not None:
            t = _add_cbam(g, t, br.cbam, spatial_order)
        t = g.add("MaxPooling2D", [t], _pool_config(3))
        ends.append(g.add("Dropout", [t], {"rate": 0.3}))
    merged = g.add("Concatenate", [ends[BRANCH_NAMES.index(b)] for b in concat_order], {"axis": -1})
    starts = {"u": 0, "v": 3, "os": 6}
    channels = [c for b in concat_order for c in range(starts[b], starts[b] + model.branches[b].conv.out_channels)]
    for hname in head_order or model.head_names:
        head = model.heads[hname]
        weights = _conv_weights(head.conv)
        weights[0] = ("kernel", weights[0][1][:, :, channels, :])
        t = g.add("Conv2D", [merged], _conv_config(8, 5, "relu"), weights)
        if head.cbam is not None:
            t = _add_cbam(g, t, head.cbam, spatial_order)
        t = g.add("Flatten", [g.add("MaxPooling2D", [t], _pool_config(2))], {"data_format": "channels_last"})
        t = g.add("Dropout", [t], {"rate": 0.2})
        act = "softmax" if hname == "recog" else "linear"
        g.outputs.append(g.add("Dense", [t], {"units": head.dense.out_features, "activation": act,
                                              "use_bias": True}, _dense_weights(head.dense), name=hname))
    return g


# ---------------------------------------------------------------------------------------------
# Serialisation
# ---------------------------------------------------------------------------------------------

def _lambda_code(fn: Callable) -> str:
    return base64.b64encode(marshal.dumps(fn.__code__)).decode("ascii")


def _layer_config(layer: Layer, keras3: bool) -> dict:
    cfg = {"name": layer.name, "trainable": True, "dtype": "float32"}
    for k, v in layer.config.items():
        if k == "function":  # Lambda
            code = _lambda_code(v)
            if keras3:
                cfg[k] = {"class_name": "__lambda__", "config": {"code": code, "defaults": None, "closure": None}}
            else:
                cfg.update(function=[code, None, None], function_type="lambda", module="__main__",
                           output_shape=None, output_shape_type="raw", arguments={})
        elif k == "shape":  # InputLayer
            cfg["batch_shape" if keras3 else "batch_input_shape"] = v
        elif k == "axis" and layer.cls == "BatchNormalization" and not keras3:
            cfg[k] = [3]  # TF 2.x writes the resolved axis list
        else:
            cfg[k] = v
    return cfg


def model_config(g: KerasGraph, keras3: bool) -> dict:
    """The ``model_config`` / ``config.json`` of the graph, in Keras 3 or TF 2.x (Keras 2) form."""
    def tensor(ref):
        return {"class_name": "__keras_tensor__", "config": {"shape": None, "dtype": "float32",
                                                             "keras_history": list(ref)}}
    layers = []
    for layer in g.ordered():
        if keras3:
            nodes = [{"args": [[tensor(r) for r in node]] if layer.cls in _LIST_INPUT else
                      [tensor(r) for r in node], "kwargs": {}} for node in layer.nodes if node]
            layers.append({"module": "keras.layers", "class_name": layer.cls,
                           "config": _layer_config(layer, True), "registered_name": None,
                           "name": layer.name, "inbound_nodes": nodes})
        else:
            nodes = [[[r[0], r[1], r[2], {}] for r in node] for node in layer.nodes if node]
            layers.append({"class_name": layer.cls, "config": _layer_config(layer, False), "name": layer.name,
                           "inbound_nodes": nodes})
    ins = [list(r) for r in g.inputs]
    outs = [list(r) for r in g.outputs]
    if keras3:
        return {"module": "keras.src.models.functional", "class_name": "Functional",
                "config": {"name": "functional", "trainable": True, "layers": layers, "input_layers": ins,
                           "output_layers": outs[0] if len(outs) == 1 else outs},
                "registered_name": "Functional", "build_config": {"input_shape": None}, "compile_config": {}}
    return {"class_name": "Functional", "config": {"name": "model", "layers": layers, "input_layers": [ins],
                                                   "output_layers": outs},
            "keras_version": "2.4.0", "backend": "tensorflow"}


def _bytes_array(items: Sequence[str]) -> np.ndarray:
    return np.array([s.encode("utf8") for s in items], dtype="S" + str(max([1] + [len(s) for s in items])))


def _write_legacy(group: h5py.Group, g: KerasGraph, suffix: str) -> None:
    """``layer_names`` + per layer ``weight_names`` and ``<layer>/<layer>/<var><suffix>`` datasets."""
    layers = g.ordered()
    group.attrs["layer_names"] = _bytes_array([lay.name for lay in layers])
    for lay in layers:
        lg = group.create_group(lay.name)
        names = [f"{lay.name}/{var}{suffix}" for var, _ in lay.weights]
        lg.attrs["weight_names"] = _bytes_array(names)
        for wname, (_, arr) in zip(names, lay.weights):
            lg.create_dataset(wname, data=arr)
        for var, arr in lay.unlisted:
            lg.create_dataset(f"{lay.name}/{var}{suffix}", data=arr)


def _write_keras3_tree(f: h5py.File, g: KerasGraph, record_names: bool) -> None:
    """``layers/<class_snake>[_n]/vars/<i>``, numbered per class in ``model.layers`` order."""
    root = f.create_group("layers")
    counters: Dict[str, int] = {}
    for lay in g.ordered():
        snake = _snake(lay.cls)
        n = counters.get(snake, -1) + 1
        counters[snake] = n
        vg = root.create_group(snake if n == 0 else f"{snake}_{n}").create_group("vars")
        if record_names:  # Keras >= 3.? records the layer name; older versions do not
            vg.attrs["name"] = lay.name
        for i, (_, arr) in enumerate(lay.weights + lay.unlisted):
            vg.create_dataset(str(i), data=arr)
    f.create_group("vars").attrs["name"] = "functional"


def write_tf2_weights(g: KerasGraph, path) -> None:
    """TF 2.x ``model.save_weights('x.h5')`` (most published MEAN files)."""
    with h5py.File(path, "w") as f:
        f.attrs["backend"] = b"tensorflow"
        f.attrs["keras_version"] = b"2.4.0"
        _write_legacy(f, g, ":0")


def write_tf2_model(g: KerasGraph, path) -> None:
    """TF 2.x ``model.save('x.h5')``: ``model_config`` + ``model_weights``."""
    with h5py.File(path, "w") as f:
        f.attrs["backend"] = "tensorflow"
        f.attrs["keras_version"] = "2.4.0"
        f.attrs["model_config"] = json.dumps(model_config(g, keras3=False))
        mw = f.create_group("model_weights")
        mw.attrs["backend"] = b"tensorflow"
        mw.attrs["keras_version"] = b"2.4.0"
        _write_legacy(mw, g, ":0")


def write_keras3_h5(g: KerasGraph, path) -> None:
    """Keras 3 ``model.save('x.h5')``: like TF 2.x, weight names without ``:0``."""
    with h5py.File(path, "w") as f:
        f.attrs["backend"] = "jax"
        f.attrs["keras_version"] = "3.15.1"
        f.attrs["model_config"] = json.dumps(model_config(g, keras3=True))
        mw = f.create_group("model_weights")
        mw.attrs["backend"] = "jax"
        mw.attrs["keras_version"] = "3.15.1"
        _write_legacy(mw, g, "")
        mw.create_group("top_level_model_weights").attrs["weight_names"] = _bytes_array([])


def write_keras3_weights(g: KerasGraph, path, record_names: bool = True) -> None:
    """Keras 3 ``model.save_weights('x.weights.h5')``: the weight tree, no graph."""
    with h5py.File(path, "w") as f:
        _write_keras3_tree(f, g, record_names)


def write_keras3_zip(g: KerasGraph, path, record_names: bool = True) -> None:
    """Keras 3 ``model.save('x.keras')``: zip of config.json, metadata.json, model.weights.h5."""
    buf = io.BytesIO()
    with h5py.File(buf, "w") as f:
        _write_keras3_tree(f, g, record_names)
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("metadata.json", json.dumps({"keras_version": "3.15.1", "date_saved": "2026-01-01@00:00:00"}))
        zf.writestr("config.json", json.dumps(model_config(g, keras3=True)))
        zf.writestr("model.weights.h5", buf.getvalue())


#: layout name (as in ``meanspot_fused.io.keras.LAYOUTS``) -> (writer, file suffix)
WRITERS = {
    "tf2-weights": (write_tf2_weights, ".h5"),
    "tf2-model": (write_tf2_model, ".h5"),
    "keras3-h5": (write_keras3_h5, ".h5"),
    "keras3-weights": (write_keras3_weights, ".weights.h5"),
    "keras3-zip": (write_keras3_zip, ".keras"),
}
#: layouts that carry the functional graph
GRAPH_LAYOUTS = ("tf2-model", "keras3-h5", "keras3-zip")


def write(g: KerasGraph, layout: str, folder, stem: str = "model", **kwargs):
    """Write ``g`` in ``layout`` under ``folder``; return the path."""
    writer, suffix = WRITERS[layout]
    path = folder / f"{stem}{suffix}"
    writer(g, path, **kwargs)
    return path
