"""Studies through submitit (``--executor slurm``), on submitit's local executor and on fake SLURM commands.

The fake notebooks of tests/test_study.py, with one more cell: a run listed in
``$FAKE_KILL`` kills the process that executes its notebook (the job, or the
local child), and one listed in ``$FAKE_WAIT`` waits for the file
``$FAKE_RELEASE``. ``SlurmOptions(cluster="local")`` submits through
submitit's local executor: the same submission, pickles and results as on a
cluster, run as local processes.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from test_study import PRETRAIN_NB, TRAIN_NB, _notebook, tiny  # noqa: F401 (tiny: a fixture)

from hpelib import study as st
from hpelib.engine.slurm_env import first_host, torch_distributed_env_from_slurm
from hpelib.study.execute import prepare_folder
from hpelib.runs import SLURM_JOB
from hpelib.study.executors import SlurmOptions, SubmititExecutor

pytest.importorskip("submitit")

REPO = Path(__file__).resolve().parents[1]
LOCAL = SlurmOptions(cluster="local", time_min=10)

CONTROL = """
import os, pathlib, signal, time
_run = spec["labels"]["run"]
os.write(2, f"the kernel's stderr: {_run}\\n".encode())  # fd 2 of the kernel process: the run's kernel.log
with open(os.environ["FAKE_LOG"] + ".started", "a") as f:
    f.write(_run + "\\n")
if _run in pathlib.Path(os.environ["FAKE_KILL"]).read_text().split():
    os.kill(os.getppid(), signal.SIGKILL)  # the process executing this notebook
    os.kill(os.getpid(), signal.SIGKILL)
if _run in pathlib.Path(os.environ["FAKE_WAIT"]).read_text().split():
    while not pathlib.Path(os.environ["FAKE_RELEASE"]).exists():
        time.sleep(0.1)
"""

REPORTED = """
(out / "metrics.json").write_text(json.dumps({"yaw": 2.0 + seed, "pitch": 3.0, "roll": 4.0, "mae": 3.0 + seed / 3,
                                             "geodesic": 5.0, "n": 1, "train_time_s": 5.0}))  # what the report reads
"""


@pytest.fixture
def study(tiny, monkeypatch):
    """The tiny study with 5 runs (rotation and jigsaw pre-training, their fine-tunes, the baseline)."""
    nb = tiny["yaml"].parent / "nb"
    _notebook(nb / "pretrain.ipynb", 'spec = {}\nout_dir = "."', CONTROL + PRETRAIN_NB)
    _notebook(nb / "train.ipynb", 'spec = {}\nout_dir = "."', CONTROL + TRAIN_NB + REPORTED)
    text = tiny["yaml"].read_text().replace("  combined: [{pretrain: rotation, aux: {jigsaw: 0.25}}]\n", "")
    tiny["yaml"].write_text(text)
    for name in ("kill", "wait"):
        tiny[name] = tiny["log"].parent / f"{name}.txt"
        tiny[name].write_text("")
        monkeypatch.setenv(f"FAKE_{name.upper()}", str(tiny[name]))
    tiny["release"] = tiny["log"].parent / "release"
    monkeypatch.setenv("FAKE_RELEASE", str(tiny["release"]))
    return tiny


def _summary(out: Path) -> dict:
    return {rid: s["status"] for rid, s in json.loads((out / "study_summary.json").read_text())["runs"].items()}


def _results(out: Path, runs) -> dict:
    """What each complete run wrote, and the report's rows."""
    from hpelib.report.collect import collect

    files = {(r.run_id, name): (r.folder(out) / name).read_text() for r in runs
             for name in ("metrics.json", "config.json", "predictions.csv", "model.pt")
             if (r.folder(out) / name).is_file()}
    rows = collect(out, runs=[r.run_id for r in runs if r.kind == "train"]).drop(columns="path")
    rows = rows.astype(str)  # NaN as "nan": equal to itself
    return {"files": files, "rows": rows.to_dict("records")}


