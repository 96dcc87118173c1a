"""Errors of the file readers: a file, array or option the package cannot use.

Both are ``ValueError`` subclasses; the command line reports them with exit code 2.
"""

__all__ = ["KerasFormatError", "PredictError"]


class KerasFormatError(ValueError):
    """A file is not a Keras file, or does not hold a MEAN-Spot network that maps exactly."""


class PredictError(ValueError):
    """A model file, features file, array or option that prediction cannot use."""
