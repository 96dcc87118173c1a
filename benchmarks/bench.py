#!/usr/bin/env python
"""Side-by-side throughput of the fused MEAN-Spot path against what users would run instead.

One run measures, on the same inputs and the same machine:

* ``eager``       the reference :class:`meanspot_fused.MeanSpot` under ``torch.inference_mode``;
* ``cudagraph``   (CUDA) the eager model captured in a CUDA graph and replayed;
* ``compile``     ``torch.compile`` of the reference (default mode, one static graph per batch);
* ``compile-ro``  (CUDA) ``torch.compile(mode="reduce-overhead")``;
* ``onnx``        ONNX Runtime on an ONNX export of the reference (optional dependency);
* ``fused[m]``    ``meanspot_fused.fuse(model, mode=m)`` for every mode in ``meanspot_fused.network.fuse.MODES``.

Every implementation is first checked against a float64 copy of the reference
on the benchmark inputs (max abs diff printed; the fused column is aborted, and
the script exits with status 2, when it is over ``--tol``). Times are medians of
``torch.utils.benchmark.Timer.blocked_autorange`` (which synchronizes CUDA), so
batch-1 time is the host wall time of the whole Python call. Inputs above
``ROTATE_ABOVE_BYTES`` rotate among several buffers so large batches are not
timed out of the last-level cache. See benchmarks/README.md.

About 760 lines, on purpose: one script holds the whole network benchmark
(every peer's setup, the correctness gate, timing, the FLOP count, the
report); what other benchmarks share lives in common.py.
"""
from __future__ import annotations

import argparse
import copy
import datetime
import gc
import importlib
import itertools
import math
import os
import platform
import shlex
import shutil
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np
import torch
from torch.utils.benchmark import Timer

HERE = Path(__file__).resolve().parent
try:
    import meanspot_fused
except ImportError:  # running from a checkout that is not installed
    sys.path.insert(0, str(HERE.parent))
    import meanspot_fused
from meanspot_fused import MeanSpot, fuse

sys.path.insert(0, str(HERE))
# The machine record and results files every benchmark shares.
from common import device_description, fma_peak, git_state as _git_state, loadavg as _loadavg  # noqa: E402
from common import machine_record, save_results, version as _version  # noqa: E402
from meanspot_fused.network.reference import BRANCH_FILTERS, HEAD_FILTERS, HEADS, INPUT_SIZE, PLACEMENTS

# ``meanspot_fused.network.fuse`` the attribute is the function; the submodule holds MODES.
FUSE_MODES = tuple(importlib.import_module("meanspot_fused.network.fuse").MODES)

#: Conv kernel of the branch and head convolutions (fixed by the architecture).
CONV_KERNEL = 5
#: GPU fp32 (no TF32) matmul ceilings measured with PyTorch, GFLOP/s, by name substring.
GPU_PEAK_GFLOPS = {"H100": 51_000.0, "H200": 51_000.0}
#: Input sets bigger than this rotate among buffers (PERFORMANCE.md: "above a few MB").
ROTATE_ABOVE_BYTES = 2 << 20
#: Rotated buffers together cover at least this many bytes (several times any L2/L3).
ROTATE_TOTAL_BYTES = 256 << 20
MAX_BUFFERS = 8
#: Rows compared against the float64 reference (outputs are per-sample independent).
CHECK_ROWS = 1024
#: Share of CPU time used by other processes above which a measurement is flagged.
CONTENDED_SHARE = 0.10
#: Every timed implementation gets at least this many timed samples.
MIN_REPEATS = 3

PEER_LABELS = {
    "eager": "eager",
    "cudagraph": "eager + CUDA graph",
    "compile": "torch.compile",
    "compile-ro": "torch.compile reduce-overhead",
    "onnx": "ONNX Runtime",
}
CUDA_ONLY = ("cudagraph", "compile-ro")
ALL_PEERS = ("eager", "cudagraph", "compile", "compile-ro", "onnx", "fused")


# --------------------------------------------------------------------------- FLOPs

