"""Head poses of the faces in your own pictures and videos, with a trained hpelib model.

Command line (see docs/PREDICT.md)::

    python -m hpelib.predict --checkpoint results/run/model.pt photos/ clip.mp4 --out predictions/

Python::

    from hpelib.predict import Predictor, predict_files
    predictor = Predictor("results/run/model.pt")        # detector="haar" | None | your detector
    faces = predictor.predict_image(rgb)                  # [FacePose(box, score, yaw, pitch, roll), ...]
    summary = predict_files(["photos/"], "predictions/", predictor)

Modules, one job each: :mod:`.model` (the checkpoint's model and input
spec), :mod:`.detect` (the detector interface and the Haar default),
:mod:`.predictor` (:class:`Predictor`), :mod:`.sources` (files, folders,
frames), :mod:`.boxes` (``--boxes`` files), :mod:`.draw` (annotated frames),
:mod:`.outputs` (rows, pictures, videos), :mod:`.files`
(:func:`predict_files`), :mod:`.cli` (the command).
"""
from .detect import BoxCorrection, Detection, FaceDetector, HaarDetector
from .files import Summary, predict_files
from .model import NotAPoseModel, PoseModel
from .predictor import FacePose, Predictor

__all__ = ["Predictor", "FacePose", "predict_files", "Summary", "FaceDetector", "Detection", "HaarDetector",
           "BoxCorrection", "PoseModel", "NotAPoseModel"]
