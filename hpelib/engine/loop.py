"""``train()`` and ``pretrain()``: the epoch loop, checkpoints, resume, DDP, progress.

The model computes its own losses (``model.losses(images, poses, generator)``
returns a dict of 0-d tensors with ``"total"``), so the same loop runs the HPE
baseline, HMTL with auxiliary SSL tasks, and SSL pre-training (``pretrain``
hides the labels: every pose is NaN, and the config must have no pose head).

Files written into ``out_dir`` (rank 0 only; names from :mod:`hpelib.runs`):

* ``checkpoint.pt`` after every epoch (see :mod:`hpelib.engine.checkpoint`);
  a later call with the same ``out_dir`` resumes from it, and a finished run
  returns its stored result (the checkpoint's ``result``) without training again;
* ``history.json``: configs plus one record per epoch (``loss`` means, ``lr``,
  ``time_s``, ``images_per_s``, ``val`` metrics when validated);
* ``train.log``: one line per event, appended and flushed at once whether or
  not ``progress`` is on: ``epoch k/N: loss ...`` per finished epoch (losses,
  lr, images/s, seconds, validation), ``resumed from epoch k/N (checkpoint.pt)``
  and ``finished: N epochs in S s``;
* at the end, ``model.pt`` (final weights + ``model_config``).

A ``checkpoint.pt`` that cannot be resumed from (damaged, or not a resumable
checkpoint) is an error that says how to start the run over.

**Stopped by a signal** (SIGTERM: SLURM's time limit, preemption and
``scancel``, ``timeout``, ``docker stop``; SIGHUP; the study runner stopping
its runs): in a single process the loop finishes the optimizer step under
way, saves a mid-epoch ``checkpoint.pt`` (``step`` > 0: the steps done in the
epoch, its partial loss sums, the view generator's and the global RNG states)
and raises :class:`TrainingStopped`; a later call resumes at that step, with
the same batches, views and random draws as an uninterrupted run (tested bit
for bit on the CPU). At most one step is lost. Under DDP the ranks could stop
at different steps, so there the signals keep their default action and a
resumed run restarts the interrupted epoch from the last epoch checkpoint.

``metrics.json`` is not written here: the caller (the engine CLI, an
experiment) writes the run folder's metrics through :class:`hpelib.runs.RunFolder`.

The final weights are those of the last epoch; the validation set is only
monitored (no best-epoch selection, which would tune on the test set when the
validation set is the test set, as in the paper's protocols).

Why one module of ~450 lines: every step below reads and updates one run
state (:class:`_Job`, what was asked; :class:`_Fit`, what trains it), and the
order of its random draws is what makes a resumed run equal an uninterrupted
one; kept together, that order can be read in one place. Checkpoint files are
:mod:`.checkpoint`'s, data loading :mod:`.data`'s, DDP :mod:`.distributed`'s.
"""
from __future__ import annotations

import contextlib
import math
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import torch
import torch.distributed as dist
from torch import nn
from tqdm.auto import tqdm

from ..io import write_json
from ..models.files import UnreadableCheckpoint
from ..runs import CHECKPOINT, HISTORY, LOG, MODEL, divergence
from ..signals import SLURM_WARNING, handling
from . import checkpoint as C
from . import distributed as D
from .config import TrainConfig, build_optimizer, build_scheduler
from .data import (batch_inputs, derive_seed, remaining_loader, seed_everything, steps_per_epoch, train_loader,
                   view_generator)
from .evaluate import predict_dataset, summarize_predictions

EpochCallback = Callable[[dict], None]
#: what ``checkpoint.pt`` holds besides the model, needed to resume
_RESUMABLE = ("epoch", "optimizer", "scheduler", "history", "rng")
#: signals after which a single-process run saves its state at the next step boundary and stops (with SLURM's
#: warning before a time limit, which reaches every process of a job: :data:`hpelib.signals.SLURM_WARNING`)
STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name)) + (
    (SLURM_WARNING,) if SLURM_WARNING is not None else ())


