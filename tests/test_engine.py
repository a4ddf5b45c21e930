"""hpelib.engine: config, schedule, train/pretrain/evaluate, checkpoints, exact resume, NaN guard."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from hpelib.data import build_dataset
from hpelib.engine import Evaluation, TrainConfig, evaluate, load_checkpoint, pretrain, train
from hpelib.engine import checkpoint as C
from hpelib.engine import cli
from hpelib.engine.cli import main as cli_main
from hpelib.engine.config import LRSchedule
from hpelib.metrics import angle_errors, geodesic_errors
from hpelib.models import HMTLModel
from hpelib.runs import PREDICTION_COLUMNS

SIZE = 32
MODEL = {"backbone": "resnet18-narrow", "pose_head": "regression", "ssl_tasks": {"rotation": {"weight": 0.5}}}


class TinyPoses(torch.utils.data.Dataset):
    """A small labelled set whose 'augmentation' is a pure function of (seed, epoch, index)."""

    def __init__(self, n=8, seed=0, unlabeled=()):
        g = torch.Generator().manual_seed(seed)
        self.images = torch.randn(n, 3, SIZE, SIZE, generator=g)
        self.poses = ((torch.rand(n, 3, generator=g) - 0.5) * 60).numpy()
        self.poses[list(unlabeled)] = np.nan
        self.names = [f"img{i:03d}" for i in range(n)]
        self.seed, self.epoch, self.epochs_seen = seed, 0, []

    def set_epoch(self, epoch):
        self.epoch = epoch
        self.epochs_seen.append(epoch)

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        rng = np.random.default_rng([self.seed, self.epoch, i])
        noise = torch.from_numpy(rng.normal(0, 0.1, (3, SIZE, SIZE)).astype(np.float32))
        return self.images[i] + noise, torch.from_numpy(self.poses[i].copy())


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory):
    return tmp_path_factory.mktemp("synthetic")


def synthetic(root, split="train", n=8, train=True):
    """The package's rendered-heads data set, recording the epochs it is told about."""
    ds = build_dataset("synthetic", root=root, split=split, image_size=SIZE, n=n, train=train, seed=7)
    ds.epochs_seen = []
    set_epoch = ds.set_epoch

    def recording(epoch):
        ds.epochs_seen.append(epoch)
        set_epoch(epoch)

    ds.set_epoch = recording
    return ds


def tcfg(**kw):
    base = dict(epochs=2, batch_size=4, lr=1e-3, seed=3, device="cpu", progress=False, warmup_epochs=0.5)
    base.update(kw)
    return TrainConfig(**base)


def weights(path):
    return C.read_checkpoint(path)["model"]


# --- TrainConfig and schedule -------------------------------------------------

def test_train_config_rejects_unknown_keys_and_bad_values():
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['epoch'\].*valid keys.*'epochs'"):
        TrainConfig.from_dict({"epoch": 3})
    with pytest.raises(ValueError, match="optimizer"):
        TrainConfig.from_dict({"optimizer": "lamb"})
    with pytest.raises(ValueError, match="schedule"):
        TrainConfig(schedule="poly")
    cfg = TrainConfig.from_dict({"epochs": 3, "amp": False, "device": "cpu"})
    assert cfg.amp == "off" and cfg.epochs == 3
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg
    cpu = torch.device("cpu")
    assert not TrainConfig().use_amp(cpu) and not TrainConfig().use_channels_last(cpu)
    assert TrainConfig().use_amp(torch.device("cuda")) and TrainConfig().use_channels_last(torch.device("cuda"))


def test_lr_schedules():
    cos = LRSchedule(TrainConfig(epochs=4, schedule="cosine", warmup_epochs=1), steps_per_epoch=10)
    assert cos(0) == pytest.approx(0.1) and cos(9) == pytest.approx(1.0)
    assert cos(10) == pytest.approx(1.0) and cos(25) == pytest.approx(0.5)
    assert cos(39) > 0 and cos(40) == pytest.approx(0.0)
    step = LRSchedule(TrainConfig(epochs=6, schedule="step", step_size=2, gamma=0.5), steps_per_epoch=3)
    assert [step(s) for s in (0, 5, 6, 11, 12)] == pytest.approx([1, 1, 0.5, 0.5, 0.25])
    assert LRSchedule(TrainConfig(schedule="none"), 5)(17) == 1.0


