"""The run folder: the files one run writes, their names, and how they are read back.

Every run (a notebook, the engine CLI, the study runner) writes one folder;
this module is the only one that knows its layout. What the folder holds:

``config.json`` -- :class:`RunRecord`
    What the run was: ``kind`` (``train`` or ``pretrain``), the report's labels
    (``run``, ``scenario``, ``method``, ``pretrain_method``, ``aux_methods``,
    ``init``, ``label_fraction``, ``seed``, ``test_set``), the settings that
    runs of one table row must share (``backbone``, ``image_size``,
    ``model_config``, ``train_config``), ``pretrain_epochs`` of an SSL
    initialisation, and everything else a run records (its whole ``spec``,
    ``n_train`` ...) under :attr:`RunRecord.extra`.
``metrics.json`` -- :func:`metrics_document` / :func:`metric_blocks`
    Test errors in degrees (:data:`METRIC_KEYS`, the constant predictor's
    :data:`CONSTANT_KEYS`); one test set: flat, several: one block per set
    under ``per_test_set``, shared keys (``train_time_s``) at the top.
``predictions.csv`` -- :func:`predictions_frame`
    One row per test image: ``name``, true, predicted and error columns
    (:data:`PREDICTION_COLUMNS`); with several test sets one
    ``predictions_<test_set>.csv`` per set. Unlabelled rows have empty errors.
``model.pt``, ``checkpoint.pt``, ``history.json``
    The engine's final weights, resumable state and per-epoch losses.
``train.log``
    The engine's log, one self-contained line per event, appended as it happens:
    ``epoch k/N: loss ...`` per finished epoch, ``resumed from epoch k/N
    (checkpoint.pt)``, ``finished: N epochs in S s`` (its last line shows progress).
``study_run.json``, ``FAILED``, ``kernel.log``, ``slurm_job.json``
    Written by the study runner: what it asked for and whether it completed,
    why it failed, the kernel's stderr, and the SLURM job of a run submitted
    with ``--executor slurm``.

Ids and labels are built here too, so that the study, the notebooks and the
report agree: :func:`run_id`, :func:`pretrain_run_id`, :func:`method_label`,
:func:`init_label`.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .io import file_digest, read_json, write_json, write_text
from .metrics import ANGLE_NAMES, angle_errors, geodesic_errors, labelled_rows
from .models.backbones import is_checkpoint_init

CONFIG = "config.json"
METRICS = "metrics.json"
PREDICTIONS = "predictions.csv"
HISTORY = "history.json"
MODEL = "model.pt"
CHECKPOINT = "checkpoint.pt"
LOG = "train.log"
STUDY_RUN = "study_run.json"
FAILED = "FAILED"
KERNEL_LOG = "kernel.log"
SLURM_JOB = "slurm_job.json"

#: keys every test-set block of a complete ``metrics.json`` holds
METRIC_KEYS = ("yaw", "pitch", "roll", "mae", "geodesic", "n", "train_time_s")
#: errors of the constant predictor (always the median training pose), per test set
CONSTANT_KEYS = ("constant_yaw", "constant_pitch", "constant_roll", "constant_mae")
TRUE_COLUMNS = tuple(f"{a}_true" for a in ANGLE_NAMES)
PRED_COLUMNS = tuple(f"{a}_pred" for a in ANGLE_NAMES)
ERROR_COLUMNS = tuple(f"{a}_err" for a in ANGLE_NAMES) + ("geodesic_err",)
PREDICTION_COLUMNS = ("name",) + TRUE_COLUMNS + PRED_COLUMNS + ERROR_COLUMNS

#: hidden sub-folder of a k-fold setting's folds: the report reads the pooled folder only
FOLDS_DIR = ".folds"


# --------------------------------------------------------------------------- ids and labels
def method_label(pretrain_method: str | None, aux_methods=(), pretrain_epochs: int | None = None) -> str:
    """``pre+aux1+aux2`` (auxiliary tasks sorted), ``none`` for a plain baseline.

    ``pretrain_epochs`` marks a variant of a pre-training-budget axis: ``rotation-4ep``.
    """
    pre = pretrain_method
    if pre and pretrain_epochs is not None:
        pre = f"{pre}-{pretrain_epochs}ep"
    aux = [aux_methods] if isinstance(aux_methods, str) else sorted(aux_methods or ())
    parts = ([pre] if pre else []) + [str(a) for a in aux]
    return "+".join(parts) if parts else "none"


def init_label(init: str, pretrain_method: str | None) -> str:
    """The ``init`` column of the report: random, imagenet, ssl (a pre-training run) or checkpoint."""
    if not is_checkpoint_init(init):
        return init
    return "ssl" if pretrain_method else "checkpoint"


def run_id(scenario: str, method: str, label_fraction: float, seed: int, fold: int | None = None) -> str:
    """``<scenario>/<method>/lf<fraction>_s<seed>`` (``.../.folds/f<fold>`` for one fold of a k-fold setting)."""
    rid = f"{scenario}/{method}/lf{label_fraction:g}_s{seed}"
    return rid if fold is None else f"{rid}/{FOLDS_DIR}/f{fold}"


def pretrain_run_id(method: str, seed: int, epochs: int | None = None) -> str:
    """``pretrain/<method>_s<seed>``, or ``pretrain/<method>_e<epochs>_s<seed>`` for a budget variant."""
    return f"pretrain/{method}_s{seed}" if epochs is None else f"pretrain/{method}_e{epochs}_s{seed}"


# --------------------------------------------------------------------------- config.json
@dataclass
class RunRecord:
    """What ``config.json`` says about a run. Reading tolerates missing keys (hand-made or older folders)."""

    kind: str = "train"
    run: str | None = None
    scenario: str = "unknown"
    method: str | None = None
    pretrain_method: str | None = None
    aux_methods: list = field(default_factory=list)
    init: str | None = None
    label_fraction: float = 1.0
    seed: int | None = None
    test_set: object = None  # a name, or a sorted list of names for several test sets
    backbone: str | None = None
    image_size: int | None = None
    pretrain_epochs: int | None = None
    model_config: dict = field(default_factory=dict)
    train_config: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)

    @property
    def label(self) -> str:
        """The method shown in the report: ``method``, else built from the pre-training and auxiliary methods."""
        if self.method not in (None, ""):
            return str(self.method)
        return method_label(self.pretrain_method, self.aux_methods)

    @classmethod
    def from_dict(cls, d: dict) -> "RunRecord":
        if not isinstance(d, dict):
            raise ValueError(f"{CONFIG} must hold a JSON object, got {type(d).__name__}")
        names = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        known = {k: v for k, v in d.items() if k in names and v is not None}
        if "aux_methods" in known and isinstance(known["aux_methods"], str):
            known["aux_methods"] = known["aux_methods"].split("+")
        if "label_fraction" in known:
            known["label_fraction"] = float(known["label_fraction"])
        return cls(**known, extra={k: v for k, v in d.items() if k not in names})

    def to_dict(self) -> dict:
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "extra"}
        return {**out, **self.extra}


# --------------------------------------------------------------------------- metrics.json
def metrics_document(per_set: dict[str, dict], **shared) -> dict:
    """The ``metrics.json`` object: flat for one test set, ``per_test_set`` blocks for several (or none)."""
    if len(per_set) == 1:
        (block,) = per_set.values()
        return {**block, **shared}
    out = {"per_test_set": {name: dict(m) for name, m in per_set.items()}} if per_set else {}
    return {**out, **shared}


def non_finite(doc, where: str = "") -> list[str]:
    """The keys (``per_test_set.aflw2000.mae``) of every NaN or infinite number in a metrics document."""
    if isinstance(doc, dict):
        return [k for key, v in doc.items() for k in non_finite(v, f"{where}{key}.")]
    if isinstance(doc, list):
        return [k for i, v in enumerate(doc) for k in non_finite(v, f"{where}{i}.")]
    if isinstance(doc, float) and not math.isfinite(doc):
        return [f"{where[:-1]} = {doc}"]
    return []


def metric_blocks(doc: dict, default_test_set=None) -> list[tuple[object, dict]]:
    """``[(test_set, metrics), ...]`` from a ``metrics.json`` object.

    Accepted forms: flat (one block, named ``default_test_set``); ``per_test_set``
    blocks with shared top-level values; or every top-level value a block.
    """
    if not isinstance(doc, dict):
        raise ValueError(f"{METRICS} must hold a JSON object")
    if isinstance(doc.get("per_test_set"), dict):
        shared = {k: v for k, v in doc.items() if k != "per_test_set" and not isinstance(v, dict)}
        return [(ts, {**shared, **m}) for ts, m in doc["per_test_set"].items()]
    if doc and "mae" not in doc and all(isinstance(v, dict) for v in doc.values()):
        return list(doc.items())
    return [(default_test_set, doc)]


#: a run is *unlearned* on a test set when its error on yaw, pitch, roll or the mean is not clearly
#: below the constant predictor's (always the median training pose): error >= UNLEARNED_RATIO x constant error
UNLEARNED_RATIO = 0.8
UNLEARNED_CHECKED = ("yaw", "pitch", "roll", "mae")


def not_below(err, const):
    """True where ``err`` is not clearly below the constant predictor's error ``const`` (NaN: False)."""
    err, const = np.asarray(err, float), np.asarray(const, float)
    with np.errstate(invalid="ignore"):
        return (const > 0) & (err >= UNLEARNED_RATIO * const)


