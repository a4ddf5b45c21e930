"""How hard each SSL task pulls on the shared backbone next to the pose loss (a measurement, not a test).

For a study file's setting (its training data, image size, backbone, pose
head and SSL method options), it builds the HMTL model with every SSL task
at weight 1 and, on the first ``--batches`` training batches, computes with
:func:`hpelib.models.backbone_gradient_norms` the L2 norm of the gradient of
each unweighted loss with respect to all backbone parameters. It prints, per
pose-loss setting (``--alpha`` values of the binned head, or the head's own
loss) and per task:

* the median over batches of ``|grad ssl| / |grad pose|``: with weight ``w``,
  the auxiliary task pulls ``w`` times this hard on the backbone as the pose
  loss does;
* ``w for 1:1``, the weight that makes the pull equal to the pose loss's
  (the rule the studies use for their auxiliary weights, docs/STUDY.md).

At initialisation by default (what is known before any SSL run); with
``--checkpoint MODEL.pt`` of a trained baseline, the backbone and pose head
start from it (late in training).

    python benchmarks/ssl_pull.py studies/default.yaml --alpha 1 0.001
    python benchmarks/ssl_pull.py studies/aflw.yaml --checkpoint results/aflw/baseline/none/lf1_s0/.folds/f0/model.pt
"""
from __future__ import annotations

import argparse
import statistics

import torch

from hpelib.experiment import dataset_from_spec
from hpelib.models import ModelConfig, backbone_gradient_norms, build_model, read_checkpoint
from hpelib.models.files import plain_state_dict
from hpelib.ssl import TASKS
from hpelib.study.schema import load_study
from loader_speed import machine_line


def study_batches(study: dict, batches: int, batch_size: int, seed: int = 0) -> list:
    """The first ``batches`` shuffled training batches ``(images, poses)`` of the study's ``data.train``."""
    ds = dataset_from_spec(study["data"]["train"], train=True, image_size=study["image_size"], seed=seed)
    order = torch.randperm(len(ds), generator=torch.Generator().manual_seed(seed))
    out = []
    for b in range(batches):
        items = [ds[int(i)] for i in order[b * batch_size:(b + 1) * batch_size]]
        out.append((torch.stack([x for x, _ in items]), torch.stack([y for _, y in items])))
    return out


def pull_table(study: dict, pose_options: dict, batches: list, checkpoint=None, seed: int = 0) -> dict:
    """``{task: [ratio per batch]}`` of the gradient norm of each task to the pose loss's, in train mode."""
    tasks = {name: {**study.get("methods", {}).get(name, {}), "weight": 1.0} for name in TASKS.names()}
    model_cfg = {**study["model"], "init": "random", "pose_options": pose_options, "ssl_tasks": tasks}
    torch.manual_seed(seed)
    model = build_model(ModelConfig.from_dict(model_cfg))
    if checkpoint:
        state = plain_state_dict(read_checkpoint(checkpoint)["model"])
        model.load_state_dict({k: v for k, v in state.items() if not k.startswith("ssl.")}, strict=False)
    model.train()
    gen = torch.Generator().manual_seed(seed)
    ratios = {name: [] for name in tasks}
    for images, poses in batches:
        norms = backbone_gradient_norms(model, images, poses, gen)
        for name in tasks:
            ratios[name].append(norms[name] / norms["pose"])
    return ratios


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("study", help="study YAML whose data.train, image_size, model and methods to use")
    ap.add_argument("--alpha", type=float, nargs="*", default=None,
                    help="binned head: the alpha values to compare (default: the study's pose_options)")
    ap.add_argument("--batches", type=int, default=8)
    ap.add_argument("--batch-size", type=int, default=None, help="default: the study's train.batch_size")
    ap.add_argument("--checkpoint", default=None, help="a trained baseline's model.pt (else: initialisation)")
    args = ap.parse_args(argv)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    study = load_study(args.study)
    batch_size = args.batch_size or int(study["train"].get("batch_size", 64))
    batches = study_batches(study, args.batches, batch_size)
    base_options = dict(study["model"].get("pose_options") or {})
    settings = ([{**base_options, "alpha": a} for a in args.alpha] if args.alpha else [base_options])
    print(machine_line())
    print(f"# {args.study}: {study['model'].get('backbone')} at {study['image_size']} px, "
          f"pose head {study['model'].get('pose_head', 'binned')}, {args.batches} batches of {batch_size}, "
          f"{'from ' + args.checkpoint if args.checkpoint else 'at initialisation'}")
    print("| pose options | SSL task | median |grad ssl| / |grad pose| (min-max) | w for 1:1 |")
    print("| --- | --- | --- | --- |")
    for options in settings:
        for name, r in pull_table(study, options, batches, args.checkpoint).items():
            med = statistics.median(r)
            print(f"| {options or 'defaults'} | {name} | {med:.3g} ({min(r):.3g}-{max(r):.3g}) | {1 / med:.3g} |")


if __name__ == "__main__":
    main()
