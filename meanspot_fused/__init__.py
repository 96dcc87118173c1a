"""meanspot_fused: fused CPU/CUDA inference for MEAN-Spot networks with CBAM.

* :class:`MeanSpot`, :class:`CBAM`: the pure-PyTorch reference (Keras numerics).
* :mod:`meanspot_fused.ops`: the fused torch ops (conv block, CBAM pools, CBAM).
* :func:`fuse`: a drop-in module computing a ``MeanSpot`` through the ops.
"""
from . import ops
from .fuse import FusedMeanSpot, fuse
from .reference import CBAM, HEADS, PLACEMENTS, MeanSpot

__version__ = "0.1.0"

__all__ = ["CBAM", "MeanSpot", "PLACEMENTS", "HEADS", "fuse", "FusedMeanSpot", "ops", "__version__"]