def unlearned_keys(block: dict) -> list[str]:
    """The errors of one test set's metrics (``yaw`` ... ``mae``) that are not clearly below the constant predictor's."""
    return [k for k in UNLEARNED_CHECKED
            if k in block and f"constant_{k}" in block and bool(not_below(block[k], block[f"constant_{k}"]))]


def training_summary(result: dict) -> dict:
    """The training entries of ``metrics.json`` from the result of the engine's ``train()`` / ``pretrain()``.

    ``kind``, ``epochs``, ``train_time_s``, ``train_loss_<name>`` of the last
    epoch and ``val_<metric>`` of the last validation, if any.
    """
    out = {"kind": result["kind"], "epochs": result["epochs"], "train_time_s": result["train_time_s"]}
    out.update({f"train_loss_{k}": v for k, v in result["train_loss"].items()})
    if result.get("val"):
        out.update({f"val_{k}": v for k, v in result["val"].items()})
    return out


def constant_columns(constant: dict) -> dict:
    """``constant_yaw/pitch/roll/mae`` (:data:`CONSTANT_KEYS`) from the constant predictor's errors."""
    return {f"constant_{k}": float(constant[k]) for k in ("yaw", "pitch", "roll", "mae")}


# --------------------------------------------------------------------------- predictions
def predictions_frame(names, pred: np.ndarray, true: np.ndarray):
    """One row per sample: ``name``, true, predicted, per-angle and geodesic errors (NaN when unlabelled)."""
    import pandas as pd

    pred = np.asarray(pred, dtype=np.float64).reshape(-1, 3)
    true = np.asarray(true, dtype=np.float64).reshape(-1, 3)
    names = [str(x) for x in names] if names is not None and len(names) == len(pred) else \
        [str(i) for i in range(len(pred))]
    frame = pd.DataFrame({"name": names})
    for i, a in enumerate(ANGLE_NAMES):
        frame[f"{a}_true"] = true[:, i]
    for i, a in enumerate(ANGLE_NAMES):
        frame[f"{a}_pred"] = pred[:, i]
    return with_errors(frame, recompute=True)


