#!/usr/bin/env python
"""Memory of `meanspot-fused spot` against the length of the video: it must not grow.

Writes synthetic 128x128 face videos of each ``--frames`` length as MJPG
``.avi`` files (decoded by OpenCV, so no memory-mapped input inflates the
resident set), runs ``python -m meanspot_fused spot`` on each in a child
process and reports the child's peak resident memory (``os.wait4`` rusage),
its wall time and frames per second. The longest default, 18,000 frames, is
ten minutes of video at 30 fps. Results: ``--out`` (JSON and Markdown with
device, versions, date and command).
"""
from __future__ import annotations

import argparse
import datetime
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))
from common import cpu_description, git_state as _git_state, save_results  # noqa: E402
from meanspot_fused.features import synthetic  # noqa: E402


def write_video(path: str, n: int) -> None:
    """n frames: a 300-frame synthetic clip with two brow raises, repeated (OpenCV's MJPG)."""
    import cv2
    clip, _ = synthetic.face_video(300, events=((60, "brow", 10, 2.5), (200, "brow", 10, 2.0)), seed=1)
    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"MJPG"), 30, (128, 128))
    if not writer.isOpened():
        raise RuntimeError("this OpenCV cannot write MJPG .avi files")
    for t in range(n):
        writer.write(cv2.cvtColor(clip[t % len(clip)], cv2.COLOR_GRAY2BGR))
    writer.release()


def _rss_kb(pid: int) -> dict:
    """RssAnon and RssFile of a process, in kB (empty once it has exited)."""
    out = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(("RssAnon:", "RssFile:")):
                    out[line.split(":")[0]] = int(line.split()[1])
    except OSError:
        pass
    return out


def run_spot(video: str, model: str, landmarks: str, out: str, chunk: int) -> dict:
    """Wall time, peak RSS (rusage) and peak anonymous RSS (polled every 0.1 s) of one spot run."""
    cmd = [sys.executable, "-m", "meanspot_fused", "spot", video, "--model", model, "--k", "3", "--k-p", "6",
           "--landmarks", landmarks, "--out", out, "--chunk", str(chunk), "--quiet", "--overwrite"]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stderr=subprocess.DEVNULL)
    anon = []
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        anon.append(_rss_kb(proc.pid).get("RssAnon", 0))
        time.sleep(0.1)
    wall = time.perf_counter() - t0
    if status != 0:
        raise RuntimeError(f"spot failed with status {status}: {' '.join(cmd)}")
    # The anonymous RSS at the first and the last tenth of the run: a leak would show as growth.
    tenth = max(1, len(anon) // 10)
    return dict(wall_s=wall, peak_rss_mb=usage.ru_maxrss / 1024, peak_anon_mb=max(anon, default=0) / 1024,
                anon_early_mb=max(anon[:tenth], default=0) / 1024, anon_late_mb=max(anon[-tenth:], default=0) / 1024)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", default="600,6000,18000", help="video lengths (default 600,6000,18000)")
    ap.add_argument("--chunk", type=int, default=1024, help="spot --chunk (default 1024)")
    ap.add_argument("--out", default=str(HERE / "results"), help="folder for the JSON and Markdown results")
    args = ap.parse_args(argv)
    import meanspot_fused as mf

    rows = []
    with tempfile.TemporaryDirectory() as work:
        torch.manual_seed(0)
        model = os.path.join(work, "model.pt")
        mf.save_model(mf.MeanSpot(cbam="all").eval(), model)
        landmarks = os.path.join(work, "lm.npy")
        np.save(landmarks, synthetic.face_landmarks())
        for n in (int(x) for x in args.frames.split(",")):
            video = os.path.join(work, f"video{n}.avi")
            write_video(video, n)
            r = run_spot(video, model, landmarks, os.path.join(work, "out"), args.chunk)
            r.update(frames=n, video_mb=os.path.getsize(video) / 2**20, frames_per_s=n / r["wall_s"])
            rows.append(r)
            os.remove(video)
    import cv2
    info = dict(date=datetime.datetime.now().isoformat(timespec="seconds"),
                command=" ".join(map(shlex.quote, [sys.argv[0]] + (argv if argv is not None else sys.argv[1:]))),
                cpu=cpu_description(), torch=torch.__version__, opencv=cv2.__version__, git=_git_state(),
                chunk=args.chunk, rows=rows)
    lines = [f"# spot: peak memory against video length (cpu, {info['date']})", "",
             f"{info['cpu']}; torch {info['torch']}, OpenCV {info['opencv']}; command: `{info['command']}`", "",
             f"`python -m meanspot_fused spot VIDEO.avi --k 3 --k-p 6 --chunk {args.chunk}` in a child process, "
             "128x128 MJPG synthetic face video, a random MeanSpot (CBAM all).", "",
             "| frames | video file MB | wall s | frames/s | peak RSS MB | peak anonymous RSS MB | "
             "anonymous RSS, first / last tenth of the run, MB |", "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['frames']:,} | {r['video_mb']:.1f} | {r['wall_s']:.1f} | {r['frames_per_s']:,.1f} | "
              f"{r['peak_rss_mb']:,.0f} | {r['peak_anon_mb']:,.0f} | {r['anon_early_mb']:,.0f} / "
              f"{r['anon_late_mb']:,.0f} |" for r in rows]
    lines += ["", "Peak RSS counts the shared libraries too (torch, OpenCV, matplotlib for the plot at the end); "
              "the anonymous part is the process's own memory."]
    text = "\n".join(lines)
    print(text)
    save_results(args.out, "spot_memory_", "cpu", info, text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
