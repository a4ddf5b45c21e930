"""hpelib.predict: a trained model on your own pictures and videos (python -m hpelib.predict)."""
from __future__ import annotations

import io
import json
from fractions import Fraction
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from conftest import SHARED_DATA
from hpelib.data import build_dataset
from hpelib.data.mat_sets import read_mat_label
from hpelib.engine import evaluate
from hpelib.models import ModelConfig, build_model
from hpelib.models.inputs import input_spec_of
from hpelib.predict import Detection, FacePose, HaarDetector, Predictor
from hpelib.predict.cli import main
from hpelib.predict.detect import box_iou
from hpelib.predict.draw import draw_faces
from hpelib.viz import AXIS_RGB

av = pytest.importorskip("av")
pytest.importorskip("cv2")

N_REAL = 10  # AFLW2000 pictures used: enough to mean something, few enough to stay fast


@pytest.fixture(scope="module")
def model_pt(tmp_path_factory) -> Path:
    from hpelib.experiment import demo_model

    return demo_model(tmp_path_factory.mktemp("demo"), image_size=32, steps=1)


@pytest.fixture(scope="module")
def real_faces(tmp_path_factory, shared_aflw2000) -> Path:
    """A folder of links to the first AFLW2000 pictures (and labels) of ../shared within +-99 degrees.

    ``shared_aflw2000`` skips the test, saying why, when ../shared is absent.
    """
    folder = tmp_path_factory.mktemp("aflw")
    for jpg in sorted(shared_aflw2000.glob("*.jpg")):
        pose, _ = read_mat_label(jpg.with_suffix(".mat"))
        if np.abs(pose).max() <= 99:
            for f in (jpg, jpg.with_suffix(".mat")):
                (folder / f.name).symlink_to(f)
        if len(list(folder.glob("*.jpg"))) == N_REAL:
            break
    return folder


@pytest.fixture(scope="module")
def crops(tmp_path_factory):
    """Synthetic face crops saved as PNG (lossless) next to the data set they come from: ``(folder, dataset)``."""
    root = tmp_path_factory.mktemp("synthetic")
    ds = build_dataset("synthetic", root=root / "cache", split="test", n=4, image_size=32, train=False)
    folder = root / "crops"
    (folder / "sub").mkdir(parents=True)
    for i in range(len(ds)):
        Image.fromarray(np.asarray(ds.load(i))).save(folder / ("sub" if i == 3 else "") / f"{ds.names[i]}.png")
    return folder, ds


def run(capsys, *argv) -> tuple[int, str, str]:
    """``python -m hpelib.predict ARGV`` in this process: (exit status, stdout, stderr)."""
    status = main([str(a) for a in argv] + ["--no-progress"])
    out = capsys.readouterr()
    return status, out.out, out.err


def read_rows(out: Path) -> pd.DataFrame:
    rows = pd.read_csv(out / "predictions.csv", keep_default_na=False, na_values=[])
    jsonl = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert len(jsonl) == len(rows) and [r["file"] for r in jsonl] == list(rows["file"])
    return rows


def write_boxes_csv(path: Path, rows) -> Path:
    pd.DataFrame(rows, columns=["file", "frame", "x0", "y0", "x1", "y1"]).to_csv(path, index=False)
    return path


# -- real faces ------------------------------------------------------------------------------------------------
@pytest.mark.shared
def test_landmark_boxes_give_the_numbers_of_evaluate(real_faces, model_pt, tmp_path, capsys):
    size = Predictor(model_pt, detector=None).spec.image_size
    ds = build_dataset("aflw2000", root=real_faces, train=False, image_size=size)
    saved = torch.load(model_pt, weights_only=True)  # the demo model was tested on whole synthetic pictures:
    saved["input"] = input_spec_of(ds).to_dict()     # record AFLW2000's test crop, as a model tested on it does
    model_pt = tmp_path / "model.pt"
    torch.save(saved, model_pt)
    expected = evaluate(model_pt, ds, progress=False)
    boxes = write_boxes_csv(tmp_path / "boxes.csv", [(real_faces / name, 0, *box)
                                                     for name, box in zip(ds.names, ds.face_boxes.boxes)])
    status, out, _ = run(capsys, "--checkpoint", model_pt, real_faces, "--out", tmp_path / "out",
                         "--boxes", boxes, "--no-draw")
    assert status == 0 and f"{N_REAL} files (0 failed), {N_REAL} frames, {N_REAL} faces" in out
    rows = read_rows(tmp_path / "out")
    assert list(rows["file"]) == [(real_faces / name).as_posix() for name in ds.names]  # sorted, one face each
    assert (rows["score"] == "").all() and (rows["face"] == 0).all()
    np.testing.assert_allclose(rows[["x0", "y0", "x1", "y1"]].to_numpy(float), ds.face_boxes.boxes, atol=0.01)
    np.testing.assert_allclose(rows[["yaw", "pitch", "roll"]].to_numpy(float), expected.pred, atol=1e-4)


