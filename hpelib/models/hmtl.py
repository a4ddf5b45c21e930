"""The HMTL model: one shared backbone, an optional pose head, auxiliary SSL heads.

``losses(images, poses, generator)``:

1. **Pose loss** on the clean batch: only the samples whose pose is finite go
   through the backbone for it (NaN poses mark unlabeled samples), in their own
   forward pass, so neither the unlabeled samples nor the SSL views change the
   pose loss (not even through BatchNorm batch statistics). Without labelled
   samples the pose loss is a zero that stays connected to the pose head's
   parameters (their gradients are 0), so ``total.backward()`` always works and
   every parameter takes part in the graph (DDP-friendly).
2. **SSL losses**: every task makes its views from the whole batch
   (``make_views``); when all views have the same shape they go through the
   backbone in one concatenated forward pass, otherwise one pass per task; each
   task's loss is computed on the features of its own views only. The pose
   head never sees rotated, shuffled or augmented views.
3. ``total = pose_weight * pose + sum_i weight_i * ssl_i``. Tasks with weight
   0 are still computed (logged, no gradient).

The returned dict holds 0-d float tensors: ``"pose"`` (when the model has a
pose head), one entry per task name (unweighted), ``"total"``. Call
``.item()``/``.detach()`` on them for logging.

State-dict layout: ``backbone.*`` (torchvision ResNet keys), ``pose_head.*``,
``ssl.<task>.*``.
"""
from __future__ import annotations

import torch
from torch import nn

from hpelib.ssl import build_task
from hpelib.ssl.base import match_memory_format

from .backbones import build_backbone, is_checkpoint_init, load_backbone_checkpoint
from .config import ModelConfig
from .heads import build_pose_head

__all__ = ["HMTLModel"]


class HMTLModel(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        from_checkpoint = is_checkpoint_init(config.init)
        self.backbone = build_backbone(config.backbone, "random" if from_checkpoint else config.init, config.stem)
        if from_checkpoint:
            load_backbone_checkpoint(self.backbone, config.init, config.backbone, config.stem)
        self.feat_dim = self.backbone.feat_dim
        self.pose_head = (build_pose_head(config.pose_head, self.feat_dim, **config.pose_options)
                          if config.pose_head is not None else None)
        self.ssl = nn.ModuleDict({name: build_task(name, self.feat_dim, **config.task_kwargs(name))
                                  for name in config.ssl_tasks})
        self.ssl_weights = config.task_weights()
        self.pose_weight = float(config.pose_weight)

    # -- inference ---------------------------------------------------------
    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Backbone features ``[B, feat_dim]``."""
        return self.backbone(images)

    def pose_angles(self, images: torch.Tensor) -> torch.Tensor:
        """Differentiable ``[B, 3]`` (yaw, pitch, roll) degrees."""
        if self.pose_head is None:
            raise RuntimeError("this model has no pose head (pose_head=None, an SSL pre-training model); "
                               "fine-tune it with a pose head (init=<its checkpoint>) to predict poses")
        return self.pose_head.predict(self.pose_head(self.backbone(images)))

    @torch.no_grad()
    def predict(self, images: torch.Tensor) -> torch.Tensor:
        """``FloatTensor[B, 3]`` (yaw, pitch, roll) degrees, without gradients (mode left as set by the caller)."""
        return self.pose_angles(images).float()

    def forward(self, images: torch.Tensor, poses: torch.Tensor | None = None,
                generator: torch.Generator | None = None):
        """``model(images)`` -> angles (differentiable); ``model(images, poses, generator)`` -> :meth:`losses`.

        Calling the module (rather than ``losses``) is what DistributedDataParallel needs.
        """
        if poses is None and generator is None:
            return self.pose_angles(images)
        return self.losses(images, poses, generator)

    # -- training ----------------------------------------------------------
    def _pose_loss(self, images: torch.Tensor, poses: torch.Tensor | None) -> torch.Tensor:
        head = self.pose_head
        if poses is not None:
            if poses.dim() != 2 or poses.shape[1] != 3 or poses.shape[0] != images.shape[0]:
                raise ValueError(f"poses must have shape [{images.shape[0]}, 3], got {tuple(poses.shape)}")
            labelled = torch.isfinite(poses).all(1)
            if bool(labelled.any()):
                idx = labelled.nonzero(as_tuple=True)[0]
                x = match_memory_format(images[idx], images)
                y = poses[idx].to(images.device, torch.float32)
                return head.loss(head(self.backbone(x)), y).float()
        # no labelled sample: a zero that keeps the pose head in the graph
        return sum(p.sum() for p in head.parameters()).float() * 0.0

    def losses(self, images: torch.Tensor, poses: torch.Tensor | None = None,
               generator: torch.Generator | None = None) -> dict:
        """Loss components and ``"total"`` (see the module doc); ``poses`` may be None or NaN for unlabeled data."""
        out: dict[str, torch.Tensor] = {}
        total = None
        if self.pose_head is not None:
            out["pose"] = self._pose_loss(images, poses)
            total = self.pose_weight * out["pose"]
        if len(self.ssl):
            made = [task.make_views(images, generator) for task in self.ssl.values()]
            views = [v for v, _ in made]
            if all(v.shape[1:] == views[0].shape[1:] for v in views):
                sizes = [v.shape[0] for v in views]
                feats = self.backbone(match_memory_format(torch.cat(views, 0), images)).split(sizes, 0)
            else:
                feats = [self.backbone(v) for v in views]
            for (name, task), f, (_, targets) in zip(self.ssl.items(), feats, made):
                out[name] = task.loss(f, targets).float()
                term = self.ssl_weights[name] * out[name]
                total = term if total is None else total + term
        out["total"] = total
        return out
