"""The experiment steps the notebooks call, on tiny synthetic data."""
from pathlib import Path

import numpy as np
import pytest

from hpelib import experiment as ex
from hpelib.io import read_json
from hpelib.report import CONSTANT_KEYS, collect
from hpelib.spec import RunSpec

TINY_TRAIN = {"epochs": 1, "batch_size": 16, "lr": 1e-3, "max_steps_per_epoch": 2, "progress": False}


def tiny_spec(train_data, test_data=None, **over):
    """A RunSpec of a few optimizer steps of the CPU backbone at 32 px."""
    model = {"backbone": "resnet18-narrow", **over.pop("model", {})}
    return RunSpec.from_dict({"model": model, "train": {**TINY_TRAIN, **over.pop("train", {})},
                              "train_data": train_data, "test_data": test_data or {}, "image_size": 32, **over})


@pytest.fixture(scope="module")
def specs(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("synthetic"))
    return ({"name": "synthetic", "root": root, "split": "train", "n": 48},
            {"name": "synthetic", "root": root, "split": "test", "n": 16})


def test_dataset_from_spec_rejects_specs_without_name():
    with pytest.raises(ValueError, match="'name'"):
        ex.dataset_from_spec({"root": "x"}, train=True)


def test_kfold_tests_every_image_once_and_label_fraction_subsets(specs):
    train_spec, _ = specs
    tested = []
    for fold in range(3):
        tr, te = ex.hpe_datasets(tiny_spec(train_spec, {"same": train_spec}, kfold={"k": 3, "fold": fold}))
        assert not set(tr.names) & set(te["same"].names)
        tested += list(te["same"].names)
    assert sorted(tested) == sorted(ex.dataset_from_spec(train_spec, train=False, image_size=32).names)
    tr, _ = ex.hpe_datasets(tiny_spec(train_spec, {"same": train_spec}, label_fraction=0.25))
    assert len(tr) == 12
    with pytest.raises(ValueError, match="kfold"):
        ex.hpe_datasets(tiny_spec(train_spec, {"other": specs[1]}, kfold={"k": 3, "fold": 0}))


def test_validation_folds_never_touch_the_outer_test_fold(specs):
    """Choosing a recipe on kfold.validation: train and validation images all come from the training folds."""
    train_spec, _ = specs
    for fold in range(3):
        kfold = {"k": 3, "fold": fold, "seed": 5}
        _, outer_test = ex.hpe_datasets(tiny_spec(train_spec, {"same": train_spec}, kfold=kfold))
        tr, val = ex.hpe_datasets(tiny_spec(train_spec, {"same": train_spec}, kfold={**kfold, "validation": 3}))
        held_out = set(outer_test["same"].names)
        assert held_out and not held_out & set(tr.names) and not held_out & set(val["same"].names)
        assert not set(tr.names) & set(val["same"].names)
        assert len(tr) + len(val["same"]) == 48 - len(held_out)
        assert len(val["same"]) == pytest.approx((48 - len(held_out)) / 3, abs=1)


def test_constant_prediction_metrics_predicts_the_training_median():
    """The median is the constant that minimises the absolute error: the stricter floor."""
    train = np.array([[10.0, 0.0, 0.0], [12.0, 0.0, 0.0], [60.0, 9.0, 0.0], [np.nan] * 3])
    test = np.array([[20.0, 5.0, 0.0], [0.0, 0.0, 0.0]])
    m = ex.constant_prediction_metrics(train, test)
    assert m["yaw"] == pytest.approx(10.0) and m["pitch"] == pytest.approx(2.5) and m["n"] == 2


