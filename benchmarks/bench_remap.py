"""Cost of each OpenCV remap of tvl1_flow at equal work: ``remap="opencv4"``, ``"opencv4.14"``, ``"opencv5"``.

The lines' flows differ, so with OpenCV's early stop they run different
numbers of iterations (bench_features.py times them that way, as a user sees
them). Here ``epsilon=0`` stops the stop: every pair runs exactly
``--outer`` x ``--inner`` iterations per warp on every level, so the rows
differ only in the warp's arithmetic. ``--inner 34`` matches the median real
face pair (about 850 inner iterations over 25 warps); ``--inner 3`` makes the
warp a large share of the work (the worst case for a slower warp).

Pairs: (i, i + 3) of a synthetic 128x128 face video, 65 distinct pairs
repeated 4 times (batch 260), all threads. Each configuration is timed
``--repeats`` times, interleaved; the best time counts.
"""
from __future__ import annotations

import argparse
import datetime
import shlex
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))
from common import save_results  # noqa: E402
from meanspot_fused.features import synthetic, tvl1_flow  # noqa: E402
from meanspot_fused.features.flow import REMAPS  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--inner", default="34,3", help="inner iterations per warp, comma list (default 34,3)")
    ap.add_argument("--repeats", type=int, default=3, help="timings per configuration (default 3)")
    ap.add_argument("--out", default=str(HERE / "results"), help="folder for the JSON and Markdown results")
    args = ap.parse_args(argv)
    frames, _ = synthetic.face_video(68, seed=3)
    a = torch.from_numpy(frames[:-3]).repeat(4, 1, 1)
    b = torch.from_numpy(frames[3:]).repeat(4, 1, 1)
    rows = []
    for inner in (int(v) for v in args.inner.split(",")):
        kw = dict(epsilon=0.0, outer_iterations=1, inner_iterations=inner)
        best = {r: float("inf") for r in REMAPS}
        iters = {}
        for r in REMAPS:
            tvl1_flow(a[:8], b[:8], remap=r, **kw)  # warm-up
        for _ in range(args.repeats):
            for r in REMAPS:
                t = time.perf_counter()
                _, counts = tvl1_flow(a, b, remap=r, return_iterations=True, **kw)
                best[r] = min(best[r], time.perf_counter() - t)
                iters[r] = int(counts[0, 0])
        for r in REMAPS:
            rows.append(dict(inner_per_warp=inner, remap=r, pairs_per_s=len(a) / best[r], iterations_per_pair=iters[r],
                             vs_opencv5=best["opencv5"] / best[r]))
    threads = torch.get_num_threads()
    command = " ".join(map(shlex.quote, sys.argv))
    date = datetime.datetime.now().isoformat(timespec="seconds")
    lines = [f"# tvl1_flow remaps at equal work (cpu, {date})", "",
             f"torch {torch.__version__} ({threads} threads); {len(a)} pairs of a synthetic 128x128 face video; "
             f"epsilon 0 (no early stop), 1 outer iteration per warp, best of {args.repeats}; command: `{command}`", "",
             "| inner iterations per warp | remap | iterations per pair | pairs/s | vs opencv5 |", "|---|---|---|---|---|"]
    lines += [f"| {r['inner_per_warp']} | {r['remap']} | {r['iterations_per_pair']} | {r['pairs_per_s']:,.1f} | "
              f"{r['vs_opencv5']:.3f}x |" for r in rows]
    text = "\n".join(lines) + "\n"
    print(text)
    save_results(args.out, "remap_", "cpu", dict(date=date, command=command, torch=torch.__version__,
                                                  threads=threads, pairs=len(a), rows=rows), text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
