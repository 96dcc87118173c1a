"""Corpus runs on Ray Data: one row per video, an actor pool that loads the model once per actor.

``run_ray`` is :func:`meanspot_fused.engine.local.run_corpus` on a Ray cluster
(``address``, else ``RAY_ADDRESS``, else a local Ray started here):
``ray.data.from_items`` over the video paths, one block per video (one block
is one task, Ray's unit of retry), ``Dataset.map`` with :class:`_Spotter`
under an ``ActorPoolStrategy`` of ``actors`` actors, one task in flight per
actor, ``num_cpus=threads`` and ``num_gpus`` 1 per actor on CUDA. Frames and
features never enter Ray's object store: each actor reads its video by path
and writes the video's folder itself (atomically, as every engine); only a
small JSON row per video comes back, which this process appends to the
manifest.

Faults (PIPELINE.md section 7): Ray Data retries failed actor tasks and
restarts actors without limit by default; here a video's task is retried at
most ``retries`` times (a video that kills every actor fails, it cannot loop
forever), actors restart as needed, errored blocks do not fail the dataset
(a video whose retries ran out is a failed row), and the no-progress timeout
is off (a long video can take longer than Ray's 30 minutes). A GPU run on a
cluster without GPUs fails at once instead of waiting forever. An actor
forced to the CPU hides every GPU (``CUDA_VISIBLE_DEVICES=""``); a GPU actor
sees the one Ray gave it as ``cuda:0``, initialised in the actor.
"""
from __future__ import annotations

import dataclasses
import json
import os
import warnings
from typing import Any, Callable, Dict, List, Optional, Sequence

from ..errors import DeviceError, require

__all__ = ["run_ray", "RAY_INSTALL"]

RAY_INSTALL = 'pip install "meanspot_fused[ray]"'


class _Spotter:
    """One Ray actor: the model loaded once, threads set, the device chosen; spots one video per call."""

    def __init__(self, model_path, settings, out_dir, dataset, threads: int, gpu: bool):
        if not gpu:
            os.environ["CUDA_VISIBLE_DEVICES"] = ""  # a CPU actor must not touch a GPU Ray did not give it
        from ..pipeline import load_spot_model
        from .local import set_threads
        set_threads(threads)
        self.args = dict(model_path=model_path, settings=settings, out_dir=out_dir, dataset=dataset)
        self.loaded = load_spot_model(model_path, fuse=settings.fuse, device=settings.device)

    def __call__(self, item: Dict[str, Any]) -> Dict[str, Any]:
        from .local import spot_in_worker
        import ray
        row = spot_in_worker(item["source"], loaded=self.loaded, **self.args)
        row["node"] = ray.get_runtime_context().get_node_id()  # in the manifest: where the video ran
        return {"source": item["source"], "row": json.dumps(row, default=str)}


def run_ray(sources: Sequence, model_path, out_dir, settings, *, actors: int = 2, threads: Optional[int] = None,
            force: bool = False, retries: int = 2, address: Optional[str] = None, dataset: Optional[str] = None,
            progress: bool = False, log: Optional[Callable[[str], None]] = None) -> List[Dict[str, Any]]:
    """Spot ``sources`` on Ray; the rows, manifest and folders of :func:`~meanspot_fused.engine.local.run_corpus`."""
    import sys

    from ..io.spot_outputs import remove_leftovers, video_name
    from .local import _KILL_ONCE, CorpusRun, check_engine_args
    from .manifest import failed_row

    ray = require("ray", RAY_INSTALL, "the Ray engine (--engine ray)")
    require("ray.data", RAY_INSTALL, "the Ray engine (--engine ray)")
    log = log or (lambda msg: print(msg, file=sys.stderr))
    check_engine_args(actors, threads, retries)
    # Absolute paths: actors may start elsewhere. The checks on this machine's CPU: the driver needs no
    # GPU, the actors get them.
    sources = [os.path.abspath(os.fspath(s)) for s in sources]
    model_path = None if model_path is None else os.path.abspath(os.fspath(model_path))  # None: features only
    run = CorpusRun(sources, model_path, os.path.abspath(os.fspath(out_dir)), settings, dataset=dataset,
                    force=force, log=log, check_settings=dataclasses.replace(settings, device="cpu"))
    out_dir, todo = run.out_dir, run.todo
    if todo:
        if not ray.is_initialized():
            ray.init(address=address or os.environ.get("RAY_ADDRESS"), include_dashboard=False,
                     log_to_driver=False)
        gpu = str(settings.device).startswith("cuda")
        if gpu and ray.cluster_resources().get("GPU", 0) < 1:
            raise DeviceError("--device cuda with --engine ray, but the Ray cluster has no GPU "
                              f"(resources: {ray.cluster_resources()})")
        threads = threads or max(1, int(ray.cluster_resources().get("CPU", 1)) // max(1, actors))
        ctx = ray.data.DataContext.get_current()
        ctx.max_errored_blocks = len(todo)  # a video's failure is its row, never the whole run's
        ctx.execution_no_progress_timeout_s = -1
        ctx.enable_progress_bars = progress
        ds = ray.data.from_items([{"source": s} for s in todo], override_num_blocks=len(todo))
        hook = os.environ.get(_KILL_ONCE)  # the test hook reaches actors of an already started Ray this way
        with warnings.catch_warnings():
            # Ray 2.60 deprecates actor options as keyword arguments for 2.64 and names no replacement for
            # these two: the [ray] extra stays below 2.64 until it does.
            warnings.filterwarnings("ignore", message=".*ray_remote_args.*deprecated", category=DeprecationWarning)
            ds = ds.map(_Spotter,
                        fn_constructor_kwargs=dict(model_path=model_path, settings=settings, out_dir=out_dir,
                                                   dataset=dataset, threads=threads, gpu=gpu),
                        compute=ray.data.ActorPoolStrategy(size=max(1, min(actors, len(todo))),
                                                          max_tasks_in_flight_per_actor=1),
                        num_cpus=threads, num_gpus=1 if gpu else 0,
                        runtime_env={"env_vars": {_KILL_ONCE: hook}} if hook else None,
                        # Ray Data's defaults are -1 and -1 (forever): restart actors as needed, retry a
                        # video's task a bounded number of times.
                        max_restarts=-1, max_task_retries=retries)
        for item in ds.iter_rows():  # as each video finishes
            run.record(json.loads(item["row"]))
        for src in todo:
            if src not in run.rows:  # no row: its retries ran out, every attempt killed its actor
                run.record(failed_row(src, out_dir, f"its Ray actor died on each of {retries + 1} attempts"))
        remove_leftovers(out_dir, [video_name(s) for s in todo])
    return [run.rows[s] for s in sources]
