"""Where a run's notebook executes: here, in a child process, or on a SLURM cluster through submitit.

The runner sees both executors alike: ``start(run, folder, gpu)`` returns what
:class:`~.scheduler.Scheduler` drives (an object with ``poll() -> None |
{"ok", "seconds", "error"}`` and ``stop()``), ``attach(run, force, echo)``
returns such an object for a run whose job an earlier runner submitted, and
``interrupt_note()`` says what became of the running runs after Ctrl-C.

* :class:`LocalExecutor` (``--executor local``, the default): the notebook in a
  child process (:class:`~.execute.Execution`); nothing outlives the runner.
* :class:`SubmititExecutor` (``--executor slurm``): one SLURM job per run,
  submitted with submitit when the scheduler starts the run (its dependencies
  done). The job calls :func:`run_notebook` on the node, which executes the
  notebook as the local child does. Each submission is recorded in the run
  folder (:data:`hpelib.runs.SLURM_JOB`), so that a runner started again waits for a job
  still queued or running instead of submitting it twice; the jobs outlive the
  runner (Ctrl-C leaves them running). submitit's own files go to
  ``<out>/.submitit/<job id>/``. ``SlurmOptions(cluster="local")`` submits
  through submitit's local executor instead (the same submission, pickles and
  results, as local processes): the tests' mode.
"""
from __future__ import annotations

import contextlib
import getpass
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..io import read_json, write_json
from ..runs import KERNEL_LOG, LOG, SLURM_JOB
from ..signals import handling
from . import notebook_process
from .execute import Execution, checked_result, failed_outside_notebook, gpu_ids, kernel_env, notebook_request
from .plan import Run
from .schema import StudyError

__all__ = ["LocalExecutor", "SubmititExecutor", "SlurmOptions", "run_notebook", "RunNotebook"]

#: SLURM job states (``squeue -o %T``) of a job that has ended
_ENDED = {"BOOT_FAIL", "CANCELLED", "COMPLETED", "DEADLINE", "FAILED", "NODE_FAIL", "OUT_OF_MEMORY", "REVOKED",
          "SPECIAL_EXIT", "TIMEOUT"}
#: a job that ended without a result, by its SLURM state: the error name, what happened, what to do
_LOST = {
    "CANCELLED": ("JobCancelled", "was cancelled (scancel, or by an administrator)",
                  "run the same command again to submit it anew; it resumes from its checkpoint"),
    "TIMEOUT": ("JobTimedOut", "reached its time limit and was not requeued",
                "raise --slurm-time-min or --slurm-max-requeues, or run the same command again: it resumes"),
    "OUT_OF_MEMORY": ("JobOutOfMemory", "ran out of memory", "raise --slurm-mem-gb"),
    "NODE_FAIL": ("JobNodeFailed", "lost its node (node failure)", "run the same command again: it resumes"),
    "PREEMPTED": ("JobPreempted", "was preempted and not requeued", "run the same command again: it resumes"),
    "BOOT_FAIL": ("JobNodeFailed", "could not boot its node", "run the same command again"),
    "DEADLINE": ("JobTimedOut", "reached its deadline", "run the same command again: it resumes"),
}


class LocalExecutor:
    """Each run's notebook in a child process of the runner, ``jobs`` at a time, one GPU each when there are GPUs."""

    poll_s = 0.2
    echo = staticmethod(print)

    def __init__(self, jobs: int, gpus: str | None = None, timeout_s: float | None = None):
        self.jobs, self.timeout_s = jobs, timeout_s
        self.gpus = gpu_ids(gpus) if jobs > 1 or gpus else []

    def submitted(self, run: Run) -> bool:
        return False  # nothing outlives the runner

    def attach(self, run: Run, force: bool, echo) -> None:
        return None

    def start(self, run: Run, folder: Path, gpu: str | None) -> Execution:
        return Execution(run, folder, kernel_env(self.jobs, gpu), self.timeout_s)

    def interrupt_note(self) -> str:
        return ("the running ones were stopped, each saving its state at the step it was in; "
                "run the same command again to continue")


