"""Build of meanspot_fused._C with torch.utils.cpp_extension (ninja).

C++ kernels are always built. CUDA kernels are added when a CUDA build of
torch and a CUDA toolkit are both present, or when FORCE_CUDA=1 (to compile
on a machine without a GPU; TORCH_CUDA_ARCH_LIST picks the architectures).
MEANSPOT_NO_CUDA=1 disables them. The CPU code is compiled for the building
machine's instruction set (-march=native) unless MEANSPOT_PORTABLE=1: a source
build runs where it was built; set MEANSPOT_PORTABLE=1 to build a binary you
will move to another machine.
"""
import glob
import os
import shutil
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
    if not _flag("MEANSPOT_PORTABLE"):
        cxx.append("-march=native")
    # at::parallel_for's OpenMP backend is inline in ATen's headers: without
    # -fopenmp here every "parallel" loop of ours would silently run on one
    # thread. The soname libgomp.so.1 resolves to the copy torch already loaded.
    link_args = []
    if sys.platform.startswith("linux"):
        cxx.append("-fopenmp")
        link_args.append("-fopenmp")
    extra = {"cxx": cxx}
    define_macros = []
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
    print(f"  sources: {len(sources)}")
    return [extension("meanspot_fused._C", sources, extra_compile_args=extra, extra_link_args=link_args,
                      define_macros=define_macros, py_limited_api=True, include_dirs=[os.path.join(ROOT, "csrc")])]


setup(
    packages=find_packages(include=["meanspot_fused", "meanspot_fused.*"]),
    ext_modules=get_extensions(),
    cmdclass={"build_ext": BuildExtension.with_options(use_ninja=shutil.which("ninja") is not None)},
    options={"bdist_wheel": {"py_limited_api": "cp39"}},
)
