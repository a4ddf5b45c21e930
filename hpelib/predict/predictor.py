"""The Python API: a trained model and a face detector turn pictures into head poses.

>>> from hpelib.predict import Predictor
>>> predictor = Predictor("results/aflw/run/model.pt")           # doctest: +SKIP
>>> faces = predictor.predict_image(rgb)                           # doctest: +SKIP
>>> faces[0].yaw, faces[0].pitch, faces[0].roll, faces[0].box      # doctest: +SKIP
(23.1, -8.4, 2.0, (112.0, 80.5, 201.9, 182.7))
>>> predictor.predict_image(rgb, boxes=[(112, 80, 202, 183)])      # doctest: +SKIP   your own face boxes
>>> Predictor("model.pt", detector=None).predict_crops([crop_1, crop_2])  # doctest: +SKIP   face crops
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, ImageOps

from ..data.crops import to_rgb8
from .detect import Detection, FaceDetector, make_detector
from .model import PoseModel

__all__ = ["FacePose", "Predictor", "as_rgb", "WHOLE_PICTURE"]

#: the ``kind`` of a face that is the whole picture (a face crop, cropped without a box)
WHOLE_PICTURE = "whole picture"


@dataclass(frozen=True)
class FacePose:
    """One face's pose: its tight face box ``(x0, y0, x1, y1)``, the detector's score (None when the box was
    given or the picture is a face crop) and ``yaw, pitch, roll`` in degrees (:mod:`hpelib.angles`)."""

    box: tuple
    score: float | None
    yaw: float
    pitch: float
    roll: float

    @property
    def angles(self) -> np.ndarray:
        """``[yaw, pitch, roll]`` degrees."""
        return np.array([self.yaw, self.pitch, self.roll])


def as_rgb(image) -> np.ndarray:
    """A PIL image or an ``[H, W]`` / ``[H, W, 3]`` uint8 array as a uint8 ``[H, W, 3]`` RGB array.

    A PIL image is turned upright by its EXIF orientation, as the command line does, and converted from any
    mode (:func:`hpelib.data.crops.to_rgb8`); an empty picture is a ValueError.
    """
    if isinstance(image, Image.Image):
        image = to_rgb8(ImageOps.exif_transpose(image))
    arr = np.asarray(image)
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=-1)
    if arr.ndim != 3 or arr.shape[-1] != 3 or arr.dtype != np.uint8:
        raise ValueError(f"expected an RGB picture (uint8 [H, W, 3] array or PIL image), got {arr.dtype} {arr.shape}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"an empty picture (shape {arr.shape}): nothing to find a face in")
    return arr


def _checked_box(box) -> tuple:
    """A face box as 4 floats, refused when it is not finite or empty."""
    values = tuple(float(v) for v in np.asarray(box, dtype=np.float64).reshape(-1))
    if len(values) != 4 or not np.isfinite(values).all() or values[2] <= values[0] or values[3] <= values[1]:
        raise ValueError(f"a face box must be 4 finite numbers x0, y0, x1, y1 with x1 > x0 and y1 > y0, got {box}")
    return values


def _inside_picture(box: tuple, rgb: np.ndarray) -> tuple:
    """``box``, refused when it lies wholly outside the picture (its pose would be that of padding)."""
    h, w = rgb.shape[:2]
    x0, y0, x1, y1 = box
    if x1 <= 0 or y1 <= 0 or x0 >= w or y0 >= h:
        raise ValueError(f"the face box {box} lies wholly outside the {w}x{h} picture")
    return box


class Predictor:
    """Head poses of the faces in pictures, with a trained hpelib model.

    ``checkpoint``: a head pose run's ``model.pt`` (or its folder); the crop,
    image size and normalisation are read from it. ``device``: ``auto``
    (CUDA when there is one), ``cpu`` or ``cuda``. ``detector``: ``"haar"``
    (OpenCV's cascades, :class:`~hpelib.predict.HaarDetector`), any object
    with a ``detect(rgb) -> list[Detection]`` method
    (:class:`~hpelib.predict.FaceDetector`), or None: no detection, a
    picture without boxes is taken whole as one face crop. ``batch_size``:
    faces per forward pass.
    """

    def __init__(self, checkpoint, device="auto", detector: FaceDetector | str | None = "haar", batch_size: int = 32):
        self.model = PoseModel(checkpoint, device, batch_size)
        self.spec = self.model.spec
        self.detector = make_detector(detector)

    def faces(self, rgb: np.ndarray, boxes=None) -> list[Detection]:
        """The faces of one picture: ``boxes`` when given, else the detector's, else the whole picture.

        A whole-picture face has ``box`` (0, 0, W, H) and ``kind`` :data:`WHOLE_PICTURE`:
        it is cropped as a face crop (:meth:`hpelib.models.InputSpec.crop` with no box).
        """
        if boxes is not None:
            return [Detection(_inside_picture(_checked_box(box), rgb)) for box in boxes]
        if self.detector is not None:
            return list(self.detector.detect(rgb))
        return [_whole(rgb)]

    def predict_batch(self, images, boxes=None) -> list[list[FacePose]]:
        """The faces of several pictures at once (their crops share forward passes): one list per picture.

        ``boxes``: None, or one entry per picture (None: detect; else a list of boxes).
        """
        images = [as_rgb(image) for image in images]
        boxes = [None] * len(images) if boxes is None else list(boxes)
        if len(boxes) != len(images):
            raise ValueError(f"{len(boxes)} box lists for {len(images)} pictures")
        return self._poses(images, [self.faces(rgb, b) for rgb, b in zip(images, boxes)])

    def predict_image(self, rgb, boxes=None) -> list[FacePose]:
        """The faces of one picture (uint8 ``[H, W, 3]`` RGB or PIL), in the detector's order or that of ``boxes``."""
        return self.predict_batch([rgb], [boxes])[0]

    def predict_crops(self, crops) -> list[FacePose]:
        """One pose per face crop (each picture is taken whole, as the model's face-crop inputs are)."""
        images = [as_rgb(crop) for crop in crops]
        return [faces[0] for faces in self._poses(images, [[_whole(rgb)] for rgb in images])]

    def _poses(self, images: list[np.ndarray], found: list[list[Detection]]) -> list[list[FacePose]]:
        """The pose of every face in ``found`` (one list per picture), all crops through the model together."""
        crops = [self.spec.crop(rgb, None if d.kind == WHOLE_PICTURE else d.box)
                 for rgb, dets in zip(images, found) for d in dets]
        angles = iter(self.model.predict(torch.stack(crops)) if crops else [])
        return [[FacePose(tuple(float(v) for v in d.box), None if d.score is None else float(d.score),
                          *(float(a) for a in next(angles))) for d in dets] for dets in found]


def _whole(rgb: np.ndarray) -> Detection:
    """The whole picture as one face (a face crop)."""
    return Detection((0.0, 0.0, float(rgb.shape[1]), float(rgb.shape[0])), None, WHOLE_PICTURE)
