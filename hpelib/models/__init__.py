"""Models: backbones, pose heads and losses, the HMTL model.

```python
from hpelib.models import ModelConfig, build_model
model = build_model(ModelConfig(backbone="resnet18", init="random", pose_head="binned",
                                ssl_tasks={"rotation": {"weight": 1.0}}))
losses = model.losses(images, poses, generator=g)  # dict of 0-d tensors, "total" included
angles = model.predict(images)                     # FloatTensor[B, 3] (yaw, pitch, roll) degrees
```

The parts are registered by name (:class:`hpelib.registry.Registry`):
backbones in :data:`BACKBONES`, pose heads in :data:`POSE_HEADS`, SSL tasks
in :data:`hpelib.ssl.TASKS`; a registered part is available to
:class:`ModelConfig` and :func:`build_model` by its name.
"""
from __future__ import annotations

from pathlib import Path

from .backbones import BACKBONES, build_backbone, load_backbone_checkpoint
from .config import BUILTIN_INITS, ModelConfig, is_checkpoint_init
from .files import plain_state_dict, read_checkpoint
from .heads import POSE_HEADS, PoseHead, build_pose_head, geodesic_loss
from .hmtl import HMTLModel, backbone_gradient_norms
from .inputs import InputSpec, read_input_spec

__all__ = ["ModelConfig", "build_model", "load_model", "read_checkpoint", "HMTLModel", "BACKBONES", "POSE_HEADS",
           "BUILTIN_INITS", "PoseHead", "build_backbone", "build_pose_head", "geodesic_loss", "is_checkpoint_init",
           "load_backbone_checkpoint", "InputSpec", "read_input_spec", "load_pose_model", "NotAPoseModel",
           "backbone_gradient_norms"]


def build_model(config: ModelConfig | dict) -> HMTLModel:
    """Build the model of ``config`` (a :class:`ModelConfig` or a plain dict)."""
    if isinstance(config, dict):
        config = ModelConfig.from_dict(config)
    elif not isinstance(config, ModelConfig):
        raise ValueError(f"build_model needs a ModelConfig or a dict, got {type(config).__name__}")
    config.validate()
    return HMTLModel(config)


def load_model(path, map_location="cpu") -> HMTLModel:
    """Rebuild the full model stored in the hpelib checkpoint ``path`` (all its weights; ``init`` is ignored)."""
    path = Path(path)
    ckpt = read_checkpoint(path, map_location)
    cfg = ModelConfig.from_dict({**ckpt["model_config"], "init": "random"})
    model = HMTLModel(cfg)
    state = plain_state_dict(ckpt["model"])
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise ValueError(f"checkpoint {path} does not fit its own model_config: {err}") from err
    model.config = ModelConfig.from_dict(ckpt["model_config"])
    return model


class NotAPoseModel(ValueError):
    """A checkpoint that has no pose head (an SSL pre-training ``model.pt``)."""


def load_pose_model(checkpoint, map_location="cpu") -> tuple[Path, HMTLModel, InputSpec]:
    """``(file, model, input spec)`` of a head pose run's ``model.pt`` (or its run folder), for inference.

    Raises :class:`NotAPoseModel` for a model without a pose head, and the
    errors of :func:`read_checkpoint` for a missing or unreadable file.
    """
    from ..runs import MODEL

    path = Path(checkpoint)
    path = path / MODEL if path.is_dir() else path
    model = load_model(path, map_location)
    if model.pose_head is None:
        raise NotAPoseModel(f"{path} is not a pose model: {path.name} is an SSL pre-training checkpoint without a "
                            "pose head; use the model.pt of a head pose run (or fine-tune this one with a pose "
                            "head, model.init=<this file>)")
    return path, model, read_input_spec(path)
