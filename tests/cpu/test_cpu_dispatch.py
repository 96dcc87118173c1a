"""Run-time choice of the CPU kernels' instruction-set level (csrc/cpu/dispatch.cpp).

The kernels themselves are held to their references at every level by the
modules that use the ``cpu_level`` fixture (conftest.py); here: the choice,
the environment variable, its errors, agreement between levels, and that the
binary runs on a baseline x86-64 CPU until it dispatches.
"""
import copy
import os
import platform
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

import meanspot_fused as mf
from meanspot_fused import _C
from meanspot_fused.features import synthetic, tvl1_flow

from helpers import as_tuple, random_inputs, random_model

LEVELS = mf.cpu_capabilities()
X86 = platform.machine().lower() in ("x86_64", "amd64")


def _python(code, **env):
    full = dict(os.environ)
    full.pop("MEANSPOT_CPU_CAPABILITY", None)
    full.update(env)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=full, timeout=300)


def test_levels_of_this_build():
    assert LEVELS[0] == "default"
    if X86:
        assert set(LEVELS) <= {"default", "avx2", "avx512"}
        # An x86-64 build always has all three; the CPU decides which run.
        assert "avx2" in LEVELS or "avx512" not in LEVELS


def test_best_level_by_default():
    r = _python("import meanspot_fused as m; print(m.cpu_capability())")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == LEVELS[-1].upper()


@pytest.mark.parametrize("level", LEVELS)
def test_environment_variable_lowers_the_level(level):
    code = ("import torch, meanspot_fused as m; from meanspot_fused import ops;"
            "y = ops.conv_block(torch.rand(2, 1, 9, 9), torch.rand(3, 1, 3, 3), torch.rand(3));"
            "print(m.cpu_capability(), tuple(y.shape))")
    r = _python(code, MEANSPOT_CPU_CAPABILITY=level.capitalize())  # any case
    assert r.returncode == 0, r.stderr
    assert r.stdout.split()[0] == level.upper()


@pytest.mark.parametrize("value,match", [
    ("sse9", r"MEANSPOT_CPU_CAPABILITY=sse9: expected one of default"),
    ("avx1024", r"expected one of"),
])
def test_bad_environment_variable_is_a_clear_error(value, match):
    # Both the report and every op call raise ValueError naming the variable.
    code = ("import torch, meanspot_fused as m; from meanspot_fused import ops\n"
            "for f in (m.cpu_capability, lambda: ops.channel_pool(torch.rand(1, 2, 3, 3))):\n"
            "    try:\n        f()\n    except ValueError as e:\n        print('ValueError:', e)\n")
    r = _python(code, MEANSPOT_CPU_CAPABILITY=value)
    assert r.returncode == 0, r.stderr
    lines = [l for l in r.stdout.splitlines() if l.startswith("ValueError:")]
    assert len(lines) == 2 and all(re.search(match, l) for l in lines), r.stdout


@pytest.mark.skipif(not X86 or "avx512" in LEVELS, reason="needs an x86-64 CPU without AVX-512")
def test_level_above_the_cpu_is_refused():
    r = _python("import meanspot_fused as m; m.cpu_capability()", MEANSPOT_CPU_CAPABILITY="avx512")
    assert r.returncode != 0 and "this CPU cannot run the avx512 kernels" in r.stderr


def test_force_rejects_unknown_level():
    with pytest.raises(ValueError, match="expected one of"):
        _C._force_cpu_capability("neon9")


def _at_each_level(fn):
    before = _C.cpu_capability()
    out = {}
    try:
        for level in LEVELS:
            _C._force_cpu_capability(level)
            assert mf.cpu_capability() == level.upper()
            out[level] = fn()
    finally:
        _C._force_cpu_capability(before)
    return out


def test_tvl1_flow_same_bits_at_every_level():
    # Contraction is off and the fused steps are explicit, so the vector width
    # changes nothing: flow and iteration counts are identical (both OpenCV's).
    frames, _ = synthetic.face_video(10, events=((4, "brow", 4, 2.0),), drift=0.05, noise=1.0, seed=11)
    prev, nxt = torch.as_tensor(np.asarray(frames[:-3])), torch.as_tensor(np.asarray(frames[3:]))
    out = _at_each_level(lambda: tvl1_flow(prev, nxt, return_iterations=True))
    ref = out[LEVELS[0]]
    for level, res in out.items():
        for a, b in zip(res, ref):
            assert torch.equal(a, b), f"{level} differs from {LEVELS[0]}"


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 2e-5), (torch.float64, 1e-12)])
def test_network_levels_agree_within_tolerance(dtype, tol):
    # Levels may differ in FMA contraction and vector grouping, so float32
    # results agree to rounding (the tolerance of test_fuse.py against float64).
    model = random_model("all", heads=("spot", "recog"), recog_classes=3, seed=3)
    x = random_inputs(37, seed=5)
    with torch.no_grad():
        ref = as_tuple(model(*x))
        fused = mf.fuse(copy.deepcopy(model).to(dtype), mode="network")
        out = _at_each_level(lambda: as_tuple(fused(*(t.to(dtype) for t in x))))
    for level, res in out.items():
        for a, b in zip(res, ref):
            torch.testing.assert_close(a.double(), b, atol=tol, rtol=tol, msg=f"level {level}")


