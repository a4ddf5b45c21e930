"""Stopped the way clusters stop jobs: SIGTERM/SIGHUP to the runner, SIGKILL of the runner, held run folders.

These start the study runner as a user would (``python -m hpelib.study``), with the real notebooks on tiny
synthetic heads, and send it real signals.
"""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

STUDY = """name: stop
image_size: 32
model: {{backbone: resnet18-narrow, pose_head: binned}}
data:
  train: {{name: synthetic, split: train, n: 64}}
  test:
    synthetic: {{name: synthetic, split: test, n: 16}}
train: {{epochs: {epochs}, batch_size: 16, lr: 0.002}}
seeds: [0, 1, 2]
scenarios:
  baseline: [{{}}]
report: false
"""


def _study(tmp_path, epochs: int) -> Path:
    path = tmp_path / "stop.yaml"
    path.write_text(STUDY.format(epochs=epochs))
    return path


def _start(study: Path, out: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "hpelib.study", str(study), "--out", str(out), "--jobs", "2"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _epochs_done(out: Path, rid: str) -> int:
    log = out / rid / "train.log"
    return sum(line.startswith("epoch ") for line in log.read_text().splitlines()) if log.is_file() else 0


def _wait(condition, timeout: float, what: str) -> None:
    deadline = time.time() + timeout
    while not condition():
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def _processes_in(out: Path) -> list[psutil.Process]:
    """Living processes working in a folder under ``out`` (the notebook processes and their kernels)."""
    found = []
    for p in psutil.process_iter(["cwd"]):
        try:
            if p.info["cwd"] and Path(p.info["cwd"]).is_relative_to(out) and p.status() != psutil.STATUS_ZOMBIE:
                found.append(p)
        except (psutil.Error, ValueError):
            pass
    return found


RUNNING = ["baseline/none/lf1_s0", "baseline/none/lf1_s1"]


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_a_stopped_study_stops_its_runs_and_the_rerun_resumes_them(tmp_path, signum):
    out = tmp_path / "out"
    study = _study(tmp_path, epochs=40)
    runner = _start(study, out)
    _wait(lambda: all(_epochs_done(out, rid) >= 2 for rid in RUNNING), 120, "two runs training")
    runner.send_signal(signum)
    text, _ = runner.communicate(timeout=40)  # within the runner's grace period
    assert runner.returncode == 128 + signum, text
    name = signal.Signals(signum).name
    assert f"interrupted by {name}: 0 of 3 runs complete (kept), 2 stopped" in text
    assert not _processes_in(out), "a run outlived its runner"
    summary = json.loads((out / "study_summary.json").read_text())["runs"]
    assert [summary[rid]["status"] for rid in RUNNING] == ["interrupted (resumes from its checkpoint)"] * 2
    for rid in RUNNING:
        assert "stopped by SIGTERM" in (out / rid / "train.log").read_text(), rid  # at a step, or after an epoch
        assert not (out / rid / ".execution_request.json").exists()
    # the same command again: the stopped runs resume where they stopped, the third one starts
    rerun = _start(study, out)
    text, _ = rerun.communicate(timeout=600)
    assert rerun.returncode == 0, text
    for rid in RUNNING:
        log = (out / rid / "train.log").read_text()
        assert "resumed from epoch" in log and log.count("epoch 1/40:") == 1, log  # nothing trained twice
    assert "resumed" not in (out / "baseline/none/lf1_s2/train.log").read_text()


def test_runs_of_a_killed_runner_stop_by_themselves_and_a_finished_run_is_collected(tmp_path):
    out = tmp_path / "out"
    study = _study(tmp_path, epochs=40)
    runner = _start(study, out)
    _wait(lambda: all(_epochs_done(out, rid) >= 1 for rid in RUNNING), 120, "two runs training")
    assert _processes_in(out)
    runner.kill()  # SIGKILL: no chance to stop its children
    runner.communicate(timeout=30)
    t0 = time.time()
    _wait(lambda: not _processes_in(out), 15, "the orphaned runs to stop")
    assert time.time() - t0 < 15
    for rid in RUNNING:
        assert "stopped by SIGTERM" in (out / rid / "train.log").read_text(), rid

    # a run that a process finished while no runner watched: complete, never trained again
    short = _study(tmp_path, epochs=2)
    done = _start(short, out)
    assert done.communicate(timeout=600)[0] and done.returncode == 0
    meta_file = out / RUNNING[0] / "study_run.json"
    meta = json.loads(meta_file.read_text())
    meta_file.write_text(json.dumps(dict(meta, complete=False)))  # its runner died before recording it
    metrics = (out / RUNNING[0] / "metrics.json").read_bytes()
    again = _start(short, out)
    text, _ = again.communicate(timeout=300)
    assert again.returncode == 0 and f"COLLECTED {RUNNING[0]}" in text, text
    assert (out / RUNNING[0] / "metrics.json").read_bytes() == metrics


def test_a_run_folder_held_by_a_living_process_is_refused_with_its_pid(tmp_path):
    from hpelib.study.notebook_process import RUN_LOCK

    out = tmp_path / "out"
    study = _study(tmp_path, epochs=1).read_text().replace("seeds: [0, 1, 2]", "seeds: [0]")
    (tmp_path / "one.yaml").write_text(study)
    folder = out / "baseline/none/lf1_s0"
    folder.mkdir(parents=True)
    holder = subprocess.Popen([sys.executable, "-c", f"""
import fcntl, os, sys, time
f = open({str(folder / RUN_LOCK)!r}, "a+"); fcntl.flock(f, fcntl.LOCK_EX); f.write(str(os.getpid())); f.flush()
print("held", flush=True); time.sleep(120)
"""], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        runner = _start(tmp_path / "one.yaml", out)
        text, _ = runner.communicate(timeout=120)
        assert runner.returncode == 1
        assert f"is held by process {holder.pid}, still running this run" in text, text
    finally:
        holder.kill()
        holder.wait()


def test_a_slurm_job_warned_before_its_limit_saves_its_step_and_is_requeued(tmp_path):
    """Under --executor slurm (submitit's local executor here): the job's warning signal (USR2, what SLURM sends
    before the time limit and on preemption) makes the run save its state; submitit requeues the job, which
    resumes the run from that step; the runner, one command, waits it out."""
    pytest.importorskip("submitit")
    out = tmp_path / "out"
    (tmp_path / "one.yaml").write_text(_study(tmp_path, epochs=30).read_text().replace("seeds: [0, 1, 2]", "seeds: [0]"))
    log = tmp_path / "runner.out"
    with open(log, "w") as f:
        runner = subprocess.Popen([sys.executable, "-u", "-m", "hpelib.study", str(tmp_path / "one.yaml"),
                                   "--out", str(out), "--executor", "slurm", "--slurm-cluster", "local",
                                   "--slurm-gpus-per-run", "0", "--slurm-cpus-per-run", "1"],
                                  stdout=f, stderr=subprocess.STDOUT)
    rid = "baseline/none/lf1_s0"
    try:
        _wait(lambda: _epochs_done(out, rid) >= 2, 180, "the job to train")
        job_id = int(json.loads((out / rid / "slurm_job.json").read_text())["job_id"])
        (task,) = psutil.Process(job_id).children()  # submitit's local controller runs one task
        task.send_signal(signal.SIGUSR2)
        assert runner.wait(timeout=600) == 0, log.read_text()
    finally:
        runner.kill()
    train_log = (out / rid / "train.log").read_text()
    assert "stopped by SIGTERM" in train_log and "resumed from epoch" in train_log, train_log
    epochs = [line.split(":")[0] for line in train_log.splitlines() if line.startswith("epoch ")]
    assert epochs == [f"epoch {e}/30" for e in range(1, 31)]  # each epoch trained once
    assert json.loads((out / rid / "metrics.json").read_text())["n"] == 16
