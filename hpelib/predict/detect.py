"""Finding faces: the detector interface and the offline default, OpenCV's Haar cascades.

The interface
    A detector is any object with a method ``detect(rgb_image) -> list[Detection]``
    (:class:`FaceDetector`): ``rgb_image`` is a uint8 ``[H, W, 3]`` RGB array,
    each :class:`Detection` holds a face box ``(x0, y0, x1, y1)`` in pixels and
    a score (None when the detector has none). The box must be a *tight* face
    box, in the sense of the landmark boxes the models were tested with
    (:func:`hpelib.data.crops.landmark_box`: from the eyebrows to the chin and
    across the visible face), since the model's crop enlarges it by its own
    recipe (:class:`hpelib.models.InputSpec`). A detector whose boxes are
    looser or shifted corrects them, e.g. with a :class:`BoxCorrection` fitted
    on labelled pictures (``benchmarks/detection_rate.py`` shows how).

The default (:class:`HaarDetector`)
    OpenCV's bundled cascades, no download: the frontal cascade
    (``haarcascade_frontalface_default.xml``), and the profile cascade
    (``haarcascade_profileface.xml``, which finds faces turned towards the
    image's left) on the picture and on its mirror image (faces turned to the
    right). Each raw box is corrected to a tight landmark box with the numbers
    measured on AFLW2000 (:data:`HAAR_CORRECTIONS`), then overlapping boxes
    are merged (:func:`non_max_suppression`, the higher score wins).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from .deps import require

__all__ = ["Detection", "FaceDetector", "BoxCorrection", "HaarDetector", "HAAR_CORRECTIONS", "HAAR_TYPICAL_WEIGHT",
           "box_iou", "box_overlap", "non_max_suppression", "make_detector"]


@dataclass(frozen=True)
class Detection:
    """One face found in a picture: a tight face box ``(x0, y0, x1, y1)`` in pixels, its score, what found it."""

    box: tuple
    score: float | None = None
    kind: str = ""


@runtime_checkable
class FaceDetector(Protocol):
    """What :class:`hpelib.predict.Predictor` needs from a face detector: one method.

    Any object with this method works (no need to subclass), e.g. a wrapper
    around a stronger detector::

        class MyDetector:
            def detect(self, rgb_image):
                return [Detection(box=(x0, y0, x1, y1), score=s) for x0, y0, x1, y1, s in my_model(rgb_image)]

        Predictor("run/model.pt", detector=MyDetector())
    """

    def detect(self, rgb_image: np.ndarray) -> list[Detection]:
        """The faces in ``rgb_image`` (uint8 ``[H, W, 3]`` RGB), each with a tight face box."""
        ...


@dataclass(frozen=True)
class BoxCorrection:
    """Turns a detector's square box of side ``s`` and centre ``(cx, cy)`` into a tight face box.

    The tight box has centre ``(cx + dx * s, cy + dy * s)``, width ``sw * s``
    and height ``sh * s``.
    """

    dx: float = 0.0
    dy: float = 0.0
    sw: float = 1.0
    sh: float = 1.0

    def apply(self, box) -> np.ndarray:
        x0, y0, x1, y1 = (float(v) for v in box)
        side = ((x1 - x0) + (y1 - y0)) / 2.0
        cx, cy = (x0 + x1) / 2.0 + self.dx * side, (y0 + y1) / 2.0 + self.dy * side
        half_w, half_h = self.sw * side / 2.0, self.sh * side / 2.0
        return np.array([cx - half_w, cy - half_h, cx + half_w, cy + half_h])

    @classmethod
    def fit(cls, raw_boxes, tight_boxes) -> "BoxCorrection":
        """The correction that best maps ``raw_boxes`` to ``tight_boxes`` (``[N, 4]``): medians, robust to misfits."""
        raw = np.asarray(raw_boxes, np.float64).reshape(-1, 4)
        tight = np.asarray(tight_boxes, np.float64).reshape(-1, 4)
        side = ((raw[:, 2] - raw[:, 0]) + (raw[:, 3] - raw[:, 1])) / 2.0
        shift = (tight[:, :2] + tight[:, 2:]) / 2.0 - (raw[:, :2] + raw[:, 2:]) / 2.0
        size = tight[:, 2:] - tight[:, :2]
        dx, dy, sw, sh = np.median(np.column_stack([shift, size]) / side[:, None], axis=0)
        return cls(round(float(dx), 3), round(float(dy), 3), round(float(sw), 3), round(float(sh), 3))


#: Haar box -> tight landmark box, per cascade (profile: in the frame of the cascade, a face turned to the
#: image's left), medians over the AFLW2000 pictures of ../shared (benchmarks/detection_rate.py --fit)
HAAR_CORRECTIONS = {"frontal": BoxCorrection(dx=-0.001, dy=0.136, sw=0.726, sh=0.768),
                    "profile": BoxCorrection(dx=-0.081, dy=0.151, sw=0.66, sh=0.699)}
#: the median raw level weight of the true faces each cascade found on those pictures: a score is the raw
#: weight divided by it, so that 1.0 means "as sure as for a typical true face" for both cascades
HAAR_TYPICAL_WEIGHT = {"frontal": 5.99, "profile": 1.80}
_CASCADES = {"frontal": "haarcascade_frontalface_default.xml", "profile": "haarcascade_profileface.xml"}


def _area(box) -> float:
    return max(0.0, box[2] - box[0]) * max(0.0, box[3] - box[1])


def _intersection(a, b) -> float:
    return _area((max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])))


def box_iou(a, b) -> float:
    """Intersection over union of two boxes ``(x0, y0, x1, y1)``."""
    inter = _intersection(a, b)
    union = _area(a) + _area(b) - inter
    return inter / union if union > 0 else 0.0


def box_overlap(a, b) -> float:
    """The fraction of the smaller of two boxes that lies in the other (1.0: one inside the other)."""
    smaller = min(_area(a), _area(b))
    return _intersection(a, b) / smaller if smaller > 0 else 0.0


def non_max_suppression(detections: list[Detection], overlap: float = 0.3) -> list[Detection]:
    """The detections kept, best score first, when each suppresses the lower-scored ones it overlaps.

    Two boxes overlap when more than ``overlap`` of the smaller one lies in the
    other (:func:`box_overlap`): the cascades also fire on part of a face
    (a box inside the face's box), which IoU alone would keep.
    """
    kept: list[Detection] = []
    for det in sorted(detections, key=lambda d: -(d.score or 0.0)):
        if all(box_overlap(det.box, k.box) <= overlap for k in kept):
            kept.append(det)
    return kept


class HaarDetector:
    """Faces with OpenCV's Haar cascades (frontal + both profiles), boxes corrected to tight landmark boxes.

    ``min_size``: the smallest face side searched, in pixels of the picture;
    ``max_side``: pictures whose longer side is larger are searched at that
    size (faster on HD video; boxes are scaled back); ``scale_factor`` and
    ``min_neighbors``: OpenCV's ``detectMultiScale`` settings;
    ``corrections=None`` keeps the raw cascade boxes (for measuring them).
    ``score``: the cascade's level weight (``detectMultiScale3`` with
    ``outputRejectLevels=True``) divided by :data:`HAAR_TYPICAL_WEIGHT`;
    detections scored below ``min_score`` are dropped (on AFLW2000 the true
    faces score 0.66 or more in 9 cases of 10, detections away from the face
    0.25 in the median; some are negative, which the default 0 drops).

    >>> faces = HaarDetector(min_size=40).detect(rgb)   # doctest: +SKIP
    >>> faces[0].box, faces[0].score, faces[0].kind      # doctest: +SKIP
    ((112.3, 80.1, 201.7, 182.4), 1.21, 'frontal')
    """

    def __init__(self, min_size: int = 30, min_score: float = 0.0, max_side: int = 960, scale_factor: float = 1.1,
                 min_neighbors: int = 3, nms_overlap: float = 0.3, corrections: dict | None = HAAR_CORRECTIONS):
        cv2 = require("cv2")
        self.cv2, self.min_size, self.min_score, self.max_side = cv2, int(min_size), float(min_score), int(max_side)
        self.scale_factor, self.min_neighbors = float(scale_factor), int(min_neighbors)
        self.nms_overlap = float(nms_overlap)
        self.corrections = corrections
        self.cascades = {}
        for kind, name in _CASCADES.items():
            cascade = cv2.CascadeClassifier(cv2.data.haarcascades + name)
            if cascade.empty():
                raise RuntimeError(f"OpenCV could not load its bundled cascade {name}; "
                                   "install opencv-python-headless<5 (pip install 'hpelib[deploy]')")
            self.cascades[kind] = cascade

    def detect(self, rgb_image: np.ndarray) -> list[Detection]:
        """The faces in ``rgb_image`` (uint8 ``[H, W, 3]`` RGB), best score first."""
        cv2 = self.cv2
        gray = cv2.cvtColor(np.ascontiguousarray(rgb_image), cv2.COLOR_RGB2GRAY)
        scale = min(1.0, self.max_side / max(gray.shape))
        if scale < 1.0:
            gray = cv2.resize(gray, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        min_side = max(1, round(self.min_size * scale))
        found = self._search("frontal", gray, min_side, mirrored=False)
        found += self._search("profile", gray, min_side, mirrored=False)
        found += self._search("profile", np.ascontiguousarray(gray[:, ::-1]), min_side, mirrored=True)
        found = [Detection(tuple(float(v) / scale for v in d.box), d.score, d.kind) for d in found]
        return [d for d in non_max_suppression(found, self.nms_overlap) if d.score >= self.min_score]

    def _search(self, kind: str, gray: np.ndarray, min_side: int, mirrored: bool) -> list[Detection]:
        """One cascade on ``gray``: corrected boxes (in the frame of the cascade, then un-mirrored) and scores."""
        width = gray.shape[1]
        rects, _, weights = self.cascades[kind].detectMultiScale3(
            gray, scaleFactor=self.scale_factor, minNeighbors=self.min_neighbors, minSize=(min_side, min_side),
            outputRejectLevels=True)
        out = []
        for (x, y, w, h), weight in zip(np.asarray(rects).reshape(-1, 4), np.asarray(weights).reshape(-1)):
            box = np.array([x, y, x + w, y + h], dtype=np.float64)
            if self.corrections is not None:
                box = self.corrections[kind].apply(box)
            if mirrored:
                box = np.array([width - box[2], box[1], width - box[0], box[3]])
            out.append(Detection(tuple(box.tolist()), round(float(weight) / HAAR_TYPICAL_WEIGHT[kind], 4),
                                 kind + ("-mirrored" if mirrored else "")))
        return out


def make_detector(detector) -> FaceDetector | None:
    """``"haar"`` -> a :class:`HaarDetector`; None -> None (no detection); any object with ``detect`` -> itself."""
    if detector is None:
        return None
    if isinstance(detector, str):
        if detector != "haar":
            raise ValueError(f"unknown detector {detector!r}: use 'haar', None, or an object with a detect() method")
        return HaarDetector()
    if not isinstance(detector, FaceDetector):
        raise TypeError(f"a detector needs a detect(rgb_image) method, got {type(detector).__name__}")
    return detector
