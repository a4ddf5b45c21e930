"""ResNet backbones: image batch ``[B, 3, H, W]`` -> global-average-pooled feature ``[B, feat_dim]``.

Names (:data:`BACKBONES`):

* ``resnet50`` (the paper's backbone, feat_dim 2048),
* ``resnet18`` (feat_dim 512),
* ``resnet18-narrow``: ResNet-18 with base width 32 instead of 64 (stage widths
  32/64/128/256, feat_dim 256, about a quarter of the parameters and FLOPs)
  for CPU runs and tests; built from torchvision's ``ResNet``/``BasicBlock``.

Every backbone is a torchvision ``ResNet`` whose ``fc`` is ``nn.Identity``, so
its state-dict keys are torchvision's (``conv1.weight``, ``layer1.0...``).

Initialisation (``init``):

* ``"random"``: torchvision's (Kaiming-normal convolutions, unit BN);
* ``"imagenet"``: torchvision weights API, ``ResNet50_Weights.IMAGENET1K_V2``
  / ``ResNet18_Weights.IMAGENET1K_V1`` (downloaded once into the torch hub
  cache; offline this raises a ``RuntimeError`` saying where to put the file);
  not available for ``resnet18-narrow``;
* a path to an hpelib checkpoint (``torch.save``d dict with ``model_config``
  and ``model``): its ``backbone.*`` weights are loaded (``module.`` and
  ``_orig_mod.`` prefixes of DDP / ``torch.compile`` are stripped).
"""
from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn
from torch.hub import load_state_dict_from_url
from torchvision.models import ResNet18_Weights, ResNet50_Weights, resnet18, resnet50
from torchvision.models.resnet import BasicBlock, ResNet

from .files import plain_state_dict, read_checkpoint

__all__ = ["BACKBONES", "build_backbone", "NarrowResNet18", "load_backbone_checkpoint", "IMAGENET_WEIGHTS"]

IMAGENET_WEIGHTS = {"resnet50": ResNet50_Weights.IMAGENET1K_V2, "resnet18": ResNet18_Weights.IMAGENET1K_V1}
BACKBONES = ("resnet50", "resnet18", "resnet18-narrow")


class NarrowResNet18(ResNet):
    """ResNet-18 with stage widths ``width * (1, 2, 4, 8)`` (default 32: half of ResNet-18's)."""

    def __init__(self, width: int = 32):
        super().__init__(BasicBlock, [2, 2, 2, 2])
        self.inplanes, self.dilation = width, 1
        self.conv1 = nn.Conv2d(3, width, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = self._norm_layer(width)
        self.layer1 = self._make_layer(BasicBlock, width, 2)
        self.layer2 = self._make_layer(BasicBlock, width * 2, 2, stride=2)
        self.layer3 = self._make_layer(BasicBlock, width * 4, 2, stride=2)
        self.layer4 = self._make_layer(BasicBlock, width * 8, 2, stride=2)
        self.fc = nn.Linear(width * 8, 1000)
        for m in self.modules():  # torchvision's initialisation
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)


def _imagenet_state_dict(name: str) -> dict:
    weights = IMAGENET_WEIGHTS[name]
    hub = Path(torch.hub.get_dir()) / "checkpoints"
    fname = os.path.basename(weights.url)
    try:
        return load_state_dict_from_url(weights.url, progress=False, check_hash=True)
    except Exception as err:  # URLError, socket errors, hash mismatch of a partial file ...
        raise RuntimeError(
            f"could not get the ImageNet weights of {name} ({weights}): {type(err).__name__}: {err}. "
            f"Without network access, download {weights.url} elsewhere and place it as {hub / fname} "
            f"(the torch hub cache dir; set TORCH_HOME to move it), or use init='random'."
        ) from err


def build_backbone(name: str, init: str = "random") -> nn.Module:
    """A backbone with attribute ``feat_dim``; ``init`` is ``random``/``imagenet`` (checkpoints: see build_model)."""
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; choices: {list(BACKBONES)}")
    if init not in ("random", "imagenet"):
        raise ValueError(f"build_backbone: init must be 'random' or 'imagenet', got {init!r}")
    if name == "resnet18-narrow":
        if init == "imagenet":
            raise ValueError("init='imagenet' is not available for backbone 'resnet18-narrow' (no pretrained "
                             "weights exist for it); use init='random', a checkpoint path, or backbone 'resnet18'")
        net = NarrowResNet18()
    else:
        net = {"resnet50": resnet50, "resnet18": resnet18}[name](weights=None)
        if init == "imagenet":
            net.load_state_dict(_imagenet_state_dict(name))
    feat_dim = net.fc.in_features
    net.fc = nn.Identity()
    net.feat_dim = feat_dim
    return net


def load_backbone_checkpoint(backbone: nn.Module, path, backbone_name: str) -> None:
    """Copy the ``backbone.*`` weights of the hpelib checkpoint ``path`` into ``backbone``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"init checkpoint {path} does not exist; init must be 'random', 'imagenet' "
                                f"or the path of an hpelib checkpoint (e.g. <run>/model.pt)")
    ckpt = read_checkpoint(path, what="init checkpoint")
    saved = (ckpt.get("model_config") or {}).get("backbone")
    if saved is not None and saved != backbone_name:
        raise ValueError(f"init checkpoint {path} holds a {saved!r} backbone, but this model uses "
                         f"{backbone_name!r}; set backbone: {saved!r} or use another checkpoint")
    state = {}
    for key, value in plain_state_dict(ckpt["model"]).items():
        if key.startswith("backbone."):
            state[key[len("backbone."):]] = value
    if not state:
        raise ValueError(f"init checkpoint {path} has no 'backbone.*' weights in its 'model' state dict")
    try:
        backbone.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise ValueError(f"init checkpoint {path} does not fit backbone {backbone_name!r}: {err}") from err
