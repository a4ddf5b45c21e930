"""hpelib.runs: the run folder's files, written and read back."""
from __future__ import annotations

import csv

import numpy as np
import pytest

from hpelib.io import read_json
from hpelib.metrics import angle_errors
from hpelib.runs import (PREDICTION_COLUMNS, RunFolder, RunRecord, init_label, method_label, metric_blocks,
                         metrics_document, predictions_frame, pretrain_run_id, run_id, unlearned_keys, with_errors)


def poses(n=6, unlabeled=(), seed=0):
    """``(names, pred, true)``: random poses, ``true`` NaN on the ``unlabeled`` rows."""
    rng = np.random.default_rng(seed)
    true = rng.uniform(-90, 90, (n, 3))
    pred = true + rng.normal(0, 5, (n, 3))
    true[list(unlabeled)] = np.nan
    return [f"img{i:03d}.jpg" for i in range(n)], pred, true


def test_write_predictions_round_trip(tmp_path):
    names, pred, true = poses(unlabeled=(1, 4))
    folder = RunFolder(tmp_path / "run")
    (path,) = folder.write_predictions({"aflw2000": predictions_frame(names, pred, true)})
    assert path == folder.file("predictions.csv")  # one test set: the plain file name

    with open(path) as f:
        rows = list(csv.DictReader(f))
    assert tuple(rows[0]) == PREDICTION_COLUMNS and [r["name"] for r in rows] == names
    assert rows[1]["yaw_true"] == rows[1]["yaw_err"] == rows[1]["geodesic_err"] == ""  # unlabeled
    assert rows[1]["yaw_pred"] != ""

    (name, back), = folder.read_predictions("aflw2000").items()
    assert name == "aflw2000" and list(back["name"]) == names
    np.testing.assert_allclose(back[["yaw_pred", "pitch_pred", "roll_pred"]].to_numpy(), pred, rtol=1e-5)
    np.testing.assert_allclose(back[["yaw_true", "pitch_true", "roll_true"]].to_numpy(), true, rtol=1e-5)
    errors = back[["yaw_err", "pitch_err", "roll_err"]].to_numpy()
    assert np.isnan(errors[[1, 4]]).all() and np.isnan(back["mae_err"][[1, 4]]).all()
    labeled = [0, 2, 3, 5]
    np.testing.assert_allclose(errors[labeled], angle_errors(pred[labeled], true[labeled]), atol=1e-4)
    assert back["mae_err"][0] == pytest.approx(errors[0].mean())


def test_write_predictions_of_several_test_sets(tmp_path):
    folder = RunFolder(tmp_path)
    frames = {name: predictions_frame(*poses(n, seed=n)) for name, n in (("biwi", 3), ("aflw2000", 5))}
    paths = folder.write_predictions(frames)
    assert sorted(p.name for p in paths) == ["predictions_aflw2000.csv", "predictions_biwi.csv"]
    back = folder.read_predictions()
    assert sorted(back) == ["aflw2000", "biwi"] and len(back["biwi"]) == 3 and len(back["aflw2000"]) == 5


def test_ids_and_labels():
    assert run_id("auxiliary", "jigsaw", 0.05, 2) == "auxiliary/jigsaw/lf0.05_s2"
    assert run_id("baseline", "none", 1.0, 0, fold=3) == "baseline/none/lf1_s0/.folds/f3"
    assert pretrain_run_id("rotation", 0) == "pretrain/rotation_s0"
    assert pretrain_run_id("rotation", 0, epochs=4) == "pretrain/rotation_e4_s0"
    assert method_label(None, []) == "none"
    assert method_label("rotation", {"simclr": 1, "jigsaw": 1}) == "rotation+jigsaw+simclr"  # aux sorted
    assert method_label("rotation", ["jigsaw"], pretrain_epochs=16) == "rotation-16ep+jigsaw"
    assert [init_label(i, None) for i in ("random", "imagenet", "/x/model.pt")] == ["random", "imagenet", "checkpoint"]
    assert init_label("/x/pretrain/rotation_s0/model.pt", "rotation") == "ssl"


def test_run_record_round_trip_and_tolerance(tmp_path):
    folder = RunFolder(tmp_path)
    record = RunRecord(run="a/b", scenario="combined", pretrain_method="rotation", aux_methods=["jigsaw"],
                       label_fraction=0.5, seed=1, test_set="syn", model_config={"backbone": "resnet18"},
                       extra={"n_train": 40, "spec": {"kind": "train"}})
    folder.write_config(record)
    back = folder.read_config()
    assert back == record and back.label == "rotation+jigsaw"
    assert read_json(tmp_path / "config.json")["n_train"] == 40  # extra keys are top-level in the file
    # a hand-written, older config: missing keys take the defaults, aux methods may be one "+" string
    old = RunRecord.from_dict({"scenario": "auxiliary", "aux_methods": "rotation+jigsaw", "label_fraction": None,
                               "notes": "by hand"})
    assert old.kind == "train" and old.label_fraction == 1.0 and old.label == "jigsaw+rotation"
    assert old.extra == {"notes": "by hand"}
    with pytest.raises(ValueError, match="JSON object"):
        RunRecord.from_dict(["not", "a", "dict"])


