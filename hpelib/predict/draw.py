"""Drawing predicted poses into pictures and video frames, with OpenCV (fast enough for video).

Each face gets its box (white), its head axes from the box's centre and its
angles above the box. The axes and their colours are those of
:mod:`hpelib.viz` (:func:`hpelib.viz.axis_ends`, :data:`hpelib.viz.AXIS_RGB`:
x red, y green, z blue, projected by :func:`hpelib.angles.project_axes`), so
a picture drawn here reads like the notebooks' figures.
"""
from __future__ import annotations

import numpy as np

from ..viz import AXIS_RGB, axis_ends
from .deps import require

__all__ = ["draw_faces", "BOX_RGB", "AXIS_FRACTION"]

BOX_RGB = (255, 255, 255)
#: length of the drawn axes, as a fraction of the face box's shorter side
AXIS_FRACTION = 0.8


def draw_faces(rgb: np.ndarray, faces) -> np.ndarray:
    """A copy of ``rgb`` (uint8 ``[H, W, 3]``) with each face's box, axes and angles drawn.

    ``faces``: :class:`hpelib.predict.FacePose` objects (anything with ``box``,
    ``yaw``, ``pitch``, ``roll``).
    """
    cv2 = require("cv2")
    out = np.array(rgb, dtype=np.uint8, copy=True)  # RGB throughout: the colours are given as RGB
    thickness = max(1, round(min(out.shape[:2]) / 250))
    for face in faces:
        x0, y0, x1, y1 = (float(v) for v in face.box)
        cv2.rectangle(out, (round(x0), round(y0)), (round(x1), round(y1)), BOX_RGB, thickness, cv2.LINE_AA)
        center = ((x0 + x1) / 2.0, (y0 + y1) / 2.0)
        ends = axis_ends((face.yaw, face.pitch, face.roll), center, AXIS_FRACTION * min(x1 - x0, y1 - y0))
        start = (round(center[0]), round(center[1]))
        for (ex, ey), color in zip(() if ends is None else ends, AXIS_RGB):
            cv2.line(out, start, (round(ex), round(ey)), color, 2 * thickness, cv2.LINE_AA)
        label = f"y {round(face.yaw)} p {round(face.pitch)} r {round(face.roll)}"
        scale = max(0.4, (x1 - x0) / 250)
        cv2.putText(out, label, (round(x0), max(0, round(y0) - 4)), cv2.FONT_HERSHEY_SIMPLEX, scale, BOX_RGB,
                    thickness, cv2.LINE_AA)
    return out
