"""Mutation check of the emulator tests (`make emu-mutants`).

Each mutant is a copy of the kernel sources with one change: every
`__syncthreads()` (and the `__syncthreads_and` of blocks.cuh) deleted in
turn, and a handful of loop bounds or indices per kernel shifted by one. For
each, the emulator tests of the kernels that include the changed header run
against the mutated copy (MEANSPOT_EMU_ROOT), mode by mode (race, then the
plain build's three schedules, then memcheck), until one fails. Prints a
markdown table: mutant, caught or not, by which mode.

    python tests/cuda_emu/mutants.py [--only SUBSTRING] [--out FILE]
"""
import argparse
import datetime
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
KERNELS = ROOT / "csrc" / "cuda" / "kernels"

# The tests (pytest -k) that exercise each header.
TESTS = {
    "conv_block.cuh": "test_conv_block",
    "channel_pool.cuh": "test_pools",
    "spatial_pool.cuh": "test_pools",
    "cbam.cuh": "test_cbam",
    "blocks.cuh": "test_cbam or meanspot_net or network",
    "meanspot_net.cuh": "meanspot_net or network",
    "mean_roi_features.cuh": "test_mean_roi_features",
    "tvl1_flow.cuh": "test_tvl1_flow",
    "common.cuh": "test_",
}
# Stages in the order they run: the pytest -k filter of each.
STAGES = [("race", "race"), ("plain", "plain"), ("memcheck", "memcheck")]

# Off-by-one mutants: (header, exact text, replacement).
SHIFTS = [
    ("conv_block.cuh", "i < in_elems; i += blockDim.x", "i < in_elems - 1; i += blockDim.x"),
    ("conv_block.cuh", "const int ih = row0 + rem / padded_width,", "const int ih = row0 + 1 + rem / padded_width,"),
    ("conv_block.cuh", "for (int pj = 0; pj < s.pool; ++pj) {\n        const int h = oh * s.pool + pi",
     "for (int pj = 1; pj < s.pool; ++pj) {\n        const int h = oh * s.pool + pi"),
    ("channel_pool.cuh", "s = lane < kWarps ? warp_sums[lane] : acc(0);", "s = lane <= kWarps ? warp_sums[lane] : acc(0);"),
    ("channel_pool.cuh", "for (int64_t i = first; i < plane; i += step, at.next())",
     "for (int64_t i = first; i < plane - 1; i += step, at.next())"),
    ("spatial_pool.cuh", "for (int c = 1; c < shape.channels; ++c)", "for (int c = 1; c < shape.channels - 1; ++c)"),
    ("cbam.cuh", "i < sample; i += kThreads, at.next()) x_tile[i]", "i < sample - 1; i += kThreads, at.next()) x_tile[i]"),
    ("blocks.cuh", "kh1 = min(kernel, height + pad - h);", "kh1 = min(kernel, height + pad - h + 1);"),
    ("blocks.cuh", "for (int t = threadIdx.x; t < 2 * hidden; t += kThreads)",
     "for (int t = threadIdx.x; t < 2 * hidden - 1; t += kThreads)"),
    ("blocks.cuh", "for (int c = warp; c < channels; c += kWarps)", "for (int c = warp + 1; c < channels; c += kWarps)"),
    ("meanspot_net.cuh", "for (int i = lane; i < kFeatures; i += 32)", "for (int i = lane; i < kFeatures - 1; i += 32)"),
    ("meanspot_net.cuh", "i < kM * kMPlane; i += kThreads) merged[i] = acc(0);",
     "i < kM * kMPlane - 1; i += kThreads) merged[i] = acc(0);"),
    ("meanspot_net.cuh", "for (int i = 1; i < kWarps; ++i) r =", "for (int i = 1; i < kWarps - 1; ++i) r ="),
    ("mean_roi_features.cuh", "for (int w = 0; w < kWarps; ++w) total.merge", "for (int w = 1; w < kWarps; ++w) total.merge"),
    ("mean_roi_features.cuh", "for (int p = threadIdx.x; p < kOutPlane; p += kThreads)",
     "for (int p = threadIdx.x; p < kOutPlane - 1; p += kThreads)"),
    ("tvl1_flow.cuh", "const int below = y == L.h - 1 ? i : i + L.w;", "const int below = y == L.h - 2 ? i : i + L.w;"),
    ("tvl1_flow.cuh", "for (int j = 0; j < kWarps; ++j) fast =", "for (int j = 0; j < kWarps - 1; ++j) fast ="),
    ("common.cuh", "for (int offset = 16; offset > 0; offset /= 2) v += ", "for (int offset = 8; offset > 0; offset /= 2) v += "),
]

BARRIER = re.compile(r"__syncthreads\(\);|__syncthreads_and\((\w+)\)")


