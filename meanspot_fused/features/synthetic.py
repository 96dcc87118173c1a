"""Face frames with known micro-movements, for tests and benchmarks (no licensed data).

The face is the public-domain portrait ``skimage.data.astronaut()`` (shipped
in scikit-image's wheel), cropped and resized to MEAN's 128 x 128 grayscale.

* :func:`face_crop`: the (128, 128) uint8 crop.
* :func:`face_landmarks`: dlib-ordered (68, 2) int (x, y) points on the crop.
* :func:`face_video`: (T, 128, 128) uint8 frames with brow raises and
  mouth-corner pulls at known frames, global drift, noise and a JPEG round
  trip; returns the ground-truth event intervals.
* :func:`deformed_pair`: one pair (img1, img2) with a known smooth
  deformation, optionally with its true flow.

Frames are rendered at 4x (the crop upsampled once, bicubic), warped there
and reduced with INTER_AREA, so every frame, moving or not, goes through the
same filtering. Everything is deterministic given ``seed``. Needs
scikit-image and OpenCV (imported on first use).
"""
from __future__ import annotations

from functools import lru_cache
from typing import List, Sequence, Tuple

import numpy as np

__all__ = ["SIZE", "face_crop", "face_landmarks", "face_video", "deformed_pair"]

SIZE = 128
# Render factor: frames are warped at SIZE * _UP then reduced to SIZE.
_UP = 4
# The face in astronaut() (512 x 512): rows 62..181, columns 164..283, about
# the box dlib's frontal detector gives (brows to chin, cheek to cheek).
_FACE_BOX = (62, 182, 164, 284)

# Mean shape of dlib's 68 landmarks in a unit face box (x, y), the widely used
# template of OpenFace's align_dlib (rounded to 3 decimals).
_TEMPLATE = np.array([
    (.079, .339), (.083, .457), (.097, .576), (.122, .692), (.169, .800), (.240, .896), (.326, .977), (.422, 1.043),
    (.532, 1.061), (.641, 1.040), (.738, .972), (.824, .890), (.895, .792), (.939, .682), (.961, .562), (.971, .442),
    (.971, .322), (.164, .249), (.218, .204), (.291, .192), (.367, .204), (.439, .233), (.586, .228), (.660, .196),
    (.737, .182), (.813, .193), (.871, .235), (.515, .319), (.516, .396), (.517, .474), (.518, .553), (.434, .604),
    (.476, .621), (.521, .634), (.566, .619), (.607, .602), (.252, .331), (.299, .303), (.356, .303), (.404, .339),
    (.353, .350), (.297, .350), (.631, .334), (.679, .296), (.736, .295), (.783, .321), (.740, .342), (.685, .344),
    (.353, .746), (.415, .719), (.478, .707), (.523, .717), (.570, .705), (.635, .716), (.700, .739), (.639, .805),
    (.576, .835), (.525, .842), (.476, .838), (.414, .810), (.380, .750), (.478, .745), (.523, .749), (.571, .743),
    (.672, .744), (.573, .777), (.524, .783), (.478, .778)])

# Points located by eye on the crop (x, y), which pin the template to this
# face: eye corners (36, 39, 42, 45), nose base (33), outer mouth corners
# (48, 54), chin (8).
_ANCHORS = {36: (31, 42), 39: (53, 43), 42: (74, 45), 45: (97, 44), 33: (62, 73), 48: (43, 84), 54: (84, 85),
            8: (64, 122)}
# Points MEAN's ROIs use, placed by eye on the crop's brows, eyes and lips
# (the open smile spreads the lips further than the template's closed mouth).
_MEASURED = {17: (29, 32), 19: (39, 29), 24: (87, 31), 26: (102, 36), 41: (36, 44), 46: (91, 46), 50: (56, 81),
             57: (63, 95), 60: (45, 85), 64: (82, 85)}

# Event kinds: moving landmarks, displacement direction (x, y) per unit
# amplitude, Gaussian radius in crop pixels.
_EVENTS = {
    "brow": ((19, 24, 20, 23), (0.0, -1.0), 7.0),
    "mouth": ((48, 54), None, 6.0),  # corners pulled outwards and up
}


def _cv2():
    try:
        import cv2
    except ImportError as e:
        raise ImportError("meanspot_fused.features.synthetic needs OpenCV: pip install opencv-contrib-python-headless"
                          ) from e
    return cv2


@lru_cache(maxsize=1)
def _crop_float() -> np.ndarray:
    try:
        from skimage import data
    except ImportError as e:
        raise ImportError("meanspot_fused.features.synthetic needs scikit-image for its face photograph: "
                          "pip install scikit-image") from e
    cv2 = _cv2()
    gray = cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2GRAY)
    y0, y1, x0, x1 = _FACE_BOX
    return cv2.resize(gray[y0:y1, x0:x1], (SIZE, SIZE), interpolation=cv2.INTER_AREA).astype(np.float32)


