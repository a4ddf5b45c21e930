"""Scheduling: runs with dependencies on at most ``jobs`` slots, one GPU each when there are GPUs.

One code path for ``--jobs 1`` and ``--jobs N``: the scheduler starts every
run whose dependencies are done while a slot is free, polls the running ones,
and skips the runs that depend on a failed one. Starting a run and recording
its outcome are the caller's (``start(run, gpu)`` returns an object with
``poll() -> None | {"ok", "seconds", "error"}`` and ``stop()``; ``on_finish(run,
result)`` is called once per ended run).
"""
from __future__ import annotations

import time
from typing import Callable

from .plan import Run

__all__ = ["Scheduler", "DONE", "BLOCKING"]

DONE = ("done", "complete (skipped)")  # states of a dependency that let its dependants start
BLOCKING = ("failed", "skipped (dependency failed)")  # states of a dependency that block its dependants


class Scheduler:
    """Runs ``runs`` (in their order, dependencies first); ``status`` maps each run id to its outcome."""

    def __init__(self, runs: list[Run], complete: set[str], jobs: int, gpus: list[str],
                 start: Callable, on_finish: Callable, on_skip: Callable[[Run, list[str]], None] = lambda r, d: None):
        self.status: dict[str, dict] = {rid: {"status": "complete (skipped)"} for rid in complete}
        self.pending = [r for r in runs if r.run_id not in complete]
        self.running: dict[str, tuple[Run, object, str | None]] = {}
        self.jobs = max(1, jobs)
        self.gpu_load = {g: 0 for g in gpus}  # runs per GPU: each run gets the least loaded one
        self._start, self._on_finish, self._on_skip = start, on_finish, on_skip

    def _deps_state(self, run: Run) -> str:
        states = [self.status.get(d, {}).get("status") for d in run.deps]
        if any(s in BLOCKING for s in states):
            return "blocked"
        return "ready" if all(s in DONE for s in states) else "waiting"

    def _skip_blocked(self) -> None:
        for run in [r for r in self.pending if self._deps_state(r) == "blocked"]:
            self.pending.remove(run)
            bad = [d for d in run.deps if self.status.get(d, {}).get("status") in BLOCKING]
            self.status[run.run_id] = {"status": "skipped (dependency failed)", "deps": bad}
            self._on_skip(run, bad)

    def _launch(self, run: Run) -> None:
        self.pending.remove(run)
        gpu = min(self.gpu_load, key=self.gpu_load.get) if self.gpu_load else None
        if gpu is not None:
            self.gpu_load[gpu] += 1
        self.running[run.run_id] = (run, self._start(run, gpu), gpu)

    def _finish(self, run_id: str, result: dict) -> None:
        run, _, gpu = self.running.pop(run_id)
        if gpu is not None:
            self.gpu_load[gpu] -= 1
        seconds = round(result["seconds"], 1)
        self.status[run_id] = ({"status": "done", "seconds": seconds} if result["ok"] else
                               {"status": "failed", "seconds": seconds, "error": result["error"]})
        if result.get("requeues"):  # a SLURM job requeued (time limit, preemption) on its way
            self.status[run_id]["requeues"] = result["requeues"]
        self._on_finish(run, result)

    def run(self, poll_s: float = 0.2, on_tick: Callable[[list[Run]], None] = lambda runs: None) -> dict:
        """Run everything that can run; returns :attr:`status`. Running children are stopped on an exception.

        ``on_tick(running runs)`` is called at every poll (to show progress).
        """
        try:
            while self.pending or self.running:
                self._skip_blocked()
                for run in [r for r in self.pending if self._deps_state(r) == "ready"]:
                    if len(self.running) >= self.jobs:
                        break
                    self._launch(run)
                if not self.running:
                    break  # nothing runs and nothing can start
                on_tick([run for run, _, _ in self.running.values()])
                ended = {rid: res for rid, (_, ex, _) in list(self.running.items()) if (res := ex.poll()) is not None}
                for rid, res in ended.items():
                    self._finish(rid, res)
                if not ended:
                    time.sleep(poll_s)
        except BaseException:
            self.stop_running()
            raise
        return self.status

    def stop_running(self, grace_s: float | None = None) -> None:
        """Ask every running run to stop at once, then give them ``grace_s`` seconds together to end.

        Runs whose execution has no ``wait_stopped`` (SLURM jobs, which outlive
        the runner) are only told.
        """
        from .execute import STOP_GRACE_S

        executions = [ex for _, ex, _ in self.running.values()]
        for ex in executions:
            ex.stop()
        deadline = time.monotonic() + (STOP_GRACE_S if grace_s is None else grace_s)
        for ex in executions:
            if hasattr(ex, "wait_stopped"):
                ex.wait_stopped(deadline)