@pytest.mark.filterwarnings("ignore:left out")  # the pre-training runs: in no table
def test_a_study_through_submitit_fails_resumes_and_equals_the_local_run(study):
    """A planned failure, a killed job, a resume: the same outcomes and results as --executor local."""
    study["fail"].write_text("pretrain/jigsaw_s0\n")
    study["kill"].write_text("baseline/none/lf0.5_s0\n")
    outs = {"local": study["out"] / "local", "slurm": study["out"] / "slurm"}
    for name, options in (("local", None), ("slurm", LOCAL)):
        assert st.run_study(study["yaml"], outs[name], slurm=options) == 1
    summary = _summary(outs["slurm"])
    assert summary == _summary(outs["local"]) == {
        "pretrain/rotation_s0": "done", "pretrain/jigsaw_s0": "failed", "baseline/none/lf0.5_s0": "failed",
        "pretrain/rotation/lf0.5_s0": "done", "pretrain/jigsaw/lf0.5_s0": "skipped (dependency failed)"}
    out = outs["slurm"]
    failures = {f["run"]: f for f in json.loads((out / "failures.json").read_text())}
    assert failures["pretrain/jigsaw_s0"]["ename"] == "RuntimeError"  # the notebook's own error, its cell
    assert "planned failure" in failures["pretrain/jigsaw_s0"]["evalue"]
    assert (out / "pretrain/jigsaw_s0/FAILED").is_file()
    killed = failures["baseline/none/lf0.5_s0"]
    assert killed["ename"] == "JobLost" and "ended without a result (killed" in killed["evalue"]
    local_failures = {f["run"]: f for f in json.loads((outs["local"] / "failures.json").read_text())}
    assert local_failures["baseline/none/lf0.5_s0"]["ename"] == "ProcessDied"
    jobs = {rid: json.loads((out / rid / SLURM_JOB).read_text()) for rid in summary if (out / rid / SLURM_JOB).exists()}
    assert sorted(jobs) == sorted(rid for rid, s in summary.items() if not s.startswith("skipped"))
    for rid, job in jobs.items():  # the record, submitit's files in <out>/.submitit/<job id>/, the kernel's log
        assert job["run_id"] == rid and Path(job["stdout"]).parent == out / ".submitit" / job["job_id"]
        assert (out / rid / "kernel.log").is_file()
    assert "the kernel's stderr: pretrain/rotation_s0" in (out / "pretrain/rotation_s0/kernel.log").read_text()

    # the same command again: complete runs skipped; the failed, killed and skipped ones run (a new job each)
    study["fail"].write_text("")
    study["kill"].write_text("")
    study["log"].write_text("")
    lines = []
    assert st.run_study(study["yaml"], out, slurm=LOCAL, echo=lines.append) == 0
    assert sorted(study["log"].read_text().split()) == [
        "baseline/none/lf0.5_s0", "pretrain/jigsaw/lf0.5_s0", "pretrain/jigsaw_s0"]
    again = json.loads((out / "baseline/none/lf0.5_s0" / SLURM_JOB).read_text())
    assert again["job_id"] != jobs["baseline/none/lf0.5_s0"]["job_id"]
    assert not (out / "pretrain/jigsaw_s0/FAILED").exists()
    assert st.run_study(study["yaml"], outs["local"]) == 0
    runs = st.expand(st.load_study(study["yaml"]), out)
    slurm, local = _results(out, runs), _results(outs["local"], runs)
    assert len(slurm["files"]) == 13 and len(slurm["rows"]) == 3  # 3 fine-tunes: 3 report rows
    assert slurm == local


