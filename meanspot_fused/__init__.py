"""meanspot_fused: fused CPU/CUDA inference for MEAN-Spot networks with CBAM.

* :class:`MeanSpot`, :class:`CBAM`: the pure-PyTorch reference (Keras numerics).
* :mod:`meanspot_fused.ops`: the fused torch ops (conv block, CBAM pools, CBAM).
* :func:`fuse`: a drop-in module computing a ``MeanSpot`` through the ops.
* :func:`load_keras`: Keras files (TF 2.x and Keras 3) to ``MeanSpot``, h5py only.
* ``python -m meanspot_fused predict``: score feature files (:mod:`meanspot_fused.predict`).
"""
from . import ops
from .fuse import FusedMeanSpot, fuse
from .keras import KerasFormatError, load_keras
from .predict import PredictError, load_model, predict_file, save_model
from .reference import CBAM, HEADS, PLACEMENTS, MeanSpot

__version__ = "0.1.0"

__all__ = ["CBAM", "MeanSpot", "PLACEMENTS", "HEADS", "fuse", "FusedMeanSpot", "ops", "load_keras",
           "KerasFormatError", "PredictError", "load_model", "save_model", "predict_file", "__version__"]
