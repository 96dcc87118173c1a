"""What every benchmark script of this folder shares: the machine record and
the results files.

``machine_record()`` is the block every record carries, so records from
different machines can be compared: the CPU (model, family/model, the vector
extensions it has), the instruction-set level meanspot_fused's CPU kernels ran
at (and torch's), the thread count, the peers' versions, and the build of the
extension (compiler and flags of each level, from setup.py). ``fma_peak`` is
the measured fp32 FMA ceiling of one level, the floor every CPU kernel is
quoted against.
"""
from __future__ import annotations

import datetime
import json
import os
import platform
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional

import torch

HERE = Path(__file__).resolve().parent

#: CPU flags worth naming in a record (what the kernels' levels depend on).
VECTOR_FLAGS = ("sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512dq", "avx512vl", "avx512_bf16",
                "avx512_vnni", "asimd", "sve")


def cpu_info() -> Dict[str, object]:
    info = {"model": None, "family": None, "model_id": None, "flags": [],
            "logical_cpus": os.cpu_count()}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, val = line.partition(":")
                key, val = key.strip(), val.strip()
                if key == "model name" and info["model"] is None:
                    info["model"] = val
                elif key == "cpu family" and info["family"] is None:
                    info["family"] = val
                elif key == "model" and info["model_id"] is None:
                    info["model_id"] = val
                elif key in ("flags", "Features") and not info["flags"]:
                    have = set(val.split())
                    info["flags"] = [f for f in VECTOR_FLAGS if f in have]
    except OSError:
        pass
    info["model"] = info["model"] or platform.processor() or "unknown CPU"
    return info


def cpu_description() -> str:
    import meanspot_fused
    c = cpu_info()
    return (f"{c['model']} (family {c['family']} model {c['model_id']}, {c['logical_cpus']} logical CPUs, "
            f"{' '.join(c['flags'])}; meanspot_fused CPU level {meanspot_fused.cpu_capability()}, "
            f"torch CPU capability {torch.backends.cpu.get_cpu_capability()})")


def device_description(device: torch.device) -> str:
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        return f"{p.name} (sm_{p.major}{p.minor}, {p.total_memory / 2**30:.0f} GiB, {p.multi_processor_count} SMs)"
    return cpu_description()


def version(module: str) -> Optional[str]:
    try:
        return __import__(module).__version__
    except Exception:
        return None


def git_state() -> dict:
    def git(*args):
        return subprocess.run(["git", *args], cwd=HERE.parent, capture_output=True, text=True, timeout=10)
    try:
        head = git("rev-parse", "HEAD")
        dirty = git("status", "--porcelain")
        return {"head": head.stdout.strip() if head.returncode == 0 else None,
                "dirty": bool(dirty.stdout.strip()) if dirty.returncode == 0 else None}
    except Exception:
        return {"head": None, "dirty": None}


def loadavg() -> Optional[List[float]]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


# --------------------------------------------------------------------------- the FMA ceiling

# Independent FMA chains on register-wide vectors, as many as the level's
# registers allow without spilling (12 of 16 on AVX2, 24 of 32 on AVX-512):
# enough to cover 2 FMA units x 4-cycle latency. Each thread runs its own loop.
_FMA_SOURCE = r"""
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <thread>
#include <vector>
typedef float V __attribute__((vector_size(BYTES)));
static double run(long iters) {
  V acc[CHAINS];
  volatile float seed = 1.0f;
  for (int i = 0; i < CHAINS; ++i) acc[i] = V{} + seed * (i + 1) * 1e-3f;
  const V a = V{} + seed * 0.999999f, b = V{} + seed * 1e-7f;
  for (long n = 0; n < iters; ++n) {
#pragma GCC unroll 64
    for (int i = 0; i < CHAINS; ++i) acc[i] = acc[i] * a + b;
  }
  float s = 0;
  for (int i = 0; i < CHAINS; ++i) for (unsigned l = 0; l < BYTES / 4; ++l) s += acc[i][l];
  return s;
}
int main(int argc, char** argv) {
  const int threads = std::atoi(argv[1]);
  const long iters = std::atol(argv[2]);
  std::vector<std::thread> pool;
  std::vector<double> sink(threads);
  auto t0 = std::chrono::steady_clock::now();
  for (int t = 0; t < threads; ++t) pool.emplace_back([&, t] { sink[t] = run(iters); });
  for (auto& th : pool) th.join();
  double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("%.3f %g\n", 2.0 * CHAINS * (BYTES / 4) * iters * threads / s / 1e9, sink[0]);
}
"""

_LEVEL_FLAGS = {"AVX512": (["-march=x86-64-v4"], 64, 24), "AVX2": (["-march=x86-64-v3"], 32, 12),
                "DEFAULT": ([], 16, 12)}


def fma_peak(level: str, threads: int, seconds: float = 0.5) -> Optional[float]:
    """Measured fp32 GFLOP/s of register-only FMA (or mul + add on DEFAULT x86-64) at `level`, `threads` threads."""
    cxx = shutil.which("g++") or shutil.which("c++")
    if cxx is None or level not in _LEVEL_FLAGS:
        return None
    flags, width, chains = _LEVEL_FLAGS[level]
    with tempfile.TemporaryDirectory() as tmp:
        src, exe = Path(tmp) / "fma.cpp", Path(tmp) / "fma"
        src.write_text(_FMA_SOURCE)
        build = subprocess.run([cxx, "-O3", "-ffp-contract=fast", "-pthread", *flags, f"-DBYTES={width}",
                                f"-DCHAINS={chains}", str(src), "-o", str(exe)], capture_output=True, text=True)
        if build.returncode != 0:
            return None
        iters = 20_000_000
        best = 0.0
        for _ in range(4):
            t0 = time.perf_counter()
            r = subprocess.run([str(exe), str(threads), str(iters)], capture_output=True, text=True)
            if r.returncode != 0:
                return None
            best = max(best, float(r.stdout.split()[0]))
            if time.perf_counter() - t0 < seconds / 4:
                iters *= 4
        return best