@dataclass
class SlurmOptions:
    """The resources of each run's SLURM job (the ``--slurm-*`` options)."""

    partition: str | None = None  # None: the cluster's default partition
    gpus_per_run: int = 1
    time_min: int = 240
    warn_s: float | None = None  # the warning signal's lead time before the limit (None: see warning_lead_s)
    max_requeues: int = 20  # requeues at the time limit per job (each resumes the run; submitit's default is 3)
    cpus_per_run: int = 8
    mem_gb: float = 32
    account: str | None = None
    qos: str | None = None
    setup: list[str] = field(default_factory=list)  # shell lines run in the job before the run (module load ...)
    cluster: str = "slurm"  # "local": submitit's local executor, for tests

    def warning_lead_s(self) -> int:
        """Seconds before the time limit at which the job is warned (and saves its state, then is requeued).

        ``warn_s`` if given, else 90 s (submitit's default), but never more than
        a fifth of the limit, so that a short limit still leaves a job most of its time.
        """
        if self.warn_s is not None:
            return max(1, int(self.warn_s))
        return max(1, int(min(90.0, 0.2 * 60.0 * self.time_min)))


class SubmititExecutor:
    """Each run as a SLURM job submitted through submitit; the jobs outlive the runner (see the module's doc).

    Whether a job is still queued or running comes from one ``squeue`` call for
    all of them every :attr:`poll_s` seconds (:class:`SlurmQueue`), never from
    submitit's accounting calls, so a cluster without accounting stays quiet and
    a cancelled job is seen within seconds; why a job ended without a result,
    from ``scontrol`` or ``sacct`` (:func:`slurm_job_state`).
    """

    echo = staticmethod(print)  # the runner's line writer (above its progress bar)

    def __init__(self, out: Path, options: SlurmOptions, timeout_s: float | None = None):
        try:
            import submitit
        except ImportError:
            raise StudyError("--executor slurm needs submitit: pip install -e '.[cluster]'") from None
        self.out, self.options, self.timeout_s = Path(out), options, timeout_s
        self.gpus: list[str] = []  # SLURM gives each job its GPUs (CUDA_VISIBLE_DEVICES)
        self.poll_s = 0.2 if options.cluster == "local" else 5.0
        self.grace_s = 0.0 if options.cluster == "local" else 30.0  # a slow shared file system: the result may lag
        self.detached: list[str] = []  # ids of jobs left running by stop()
        self.folder = self.out / ".submitit" / "%j"
        self.queue = None if options.cluster == "local" else SlurmQueue(self.poll_s)
        self._no_accounting_said = False
        self._job_class = submitit.LocalJob if options.cluster == "local" else submitit.SlurmJob
        try:
            self._executor = submitit.AutoExecutor(folder=self.folder, cluster=options.cluster,
                                                   slurm_max_num_timeout=options.max_requeues)
        except RuntimeError as e:  # no srun here
            raise StudyError(f"--executor slurm: {e}") from None
        lead = options.warning_lead_s()
        self._executor.update_parameters(  # None: not asked for (no GPU line in the sbatch script when 0)
            timeout_min=options.time_min, slurm_signal_delay_s=lead,
            gpus_per_node=options.gpus_per_run or None,
            cpus_per_task=options.cpus_per_run, mem_gb=options.mem_gb, slurm_partition=options.partition,
            slurm_account=options.account, slurm_qos=options.qos, slurm_setup=list(options.setup))

    def submitted(self, run: Run) -> bool:
        """An earlier runner submitted a job for ``run``: the scheduler takes such runs first."""
        return (run.folder(self.out) / SLURM_JOB).is_file()

    def attach(self, run: Run, force: bool, echo) -> SubmittedRun | None:
        """The job an earlier runner submitted for ``run``, when it is still queued or running or it succeeded.

        ``None`` (submit anew) when there is none, when it failed or ended without a
        result (killed, lost), or when it was made for other parameters or with
        ``force``: such a job, if still alive, is cancelled first.
        """
        folder = run.folder(self.out)
        try:
            record = read_json(folder / SLURM_JOB)
            job = self._job_class(folder=record["folder"], job_id=str(record["job_id"]))
        except (OSError, ValueError, KeyError, TypeError):
            return None  # no record (or an unreadable one): submit anew
        alive = self.running(job, fresh=True)
        if force or record.get("fingerprint") != run.fingerprint:
            if alive:
                job.cancel(check=False)
                echo(f"CANCEL {run.run_id}: job {job.job_id} ran with " + ("--force" if force else "other settings"))
            return None
        if alive or _succeeded(job):
            what = "still queued or running" if alive else "it finished while no runner watched"
            echo(f"ATTACH {run.run_id}: job {job.job_id} submitted {record.get('submitted')} ({what})")
            return SubmittedRun(job, folder, self, run.run_id)
        if not job.paths.result_pickle.exists():
            state = self.ended_state(job.job_id) if self.queue is not None else None
            what = _LOST[state][1] if state in _LOST else "ended without a result"
            echo(f"LOST {run.run_id}: job {job.job_id} {what}; submitting it again")
        return None

    def running(self, job, fresh: bool = False) -> bool:
        """``job`` is queued or running (a requeued job too). ``fresh``: ask ``squeue`` now."""
        if self.queue is None:
            return _local_job_running(job)
        return self.queue.state(job.job_id, fresh)[0] not in (None, *_ENDED)

    def restarts(self, job) -> int:
        """How many times SLURM has requeued ``job`` so far (0 where the queue does not say)."""
        return 0 if self.queue is None else self.queue.state(job.job_id)[1]

    def ended_state(self, job_id: str) -> str | None:
        """SLURM's state of an ended job; says once, in one line, when the cluster keeps no accounting."""
        state, accounting = slurm_job_state(job_id)
        if not accounting and not self._no_accounting_said:
            self._no_accounting_said = True
            self.echo("note: this cluster keeps no job accounting (sacct failed): why a job ended is read from "
                      "scontrol while SLURM remembers the job (MinJobAge), and lost jobs are found with squeue")
        return state

    def start(self, run: Run, folder: Path, gpu: str | None = None) -> SubmittedRun:
        """Submit ``run`` (its folder prepared) and record the job in :data:`hpelib.runs.SLURM_JOB`."""
        self._executor.update_parameters(name=f"hpelib:{run.run_id}")
        job = self._executor.submit(RunNotebook(), notebook_request(run, Path(folder), self.timeout_s))
        write_json(Path(folder) / SLURM_JOB, {
            "job_id": job.job_id, "run_id": run.run_id, "fingerprint": run.fingerprint,
            "submitted": time.strftime("%Y-%m-%d %H:%M:%S"), "cluster": self.options.cluster,
            "folder": str(self.folder), "stdout": str(job.paths.stdout), "stderr": str(job.paths.stderr)})
        return SubmittedRun(job, Path(folder), self, run.run_id)

    def interrupt_note(self) -> str:
        if not self.detached:
            return "run the same command again to continue"
        ids = " ".join(self.detached)
        return (f"{len(self.detached)} submitted job(s) keep running ({ids}): run the same command again to wait "
                f"for them, or scancel {ids}")


