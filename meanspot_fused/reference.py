"""Deprecated old path of the reference model: use :mod:`meanspot_fused.network.reference`
(or ``meanspot_fused.MeanSpot``). Kept for one release, with a warning."""
import warnings

from .network.reference import (BRANCH_FILTERS, BRANCH_NAMES, CBAM, HEAD_FILTERS, HEADS, INPUT_SIZE,  # noqa: F401
                                KERAS_BN_EPS, KERAS_BN_MOMENTUM, PLACEMENTS, MeanSpot, check_inputs)

warnings.warn("meanspot_fused.reference is deprecated: import from meanspot_fused.network.reference "
              "(or use meanspot_fused.MeanSpot)", DeprecationWarning, stacklevel=2)
