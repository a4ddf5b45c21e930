"""hpelib.registry: the Registry class, check_keys, and plugging new parts into the public builders."""
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from torch import nn

from hpelib.data import DATASET_NAMES, DATASETS, build_dataset, dataset_options
from hpelib.data.base import ArraySource, FixedRegions, PoseDataset
from hpelib.engine.config import TrainConfig
from hpelib.models import (BACKBONES, BUILTIN_INITS, POSE_HEADS, ModelConfig, PoseHead, build_model,
                           build_pose_head, is_checkpoint_init, load_model)
from hpelib.registry import Registry, check_keys, signature_options
from hpelib.ssl import TASKS, SSLTask, task_options


# -- check_keys -------------------------------------------------------------------

def test_check_keys_names_the_place_the_bad_keys_and_the_valid_ones():
    assert check_keys({"lr": 1, "epochs": 2}, ["epochs", "lr"], "train") is None
    with pytest.raises(ValueError) as e:
        check_keys({"lr": 1, "epoch": 2, "bs": 3}, ["lr", "epochs", "batch_size"], "study.yaml: train")
    assert str(e.value) == ("study.yaml: train: unknown key(s) ['bs', 'epoch']; "
                            "valid keys: ['batch_size', 'epochs', 'lr']")
    with pytest.raises(ValueError, match=r"^model: expected a mapping, got list$"):
        check_keys(["lr"], ["lr"], "model")


def test_check_keys_raises_the_callers_error_class():
    class StudyError(ValueError):
        pass

    with pytest.raises(StudyError, match=r"kfold: unknown key\(s\) \['kk'\]; valid keys: \['k', 'seed'\]"):
        check_keys({"kk": 2}, ("seed", "k"), "kfold", error=StudyError)
    with pytest.raises(StudyError, match="expected a mapping, got NoneType"):
        check_keys(None, (), "kfold", StudyError)


def test_config_readers_use_check_keys():
    with pytest.raises(ValueError, match=r"TrainConfig: unknown key\(s\) \['epoch'\]; valid keys: .*'epochs'"):
        TrainConfig.from_dict({"epoch": 3})
    with pytest.raises(ValueError, match="TrainConfig: expected a mapping, got list"):
        TrainConfig.from_dict([("epochs", 3)])
    assert TrainConfig.from_dict(None) == TrainConfig()
    with pytest.raises(ValueError, match=r"model config: unknown key\(s\) \['head'\]; valid keys: .*'pose_head'"):
        ModelConfig.from_dict({"head": "binned"})
    with pytest.raises(ValueError, match="model config: expected a mapping, got str"):
        ModelConfig.from_dict("resnet18")


# -- Registry ------------------------------------------------------------------------

def _heads():
    reg = Registry("widget", supplied=("feat_dim",))

    @reg.register("plain")
    class Plain:
        def __init__(self, feat_dim, scale=1.0, *args, bias=True, **kwargs):
            self.feat_dim, self.scale, self.bias = feat_dim, scale, bias

    def other(feat_dim, depth=2):
        return ("other", feat_dim, depth)

    reg.add("other", other)
    return reg, Plain


def test_names_membership_and_lookup():
    reg, plain = _heads()
    assert reg.names() == ["plain", "other"] and list(reg) == ["plain", "other"] and len(reg) == 2
    assert "plain" in reg and "nope" not in reg and None not in reg and ["plain"] not in reg
    assert reg.get("plain") is plain and reg["plain"] is plain
    assert "widget" in repr(reg) and "other" in repr(reg)


def test_duplicate_and_bad_registrations_are_refused():
    reg, plain = _heads()
    with pytest.raises(ValueError, match="widget 'plain' is already registered"):
        reg.add("plain", lambda feat_dim: None)
    with pytest.raises(ValueError, match="non-empty string"):
        reg.add("", plain)
    with pytest.raises(ValueError, match=r"widget 'bad': its constructor must accept \['feat_dim'\].*missing"):
        reg.add("bad", lambda dim: None)
    assert reg.names() == ["plain", "other"]
    with pytest.raises(ValueError, match="backbone 'resnet18' is already registered"):
        BACKBONES.add("resnet18", lambda init, stem: None)