def _start_runner(study, name: str) -> tuple[subprocess.Popen, Path]:
    """``python -m hpelib.study`` through submitit's local executor, its output in a file (jobs inherit no pipe)."""
    log = study["out"].parent / f"{name}.out"
    with open(log, "w") as f:
        proc = subprocess.Popen([sys.executable, "-u", "-m", "hpelib.study", str(study["yaml"]),
                                 "--out", str(study["out"]), "--executor", "slurm", "--slurm-cluster", "local"],
                                stdout=f, stderr=subprocess.STDOUT, cwd=REPO,
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # Ctrl-C reaches it
    return proc, log


def _wait_for(condition, what: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def test_a_restarted_runner_attaches_to_its_running_job(study):
    text = study["yaml"].read_text().replace("  pretrain: [{pretrain: rotation}, {pretrain: jigsaw}]\n", "")
    study["yaml"].write_text(text)
    rid = "baseline/none/lf0.5_s0"
    study["wait"].write_text(rid + "\n")
    started = Path(str(study["log"]) + ".started")
    runners = []
    try:
        first, first_log = _start_runner(study, "first")
        runners.append(first)
        _wait_for(lambda: started.is_file() and rid in started.read_text(), "the job's notebook to start")
        job_id = json.loads((study["out"] / rid / SLURM_JOB).read_text())["job_id"]
        first.send_signal(signal.SIGINT)  # Ctrl-C: the runner stops, its job keeps running
        assert first.wait(timeout=60) == 130
        assert f"1 submitted job(s) keep running ({job_id})" in first_log.read_text()
        second, second_log = _start_runner(study, "second")
        runners.append(second)
        _wait_for(lambda: f"ATTACH {rid}: job {job_id} submitted" in second_log.read_text(), "the second runner")
        study["release"].write_text("")
        assert second.wait(timeout=120) == 0, second_log.read_text()
    finally:
        study["release"].write_text("")  # the job ends whatever happened
        for runner in runners:
            runner.kill()
    assert started.read_text().split() == [rid]  # one execution, one submission
    assert json.loads((study["out"] / rid / SLURM_JOB).read_text())["job_id"] == job_id
    assert [p.name for p in (study["out"] / ".submitit").iterdir() if p.name.isdigit()] == [job_id]
    assert st.is_complete(st.expand(st.load_study(study["yaml"]), study["out"])[0], study["out"])


FAKE_SLURM = {  # commands on PATH: sbatch submits job 4242, squeue lists it as $FAKE_BIN/squeue.state says
    "srun": "exit 0",  # ("gone": not listed), scontrol shows $FAKE_BIN/scontrol.state, scancel and sacct are logged
    "sbatch": 'cat "${@: -1}" > "$FAKE_BIN/sbatch.sh"; echo "Submitted batch job 4242"',
    "squeue": 'echo "$@" >> "$FAKE_BIN/squeue.log"; state=$(cat "$FAKE_BIN/squeue.state"); '
              '[ "$state" = gone ] || echo "4242|$state|$(cat "$FAKE_BIN/restarts" 2>/dev/null || echo 0)|"',
    "scontrol": '[ -f "$FAKE_BIN/scontrol.state" ] || { echo "Invalid job id specified" >&2; exit 1; }; '
                'echo "JobId=4242 JobName=x JobState=$(cat "$FAKE_BIN/scontrol.state") Reason=None"',
    "scancel": 'echo "$@" >> "$FAKE_BIN/scancel.log"',
    "sacct": 'echo "$@" >> "$FAKE_BIN/sacct.log"; echo "Slurm accounting storage is disabled" >&2; exit 1',
}


def test_the_slurm_path_on_fake_slurm_commands(study, tmp_path, monkeypatch):
    """The job's sbatch options, its record, attaching after a restart, a lost job, a stale job cancelled."""
    from submitit.core.utils import cloudpickle_dump

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, body in FAKE_SLURM.items():
        (bin_dir / name).write_text(f"#!/bin/bash\n{body}\n")
        (bin_dir / name).chmod(0o755)
    squeue = bin_dir / "squeue.state"
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_BIN", str(bin_dir))
    options = SlurmOptions(partition="gpu", gpus_per_run=2, time_min=90, cpus_per_run=4, mem_gb=16, account="acc",
                           qos="high", setup=["module load cuda"])
    out = study["out"]
    run = st.expand(st.load_study(study["yaml"]), out)[0]
    folder = prepare_folder(run, out)
    handle = SubmititExecutor(out, options).start(run, folder)
    sbatch = (bin_dir / "sbatch.sh").read_text()
    for line in ("--partition=gpu", "--gpus-per-node=2", "--time=90", "--cpus-per-task=4", "--mem=16GB",
                 "--account=acc", "--qos=high", f"--job-name=hpelib:{run.run_id}", f"--output={out}/.submitit/%j/"):
        assert f"#SBATCH {line}" in sbatch, line
    assert "module load cuda" in sbatch
    record = json.loads((folder / SLURM_JOB).read_text())
    assert record["job_id"] == "4242" and record["fingerprint"] == run.fingerprint
    squeue.write_text("PENDING")
    assert handle.poll() is None  # queued
    handle.stop()
    assert not (bin_dir / "scancel.log").exists()  # Ctrl-C leaves the job running

    lines = []
    squeue.write_text("RUNNING")
    assert SubmititExecutor(out, options).attach(run, False, lines.append) is not None
    assert not (bin_dir / "sacct.log").exists()  # whether a job runs is squeue's answer, never sacct's
    squeue.write_text("gone")
    assert SubmititExecutor(out, options).attach(run, False, lines.append) is None
    assert lines == [f"ATTACH {run.run_id}: job 4242 submitted {record['submitted']} (still queued or running)",
                     f"LOST {run.run_id}: job 4242 ended without a result; submitting it again"]
    # a job that succeeded while no runner watched: its result is collected, not run again
    (folder / "metrics.json").write_text("{}")
    cloudpickle_dump(("success", {"ok": True, "seconds": 3.0, "error": None}), out / ".submitit/4242/4242_0_result.pkl")
    attached = SubmititExecutor(out, options).attach(run, False, lines.append)
    assert attached.poll() == {"ok": True, "seconds": 3.0, "error": None}
    # a job still running with other parameters (or --force) is cancelled, and the run submitted anew
    squeue.write_text("PENDING")
    assert SubmititExecutor(out, options).attach(run, True, lines.append) is None
    assert (bin_dir / "scancel.log").read_text().split() == ["4242"]


def test_requeues_and_lost_jobs_are_named_from_slurm(study, tmp_path, monkeypatch):
    """A requeue is shown once and counted; a job gone without a result is named by its state (scontrol), at
    once; without accounting (sacct fails) one line says so, and a job SLURM has forgotten is 'lost'."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, body in FAKE_SLURM.items():
        (bin_dir / name).write_text(f"#!/bin/bash\n{body}\n")
        (bin_dir / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_BIN", str(bin_dir))
    out = study["out"]
    run = st.expand(st.load_study(study["yaml"]), out)[0]
    folder = prepare_folder(run, out)
    executor = SubmititExecutor(out, SlurmOptions(gpus_per_run=0))
    executor.poll_s = executor.queue.every_s = 0.0  # ask squeue at every poll
    lines = []
    executor.echo = lines.append
    handle = executor.start(run, folder)
    (bin_dir / "squeue.state").write_text("RUNNING")
    assert handle.poll() is None and lines == []
    (folder / "train.log").write_text("epoch 1/9: loss 1\nstopped by SIGUSR2 at epoch 2/9, step 3/4: state saved in "
                                      "checkpoint.pt\n")
    (bin_dir / "restarts").write_text("1")
    (bin_dir / "squeue.state").write_text("PENDING")
    assert handle.poll() is None and handle.poll() is None
    assert lines == [f"REQUEUED {run.run_id}: job 4242 is queued again (1 so far) "
                     "(stopped by SIGUSR2 at epoch 2/9, step 3/4)"]
    (bin_dir / "squeue.state").write_text("gone")
    (bin_dir / "scontrol.state").write_text("CANCELLED")
    outcome = handle.poll()  # at once: no grace period for a job SLURM says was cancelled
    assert outcome["ok"] is False and outcome["requeues"] == 1
    assert outcome["error"]["ename"] == "JobCancelled"
    assert outcome["error"]["evalue"].startswith("job 4242 was cancelled (scancel, or by an administrator) (stopped by "
                                                 "SIGUSR2 at epoch 2/9, step 3/4); run the same command again")
    for state, name in (("TIMEOUT", "JobTimedOut"), ("OUT_OF_MEMORY", "JobOutOfMemory"),
                        ("NODE_FAIL", "JobNodeFailed")):
        (bin_dir / "scontrol.state").write_text(state)
        assert handle.poll()["error"]["ename"] == name
    (bin_dir / "scontrol.state").unlink()  # slurmctld forgot the job, and there is no accounting
    executor.grace_s = 0.0
    assert handle.poll()["error"]["ename"] == "JobLost" and handle.poll()["error"]["ename"] == "JobLost"
    assert [line for line in lines if line.startswith("note:")] == [
        "note: this cluster keeps no job accounting (sacct failed): why a job ended is read from scontrol while "
        "SLURM remembers the job (MinJobAge), and lost jobs are found with squeue"]


def test_slurm_options_need_the_slurm_executor(study, capsys):
    for argv in (["--slurm-partition", "gpu"], ["--executor", "slurm", "--gpus", "0"]):
        with pytest.raises(SystemExit) as e:
            st.main([str(study["yaml"]), *argv])
        assert e.value.code == 2
    err = capsys.readouterr().err
    assert "--slurm-partition need(s) --executor slurm" in err and "--gpus is for --executor local" in err


def test_torch_distributed_env_from_slurm():
    env = {"SLURM_PROCID": "5", "SLURM_NTASKS": "8", "SLURM_LOCALID": "1", "SLURM_JOB_ID": "123456",
           "SLURM_JOB_NODELIST": "gpu[07-08]"}
    assert torch_distributed_env_from_slurm(env) == {
        "RANK": "5", "WORLD_SIZE": "8", "LOCAL_RANK": "1", "MASTER_ADDR": "gpu07", "MASTER_PORT": "33456"}
    assert torch_distributed_env_from_slurm({**env, "MASTER_PORT": "29500"})["MASTER_PORT"] == "29500"
    assert torch_distributed_env_from_slurm({**env, "RANK": "0"}) == {}  # torchrun's own variables win
    assert torch_distributed_env_from_slurm({"PATH": "/bin"}) == {}  # not an srun task
    assert first_host("node1") == "node1"
    assert first_host("gpu[07-09,12],cpu1") == "gpu07"
    assert first_host("rack[2-3]-n[01-04],x") == "rack2-n01"


JOIN = textwrap.dedent("""
    import os, sys
    import torch, torch.distributed as dist
    from hpelib.engine.slurm_env import torch_distributed_env_from_slurm
    os.environ.update(torch_distributed_env_from_slurm(os.environ))
    dist.init_process_group("gloo")
    total = torch.tensor([float(dist.get_rank())])
    dist.all_reduce(total)
    print(dist.get_rank(), dist.get_world_size(), os.environ["LOCAL_RANK"], int(total.item()))
    dist.destroy_process_group()
""")


def test_two_srun_tasks_join_one_process_group():
    """Two processes with the variables srun gives two tasks on one node form one Gloo group."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    procs = [subprocess.Popen([sys.executable, "-c", JOIN], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              env=dict(os.environ, OMP_NUM_THREADS="1", SLURM_PROCID=str(rank), SLURM_LOCALID=str(rank),
                                       SLURM_NTASKS="2", SLURM_JOB_NODELIST="localhost", MASTER_PORT=str(port)))
             for rank in range(2)]
    try:
        outputs = [p.communicate(timeout=120)[0] for p in procs]
    finally:
        for p in procs:
            p.kill()
    assert [o.split()[-4:] for o in outputs] == [["0", "2", "0", "1"], ["1", "2", "1", "1"]], outputs