@pytest.mark.shared
def test_haar_finds_most_real_faces_with_tight_boxes(real_faces, model_pt, tmp_path, capsys):
    ds = build_dataset("aflw2000", root=real_faces, train=False, image_size=32, drop_invisible_landmarks=True)
    status, _, _ = run(capsys, "--checkpoint", model_pt, real_faces, "--out", tmp_path / "out", "--no-draw")
    rows = read_rows(tmp_path / "out")
    assert status == 0 and (rows["score"] != "").all()
    found = 0
    for name, tight in zip(ds.names, ds.face_boxes.boxes):
        boxes = rows.loc[rows["file"] == (real_faces / name).as_posix(), ["x0", "y0", "x1", "y1"]].to_numpy(float)
        found += max((box_iou(b, tight) for b in boxes), default=0.0) >= 0.5  # corrected to the landmark box
    assert found >= 0.7 * N_REAL


# -- videos ------------------------------------------------------------------------------------------------------
def face_frames(n: int, shared_root: Path) -> list[np.ndarray]:
    """``n`` equal-sized RGB face pictures: AFLW2000's when ../shared has them, else synthetic renders."""
    real = sorted((shared_root / "aflw2000").glob("*.jpg"))[:n] if shared_root.is_dir() else []
    if len(real) == n:
        return [np.asarray(Image.open(p).convert("RGB")) for p in real]
    from hpelib.data.synthetic import render_heads

    return list(render_heads(np.zeros((n, 3)), 192, seed=0))


def write_video(path: Path, frames, rate: int = 10) -> Path:
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=rate)
        stream.width, stream.height, stream.pix_fmt = frames[0].shape[1], frames[0].shape[0], "yuv420p"
        stream.bit_rate = 20_000_000  # nearly lossless: what changes in the annotated video is the drawing
        for rgb in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")))
        container.mux(stream.encode(None))
    return path


def test_a_video_gives_an_annotated_video_and_a_row_per_face_and_frame(model_pt, tmp_path, capsys):
    frames = face_frames(6, SHARED_DATA)
    video = write_video(tmp_path / "clip.mp4", frames)
    h, w = frames[0].shape[:2]
    box = (w * 0.3, h * 0.3, w * 0.7, h * 0.75)
    faces = {i: [box] for i in range(6)}
    faces[2] = [box, (0.0, 0.0, w * 0.25, h * 0.25)]  # two faces in frame 2
    faces[4] = []  # none in frame 4
    boxes = tmp_path / "boxes.jsonl"
    boxes.write_text("".join(json.dumps({"file": str(video), "frame": i, "x0": b[0], "y0": b[1], "x1": b[2],
                                         "y1": b[3]}) + "\n" for i, bs in faces.items() for b in bs))
    status, out, _ = run(capsys, "--checkpoint", model_pt, video, "--out", tmp_path / "out", "--boxes", boxes)
    assert status == 0 and "1 files (0 failed), 6 frames, 6 faces" in out
    rows = read_rows(tmp_path / "out")
    assert list(zip(rows["frame"], rows["face"])) == [(0, 0), (1, 0), (2, 0), (2, 1), (3, 0), (5, 0)]
    with av.open(str(tmp_path / "out" / "annotated" / "clip.mp4")) as annotated:
        stream = annotated.streams.video[0]
        decoded = [f.to_ndarray(format="rgb24") for f in annotated.decode(stream)]
        assert Fraction(stream.average_rate) == 10 and stream.codec_context.name in ("h264", "mpeg4")
    assert len(decoded) == 6 and decoded[0].shape == (h, w, 3)
    x0, y0, x1, y1 = (round(v) for v in box)

    def drawn(i):  # the part of the face box that changed more than the codecs change it
        return (np.abs(decoded[i].astype(int) - frames[i]).sum(-1) > 60)[y0:y1, x0:x1].mean()

    assert drawn(0) > 0.01 and drawn(0) > 5 * drawn(4)  # frame 4 has no face: nothing drawn


