"""Old path of the fused module, kept so that existing imports work: the code is in
:mod:`meanspot_fused.network.fuse`."""
from .network.fuse import MODES, OPS_CHUNK, FusedMeanSpot, fold_batchnorm, fuse, pack_network  # noqa: F401