def test_metrics_document_one_and_several_test_sets(tmp_path):
    one = metrics_document({"syn": {"mae": 3.0, "n": 5}}, train_time_s=2.0)
    assert one == {"mae": 3.0, "n": 5, "train_time_s": 2.0}
    assert metric_blocks(one, "syn") == [("syn", one)]
    two = metrics_document({"a": {"mae": 1.0}, "b": {"mae": 2.0}}, train_time_s=4.0)
    assert two == {"per_test_set": {"a": {"mae": 1.0}, "b": {"mae": 2.0}}, "train_time_s": 4.0}
    assert metric_blocks(two) == [("a", {"mae": 1.0, "train_time_s": 4.0}), ("b", {"mae": 2.0, "train_time_s": 4.0})]
    assert metrics_document({}, loss=0.5) == {"loss": 0.5}  # pre-training: no test set
    # older form: every top-level value is a test set's block
    assert metric_blocks({"a": {"mae": 1.0}, "b": {"mae": 2.0}}) == [("a", {"mae": 1.0}), ("b", {"mae": 2.0})]
    folder = RunFolder(tmp_path)
    folder.write_metrics({"a": {"mae": 1.0}, "b": {"mae": 2.0}}, train_time_s=4.0)
    assert folder.read_metrics() == two


def test_with_errors_computes_missing_error_columns():
    frame = predictions_frame(["x", "y"], np.array([[179.0, 0, 0], [10, 20, 30]]),
                              np.array([[-179.0, 0, 0], [10, 20, 30]]))
    assert frame.loc[0, "yaw_err"] == pytest.approx(2.0)  # wrapped, not 358
    bare = frame[["name", "yaw_true", "pitch_true", "roll_true", "yaw_pred", "pitch_pred", "roll_pred"]]
    again = with_errors(bare)
    np.testing.assert_allclose(again["geodesic_err"], frame["geodesic_err"])
    assert again["mae_err"].tolist() == pytest.approx([2 / 3, 0.0])
    with pytest.raises(ValueError, match="yaw_pred"):
        with_errors(bare.drop(columns="yaw_pred"))


def test_unlearned_keys_apply_the_one_rule():
    block = {"yaw": 8.0, "pitch": 9.0, "roll": 3.0, "mae": 6.7, "constant_yaw": 20.0, "constant_pitch": 10.0,
             "constant_roll": 10.0, "constant_mae": 13.3}
    assert unlearned_keys(block) == ["pitch"]  # 9.0 >= 0.8 x 10.0; the others are clearly below
    assert unlearned_keys({"yaw": 8.0, "mae": 6.0}) == []  # no constant predictor's errors: not checked
    assert unlearned_keys({**block, "pitch": 7.9}) == []


def test_divergence_of_a_pretraining_loss(tmp_path):
    import json

    from hpelib.report.checks import pretraining_warnings, warnings_markdown
    from hpelib.runs import divergence

    epochs = lambda *losses: [{"epoch": i + 1, "loss": {"total": v}} for i, v in enumerate(losses)]  # noqa: E731
    assert divergence(epochs(1.4, 1.1, 0.9)) is None
    assert divergence(epochs(1.4)) is None  # one epoch: nothing to judge
    assert divergence(epochs(4.2, 9.0, 1.3e14)) == "its loss rose from 4.2 (epoch 1) to 1.3e+14 (epoch 3)"
    assert divergence(epochs(2.0, 2.5, 2.1)) == "its loss never fell below its first epoch's (2) in 3 epochs"
    assert divergence(epochs(2.0, 2.5)) is None  # two epochs may wobble
    for rid, losses in (("pretrain/rotation_s0", (1.4, 1.0, 0.8)), ("pretrain/simclr_s0", (5.0, 80.0, 900.0))):
        folder = tmp_path / rid
        folder.mkdir(parents=True)
        (folder / "config.json").write_text(json.dumps({"kind": "pretrain"}))
        (folder / "history.json").write_text(json.dumps({"epochs": epochs(*losses)}))
    found = pretraining_warnings(tmp_path)
    assert found == ["pretrain/simclr_s0: its loss rose from 5 (epoch 1) to 900 (epoch 3)"]
    assert pretraining_warnings(tmp_path, runs=["pretrain/rotation_s0"]) == []
    text = warnings_markdown({"left_out": [], "unlearned": [], "unchecked": [], "mixed_settings": [],
                              "diverged": found})
    assert "## SSL pre-trainings whose loss did not fall" in text and "- pretrain/simclr_s0: its loss rose" in text
