"""The features stage: frame pairs -> MEAN's (N, 3, 42, 42) inputs of the network.

* :mod:`.flow`: :func:`tvl1_flow`, OpenCV's DualTVL1 batched as one op.
* :mod:`.mean`: :func:`mean_rois`, :func:`optical_strain`, :func:`mean_features`,
  :func:`video_features` (flow from :mod:`.flow`, then the fused op).
* :mod:`.ops`: the fused op ``meanspot_fused::mean_roi_features``.
* :mod:`.reference`: MEAN's own OpenCV/pandas code path (tests, benchmarks).
* :mod:`.synthetic`: face frames with known micro-movements (tests, benchmarks).
"""
from .flow import TVL1_DEFAULTS, tvl1_flow
from .mean import mean_features, mean_rois, optical_strain, video_features
from .ops import mean_roi_features

__all__ = ["tvl1_flow", "TVL1_DEFAULTS", "mean_features", "mean_rois", "optical_strain", "video_features",
           "mean_roi_features"]