def test_the_engine_joins_a_group_from_slurm_variables_only_with_several_tasks(monkeypatch):
    """A study's single SLURM task trains alone; srun's several tasks are mapped to torch.distributed."""
    import os

    import torch

    from hpelib.engine import distributed as D

    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.setenv(key, "recorded")  # so that monkeypatch removes what setup() adds
        monkeypatch.delenv(key)
    monkeypatch.setenv("SLURM_PROCID", "0")
    monkeypatch.setenv("SLURM_NTASKS", "1")
    monkeypatch.setenv("SLURM_JOB_ID", "77")
    info, _ = D.setup(torch.device("cpu"))
    assert info.world_size == 1 and "RANK" not in os.environ
    D.teardown(info)
    monkeypatch.setenv("SLURM_NTASKS", "2")
    monkeypatch.setenv("SLURM_LOCALID", "0")
    monkeypatch.setenv("SLURM_JOB_NODELIST", "node[3-4]")
    calls = []
    monkeypatch.setattr(D.dist, "init_process_group", lambda **kw: calls.append(kw))
    monkeypatch.setattr(D.dist, "get_rank", lambda: 0)
    monkeypatch.setattr(D.dist, "get_world_size", lambda: 2)
    D.setup(torch.device("cpu"))
    assert calls == [{"backend": "gloo"}]
    env = os.environ
    assert (env["RANK"], env["WORLD_SIZE"], env["MASTER_ADDR"], env["MASTER_PORT"]) == ("0", "2", "node3", "10077")
