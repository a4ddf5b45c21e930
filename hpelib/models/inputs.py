"""What a trained model expects as input, saved in its ``model.pt`` (like timm's pretrained config).

:class:`InputSpec` says how a picture and a face box become the model's input
tensor, exactly as the data sets made its test crops:

1. the face box (a tight box around the face, ``x0, y0, x1, y1`` in pixels)
   is enlarged by ``box_k`` with ``box_factors`` (:func:`hpelib.data.crops.enlarge_box`;
   the AFLW2000 test crop of Hopenet and 6DRepNet: ``k = 0.2``, left, top and
   right by ``2k``, bottom by ``0.6k``);
2. a centred square of side ``crop_fraction`` x the shorter side of that
   region is cut out (outside the picture is black) and resized to
   ``image_size`` (Pillow bilinear, antialiased);
3. it is normalised with ``mean``/``std`` (ImageNet's).

Without a face box (a picture that is already a face crop), step 1 is the
whole picture, treated as a square as the data sets do. The output is
``(yaw, pitch, roll)`` in degrees in the convention of :mod:`hpelib.angles`.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..data.crops import AFLW2000_FACTORS, crop_resize, enlarge_box
from ..data.transforms import (EVAL_CROP_FRACTION, FORMER_EVAL_CROP_FRACTION, IMAGENET_MEAN, IMAGENET_STD,
                               centred_square, to_tensor)

__all__ = ["InputSpec", "ANGLE_CONVENTION", "input_spec_of", "read_input_spec"]

ANGLE_CONVENTION = "yaw, pitch, roll in degrees; R = Rz(roll) Ry(yaw) Rx(pitch) (hpelib.angles)"


@dataclass
class InputSpec:
    """How a picture and a face box become the model's input (see the module docstring)."""

    image_size: int
    crop_fraction: float = EVAL_CROP_FRACTION
    box_k: float = 0.2
    box_factors: tuple = AFLW2000_FACTORS
    mean: tuple = IMAGENET_MEAN
    std: tuple = IMAGENET_STD
    angles: str = ANGLE_CONVENTION

    def __post_init__(self):
        self.box_factors, self.mean, self.std = tuple(self.box_factors), tuple(self.mean), tuple(self.std)
        if self.mean != IMAGENET_MEAN or self.std != IMAGENET_STD:
            raise ValueError(f"this hpelib reads inputs normalised with ImageNet's mean/std only, "
                             f"got mean={self.mean}, std={self.std}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "InputSpec":
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    def region(self, image_width: int, image_height: int, box=None) -> np.ndarray:
        """The square cut out of the picture, ``x0, y0, x1, y1`` (may reach outside it)."""
        region = None if box is None else enlarge_box(np.asarray(box, np.float64), self.box_k, self.box_factors)
        return centred_square(image_width, image_height, region, self.crop_fraction)  # None: a face crop already

    def crop(self, image, box=None) -> torch.Tensor:
        """``FloatTensor[3, S, S]``, the model's input for ``image`` (PIL or uint8 ``[H, W, 3]`` RGB) and ``box``."""
        w, h = (image.shape[1], image.shape[0]) if isinstance(image, np.ndarray) else image.size
        return to_tensor(crop_resize(image, self.region(w, h, box), self.image_size))


def input_spec_of(dataset) -> InputSpec:
    """The input spec of a data set: its image size, test crop fraction, and face-box recipe.

    For a test set the crop fraction is its preset's; for a training set it is
    the test crop that goes with its training crop (the whole region when
    training takes the whole region, else :data:`EVAL_CROP_FRACTION`).

    A data set cropped from face boxes (AFLW2000, 300W-LP) gives its recipe
    (:class:`~hpelib.data.crops.FaceBoxes`); for the others (whole pictures)
    the model keeps the AFLW2000 test crop for the face boxes it will be given.
    """
    base = dataset
    while hasattr(base, "dataset"):  # subsets (label fraction, k-fold) wrap the data set
        base = base.dataset
    faces = getattr(base, "face_boxes", None)
    recipe = {"box_k": float(faces.k), "box_factors": tuple(faces.factors)} if faces is not None else {}
    fraction = float(base.preset.crop_fraction)
    if base.preset.train and fraction < 1.0:
        fraction = EVAL_CROP_FRACTION
    return InputSpec(image_size=int(base.preset.size), crop_fraction=fraction, **recipe)


def read_input_spec(path) -> InputSpec:
    """The input spec of a model: from its ``model.pt`` (``input``), else from its run folder's ``config.json``.

    Models trained before the spec was saved get the image size of their run,
    the test crop of that time (:data:`~hpelib.data.transforms.FORMER_EVAL_CROP_FRACTION`)
    and the defaults for the rest.
    """
    from ..runs import CONFIG, MODEL, RunFolder
    from .files import read_checkpoint

    path = Path(path)
    file = path / MODEL if path.is_dir() else path
    saved = read_checkpoint(file, mmap=True).get("input")
    if saved:
        return InputSpec.from_dict(saved)
    folder = RunFolder(file.parent)
    size = folder.read_config().image_size if folder.has(CONFIG) else None
    if size is None:
        raise ValueError(f"{file} records no input spec and its folder has no {CONFIG} with the image size; "
                         "pass the image size explicitly")
    return InputSpec(image_size=int(size), crop_fraction=FORMER_EVAL_CROP_FRACTION)