class SubmittedRun:
    """A run's submitted job, as the scheduler sees it: :meth:`poll` gives its outcome once it has ended."""

    def __init__(self, job, folder: Path, executor: SubmititExecutor, run_id: str):
        self.job, self.folder, self.executor, self.run_id = job, Path(folder), executor, run_id
        self.requeues = executor.restarts(job)  # those before this runner saw the job are not shown again
        self._ended_at: float | None = None  # when the job was first seen ended without a result file

    def poll(self) -> dict | None:
        """``None`` while queued or running, then ``{"ok", "seconds", "error"}`` (the job function's return value).

        A requeue (time limit, preemption) is shown in a line and counted (``"requeues"`` in the outcome).
        """
        executor = self.executor
        restarts = executor.restarts(self.job)
        if restarts > self.requeues:
            self.requeues = restarts
            executor.echo(f"REQUEUED {self.run_id}: job {self.job.job_id} is queued again ({restarts} so far)"
                          f"{_last_stop(self.folder)}")
        if executor.running(self.job):
            return None
        if not self.job.paths.result_pickle.exists():
            state = executor.ended_state(self.job.job_id) if executor.queue is not None else None
            self._ended_at = self._ended_at or time.monotonic()
            if state not in _LOST and time.monotonic() - self._ended_at < executor.grace_s:
                return None  # a slow shared file system: the result may lag
            return self._counted(_lost_outcome(self.job, state, self.folder))
        try:
            result = self.job.result()
        except Exception as e:  # the job function itself failed on the node (an import error, a full disk ...)
            return self._counted(failed_outside_notebook(
                "JobFailed", f"job {self.job.job_id} failed outside the notebook: {_exception_line(e)}; "
                             f"see {self.job.paths.stderr}"))
        return self._counted(checked_result(result, self.folder))

    def _counted(self, outcome: dict) -> dict:
        return dict(outcome, requeues=self.requeues) if self.requeues else outcome

    def stop(self) -> None:
        """Leave the job running (the next runner attaches to it); it is listed by ``interrupt_note``."""
        self.executor.detached.append(self.job.job_id)


