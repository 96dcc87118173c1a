"""Frames, face boxes, crops and landmarks, checked against OpenCV called directly."""
import os

import numpy as np
import pytest

cv2 = pytest.importorskip("cv2")

from meanspot_fused.errors import MissingDependencyError  # noqa: E402
from meanspot_fused.io import frames as fr  # noqa: E402
from meanspot_fused.io.frames import (FramesError, crop_faces, detect_face, iter_frames, load_landmarks,  # noqa: E402
                                      parse_face_box, predict_landmarks, read_frames)

from helpers import FakeRect, fake_dlib  # noqa: E402


def pattern(t, height=48, width=64):
    """A colour frame with smooth gradients (MJPEG keeps them close) that changes with t."""
    yy, xx = np.mgrid[0:height, 0:width]
    b = (xx * 3 + t * 20) % 256
    g = (yy * 4 + t * 10) % 256
    r = ((xx + yy) * 2) % 256
    return np.stack([b, g, r], axis=-1).astype(np.uint8)


def capture_all(path, gray):
    capture = cv2.VideoCapture(path)
    out = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        out.append(cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY) if gray else frame)
    capture.release()
    return np.stack(out)


@pytest.fixture
def video(tmp_path):
    path = str(tmp_path / "clip.avi")
    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"MJPG"), 25, (64, 48), True)
    if not writer.isOpened():
        pytest.skip("this OpenCV build cannot write MJPG .avi files")
    written = [pattern(t) for t in range(7)]
    for frame in written:
        writer.write(frame)
    writer.release()
    return path, np.stack(written)


def test_video_round_trip(video):
    path, written = video
    gray = read_frames(path)
    assert gray.dtype == np.uint8 and gray.shape == (7, 48, 64)
    np.testing.assert_array_equal(gray, capture_all(path, gray=True))
    # MJPEG is lossy; the frames come back close to what was written.
    reference = np.stack([cv2.cvtColor(f, cv2.COLOR_BGR2GRAY) for f in written]).astype(int)
    assert np.abs(gray.astype(int) - reference).mean() < 4
    colour = read_frames(path, color=True)
    assert colour.shape == (7, 48, 64, 3)
    np.testing.assert_array_equal(colour, capture_all(path, gray=False))


def test_video_streamed_in_chunks(video):
    path, _ = video
    chunks = list(iter_frames(path, chunk=3))
    assert [c.shape[0] for c in chunks] == [3, 3, 1]
    np.testing.assert_array_equal(np.concatenate(chunks), read_frames(path))


def test_image_folder_natural_order(tmp_path):
    values = {"img10.png": 30, "img2.png": 20, "img1.png": 10, "IMG3.png": 25}
    for name, value in values.items():
        cv2.imwrite(str(tmp_path / name), np.full((8, 6), value, np.uint8))
    (tmp_path / "notes.txt").write_text("not a frame")
    frames = read_frames(tmp_path)
    assert frames.shape == (4, 8, 6)
    assert frames[:, 0, 0].tolist() == [10, 20, 25, 30]  # img1, img2, IMG3, img10
    assert [c.shape[0] for c in iter_frames(tmp_path, chunk=3)] == [3, 1]


def test_image_folder_jpeg_decoded_as_mean_does(tmp_path):
    # MEAN reads its crops with cv2.imread(path, 0): libjpeg's own grayscale decode.
    for t in range(3):
        cv2.imwrite(str(tmp_path / f"img{t + 1}.jpg"), pattern(t))
    frames = read_frames(tmp_path)
    for t in range(3):
        np.testing.assert_array_equal(frames[t], cv2.imread(str(tmp_path / f"img{t + 1}.jpg"), 0))
    colour = read_frames(tmp_path, color=True)
    np.testing.assert_array_equal(colour[1], cv2.imread(str(tmp_path / "img2.jpg")))


def test_npy_stacks(tmp_path):
    rng = np.random.default_rng(0)
    gray = rng.integers(0, 256, size=(5, 10, 12), dtype=np.uint8)
    np.save(tmp_path / "gray.npy", gray)
    np.testing.assert_array_equal(read_frames(tmp_path / "gray.npy"), gray)
    np.testing.assert_array_equal(read_frames(tmp_path / "gray.npy", color=True)[2],
                                  cv2.cvtColor(gray[2], cv2.COLOR_GRAY2BGR))

    colour = rng.integers(0, 256, size=(5, 10, 12, 3), dtype=np.uint8)
    np.save(tmp_path / "colour.npy", colour)
    out = read_frames(tmp_path / "colour.npy")
    assert out.shape == (5, 10, 12)
    for t in range(5):
        np.testing.assert_array_equal(out[t], cv2.cvtColor(colour[t], cv2.COLOR_BGR2GRAY))
    np.testing.assert_array_equal(np.concatenate(list(iter_frames(tmp_path / "colour.npy", 2))), out)

    np.save(tmp_path / "int16.npy", gray.astype(np.int16))
    np.testing.assert_array_equal(read_frames(tmp_path / "int16.npy"), gray)


