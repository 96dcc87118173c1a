"""Shared fixtures.

``cpu_level``: runs a test once per CPU instruction-set level this build has
and this machine runs (DEFAULT, AVX2, AVX512), by switching the kernels in
process; modules that hold the CPU kernels to their references use it with
``pytestmark = pytest.mark.usefixtures("cpu_level")`` (module scope: hypothesis
tests may use it, and a module runs level by level).
"""
import pytest

from meanspot_fused import _C

LEVELS = _C.cpu_capabilities()


@pytest.fixture(params=LEVELS, scope="module")
def cpu_level(request):
    before = _C.cpu_capability()
    _C._force_cpu_capability(request.param)
    try:
        yield request.param
    finally:
        _C._force_cpu_capability(before)
