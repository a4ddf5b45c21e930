"""``train()`` and ``pretrain()``: the epoch loop, checkpoints, resume, DDP, progress.

The model computes its own losses (``model.losses(images, poses, generator)``
returns a dict of 0-d tensors with ``"total"``), so the same loop runs the HPE
baseline, HMTL with auxiliary SSL tasks, and SSL pre-training (``pretrain``
hides the labels: every pose is NaN, and the config must have no pose head).

Files written into ``out_dir`` (rank 0 only):

* ``checkpoint.pt`` after every epoch (see :mod:`hpelib.engine.checkpoint`);
  a later call with the same ``out_dir`` resumes from it, and a finished run
  returns its stored result without training again;
* ``history.json``: configs plus one record per epoch (``loss`` means, ``lr``,
  ``time_s``, ``images_per_s``, ``val`` metrics when validated);
* at the end, ``model.pt`` (final weights + ``model_config``) and
  ``metrics.json`` (``train_time_s``, ``epochs``, ``kind``, ``train_loss_<name>``
  of the last epoch and ``val_<metric>`` of the last validation).

The final weights are those of the last epoch; the validation set is only
monitored (no best-epoch selection, which would tune on the test set when the
validation set is the test set, as in the paper's protocols).
"""
from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Callable, Optional

import torch
import torch.distributed as dist
from tqdm.auto import tqdm

from ..io import write_json
from . import checkpoint as C
from . import distributed as D
from .config import TrainConfig, build_optimizer, build_scheduler
from .data import derive_seed, seed_everything, steps_per_epoch, train_loader, view_generator
from .evaluate import METRICS, predict_dataset, summarize_predictions

HISTORY = "history.json"

EpochCallback = Callable[[dict], None]


def train(model_cfg, train_set, val_set, train_cfg, out_dir, *, resume: bool = True,
          stop_after_epoch: Optional[int] = None, on_epoch_end: Optional[EpochCallback] = None) -> dict:
    """Train a head pose model (with the SSL tasks of ``model_cfg`` as auxiliary losses).

    ``model_cfg``: ``hpelib.models.ModelConfig`` or dict; ``train_set`` /
    ``val_set`` (``None`` for none): hpelib data sets; ``train_cfg``:
    :class:`TrainConfig` or dict; ``out_dir``: the run folder.

    ``resume=False`` ignores an existing checkpoint and starts over.
    ``stop_after_epoch=k`` stops (as if interrupted) once epoch ``k`` is
    checkpointed, e.g. to split a run across time-limited jobs.
    ``on_epoch_end(info)`` is called on every rank after each epoch's checkpoint
    with ``epoch`` (finished epochs), ``model``, ``history``, ``rank``.

    Returns the result dict (also in ``metrics.json``): ``kind``, ``epochs``,
    ``train_time_s``, ``train_loss`` (dict), ``val`` (metrics or ``None``),
    ``out_dir``, ``finished``.
    """
    return _run("train", model_cfg, train_set, val_set, train_cfg, out_dir, resume, stop_after_epoch, on_epoch_end)


def pretrain(model_cfg, image_set, train_cfg, out_dir, *, resume: bool = True,
             stop_after_epoch: Optional[int] = None, on_epoch_end: Optional[EpochCallback] = None) -> dict:
    """Self-supervised pre-training: only the SSL losses of ``model_cfg`` (``pose_head`` must be None).

    Labels of ``image_set`` are ignored (replaced by NaN). The resulting
    ``model.pt`` can initialize a later run (``ModelConfig(init=<path>)``).
    Arguments and result as :func:`train` (``val`` is always ``None``).
    """
    cfg = C.as_model_config(model_cfg)
    if getattr(cfg, "pose_head", None) is not None:
        raise ValueError(f"pretrain() needs a model config with pose_head=None (got {cfg.pose_head!r}); "
                         "use train() to train a pose head")
    if not getattr(cfg, "ssl_tasks", None):
        raise ValueError("pretrain() needs at least one SSL task in model config 'ssl_tasks'")
    return _run("pretrain", cfg, image_set, None, train_cfg, out_dir, resume, stop_after_epoch, on_epoch_end)


def _run(kind, model_cfg, train_set, val_set, train_cfg, out_dir, resume, stop_after_epoch, on_epoch_end):
    model_cfg = C.as_model_config(model_cfg)
    cfg = train_cfg if isinstance(train_cfg, TrainConfig) else TrainConfig.from_dict(train_cfg)
    info, device = D.setup(cfg.resolve_device())
    try:
        result = _fit(kind, model_cfg, train_set, val_set, cfg, Path(out_dir), resume, stop_after_epoch,
                      on_epoch_end, info, device)
    except BaseException:
        # No barrier here: the other ranks may be stuck elsewhere.
        if info.created_group and dist.is_initialized():
            dist.destroy_process_group()
        raise
    D.teardown(info)
    return result


