"""hpelib.spec.RunSpec: one typed run description, its dict form, defaults and checks."""
import pytest

from hpelib.data import DEFAULT_IMAGE_SIZE
from hpelib.engine import TrainConfig
from hpelib.models import ModelConfig
from hpelib.spec import KFold, RunSpec

SYN = {"name": "synthetic", "split": "train", "n": 16}
TEST = {"syn": {"name": "synthetic", "split": "test", "n": 8}}


def test_defaults_come_from_the_config_dataclasses():
    spec = RunSpec.from_dict({"train_data": SYN, "test_data": TEST})
    assert spec.model == ModelConfig() and spec.train == TrainConfig()
    assert spec.image_size == DEFAULT_IMAGE_SIZE and spec.label_fraction == 1.0 and spec.kfold is None
    assert spec.seed == spec.train.seed == 0


def test_dict_round_trip_keeps_every_setting():
    d = {"kind": "train", "model": {"backbone": "resnet18-narrow", "stem": "cifar",
                                    "ssl_tasks": {"jigsaw": {"weight": 0.5}}},
         "train": {"epochs": 3, "lr": 0.004, "seed": 2}, "train_data": SYN, "test_data": TEST, "image_size": 32,
         "label_fraction": 0.25, "kfold": {"k": 3, "fold": 1, "seed": 7},
         "labels": {"run": "auxiliary/jigsaw/lf0.25_s2", "scenario": "auxiliary"}, "eval_batch_size": 16}
    spec = RunSpec.from_dict(d)
    assert spec.kfold == KFold(3, 1, 7) and spec.seed == 2 and spec.model.stem == "cifar"
    again = RunSpec.from_dict(spec.to_dict())
    assert again == spec and again.to_dict() == spec.to_dict()
    assert spec.to_dict()["train"]["epochs"] == 3 and spec.to_dict()["labels"]["scenario"] == "auxiliary"


@pytest.mark.parametrize("change, message", [
    ({"epochz": 3}, r"run spec: unknown key\(s\) \['epochz'\]"),
    ({"train": {"epoch": 3}}, r"TrainConfig: unknown key\(s\) \['epoch'\]"),
    ({"model": {"head": "binned"}}, r"model config: unknown key\(s\) \['head'\]"),
    ({"labels": {"senario": "x"}}, r"run spec: labels: unknown key\(s\) \['senario'\]"),
    ({"kfold": {"k": 3, "fold": 3}}, r"kfold.fold must be an integer in \[0, 3\)"),
    ({"kfold": {"k": 3, "fold": 0, "sed": 1}}, r"kfold: unknown key\(s\) \['sed'\]"),
    ({"label_fraction": 1.5}, r"label_fraction must be a number in \(0, 1\]"),
    ({"image_size": "64px"}, "image_size: expected an integer, got '64px'"),
    ({"image_size": 4}, r"image_size must be an integer >= 8, got 4"),
    ({"image_size": 9, "model": {"ssl_tasks": {"jigsaw": {}}}}, "jigsaw: at image_size 9 the 3x3 tiles are 3 px"),
    ({"train": {"lr": "fast"}}, "lr: expected a number, got 'fast'"),
    ({"model": {"backbone": "resnet19"}}, r"unknown backbone 'resnet19'; valid names: \['resnet50'"),
    ({"kind": "finetune"}, "kind must be one of"),
    ({"train_data": {"root": "x"}}, "train_data must be a data spec with a 'name' key"),
    ({"test_data": {}}, "a train run needs test_data"),
    ({"kind": "pretrain"}, "a pretrain run needs model.pose_head = null"),
    ({"kind": "pretrain", "model": {"pose_head": None, "ssl_tasks": {"rotation": {}}}},
     "a pretrain run uses the images of train_data only"),
])
def test_bad_specs_name_the_setting(change, message):
    d = {"train_data": SYN, "test_data": TEST, **change}
    with pytest.raises(ValueError, match=message):
        RunSpec.from_dict(d)


def test_a_pretrain_spec_names_its_one_task():
    spec = RunSpec.from_dict({"kind": "pretrain", "train_data": SYN,
                              "model": {"pose_head": None, "ssl_tasks": {"simclr": {"temperature": 0.2}}}})
    assert spec.method == "simclr" and spec.model.task_kwargs("simclr") == {"temperature": 0.2}
    assert RunSpec.from_dict({"train_data": SYN, "test_data": TEST}).method is None


def test_yaml_ambiguous_values_are_coerced():
    """YAML reads 1e-3 as a string and users quote numbers: they mean numbers."""
    spec = RunSpec.from_dict({"train_data": SYN, "test_data": TEST, "image_size": "32", "label_fraction": "0.5",
                              "train": {"lr": "1e-3", "epochs": "3", "progress": "false"},
                              "model": {"pose_weight": "2", "ssl_tasks": {"jigsaw": {"weight": "0.5"}}}})
    assert spec.image_size == 32 and spec.label_fraction == 0.5
    assert spec.train.lr == 0.001 and spec.train.epochs == 3 and spec.train.progress is False
    assert spec.model.pose_weight == 2.0 and spec.model.ssl_tasks["jigsaw"]["weight"] == 0.5


def test_every_problem_is_reported_at_once():
    with pytest.raises(ValueError) as e:
        RunSpec.from_dict({"train_data": SYN, "test_data": TEST,
                           "train": {"epochs": "ten", "lr": -1, "batch_size": 0}})
    message = str(e.value)
    assert "epochs: expected an integer, got 'ten'" in message
    assert "lr must be a number > 0, got -1" in message and "batch_size must be an integer >= 1, got 0" in message
    with pytest.raises(ValueError) as e:
        RunSpec.from_dict({"train_data": {"root": "x"}, "test_data": TEST, "image_size": 4, "label_fraction": 2})
    message = str(e.value)
    assert "train_data must be a data spec" in message and "image_size must be" in message
    assert "label_fraction must be" in message