# -- face crops and bad inputs -------------------------------------------------------------------------------------
def test_a_video_cut_short_keeps_its_rows_and_says_so(model_pt, tmp_path, capsys):
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 255, (64, 64, 3), dtype=np.uint8) for _ in range(30)]
    whole = tmp_path / "whole.mp4"
    with av.open(str(whole), "w", options={"movflags": "faststart"}) as container:  # the index first, as on the web
        stream = container.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 64, "yuv420p"
        for rgb in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")))
        container.mux(stream.encode(None))
    data = whole.read_bytes()
    (tmp_path / "cut.mp4").write_bytes(data[: len(data) // 2])
    status, out, err = run(capsys, "--checkpoint", model_pt, tmp_path / "cut.mp4", "--out", tmp_path / "out",
                           "--cropped", "--no-draw")
    rows = read_rows(tmp_path / "out")
    assert status == 1 and 0 < len(rows) < 30, (out, err)
    assert f"warning: {tmp_path / 'cut.mp4'}: the video ended after {len(rows)} of its 30 frames" in err
    assert "1 videos ended early" in out and "ended before their last frame" in err
    status, _, err = run(capsys, "--checkpoint", model_pt, whole, "--out", tmp_path / "out2", "--cropped", "--no-draw")
    assert status == 0 and "ended" not in err and len(read_rows(tmp_path / "out2")) == 30


def test_cropped_folder_gives_the_numbers_of_evaluate(crops, model_pt, tmp_path, capsys):
    folder, ds = crops
    status, out, _ = run(capsys, "--checkpoint", model_pt, folder, "--out", tmp_path / "out", "--cropped")
    assert status == 0
    rows = read_rows(tmp_path / "out")
    names = [Path(f).stem for f in rows["file"]]
    assert sorted(names) == sorted(ds.names) and (rows["score"] == "").all()
    order = [list(ds.names).index(n) for n in names]
    np.testing.assert_allclose(rows[["yaw", "pitch", "roll"]].to_numpy(float),
                               evaluate(model_pt, ds, progress=False).pred[order], atol=1e-4)
    size = np.asarray(ds.load(0)).shape[0]
    assert (rows[["x0", "y0", "x1", "y1"]].to_numpy(float) == [0, 0, size, size]).all()  # the whole picture
    assert (tmp_path / "out" / "annotated" / "sub" / f"{ds.names[3]}.png").is_file()  # relative names kept


def test_a_corrupt_picture_is_named_and_skipped_and_the_others_kept(crops, model_pt, tmp_path, capsys):
    folder, ds = crops
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    for i, name in enumerate(ds.names[:2]):
        Image.fromarray(np.asarray(ds.load(i))).save(mixed / f"{i}_{name}.jpg")
    (mixed / "1_corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (mixed / "2_not_a_video.mp4").write_text("hello, I am a text file")
    status, out, err = run(capsys, "--checkpoint", model_pt, mixed, "--out", tmp_path / "out", "--cropped")
    assert status == 1
    assert "1_corrupt.jpg: cannot decode the picture" in err and "2_not_a_video.mp4: cannot decode the video" in err
    assert "Traceback" not in err and "4 files (2 failed), 2 frames, 2 faces" in out
    assert len(read_rows(tmp_path / "out")) == 2  # the good pictures' rows, written around the bad ones


def test_same_named_inputs_get_one_annotated_file_each_and_a_rerun_keeps_none_of_the_last(crops, model_pt,
                                                                                         tmp_path, capsys):
    folder, ds = crops
    for i, sub in enumerate(("a", "b")):
        (tmp_path / sub).mkdir()
        Image.fromarray(np.asarray(ds.load(i))).save(tmp_path / sub / "x.jpg")
    out = tmp_path / "out"
    (out / "annotated").mkdir(parents=True)
    (out / "annotated" / "from_an_earlier_run.jpg").write_text("stale")
    status, _, _ = run(capsys, "--checkpoint", model_pt, tmp_path / "a" / "x.jpg", tmp_path / "b" / "x.jpg",
                       "--out", out, "--cropped")
    assert status == 0
    rows = read_rows(out)
    assert list(rows["annotated"]) == ["x.jpg", "x_2.jpg"]
    assert sorted(p.name for p in (out / "annotated").iterdir()) == ["x.jpg", "x_2.jpg"]
    first, second = (np.asarray(Image.open(out / "annotated" / n)) for n in ("x.jpg", "x_2.jpg"))
    assert np.abs(first.astype(int) - second).mean() > 1  # two pictures, not one written twice
    from hpelib.predict.outputs import annotated_names

    assert annotated_names([(Path("v.mp4"), True), (Path("v.mkv"), True), (Path("V.MP4"), True),
                            (Path("p.xyz"), False)]) == [Path("v.mp4"), Path("v_2.mp4"), Path("V_3.mp4"),
                                                         Path("p.xyz.png")]


def test_checkpoint_and_input_errors_are_one_line(model_pt, tmp_path, capsys):
    picture = tmp_path / "face.png"
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(picture)
    config = ModelConfig(backbone="resnet18-narrow", pose_head=None, ssl_tasks={"rotation": {"weight": 1.0}})
    torch.save({"model_config": config.to_dict(), "model": build_model(config).state_dict()},  # as pre-training does
               tmp_path / "pretrain.pt")
    (tmp_path / "empty.pt").write_bytes(b"")
    cases = [(["--checkpoint", tmp_path / "pretrain.pt", picture], ["pretrain.pt is an SSL pre-training checkpoint "
                                                                    "without a pose head", "head pose run"]),
             (["--checkpoint", tmp_path / "empty.pt", picture], ["empty.pt (0 bytes) is empty"]),
             (["--checkpoint", tmp_path / "nothing.pt", picture], ["nothing.pt does not exist"]),
             (["--checkpoint", model_pt, picture, tmp_path / "missing.jpg"], ["input path not found", "missing.jpg"]),
             (["--checkpoint", model_pt, picture, "--out", picture], [f"--out {picture} is a file, not a folder"]),
             (["--checkpoint", model_pt, picture, "--out", picture / "out"], [f"lies under the file {picture}"])]
    for argv, messages in cases:
        status, _, err = run(capsys, *argv, *([] if "--out" in argv else ["--out", tmp_path / "out"]))
        assert status == 2 and err.startswith("error: ") and len(err.strip().splitlines()) == 1, err
        assert all(m in err for m in messages), err
    assert not (tmp_path / "out" / "predictions.csv").exists()  # a missing input stops the run before it starts


def test_a_bad_boxes_file_is_named_with_its_line(model_pt, tmp_path, capsys):
    picture = tmp_path / "face.png"
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(picture)
    boxes = tmp_path / "boxes.csv"
    boxes.write_text(f"file,x0,y0,x1,y1\n{picture},1,1,20,20\n{picture},5,5,2,20\n")
    status, _, err = run(capsys, "--checkpoint", model_pt, picture, "--out", tmp_path / "out", "--boxes", boxes)
    assert status == 2 and f"boxes file {boxes}, line 3" in err and "empty or invalid box" in err
    boxes.write_bytes(b"\x89PNG\r\n\x1a\n\x00\xff binary")  # a picture passed as --boxes by mistake
    status, _, err = run(capsys, "--checkpoint", model_pt, picture, "--out", tmp_path / "out", "--boxes", boxes)
    assert status == 2 and err.strip() == (f"error: boxes file {boxes} is not UTF-8 text (byte 0: invalid start "
                                           "byte); pass a CSV or JSON-lines file with columns file,frame,x0,y0,x1,y1")


# -- drawing and the API ---------------------------------------------------------------------------------------------
def test_drawing_marks_the_face_with_the_axis_colours():
    picture = np.full((120, 160, 3), 90, np.uint8)
    face = FacePose(box=(40.0, 20.0, 120.0, 100.0), score=None, yaw=35.0, pitch=20.0, roll=10.0)
    drawn = draw_faces(picture, [face])
    assert drawn.shape == picture.shape and np.array_equal(picture, np.full((120, 160, 3), 90, np.uint8))
    inside = np.abs(drawn[21:100, 41:120].astype(int) - 90).sum(-1) > 0
    assert inside.mean() > 0.02
    for color in AXIS_RGB:  # x red, y green, z blue: each axis is drawn in its colour
        assert (drawn == np.array(color, np.uint8)).all(-1).sum() >= 10, color
    assert np.array_equal(draw_faces(picture, []), picture)


def test_predictor_api_with_given_boxes_crops_and_a_plugged_detector(crops, model_pt):
    folder, ds = crops
    pictures = [np.asarray(ds.load(i)) for i in range(len(ds))]
    predictor = Predictor(model_pt, device="cpu", detector=None, batch_size=3)
    whole = predictor.predict_crops(pictures)
    assert [f.box for f in whole] == [(0.0, 0.0, float(p.shape[1]), float(p.shape[0])) for p in pictures]
    np.testing.assert_allclose([f.angles for f in whole], [predictor.predict_image(p)[0].angles for p in pictures],
                               atol=1e-4)  # batched in 3 + 1 or one by one: the same up to float rounding
    box = (4.0, 6.0, 40.0, 44.0)
    expected = predictor.model.predict(torch.stack([predictor.spec.crop(pictures[0], box)]))[0]
    given = predictor.predict_image(pictures[0], boxes=[box])
    assert given[0].box == box and np.allclose(given[0].angles, expected, atol=1e-4)

    class FixedDetector:  # any object with detect(rgb) -> list[Detection] plugs in
        def detect(self, rgb):
            return [Detection(box, score=0.9, kind="mine")]

    plugged = Predictor(model_pt, detector=FixedDetector()).predict_image(pictures[0])
    assert plugged[0].score == 0.9 and np.allclose(plugged[0].angles, given[0].angles, atol=1e-5)
    with pytest.raises(TypeError, match="detect"):
        Predictor(model_pt, detector=object())
    with pytest.raises(ValueError, match="face box"):
        predictor.predict_image(pictures[0], boxes=[(5, 5, 1, 1)])
    h, w = pictures[0].shape[:2]
    with pytest.raises(ValueError, match=rf"lies wholly outside the {w}x{h} picture"):
        predictor.predict_image(pictures[0], boxes=[(w + 5, 0, w + 50, 40)])
    with pytest.raises(ValueError, match="an empty picture"):
        predictor.predict_image(np.zeros((0, 10, 3), np.uint8))
    # a PIL picture is turned upright by its EXIF orientation, as the command line does
    h, w = h, w // 2  # not square: a sideways picture has other sides
    upright = Image.fromarray(np.ascontiguousarray(pictures[0][:, :w]))
    stored = upright.transpose(Image.Transpose.ROTATE_90)  # what a camera stores, with orientation 8 to undo it
    exif = Image.Exif()
    exif[0x0112] = 8
    buffer = io.BytesIO()
    stored.save(buffer, format="JPEG", exif=exif.tobytes(), quality=100)
    tagged = Image.open(io.BytesIO(buffer.getvalue()))
    assert tagged.size == (h, w) and h != w  # stored sideways
    assert predictor.predict_image(tagged)[0].box == (0.0, 0.0, float(w), float(h))  # read upright


def test_box_correction_fit_and_merging():
    from hpelib.predict.detect import HAAR_CORRECTIONS, BoxCorrection, non_max_suppression

    corr = BoxCorrection(dx=0.1, dy=0.2, sw=0.5, sh=0.6)
    np.testing.assert_allclose(corr.apply((0, 0, 100, 100)), [35, 40, 85, 100])
    raw = np.array([[0, 0, 100, 100], [10, 20, 50, 60]], float)
    assert BoxCorrection.fit(raw, np.array([corr.apply(b) for b in raw])) == corr
    kept = non_max_suppression([Detection((0, 0, 10, 10), 0.5), Detection((2, 2, 8, 8), 0.9),
                                Detection((20, 20, 30, 30), 0.1)])
    assert [d.box for d in kept] == [(2, 2, 8, 8), (20, 20, 30, 30)]  # a box inside a better one goes
    assert set(HAAR_CORRECTIONS) == {"frontal", "profile"}
    assert HaarDetector().detect(np.zeros((64, 64, 3), np.uint8)) == []  # no face in a black picture


@pytest.mark.parametrize("signum", ["SIGTERM", "SIGHUP"])
def test_a_stopped_command_keeps_its_rows_and_exits_128_plus_the_signal(crops, model_pt, tmp_path, capsys,
                                                                       monkeypatch, signum):
    import os
    import signal

    from hpelib.predict.predictor import Predictor

    sent = []

    def predict_then_stop(self, *args, **kwargs):
        result = original(self, *args, **kwargs)
        if not sent:
            sent.append(1)
            os.kill(os.getpid(), getattr(signal, signum))  # as `timeout`, `scancel` or a closed terminal would
        return result

    original = Predictor.predict_batch
    monkeypatch.setattr(Predictor, "predict_batch", predict_then_stop)
    folder, _ = crops
    status, _, err = run(capsys, "--checkpoint", model_pt, folder, "--out", tmp_path / "out", "--cropped",
                         "--batch-size", "1")
    assert status == 128 + getattr(signal, signum) and sent
    assert err.strip() == f"interrupted by {signum}: the rows written so far are kept"
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