@pytest.mark.parametrize("array, message", [
    (np.zeros((3, 4, 4), np.float32), "expected uint8 frames, got float32"),
    (np.full((3, 4, 4), 300, np.int16), r"must lie in \[0, 255\]"),
    (np.zeros((4, 4), np.uint8), r"expected a stack of shape \(T, H, W\) or \(T, H, W, 3\)"),
    (np.zeros((2, 4, 4, 4), np.uint8), r"expected a stack of shape"),
    (np.zeros((0, 4, 4), np.uint8), "zero frames"),
])
def test_npy_errors(tmp_path, array, message):
    np.save(tmp_path / "bad.npy", array)
    with pytest.raises(FramesError, match=message):
        read_frames(tmp_path / "bad.npy")


def test_source_errors(tmp_path):
    with pytest.raises(FramesError, match="no such file or folder"):
        read_frames(tmp_path / "missing.avi")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FramesError, match="no image files in the folder"):
        read_frames(empty)
    (tmp_path / "fake.avi").write_text("this is not a video")
    with pytest.raises(FramesError, match="fake.avi: (cannot open as a video|the video has zero readable frames)"):
        read_frames(tmp_path / "fake.avi")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "img1.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    with pytest.raises(FramesError, match="img1.jpg: cannot read the image"):
        read_frames(broken)
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    cv2.imwrite(str(mixed / "img1.png"), np.zeros((8, 6), np.uint8))
    cv2.imwrite(str(mixed / "img2.png"), np.zeros((8, 7), np.uint8))
    with pytest.raises(FramesError, match=r"img2.png: frame size 7x8 \(WxH\) differs from 6x8 of the first frame"):
        read_frames(mixed)
    with pytest.raises(ValueError, match="chunk must be an integer >= 1"):
        next(iter_frames(mixed, chunk=0))


# --------------------------------------------------------------------------------------------
# Face box
# --------------------------------------------------------------------------------------------

def test_parse_face_box():
    assert parse_face_box("10,20,30,40") == (10, 20, 30, 40)
    assert parse_face_box(" -5, 0 ,128,128") == (-5, 0, 128, 128)
    for bad in ("10,20,30", "a,b,c,d", "1,2,3,4,5", "1.5,2,3,4"):
        with pytest.raises(FramesError, match="face box must be 'x,y,w,h'"):
            parse_face_box(bad)
    with pytest.raises(FramesError, match="width and height > 0"):
        parse_face_box("0,0,0,10")


def haar_cascade_path():
    folder = getattr(getattr(cv2, "data", None), "haarcascades", "")
    candidates = [os.environ.get("MEANSPOT_HAAR_CASCADE", ""), os.path.join(folder, fr._HAAR_NAME)]
    for path in candidates:
        if path and os.path.isfile(path):
            return path
    pytest.skip("OpenCV's haarcascade_frontalface_default.xml is not installed (OpenCV 5 wheels drop it); "
                "set MEANSPOT_HAAR_CASCADE to the file")


def test_haar_cascade_finds_the_astronaut(monkeypatch):
    data = pytest.importorskip("skimage.data")
    cascade = haar_cascade_path()
    monkeypatch.setattr(fr, "_import_dlib", lambda: None)
    image = np.ascontiguousarray(data.astronaut()[..., ::-1])  # RGB -> BGR
    x, y, w, h = detect_face(image, cascade_path=cascade)
    # Hand-read from the photograph: the face spans about x 180..270, y 70..165.
    assert 60 <= w <= 160 and 60 <= h <= 160
    assert 190 <= x + w / 2 <= 260 and 90 <= y + h / 2 <= 150
    assert detect_face(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY), cascade_path=cascade) == (x, y, w, h)
    with pytest.raises(FramesError, match="no face found"):
        detect_face(np.full((200, 200), 128, np.uint8), cascade_path=cascade)