def _cbam_macs(channels: int, side: int, spatial_kernel: int, ratio: int) -> Dict[str, int]:
    hidden = max(1, channels // ratio)
    return {
        # 7x7 (by default) conv from [mean_c, max_c] (2 channels) to 1, 'same' padding.
        "cbam_spatial_conv": side * side * spatial_kernel * spatial_kernel * 2,
        # shared MLP C -> hidden -> C, run on the mean and on the max vector.
        "cbam_mlp": 2 * (channels * hidden + hidden * channels),
    }


def flops_breakdown(config: dict) -> Dict[str, int]:
    """Multiply-adds per sample of each part of a MeanSpot, times 2 (FLOPs).

    Counts convolutions (every output pixel: K*K*Cin MACs; 'same' padding
    counted as if dense, as is usual), Dense layers and CBAM MLPs. Elementwise
    work (bias, ReLU, BN, sigmoid gates, pools, softmax) is not counted.
    """
    cbam = config.get("cbam", "all")
    heads = tuple(config.get("heads", ("spot",)))
    k = int(config.get("spatial_kernel", 7))
    ratio = int(config.get("cbam_ratio", 8))
    classes = int(config.get("recog_classes", 3))
    side = INPUT_SIZE
    merged_side = side // 3
    dense_side = merged_side // 2
    in_branches = cbam in ("all", "branches")
    in_merged = cbam in ("all", "merged")
    macs = {"branch_conv": 0, "head_conv": 0, "cbam_spatial_conv": 0, "cbam_mlp": 0, "dense": 0}
    for filters in BRANCH_FILTERS.values():
        macs["branch_conv"] += side * side * CONV_KERNEL * CONV_KERNEL * 1 * filters
        if in_branches:
            for key, val in _cbam_macs(filters, side, k, ratio).items():
                macs[key] += val
    merged_channels = sum(BRANCH_FILTERS.values())
    for head in heads:
        macs["head_conv"] += merged_side * merged_side * CONV_KERNEL * CONV_KERNEL * merged_channels * HEAD_FILTERS
        if in_merged:
            for key, val in _cbam_macs(HEAD_FILTERS, merged_side, k, ratio).items():
                macs[key] += val
        outputs = 1 if head == "spot" else classes
        macs["dense"] += dense_side * dense_side * HEAD_FILTERS * outputs
    return {key: 2 * val for key, val in macs.items()}


def flops_per_sample(config: dict) -> int:
    """FLOPs (2 x multiply-adds) of one forward sample; 3.41 M for CBAM ``all`` with the spot head."""
    return sum(flops_breakdown(config).values())


# --------------------------------------------------------------------------- environment

class CpuContention:
    """Share of the machine's CPU time used by *other* processes between start() and stop().

    From /proc/stat busy time minus this process's own CPU time (os.times), over
    wall time x CPUs. A few percent is background noise; tens of percent mean
    the measurement shared the cores with something else.
    """

    @staticmethod
    def _busy_s() -> Optional[float]:
        try:
            with open("/proc/stat") as f:
                fields = [int(x) for x in f.readline().split()[1:]]
        except (OSError, ValueError):
            return None
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
        return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")

    @staticmethod
    def _own_s() -> float:
        t = os.times()
        return t.user + t.system

    def start(self) -> "CpuContention":
        self.t0, self.busy0, self.own0 = time.perf_counter(), self._busy_s(), self._own_s()
        return self

    def stop(self) -> Optional[float]:
        busy = self._busy_s()
        if busy is None or self.busy0 is None:
            return None
        wall = time.perf_counter() - self.t0
        other = (busy - self.busy0) - (self._own_s() - self.own0)
        return max(0.0, other / (wall * (os.cpu_count() or 1))) if wall > 0 else None


def default_peak_gflops(device: torch.device, threads: int) -> tuple:
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        for key, val in GPU_PEAK_GFLOPS.items():
            if key in name:
                return val, f"fp32 matmul ceiling measured on H100 (PERFORMANCE.md), used for {name}"
        return None, f"no known fp32 peak for {name}; pass --peak-gflops"
    level = meanspot_fused.cpu_capability()
    peak = fma_peak(level, threads)
    return peak, f"register-only fp32 FMA loop at the kernels' level ({level}), {threads} threads, measured now"


def measure_matmul_gflops(device: torch.device, dtype: torch.dtype, threads: int) -> float:
    """Achieved GFLOP/s of one square matmul: a measured ceiling printed beside the nominal peak."""
    n = 2048 if device.type == "cpu" else 8192
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    m = Timer("torch.mm(a, b)", globals={"torch": torch, "a": a, "b": b}, num_threads=threads
              ).blocked_autorange(min_run_time=0.5)
    return 2 * n ** 3 / m.median / 1e9


# --------------------------------------------------------------------------- model and inputs

def build_model(cbam: str, heads: Sequence[str], seed: int) -> MeanSpot:
    """The embedded benchmark model: seeded random weights and random BN statistics, eval mode."""
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = MeanSpot(cbam=cbam, heads=tuple(heads))
    with torch.no_grad():
        for mod in model.modules():
            if isinstance(mod, torch.nn.BatchNorm2d):
                n = mod.num_features
                mod.weight.copy_(1.0 + 0.2 * torch.randn(n, generator=gen))
                mod.bias.copy_(0.1 * torch.randn(n, generator=gen))
                mod.running_mean.copy_(0.2 * torch.randn(n, generator=gen))
                mod.running_var.copy_(0.5 + torch.rand(n, generator=gen))
    return model.eval()


def make_inputs(batch: int, n_buffers: int, device, dtype, seed: int) -> List[tuple]:
    gen = torch.Generator().manual_seed(seed)
    shape = (batch, 1, INPUT_SIZE, INPUT_SIZE)
    return [tuple(torch.randn(shape, generator=gen).to(device=device, dtype=dtype).contiguous() for _ in range(3))
            for _ in range(n_buffers)]


def buffers_for(batch: int, itemsize: int) -> int:
    set_bytes = batch * 3 * INPUT_SIZE * INPUT_SIZE * itemsize
    if set_bytes <= ROTATE_ABOVE_BYTES:
        return 1
    return max(2, min(MAX_BUFFERS, math.ceil(ROTATE_TOTAL_BYTES / set_bytes)))


def _as_list(out) -> List[torch.Tensor]:
    items = out if isinstance(out, (tuple, list)) else (out,)
    return [torch.as_tensor(o) for o in items]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# --------------------------------------------------------------------------- implementations

class Impl:
    """One column: ``prepare(buffers)`` returns one zero-argument callable per input buffer."""

    def __init__(self, key: str, label: str, kind: str, prepare: Callable[[List[tuple]], List[Callable]],
                 mode: Optional[str] = None):
        self.key, self.label, self.kind, self.prepare, self.mode = key, label, kind, prepare, mode


def _eager_impl(model) -> Impl:
    return Impl("eager", PEER_LABELS["eager"], "peer",
                lambda bufs: [(lambda b=b: model(*b)) for b in bufs])


def _compile_impl(model, key: str, mode: Optional[str]) -> Impl:
    kwargs = {"dynamic": False}  # one specialized graph per batch size: the peer's best case
    if mode is not None:
        kwargs["mode"] = mode
    compiled = torch.compile(model, **kwargs)

    def prepare(bufs):
        if mode == "reduce-overhead":
            def call(b):
                torch.compiler.cudagraph_mark_step_begin()
                return compiled(*b)
            return [(lambda b=b: call(b)) for b in bufs]
        return [(lambda b=b: compiled(*b)) for b in bufs]
    return Impl(key, PEER_LABELS[key], "peer", prepare)


def _cudagraph_impl(model) -> Impl:
    def prepare(bufs):
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(3):
                model(*bufs[0])
        torch.cuda.current_stream().wait_stream(side)
        fns, pool = [], None
        for b in bufs:  # one graph per buffer, sharing a memory pool; replayed in order on one stream
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=pool):
                out = model(*b)
            pool = graph.pool()

            def replay(graph=graph, out=out):
                graph.replay()
                return out
            fns.append(replay)
        return fns
    return Impl("cudagraph", PEER_LABELS["cudagraph"], "peer", prepare)


