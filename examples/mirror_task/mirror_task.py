"""A user's own SSL task, registered for hpelib: was the picture mirrored left-right?

Half of the pictures of a batch (``flip_fraction``) are flipped horizontally;
a 2-way linear head on the backbone features says which. A head's left-right
asymmetry is exactly what yaw and roll are about, so this is a fair candidate
for a pose-aware auxiliary task. ``study.yaml`` beside this file uses it as
pre-training and as an auxiliary loss; ``imports: [mirror_task]`` makes the
runner and every run import this module.
"""
import torch
import torch.nn.functional as F
from torch import nn

from hpelib.ssl import TASKS
from hpelib.ssl.base import SSLTask, check_images, rand


@TASKS.register("mirror")
class MirrorTask(SSLTask):
    name = "mirror"

    def __init__(self, feat_dim, flip_fraction: float = 0.5):
        super().__init__(feat_dim)
        if not 0.0 < float(flip_fraction) < 1.0:
            raise ValueError(f"mirror: flip_fraction must be in (0, 1), got {flip_fraction!r}")
        self.flip_fraction = float(flip_fraction)
        self.head = nn.Linear(feat_dim, 2)

    def make_views(self, images, generator=None):
        check_images(images, self.name)
        flipped = rand((images.shape[0],), generator, images.device) < self.flip_fraction
        views = torch.where(flipped[:, None, None, None], images.flip(-1), images)
        return views, flipped.long()

    def loss(self, features, targets):
        return F.cross_entropy(self.head(features).float(), targets)
