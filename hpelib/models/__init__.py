"""Models: backbones, pose heads and losses, the HMTL model.

```python
from hpelib.models import ModelConfig, build_model
model = build_model(ModelConfig(backbone="resnet18", init="random", pose_head="binned",
                                ssl_tasks={"rotation": {"weight": 1.0}}))
losses = model.losses(images, poses, generator=g)  # dict of 0-d tensors, "total" included
angles = model.predict(images)                     # FloatTensor[B, 3] (yaw, pitch, roll) degrees
```
"""
from __future__ import annotations

from pathlib import Path

import torch

from .backbones import BACKBONES, build_backbone, load_backbone_checkpoint
from .config import ModelConfig
from .heads import POSE_HEADS, build_pose_head, geodesic_loss
from .hmtl import HMTLModel

__all__ = ["ModelConfig", "build_model", "load_model", "HMTLModel", "BACKBONES", "POSE_HEADS",
           "build_backbone", "build_pose_head", "geodesic_loss", "load_backbone_checkpoint"]


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
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception:  # resumable checkpoints may hold non-tensor state
        ckpt = torch.load(path, map_location=map_location, weights_only=False)
    if not isinstance(ckpt, dict) or "model_config" not in ckpt or "model" not in ckpt:
        raise ValueError(f"{path} is not an hpelib checkpoint (a dict with 'model_config' and 'model')")
    cfg = ModelConfig.from_dict({**ckpt["model_config"], "init": "random"})
    model = HMTLModel(cfg)
    state = {}
    for k, v in ckpt["model"].items():
        for prefix in ("module.", "_orig_mod."):
            while k.startswith(prefix):
                k = k[len(prefix):]
        state[k] = v
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise ValueError(f"checkpoint {path} does not fit its own model_config: {err}") from err
    model.config = ModelConfig.from_dict(ckpt["model_config"])
    return model
