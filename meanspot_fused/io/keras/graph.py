"""The functional graph of a Keras model config, walked into a mapping plan.

* :class:`_Graph`: the layers of a functional model config (Keras 2 or
  Keras 3 serialisation) and the tensors that connect them (:data:`TensorRef`).
* :func:`_bind_keras3_names`: keys a Keras 3 weight store by the config's layer
  names (Keras 3 names weight groups by layer class, not by layer).
* :class:`_GraphWalker`: the **graph** strategy of ``load_keras``: walks the
  graph from the three inputs along MEAN-Spot's structure, checking every
  layer, into a :class:`~.mapping._Plan`.

About 540 lines, on purpose: the walker and the graph it walks are one piece
(each step of the walk asks the graph about the layer's neighbours), and
splitting them would put half of each rule in another file.
"""
from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

from ...network.reference import BRANCH_FILTERS, BRANCH_NAMES, HEAD_FILTERS, INPUT_SIZE, KERAS_BN_EPS
from ..errors import KerasFormatError
from .layouts import _KIND_OF_CLASS, _LayerWeights, _WeightStore
from .mapping import _BranchPlan, _CbamPlan, _HeadPlan, _Options, _Plan

# Layers that are the identity at inference and may follow a pooling layer.
_DROPOUTS = ("Dropout", "SpatialDropout2D", "GaussianDropout", "AlphaDropout")


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
# The walk
# ----------------------------------------------------------------------------------------------

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
