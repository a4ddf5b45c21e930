"""Face boxes and crops: landmark boxes, the Hopenet/6DRepNet enlargement, cropping.

Boxes are float ``(x0, y0, x1, y1)`` in image pixels (x right, y down).

Enlargement (``enlarge_box``)
    The reference loaders grow the tight landmark box side by side, each side
    by a factor times ``k`` times the *current* width or height. Because the
    sides are updated in order (left, top, right, bottom), the right and
    bottom sides see the already-grown width/height; we reproduce that
    sequential formula exactly. Factors ``(left, top, right, bottom)``:

    * 300W-LP training (6DRepNet ``Pose_300W_LP``): ``(0.6, 2, 0.6, 0.6)``
      with ``k`` uniform in ``[0.2, 0.4)``.
    * AFLW2000 test (Hopenet/6DRepNet ``AFLW2000``): ``(2, 2, 2, 0.6)`` with
      ``k = 0.2``.

    Every side moves outwards monotonically with ``k``, so the box for any
    ``k`` lies inside the box for a larger ``k``: the decoded-crop cache keeps
    the ``k = 0.4`` crop and cuts the random ``k`` out of it.

Cropping (``crop_resize``)
    Parts of a box outside the image are filled with black (as PIL's
    ``Image.crop``, which the references use); sub-pixel box positions are
    honoured (no rounding to integers), then the box is resized to a square
    with Pillow's antialiased bilinear filter.
"""
from __future__ import annotations

from dataclasses import dataclass

import math
import os

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .errors import DataError
from .transforms import to_chw

__all__ = [
    "LP300W_FACTORS",
    "AFLW2000_FACTORS",
    "load_image",
    "landmark_box",
    "enlarge_box",
    "box_in_box",
    "crop_resize",
    "crop_resize_chw",
]

LP300W_FACTORS = (0.6, 2.0, 0.6, 0.6)
AFLW2000_FACTORS = (2.0, 2.0, 2.0, 0.6)


def to_rgb8(im: Image.Image) -> Image.Image:
    """Any image mode Pillow reads as 8-bit RGB.

    Pillow's own ``convert("RGB")`` clips 16-bit and 32-bit integer pixels at
    255 (a 16-bit grayscale PNG turns white) and float pixels likewise; here
    they are scaled: 16-bit by 1/257, 32-bit integers by their range (8 bits
    when every value fits, else 16 bits, else their maximum), floats in [0, 1]
    by 255. Palette, LA, PA, CMYK and the rest go through Pillow's conversion
    (alpha dropped).
    """
    if im.mode.startswith("I") or im.mode == "F":
        arr = np.asarray(im).astype(np.float64)
        top = float(arr.max()) if arr.size else 0.0
        if im.mode.startswith("I;16"):
            scale = 255.0 / 65535.0
        elif im.mode == "F":
            scale = 255.0 if top <= 1.0 else 1.0 if top <= 255.0 else 255.0 / top
        else:
            scale = 1.0 if top <= 255.0 else 255.0 / 65535.0 if top <= 65535.0 else 255.0 / top
        gray = np.clip(np.rint(arr * scale), 0, 255).astype(np.uint8)
        return Image.fromarray(gray, mode="L").convert("RGB")
    if im.mode == "PA" or (im.mode == "P" and "transparency" in im.info):
        im = im.convert("RGBA")
    return im.convert("RGB")


def load_image(path: str | os.PathLike) -> Image.Image:
    """Decode an image file as an 8-bit RGB PIL image (:func:`to_rgb8`); an unreadable one raises DataError."""
    try:
        with Image.open(path) as im:
            return to_rgb8(im)
    except FileNotFoundError:
        raise DataError(f"{path}: image file not found; check the data folder (see data/README.md)") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise DataError(f"{path}: cannot decode image ({e}); the file is corrupt or not an image: "
                        "re-download it or remove it from the folder") from e


