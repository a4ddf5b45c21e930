"""Haar face detection on the AFLW2000 pictures: how many faces it finds, and its box correction.

Usage: python benchmarks/detection_rate.py [--root ../shared/data/aflw2000] [--limit N] [--fit] [--model M.pt ...]

A script, not a test. On each picture kept by the +-99 degree filter (985 of
the 1000 in ../shared) it runs :class:`hpelib.predict.HaarDetector` and
counts the face as *found* when a detection's (corrected) box overlaps the
tight landmark box (:func:`hpelib.data.crops.landmark_box`) with IoU >= 0.5.
It prints the rate overall and by |yaw| and |pitch|, how close the boxes
are, the faces only loosely boxed, the detections away from the face
(background faces or false alarms), and both counts at higher ``--min-score``.

``--fit`` first runs the cascades without correction and prints the
correction (:class:`hpelib.predict.BoxCorrection`, medians over the raw boxes
that contain the landmark box's centre, profile boxes in the frame of the
cascade) and the typical level weights: the numbers of
``hpelib.predict.detect.HAAR_CORRECTIONS`` / ``HAAR_TYPICAL_WEIGHT``.

``--model`` then compares, for trained models, the mean error on the faces
found with the Haar boxes against that with the landmark boxes (the test
crop): what the detector's boxes cost. A model in a run folder with a
``predictions.csv`` (a k-fold run's fold) is measured on the pictures it
was tested on only.
"""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd

from hpelib.data import build_dataset
from hpelib.metrics import summarize
from hpelib.predict import Predictor
from hpelib.predict.detect import HAAR_TYPICAL_WEIGHT, BoxCorrection, HaarDetector, box_iou
from hpelib.runs import PREDICTIONS