def face_crop() -> np.ndarray:
    """The (128, 128) uint8 grayscale face crop of ``skimage.data.astronaut()``."""
    return _crop_float().astype(np.uint8)


def _fit(template: np.ndarray, targets: dict) -> np.ndarray:
    """Template points mapped by the least-squares affine map taking template[i] to targets[i]."""
    idx = sorted(targets)
    affine, *_ = np.linalg.lstsq(np.c_[template[idx], np.ones(len(idx))], np.array([targets[i] for i in idx], float),
                                 rcond=None)
    return np.c_[template, np.ones(len(template))] @ affine


def face_landmarks() -> np.ndarray:
    """Plausible dlib-ordered (68, 2) int64 (x, y) landmarks of :func:`face_crop`.

    The mean-face template mapped by the affine transform that best fits the
    hand-located anchors (eye corners, nose base, mouth corners, chin), the
    lips refitted to the located mouth points (the face smiles), then the
    ten points MEAN's ROIs use (17, 19, 24, 26, 41, 46, 50, 57, 60, 64) set
    to their hand-located positions on the brows, eyes and lips.
    """
    pts = _fit(_TEMPLATE, _ANCHORS)
    # The open smile: the lips get their own fit to the located mouth points.
    mouth = {i: p for i, p in {**_ANCHORS, **_MEASURED}.items() if i >= 48}
    pts[48:] = _fit(_TEMPLATE, mouth)[48:]
    for i, p in _MEASURED.items():
        pts[i] = p
    return np.floor(pts + 0.5).astype(np.int64)


def _bump_field(centres: np.ndarray, vectors: np.ndarray, radius: float, size: int, scale: float) -> np.ndarray:
    """Sum of Gaussian bumps: (2, size, size) displacement; bump i has peak `vectors[i]` at `centres[i]`.

    `centres`, `radius` in crop pixels; the grid has `scale` samples per crop pixel.
    """
    g = (np.arange(size, dtype=np.float64) + 0.5) / scale - 0.5
    field = np.zeros((2, size, size))
    for (cx, cy), (vx, vy) in zip(centres, vectors):
        w = np.exp(-((g[None, :] - cx) ** 2 + (g[:, None] - cy) ** 2) / (2 * radius ** 2))
        field[0] += vx * w
        field[1] += vy * w
    return field


def _event_field(kind: str, amplitude: float, size: int, scale: float) -> np.ndarray:
    """Displacement (2, size, size) in crop pixels of one event at full amplitude."""
    if kind not in _EVENTS:
        raise ValueError(f"event kind must be one of {sorted(_EVENTS)}, got {kind!r}")
    points, direction, radius = _EVENTS[kind]
    lm = face_landmarks().astype(np.float64)
    centres = lm[list(points)]
    if direction is None:  # mouth corners: outwards from the mouth centre, and up
        centre_x = lm[[48, 54], 0].mean()
        vectors = np.array([(np.sign(x - centre_x) * 0.8, -0.6) for x, _ in centres])
    else:
        vectors = np.tile(direction, (len(centres), 1))
    field = _bump_field(centres, vectors, radius, size, scale)
    peak = np.abs(field).max()
    return field * (amplitude / peak if peak > 0 else 0.0)


def _render(scene: np.ndarray, field: np.ndarray) -> np.ndarray:
    """Frame (SIZE, SIZE) float32: scene (S, S) sampled at x - field (crop pixels), then INTER_AREA.

    Backward warping: the frame at x shows the scene at x - d(x), so content
    moves by about +d.
    """
    cv2 = _cv2()
    s = scene.shape[0]
    grid = np.arange(s, dtype=np.float32)
    map_x = grid[None, :] - (field[0] * _UP).astype(np.float32)
    map_y = grid[:, None] - (field[1] * _UP).astype(np.float32)
    warped = cv2.remap(scene, map_x, map_y, cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT)
    return cv2.resize(warped, (SIZE, SIZE), interpolation=cv2.INTER_AREA)


@lru_cache(maxsize=1)
def _scene() -> np.ndarray:
    cv2 = _cv2()
    return cv2.resize(_crop_float(), (SIZE * _UP, SIZE * _UP), interpolation=cv2.INTER_CUBIC)


def _finish(frame: np.ndarray, rng: np.random.Generator, noise: float, jpeg_quality) -> np.ndarray:
    """Noise, rounding to uint8 and an optional JPEG round trip (as MEAN's crops are stored)."""
    if noise:
        frame = frame + rng.normal(0.0, noise, frame.shape)
    img = np.clip(np.rint(frame), 0, 255).astype(np.uint8)
    if jpeg_quality is not None:
        cv2 = _cv2()
        ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)])
        if not ok:
            raise RuntimeError("cv2.imencode failed to write a JPEG")
        img = cv2.imdecode(buf, cv2.IMREAD_GRAYSCALE)
    return img


