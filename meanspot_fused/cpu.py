"""The instruction-set level of the CPU kernels.

Every CPU kernel is compiled once per level (``DEFAULT``: the baseline,
``AVX2``: x86-64-v3, ``AVX512``: x86-64-v4; arm64 builds ``DEFAULT`` only) and
the best level this CPU runs is chosen when an op first runs, as ATen chooses
its own. ``MEANSPOT_CPU_CAPABILITY=default|avx2|avx512`` (set before the first
op call) lowers it, e.g. to measure the AVX2 path on an AVX-512 machine; a
level the CPU cannot run, or an unknown name, raises ``ValueError``.
"""
from __future__ import annotations

from typing import List

from . import _C

__all__ = ["cpu_capability", "cpu_capabilities", "build_info"]


def cpu_capability() -> str:
    """The level the CPU ops run at in this process: ``"DEFAULT"``, ``"AVX2"`` or ``"AVX512"``."""
    return _C.cpu_capability()


def cpu_capabilities() -> List[str]:
    """The levels this build has and this CPU runs, lowest first (lower case)."""
    return list(_C.cpu_capabilities())


def build_info() -> dict:
    """How this binary was built (compiler, torch, flags of each level), or {} if unrecorded.

    setup.py writes it beside the extension; benchmark records quote it.
    """
    import json
    from pathlib import Path

    path = Path(__file__).with_name("_build_info.json")
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
