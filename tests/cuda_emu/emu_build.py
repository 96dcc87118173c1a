"""Builds the SIMT emulator (tests/cuda_emu) in one mode, cached by a hash of its sources.

Modes:
  plain     the kernels at -O2, contraction as nvcc's (see ops_*.cpp);
  race      the kernel translation units instrumented with -fsanitize=thread,
            linked against the emulator's own __tsan_* hooks (no libtsan);
  memcheck  everything under AddressSanitizer and UndefinedBehaviorSanitizer.

The binary lands in <build dir>/<mode>-<hash>/emu, where the build dir is
$MEANSPOT_EMU_BUILD_DIR or build/cuda_emu under the source tree. Used by
test_emu.py and mutants.py.
"""
import hashlib
import os
import platform
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
# The tree whose kernels are built: this checkout, or a mutated copy of it
# ($MEANSPOT_EMU_ROOT, set by mutants.py).
ROOT = Path(os.environ.get("MEANSPOT_EMU_ROOT") or HERE.parent.parent)
RUNTIME = ["emu_runtime.cpp", "emu_main.cpp"]
# Kernel translation units and their FMA contraction policy.
KERNEL_UNITS = {"ops_network.cpp": "fast", "ops_features.cpp": "fast", "ops_tvl1.cpp": "off", "ops_selftest.cpp": "fast"}
MODES = ("plain", "race", "memcheck")


class NoCompiler(RuntimeError):
    pass


def compiler() -> str:
    """The C++ compiler: $CXX, else g++, c++ or clang++ on PATH; NoCompiler when there is none."""
    for cxx in ([os.environ["CXX"]] if os.environ.get("CXX") else ["g++", "c++", "clang++"]):
        if shutil.which(cxx):
            return shutil.which(cxx)
    raise NoCompiler("no C++ compiler found for the CUDA emulator (set CXX or install g++)")


def _sources(root: Path):
    files = [root / "tests" / "cuda_emu" / f for f in sorted(os.listdir(root / "tests" / "cuda_emu"))
             if f.endswith((".cpp", ".h"))]
    files += sorted((root / "csrc" / "cuda" / "kernels").glob("*.cuh")) + sorted((root / "csrc").glob("*.h"))
    return files


def _flags(mode: str, unit: str):
    base = ["-std=c++17", "-Wall", "-Wno-unknown-pragmas", "-fno-math-errno", f"-fmacro-prefix-map={ROOT}/=",
            f"-ffile-prefix-map={ROOT}/="]
    if mode == "plain":
        base += ["-O2"]
    elif mode == "race":
        base += ["-O1", "-g", "-DEMU_RACE"]
    else:
        base += ["-O1", "-g", "-DEMU_MEMCHECK", "-fsanitize=address,undefined", "-fno-sanitize-recover=all",
                 "-fno-omit-frame-pointer"]
    if unit in KERNEL_UNITS:
        base.append(f"-ffp-contract={KERNEL_UNITS[unit]}")
        if KERNEL_UNITS[unit] == "fast" and platform.machine() in ("x86_64", "AMD64"):
            base.append("-mfma")
        if mode == "race":
            base.append("-fsanitize=thread")
    return base


def build(mode: str, root: Path = ROOT, build_dir: Path = None, jobs: int = 2) -> Path:
    """The emulator binary of `mode` for the sources under `root` (built unless cached)."""
    assert mode in MODES, mode
    cxx = compiler()
    h = hashlib.sha256()
    h.update(subprocess.run([cxx, "--version"], capture_output=True, text=True).stdout.encode())
    for f in _sources(root):
        h.update(str(f.relative_to(root)).encode())
        h.update(f.read_bytes())
    for unit in RUNTIME + list(KERNEL_UNITS):
        h.update(" ".join(_flags(mode, unit)).encode())
    build_dir = Path(build_dir or os.environ.get("MEANSPOT_EMU_BUILD_DIR") or root / "build" / "cuda_emu")
    out = build_dir / f"{mode}-{h.hexdigest()[:16]}"
    exe = out / "emu"
    if exe.exists():
        return exe
    tmp = build_dir / f"{mode}-{h.hexdigest()[:16]}.tmp{os.getpid()}"
    tmp.mkdir(parents=True, exist_ok=True)
    src = root / "tests" / "cuda_emu"

    def compile_unit(unit):
        cmd = [cxx, *_flags(mode, unit), "-c", str(src / unit), "-o", str(tmp / (unit[:-4] + ".o"))]
        r = subprocess.run(cmd, capture_output=True, text=True, cwd=root)
        if r.returncode != 0:
            raise RuntimeError(f"emulator build failed ({mode}, {unit}):\n{' '.join(cmd)}\n{r.stderr[-6000:]}")

    units = RUNTIME + list(KERNEL_UNITS)
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        list(pool.map(compile_unit, units))
    link = [cxx, *[str(tmp / (u[:-4] + ".o")) for u in units], "-o", str(tmp / "emu")]
    if mode == "race":
        link.append("-no-pie")  # code addresses as in the symbols: the race reports name source lines
    if mode == "memcheck":
        link += ["-fsanitize=address,undefined"]
    r = subprocess.run(link, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"emulator link failed ({mode}):\n{r.stderr[-6000:]}")
    if out.exists():
        shutil.rmtree(tmp)
    else:
        tmp.rename(out)
    return exe


if __name__ == "__main__":
    import sys
    for m in sys.argv[1:] or MODES:
        print(build(m))
