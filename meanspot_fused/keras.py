"""Deprecated old path of the Keras importer: use :mod:`meanspot_fused.io.keras`
(or ``meanspot_fused.load_keras``). Kept for one release, with a warning."""
import warnings

from .io.keras import LAYOUTS, KerasFormatError, load_keras  # noqa: F401

warnings.warn("meanspot_fused.keras is deprecated: import from meanspot_fused.io.keras "
              "(or use meanspot_fused.load_keras)", DeprecationWarning, stacklevel=2)