def mutants():
    """(name, header, mutate(text) -> text) of every mutant."""
    out = []
    for header in sorted(TESTS):
        text = (KERNELS / header).read_text()
        for m in BARRIER.finditer(text):
            line = text.count("\n", 0, m.start()) + 1
            if text[text.rfind("\n", 0, m.start()) + 1:m.start()].lstrip().startswith("//"):
                continue  # a comment naming the barrier
            repl = m.group(1) or ""
            out.append((f"{header}:{line} delete {m.group(0)}", header,
                        lambda t, s=m.start(), e=m.end(), r=repl: t[:s] + r + t[e:]))
    for header, old, new in SHIFTS:
        text = (KERNELS / header).read_text()
        assert text.count(old) == 1, (header, old)
        line = text.count("\n", 0, text.index(old)) + 1
        out.append((f"{header}:{line} `{old.splitlines()[0]}` -> `{new.splitlines()[0]}`", header,
                    lambda t, o=old, n=new: t.replace(o, n)))
    return out


def copy_tree(dst: Path):
    """The sources the emulator builds from (kernel headers, math headers, tests/cuda_emu)."""
    for sub in ("csrc/cuda/kernels", "tests/cuda_emu"):
        shutil.copytree(ROOT / sub, dst / sub, ignore=shutil.ignore_patterns("__pycache__"))
    for h in (ROOT / "csrc").glob("*.h"):
        shutil.copy(h, dst / "csrc" / h.name)


def run_stage(tree: Path, build: Path, tests: str, stage: str):
    """Why the stage's tests fail on the mutant (it is caught), or None when they pass."""
    # The copy's own tests and build script; the package (CPU ops) and tests/helpers.py from this checkout.
    env = dict(os.environ, MEANSPOT_EMU_ROOT=str(tree), MEANSPOT_EMU_BUILD_DIR=str(build),
               PYTHONPATH=os.pathsep.join([str(ROOT), str(ROOT / "tests"), os.environ.get("PYTHONPATH", "")]))
    cmd = [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider",
           str(tree / "tests" / "cuda_emu" / "test_emu.py"), "-k", f"({tests}) and {stage}"]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tree)
    if r.returncode not in (0, 1):
        raise RuntimeError(f"pytest failed to run (exit {r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
    if r.returncode == 0:
        return None
    text = r.stdout
    if "emulator exit 4" in text:
        return f"{stage}: race hazard"
    if "emulator exit 3" in text:
        return f"{stage}: synchronisation error"
    if "AddressSanitizer" in text or "runtime error:" in text:
        return f"{stage}: ASan/UBSan"
    if "emulator exit" in text:
        return f"{stage}: emulator crash"
    return f"{stage}: wrong output"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", default="", help="run the mutants whose name contains this")
    ap.add_argument("--out", help="also write the table to this markdown file")
    args = ap.parse_args()
    rows, started = [], time.time()
    with tempfile.TemporaryDirectory(prefix="emu-mutants-") as tmp:
        base = Path(tmp) / "tree"
        copy_tree(base)
        build = Path(tmp) / "build"
        # The unmutated copy must pass every stage, or a "caught" would mean nothing.
        for stage, k in STAGES:
            if run_stage(base, build, "test_", k):
                sys.exit(f"the unmutated sources fail the {stage} stage: fix that first")
        for name, header, mutate in mutants():
            if args.only not in name:
                continue
            path = base / "csrc" / "cuda" / "kernels" / header
            original = path.read_text()
            path.write_text(mutate(original))
            try:
                by = next((why for why in (run_stage(base, build, TESTS[header], k) for _, k in STAGES) if why),
                          None)
            finally:
                path.write_text(original)
            rows.append((name, by))
            print(f"{'caught by ' + by if by else 'NOT CAUGHT':18} {name}", flush=True)
    caught = sum(1 for _, by in rows if by)
    barriers = [r for r in rows if "delete __syncthreads" in r[0]]
    lines = [f"# Emulator mutation check, {datetime.date.today().isoformat()}", "",
             f"Command: `make emu-mutants` (python tests/cuda_emu/mutants.py{' --only ' + args.only if args.only else ''})",
             f"Machine: {platform.node()}, {platform.machine()}, {os.cpu_count()} CPUs, {platform.platform()}; "
             f"{time.time() - started:.0f} s", "",
             f"{caught} of {len(rows)} mutants caught; barrier deletions: "
             f"{sum(1 for _, by in barriers if by)} of {len(barriers)} caught.", "",
             "Stages run in order until one fails: race (the race build: its hazard reports, then the "
             "comparison with the CPU op), plain (forward, reverse, random schedules), memcheck (ASan + UBSan). "
             "`by` names the first failing stage and why.", "",
             "| mutant | caught | by |", "|---|---|---|"]
    lines += [f"| {name.replace('|', '/')} | {'yes' if by else 'NO'} | {by or '-'} |" for name, by in rows]
    table = "\n".join(lines) + "\n"
    print(table)
    if args.out:
        Path(args.out).write_text(table)
    return 0 if all(by for _, by in barriers) else 1


if __name__ == "__main__":
    sys.exit(main())
