"""Old path of the reference model, kept so that existing imports work: the code is in
:mod:`meanspot_fused.network.reference`."""
from .network.reference import (BRANCH_FILTERS, BRANCH_NAMES, CBAM, HEAD_FILTERS, HEADS, INPUT_SIZE,  # noqa: F401
                                KERAS_BN_EPS, KERAS_BN_MOMENTUM, PLACEMENTS, MeanSpot, check_inputs)