def _exception_line(e: Exception) -> str:
    """The last line of the traceback in submitit's ``FailedJobError`` (between two rules of dashes)."""
    parts = str(e).split("-" * 22)
    lines = parts[1].strip().splitlines() if len(parts) > 2 else []
    return lines[-1] if lines else str(e).strip()


def run_notebook(request: dict) -> dict:
    """What a run's job executes on the node: its notebook, as the local child process does.

    ``request`` is :func:`~.execute.notebook_request`'s; the kernel gets the
    repository on ``PYTHONPATH`` (:func:`~.execute.kernel_env`) and SLURM's GPUs
    (``CUDA_VISIBLE_DEVICES``), its output goes to the run's ``kernel.log``.
    Returns ``{"ok", "seconds", "error"}``.

    SIGTERM (``scancel``, ``scontrol requeue``, preemption: SLURM then ends the
    job) is passed on to the kernel, which saves its state, and the job exits
    with 143 without a result: the runner reads from SLURM what became of the
    job (requeued, or cancelled) rather than a failure of the notebook.
    """
    os.environ.update(kernel_env(1, None))  # this process is the job's own: the kernel inherits its environment
    if "OMP_NUM_THREADS" not in os.environ and os.environ.get("SLURM_CPUS_PER_TASK"):
        os.environ["OMP_NUM_THREADS"] = os.environ["SLURM_CPUS_PER_TASK"]  # torch's threads: the job's CPUs
    stopped: list[int] = []

    def pass_on(signum, frame):
        stopped.append(signum)
        notebook_process.tell_children(signal.SIGTERM)

    with _output_to(Path(request["cwd"]) / KERNEL_LOG), handling([signal.SIGTERM], pass_on):
        result = notebook_process.execute(**request)
    if stopped:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(128 + signal.SIGTERM)  # no result: SLURM requeues or ends the job
    return result


class RunNotebook:
    """The job function of a run: :func:`run_notebook`, requeued with its run's state when SLURM warns.

    SLURM sends the warning signal (submitit's ``--signal=USR2@<lead>``) before a
    job's time limit and on preemption, to every process of the job: the
    kernel's training loop takes it as a stop (it saves a mid-epoch checkpoint,
    ``hpelib.engine``) and submitit calls :meth:`checkpoint` in the job, which
    also asks the kernel to stop (SIGTERM), waits until the run's ``train.log``
    says the state is saved (at most :data:`~.execute.STOP_GRACE_S`), ends the
    kernel, and returns the same call, which submitit requeues: the next job
    runs the notebook again and the run resumes from that step.
    """

    def __call__(self, request: dict) -> dict:
        self.log_start = _size(Path(request["cwd"]) / LOG)  # what train.log held before this job
        return run_notebook(request)

    def checkpoint(self, request: dict):
        import submitit

        stop_kernel_and_wait(Path(request["cwd"]), since=getattr(self, "log_start", 0))
        return submitit.helpers.DelayedSubmission(self, request)


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def stop_kernel_and_wait(folder: Path, grace_s: float | None = None, since: int = 0) -> bool:
    """SIGTERM to this process's children (the kernel), then wait for the run to have saved its state.

    True when ``folder``'s ``train.log`` has a ``stopped by`` line after its
    first ``since`` bytes (the state is saved; the kernel may have stopped on
    SLURM's own signal already) or every child ended; the children still alive
    then are killed. Waits :data:`~.execute.STOP_GRACE_S` seconds at most.
    """
    import psutil

    from .execute import STOP_GRACE_S

    log = Path(folder) / LOG

    def saved() -> bool:
        try:
            with open(log, "rb") as f:
                f.seek(since)
                return b"stopped by" in f.read()
        except OSError:
            return False

    children = notebook_process.tell_children(signal.SIGTERM)
    deadline = time.monotonic() + (STOP_GRACE_S if grace_s is None else grace_s)
    done = saved()
    while not done and time.monotonic() < deadline:
        if not any(c.is_running() and c.status() != psutil.STATUS_ZOMBIE for c in children):
            break
        time.sleep(0.2)
        done = saved()
    for child in children:
        with contextlib.suppress(psutil.Error):
            child.kill()
    return done