def _fit(kind, model_cfg, train_set, val_set, cfg: TrainConfig, out_dir: Path, resume, stop_after_epoch,
         on_epoch_end, info: D.DistInfo, device: torch.device) -> dict:
    from ..models import build_model

    mcfg_dict = C.model_config_dict(model_cfg)
    ckpt_path = out_dir / C.CHECKPOINT
    state = None
    if resume and ckpt_path.is_file():
        state = C.read_checkpoint(ckpt_path)
        _check_same_run(state, kind, mcfg_dict, cfg, ckpt_path)
        if state.get("result") is not None:
            return dict(state["result"])

    seed_everything(cfg.seed)
    model = build_model(model_cfg).to(device)
    use_cl = cfg.use_channels_last(device)
    if use_cl:
        model = model.to(memory_format=torch.channels_last)
    use_amp = cfg.use_amp(device)
    optimizer = build_optimizer(model.parameters(), cfg)
    n_steps = steps_per_epoch(len(train_set), cfg, info.world_size)
    scheduler = build_scheduler(optimizer, cfg, n_steps)
    history: list[dict] = []
    start_epoch = 0
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        history = list(state["history"])
        start_epoch = int(state["epoch"])
        C.set_rng_state(state["rng"])
    net = D.wrap(model, info, device, cfg.ddp_find_unused_parameters)

    for epoch in range(start_epoch, cfg.epochs):
        # Everything random in this epoch is a function of (seed, epoch, rank).
        seed_everything(derive_seed(cfg.seed, epoch, "global", info.rank))
        loader = train_loader(train_set, cfg, epoch, device, info.rank, info.world_size)
        gen = view_generator(cfg.seed, epoch, info.rank, torch.device("cpu"))
        record = _train_epoch(kind, net, model, loader, optimizer, scheduler, cfg, epoch, n_steps, gen,
                              device, use_amp, use_cl, info)
        D.sync_buffers(model, info)
        validate = val_set is not None and ((epoch + 1) % cfg.val_every == 0 or epoch + 1 == cfg.epochs)
        if validate and info.is_main:
            t0 = time.perf_counter()
            pred, true = predict_dataset(model, val_set, cfg.batch_size, device, cfg.num_workers,
                                         channels_last=use_cl, progress=cfg.progress, desc="validate")
            record["val"] = summarize_predictions(pred, true)
            record["time_s"] += time.perf_counter() - t0
        if validate:
            record["val"] = D.broadcast_object(record["val"], info)
        history.append(record)
        if info.is_main:
            C.save(_state(kind, model, optimizer, scheduler, epoch + 1, history, mcfg_dict, cfg), ckpt_path)
            write_json(out_dir / HISTORY, _history_doc(kind, mcfg_dict, cfg, history))
            _log_epoch(kind, record, cfg)
        D.barrier(info)
        if on_epoch_end is not None:
            on_epoch_end({"epoch": epoch + 1, "model": model, "history": history, "rank": info.rank})
        if stop_after_epoch is not None and epoch + 1 >= stop_after_epoch and epoch + 1 < cfg.epochs:
            return {"kind": kind, "epochs": epoch + 1, "finished": False, "out_dir": str(out_dir),
                    "train_time_s": sum(h["time_s"] for h in history)}

    result = _result(kind, history, cfg, out_dir)
    if info.is_main:
        C.save({"model_config": mcfg_dict, "model": model.state_dict(), "epoch": cfg.epochs, "kind": kind},
               out_dir / C.MODEL)
        write_json(out_dir / METRICS, _flat_metrics(result))
        final = _state(kind, model, optimizer, scheduler, cfg.epochs, history, mcfg_dict, cfg)
        final["result"] = result
        C.save(final, ckpt_path)
    return result


def _train_epoch(kind, net, model, loader, optimizer, scheduler, cfg, epoch, n_steps, gen, device, use_amp,
                 use_cl, info) -> dict:
    model.train()
    sums: dict[str, float] = {}
    n_images = 0
    steps_done = 0
    lr = optimizer.param_groups[0]["lr"]
    show = cfg.progress and info.is_main
    bar = tqdm(total=n_steps, desc=f"{kind} {epoch + 1}/{cfg.epochs}", disable=not show, leave=False,
               unit="step", dynamic_ncols=True)
    t0 = time.perf_counter()
    try:
        for step, (images, poses) in enumerate(loader):
            if step >= n_steps:
                break
            images = images.to(device, non_blocking=True)
            if use_cl:
                images = images.contiguous(memory_format=torch.channels_last)
            poses = poses.to(device, dtype=torch.float32, non_blocking=True)
            if kind == "pretrain":
                poses = torch.full_like(poses, float("nan"))
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
                losses = net(images, poses, gen)
            values = _loss_values(losses, kind)
            bad = [k for k, v in values.items() if not math.isfinite(v)]
            if D.any_true(bool(bad), info, device):
                raise FloatingPointError(_nonfinite_message(kind, epoch, step, values, bad, lr, cfg))
            optimizer.zero_grad(set_to_none=True)
            losses["total"].backward()
            if cfg.grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            optimizer.step()
            scheduler.step()
            for k, v in values.items():
                sums[k] = sums.get(k, 0.0) + v
            n_images += images.shape[0]
            steps_done = done = step + 1
            if show and (done % cfg.log_every == 0 or done == n_steps):
                rate = n_images * info.world_size / max(time.perf_counter() - t0, 1e-9)
                bar.set_postfix(loss=f"{sums['total'] / done:.4f}", img_s=f"{rate:.1f}")
            bar.update(1)
    finally:
        bar.close()
    elapsed = time.perf_counter() - t0
    if steps_done == 0:
        raise ValueError(f"{kind}: epoch {epoch + 1} had no batch; the training set has {len(loader.dataset)} samples")
    # Mean losses over all steps of all ranks.
    gathered = D.gather_objects((sums, steps_done), info)
    total_steps = sum(s for _, s in gathered)
    keys = sorted({k for d, _ in gathered for k in d})
    loss = {k: sum(d.get(k, 0.0) for d, _ in gathered) / total_steps for k in keys}
    return {"epoch": epoch + 1, "loss": loss, "lr": lr, "time_s": elapsed, "steps": steps_done,
            "images_per_s": n_images * info.world_size / max(elapsed, 1e-9), "val": None}