# --- training, resume, files ----------------------------------------------------

def test_resume_is_exact_and_finished_run_is_not_retrained(tmp_path, monkeypatch, synth_root):
    full_set, val_set = synthetic(synth_root), synthetic(synth_root, "test", n=4, train=False)
    full = train(MODEL, full_set, val_set, tcfg(), tmp_path / "full")
    assert full["finished"] and full_set.epochs_seen == [0, 1]

    seen = []
    part = train(MODEL, synthetic(synth_root), val_set, tcfg(), tmp_path / "split", stop_after_epoch=1,
                 on_epoch_end=lambda info: seen.append(info["epoch"]))
    assert not part["finished"] and seen == [1]
    assert C.read_checkpoint(tmp_path / "split" / "checkpoint.pt")["epoch"] == 1
    assert not (tmp_path / "split" / "model.pt").exists()
    resumed_set = synthetic(synth_root)
    resumed = train(MODEL, resumed_set, val_set, tcfg(num_workers=0, log_every=1), tmp_path / "split")
    assert resumed_set.epochs_seen == [1]  # only the missing epoch ran

    a, b = weights(tmp_path / "full" / "model.pt"), weights(tmp_path / "split" / "model.pt")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert resumed["val"] == full["val"] and resumed["train_loss"] == full["train_loss"]
    assert full["val"]["n"] == 4 and math.isfinite(full["val"]["mae"])

    # files of a finished run: the engine's own artefacts only (metrics.json is the caller's)
    d = tmp_path / "full"
    assert sorted(p.name for p in d.iterdir()) == ["checkpoint.pt", "history.json", "model.pt", "train.log"]
    assert full["train_time_s"] > 0 and set(full["train_loss"]) == {"pose", "rotation", "total"}
    hist = json.loads((d / "history.json").read_text())
    assert [e["epoch"] for e in hist["epochs"]] == [1, 2] and hist["train_config"]["seed"] == 3
    assert all(e["lr"] > 0 and e["images_per_s"] > 0 and e["val"] for e in hist["epochs"])
    ckpt = C.read_checkpoint(d / "checkpoint.pt")
    assert {"model", "model_config", "optimizer", "scheduler", "epoch", "history", "rng", "train_config"} <= set(ckpt)

    # a finished run returns its stored result without training
    monkeypatch.setattr("hpelib.engine.loop._train_epoch", lambda *a, **k: pytest.fail("retrained"))
    assert train(MODEL, full_set, val_set, tcfg(), d) == full

    # a different run in the same folder is refused
    with pytest.raises(ValueError, match=r"train_config differs in \['lr'\].*resume=False"):
        train(MODEL, full_set, val_set, tcfg(lr=1e-2), d)


def test_nan_loss_stops_with_a_clear_error(tmp_path, monkeypatch):
    calls = {"n": 0}
    original = HMTLModel.losses

    def poisoned(self, images, poses=None, generator=None):
        out = original(self, images, poses, generator)
        calls["n"] += 1
        if calls["n"] == 4:  # epoch 2, step 2 (2 steps per epoch)
            out["rotation"] = out["rotation"] * float("nan")
            out["total"] = out["total"] + out["rotation"]
        return out

    monkeypatch.setattr(HMTLModel, "losses", poisoned)
    with pytest.raises(FloatingPointError, match=r"epoch 2, step 2 in loss component\(s\) rotation=nan"):
        train(MODEL, TinyPoses(), None, tcfg(), tmp_path)
    assert C.read_checkpoint(tmp_path / "checkpoint.pt")["epoch"] == 1  # the last good epoch is kept


