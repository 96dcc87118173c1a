"""Old path of the Keras importer, kept so that existing imports work: the code is in
:mod:`meanspot_fused.io.keras` (needs h5py)."""
from .io.keras import LAYOUTS, KerasFormatError, load_keras  # noqa: F401