def export_onnx(model, path: str, head_names: Sequence[str], device, dtype) -> str:
    """Export with the TorchScript exporter (dynamic batch axis); fall back to the dynamo exporter."""
    example = tuple(torch.randn(2, 1, INPUT_SIZE, INPUT_SIZE, device=device, dtype=dtype) for _ in range(3))
    names = ["u", "v", "os"]
    outs = list(head_names)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(model, example, path, dynamo=False, input_names=names, output_names=outs,
                              dynamic_axes={n: {0: "batch"} for n in names + outs}, opset_version=17)
            return "torch.onnx.export(dynamo=False), opset 17"
        except Exception as exc:  # TorchScript exporter removed or failing
            print(f"note: TorchScript ONNX export failed ({type(exc).__name__}: {exc}); trying dynamo=True")
            batch = torch.export.Dim("batch", min=1)
            torch.onnx.export(model, example, path, dynamo=True, input_names=names, output_names=outs,
                              dynamic_shapes=({0: batch}, {0: batch}, {0: batch}))
            return "torch.onnx.export(dynamo=True)"


def _onnx_impl(model, head_names, device, dtype, threads: int, workdir: str, meta: dict) -> Impl:
    import onnxruntime as ort  # raises ImportError when missing: the caller skips the column

    path = os.path.join(workdir, "meanspot.onnx")
    meta["onnx_exporter"] = export_onnx(model, path, head_names, device, dtype)
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    if device.type == "cuda":
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise ImportError("onnxruntime has no CUDAExecutionProvider (install onnxruntime-gpu)")
        providers = [("CUDAExecutionProvider", {"device_id": device.index or 0}), "CPUExecutionProvider"]
    else:
        providers = ["CPUExecutionProvider"]
    sess = ort.InferenceSession(path, so, providers=providers)
    meta["onnx_providers"] = sess.get_providers()
    in_names = [i.name for i in sess.get_inputs()]
    out_names = [o.name for o in sess.get_outputs()]
    np_dtype = {torch.float32: np.float32, torch.float64: np.float64}[dtype]

    def prepare(bufs):
        if device.type == "cpu":
            feeds = [{n: t.numpy() for n, t in zip(in_names, b)} for b in bufs]
            return [(lambda feed=feed: sess.run(out_names, feed)) for feed in feeds]
        # CUDA: bind torch's device buffers directly (no host copies in the timing).
        dev_id = device.index or 0
        fns = []
        for b in bufs:
            io = sess.io_binding()
            for n, t in zip(in_names, b):
                io.bind_input(n, "cuda", dev_id, np_dtype, list(t.shape), t.data_ptr())
            outs = []
            for o in sess.get_outputs():
                width = 1 if o.name == "spot" else model.recog_classes
                out = torch.empty(b[0].shape[0], width, device=device, dtype=dtype)
                io.bind_output(o.name, "cuda", dev_id, np_dtype, list(out.shape), out.data_ptr())
                outs.append(out)

            def run(io=io, outs=outs):
                sess.run_with_iobinding(io)
                return outs
            fns.append(run)
        return fns
    return Impl("onnx", PEER_LABELS["onnx"], "peer", prepare)