def test_pretrain_ignores_labels_and_feeds_fine_tuning(tmp_path):
    ssl_cfg = {"backbone": "resnet18-narrow", "pose_head": None, "ssl_tasks": {"rotation": {}}}
    with pytest.raises(ValueError, match="pose_head=None"):
        pretrain(MODEL, TinyPoses(), tcfg(epochs=1), tmp_path / "bad")
    res = pretrain(ssl_cfg, TinyPoses(), tcfg(epochs=1, max_steps_per_epoch=1), tmp_path / "ssl")
    assert set(res["train_loss"]) == {"rotation", "total"} and res["val"] is None
    pre = weights(tmp_path / "ssl" / "model.pt")
    model = load_checkpoint(tmp_path / "ssl")
    assert torch.equal(model.state_dict()["backbone.conv1.weight"], pre["backbone.conv1.weight"])

    fine_cfg = dict(MODEL, init=str(tmp_path / "ssl" / "model.pt"))
    out = train(fine_cfg, TinyPoses(), None, tcfg(epochs=1, lr=1e-9, optimizer="sgd", momentum=0.0,
                                                 max_steps_per_epoch=1), tmp_path / "ft")
    assert out["finished"]
    ft = weights(tmp_path / "ft" / "model.pt")
    # a near-zero learning rate leaves the pre-trained convolution in place
    assert torch.allclose(ft["backbone.conv1.weight"], pre["backbone.conv1.weight"], atol=1e-6)


def test_evaluate_returns_predictions_and_metrics_and_writes_nothing(tmp_path):
    run = tmp_path / "run"
    train(MODEL, TinyPoses(), None, tcfg(epochs=1, max_steps_per_epoch=1), run)
    files = sorted(p.name for p in run.iterdir())
    test_set = TinyPoses(n=10, seed=5, unlabeled=(2, 7))
    ev = evaluate(run / "model.pt", test_set, batch_size=4, progress=False)
    assert isinstance(ev, Evaluation) and sorted(p.name for p in run.iterdir()) == files
    assert ev.names == test_set.names and ev.pred.shape == ev.true.shape == (10, 3)
    assert ev.pred.dtype == ev.true.dtype == np.float64
    np.testing.assert_allclose(ev.true, test_set.poses, atol=1e-4)  # NaN rows included
    assert ev.metrics["n"] == 8 and set(ev.metrics) == {"yaw", "pitch", "roll", "mae", "geodesic", "n"}

    frame = ev.frame()
    assert tuple(c for c in frame.columns if c in PREDICTION_COLUMNS) == PREDICTION_COLUMNS
    assert list(frame["name"]) == test_set.names
    errors = frame[["yaw_err", "pitch_err", "roll_err", "geodesic_err"]].to_numpy()
    assert np.isnan(errors[[2, 7]]).all()  # unlabeled: prediction only
    labeled = np.setdiff1d(np.arange(10), [2, 7])
    np.testing.assert_allclose(errors[labeled, :3], angle_errors(ev.pred[labeled], ev.true[labeled]))
    np.testing.assert_allclose(errors[labeled, 3], geodesic_errors(ev.pred[labeled], ev.true[labeled]))
    for angle in ("yaw", "pitch", "roll"):
        assert frame[f"{angle}_err"].mean() == pytest.approx(ev.metrics[angle], rel=1e-9)  # NaN skipped

    model = load_checkpoint(run)
    again = evaluate(model, test_set, batch_size=16, progress=False)  # batch size does not matter
    assert again.metrics == pytest.approx(ev.metrics)
    unnamed = evaluate(model, torch.utils.data.TensorDataset(test_set.images, torch.zeros(10, 3)), progress=False)
    assert unnamed.names == [str(i) for i in range(10)]
    # a set without any label (a folder of face crops): predictions, empty errors, n = 0
    unlabelled = evaluate(model, TinyPoses(n=4, unlabeled=range(4)), progress=False)
    assert unlabelled.metrics == {"n": 0} and unlabelled.pred.shape == (4, 3) and np.isfinite(unlabelled.pred).all()
    assert unlabelled.frame()[["yaw_err", "geodesic_err", "mae_err"]].isna().all().all()