# --------------------------------------------------------------------------- records

def machine_record(threads: Optional[int] = None, peers: Optional[Dict[str, Optional[str]]] = None) -> dict:
    """The block that makes records comparable (see the module docstring)."""
    import sys

    import meanspot_fused
    from meanspot_fused.cpu import build_info
    # The peers this process has loaded (OpenCV, ONNX Runtime), whatever the script.
    loaded = {name: getattr(sys.modules[mod], "__version__", None)
              for name, mod in (("opencv", "cv2"), ("onnxruntime", "onnxruntime"), ("onnx", "onnx"))
              if mod in sys.modules}
    peers = {**loaded, **(peers or {})}
    return {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "cpu": cpu_info(),
        "meanspot_cpu_capability": meanspot_fused.cpu_capability(),
        "meanspot_cpu_levels": meanspot_fused.cpu_capabilities(),
        "forced_by_env": os.environ.get("MEANSPOT_CPU_CAPABILITY"),
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "threads": threads if threads is not None else torch.get_num_threads(),
        "versions": {"python": platform.python_version(), "torch": torch.__version__, "numpy": version("numpy"),
                     "meanspot_fused": meanspot_fused.__version__, **peers},
        "build": build_info(),
        "platform": platform.platform(),
        "git": git_state(),
        "loadavg": loadavg(),
    }


def machine_markdown(m: dict) -> str:
    c, b = m["cpu"], m.get("build") or {}
    levels = b.get("cpu_levels", {})
    lines = [f"- CPU: {c['model']} (family {c['family']} model {c['model_id']}, {c['logical_cpus']} logical CPUs; "
             f"{' '.join(c['flags'])})",
             f"- meanspot_fused CPU level: **{m['meanspot_cpu_capability']}**"
             + (f" (forced by MEANSPOT_CPU_CAPABILITY={m['forced_by_env']})" if m.get("forced_by_env") else "")
             + f"; levels this CPU runs: {', '.join(m['meanspot_cpu_levels'])}; torch CPU capability "
             f"{m['torch_cpu_capability']}; threads {m['threads']}",
             "- versions: " + ", ".join(f"{k} {v}" for k, v in m["versions"].items() if v),
             f"- build: {b.get('compiler', 'unrecorded')}; level flags: "
             + "; ".join(f"{k} `{' '.join(v)}`" for k, v in levels.items()),
             f"- date {m['date']}, git {m['git'].get('head')}{' (dirty)' if m['git'].get('dirty') else ''}"]
    return "\n".join(lines) + "\n"


def save_results(out_dir, prefix: str, device_type: str, report: dict, markdown: str) -> Path:
    """Write results/<prefix><device>_<date-time>.json and .md and copy the .md to latest_<prefix><device>.md
    (latest_<prefix><device>_<level>.md when MEANSPOT_CPU_CAPABILITY forced the level).

    Every record gets the machine block (``report["machine"]``, and at the top
    of the Markdown) unless the script already put one there. Returns the path
    without suffix.
    """
    report = dict(report)
    if not isinstance(report.get("machine"), dict):
        report["machine"] = machine_record()
    head, _, rest = markdown.partition("\n")
    markdown = f"{head}\n\n{machine_markdown(report['machine'])}{rest}"
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"{prefix}{device_type}_{datetime.datetime.now().strftime('%Y%m%d-%H%M%S')}"
    stem.with_suffix(".json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    stem.with_suffix(".md").write_text(markdown)
    # A run with the level forced (make bench-avx2) keeps its own latest copy.
    forced = report["machine"].get("forced_by_env")
    level = f"_{report['machine']['meanspot_cpu_capability'].lower()}" if forced else ""
    shutil.copyfile(stem.with_suffix(".md"), out / f"latest_{prefix}{device_type}{level}.md")
    return stem


if __name__ == "__main__":
    # The fp32 FMA ceiling of every level this CPU runs, 1 thread and all: the
    # floors the README quotes. Saved like every benchmark record.
    import sys

    import meanspot_fused
    cores = os.cpu_count() or 1
    rows = {level.upper(): {t: fma_peak(level.upper(), t) for t in sorted({1, cores})}
            for level in meanspot_fused.cpu_capabilities()}
    lines = ["# fp32 FMA ceiling per instruction-set level (GFLOP/s)", "",
             "| level | " + " | ".join(f"{t} thread{'s' if t > 1 else ''}" for t in sorted({1, cores})) + " |",
             "|---|" + "---|" * len({1, cores})]
    for level, by_t in rows.items():
        lines.append(f"| {level} | " + " | ".join(f"{v:.1f}" if v else "n/a" for v in by_t.values()) + " |")
    lines += ["", "A register-only loop of independent FMA chains (mul + add on DEFAULT: x86-64's baseline has no "
              "FMA) on vectors of the level's width, compiled with that level's -march (benchmarks/common.py)."]
    text = "\n".join(lines) + "\n"
    print(text)
    out = sys.argv[1] if len(sys.argv) > 1 else str(HERE / "results")
    print(save_results(out, "fma_peak_", "cpu", {"gflops": rows, "command": "python benchmarks/common.py"}, text))
