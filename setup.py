"""Build of meanspot_fused._C with torch.utils.cpp_extension (ninja).

C++ kernels are always built. CUDA kernels are added when a CUDA build of
torch and a CUDA toolkit are both present, or when FORCE_CUDA=1 (to compile
on a machine without a GPU; TORCH_CUDA_ARCH_LIST picks the architectures).
MEANSPOT_NO_CUDA=1 disables them.

The CPU kernels (csrc/cpu/kernels/) are compiled once per instruction-set
level, as ATen's are: DEFAULT (the compiler's baseline) everywhere, plus AVX2
(-march=x86-64-v3) and AVX512 (-march=x86-64-v4) on x86-64; the rest of the
extension is compiled for the baseline, and csrc/cpu/dispatch.cpp picks the
best level the CPU runs when an op is first called. So one binary runs on any
x86-64 CPU and is fast on each; no flag of this build depends on the
building machine.
"""
import glob
import json
import os
import platform
import re
import shutil
import subprocess
import sys

from setuptools import find_packages, setup

import torch
from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension

ROOT = os.path.dirname(os.path.abspath(__file__))


def _flag(name: str) -> bool:
    return os.environ.get(name, "0").lower() in ("1", "true", "yes", "on")


def _torch_at_least(major: int, minor: int) -> bool:
    parts = torch.__version__.split("+")[0].split(".")
    return (int(parts[0]), int(parts[1])) >= (major, minor)


def _cuda_wanted() -> tuple:
    if _flag("MEANSPOT_NO_CUDA"):
        return False, "disabled by MEANSPOT_NO_CUDA=1"
    if torch.version.cuda is None:
        if _flag("FORCE_CUDA"):
            sys.exit("meanspot_fused: FORCE_CUDA=1 needs a CUDA build of torch, but torch "
                     f"{torch.__version__} is a CPU build")
        return False, f"torch {torch.__version__} is a CPU build"
    nvcc = os.path.join(CUDA_HOME, "bin", "nvcc") if CUDA_HOME else None
    if nvcc is None or not os.path.exists(nvcc):
        if _flag("FORCE_CUDA"):
            sys.exit("meanspot_fused: FORCE_CUDA=1 but no CUDA toolkit was found; set CUDA_HOME")
        return False, "no CUDA toolkit (set CUDA_HOME)"
    if _flag("FORCE_CUDA"):
        return True, "FORCE_CUDA=1"
    if torch.cuda.is_available():
        return True, "CUDA torch, toolkit and GPU present"
    return False, "no GPU visible (set FORCE_CUDA=1 to compile the CUDA kernels anyway)"


def _cpu_levels() -> dict:
    """Instruction-set level -> its compiler flags (see csrc/cpu/kernels/simd.h).

    -fno-trapping-math lets GCC compute both sides of a branch holding a
    division and select (tvl1's thresholding step), which vectorizes the
    solver's row loop on AVX2 (no masked division there); no result changes,
    only floating-point exception flags, which nothing reads.
    -Werror=psabi: a vector wider than the level's registers passed or
    returned by value is an error, not a silent trip through the stack.
    """
    common = ["-O3", "-fno-math-errno", "-fno-trapping-math", "-fopenmp-simd", "-Werror=psabi"]
    levels = {"DEFAULT": common}
    if platform.machine().lower() in ("x86_64", "amd64"):
        levels["DEFAULT"] = common + ["-march=x86-64", "-mtune=generic"]
        levels["AVX2"] = common + ["-march=x86-64-v3", "-mtune=generic"]
        # Explicit 64-byte vectors use zmm anyway; let auto-vectorized loops do too.
        levels["AVX512"] = common + ["-march=x86-64-v4", "-mtune=generic", "-mprefer-vector-width=512"]
    return levels


LEVEL_SOURCES = sorted(glob.glob(os.path.join("csrc", "cpu", "kernels", "*.cpp")))


def _check_level_object(obj: str, level: str) -> None:
    """Fail the build when a level object could leak code into another level.

    Every global symbol must lie in namespace meanspot::cpu::<level> (a weak
    std:: or meanspot:: instantiation outside it may be the copy the linker
    keeps for every caller), and no static initializer may exist (it would run
    at load time, on any CPU).
    """
    nm = shutil.which("nm")
    objdump = shutil.which("objdump")
    if nm is None or objdump is None:
        print(f"meanspot_fused: binutils not found; symbol check of {obj} skipped")
        return
    out = subprocess.run([nm, "--defined-only", "-g", obj], check=True, capture_output=True, text=True).stdout
    # Itanium mangling of a name nested in meanspot::cpu::<level> (functions,
    # data, local entities _ZZ, guard variables _ZGV, typeinfo _ZTI/_ZTS, vtables _ZTV).
    ours = re.compile(rf"_Z(?:Z|GV|T[VIS])?N[rVK]*8meanspot3cpu{len(level)}{level}")
    # The personality routine's reference: data, the same in every object.
    allowed = {"DW.ref.__gxx_personality_v0"}
    symbols = [line.split()[-1] for line in out.splitlines() if line.strip()]
    bad = [subprocess.run(["c++filt", sym], capture_output=True, text=True).stdout.strip() or sym
           for sym in symbols if sym not in allowed and not ours.match(sym)]
    sections = subprocess.run([objdump, "-h", obj], check=True, capture_output=True, text=True).stdout
    if re.search(r"\.(init_array|ctors)\b", sections):
        bad.append("(a static initializer: .init_array)")
    if bad:
        sys.exit(f"meanspot_fused: {obj} ({level} level) defines code outside namespace meanspot::cpu::{level}:\n  " +
                 "\n  ".join(bad[:20]) + "\nkeep csrc/cpu/kernels/ free of torch/std containers and of non-inlined "
                 "shared helpers (see csrc/cpu/kernels/simd.h)")


