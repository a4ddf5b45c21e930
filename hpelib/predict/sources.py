"""What to predict on: picture and video files, folders of them, and their frames.

* a picture (``.jpg .jpeg .png .bmp .tif .tiff .webp``, or any other
  suffix that is not a video's) is one frame, index 0, read with Pillow
  (the decoder the data sets use) and turned upright by its EXIF orientation;
* a video (``.mp4 .avi .mov .mkv .webm``) is decoded frame by frame with PyAV,
  frames numbered from 0;
* a folder is searched recursively for both, in sorted order.

Each file becomes an :class:`InputFile`: its path, the name its rows carry
(the path as given on the command line, or the folder's path joined with the
file's path inside it) and its name under ``annotated/`` (the name inside
the folder, or the file's name).
"""
from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Iterator

import numpy as np
from PIL import ImageOps

from ..data.crops import load_image
from ..data.errors import DataError
from .deps import require

__all__ = ["IMAGE_SUFFIXES", "VIDEO_SUFFIXES", "InputFile", "UnreadableInput", "find_inputs", "read_image",
           "VideoFrames"]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm")
DEFAULT_RATE = Fraction(25)  # frames per second of a video whose rate is not recorded


class UnreadableInput(ValueError):
    """A picture or video that cannot be decoded; the message names the file."""


@dataclass(frozen=True)
class InputFile:
    """One file to predict on: ``path``, ``name`` (its rows' ``file``), ``rel`` (its name under ``annotated/``)."""

    path: Path
    name: str
    rel: Path

    @property
    def is_video(self) -> bool:
        return self.path.suffix.lower() in VIDEO_SUFFIXES


def find_inputs(paths) -> list[InputFile]:
    """The files of ``paths`` (files and folders, in the order given); ``FileNotFoundError`` names a missing one."""
    missing = [str(p) for p in paths if not Path(p).exists()]
    if missing:
        raise FileNotFoundError(f"input {'paths' if len(missing) > 1 else 'path'} not found: {', '.join(missing)}")
    found = []
    for given in map(Path, paths):
        if given.is_dir():
            wanted = IMAGE_SUFFIXES + VIDEO_SUFFIXES
            files = sorted(p for p in given.rglob("*") if p.is_file() and p.suffix.lower() in wanted)
            found += [InputFile(p, p.as_posix(), p.relative_to(given)) for p in files]
        else:
            found.append(InputFile(given, given.as_posix(), Path(given.name)))
    return found


def read_image(path) -> np.ndarray:
    """uint8 ``[H, W, 3]`` RGB of a picture file, upright; :class:`UnreadableInput` when it cannot be decoded."""
    try:
        return np.asarray(ImageOps.exif_transpose(load_image(path)))
    except DataError as err:
        raise UnreadableInput(f"{path}: cannot decode the picture; the file is corrupt or not a picture "
                              f"({str(err.__cause__ or err).splitlines()[0]})") from None


class VideoFrames:
    """The frames of a video file, decoded with PyAV: ``for index, rgb in VideoFrames(path)``.

    ``rate``: frames per second (:data:`DEFAULT_RATE` when the file does not
    say); ``count``: the number of frames the file announces (0 if unknown).
    Raises :class:`UnreadableInput` naming the file when it cannot be opened
    or a frame cannot be decoded. Use as a context manager to close the file.
    """

    def __init__(self, path):
        av = require("av")
        self.path = Path(path)
        self._errors = (av.FFmpegError, OSError, ValueError)
        try:
            self.container = av.open(str(self.path))
        except self._errors as err:
            raise self._unreadable(err) from None
        if not self.container.streams.video:
            self.container.close()
            raise UnreadableInput(f"{self.path}: no video stream in the file")
        self.stream = self.container.streams.video[0]
        self.rate = Fraction(self.stream.average_rate or self.stream.guessed_rate or DEFAULT_RATE)
        self.count = int(self.stream.frames or 0)  # what the container says (0: it does not say)
        self.read = 0

    def _unreadable(self, err: Exception) -> UnreadableInput:
        return UnreadableInput(f"{self.path}: cannot decode the video; the file is corrupt or not a video "
                               f"({type(err).__name__}: {err})")

    def __iter__(self) -> Iterator[tuple[int, np.ndarray]]:
        try:
            for index, frame in enumerate(self.container.decode(self.stream)):
                self.read = index + 1
                yield index, frame.to_ndarray(format="rgb24")
        except self._errors as err:
            raise self._unreadable(err) from None

    def close(self) -> None:
        self.container.close()

    def __enter__(self) -> "VideoFrames":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
