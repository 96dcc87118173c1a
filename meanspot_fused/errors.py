"""The package's one error family, and the command line's exit codes.

Every error meanspot_fused raises on purpose is a :class:`MeanspotError`, of
one kind per cause; each kind also derives from the built-in exception that
callers would expect (so ``except ValueError`` keeps working) and carries the
exit code the command line returns for it. Messages name the argument or file
and what was expected.

=====  ==========================================================================
code   meaning (the same for every subcommand)
=====  ==========================================================================
0      done
1      some inputs failed: the computation failed on valid input, or some of
       several inputs (videos of ``spot``) failed while the others were written
2      bad usage or input: an option, argument or file the command cannot use
       (nothing was computed or written)
3      a missing optional dependency (the message says what to install)
4      a device problem: the requested device is absent or unusable
130    interrupted (Ctrl-C or SIGTERM); no partial output is left behind
=====  ==========================================================================
"""
from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["MeanspotError", "InputError", "InputTypeError", "FileError", "MissingDependencyError", "DeviceError",
           "ComputeError", "EXIT_OK", "EXIT_FAILED", "EXIT_USAGE", "EXIT_DEPENDENCY", "EXIT_DEVICE",
           "EXIT_INTERRUPTED", "EXIT_CODES", "require"]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_DEPENDENCY = 3
EXIT_DEVICE = 4
EXIT_INTERRUPTED = 130

#: code -> meaning, as ``--help`` and the README print it.
EXIT_CODES = {
    EXIT_OK: "done",
    EXIT_FAILED: "some inputs failed (the computation failed on valid input, or some videos failed)",
    EXIT_USAGE: "bad usage or input (an option, argument or file the command cannot use)",
    EXIT_DEPENDENCY: "a missing optional dependency (the message says what to install)",
    EXIT_DEVICE: "a device problem (the requested device is absent or unusable)",
    EXIT_INTERRUPTED: "interrupted; no partial output is left behind",
}


class MeanspotError(Exception):
    """Base of every error meanspot_fused raises on purpose."""

    exit_code = EXIT_FAILED


class InputError(MeanspotError, ValueError):
    """An argument (value, shape, dtype, option) that is not what the function or command expects."""

    exit_code = EXIT_USAGE


class InputTypeError(InputError, TypeError):
    """An argument of the wrong type (e.g. a list where a tensor is expected)."""


class FileError(MeanspotError, ValueError):
    """A file that is missing, unreadable or not in the expected format."""

    exit_code = EXIT_USAGE


class MissingDependencyError(MeanspotError, ImportError):
    """An optional dependency a stage needs is not installed; the message says what to install."""

    exit_code = EXIT_DEPENDENCY


class DeviceError(MeanspotError, RuntimeError):
    """The requested device is absent or unusable (no GPU, no CUDA kernels in this build)."""

    exit_code = EXIT_DEVICE


class ComputeError(MeanspotError, RuntimeError):
    """A computation failed on valid input."""

    exit_code = EXIT_FAILED


def require(module: str, install: str, purpose: str) -> ModuleType:
    """Import ``module`` or raise :class:`MissingDependencyError` saying what ``purpose`` needs and to run ``install``."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise MissingDependencyError(f"{purpose} needs {module.split('.')[0]}: {install}") from e