def test_cli_trains_and_tests_from_a_config_file(tmp_path, synth_root, capsys):
    data = {"name": "synthetic", "root": str(synth_root), "image_size": SIZE, "seed": 7}
    config = {
        "out_dir": str(tmp_path / "cli_run"),
        "model": {"backbone": "resnet18-narrow", "pose_head": "binned"},
        "train": {"epochs": 1, "batch_size": 4, "device": "cpu", "progress": False, "max_steps_per_epoch": 1},
        "train_data": dict(data, split="train", n=8),
        "test_data": dict(data, split="test", n=4, train=False),
    }
    path = tmp_path / "run.json"
    path.write_text(json.dumps(config))
    assert cli_main(["train", "--config", str(path)]) == 0
    printed = json.loads(capsys.readouterr().out)
    saved = json.loads((tmp_path / "cli_run" / "metrics.json").read_text())
    assert saved["n"] == 4 and saved["mae"] == printed["test"]["mae"] and saved["train_time_s"] > 0
    assert saved["kind"] == "train" and saved["epochs"] == 1 and "train_loss_total" in saved
    assert len((tmp_path / "cli_run" / "predictions.csv").read_text().splitlines()) == 5

    # evaluate rewrites the test results and keeps the training entries
    (tmp_path / "cli_run" / "predictions.csv").unlink()
    assert cli_main(["evaluate", "--config", str(path)]) == 0
    assert json.loads(capsys.readouterr().out) == printed["test"]
    assert json.loads((tmp_path / "cli_run" / "metrics.json").read_text()) == saved
    assert len((tmp_path / "cli_run" / "predictions.csv").read_text().splitlines()) == 5

    path.write_text(json.dumps(dict(config, extra=1)))
    assert cli_main(["train", "--config", str(path)]) == 2
    assert "unknown key(s) ['extra']" in capsys.readouterr().err
    path.write_text(json.dumps(dict(config, train_data={"name": "aflw2000", "root": str(tmp_path / "none")})))
    assert cli_main(["train", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "none" in err and "data/README.md" in err


# --- the run's log, unreadable resume state ----------------------------------------

def _log(run):
    return (run / "train.log").read_text().splitlines()


def test_train_log_has_one_line_per_epoch_and_the_resume(tmp_path):
    import re

    epoch_line = r"epoch {}/2: loss \d+\.\d{{4}} \(pose \d+\.\d{{4}}, rotation \d+\.\d{{4}}\), lr [\d.e-]+, " \
                 r"\d+\.\d img/s, \d+\.\d s"
    full = tmp_path / "full"
    train(MODEL, TinyPoses(), None, tcfg(), full)  # progress off: the log is written all the same
    lines = _log(full)
    assert len(lines) == 3, lines
    assert re.fullmatch(epoch_line.format(1), lines[0]) and re.fullmatch(epoch_line.format(2), lines[1])
    assert re.fullmatch(r"finished: 2 epochs in \d+\.\d s", lines[2])

    split = tmp_path / "split"
    train(MODEL, TinyPoses(), None, tcfg(), split, stop_after_epoch=1)
    assert len(_log(split)) == 1 and _log(split)[0].startswith("epoch 1/2: ")
    train(MODEL, TinyPoses(), None, tcfg(), split)
    lines = _log(split)
    assert lines[1] == "resumed from epoch 1/2 (checkpoint.pt)" and lines[2].startswith("epoch 2/2: ")
    assert lines[3].startswith("finished: 2 epochs in ") and len(lines) == 4
    train(MODEL, TinyPoses(), None, tcfg(), split)  # already finished: nothing trained, nothing logged
    assert len(_log(split)) == 4


def test_unreadable_checkpoint_on_resume_says_how_to_start_over(tmp_path):
    run = tmp_path / "run"
    train(MODEL, TinyPoses(), None, tcfg(), run, stop_after_epoch=1)
    ckpt = run / "checkpoint.pt"
    ckpt.write_bytes(b"\0garbage" * 4)
    with pytest.raises(ValueError) as info:
        train(MODEL, TinyPoses(), None, tcfg(), run)
    msg = str(info.value)
    assert msg.startswith(f"the run's resumable state in {run} is unreadable: "
                          f"{ckpt} (32 bytes) is not a PyTorch zip file")
    assert f"delete {ckpt} to start the run over" in msg and "resume=False" in msg and "--restart" in msg
    assert "--force --only <run id>" in msg
    assert train(MODEL, TinyPoses(), None, tcfg(), run, resume=False)["finished"]  # the way out works

    # a readable file without the resumable state (model.pt copied over it) is refused the same way
    ckpt.write_bytes((run / "model.pt").read_bytes())
    with pytest.raises(ValueError, match=r"resumable state in .* is unreadable: .*has no resumable state"):
        train(MODEL, TinyPoses(), None, tcfg(), run)


# --- the engine CLI: bad config files, Ctrl-C --------------------------------------

def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return err.rstrip("\n")


@pytest.mark.parametrize("name, text, where", [
    ("run.json", '{"out_dir": "x",\n "train": {"epochs": 1,}\n}\n', "JSON: line 2, column 24: Expecting property name"),
    ("run.yaml", "out_dir: x\ntrain:\n  epochs: 1\n   batch_size: 4\n",
     "YAML: line 4, column 14: mapping values are not allowed here"),
])
def test_cli_names_the_line_and_column_of_a_malformed_config(tmp_path, capsys, name, text, where):
    path = tmp_path / name
    path.write_text(text)
    assert cli_main(["train", "--config", str(path)]) == 2
    line = _one_error_line(capsys)
    assert line.startswith(f"error: config file {path} is not valid {where}") and "correct the file" in line


def test_cli_refuses_an_out_dir_that_is_a_file_in_one_line(tmp_path, capsys):
    (tmp_path / "taken").write_text("")
    path = tmp_path / "run.yaml"
    path.write_text(f"out_dir: {tmp_path / 'taken'}\n")
    with pytest.raises(SystemExit) as e:
        cli_main(["train", "--config", str(path)])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].endswith(f"error: out_dir {tmp_path / 'taken'} is a file, not a folder: set another out_dir "
                            "(or --out-dir)"), err


def test_cli_checks_values_as_notebooks_and_studies_do(tmp_path, capsys):
    """The engine CLI's config goes through the same checks (and YAML coercion) before anything is built."""
    path = tmp_path / "run.yaml"
    path.write_text("out_dir: x\nmodel: {backbone: resnet19}\ntrain: {lr: fast, epochs: 0}\n")
    assert cli_main(["train", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"error: {path}: model config: unknown backbone 'resnet19'" in err
    path.write_text("out_dir: x\ntrain: {lr: fast, epochs: 0}\n")
    assert cli_main(["train", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert "TrainConfig:" in err and "lr: expected a number, got 'fast'" in err and "epochs must be an integer >= 1" in err
    path.write_text("out_dir: x\nmodel: {backbone: resnet18-narrow}\ntrain: {lr: 1e-3}\n")
    assert cli.load_run_config(path)["train"]["lr"] == 0.001  # YAML's string 1e-3 is the number


def test_cli_ctrl_c_says_what_is_saved_and_how_to_resume(tmp_path, synth_root, capsys, monkeypatch):
    import hpelib.engine

    data = {"name": "synthetic", "root": str(synth_root), "image_size": SIZE, "seed": 7, "split": "train", "n": 8}
    out = tmp_path / "run"
    config = {"out_dir": str(out), "model": MODEL, "train_data": data,
              "train": {"epochs": 2, "batch_size": 4, "device": "cpu", "progress": False, "max_steps_per_epoch": 1}}
    path = tmp_path / "run.json"
    path.write_text(json.dumps(config))
    build_dataset(**data)  # rendered now, so that its progress bar is not part of what the command prints
    capsys.readouterr()

    real_train = hpelib.engine.train

    def interrupted_in_epoch_2(*args, **kwargs):
        real_train(*args, **kwargs, stop_after_epoch=1)
        raise KeyboardInterrupt

    monkeypatch.setattr(hpelib.engine, "train", interrupted_in_epoch_2)
    assert cli_main(["train", "--config", str(path)]) == 130
    assert _one_error_line(capsys) == (f"interrupted: the checkpoint after epoch 1/2 is kept in {out}; "
                                       "run the same command again to resume from it")

    def interrupted_at_once(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(hpelib.engine, "train", interrupted_at_once)
    assert cli_main(["train", "--config", str(path), "--out-dir", str(tmp_path / "new")]) == 130
    assert _one_error_line(capsys) == (f"interrupted before the first epoch finished: nothing is saved in "
                                       f"{tmp_path / 'new'}; run the same command again to start the run")
    # with --restart the checkpoint of the earlier attempt is not this run's
    assert cli_main(["train", "--config", str(path), "--restart"]) == 130
    assert _one_error_line(capsys).startswith(
        f"interrupted before the first epoch finished: nothing is saved in {out};")


@pytest.mark.parametrize("name", ["SIGTERM", "SIGUSR2"])  # SIGUSR2: SLURM's warning before a job's time limit
def test_sigterm_mid_epoch_saves_the_step_and_the_resumed_run_is_exact(tmp_path, monkeypatch, synth_root, name):
    """A stop signal after step 3 of epoch 1 (of 2): one step lost at most, and resuming gives the same weights."""
    import os
    import signal

    from hpelib.engine import TrainingStopped
    from hpelib.engine import loop

    cfg = tcfg(batch_size=2)  # 4 steps per epoch on 8 images
    full = train(MODEL, synthetic(synth_root), None, cfg, tmp_path / "full")
    real_step, calls = loop._optimizer_step, []

    def step_then_signal(fit, total):
        real_step(fit, total)
        calls.append(1)
        if len(calls) == 3:
            os.kill(os.getpid(), getattr(signal, name))  # a real signal, handled between two steps

    monkeypatch.setattr(loop, "_optimizer_step", step_then_signal)
    with pytest.raises(TrainingStopped, match=rf"stopped by {name} at epoch 1/2, step 3/4.*run again to resume"):
        train(MODEL, synthetic(synth_root), None, cfg, tmp_path / "split")
    saved = C.read_checkpoint(tmp_path / "split" / "checkpoint.pt")
    assert saved["epoch"] == 0 and saved["step"] == 3 and len(calls) == 3
    assert signal.getsignal(getattr(signal, name)) is signal.SIG_DFL  # the handler is gone again
    monkeypatch.setattr(loop, "_optimizer_step", real_step)
    resumed = train(MODEL, synthetic(synth_root), None, cfg, tmp_path / "split")
    a, b = weights(tmp_path / "full" / "model.pt"), weights(tmp_path / "split" / "model.pt")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert resumed["train_loss"] == pytest.approx(full["train_loss"], rel=1e-12)
    log = (tmp_path / "split" / "train.log").read_text()
    assert f"stopped by {name} at epoch 1/2, step 3/4" in log and "resumed from epoch 0/2, step 3/4" in log


def test_epoch_batches_are_the_loaders_own(synth_root):
    from hpelib.engine.data import epoch_batches, remaining_loader, train_loader

    class Indexed(torch.utils.data.Dataset):
        def __len__(self):
            return 23

        def __getitem__(self, i):
            return torch.tensor(i)

    loader = train_loader(Indexed(), TrainConfig(batch_size=4, num_workers=0), 5, torch.device("cpu"))
    predicted = epoch_batches(loader)
    assert predicted == [b.tolist() for b in loader] and len(predicted) == 5  # 23 // 4, last dropped
    again = train_loader(Indexed(), TrainConfig(batch_size=4, num_workers=0), 5, torch.device("cpu"))
    assert [b.tolist() for b in remaining_loader(again, 2)] == predicted[2:]


def test_cli_sigterm_saves_the_step_it_was_in_and_exits_143(tmp_path, synth_root):
    """The engine CLI as a cluster stops it: SIGTERM mid-training, one line, exit 143, then it resumes."""
    import signal
    import subprocess
    import sys
    import time

    data = {"name": "synthetic", "root": str(synth_root), "image_size": SIZE, "seed": 7, "split": "train", "n": 8}
    out = tmp_path / "run"
    config = {"out_dir": str(out), "model": MODEL, "train_data": data,
              "train": {"epochs": 400, "batch_size": 2, "device": "cpu", "progress": False}}
    (tmp_path / "run.json").write_text(json.dumps(config))
    command = [sys.executable, "-m", "hpelib.engine.cli", "train", "--config", str(tmp_path / "run.json")]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not ((out / "train.log").is_file() and "epoch 2/400" in (out / "train.log").read_text()):
        assert time.time() < deadline and proc.poll() is None, proc.communicate()
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("interrupted: train: stopped by SIGTERM "), err
    saved = C.read_checkpoint(out / "checkpoint.pt")  # mid-epoch, or after the epoch whose last step it hit
    assert saved["epoch"] >= 2 and (saved.get("step", 0) > 0) == (" at epoch " in lines[0])
