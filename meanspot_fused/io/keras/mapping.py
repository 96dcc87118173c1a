"""Which Keras layer feeds which MeanSpot parameter, and the MeanSpot built from that.

* :class:`_Plan` (with :class:`_BranchPlan`, :class:`_HeadPlan`,
  :class:`_CbamPlan`): the weighted layers assigned to branches, heads and
  CBAM blocks; :class:`_Options`: what the caller of ``load_keras`` settled.
* :func:`_plan_from_weights`: the **weights only** strategy, for files without
  a model config: layers classified by weight shape and assigned in Keras's
  ``model.layers`` order (the **graph** strategy is in :mod:`.graph`).
* :func:`_build`: a float32 :class:`MeanSpot` filled from a plan, every shape
  checked and every weight of the file used exactly once.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch

from ...network.reference import BRANCH_FILTERS, BRANCH_NAMES, HEAD_FILTERS, INPUT_SIZE, MeanSpot
from ..errors import KerasFormatError
from .layouts import _KIND_TITLE, _VAR_NAMES, _LayerWeights, _WeightStore

_MERGED_CHANNELS = sum(BRANCH_FILTERS.values())  # 14
_POOLED = INPUT_SIZE // 3 // 2  # 7
_FLAT = _POOLED * _POOLED * HEAD_FILTERS  # 392


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