def with_errors(frame, recompute: bool = False):
    """``frame`` with the error columns (computed when absent, or always with ``recompute``) and ``mae_err``.

    Errors follow :mod:`hpelib.metrics` (wrap-aware, closer Euler triplet); rows
    without a label get NaN. ``mae_err`` is the mean of the three angle errors.
    """
    frame = frame.copy()
    if recompute or not set(ERROR_COLUMNS[:3]) <= set(frame.columns):
        missing = [c for c in TRUE_COLUMNS + PRED_COLUMNS if c not in frame.columns]
        if missing:
            raise ValueError(f"predictions have neither {list(ERROR_COLUMNS[:3])} nor the columns {missing}")
        true = frame[list(TRUE_COLUMNS)].to_numpy(float)
        pred = frame[list(PRED_COLUMNS)].to_numpy(float)
        ok = labelled_rows(true)
        err = np.full((len(frame), 3), np.nan)
        geo = np.full(len(frame), np.nan)
        if ok.any():
            err[ok] = angle_errors(pred[ok], true[ok])
            geo[ok] = geodesic_errors(pred[ok], true[ok])
        for i, c in enumerate(ERROR_COLUMNS[:3]):
            frame[c] = err[:, i]
        frame["geodesic_err"] = geo
    frame["mae_err"] = frame[list(ERROR_COLUMNS[:3])].mean(axis=1, skipna=False)
    return frame


