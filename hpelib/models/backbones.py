"""ResNet backbones: image batch ``[B, 3, H, W]`` -> global-average-pooled feature ``[B, feat_dim]``.

Every backbone is a constructor registered by name in :data:`BACKBONES`
(a :class:`hpelib.registry.Registry`): ``constructor(init, stem) -> nn.Module``
with an attribute ``feat_dim``, called by :func:`build_backbone` after it has
checked ``init`` and ``stem`` (:func:`check_backbone`). Names:

* ``resnet50`` (the paper's backbone, feat_dim 2048),
* ``resnet18`` (feat_dim 512),
* ``resnet18-narrow``: ResNet-18 with base width 32 instead of 64 (stage widths
  32/64/128/256, feat_dim 256, about a quarter of the parameters and FLOPs)
  for CPU runs and tests; built from torchvision's ``ResNet``/``BasicBlock``.

Every backbone is a torchvision ``ResNet`` whose ``fc`` is ``nn.Identity``, so
its state-dict keys are torchvision's (``conv1.weight``, ``layer1.0...``).

Stem (``stem``, :data:`STEMS`):

* ``"imagenet"``: torchvision's 7x7 stride-2 convolution + 3x3 stride-2 max-pool
  (input / 4 after the stem; the paper's ResNet50 at 224 px, 7x7 maps at the
  last stage);
* ``"cifar"``: a 3x3 stride-1 convolution and no max-pool, as the small-image
  ResNets of He et al. (CIFAR) and SimCLR's CIFAR variant. At 32-64 px it keeps
  the spatial resolution that the ImageNet stem throws away (a 32 px input
  leaves 4x4 maps at the last stage instead of 1x1), at 16x the compute of the
  ImageNet stem for the same input size. ImageNet weights do not fit it.

Initialisation (``init``; the built-in ones are :data:`BUILTIN_INITS`):

* ``"random"``: torchvision's (Kaiming-normal convolutions, unit BN);
* ``"imagenet"``: torchvision weights API, ``ResNet50_Weights.IMAGENET1K_V2``
  / ``ResNet18_Weights.IMAGENET1K_V1`` (downloaded once into the torch hub
  cache; offline this raises a ``RuntimeError`` saying where to put the file);
  only for the backbones in :data:`IMAGENET_WEIGHTS` (not ``resnet18-narrow``);
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

from hpelib.registry import Registry

from .files import plain_state_dict, read_checkpoint

__all__ = ["BACKBONES", "BUILTIN_INITS", "STEMS", "build_backbone", "check_backbone", "is_checkpoint_init",
           "NarrowResNet18", "load_backbone_checkpoint", "IMAGENET_WEIGHTS", "imagenet_weights_file"]

BACKBONES = Registry("backbone", supplied=("init", "stem"))
"""The backbone constructors by name; add one with ``@BACKBONES.register(name)`` (see the module doc)."""
IMAGENET_WEIGHTS = {"resnet50": ResNet50_Weights.IMAGENET1K_V2, "resnet18": ResNet18_Weights.IMAGENET1K_V1}
"""The backbones that ``init="imagenet"`` is available for, and their torchvision weights."""
STEMS = ("imagenet", "cifar")
BUILTIN_INITS = ("random", "imagenet")
"""The initialisations a backbone constructor handles; any other ``init`` is a checkpoint path."""


def is_checkpoint_init(init) -> bool:
    """Whether ``init`` names an hpelib checkpoint (to load after building) rather than a built-in init."""
    return init not in BUILTIN_INITS


def check_stem(stem: str, init: str) -> None:
    """``ValueError`` for an unknown stem, or ImageNet weights asked for with another stem."""
    if stem not in STEMS:
        raise ValueError(f"unknown stem {stem!r}; choices: {list(STEMS)}")
    if stem != "imagenet" and init == "imagenet":
        raise ValueError("init='imagenet' needs stem='imagenet' (the ImageNet weights are those of a 7x7 "
                         "stride-2 stem); use stem='imagenet' or init='random'")


def use_cifar_stem(net: ResNet) -> None:
    """Replace ``net``'s 7x7/2 conv + max-pool by a 3x3 stride-1 conv (same key ``conv1.weight``, no max-pool)."""
    width = net.conv1.out_channels
    net.conv1 = nn.Conv2d(3, width, kernel_size=3, stride=1, padding=1, bias=False)
    nn.init.kaiming_normal_(net.conv1.weight, mode="fan_out", nonlinearity="relu")
    net.maxpool = nn.Identity()


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