def _loss_values(losses, kind) -> dict[str, float]:
    if not isinstance(losses, dict) or "total" not in losses:
        raise TypeError(f"{kind}: model.losses() must return a dict of 0-d tensors with a 'total' entry, "
                        f"got {type(losses).__name__}{' with keys ' + str(list(losses)) if isinstance(losses, dict) else ''}")
    keys = list(losses)
    stacked = torch.stack([losses[k].detach().float().reshape(()) for k in keys]).cpu().tolist()
    return dict(zip(keys, stacked))


def _nonfinite_message(kind, epoch, step, values, bad, lr, cfg) -> str:
    parts = [k for k in bad if k != "total"] or bad
    shown = ", ".join(f"{k}={values[k]}" for k in parts)
    where = "on another DDP rank" if not bad else f"in loss component(s) {shown}"
    return (f"{kind}: non-finite loss at epoch {epoch + 1}, step {step + 1} {where} "
            f"(all losses: {values}). Training stopped before the update, the last checkpoint is intact. "
            f"Lower lr (now {lr:g}), set grad_clip, or check the data for NaN/inf inputs.")


def _state(kind, model, optimizer, scheduler, epoch, history, mcfg_dict, cfg) -> dict:
    return {
        "kind": kind,
        "model_config": mcfg_dict,
        "train_config": cfg.to_dict(),
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "epoch": epoch,
        "history": history,
        "rng": C.rng_state(),
    }


def _check_same_run(state, kind, mcfg_dict, cfg: TrainConfig, path) -> None:
    """Refuse to resume a checkpoint that belongs to a different run."""
    problems = []
    if state.get("kind") != kind:
        problems.append(f"it is a {state.get('kind')!r} run, not {kind!r}")
    if state.get("model_config") != mcfg_dict:
        old = state.get("model_config") or {}
        diff = sorted(k for k in set(old) | set(mcfg_dict) if old.get(k) != mcfg_dict.get(k))
        problems.append(f"model_config differs in {diff}")
    old_t = state.get("train_config") or {}
    new_t = cfg.to_dict()
    diff_t = sorted(k for k in new_t if k not in TrainConfig.RESUME_FREE and old_t.get(k) != new_t[k])
    if diff_t:
        problems.append(f"train_config differs in {diff_t}")
    if problems:
        raise ValueError(f"{path} belongs to another run ({'; '.join(problems)}). Use another out_dir, "
                         "or resume=False to start over (the checkpoint will be overwritten).")


def _history_doc(kind, mcfg_dict, cfg, history) -> dict:
    return {"kind": kind, "model_config": mcfg_dict, "train_config": cfg.to_dict(), "epochs": history}


def _result(kind, history, cfg, out_dir) -> dict:
    last_val = next((h["val"] for h in reversed(history) if h.get("val")), None)
    return {
        "kind": kind,
        "epochs": cfg.epochs,
        "finished": True,
        "out_dir": str(out_dir),
        "train_time_s": float(sum(h["time_s"] for h in history)),
        "train_loss": dict(history[-1]["loss"]),
        "val": last_val,
    }


def _flat_metrics(result) -> dict:
    out = {"kind": result["kind"], "epochs": result["epochs"], "train_time_s": result["train_time_s"]}
    out.update({f"train_loss_{k}": v for k, v in result["train_loss"].items()})
    if result["val"]:
        out.update({f"val_{k}": v for k, v in result["val"].items()})
    return out


def _log_epoch(kind, record, cfg) -> None:
    if not cfg.progress:
        return
    msg = f"{kind} epoch {record['epoch']}/{cfg.epochs}: loss {record['loss']['total']:.4f}, " \
          f"lr {record['lr']:.3g}, {record['images_per_s']:.1f} img/s, {record['time_s']:.1f}s"
    if record.get("val"):
        msg += f", val MAE {record['val']['mae']:.2f} geodesic {record['val']['geodesic']:.2f}"
    tqdm.write(msg)