def predictions_file(test_set: str, n_sets: int) -> str:
    """``predictions.csv`` for a run with one test set, ``predictions_<test_set>.csv`` with several."""
    return PREDICTIONS if n_sets == 1 else f"predictions_{test_set}.csv"


# --------------------------------------------------------------------------- the folder
#: a loss that ends above this multiple of its first epoch's has diverged
DIVERGED_RATIO = 10.0


def divergence(epochs: list[dict]) -> str | None:
    """Why a training run's loss looks diverged (``history.json``'s ``epochs``), or None.

    Its last epoch's mean total loss above :data:`DIVERGED_RATIO` x its first
    epoch's, or (3 epochs or more) no later epoch below its first: for SSL
    pre-training, whose loss nobody reads, a sign that the weights it hands to
    the fine-tunes learned nothing.
    """
    losses = [float(e["loss"]["total"]) for e in epochs if isinstance(e.get("loss"), dict) and "total" in e["loss"]]
    if len(losses) < 2 or not all(map(math.isfinite, losses)):
        return None
    first, last = losses[0], losses[-1]
    if first > 0 and last > DIVERGED_RATIO * first:
        return f"its loss rose from {first:.4g} (epoch 1) to {last:.4g} (epoch {len(losses)})"
    if len(losses) >= 3 and min(losses[1:]) >= first:
        return f"its loss never fell below its first epoch's ({first:.4g}) in {len(losses)} epochs"
    return None


#: a finished run's record (``study_run.json``) lists these files, as found then: each one's size, and its
#: content hash when it is small (JSON, CSV); the runner and the report trust a run only while they still match
SEALED = (CONFIG, METRICS, HISTORY, MODEL, PREDICTIONS, "predictions_*.csv")
HASHED_UP_TO = 4 << 20  # bytes: larger files (model.pt) are checked by size


def seal(folder) -> dict:
    """``{file name: {"size", "sha256"?}}`` of the result files in ``folder`` (:data:`SEALED`)."""
    folder = Path(folder)
    found = sorted({p for pattern in SEALED for p in folder.glob(pattern) if p.is_file()})
    record = {}
    for path in found:
        size = path.stat().st_size
        record[path.name] = {"size": size, **({"sha256": file_digest(path)} if size <= HASHED_UP_TO else {})}
    return record


def broken_seal(folder, sealed: dict) -> str | None:
    """What no longer matches ``sealed`` (:func:`seal`'s record) in ``folder``, or None when all of it does."""
    folder = Path(folder)
    for name, want in sealed.items():
        path = folder / name
        try:
            size = path.stat().st_size
        except OSError:
            return f"{path} is missing"
        if size != want.get("size"):
            return f"{path} is {size:,} bytes, {want.get('size', 0):,} when the run finished"
        if "sha256" in want and file_digest(path) != want["sha256"]:
            return f"{path} changed since the run finished"
    if METRICS in sealed:
        try:
            RunFolder(folder).read_metrics()
        except (OSError, ValueError) as e:
            return str(e)
    return None