class BuildLevels(BuildExtension):
    """BuildExtension that first compiles csrc/cpu/kernels/ once per level.

    CppExtension has one set of flags for all sources, so the level objects are
    compiled here (through the same ninja-backed compiler, each level in its
    own folder) and linked into the extension as extra objects.
    """

    def build_extension(self, ext):
        base = [f for f in ext.extra_compile_args["cxx"] if not f.startswith(("-O", "-march", "-mtune", "-fopenmp"))]
        for level, flags in _cpu_levels().items():
            objects = self.compiler.compile(
                LEVEL_SOURCES, output_dir=os.path.join(self.build_temp, "cpu_levels", level),
                macros=[("CPU_CAPABILITY", level), (f"CPU_CAPABILITY_{level}", None)],
                include_dirs=ext.include_dirs, extra_postargs={"cxx": base + flags, "nvcc": []},
                depends=ext.depends)
            for obj in objects:
                _check_level_object(obj, level)
            ext.extra_objects = [o for o in ext.extra_objects if f"{os.sep}{level}{os.sep}" not in o] + objects
        super().build_extension(ext)
        self._write_build_info(ext)

    def _write_build_info(self, ext):
        """meanspot_fused/_build_info.json: how this binary was built, for benchmark records."""
        try:
            compiler = subprocess.run([self.compiler.compiler_so[0], "--version"], capture_output=True,
                                      text=True).stdout.splitlines()[0]
        except (OSError, IndexError):
            compiler = "unknown"
        info = {"torch": torch.__version__, "cuda": torch.version.cuda, "compiler": compiler,
                "machine": platform.machine(), "host_flags": ext.extra_compile_args["cxx"],
                "cpu_levels": _cpu_levels(),
                "cuda_kernels": "nvcc" in ext.extra_compile_args and bool(ext.extra_compile_args.get("nvcc"))}
        targets = {os.path.join(self.build_lib, "meanspot_fused")}
        if self.inplace or getattr(self, "editable_mode", False):
            targets.add(os.path.join(ROOT, "meanspot_fused"))
        for folder in targets:
            os.makedirs(folder, exist_ok=True)
            with open(os.path.join(folder, "_build_info.json"), "w") as f:
                json.dump(info, f, indent=1)


def get_extensions():
    use_cuda, why = _cuda_wanted()
    sources = sorted(glob.glob(os.path.join("csrc", "ops", "*.cpp")) + glob.glob(os.path.join("csrc", "cpu", "*.cpp")))
    # No -std flag: torch's cpp_extension picks the standard its headers need
    # (C++17 up to torch 2.13, C++20 from 2.14).
    # -fno-math-errno: no kernel reads errno, and with it GCC vectorizes sqrt
    # (otherwise a branch to the libm call for negative inputs blocks it).
    cxx = ["-O3", "-fno-math-errno", "-fdiagnostics-color=always"]
    # torch >= 2.6 defines Py_LIMITED_API itself for py_limited_api extensions.
    limited_api = [] if _torch_at_least(2, 6) else ["-DPy_LIMITED_API=0x03090000"]
    cxx += limited_api
    levels = _cpu_levels()
    if "AVX2" in levels:
        define_macros_cpu = [("MEANSPOT_CPU_X86_LEVELS", None)]
    else:
        define_macros_cpu = []
    # at::parallel_for's OpenMP backend is inline in ATen's headers: without
    # -fopenmp here every "parallel" loop of ours would silently run on one
    # thread. The soname libgomp.so.1 resolves to the copy torch already loaded.
    link_args = []
    if sys.platform.startswith("linux"):
        cxx.append("-fopenmp")
        link_args.append("-fopenmp")
    extra = {"cxx": cxx}
    define_macros = list(define_macros_cpu)
    extension = CppExtension
    if use_cuda:
        sources += sorted(glob.glob(os.path.join("csrc", "cuda", "*.cu")) +
                          glob.glob(os.path.join("csrc", "cuda", "*.cpp")))
        # No --use_fast_math: the kernels must match the float64 reference.
        extra["nvcc"] = ["-O3", "--expt-relaxed-constexpr"] + limited_api
        define_macros.append(("MEANSPOT_WITH_CUDA", None))
        extension = CUDAExtension
    print("meanspot_fused build configuration:")
    print(f"  torch {torch.__version__} (CUDA {torch.version.cuda}), python {sys.version.split()[0]}")
    print(f"  CUDA kernels: {'yes' if use_cuda else 'no'} ({why})")
    if use_cuda:
        print(f"  CUDA_HOME={CUDA_HOME} TORCH_CUDA_ARCH_LIST={os.environ.get('TORCH_CUDA_ARCH_LIST', '(torch default)')}")
    print(f"  C++ flags: {' '.join(cxx)}")
    for level, flags in levels.items():
        print(f"  CPU kernels, {level}: {' '.join(flags)}")
    print(f"  sources: {len(sources)}")
    # The level sources and every header: a change to any of them relinks.
    depends = LEVEL_SOURCES + sorted(glob.glob(os.path.join("csrc", "**", "*.h"), recursive=True))
    return [extension("meanspot_fused._C", sources, extra_compile_args=extra, extra_link_args=link_args,
                      define_macros=define_macros, py_limited_api=True, include_dirs=[os.path.join(ROOT, "csrc")],
                      depends=depends)]


setup(
    packages=find_packages(include=["meanspot_fused", "meanspot_fused.*"]),
    ext_modules=get_extensions(),
    cmdclass={"build_ext": BuildLevels.with_options(use_ninja=shutil.which("ninja") is not None)},
    options={"bdist_wheel": {"py_limited_api": "cp39"}},
)
