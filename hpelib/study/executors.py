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
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..io import read_json, write_json
from ..runs import KERNEL_LOG, SLURM_JOB
from . import notebook_process
from .execute import Execution, checked_result, failed_outside_notebook, gpu_ids, kernel_env, notebook_request
from .plan import Run
from .schema import StudyError

__all__ = ["LocalExecutor", "SubmititExecutor", "SlurmOptions", "run_notebook", "RunNotebook"]

#: SLURM job states (``squeue -o %T``) of a job that has ended
_ENDED = {"BOOT_FAIL", "CANCELLED", "COMPLETED", "DEADLINE", "FAILED", "NODE_FAIL", "OUT_OF_MEMORY", "REVOKED",
          "SPECIAL_EXIT", "TIMEOUT"}


class LocalExecutor:
    """Each run's notebook in a child process of the runner, ``jobs`` at a time, one GPU each when there are GPUs."""

    poll_s = 0.2

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
    """Each run as a SLURM job submitted through submitit; the jobs outlive the runner (see the module's doc)."""

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
        self._job_class = submitit.LocalJob if options.cluster == "local" else submitit.SlurmJob
        try:
            self._executor = submitit.AutoExecutor(folder=self.folder, cluster=options.cluster)
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
        alive = _running(job, fresh=True)
        if force or record.get("fingerprint") != run.fingerprint:
            if alive:
                job.cancel(check=False)
                echo(f"CANCEL {run.run_id}: job {job.job_id} ran with " + ("--force" if force else "other settings"))
            return None
        if alive or _succeeded(job):
            what = "still queued or running" if alive else "it finished while no runner watched"
            echo(f"ATTACH {run.run_id}: job {job.job_id} submitted {record.get('submitted')} ({what})")
            return SubmittedRun(job, folder, self)
        if not job.paths.result_pickle.exists():
            echo(f"LOST {run.run_id}: job {job.job_id} ended without a result; submitting it again")
        return None

    def start(self, run: Run, folder: Path, gpu: str | None = None) -> SubmittedRun:
        """Submit ``run`` (its folder prepared) and record the job in :data:`hpelib.runs.SLURM_JOB`."""
        self._executor.update_parameters(name=f"hpelib:{run.run_id}")
        job = self._executor.submit(RunNotebook(), notebook_request(run, Path(folder), self.timeout_s))
        write_json(Path(folder) / SLURM_JOB, {
            "job_id": job.job_id, "run_id": run.run_id, "fingerprint": run.fingerprint,
            "submitted": time.strftime("%Y-%m-%d %H:%M:%S"), "cluster": self.options.cluster,
            "folder": str(self.folder), "stdout": str(job.paths.stdout), "stderr": str(job.paths.stderr)})
        return SubmittedRun(job, Path(folder), self)

    def interrupt_note(self) -> str:
        if not self.detached:
            return "run the same command again to continue"
        ids = " ".join(self.detached)
        return (f"{len(self.detached)} submitted job(s) keep running ({ids}): run the same command again to wait "
                f"for them, or scancel {ids}")