def test_detect_face_with_dlib_converts_rectangles(monkeypatch):
    module, calls = fake_dlib([FakeRect(100, 100, 200, 190), FakeRect(10, 20, 50, 70)])
    monkeypatch.setattr(fr, "_import_dlib", lambda: module)
    frame = np.zeros((240, 320, 3), np.uint8)
    # MEAN's loop keeps the last rectangle dlib lists, not the largest:
    # left 10, top 20, right 50, bottom 70 -> (10, 20, 40, 50).
    assert detect_face(frame) == (10, 20, 40, 50)
    assert calls == [("detect", (240, 320, 3), 1)]
    module, _ = fake_dlib([])
    monkeypatch.setattr(fr, "_import_dlib", lambda: module)
    with pytest.raises(FramesError, match="no face found .* by dlib's frontal face detector"):
        detect_face(frame)


def test_detect_face_without_any_detector(monkeypatch, tmp_path):
    monkeypatch.setattr(fr, "_import_dlib", lambda: None)
    message = "no face detector available: dlib is not installed and .*none.xml.*--face-box"
    with pytest.raises(FramesError, match=message):
        detect_face(np.zeros((50, 50), np.uint8), cascade_path=str(tmp_path / "none.xml"))
    with pytest.raises(FramesError, match=r"frame must be uint8 \(H, W\) or \(H, W, 3\)"):
        detect_face(np.zeros((50, 50), np.float32))


# --------------------------------------------------------------------------------------------
# Cropping
# --------------------------------------------------------------------------------------------

@pytest.fixture
def colour_frames():
    rng = np.random.default_rng(3)
    base = cv2.GaussianBlur(rng.integers(0, 256, size=(60, 80, 3), dtype=np.uint8), (7, 7), 0)
    return np.stack([np.roll(base, t, axis=1) for t in range(3)])


def test_crop_faces_reproduces_mean_crops(colour_frames, tmp_path):
    box = (10, 5, 40, 30)
    out = crop_faces(colour_frames, box)
    assert out.dtype == np.uint8 and out.shape == (3, 128, 128)
    for t, frame in enumerate(colour_frames):
        # MEAN: image[top:bottom, left:right], cv2.resize, cv2.imwrite(.jpg), cv2.imread(path, 0).
        face = cv2.resize(frame[5:35, 10:50], (128, 128))
        cv2.imwrite(str(tmp_path / "crop.jpg"), face)
        np.testing.assert_array_equal(out[t], cv2.imread(str(tmp_path / "crop.jpg"), 0))


def test_crop_faces_without_jpeg(colour_frames):
    out = crop_faces(colour_frames, (10, 5, 40, 30), jpeg_roundtrip=False)
    for t, frame in enumerate(colour_frames):
        expected = cv2.cvtColor(cv2.resize(frame[5:35, 10:50], (128, 128)), cv2.COLOR_BGR2GRAY)
        np.testing.assert_array_equal(out[t], expected)
    gray = np.stack([cv2.cvtColor(f, cv2.COLOR_BGR2GRAY) for f in colour_frames])
    np.testing.assert_array_equal(crop_faces(gray, (10, 5, 40, 30), jpeg_roundtrip=False)[1],
                                  cv2.resize(gray[1, 5:35, 10:50], (128, 128)))
    ok, encoded = cv2.imencode(".jpg", cv2.resize(gray[2, 5:35, 10:50], (128, 128)))
    np.testing.assert_array_equal(crop_faces(gray, (10, 5, 40, 30))[2], cv2.imdecode(encoded, 0))


def test_crop_faces_clamps_the_box(colour_frames):
    gray = np.stack([cv2.cvtColor(f, cv2.COLOR_BGR2GRAY) for f in colour_frames])
    clamped = crop_faces(gray, (-5, -8, 30, 30), jpeg_roundtrip=False)
    np.testing.assert_array_equal(clamped[0], cv2.resize(gray[0, 0:22, 0:25], (128, 128)))
    far = crop_faces(gray, (70, 50, 40, 40), jpeg_roundtrip=False)
    np.testing.assert_array_equal(far[0], cv2.resize(gray[0, 50:60, 70:80], (128, 128)))
    with pytest.raises(FramesError, match="lies outside the 80x60"):
        crop_faces(gray, (90, 0, 10, 10))
    with pytest.raises(FramesError, match="width and height > 0"):
        crop_faces(gray, (0, 0, 0, 10))


def test_crop_faces_without_box():
    crops = np.random.default_rng(0).integers(0, 256, size=(2, 128, 128), dtype=np.uint8)
    np.testing.assert_array_equal(crop_faces(crops), crops)
    colour = np.random.default_rng(1).integers(0, 256, size=(2, 128, 128, 3), dtype=np.uint8)
    np.testing.assert_array_equal(crop_faces(colour)[1], cv2.cvtColor(colour[1], cv2.COLOR_BGR2GRAY))
    with pytest.raises(FramesError, match="without a face box they must already be 128x128"):
        crop_faces(np.zeros((2, 64, 64), np.uint8))
    with pytest.raises(FramesError, match="frames must be uint8"):
        crop_faces(np.zeros((2, 128, 128), np.float32))