def imagenet_weights_file(name: str) -> Path:
    """Where torchvision keeps backbone ``name``'s ImageNet weights once downloaded (the torch hub cache)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(IMAGENET_WEIGHTS[name].url)


def _imagenet_state_dict(name: str) -> dict:
    weights = IMAGENET_WEIGHTS[name]
    hub = imagenet_weights_file(name).parent
    fname = os.path.basename(weights.url)
    try:
        return load_state_dict_from_url(weights.url, progress=False, check_hash=True)
    except Exception as err:  # URLError, socket errors, hash mismatch of a partial file ...
        raise RuntimeError(
            f"could not get the ImageNet weights of {name} ({weights}): {type(err).__name__}: {err}. "
            f"Without network access, download {weights.url} elsewhere and place it as {hub / fname} "
            f"(the torch hub cache dir; set TORCH_HOME to move it), or use init='random'."
        ) from err


def _resnet_backbone(name: str, net: ResNet, init: str, stem: str) -> ResNet:
    """``net`` (a fresh ``ResNet``) as the backbone ``name``: ImageNet weights if asked, ``stem``, no ``fc``."""
    if init == "imagenet":
        net.load_state_dict(_imagenet_state_dict(name))
    if stem == "cifar":
        use_cifar_stem(net)
    feat_dim = net.fc.in_features
    net.fc = nn.Identity()
    net.feat_dim = feat_dim
    return net


@BACKBONES.register("resnet50")
def resnet50_backbone(init: str = "random", stem: str = "imagenet") -> ResNet:
    """torchvision's ResNet-50, feat_dim 2048 (the paper's backbone)."""
    return _resnet_backbone("resnet50", resnet50(weights=None), init, stem)


@BACKBONES.register("resnet18")
def resnet18_backbone(init: str = "random", stem: str = "imagenet") -> ResNet:
    """torchvision's ResNet-18, feat_dim 512."""
    return _resnet_backbone("resnet18", resnet18(weights=None), init, stem)


@BACKBONES.register("resnet18-narrow")
def narrow_resnet18_backbone(init: str = "random", stem: str = "imagenet") -> ResNet:
    """:class:`NarrowResNet18`, feat_dim 256 (CPU runs and tests; random init only)."""
    return _resnet_backbone("resnet18-narrow", NarrowResNet18(), init, stem)


def check_backbone(name: str, init: str, stem: str) -> None:
    """``ValueError`` for an unknown backbone or stem, or an ``init``/``stem`` the backbone cannot have.

    ``init`` may be a checkpoint path here (it is checked when loaded).
    """
    BACKBONES.get(name)
    check_stem(stem, init)
    if init == "imagenet" and name not in IMAGENET_WEIGHTS:
        raise ValueError(f"init='imagenet' is not available for backbone {name!r} (no pretrained weights exist "
                         f"for it); use init='random', a checkpoint path, or a backbone of {list(IMAGENET_WEIGHTS)}")


def build_backbone(name: str, init: str = "random", stem: str = "imagenet") -> nn.Module:
    """A backbone with attribute ``feat_dim``; ``init`` is ``random``/``imagenet`` (checkpoints: see build_model)."""
    if is_checkpoint_init(init):
        raise ValueError(f"build_backbone: init must be one of {list(BUILTIN_INITS)}, got {init!r}")
    check_backbone(name, init, stem)
    return BACKBONES.build(name, init=init, stem=stem)


def load_backbone_checkpoint(backbone: nn.Module, path, backbone_name: str, stem: str = "imagenet") -> None:
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
    saved_stem = (ckpt.get("model_config") or {}).get("stem", "imagenet")
    if saved_stem != stem:
        raise ValueError(f"init checkpoint {path} was trained with stem {saved_stem!r}, but this model uses "
                         f"stem {stem!r}; set stem: {saved_stem!r} or use another checkpoint")
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
