"""Studies on a real SLURM: slurmctld, slurmd and slurmdbd of ``tests/cluster/slurm-up.sh`` on this machine.

The runner is started as a user starts it (``python -m hpelib.study ... --executor slurm``), with the real
notebooks on tiny synthetic heads; jobs are real SLURM jobs (sbatch through submitit), their time limits,
warnings, requeues and cancels SLURM's own. Skipped, with the script's reason, where that SLURM cannot start
(not root, packages missing). ``.ci/run`` installs and starts it before the tests.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("submitit")
pytestmark = pytest.mark.slurm

REPO = Path(__file__).resolve().parents[1]

STUDY = """name: real
image_size: 32
model: {{backbone: resnet18-narrow, pose_head: binned}}
data:
  train: {{name: synthetic, split: train, n: {n}}}
  test:
    synthetic: {{name: synthetic, split: test, n: 16}}
train: {{epochs: {epochs}, batch_size: 16, lr: 0.002}}
seeds: {seeds}
scenarios:
  baseline: [{{}}]
report: false
"""


@pytest.fixture(scope="module")
def slurm():
    """The one-node SLURM, started if it is not running (nothing is installed from here)."""
    done = subprocess.run(["bash", str(REPO / "tests/cluster/slurm-up.sh")], capture_output=True, text=True,
                          env={**os.environ, "SLURM_UP_INSTALL": "0"}, timeout=300)
    if done.returncode != 0:
        pytest.skip(done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "no SLURM here")


@pytest.fixture
def threads(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the same threads per run for both executors


def _study(tmp_path: Path, epochs: int, seeds=(0,), n: int = 64) -> Path:
    path = tmp_path / "real.yaml"
    path.write_text(STUDY.format(epochs=epochs, seeds=list(seeds), n=n))
    return path


def _runner(study: Path, out: Path, log: Path, *options: str) -> subprocess.Popen:
    with open(log, "a") as f:
        return subprocess.Popen(
            [sys.executable, "-u", "-m", "hpelib.study", str(study), "--out", str(out), "--executor", "slurm",
             "--slurm-gpus-per-run", "0", "--slurm-cpus-per-run", "1", "--slurm-mem-gb", "1", *options],
            stdout=f, stderr=subprocess.STDOUT, cwd=REPO,
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def _lines(log: Path) -> list[str]:
    """The runner's lines without its progress bar."""
    text = log.read_text().replace("\r", "\n")
    return [line.strip() for line in text.splitlines() if line.strip() and "run/s" not in line and "?run" not in line]