@contextlib.contextmanager
def _output_to(path: Path):
    """File descriptors 1 and 2 (this process's and its children's stdout and stderr) appended to ``path``."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(fd) for fd in (1, 2)]
    with open(path, "ab") as log:
        for fd in (1, 2):
            os.dup2(log.fileno(), fd)
    try:
        yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        for fd, copy in zip((1, 2), saved):
            os.dup2(copy, fd)
            os.close(copy)


def _local_job_running(job) -> bool:
    """A job of submitit's local executor (the tests' mode) is still running."""
    if job.get_info()["jobState"] == "NO PROCESS AND NO RESULT":
        return _pid_alive(int(job.job_id))  # a local job re-created after a restart: its id is its process id
    return not job.done()


def _succeeded(job) -> bool:
    """The job left a result, and the notebook ran to its end."""
    if not job.paths.result_pickle.exists():
        return False
    try:
        return bool(job.result()["ok"])
    except Exception:
        return False


def _pid_alive(pid: int) -> bool:
    try:
        return os.waitpid(pid, os.WNOHANG)[0] == 0  # a child of this process: reaped if it has ended
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class SlurmQueue:
    """This user's jobs in SLURM's queue (``squeue -u $USER``): state and requeue count by job id, one call a poll.

    A failed call is raised as a :class:`StudyError` when the answer is needed
    now (``fresh``); during a poll the previous snapshot is used again.
    """

    FORMAT = "JobID:|,State:|,RestartCnt:|"

    def __init__(self, every_s: float):
        self.every_s = every_s
        self._at = -float("inf")
        self._jobs: dict[str, tuple[str, int]] = {}

    def state(self, job_id: str, fresh: bool = False) -> tuple[str | None, int]:
        """``(state, restarts)``; ``(None, 0)`` for a job the queue no longer lists (it ended)."""
        if fresh or time.monotonic() - self._at >= self.every_s:
            try:
                self._jobs = self._ask()
            except StudyError:
                if fresh or self._at == -float("inf"):
                    raise
            self._at = time.monotonic()
        return self._jobs.get(str(job_id), (None, 0))

    def _ask(self) -> dict[str, tuple[str, int]]:
        user = os.environ.get("USER") or getpass.getuser()
        try:
            done = subprocess.run(["squeue", "-h", "-u", user, "-O", self.FORMAT], capture_output=True, text=True,
                                  timeout=120)
        except (OSError, subprocess.SubprocessError) as e:
            raise StudyError(f"squeue failed ({e}): cannot tell which jobs still run") from None
        if done.returncode != 0:
            raise StudyError(f"squeue failed ({done.stderr.strip()}): cannot tell which jobs still run")
        jobs = {}
        for line in done.stdout.splitlines():
            fields = [f.strip() for f in line.split("|")]
            if len(fields) >= 3 and fields[0]:
                jobs[fields[0]] = (fields[1], int(fields[2]) if fields[2].isdigit() else 0)
        return jobs


def slurm_job_state(job_id: str) -> tuple[str | None, bool]:
    """``(state, accounting)`` of a job: its state from ``scontrol`` while slurmctld remembers the job, else from
    ``sacct`` (``None`` if neither knows it); ``accounting`` is False when ``sacct`` was asked and failed."""
    shown = _quiet(["scontrol", "show", "job", "-o", str(job_id)])
    found = re.search(r"\bJobState=(\S+)", shown or "")
    if found:
        return found.group(1), True
    listed = _quiet(["sacct", "-X", "-n", "-P", "-j", str(job_id), "-o", "State"])
    if listed is None:
        return None, False
    states = [line.split()[0] for line in listed.splitlines() if line.strip()]  # "CANCELLED by 1000"
    return (states[-1] if states else None), True


def _quiet(argv: list[str]) -> str | None:
    """``argv``'s output, or None when it fails (its message is not shown)."""
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout if done.returncode == 0 else None


def _lost_outcome(job, state: str | None, folder: Path) -> dict:
    """The outcome of a job that ended without a result, named by its SLURM state."""
    logs = f"see {job.paths.stderr} and {folder / KERNEL_LOG}"
    if state in _LOST:
        name, what, fix = _LOST[state]
        return failed_outside_notebook(name, f"job {job.job_id} {what}{_last_stop(folder)}; {fix}; {logs}")
    return failed_outside_notebook(
        "JobLost", f"job {job.job_id} ended without a result (killed, out of memory, over its time limit? "
                   f"state {state or 'unknown'}); {logs}")


def _last_stop(folder: Path) -> str:
    """``: <the run's last 'stopped by ...' line>`` (where its state was saved), or nothing."""
    try:
        lines = [line for line in (Path(folder) / LOG).read_text().splitlines() if line.startswith("stopped by")]
    except OSError:
        return ""
    return f" ({lines[-1].split(': state saved')[0]})" if lines else ""
