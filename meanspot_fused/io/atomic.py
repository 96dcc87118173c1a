"""Files that appear only when complete: written to a temporary file beside the
target, then moved into place with ``os.replace`` (atomic on one file system).

* :func:`replace_atomically`: write a file through a callback, all or nothing.
* :func:`temp_beside`: the temporary file, for writers that move it themselves.
* :func:`write_folder_atomically`: a folder of files, filled in a hidden
  ``.<name>.partial-*`` folder and renamed into place when complete (a
  folder that exists is complete: runs skip it on a rerun).
"""
from __future__ import annotations

import os
import shutil
import tempfile
from typing import Callable

__all__ = ["temp_beside", "replace_atomically", "write_folder_atomically"]


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


def _new_folder(parent: str, prefix: str) -> str:
    """A new empty hidden folder in ``parent``, with the permissions os.mkdir would give (mkdtemp: 0700)."""
    path = tempfile.mkdtemp(prefix=prefix, dir=parent)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o777 & ~umask)
    return path


def _install_folder(tmp: str, final: str) -> None:
    """Move the finished folder ``tmp`` to ``final``, replacing an old one."""
    if not os.path.exists(final):
        os.rename(tmp, final)
        return
    # A folder cannot be renamed over a non-empty one: move the old one aside
    # first, so that `final` is at every moment either the old or the new one.
    old = tempfile.mkdtemp(prefix=f".{os.path.basename(final)}.old-", dir=os.path.dirname(final))
    os.rmdir(old)
    os.rename(final, old)
    os.rename(tmp, final)
    shutil.rmtree(old, ignore_errors=True)


def write_folder_atomically(parent: str, name: str, fill: Callable[[str], None]) -> str:
    """Call ``fill(tmp)`` on a new hidden folder ``parent/.<name>.partial-*``, then rename it to
    ``parent/<name>`` (replacing an old one); return that path. On any failure the hidden folder is removed,
    so ``parent/<name>`` is at every moment absent, the old folder or the new one."""
    final = os.path.join(parent, name)
    tmp = _new_folder(parent, f".{name}.partial-")
    try:
        fill(tmp)
        _install_folder(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final
