"""The network stage: MEAN-Spot (with CBAM) on (N, 1, 42, 42) u, v, os maps.

* :mod:`.reference`: :class:`MeanSpot`, :class:`CBAM`, the pure-PyTorch
  reference (Keras numerics, the single source of truth).
* :mod:`.ops`: Python entry points and fake kernels of the fused torch ops.
* :mod:`.fuse`: :func:`fuse` / :class:`FusedMeanSpot`, the reference computed
  through the ops (BatchNorm folding, parameter packing).
"""
from . import ops
from .fuse import FusedMeanSpot, fuse
from .reference import CBAM, HEADS, PLACEMENTS, MeanSpot

__all__ = ["CBAM", "MeanSpot", "PLACEMENTS", "HEADS", "fuse", "FusedMeanSpot", "ops"]