FOUND_IOU = 0.5
DEFAULT_ROOT = Path(os.environ.get("HPELIB_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def mirrored(box, width: float) -> np.ndarray:
    """``box`` in the horizontally mirrored picture."""
    return np.array([width - box[2], box[1], width - box[0], box[3]])


def fit_corrections(pictures) -> None:
    """Print the box correction and typical weight of each cascade, from raw boxes that hold the face's centre."""
    raw = HaarDetector(min_score=-np.inf, corrections=None, nms_overlap=1.0)  # every raw box, none merged
    pairs: dict[str, list] = {"frontal": [], "profile": []}
    for rgb, tight in pictures:
        cx, cy = (tight[0] + tight[2]) / 2, (tight[1] + tight[3]) / 2
        for det in raw.detect(rgb):
            x0, y0, x1, y1 = det.box
            if x0 <= cx <= x1 and y0 <= cy <= y1:
                kind = det.kind.split("-")[0]
                flip = det.kind.endswith("mirrored")  # compare in the cascade's own frame
                width = rgb.shape[1]
                box, face = (mirrored(det.box, width), mirrored(tight, width)) if flip else (det.box, tight)
                pairs[kind].append((box, face, det.score * HAAR_TYPICAL_WEIGHT[kind]))
    for kind, rows in pairs.items():
        boxes, faces, weights = (np.array([r[i] for r in rows]) for i in range(3))
        correction = BoxCorrection.fit(boxes, faces)
        before = np.median([box_iou(b, f) for b, f in zip(boxes, faces)])
        after = np.median([box_iou(correction.apply(b), f) for b, f in zip(boxes, faces)])
        print(f"fit {kind:8s} on {len(rows)} boxes: {correction}, typical weight {np.median(weights):.2f}; "
              f"median IoU with the landmark box {before:.2f} raw, {after:.2f} corrected")


def measure(pictures, poses, thresholds=(0.25, 0.5)) -> dict:
    """Print the detection rate of the default detector, how well its boxes fit, and other ``--min-score`` values.

    Returns ``{picture index: its best box}`` for the faces found with the default settings.
    """
    default = HaarDetector().min_score
    detector = HaarDetector(min_score=-np.inf)  # every detection, thresholded below
    per_picture, seconds = [], 0.0  # per picture: [(IoU with the face's landmark box, score, box)]
    for rgb, tight in pictures:
        start = time.perf_counter()
        detections = detector.detect(rgb)
        seconds += time.perf_counter() - start
        per_picture.append([(box_iou(d.box, tight), d.score, d.box) for d in detections])
    n = len(per_picture)
    for min_score in (default,) + tuple(thresholds):
        kept = [[(iou, box) for iou, score, box in found if score >= min_score] for found in per_picture]
        best = [max(pairs, default=(0.0, None)) for pairs in kept]
        iou = np.array([b[0] for b in best])
        found = iou >= FOUND_IOU
        elsewhere = sum(i == 0 for pairs in kept for i, _ in pairs)
        if min_score != default:
            print(f"  with --min-score {min_score}: {found.sum()} found, {elsewhere} detections away from the face")
            continue
        found_boxes = {i: best[i][1] for i in np.flatnonzero(found)}
        print(f"faces found: {found.sum()} of {n} pictures ({100 * found.mean():.1f}%), IoU >= {FOUND_IOU} with the "
              f"landmark box (min score {default}); {seconds / n * 1000:.0f} ms per 450x450 picture")
        print(f"IoU of the found boxes with the landmark boxes: median {np.median(iou[found]):.2f}, "
              f"10th percentile {np.percentile(iou[found], 10):.2f}")
        print(f"pictures with a detection: {sum(bool(pairs) for pairs in kept)}; faces with only a loose box "
              f"(0 < IoU < {FOUND_IOU}): {((iou > 0) & ~found).sum()}; detections away from the face "
              f"(background faces, false alarms): {elsewhere}")
        for col, name in ((0, "yaw"), (1, "pitch")):
            angle = np.abs(poses[:n, col])
            parts = []
            for lo, hi in ((0, 30), (30, 60), (60, 100)):
                sel = (angle >= lo) & (angle < hi)
                parts.append(f"{lo}-{hi}: {found[sel].sum()}/{sel.sum()}"
                             + (f" ({100 * found[sel].mean():.0f}%)" if sel.any() else ""))
            print(f"  by |{name}| (degrees): " + ", ".join(parts))
    return found_boxes


def compare_errors(model, ds, found_boxes: dict) -> None:
    """Print a model's mean error on the found faces with the Haar boxes and with the landmark boxes.

    When the model's run folder has a ``predictions.csv`` (e.g. a k-fold run's
    fold), only the pictures it names (the model's test pictures) are used.
    """
    tested = Path(model).parent / PREDICTIONS
    names = set(pd.read_csv(tested)["name"]) if tested.is_file() else set(ds.names)
    chosen = [i for i in sorted(found_boxes) if ds.names[i] in names]
    predictor = Predictor(model, detector=None)
    images = [np.asarray(ds.load(i)) for i in chosen]
    true = ds.poses[chosen]
    for what, boxes in (("landmark boxes", [[ds.face_boxes.boxes[i]] for i in chosen]),
                        ("Haar boxes", [[found_boxes[i]] for i in chosen])):
        pred = np.array([faces[0].angles for faces in predictor.predict_batch(images, boxes)])
        print(f"  {Path(model)} on {len(chosen)} found faces with {what}: MAE {summarize(pred, true)['mae']:.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", type=Path, default=DEFAULT_ROOT / "aflw2000", help="AFLW2000-3D folder")
    ap.add_argument("--limit", type=int, default=None, help="only the first N pictures")
    ap.add_argument("--fit", action="store_true", help="also fit the box correction from raw cascade boxes")
    ap.add_argument("--model", nargs="*", default=[], metavar="MODEL.pt",
                    help="also compare these models' errors with Haar boxes and with landmark boxes")
    args = ap.parse_args()
    ds = build_dataset("aflw2000", root=args.root, train=False, image_size=32, drop_invisible_landmarks=True)
    n = len(ds) if args.limit is None else min(args.limit, len(ds))

    def pictures():
        for i in range(n):
            yield np.asarray(ds.load(i)), ds.face_boxes.boxes[i]

    print(f"{n} AFLW2000 pictures from {args.root}")
    if args.fit:
        fit_corrections(pictures())
    found_boxes = measure(pictures(), ds.poses)
    for model in args.model:
        compare_errors(model, ds, found_boxes)


if __name__ == "__main__":
    main()
