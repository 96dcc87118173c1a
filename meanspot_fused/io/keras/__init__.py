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

Two strategies map the file onto :class:`~meanspot_fused.network.MeanSpot`:

* **graph** (the layouts with a model config; :mod:`.graph`): the functional graph is walked
  from the three inputs, layer by layer, and every layer must be where MEAN-Spot
  has one (conv -> ReLU -> BN -> [CBAM] -> pool -> [dropout] -> concat, and per
  head conv -> ReLU -> [CBAM] -> pool -> flatten -> [dropout] -> Dense).
  Branches come from the model's inputs (u, v, os), heads from the output
  Dense's activation (linear Dense(1): ``spot``, softmax: ``recog``), the
  concatenation order and the CBAM spatial input order (mean/max, read from the
  Lambda's code) from the graph itself.
* **weights only** (``save_weights`` and ``.weights.h5``; :mod:`.mapping`): layers are
  classified by their weight shapes (branch conv ``(5,5,1,F)``, head conv
  ``(5,5,14,8)``, CBAM spatial conv ``(k,k,2,1)``, head Dense ``(392,n)``, CBAM
  MLP Dense) and assigned in Keras's ``model.layers`` order, which sorts layers
  by depth and breaks ties in the order u, v, os and then head by head. What
  ordering cannot tell is settled by keyword arguments (see :func:`load_keras`).

Either way every tensor's shape is checked, every weight in the file must be
used exactly once, and anything that does not fit raises
:class:`KerasFormatError` naming the layer and what was expected.

Here: recognising the layout, opening the file, :func:`load_keras`. The
weights are read by :mod:`.layouts`, the model config and its walk are in
:mod:`.graph`, the weights-only plan and the building of the model in :mod:`.mapping`.
"""
from __future__ import annotations

import io
import json
import os
import zipfile
from typing import Optional, Sequence, Tuple, Union

import h5py

from ...network.reference import BRANCH_NAMES, HEADS, MeanSpot
from ..errors import KerasFormatError
from .graph import _bind_keras3_names, _Graph, _GraphWalker
from .layouts import _read_keras3, _read_legacy, _WeightStore
from .mapping import _build, _Options, _plan_from_weights

__all__ = ["KerasFormatError", "load_keras", "LAYOUTS"]

#: Names of the Keras layouts :func:`load_keras` reads (see the module docstring).
LAYOUTS = ("tf2-weights", "tf2-model", "keras3-h5", "keras3-weights", "keras3-zip")

PathLike = Union[str, "os.PathLike[str]"]


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