def test_unknown_name_names_the_kind_and_the_valid_names():
    reg, _ = _heads()
    with pytest.raises(ValueError, match=r"^unknown widget 'plian'; valid names: \['plain', 'other'\]$"):
        reg.get("plian")
    for call in (reg.options, reg.unregister, lambda n: reg.build(n, 4), lambda n: reg.check_options(n, {})):
        with pytest.raises(ValueError, match="unknown widget 'plian'"):
            call("plian")


def test_options_come_from_the_signature():
    reg, _ = _heads()
    # feat_dim is supplied by the builder; *args and **kwargs are not options
    assert reg.options("plain") == ["scale", "bias"]
    assert reg.options("other") == ["depth"]
    assert signature_options(lambda a, /, b, *, c=1, **kw: None) == ["b", "c"]
    assert task_options("simclr") == TASKS.options("simclr") and "temperature" in task_options("simclr")
    assert POSE_HEADS.options("binned") == ["alpha", "num_bins", "bin_width", "low"]
    assert POSE_HEADS.options("6d") == []


def test_build_checks_options_first():
    reg, plain = _heads()
    obj = reg.build("plain", 8, scale=2.0)
    assert isinstance(obj, plain) and (obj.feat_dim, obj.scale, obj.bias) == (8, 2.0, True)
    assert reg.build("other", feat_dim=3, depth=5) == ("other", 3, 5)  # supplied names may come as keywords
    with pytest.raises(ValueError) as e:
        reg.build("plain", 8, scael=2.0)
    assert str(e.value) == "widget 'plain': unknown option(s) ['scael']; valid options: ['bias', 'scale']"
    with pytest.raises(ValueError, match=r"^cfg: widget 'other': unknown option\(s\) \['x'\]; "
                                         r"valid options: \['depth', 'weight'\]$"):
        reg.check_options("other", {"x": 1, "weight": 2}, where="cfg", extra=["weight"])
    reg.check_options("other", {"depth": 1, "weight": 2}, extra=["weight"])


def test_registered_is_temporary_and_unregister_removes():
    reg, _ = _heads()
    with reg.registered("temp", lambda feat_dim: "temp") as constructor:
        assert reg.names() == ["plain", "other", "temp"] and reg.build("temp", 1) == "temp"
        assert constructor is reg.get("temp")
    assert "temp" not in reg
    with pytest.raises(RuntimeError):
        with reg.registered("temp", lambda feat_dim: None):
            raise RuntimeError("boom")
    assert "temp" not in reg
    reg.unregister("other")
    assert reg.names() == ["plain"]


def test_lazy_references_are_imported_on_first_use():
    reg = Registry("formatter", supplied=("text", "prefix"))
    reg.add("indent", "textwrap:indent")
    assert reg.names() == ["indent"]
    assert reg.get("indent") is textwrap.indent
    assert reg.options("indent") == ["predicate"]
    assert reg.build("indent", "a", "> ") == "> a"
    reg.add("missing", "textwrap:no_such_function")
    with pytest.raises(AttributeError):
        reg.get("missing")
    # the built-in data set loaders of the real formats are references: importing hpelib.data loads none
    code = ("import sys, hpelib.data; "
            "assert not {'scipy', 'hpelib.data.mat_sets', 'hpelib.data.biwi', 'hpelib.data.folder', "
            "'hpelib.data.synthetic'} & set(sys.modules), sorted(m for m in sys.modules if 'hpelib.data' in m)")
    subprocess.run([sys.executable, "-c", code], check=True)


# -- the four kinds of parts ------------------------------------------------------------

def test_builtin_parts_are_registered():
    assert list(BACKBONES) == ["resnet50", "resnet18", "resnet18-narrow"]
    assert list(POSE_HEADS) == ["binned", "regression", "6d"]
    assert all(issubclass(POSE_HEADS[name], PoseHead) for name in POSE_HEADS)
    assert sorted(TASKS) == ["barlow", "jigsaw", "jigsaw_perm", "rotation", "simclr"]
    assert all(issubclass(TASKS[name], SSLTask) for name in TASKS)
    assert list(DATASET_NAMES) == ["300w_lp", "aflw2000", "biwi", "folder", "synthetic"]
    assert BUILTIN_INITS == ("random", "imagenet")
    assert not is_checkpoint_init("random") and not is_checkpoint_init("imagenet")
    assert is_checkpoint_init("runs/pre/model.pt")