def face_video(T: int, events: Sequence = ((20, "brow"), (50, "mouth")), drift=(0.0, 0.0), noise: float = 1.0,
               jpeg_quality=90, seed: int = 0) -> Tuple[np.ndarray, List[Tuple[int, int, str]]]:
    """A (T, 128, 128) uint8 face video with micro-movements at known frames.

    events: each ``(onset, kind)`` or ``(onset, kind, length, amplitude)``;
    kind "brow" (both brows raised) or "mouth" (both corners pulled outwards
    and up); length in frames (default 6), amplitude the peak displacement in
    crop pixels (default 2; 0.5 to 3 is micro-expression-like). The
    displacement rises and falls as sin^2 over frames onset..onset + length - 1.
    drift: (dx, dy) global translation in pixels per frame (a float: along x).
    noise: std of Gaussian noise in gray levels; jpeg_quality: None for none.
    Returns (frames, truth), truth a list of (onset, offset, kind) with
    offset = onset + length - 1 (inclusive, as MEGC labels), clipped to the video.
    """
    if isinstance(T, bool) or not isinstance(T, (int, np.integer)) or T < 1:
        raise ValueError(f"T must be an int >= 1, got {T!r}")
    dx, dy = (float(drift), 0.0) if np.isscalar(drift) else (float(drift[0]), float(drift[1]))
    rng = np.random.default_rng(seed)
    size = SIZE * _UP
    parsed = []
    for ev in events:
        onset, kind, length, amplitude = (tuple(ev) + (6, 2.0))[:4] if len(ev) == 2 else tuple(ev)
        if int(length) < 1:
            raise ValueError(f"event length must be >= 1, got {length} in {ev!r}")
        parsed.append((int(onset), kind, int(length), _event_field(kind, float(amplitude), size, _UP)))
    scene = _scene()
    frames = np.empty((T, SIZE, SIZE), np.uint8)
    for t in range(T):
        field = np.zeros((2, size, size))
        field[0] += dx * t
        field[1] += dy * t
        for onset, _, length, f in parsed:
            if onset <= t < onset + length:
                field += f * np.sin(np.pi * (t - onset + 1) / (length + 1)) ** 2
        frames[t] = _finish(_render(scene, field), rng, noise, jpeg_quality)
    truth = [(max(o, 0), min(o + n - 1, T - 1), k) for o, k, n, _ in parsed if o < T and o + n - 1 >= 0]
    return frames, truth


def deformed_pair(magnitude: float = 1.0, kind: str = "face", seed: int = 0, noise: float = 0.0,
                  return_flow: bool = False):
    """One pair (img1, img2) of (128, 128) uint8 frames, img2 a smooth deformation of img1.

    kind: "face" (the crop, a random smooth local field), "texture" (smooth
    random texture, same kind of field) or "translation" (the crop shifted by
    ``magnitude`` pixels along a random direction). The field peaks at
    ``magnitude`` pixels. With ``return_flow`` also returns the true flow
    (2, 128, 128) float32 in OpenCV's convention (img1(x) ~ img2(x + flow(x))),
    accurate to the interpolation of the rendering.
    """
    if kind not in ("face", "texture", "translation"):
        raise ValueError(f"kind must be 'face', 'texture' or 'translation', got {kind!r}")
    cv2 = _cv2()
    rng = np.random.default_rng(seed)
    size = SIZE * _UP
    if kind == "texture":
        tex = cv2.GaussianBlur(rng.uniform(0, 255, (SIZE, SIZE)).astype(np.float32), (0, 0), 2.0)
        tex = (tex - tex.min()) / max(float(np.ptp(tex)), 1e-6) * 200 + 28
        scene = cv2.resize(tex.astype(np.float32), (size, size), interpolation=cv2.INTER_CUBIC)
    else:
        scene = _scene()
    if kind == "translation":
        angle = rng.uniform(0, 2 * np.pi)
        field = np.empty((2, size, size))
        field[0], field[1] = magnitude * np.cos(angle), magnitude * np.sin(angle)
    else:
        n = 6
        centres = rng.uniform(24, SIZE - 24, (n, 2))
        vectors = rng.normal(0, 1, (n, 2))
        field = _bump_field(centres, vectors, 12.0, size, _UP)
        field *= magnitude / max(np.abs(field).max(), 1e-12)
    img1 = _finish(_render(scene, np.zeros_like(field)), rng, noise, None)
    img2 = _finish(_render(scene, field), rng, noise, None)
    if not return_flow:
        return img1, img2
    # img2(y) = img1(y - d(y)), so the flow f at x solves f(x) = d(x + f(x)):
    # a few fixed-point steps on the crop-resolution field.
    d = np.stack([cv2.resize(c.astype(np.float32), (SIZE, SIZE), interpolation=cv2.INTER_AREA) for c in field])
    grid = np.arange(SIZE, dtype=np.float32)
    flow = d.copy()
    for _ in range(5):
        mx, my = grid[None, :] + flow[0], grid[:, None] + flow[1]
        flow = np.stack([cv2.remap(c, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE) for c in d])
    return img1, img2, flow.astype(np.float32)