class TrainingStopped(Exception):
    """Training stopped on a signal after saving a mid-epoch checkpoint; calling again resumes from it."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.signum = signum


def train(model_cfg, train_set, val_set, train_cfg, out_dir, *, resume: bool = True,
          stop_after_epoch: Optional[int] = None, on_epoch_end: Optional[EpochCallback] = None,
          input_spec=None) -> dict:
    """Train a head pose model (with the SSL tasks of ``model_cfg`` as auxiliary losses).

    ``model_cfg``: ``hpelib.models.ModelConfig`` or dict; ``train_set`` /
    ``val_set`` (``None`` for none): hpelib data sets; ``train_cfg``:
    :class:`TrainConfig` or dict; ``out_dir``: the run folder.

    ``resume=False`` ignores an existing checkpoint and starts over.
    ``stop_after_epoch=k`` stops (as if interrupted) once epoch ``k`` is
    checkpointed, e.g. to split a run across time-limited jobs.
    ``on_epoch_end(info)`` is called on every rank after each epoch's checkpoint
    with ``epoch`` (finished epochs), ``model``, ``history``, ``rank``.
    ``input_spec`` (:class:`hpelib.models.InputSpec`) is saved in ``model.pt``
    as ``input``, what the model expects; by default it is that of ``val_set``,
    else of ``train_set`` (:func:`hpelib.models.inputs.input_spec_of`).

    Returns the result dict (also stored in ``checkpoint.pt``): ``kind``,
    ``epochs``, ``train_time_s``, ``train_loss`` (dict), ``val`` (metrics or
    ``None``), ``out_dir``, ``finished``. A run stopped by ``stop_after_epoch``
    returns only ``kind``, ``epochs`` (done so far), ``finished`` (False),
    ``out_dir`` and ``train_time_s``.
    """
    return _run(_Job("train", model_cfg, train_cfg, train_set, val_set, out_dir, resume=resume,
                     stop_after_epoch=stop_after_epoch, on_epoch_end=on_epoch_end, input_spec=input_spec))


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
    return _run(_Job("pretrain", cfg, train_cfg, image_set, None, out_dir, resume=resume,
                     stop_after_epoch=stop_after_epoch, on_epoch_end=on_epoch_end))


@dataclass
class _Job:
    """What ``train()`` / ``pretrain()`` was asked to do; the configs are normalized on creation."""

    kind: str  # "train" or "pretrain"
    model_cfg: object  # a ModelConfig (a dict is converted)
    cfg: TrainConfig  # a dict is converted
    train_set: object
    val_set: object
    out_dir: Path
    resume: bool = True
    stop_after_epoch: Optional[int] = None
    on_epoch_end: Optional[EpochCallback] = None
    input_spec: object = None  # an InputSpec (None: from the validation, else the training set)
    model_config: dict = field(init=False)  # model_cfg as stored in the files

    def __post_init__(self):
        self.model_cfg = C.as_model_config(self.model_cfg)
        if not isinstance(self.cfg, TrainConfig):
            self.cfg = TrainConfig.from_dict(self.cfg)
        self.out_dir = Path(self.out_dir)
        self.model_config = C.model_config_dict(self.model_cfg)
        from ..models.inputs import InputSpec, input_spec_of

        if isinstance(self.input_spec, dict):
            self.input_spec = InputSpec.from_dict(self.input_spec)
        elif self.input_spec is None:
            with contextlib.suppress(AttributeError):  # a data set without a preset: nothing to record
                self.input_spec = input_spec_of(self.val_set if self.val_set is not None else self.train_set)

    @property
    def checkpoint(self) -> Path:
        return self.out_dir / CHECKPOINT


@dataclass
class _Fit:
    """A run in progress on this process: the job and what trains it, carried from epoch to epoch."""

    job: _Job
    model: nn.Module
    net: nn.Module  # the model, wrapped in DDP when distributed
    optimizer: torch.optim.Optimizer
    scheduler: object
    device: torch.device
    info: D.DistInfo
    use_amp: bool
    channels_last: bool
    n_steps: int  # optimizer steps per epoch
    start_epoch: int = 0  # epochs already done when this process started (resume)
    history: list = field(default_factory=list)  # one record per finished epoch
    resume_at: Optional[dict] = None  # a mid-epoch checkpoint's step, partial sums and view RNG (resume)
    stop_signal: Optional[int] = None  # set by a signal handler: save and stop at the next step boundary


def _run(job: _Job) -> dict:
    """Join the process group when launched by torchrun, fit, and leave the group."""
    info, device = D.setup(job.cfg.resolve_device())
    try:
        result = _execute(job, info, device)
    except BaseException:
        # No barrier here: the other ranks may be stuck elsewhere.
        if info.created_group and dist.is_initialized():
            dist.destroy_process_group()
        raise
    D.teardown(info)
    return result


def _execute(job: _Job, info: D.DistInfo, device: torch.device) -> dict:
    """Resume or start the job, train the missing epochs and save the final files; returns the result."""
    saved = None
    if job.resume and job.checkpoint.is_file():
        saved = _read_resumable(job)
        _check_same_run(job, saved)
        if saved.get("result") is not None:
            return dict(saved["result"])
    fit = _start(job, info, device, saved)
    if saved is not None and info.is_main:
        at = f", step {fit.resume_at['step']}/{fit.n_steps}" if fit.resume_at else ""
        _append_log(job, f"resumed from epoch {fit.start_epoch}/{job.cfg.epochs}{at} ({CHECKPOINT})")
    with _stop_on_signals(fit):
        for epoch in range(fit.start_epoch, job.cfg.epochs):
            _run_epoch(fit, epoch)
            if job.on_epoch_end is not None:
                job.on_epoch_end({"epoch": epoch + 1, "model": fit.model, "history": fit.history,
                                  "rank": info.rank})
            if (job.stop_after_epoch is not None and epoch + 1 >= job.stop_after_epoch
                    and epoch + 1 < job.cfg.epochs):
                return {"kind": job.kind, "epochs": epoch + 1, "finished": False, "out_dir": str(job.out_dir),
                        "train_time_s": sum(h["time_s"] for h in fit.history)}
            if fit.stop_signal is not None and epoch + 1 < job.cfg.epochs:  # came during the epoch's last step
                _stopped(fit, f"after epoch {epoch + 1}/{job.cfg.epochs}")  # its checkpoint is saved
        return _finish(fit)


@contextlib.contextmanager
def _stop_on_signals(fit: _Fit):
    """While training alone (in the main thread), :data:`STOP_SIGNALS` ask the loop to save and stop."""
    if fit.info.world_size > 1:
        yield
        return

    def ask_to_stop(signum, frame):
        fit.stop_signal = signum

    with handling(STOP_SIGNALS, ask_to_stop):
        yield


def _read_resumable(job: _Job) -> dict:
    """The run's ``checkpoint.pt``; one that cannot be resumed from is an error saying how to start over."""
    try:
        saved = C.read_checkpoint(job.checkpoint)
    except UnreadableCheckpoint as err:
        problem = err.problem
    else:
        missing = [k for k in _RESUMABLE if k not in saved]
        if not missing:
            return saved
        problem = f"has no resumable state (no {', '.join(missing)}: a {MODEL}?)"
    raise ValueError(
        f"the run's resumable state in {job.out_dir} is unreadable: {job.checkpoint} {problem}; "
        f"delete {job.checkpoint} to start the run over (or pass resume=False, --restart on the engine CLI; "
        "in a study, run the study again with --force --only <run id>).") from None