def test_pretraining_then_fine_tuning_writes_what_the_report_reads(specs, tmp_path):
    train_spec, test_spec = specs
    pre_spec = tiny_spec(train_spec, kind="pretrain",
                         model={"stem": "cifar", "pose_head": None, "ssl_tasks": {"rotation": {}}})
    pre = ex.run_pretraining(pre_spec, tmp_path / "pre")
    assert pre["config"].kind == "pretrain" and (tmp_path / "pre" / "model.pt").is_file()
    assert read_json(tmp_path / "pre" / "config.json")["model_config"]["stem"] == "cifar"
    assert not (tmp_path / "pre" / "checkpoint.pt").exists()
    with pytest.raises(ValueError, match="kind 'train'"):
        ex.run_hpe(pre_spec, tmp_path / "wrong")
    spec = tiny_spec(train_spec, {"syn": test_spec}, label_fraction=0.5,
                     model={"stem": "cifar", "init": str(tmp_path / "pre" / "model.pt"),
                            "ssl_tasks": {"jigsaw": {"weight": 0.5}}},
                     labels={"scenario": "combined", "pretrain_method": "rotation"})
    run = ex.run_hpe(spec, tmp_path / "runs" / "combined")
    assert run["config"].method == "rotation+jigsaw" and run["config"].init == "ssl"
    assert run["config"].pretrain_epochs == TINY_TRAIN["epochs"]  # the pre-training budget, for the report
    saved = read_json(tmp_path / "runs" / "combined" / "config.json")
    assert RunSpec.from_dict(saved["spec"]) == spec  # the run records its whole spec
    metrics = read_json(tmp_path / "runs" / "combined" / "metrics.json")
    assert metrics["n"] == 16
    for angle in ("yaw", "pitch", "roll", "mae"):  # the constant predictor, for the unlearned-run check
        assert metrics[f"constant_{angle}"] == pytest.approx(run["constant"]["syn"][angle])
    assert set(CONSTANT_KEYS) <= set(metrics)  # the names the report and the k-fold pooling read
    df = collect(tmp_path / "runs")
    assert len(df) == 1 and df.loc[0, "scenario"] == "combined" and df.loc[0, "label_fraction"] == 0.5
    assert df.loc[0, "mae"] == pytest.approx(metrics["mae"]) and df.loc[0, "pretrain_epochs"] == TINY_TRAIN["epochs"]


def test_several_test_sets_get_one_block_and_prediction_file_each(specs, tmp_path):
    train_spec, test_spec = specs
    run = ex.run_hpe(tiny_spec(train_spec, {"a": test_spec, "b": dict(test_spec, n=8)}), tmp_path)
    assert set(run["metrics"]["per_test_set"]) == {"a", "b"}
    assert run["metrics"]["per_test_set"]["b"]["n"] == 8
    assert (tmp_path / "predictions_a.csv").is_file() and (tmp_path / "predictions_b.csv").is_file()


def test_demo_results_feed_the_report(tmp_path):
    root = ex.demo_results(tmp_path, steps=1)
    df = collect(root)
    assert len(df) == 8
    assert set(df["scenario"]) == {"baseline", "auxiliary"} and set(df["label_fraction"]) == {0.5, 1.0}


def test_demo_model_records_its_image_size(tmp_path):
    ckpt = ex.demo_model(tmp_path / "demo", image_size=24, steps=1)
    assert ckpt.is_file() and ex.training_image_size(ckpt) == 24 == ex.training_image_size(ckpt.parent)
    with pytest.raises(ValueError, match="config.json"):
        ex.training_image_size(tmp_path / "nowhere" / "model.pt")


def test_a_diverged_run_is_marked_unlearned_in_its_metrics_and_the_report(specs, tmp_path):
    """lr 1000 trains without NaN but learns nothing: metrics.json and the report say so."""
    train_spec, test_spec = specs
    spec = tiny_spec(train_spec, {"syn": test_spec}, train={"lr": 1000.0, "max_steps_per_epoch": 3})
    run = ex.run_hpe(spec, tmp_path / "diverged")
    block = run["metrics"]
    assert block["unlearned"], block  # e.g. ["yaw", "pitch", "roll", "mae"]
    assert set(block["unlearned"]) <= {"yaw", "pitch", "roll", "mae"}
    for key in block["unlearned"]:
        assert block[key] >= 0.8 * block[f"constant_{key}"]
    assert bool(collect(tmp_path).loc[0, "unlearned"])


def test_tested_pictures_are_the_files_of_the_runs_test_fold(tmp_path):
    import json

    import pandas as pd

    run = tmp_path / "pretrain/rotation-4ep/lf1_s0/.folds/f0"
    run.mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({
        "kind": "train", "test_set": "aflw2000",
        "test_data": {"aflw2000": {"name": "aflw2000", "root": "/data/AFLW2000"}}}))
    pd.DataFrame({"name": ["image00023.jpg", "image00051.jpg", "image00007.jpg"],
                  **{c: [0.0] * 3 for c in ("yaw_true", "pitch_true", "roll_true", "yaw_pred", "pitch_pred",
                                            "roll_pred")}}).to_csv(run / "predictions.csv", index=False)
    assert ex.tested_pictures(run, k=2) == [Path("/data/AFLW2000/image00023.jpg"),
                                            Path("/data/AFLW2000/image00051.jpg")]
    assert len(ex.tested_pictures(run)) == 3
    (run / "predictions.csv").unlink()
    with pytest.raises(FileNotFoundError, match="no predictions"):
        ex.tested_pictures(run)
