"""Errors of the file readers: a file, array or option the package cannot use.

Both belong to the package's error family (meanspot_fused.errors) and are
``ValueError`` subclasses; the command line reports them with exit code 2.
"""
from ..errors import FileError, InputError

__all__ = ["KerasFormatError", "PredictError"]


class KerasFormatError(FileError):
    """A file is not a Keras file, or does not hold a MEAN-Spot network that maps exactly."""


class PredictError(InputError):
    """A model file, features file, array or option that prediction cannot use."""
