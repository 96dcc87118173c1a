"""``meanspot_fused.ops``, the documented path of the fused torch ops: the code is in
:mod:`meanspot_fused.network.ops`."""
from .network.ops import *  # noqa: F401,F403
from .network.ops import __all__  # noqa: F401