class SubmittedRun:
    """A run's submitted job, as the scheduler sees it: :meth:`poll` gives its outcome once it has ended."""

    def __init__(self, job, folder: Path, executor: SubmititExecutor):
        self.job, self.folder, self.executor = job, Path(folder), executor
        self._ended_at: float | None = None  # when the job was first seen ended without a result file

    def poll(self) -> dict | None:
        """``None`` while queued or running, then ``{"ok", "seconds", "error"}`` (the job function's return value)."""
        if _running(self.job):
            return None
        if not self.job.paths.result_pickle.exists():
            self._ended_at = self._ended_at or time.monotonic()
            if time.monotonic() - self._ended_at < self.executor.grace_s:
                return None
            return failed_outside_notebook(
                "JobLost", f"job {self.job.job_id} ended without a result (killed, out of memory, over its time "
                           f"limit? state {self.job.state}); see {self.job.paths.stderr} and {self.folder / KERNEL_LOG}")
        try:
            result = self.job.result()
        except Exception as e:  # the job function itself failed on the node (an import error, a full disk ...)
            return failed_outside_notebook("JobFailed", f"job {self.job.job_id} failed outside the notebook: "
                                                        f"{_exception_line(e)}; see {self.job.paths.stderr}")
        return checked_result(result, self.folder)

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
    """
    os.environ.update(kernel_env(1, None))  # this process is the job's own: the kernel inherits its environment
    with _output_to(Path(request["cwd"]) / KERNEL_LOG):
        return notebook_process.execute(**request)


class RunNotebook:
    """The job function of a run: :func:`run_notebook`, requeued with its run's state when SLURM warns.

    SLURM sends the warning signal (submitit's ``--signal=USR2@90``) before a
    job's time limit and on preemption; submitit then calls :meth:`checkpoint`
    in the job. It asks the notebook's kernel to stop (SIGTERM: the training
    loop saves a mid-epoch checkpoint, ``hpelib.engine``), waits until the
    run's ``train.log`` says so (at most :data:`~.execute.STOP_GRACE_S`), ends
    the kernel, and returns the same call, which submitit requeues: the next
    job runs the notebook again and the run resumes from that step.
    """

    def __call__(self, request: dict) -> dict:
        return run_notebook(request)

    def checkpoint(self, request: dict):
        import submitit

        stop_kernel_and_wait(Path(request["cwd"]))
        return submitit.helpers.DelayedSubmission(self, request)


def stop_kernel_and_wait(folder: Path, grace_s: float | None = None) -> bool:
    """SIGTERM to this process's children (the kernel), then wait for the run to have saved its state.

    True when ``folder``'s ``train.log`` gained a ``stopped by`` line (the
    state is saved) or every child ended; the children still alive then are
    killed. Waits :data:`~.execute.STOP_GRACE_S` seconds at most.
    """
    import psutil

    from ..runs import LOG
    from .execute import STOP_GRACE_S

    log = Path(folder) / LOG
    before = log.read_text().count("stopped by") if log.is_file() else 0
    children = notebook_process.tell_children(signal.SIGTERM)
    deadline = time.monotonic() + (STOP_GRACE_S if grace_s is None else grace_s)
    saved = False
    while time.monotonic() < deadline:
        saved = log.is_file() and log.read_text().count("stopped by") > before
        if saved or not any(c.is_running() and c.status() != psutil.STATUS_ZOMBIE for c in children):
            break
        time.sleep(0.2)
    for child in children:
        with contextlib.suppress(psutil.Error):
            child.kill()
    return saved


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


def _running(job, fresh: bool = False) -> bool:
    """``job`` is queued or running. ``fresh``: ask SLURM's queue now, not submitit's cached accounting state."""
    import submitit

    if isinstance(job, submitit.LocalJob) and job.get_info()["jobState"] == "NO PROCESS AND NO RESULT":
        return _pid_alive(int(job.job_id))  # a local job re-created after a restart: its id is its process id
    if isinstance(job, submitit.SlurmJob) and fresh:
        return _in_slurm_queue(job.job_id)
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


def _in_slurm_queue(job_id: str) -> bool:
    """``squeue`` lists the job in a state that has not ended; an error other than an unknown job id is raised."""
    try:
        done = subprocess.run(["squeue", "-h", "-j", str(job_id), "-o", "%T"], capture_output=True, text=True,
                              timeout=120)
    except (OSError, subprocess.SubprocessError) as e:
        raise StudyError(f"squeue failed ({e}): cannot tell whether job {job_id} still runs") from None
    if done.returncode != 0:
        if "invalid job id" in done.stderr.lower():
            return False
        raise StudyError(f"squeue failed ({done.stderr.strip()}): cannot tell whether job {job_id} still runs")
    return any(state not in _ENDED for state in done.stdout.split())
