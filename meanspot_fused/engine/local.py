"""Corpus runs on this machine: ``spot`` over many videos, one process or a pool of worker processes.

:func:`run_corpus` with ``workers=1`` is :func:`meanspot_fused.pipeline.spot_videos`
in this process (videos stream through shared batches). With more workers,
each video is one task of a pool of ``workers`` processes (spawned, so no
state is inherited): a worker takes one GPU of its own with ``--device cuda``
(round robin over ``CUDA_VISIBLE_DEVICES`` or every GPU, seen as ``cuda:0``)
and none otherwise, loads the model once, sets its thread counts (torch,
OpenCV, the video decoder) to ``threads``, and spots its video with ``spot_videos`` into
the same output folder, written atomically as in a serial run, so the
per-video files are those of a serial run. This process appends each
finished video to the manifest and shows one progress bar over videos.

Faults: a video that fails (unreadable, no face, ...) is a failed row and
the run goes on. A worker that dies (killed, out of memory, a crash in a
library) breaks the pool: the videos that had started (workers report each
start on a queue before any work) count an attempt, and they and the videos
not yet started run again in a fresh pool; a video whose attempts exceed
``retries`` is a failed row (a video that kills every worker it meets cannot
loop forever). A half-written video
never appears: folders are renamed into place complete.
"""
from __future__ import annotations

import multiprocessing
import os
import sys
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Callable, Dict, List, Optional, Sequence

from ..errors import InputError

__all__ = ["run_corpus", "default_threads"]

# Test hook (tests/engine/test_local.py), a folder: a worker about to spot a video dies as a killed
# process does when <folder>/<video name>.always exists (every attempt), or when
# <folder>/<video name>.kill does not exist yet (it creates it first: the first attempt only).
_KILL_ONCE = "MEANSPOT_FUSED_TEST_KILL_ONCE"

_worker: Dict[str, Any] = {}  # per worker process: model, net and the run's fixed arguments