def _fused_impl(model, mode: str) -> Impl:
    fused_model = fuse(model, mode=mode)
    return Impl(f"fused[{mode}]", f"fused[{mode}]", "fused",
                lambda bufs: [(lambda b=b: fused_model(*b)) for b in bufs], mode=mode)


# --------------------------------------------------------------------------- timing

def time_callables(fns: List[Callable], device: torch.device, threads: int, min_time: float) -> dict:
    """Median seconds per call; rotates through ``fns`` (one per input buffer)."""
    if len(fns) == 1:
        step = fns[0]
    else:
        cycle = itertools.cycle(fns)

        def step():
            return next(cycle)()
    timer = Timer("step()", globals={"step": step}, num_threads=threads)
    t0 = time.perf_counter()
    step()  # warm call (the correctness call before it may have compiled / captured)
    _sync(device)
    warm = time.perf_counter() - t0
    if warm * MIN_REPEATS >= min_time:  # slow call: a few single-call samples, no block-size search
        times = [timer.timeit(1).times[0] for _ in range(MIN_REPEATS)]
        number = 1
    else:
        m = timer.blocked_autorange(min_run_time=min_time)
        times, number = list(m.times), m.number_per_run
        while len(times) < MIN_REPEATS:
            times.extend(timer.timeit(number).times)
    return {"time_s": statistics.median(times), "times_s": times, "number_per_sample": number,
            "warm_call_s": warm}


def max_abs_diff(outs, ref: List[torch.Tensor], rows: int) -> float:
    outs = _as_list(outs)
    if len(outs) != len(ref):
        return float("inf")
    worst = 0.0
    for o, r in zip(outs, ref):
        o = o[:rows].detach().to("cpu", torch.float64)
        if o.shape != r.shape:
            return float("inf")
        d = (o - r).abs().max().item() if o.numel() else 0.0
        if math.isnan(d):
            return d
        worst = max(worst, d)
    return worst


# --------------------------------------------------------------------------- formatting

def fmt_time(s: Optional[float], unit: Optional[str] = None) -> str:
    if s is None:
        return ""
    if unit == "us" or (unit is None and s < 1e-3):
        return f"{s * 1e6:.0f} us"
    if s < 1.0:
        return f"{s * 1e3:.2f} ms"
    return f"{s:.2f} s"