def test_pose_head_options_are_checked():
    with pytest.raises(ValueError, match=r"pose head 'binned': unknown option\(s\) \['bins'\]; valid options: "
                                         r"\['alpha', 'bin_width', 'low', 'num_bins'\]"):
        build_pose_head("binned", 8, bins=3)
    with pytest.raises(ValueError, match=r"pose_options: pose head 'regression': unknown option\(s\)"):
        ModelConfig(backbone="resnet18-narrow", pose_head="regression", pose_options={"los": "l1"})


# The options each data set accepted before the registry (hand-kept lists then): they must not change.
DATASET_OPTIONS_BEFORE = {
    "300w_lp": ["cache_resolution", "color_jitter", "crop_fraction", "drop_invisible_landmarks", "eval_k", "flip",
                "k_range", "max_angle", "subsets"],
    "aflw2000": ["cache_resolution", "color_jitter", "crop_fraction", "drop_invisible_landmarks", "flip", "k",
                 "k_range", "max_angle"],  # k_range: the random training box, added for k-fold training
    "biwi": ["box_mm", "cache_resolution", "color_jitter", "crop_fraction", "flip", "format", "split_seed",
             "train_fraction"],
    "folder": ["cache_resolution", "color_jitter", "crop_fraction", "extensions", "flip"],
    "synthetic": ["cache_resolution", "color_jitter", "crop_fraction", "data_seed", "flip", "n"],
}


def test_dataset_options_are_those_of_before():
    assert {name: dataset_options(name) for name in DATASETS} == DATASET_OPTIONS_BEFORE
    with pytest.raises(ValueError, match=r"^unknown data set 'aflw3000'; valid names: \['300w_lp', 'aflw2000'"):
        build_dataset("aflw3000")
    with pytest.raises(ValueError, match=r"data set 'folder': unknown option\(s\) \['k'\]; valid options: "
                                         r"\['cache_resolution', 'color_jitter', 'crop_fraction', 'extensions', 'flip'\]"):
        build_dataset("folder", root=".", k=0.2)


# -- new parts, registered for one test each ----------------------------------------------

def tiny_backbone(init="random", stem="imagenet"):
    """A 4-channel conv + pooling: the smallest backbone with the contract (``feat_dim``, [B, feat_dim])."""
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    net.feat_dim = 4
    return net


class MeanHead(PoseHead):
    """Regresses the angles linearly; the loss is the mean absolute error times ``gain``."""

    def __init__(self, feat_dim, gain=1.0):
        super().__init__(feat_dim)
        self.gain = float(gain)
        self.fc = nn.Linear(feat_dim, 3)

    def forward(self, features):
        return self.fc(features)

    def loss(self, output, poses):
        return self.gain * (output - poses).abs().mean()

    def predict(self, output):
        return output


class EnergyTask(SSLTask):
    """Views are the images themselves; the loss is ``scale`` times the mean squared feature."""

    name = "energy"

    def __init__(self, feat_dim, scale=1.0):
        super().__init__(feat_dim)
        self.scale = float(scale)
        self.proj = nn.Linear(feat_dim, 2)

    def make_views(self, images, generator=None):
        return images, None

    def loss(self, features, targets):
        return self.scale * self.proj(features).pow(2).mean()


@pytest.fixture
def tiny_parts():
    with BACKBONES.registered("tiny", tiny_backbone), POSE_HEADS.registered("mean", MeanHead), \
            TASKS.registered("energy", EnergyTask):
        yield
    assert "tiny" not in BACKBONES and "mean" not in POSE_HEADS and "energy" not in TASKS