def landmark_box(pt2d, drop_invisible: bool = True, where: str = "landmarks") -> np.ndarray:
    """Tight box ``(x0, y0, x1, y1)`` of 2D landmarks ``[2, L]`` (row 0 = x, row 1 = y).

    ``drop_invisible`` ignores landmarks with a negative coordinate (AFLW2000
    stores invisible ones as (-1, 452)): the tight box of the visible face,
    which detectors are corrected to. ``drop_invisible=False`` is the
    reference protocol (Hopenet/6DRepNet keep them, which stretches the box to
    the image's left edge and below its bottom; the data sets' default).
    ``where`` names the source in errors.
    """
    pts = np.asarray(pt2d, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[0] != 2 or pts.shape[1] < 2:
        raise DataError(f"{where}: landmarks must have shape [2, L] with L >= 2, got {pts.shape}; "
                        "the label file is not in the 300W-LP/AFLW2000-3D format")
    if drop_invisible:
        pts = pts[:, (pts >= 0).all(axis=0)]
    pts = pts[:, np.isfinite(pts).all(axis=0)]
    if pts.shape[1] < 2:
        raise DataError(f"{where}: fewer than 2 visible landmarks, cannot build a face box; "
                        "remove this sample or pass drop_invisible_landmarks=False")
    box = np.array([pts[0].min(), pts[1].min(), pts[0].max(), pts[1].max()])
    if box[2] <= box[0] or box[3] <= box[1]:
        raise DataError(f"{where}: landmarks span an empty box {box.tolist()}; the label file is corrupt")
    return box


@dataclass(frozen=True)
class FaceBoxes:
    """The tight face boxes of a data set's samples (``[N, 4]``) and how its test crops enlarge them.

    A model keeps ``k`` and ``factors`` (:class:`hpelib.models.InputSpec`) to crop
    the face boxes it is given later the same way.
    """

    boxes: np.ndarray
    k: float
    factors: tuple

    def regions(self) -> np.ndarray:
        return enlarge_box(self.boxes, self.k, self.factors)


def enlarge_box(box, k, factors=LP300W_FACTORS) -> np.ndarray:
    """Grow ``box`` (``[..., 4]``) by ``k`` with the reference loaders' sequential formula.

    ``x0 -= l*k*w; y0 -= t*k*h; x1 += r*k*(x1 - x0); y1 += b*k*(y1 - y0)``
    where the last two use the already-moved ``x0``/``y0``.
    """
    b = np.array(box, dtype=np.float64)  # copy
    k = np.asarray(k, dtype=np.float64)
    left, top, right, bottom = factors
    x0, y0, x1, y1 = b[..., 0], b[..., 1], b[..., 2], b[..., 3]
    x0 = x0 - left * k * np.abs(x1 - x0)
    y0 = y0 - top * k * np.abs(y1 - y0)
    x1 = x1 + right * k * np.abs(x1 - x0)
    y1 = y1 + bottom * k * np.abs(y1 - y0)
    return np.stack([x0, y0, x1, y1], -1)


def box_in_box(inner, outer, size: int) -> np.ndarray:
    """Coordinates of ``inner`` in the pixels of ``outer`` resized to ``size x size``."""
    inner = np.asarray(inner, dtype=np.float64)
    ox0, oy0, ox1, oy1 = (float(v) for v in outer)
    sx, sy = size / (ox1 - ox0), size / (oy1 - oy0)
    out = np.array([(inner[0] - ox0) * sx, (inner[1] - oy0) * sy, (inner[2] - ox0) * sx, (inner[3] - oy0) * sy])
    return np.clip(out, 0.0, float(size))


def crop_resize(image, box, size: int) -> np.ndarray:
    """Crop ``box`` out of ``image`` (PIL image or uint8 ``[H, W, 3]``), resize to uint8 ``[size, size, 3]``.

    ``box=None`` takes the whole image. Outside the image is black.
    """
    if isinstance(image, np.ndarray):
        if box is None and image.shape[:2] == (size, size):
            return np.ascontiguousarray(image)
        image = Image.fromarray(np.ascontiguousarray(image))
    if box is None:
        box = (0.0, 0.0, float(image.width), float(image.height))
    x0, y0, x1, y1 = (float(v) for v in box)
    if not (x1 > x0 and y1 > y0):
        raise ValueError(f"empty crop box {box}")
    ix0, iy0 = math.floor(x0), math.floor(y0)
    ix1, iy1 = max(math.ceil(x1), ix0 + 1), max(math.ceil(y1), iy0 + 1)
    if (ix0, iy0, ix1, iy1) != (0, 0, image.width, image.height):
        image = image.crop((ix0, iy0, ix1, iy1))
    out = image.resize((size, size), Image.BILINEAR, box=(x0 - ix0, y0 - iy0, x1 - ix0, y1 - iy0))
    return np.asarray(out, dtype=np.uint8)


def crop_resize_chw(image: np.ndarray, box, size: int) -> torch.Tensor:
    """The training crop: ``box`` of uint8 ``[H, W, 3]`` ``image`` -> uint8 ``[3, size, size]`` tensor.

    The box is rounded to whole pixels (the references' ``int()`` crop does
    the same) and clipped to the image (a training square always lies inside
    its base crop), then resized with torch's antialiased bilinear filter:
    at 224 px 2.4x as fast as :func:`crop_resize`'s Pillow resize at
    sub-pixel boxes (one core), with a mean difference of 1.3/255 per pixel
    (2.8/255 at 64 px) on real faces (docs/ENGINE.md, "The uint8 pipeline").
    """
    h, w = image.shape[:2]
    x0, y0, x1, y1 = (int(round(float(v))) for v in box)
    x0, y0 = min(max(x0, 0), w - 1), min(max(y0, 0), h - 1)
    x1, y1 = min(max(x1, x0 + 1), w), min(max(y1, y0 + 1), h)
    crop = to_chw(image[y0:y1, x0:x1])
    if crop.shape[1:] == (size, size):
        return crop
    return F.interpolate(crop[None], size=(size, size), mode="bilinear", antialias=True, align_corners=False)[0]