class RunFolder:
    """One run's folder; every file of it is read and written through here."""

    def __init__(self, path):
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunFolder({str(self.path)!r})"

    def file(self, name: str) -> Path:
        return self.path / name

    @property
    def model(self) -> Path:
        return self.path / MODEL

    def has(self, name: str) -> bool:
        return (self.path / name).is_file()

    # config.json
    def write_config(self, record: RunRecord) -> Path:
        self.path.mkdir(parents=True, exist_ok=True)
        return write_json(self.path / CONFIG, record.to_dict())

    def read_config(self) -> RunRecord:
        return RunRecord.from_dict(read_json(self.path / CONFIG))

    # metrics.json
    def write_metrics(self, per_set: dict[str, dict], **shared) -> Path:
        """Write ``metrics.json``; a NaN or infinite value is refused (the run failed: its predictions are not
        finite), so a results folder never holds a metric that a table would show as a number."""
        doc = metrics_document(per_set, **shared)
        bad = non_finite(doc)
        if bad:
            raise ValueError(f"refusing to write {self.path / METRICS}: non-finite metrics ({', '.join(bad[:3])}); "
                             "the model's predictions or the test labels are not finite")
        return write_json(self.path / METRICS, doc)

    def read_metrics(self) -> dict:
        """``metrics.json``; unreadable JSON or a non-finite value is a ValueError naming the file."""
        path = self.path / METRICS
        try:
            doc = read_json(path)
        except ValueError as e:
            raise ValueError(f"{path} is not valid JSON ({e})") from None
        bad = non_finite(doc)
        if bad:
            raise ValueError(f"{path} holds non-finite metrics ({', '.join(bad[:3])})")
        return doc

    def metric_blocks(self, default_test_set=None) -> list[tuple[object, dict]]:
        return metric_blocks(self.read_metrics(), default_test_set)

    # predictions
    def write_predictions(self, frames: dict) -> list[Path]:
        """Write ``{test_set: predictions_frame}`` (file names from :func:`predictions_file`)."""
        paths = []
        for name, frame in frames.items():
            cols = [c for c in PREDICTION_COLUMNS if c in frame.columns]
            text = frame[cols].to_csv(index=False, float_format="%.6g", na_rep="", lineterminator="\n")
            paths.append(write_text(self.path / predictions_file(name, len(frames)), text))
        return paths

    def prediction_files(self, default_test_set=None) -> dict:
        """``{test_set: path}`` of the predictions files present."""
        out = {}
        for p in sorted(self.path.glob("predictions*.csv")):
            name = p.stem[len("predictions_"):] if p.stem.startswith("predictions_") else default_test_set
            out[name] = p
        return out

    def read_predictions(self, default_test_set=None) -> dict:
        """``{test_set: frame}`` with the error columns and ``mae_err`` (see :func:`with_errors`)."""
        import pandas as pd

        return {name: with_errors(pd.read_csv(p)) for name, p in self.prediction_files(default_test_set).items()}

    # training artefacts
    def losses(self):
        """Per-epoch mean losses (``history.json``) as a DataFrame indexed by epoch."""
        import pandas as pd

        history = read_json(self.path / HISTORY)["epochs"]
        return pd.DataFrame([{"epoch": h["epoch"], **h["loss"]} for h in history]).set_index("epoch")

    def divergence(self) -> str | None:
        """:func:`divergence` of this run's ``history.json`` (None when there is none)."""
        try:
            return divergence(read_json(self.path / HISTORY)["epochs"])
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def drop_checkpoint(self) -> None:
        """Remove ``checkpoint.pt`` (only needed to resume; ``model.pt`` holds the final weights)."""
        (self.path / CHECKPOINT).unlink(missing_ok=True)