# --------------------------------------------------------------------------------------------
# Landmarks
# --------------------------------------------------------------------------------------------

def landmark_points():
    return np.stack([np.arange(68) + 20, 2 * np.arange(68) % 128], axis=1)


def test_load_landmarks_formats(tmp_path):
    points = landmark_points()
    (tmp_path / "space.txt").write_text("\n".join(f"{x} {y}" for x, y in points) + "\n")
    (tmp_path / "comma.txt").write_text("# x,y\n" + "\n".join(f"{x}, {y}" for x, y in points) + "\n\n")
    np.save(tmp_path / "points.npy", points.astype(np.float32))
    for name in ("space.txt", "comma.txt", "points.npy"):
        out = load_landmarks(tmp_path / name)
        assert out.dtype == np.int64
        np.testing.assert_array_equal(out, points)
    (tmp_path / "sub.txt").write_text("\n".join(f"{x + 0.4} {y - 0.6}" for x, y in points))
    np.testing.assert_array_equal(load_landmarks(tmp_path / "sub.txt"), points - [0, 1])


def test_load_landmarks_rounds_half_up_as_mean_rois_does(tmp_path):
    """A landmark at x.5 lands on the same pixel from a file as from an array given to mean_rois.

    Both use dlib's floor(x + 0.5), so x.5 goes to x + 1; np.rint (half to
    even) would send every even x.5 to x, one pixel off the features stage.
    """
    import torch

    from meanspot_fused.features import mean_rois

    points = landmark_points()
    half = points + [0.5, -0.5]
    (tmp_path / "half.txt").write_text("\n".join(f"{x} {y}" for x, y in half))
    np.save(tmp_path / "half.npy", half.astype(np.float32))
    for name in ("half.txt", "half.npy"):
        out = load_landmarks(tmp_path / name)
        np.testing.assert_array_equal(out, points + [1, 0], err_msg=name)
        assert torch.equal(mean_rois(out), mean_rois(half)), name


@pytest.mark.parametrize("text, message", [
    ("1 2\n" * 67, r"expected 68 landmarks as 68 rows of x, y .* shape \(67, 2\)"),
    ("1 2\n" * 67 + "1 2 3\n", "line 68: expected two numbers x, y, got 3 values"),
    ("1 2\n" * 10 + "a b\n", "line 11: expected two numbers x, y, got 'a b'"),
    ("", r"shape \(0, 2\)"),
])
def test_load_landmarks_errors(tmp_path, text, message):
    path = tmp_path / "bad.txt"
    path.write_text(text)
    with pytest.raises(FramesError, match=message) as info:
        load_landmarks(path)
    assert str(path) in str(info.value)


def test_load_landmarks_npy_and_missing_errors(tmp_path):
    np.save(tmp_path / "flat.npy", np.zeros(136))
    with pytest.raises(FramesError, match=r"flat.npy: expected 68 landmarks .* shape \(136,\)"):
        load_landmarks(tmp_path / "flat.npy")
    with pytest.raises(FramesError, match="no such landmark file"):
        load_landmarks(tmp_path / "none.txt")


def test_predict_landmarks_without_dlib(monkeypatch):
    monkeypatch.setattr(fr, "_import_dlib", lambda: None)
    with pytest.raises(MissingDependencyError, match="needs dlib: pip install \"meanspot_fused\\[faces\\]\".*--landmarks"):
        predict_landmarks(np.zeros((128, 128), np.uint8), "shape_predictor_68_face_landmarks.dat")


def test_predict_landmarks_calls_dlib_as_mean(monkeypatch, tmp_path):
    module, calls = fake_dlib()
    monkeypatch.setattr(fr, "_import_dlib", lambda: module)
    model = tmp_path / "model.dat"
    model.write_bytes(b"")
    out = predict_landmarks(np.zeros((128, 128), np.uint8), model)
    np.testing.assert_array_equal(out, np.stack([np.arange(68), 2 * np.arange(68) + 1], axis=1))
    assert calls == [("predictor", str(model)), ("predict", (128, 128), (0, 0, 128, 128))]
    with pytest.raises(FramesError, match="no such dlib shape predictor file"):
        predict_landmarks(np.zeros((128, 128), np.uint8), tmp_path / "missing.dat")