def default_threads(workers: int) -> int:
    """Threads per worker: the CPUs shared evenly (at least 1)."""
    return max(1, (os.cpu_count() or 1) // max(1, workers))


def check_engine_args(workers: int, threads: Optional[int], retries: int) -> None:
    """The engine's counts, each an int in range, or the package's InputError naming it."""
    for name, v, lo in (("workers", workers, 1), ("retries", retries, 0), ("threads", threads, 1)):
        if name == "threads" and v is None:
            continue
        if isinstance(v, bool) or not isinstance(v, int) or v < lo:
            raise InputError(f"{name} must be an int >= {lo}, got {v!r}")


def set_threads(threads: int) -> None:
    """Threads of this worker process: torch's, OpenCV's and its video decoder's (FFmpeg's own pool)."""
    import torch

    from ..io.frames import set_decoder_threads
    torch.set_num_threads(threads)
    set_decoder_threads(threads)
    try:
        import cv2
        cv2.setNumThreads(threads)
    except ImportError:
        pass


def kill_hook_for_tests(source) -> None:
    """The _KILL_ONCE test hook: dies as a killed process does when its markers say so."""
    from ..io.spot_outputs import video_name
    marker_dir = os.environ.get(_KILL_ONCE)
    if marker_dir:
        base = os.path.join(marker_dir, video_name(source))
        if os.path.exists(base + ".always"):
            os._exit(1)
        if not os.path.exists(base + ".kill"):
            open(base + ".kill", "w").close()
            os._exit(1)


def visible_gpus() -> List[str]:
    """The GPUs this process may use, as CUDA_VISIBLE_DEVICES entries: that variable's list when set, else
    every device the driver reports (counted without creating a CUDA context)."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [d.strip() for d in env.split(",") if d.strip()]
    import torch
    return [str(i) for i in range(torch.cuda.device_count())]


def worker_gpu(index: int, gpus: Sequence[str]) -> str:
    """The CUDA_VISIBLE_DEVICES of worker ``index``: one GPU, round robin over ``gpus`` (workers beyond the
    count share), or "" (none) when there is none."""
    return gpus[index % len(gpus)] if gpus else ""


def _init_worker(model_path, settings, out_dir, dataset, threads: int, started, gpus, counter) -> None:
    from ..pipeline import load_spot_model
    with counter.get_lock():
        index = counter.value
        counter.value += 1
    # Before anything touches CUDA in this (spawned) process: a GPU worker sees its own GPU as cuda:0, a CPU
    # worker sees none.
    os.environ["CUDA_VISIBLE_DEVICES"] = worker_gpu(index, gpus) if str(settings.device).startswith("cuda") else ""
    set_threads(threads)
    _worker.update(model_path=model_path, settings=settings, out_dir=out_dir, dataset=dataset, started=started,
                   loaded=load_spot_model(model_path, fuse=settings.fuse, device=settings.device))


def spot_in_worker(source: str, model_path, settings, out_dir: str, dataset, loaded) -> Dict[str, Any]:
    """One video in a worker process or Ray actor: its folder written by spot_videos, its row returned."""
    from ..pipeline import spot_videos
    kill_hook_for_tests(source)
    (row,) = spot_videos([source], model_path, out_dir, settings, force=True, dataset=dataset, log=lambda msg: None,
                         manifest=False, loaded=loaded)
    return row


def _spot_one(source: str) -> Dict[str, Any]:
    w = _worker
    w["started"].put(source)  # a SimpleQueue: written to the pipe before any work
    return spot_in_worker(source, w["model_path"], w["settings"], w["out_dir"], w["dataset"], w["loaded"])


class CorpusRun:
    """What every engine does around its videos: the checks before the first one, the run key, the
    up-to-date videos skipped, and each finished row kept, appended to the manifest and reported.

    ``check_settings``: the settings to check on this machine (the Ray driver checks on the CPU).
    After construction: ``out_dir`` (str), ``digest``, ``todo`` (the videos to run) and ``rows``.
    """

    def __init__(self, sources, model_path, out_dir, settings, *, dataset, force, log, check_settings=None):
        from ..io.spot_outputs import remove_leftovers, video_name
        from ..pipeline import check_run
        from .manifest import Manifest, plan, settings_hash
        _, _, _, self.out_dir = check_run(sources, model_path, out_dir, check_settings or settings)
        remove_leftovers(self.out_dir, [video_name(s) for s in sources])  # what a killed run left (none writes now)
        self.digest = settings_hash(settings, model_path, dataset)
        self.book = Manifest(self.out_dir)
        self.log = log
        self.rows: Dict[str, Dict[str, Any]] = {}
        self.todo, skipped = plan(sources, self.out_dir, self.digest, force)
        for row in skipped:
            self.record(row)

    def record(self, row: Dict[str, Any]) -> None:
        self.rows[row["input"]] = row
        self.book.add({**row, "settings": self.digest})
        if row["status"] == "skipped":
            self.log(f"{row['video']}: {row['output']} is up to date, skipped (--force recomputes it)")
        elif row["status"] == "failed":
            self.log(f"{row['video']}: error: {row['error']}")


def run_corpus(sources: Sequence, model_path, out_dir, settings, *, workers: int = 1, threads: Optional[int] = None,
               force: bool = False, retries: int = 2, progress: bool = False, dataset: Optional[str] = None,
               log: Optional[Callable[[str], None]] = None) -> List[Dict[str, Any]]:
    """Spot every video of ``sources`` (already expanded: :func:`~meanspot_fused.engine.manifest.expand_inputs`)
    into ``out_dir/<name>/``; returns one row per video, in input order (status done, skipped or failed).

    ``workers``: processes (1: this one); ``threads``: torch/OpenCV threads per
    worker (default: the CPUs shared evenly); ``force``: redo videos whose
    output is up to date; ``retries``: extra attempts for a video whose worker
    died. The checks of a serial run (inputs, settings, model, names, output
    folder) run first, here, so a bad command fails before any work.
    """
    from ..io.spot_outputs import remove_leftovers, video_name
    from ..pipeline import spot_videos
    from .manifest import failed_row

    log = log or (lambda msg: print(msg, file=sys.stderr))
    check_engine_args(workers, threads, retries)
    if workers == 1 or len(sources) <= 1:
        if os.path.isdir(os.fspath(out_dir)):  # what a run killed while writing left behind (none writes now)
            remove_leftovers(os.fspath(out_dir), [video_name(s) for s in sources])
        if threads is not None:
            set_threads(threads)
        return spot_videos(sources, model_path, out_dir, settings, force=force, progress=progress, dataset=dataset,
                           log=log)
    # The serial path's checks, here, before any worker starts (the model loads once more in each worker).
    run = CorpusRun(sources, model_path, out_dir, settings, dataset=dataset, force=force, log=log)
    out_dir, todo = run.out_dir, run.todo
    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=len(todo), unit="video", desc="spot")
    attempts = {src: 0 for src in todo}
    threads = threads or default_threads(workers)
    gpus = visible_gpus() if str(settings.device).startswith("cuda") else []
    if gpus and str(settings.device) not in ("cuda", "cuda:0"):
        raise InputError(f"device {settings.device!r}: with --workers each worker gets one GPU of its own "
                         f"(seen as cuda:0); give --device cuda")
    ctx = multiprocessing.get_context("spawn")
    counter = ctx.Value("i", 0)
    try:
        while todo:
            again: List[str] = []
            started_q = ctx.SimpleQueue()
            started = set()
            with ProcessPoolExecutor(min(workers, len(todo)), mp_context=ctx, initializer=_init_worker,
                                     initargs=(model_path, settings, out_dir, dataset, threads, started_q, gpus,
                                               counter)) as pool:
                futures = {pool.submit(_spot_one, src): src for src in todo}
                for fut in as_completed(futures):
                    src = futures[fut]
                    try:
                        row = fut.result()
                    except BrokenProcessPool:
                        while not started_q.empty():
                            started.add(started_q.get())
                        attempts[src] += src in started  # a video never started is not to blame
                        if attempts[src] <= retries:
                            again.append(src)
                            continue
                        row = failed_row(src, out_dir, f"its worker process died {attempts[src]} times")
                    except Exception as e:  # noqa: BLE001  (a worker's error is this video's failure)
                        row = failed_row(src, out_dir, f"{type(e).__name__}: {e}")
                    run.record(row)
                    if bar is not None:
                        bar.update(1)
            # Every worker of that pool is gone: what a killed one was writing can go.
            remove_leftovers(out_dir, [video_name(s) for s in again])
            todo = [s for s in todo if s in again]
            if todo:
                log(f"a worker process died; running {len(todo)} video(s) again in a fresh pool")
    finally:
        if bar is not None:
            bar.close()
    return [run.rows[os.fspath(s)] for s in sources]