def test_new_backbone_head_and_task_build_through_build_model(tiny_parts, tmp_path):
    cfg = ModelConfig(backbone="tiny", init="random", pose_head="mean", pose_options={"gain": 2.0},
                      ssl_tasks={"energy": {"weight": 0.5, "scale": 3.0}})
    torch.manual_seed(0)
    model = build_model(cfg)
    assert isinstance(model.pose_head, MeanHead) and model.pose_head.gain == 2.0
    assert isinstance(model.ssl["energy"], EnergyTask) and model.ssl["energy"].scale == 3.0
    images, poses = torch.randn(3, 3, 16, 16), torch.zeros(3, 3)
    losses = model.losses(images, poses)
    assert set(losses) == {"pose", "energy", "total"}
    torch.testing.assert_close(losses["total"], losses["pose"] + 0.5 * losses["energy"])
    losses["total"].backward()
    assert model.predict(images).shape == (3, 3)
    # the model saves and loads by the registered names
    path = tmp_path / "tiny.pt"
    torch.save({"model_config": cfg.to_dict(), "model": model.state_dict()}, path)
    assert torch.equal(load_model(path).predict(images), model.predict(images))
    # a new part gets the same checks as the built-in ones
    with pytest.raises(ValueError, match=r"pose head 'mean': unknown option\(s\) \['gian'\]"):
        build_model({**cfg.to_dict(), "pose_options": {"gian": 1.0}})
    with pytest.raises(ValueError, match=r"SSL task 'energy': unknown option\(s\) \['scal'\]"):
        build_model({**cfg.to_dict(), "ssl_tasks": {"energy": {"scal": 1.0}}})
    with pytest.raises(ValueError, match="init='imagenet' is not available for backbone 'tiny'"):
        build_model({**cfg.to_dict(), "init": "imagenet"})


def load_tiny(root, preset, *, split="all", seed=0, cache_dir=None, cache_resolution=None, count=4):
    """``count`` grey images with poses (i, -i, 0), standing for a new data format under ``root``."""
    images = np.full((count, 20, 20, 3), 128, dtype=np.uint8)
    poses = np.array([[i, -i, 0] for i in range(count)], dtype=np.float32)
    return PoseDataset(load=ArraySource(images), names=[f"{split}:{i}" for i in range(count)], poses=poses,
                       regions=FixedRegions(None), preset=preset, seed=seed, cache_dir=cache_dir,
                       cache_resolution=cache_resolution, dataset_id=f"tiny:{root}")


@pytest.fixture
def tiny_dataset():
    with DATASETS.registered("tiny", load_tiny):
        yield
    assert "tiny" not in DATASETS


def test_new_dataset_builds_through_build_dataset(tiny_dataset, tmp_path):
    assert "tiny" in DATASET_NAMES
    assert dataset_options("tiny") == ["cache_resolution", "color_jitter", "count", "crop_fraction", "flip"]
    ds = build_dataset("tiny", root=tmp_path, split="test", image_size=16, train=False, count=3)
    assert len(ds) == 3 and ds.names[0] == "test:0" and ds.image_size == 16
    image, pose = ds[2]
    assert image.shape == (3, 16, 16) and pose.tolist() == [2.0, -2.0, 0.0]
    assert len(build_dataset("tiny", root=tmp_path, count=4, label_fraction=0.5, flip=False)) == 2
    with pytest.raises(ValueError, match=r"data set 'tiny': unknown option\(s\) \['n'\]"):
        build_dataset("tiny", root=tmp_path, n=3)
    with pytest.raises(ValueError, match="data set 'tiny' needs root="):
        build_dataset("tiny")


def test_the_plug_in_examples_of_the_design_doc_work(tmp_path):
    """docs/DESIGN.md shows one registered constructor per kind of part; run them and build a model."""
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "docs" / "DESIGN.md").read_text()
    section = text[text.index("## Plug-in parts"):]
    code = section[section.index("```python") + len("```python"):section.index("```\n", section.index("```python") + 9)]
    try:
        exec(compile(code, "docs/DESIGN.md", "exec"), {})
        model = build_model(ModelConfig(backbone="tiny-cnn", pose_head="direct", ssl_tasks={"energy": {"weight": 0.5}}))
        losses = model.losses(torch.randn(4, 3, 32, 32), torch.zeros(4, 3), torch.Generator().manual_seed(0))
        assert set(losses) >= {"total", "pose", "energy"} and torch.isfinite(losses["total"])
        assert model.predict(torch.randn(2, 3, 32, 32)).shape == (2, 3)
        assert "npy" in DATASETS and "scale" in POSE_HEADS.options("direct")
    finally:
        for registry, name in ((BACKBONES, "tiny-cnn"), (POSE_HEADS, "direct"), (TASKS, "energy"),
                               (DATASETS, "npy")):
            if name in registry:
                registry.unregister(name)