def _wait(condition, timeout: float, what: str, runner: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert runner.poll() is None, f"the runner ended (status {runner.returncode}) before {what}:\n{log.read_text()}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.5)


def _epochs(out: Path, rid: str) -> list[str]:
    log = out / rid / "train.log"
    return [line.split(":")[0] for line in log.read_text().splitlines() if line.startswith("epoch ")] \
        if log.is_file() else []


def _job(out: Path, rid: str) -> str:
    return json.loads((out / rid / "slurm_job.json").read_text())["job_id"]


def _accounted(job_id: str) -> list[str]:
    """sacct's rows for the job (one per run of it: requeues show as REQUEUED rows)."""
    done = subprocess.run(["sacct", "-D", "-X", "-n", "-P", "-j", job_id, "-o", "State"], capture_output=True,
                          text=True, check=True)
    return [line.split()[0] for line in done.stdout.splitlines() if line.strip()]


def test_a_study_runs_as_slurm_jobs_and_equals_the_local_run(slurm, threads, tmp_path):
    study = _study(tmp_path, epochs=3, seeds=(0, 1, 2))
    log = tmp_path / "runner.out"
    runner = _runner(study, tmp_path / "slurm", log, "--slurm-time-min", "10")
    try:
        assert runner.wait(timeout=600) == 0, log.read_text()
    finally:
        runner.kill()
    local = subprocess.run([sys.executable, "-m", "hpelib.study", str(study), "--out", str(tmp_path / "local")],
                           cwd=REPO, capture_output=True, text=True)
    assert local.returncode == 0, local.stdout + local.stderr
    jobs = set()
    for seed in (0, 1, 2):
        rid = f"baseline/none/lf1_s{seed}"
        jobs.add(_job(tmp_path / "slurm", rid))
        assert _accounted(_job(tmp_path / "slurm", rid)) == ["COMPLETED"]
        slurm_metrics, local_metrics = (json.loads((tmp_path / where / rid / "metrics.json").read_text())
                                        for where in ("slurm", "local"))
        for key in ("yaw", "pitch", "roll", "mae", "n"):
            assert slurm_metrics[key] == local_metrics[key], (rid, key)
    assert len(jobs) == 3  # one job a run


def test_a_run_longer_than_its_time_limit_finishes_over_requeued_jobs(slurm, tmp_path):
    """2-minute limits: each job is warned (USR2), saves the step it is in and is requeued by the job itself;
    one runner command waits it out. Every epoch is trained once."""
    epochs = 500  # ~3 minutes of training on an idle 2-core machine: 2-4 jobs of 2 minutes
    study = _study(tmp_path, epochs=epochs, n=128)
    out, log, rid = tmp_path / "out", tmp_path / "runner.out", "baseline/none/lf1_s0"
    runner = _runner(study, out, log, "--slurm-time-min", "2")
    try:
        assert runner.wait(timeout=1500) == 0, "\n".join(_lines(log))
    finally:
        runner.kill()
    states = _accounted(_job(out, rid))
    assert len(states) >= 2 and states[-1] == "COMPLETED" and set(states[:-1]) == {"REQUEUED"}, states
    assert _epochs(out, rid) == [f"epoch {e}/{epochs}" for e in range(1, epochs + 1)]  # none trained twice
    train_log = (out / rid / "train.log").read_text()
    assert train_log.count("stopped by SIGUSR2") + train_log.count("stopped by SIGTERM") >= len(states) - 1
    requeued = [line for line in _lines(log) if line.startswith(f"REQUEUED {rid}")]
    assert len(requeued) == len(states) - 1, _lines(log)
    summary = json.loads((out / "study_summary.json").read_text())["runs"][rid]
    assert summary["status"] == "done" and summary["requeues"] == len(states) - 1


def test_a_cancelled_job_is_named_and_the_next_command_resumes_it(slurm, tmp_path):
    study = _study(tmp_path, epochs=200)
    out, log, rid = tmp_path / "out", tmp_path / "runner.out", "baseline/none/lf1_s0"
    runner = _runner(study, out, log, "--slurm-time-min", "10")
    try:
        _wait(lambda: len(_epochs(out, rid)) >= 3, 300, "the job to train", runner, log)
        job_id = _job(out, rid)
        subprocess.run(["scancel", job_id], check=True)
        cancelled = time.monotonic()
        assert runner.wait(timeout=120) == 1
        seen = time.monotonic() - cancelled
    finally:
        runner.kill()
    failed = [line for line in _lines(log) if line.startswith(f"FAILED {rid}")]
    assert failed and f"JobCancelled: job {job_id} was cancelled" in failed[0], _lines(log)
    assert seen < 30, seen
    assert json.loads((out / "failures.json").read_text())[0]["ename"] == "JobCancelled"
    again = _runner(study, out, log, "--slurm-time-min", "10")
    try:
        assert again.wait(timeout=900) == 0, "\n".join(_lines(log))
    finally:
        again.kill()
    assert _job(out, rid) != job_id
    assert f"RESUME {rid}: from epoch" in log.read_text()
    assert "stopped by SIGTERM" in (out / rid / "train.log").read_text()  # scancel: the step under way was saved
    assert _epochs(out, rid) == [f"epoch {e}/200" for e in range(1, 201)]  # and the resume trained none twice


def test_a_restarted_runner_attaches_to_its_jobs_and_collects_them(slurm, tmp_path):
    """Ctrl-C leaves the jobs running; the next runner attaches to both, submits nothing twice, and waits out a
    requeue (``scontrol requeue``: SIGTERM, as preemption) of one of them."""
    epochs = 300
    study = _study(tmp_path, epochs=epochs, seeds=(0, 1))
    out, log = tmp_path / "out", tmp_path / "runner.out"
    rids = ["baseline/none/lf1_s0", "baseline/none/lf1_s1"]
    first = _runner(study, out, log, "--slurm-time-min", "10")
    second = None
    try:
        _wait(lambda: all(len(_epochs(out, rid)) >= 1 for rid in rids), 300, "both jobs to train", first, log)
        jobs = {rid: _job(out, rid) for rid in rids}
        first.send_signal(signal.SIGINT)  # Ctrl-C: the runner stops, its jobs keep running
        assert first.wait(timeout=60) == 130
        assert all(_accounted(j) == ["RUNNING"] for j in jobs.values())
        second = _runner(study, out, log, "--slurm-time-min", "10")
        _wait(lambda: all(f"ATTACH {rid}: job {jobs[rid]}" in log.read_text() for rid in rids), 120,
              "the second runner to attach", second, log)
        subprocess.run(["scontrol", "requeue", jobs[rids[1]]], check=True)
        assert second.wait(timeout=900) == 0, "\n".join(_lines(log))
    finally:
        for runner in (first, second):
            if runner is not None:
                runner.kill()
    lines = _lines(log)
    for rid, job_id in jobs.items():
        assert _job(out, rid) == job_id  # nothing submitted twice
        assert _epochs(out, rid) == [f"epoch {e}/{epochs}" for e in range(1, epochs + 1)]
    assert _accounted(jobs[rids[0]]) == ["COMPLETED"]
    assert _accounted(jobs[rids[1]]) == ["REQUEUED", "COMPLETED"]
    assert "stopped by SIGTERM" in (out / rids[1] / "train.log").read_text()  # the requeue's SIGTERM: step saved
    requeued = [line for line in lines if line.startswith("REQUEUED")]
    assert len(requeued) == 1, lines
    assert requeued[0].startswith(f"REQUEUED {rids[1]}: job {jobs[rids[1]]} is queued again (1 so far) (stopped by "
                                  "SIGTERM "), requeued  # "at epoch E, step S" or "after epoch E"
