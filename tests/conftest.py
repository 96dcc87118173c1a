"""Shared fixtures.

``cpu_level``: runs a test once per CPU instruction-set level this build has
and this machine runs (DEFAULT, AVX2, AVX512), by switching the kernels in
process; modules that hold the CPU kernels to their references use it with
``pytestmark = pytest.mark.usefixtures("cpu_level")`` (module scope: hypothesis
tests may use it, and a module runs level by level).

``device``: runs a test on the CPU and, when a GPU is present, on CUDA, from
one definition (the CUDA case carries the ``cuda`` marker; without a GPU it is
skipped). Tests that take it move their inputs there and compare with the
float64 CPU reference.
"""
import pytest
import torch

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


DEVICES = ["cpu", pytest.param("cuda", marks=[pytest.mark.cuda, pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA device")])]


@pytest.fixture(params=DEVICES)
def device(request):
    return torch.device(request.param)
