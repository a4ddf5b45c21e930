"""Training engine: ``pretrain()``, ``train()``, ``evaluate()`` with checkpoints, resume and DDP.

See docs/ENGINE.md for how to run, resume and launch with ``torchrun``.
"""
from .checkpoint import load_checkpoint
from .config import TrainConfig
from .evaluate import Evaluation, evaluate
from .loop import TrainingStopped, pretrain, train

__all__ = ["TrainConfig", "pretrain", "train", "evaluate", "Evaluation", "load_checkpoint", "TrainingStopped"]
