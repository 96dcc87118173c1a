"""Files that appear only when complete: written to a temporary file beside the
target, then moved into place with ``os.replace`` (atomic on one file system).

* :func:`replace_atomically`: write a file through a callback, all or nothing.
* :func:`temp_beside`: the temporary file, for writers that move it themselves.
"""
from __future__ import annotations

import os
import tempfile
from typing import Callable

__all__ = ["temp_beside", "replace_atomically"]


def temp_beside(path: str) -> str:
    """A new empty temporary file in ``path``'s folder (so ``os.replace`` stays on one file system)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp",
                               dir=os.path.dirname(os.path.abspath(path)))
    os.close(fd)
    # mkstemp makes the file private (0600); give it the permissions a plain open() would.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    return tmp


def replace_atomically(path: str, write: Callable[[str], None]) -> None:
    """Call ``write(tmp)`` on a temporary file beside ``path``, then move it to ``path``."""
    tmp = temp_beside(path)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
