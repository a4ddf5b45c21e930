"""What prediction writes: the rows (``predictions.csv``, ``predictions.jsonl``) and the annotated files.

Rows
    One per face and frame, columns :data:`COLUMNS`: ``file`` (the input's
    path), ``frame`` (0 for a picture), ``face`` (0, 1, ... within the frame),
    the tight face box ``x0, y0, x1, y1`` (pixels), ``score`` (the detector's;
    empty / null for given boxes and face crops) and ``yaw, pitch, roll``
    (degrees, :mod:`hpelib.angles`), ``annotated`` (the input's annotated
    file under ``annotated/``, empty without drawing). Both files are started afresh and every
    frame's rows are flushed as soon as they are made, so a crash later
    loses none of them.

Annotated files
    Pictures keep their name and format (``.png`` is added to a suffix
    Pillow cannot write); a video becomes an ``.mp4`` with the same
    frames and frame rate, H.264 when PyAV has an encoder for it, else MPEG-4
    Part 2 (:func:`video_codec`). Two inputs that would get one name
    (``a/x.jpg`` and ``b/x.jpg``; ``v.mp4`` and ``v.mkv``) get ``x.jpg`` and
    ``x_2.jpg`` (:func:`annotated_names`); ``annotated/`` is emptied first, so
    it never holds a picture of an earlier prediction.
"""
from __future__ import annotations

import csv
import json
from fractions import Fraction
from pathlib import Path

import numpy as np
from PIL import Image

from .deps import require

__all__ = ["COLUMNS", "CSV_NAME", "JSONL_NAME", "ANNOTATED_DIR", "RowWriter", "face_rows", "annotated_names",
           "save_image",
           "VideoWriter", "video_codec"]

COLUMNS = ("file", "frame", "face", "x0", "y0", "x1", "y1", "score", "yaw", "pitch", "roll", "annotated")
CSV_NAME, JSONL_NAME, ANNOTATED_DIR = "predictions.csv", "predictions.jsonl", "annotated"
VIDEO_CODECS = ("libx264", "h264", "mpeg4")  # in order of preference


def face_rows(file: str, frame: int, faces, annotated: str | None = None) -> list[dict]:
    """The rows of one frame's faces (:class:`hpelib.predict.FacePose`): boxes to 0.01 px, angles to 1e-6 degree."""
    return [{"file": file, "frame": int(frame), "face": i, **dict(zip(("x0", "y0", "x1", "y1"),
                                                                      (round(float(v), 2) for v in face.box))),
             "score": None if face.score is None else round(float(face.score), 4),
             "yaw": round(face.yaw, 6), "pitch": round(face.pitch, 6), "roll": round(face.roll, 6),
             "annotated": annotated}
            for i, face in enumerate(faces)]


def annotated_name(rel: Path, is_video: bool) -> Path:
    """Where an input's annotated file goes under ``annotated/``: its name, ``.mp4`` for a video, ``.png``
    added to a suffix Pillow cannot write."""
    if is_video:
        return rel.with_suffix(".mp4")
    return rel if rel.suffix.lower() in Image.registered_extensions() else rel.with_name(rel.name + ".png")


def annotated_names(items) -> list[Path]:
    """:func:`annotated_name` of each ``(rel, is_video)``, made unique: a later input that would overwrite an
    earlier one's file gets ``_2``, ``_3`` ... before its suffix (names compared without case)."""
    taken, names = set(), []
    for rel, is_video in items:
        name, n = annotated_name(rel, is_video), 2
        base = name
        while name.as_posix().lower() in taken:
            name = base.with_name(f"{base.stem}_{n}{base.suffix}")
            n += 1
        taken.add(name.as_posix().lower())
        names.append(name)
    return names


class RowWriter:
    """Writes rows to ``predictions.csv`` and ``predictions.jsonl`` in ``out_dir``, flushed frame by frame."""

    def __init__(self, out_dir):
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        self.csv_path, self.jsonl_path = out_dir / CSV_NAME, out_dir / JSONL_NAME
        self._csv_file = open(self.csv_path, "w", newline="", encoding="utf-8")
        self._jsonl_file = open(self.jsonl_path, "w", encoding="utf-8")
        self._csv = csv.DictWriter(self._csv_file, COLUMNS)
        self._csv.writeheader()
        self._csv_file.flush()

    def write(self, rows: list[dict]) -> None:
        for row in rows:
            self._csv.writerow({k: "" if v is None else v for k, v in row.items()})
            self._jsonl_file.write(json.dumps(row) + "\n")
        self._csv_file.flush()
        self._jsonl_file.flush()

    def close(self) -> None:
        self._csv_file.close()
        self._jsonl_file.close()

    def __enter__(self) -> "RowWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def save_image(rgb: np.ndarray, path) -> Path:
    """Write ``rgb`` to ``path`` (folders made; the format follows the suffix, JPEG at quality 95).

    A suffix Pillow cannot write gets ``.png`` added. Returns the path written.
    """
    path = annotated_name(Path(path), is_video=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgb).save(path, **({"quality": 95} if path.suffix.lower() in (".jpg", ".jpeg") else {}))
    return path


def video_codec() -> str:
    """The first of :data:`VIDEO_CODECS` that this PyAV can encode with."""
    av = require("av")
    for name in VIDEO_CODECS:
        try:
            av.codec.Codec(name, "w")
            return name
        except Exception:  # noqa: BLE001 - PyAV's "unknown codec" error differs between versions
            continue
    raise RuntimeError(f"PyAV has none of the video encoders {', '.join(VIDEO_CODECS)}")


class VideoWriter:
    """An ``.mp4`` written frame by frame: ``write(rgb)`` each frame, then ``close()``.

    The stream is sized by the first frame; yuv420p needs even sides, so an
    odd last row or column is repeated.
    """

    def __init__(self, path, rate: Fraction):
        self.av = require("av")
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.rate = Fraction(rate)
        self.container = self.av.open(str(self.path), "w")
        self.stream = None
        self.frames = 0

    def write(self, rgb: np.ndarray) -> None:
        h, w = rgb.shape[:2]
        rgb = np.pad(rgb, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")
        if self.stream is None:
            self.stream = self.container.add_stream(video_codec(), rate=self.rate)
            self.stream.width, self.stream.height, self.stream.pix_fmt = rgb.shape[1], rgb.shape[0], "yuv420p"
        frame = self.av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
        self.container.mux(self.stream.encode(frame))
        self.frames += 1

    def close(self) -> None:
        """Flush the encoder and close the file; a video that got no frame is removed."""
        if self.stream is not None:
            self.container.mux(self.stream.encode(None))
        self.container.close()
        if self.frames == 0:
            self.path.unlink(missing_ok=True)