def fmt_rate(x: Optional[float]) -> str:
    if x is None:
        return ""
    return f"{x:,.0f}" if x >= 100 else f"{x:,.1f}"


def render_markdown(report: dict) -> str:
    meta, results = report["meta"], report["results"]
    impls = report["impls"]
    fused = [i for i in impls if i["kind"] == "fused"]
    by = {(r["batch"], r["impl"]): r for r in results}
    peak = report["peak_gflops"]
    share = meta.get("other_cpu_share")
    share_txt = "n/a" if share is None else f"{100 * share:.0f}%"
    lines = [f"# MEAN-Spot benchmark: {meta['device_type']}, {meta['date']}", ""]
    lines += [f"- device: {meta['device']}",
              f"- versions: torch {meta['torch']}, onnxruntime {meta['onnxruntime']}, onnx {meta['onnx']}, "
              f"numpy {meta['numpy']}, python {meta['python']}, meanspot_fused {meta['meanspot_fused']}",
              f"- git: {meta['git']['head']} (dirty: {meta['git']['dirty']})",
              f"- command: `{meta['command']}`",
              f"- threads: {meta['threads']}, dtype: {meta['dtype']}, min-time: {meta['min_time']} s; "
              f"load average at start {meta.get('loadavg_start')}, at end {meta.get('loadavg_end')}; "
              f"other processes' share of CPU during the run: "
              f"{share_txt}; "
              f"wall time {meta.get('wall_s')} s",
              f"- model: MeanSpot({', '.join(f'{k}={v!r}' for k, v in report['config'].items())}), "
              f"seed {meta['seed']}",
              f"- work: {report['flops_per_sample'] / 1e6:.3f} MFLOP/sample "
              f"({', '.join(f'{k} {v / 1e6:.3f}' for k, v in report['flops_breakdown'].items())})",
              f"- peak for % of peak: {fmt_rate(peak) if peak else 'n/a'} GFLOP/s ({report['peak_source']}); "
              f"measured {meta['dtype']} matmul on this device: {fmt_rate(report['matmul_gflops'])} GFLOP/s",
              ""]
    if meta.get("onnx_exporter"):
        lines.insert(-1, f"- ONNX: {meta['onnx_exporter']}, providers {meta.get('onnx_providers')}")

    lines += ["## Samples per second (time per call)", ""]
    header = ["batch"] + [i["label"] for i in impls]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for batch in report["batches"]:
        cells = [f"{batch:,}"]
        for i in impls:
            r = by.get((batch, i["key"]))
            if r is None or r["status"] != "ok":
                cells.append("" if r is None else r["status"])
            else:
                # Batch 1: host wall time per call, always in microseconds.
                unit = "us" if batch == 1 else None
                cells.append(f"{fmt_rate(r['samples_per_s'])} ({fmt_time(r['time_s'], unit)})")
        lines.append("| " + " | ".join(cells) + " |")

    lines += ["", "## Detail", ""]
    header = ["batch", "impl", "time/call", "samples/s", "GFLOP/s", "% peak", "max abs diff", "other CPU"] + \
             [f"{f['label']} speedup" for f in fused]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for batch in report["batches"]:
        for i in impls:
            r = by.get((batch, i["key"]))
            if r is None:
                continue
            diff = "" if r.get("max_abs_diff") is None else f"{r['max_abs_diff']:.2e}"
            if r["status"] != "ok":
                cells = [f"{batch:,}", i["label"], r["status"], "", "", "", diff, ""] + [""] * len(fused)
                lines.append("| " + " | ".join(cells) + " |")
                continue
            cells = [f"{batch:,}", i["label"], fmt_time(r["time_s"]), fmt_rate(r["samples_per_s"]),
                     f"{r['gflops']:.1f}", "" if r["pct_peak"] is None else f"{r['pct_peak']:.1f}%", diff,
                     "" if r.get("other_cpu_share") is None else f"{100 * r['other_cpu_share']:.0f}%"]
            for f in fused:
                fr = by.get((batch, f["key"]))
                ok = fr is not None and fr["status"] == "ok"
                cells.append(f"{fr['samples_per_s'] / r['samples_per_s']:.2f}x" if ok else "")
            lines.append("| " + " | ".join(cells) + " |")
    notes = [r for r in results if r.get("note")]
    if notes or report["notes"]:
        lines += ["", "## Notes", ""]
        lines += [f"- {n}" for n in report["notes"]]
        lines += [f"- batch {r['batch']}, {r['label']}: {r['note']}" for r in notes]
    lines += ["", "speedup = fused samples/s / this row's samples/s (>1: fused is faster). "
              "max abs diff: against a float64 copy of the reference on the first "
              f"{CHECK_ROWS} rows of the benchmark input.", ""]
    return "\n".join(lines)


