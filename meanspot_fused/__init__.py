"""meanspot_fused: fused CPU/CUDA inference for MEAN-Spot networks with CBAM.

* :class:`MeanSpot`, :class:`CBAM`: the pure-PyTorch reference (Keras numerics).
* :mod:`meanspot_fused.ops`: the fused torch ops (conv block, CBAM pools, CBAM).
* :func:`cpu_capability`: the instruction-set level the CPU kernels run at (AVX512, AVX2, DEFAULT).
* :func:`fuse`: a drop-in module computing a ``MeanSpot`` through the ops.
* :func:`load_keras`: Keras files (TF 2.x and Keras 3) to ``MeanSpot``, h5py only.
* :func:`save_model` / :func:`load_model`: PyTorch checkpoints (and Keras files).
* ``python -m meanspot_fused predict``: score feature files (:func:`predict_file`).
* ``python -m meanspot_fused spot``: face videos to spotted intervals (:func:`spot_videos`,
  :mod:`meanspot_fused.pipeline`).

The code is organised by stage: :mod:`.features` (TV-L1 flow, MEAN's
features), :mod:`.network` (reference, ops, fuse), :mod:`.spotting` (peaks,
intervals, MEGC evaluation), :mod:`.io` (Keras files, checkpoints, feature
files, frames, plots), :mod:`.pipeline` and :mod:`.predict` (the engines of
``spot`` and ``predict``) and :mod:`.cli` (the command line).
"""
from . import ops
from .cpu import cpu_capabilities, cpu_capability
# meanspot_fused.fuse is also the old path of a module (fuse.py). It is loaded
# before the name is bound to the function: loaded later, the import system
# would rebind the attribute fuse to the module.
from . import fuse  # noqa: F401
from .network import CBAM, HEADS, PLACEMENTS, FusedMeanSpot, MeanSpot, fuse  # noqa: F811

__version__ = "0.1.0"

# The Keras importer and the predict command need h5py (and tqdm); they load on
# first use, so the ops, the reference and fuse() work in an environment
# without them (a bare GPU machine with only torch).
_LAZY = {"load_keras": "io.keras", "KerasFormatError": "io.errors", "PredictError": "io.errors",
         "load_model": "io.checkpoints", "save_model": "io.checkpoints", "predict_file": "predict",
         "spot_videos": "pipeline", "SpotSettings": "pipeline"}


def __getattr__(name):
    if name in _LAZY:
        import importlib
        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["cpu_capability", "cpu_capabilities", "CBAM", "MeanSpot", "PLACEMENTS", "HEADS", "fuse", "FusedMeanSpot", "ops", "load_keras",
           "KerasFormatError", "PredictError", "load_model", "save_model", "predict_file", "spot_videos",
           "SpotSettings", "__version__"]