@pytest.mark.skipif(not X86 or shutil.which("objdump") is None, reason="needs x86-64 and objdump")
def test_binary_outside_the_level_kernels_is_baseline_x86_64():
    # A binary built anywhere runs on any x86-64 CPU: code outside the AVX2
    # and AVX512 level namespaces (the host side, the DEFAULT kernels, the
    # dispatcher) uses no ymm/zmm/mask register, so nothing runs an AVX
    # instruction before dispatch.cpp has checked the CPU.
    so = _C.__file__
    dump = subprocess.run(["objdump", "-d", "--no-show-raw-insn", "-C", so], capture_output=True, text=True,
                          check=True).stdout
    fn, offending, level_wide = None, [], 0
    for line in dump.splitlines():
        if line.endswith(">:"):
            fn = line
            continue
        if re.search(r"%[yz]mm|%k[0-7]\b", line):
            if fn and re.search(r"meanspot::cpu::AVX(2|512)::", fn):
                level_wide += 1
            else:
                offending.append(f"{fn}: {line.strip()}")
    assert not offending, "\n".join(offending[:10])
    assert level_wide > 1000  # the check sees the level code (it is not vacuous)


_QEMU_CHECK = r"""
import sys
import numpy as np
import torch
import meanspot_fused as mf
from meanspot_fused.features import tvl1_flow
ref = np.load(sys.argv[1])
model = mf.MeanSpot(cbam="all").eval()
x = [torch.from_numpy(ref[k]) for k in ("u", "v", "os")]
with torch.no_grad():
    err = float((mf.fuse(model, mode="network")(*x).double() - model.double()(*[t.double() for t in x])).abs().max())
flow, it = tvl1_flow(ref["prev"], ref["next"], return_iterations=True)
print("RESULT", mf.cpu_capability(), err, bool(np.array_equal(flow.numpy(), ref["flow"])),
      it[:, 0].tolist() == ref["it"].tolist())
"""


@pytest.mark.skipif(not X86 or shutil.which("qemu-x86_64") is None,
                    reason="needs x86-64 and qemu-user (Debian: qemu-user) to emulate older CPUs")
@pytest.mark.parametrize("cpu_model,level", [("Haswell", "AVX2"), ("SandyBridge", "DEFAULT")])
def test_same_binary_on_an_older_cpu(tmp_path, cpu_model, level):
    # The binary built here, run by qemu's emulation of a CPU without AVX-512
    # (Haswell: AVX2 + FMA) or without AVX2 and FMA (Sandy Bridge): it chooses
    # the level that CPU has, runs without an illegal instruction, and gives
    # the flow of this machine's native level bit for bit (same iteration
    # counts) and the network within float32 rounding of float64.
    frames, _ = synthetic.face_video(6, drift=0.05, noise=1.0, seed=3)
    prev = np.ascontiguousarray(np.asarray(frames[:2])[:, 32:96, 32:96])
    nxt = np.ascontiguousarray(np.asarray(frames[3:5])[:, 32:96, 32:96])
    flow, it = tvl1_flow(prev, nxt, return_iterations=True)
    gen = torch.Generator().manual_seed(1)
    maps = {k: torch.rand(4, 1, 42, 42, generator=gen).numpy() for k in ("u", "v", "os")}
    np.savez(tmp_path / "ref.npz", prev=prev, next=nxt, flow=flow.numpy(), it=it[:, 0].numpy(), **maps)
    script = tmp_path / "check.py"
    script.write_text(_QEMU_CHECK)
    # The interpreter binary itself (pyenv and venvs put scripts or links in front).
    python = os.path.realpath(getattr(sys, "_base_executable", sys.executable))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    env.pop("MEANSPOT_CPU_CAPABILITY", None)
    r = subprocess.run(["qemu-x86_64", "-cpu", cpu_model, python, str(script), str(tmp_path / "ref.npz")],
                       capture_output=True, text=True, env=env, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    line = next(l for l in r.stdout.splitlines() if l.startswith("RESULT"))
    _, got_level, err, same_flow, same_iterations = line.split()
    assert got_level == level
    assert float(err) < 1e-5  # float32 network vs float64 reference (test_fuse.py's tolerance is 1e-4)
    assert same_flow == "True" and same_iterations == "True"
