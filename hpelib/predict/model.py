"""A trained pose model and the input it expects, both from its ``model.pt``.

Everything inference needs comes from the checkpoint: the weights and
architecture (:func:`hpelib.models.load_model`) and the image size, crop and
normalisation (:func:`hpelib.models.read_input_spec`). The model runs in
float32, in eval mode, under ``torch.inference_mode()``, in batches.
"""
from __future__ import annotations

import numpy as np
import torch

from ..engine.config import resolve_device
from ..models import NotAPoseModel, load_pose_model

__all__ = ["PoseModel", "NotAPoseModel"]


class PoseModel:
    """The model of an hpelib checkpoint (``model.pt`` or its run folder), ready to predict poses.

    >>> pose_model = PoseModel("results/run/model.pt", device="cpu")   # doctest: +SKIP
    >>> pose_model.predict(torch.stack([pose_model.spec.crop(rgb, box)]))   # doctest: +SKIP
    array([[ 12.3,  -4.1,   1.7]])

    Raises ``FileNotFoundError`` when there is no file,
    :class:`hpelib.models.files.UnreadableCheckpoint` when it cannot be read
    and :class:`NotAPoseModel` when it has no pose head.
    """

    def __init__(self, checkpoint, device="auto", batch_size: int = 32):
        self.path, model, self.spec = load_pose_model(checkpoint)
        if int(batch_size) < 1:
            raise ValueError(f"batch size must be at least 1, got {batch_size}")
        self.batch_size = int(batch_size)
        self.device = resolve_device(device)
        self.model = model.to(self.device, torch.float32).eval()

    def predict(self, crops: torch.Tensor) -> np.ndarray:
        """``(yaw, pitch, roll)`` degrees, float64 ``[N, 3]``, of model inputs ``[N, 3, S, S]`` (``spec.crop``)."""
        out = [np.zeros((0, 3))]
        with torch.inference_mode():
            for start in range(0, len(crops), self.batch_size):
                batch = crops[start:start + self.batch_size].to(self.device, torch.float32)
                out.append(self.model.predict(batch).cpu().numpy().astype(np.float64))
        return np.concatenate(out)
