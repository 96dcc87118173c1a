"""``meanspot_fused.ops``: every fused torch op of the package, in one place.

Each op is found by its name in four places: its schema and checks in
``csrc/ops/<op>.cpp``, its CPU entry in ``csrc/cpu/<op>_cpu.cpp`` (kernels in
``csrc/cpu/kernels/``), its CUDA kernel in ``csrc/cuda/<op>_cuda.cu``, and its
Python wrapper and fake kernel in the stage's ``ops`` module
(:mod:`meanspot_fused.network.ops`, :mod:`meanspot_fused.features.ops`), all
re-exported here.
"""
from .features.ops import mean_roi_features, tvl1_flow
from .network.ops import cbam, channel_pool, conv_block, meanspot_net, spatial_pool

__all__ = ["conv_block", "channel_pool", "spatial_pool", "cbam", "meanspot_net", "tvl1_flow", "mean_roi_features"]
