"""Prediction over files and folders: what ``python -m hpelib.predict`` runs.

>>> from hpelib.predict import Predictor, predict_files
>>> summary = predict_files(["photos/", "clip.mp4"], "out", Predictor("run/model.pt"))   # doctest: +SKIP
>>> summary.line()                                                                     # doctest: +SKIP
'12 files (0 failed), 161 frames, 158 faces; rows in out/predictions.csv'

Frames are read in order and predicted in groups of ``batch_size`` frames
(faces of several frames share a forward pass); each group's rows are
written and flushed, and its annotated pictures or video frames written,
before the next group is read. A file that cannot be decoded is reported (a
line naming it), recorded in :attr:`Summary.failed` and skipped; the rows of
the other files, and those of its frames already predicted, are kept.
"""
from __future__ import annotations

import shutil
import sys
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
from tqdm.auto import tqdm

from .boxes import file_key, read_boxes
from .draw import draw_faces
from .outputs import ANNOTATED_DIR, RowWriter, VideoWriter, annotated_names, face_rows, save_image
from .predictor import Predictor
from .sources import InputFile, UnreadableInput, VideoFrames, find_inputs, read_image

__all__ = ["Summary", "predict_files"]


@dataclass
class Summary:
    """What :func:`predict_files` did: counts, the files that failed ``[(file, message)]``, where the rows are."""

    csv_path: Path
    files: int = 0
    frames: int = 0
    faces: int = 0
    failed: list = field(default_factory=list)
    truncated: list = field(default_factory=list)  # [(file, frames read, frames the container announced)]

    def line(self) -> str:
        short = f", {len(self.truncated)} videos ended early" if self.truncated else ""
        return (f"{self.files} files ({len(self.failed)} failed{short}), {self.frames} frames, {self.faces} faces; "
                f"rows in {self.csv_path}")


@dataclass(frozen=True)
class _Frame:
    item: InputFile
    index: int
    rgb: np.ndarray
    rate: Fraction | None  # frames per second of a video, None for a picture


@dataclass(frozen=True)
class _EndOfFile:
    item: InputFile


def _stderr(message: str) -> None:
    tqdm.write(message, file=sys.stderr)


def predict_files(inputs, out_dir, predictor, *, boxes=None, draw: bool = True, progress: bool = True,
                  log: Callable[[str], None] | None = _stderr) -> Summary:
    """Predict the faces in pictures, videos and folders of them; write rows and annotated files to ``out_dir``.

    ``inputs``: paths (files or folders, see :mod:`hpelib.predict.sources`;
    files inside ``out_dir`` are left out, so that an earlier run's output is
    not read again); a missing one raises ``FileNotFoundError`` before
    anything is written.
    ``predictor``: a :class:`Predictor` (its detector finds the faces, or with
    ``detector=None`` each picture is a face crop), or a checkpoint path.
    ``boxes``: a ``--boxes`` file (:mod:`hpelib.predict.boxes`) or what
    :func:`~hpelib.predict.boxes.read_boxes` returns: the faces are those
    boxes and no detector runs. ``draw``: write ``annotated/``. ``log``:
    where the lines about failed files go (None: nowhere).
    """
    out_dir = Path(out_dir)
    files = [f for f in find_inputs(inputs) if not f.path.resolve().is_relative_to(out_dir.resolve())]
    if not files:
        raise FileNotFoundError(f"no pictures or videos in {', '.join(map(str, inputs))}")
    names = dict(zip(files, annotated_names([(f.rel, f.is_video) for f in files]))) if draw else {}
    if draw:
        shutil.rmtree(out_dir / ANNOTATED_DIR, ignore_errors=True)  # no picture of an earlier prediction stays
    predictor = predictor if isinstance(predictor, Predictor) else Predictor(predictor)
    given = read_boxes(boxes) if isinstance(boxes, (str, Path)) else boxes
    log = log or (lambda message: None)
    videos: dict[InputFile, VideoWriter] = {}
    used: set = set()
    with RowWriter(out_dir) as rows:
        summary = Summary(rows.csv_path)

        def flush(pending: list[_Frame]) -> None:
            """Predict the pending frames, write their rows and annotated pictures or video frames."""
            keys = [(file_key(f.item.path), f.index) for f in pending]
            used.update(keys)
            frame_boxes = None if given is None else [given.get(key, []) for key in keys]
            for frame, faces in zip(pending, predictor.predict_batch([f.rgb for f in pending], frame_boxes)):
                name = names.get(frame.item)
                rows.write(face_rows(frame.item.name, frame.index, faces, name and name.as_posix()))
                summary.frames, summary.faces = summary.frames + 1, summary.faces + len(faces)
                if draw:
                    _annotate(frame, faces, out_dir / ANNOTATED_DIR / name, videos)
            pending.clear()

        pending: list[_Frame] = []
        try:
            for event in _events(files, summary, log, progress):
                if isinstance(event, _Frame):
                    pending.append(event)
                    if len(pending) >= predictor.model.batch_size:
                        flush(pending)
                elif event.item.is_video:  # a video's last frames are written before its file is closed
                    flush(pending)
                    if event.item in videos:
                        videos.pop(event.item).close()
            flush(pending)
        finally:
            for writer in videos.values():
                writer.close()
    if given is not None:
        _report_unused_boxes(given, used, log)
    return summary


def _events(files: list[InputFile], summary: Summary, log, progress: bool) -> Iterator[_Frame | _EndOfFile]:
    """Every frame of every file, then an end-of-file marker per file; unreadable files go to ``summary.failed``."""
    for item in tqdm(files, desc="files", unit="file", disable=not progress):
        summary.files += 1
        try:
            if item.is_video:
                with VideoFrames(item.path) as video, tqdm(total=video.count or None, desc=item.rel.as_posix(),
                                                           unit="frame", leave=False, disable=not progress) as bar:
                    for index, rgb in video:
                        yield _Frame(item, index, rgb, video.rate)
                        bar.update()
                    if video.count and video.read < video.count:  # a cut file decodes its first frames silently
                        summary.truncated.append((item.name, video.read, video.count))
                        log(f"warning: {item.name}: the video ended after {video.read} of its {video.count} frames "
                            "(truncated?); the rows cover the frames read")
            else:
                yield _Frame(item, 0, read_image(item.path), None)
        except UnreadableInput as err:
            summary.failed.append((item.name, str(err)))
            log(f"error: {err}")
        yield _EndOfFile(item)


def _annotate(frame: _Frame, faces, path: Path, videos: dict) -> None:
    """Draw ``faces`` on the frame and save it at ``path``: a picture, or a video frame into its ``.mp4``."""
    drawn = draw_faces(frame.rgb, faces)
    if frame.rate is None:
        save_image(drawn, path)
        return
    if frame.item not in videos:
        videos[frame.item] = VideoWriter(path, frame.rate)
    videos[frame.item].write(drawn)


def _report_unused_boxes(given: dict, used: set, log) -> None:
    """A line when boxes of the ``--boxes`` file matched no frame that was read (usually a path spelt differently)."""
    unused = sorted(set(given) - used)
    if unused:
        file, frame = unused[0]
        log(f"warning: {len(unused)} (file, frame) pairs of the boxes file match no frame read, e.g. {file} "
            f"frame {frame}; a file is matched by its path, absolute or relative to the working directory")