# --------------------------------------------------------------------------- main

def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--device", choices=("cpu", "cuda"), default=None,
                   help="default: cuda if available, else cpu")
    p.add_argument("--batches", default=None,
                   help="comma-separated batch sizes (default: CPU 1,64,1024,8192; CUDA 1,64,1024,16384,65536)")
    p.add_argument("--threads", type=int, default=2, help="torch and ONNX Runtime intra-op threads")
    p.add_argument("--cbam", choices=PLACEMENTS, default="all", help="CBAM placement of the model")
    p.add_argument("--heads", default="spot", help=f"comma-separated subset of {HEADS}")
    p.add_argument("--min-time", type=float, default=None,
                   help="seconds of timing per measurement (default 1.0; 0.1 with --quick)")
    p.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    p.add_argument("--peers", default="all",
                   help=f"comma-separated subset of {','.join(ALL_PEERS)} (fused = every fuse mode), or all")
    p.add_argument("--modes", default=",".join(FUSE_MODES), help="fuse modes to benchmark")
    p.add_argument("--tol", type=float, default=1e-4, help="max abs diff allowed against the float64 reference")
    p.add_argument("--peak-gflops", type=float, default=None, help="override the peak used for %% of peak")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=str(HERE / "results"), help="directory for the JSON and markdown results")
    p.add_argument("--quick", action="store_true", help="batches 1,64 and a short min-time (CI smoke)")
    args = p.parse_args(argv)
    if args.device is None:
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: no CUDA device is available to this torch build")
    if args.batches is None:
        args.batches = "1,64" if args.quick else ("1,64,1024,8192" if args.device == "cpu"
                                                  else "1,64,1024,16384,65536")
    try:
        args.batches = [int(b) for b in args.batches.split(",") if b.strip()]
    except ValueError:
        p.error(f"--batches must be comma-separated integers, got {args.batches!r}")
    if not args.batches or min(args.batches) < 1:
        p.error("--batches must list positive batch sizes")
    if args.min_time is None:
        args.min_time = 0.1 if args.quick else 1.0
    args.heads = tuple(h.strip() for h in args.heads.split(",") if h.strip())
    if not args.heads or any(h not in HEADS for h in args.heads):
        p.error(f"--heads must be a comma-separated subset of {HEADS}")
    peers = ALL_PEERS if args.peers == "all" else tuple(x.strip() for x in args.peers.split(",") if x.strip())
    bad = [x for x in peers if x not in ALL_PEERS]
    if bad:
        p.error(f"--peers: unknown {bad}; choose from {ALL_PEERS}")
    args.peers = peers
    args.modes = tuple(m.strip() for m in args.modes.split(",") if m.strip())
    bad = [m for m in args.modes if m not in FUSE_MODES]
    if bad:
        p.error(f"--modes: unknown {bad}; meanspot_fused.network.fuse.MODES is {FUSE_MODES}")
    if args.threads < 1:
        p.error("--threads must be >= 1")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype)
    torch.set_num_threads(args.threads)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 64)

    model = build_model(args.cbam, args.heads, args.seed).to(device=device, dtype=dtype)
    ref64 = copy.deepcopy(model).to(torch.float64)
    config = model.config()
    config["heads"] = list(config["heads"])
    fps = flops_per_sample(config)
    peak, peak_source = default_peak_gflops(device, args.threads)
    if args.peak_gflops is not None:
        peak, peak_source = args.peak_gflops, "--peak-gflops"

    now = datetime.datetime.now().astimezone()
    meta = {
        "device_type": device.type,
        "device": device_description(device),
        "torch": torch.__version__, "onnxruntime": _version("onnxruntime"), "onnx": _version("onnx"),
        "numpy": np.__version__, "python": platform.python_version(),
        "meanspot_fused": getattr(meanspot_fused, "__version__", None), "fuse_modes": list(FUSE_MODES),
        "platform": platform.platform(), "git": _git_state(),
        "date": now.isoformat(timespec="seconds"),
        "command": shlex.join([os.path.basename(sys.executable)] + sys.argv if argv is None
                              else ["bench.py", *argv]),
        "machine": machine_record(args.threads, {"onnxruntime": _version("onnxruntime"), "onnx": _version("onnx")}),
        "threads": args.threads, "dtype": args.dtype, "min_time": args.min_time, "seed": args.seed,
        "tol": args.tol, "peers": list(args.peers), "modes": list(args.modes),
    }
    if device.type == "cuda":
        meta["cuda"] = torch.version.cuda
        meta["cudnn_allow_tf32"] = torch.backends.cudnn.allow_tf32
        meta["matmul_allow_tf32"] = torch.backends.cuda.matmul.allow_tf32
    notes: List[str] = []
    run_contention = CpuContention().start()
    meta["loadavg_start"] = _loadavg()
    if meta["loadavg_start"] is not None and device.type == "cpu" and meta["loadavg_start"][0] > 0.5:
        msg = (f"1-minute load average {meta['loadavg_start'][0]:.2f} at start: other processes share "
               f"the {os.cpu_count()} CPUs; numbers may be low")
        print("warning: " + msg)
        notes.append(msg)
    print(f"device: {meta['device']}; torch {meta['torch']}, onnxruntime {meta['onnxruntime']}, "
          f"threads {args.threads}, dtype {args.dtype}")
    matmul = measure_matmul_gflops(device, dtype, args.threads)
    print(f"model config {config}: {fps / 1e6:.3f} MFLOP/sample; peak {peak} GFLOP/s ({peak_source}); "
          f"measured matmul {matmul:.0f} GFLOP/s")

    workdir = tempfile.mkdtemp(prefix="meanspot_bench_")
    impls: List[Impl] = []
    fused_failed = False
    with torch.inference_mode():
        for key in args.peers:
            try:
                if key in CUDA_ONLY and device.type != "cuda":
                    if args.peers != ALL_PEERS:
                        notes.append(f"{key}: skipped, needs CUDA")
                    continue
                if key == "eager":
                    impls.append(_eager_impl(model))
                elif key == "cudagraph":
                    impls.append(_cudagraph_impl(model))
                elif key == "compile":
                    impls.append(_compile_impl(model, "compile", None))
                elif key == "compile-ro":
                    impls.append(_compile_impl(model, "compile-ro", "reduce-overhead"))
                elif key == "onnx":
                    if dtype != torch.float32:
                        notes.append("ONNX Runtime: skipped, only float32 is benchmarked")
                        continue
                    impls.append(_onnx_impl(model, model.head_names, device, dtype, args.threads, workdir, meta))
                elif key == "fused":
                    for mode in args.modes:
                        impls.append(_fused_impl(model, mode))
            except ImportError as exc:
                msg = f"{PEER_LABELS.get(key, key)}: skipped ({exc})"
                print("note: " + msg)
                notes.append(msg)
            except Exception as exc:
                msg = f"{PEER_LABELS.get(key, key)}: setup failed: {type(exc).__name__}: {exc}"
                print(("!!! ERROR: " if key == "fused" else "note: ") + msg, file=sys.stderr)
                notes.append(msg)
                fused_failed |= key == "fused"

        results = []
        for batch in args.batches:
            n_buf = buffers_for(batch, torch.empty((), dtype=dtype).element_size())
            bufs = make_inputs(batch, n_buf, device, dtype, args.seed + batch)
            rows = min(batch, CHECK_ROWS)
            ref = [r.cpu() for r in _as_list(ref64(*(t[:rows].to(torch.float64) for t in bufs[0])))]
            print(f"\n== batch {batch:,}: {n_buf} input buffer(s) of "
                  f"{batch * 3 * INPUT_SIZE ** 2 * bufs[0][0].element_size() / 2**20:.1f} MiB")
            prepared = {}
            # Correctness of every column first (this call also compiles / captures).
            for impl in impls:
                rec = {"batch": batch, "impl": impl.key, "label": impl.label, "kind": impl.kind,
                       "mode": impl.mode, "n_buffers": n_buf, "status": "ok", "max_abs_diff": None}
                results.append(rec)
                try:
                    t0 = time.perf_counter()
                    fns = impl.prepare(bufs)
                    out = fns[0]()
                    _sync(device)
                    rec["first_call_s"] = time.perf_counter() - t0
                    diff = max_abs_diff(out, ref, rows)
                    del out
                    rec["max_abs_diff"] = diff
                    rec["correct"] = diff <= args.tol
                    print(f"  check {impl.label:32s} max abs diff {diff:.3e}  (first call {rec['first_call_s']:.2f} s)")
                    if not diff <= args.tol:
                        if impl.kind == "fused":
                            fused_failed = True
                            rec["status"] = "FAILED"
                            msg = (f"{impl.label} at batch {batch}: max abs diff {diff:.3e} > tol {args.tol:g}; "
                                   "column aborted")
                            print("\n" + "!" * 78 + f"\n!!! FUSED OUTPUT WRONG: {msg}\n" + "!" * 78 + "\n",
                                  file=sys.stderr, flush=True)
                            rec["note"] = msg
                            continue
                        rec["note"] = f"max abs diff {diff:.3e} over tol {args.tol:g} (peer timed anyway)"
                        print(f"  warning: {impl.label}: {rec['note']}")
                    prepared[impl.key] = fns
                except Exception as exc:
                    rec["status"] = "error"
                    rec["note"] = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:300]
                    if impl.kind == "fused":
                        fused_failed = True
                        print(f"\n!!! ERROR in {impl.label} at batch {batch}: {rec['note']}\n", file=sys.stderr)
                    else:
                        print(f"  note: {impl.label} failed at batch {batch}: {rec['note']}")
            # Then timing.
            for rec in results:
                if rec["batch"] != batch or rec["impl"] not in prepared:
                    continue
                gc.collect()
                contention = CpuContention().start()
                timing = time_callables(prepared[rec["impl"]], device, args.threads, args.min_time)
                rec["other_cpu_share"] = contention.stop()
                rec.update(timing)
                rec["samples_per_s"] = batch / timing["time_s"]
                rec["gflops"] = rec["samples_per_s"] * fps / 1e9
                rec["pct_peak"] = 100 * rec["gflops"] / peak if peak else None
                rec["us_per_call"] = timing["time_s"] * 1e6
                share = rec["other_cpu_share"]
                print(f"  time  {rec['label']:32s} {fmt_time(rec['time_s']):>10s}/call  "
                      f"{fmt_rate(rec['samples_per_s']):>10s} samples/s  {rec['gflops']:7.1f} GFLOP/s"
                      + ("" if share is None else f"  (other processes: {100 * share:.0f}% of CPU)"))
                if share is not None and share > CONTENDED_SHARE:
                    rec["note"] = (f"other processes used {100 * share:.0f}% of the machine's CPU time "
                                   "during this measurement; the number is unreliable")
            prepared.clear()
            del bufs
            gc.collect()
            if device.type == "cuda":
                torch.cuda.empty_cache()

    shutil.rmtree(workdir, ignore_errors=True)
    speedups = []
    by = {(r["batch"], r["impl"]): r for r in results}
    for batch in args.batches:
        for f in (i for i in impls if i.kind == "fused"):
            fr = by.get((batch, f.key))
            if fr is None or fr["status"] != "ok":
                continue
            for i in impls:
                r = by.get((batch, i.key))
                if i.kind == "peer" and r is not None and r["status"] == "ok":
                    speedups.append({"batch": batch, "fused": f.key, "vs": i.key,
                                     "ratio": fr["samples_per_s"] / r["samples_per_s"]})
    meta["wall_s"] = round(time.perf_counter() - started, 1)
    meta["loadavg_end"] = _loadavg()
    meta["other_cpu_share"] = run_contention.stop()
    if meta["other_cpu_share"] is not None and meta["other_cpu_share"] > CONTENDED_SHARE:
        notes.append(f"other processes used {100 * meta['other_cpu_share']:.0f}% of the CPU time during the run: "
                     "numbers are unreliable; rerun on a quiet machine")
    report = {
        "machine": meta.pop("machine"), "meta": meta, "config": config, "flops_per_sample": fps, "flops_breakdown": flops_breakdown(config),
        "peak_gflops": peak, "peak_source": peak_source, "matmul_gflops": matmul,
        "batches": args.batches,
        "impls": [{"key": i.key, "label": i.label, "kind": i.kind, "mode": i.mode} for i in impls],
        "results": results, "speedups": speedups, "notes": notes,
        "fused_correctness_failed": fused_failed,
    }
    md = render_markdown(report)
    print("\n" + md)
    stem = save_results(args.out, "", device.type, report, md)
    print(f"wrote {stem}.json, {stem}.md, {stem.parent / f'latest_{device.type}.md'} ({meta['wall_s']} s in all)")
    if fused_failed:
        print("!!! a fused column failed its correctness check or raised; see above", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
