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
   (``make_views``) and they go through the backbone in a pass of their own,
   one pass per task: each task's views are normalised with their own
   BatchNorm batch statistics, as when the task is trained alone, on any
   device. (One concatenated pass of all tasks' views was 0.66x as fast on a
   CPU for five tasks, docs/ENGINE.md.) The pose head never sees rotated,
   shuffled or augmented views.

   **BatchNorm statistics.** When the model has a pose head, the SSL pass
   normalises with its own batch statistics but does **not** update the
   backbone's running mean/variance (:func:`batch_statistics_only`): the
   running statistics, which evaluation uses, come from the clean pose
   batches only, i.e. from inputs like the test images. An SSL weight of 0
   therefore gives exactly the pose-only model (weights, running statistics
   and predictions; tested bit for bit). A model without pose head (SSL
   pre-training) lets its views update them: they are its only inputs, and
   fine-tuning re-estimates them on pose batches (momentum 0.1, i.e. within
   some tens of steps).
3. ``total = pose_weight * pose + sum_i weight_i * ssl_i``. Tasks with weight
   0 are still computed (logged, no gradient).

The returned dict holds 0-d float tensors: ``"pose"`` (when the model has a
pose head), one entry per task name (unweighted), ``"total"``. Call
``.item()``/``.detach()`` on them for logging.

State-dict layout: ``backbone.*`` (torchvision ResNet keys), ``pose_head.*``,
``ssl.<task>.*``.
"""
from __future__ import annotations

from contextlib import contextmanager, nullcontext

import torch
from torch import nn

from hpelib.ssl import build_task
from hpelib.ssl.base import match_memory_format

from .backbones import build_backbone, is_checkpoint_init, load_backbone_checkpoint
from .config import ModelConfig
from .heads import build_pose_head

__all__ = ["HMTLModel", "batch_statistics_only", "backbone_gradient_norms"]


@contextmanager
def batch_statistics_only(module: nn.Module):
    """Inside the block, the BatchNorm layers of ``module`` that are training normalise with the batch's
    statistics without updating their running buffers (nor ``num_batches_tracked``); layers in eval mode are
    unchanged (they use their running statistics either way)."""
    layers = [m for m in module.modules()
              if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training and m.track_running_stats]
    for m in layers:
        m.track_running_stats = False
    try:
        yield
    finally:
        for m in layers:
            m.track_running_stats = True


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
            feats = self._ssl_features([v for v, _ in made], images)
            for (name, task), f, (_, targets) in zip(self.ssl.items(), feats, made):
                out[name] = task.loss(f, targets).float()
                term = self.ssl_weights[name] * out[name]
                total = term if total is None else total + term
        out["total"] = total
        return out

    def _ssl_features(self, views: list, images: torch.Tensor) -> list:
        """Backbone features of each task's views, one pass per task; with a pose head, the views leave the
        running BatchNorm statistics alone (module doc)."""
        keep_stats = batch_statistics_only(self.backbone) if self.pose_head is not None else nullcontext()
        with keep_stats:
            return [self.backbone(match_memory_format(v, images)) for v in views]


def backbone_gradient_norms(model: HMTLModel, images: torch.Tensor, poses: torch.Tensor | None = None,
                            generator: torch.Generator | None = None) -> dict:
    """How hard each loss pulls on the shared backbone: ``{component: L2 norm of d loss / d backbone}``.

    One :meth:`HMTLModel.losses` call; the gradient of each **unweighted**
    component (``"pose"`` and every task, not ``"total"``) with respect to all
    backbone parameters, as one vector norm. The ratio ``norms[task] /
    norms["pose"]`` times the task's weight is the auxiliary task's pull
    relative to the pose loss (docs/STUDY.md, "Loss scales"). Gradients of the
    model's parameters (``.grad``) are left untouched.
    """
    out = model.losses(images, poses, generator)
    params = [p for p in model.backbone.parameters() if p.requires_grad]
    norms = {}
    for name, loss in out.items():
        if name == "total" or not loss.requires_grad:
            continue
        grads = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
        norms[name] = float(torch.sqrt(sum((g.float() ** 2).sum() for g in grads if g is not None)))
    return norms