def _start(job: _Job, info: D.DistInfo, device: torch.device, saved: Optional[dict]) -> _Fit:
    """Build the model, optimizer and schedule (seeded), restored from the checkpoint ``saved`` if any."""
    from ..models import build_model

    cfg = job.cfg
    seed_everything(cfg.seed)
    model = build_model(job.model_cfg).to(device)
    channels_last = cfg.use_channels_last(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(model.parameters(), cfg)
    n_steps = steps_per_epoch(len(job.train_set), cfg, info.world_size)
    scheduler = build_scheduler(optimizer, cfg, n_steps)
    fit = _Fit(job, model, model, optimizer, scheduler, device, info, cfg.use_amp(device), channels_last, n_steps)
    if saved is not None:
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        fit.history = list(saved["history"])
        fit.start_epoch = int(saved["epoch"])
        C.set_rng_state(saved["rng"])
        if int(saved.get("step") or 0) > 0:
            fit.resume_at = {"step": int(saved["step"]), "partial": saved["partial"], "rng": saved["rng"],
                             "view_rng": saved["view_rng"]}
    fit.net = D.wrap(model, info, device, cfg.ddp_find_unused_parameters)
    return fit


def _run_epoch(fit: _Fit, epoch: int) -> None:
    """Train epoch ``epoch`` (0-based), validate if due, append its record and checkpoint (rank 0)."""
    job, info = fit.job, fit.info
    # Everything random in this epoch is a function of (seed, epoch, rank).
    seed_everything(derive_seed(job.cfg.seed, epoch, "global", info.rank))
    loader = train_loader(job.train_set, job.cfg, epoch, fit.device, info.rank, info.world_size)
    gen = view_generator(job.cfg.seed, epoch, info.rank, torch.device("cpu"))
    resume, fit.resume_at = fit.resume_at, None
    if resume is not None:  # a mid-epoch checkpoint: the same batches, views and draws from its step on
        loader = remaining_loader(loader, resume["step"])
        gen.set_state(resume["view_rng"])
        C.set_rng_state(resume["rng"])
    record = _train_epoch(fit, loader, gen, epoch, resume)
    D.sync_buffers(fit.model, info)
    _validate(fit, record, epoch)
    fit.history.append(record)
    if info.is_main:
        C.save(_state(fit, epoch + 1), job.checkpoint)
        write_json(job.out_dir / HISTORY, _history_doc(fit))
        _log_epoch(job, record)
    D.barrier(info)


def _train_epoch(fit: _Fit, loader, gen: torch.Generator, epoch: int, resume: Optional[dict] = None) -> dict:
    """One pass over ``loader`` (at most ``n_steps`` steps, from ``resume["step"]`` on); the epoch's record."""
    job, cfg, info = fit.job, fit.job.cfg, fit.info
    fit.model.train()
    partial = resume["partial"] if resume else {"sums": {}, "n_images": 0, "lr": None, "time_s": 0.0}
    sums: dict[str, float] = dict(partial["sums"])
    n_images = int(partial["n_images"])
    steps_done = first = resume["step"] if resume else 0
    lr = partial["lr"] if partial["lr"] is not None else fit.optimizer.param_groups[0]["lr"]
    show = cfg.progress and info.is_main
    bar = tqdm(total=fit.n_steps, initial=first, desc=f"{job.kind} {epoch + 1}/{cfg.epochs}", disable=not show,
               leave=False, unit="step", dynamic_ncols=True)
    t0 = time.perf_counter() - float(partial["time_s"])
    try:
        for step, batch in enumerate(loader, start=first):
            if step >= fit.n_steps:
                break
            images, poses = batch_inputs(batch, fit.device, fit.channels_last)
            losses = _forward(fit, images, poses, gen)
            values = _loss_values(losses, job.kind)
            _stop_if_nonfinite(fit, values, epoch, step, lr)
            _optimizer_step(fit, losses["total"])
            for k, v in values.items():
                sums[k] = sums.get(k, 0.0) + v
            n_images += images.shape[0]
            steps_done = done = step + 1
            if show and (done % cfg.log_every == 0 or done == fit.n_steps):
                rate = n_images * info.world_size / max(time.perf_counter() - t0, 1e-9)
                bar.set_postfix(loss=f"{sums['total'] / done:.4f}", img_s=f"{rate:.1f}")
            bar.update(1)
            if fit.stop_signal is not None and done < fit.n_steps:
                _save_and_stop(fit, epoch, done, gen, {"sums": sums, "n_images": n_images, "lr": lr,
                                                        "time_s": time.perf_counter() - t0})
    finally:
        bar.close()
    elapsed = time.perf_counter() - t0
    if steps_done == 0:
        raise ValueError(f"{job.kind}: epoch {epoch + 1} had no batch; "
                         f"the training set has {len(loader.dataset)} samples")
    return {"epoch": epoch + 1, "loss": _mean_losses(sums, steps_done, info), "lr": lr, "time_s": elapsed,
            "steps": steps_done, "images_per_s": n_images * info.world_size / max(elapsed, 1e-9), "val": None}


def _save_and_stop(fit: _Fit, epoch: int, steps_done: int, gen: torch.Generator, partial: dict) -> None:
    """Write the mid-epoch checkpoint (``steps_done`` steps into epoch ``epoch``) and raise :class:`TrainingStopped`."""
    job = fit.job
    state = _state(fit, epoch)
    state.update(step=steps_done, partial=partial, view_rng=gen.get_state())
    C.save(state, job.checkpoint)
    _stopped(fit, f"at epoch {epoch + 1}/{job.cfg.epochs}, step {steps_done}/{fit.n_steps}")


def _stopped(fit: _Fit, where: str) -> None:
    """Say in ``train.log`` where the run stopped (its state is saved) and raise :class:`TrainingStopped`."""
    job, name = fit.job, signal.Signals(fit.stop_signal).name
    _append_log(job, f"stopped by {name} {where}: state saved in {CHECKPOINT}")
    raise TrainingStopped(f"{job.kind}: stopped by {name} {where}; the state is saved in {job.checkpoint}: "
                          "run again to resume from there", fit.stop_signal)


def _forward(fit: _Fit, images, poses, gen: torch.Generator) -> dict:
    """The model's losses for one batch on the device (labels hidden when pre-training), under autocast if enabled."""
    if fit.job.kind == "pretrain":
        poses = torch.full_like(poses, float("nan"))
    with torch.autocast(fit.device.type, dtype=torch.bfloat16, enabled=fit.use_amp):
        return fit.net(images, poses, gen)


def _optimizer_step(fit: _Fit, total: torch.Tensor) -> None:
    """Backward, optional gradient clipping, optimizer and schedule step."""
    fit.optimizer.zero_grad(set_to_none=True)
    total.backward()
    if fit.job.cfg.grad_clip is not None:
        torch.nn.utils.clip_grad_norm_(fit.model.parameters(), fit.job.cfg.grad_clip)
    fit.optimizer.step()
    fit.scheduler.step()


def _mean_losses(sums: dict[str, float], steps: int, info: D.DistInfo) -> dict[str, float]:
    """Mean losses over all steps of all ranks."""
    gathered = D.gather_objects((sums, steps), info)
    total_steps = sum(s for _, s in gathered)
    keys = sorted({k for d, _ in gathered for k in d})
    return {k: sum(d.get(k, 0.0) for d, _ in gathered) / total_steps for k in keys}


def _validate(fit: _Fit, record: dict, epoch: int) -> None:
    """Put the validation metrics into ``record["val"]`` when due (computed on rank 0, sent to all)."""
    job, cfg = fit.job, fit.job.cfg
    if job.val_set is None or not ((epoch + 1) % cfg.val_every == 0 or epoch + 1 == cfg.epochs):
        return
    if fit.info.is_main:
        t0 = time.perf_counter()
        pred, true = predict_dataset(fit.model, job.val_set, cfg.batch_size, fit.device, cfg.num_workers,
                                     channels_last=fit.channels_last, progress=cfg.progress, desc="validate")
        record["val"] = summarize_predictions(pred, true)
        record["time_s"] += time.perf_counter() - t0
    record["val"] = D.broadcast_object(record["val"], fit.info)


def _finish(fit: _Fit) -> dict:
    """Save ``model.pt`` and the final checkpoint holding the result (rank 0); returns the result."""
    job = fit.job
    result = _result(fit)
    if fit.info.is_main:
        C.save({"model_config": job.model_config, "model": fit.model.state_dict(), "epoch": job.cfg.epochs,
                "kind": job.kind, "input": job.input_spec.to_dict() if job.input_spec is not None else None},
               job.out_dir / MODEL)
        final = _state(fit, job.cfg.epochs)
        final["result"] = result
        C.save(final, job.checkpoint)
        _append_log(job, f"finished: {job.cfg.epochs} epochs in {result['train_time_s']:.1f} s")
        diverged = divergence(fit.history) if job.kind == "pretrain" else None
        if diverged:
            _append_log(job, f"warning: this pre-training may have diverged: {diverged}")
    return result


def _loss_values(losses, kind) -> dict[str, float]:
    if not isinstance(losses, dict) or "total" not in losses:
        raise TypeError(f"{kind}: model.losses() must return a dict of 0-d tensors with a 'total' entry, "
                        f"got {type(losses).__name__}{' with keys ' + str(list(losses)) if isinstance(losses, dict) else ''}")
    keys = list(losses)
    stacked = torch.stack([losses[k].detach().float().reshape(()) for k in keys]).cpu().tolist()
    return dict(zip(keys, stacked))


def _stop_if_nonfinite(fit: _Fit, values: dict[str, float], epoch: int, step: int, lr: float) -> None:
    """Raise on every rank, before the update, if a loss is not finite on any rank."""
    bad = [k for k, v in values.items() if not math.isfinite(v)]
    if not D.any_true(bool(bad), fit.info, fit.device):
        return
    parts = [k for k in bad if k != "total"] or bad
    shown = ", ".join(f"{k}={values[k]}" for k in parts)
    where = "on another DDP rank" if not bad else f"in loss component(s) {shown}"
    raise FloatingPointError(
        f"{fit.job.kind}: non-finite loss at epoch {epoch + 1}, step {step + 1} {where} "
        f"(all losses: {values}). Training stopped before the update, the last checkpoint is intact. "
        f"Lower lr (now {lr:g}), set grad_clip, or check the data for NaN/inf inputs.")


def _state(fit: _Fit, epoch: int) -> dict:
    """The content of ``checkpoint.pt`` after ``epoch`` finished epochs (RNG states taken now)."""
    job = fit.job
    return {
        "kind": job.kind,
        "model_config": job.model_config,
        "train_config": job.cfg.to_dict(),
        "model": fit.model.state_dict(),
        "optimizer": fit.optimizer.state_dict(),
        "scheduler": fit.scheduler.state_dict(),
        "epoch": epoch,
        "history": fit.history,
        "rng": C.rng_state(),
    }


def _check_same_run(job: _Job, saved: dict) -> None:
    """Refuse to resume a checkpoint that belongs to a different run."""
    problems = []
    if saved.get("kind") != job.kind:
        problems.append(f"it is a {saved.get('kind')!r} run, not {job.kind!r}")
    if saved.get("model_config") != job.model_config:
        old = saved.get("model_config") or {}
        diff = sorted(k for k in set(old) | set(job.model_config) if old.get(k) != job.model_config.get(k))
        problems.append(f"model_config differs in {diff}")
    old_t = saved.get("train_config") or {}
    new_t = job.cfg.to_dict()
    diff_t = sorted(k for k in new_t if k not in TrainConfig.RESUME_FREE and old_t.get(k) != new_t[k])
    if diff_t:
        problems.append(f"train_config differs in {diff_t}")
    if problems:
        raise ValueError(f"{job.checkpoint} belongs to another run ({'; '.join(problems)}). Use another out_dir, "
                         "or resume=False to start over (the checkpoint will be overwritten).")


def _history_doc(fit: _Fit) -> dict:
    """The content of ``history.json``."""
    job = fit.job
    return {"kind": job.kind, "model_config": job.model_config, "train_config": job.cfg.to_dict(),
            "epochs": fit.history}


def _result(fit: _Fit) -> dict:
    """The result of a finished run (see :func:`train`)."""
    history = fit.history
    last_val = next((h["val"] for h in reversed(history) if h.get("val")), None)
    return {
        "kind": fit.job.kind,
        "epochs": fit.job.cfg.epochs,
        "finished": True,
        "out_dir": str(fit.job.out_dir),
        "train_time_s": float(sum(h["time_s"] for h in history)),
        "train_loss": dict(history[-1]["loss"]),
        "val": last_val,
    }


def _log_epoch(job: _Job, record: dict) -> None:
    """Append the epoch's line to ``train.log`` and, when ``progress`` is on, print it."""
    line = _epoch_line(record, job.cfg.epochs)
    _append_log(job, line)
    if job.cfg.progress:
        tqdm.write(f"{job.kind} {line}")


def _epoch_line(record: dict, epochs: int) -> str:
    """``epoch k/N: loss T (part a, ...), lr L, R img/s, S s[, val MAE m geodesic g]``: one finished epoch."""
    loss = record["loss"]
    parts = ", ".join(f"{k} {v:.4f}" for k, v in loss.items() if k != "total")
    line = f"epoch {record['epoch']}/{epochs}: loss {loss['total']:.4f}" + (f" ({parts})" if parts else "")
    line += f", lr {record['lr']:.3g}, {record['images_per_s']:.1f} img/s, {record['time_s']:.1f} s"
    if record.get("val"):
        line += f", val MAE {record['val']['mae']:.2f} geodesic {record['val']['geodesic']:.2f}"
    return line


def _append_log(job: _Job, line: str) -> None:
    """Append ``line`` to the run's ``train.log`` (opened per line: on disk at once, kept when a run dies)."""
    job.out_dir.mkdir(parents=True, exist_ok=True)
    with open(job.out_dir / LOG, "a") as f:
        f.write(line + "\n")
